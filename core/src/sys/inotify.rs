//! inotify: an instance and its watches, on rustix (complete and exact:
//! `inotify_init1`, `inotify_add_watch`, `inotify_rm_watch`).

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// A new inotify instance, close-on-exec and non-blocking.
pub fn init_nonblocking() -> io::Result<OwnedFd> {
    Ok(inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?)
}

/// Watch `path` for the events of `mask` (`IN_*` bits, as saved): the
/// watch descriptor.
pub fn add_watch(fd: impl AsFd, path: &CStr, mask: u32) -> io::Result<i32> {
    Ok(inotify::add_watch(
        fd,
        path,
        WatchFlags::from_bits_retain(mask),
    )?)
}

/// End watch `wd`; its `IN_IGNORED` event is queued.
pub fn remove_watch(fd: impl AsFd, wd: i32) -> io::Result<()> {
    Ok(inotify::remove_watch(fd, wd)?)
}
