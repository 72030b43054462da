//! Memory mappings of our own: made, touched and unmapped through one
//! owner, so no caller handles a raw address. libc: rustix's and nix's
//! `mmap` are unsafe by signature too.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};

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

    /// A fresh private anonymous read-write mapping of `len` bytes at
    /// exactly `addr` if nothing is mapped there (`MAP_FIXED_NOREPLACE`).
    /// A kernel older than 4.17 takes the address as a hint only: see
    /// [`Mapping::addr`].
    pub fn anonymous_at(addr: u64, len: usize) -> io::Result<Self> {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping
        // (and as a hint, neither does an older kernel).
        let base = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { base, len })
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

    /// Copy `bytes` in at `offset` (all of them inside it).
    pub fn write_bytes(&mut self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.len,
            "{} bytes at {offset} past the mapping",
            bytes.len()
        );
        // SAFETY: inside the read-write mapping this value owns, which no
        // slice of ours borrows.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.cast::<u8>().add(offset),
                bytes.len(),
            )
        };
    }

    /// Keep the mapping for the rest of the process's life, as it is.
    pub fn keep(self) {
        std::mem::forget(self);
    }

    /// Make its first `len` bytes (whole pages) read-only and executable
    /// (`mprotect`), and keep the whole mapping for the rest of the
    /// process's life: nothing writes through this value again.
    pub fn keep_as_code(self, len: usize) -> io::Result<()> {
        assert!(len <= self.len, "{len} bytes past the mapping");
        let base = self.base;
        self.keep();
        // SAFETY: pages of the mapping just given up, which no Rust value
        // refers to any more.
        if unsafe { libc::mprotect(base, len, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
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

/// Zeroed atomics in one anonymous shared mapping (`MAP_SHARED |
/// MAP_ANONYMOUS`): the processes forked after it see the same values and
/// can futex-wait on the 32-bit ones. Three runs of one type each (the
/// 64-bit run first, for its alignment), so no byte is seen as two types.
#[derive(Debug)]
pub struct SharedAtomics {
    map: Mapping,
    u64s: usize,
    u32s: usize,
    i32s: usize,
}

impl SharedAtomics {
    /// `u64s`, `u32s` and `i32s` atomics, all zero, in whole pages.
    pub fn new(u64s: usize, u32s: usize, i32s: usize) -> io::Result<Self> {
        let len = (u64s * 8 + (u32s + i32s) * 4).next_multiple_of(4096);
        let map = Mapping::map(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
        )?;
        Ok(Self {
            map,
            u64s,
            u32s,
            i32s,
        })
    }

    pub fn u64s(&self) -> &[AtomicU64] {
        // SAFETY: the page-aligned mapping, zeroed by the kernel and alive
        // while self is, starts with `u64s` 8-byte words, only ever
        // accessed as these atomics (zero is a valid one).
        unsafe { std::slice::from_raw_parts(self.map.base.cast(), self.u64s) }
    }

    pub fn u32s(&self) -> &[AtomicU32] {
        // SAFETY: as above: `u32s` 4-byte words right after the 64-bit run.
        unsafe {
            std::slice::from_raw_parts(
                self.map.base.cast::<AtomicU64>().add(self.u64s).cast(),
                self.u32s,
            )
        }
    }

    pub fn i32s(&self) -> &[AtomicI32] {
        // SAFETY: as above: `i32s` 4-byte words right after the 32-bit run.
        unsafe {
            std::slice::from_raw_parts(
                self.map
                    .base
                    .cast::<AtomicU64>()
                    .add(self.u64s)
                    .cast::<AtomicU32>()
                    .add(self.u32s)
                    .cast(),
                self.i32s,
            )
        }
    }
}
