//! File locks on fd numbers: `flock` and the fcntl record locks (POSIX
//! and open-file-description). libc: they run in a restored process
//! before its swap, on fds by number; rustix's `fcntl_lock` locks whole
//! files only.

use std::io;
use std::os::fd::RawFd;

/// `flock(fd, op)` (`LOCK_SH`/`LOCK_EX`, with `LOCK_NB`).
pub fn flock(fd: RawFd, op: i32) -> io::Result<()> {
    // SAFETY: flock takes integers.
    if unsafe { libc::flock(fd, op) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Take a record lock of `kind` (`F_RDLCK`/`F_WRLCK`) on `len` bytes
/// from `start` (0: to the end) with `cmd` (`F_SETLK`, `F_OFD_SETLK`).
pub fn set_record_lock(fd: RawFd, cmd: i32, kind: i32, start: i64, len: i64) -> io::Result<()> {
    // SAFETY: flock is plain data; zeroed is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: fcntl lock command with a valid struct flock.
    if unsafe { libc::fcntl(fd, cmd, &fl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
