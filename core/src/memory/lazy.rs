//! Lazily filled memory (`restore --lazy`): a restored process's private
//! anonymous mappings are registered with a userfaultfd before it
//! resumes, and a page server fills them from the image, the touched
//! pages first, the rest in the background in address order.
//!
//! Registration happens inside the target (the uffd belongs to its mm),
//! before its credentials and seccomp filters are set: `userfaultfd()` is
//! a remote syscall, then the restorer takes the fd with `pidfd_getfd`
//! and closes the target's copy, so the restored fd table stays exactly
//! as saved. `UFFDIO_API` and `UFFDIO_REGISTER` act on the uffd's own mm,
//! so the restorer issues them itself.
//!
//! The server ([`serve`]) ends with exit status 0 once every saved page
//! is in. While a uffd is open, a fault in a registered range waits for
//! it; once the last reference closes, the kernel unregisters the ranges
//! and later faults read zero. So a server that ends before it is done
//! must take the processes with it: the keeper holds a second reference
//! to every uffd and kills the lazy tree when the server ends otherwise
//! (see `restore::keeper`). A chunk that fails its checks ends the server
//! with [`EXIT_IMAGE`] and the failure in its status file.

use super::pages::{runs, MemoryError, PageChunk, Result, PAGE_SIZE};
use super::{Backing, Vma};
use crate::image::{ChunkRef, ImageReader};
use crate::remote::RemoteTask;
use crate::sys::uffd::{self, Event};
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

// <linux/userfaultfd.h>, x86_64.

/// All four are needed: without FORK a child forked before every page is
/// in reads zero where pages were still missing; without REMAP a moved
/// range is filled at its old address; without REMOVE and UNMAP the
/// server would fill ranges the program discarded.
pub const FEATURES: u64 = uffd::FEATURE_EVENT_FORK
    | uffd::FEATURE_EVENT_REMAP
    | uffd::FEATURE_EVENT_REMOVE
    | uffd::FEATURE_EVENT_UNMAP;

/// The server's exit status when the image failed it (a chunk that does
/// not match its hash, a pack cut short or gone).
pub const EXIT_IMAGE: i32 = 3;
/// The server's exit status for any other failure (a uffd call failed).
pub const EXIT_FAILED: i32 = 1;

/// Whether the mapping is filled lazily: private anonymous read-write
/// memory with saved pages. Everything else (private file mappings'
/// modified pages, read-only anonymous memory) is filled before the
/// process runs, as without `--lazy`.
pub fn is_lazy(v: &Vma) -> bool {
    matches!(v.backing, Backing::Anon) && !v.shared && v.read && v.write && !v.pages.is_empty()
}

/// Bytes of saved pages that a lazy restore of these mappings would load
/// on demand rather than before the processes run.
pub fn lazy_bytes<'a>(vmas: impl IntoIterator<Item = &'a Vma>) -> u64 {
    vmas.into_iter()
        .filter(|v| is_lazy(v))
        .flat_map(|v| &v.pages)
        .map(|p| u64::from(p.bitmap.count_ones()) * PAGE_SIZE)
        .sum()
}

/// The uffd features this kernel offers (a throwaway uffd of our own).
pub fn kernel_features() -> io::Result<u64> {
    let fd = uffd::open(libc::O_CLOEXEC)?;
    uffd::api(&fd, uffd::API, 0)
}

/// Check, before anything is built, that this kernel can serve a lazy
/// restore: the error names the missing features.
pub fn check_kernel() -> Result<()> {
    let have = kernel_features().with_pid(std::process::id() as i32, "probing userfaultfd")?;
    match FEATURES & !have {
        0 => Ok(()),
        missing => Err(MemoryError::LazyUnsupported { missing }),
    }
}

