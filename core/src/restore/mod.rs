//! Restore: validate the image, open shared objects, build the tree with
//! the saved pids, swap each address space in from outside, release all
//! tasks together.
//!
//! A failure at any point kills every process this restore created (only
//! those: each node records its own pid once born) and leaves the image
//! untouched; the image is only ever read.
//!
//! So does the restorer's death, at any instant (SIGKILL included), with
//! nobody left to clean up: every node of the tree dies with its parent
//! (parent-death SIGKILL, see `node`), the restore root watches the
//! restorer through a pipe only the restorer writes to and takes the tree
//! down when it hangs up before the commit, and every task seized for
//! the swap is seized with PTRACE_O_EXITKILL, so a half-swapped task is
//! killed by the kernel before it can run. What remains is documented at
//! [`release`].

pub mod node;
pub mod plan;
pub mod validate;

use crate::creds::Creds;
use crate::files::{self, FileError};
use crate::image::{ImageError, ImageReader};
use crate::memory::shmem::{MapTarget, SharedObjects, ShmemError};
use crate::memory::{self, MemoryError, MmImage, PAGE_SIZE};
use crate::procfs::{self, MapsPath, ProcfsError};
use crate::procmem::ProcMem;
use crate::ptrace::{self, PtraceError, Stop};
use crate::remote::{RemoteError, RemoteTask, Scratch};
use crate::snapshot::{ProcessImage, Snapshot};
use crate::uevent::proxy::{Proxy, SessionNet};
use crate::uevent::UeventError;
use crate::{creds, signals, thread};
use node::{Shared, TreeSpec, GADGET_LEN};
use plan::{Ids, NodeKind, Plan, PlanError};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::{debug, info};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Shmem(#[from] ShmemError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Ptrace(#[from] PtraceError),
    #[error(transparent)]
    Procfs(#[from] ProcfsError),
    #[error(transparent)]
    Uevent(#[from] UeventError),
    #[error("pid {pid} is taken by {comm}; free it or restore with --pidns")]
    PidTaken { pid: i32, comm: String },
    #[error("another restore held {} for {waited:?}; try again when it is done", path.display())]
    RestoreLock {
        path: PathBuf,
        waited: Duration,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error("pid {pid}: the caller may not restore its credentials: {reason}")]
    Credentials { pid: i32, reason: String },
    #[error("invalid image {dir}: {reason}")]
    Invalid { dir: PathBuf, reason: String },
    #[error("pid {pid} failed while {step}: {}", std::io::Error::from_raw_os_error(*errno))]
    Node {
        pid: i32,
        step: &'static str,
        errno: i32,
    },
    #[error("the restore tree did not reach stage {stage} within {secs} s")]
    Timeout { stage: &'static str, secs: u64 },
    #[error("{what}")]
    Os {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("no room for the restore gadget in the address space of pid {pid}")]
    NoGadgetRoom { pid: i32 },
    /// Cancelled by the caller before the restored processes ran: the tree
    /// made so far was ended.
    #[error("the restore was cancelled while {stage}; nothing of it runs")]
    Cancelled { stage: &'static str },
}

type Result<T> = std::result::Result<T, RestoreError>;

/// Bounds on what an image may ask for, checked before anything is created.
const MAX_PROCESSES: usize = 4096;
const MAX_FDS_PER_PROCESS: usize = 65536;
const MAX_THREADS: usize = 4096;
const MAX_DETACHED: usize = 4096;
const STAGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub dir: PathBuf,
    /// Restore into a fresh pid namespace (its init is a small keeper).
    pub pidns: bool,
    /// Parent the roots under a session keeper: a small child subreaper
    /// that outlives this call, adopts the session's orphans and ends with
    /// its last process. Without it the roots are the caller's to reap.
    /// Implied by `pidns`, and by an image holding device event sockets
    /// (the keeper runs their uevent proxy).
    pub keeper: bool,
    /// Where the live DRM cards to reattach are looked up (`/sys`); tests
    /// point it at fixture trees.
    pub sys_roots: crate::devices::SysRoots,
    /// The user a privileged restore acts for (a service restoring a
    /// user's session): the image's credentials must then be ones this
    /// user could restore, not merely ones the restorer could.
    pub on_behalf_of: Option<Creds>,
    /// Unix listeners bound under another name than the saved one: (saved
    /// name, new name), each a path or an abstract name starting with NUL.
    /// A session restored onto another display number listens there.
    pub listener_renames: ListenerRenames,
}

/// (saved name, new name) of unix listeners, each a path or an abstract
/// name starting with NUL.
pub type ListenerRenames = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone)]
pub struct Restored {
    /// (pid in the image, pid as the caller sees it), for every live process.
    pub pids: Vec<(i32, i32)>,
    /// The roots' pids, as the caller sees them.
    pub roots: Vec<i32>,
    /// The session keeper (or pid namespace init), as the caller sees it.
    pub keeper: Option<i32>,
    /// Processes left in the restorer's session or group, with why.
    pub foreign: Vec<(i32, String)>,
    pub elapsed: Duration,
}

fn pid_comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Give the listeners named in `renames` their new names (before the
/// image is validated: the new names are checked as any other). Only
/// listeners: the connections they accepted are restored as pairs.
fn rename_listeners(snap: &mut Snapshot, renames: &[(Vec<u8>, Vec<u8>)]) {
    for f in &mut snap.files {
        if let crate::files::FileKind::UnixSocket(u) = &mut f.kind {
            if u.backlog.is_none() {
                continue;
            }
            // A path may be bound with its terminating NUL counted in the
            // address (Xvfb does): compared without it, kept in the new one.
            let path_name = u.name.first().is_some_and(|&b| b != 0);
            let bare_len = match path_name {
                true => u.name.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1),
                false => u.name.len(),
            };
            let (bare, nuls) = u.name.split_at(bare_len);
            if let Some((_, new)) = renames.iter().find(|(old, _)| old.as_slice() == bare) {
                debug!(
                    from = %String::from_utf8_lossy(bare),
                    to = %String::from_utf8_lossy(new),
                    "listener bound under a new name"
                );
                u.name = [new.as_slice(), nuls].concat();
            }
        }
    }
}

/// Make the kernel hand out pids above `highest` from now on. Whatever is
/// created without a chosen pid while the tree is built (the restore root,
/// helper threads and processes, and anything else on the machine) takes
/// the number after the last one allocated; once the pid counter has
/// wrapped, that can be a saved pid still to be created (clone3 then
/// fails with EEXIST). Only ever moved forward.
fn start_pids_above(highest: i32) {
    const LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";
    let last: i32 = std::fs::read_to_string(LAST_PID)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(i32::MAX);
    if last < highest {
        if let Err(e) = std::fs::write(LAST_PID, highest.to_string()) {
            tracing::warn!(error = %e, highest, "could not move the pid counter past the saved pids");
        }
    }
}

/// Who holds `pid`, if anyone. A zombie (the saved process itself, just
/// ended by `checkpoint --stop`, not yet reaped by whoever adopted it) is
/// given a moment to go. A number no process has can still be taken: as
/// the process group or session of living processes (its leader gone),
/// the kernel keeps it, and a fork with it fails with EEXIST.
fn pid_taken(pid: i32) -> Option<String> {
    const REAP_GRACE: Duration = Duration::from_secs(3);
    let until = Instant::now() + REAP_GRACE;
    loop {
        let holder = match pid_comm(pid) {
            Some(comm) => {
                let state = procfs::ProcDir::new(pid).stat().ok().map(|s| s.state);
                if !matches!(state, Some('Z' | 'X')) {
                    return Some(format!("a running process ({comm})"));
                }
                format!("a zombie ({comm}) its parent has not reaped")
            }
            None => group_or_session_of(pid)?,
        };
        if Instant::now() > until {
            return Some(holder);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A living process whose process group or session is `id` (its leader
/// gone), in words.
fn group_or_session_of(id: i32) -> Option<String> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = procfs::ProcDir::new(pid).stat().ok()?;
        let what = if stat.pgrp == id {
            "process group"
        } else if stat.session == id {
            "session"
        } else {
            return None;
        };
        Some(format!(
            "the {what} of pid {pid} ({}), whose leader is gone",
            stat.comm
        ))
    })
}

/// Holes of a saved layout where the gadget may go.
fn gadget_candidates(mm: &MmImage) -> Vec<u64> {
    let mut spans: Vec<(u64, u64)> = mm.vmas.iter().map(|v| (v.start, v.end)).collect();
    spans.sort_unstable();
    let mut out = Vec::new();
    let mut prev_end = 0x1_0000_0000u64; // stay above the low 4 GiB, where binaries live
    let guard = 16 * PAGE_SIZE;
    for &(start, end) in spans
        .iter()
        .chain(std::iter::once(&(0x7fff_ffff_0000, 0x7fff_ffff_0000)))
    {
        if start > prev_end + 2 * guard + GADGET_LEN {
            // Try a few places in each hole: the restorer's own mappings
            // (which the node still has) may sit in some of them.
            let hole = start - prev_end;
            for frac in [1u64, 2, 3] {
                let addr = (prev_end + hole * frac / 4) & !(PAGE_SIZE - 1);
                if addr >= prev_end + guard && addr + GADGET_LEN + guard <= start {
                    out.push(addr);
                }
            }
        }
        prev_end = prev_end.max(end);
        if out.len() >= 24 {
            break;
        }
    }
    out
}

fn raise_nofile(needed: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a valid struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if lim.rlim_max < needed {
        return Err(RestoreError::Os {
            what: "the image needs more open files than RLIMIT_NOFILE allows",
            source: std::io::Error::from_raw_os_error(libc::EMFILE),
        });
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    Ok(())
}

/// What the restorer started, so an abort can end exactly that.
struct Cleanup<'a> {
    shared: &'a Shared,
    plan: &'a Plan,
    root: Option<i32>,
    pidns: bool,
    armed: bool,
}

impl Cleanup<'_> {
    fn kill_all(&mut self) {
        self.shared.set_stage(node::STAGE_ABORT);
        if self.pidns {
            // Killing the namespace's init ends everything inside it.
            if let Some(root) = self.root {
                // SAFETY: kill of the keeper we created.
                unsafe { libc::kill(root, libc::SIGKILL) };
            }
        } else {
            for i in 0..self.plan.nodes.len() {
                let pid = self.shared.slot(i).pid.load(Ordering::Acquire);
                if pid > 0 {
                    // SAFETY: kill of a process that recorded itself as ours.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if let Some(root) = self.root {
                // SAFETY: kill of the restore root we forked.
                unsafe { libc::kill(root, libc::SIGKILL) };
            }
        }
        if let Some(root) = self.root {
            let mut st = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(root, &mut st, libc::__WALL) };
        }
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.kill_all();
        }
    }
}

