//! The lowest layer: thin wrappers of the syscalls the layers above share,
//! each turning the kernel's -1/errno into `io::Result` and owning what it
//! returns. Nothing here knows about images, processes or policies.

pub mod fd;
pub mod socket;