/// Fill now, from outside, the saved pages that hold `areas` (each an
/// address and a length) in lazy mappings: the kernel itself touches
/// them, where a fault does not wait for the server. It writes a thread's
/// rseq area at its registration during the swap (which would wait on a
/// server that does not run yet or, after registration, make the page
/// present with the wrong contents), and reads the command line for other
/// processes (a remote read of a missing page fails). Before [`register`].
pub fn fill_touched(
    mem: &mut crate::procmem::ProcMem,
    vmas: &[Vma],
    areas: &[(u64, u64)],
    reader: &ImageReader,
) -> Result<()> {
    let pid = mem.pid();
    let mut buf = Vec::new();
    for v in vmas.iter().filter(|v| is_lazy(v)) {
        let wanted: Vec<PageChunk> = v
            .pages
            .iter()
            .filter(|pc| {
                let end = pc.addr + super::pages::WINDOW_BYTES;
                areas
                    .iter()
                    .any(|&(a, len)| a < end && a + len.max(1) > pc.addr)
            })
            .cloned()
            .collect();
        super::pages::fill_pages(pid, &wanted, reader, &mut buf, |addr, data| {
            mem.write(addr, data).map_err(MemoryError::from)
        })?;
    }
    Ok(())
}

/// Register the lazy mappings of `mm` (see [`is_lazy`]) of the stopped
/// task `pid` with a new uffd of its mm; the restorer's reference to it,
/// or None when it has no lazy mapping. The target keeps no fd.
pub fn register(task: &RemoteTask, pid: i32, vmas: &[Vma]) -> Result<Option<OwnedFd>> {
    if !vmas.iter().any(is_lazy) {
        return Ok(None);
    }
    let ours = open_for(task, pid, 0, FEATURES)?;
    register_lazy_ranges(&ours, pid, vmas)?;
    Ok(Some(ours))
}

/// A new uffd of the stopped task `pid`'s mm, made with `flags` (besides
/// close-on-exec and non-blocking) and `features`: the restorer's
/// reference to it (the target keeps no fd).
pub(super) fn open_for(task: &RemoteTask, pid: i32, flags: i32, features: u64) -> Result<OwnedFd> {
    let flags = flags | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let theirs = task.syscall(
        "userfaultfd",
        libc::SYS_userfaultfd,
        [flags as u64, 0, 0, 0, 0, 0],
    )?;
    let taken = crate::sys::fd::pidfd_open(pid)
        .and_then(|pidfd| crate::sys::fd::pidfd_getfd(&pidfd, theirs as i32))
        .with_pid(pid, "taking its userfaultfd");
    // Closed whatever happened: the saved fd table has no such fd.
    task.syscall("close", libc::SYS_close, [theirs, 0, 0, 0, 0, 0])?;
    let ours = taken?;
    uffd::api(&ours, uffd::API, features).with_pid(pid, "UFFDIO_API")?;
    Ok(ours)
}

/// Register the lazy mappings of `vmas` (see [`is_lazy`]) of `pid` with
/// `uffd`, for missing pages.
pub(super) fn register_lazy_ranges(uffd: &OwnedFd, pid: i32, vmas: &[Vma]) -> Result<()> {
    for v in vmas.iter().filter(|v| is_lazy(v)) {
        uffd::register(uffd, v.start, v.len(), uffd::REGISTER_MODE_MISSING)
            .with_pid(pid, "UFFDIO_REGISTER(MISSING)")?;
    }
    Ok(())
}

/// Saved pages at consecutive addresses, consecutive in one chunk's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    addr: u64,
    pages: u64,
    /// Index into the server's chunks.
    chunk: usize,
    /// The run's first page within the chunk's data, in pages.
    first: u64,
    copied: bool,
}

impl Run {
    fn end(&self) -> u64 {
        self.addr + self.pages * PAGE_SIZE
    }

    /// The part of this run inside [start, end), if any.
    fn part(&self, start: u64, end: u64) -> Option<Run> {
        let (a, b) = (self.addr.max(start), self.end().min(end));
        (a < b).then(|| Run {
            addr: a,
            pages: (b - a) / PAGE_SIZE,
            first: self.first + (a - self.addr) / PAGE_SIZE,
            ..*self
        })
    }
}

