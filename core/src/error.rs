//! The crate's error: every module's error rolled up with `#[from]`, so a
//! caller that drives several modules can hold any of them with one type
//! and `?`. Each module keeps its own error, named for what goes wrong
//! there and carrying the pid, fd or path it is about; this type only
//! gathers them and prints each exactly as its module does. Nothing in
//! core returns it (each module returns its own, and this file imports
//! every module): it is for the crates above.

use crate::attachment::AttachmentError;
use crate::checkpoint::CheckpointError;
use crate::devices::DeviceError;
use crate::files::service_file::ReopenError;
use crate::files::FileError;
use crate::freeze::FreezeError;
use crate::image::ImageError;
use crate::memory::lazy::ServeError;
use crate::memory::shmem::ShmemError;
use crate::memory::MemoryError;
use crate::namespaces::NamespaceError;
use crate::policy::Report;
use crate::precopy::PrecopyError;
use crate::procfs::ProcfsError;
use crate::procmem::ProcMemError;
use crate::ptrace::PtraceError;
use crate::remote::RemoteError;
use crate::restore::plan::PlanError;
use crate::restore::RestoreError;
use crate::seccomp::SeccompError;
use crate::uevent::UeventError;

/// Any error of hiber-core. Its message is the module error's own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Precopy(#[from] PrecopyError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Reopen(#[from] ReopenError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Shmem(#[from] ShmemError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Freeze(#[from] FreezeError),
    #[error(transparent)]
    Procfs(#[from] ProcfsError),
    #[error(transparent)]
    ProcMem(#[from] ProcMemError),
    #[error(transparent)]
    Ptrace(#[from] PtraceError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(transparent)]
    Uevent(#[from] UeventError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the caller's cancel ended a save, a restore or a pre-copy
    /// (nothing of it was kept; the processes run on as they were).
    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            Error::Checkpoint(CheckpointError::Cancelled { .. })
                | Error::Restore(RestoreError::Cancelled { .. })
                | Error::Precopy(PrecopyError::Cancelled)
        )
    }

    /// The policy's report when a checkpoint was refused.
    pub fn refusal(&self) -> Option<&Report> {
        match self {
            Error::Checkpoint(CheckpointError::Refused(report)) => Some(report),
            _ => None,
        }
    }

    /// The pid of the image that another process holds, when a restore was
    /// refused for it.
    pub fn pid_taken(&self) -> Option<i32> {
        match self {
            Error::Restore(RestoreError::PidTaken { pid, .. }) => Some(*pid),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_rolled_up_error_prints_as_its_module_does() {
        let module = ImageError::Exists {
            path: PathBuf::from("/var/lib/hiber/x"),
        };
        let text = module.to_string();
        let crate_error: Error = RestoreError::from(module).into();
        assert_eq!(crate_error.to_string(), text);
        let e: Error = CheckpointError::Cancelled { stage: "freezing" }.into();
        assert!(e.is_cancelled());
        assert!(e.refusal().is_none());
        let e: Error = RestoreError::PidTaken {
            pid: 4242,
            comm: "bash".into(),
        }
        .into();
        assert_eq!(e.pid_taken(), Some(4242));
        assert!(!e.is_cancelled());
    }
}
