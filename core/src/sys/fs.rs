//! Paths and the filesystem: opening with exact flags, file handles,
//! memfds, device nodes, a thread's working directory, root and umask,
//! and writeback.

use rustix::fs::{FileType, MemfdFlags, Mode};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// `open(2)` of `path` with exactly `flags` (std's `OpenOptions` cannot
/// express them all) and `mode` for a file it creates. libc: the flags
/// come as saved, bits rustix may not name included.
pub fn open(path: &CStr, flags: i32, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: path is NUL-terminated; open returns a new fd or -1.
    let fd = unsafe { libc::open(path.as_ptr(), flags, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open the inode that file handle `handle` (of `handle_type`) names on
/// the filesystem of `mount` (`open_by_handle_at`). libc: neither nix nor
/// rustix has it.
pub fn open_by_handle(
    mount: impl AsFd,
    handle_type: i32,
    handle: &[u8],
    flags: i32,
) -> io::Result<OwnedFd> {
    // struct file_handle: handle_bytes (u32), handle_type (i32), bytes.
    let mut raw = Vec::with_capacity(8 + handle.len());
    raw.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    raw.extend_from_slice(&handle_type.to_ne_bytes());
    raw.extend_from_slice(handle);
    // SAFETY: raw holds a complete struct file_handle; the call returns a
    // new fd or -1.
    let fd = unsafe {
        libc::open_by_handle_at(mount.as_fd().as_raw_fd(), raw.as_mut_ptr().cast(), flags)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new close-on-exec memfd named `name` (`memfd_create(MFD_CLOEXEC)`).
pub fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC)?)
}

/// A new close-on-exec memfd named `name`, with the `MFD_*` bits
/// `flags` besides (kept as given, known to rustix's table or not).
pub fn memfd_with(name: &CStr, flags: u32) -> io::Result<OwnedFd> {
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::from_bits_retain(flags);
    Ok(rustix::fs::memfd_create(name, flags)?)
}

/// Make a char device node of `dev` (mode 0) at `path` (`mknod(S_IFCHR)`).
pub fn mknod_char(path: &CStr, dev: libc::dev_t) -> io::Result<()> {
    Ok(rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        FileType::CharacterDevice,
        Mode::empty(),
        dev,
    )?)
}

/// Set the calling thread's umask (its fs_struct must be its own).
pub fn set_umask(mask: u32) {
    rustix::process::umask(Mode::from_bits_retain(mask));
}

/// Make `dir` the calling thread's working directory (`fchdir`).
pub fn fchdir(dir: impl AsFd) -> io::Result<()> {
    Ok(rustix::process::fchdir(dir)?)
}

/// Make `path` the working directory (`chdir`).
pub fn chdir(path: &CStr) -> io::Result<()> {
    Ok(rustix::process::chdir(path)?)
}

/// Make `path` the root directory (`chroot`).
pub fn chroot(path: &CStr) -> io::Result<()> {
    Ok(rustix::process::chroot(path)?)
}

/// Make the working directory the calling thread's root (`chroot(".")`).
pub fn chroot_here() -> io::Result<()> {
    Ok(rustix::process::chroot(c".")?)
}

/// Write back the whole filesystem `fd` is on (`syncfs`).
pub fn syncfs(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::syncfs(fd)?)
}

/// Start writeback of `len` bytes of `fd` from `offset`, without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). libc: rustix lacks it.
pub fn start_writeback(fd: impl AsFd, offset: i64, len: i64) -> io::Result<()> {
    // SAFETY: sync_file_range takes integers; no memory is passed.
    let r = unsafe {
        libc::sync_file_range(
            fd.as_fd().as_raw_fd(),
            offset,
            len,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
