//! Context for an `io::Error` where it is born: which pid, fd or path it is
//! about and what was being done. `.with_pid(pid, "reading maps")?`,
//! `.at_path("opening", &path)?`, `.on_fd(pid, fd, "fstat")?` and
//! `.doing("making a pipe")?` wrap the error in one of the small types
//! below, and each module's error takes that type with `From` into its own
//! variant, so the `?` picks the module's error and its message stays the
//! module's. Nothing here knows those errors: they sit above this layer.

use std::io;
use std::path::{Path, PathBuf};

/// An io error about process `pid`, during `what`.
#[derive(Debug)]
pub struct PidIo {
    pub pid: i32,
    pub what: &'static str,
    pub source: io::Error,
}

/// An io error of `op` on `path`.
#[derive(Debug)]
pub struct PathIo {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

/// An io error on fd `fd` of process `pid`, during `op`.
#[derive(Debug)]
pub struct FdIo {
    pub pid: i32,
    pub fd: i32,
    pub op: &'static str,
    pub source: io::Error,
}

/// An io error of making something that belongs to no process or path yet
/// (a pipe, a socket pair, a mapping of our own), during `what`.
#[derive(Debug)]
pub struct OpIo {
    pub what: &'static str,
    pub source: io::Error,
}

/// Attaches the subject of an io error in one call (youki's
/// `WrapIoResult`). Implemented for any result whose error converts into
/// `io::Error` (std's, rustix's and nix's `Errno`).
pub trait WrapIoResult<T> {
    /// The error of `what`, done to or for process `pid`.
    fn with_pid(self, pid: i32, what: &'static str) -> Result<T, PidIo>;
    /// The error of `op` on `path`.
    fn at_path(self, op: &'static str, path: impl AsRef<Path>) -> Result<T, PathIo>;
    /// The error of `op` on fd `fd` of process `pid`.
    fn on_fd(self, pid: i32, fd: i32, op: &'static str) -> Result<T, FdIo>;
    /// The error of `what`, which has no pid, fd or path to name.
    fn doing(self, what: &'static str) -> Result<T, OpIo>;
}

impl<T, E: Into<io::Error>> WrapIoResult<T> for Result<T, E> {
    fn with_pid(self, pid: i32, what: &'static str) -> Result<T, PidIo> {
        self.map_err(|e| PidIo {
            pid,
            what,
            source: e.into(),
        })
    }

    fn at_path(self, op: &'static str, path: impl AsRef<Path>) -> Result<T, PathIo> {
        self.map_err(|e| PathIo {
            op,
            path: path.as_ref().to_path_buf(),
            source: e.into(),
        })
    }

    fn on_fd(self, pid: i32, fd: i32, op: &'static str) -> Result<T, FdIo> {
        self.map_err(|e| FdIo {
            pid,
            fd,
            op,
            source: e.into(),
        })
    }

    fn doing(self, what: &'static str) -> Result<T, OpIo> {
        self.map_err(|e| OpIo {
            what,
            source: e.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_kept_and_the_source_converted() {
        let r: Result<(), rustix::io::Errno> = Err(rustix::io::Errno::NOENT);
        let e = r.at_path("opening", "/nonexistent").unwrap_err();
        assert_eq!(e.op, "opening");
        assert_eq!(e.path, PathBuf::from("/nonexistent"));
        assert_eq!(e.source.raw_os_error(), Some(libc::ENOENT));
        let e = Err::<(), _>(io::Error::from_raw_os_error(libc::ESRCH))
            .with_pid(42, "reading maps")
            .unwrap_err();
        assert_eq!((e.pid, e.what), (42, "reading maps"));
        assert_eq!(e.source.raw_os_error(), Some(libc::ESRCH));
    }
}
