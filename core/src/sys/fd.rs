//! File descriptors: pidfds, taking another process's fds, comparing
//! open file descriptions, fstat, bytes queued, status flags, pipe
//! sizes and seals.

use rustix::fs::OFlags;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

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

// The fcntl calls below go through rustix: it has each one complete (the
// same command, the same argument, errno as `io::Error`) and safe on a
// borrowed fd, so they need no `unsafe` of ours. (nix has them too, but is
// no dependency of the workspace; rustix already is.)

/// Set a fd's file status flags (`F_SETFL`: `O_NONBLOCK`, `O_APPEND`…).
pub fn set_status_flags(fd: impl AsFd, flags: u32) -> io::Result<()> {
    Ok(rustix::fs::fcntl_setfl(
        fd,
        OFlags::from_bits_retain(flags),
    )?)
}

/// A copy of `fd` at the lowest free number at or above `base`, close-on-exec.
pub fn dup_above(fd: impl AsFd, base: RawFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, base)?)
}

/// A pipe's capacity in bytes (`F_GETPIPE_SZ`).
pub fn pipe_size(fd: impl AsFd) -> io::Result<usize> {
    Ok(rustix::pipe::fcntl_getpipe_size(fd)?)
}

/// Ask for a pipe capacity of `size` bytes (`F_SETPIPE_SZ`); the capacity
/// the kernel gave.
pub fn set_pipe_size(fd: impl AsFd, size: usize) -> io::Result<usize> {
    Ok(rustix::pipe::fcntl_setpipe_size(fd, size)?)
}

/// A memfd's seals (`F_GET_SEALS`), as the `F_SEAL_*` bits.
pub fn seals(fd: impl AsFd) -> io::Result<u32> {
    Ok(rustix::fs::fcntl_get_seals(fd)?.bits())
}

/// Add the seals `seals` (`F_SEAL_*` bits) to a memfd (`F_ADD_SEALS`).
pub fn add_seals(fd: impl AsFd, seals: u32) -> io::Result<()> {
    Ok(rustix::fs::fcntl_add_seals(
        fd,
        rustix::fs::SealFlags::from_bits_retain(seals),
    )?)
}

// Calls on a bare fd number (the fd tables of restored processes, the
// program's own open files while frozen) go through libc: rustix wants a
// borrowed fd, which only `unsafe` makes from a number.

/// A pidfd of `pid` with `flags` (`PIDFD_NONBLOCK`…).
pub fn pidfd_open_flags(pid: i32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A fd's file status flags (`F_GETFL`).
pub fn status_flags_of(fd: RawFd) -> io::Result<i32> {
    // SAFETY: F_GETFL takes no argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags)
}

/// Set the file status flags of fd number `fd` (`F_SETFL`).
pub fn set_status_flags_of(fd: RawFd, flags: i32) -> io::Result<()> {
    // SAFETY: F_SETFL takes an integer argument.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One `read(2)` of fd number `fd` into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: read writes at most buf.len() bytes into buf.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One `write(2)` of `buf` to fd number `fd`.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: write reads at most buf.len() bytes from buf.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Move `fd`'s offset to `pos` (`lseek(SEEK_SET)`).
pub fn seek_to(fd: impl AsFd, pos: i64) -> io::Result<()> {
    // SAFETY: lseek takes integers; no memory is passed.
    if unsafe { libc::lseek(fd.as_fd().as_raw_fd(), pos, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Put a copy of fd number `old` at number `new` with `flags`
/// (`O_CLOEXEC` or 0), closing what was there (`dup3`).
pub fn dup3_of(old: RawFd, new: RawFd, flags: i32) -> io::Result<()> {
    // SAFETY: dup3 takes integers; no memory is passed.
    if unsafe { libc::dup3(old, new, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Move fd number `fd`'s offset to `pos` (`lseek(SEEK_SET)`).
pub fn seek_to_of(fd: RawFd, pos: i64) -> io::Result<()> {
    // SAFETY: lseek takes integers; no memory is passed.
    if unsafe { libc::lseek(fd, pos, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Close fd number `fd` (`close`): only for a forked copy closing its
/// copy of an fd that the code it runs owns nowhere else.
pub fn close_of(fd: RawFd) -> io::Result<()> {
    // SAFETY: close takes an integer; no owner of this fd runs here.
    if unsafe { libc::close(fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Close fds `first` to `last` (`close_range`, no flags). Only for a
/// forked copy laying out its own fd table, which never returns to code
/// that owns an fd in the range.
pub fn close_range_of(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range takes integers; no memory is passed.
    if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
