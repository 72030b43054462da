//! File descriptors: pidfds, taking another process's fds, comparing
//! open file descriptions, fstat, bytes queued.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd is a live pidfd; the call returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// Whether two fds of this process refer to one open file description.
pub fn same_ofd(a: &OwnedFd, b: &OwnedFd) -> bool {
    const KCMP_FILE: i32 = 0;
    let me = std::process::id();
    // SAFETY: kcmp compares kernel objects by index; no memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            me,
            me,
            KCMP_FILE,
            a.as_raw_fd(),
            b.as_raw_fd(),
        )
    };
    r == 0
}

pub fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data; zeroed is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open and st is a valid out pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Bytes waiting to be read on `fd` (`FIONREAD`).
pub fn queued_bytes(fd: RawFd) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to a valid pointer.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut v) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Set a fd's file status flags (`F_SETFL`: `O_NONBLOCK`, `O_APPEND`…).
pub fn set_status_flags(fd: &OwnedFd, flags: u32) -> io::Result<()> {
    // SAFETY: F_SETFL on an open fd with an integer argument.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags as libc::c_int) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A copy of `fd` at the lowest free number at or above `base`, close-on-exec.
pub fn dup_above(fd: &OwnedFd, base: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an open fd returns a new fd or -1.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, base) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}
