//! What goes wrong in a checkpoint: the lowest file of `checkpoint`.

use crate::attachment::AttachmentError;
use crate::files::FileError;
use crate::freeze::FreezeError;
use crate::image::ImageError;
use crate::memory::MemoryError;
use crate::policy::Report;
use crate::procfs::ProcfsError;
use crate::remote::RemoteError;
use crate::sys::wrap::PidIo;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Freeze(#[from] FreezeError),
    #[error(transparent)]
    Procfs(#[from] ProcfsError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("the task set cannot be checkpointed:\n{}", .0.refusals_text())]
    Refused(Box<Report>),
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    // No pid: the caller's observer failed; its error says why.
    #[error(transparent)]
    Observer(Box<dyn std::error::Error + Send + Sync>),
    #[error(
        "every process to save exited while it was being saved (pids {pids:?}); nothing was saved"
    )]
    AllExited { pids: Vec<i32> },
    // No pid: the caller's rights, not a process, are the matter.
    #[error("--stop would end the processes, but this caller could not restore them ({reason}); save without --stop, or as root")]
    StopWithoutRestore { reason: String },
    #[error("the image {} did not read back whole ({source}); it was removed and the processes run on", dir.display())]
    NotVerified {
        dir: PathBuf,
        #[source]
        source: ImageError,
    },
    // No pid: the caller's cancel ends the whole checkpoint.
    #[error("the checkpoint was cancelled at stage {stage}; the processes run on as they were")]
    Cancelled { stage: &'static str },
    #[error("pid {pid}: {what}")]
    Os {
        pid: i32,
        what: &'static str,
        source: std::io::Error,
    },
}

impl From<PidIo> for CheckpointError {
    fn from(e: PidIo) -> Self {
        CheckpointError::Os {
            pid: e.pid,
            what: e.what,
            source: e.source,
        }
    }
}

pub type Result<T> = std::result::Result<T, CheckpointError>;
