//! SysV shared memory segments: made, removed, their owner and mode set,
//! and attached in this process for filling. libc: nix has none of these
//! calls, and rustix only the POSIX `shm_open`.

use std::io;

/// A new segment of `size` bytes under `key`, with the `IPC_*` bits and
/// mode `flags` (`shmget`): its id.
pub fn get(key: i32, size: usize, flags: i32) -> io::Result<i32> {
    // SAFETY: shmget takes integers only.
    let id = unsafe { libc::shmget(key, size, flags) };
    if id < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(id)
}

/// Mark segment `id` for removal once nobody is attached (`IPC_RMID`).
pub fn remove(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID ignores the shmid_ds pointer.
    if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Segment `id`'s kernel record (`IPC_STAT`).
pub fn stat(id: i32) -> io::Result<libc::shmid_ds> {
    // SAFETY: shmid_ds is plain data, all zeroes a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT fills the shmid_ds it points to.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ds)
}

/// Set segment `id`'s owner and mode from `ds` (`IPC_SET`).
pub fn set(id: i32, ds: &mut libc::shmid_ds) -> io::Result<()> {
    // SAFETY: IPC_SET reads the shmid_ds it points to.
    if unsafe { libc::shmctl(id, libc::IPC_SET, ds) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A segment attached in this process where the kernel chooses,
/// detached (`shmdt`) when dropped.
#[derive(Debug)]
pub struct Attached {
    at: *mut libc::c_void,
    len: usize,
}

impl Attached {
    /// Attach segment `id` read-write (`shmat`); `len` is its size
    /// rounded up to whole pages, all of which the attachment covers.
    pub fn new(id: i32, len: usize) -> io::Result<Self> {
        // SAFETY: attach anywhere: nothing of ours is replaced.
        let at = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if at as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { at, len })
    }

    /// Its bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: an attachment covers whole pages, ours until dropped,
        // and borrowed through this value only.
        unsafe { std::slice::from_raw_parts_mut(self.at.cast::<u8>(), self.len) }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // SAFETY: detaching what shmat gave us, no longer borrowed.
        unsafe { libc::shmdt(self.at) };
    }
}
