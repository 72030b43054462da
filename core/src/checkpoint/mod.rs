//! Checkpoint: freeze, inspect, classify, dump, commit, resume (or stop).
//!
//! Any failure before the commit drops the frozen set, which lets every
//! task go on exactly as it was, and drops the uncommitted image. What the
//! dump reads out of live objects (pty queues) goes back while the set is
//! still frozen: right after the dump, or on a failure inside it.
//!
//! Bottom-up: `error`; `inspect` (each frozen process read into its image
//! record); `commit` (page windows resolved, tables moved into the
//! document, the image read back before `--stop`); and here the options
//! and the steps in order.

pub mod commit;
pub mod error;
pub mod inspect;

pub use error::CheckpointError;
pub use inspect::SCRATCH_LEN;

use crate::attachment::{self, Attachment};
use crate::devices::DevicePolicies;
use crate::freeze::{FreezeError, Frozen};
use crate::image::ImageWriter;
use crate::memory;
use crate::policy::{Policy, ProcessSummary, Report, Subject};
use crate::precopy;
use crate::procfs::ProcDir;
use commit::PageWindows;
use error::Result;
use inspect::Inspection;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// The checkpointability report of the trees under `roots`, char devices
/// classified by `devices`. The tasks are frozen for the inspection and
/// let go at once.
pub fn check(roots: &[i32], devices: &DevicePolicies) -> Result<Report> {
    check_without(roots, &LeftOut::default(), devices)
}

/// [`check`] of the trees under `roots` without what `left_out` names
/// (see [`CheckpointOptions::left_out`]).
pub fn check_without(
    roots: &[i32],
    left_out: &LeftOut,
    devices: &DevicePolicies,
) -> Result<Report> {
    let frozen = match freeze(roots, &left_out.pids) {
        Err(CheckpointError::Refused(report)) => return Ok(*report),
        other => other?,
    };
    let inspection = inspect::inspect(&frozen, None, devices, &left_out.mounts, |_, _| Ok(()))?;
    frozen.thaw();
    Ok(inspection.snapshot.report)
}

/// Freeze the trees under `roots`. A set that is gone, or only zombies,
/// by the time it is frozen is an error: an image of nothing would
/// restore nothing.
fn freeze(roots: &[i32], prune: &[i32]) -> Result<Frozen> {
    let frozen = Frozen::freeze_without(roots, prune).map_err(freeze_refusal)?;
    if frozen.processes.values().all(|p| p.zombie) {
        return Err(CheckpointError::AllExited {
            pids: frozen.processes.keys().copied().collect(),
        });
    }
    Ok(frozen)
}

/// A traced task, or one in a cgroup someone froze, is a refusal,
/// reported as `check` reports any other.
fn freeze_refusal(e: FreezeError) -> CheckpointError {
    let (pid, what, reason) = match e {
        FreezeError::Traced {
            pid,
            tid,
            tracer,
            comm,
        } => (
            pid,
            format!("tid {tid} traced by pid {tracer} ({comm})"),
            "a process under a debugger or tracer cannot be saved; detach it first",
        ),
        FreezeError::CgroupFrozen { pid, cgroup } => (
            pid,
            format!("in the frozen cgroup {cgroup}"),
            "a frozen process cannot run the calls that save it; thaw its cgroup first",
        ),
        e => return e.into(),
    };
    let dir = ProcDir::new(pid);
    let stat = dir.stat().ok();
    let mut report = Report::default();
    report.processes.push(ProcessSummary {
        pid,
        ppid: stat.as_ref().map_or(0, |s| s.ppid),
        comm: stat.map(|s| s.comm).unwrap_or_default(),
        threads: dir.tasks().map_or(0, |t| t.len()),
        zombie: false,
    });
    report.add(pid, Subject::Process, what, Policy::Refuse, reason);
    CheckpointError::Refused(Box::new(report))
}

