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

//! Bottom-up: `error`; `plan` (the tree's shape) and `validate` (the
//! image checked before anything is made); `lock` (taking the saved pids);
//! `node` (what each forked node does); `keeper` (the restore root);
//! `tree` (the built tree from outside: stages, pids, abort, release);
//! `swap` (a saved process swapped into its node); and here the steps in
//! order.

pub mod error;
pub mod keeper;
pub mod lock;
pub mod node;
pub mod plan;
pub mod swap;
pub mod tracers;
pub mod tree;
pub mod validate;

pub use error::RestoreError;

use crate::creds::Creds;
use crate::files;
use crate::image::ImageReader;
use crate::memory;
use crate::memory::fill::{with_page_fillers, FillJob};
use crate::memory::shmem::{MapTarget, SharedObjects};
use crate::ptrace;
use crate::snapshot::{ProcessImage, Snapshot};
use crate::sys::wrap::WrapIoResult;
use crate::uevent::proxy::{Proxy, SessionNet};
use error::Result;
use node::{Shared, TreeSpec};
use plan::{Ids, NodeKind, Plan};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracers::{Answers, Tracers};
use tracing::{debug, info};
use tree::Cleanup;

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
    /// Lazy restore: the processes run as soon as their state is in, and
    /// a page server (a child of the keeper, which this implies) fills
    /// their private anonymous memory on first touch and in the
    /// background; see `memory::lazy`.
    pub lazy: Option<LazyOptions>,
}

#[derive(Debug, Clone)]
pub struct LazyOptions {
    /// Where the page server writes its status (`memory::lazy::LazyStatus`):
    /// outside the image, which is only ever read.
    pub status: PathBuf,
    /// Remove the status file once every page is in: a session restore's
    /// default file would otherwise pile up under /run. A failed server's
    /// file stays, saying why.
    pub remove_when_done: bool,
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
    /// A lazy restore's status file, when a page server runs.
    pub lazy_status: Option<PathBuf>,
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

fn raise_nofile(needed: u64) -> Result<()> {
    use crate::sys::process::{limit, set_limit};
    let nofile = libc::RLIMIT_NOFILE;
    // Unreadable, the limit counts as 0: the check below fails.
    let (_, max) = limit(nofile).unwrap_or((0, 0));
    if max < needed {
        return Err(RestoreError::Os {
            what: "the image needs more open files than RLIMIT_NOFILE allows",
            source: std::io::Error::from_raw_os_error(libc::EMFILE),
        });
    }
    let _ = set_limit(nofile, max, max);
    Ok(())
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

// One function over ~80 lines, on purpose: its locals are the restore's
// guards (the lock, the shared page, the release pipe's writer, `cleanup`)
// and their drop order is the abort path; each step it takes is a named
// function below.
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
    if opts.lazy.is_some() {
        memory::lazy::check_kernel()?;
    }
    validate::validate(
        &opts.dir,
        &snap,
        &reader,
        &opts.sys_roots,
        opts.on_behalf_of.as_ref(),
    )?;
    debug!(elapsed = ?t0.elapsed(), "image validated");
    // After validation: a caller refused there is told why, not that it
    // may not take the lock.
    let _one_at_a_time = if opts.pidns {
        None
    } else {
        lock::restore_lock()?
    };
    let plan = plan_tree(&snap, opts.pidns)?;
    debug!(elapsed = ?t0.elapsed(), "tree planned, saved pids free");
    let Objects {
        base_fd,
        shared: mut shared_objs,
        files: file_objs,
        reattached,
        proxy,
        keeper,
    } = open_objects(&snap, &reader, opts)?;
    debug!(elapsed = ?t0.elapsed(), files = snap.files.len(), "objects opened");
    let file_fds: Vec<RawFd> = file_objs.iter().map(|f| f.as_raw_fd()).collect();
    let candidates = gadget_candidates_of(&plan, &snap);
    let sysv_count = snap
        .shmem
        .iter()
        .filter(|o| matches!(o.kind, crate::memory::shmem::ShmemKind::Sysv(_)))
        .count();
    let shared =
        Shared::new(plan.nodes.len(), sysv_count).doing("mapping the restore sync page")?;
    let restorer_pid = std::process::id() as i32;
    let (release_r, release_w) = tree::release_pipe()?;
    let lazy_ctl = opts.lazy.as_ref().map(|_| lazy_socket()).transpose()?;
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
        lazy: match (&opts.lazy, &lazy_ctl) {
            (Some(l), Some((restorer_end, keeper_end))) => Some(node::LazySpec {
                reader: &reader,
                status: &l.status,
                remove_when_done: l.remove_when_done,
                keeper_end: keeper_end.as_raw_fd(),
                restorer_end: restorer_end.as_raw_fd(),
                started: t0,
            }),
            _ => None,
        },
    };

