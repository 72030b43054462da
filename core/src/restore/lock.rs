//! Taking the saved pids: one such restore at a time on a machine (the
//! lock), the pid counter moved past them, and who holds a pid that is
//! not free.

use super::error::{RestoreError, Result};
use crate::procfs;
use crate::sys;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::debug;

/// Restores that take their saved pids run one at a time on a machine:
/// each moves the pid counter past its pids and then forks with them, and
/// another one's counter move (or its own helpers' pids) could land among
/// them (EEXIST at a fork). Held until the restore returns (or its
/// process ends). In /run itself, root's alone: in the world-writable
/// /run/lock any user could make the file first and hold it.
pub(super) const RESTORE_LOCK: &str = "/run/hiber-restore.lock";

/// How long a restore waits for another one to finish.
pub(super) const RESTORE_LOCK_WAIT: Duration = Duration::from_secs(120);

pub(super) fn restore_lock() -> Result<Option<std::fs::File>> {
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
    loop {
        // The whole file (from 0, to its end) for writing, not waiting.
        let e = match sys::lock::set_record_lock(
            file.as_raw_fd(),
            libc::F_SETLK,
            libc::F_WRLCK,
            0,
            0,
        ) {
            Ok(()) => return Ok(Some(file)),
            Err(e) => e,
        };
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

/// Pids the kernel may hand out after the counter is placed before one of
/// the saved pids could come next: the restorer's own threads (tracers,
/// page fillers) and processes, and whatever else runs meanwhile.
const CLEAR_RUN: i32 = 1024;
/// Where the kernel starts again after the counter wraps (RESERVED_PIDS).
const FIRST_AFTER_WRAP: i32 = 300;

/// Place the pid counter so that the next [`CLEAR_RUN`] pids handed out
/// without a choice (the restore root, helper threads and processes,
/// anything else on the machine) are none of `wanted`, the saved pids
/// still to be created (clone3 with one taken fails with EEXIST). Left
/// where it is when that already holds.
pub(super) fn keep_pids_clear_of(wanted: &[i32]) {
    const LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";
    let read =
        |path: &str| -> Option<i32> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let (Some(last), Some(pid_max)) = (read(LAST_PID), read("/proc/sys/kernel/pid_max")) else {
        return;
    };
    let Some(start) = clear_start(wanted, last, pid_max) else {
        return;
    };
    if let Err(e) = std::fs::write(LAST_PID, start.to_string()) {
        tracing::warn!(error = %e, start, "could not move the pid counter clear of the saved pids");
    }
}

/// Where to put the pid counter (None: where it is, `last`, is clear):
/// after the highest saved pid when a run of [`CLEAR_RUN`] fits below
/// `pid_max`, else (the saved pids reach so high that the counter would
/// wrap into them) before the first gap of that many among them.
fn clear_start(wanted: &[i32], last: i32, pid_max: i32) -> Option<i32> {
    let mut sorted: Vec<i32> = wanted.to_vec();
    sorted.sort_unstable();
    // The numbers handed out after `from`, wrapping as the kernel does.
    let clear_after = |from: i32| {
        let end = from + CLEAR_RUN;
        let hit = |lo: i32, hi: i32| sorted.iter().any(|&p| p > lo && p <= hi);
        if end < pid_max {
            !hit(from, end)
        } else {
            !hit(from, pid_max) && !hit(FIRST_AFTER_WRAP - 1, FIRST_AFTER_WRAP - 1 + end - pid_max)
        }
    };
    if clear_after(last) {
        return None;
    }
    let highest = *sorted.last()?;
    if clear_after(highest) {
        return Some(highest);
    }
    let mut below = FIRST_AFTER_WRAP - 1;
    for &p in sorted.iter().filter(|&&p| p >= FIRST_AFTER_WRAP) {
        if p - below > CLEAR_RUN {
            return Some(below);
        }
        below = p;
    }
    // No gap that wide: past the highest still beats a random place.
    Some(highest)
}

/// The first of `pids` someone holds, and who. A zombie (the saved
/// process itself, just ended by `checkpoint --stop`, not yet reaped by
/// whoever adopted it) is given a moment to go. A number no process has
/// can still be taken: as the process group or session of living
/// processes (its leader gone), the kernel keeps it, and a fork with it
/// fails with EEXIST. Those are looked for in one pass over /proc for
/// every pid at once: a pass per pid costs a read of every process's
/// stat each (a tree of 50 on a machine of 100 processes: ~100 ms).
pub(super) fn first_taken(pids: &[i32]) -> Option<(i32, String)> {
    const REAP_GRACE: Duration = Duration::from_secs(3);
    let until = Instant::now() + REAP_GRACE;
    for &pid in pids {
        while let Some(comm) = pid_comm(pid) {
            let state = procfs::ProcDir::new(pid).stat().ok().map(|s| s.state);
            if !matches!(state, Some('Z' | 'X')) {
                return Some((pid, format!("a running process ({comm})")));
            }
            if Instant::now() > until {
                return Some((pid, format!("a zombie ({comm}) its parent has not reaped")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let wanted: std::collections::HashSet<i32> = pids.iter().copied().collect();
    group_or_session_of(&wanted)
}

/// A living process whose process group or session is one of `ids` (its
/// leader gone): the id, and the holder in words.
pub(super) fn group_or_session_of(ids: &std::collections::HashSet<i32>) -> Option<(i32, String)> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = procfs::ProcDir::new(pid).stat().ok()?;
        let (what, id) = if ids.contains(&stat.pgrp) {
            ("process group", stat.pgrp)
        } else if ids.contains(&stat.session) {
            ("session", stat.session)
        } else {
            return None;
        };
        Some((
            id,
            format!(
                "the {what} of pid {pid} ({}), whose leader is gone",
                stat.comm
            ),
        ))
    })
}

/// Who holds the id `tid` in the restorer's pid namespace, in words
/// (for an error): a task, a process group or session, or nobody here
/// (then it is taken in a nested namespace).
pub(super) fn holder_of(tid: i32) -> String {
    if let Ok(s) = procfs::ProcDir::new(tid).status() {
        return format!(
            "by task {tid} ({}) of thread group {}, state {}",
            s.name, s.tgid, s.state
        );
    }
    match group_or_session_of(&std::iter::once(tid).collect()) {
        Some((_, what)) => format!("as {what}"),
        None => "by nothing in the restorer's pid namespace: in a nested one".into(),
    }
}

pub(super) fn pid_comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_counter_is_placed_clear_of_the_saved_pids() {
        // Far below them all, or above them all with room: left alone.
        assert_eq!(clear_start(&[5000, 5001], 6000, 32768), None);
        // Below them, about to hand out one: after the highest.
        assert_eq!(clear_start(&[5000, 5001], 4990, 32768), Some(5001));
        // The highest so high that the counter would wrap into the low
        // ones: before the first gap of CLEAR_RUN among them.
        let wanted = [400, 900, 3000, 32760];
        assert_eq!(clear_start(&wanted, 32700, 32768), Some(900));
        // Where it is, wrapping past the end, it would meet 400.
        assert_eq!(clear_start(&wanted, 32761, 32768), Some(900));
        // A counter already in that gap stays.
        assert_eq!(clear_start(&wanted, 1000, 32768), None);
    }
}
