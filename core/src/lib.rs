//! hiber-core: the checkpoint/restore engine.
//!
//! It owns everything about processes as the kernel sees them: the task
//! tree, freezing, registers, memory, signals, credentials and open files,
//! and the on-disk image those are saved to. It knows nothing of X, D-Bus
//! or GTK; the session layer builds on it.

pub mod attachment;
pub mod cgroup;
pub mod checkpoint;
pub mod creds;
pub mod devices;
pub mod error;
pub mod faults;
pub mod files;
pub mod freeze;
pub mod gone_dir;
pub mod image;
pub mod locks;
pub mod memory;
pub mod namespaces;
pub mod pagescan;
pub mod policy;
pub mod precopy;
pub mod procfs;
pub mod procmem;
pub mod ptrace;
pub mod remote;
pub mod restore;
pub mod seccomp;
pub mod signals;
pub mod snapshot;
pub mod sockdiag;
pub mod sys;
pub mod thread;
pub mod timers;
pub mod uevent;

pub use attachment::Attachment;
pub use checkpoint::{
    check, check_without, checkpoint, CheckpointError, CheckpointObserver, CheckpointOptions,
    CheckpointStats, LeftOut, PrecopyMode, Stage,
};
pub use error::{Error, Result};
pub use policy::{Policy, Report};
pub use restore::{
    restore, restore_cancellable, restore_with_progress, LazyOptions, RestoreError, RestoreOptions,
    Restored,
};
pub use snapshot::Snapshot;