/// Take the parts of `runs` inside [start, end) out of it (in order).
fn cut(runs: &mut Vec<Run>, start: u64, end: u64) -> Vec<Run> {
    let (start, end) = (start & !(PAGE_SIZE - 1), end.next_multiple_of(PAGE_SIZE));
    let mut kept = Vec::with_capacity(runs.len());
    let mut taken = Vec::new();
    for r in runs.drain(..) {
        if r.end() <= start || r.addr >= end {
            kept.push(r);
            continue;
        }
        kept.extend(r.part(r.addr, start));
        taken.extend(r.part(start, end));
        kept.extend(r.part(end, r.end()));
    }
    *runs = kept;
    taken
}

/// One mm the server fills: a restored process's, or a child's forked
/// from one before every page was in.
struct Space {
    uffd: OwnedFd,
    /// The process, when known (not for forked children).
    pid: i32,
    /// Sorted by address, not overlapping.
    runs: Vec<Run>,
    /// Every run before it is copied.
    cursor: usize,
    /// The mm is gone (its processes ended).
    gone: bool,
}

impl Space {
    fn next(&mut self) -> Option<usize> {
        while self.cursor < self.runs.len() && self.runs[self.cursor].copied {
            self.cursor += 1;
        }
        (!self.gone && self.cursor < self.runs.len()).then_some(self.cursor)
    }

    fn find(&self, addr: u64) -> Option<usize> {
        let i = self.runs.partition_point(|r| r.end() <= addr);
        (i < self.runs.len() && self.runs[i].addr <= addr).then_some(i)
    }

    /// Structure changed: runs moved or went; streaming starts over
    /// (copied runs are skipped).
    fn reshaped(&mut self) {
        self.runs.sort_unstable_by_key(|r| r.addr);
        self.cursor = 0;
    }
}

/// What a lazy restore hands its page server for one process.
#[derive(Debug)]
pub struct LazyProcess<'a> {
    pub uffd: OwnedFd,
    pub pid: i32,
    pub vmas: &'a [Vma],
}

/// The server's report, written (whole, by rename) next to nothing of
/// the image: at the path the restore was given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LazyStatus {
    /// serving, done, or failed.
    pub state: String,
    pub server_pid: i32,
    pub bytes_total: u64,
    pub bytes_copied: u64,
    /// Milliseconds from the start of the restore to this report (to the
    /// last page in, once done).
    pub elapsed_ms: f64,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The chunk and pack that failed, when the image did.
    pub chunk: Option<String>,
    pub pack: Option<String>,
    /// The process and address being filled when it failed.
    pub pid: Option<i32>,
    pub addr: Option<u64>,
}

impl LazyStatus {
    /// Write it at `path` whole: a reader sees the old or the new one.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    pub fn read(path: &Path) -> io::Result<Self> {
        serde_json::from_slice(&std::fs::read(path)?).map_err(io::Error::other)
    }
}

/// Why the server stopped before every page was in.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("chunk {hash} in pack {pack} (pid {pid}, address {addr:#x}): {source}")]
    Image {
        hash: String,
        pack: String,
        pid: i32,
        addr: u64,
        source: Box<MemoryError>,
    },
    #[error("pid {pid}: {what} at {addr:#x}: {source}")]
    Uffd {
        pid: i32,
        what: &'static str,
        addr: u64,
        source: io::Error,
    },
}

/// The page server's state.
struct Server<'r> {
    reader: &'r ImageReader,
    chunks: Vec<ChunkRef>,
    spaces: Vec<Space>,
    /// The chunk last read, decompressed.
    cached: Option<usize>,
    buf: Vec<u8>,
    /// Chunks read and checked ahead of the stream by another thread.
    ahead: Option<Ahead>,
    status: LazyStatus,
    status_path: &'r Path,
    started: std::time::Instant,
    /// Faults that met a changing mm (EAGAIN), to serve again.
    retry: Vec<(usize, u64)>,
}

