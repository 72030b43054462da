//! Collecting and freezing the task set: the process trees under some root
//! pids, every thread of every process, held in ptrace stops.
//!
//! Freezing re-scans until no new task appears, so a fork racing with the
//! freeze is caught. When the set is exactly one cgroup's processes, the
//! cgroup v2 freezer stops them all at once first (`cgroup`). Dropping a
//! [`Frozen`] set lets every task go on as it was; so does the checkpointer
//! dying, because seized tasks are detached by the kernel when their tracer
//! exits.

use crate::cgroup;
use std::time::Duration;

use crate::procfs::{ProcDir, ProcfsError};
use crate::ptrace::{self, PtraceError, Stop};
use std::collections::{BTreeMap, BTreeSet};
use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("pid {pid} does not exist")]
    NoSuchProcess { pid: i32 },
    #[error(
        "pid {pid} is this checkpointer or one of its ancestors; it cannot be saved by itself"
    )]
    SelfInSet { pid: i32 },
    #[error(transparent)]
    Procfs(#[from] ProcfsError),
    #[error("stopping tid {tid}")]
    Stop { tid: i32, source: PtraceError },
    #[error("tid {tid} did not stop within {} s of being interrupted (state {state}, waiting in {wchan})", STOP_TIMEOUT.as_secs())]
    NoStop {
        tid: i32,
        state: char,
        wchan: String,
    },
    #[error(
        "pid {pid} is in a frozen cgroup ({cgroup}): it could not run our calls; thaw it first"
    )]
    CgroupFrozen { pid: i32, cgroup: String },
    #[error("tid {tid} of pid {pid} is traced by pid {tracer} ({comm}): a process under a debugger or tracer cannot be saved; detach it first")]
    Traced {
        pid: i32,
        tid: i32,
        tracer: i32,
        comm: String,
    },
}

/// How long a seized task may take to reach its stop.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The pid tracing `tid`, when another process does.
fn tracer_of(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let tracer: i32 = status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()?;
    (tracer != 0 && tracer != std::process::id() as i32).then_some(tracer)
}

/// Refuse a set with a task traced by another process, before anything is
/// frozen: its tracer would see our stops, and we could not seize it.
fn refuse_traced(found: &BTreeMap<i32, (i32, Vec<i32>)>) -> Result<()> {
    for (&pid, (_, threads)) in found {
        for &tid in threads {
            if let Some(tracer) = tracer_of(tid) {
                let comm = std::fs::read_to_string(format!("/proc/{tracer}/comm"))
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_default();
                return Err(FreezeError::Traced {
                    pid,
                    tid,
                    tracer,
                    comm,
                });
            }
        }
    }
    Ok(())
}

type Result<T> = std::result::Result<T, FreezeError>;

/// One process of the set, as found when it was frozen.
#[derive(Debug, Clone)]
pub struct FrozenProcess {
    pub pid: i32,
    pub ppid: i32,
    pub threads: Vec<i32>,
    pub zombie: bool,
    /// The signal of the job-control stop (`SIGTSTP`, `SIGSTOP`, …) it was
    /// in when we froze it, which it goes back to when let go.
    pub job_stop: Option<i32>,
}

/// The frozen task set. Dropping it thaws every task.
#[derive(Debug)]
pub struct Frozen {
    pub roots: Vec<i32>,
    pub processes: BTreeMap<i32, FrozenProcess>,
    /// The cgroup frozen first, when the set is exactly its processes.
    pub cgroup: Option<std::path::PathBuf>,
    seized: Vec<i32>,
    released: bool,
}

