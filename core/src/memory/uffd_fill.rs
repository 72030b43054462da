//! Eager filling through a userfaultfd: the saved pages of a large
//! process's private anonymous memory go in with `UFFDIO_COPY` instead of
//! `process_vm_writev`. A write into a fresh mapping faults in a zeroed
//! page, then copies over it; `UFFDIO_COPY` allocates the page and copies
//! into it once. Measured here on 1 GiB, one thread, with the read and
//! the hash of each chunk: 340 ms against 490 ms.
//!
//! The uffd is made by the target (a remote `userfaultfd()`, while it
//! still has the restorer's credentials and no seccomp filter), but its
//! ranges are registered only once the swap is over: from then until
//! the release nothing runs in the target, so no fault ever waits on a
//! page not yet in. The fill jobs hold the only references: the last one
//! done closes the uffd, which unregisters the ranges, and the fillers
//! are all done before the release.

use super::lazy;
use super::pages::{MemoryError, Result, PAGE_SIZE};
use super::Vma;
use crate::procmem::ProcMem;
use crate::remote::{RemoteError, RemoteTask};
use crate::sys::uffd;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Private anonymous memory from which a process is filled through a
/// userfaultfd: below it, the calls that make and register the uffd
/// (about a dozen syscalls, two of them remote) cost more than the
/// zeroing they save (about 0.15 ms per MiB).
pub const FROM_BYTES: u64 = 4 << 20;

/// A uffd of the stopped task `pid`'s mm to fill `vmas` through, when
/// their fillable memory reaches [`FROM_BYTES`]. None below that, or
/// where the kernel gives the target no userfaultfd (none built in, or
/// refused to these credentials): the pages then go in by writes.
pub fn open(task: &RemoteTask, pid: i32, vmas: &[Vma]) -> Result<Option<OwnedFd>> {
    if lazy::lazy_bytes(vmas) < FROM_BYTES {
        return Ok(None);
    }
    // User-mode faults only: nothing runs in the process while its ranges
    // are registered, and that mode needs no privilege (a restorer that is
    // not root, with vm.unprivileged_userfaultfd at 0).
    match lazy::open_for(task, pid, uffd::USER_MODE_ONLY, 0) {
        Ok(fd) => Ok(Some(fd)),
        Err(MemoryError::Remote(RemoteError::Syscall {
            name: "userfaultfd",
            errno,
            ..
        })) => {
            let err = std::io::Error::from_raw_os_error(errno);
            tracing::debug!(pid, %err, "no userfaultfd: pages go in by writes");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Register `uffd`'s ranges (the mappings [`lazy::is_lazy`] names), once
/// nothing runs in the target until its release: the uffd the fill jobs
/// share. None if registering fails (said in the log): the ones
/// registered already are unregistered as the uffd closes, and the pages
/// go in by writes.
pub fn arm(uffd: OwnedFd, pid: i32, vmas: &[Vma]) -> Option<Arc<OwnedFd>> {
    match lazy::register_lazy_ranges(&uffd, pid, vmas) {
        Ok(()) => {
            let bytes = lazy::lazy_bytes(vmas);
            tracing::debug!(pid, bytes, "pages copied in through a userfaultfd");
            Some(Arc::new(uffd))
        }
        Err(err) => {
            tracing::debug!(pid, %err, "userfaultfd not registered: pages go in by writes");
            None
        }
    }
}

/// Copy the whole pages of `data` in at `addr` through `uffd`. A page
/// already there (the kernel made it before the registration) is written
/// over through `mem`: a write to a present page waits on no uffd, where
/// one to a missing page would wait for us.
pub(super) fn copy_in(uffd: &OwnedFd, mem: &mut ProcMem, addr: u64, data: &[u8]) -> Result<()> {
    let page = PAGE_SIZE as usize;
    let mut done = 0;
    while done < data.len() {
        let at = addr + done as u64;
        match uffd::copy(uffd, at, &data[done..]) {
            Ok(()) => return Ok(()),
            Err((_, copied)) if copied > 0 => done += copied as usize,
            Err((e, _)) if e.raw_os_error() == Some(libc::EEXIST) => {
                mem.write(at, &data[done..(done + page).min(data.len())])?;
                done += page;
            }
            Err((source, _)) => {
                return Err(MemoryError::CopyIn {
                    pid: mem.pid(),
                    addr: at,
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_already_there_is_written_over_and_the_rest_copied_in() {
        let page = PAGE_SIZE as usize;
        let len = 4 * page;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let region = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(region, libc::MAP_FAILED);
        let at = region as u64;
        let mut mem = ProcMem::new(std::process::id() as i32, true);
        // Page 1 is there before the registration; the others are missing.
        mem.write(at + PAGE_SIZE, &[0xee; 16]).unwrap();
        let fd = uffd::open(libc::O_CLOEXEC).unwrap();
        uffd::api(&fd, uffd::API, 0).unwrap();
        uffd::register(&fd, at, len as u64, uffd::REGISTER_MODE_MISSING).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i / page) as u8 + 1).collect();
        copy_in(&fd, &mut mem, at, &data).unwrap();
        // Closed before the pages are read: a page left missing then
        // reads zero instead of waiting on a uffd nobody serves.
        drop(fd);
        let mut back = vec![0u8; len];
        mem.read(at, &mut back).unwrap();
        // SAFETY: unmapping the mapping made above.
        unsafe { libc::munmap(region, len) };
        assert!(back == data, "every page holds what was copied in");
    }
}