/// Restore the image in `opts.dir`.
pub fn restore(opts: &RestoreOptions) -> Result<Restored> {
    restore_with_progress(opts, &|_, _| {})
}

/// [`restore`], calling `progress(done, total)` with bytes of page data
/// written into the restored processes as it goes.
pub fn restore_with_progress(
    opts: &RestoreOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<Restored> {
    restore_cancellable(opts, progress, &|| false)
}

/// [`restore_with_progress`], asking `cancelled` as it goes until the
/// restored processes are let go (the point of no return): once it says
/// yes, the tree made so far is ended and the restore fails with
/// [`RestoreError::Cancelled`].
pub fn restore_cancellable(
    opts: &RestoreOptions,
    progress: &dyn Fn(u64, u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<Restored> {
    let t0 = Instant::now();
    let (reader, snap): (ImageReader, Snapshot) = ImageReader::open(&opts.dir)?;
    restore_image(reader, snap, opts, progress, cancelled, t0)
}

/// [`restore`] of an image the caller has opened already (`reader` and
/// `snap` from `opts.dir`), so its document is not read and parsed twice.
pub fn restore_opened(
    reader: ImageReader,
    snap: Snapshot,
    opts: &RestoreOptions,
) -> Result<Restored> {
    restore_image(reader, snap, opts, &|_, _| {}, &|| false, Instant::now())
}

/// Restores that take their saved pids run one at a time on a machine:
/// each moves the pid counter past its pids and then forks with them, and
/// another one's counter move (or its own helpers' pids) could land among
/// them (EEXIST at a fork). Held until the restore returns (or its
/// process ends). In /run itself, root's alone: in the world-writable
/// /run/lock any user could make the file first and hold it.
const RESTORE_LOCK: &str = "/run/hiber-restore.lock";
/// How long a restore waits for another one to finish.
const RESTORE_LOCK_WAIT: Duration = Duration::from_secs(120);

fn restore_lock() -> Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = PathBuf::from(RESTORE_LOCK);
    let err = |source: Option<std::io::Error>, waited| RestoreError::RestoreLock {
        path: path.clone(),
        waited,
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path);
    let file = match file {
        Ok(f) => f,
        // A caller that may not open root's lock may not move the pid
        // counter either: its restore cannot disturb another's.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            debug!(path = %path.display(), "restoring without the lock: not root's restore");
            return Ok(None);
        }
        Err(e) => return Err(err(Some(e), Duration::ZERO)),
    };
    let start = Instant::now();
    let mut nap = Duration::from_millis(1);
    // A POSIX lock, not flock: it belongs to this process only, so the
    // keeper and the tree, forked from the restorer, do not hold it on.
    // SAFETY: a zeroed flock struct is a valid value; fields set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    loop {
        // SAFETY: F_SETLK on a file we hold open with a flock struct of ours.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } == 0 {
            return Ok(Some(file));
        }
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
            return Err(err(Some(e), start.elapsed()));
        }
        if start.elapsed() > RESTORE_LOCK_WAIT {
            return Err(err(None, start.elapsed()));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(50));
    }
}

