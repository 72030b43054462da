//! Pipes: making one, and copying what one holds without consuming it.

use rustix::pipe::{PipeFlags, SpliceFlags};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// A new close-on-exec pipe (`pipe2(O_CLOEXEC)`): read end, write end.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?)
}

/// Copy up to `len` bytes queued in pipe `from` into pipe `to` without
/// consuming them, never blocking (`tee(SPLICE_F_NONBLOCK)`); the count
/// copied.
pub fn tee_nonblocking(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    Ok(rustix::pipe::tee(from, to, len, SpliceFlags::NONBLOCK)?)
}
