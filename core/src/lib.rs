//! hiber-core: the checkpoint/restore engine.
//!
//! It owns everything about processes as the kernel sees them: the task
//! tree, freezing, registers, memory, signals, credentials and open files,
//! and the on-disk image those are saved to. It knows nothing of X, D-Bus
//! or GTK; the session layer builds on it.

pub mod image;
pub mod procfs;
