//! What goes wrong with open files, and why one is not saved: the lowest
//! file of `files`, which every kind module and the table import.

use crate::image::ImageError;
use crate::procfs::ProcfsError;
use crate::sys::wrap::{FdIo, OpIo, PathIo};
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Procfs(#[from] ProcfsError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Uevent(#[from] crate::uevent::UeventError),
    #[error("pid {pid} fd {fd}: {op}")]
    Fd {
        pid: i32,
        fd: i32,
        op: &'static str,
        source: io::Error,
    },
    #[error("{op} {path}")]
    Path {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} is device {found}, the image expects {expected}")]
    DeviceMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// A node of the filesystem (a directory, a socket file) the restore
    /// would have to make, and must not.
    #[error("not making {path}: {reason}")]
    NotMade { path: PathBuf, reason: String },
    // No pid, fd or path: what is being made belongs to no process yet.
    #[error("{what}")]
    Create {
        what: &'static str,
        source: io::Error,
    },
    // No pid or path: an index into the image is its subject.
    #[error("image refers to {what} {index}, which it does not contain")]
    BadReference { what: &'static str, index: usize },
    #[error(transparent)]
    Device(#[from] crate::devices::DeviceError),
    // No pid or fd: the socket is being made, no process holds it yet.
    #[error("setting socket option {name}")]
    SocketOption { name: String, source: io::Error },
    #[error("pipe {index}: {what}")]
    Pipe {
        index: usize,
        what: &'static str,
        source: io::Error,
    },
    #[error("pty {index}: {op}")]
    Pty {
        index: u32,
        op: &'static str,
        source: io::Error,
    },
}

impl From<FdIo> for FileError {
    fn from(e: FdIo) -> Self {
        FileError::Fd {
            pid: e.pid,
            fd: e.fd,
            op: e.op,
            source: e.source,
        }
    }
}

impl From<PathIo> for FileError {
    fn from(e: PathIo) -> Self {
        FileError::Path {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

impl From<OpIo> for FileError {
    fn from(e: OpIo) -> Self {
        FileError::Create {
            what: e.what,
            source: e.source,
        }
    }
}

pub type Result<T> = std::result::Result<T, FileError>;

/// Why one open file cannot be saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    /// Data in flight that the processes consume by themselves once they
    /// run (a message carrying fds, unread events): a later try may work.
    pub transient: bool,
    /// What the file is, when its kind knows better than the fd's target
    /// (a char device's class from the device table).
    pub what: Option<String>,
}

impl Refusal {
    /// A refusal for data in flight (see [`Refusal::transient`]).
    pub fn for_now(reason: String) -> Self {
        Refusal {
            reason,
            transient: true,
            what: None,
        }
    }
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal {
            reason,
            transient: false,
            what: None,
        }
    }
}

/// Why a kind did not save a fd: refused (reported, the fd left out), or
/// an error that stops the checkpoint.
#[derive(Debug)]
pub enum Unsaved {
    Refused(Refusal),
    Failed(FileError),
}

impl From<Refusal> for Unsaved {
    fn from(r: Refusal) -> Self {
        Unsaved::Refused(r)
    }
}

impl From<String> for Unsaved {
    fn from(reason: String) -> Self {
        Unsaved::Refused(reason.into())
    }
}

impl From<FdIo> for Unsaved {
    fn from(e: FdIo) -> Self {
        Unsaved::Failed(e.into())
    }
}

impl From<FileError> for Unsaved {
    fn from(e: FileError) -> Self {
        Unsaved::Failed(e)
    }
}
