//! Pre-copy: most of a running session's memory is saved while it runs, so
//! that a checkpoint which leaves the processes running freezes them only
//! for what changed meanwhile.
//!
//! A short first freeze injects a userfaultfd into each process (created
//! by the process through a remote syscall, taken with `pidfd_getfd`, its
//! own copy closed again), registers the mappings to be saved for
//! asynchronous write protection (`UFFD_FEATURE_WP_ASYNC`: the program
//! never blocks, the kernel only clears a bit on the first write) and
//! write-protects every page with `PAGEMAP_SCAN`. The processes run on
//! while their pages are read and stored. The checkpoint proper then
//! freezes them again and asks `PAGEMAP_SCAN` which pages were written
//! since: only windows holding one of those, or whose set of pages changed
//! (an unmapped or zapped page is not a write), or that lie outside what
//! was registered (new or moved mappings), are read again. Tracking ends
//! when the userfaultfd is closed, which leaves nothing behind in the
//! process.

use crate::freeze::{FreezeError, Frozen};
use crate::image::{ChunkSink, ImageError};
use crate::memory::shmem::ShmemTable;
use crate::memory::{self, DumpedWindow, Earlier, FirstPass, ReadFailure, Vma};
use crate::pagescan::{
    self, Query, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_WRITTEN, PM_SCAN_CHECK_WPASYNC,
    PM_SCAN_WP_MATCHING,
};
use crate::policy::Report;
use crate::procfs::{FlagsHint, MapsPath, ProcDir, SmapsEntry};
use crate::procmem::ProcMem;
use crate::remote::{self, ResultUndo, Undo};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};
use tracing::debug;