fn restore_image(
    reader: ImageReader,
    snap: Snapshot,
    opts: &RestoreOptions,
    progress: &dyn Fn(u64, u64),
    cancelled: &dyn Fn() -> bool,
    t0: Instant,
) -> Result<Restored> {
    let mut snap = snap;
    rename_listeners(&mut snap, &opts.listener_renames);
    let go_on = |stage| match cancelled() {
        true => Err(RestoreError::Cancelled { stage }),
        false => Ok(()),
    };
    go_on("starting")?;
    validate::validate(
        &opts.dir,
        &snap,
        &reader,
        &opts.sys_roots,
        opts.on_behalf_of.as_ref(),
    )?;
    // After validation: a caller refused there is told why, not that it
    // may not take the lock.
    let _one_at_a_time = if opts.pidns { None } else { restore_lock()? };

    let ids: Vec<Ids> = snap
        .processes
        .iter()
        .map(|p| Ids {
            pid: p.pid,
            ppid: p.ppid,
            pgid: p.pgid,
            sid: p.sid,
        })
        .collect();
    let pid_free = |pid: i32| opts.pidns || !Path::new(&format!("/proc/{pid}")).exists();
    let mut plan = plan::plan(&ids, &pid_free)?;
    plan::namespace_flags(&mut plan, &|i| {
        let ns = snap.processes[i].namespaces.as_ref();
        (
            ns.filter(|n| n.net).map(|n| n.ids.1),
            ns.filter(|n| n.ipc).map(|n| n.ids.2),
        )
    });
    plan::pid_namespaces(&mut plan, &|i| snap.processes[i].ns_pids.clone());
    if !opts.pidns {
        let thread_ids = snap
            .processes
            .iter()
            .flat_map(|p| p.threads.iter().skip(1).map(|t| t.tid));
        let wanted: Vec<i32> = plan.nodes.iter().map(|n| n.pid).chain(thread_ids).collect();
        // The counter first: while the check below waits for a zombie to
        // be reaped, processes started meanwhile (by anyone) must not take
        // a saved pid it already found free.
        start_pids_above(wanted.iter().copied().max().unwrap_or(0));
        for &pid in &wanted {
            if let Some(comm) = pid_taken(pid) {
                return Err(RestoreError::PidTaken { pid, comm });
            }
        }
    }
    for (pid, what) in &plan.foreign {
        debug!(pid, what = %what, "left in the restorer's session or group");
    }

    // Shared objects, at fds above every number the tasks use.
    let max_target = snap
        .processes
        .iter()
        .flat_map(|p| &p.fds)
        .map(|f| f.fd)
        .max()
        .unwrap_or(2);
    let base_fd: RawFd = (max_target + 1).max(3);
    raise_nofile(base_fd as u64 + snap.files.len() as u64 + 64)?;
    // Dropped on failure, after `cleanup` has ended the tree: SysV
    // segments made for this restore go with it. Those are made once the
    // restore root watches (below).
    let mut shared_objs = SharedObjects::create(&snap.shmem, &reader)?;
    // Device event sockets go into a network namespace of the session's
    // own, spoken to by a proxy that the keeper runs: so a keeper it is.
    // Without the right to make one (not root), they are recreated in the
    // host's namespace as any netlink socket, and no proxy runs.
    let uevent_net = if snap.has_uevent_sockets() {
        SessionNet::create()
            .inspect_err(|e| {
                tracing::warn!(error = %e, "device event sockets stay in the host's network namespace; no uevent proxy")
            })
            .ok()
    } else {
        None
    };
    let keeper = opts.keeper || opts.pidns || uevent_net.is_some();
    if keeper && !opts.keeper && !opts.pidns {
        info!(
            "the image holds device event sockets: restoring under a keeper for the uevent proxy"
        );
    }
    // Each file is opened as the first saved process that holds it.
    let mut holders: Vec<Option<&Creds>> = vec![None; snap.files.len()];
    for p in &snap.processes {
        for f in &p.fds {
            holders[f.file].get_or_insert(&p.creds);
        }
    }
    let file_objs = files::restore_all(
        &snap.files,
        &holders,
        &snap.pipes,
        &reader,
        &shared_objs,
        base_fd,
        uevent_net.as_ref(),
        &opts.sys_roots,
    )?;
    let files::RestoredFiles {
        fds: file_objs,
        reattached,
    } = file_objs;
    // Opened before the tree runs: real events from now on wait for it.
    let proxy = uevent_net
        .as_ref()
        .map(|net| Proxy::new(net, snap.detached.clone()))
        .transpose()?;
    drop(uevent_net);
    let file_fds: Vec<RawFd> = file_objs.iter().map(|f| f.as_raw_fd()).collect();

    let candidates: Vec<Vec<u64>> = plan
        .nodes
        .iter()
        .map(|n| match n.kind {
            NodeKind::Process(i) => snap.processes[i]
                .mm
                .as_ref()
                .map(gadget_candidates)
                .unwrap_or_default(),
            _ => Vec::new(),
        })
        .collect();
    let sysv_count = snap
        .shmem
        .iter()
        .filter(|o| matches!(o.kind, crate::memory::shmem::ShmemKind::Sysv(_)))
        .count();
    let shared = Shared::new(plan.nodes.len(), sysv_count).map_err(|source| RestoreError::Os {
        what: "mapping the restore sync page",
        source,
    })?;
    let restorer_pid = std::process::id() as i32;
    let (release_r, release_w) = release_pipe()?;
    let spec = TreeSpec {
        plan: &plan,
        processes: &snap.processes,
        file_fds: &file_fds,
        files: &snap.files,
        base_fd,
        gadget_candidates: &candidates,
        restorer_pid,
        release: release_r.as_raw_fd(),
        release_writer: release_w.as_raw_fd(),
    };

    let mut cleanup = Cleanup {
        shared: &shared,
        plan: &plan,
        root: None,
        pidns: opts.pidns,
        armed: true,
    };
    let root = spawn_root(&spec, &shared, opts.pidns, keeper, proxy.as_ref())?;
    // The keeper has its copies.
    drop(proxy);
    cleanup.root = Some(root);
    // The tree needs none of them until the swap; the root, which outlives
    // us if we die, removes each one it is told of.
    shared_objs.create_sysv(&snap.shmem, &reader, &|id| shared.publish_sysv(id))?;

    let total = plan.nodes.len() as u32;
    let live: Vec<usize> = plan
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.kind, NodeKind::Process(i) if !snap.processes[i].is_zombie()))
        .map(|(i, _)| i)
        .collect();
    let area = shared.area();
    for (counter, target, stage, next) in [
        (&area.born, total, "born", node::STAGE_GROUPS),
        (&area.grouped, total, "grouped", node::STAGE_SETUP),
        (&area.ready, live.len() as u32, "ready", node::STAGE_SETUP),
    ] {
        if !shared.wait_count(counter, target, Instant::now() + STAGE_TIMEOUT) {
            return Err(RestoreError::Timeout {
                stage,
                secs: STAGE_TIMEOUT.as_secs(),
            });
        }
        if area.failed.load(Ordering::Acquire) > 0 {
            let n = area.fail_node.load(Ordering::Acquire) as usize;
            return Err(RestoreError::Node {
                pid: plan.nodes.get(n).map_or(0, |n| n.pid),
                step: node::Step::from_u32(area.fail_step.load(Ordering::Acquire)),
                errno: area.fail_errno.load(Ordering::Acquire),
            });
        }
        shared.set_stage(next);
    }
    debug!(elapsed = ?t0.elapsed(), nodes = total, "tree built");

    // Pids as we see them (they differ in a new pid namespace).
    let outer = outer_pids(&plan, &shared, &live, opts.pidns)?;
    let current = Creds::of_self().map_err(|source| RestoreError::Os {
        what: "reading the caller's credentials",
        source,
    })?;
    let shmem_targets: Vec<MapTarget> = (0..snap.shmem.len())
        .map(|i| shared_objs.target(i, restorer_pid, &snap.shmem))
        .collect();
    let mut seized = Vec::new();
    let total_bytes: u64 = snap
        .processes
        .iter()
        .filter_map(|p| p.mm.as_ref())
        .flat_map(|mm| mm.page_chunks())
        .map(|c| c.raw_len as u64)
        .sum();
    let filled = std::sync::atomic::AtomicU64::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let swap_result = memory::with_page_fillers(&reader, workers, &filled, |fill| -> Result<()> {
        for &i in &live {
            let NodeKind::Process(pi) = plan.nodes[i].kind else {
                unreachable!()
            };
            let pid = outer[&i];
            // Killed by the kernel if we die before the release: never
            // run with its address space half swapped in.
            ptrace::seize_exit_kill(pid)?;
            seized.push(pid);
            ptrace::interrupt(pid)?;
            wait_event_stop(pid)?;
            let gadget = shared.slot(i).gadget.load(Ordering::Acquire);
            let threads = swap(
                pid,
                gadget,
                &snap.processes[pi],
                &shmem_targets,
                &current,
                fill,
            )?;
            seized.extend(threads);
            progress(filled.load(Ordering::Relaxed), total_bytes);
            go_on("swapping in memory")?;
        }
        // Every mapping exists: now seals may forbid new writable ones.
        shared_objs.seal(&snap.shmem)?;
        debug!(elapsed = ?t0.elapsed(), "every process swapped in; pages still filling");
        Ok(())
    });
    debug!(elapsed = ?t0.elapsed(), "pages filled");
    progress(filled.load(Ordering::Relaxed), total_bytes);
    // The last chance: after this the tree is let go.
    if let Err(e) = swap_result.and_then(|()| go_on("filling pages")) {
        drop(cleanup);
        return Err(e);
    }
    // Back into their cgroups (a session's scope), while still stopped.
    for &i in &live {
        let NodeKind::Process(pi) = plan.nodes[i].kind else {
            continue;
        };
        if let Some(path) = &snap.processes[pi].cgroup {
            let pid = outer[&i];
            match crate::cgroup::join(pid, path) {
                Ok(true) => debug!(pid, cgroup = %path, "joined its cgroup again"),
                Ok(false) => {}
                // Not fatal: the process runs, only outside its old scope.
                Err(e) => {
                    tracing::warn!(pid, cgroup = %path, error = %e, "could not join its cgroup again")
                }
            }
        }
    }
    // Processes that were in a job-control stop stop again as they start
    // running: the signal waits, queued, until they are let go.
    for &i in &live {
        let NodeKind::Process(pi) = plan.nodes[i].kind else {
            continue;
        };
        let p = &snap.processes[pi];
        if let Some(sig) = p.job_stop {
            let sig = crate::signals::restop_signal(sig, &p.sigactions);
            // SAFETY: kill of a process we restored and still trace.
            unsafe { libc::kill(outer[&i], sig) };
            debug!(pid = outer[&i], sig, "stopped again (job control)");
        }
    }
    release(&shared, &seized, release_w)?;
    cleanup.armed = false;
    drive_vt_enter(&snap, &plan, &outer, &live, &reattached);
    let keeper = if keeper {
        Some(root)
    } else {
        let mut st = 0;
        // SAFETY: reaping the restore root, our child, which exits at DONE.
        unsafe { libc::waitpid(root, &mut st, 0) };
        None
    };
    drop(file_objs);
    shared_objs.keep();
    let pids: Vec<(i32, i32)> = live
        .iter()
        .map(|&i| (plan.nodes[i].pid, outer[&i]))
        .collect();
    let roots = snap
        .processes
        .iter()
        .filter(|p| !snap.processes.iter().any(|q| q.pid == p.ppid) && !p.is_zombie())
        .filter_map(|p| pids.iter().find(|(img, _)| *img == p.pid).map(|x| x.1))
        .collect();
    let elapsed = t0.elapsed();
    info!(dir = %opts.dir.display(), processes = pids.len(), ?elapsed, "restored");
    Ok(Restored {
        pids,
        roots,
        keeper,
        foreign: plan.foreign.clone(),
        elapsed,
    })
}

