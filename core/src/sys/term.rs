//! Terminals: termios, window size, a pty master's peer, lock and packet
//! mode, the controlling terminal and its foreground group. libc throughout: the fds are the program's own open files, by
//! number, and TCGETS/TCSETS must stay the plain ioctls on glibc's struct
//! termios (saved as bytes in images); rustix's termios calls use TCGETS2.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// An ioctl `req` that writes one int (`TIOCGPKT`, `TIOCGPTLCK`…).
pub fn ioctl_get_int(fd: RawFd, req: libc::c_ulong) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: these requests write one int to a valid pointer.
    if unsafe { libc::ioctl(fd, req, &mut v) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// An ioctl `req` that reads one int (`TIOCPKT`, `TIOCSPTLCK`…).
pub fn ioctl_set_int(fd: RawFd, req: libc::c_ulong, v: libc::c_int) -> io::Result<()> {
    // SAFETY: these requests read one int from a valid pointer.
    if unsafe { libc::ioctl(fd, req, &v) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An all-zero termios, to fill.
pub fn zeroed_termios() -> libc::termios {
    // SAFETY: termios is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// A terminal's termios (`TCGETS`).
pub fn tcgets(fd: RawFd) -> io::Result<libc::termios> {
    let mut t = zeroed_termios();
    // SAFETY: TCGETS writes a struct termios to a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TCGETS, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

/// Set a terminal's termios at once (`TCSETS`).
pub fn tcsets(fd: RawFd, t: &libc::termios) -> io::Result<()> {
    // SAFETY: TCSETS reads a struct termios from a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TCSETS, t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The bytes of a termios, as images keep it.
pub fn termios_bytes(t: &libc::termios) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain-data struct.
    unsafe {
        std::slice::from_raw_parts(
            (t as *const libc::termios).cast::<u8>(),
            std::mem::size_of::<libc::termios>(),
        )
    }
    .to_vec()
}

/// A termios from saved bytes, when they have the size of one.
pub fn termios_from(bytes: &[u8]) -> Option<libc::termios> {
    (bytes.len() == std::mem::size_of::<libc::termios>()).then(|| {
        // SAFETY: termios is plain data; any bytes of its size are a value.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<libc::termios>()) }
    })
}

/// A terminal's window size (`TIOCGWINSZ`): rows, columns, x and y pixels.
pub fn winsize(fd: RawFd) -> io::Result<[u16; 4]> {
    let mut w = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a struct winsize to a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok([w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel])
}

/// Set a terminal's window size (`TIOCSWINSZ`), as [`winsize`] gives it.
pub fn set_winsize(fd: RawFd, size: [u16; 4]) -> io::Result<()> {
    let w = libc::winsize {
        ws_row: size[0],
        ws_col: size[1],
        ws_xpixel: size[2],
        ws_ypixel: size[3],
    };
    // SAFETY: TIOCSWINSZ reads a struct winsize from a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &w) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new open file of pty master `master`'s slave, opened with `flags`
/// (`TIOCGPTPEER`).
pub fn open_peer(master: RawFd, flags: i32) -> io::Result<OwnedFd> {
    /// `_IO('T', 0x41)`.
    const TIOCGPTPEER: libc::c_ulong = 0x5441;
    // SAFETY: TIOCGPTPEER takes the open flags by value, returns a new fd.
    let fd = unsafe { libc::ioctl(master, TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether fd number `fd` is a terminal (`isatty`).
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty takes an integer.
    unsafe { libc::isatty(fd) == 1 }
}

/// Make terminal `fd` the controlling terminal of our session, which we
/// lead and which has none (`TIOCSCTTY`, no stealing).
pub fn take_ctty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes its argument by value.
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make `pgrp` the foreground process group of terminal `fd`
/// (`tcsetpgrp`).
pub fn set_foreground(fd: RawFd, pgrp: i32) -> io::Result<()> {
    // SAFETY: tcsetpgrp takes integers.
    if unsafe { libc::tcsetpgrp(fd, pgrp) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