/// Why this caller could not restore what it saves, if it could not:
/// recreating processes with their pids needs CAP_CHECKPOINT_RESTORE (or
/// CAP_SYS_ADMIN). Checked before `--stop` ends anything.
fn cannot_restore() -> Option<String> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_CHECKPOINT_RESTORE: u32 = 40;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
    let has = |cap: u32| eff & (1 << cap) != 0;
    (!has(CAP_SYS_ADMIN) && !has(CAP_CHECKPOINT_RESTORE)).then(|| {
        "restoring processes with their pids needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN".into()
    })
}

#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    pub roots: Vec<i32>,
    pub dir: PathBuf,
    /// Chunk store shared by successive images; None keeps chunks in the image only.
    pub store: Option<PathBuf>,
    /// End the processes once the image is committed.
    pub stop: bool,
    /// With `stop`: read the committed image back (every chunk against
    /// its hash) while the processes are still frozen, and end them only
    /// if it is whole; else the image is removed and they run on. For a
    /// save that ends a user's session (logout, suspend).
    pub verify_before_stop: bool,
    pub threads: usize,
    /// Refuse instead of restoring anything broken (Reset policy).
    pub no_reset: bool,
    /// Whether most memory is saved while the processes run, the freeze
    /// then saving only what changed (see `precopy`).
    pub precopy: PrecopyMode,
    /// The device table: which char devices are reopened, detached or
    /// refused.
    pub devices: DevicePolicies,
    /// What is left out of the trees under `roots` (services that cannot
    /// be saved).
    pub left_out: LeftOut,
}

/// Processes left out of the trees being saved, and the FUSE mounts they
/// serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// Pids left out with their descendants although they are below a
    /// root: their parents are saved without them, and they run on
    /// whatever `stop` says (the caller ends them). What the set shares
    /// with them is outside the set (Reset).
    pub pids: Vec<i32>,
    /// FUSE file systems served by left-out processes: a saved fd of a
    /// file in one is recorded without being looked at, and reopened by
    /// path once the service is back (see `files::service_file`).
    pub mounts: Vec<crate::files::service_file::ServiceMount>,
}

/// When a checkpoint saves memory beforehand, while the processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrecopyMode {
    /// Every page is saved while the set is frozen.
    Never,
    /// Always when the set runs on; with `stop`, when its private
    /// resident memory (read before anything stops) reaches
    /// [`PRECOPY_FROM_BYTES`], or [`PRECOPY_FROM_BYTES_PER_PROCESS`] for
    /// each of its processes.
    #[default]
    Auto,
    /// Whatever the set holds (tests of pre-copy itself, measurements).
    Always,
}

impl PrecopyMode {
    /// From a command line's text: "auto", "always", "never".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "always" => Some(Self::Always),
            "never" => Some(Self::Never),
            _ => None,
        }
    }
}

/// With `stop`, pre-copy is used (`PrecopyMode::Auto`) from this much
/// private resident memory, whatever the number of processes. The
/// processes end anyway, but with `stop` they stay frozen until the image
/// is durable, so without pre-copy every page is read, compressed, written
/// and synced inside the freeze (1 GiB, release, same run: frozen 411 ms
/// without, 35 ms with; 520 and 504 ms in all). A set that runs on is
/// always pre-copied: its freeze is what the user feels (the 110 MiB X
/// session of `bench-desktop.py`, first save into an empty store: frozen
/// 159 ms without, 57 ms with; 191 and 226 ms in all).
pub const PRECOPY_FROM_BYTES: u64 = 256 << 20;

/// Below [`PRECOPY_FROM_BYTES`], `stop` pre-copies when the processes hold
/// this much private resident memory each, on average. Pre-copy's second
/// freeze stops and inspects every process again, a fixed cost per
/// process; what it takes out of the freeze is per byte. Measured
/// (release, same session, 2026-12-07, frozen / in all, ms): one process of
/// 16 MiB 24–29 / 28–32 without, 12–13 / 24–31 with; of 64 MiB 47–58 /
/// 55–67 without, 12–14 / 56–66 with; of 4 MiB 10–15 / 11–17 without, 9 /
/// 15–17 with (a wash: one freeze). But the X session of `bench-desktop.py`
/// (11 processes, 104 MiB, 9.5 MiB each): 190 / 213–224 without, 92–99 /
/// 313–315 with, and a tree of 50 `sleep`s 86 / 90 without, 91 / 120 with:
/// for a session that ends (logout, sleep) the time in all is what is
/// waited for.
pub const PRECOPY_FROM_BYTES_PER_PROCESS: u64 = 16 << 20;

