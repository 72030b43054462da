//! The per-user snapshots directory: where `hiber session checkpoint`
//! saves when given no `-o`, what `hiber session list` shows and
//! `hiber session rm` removes. Every snapshot in it shares one chunk store
//! (`.store`), so successive saves of a session write only what changed.
//!
//! ```text
//! $XDG_DATA_HOME/hiber/snapshots/          (or ~/.local/share/…, or $HIBER_SNAPSHOTS)
//!     display-1-20261125-173005/           an image (see docs/image-format.md)
//!     .store/                              chunk packs shared by the images
//! ```

use crate::display_session;
use hiber_core::image::{self, ImageError, ImageReader, PruneStats};
use hiber_core::sys::wrap::{PathIo, WrapIoResult};
use hiber_core::Snapshot;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const STORE: &str = ".store";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotsError {
    #[error("no snapshot named {name:?} in {dir}")]
    NotFound { dir: PathBuf, name: String },
    #[error("{name:?} is not a snapshot name (a plain name from `hiber session list`)")]
    BadName { name: String },
    #[error("{path} is not an image: {reason}")]
    NotAnImage { path: PathBuf, reason: &'static str },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl From<PathIo> for SnapshotsError {
    fn from(e: PathIo) -> Self {
        SnapshotsError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

type Result<T> = std::result::Result<T, SnapshotsError>;

/// The snapshots directory of the calling user.
pub fn default_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env("HIBER_SNAPSHOTS") {
        return d;
    }
    let data = env("XDG_DATA_HOME").unwrap_or_else(|| {
        env("HOME")
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join(".local/share")
    });
    data.join("hiber/snapshots")
}

/// The chunk store the snapshots of `dir` share.
pub fn store_of(dir: &Path) -> PathBuf {
    dir.join(STORE)
}

/// A fresh name for a snapshot of `display`, from the local time:
/// `display-1-20261125-173005`, with `-2`, `-3`… when taken.
pub fn new_name(dir: &Path, display: u32) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("display-{display}-{}", crate::format::local_stamp(now));
    let mut name = base.clone();
    let mut n = 1;
    while dir.join(&name).exists() {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

fn check_name(name: &str) -> Result<()> {
    let plain =
        !name.is_empty() && !name.starts_with('.') && !name.contains('/') && name.len() <= 255;
    if plain {
        Ok(())
    } else {
        Err(SnapshotsError::BadName { name: name.into() })
    }
}

/// The image a user means by `what`: a snapshot name in `dir`, or a path
/// to an image directory.
pub fn resolve(dir: &Path, what: &str) -> Result<PathBuf> {
    let as_path = Path::new(what);
    if what.contains('/') {
        if image::is_image(as_path) {
            return Ok(as_path.to_path_buf());
        }
        let reason = match fs::symlink_metadata(as_path) {
            Err(_) => "it does not exist",
            Ok(m) if !m.is_dir() => "it is not a directory",
            Ok(_) => "it holds no snapshot document",
        };
        return Err(SnapshotsError::NotAnImage {
            path: as_path.to_path_buf(),
            reason,
        });
    }
    check_name(what)?;
    let path = dir.join(what);
    if image::is_image(&path) {
        Ok(path)
    } else {
        Err(SnapshotsError::NotFound {
            dir: dir.to_path_buf(),
            name: what.into(),
        })
    }
}

/// One snapshot, as `hiber session list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub path: PathBuf,
    pub created_unix: u64,
    /// Bytes of the image: its document and the packs it links (packs
    /// shared with other snapshots count in each).
    pub bytes: u64,
    pub processes: usize,
    /// The display and windows it recorded; None for a plain process image.
    pub display: Option<String>,
    pub windows: Option<usize>,
    /// Why the snapshot could not be read, when it could not.
    pub damaged: Option<String>,
}

fn info(name: String, path: PathBuf) -> SnapshotInfo {
    let mut out = SnapshotInfo {
        name,
        bytes: image::image_bytes(&path),
        path,
        created_unix: 0,
        processes: 0,
        display: None,
        windows: None,
        damaged: None,
    };
    let opened: std::result::Result<(ImageReader, Snapshot), _> = ImageReader::open(&out.path);
    match opened {
        Ok((reader, snap)) => {
            out.created_unix = snap.created_unix;
            out.processes = snap.processes.len();
            match display_session::stored_record(&reader, &snap) {
                Ok(Some(record)) => {
                    out.display = Some(record.display);
                    out.windows = Some(record.windows.len());
                }
                Ok(None) => {}
                Err(e) => out.damaged = Some(e.to_string()),
            }
        }
        Err(e) => out.damaged = Some(e.to_string()),
    }
    out
}

/// Every snapshot in `dir`, oldest first. Damaged ones are listed too,
/// with what is wrong, so the user can remove them.
pub fn list(dir: &Path) -> Result<Vec<SnapshotInfo>> {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SnapshotsError::Io {
                op: "listing",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out: Vec<SnapshotInfo> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            // Hidden entries are the store and unfinished images.
            let path = e.path();
            (!name.starts_with('.') && path.is_dir()).then(|| info(name, path))
        })
        .collect();
    out.sort_by(|a, b| (a.created_unix, &a.name).cmp(&(b.created_unix, &b.name)));
    Ok(out)
}

/// Remove a snapshot and free the store space only it used.
pub fn remove(dir: &Path, name: &str) -> Result<PruneStats> {
    check_name(name)?;
    let path = dir.join(name);
    if !path.is_dir() {
        return Err(SnapshotsError::NotFound {
            dir: dir.to_path_buf(),
            name: name.into(),
        });
    }
    fs::remove_dir_all(&path).at_path("removing", &path)?;
    let store = store_of(dir);
    if store.is_dir() {
        Ok(image::prune_store(&store)?)
    } else {
        Ok(PruneStats::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_and_unique() {
        let t = tempfile::tempdir().unwrap();
        let a = new_name(t.path(), 7);
        assert!(a.starts_with("display-7-"), "{a}");
        fs::create_dir(t.path().join(&a)).unwrap();
        let b = new_name(t.path(), 7);
        assert_ne!(a, b);
        for bad in ["", ".store", "../x", "a/b"] {
            assert!(matches!(
                check_name(bad),
                Err(SnapshotsError::BadName { .. })
            ));
        }
    }

    #[test]
    fn removing_what_is_not_there_names_it() {
        let t = tempfile::tempdir().unwrap();
        let err = remove(t.path(), "display-1-x").unwrap_err();
        assert!(err.to_string().contains("display-1-x"), "{err}");
        assert!(list(&t.path().join("none")).unwrap().is_empty());
    }
}
