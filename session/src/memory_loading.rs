//! How a restored session's memory comes back: all of it before the
//! session runs (eager), or on first touch and streamed in the background
//! by a page server (lazy, `hiber_core::memory::lazy`). A large session
//! goes lazy by default: its windows answer in tens of milliseconds
//! instead of after a read of every saved page.
//!
//! The trade: an eager restore reads, and so verifies, every chunk before
//! anything runs, and a damaged image fails with nothing left behind; a
//! lazy one meets a damaged chunk while the session runs, and then ends
//! the whole restored session (never a page of zeros). Small sessions,
//! where eager costs little, keep the stronger promise.

use hiber_core::LazyOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Lazily loadable memory from which [`MemoryLoading::Auto`] goes lazy.
/// A 256 MiB eager restore takes ~80 ms here (1 GiB: ~300 ms), the
/// point where waiting for every page starts to show.
pub const LAZY_FROM_BYTES: u64 = 256 << 20;

/// Where a session restore's page servers write their status files (root's).
pub const STATUS_DIR: &str = "/run/hiber/lazy";

/// How a restored session's memory comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryLoading {
    /// Lazy when the image holds at least [`LAZY_FROM_BYTES`] of lazily
    /// loadable memory and the kernel can serve it, else eager.
    #[default]
    Auto,
    /// Every page in before the session runs.
    Eager,
    /// The session runs at once; pages follow.
    Lazy,
}

impl MemoryLoading {
    /// From a request's or command line's text: "" or "auto", "eager", "lazy".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "auto" => Some(Self::Auto),
            "eager" => Some(Self::Eager),
            "lazy" => Some(Self::Lazy),
            _ => None,
        }
    }

    /// The text [`MemoryLoading::parse`] reads back.
    pub fn to_arg(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Eager => "eager",
            Self::Lazy => "lazy",
        }
    }

    /// Eager or lazy for an image holding `lazy_bytes` of lazily
    /// loadable memory (`Snapshot::lazy_bytes`): `Auto` decided by that
    /// and by whether this kernel offers what a lazy restore needs.
    pub fn decide(self, lazy_bytes: u64) -> Self {
        match self {
            Self::Auto if lazy_bytes < LAZY_FROM_BYTES => Self::Eager,
            Self::Auto => match hiber_core::memory::lazy::check_kernel() {
                Ok(()) => Self::Lazy,
                Err(e) => {
                    tracing::info!(error = %e, "restoring eagerly: this kernel cannot serve a lazy restore");
                    Self::Eager
                }
            },
            decided => decided,
        }
    }

    /// The engine's options for a decided loading: a lazy restore's status
    /// file under `status_dir`, removed by the page server once every page
    /// is in (a failed server's stays, saying why).
    pub fn options(self, status_dir: &Path) -> std::io::Result<Option<LazyOptions>> {
        if self != Self::Lazy {
            return Ok(None);
        }
        Ok(Some(LazyOptions {
            status: status_file(status_dir)?,
            remove_when_done: true,
        }))
    }
}

/// A new status file's path under `dir` (made root's and 0700 if
/// missing), named for this process and its count of lazy restores.
pub fn status_file(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static RESTORES: AtomicU32 = AtomicU32::new(0);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let n = RESTORES.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!("{}-{n}.json", std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadings_read_back_what_they_write() {
        for m in [
            MemoryLoading::Auto,
            MemoryLoading::Eager,
            MemoryLoading::Lazy,
        ] {
            assert_eq!(MemoryLoading::parse(m.to_arg()), Some(m));
        }
        assert_eq!(MemoryLoading::parse(""), Some(MemoryLoading::Auto));
        assert_eq!(MemoryLoading::parse("fast"), None);
    }

    #[test]
    fn auto_goes_lazy_only_for_a_large_image() {
        let small = LAZY_FROM_BYTES - 4096;
        assert_eq!(MemoryLoading::Auto.decide(small), MemoryLoading::Eager);
        assert_eq!(MemoryLoading::Lazy.decide(small), MemoryLoading::Lazy);
        assert_eq!(
            MemoryLoading::Eager.decide(LAZY_FROM_BYTES),
            MemoryLoading::Eager
        );
        // This kernel serves lazy restores (the lazy tests need it too).
        assert_eq!(
            MemoryLoading::Auto.decide(LAZY_FROM_BYTES),
            MemoryLoading::Lazy
        );
    }

    #[test]
    fn status_files_are_new_each_time_in_a_private_dir() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("lazy");
        let a = status_file(&dir).unwrap();
        let b = status_file(&dir).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(dir.as_path()));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
