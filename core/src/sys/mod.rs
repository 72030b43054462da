//! The lowest layer: thin wrappers of the syscalls the layers above share,
//! each turning the kernel's -1/errno into `io::Result` and owning what it
//! returns. Nothing here knows about images, processes or policies.
//!
//! Each wrapper is on `rustix` or `nix` where one has the call complete
//! and exact (the same syscall, flags and errno) and safe on a borrowed fd;
//! on `libc`, with a `// SAFETY:` line, where neither has, or where the fd
//! is only a number (another process's fd table, a forked child's), or
//! where the value is raw as saved (a signal number nix's `Signal` cannot
//! name, flags rustix's bitflags may not know). Outside
//! this folder core keeps `unsafe` only in the injection machinery
//! (`core/tests/layers.rs` checks it).

pub mod creds;
pub mod event;
pub mod fd;
pub mod fs;
pub mod futex;
pub mod host;
pub mod inotify;
pub mod keyring;
pub mod lock;
pub mod mm;
pub mod ns;
pub mod pagemap;
pub mod pipe;
pub mod process;
pub mod shm;
pub mod signal;
pub mod socket;
pub mod term;
pub mod thread;
pub mod time;
pub mod uffd;
pub mod uio;
pub mod wrap;