/// Reattach's last step (experimental): each process holding a card that
/// was reopened live gets its card's signal once, now that it runs with
/// its own handlers (an X server's VT switch handler).
fn drive_vt_enter(
    snap: &Snapshot,
    plan: &Plan,
    outer: &HashMap<usize, i32>,
    live: &[usize],
    reattached: &[usize],
) {
    for &i in live {
        let NodeKind::Process(pi) = plan.nodes[i].kind else {
            continue;
        };
        let card = snap.processes[pi]
            .fds
            .iter()
            .filter(|f| reattached.contains(&f.file))
            .find_map(|f| match &snap.files[f.file].kind {
                files::FileKind::Reattached(r) => Some(r),
                _ => None,
            });
        if let Some(card) = card {
            // Not fatal: the server runs, only without its screen back.
            if let Err(e) = crate::devices::reattach::signal_server(outer[&i], card.signal_number())
            {
                tracing::warn!(pid = outer[&i], error = %e, "could not drive the VT re-enter path");
            }
        }
    }
}

fn wait_event_stop(pid: i32) -> Result<()> {
    loop {
        match ptrace::wait(pid)? {
            (Stop::Event { .. }, _) => return Ok(()),
            // Any ptrace stop clears the pending interrupt: ask again.
            (Stop::Signal(sig), _) => {
                ptrace::cont(pid, sig)?;
                ptrace::interrupt(pid)?;
            }
            (Stop::Syscall, _) => {
                ptrace::cont(pid, 0)?;
                ptrace::interrupt(pid)?;
            }
            (_, status) => {
                return Err(PtraceError::UnexpectedStop {
                    tid: pid,
                    status,
                    during: "seizing a restored task",
                }
                .into())
            }
        }
    }
}

