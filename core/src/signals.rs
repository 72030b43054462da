//! Signal state of a process: handlers (sigaction) and the process-wide
//! queue. Per-thread state (mask, private queue, altstack) is in `thread`.
//!
//! Handlers are visible only from inside the task, so they are read and set
//! with remote `rt_sigaction`. Only signals /proc reports as caught or
//! ignored are read; the others are at their default.

use crate::procmem::ProcMem;
use crate::ptrace::QueuedSignal;
use crate::remote::{RemoteError, RemoteTask, Scratch};
use serde::{Deserialize, Serialize};

/// A signal's disposition, as the kernel's `struct sigaction` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub signo: i32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

const SIGACTION_OFF: usize = 8192;

/// Whether `sig` is one of the signals that stop a process (job control).
pub fn is_job_stop(sig: i32) -> bool {
    [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig)
}

/// The name of a job-control signal, for reports ("signal N" for others).
pub fn name(sig: i32) -> String {
    match sig {
        libc::SIGSTOP => "SIGSTOP".into(),
        libc::SIGTSTP => "SIGTSTP".into(),
        libc::SIGTTIN => "SIGTTIN".into(),
        libc::SIGTTOU => "SIGTTOU".into(),
        libc::SIGCONT => "SIGCONT".into(),
        _ => format!("signal {sig}"),
    }
}

/// The signal to stop a restored process with, given the one that had
/// stopped it: that one, unless the process now catches it (its handler
/// would run instead of the stop), then `SIGSTOP`, which cannot be caught.
pub fn restop_signal(saved: i32, actions: &[SigAction]) -> i32 {
    let caught = actions
        .iter()
        .any(|a| a.signo == saved && a.handler != libc::SIG_DFL as u64);
    if caught {
        libc::SIGSTOP
    } else {
        saved
    }
}

/// Read the handlers of the signals set in `interesting` (a /proc bitmask).
pub fn checkpoint_actions(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    interesting: u64,
) -> Result<Vec<SigAction>, RemoteError> {
    let mut out = Vec::new();
    for signo in 1..=64 {
        if interesting & (1u64 << (signo - 1)) == 0
            || signo == libc::SIGKILL
            || signo == libc::SIGSTOP
        {
            continue;
        }
        let addr = scratch.addr + SIGACTION_OFF as u64;
        task.syscall(
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            [signo as u64, 0, addr, 8, 0, 0],
        )?;
        let mut raw = [0u8; 32];
        scratch.read(mem, SIGACTION_OFF, &mut raw)?;
        let word =
            |i: usize| u64::from_ne_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        out.push(SigAction {
            signo,
            handler: word(0),
            flags: word(1),
            restorer: word(2),
            mask: word(3),
        });
    }
    Ok(out)
}

pub fn restore_actions(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    actions: &[SigAction],
) -> Result<(), RemoteError> {
    for a in actions {
        let mut raw = Vec::with_capacity(32);
        for w in [a.handler, a.flags, a.restorer, a.mask] {
            raw.extend_from_slice(&w.to_ne_bytes());
        }
        let addr = scratch.write(mem, SIGACTION_OFF, &raw)?;
        task.syscall(
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            [a.signo as u64, addr, 0, 8, 0, 0],
        )?;
    }
    Ok(())
}

/// Queue saved signals again, with their original siginfo. `tid` set: the
/// thread's private queue; else the process-wide queue.
pub fn requeue(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    pid: i32,
    tid: Option<i32>,
    signals: &[QueuedSignal],
) -> Result<(), RemoteError> {
    for s in signals {
        let addr = scratch.write(mem, SIGACTION_OFF, &s.info)?;
        match tid {
            Some(tid) => task.syscall(
                "rt_tgsigqueueinfo",
                libc::SYS_rt_tgsigqueueinfo,
                [pid as u64, tid as u64, s.signo as u64, addr, 0, 0],
            )?,
            None => task.syscall(
                "rt_sigqueueinfo",
                libc::SYS_rt_sigqueueinfo,
                [pid as u64, s.signo as u64, addr, 0, 0, 0],
            )?,
        };
    }
    Ok(())
}