/// How many chunks the reading thread may hold ready (256 KiB each at
/// most): enough to keep it a step ahead, little memory.
const AHEAD_CHUNKS: usize = 8;
/// How far ahead in the stream's order a wanted chunk is looked for
/// before it is read in place (a fault elsewhere).
const AHEAD_LOOK: usize = 64;

/// The stream's chunks, read and checked (hash, decompression) on a
/// second thread in the order the stream copies them, so that reading the
/// image and copying into the processes overlap: alone, the server did
/// one after the other (1 GiB: all in at 1.31× CRIU's lazy restore).
/// A chunk wanted out of that order (a fault) is read in place; chunks
/// the stream no longer needs (filled by faults meanwhile) are dropped.
struct Ahead {
    /// Chunk indices in the stream's order.
    order: Vec<usize>,
    /// Position in `order` of the next chunk the thread hands over.
    next: usize,
    rx: std::sync::mpsc::Receiver<(usize, crate::image::Result<Vec<u8>>)>,
}

impl Ahead {
    /// Chunk `c`'s data (or why it could not be read), when it comes
    /// soon in the stream's order; None to read it in place.
    fn take(&mut self, c: usize) -> Option<crate::image::Result<Vec<u8>>> {
        let end = self.order.len().min(self.next + AHEAD_LOOK);
        let at = (self.next..end).find(|&p| self.order[p] == c)?;
        loop {
            // A thread that stopped (it never does before the end) only
            // means reading in place.
            let (pos, read) = self.rx.recv().ok()?;
            self.next = pos + 1;
            if pos == at {
                return Some(read);
            }
        }
    }
}

enum Step {
    Done,
    /// The mm is changing (an event is waiting to be read): later.
    Again,
}

