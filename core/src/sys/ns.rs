//! Namespaces and unsharing: moving the calling thread into a namespace
//! or out of what it shares, and asking nsfs about a namespace. libc:
//! rustix's `unshare` is unsafe by signature, its `setns` takes only a
//! typed kind, and the nsfs ioctls are in neither.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// `unshare(flags)` of the calling thread (`CLONE_NEWNET`, `CLONE_FS`…).
/// Never `CLONE_FILES` nor `CLONE_VM` here: core unshares only what one
/// helper thread owns alone.
pub fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: unshare takes a flag word; what it unshares is this thread's.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Move the calling thread into the namespace `ns` (an nsfs fd) of kind
/// `kind` (`CLONE_NEW*`, or 0 for any).
pub fn setns(ns: impl AsFd, kind: i32) -> io::Result<()> {
    // SAFETY: setns takes an fd we hold and a flag word; only this thread
    // moves.
    if unsafe { libc::setns(ns.as_fd().as_raw_fd(), kind) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The parent of user namespace `ns` (`NS_GET_PARENT`); EPERM past the
/// top of the caller's.
pub fn parent(ns: impl AsFd) -> io::Result<OwnedFd> {
    /// `_IO(0xb7, 0x2)`.
    const NS_GET_PARENT: libc::c_ulong = 0xb702;
    // SAFETY: ioctl on an nsfs fd we hold: returns a new fd or -1.
    let fd = unsafe { libc::ioctl(ns.as_fd().as_raw_fd(), NS_GET_PARENT) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The uid that owns user namespace `ns` (`NS_GET_OWNER_UID`).
pub fn owner_uid(ns: impl AsFd) -> io::Result<u32> {
    /// `_IO(0xb7, 0x4)`.
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
    let mut owner: libc::uid_t = 0;
    // SAFETY: ioctl on our nsfs fd, writing one uid_t into `owner`.
    if unsafe { libc::ioctl(ns.as_fd().as_raw_fd(), NS_GET_OWNER_UID, &mut owner) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owner)
}
