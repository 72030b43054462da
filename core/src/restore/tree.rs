//! The built tree as the restorer sees it: what to end on an abort, its
//! stages awaited, its pids from outside, and its release.

use super::error::{RestoreError, Result};
use super::node::{self, Shared};
use super::plan::Plan;
use super::tracers::{Answers, Tracers};
use crate::procfs;
use crate::ptrace;
use crate::sys;
use crate::sys::wrap::WrapIoResult;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(super) const STAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the restorer started, so an abort can end exactly that.
pub(super) struct Cleanup<'a> {
    pub shared: &'a Shared,
    pub plan: &'a Plan,
    pub root: Option<i32>,
    pub pidns: bool,
    pub armed: bool,
}

impl Cleanup<'_> {
    fn kill_all(&mut self) {
        self.shared.set_stage(node::STAGE_ABORT);
        if self.pidns {
            // Killing the namespace's init ends everything inside it.
            if let Some(root) = self.root {
                // The keeper we created.
                let _ = sys::process::kill(root, libc::SIGKILL);
            }
        } else {
            for i in 0..self.plan.nodes.len() {
                let pid = self.shared.slot(i).pid.load(Ordering::Acquire);
                if pid > 0 {
                    // A process that recorded itself as ours.
                    let _ = sys::process::kill(pid, libc::SIGKILL);
                }
            }
            if let Some(root) = self.root {
                // The restore root we forked.
                let _ = sys::process::kill(root, libc::SIGKILL);
            }
        }
        if let Some(root) = self.root {
            sys::process::reap_any_kind(root);
        }
    }
}

impl Cleanup<'_> {
    /// End the tree now, once. Inside the tracers' scope, before it waits
    /// for them: a tracer may be waiting on a task that only its death
    /// lets go.
    pub fn abort(&mut self) {
        if self.armed {
            self.armed = false;
            self.kill_all();
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

/// A pipe whose write end only the restorer keeps: the restore root's way
/// to learn it is gone, whatever way it went.
pub(super) fn release_pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    Ok(sys::pipe::pipe().doing("making the restore's release pipe")?)
}

/// Let every swapped task go, and commit. Each tracer lets its own tasks
/// go (ptrace is per thread), all of them at once.
///
/// Until the first detach, a restorer that dies takes everything with it
/// (nodes by their parent-death signal, seized tasks by EXITKILL). The
/// detaches themselves are one PTRACE_DETACH each, back to back on each
/// tracer, and the stage says RELEASE meanwhile: a restorer killed among
/// them leaves the tasks detached so far running (complete: their memory
/// is all in and the state is theirs) and the others killed by the
/// kernel; the restore root, woken by the release pipe, kills the whole
/// tree by pid.
/// What remains is that window: a task detached before the kill runs
/// until the root's SIGKILL lands (the rest of the detach loop, about a
/// syscall per thread, then the root's wake-up), whole and correct but
/// able to act (write a line, send a message) that a later restore of the
/// same image repeats. Closing it would need the tasks held in the kernel
/// across the detaches (a frozen cgroup v2 they leave only after the
/// commit, thawed by the root if the restorer dies after it). A death
/// after the stage says DONE is a committed restore: the tree is the
/// caller's.
///
/// Before that, every task that was waiting in a syscall is let into it
/// again (`reissuing`), still traced: otherwise it would be released just
/// before the call, and a signal sent right after the restore would run
/// its handler there and then leave the task waiting in the call, where
/// the original would have been interrupted (a program that waits in
/// `pause()` for a handler's signal would miss it). This runs one
/// instruction, the `syscall`, after every page is in: no program code
/// runs before the commit. A signal already pending stops the task at its
/// delivery first; it is delivered at the detach.
pub(super) fn release<'s>(
    shared: &Shared,
    tracers: &Tracers<'s>,
    held: Vec<Held>,
    release_w: std::os::fd::OwnedFd,
) -> Result<()> {
    let entered = Answers::new();
    for (k, h) in held.iter().enumerate() {
        let reissuing = h.reissuing.clone();
        tracers.give(k, &entered, move || -> Result<Vec<(i32, i32)>> {
            let mut delivering = Vec::new();
            for tid in reissuing {
                if let Some(sig) = enter_syscall(tid)? {
                    delivering.push((tid, sig));
                }
            }
            Ok(delivering)
        });
    }
    let mut delivering = HashMap::new();
    for _ in &held {
        let (_, found) = entered.next(RELEASE_TIMEOUT, || {
            "the tracers to let interrupted syscalls be entered again".into()
        })?;
        delivering.extend(found?);
    }
    shared.set_stage(node::STAGE_RELEASE);
    let detached = Answers::new();
    let tracer_count = held.len();
    for (k, h) in held.into_iter().enumerate() {
        let signals: Vec<i32> = h
            .seized
            .iter()
            .map(|pid| delivering.get(pid).copied().unwrap_or(0))
            .collect();
        tracers.give(k, &detached, move || -> Result<()> {
            for (pid, sig) in h.seized.into_iter().zip(signals) {
                ptrace::detach_with_signal(pid, sig)?;
            }
            Ok(())
        });
    }
    for _ in 0..tracer_count {
        detached
            .next(RELEASE_TIMEOUT, || {
                "the tracers to detach their tasks".into()
            })?
            .1?;
    }
    shared.set_stage(node::STAGE_DONE);
    // The commit: the root stops watching and goes on as keeper or exits.
    drop(release_w);
    Ok(())
}

