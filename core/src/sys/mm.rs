//! Memory mappings of our own: made, touched and unmapped through one
//! owner, so no caller handles a raw address.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// A mapping of ours, unmapped when dropped.
#[derive(Debug)]
pub struct Mapping {
    base: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    /// A fresh private anonymous read-write mapping of `len` bytes.
    pub fn anonymous(len: usize) -> io::Result<Self> {
        Self::map(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
        )
    }

    /// A private read-only mapping of the first `len` bytes of `fd`.
    pub fn private_read(fd: impl AsFd, len: usize) -> io::Result<Self> {
        Self::map(
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd.as_fd().as_raw_fd(),
        )
    }

    fn map(len: usize, prot: i32, flags: i32, fd: i32) -> io::Result<Self> {
        // SAFETY: a fresh mapping where the kernel chooses: nothing of
        // ours is replaced.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { base, len })
    }

    /// Its first address.
    pub fn addr(&self) -> usize {
        self.base as usize
    }

    /// Write `byte` at `offset` (which must be inside it).
    pub fn write(&mut self, offset: usize, byte: u8) {
        assert!(offset < self.len, "offset {offset} past the mapping");
        // SAFETY: inside the read-write mapping this value owns.
        unsafe { *self.base.cast::<u8>().add(offset) = byte };
    }

    /// Read the byte at `offset` (inside it), so the page is touched even
    /// though the value is not used.
    pub fn read_volatile(&self, offset: usize) -> u8 {
        assert!(offset < self.len, "offset {offset} past the mapping");
        // SAFETY: inside the readable mapping this value owns.
        unsafe { std::ptr::read_volatile(self.base.cast::<u8>().add(offset)) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping this value made, no longer used.
        unsafe { libc::munmap(self.base, self.len) };
    }
}