fn is_zombie(pid: i32) -> Result<bool> {
    match ProcDir::new(pid).stat() {
        Ok(stat) => Ok(stat.state == 'Z' || stat.state == 'X'),
        Err(ProcfsError::ProcessGone { .. }) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Pids of the trees under `roots` (roots included), as /proc shows them
/// now, without the subtrees under `prune` (a pruned pid and its
/// descendants are not part of the set; its parent is).
fn scan(roots: &[i32], prune: &[i32]) -> Result<BTreeMap<i32, (i32, Vec<i32>)>> {
    let mut found = BTreeMap::new();
    let mut todo: Vec<(i32, i32)> = Vec::new();
    // A root that ended since it was named (a short-lived client of a
    // session's bus) is no longer part of the set; the set is gone only
    // when every root is.
    for &root in roots {
        match ProcDir::new(root).stat() {
            Ok(stat) => todo.push((root, stat.ppid)),
            Err(ProcfsError::ProcessGone { .. }) => debug!(root, "a root ended before the freeze"),
            Err(e) => return Err(e.into()),
        }
    }
    if todo.is_empty() {
        return Err(FreezeError::NoSuchProcess {
            pid: roots.first().copied().unwrap_or(0),
        });
    }
    while let Some((pid, ppid)) = todo.pop() {
        if found.contains_key(&pid) {
            continue;
        }
        let dir = ProcDir::new(pid);
        let (threads, children) = match (dir.tasks(), dir.children()) {
            (Ok(t), Ok(c)) => (t, c),
            (Err(ProcfsError::ProcessGone { .. }), _)
            | (_, Err(ProcfsError::ProcessGone { .. })) => {
                // Exited (and reaped) while we looked: not part of the set.
                continue;
            }
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        for child in children.into_iter().filter(|c| !prune.contains(c)) {
            todo.push((child, pid));
        }
        found.insert(pid, (ppid, threads));
    }
    Ok(found)
}

/// How a seized task came to its stop.
enum Seized {
    /// Held by our interrupt.
    Running,
    /// In a job-control stop, by this signal: a seized task in group stop
    /// reports it with its stop event (else `SIGTRAP`).
    JobStopped(i32),
    Gone,
}

/// Stop one seized task; a signal arriving first is delivered, not lost.
/// `first`: a state it already reported (a job-stopped task traps as it is
/// seized).
fn wait_for_stop(tid: i32, first: Option<Stop>) -> Result<Seized> {
    let mut next = first;
    let deadline = std::time::Instant::now() + STOP_TIMEOUT;
    let err = |source| FreezeError::Stop { tid, source };
    loop {
        let stop = match next.take() {
            Some(stop) => stop,
            None => match ptrace::wait_until(tid, deadline).map_err(err)? {
                Some((stop, _)) => stop,
                None => {
                    let stat = ProcDir::new(tid).stat().ok();
                    let wchan =
                        std::fs::read_to_string(format!("/proc/{tid}/wchan")).unwrap_or_default();
                    return Err(FreezeError::NoStop {
                        tid,
                        state: stat.map_or('?', |s| s.state),
                        wchan: if wchan.is_empty() { "?".into() } else { wchan },
                    });
                }
            },
        };
        match stop {
            Stop::Event { sig } if crate::signals::is_job_stop(sig) => {
                return Ok(Seized::JobStopped(sig))
            }
            Stop::Event { .. } => return Ok(Seized::Running),
            Stop::Exited(_) | Stop::Killed(_) => return Ok(Seized::Gone),
            // Any ptrace stop clears a pending interrupt ("any trap
            // clears pending STOP trap", kernel/signal.c): once the signal
            // is passed on, the task must be interrupted again, or it runs
            // on untraced by any stop (a busy timer's SIGALRM did that).
            Stop::Signal(sig) => {
                ptrace::cont(tid, sig).map_err(err)?;
                ptrace::interrupt(tid).map_err(err)?;
            }
            Stop::Syscall => {
                ptrace::cont(tid, 0).map_err(err)?;
                ptrace::interrupt(tid).map_err(err)?;
            }
        }
    }
}

/// This process and its ancestors, up to (not including) pid 1.
fn my_ancestors() -> BTreeSet<i32> {
    let mut ancestors = BTreeSet::new();
    let mut p = std::process::id() as i32;
    while p > 1 {
        ancestors.insert(p);
        p = ProcDir::new(p).stat().map(|s| s.ppid).unwrap_or(0);
    }
    ancestors
}

impl Frozen {
    /// Freeze the trees under `roots` with ptrace. Tasks in a job-control
    /// stop are seized too: they run our remote calls, and go back to
    /// their stop when let go (the kernel restores a group stop still in
    /// effect at detach).
    pub fn freeze(roots: &[i32]) -> Result<Self> {
        Self::freeze_without(roots, &[])
    }

    /// [`Frozen::freeze`] without the subtrees under `prune`: they run on,
    /// and their parents are frozen without them.
    pub fn freeze_without(roots: &[i32], prune: &[i32]) -> Result<Self> {
        let ancestors = my_ancestors();
        let mut frozen = Frozen {
            roots: roots.to_vec(),
            processes: BTreeMap::new(),
            cgroup: None,
            seized: Vec::new(),
            released: false,
        };
        let mut seized: BTreeSet<i32> = BTreeSet::new();
        let mut stopped: BTreeMap<i32, i32> = BTreeMap::new();
        // Held until every task is in its ptrace stop, then thawed.
        let mut cgroup_freeze = None;
        let mut first_scan = true;
        loop {
            let found = scan(roots, prune)?;
            // Before any freezing: a cgroup holding us would freeze us too.
            if let Some(&pid) = found.keys().find(|p| ancestors.contains(p)) {
                return Err(FreezeError::SelfInSet { pid });
            }
            if std::mem::take(&mut first_scan) {
                cgroup_freeze = frozen.first_look(&found)?;
            }
            let new = frozen.seize_new(&found, &mut seized)?;
            for (pid, tid, trapped) in new.iter().cloned() {
                match wait_for_stop(tid, trapped)? {
                    Seized::Running => {}
                    Seized::JobStopped(sig) => {
                        if tid == pid {
                            stopped.insert(pid, sig);
                        }
                    }
                    Seized::Gone => {
                        seized.remove(&tid);
                        frozen.seized.retain(|&t| t != tid);
                    }
                }
            }
            if new.is_empty() {
                for (pid, (ppid, threads)) in found {
                    let zombie = threads.iter().all(|t| !seized.contains(t));
                    frozen.processes.insert(
                        pid,
                        FrozenProcess {
                            pid,
                            ppid,
                            threads,
                            zombie,
                            job_stop: stopped.get(&pid).copied(),
                        },
                    );
                }
                debug!(
                    processes = frozen.processes.len(),
                    tasks = frozen.seized.len(),
                    cgroup = ?frozen.cgroup,
                    "frozen"
                );
                // Every task is in its ptrace stop: the cgroup may thaw.
                drop(cgroup_freeze);
                return Ok(frozen);
            }
        }
    }

    /// The first scan's set, before anything is stopped: refused when a
    /// task is traced already or in a frozen cgroup. When the set is
    /// exactly a cgroup's processes, that cgroup is frozen (the guard
    /// returned, and the cgroup noted).
    fn first_look(
        &mut self,
        found: &BTreeMap<i32, (i32, Vec<i32>)>,
    ) -> Result<Option<cgroup::CgroupFreeze>> {
        refuse_traced(found)?;
        for &pid in found.keys() {
            if let Some(cgroup) = cgroup::frozen(pid) {
                return Err(FreezeError::CgroupFrozen { pid, cgroup });
            }
        }
        let pids: BTreeSet<i32> = found.keys().copied().collect();
        let Some(dir) = cgroup::exactly(&pids) else {
            return Ok(None);
        };
        match cgroup::CgroupFreeze::freeze(&dir) {
            Ok(guard) => {
                self.cgroup = Some(dir);
                Ok(Some(guard))
            }
            Err(err) => {
                debug!(cgroup = %dir.display(), %err, "cgroup freezer not used");
                Ok(None)
            }
        }
    }

    /// Seize and interrupt every live task of `found` not `seized` yet:
    /// (pid, tid, the stop it reported at once, if any) of each.
    fn seize_new(
        &mut self,
        found: &BTreeMap<i32, (i32, Vec<i32>)>,
        seized: &mut BTreeSet<i32>,
    ) -> Result<Vec<(i32, i32, Option<Stop>)>> {
        let mut new = Vec::new();
        for (&pid, (_, threads)) in found {
            for &tid in threads {
                if seized.contains(&tid) || is_zombie(tid)? {
                    continue;
                }
                match ptrace::seize(tid) {
                    Ok(()) => {}
                    Err(PtraceError::Gone { .. }) => continue,
                    Err(source) => {
                        // A tracer that attached since the first look.
                        refuse_traced(found)?;
                        return Err(FreezeError::Stop { tid, source });
                    }
                }
                seized.insert(tid);
                self.seized.push(tid);
                crate::faults::point("freeze: seized a task");
                // Seizing a task in a job-control stop makes it trap
                // at once (the seize returns once it has): no
                // interrupt then, or a second trap would wait for the
                // first resume of our remote calls.
                let trapped = ptrace::try_wait(tid)
                    .map_err(|source| FreezeError::Stop { tid, source })?
                    .map(|(stop, _)| stop);
                // A signal reported first is passed on below, and the
                // task interrupted again after it.
                let held = matches!(
                    trapped,
                    Some(Stop::Event { .. } | Stop::Exited(_) | Stop::Killed(_))
                );
                if !held {
                    ptrace::interrupt(tid).map_err(|source| FreezeError::Stop { tid, source })?;
                }
                new.push((pid, tid, trapped));
            }
        }
        Ok(new)
    }

    /// Let every task run again, as it was.
    pub fn thaw(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        for &tid in &self.seized {
            // The task injected into already did this for itself.
            if let Some(again) = ptrace::get_regs(tid)
                .ok()
                .and_then(|r| r.sleep_restarted_in_place())
            {
                if let Err(err) = ptrace::set_regs(tid, &again) {
                    debug!(tid, %err, "issuing an interrupted sleep again");
                }
            }
            if let Err(err) = ptrace::detach(tid) {
                debug!(tid, %err, "detach");
            }
        }
    }

    /// End every process of the set (after its image is committed).
    pub fn kill_all(mut self) {
        self.released = true;
        // The first process of a pid namespace exits only once every other
        // task of it is reaped, and ours are reaped through us: so tasks of
        // the deepest namespaces first, each namespace's pid 1 after its
        // other tasks, threads before their leaders.
        let order_key = |tid: &i32| {
            let ns_pid = crate::procfs::ProcDir::new(*tid)
                .status()
                .map(|s| s.ns_pid)
                .unwrap_or_default();
            (
                std::cmp::Reverse(ns_pid.len()),
                ns_pid.len() > 1 && ns_pid.last() == Some(&1),
                self.processes.contains_key(tid),
            )
        };
        let mut order: Vec<i32> = self.seized.to_vec();
        order.sort_by_cached_key(order_key);
        for pid in self.processes.keys() {
            // A pid we froze and still trace.
            let _ = crate::sys::process::kill(*pid, libc::SIGKILL);
        }
        // Consume the tracer's exit notifications, so the real parents can
        // reap their children, and return only once every task has exited:
        // a stop reported before the kill landed is not its exit, and a
        // restore right after must find the pids free, not still dying.
        // A thread group leader is reported only after its other threads
        // were waited for, and a pid namespace's last live task only after
        // the others of that namespace (its own threads among them): so
        // no task is waited for alone; each round takes what is ready.
        let deadline = std::time::Instant::now() + KILL_DEADLINE;
        let mut left = order;
        let mut nap = Duration::from_micros(10);
        while !left.is_empty() {
            let before = left.len();
            left.retain(|&tid| loop {
                match ptrace::try_wait(tid) {
                    Ok(Some((ptrace::Stop::Exited(_) | ptrace::Stop::Killed(_), _))) => {
                        break false;
                    }
                    // A stop reported before the kill landed: not its exit.
                    Ok(Some(_)) => continue,
                    Ok(None) => break true,
                    // Reaped already (not ours to wait for any more).
                    Err(_) => break false,
                }
            });
            if left.len() < before {
                nap = Duration::from_micros(10);
                continue;
            }
            if std::time::Instant::now() >= deadline {
                tracing::error!(tids = ?left, "tasks ended with the session did not exit in time");
                return;
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(2));
        }
    }
}

/// How long `kill_all` waits for the killed tasks to exit.
const KILL_DEADLINE: Duration = Duration::from_secs(60);

impl Drop for Frozen {
    fn drop(&mut self) {
        self.release();
    }
}

/// Used by `check`: every pid of the trees under `roots`, without freezing.
pub fn list_tree(roots: &[i32]) -> Result<Vec<i32>> {
    list_tree_without(roots, &[])
}

/// Every pid of the trees under `roots` but the subtrees under `prune`,
/// without freezing.
pub fn list_tree_without(roots: &[i32], prune: &[i32]) -> Result<Vec<i32>> {
    Ok(scan(roots, prune)?.into_keys().collect())
}