    let mut cleanup = Cleanup {
        shared: &shared,
        plan: &plan,
        root: None,
        pidns: opts.pidns,
        armed: true,
    };
    let root = keeper::spawn_root(&spec, &shared, opts.pidns, keeper, proxy.as_ref())?;
    // The keeper has its copies.
    drop(proxy);
    cleanup.root = Some(root);
    debug!(elapsed = ?t0.elapsed(), "restore root forked");
    // The tree needs none of them until the swap; the root, which outlives
    // us if we die, removes each one it is told of.
    shared_objs.create_sysv(&snap.shmem, &reader, &|id| shared.publish_sysv(id))?;
    let live = live_nodes(&plan, &snap);
    tree::await_stages(&shared, &plan, live.len() as u32)?;
    debug!(elapsed = ?t0.elapsed(), nodes = plan.nodes.len(), "tree built");

    let built = Built {
        snap: &snap,
        plan: &plan,
        shared: &shared,
        // Pids as we see them (they differ in a new pid namespace).
        outer: tree::outer_pids(&plan, &shared, &live, opts.pidns)?,
        live,
    };
    let steps = Steps {
        progress,
        go_on: &go_on,
        t0,
    };
    let lazy = opts.lazy.is_some();
    let targets = Targets {
        current: Creds::of_self().doing("reading the caller's credentials")?,
        shmem: (0..snap.shmem.len())
            .map(|i| shared_objs.target(i, restorer_pid, &snap.shmem))
            .collect(),
    };
    // The tracers live in this scope; on failure the tree is ended inside
    // it, before the scope waits for them.
    let serving = std::thread::scope(|s| {
        let tracers = Tracers::start(s, tracers::count(built.live.len()));
        let swapped = swap_all(
            &tracers,
            &built,
            &reader,
            &mut shared_objs,
            &targets,
            &steps,
            lazy,
        )
        .and_then(|(held, uffds)| {
            // Before the commit: the keeper takes them once it sees it.
            if let Some((restorer_end, _)) = &lazy_ctl {
                keeper::send_uffds(restorer_end.as_raw_fd(), &uffds)
                    .doing("handing the userfaultfds to the keeper")?;
            }
            Ok((held, !uffds.is_empty()))
        });
        let (held, serving) = match swapped {
            Ok(swapped) => swapped,
            Err(e) => {
                cleanup.abort();
                return Err(e);
            }
        };
        drop(lazy_ctl);
        rejoin_cgroups(&built);
        stop_again(&built);
        if let Err(e) = tree::release(&shared, &tracers, held, release_w) {
            cleanup.abort();
            return Err(e);
        }
        Ok(serving)
    })?;
    cleanup.armed = false;
    drive_vt_enter(&built, &reattached);
    let keeper = if keeper {
        Some(root)
    } else {
        // The restore root, our child, exits at DONE.
        crate::sys::process::reap(root);
        None
    };
    drop(file_objs);
    shared_objs.keep();
    let mut done = restored(&built, keeper, opts, t0);
    if serving {
        done.lazy_status = opts.lazy.as_ref().map(|l| l.status.clone());
    }
    Ok(done)
}

/// The socket pair a lazy restore hands the uffds to the keeper on:
/// (the restorer's end, the keeper's end).
fn lazy_socket() -> Result<(OwnedFd, OwnedFd)> {
    Ok(
        crate::sys::socket::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET)
            .doing("making the lazy restore's socket to the keeper")?,
    )
}

/// The nodes of the plan and the saved processes, for the steps after the
/// tree is built.
struct Built<'a> {
    snap: &'a Snapshot,
    plan: &'a Plan,
    shared: &'a Shared,
    /// The nodes of live processes (not zombies, not helpers).
    live: Vec<usize>,
    /// Each live node's pid as the restorer sees it.
    outer: HashMap<usize, i32>,
}