impl Server<'_> {
    fn new<'r>(
        reader: &'r ImageReader,
        procs: Vec<LazyProcess<'_>>,
        status_path: &'r Path,
        started: std::time::Instant,
    ) -> Server<'r> {
        let mut chunks = Vec::new();
        let mut spaces = Vec::new();
        let mut total = 0;
        for p in procs {
            let mut runs_of = Vec::new();
            for v in p.vmas.iter().filter(|v| is_lazy(v)) {
                for pc in &v.pages {
                    let PageChunk {
                        addr,
                        bitmap,
                        chunk,
                    } = pc;
                    let mut first = 0;
                    for (start, len) in runs(*bitmap) {
                        runs_of.push(Run {
                            addr: addr + start as u64 * PAGE_SIZE,
                            pages: len as u64,
                            chunk: chunks.len(),
                            first,
                            copied: false,
                        });
                        first += len as u64;
                    }
                    total += chunk.raw_len as u64;
                    chunks.push(chunk.clone());
                }
            }
            runs_of.sort_unstable_by_key(|r| r.addr);
            spaces.push(Space {
                uffd: p.uffd,
                pid: p.pid,
                runs: runs_of,
                cursor: 0,
                gone: false,
            });
        }
        Server {
            reader,
            chunks,
            spaces,
            cached: None,
            buf: Vec::new(),
            ahead: None,
            status: LazyStatus {
                state: "serving".into(),
                server_pid: own_pid(),
                bytes_total: total,
                ..Default::default()
            },
            status_path,
            started,
            retry: Vec::new(),
        }
    }

    fn uffd_err(
        &self,
        s: usize,
        what: &'static str,
        addr: u64,
    ) -> impl FnOnce(io::Error) -> ServeError {
        let pid = self.spaces[s].pid;
        move |source| ServeError::Uffd {
            pid,
            what,
            addr,
            source,
        }
    }

    /// Make sure chunk `c` is the one in `buf`, read and checked.
    fn load(&mut self, s: usize, c: usize, addr: u64) -> std::result::Result<(), ServeError> {
        if self.cached == Some(c) {
            return Ok(());
        }
        self.cached = None;
        let read = match self.ahead.as_mut().and_then(|a| a.take(c)) {
            Some(read) => read.map(|data| self.buf = data),
            None => self.reader.read_chunk(&self.chunks[c], &mut self.buf),
        };
        let r = &self.chunks[c];
        let fail = |source| ServeError::Image {
            hash: r.hash.clone(),
            pack: r.pack.clone(),
            pid: self.spaces[s].pid,
            addr,
            source,
        };
        read.map_err(|e| fail(Box::new(e.into())))?;
        if self.buf.len() != r.raw_len as usize {
            return Err(fail(Box::new(MemoryError::ChunkShape {
                pid: self.spaces[s].pid,
                addr,
                hash: r.hash.clone(),
                expected: r.raw_len as usize,
                found: self.buf.len(),
            })));
        }
        self.cached = Some(c);
        Ok(())
    }

    /// Copy run `i` of space `s` in; pages already there are skipped.
    fn copy_run(&mut self, s: usize, i: usize) -> std::result::Result<Step, ServeError> {
        let run = self.spaces[s].runs[i];
        self.load(s, run.chunk, run.addr)?;
        let data_end = ((run.first + run.pages) * PAGE_SIZE) as usize;
        if data_end > self.buf.len() {
            let r = &self.chunks[run.chunk];
            return Err(ServeError::Image {
                hash: r.hash.clone(),
                pack: r.pack.clone(),
                pid: self.spaces[s].pid,
                addr: run.addr,
                source: Box::new(MemoryError::ChunkShape {
                    pid: self.spaces[s].pid,
                    addr: run.addr,
                    hash: r.hash.clone(),
                    expected: data_end,
                    found: self.buf.len(),
                }),
            });
        }
        let mut done = 0;
        let len = run.pages * PAGE_SIZE;
        while done < len {
            // Inside the buffer: data_end was checked above.
            let from = (run.first * PAGE_SIZE + done) as usize;
            let src = &self.buf[from..from + (len - done) as usize];
            match uffd::copy(&self.spaces[s].uffd, run.addr + done, src) {
                Ok(()) => {
                    self.status.bytes_copied += len - done;
                    done = len;
                }
                Err((e, copied)) => {
                    if copied > 0 {
                        // Part of it went in (the kernel woke its waiters).
                        done += copied as u64;
                        self.status.bytes_copied += copied as u64;
                        continue;
                    }
                    match e.raw_os_error() {
                        // Already there (a fault beat us, or a child
                        // inherited it): a waiter may still sleep on it.
                        Some(libc::EEXIST) => {
                            uffd::wake(&self.spaces[s].uffd, run.addr + done, PAGE_SIZE)
                                .map_err(self.uffd_err(s, "UFFDIO_WAKE", run.addr + done))?;
                            done += PAGE_SIZE;
                        }
                        Some(libc::EAGAIN) => {
                            // Keep what is in: the rest is a smaller run.
                            if done > 0 {
                                self.split_done(s, i, done);
                            }
                            return Ok(Step::Again);
                        }
                        // The process ended: nothing more to fill.
                        Some(libc::ESRCH) => {
                            self.spaces[s].gone = true;
                            return Ok(Step::Done);
                        }
                        // The range is no longer registered (unmapped
                        // while its event waits): nothing to fill there.
                        Some(libc::ENOENT) => done = len,
                        _ => return Err(self.uffd_err(s, "UFFDIO_COPY", run.addr + done)(e)),
                    }
                }
            }
        }
        self.spaces[s].runs[i].copied = true;
        Ok(Step::Done)
    }

    /// The first `done` bytes of run `i` are in: keep the rest as its own run.
    fn split_done(&mut self, s: usize, i: usize, done: u64) {
        let sp = &mut self.spaces[s];
        let r = sp.runs[i];
        let mut head = r.part(r.addr, r.addr + done).expect("a non-empty head");
        head.copied = true;
        sp.runs[i] = head;
        if let Some(tail) = r.part(r.addr + done, r.end()) {
            sp.runs.insert(i + 1, tail);
        }
    }

    /// Serve a fault of space `s` at `addr`: the run holding it, or a zero
    /// page where nothing was saved (or the program discarded it).
    fn fault(&mut self, s: usize, addr: u64) -> std::result::Result<Step, ServeError> {
        let addr = addr & !(PAGE_SIZE - 1);
        if let Some(i) = self.spaces[s]
            .find(addr)
            .filter(|&i| !self.spaces[s].runs[i].copied)
        {
            return self.copy_run(s, i);
        }
        match uffd::zeropage(&self.spaces[s].uffd, addr, PAGE_SIZE) {
            Ok(()) => Ok(Step::Done),
            Err(e) => {
                match e.raw_os_error() {
                    Some(libc::EEXIST) => {
                        uffd::wake(&self.spaces[s].uffd, addr, PAGE_SIZE)
                            .map_err(self.uffd_err(s, "UFFDIO_WAKE", addr))?;
                        Ok(Step::Done)
                    }
                    Some(libc::EAGAIN) => Ok(Step::Again),
                    Some(libc::ESRCH) => {
                        self.spaces[s].gone = true;
                        Ok(Step::Done)
                    }
                    Some(libc::ENOENT) => Ok(Step::Done),
                    _ => Err(self.uffd_err(s, "UFFDIO_ZEROPAGE", addr)(e)),
                }
            }
        }
    }

    /// Read and handle every message waiting on space `s`'s uffd.
    fn drain(&mut self, s: usize) -> std::result::Result<(), ServeError> {
        loop {
            let events = match uffd::read_events(&self.spaces[s].uffd) {
                Ok(events) => events,
                Err(e) => {
                    return match e.raw_os_error() {
                        Some(libc::EAGAIN) => Ok(()),
                        Some(libc::EINTR) => continue,
                        _ => Err(self.uffd_err(s, "reading events", 0)(e)),
                    }
                }
            };
            if events.is_empty() {
                return Ok(());
            }
            for event in events {
                match event {
                    Event::PageFault { addr } => {
                        if let Step::Again = self.fault(s, addr)? {
                            self.retry.push((s, addr));
                        }
                    }
                    Event::Fork { uffd } => {
                        // The child has every page the parent had; the
                        // rest it misses too, and gets from the image.
                        let runs = self.spaces[s]
                            .runs
                            .iter()
                            .filter(|r| !r.copied)
                            .copied()
                            .collect();
                        self.spaces.push(Space {
                            uffd,
                            pid: 0,
                            runs,
                            cursor: 0,
                            gone: false,
                        });
                    }
                    Event::Remap { from, to, len } => {
                        let sp = &mut self.spaces[s];
                        let moved = cut(&mut sp.runs, from, from + len);
                        cut(&mut sp.runs, to, to + len);
                        sp.runs.extend(moved.into_iter().map(|r| Run {
                            addr: r.addr - from + to,
                            ..r
                        }));
                        sp.reshaped();
                    }
                    Event::Remove { start, end } | Event::Unmap { start, end } => {
                        let sp = &mut self.spaces[s];
                        cut(&mut sp.runs, start, end);
                        sp.reshaped();
                    }
                    Event::Other(_) => {}
                }
            }
        }
    }

    /// Handle whatever waits on any uffd, without blocking unless `block`.
    fn events(&mut self, block: bool) -> std::result::Result<(), ServeError> {
        let mut fds: Vec<libc::pollfd> = self
            .spaces
            .iter()
            .map(|s| libc::pollfd {
                fd: if s.gone { -1 } else { s.uffd.as_raw_fd() },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // Blocking only while faults wait to be retried is never needed:
        // those are retried at once below.
        let timeout = if block && self.retry.is_empty() {
            1000
        } else {
            0
        };
        // A failed poll is a round with nothing ready.
        if crate::sys::event::poll(&mut fds, timeout).is_ok_and(|n| n > 0) {
            for (s, p) in fds.iter().enumerate() {
                if p.revents & libc::POLLIN != 0 {
                    self.drain(s)?;
                }
            }
        }
        for (s, addr) in std::mem::take(&mut self.retry) {
            if let Step::Again = self.fault(s, addr)? {
                self.retry.push((s, addr));
            }
        }
        Ok(())
    }

    fn report(&mut self) {
        self.status.elapsed_ms = self.started.elapsed().as_secs_f64() * 1e3;
        let _ = self.status.write(self.status_path);
    }

    /// The chunks the stream copies, in its order (a chunk that serves
    /// consecutive runs once).
    fn stream_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = Vec::new();
        for c in self
            .spaces
            .iter()
            .flat_map(|sp| sp.runs.iter().map(|r| r.chunk))
        {
            if order.last() != Some(&c) {
                order.push(c);
            }
        }
        order
    }

    fn run(&mut self) -> std::result::Result<(), ServeError> {
        self.report();
        let mut since_report = 0u64;
        loop {
            self.events(false)?;
            let next = (0..self.spaces.len()).find_map(|s| self.spaces[s].next().map(|i| (s, i)));
            let Some((s, i)) = next else {
                if self.retry.is_empty() {
                    return Ok(());
                }
                self.events(true)?;
                continue;
            };
            let before = self.status.bytes_copied;
            if let Step::Again = self.copy_run(s, i)? {
                // Its event is on the way: wait for it.
                self.events(true)?;
            }
            since_report += self.status.bytes_copied - before;
            if since_report >= 64 << 20 {
                since_report = 0;
                self.report();
            }
        }
    }
}