/// What the restore root does once the tree runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootRole {
    /// Exit: the roots become the caller's children.
    Exit,
    /// Stay as a child subreaper until the session's last process ends.
    Keeper,
    /// Stay as the new pid namespace's init.
    NamespaceInit,
}

/// Fork the restore root (in pid-namespace mode through an intermediate
/// that exits, so the keeper is not our child).
/// Give this thread, and so the tree it forks, a new empty session
/// keyring: the restorer's own (root's login keyring, or hiberd's shared
/// by every session it restores) must not be possessed by a user's
/// restored processes. The saved processes' keyrings are not saved; they
/// come back with an empty one.
fn own_session_keyring() -> Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with an operation number and a null name (anonymous).
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // A kernel without keyrings has none to share.
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(RestoreError::Os {
                what: "making the restored tree a session keyring of its own",
                source: e,
            });
        }
    }
    Ok(())
}

fn spawn_root(
    spec: &TreeSpec<'_>,
    shared: &Shared,
    pidns: bool,
    keeper: bool,
    proxy: Option<&Proxy>,
) -> Result<i32> {
    let err = |source| RestoreError::Os {
        what: "forking the restore root",
        source,
    };
    own_session_keyring()?;
    if !pidns {
        let role = if keeper {
            RootRole::Keeper
        } else {
            RootRole::Exit
        };
        // No parent-death signal for the root: it watches the restorer
        // through the release pipe instead, so that it can still take the
        // tree down when the restorer dies among the detaches.
        return match node::clone_with_pid(0, 0).map_err(err)? {
            0 => node::child_main(|| root_main(spec, shared, role, proxy)),
            pid => Ok(pid),
        };
    }
    let restorer = node::parent_for(0);
    match node::clone_with_pid(0, 0).map_err(err)? {
        0 => node::child_main(|| {
            node::die_with_parent(restorer);
            match node::clone_with_pid(0, libc::CLONE_NEWPID as u64) {
                // The namespace's init: its parent (this intermediate) ends
                // on purpose, so it cannot die with it; it watches the
                // release pipe like any restore root.
                Ok(0) => root_main(spec, shared, RootRole::NamespaceInit, proxy),
                Ok(pid) => {
                    shared.area().root_pid.store(pid, Ordering::Release);
                    // SAFETY: ends the intermediate.
                    unsafe { libc::_exit(0) }
                }
                Err(_) => {
                    shared.area().failed.fetch_add(1, Ordering::AcqRel);
                    // SAFETY: ends the intermediate.
                    unsafe { libc::_exit(1) }
                }
            }
        }),
        mid => {
            let mut st = 0;
            // SAFETY: reaping our own intermediate child.
            unsafe { libc::waitpid(mid, &mut st, 0) };
            match shared.area().root_pid.load(Ordering::Acquire) {
                0 => Err(RestoreError::Os {
                    what: "creating a pid namespace",
                    source: std::io::Error::from_raw_os_error(libc::EPERM),
                }),
                pid => Ok(pid),
            }
        }
    }
}

