//! Waiting and event fds: poll, epoll, eventfd, signalfd, timerfd.

use rustix::event::{epoll, EventfdFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Wait up to `timeout` ms for `events` on fd number `fd`: the events
/// that came (0 on timeout). libc: the fd is a number, and the caller
/// decides what an `EINTR` means.
pub fn poll_one(fd: RawFd, events: libc::c_short, timeout: i32) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd.
    if unsafe { libc::poll(&mut p, 1, timeout) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(p.revents)
}

/// Wait up to `timeout` ms for the events of `fds` (their `revents` set):
/// how many fds have some (0 on timeout). libc: the fds are numbers, and
/// an entry of -1 is skipped, as the kernel does.
pub fn poll(fds: &mut [libc::pollfd], timeout: i32) -> io::Result<usize> {
    // SAFETY: poll on a slice of valid pollfds, its length passed.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A new close-on-exec epoll instance (`epoll_create1(EPOLL_CLOEXEC)`).
pub fn epoll_create() -> io::Result<OwnedFd> {
    Ok(epoll::create(epoll::CreateFlags::CLOEXEC)?)
}

/// Watch fd number `fd` for `events` with `data` (`EPOLL_CTL_ADD`).
/// libc: it runs in a forked child on fds by number, without allocating.
pub fn epoll_add(epfd: RawFd, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: epoll_ctl with a valid event struct.
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new eventfd holding `initial`, with the `EFD_*` bits `flags`.
pub fn eventfd(initial: u32, flags: i32) -> io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        initial,
        EventfdFlags::from_bits_retain(flags as _),
    )?)
}

/// A new signalfd for the signals of `mask` (the kernel's sigset: bit
/// n-1 for signal n), with the `SFD_*` bits `flags`. libc: `signalfd4`
/// with the kernel's 8-byte mask, which neither nix nor rustix takes.
pub fn signalfd(mask: u64, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: signalfd4 reads 8 bytes of mask from a valid pointer.
    let fd = unsafe { libc::syscall(libc::SYS_signalfd4, -1, &mask, 8usize, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A new timerfd on clock `clockid` (any id the kernel takes), with the
/// `TFD_*` bits `flags`. libc: rustix names only some clocks.
pub fn timerfd(clockid: libc::clockid_t, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes integers and returns a new fd or -1.
    let fd = unsafe { libc::timerfd_create(clockid, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Arm a timerfd relative to now: first expiry after `value`, then every
/// `interval` (seconds, nanoseconds).
pub fn timerfd_arm(fd: impl AsFd, value: (i64, i64), interval: (i64, i64)) -> io::Result<()> {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: interval.0,
            tv_nsec: interval.1,
        },
        it_value: libc::timespec {
            tv_sec: value.0,
            tv_nsec: value.1,
        },
    };
    // SAFETY: settime with a valid itimerspec and no old-value pointer.
    if unsafe { libc::timerfd_settime(fd.as_fd().as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set a timerfd's count of expirations not yet read (`TFD_IOC_SET_TICKS`).
pub fn timerfd_set_ticks(fd: impl AsFd, ticks: u64) -> io::Result<()> {
    /// `_IOW('T', 0, u64)`.
    const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
    // SAFETY: the ioctl reads one u64 from a valid pointer.
    if unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), TFD_IOC_SET_TICKS, &ticks) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
