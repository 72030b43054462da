//! Filling restored processes with their saved pages, eagerly: jobs of
//! chunks queued as each process is swapped in, served by worker threads
//! that read, check and decompress each chunk and put its pages in while
//! the tasks stay stopped.
//!
//! A process with enough private anonymous memory gets those pages
//! through a userfaultfd of its own, with `UFFDIO_COPY` instead of
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
use super::pages::{fill_pages, MemoryError, PageChunk, Result, PAGE_SIZE};
use super::Vma;
use crate::image::ImageReader;
use crate::procmem::ProcMem;
use crate::remote::{RemoteError, RemoteTask};
use crate::sys::uffd;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Saved pages to write into a restored process.
#[derive(Debug)]
pub struct FillJob<'a> {
    pub pid: i32,
    pub pages: &'a [PageChunk],
    /// The uffd to copy them in through, if any (see the module's text).
    pub uffd: Option<Arc<OwnedFd>>,
}

/// Chunks per job: small enough to spread one large process over every
/// worker, large enough that the queue costs nothing.
const CHUNKS_PER_JOB: usize = 16;

/// Split a mapping's pages into jobs for `pid`. Only pages that are the
/// process's own are ever written: a shared mapping's pages belong to its
/// file or object (written through the mapping, they would reach the file
/// on disk), so such a mapping yields no job whatever its document says.
/// With `uffd` (see the module's text), the mappings registered with it go in
/// through it.
pub fn fill_jobs<'a>(
    pid: i32,
    vma: &'a Vma,
    uffd: Option<&Arc<OwnedFd>>,
) -> impl Iterator<Item = FillJob<'a>> {
    let pages: &[PageChunk] = if vma.has_private_pages() {
        &vma.pages
    } else {
        &[]
    };
    let uffd = uffd.filter(|_| lazy::is_lazy(vma)).cloned();
    pages.chunks(CHUNKS_PER_JOB).map(move |pages| FillJob {
        pid,
        pages,
        uffd: uffd.clone(),
    })
}

/// Run `body` with a queue of page-filling jobs served by `workers`
/// threads, which read, check and decompress chunks and put them into
/// the processes (`process_vm_writev` and `UFFDIO_COPY` need no ptrace
/// stop, so this runs while the caller goes on with the next process). Returns once every
/// job is done; `filled` counts the bytes written.
pub fn with_page_fillers<'a, T, E: From<MemoryError>>(
    reader: &ImageReader,
    workers: usize,
    filled: &std::sync::atomic::AtomicU64,
    body: impl FnOnce(&std::sync::mpsc::Sender<FillJob<'a>>) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let (tx, rx) = std::sync::mpsc::channel::<FillJob<'a>>();
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|s| {
        // Owned by this closure: if `body` panics, unwinding drops it
        // before the scope joins the workers, so they stop instead of
        // waiting for jobs forever (and the restorer with them).
        let tx = tx;
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| s.spawn(|| fill_worker(&rx, reader, filled)))
            .collect();
        let result = body(&tx);
        // Close the queue: workers finish what is queued, then stop.
        drop(tx);
        let mut failed = None;
        for h in handles {
            if let Err(e) = h.join().expect("a page filler panicked") {
                failed.get_or_insert(e);
            }
        }
        let value = result?;
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(value),
        }
    })
}

fn fill_worker(
    rx: &std::sync::Mutex<std::sync::mpsc::Receiver<FillJob<'_>>>,
    reader: &ImageReader,
    filled: &std::sync::atomic::AtomicU64,
) -> Result<()> {
    // The restorer's ptrace exchanges with the tasks are the critical
    // path and wait on the scheduler at every step: the fillers yield to
    // them (they only need to finish before the tasks are let go).
    let _ = crate::sys::process::set_thread_nice(10);
    let mut buf = Vec::new();
    let mut mem: Option<ProcMem> = None;
    loop {
        let job = rx.lock().expect("queue lock").recv();
        let Ok(job) = job else {
            return Ok(());
        };
        let mem = match &mut mem {
            Some(m) if m.pid() == job.pid => m,
            slot => slot.insert(ProcMem::new(job.pid, true)),
        };
        fill_pages(
            job.pid,
            job.pages,
            reader,
            &mut buf,
            |addr, data| match &job.uffd {
                Some(uffd) => copy_in(uffd, mem, addr, data),
                None => mem.write(addr, data).map_err(MemoryError::from),
            },
        )?;
        let bytes: u64 = job.pages.iter().map(|p| p.chunk.raw_len as u64).sum();
        filled.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Private anonymous memory from which a process is filled through a
/// userfaultfd: below it, the calls that make and register the uffd
/// (about a dozen syscalls, two of them remote) cost more than the
/// zeroing they save (about 0.15 ms per MiB).
pub const UFFD_FROM_BYTES: u64 = 4 << 20;

/// A uffd of the stopped task `pid`'s mm to fill `vmas` through, when
/// their fillable memory reaches [`UFFD_FROM_BYTES`]. None below that, or
/// where the kernel gives the target no userfaultfd (none built in, or
/// refused to these credentials): the pages then go in by writes.
pub fn open(task: &RemoteTask, pid: i32, vmas: &[Vma]) -> Result<Option<OwnedFd>> {
    if lazy::lazy_bytes(vmas) < UFFD_FROM_BYTES {
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
fn copy_in(uffd: &OwnedFd, mem: &mut ProcMem, addr: u64, data: &[u8]) -> Result<()> {
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
        // A zeroed allocation this large (above malloc's largest mmap
        // threshold, 32 MiB) is a fresh mapping of its own, none of its
        // pages touched yet; four of them, page aligned, are registered.
        let backing = vec![0u8; 64 << 20];
        let at = (backing.as_ptr() as u64).next_multiple_of(PAGE_SIZE);
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
        drop(backing);
        assert!(back == data, "every page holds what was copied in");
    }
}
