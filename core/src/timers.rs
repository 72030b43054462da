//! Interval timers (`setitimer`, `alarm`) and POSIX timers (`timer_create`)
//! of a process: their time left and period, and for POSIX timers their id,
//! clock and notification. Read and set from inside with remote calls;
//! time left counts from the restore.

use crate::procmem::ProcMem;
use crate::remote::{RemoteError, RemoteTask, Scratch};
use serde::{Deserialize, Serialize};

/// Scratch offset of the structures exchanged with the kernel.
const TIMER_OFF: usize = 12288 + 1024;
const ID_OFF: usize = 12288 + 1024 + 128;

/// (interval, value) as (seconds, sub-second) pairs: microseconds for
/// itimers, nanoseconds for POSIX timers.
pub type Spec = [(i64, i64); 2];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosixTimer {
    pub id: i32,
    pub clockid: i32,
    pub signo: i32,
    /// `sigev_value` as the program gave it.
    pub value: u64,
    /// `SIGEV_SIGNAL` (0), `SIGEV_NONE` (1), with `SIGEV_THREAD_ID` (4) set
    /// when the signal goes to thread `target`.
    pub notify: i32,
    pub target: i32,
    pub spec: Spec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timers {
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF (only those armed).
    pub itimers: Vec<(i32, Spec)>,
    pub posix: Vec<PosixTimer>,
}

fn words(raw: &[u8]) -> Spec {
    let w = |i: usize| i64::from_ne_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    [(w(0), w(1)), (w(2), w(3))]
}

fn bytes(spec: &Spec) -> Vec<u8> {
    [spec[0].0, spec[0].1, spec[1].0, spec[1].1]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

/// The POSIX timers /proc/PID/timers lists, without their times.
fn listed(pid: i32) -> Vec<PosixTimer> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/timers")).unwrap_or_default();
    let mut out = Vec::new();
    let mut cur: Option<PosixTimer> = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "ID" => {
                out.extend(cur.take());
                cur = v.parse().ok().map(|id| PosixTimer {
                    id,
                    clockid: 0,
                    signo: 0,
                    value: 0,
                    notify: 0,
                    target: 0,
                    spec: [(0, 0); 2],
                });
            }
            "signal" => {
                if let (Some(t), Some((s, val))) = (cur.as_mut(), v.split_once('/')) {
                    t.signo = s.parse().unwrap_or(0);
                    t.value = u64::from_str_radix(val, 16).unwrap_or(0);
                }
            }
            "notify" => {
                if let (Some(t), Some((how, who))) = (cur.as_mut(), v.split_once('/')) {
                    t.notify = if how == "none" {
                        libc::SIGEV_NONE
                    } else {
                        libc::SIGEV_SIGNAL
                    };
                    if let Some(tid) = who.strip_prefix("tid.") {
                        t.notify |= libc::SIGEV_THREAD_ID;
                        t.target = tid.parse().unwrap_or(0);
                    }
                }
            }
            "ClockID" => {
                if let Some(t) = cur.as_mut() {
                    t.clockid = v.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    out.extend(cur);
    out
}

/// Read the timers of `pid` through `task`, one of its threads.
pub fn checkpoint(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    pid: i32,
) -> Result<Timers, RemoteError> {
    let mut timers = Timers::default();
    let addr = scratch.addr + TIMER_OFF as u64;
    for which in [libc::ITIMER_REAL, libc::ITIMER_VIRTUAL, libc::ITIMER_PROF] {
        task.syscall(
            "getitimer",
            libc::SYS_getitimer,
            [which as u64, addr, 0, 0, 0, 0],
        )?;
        let mut raw = [0u8; 32];
        scratch.read(mem, TIMER_OFF, &mut raw)?;
        let spec = words(&raw);
        if spec[1] != (0, 0) {
            timers.itimers.push((which, spec));
        }
    }
    for mut t in listed(pid) {
        task.syscall(
            "timer_gettime",
            libc::SYS_timer_gettime,
            [t.id as u64, addr, 0, 0, 0, 0],
        )?;
        let mut raw = [0u8; 32];
        scratch.read(mem, TIMER_OFF, &mut raw)?;
        t.spec = words(&raw);
        timers.posix.push(t);
    }
    Ok(timers)
}

/// Set `timers` in the process of `task`, POSIX timers under their ids.
pub fn restore(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    timers: &Timers,
) -> Result<(), RemoteError> {
    for (which, spec) in &timers.itimers {
        let addr = scratch.write(mem, TIMER_OFF, &bytes(spec))?;
        task.syscall(
            "setitimer",
            libc::SYS_setitimer,
            [*which as u64, addr, 0, 0, 0, 0],
        )?;
    }
    if timers.posix.is_empty() {
        return Ok(());
    }
    // Since Linux 6.15: timer_create takes the id to use from its third
    // argument while this is on.
    const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
    task.syscall(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        libc::SYS_prctl,
        [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0],
    )?;
    let result = (|| {
        // /proc lists the newest first: create oldest first, so the list
        // (and the kernel's order) comes back the same.
        for t in timers.posix.iter().rev() {
            // struct sigevent: value, signo, notify, then the thread id.
            let mut ev = [0u8; 64];
            ev[0..8].copy_from_slice(&t.value.to_ne_bytes());
            ev[8..12].copy_from_slice(&t.signo.to_ne_bytes());
            ev[12..16].copy_from_slice(&t.notify.to_ne_bytes());
            ev[16..20].copy_from_slice(&t.target.to_ne_bytes());
            let ev_addr = scratch.write(mem, TIMER_OFF, &ev)?;
            let id_addr = scratch.write(mem, ID_OFF, &t.id.to_ne_bytes())?;
            task.syscall(
                "timer_create",
                libc::SYS_timer_create,
                [t.clockid as u64, ev_addr, id_addr, 0, 0, 0],
            )?;
            let spec_addr = scratch.write(mem, TIMER_OFF, &bytes(&t.spec))?;
            task.syscall(
                "timer_settime",
                libc::SYS_timer_settime,
                [t.id as u64, 0, spec_addr, 0, 0, 0],
            )?;
        }
        Ok(())
    })();
    task.syscall(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        libc::SYS_prctl,
        [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0, 0],
    )?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_own_timers() {
        // A null sigevent: SIGALRM to the process.
        let timer = crate::sys::time::PosixTimer::new(libc::CLOCK_MONOTONIC).unwrap();
        let mine = listed(std::process::id() as i32);
        assert!(mine.iter().any(|t| t.clockid == libc::CLOCK_MONOTONIC
            && t.signo == libc::SIGALRM
            && t.notify == libc::SIGEV_SIGNAL));
        drop(timer);
    }
}