/// Whether this checkpoint pre-copies (see [`PrecopyMode`]).
fn precopy_pays(opts: &CheckpointOptions) -> bool {
    match opts.precopy {
        PrecopyMode::Never => return false,
        PrecopyMode::Always => return true,
        PrecopyMode::Auto if !opts.stop => return true,
        PrecopyMode::Auto => {}
    }
    let mut bytes = 0;
    let mut processes = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = opts.roots.clone();
    while let Some(pid) = todo.pop() {
        if opts.left_out.pids.contains(&pid) || !seen.insert(pid) {
            continue;
        }
        let proc = ProcDir::new(pid);
        // A process that ends meanwhile weighs nothing; the freeze decides.
        bytes += proc.private_resident_bytes().unwrap_or(0);
        processes += 1;
        todo.extend(proc.children().unwrap_or_default());
        if bytes >= PRECOPY_FROM_BYTES {
            return true;
        }
    }
    let pays = processes > 0 && bytes >= PRECOPY_FROM_BYTES_PER_PROCESS * processes;
    debug!(bytes, processes, pays, "memory to save with stop");
    pays
}

/// Stages reported while a checkpoint runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting, before anything else, for pages a lazy restore of the set
    /// still brings in.
    WaitingForMemory,
    /// Saving memory while the processes run (write tracking on): chunks
    /// read and queued so far (queued grows while processes are scanned).
    Precopying {
        done: u64,
        queued: u64,
    },
    Freezing,
    Inspecting,
    DumpingMemory {
        done: u64,
        total: u64,
    },
    Committing,
}

/// What the caller of a checkpoint hears, and what it may add.
pub trait CheckpointObserver {
    fn stage(&self, _stage: Stage) {}

    /// Called once, just before the set is frozen (after pre-copy): what
    /// it returns is stored with the image. An error ends the checkpoint
    /// before anything is frozen.
    fn before_freeze(
        &self,
    ) -> std::result::Result<Vec<Attachment>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Vec::new())
    }

    /// Called once the set is frozen, with its pids, before anything is
    /// read: a last check that the set is still the one wanted (nothing
    /// joined it meanwhile). An error thaws it and ends the checkpoint.
    fn while_frozen(
        &self,
        _pids: &std::collections::BTreeSet<i32>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }

    /// Asked at each stage boundary and just before the commit: true ends
    /// the checkpoint there with [`CheckpointError::Cancelled`], through
    /// the same path as any failure (the set is thawed, the unfinished
    /// image removed). Past the commit a checkpoint is not cancelled.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A plain progress callback observes the stages and attaches nothing.
impl<F: Fn(Stage)> CheckpointObserver for F {
    fn stage(&self, stage: Stage) {
        self(stage)
    }
}

#[derive(Debug, Clone)]
pub struct CheckpointStats {
    pub dir: PathBuf,
    pub processes: usize,
    pub frozen: Duration,
    pub total: Duration,
    /// Page and file data saved (uncompressed).
    pub bytes_raw: u64,
    /// New bytes written to the store by this checkpoint.
    pub bytes_written: u64,
    /// Page data saved by pre-copy while the processes ran, and still
    /// valid at the freeze (not saved again).
    pub precopied_bytes: u64,
    /// The cgroup frozen first, when the set was exactly its processes.
    pub frozen_cgroup: Option<PathBuf>,
    /// Bytes of the image on disk (metadata + chunks it references).
    pub image_bytes: u64,
    pub report: Report,
    /// Tries it took: more than one when data in flight refused the first.
    pub attempts: u32,
}