/// The restore root: forks the roots of the tree, then waits; as a
/// keeper it stays, reaping orphans until the last process of the session
/// is gone, and runs the session's uevent proxy meanwhile.
fn root_main(spec: &TreeSpec<'_>, shared: &Shared, role: RootRole, proxy: Option<&Proxy>) -> ! {
    // Only the restorer may hold the writer: its hang-up is the signal.
    // SAFETY: closing our copy of the restorer's fd.
    unsafe { libc::close(spec.release_writer) };
    let keeper = role != RootRole::Exit;
    if keeper {
        // SAFETY: prctl on ourselves.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"hiber-keeper".as_ptr()) };
    }
    if role == RootRole::Keeper {
        // Orphans of the session come to us rather than to init.
        // SAFETY: prctl on ourselves, plain integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let forked = node::fork_children(spec, shared, None);
    if !await_done(spec, shared) {
        abandon(spec, shared);
    }
    for &(child, pid) in &forked {
        if !matches!(spec.plan.nodes[child].kind, NodeKind::Process(_)) {
            let mut st = 0;
            // SAFETY: reaping our own helper child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
        }
    }
    if keeper {
        // Close everything: the keeper holds nothing of the session, only
        // the proxy's sockets.
        close_all_but(&proxy.map(Proxy::fds).unwrap_or_default());
        if role == RootRole::Keeper {
            // Leave the caller's session, so its terminal's hang-up or ^C
            // does not end the keeper. Every node is forked by now, so
            // none joins this session by mistake.
            // SAFETY: setsid on ourselves; we are not a group leader.
            unsafe { libc::setsid() };
        }
        match proxy {
            Some(proxy) => keep_with_proxy(proxy),
            None => reap_until_none(),
        }
    }
    // SAFETY: ends the restore root.
    unsafe { libc::_exit(0) }
}

/// Close every fd of this process but `keep`.
fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep.iter().map(|&f| f as u32).collect();
    keep.sort_unstable();
    let mut lo = 0u32;
    for k in keep {
        if k > lo {
            // SAFETY: closing our own fds in [lo, k).
            unsafe { libc::syscall(libc::SYS_close_range, lo, k - 1, 0) };
        }
        lo = k + 1;
    }
    // SAFETY: as above, from lo up.
    unsafe { libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0) };
}

/// Reap every child until none is left.
fn reap_until_none() {
    loop {
        let mut st = 0;
        // SAFETY: reaping any child; ECHILD ends the loop.
        if unsafe { libc::waitpid(-1, &mut st, libc::__WALL) } < 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
        {
            return;
        }
    }
}

/// Reap children without blocking; false once none is left.
fn reap_ready() -> bool {
    loop {
        let mut st = 0;
        // SAFETY: non-blocking reap of any child.
        match unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG | libc::__WALL) } {
            0 => return true,
            r if r > 0 => continue,
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            _ => return false,
        }
    }
}

/// The keeper's life with a uevent proxy: replay the synthetic sequence,
/// then wait on both the host's events and SIGCHLD (through a signalfd)
/// until the session's last process is gone.
fn keep_with_proxy(proxy: &Proxy) {
    use tracing::warn;
    if let Err(e) = proxy.enter_namespace() {
        warn!(error = %e, "the keeper stays in the host's network namespace");
    }
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain signal-mask calls on a local set and on ourselves;
    // SIGCHLD back to default so children stay to be reaped.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // SAFETY: signalfd with a valid set; returns a new fd or -1.
    let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if let Err(e) = proxy.replay() {
        warn!(error = %e, "replaying the synthetic uevent sequence");
    }
    if sfd < 0 {
        warn!(error = %std::io::Error::last_os_error(), "no signalfd: real uevents are not forwarded");
        // SAFETY: unblocking SIGCHLD again for the plain reaping loop.
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
        return reap_until_none();
    }
    let mut host = proxy.host_fd();
    // A SIGCHLD of a child reaped here stays pending: the signalfd wakes
    // the poll and the reaping finds nothing, which is fine.
    while reap_ready() {
        let mut fds = [
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: host,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on two valid pollfds (a negative fd is ignored).
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            let mut info = [0u8; 128];
            // SAFETY: reading signalfd_siginfo records into a local buffer.
            while unsafe { libc::read(sfd, info.as_mut_ptr().cast(), info.len()) } > 0 {}
        }
        if fds[1].revents != 0 {
            if let Err(e) = proxy.forward_pending() {
                // A socket that keeps failing would spin: stop listening.
                warn!(error = %e, "the uevent proxy stops forwarding");
                host = -1;
            }
        }
    }
}

