//! What goes wrong in a restore: the lowest file of `restore`, which the
//! others import.

use crate::files::FileError;
use crate::image::ImageError;
use crate::memory::shmem::ShmemError;
use crate::memory::MemoryError;
use crate::procfs::ProcfsError;
use crate::ptrace::PtraceError;
use crate::remote::RemoteError;
use crate::sys::wrap::OpIo;
use crate::uevent::UeventError;
use std::path::PathBuf;
use std::time::Duration;

use super::plan::PlanError;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Shmem(#[from] ShmemError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Ptrace(#[from] PtraceError),
    #[error(transparent)]
    Procfs(#[from] ProcfsError),
    #[error(transparent)]
    Uevent(#[from] UeventError),
    #[error("pid {pid} is taken by {comm}; free it or restore with --pidns")]
    PidTaken { pid: i32, comm: String },
    #[error("pid {pid}: its thread {tid} (in nested pid namespaces {nested:?}) could not be made again: the id is taken ({holder})")]
    ThreadIdTaken {
        pid: i32,
        tid: i32,
        nested: Vec<i32>,
        holder: String,
    },
    #[error("another restore held {} for {waited:?}; try again when it is done", path.display())]
    RestoreLock {
        path: PathBuf,
        waited: Duration,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error("pid {pid}: the caller may not restore its credentials: {reason}")]
    Credentials { pid: i32, reason: String },
    #[error("invalid image {dir}: {reason}")]
    Invalid { dir: PathBuf, reason: String },
    #[error("pid {pid} failed while {step}: {}", std::io::Error::from_raw_os_error(*errno))]
    Node {
        pid: i32,
        step: &'static str,
        errno: i32,
    },
    // No pid: the whole restore tree did not get there.
    #[error("the restore tree did not reach stage {stage} within {secs} s")]
    Timeout { stage: &'static str, secs: u64 },
    // No pid: `what` names what was awaited.
    #[error("waited {secs} s for {what}; it did not finish")]
    Waited { what: String, secs: u64 },
    // No pid, fd or path: the restorer's own objects (pipes, mappings, its credentials).
    #[error("{what}")]
    Os {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("no room for the restore gadget in the address space of pid {pid}")]
    NoGadgetRoom { pid: i32 },
    /// Cancelled by the caller before the restored processes ran: the tree
    /// made so far was ended.
    // No pid: the caller's cancel ends the whole restore.
    #[error("the restore was cancelled while {stage}; nothing of it runs")]
    Cancelled { stage: &'static str },
}

impl From<OpIo> for RestoreError {
    fn from(e: OpIo) -> Self {
        RestoreError::Os {
            what: e.what,
            source: e.source,
        }
    }
}

pub type Result<T> = std::result::Result<T, RestoreError>;