/// How long to let the processes run before trying again when only data in
/// flight refused the checkpoint (see [`Report::refused_only_for_now`]):
/// a message carrying fds is read, unread events are consumed, within
/// milliseconds of a program running again.
const RETRY_AFTER: [Duration; 3] = [
    Duration::from_millis(25),
    Duration::from_millis(100),
    Duration::from_millis(400),
];

/// Save the trees under `opts.roots` into `opts.dir`. A checkpoint refused
/// only for data in flight lets the processes run a moment and tries
/// again, up to three more times; the last refusal is returned.
pub fn checkpoint(
    opts: &CheckpointOptions,
    observer: &dyn CheckpointObserver,
) -> Result<CheckpointStats> {
    if opts.stop {
        if let Some(reason) = cannot_restore() {
            return Err(CheckpointError::StopWithoutRestore { reason });
        }
    }
    let result = checkpoint_tries(opts, observer);
    if result.is_err() {
        crate::image::remove_staging(&opts.dir);
    }
    result
}

/// How long a save waits for memory that a lazy restore still brings in
/// before it goes on (and is refused, naming the mapping).
pub const LAZY_FILL_WAIT: Duration = Duration::from_secs(30);

/// How often the set is looked at meanwhile.
const LAZY_FILL_POLL: Duration = Duration::from_millis(50);

/// Before anything is copied or frozen, wait until no process of the set
/// has a mapping whose missing pages a userfaultfd fills: a lazy
/// restore's page server at work, which ends by itself (a multi-GiB
/// session in seconds). Saved meanwhile, such memory is refused, and each
/// try would first copy everything again. After [`LAZY_FILL_WAIT`] the
/// save goes on and is refused naming the mapping (a program's own
/// userfaultfd, which may never end). Cancel is heard meanwhile.
fn wait_for_lazy_fill(opts: &CheckpointOptions, observer: &dyn CheckpointObserver) -> Result<()> {
    let deadline = Instant::now() + LAZY_FILL_WAIT;
    let mut told = false;
    loop {
        // The whole set is read again only once the process waited for
        // is filled: smaps walks every page table.
        let pids = crate::freeze::list_tree_without(&opts.roots, &opts.left_out.pids)
            .map_err(freeze_refusal)?;
        let Some(pid) = pids.into_iter().find(|&p| memory::filled_by_userfaultfd(p)) else {
            return Ok(());
        };
        if !told {
            info!(
                pid,
                wait_s = LAZY_FILL_WAIT.as_secs(),
                "waiting for the pages a lazy restore still brings in"
            );
            observer.stage(Stage::WaitingForMemory);
            told = true;
        }
        while memory::filled_by_userfaultfd(pid) {
            if observer.cancelled() {
                return Err(CheckpointError::Cancelled {
                    stage: "waiting for restored memory",
                });
            }
            if Instant::now() >= deadline {
                info!(
                    pid,
                    "still filled by a userfaultfd: saving now, which refuses it"
                );
                return Ok(());
            }
            std::thread::sleep(LAZY_FILL_POLL);
        }
    }
}

fn checkpoint_tries(
    opts: &CheckpointOptions,
    observer: &dyn CheckpointObserver,
) -> Result<CheckpointStats> {
    wait_for_lazy_fill(opts, observer)?;
    let mut waits = RETRY_AFTER.iter();
    let mut attempts = 1;
    loop {
        match checkpoint_once(opts, observer) {
            Err(CheckpointError::Refused(report)) if report.refused_only_for_now() => {
                let Some(&wait) = waits.next() else {
                    return Err(CheckpointError::Refused(report));
                };
                info!(
                    attempt = attempts,
                    wait_ms = wait.as_millis() as u64,
                    refusals = %report.refusals_text(),
                    "refused only for data in flight: trying again"
                );
                std::thread::sleep(wait);
                attempts += 1;
            }
            Ok(stats) => return Ok(CheckpointStats { attempts, ..stats }),
            Err(e) => return Err(e),
        }
    }
}

