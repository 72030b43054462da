//! One save of a display at a time, across processes: hiberd's jobs and
//! `hiber session suspend` (run by a logout or sleep hook, outside hiberd)
//! both save through the store, and two freezes of one session at once
//! would each find the other's ptrace hold. An advisory lock per display
//! in the store's root-only `locks/` directory, held for the save's
//! length; the kernel drops it when its holder dies, so a killed saver
//! never leaves a display locked.

use hiber_core::sys::wrap::{PathIo, WrapIoResult};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a display could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DisplayLockError {
    #[error("display :{display} is being saved by another hiber (pid {holder}); try again once it is done")]
    Busy { display: u32, holder: String },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<PathIo> for DisplayLockError {
    fn from(e: PathIo) -> Self {
        DisplayLockError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// Held while a display is saved; released when dropped.
#[derive(Debug)]
pub struct DisplayLock {
    _file: File,
}

impl DisplayLock {
    /// Lock `display` under the store `base`, or say who holds it. Never
    /// waits: a second save of a session being saved is refused, not
    /// queued (the first one's result is what the user asked for).
    pub fn take(base: &Path, display: u32) -> Result<Self, DisplayLockError> {
        let dir = base.join("locks");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .at_path("creating the lock directory", &dir)?;
        let path = dir.join(format!("display-{display}"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .at_path("opening the display lock", &path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(DisplayLockError::Busy {
                    display,
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        holder.into()
                    },
                });
            }
            Err(TryLockError::Error(e)) => Err(e).at_path("locking", &path)?,
        }
        // The holder's pid, for the next one's message.
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .at_path("writing the display lock", &path)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_one_display_names_the_holder_and_the_first_frees_it() {
        let base = tempfile::tempdir().unwrap();
        let first = DisplayLock::take(base.path(), 7).expect("the first lock");
        // Another open file description: what another process gets.
        match DisplayLock::take(base.path(), 7) {
            Err(DisplayLockError::Busy { display: 7, holder }) => {
                assert_eq!(holder, std::process::id().to_string())
            }
            other => panic!("expected busy, got {other:?}"),
        }
        let other = DisplayLock::take(base.path(), 8).expect("another display is free");
        drop(first);
        DisplayLock::take(base.path(), 7).expect("free again once dropped");
        drop(other);
    }
}