impl<'a> Built<'a> {
    /// Each live node with its saved process and outer pid.
    fn processes(&self) -> impl Iterator<Item = (usize, &'a ProcessImage, i32)> + '_ {
        self.live
            .iter()
            .filter_map(|&i| match self.plan.nodes[i].kind {
                NodeKind::Process(pi) => Some((i, &self.snap.processes[pi], self.outer[&i])),
                _ => None,
            })
    }
}

/// The caller's hooks: progress in bytes, and whether to go on.
struct Steps<'a> {
    progress: &'a dyn Fn(u64, u64),
    go_on: &'a dyn Fn(&'static str) -> Result<()>,
    t0: Instant,
}

/// The tree's shape: who forks whom with which pid, in which namespaces;
/// with the saved pids checked free (and the pid counter moved past them)
/// unless the tree goes into a new pid namespace.
fn plan_tree(snap: &Snapshot, pidns: bool) -> Result<Plan> {
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
    let pid_free = |pid: i32| pidns || !Path::new(&format!("/proc/{pid}")).exists();
    let mut plan = plan::plan(&ids, &pid_free)?;
    plan::namespace_flags(&mut plan, &|i| {
        let ns = snap.processes[i].namespaces.as_ref();
        (
            ns.filter(|n| n.net).map(|n| n.ids.1),
            ns.filter(|n| n.ipc).map(|n| n.ids.2),
        )
    });
    plan::pid_namespaces(&mut plan, &|i| snap.processes[i].ns_pids.clone());
    if !pidns {
        let thread_ids = snap
            .processes
            .iter()
            .flat_map(|p| p.threads.iter().skip(1).map(|t| t.tid));
        let wanted: Vec<i32> = plan.nodes.iter().map(|n| n.pid).chain(thread_ids).collect();
        // The counter first: while the check below waits for a zombie to
        // be reaped, processes started meanwhile (by anyone) must not take
        // a saved pid it already found free.
        lock::keep_pids_clear_of(&wanted);
        if let Some((pid, comm)) = lock::first_taken(&wanted) {
            return Err(RestoreError::PidTaken { pid, comm });
        }
    }
    for (pid, what) in &plan.foreign {
        debug!(pid, what = %what, "left in the restorer's session or group");
    }
    Ok(plan)
}

/// The image's objects, opened in the restorer before the tree is forked.
struct Objects {
    /// Every object's fd is at or above it, above every number the tasks use.
    base_fd: RawFd,
    /// Dropped on failure, after the tree is ended: SysV segments made for
    /// this restore go with it. Those are made once the restore root
    /// watches.
    shared: SharedObjects,
    /// Index i is `snap.files[i]`.
    files: Vec<OwnedFd>,
    /// Indices of the reattached cards that are live opens.
    reattached: Vec<usize>,
    /// The uevent proxy of the session's own network namespace.
    proxy: Option<Proxy>,
    /// Whether the restore root stays as a keeper.
    keeper: bool,
}

/// Open the shared objects and every file of the image, each as the first
/// saved process that holds it.
fn open_objects(snap: &Snapshot, reader: &ImageReader, opts: &RestoreOptions) -> Result<Objects> {
    let max_target = snap
        .processes
        .iter()
        .flat_map(|p| &p.fds)
        .map(|f| f.fd)
        .max()
        .unwrap_or(2);
    let base_fd: RawFd = (max_target + 1).max(3);
    raise_nofile(base_fd as u64 + snap.files.len() as u64 + 64)?;
    let shared = SharedObjects::create(&snap.shmem, reader)?;
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
    // A lazy restore's keeper holds the uffds and watches the page server.
    let keeper = opts.keeper || opts.pidns || uevent_net.is_some() || opts.lazy.is_some();
    if keeper && !opts.keeper && !opts.pidns {
        info!(
            "the image holds device event sockets: restoring under a keeper for the uevent proxy"
        );
    }
    let mut holders: Vec<Option<&Creds>> = vec![None; snap.files.len()];
    for p in &snap.processes {
        for f in &p.fds {
            holders[f.file].get_or_insert(&p.creds);
        }
    }
    let files::RestoredFiles { fds, reattached } = files::restore_all(
        &snap.files,
        &holders,
        &snap.pipes,
        reader,
        &shared,
        base_fd,
        uevent_net.as_ref(),
        &opts.sys_roots,
    )?;
    // Opened before the tree runs: real events from now on wait for it.
    let proxy = uevent_net
        .as_ref()
        .map(|net| Proxy::new(net, snap.detached.clone()))
        .transpose()?;
    Ok(Objects {
        base_fd,
        shared,
        files: fds,
        reattached,
        proxy,
        keeper,
    })
}