/// Pre-copy: pages written while the set still runs (see `precopy`),
/// with its progress told to `observer` and its Cancel heard meanwhile.
fn precopy_pages(
    opts: &CheckpointOptions,
    sink: &mut crate::image::ChunkSink<'_>,
    observer: &dyn CheckpointObserver,
) -> Result<precopy::Precopy> {
    let watch = |done: usize, queued: usize| {
        observer.stage(Stage::Precopying {
            done: done as u64,
            queued: queued as u64,
        });
        !observer.cancelled()
    };
    precopy::run_without(&opts.roots, &opts.left_out.pids, sink, &watch).map_err(|e| match e {
        precopy::PrecopyError::Freeze(e) => freeze_refusal(e),
        precopy::PrecopyError::Image(e) => CheckpointError::from(e),
        precopy::PrecopyError::Cancelled => CheckpointError::Cancelled {
            stage: "precopying",
        },
    })
}

/// Inspect the frozen set, each process's private pages handed to `sink`
/// as soon as it is inspected (while the next one is); the pages' windows
/// per process and the bytes pre-copy had already written.
fn inspect_dumping(
    frozen: &Frozen,
    precopied: Option<&precopy::Precopy>,
    opts: &CheckpointOptions,
    sink: &mut crate::image::ChunkSink<'_>,
) -> Result<(Inspection, Vec<PageWindows>, u64)> {
    let mut pending = Vec::new();
    let mut precopied_bytes = 0u64;
    let inspection = inspect::inspect(
        frozen,
        precopied,
        &opts.devices,
        &opts.left_out.mounts,
        |p, report| {
            // Nothing is saved past a refusal: the checkpoint will stop there.
            let Some(mm) = p.mm.as_ref().filter(|_| report.is_checkpointable()) else {
                pending.push(Vec::new());
                return Ok(());
            };
            let reuse = precopied
                .map(|pc| pc.reuse_for(p.pid, &mm.vmas))
                .unwrap_or_default();
            pending.push(memory::dump_private_pages(
                p.pid,
                &mm.vmas,
                sink,
                memory::ReadFailure::Fatal,
                &reuse,
            )?);
            precopied_bytes += reuse.reused_bytes();
            Ok(())
        },
    )?;
    Ok((inspection, pending, precopied_bytes))
}