/// The restore root's wait for the commit: true once the restorer has
/// committed the tree, false when it let go of it without committing (an
/// abort, or its death). Bounded by the restorer's life: the release pipe
/// hangs up when it ends, whatever ends it.
fn await_done(spec: &TreeSpec<'_>, shared: &Shared) -> bool {
    loop {
        match shared.area().stage.load(Ordering::Acquire) {
            node::STAGE_DONE => return true,
            node::STAGE_ABORT => return false,
            _ => {}
        }
        // Helpers exit at SETUP; reap them as they go so none lingers.
        let mut st = 0;
        // SAFETY: non-blocking reap of our own children.
        unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG | libc::__WALL) };
        let mut pfd = libc::pollfd {
            fd: spec.release,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } > 0 && pfd.revents != 0 {
            // The restorer stores DONE before it lets go: what it left is
            // final.
            return shared.area().stage.load(Ordering::Acquire) == node::STAGE_DONE;
        }
    }
}

/// The restorer let go of the tree without committing it (it died, or
/// aborted): take down what it built and end. The nodes die with us (their
/// parent-death signal), the seized tasks died with the restorer
/// (EXITKILL); only tasks it had already detached run on their own, so
/// during the release every process of the tree is killed by pid.
fn abandon(spec: &TreeSpec<'_>, shared: &Shared) -> ! {
    let stage = shared.area().stage.load(Ordering::Acquire);
    shared.set_stage(node::STAGE_ABORT);
    if stage == node::STAGE_RELEASE {
        for (i, n) in spec.plan.nodes.iter().enumerate() {
            let pid = shared.slot(i).pid.load(Ordering::Acquire);
            if matches!(n.kind, NodeKind::Process(_)) && pid > 0 {
                // SAFETY: kill of a process of this tree, which recorded
                // its pid itself; none of them has been reaped yet.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    for id in shared.made_sysv() {
        // SAFETY: removing a segment this restore made; no pointer passed.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    }
    tracing::debug!(
        stage,
        "the restorer let go before the commit: tree taken down"
    );
    // SAFETY: ends the restore root; the tree below dies with it.
    unsafe { libc::_exit(1) }
}

/// A pipe whose write end only the restorer keeps: the restore root's way
/// to learn it is gone, whatever way it went.
fn release_pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(RestoreError::Os {
            what: "making the restore's release pipe",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: two fresh fds, owned by nobody else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Let every swapped task go, and commit.
///
/// Until the first detach, a restorer that dies takes everything with it
/// (nodes by their parent-death signal, seized tasks by EXITKILL). The
/// detaches themselves are one PTRACE_DETACH each, back to back, and the
/// stage says RELEASE meanwhile: a restorer killed among them leaves the
/// tasks detached so far running (complete: their memory is all in and
/// the state is theirs) and the others killed by the kernel; the restore
/// root, woken by the release pipe, kills the whole tree by pid.
/// What remains is that window: a task detached before the kill runs
/// until the root's SIGKILL lands (the rest of the detach loop, about a
/// syscall per thread, then the root's wake-up), whole and correct but
/// able to act (write a line, send a message) that a later restore of the
/// same image repeats. Closing it would need the tasks held in the kernel
/// across the detaches (a frozen cgroup v2 they leave only after the
/// commit, thawed by the root if the restorer dies after it). A death
/// after the stage says DONE is a committed restore: the tree is the
/// caller's.
fn release(shared: &Shared, seized: &[i32], release_w: std::os::fd::OwnedFd) -> Result<()> {
    shared.set_stage(node::STAGE_RELEASE);
    for &pid in seized {
        ptrace::detach(pid)?;
    }
    shared.set_stage(node::STAGE_DONE);
    // The commit: the root stops watching and goes on as keeper or exits.
    drop(release_w);
    Ok(())
}

/// Map each live node to its pid as the restorer sees it.
fn outer_pids(
    plan: &Plan,
    shared: &Shared,
    live: &[usize],
    pidns: bool,
) -> Result<HashMap<usize, i32>> {
    if !pidns {
        return Ok(live.iter().map(|&i| (i, plan.nodes[i].pid)).collect());
    }
    // Walk the keeper's descendants and read each one's pid in the
    // keeper's namespace (nested namespaces below it have levels of their
    // own: not the last one, then).
    let root = shared.area().root_pid.load(Ordering::Acquire);
    let level = procfs::ProcDir::new(root)
        .status()
        .map_or(1, |s| s.ns_pid.len().saturating_sub(1));
    let mut inner_to_outer = HashMap::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        let dir = procfs::ProcDir::new(pid);
        if let Ok(status) = dir.status() {
            if let Some(&inner) = status.ns_pid.get(level) {
                inner_to_outer.insert(inner, pid);
            }
        }
        todo.extend(dir.children().unwrap_or_default());
    }
    live.iter()
        .map(|&i| {
            let inner = plan.nodes[i].pid;
            inner_to_outer
                .get(&inner)
                .map(|&o| (i, o))
                .ok_or_else(|| RestoreError::Os {
                    what: "finding a restored process in the new pid namespace",
                    source: std::io::Error::from_raw_os_error(libc::ESRCH),
                })
        })
        .collect()
}

/// Replace the node's address space and state with the saved process's.
fn swap<'a>(
    pid: i32,
    gadget: u64,
    p: &'a ProcessImage,
    shmem_targets: &[MapTarget],
    current: &Creds,
    fill: &std::sync::mpsc::Sender<memory::FillJob<'a>>,
) -> Result<Vec<i32>> {
    let mm =
        p.mm.as_ref()
            .expect("validated: live processes have memory");
    let task = RemoteTask::new(pid, gadget)?;
    let scratch = Scratch {
        addr: gadget + PAGE_SIZE,
        len: (GADGET_LEN - PAGE_SIZE) as usize,
    };
    let mut mem = ProcMem::new(pid, true);

    // The node was born to die with its parent; the program was not (the
    // image does not record a parent-death signal: none is set). EXITKILL
    // covers it from here to the release.
    task.syscall(
        "prctl(PR_SET_PDEATHSIG)",
        libc::SYS_prctl,
        [libc::PR_SET_PDEATHSIG as u64, 0, 0, 0, 0, 0],
    )?;
    // The node's glibc registered rseq; the area is about to disappear.
    if let Some(r) = ptrace::get_rseq(pid)? {
        const RSEQ_FLAG_UNREGISTER: u64 = 1;
        task.syscall(
            "rseq(unregister)",
            libc::SYS_rseq,
            [
                r.addr,
                r.len as u64,
                RSEQ_FLAG_UNREGISTER,
                r.signature as u64,
                0,
                0,
            ],
        )?;
    }
    // Drop every mapping of the restorer copy but the gadget and the vdso.
    let here = procfs::ProcDir::new(pid).maps()?;
    for m in &here {
        let keep = matches!(
            m.path,
            MapsPath::Vdso | MapsPath::Vvar | MapsPath::VvarVclock | MapsPath::Vsyscall
        ) || (m.start >= gadget && m.end <= gadget + GADGET_LEN);
        if !keep {
            task.syscall(
                "munmap",
                libc::SYS_munmap,
                [m.start, m.end - m.start, 0, 0, 0, 0],
            )?;
        }
    }
    // From here the task opens files (its mappings, its executable) as
    // the saved process would.
    creds::take_fs_identity(&task, &mut mem, &scratch, &p.creds, current)?;
    let t0 = Instant::now();
    memory::move_vdso(&task, pid, mm, &here)?;
    memory::map_all(
        &task,
        &mut mem,
        &scratch,
        gadget + crate::remote::BATCH_OFFSET,
        mm,
        &|i| shmem_targets[i].clone(),
        memory::FsIds {
            saved: p.creds.uid[3],
            restorer: current.uid[3],
        },
    )?;
    let t_map = t0.elapsed();
    // A user namespace in which it holds capabilities: made now, while it
    // is one thread and root, after the mappings of the restorer's shared
    // memory; its supplementary groups first (the namespace may deny
    // setgroups).
    let recreated_user = p
        .namespaces
        .as_ref()
        .and_then(|n| n.user.as_ref())
        .filter(|u| u.recreate);
    let after_unshare;
    let current = match recreated_user {
        Some(user) => {
            creds::set_groups(&task, &mut mem, &scratch, &p.creds.groups)?;
            crate::namespaces::recreate_user(&task, pid, user)?;
            after_unshare = creds::Creds {
                groups: p.creds.groups.clone(),
                ..current.clone()
            };
            &after_unshare
        }
        None => current,
    };
    // The pages go in on the fillers' threads meanwhile; nothing below
    // reads the program's memory.
    for v in &mm.vmas {
        for job in memory::fill_jobs(pid, v) {
            fill.send(job)
                .expect("the fillers live until the swaps end");
        }
    }
    memory::set_mm_fields(&task, &mut mem, &scratch, mm)?;
    signals::restore_actions(&task, &mut mem, &scratch, &p.sigactions)?;
    // The other threads: created by the main one (so they share its mm,
    // files and handlers), each then given its own state. Credentials are
    // per thread, so each sets its own, last.
    let mut created = Vec::new();
    if p.threads.len() > 1 {
        // EXITKILL again: the options are replaced as a whole (threads
        // created now inherit them).
        ptrace::set_options(pid, libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_EXITKILL)?;
    }
    for t in &p.threads[1..] {
        let tid = thread::create(&task, &mut mem, &scratch, t.tid, &t.ns_tids)?;
        created.push(tid);
        let tt = RemoteTask::new(tid, gadget)?;
        thread::restore(&tt, &mut mem, &scratch, t)?;
        // Named as the process sees itself (a nested pid namespace).
        let (own_pid, own_tid) = (p.own_tid(p.pid), p.own_tid(t.tid));
        signals::requeue(&tt, &mut mem, &scratch, own_pid, Some(own_tid), &t.pending)?;
        let own = t.creds.as_ref().unwrap_or(&p.creds);
        crate::seccomp::restore(&tt, &mut mem, &p.seccomp_filters, &t.seccomp)?;
        creds::restore(&tt, &mut mem, &scratch, own, current)?;
        tt.finish_with(
            libc::SYS_getpid,
            [0; 6],
            &t.regs.with_syscall_restart(),
            t.sigmask,
        )?;
    }
    // Before any signal is queued: the helper thread it takes must not
    // take one of them.
    crate::gone_dir::enter(&task, &mut mem, &scratch, gadget, p)?;
    tracing::trace!(pid, vmas = mm.vmas.len(), ?t_map, t_threads = ?t0.elapsed(), "swapped");
    // After the threads: a timer may signal one of them.
    // Thread targets named as the process sees them.
    let mut timers = p.timers.clone();
    for t in &mut timers.posix {
        t.target = p.own_tid(t.target);
    }
    crate::timers::restore(&task, &mut mem, &scratch, &timers)?;
    let th = &p.threads[0];
    thread::restore(&task, &mut mem, &scratch, th)?;
    let own_pid = p.own_tid(p.pid);
    signals::requeue(&task, &mut mem, &scratch, own_pid, None, &p.shared_pending)?;
    signals::requeue(
        &task,
        &mut mem,
        &scratch,
        own_pid,
        Some(own_pid),
        &th.pending,
    )?;
    // Its filters just before its credentials: see `seccomp`.
    crate::seccomp::restore(&task, &mut mem, &p.seccomp_filters, &th.seccomp)?;
    creds::restore(&task, &mut mem, &scratch, &p.creds, current)?;
    let regs = th.regs.with_syscall_restart();
    task.finish_with(
        libc::SYS_munmap,
        [gadget, GADGET_LEN, 0, 0, 0, 0],
        &regs,
        th.sigmask,
    )?;
    Ok(created)
}
