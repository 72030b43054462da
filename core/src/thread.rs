//! Per-thread state: registers, FPU/xstate, signal mask and private queue,
//! alternate signal stack, rseq, robust futex list, clear_child_tid.

use crate::procmem::ProcMem;
use crate::ptrace::{self, PtraceError, QueuedSignal, Regs, Rseq};
use crate::remote::{RemoteError, RemoteTask, Scratch};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AltStack {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadImage {
    pub tid: i32,
    pub regs: Regs,
    #[serde(with = "hex::serde")]
    pub xstate: Vec<u8>,
    pub sigmask: u64,
    pub pending: Vec<QueuedSignal>,
    pub altstack: Option<AltStack>,
    pub rseq: Option<Rseq>,
    /// (head, len) of the robust futex list.
    pub robust_list: (u64, u64),
    pub clear_child_tid: u64,
    /// The thread's name (`comm`), set with `PR_SET_NAME`.
    #[serde(default)]
    pub name: String,
    /// The thread's own credentials, when they differ from its process's
    /// (credentials are per thread: a raw `setresuid` changes one).
    #[serde(default)]
    pub creds: Option<crate::creds::Creds>,
    /// Its seccomp filters, oldest first, as indices into its process's
    /// `seccomp_filters`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seccomp: Vec<u32>,
    /// Its ids in the pid namespaces nested below the checkpointer's,
    /// outermost first (see `ProcessImage::ns_pids`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ns_tids: Vec<i32>,
}

const ALTSTACK_OFF: usize = 8192 + 512;
const TIDADDR_OFF: usize = 8192 + 1024;
const CLONE_ARGS_OFF: usize = 12288;
const SET_TID_OFF: usize = 12288 + 128;
const NAME_OFF: usize = 12288 + 256;

/// Read a thread's state; `task` runs remote calls in it, and must have been
/// created from the same stop (its saved registers are the thread's).
pub fn checkpoint(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
) -> Result<ThreadImage, RemoteError> {
    let tid = task.tid();
    let xstate = ptrace::get_xstate(tid)?;
    let pending = ptrace::peek_siginfo(tid, false)?;
    let rseq = ptrace::get_rseq(tid)?;

    let addr = scratch.addr + ALTSTACK_OFF as u64;
    task.syscall("sigaltstack", libc::SYS_sigaltstack, [0, addr, 0, 0, 0, 0])?;
    let mut raw = [0u8; 24];
    scratch.read(mem, ALTSTACK_OFF, &mut raw)?;
    let sp = u64::from_ne_bytes(raw[0..8].try_into().expect("8"));
    let flags = i32::from_ne_bytes(raw[8..12].try_into().expect("4"));
    let size = u64::from_ne_bytes(raw[16..24].try_into().expect("8"));
    let altstack = (flags & libc::SS_DISABLE == 0).then_some(AltStack { sp, flags, size });

    const PR_GET_TID_ADDRESS: u64 = 40;
    let addr = scratch.addr + TIDADDR_OFF as u64;
    task.syscall(
        "prctl(PR_GET_TID_ADDRESS)",
        libc::SYS_prctl,
        [PR_GET_TID_ADDRESS, addr, 0, 0, 0, 0],
    )?;
    let mut raw = [0u8; 8];
    scratch.read(mem, TIDADDR_OFF, &mut raw)?;
    let clear_child_tid = u64::from_ne_bytes(raw);

    let (head, len) = crate::sys::thread::robust_list(tid).map_err(|source| {
        RemoteError::Ptrace(PtraceError::Request {
            op: "get_robust_list",
            tid,
            source,
        })
    })?;
    Ok(ThreadImage {
        tid,
        regs: *task.saved_regs(),
        xstate,
        sigmask: ptrace_mask(task)?,
        pending,
        altstack,
        rseq,
        robust_list: (head, len as u64),
        clear_child_tid,
        name: std::fs::read_to_string(format!("/proc/{tid}/comm"))
            .map(|n| n.trim_end_matches('\n').to_string())
            .unwrap_or_default(),
        creds: None,
        seccomp: Vec::new(),
        ns_tids: crate::procfs::ProcDir::new(tid)
            .status()
            .map(|s| s.ns_pid.into_iter().skip(1).collect())
            .unwrap_or_default(),
    })
}

fn ptrace_mask(task: &RemoteTask) -> Result<u64, RemoteError> {
    Ok(task.saved_mask())
}

/// Create, from `task` (a thread of the restored process), a thread with
/// id `tid` in the process's pid namespace. It shares everything a pthread
/// shares and is left in its first ptrace stop, before running any code:
/// [`restore`] and the final step give it its own state. Returns its id as
/// the tracer sees it.
pub fn create(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    tid: i32,
    nested: &[i32],
) -> Result<i32, RemoteError> {
    create_with_tid(task, mem, scratch, Some((tid, nested)))
}

/// A short-lived helper thread of the restore, which leaves by
/// `RemoteTask::exit_thread`. It takes the next id of each pid namespace's
/// counter, which the restore places clear of the saved ids: in the
/// restorer's namespace (`restore::lock`) and in each nested one it makes
/// (`restore::node`).
pub fn create_helper(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
) -> Result<i32, RemoteError> {
    create_with_tid(task, mem, scratch, None)
}

/// Room for set_tid at SET_TID_OFF: the thread's id at every level.
const MAX_SET_TID: usize = (NAME_OFF - SET_TID_OFF) / 4;

fn create_with_tid(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    tid: Option<(i32, &[i32])>,
) -> Result<i32, RemoteError> {
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as u64;
    let (set_tid, set_tid_size) = match tid {
        Some((tid, nested)) => {
            // The innermost namespace's id first (a thread of a process in
            // a nested pid namespace has one there and one above).
            let ids: Vec<u8> = nested
                .iter()
                .rev()
                .chain(std::iter::once(&tid))
                .take(MAX_SET_TID)
                .flat_map(|t| t.to_ne_bytes())
                .collect();
            let n = ids.len() as u64 / 4;
            (scratch.write(mem, SET_TID_OFF, &ids)?, n)
        }
        None => (0, 0),
    };
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal,
    // stack, stack_size, tls, set_tid, set_tid_size, cgroup.
    let fields: [u64; 11] = [flags, 0, 0, 0, 0, 0, 0, 0, set_tid, set_tid_size, 0];
    let raw: Vec<u8> = fields.iter().flat_map(|f| f.to_ne_bytes()).collect();
    let args = scratch.write(mem, CLONE_ARGS_OFF, &raw)?;
    let (_, child) = task.syscall_cloning(
        "clone3(thread)",
        libc::SYS_clone3,
        [args, raw.len() as u64, 0, 0, 0, 0],
    )?;
    Ok(child)
}

/// Set everything but the registers and mask, which the final step sets.
pub fn restore(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    t: &ThreadImage,
) -> Result<(), RemoteError> {
    // Always set: the main thread is a fork of the restorer, whose Rust
    // runtime registered an alternate stack that is unmapped by now; left
    // in place, the first SA_ONSTACK handler (Python's) would die on it.
    let (sp, flags, size) = match &t.altstack {
        Some(a) => (a.sp, a.flags & !libc::SS_ONSTACK, a.size),
        None => (0, libc::SS_DISABLE, 0),
    };
    let mut raw = Vec::with_capacity(24);
    raw.extend_from_slice(&sp.to_ne_bytes());
    raw.extend_from_slice(&flags.to_ne_bytes());
    raw.extend_from_slice(&[0u8; 4]);
    raw.extend_from_slice(&size.to_ne_bytes());
    let addr = scratch.write(mem, ALTSTACK_OFF, &raw)?;
    task.syscall("sigaltstack", libc::SYS_sigaltstack, [addr, 0, 0, 0, 0, 0])?;
    // Always set, so a list inherited from the restorer never survives;
    // the kernel wants the structure's size even for an empty list.
    let len = if t.robust_list.1 == 0 {
        24
    } else {
        t.robust_list.1
    };
    task.syscall(
        "set_robust_list",
        libc::SYS_set_robust_list,
        [t.robust_list.0, len, 0, 0, 0, 0],
    )?;
    task.syscall(
        "set_tid_address",
        libc::SYS_set_tid_address,
        [t.clear_child_tid, 0, 0, 0, 0, 0],
    )?;
    if let Some(r) = &t.rseq {
        task.syscall(
            "rseq",
            libc::SYS_rseq,
            [r.addr, r.len as u64, 0, r.signature as u64, 0, 0],
        )?;
    }
    if !t.name.is_empty() {
        let mut name = t.name.as_bytes()[..t.name.len().min(15)].to_vec();
        name.push(0);
        let addr = scratch.write(mem, NAME_OFF, &name)?;
        task.syscall(
            "prctl(PR_SET_NAME)",
            libc::SYS_prctl,
            [libc::PR_SET_NAME as u64, addr, 0, 0, 0, 0],
        )?;
    }
    ptrace::set_xstate(task.tid(), &t.xstate)?;
    Ok(())
}