/// Per node, where its gadget may go (none for helpers).
fn gadget_candidates_of(plan: &Plan, snap: &Snapshot) -> Vec<Vec<u64>> {
    plan.nodes
        .iter()
        .map(|n| match n.kind {
            NodeKind::Process(i) => snap.processes[i]
                .mm
                .as_ref()
                .map(swap::gadget_candidates)
                .unwrap_or_default(),
            _ => Vec::new(),
        })
        .collect()
}

/// The nodes of processes that run (not zombies, not helpers).
fn live_nodes(plan: &Plan, snap: &Snapshot) -> Vec<usize> {
    plan.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.kind, NodeKind::Process(i) if !snap.processes[i].is_zombie()))
        .map(|(i, _)| i)
        .collect()
}

/// What every swap is checked against: the restorer's credentials and
/// where each shared memory object of the image is mapped from.
struct Targets {
    current: Creds,
    shmem: Vec<MapTarget>,
}

/// How long a tracer may take over one process's swap.
const SWAP_TIMEOUT: Duration = Duration::from_secs(30);

/// Seize every live node and swap the saved process in, on the tracers
/// (one process at a time each, the next to whichever answers first),
/// while worker threads fill the pages; the tasks each tracer holds and
/// the lazy mappings' uffds, or the first error.
fn swap_all<'s>(
    tracers: &Tracers<'s>,
    built: &Built<'s>,
    reader: &'s ImageReader,
    shared_objs: &mut SharedObjects,
    targets: &'s Targets,
    steps: &Steps<'_>,
    lazy: bool,
) -> Result<(Vec<tree::Held>, keeper::Uffds)> {
    let snap = built.snap;
    let mut held: Vec<tree::Held> = (0..tracers.len()).map(|_| Default::default()).collect();
    let mut uffds = Vec::new();
    let total_bytes: u64 = snap
        .processes
        .iter()
        .filter_map(|p| p.mm.as_ref())
        .flat_map(|mm| mm.page_chunks())
        .map(|c| c.raw_len as u64)
        .sum();
    let filled = std::sync::atomic::AtomicU64::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let swap_result = with_page_fillers(reader, workers, &filled, |fill| -> Result<()> {
        let answers = Answers::new();
        let give = |k: usize, (i, p, pid): (usize, &'s ProcessImage, i32)| {
            let gadget = built.shared.slot(i).gadget.load(Ordering::Acquire);
            tracers.give(k, &answers, move || {
                // Killed by the kernel if we die before the release: never
                // run with its address space half swapped in.
                ptrace::seize_exit_kill(pid)?;
                ptrace::interrupt(pid)?;
                swap::wait_event_stop(pid)?;
                let swapped = swap::swap(
                    pid,
                    gadget,
                    p,
                    &targets.shmem,
                    &targets.current,
                    lazy.then_some(reader),
                )?;
                Ok::<_, RestoreError>((i, pid, swapped))
            });
        };
        let mut todo = built.processes();
        let mut busy = 0;
        for (k, next) in (0..tracers.len()).zip(todo.by_ref()) {
            give(k, next);
            busy += 1;
        }
        while busy > 0 {
            let (k, answer) =
                answers.next(SWAP_TIMEOUT, || "a tracer to swap a process in".into())?;
            busy -= 1;
            let (i, pid, swapped) = answer?;
            for job in take_swapped(built, &mut held[k], &mut uffds, i, pid, swapped) {
                fill.send(job)
                    .expect("the fillers live until the swaps end");
            }
            (steps.progress)(filled.load(Ordering::Relaxed), total_bytes);
            (steps.go_on)("swapping in memory")?;
            if let Some(next) = todo.next() {
                give(k, next);
                busy += 1;
            }
        }
        // Every mapping exists: now seals may forbid new writable ones.
        shared_objs.seal(&snap.shmem)?;
        debug!(elapsed = ?steps.t0.elapsed(), "every process swapped in; pages still filling");
        Ok(())
    });
    debug!(elapsed = ?steps.t0.elapsed(), "pages filled");
    (steps.progress)(filled.load(Ordering::Relaxed), total_bytes);
    // The last chance: after this the tree is let go.
    swap_result.and_then(|()| (steps.go_on)("filling pages"))?;
    Ok((held, uffds))
}