/// How long the release waits for each tracer's part: a syscall entered
/// again takes at most [`enter_syscall`]'s own limit per task.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// The tasks one tracer holds once its swaps are done: every one it
/// seized (to detach at the release) and those of them that issue an
/// interrupted syscall again.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub seized: Vec<i32>,
    pub reissuing: Vec<i32>,
}

/// Run traced task `tid` to the entry of the syscall its registers issue
/// again; the signal it stopped to take first, if one was pending.
fn enter_syscall(tid: i32) -> Result<Option<i32>> {
    const ENTER_TIMEOUT: Duration = Duration::from_secs(5);
    let deadline = Instant::now() + ENTER_TIMEOUT;
    ptrace::resume_to_syscall(tid)?;
    loop {
        match ptrace::wait_until(tid, deadline)? {
            Some((ptrace::Stop::Syscall, _)) => return Ok(None),
            Some((ptrace::Stop::Signal(sig), _)) => return Ok(Some(sig)),
            // An interrupt left over from the swap: consumed, go on.
            Some((ptrace::Stop::Event { .. }, _)) => ptrace::resume_to_syscall(tid)?,
            Some((ptrace::Stop::Exited(_) | ptrace::Stop::Killed(_), _)) => {
                return Err(ptrace::PtraceError::Exited {
                    tid,
                    during: "entering its interrupted syscall again",
                }
                .into())
            }
            None => {
                return Err(RestoreError::Timeout {
                    stage: "entering interrupted syscalls again",
                    secs: ENTER_TIMEOUT.as_secs(),
                })
            }
        }
    }
}

/// Map each live node to its pid as the restorer sees it.
pub(super) fn outer_pids(
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

/// Wait for every node to be born, grouped and (the live ones) ready,
/// moving the tree to each next stage; a node's failure or a stage not
/// reached in time is the restore's error.
pub(super) fn await_stages(shared: &Shared, plan: &Plan, live: u32) -> Result<()> {
    let total = plan.nodes.len() as u32;
    let area = shared.area();
    for (counter, target, stage, next) in [
        (area.born, total, "born", node::STAGE_GROUPS),
        (area.grouped, total, "grouped", node::STAGE_SETUP),
        (area.ready, live, "ready", node::STAGE_SETUP),
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
        tracing::debug!(stage, "every node reached the stage");
        shared.set_stage(next);
    }
    Ok(())
}