/// This process's pid as the host's /proc names it (the first of
/// `NSpid`): the server of a `--pidns` restore runs inside the new pid
/// namespace, where its own pid is a small number meaningless outside.
fn own_pid() -> i32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(std::process::id() as i32)
}

/// Serve `procs` until every saved page of theirs is in; the final
/// status, also written at `status_path`, and why it stopped early. Closes the uffds when it returns.
/// `started`: when the restore started (the status's times count from it).
pub fn serve(
    reader: &ImageReader,
    procs: Vec<LazyProcess<'_>>,
    status_path: &Path,
    started: std::time::Instant,
) -> (LazyStatus, std::result::Result<(), ServeError>) {
    let mut server = Server::new(reader, procs, status_path, started);
    let order = server.stream_order();
    let refs: Vec<ChunkRef> = order.iter().map(|&c| server.chunks[c].clone()).collect();
    let (tx, rx) = std::sync::mpsc::sync_channel(AHEAD_CHUNKS);
    server.ahead = Some(Ahead { order, next: 0, rx });
    let result = std::thread::scope(|scope| {
        scope.spawn(move || {
            for (pos, r) in refs.iter().enumerate() {
                let mut data = Vec::new();
                let read = reader.read_chunk(r, &mut data).map(|()| data);
                // The server is done (or failed): stop reading.
                if tx.send((pos, read)).is_err() {
                    break;
                }
            }
        });
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.run()));
        // Lets the reading thread's next send fail, so the scope ends
        // (also after a panic: the thread would wait to send forever).
        server.ahead = None;
        result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    let mut status = server.status.clone();
    status.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(()) => {
            status.state = "done".into();
            let _ = status.write(status_path);
            (status, Ok(()))
        }
        Err(e) => {
            status.state = "failed".into();
            status.error = Some(e.to_string());
            match &e {
                ServeError::Image {
                    hash,
                    pack,
                    pid,
                    addr,
                    ..
                } => {
                    status.chunk = Some(hash.clone());
                    status.pack = Some(pack.clone());
                    status.pid = Some(*pid);
                    status.addr = Some(*addr);
                }
                ServeError::Uffd { pid, addr, .. } => {
                    status.pid = Some(*pid);
                    status.addr = Some(*addr);
                }
            }
            let _ = status.write(status_path);
            (status, Err(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(backing: Backing, shared: bool, write: bool, bitmaps: &[u64]) -> Vma {
        Vma {
            start: 0x10000,
            end: 0x10000 + 64 * 4096 * bitmaps.len() as u64,
            read: true,
            write,
            exec: false,
            shared,
            growsdown: false,
            backing,
            pages: bitmaps
                .iter()
                .map(|&bitmap| PageChunk {
                    addr: 0,
                    bitmap,
                    chunk: ChunkRef {
                        hash: String::new(),
                        raw_len: 0,
                        stored_len: 0,
                        pack: String::new(),
                        offset: 0,
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn lazy_bytes_count_the_saved_pages_of_lazy_mappings_only() {
        let vmas = [
            vma(Backing::Anon, false, true, &[u64::MAX, 0b1011]),
            // Shared, read-only: filled before the process runs.
            vma(Backing::Anon, true, true, &[u64::MAX]),
            vma(Backing::Anon, false, false, &[u64::MAX]),
        ];
        assert_eq!(lazy_bytes(&vmas), (64 + 3) * PAGE_SIZE);
        assert_eq!(lazy_bytes(&vmas[1..]), 0);
    }

    fn run(addr: u64, pages: u64, first: u64) -> Run {
        Run {
            addr,
            pages,
            chunk: 0,
            first,
            copied: false,
        }
    }

    /// Discarded and moved ranges split runs at page boundaries, each part
    /// keeping its place in the chunk's data.
    #[test]
    fn cutting_runs_keeps_their_data_offsets() {
        let p = PAGE_SIZE;
        let mut runs = vec![run(0x10000, 8, 0), run(0x10000 + 10 * p, 2, 8)];
        let taken = cut(&mut runs, 0x10000 + 2 * p, 0x10000 + 5 * p);
        assert_eq!(taken, vec![run(0x10000 + 2 * p, 3, 2)]);
        assert_eq!(
            runs,
            vec![
                run(0x10000, 2, 0),
                run(0x10000 + 5 * p, 3, 5),
                run(0x10000 + 10 * p, 2, 8)
            ]
        );
        // Unaligned bounds cover the pages they touch.
        let taken = cut(&mut runs, 0x10000 + 10 * p + 1, 0x10000 + 11 * p + 1);
        assert_eq!(taken, vec![run(0x10000 + 10 * p, 2, 8)]);
        assert_eq!(runs.len(), 2);
    }

    #[test]
    fn finding_the_run_of_an_address() {
        let p = PAGE_SIZE;
        let sp = Space {
            uffd: OwnedFd::from(std::fs::File::open("/dev/null").unwrap()),
            pid: 1,
            runs: vec![run(0x10000, 2, 0), run(0x10000 + 4 * p, 1, 2)],
            cursor: 0,
            gone: false,
        };
        assert_eq!(sp.find(0x10000 + p + 17), Some(0));
        assert_eq!(sp.find(0x10000 + 2 * p), None);
        assert_eq!(sp.find(0x10000 + 4 * p), Some(1));
        assert_eq!(sp.find(0x10000 + 5 * p), None);
        assert_eq!(sp.find(0x1000), None);
    }

    /// This kernel offers what a lazy restore needs.
    #[test]
    fn kernel_has_the_events_lazy_restore_needs() {
        match kernel_features() {
            Ok(f) => assert_eq!(f & FEATURES, FEATURES, "features {f:#x}"),
            Err(e) => panic!("userfaultfd is not available: {e}"),
        }
    }
}