// Long because: the writers, the sink, `frozen` and `files` are locals
// whose drop order is the failure path (queues put back before the
// processes go, an unfinished image removed); each step is a named
// function.
fn checkpoint_once(
    opts: &CheckpointOptions,
    observer: &dyn CheckpointObserver,
) -> Result<CheckpointStats> {
    let progress = |stage| observer.stage(stage);
    let go_on = |stage| match observer.cancelled() {
        true => Err(CheckpointError::Cancelled { stage }),
        false => Ok(()),
    };
    go_on("starting")?;
    let t0 = Instant::now();
    let threads = opts.threads.max(1);
    // Pre-copy writes pages before the set is inspected, so the image is
    // opened first; a refusal found later removes it again.
    let early_writer = precopy_pays(opts)
        .then(|| ImageWriter::create_staged(&opts.dir, opts.store.as_deref()))
        .transpose()?;
    debug!(elapsed = ?t0.elapsed(), "image opened");
    let mut early_sink = early_writer.as_ref().map(|w| w.sink(threads, threads * 4));
    let precopied = match &mut early_sink {
        Some(sink) => {
            progress(Stage::Precopying { done: 0, queued: 0 });
            Some(precopy_pages(opts, sink, observer)?)
        }
        None => None,
    };
    go_on("precopying")?;
    let attachments = observer
        .before_freeze()
        .map_err(CheckpointError::Observer)?;
    go_on("freezing")?;
    progress(Stage::Freezing);
    // Frozen time counts from the first stop, which happens inside freeze().
    let frozen_at = Instant::now();
    let frozen = freeze(&opts.roots, &opts.left_out.pids)?;
    let frozen_cgroup = frozen.cgroup.clone();
    debug!(elapsed = ?t0.elapsed(), "frozen");
    observer
        .while_frozen(&frozen.processes.keys().copied().collect())
        .map_err(CheckpointError::Observer)?;
    go_on("inspecting")?;
    progress(Stage::Inspecting);
    // The image is opened before the inspection so each process's pages
    // are saved while the next one is inspected; a refusal found at the
    // end drops the unfinished image.
    let late_writer = early_writer
        .is_none()
        .then(|| ImageWriter::create_staged(&opts.dir, opts.store.as_deref()))
        .transpose()?;
    let writer = early_writer
        .as_ref()
        .or(late_writer.as_ref())
        .expect("one of them");
    let mut sink = early_sink.unwrap_or_else(|| writer.sink(threads, threads * 4));
    let (
        Inspection {
            mut snapshot,
            mut files,
            mut shmem,
        },
        pending,
        precopied_bytes,
    ) = inspect_dumping(&frozen, precopied.as_ref(), opts, &mut sink)?;
    debug!(elapsed = ?t0.elapsed(), "inspected");
    if opts.no_reset {
        snapshot.report.refuse_resets();
    }
    if !snapshot.report.is_checkpointable() {
        return Err(CheckpointError::Refused(Box::new(snapshot.report)));
    }
    go_on("dumping memory")?;
    let total_pages: u64 = snapshot
        .processes
        .iter()
        .filter_map(|p| p.mm.as_ref())
        .flat_map(|m| &m.vmas)
        .map(|v| v.len())
        .sum();
    progress(Stage::DumpingMemory {
        done: total_pages,
        total: total_pages,
    });
    let shm_pending = shmem.dump(&mut sink)?;
    // The workers read the pages: they must be done before the processes
    // may change them.
    sink.drain()?;
    debug!(elapsed = ?t0.elapsed(), precopied_bytes, "pages read");
    // A failure inside dump_data drops `files`, which puts back what it
    // read, before `frozen` (declared earlier) lets the processes go. Past
    // it, the queues go back at once, whatever follows: the processes go on
    // (no --stop, a failed commit, this checkpointer killed) or are ended.
    files.dump_data(writer)?;
    files.put_back();
    debug!(elapsed = ?t0.elapsed(), "file data written");
    // Everything is captured in our buffers: a process that goes on
    // running cannot change the image any more, so it need not wait for
    // the disk. One that is to end waits until the image is durable.
    let mut frozen = Some(frozen);
    let mut frozen_for = precopied.as_ref().map_or(Duration::ZERO, |p| p.frozen);
    if !opts.stop {
        frozen.take().expect("still frozen").thaw();
        frozen_for += frozen_at.elapsed();
    }
    let stored = sink.finish()?;
    debug!(elapsed = ?t0.elapsed(), "pages written");
    commit::resolve_pages(&mut snapshot, pending, &mut shmem, shm_pending, &stored);
    snapshot.attachments = attachment::store(writer, &attachments)?;
    commit::take_tables(&mut snapshot, &mut files, &mut shmem);
    go_on("committing")?;
    progress(Stage::Committing);
    crate::faults::point("checkpoint: committing");
    let stats = writer.stats();
    let processes = snapshot.processes.len();
    let committed = early_writer
        .or(late_writer)
        .expect("one of them")
        .commit(&snapshot)?;
    if let Some(frozen) = frozen.take() {
        let frozen = match opts.verify_before_stop {
            true => commit::verified(frozen, &opts.dir, t0)?,
            false => frozen,
        };
        crate::faults::point("checkpoint: committed, ending the processes");
        frozen_for += frozen_at.elapsed();
        frozen.kill_all();
    }
    let total = t0.elapsed();
    info!(dir = %opts.dir.display(), processes, ?frozen_for, ?total, "checkpoint committed");
    debug!(?stats, "image write statistics");
    Ok(CheckpointStats {
        dir: opts.dir.clone(),
        processes,
        frozen: frozen_for,
        total,
        bytes_raw: snapshot.memory_bytes(),
        bytes_written: stats.written_bytes,
        precopied_bytes,
        frozen_cgroup,
        image_bytes: committed.image_bytes,
        report: snapshot.report,
        attempts: 1,
    })
}