/// Why a process could not be tracked (it is then saved entirely while
/// frozen, as without pre-copy).
#[derive(Debug, thiserror::Error)]
enum TrackError {
    #[error(transparent)]
    Remote(#[from] remote::RemoteError),
    #[error(transparent)]
    Procfs(#[from] crate::procfs::ProcfsError),
    #[error("{what}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> TrackError {
    move |source| TrackError::Io { what, source }
}

/// Write tracking of one process's memory.
#[derive(Debug)]
struct WriteTracker {
    /// Holding it keeps the tracking alive; closing it ends it.
    _uffd: OwnedFd,
    pagemap: File,
    /// Ranges registered for tracking.
    ranges: Vec<(u64, u64)>,
}

impl WriteTracker {
    /// Start tracking writes to `ranges` of `pid`, which is frozen.
    fn start(pid: i32, vdso: (u64, u64), ranges: &[(u64, u64)]) -> Result<Self, TrackError> {
        let mut mem = ProcMem::new(pid, true);
        let (task, lifeline) = remote::take_over(pid, &mut mem, vdso)?;
        let flags =
            (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | crate::sys::uffd::USER_MODE_ONLY as u64;
        // The task's own copy must never outlive this: a task sent home by
        // its lifeline closes it on the way (see remote::Undo).
        let taken = (|| -> Result<OwnedFd, TrackError> {
            let close_result = Undo {
                result: ResultUndo::Close,
                ..Undo::default()
            };
            task.set_undo(&mut mem, &close_result)?;
            let remote_fd =
                task.syscall("userfaultfd", libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])?;
            let close_it = Undo {
                close: Some(remote_fd as i32),
                ..Undo::default()
            };
            task.set_undo(&mut mem, &close_it)?;
            let ours = crate::sys::fd::pidfd_open(pid)
                .and_then(|pidfd| crate::sys::fd::pidfd_getfd(&pidfd, remote_fd as i32));
            task.syscall("close", libc::SYS_close, [remote_fd, 0, 0, 0, 0, 0])?;
            task.set_undo(&mut mem, &Undo::default())?;
            ours.map_err(io_err("taking the userfaultfd"))
        })();
        task.restore()?;
        if let Some(l) = lifeline {
            l.clear(&mut mem);
        }
        let uffd = taken?;
        // Unpopulated: anonymous mappings get markers like file ones,
        // which the kernel requires to scan them with CHECK_WPASYNC.
        let features =
            crate::sys::uffd::FEATURE_WP_ASYNC | crate::sys::uffd::FEATURE_WP_UNPOPULATED;
        crate::sys::uffd::api(&uffd, crate::sys::uffd::API, features)
            .map_err(io_err("UFFDIO_API with asynchronous write protection"))?;
        let pagemap =
            File::open(format!("/proc/{pid}/pagemap")).map_err(io_err("opening the pagemap"))?;
        let mut tracked = Vec::new();
        for &(start, end) in ranges {
            if crate::sys::uffd::register(
                &uffd,
                start,
                end - start,
                crate::sys::uffd::REGISTER_MODE_WP,
            )
            .is_err()
            {
                // Some mappings cannot be tracked: they are read again.
                continue;
            }
            if protect_populated(&pagemap, start, end).is_ok() {
                tracked.push((start, end));
            }
        }
        Ok(Self {
            _uffd: uffd,
            pagemap,
            ranges: tracked,
        })
    }

    /// Each tracked range with the pages written in it since tracking
    /// began.
    fn written(&self) -> Vec<RangeWrites> {
        self.ranges
            .iter()
            .map(|&range| RangeWrites {
                range,
                written: scan_written(&self.pagemap, range.0, range.1, false).ok(),
            })
            .collect()
    }
}

/// Write-protect the populated parts of the registered range [start,
/// end), joined across gaps smaller than a window. Only those: protecting
/// an empty entry plants a marker in it, and an empty stretch with no page
/// table gets page tables allocated to hold the markers. Programs reserve
/// address space by the terabyte (a chromium renderer ~1.4 TiB of
/// `PROT_NONE`, 512 MiB of heap): protecting ranges whole froze a browser
/// for 50 s at the start of tracking and left it 3 GiB of page tables per
/// renderer. An unprotected empty page that is written meanwhile shows as
/// written all the same (present, without the protect bit), as does a
/// read that maps the zero page, so nothing written is missed.
fn protect_populated(pagemap: &File, start: u64, end: u64) -> io::Result<()> {
    let populated = Query {
        any: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        ..Query::default()
    };
    let regions = pagescan::scan(pagemap, start, end, populated)?;
    for (s, e) in joined(
        regions.iter().map(|r| (r.start, r.end)),
        memory::WINDOW_BYTES,
    ) {
        scan_written(pagemap, s, e, true)?;
    }
    Ok(())
}

/// Ranges in address order, joined where the gap between two is below
/// `gap` (1: only where one ends as the next starts): fewer calls.
fn joined(ranges: impl Iterator<Item = (u64, u64)>, gap: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s.saturating_sub(last.1) < gap => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Whether one of `ranges` (in address order, not overlapping) meets
/// [lo, hi). A binary search: the written ranges of a tracked reservation
/// span terabytes, far too many windows to list.
fn meets(ranges: &[(u64, u64)], lo: u64, hi: u64) -> bool {
    let i = ranges.partition_point(|&(_, e)| e <= lo);
    ranges.get(i).is_some_and(|&(s, _)| s < hi)
}

/// The writes to one tracked range.
#[derive(Debug)]
struct RangeWrites {
    range: (u64, u64),
    /// The written pages as ranges; None when the range could not be
    /// scanned (a mapping in it was replaced: it is no longer all tracked).
    written: Option<Vec<(u64, u64)>>,
}

/// The pages of [start, end) written since they were last write-protected,
/// as ranges, all tracked or an error; with `protect`, write-protect them
/// again as they are found.
fn scan_written(
    pagemap: &File,
    start: u64,
    end: u64,
    protect: bool,
) -> io::Result<Vec<(u64, u64)>> {
    let flags = PM_SCAN_CHECK_WPASYNC | if protect { PM_SCAN_WP_MATCHING } else { 0 };
    let query = Query {
        all: PAGE_IS_WRITTEN,
        flags,
        ..Query::default()
    };
    Ok(pagescan::scan(pagemap, start, end, query)?
        .into_iter()
        .map(|r| (r.start, r.end))
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum PrecopyError {
    #[error(transparent)]
    Freeze(#[from] FreezeError),
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The caller's watch said to stop: the processes run on untracked.
    #[error("pre-copy cancelled")]
    Cancelled,
}

/// What pre-copy tells its caller while it copies, and asks: given the
/// chunks (windows of up to 64 pages) read and queued so far, whether to
/// go on. Asked between processes and, while the reads finish, every
/// [`WATCH_EVERY`]: a large save's progress and Cancel are heard during
/// the copy, not only after it.
pub type Watch<'a> = &'a dyn Fn(usize, usize) -> bool;

/// How often the watch is told while the reads finish.
pub const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// What the pre-copy pass saved of one process.
#[derive(Debug)]
struct Saved {
    tracker: WriteTracker,
    /// By (mapping start, window address), with the number of pages its
    /// chunk holds.
    windows: HashMap<(u64, u64), (DumpedWindow, u32)>,
    /// Mappings (start, end) that had no page to save.
    empty: HashSet<(u64, u64)>,
}

/// The result of a pre-copy pass.
#[derive(Debug, Default)]
pub struct Precopy {
    processes: HashMap<i32, Saved>,
    /// Each process's mapping flags as read before tracking began, so the
    /// frozen inspection can read maps instead of smaps.
    flags: HashMap<i32, FlagsHint>,
    /// Time the processes spent frozen for it.
    pub frozen: Duration,
}

/// Freeze the trees under `roots` briefly to start write tracking, then
/// save their private memory into `sink` while they run. A process that
/// cannot be tracked is left out (the checkpoint saves it whole).
pub fn run(roots: &[i32], sink: &mut ChunkSink<'_>) -> Result<Precopy, PrecopyError> {
    run_without(roots, &[], sink, &|_, _| true)
}

/// [`run`] on the trees under `roots` without the subtrees under `prune`.
pub fn run_without(
    roots: &[i32],
    prune: &[i32],
    sink: &mut ChunkSink<'_>,
    watch: Watch<'_>,
) -> Result<Precopy, PrecopyError> {
    // The layouts are read before freezing, to keep the freeze short. One
    // that changes meanwhile is harmless: a range that no longer fits is
    // not tracked, and only tracked, unwritten windows are ever reused.
    let pids = crate::freeze::list_tree_without(roots, prune)?;
    // Shared objects seen in the layouts (shared memory, memfds, deleted
    // files): saved once here too, so that while frozen their unchanged
    // chunks are only hashed, found stored, and not compressed again.
    let mut shmem = ShmemTable::default();
    let layouts = read_layouts(pids, &mut shmem);
    debug!(processes = layouts.len(), "layouts read");
    let t0 = Instant::now();
    let frozen = Frozen::freeze_without(roots, prune)?;
    let started = start_tracking(&frozen, layouts);
    let pids: Vec<i32> = frozen.processes.keys().copied().collect();
    frozen.thaw();
    let frozen_for = t0.elapsed();
    // The mapping flags (smaps) are for the frozen inspection, which then
    // need not read smaps itself; reading smaps walks every page table
    // (about 25 ms for an X session here), so it runs beside the copying.
    let flag_reader = std::thread::spawn(move || {
        pids.into_iter()
            .filter_map(|pid| {
                let smaps = ProcDir::new(pid).smaps().ok()?;
                Some((pid, FlagsHint::from_smaps(&smaps)))
            })
            .collect::<HashMap<_, _>>()
    });
    debug!(
        ?frozen_for,
        processes = started.len(),
        "write tracking started"
    );
    let mut out = Precopy {
        processes: HashMap::new(),
        flags: HashMap::new(),
        frozen: frozen_for,
    };
    let mut dumped = Vec::new();
    // Stopped by the watch: the trackers (dropped with `dumped`) end their
    // tracking; the smaps reader is waited for, not left behind.
    let cancelled = |flag_reader: std::thread::JoinHandle<_>| {
        let _ = flag_reader.join();
        debug!(elapsed = ?t0.elapsed(), "pre-copy cancelled");
        Err(PrecopyError::Cancelled)
    };
    for (pid, vmas, tracker) in started {
        let (done, queued) = sink.counts();
        if !watch(done, queued) {
            return cancelled(flag_reader);
        }
        // The process runs: a mapping may go away under the read. Then it
        // is simply saved whole later.
        match memory::dump_private_pages(pid, &vmas, sink, ReadFailure::Tolerated, &FirstPass) {
            Ok(d) => dumped.push((pid, vmas, tracker, d)),
            Err(err) => debug!(pid, %err, "pre-copy read failed: saved whole while frozen"),
        }
    }
    if let Err(err) = shmem.dump(sink) {
        // A mapping went away under the read: the freeze saves it anyway.
        debug!(%err, "pre-copy of shared objects stopped");
    }
    // Which windows were read is known once the workers are done.
    if !sink.drain_while(WATCH_EVERY, watch)? {
        return cancelled(flag_reader);
    }
    for (pid, vmas, tracker, d) in dumped {
        out.processes
            .insert(pid, Saved::new(tracker, &vmas, d, sink));
    }
    // A reader that panicked only costs the frozen inspection a smaps read.
    out.flags = flag_reader.join().unwrap_or_default();
    debug!(elapsed = ?t0.elapsed(), "pre-copy done");
    Ok(out)
}

/// A process's layout, read before the freeze: its vdso (start, end) and
/// its mappings.
type Layout = ((u64, u64), Vec<Vma>);

/// The layouts of `pids` (those with a vdso and readable maps), from
/// `maps`: what pre-copy needs of a mapping is there. Shared objects go
/// into `shmem`.
fn read_layouts(pids: Vec<i32>, shmem: &mut ShmemTable) -> HashMap<i32, Layout> {
    let mut layouts = HashMap::new();
    for pid in pids {
        let Ok(maps) = ProcDir::new(pid).maps() else {
            continue;
        };
        let vdso = maps
            .iter()
            .find(|m| matches!(m.path, MapsPath::Vdso))
            .map(|m| (m.start, m.end));
        let Some(vdso) = vdso else { continue };
        let entries: Vec<SmapsEntry> = maps
            .into_iter()
            .map(|map| SmapsEntry::unsized_from(map, Vec::new()))
            .collect();
        let vmas = memory::classify(
            pid,
            &entries,
            shmem,
            // Only anonymous and private file memory is pre-copied: how
            // devices are classified makes no difference here.
            &crate::devices::DevicePolicies::default(),
            &mut Report::default(),
        );
        layouts.insert(pid, (vdso, vmas));
    }
    layouts
}

/// Start write tracking in each frozen process with a layout; one that
/// cannot be tracked is left out (saved whole while frozen).
fn start_tracking(
    frozen: &Frozen,
    mut layouts: HashMap<i32, Layout>,
) -> Vec<(i32, Vec<Vma>, WriteTracker)> {
    let mut started = Vec::new();
    for fp in frozen.processes.values() {
        // A job-stopped process is tracked like any other: it runs our
        // remote calls in its stop, and goes back to it at the thaw.
        if fp.zombie {
            continue;
        }
        let Some((vdso, vmas)) = layouts.remove(&fp.pid) else {
            continue;
        };
        // Adjacent mappings joined (no gap): one registration each.
        let private = vmas.iter().filter(|v| v.has_private_pages());
        let ranges = joined(private.map(|v| (v.start, v.end)), 1);
        match WriteTracker::start(fp.pid, vdso, &ranges) {
            Ok(tracker) => started.push((fp.pid, vmas, tracker)),
            Err(err) => debug!(pid = fp.pid, %err, "no write tracking: saved whole while frozen"),
        }
    }
    started
}

impl Saved {
    /// What the first pass saved of `vmas` (`dumped`, one list of windows
    /// per mapping), once `sink`'s workers are done.
    fn new(
        tracker: WriteTracker,
        vmas: &[Vma],
        dumped: Vec<Vec<DumpedWindow>>,
        sink: &ChunkSink<'_>,
    ) -> Self {
        let empty = vmas
            .iter()
            .zip(&dumped)
            .filter(|(v, ws)| v.has_private_pages() && ws.is_empty())
            .map(|(v, _)| (v.start, v.end))
            .collect();
        let windows = vmas
            .iter()
            .zip(dumped)
            .flat_map(|(v, ws)| ws.into_iter().map(move |w| (v.start, w)))
            .filter_map(|(start, w)| {
                let pages = match &w.chunk {
                    Some(c) => sink.stored(c.ticket)?.tag?.count_ones(),
                    None => 0,
                };
                Some(((start, w.addr), (w, pages)))
            })
            .collect();
        Saved {
            tracker,
            windows,
            empty,
        }
    }
}

impl Precopy {
    /// The mapping flags of `pid` read before the freeze.
    pub fn flags_of(&self, pid: i32) -> Option<&FlagsHint> {
        self.flags.get(&pid)
    }

    /// For the frozen process `pid` with mappings `vmas`: a lookup telling,
    /// per window, the pre-copied result to reuse (None: read it again).
    pub fn reuse_for(&self, pid: i32, vmas: &[Vma]) -> Reuse<'_> {
        let Some(saved) = self.processes.get(&pid) else {
            return Reuse::default();
        };
        // One scan per tracked range, not per mapping: a process has
        // hundreds of mappings and few ranges.
        let written = saved.tracker.written();
        let mut written_pages: Vec<(u64, u64)> = written
            .iter()
            .filter_map(|r| r.written.as_ref())
            .flatten()
            .copied()
            .collect();
        written_pages.sort_unstable();
        let untracked = vmas
            .iter()
            .filter(|v| v.has_private_pages())
            .filter(|v| {
                !written
                    .iter()
                    .any(|r| r.range.0 <= v.start && v.end <= r.range.1 && r.written.is_some())
            })
            .map(|v| v.start)
            .collect();
        Reuse {
            saved: Some(saved),
            written: written_pages,
            untracked,
            reused_bytes: Default::default(),
        }
    }
}

/// Per-process lookup of reusable pre-copied windows.
#[derive(Debug, Default)]
pub struct Reuse<'a> {
    saved: Option<&'a Saved>,
    /// The pages written since tracking began, as ranges in address order
    /// (empty stretches left unprotected read as written).
    written: Vec<(u64, u64)>,
    untracked: HashSet<u64>,
    reused_bytes: std::cell::Cell<u64>,
}

impl Earlier for Reuse<'_> {
    fn window(&self, vma: &Vma, addr: u64, wanted: u64) -> Option<DumpedWindow> {
        Reuse::window(self, vma, addr, wanted)
    }

    /// A tracked mapping gains pages to save only by a write (a read maps
    /// the zero page or the file's page), and that would have been seen.
    fn still_empty(&self, vma: &Vma) -> bool {
        let Some(saved) = self.saved else {
            return false;
        };
        if self.untracked.contains(&vma.start) || !saved.empty.contains(&(vma.start, vma.end)) {
            return false;
        }
        // Pages, not windows: a window may reach into the next mapping.
        !meets(&self.written, vma.start, vma.end)
    }
}

impl Reuse<'_> {
    /// The pre-copied window at `addr` of `vma`, if it still holds: no page
    /// written since, and the same pages present.
    pub fn window(&self, vma: &Vma, addr: u64, wanted: u64) -> Option<DumpedWindow> {
        let saved = self.saved?;
        // Only the pages to save count: empty stretches left unprotected
        // read as written, and a page that was empty at pre-copy and is
        // not now needs nothing; one that was empty and is now is not in
        // the pre-copied window's set, which must match.
        let written = memory::runs(wanted).any(|(first, n)| {
            let lo = addr + u64::from(first) * memory::PAGE_SIZE;
            meets(&self.written, lo, lo + u64::from(n) * memory::PAGE_SIZE)
        });
        if self.untracked.contains(&vma.start) || written {
            return None;
        }
        let (w, pages) = saved.windows.get(&(vma.start, addr))?;
        if w.wanted != wanted {
            return None;
        }
        self.reused_bytes
            .set(self.reused_bytes.get() + u64::from(*pages) * memory::PAGE_SIZE);
        Some(w.clone())
    }

    /// Bytes of page data taken from the pre-copy so far.
    pub fn reused_bytes(&self) -> u64 {
        self.reused_bytes.get()
    }
}