/// Take what a tracer answered for node `i`, seized as `pid`: the tasks
/// it now holds (`held`), which of them issue an interrupted syscall
/// again, the process's uffd; and hand back its pages to fill.
fn take_swapped<'s>(
    built: &Built<'s>,
    held: &mut tree::Held,
    uffds: &mut keeper::Uffds,
    i: usize,
    pid: i32,
    swapped: swap::Swapped<'s>,
) -> Vec<FillJob<'s>> {
    let NodeKind::Process(pi) = built.plan.nodes[i].kind else {
        unreachable!("only processes are swapped")
    };
    let p = &built.snap.processes[pi];
    if let Some(uffd) = swapped.uffd {
        uffds.push((pi, pid, uffd));
    }
    // The first saved thread is the one seized as `pid`; the others were
    // made in order.
    let tids = std::iter::once(pid).chain(swapped.threads.iter().copied());
    held.reissuing.extend(
        tids.zip(&p.threads)
            .filter(|(_, t)| t.regs.reissues_syscall())
            .map(|(tid, _)| tid),
    );
    held.seized.push(pid);
    held.seized.extend(swapped.threads);
    swapped.fill
}

/// Back into their cgroups (a session's scope), while still stopped.
fn rejoin_cgroups(built: &Built<'_>) {
    for (_, p, pid) in built.processes() {
        if let Some(path) = &p.cgroup {
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
}

/// Processes that were in a job-control stop stop again as they start
/// running: the signal waits, queued, until they are let go.
fn stop_again(built: &Built<'_>) {
    for (_, p, pid) in built.processes() {
        if let Some(sig) = p.job_stop {
            let sig = crate::signals::restop_signal(sig, &p.sigactions);
            let _ = crate::sys::process::kill(pid, sig);
            debug!(pid, sig, "stopped again (job control)");
        }
    }
}

/// What the caller learns of the restored tree.
fn restored(
    built: &Built<'_>,
    keeper: Option<i32>,
    opts: &RestoreOptions,
    t0: Instant,
) -> Restored {
    let snap = built.snap;
    let pids: Vec<(i32, i32)> = built
        .live
        .iter()
        .map(|&i| (built.plan.nodes[i].pid, built.outer[&i]))
        .collect();
    let roots = snap
        .processes
        .iter()
        .filter(|p| !snap.processes.iter().any(|q| q.pid == p.ppid) && !p.is_zombie())
        .filter_map(|p| pids.iter().find(|(img, _)| *img == p.pid).map(|x| x.1))
        .collect();
    let elapsed = t0.elapsed();
    info!(dir = %opts.dir.display(), processes = pids.len(), ?elapsed, "restored");
    Restored {
        pids,
        roots,
        keeper,
        foreign: built.plan.foreign.clone(),
        elapsed,
        lazy_status: None,
    }
}

/// Reattach's last step (experimental): each process holding a card that
/// was reopened live gets its card's signal once, now that it runs with
/// its own handlers (an X server's VT switch handler).
fn drive_vt_enter(built: &Built<'_>, reattached: &[usize]) {
    let snap = built.snap;
    for (_, p, pid) in built.processes() {
        let card = p
            .fds
            .iter()
            .filter(|f| reattached.contains(&f.file))
            .find_map(|f| match &snap.files[f.file].kind {
                files::FileKind::Reattached(r) => Some(r),
                _ => None,
            });
        if let Some(card) = card {
            // Not fatal: the server runs, only without its screen back.
            if let Err(e) = crate::devices::reattach::signal_server(pid, card.signal_number()) {
                tracing::warn!(pid, error = %e, "could not drive the VT re-enter path");
            }
        }
    }
}
