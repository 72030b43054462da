//! ptrace: seizing, stopping and reading or setting the state of one task.
//!
//! Small safe wrappers, one syscall each. Everything else in the engine that
//! touches a stopped task goes through here.

use serde::{Deserialize, Serialize};
use std::io;

/// A ptrace request failed.
#[derive(Debug, thiserror::Error)]
pub enum PtraceError {
    #[error("ptrace {op} on tid {tid}")]
    Request {
        op: &'static str,
        tid: i32,
        source: io::Error,
    },
    #[error("tid {tid} is gone")]
    Gone { tid: i32 },
    #[error("tid {tid} stopped unexpectedly (wait status {status:#x}) during {during}")]
    UnexpectedStop {
        tid: i32,
        status: i32,
        during: &'static str,
    },
    #[error("tid {tid} exited during {during}")]
    Exited { tid: i32, during: &'static str },
}

type Result<T> = std::result::Result<T, PtraceError>;

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_GET_SECCOMP_METADATA: libc::c_uint = 0x420d;
/// The capability bit (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const NT_PRSTATUS: usize = 1;
const NT_X86_XSTATE: usize = 0x202;
/// Large enough for every xsave layout the kernel exposes today.
const XSTATE_MAX: usize = 16 * 1024;

fn request(
    op: &'static str,
    req: libc::c_uint,
    tid: i32,
    addr: usize,
    data: usize,
) -> Result<libc::c_long> {
    // SAFETY: every caller passes addr/data that are valid for `req` (null,
    // an integer, or a pointer to a live buffer of the size the request uses).
    let r = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::ESRCH) && op == "seize" {
            return Err(PtraceError::Gone { tid });
        }
        return Err(PtraceError::Request { op, tid, source });
    }
    Ok(r)
}

/// General-purpose registers of x86_64, in the kernel's `user_regs_struct` order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

impl Regs {
    /// Registers as user space must see them when the task resumes without
    /// the kernel's help: a task stopped inside an interrupted syscall holds
    /// `-ERESTART*` in rax, which the kernel turns into a restart only on its
    /// own signal path. A restored task resumes on a fresh path, so do it
    /// here. A restart-block syscall resumes from kernel state that is
    /// gone, except a relative `nanosleep` or `clock_nanosleep` given a
    /// `rem` pointer: the kernel wrote the time left there when the freeze
    /// interrupted it, so it sleeps again for that long (counted from the
    /// restore). The others (a sleep without `rem`, `poll` with a timeout,
    /// a timed futex wait) return EINTR, which their callers handle.
    pub fn with_syscall_restart(mut self) -> Self {
        if (self.orig_rax as i64) < 0 {
            return self;
        }
        match -(self.rax as i64) {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                self.rax = self.orig_rax;
                self.rip -= 2;
            }
            ERESTART_RESTARTBLOCK => match self.sleep_again() {
                Some(again) => return again,
                None => self.rax = (-libc::EINTR) as u64,
            },
            _ => {}
        }
        self.orig_rax = u64::MAX;
        self
    }

    /// Whether [`Self::with_syscall_restart`] makes the task issue its
    /// interrupted syscall again (rather than see it return).
    pub fn reissues_syscall(&self) -> bool {
        if (self.orig_rax as i64) < 0 {
            return false;
        }
        match -(self.rax as i64) {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => true,
            ERESTART_RESTARTBLOCK => self.sleep_again().is_some(),
            _ => false,
        }
    }

    /// A relative `nanosleep` or `clock_nanosleep` interrupted with a `rem`
    /// pointer, made to sleep again for the time the kernel left there
    /// (the call again, with `rem` as its request). An absolute sleep is
    /// not a restart-block syscall (it restarts as ERESTARTNOHAND).
    fn sleep_again(self) -> Option<Self> {
        let again = match self.orig_rax as i64 {
            libc::SYS_nanosleep if self.rsi != 0 => Regs {
                rdi: self.rsi,
                ..self
            },
            libc::SYS_clock_nanosleep if self.r10 != 0 => Regs {
                rdx: self.r10,
                ..self
            },
            _ => return None,
        };
        Some(Regs {
            rax: self.orig_rax,
            rip: self.rip - 2,
            orig_rax: u64::MAX,
            ..again
        })
    }

    /// For a task that goes on in place after a freeze: a relative sleep
    /// with `rem` that the freeze interrupted, issued again as itself for
    /// the time left; None for anything else (the kernel restarts those
    /// by itself when the task resumes). Left to the kernel, the sleep
    /// would resume through `restart_syscall`, which hides from a later
    /// checkpoint which call it is, and restored, could only return EINTR.
    pub fn sleep_restarted_in_place(&self) -> Option<Self> {
        if (self.orig_rax as i64) >= 0 && -(self.rax as i64) == ERESTART_RESTARTBLOCK {
            return self.sleep_again();
        }
        None
    }

    /// The same for a task that goes on in place (a checkpoint that leaves
    /// it running): its restart block is still in the kernel, so a
    /// restart-block syscall resumes through `restart_syscall`; but a sleep
    /// with `rem` is issued again as itself, so that a later checkpoint
    /// still sees which call it is (`restart_syscall` hides it).
    pub fn with_restart_in_place(self) -> Self {
        if (self.orig_rax as i64) >= 0 && -(self.rax as i64) == ERESTART_RESTARTBLOCK {
            if let Some(again) = self.sleep_again() {
                return again;
            }
            return Regs {
                rax: libc::SYS_restart_syscall as u64,
                rip: self.rip - 2,
                orig_rax: u64::MAX,
                ..self
            };
        }
        self.with_syscall_restart()
    }
}

/// `PTRACE_SEIZE`: attach without stopping. Exit kills are not used, so a
/// dying checkpointer lets every task go on.
pub fn seize(tid: i32) -> Result<()> {
    seize_with(tid, 0)
}

/// `PTRACE_SEIZE` with `PTRACE_O_EXITKILL`: if the tracer dies, the kernel
/// kills the task before it returns to user space. For tasks that must not
/// run in the state the tracer leaves them in (a restore's half-swapped
/// tasks). The option belongs to this tracer link: a detach drops it.
pub fn seize_exit_kill(tid: i32) -> Result<()> {
    seize_with(tid, libc::PTRACE_O_EXITKILL)
}

/// The options every seize and every `set_options` keeps: syscall stops
/// told apart from SIGTRAP, and seccomp suspended while we trace (a
/// sandboxed program's filter would trap or kill our remote calls: a
/// browser's content process answers a `getpid` it did not expect with
/// SIGSYS). Suspending needs CAP_SYS_ADMIN and a tracer without seccomp of
/// its own; without them, a filtered task's remote calls meet its filter
/// and `check` says so.
fn base_options() -> libc::c_int {
    static MAY_SUSPEND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let suspend = *MAY_SUSPEND.get_or_init(|| {
        crate::procfs::ProcDir::new(std::process::id() as i32)
            .status()
            .is_ok_and(|s| s.seccomp == 0 && s.cap_eff & (1 << CAP_SYS_ADMIN) != 0)
    });
    let mut all = libc::PTRACE_O_TRACESYSGOOD;
    if suspend {
        all |= libc::PTRACE_O_SUSPEND_SECCOMP;
    }
    all
}

/// Whether this tracer suspends its tracees' seccomp filters (and may read
/// them): see [`base_options`].
pub fn suspends_seccomp() -> bool {
    base_options() & libc::PTRACE_O_SUSPEND_SECCOMP != 0
}

fn seize_with(tid: i32, options: libc::c_int) -> Result<()> {
    let all = options | base_options();
    match request("seize", libc::PTRACE_SEIZE, tid, 0, all as usize) {
        Ok(_) => Ok(()),
        // The kernel refuses to attach to a task that is exiting (its mm
        // or exit state already gone) with EPERM, not ESRCH: a task that
        // ends within moments was exiting, not forbidden.
        Err(PtraceError::Request { source, .. })
            if source.raw_os_error() == Some(libc::EPERM) && exits_soon(tid) =>
        {
            Err(PtraceError::Gone { tid })
        }
        Err(e) => Err(e),
    }
}

/// Whether `tid` is dead, a zombie, or becomes one within 50 ms.
fn exits_soon(tid: i32) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
    loop {
        match crate::procfs::ProcDir::new(tid).stat() {
            Ok(s) if s.state == 'Z' || s.state == 'X' => return true,
            Err(crate::procfs::ProcfsError::ProcessGone { .. }) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

pub fn interrupt(tid: i32) -> Result<()> {
    request("interrupt", libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// `PTRACE_SETOPTIONS`; the [`base_options`] are always kept. This replaces every
/// option, so a task seized with [`seize_exit_kill`] needs EXITKILL again.
pub fn set_options(tid: i32, options: libc::c_int) -> Result<()> {
    let all = options | base_options();
    request("setoptions", libc::PTRACE_SETOPTIONS, tid, 0, all as usize).map(drop)
}

/// The message of the last ptrace event (a new task's id for CLONE).
pub fn event_msg(tid: i32) -> Result<u64> {
    let mut msg: libc::c_ulong = 0;
    request(
        "geteventmsg",
        libc::PTRACE_GETEVENTMSG,
        tid,
        0,
        &mut msg as *mut libc::c_ulong as usize,
    )?;
    Ok(msg)
}

pub fn detach(tid: i32) -> Result<()> {
    detach_with_signal(tid, 0)
}

/// Detach from a task stopped at a signal's delivery, delivering it
/// (0: none).
pub fn detach_with_signal(tid: i32, sig: i32) -> Result<()> {
    request("detach", libc::PTRACE_DETACH, tid, 0, sig as usize).map(drop)
}

/// Resume until the next syscall entry or exit.
pub fn resume_to_syscall(tid: i32) -> Result<()> {
    request("syscall", libc::PTRACE_SYSCALL, tid, 0, 0).map(drop)
}

/// Resume, delivering `sig` (0 for none).
pub fn cont(tid: i32, sig: i32) -> Result<()> {
    request("cont", libc::PTRACE_CONT, tid, 0, sig as usize).map(drop)
}

/// What a wait on a traced task reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stopped by `PTRACE_INTERRUPT` or a group stop (`PTRACE_EVENT_STOP`).
    Event {
        sig: i32,
    },
    /// Syscall entry or exit (`SIGTRAP | 0x80`).
    Syscall,
    /// A signal is about to be delivered.
    Signal(i32),
    Exited(i32),
    Killed(i32),
}

/// Wait for the next state change of a traced task (tracees need not be
/// children: `__WALL` covers them).
pub fn wait(tid: i32) -> Result<(Stop, i32)> {
    wait_with(tid, 0).map(|s| s.expect("a blocking wait returns a state"))
}

/// The state change of a traced task already waiting to be reported, if
/// any (`WNOHANG`).
pub fn try_wait(tid: i32) -> Result<Option<(Stop, i32)>> {
    wait_with(tid, libc::WNOHANG)
}

/// [`wait`] until `deadline`: None when `tid` reported nothing by then.
/// It polls, sleeping a little longer each time (up to 2 ms): for the few
/// waits where a task may never stop, such as one in uninterruptible
/// sleep that an interrupt does not reach.
pub fn wait_until(tid: i32, deadline: std::time::Instant) -> Result<Option<(Stop, i32)>> {
    let mut nap = std::time::Duration::from_micros(10);
    loop {
        if let Some(found) = try_wait(tid)? {
            return Ok(Some(found));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(std::time::Duration::from_millis(2));
    }
}

fn wait_with(tid: i32, flags: i32) -> Result<Option<(Stop, i32)>> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out pointer.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | flags) };
        if r == 0 {
            return Ok(None);
        }
        if r == -1 {
            let source = io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(PtraceError::Request {
                op: "wait",
                tid,
                source,
            });
        }
        break;
    }
    let stop = if libc::WIFEXITED(status) {
        Stop::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Stop::Killed(libc::WTERMSIG(status))
    } else {
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        if sig == libc::SIGTRAP | 0x80 {
            Stop::Syscall
        } else if event == libc::PTRACE_EVENT_STOP {
            Stop::Event { sig }
        } else {
            Stop::Signal(sig)
        }
    };
    Ok(Some((stop, status)))
}

fn regset<T>(
    op: &'static str,
    req: libc::c_uint,
    tid: i32,
    kind: usize,
    buf: *mut T,
    len: usize,
) -> Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.cast(),
        iov_len: len,
    };
    request(op, req, tid, kind, &mut iov as *mut libc::iovec as usize)?;
    Ok(iov.iov_len)
}

pub fn get_regs(tid: i32) -> Result<Regs> {
    let mut regs = Regs::default();
    regset(
        "getregset(prstatus)",
        libc::PTRACE_GETREGSET,
        tid,
        NT_PRSTATUS,
        &mut regs,
        std::mem::size_of::<Regs>(),
    )?;
    Ok(regs)
}

pub fn set_regs(tid: i32, regs: &Regs) -> Result<()> {
    let mut copy = *regs;
    regset(
        "setregset(prstatus)",
        libc::PTRACE_SETREGSET,
        tid,
        NT_PRSTATUS,
        &mut copy,
        std::mem::size_of::<Regs>(),
    )
    .map(drop)
}

/// The xsave area (x87, SSE, AVX, ... as the CPU has them).
pub fn get_xstate(tid: i32) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; XSTATE_MAX];
    let len = regset(
        "getregset(xstate)",
        libc::PTRACE_GETREGSET,
        tid,
        NT_X86_XSTATE,
        buf.as_mut_ptr(),
        buf.len(),
    )?;
    buf.truncate(len);
    Ok(buf)
}

pub fn set_xstate(tid: i32, xstate: &[u8]) -> Result<()> {
    let mut buf = xstate.to_vec();
    let len = buf.len();
    regset(
        "setregset(xstate)",
        libc::PTRACE_SETREGSET,
        tid,
        NT_X86_XSTATE,
        buf.as_mut_ptr(),
        len,
    )
    .map(drop)
}

pub fn get_sigmask(tid: i32) -> Result<u64> {
    let mut mask = 0u64;
    request(
        "getsigmask",
        PTRACE_GETSIGMASK,
        tid,
        8,
        &mut mask as *mut u64 as usize,
    )?;
    Ok(mask)
}

pub fn set_sigmask(tid: i32, mask: u64) -> Result<()> {
    let mut m = mask;
    request(
        "setsigmask",
        PTRACE_SETSIGMASK,
        tid,
        8,
        &mut m as *mut u64 as usize,
    )
    .map(drop)
}

/// A queued signal, as `PTRACE_PEEKSIGINFO` returns it (the raw 128-byte siginfo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedSignal {
    pub signo: i32,
    /// Raw `siginfo_t`, hex encoded in the image.
    #[serde(with = "hex::serde")]
    pub info: Vec<u8>,
}

/// Signals queued for the thread (`shared == false`) or the whole process.
pub fn peek_siginfo(tid: i32, shared: bool) -> Result<Vec<QueuedSignal>> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
    let mut out = Vec::new();
    let mut buf = [[0u8; 128]; 32];
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: buf.len() as i32,
        };
        let n = request(
            "peeksiginfo",
            libc::PTRACE_PEEKSIGINFO,
            tid,
            &args as *const PeekArgs as usize,
            buf.as_mut_ptr() as usize,
        )? as usize;
        for info in &buf[..n] {
            let signo = i32::from_ne_bytes(info[..4].try_into().expect("4 bytes"));
            out.push(QueuedSignal {
                signo,
                info: info.to_vec(),
            });
        }
        if n < buf.len() {
            return Ok(out);
        }
    }
}

/// The rseq area a thread registered, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rseq {
    pub addr: u64,
    pub len: u32,
    pub signature: u32,
}

pub fn get_rseq(tid: i32) -> Result<Option<Rseq>> {
    #[repr(C)]
    #[derive(Default)]
    struct Config {
        addr: u64,
        size: u32,
        signature: u32,
        flags: u32,
        pad: u32,
    }
    let mut conf = Config::default();
    request(
        "get_rseq_configuration",
        PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        std::mem::size_of::<Config>(),
        &mut conf as *mut Config as usize,
    )?;
    Ok((conf.addr != 0).then_some(Rseq {
        addr: conf.addr,
        len: conf.size,
        signature: conf.signature,
    }))
}

/// The `index`th seccomp filter of a stopped `tid` (0: the newest) as its
/// classic BPF instructions, 8 bytes each, and its `SECCOMP_FILTER_FLAG_*`
/// flags; None past the oldest. Needs CAP_SYS_ADMIN.
pub fn seccomp_filter(tid: i32, index: u64) -> Result<Option<(Vec<u8>, u64)>> {
    const INSN_LEN: usize = 8;
    let count = match request(
        "seccomp_get_filter",
        PTRACE_SECCOMP_GET_FILTER,
        tid,
        index as usize,
        0,
    ) {
        Ok(n) => n as usize,
        Err(PtraceError::Request { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let mut program = vec![0u8; count * INSN_LEN];
    let got = request(
        "seccomp_get_filter",
        PTRACE_SECCOMP_GET_FILTER,
        tid,
        index as usize,
        program.as_mut_ptr() as usize,
    )? as usize;
    // The filter cannot change while the task is stopped; a different
    // count would be a kernel we do not understand.
    program.truncate(got.min(count) * INSN_LEN);
    #[repr(C)]
    struct Metadata {
        filter_off: u64,
        flags: u64,
    }
    let mut meta = Metadata {
        filter_off: index,
        flags: 0,
    };
    request(
        "get_seccomp_metadata",
        PTRACE_GET_SECCOMP_METADATA,
        tid,
        std::mem::size_of::<Metadata>(),
        &mut meta as *mut Metadata as usize,
    )?;
    Ok(Some((program, meta.flags)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_fixups() {
        let base = Regs {
            orig_rax: 7,
            rip: 0x1000,
            ..Regs::default()
        };
        let r = Regs {
            rax: (-ERESTARTSYS) as u64,
            ..base
        }
        .with_syscall_restart();
        assert_eq!((r.rax, r.rip), (7, 0xffe));
        let r = Regs {
            rax: (-ERESTART_RESTARTBLOCK) as u64,
            ..base
        }
        .with_syscall_restart();
        assert_eq!((r.rax as i64, r.rip), (-libc::EINTR as i64, 0x1000));
        let r = Regs { rax: 3, ..base }.with_syscall_restart();
        assert_eq!((r.rax, r.rip), (3, 0x1000));
        let not_in_syscall = Regs {
            orig_rax: u64::MAX,
            rax: (-ERESTARTSYS) as u64,
            ..base
        };
        assert_eq!(not_in_syscall.with_syscall_restart(), not_in_syscall);
    }

    #[test]
    fn interrupted_sleeps_sleep_again() {
        let base = Regs {
            orig_rax: 7,
            rip: 0x1000,
            ..Regs::default()
        };
        let sleeping = Regs {
            rax: (-ERESTART_RESTARTBLOCK) as u64,
            ..base
        };
        let r = sleeping.with_restart_in_place();
        assert_eq!(
            (r.rax, r.rip, r.orig_rax as i64),
            (libc::SYS_restart_syscall as u64, base.rip - 2, -1)
        );
        // Sleeps with a `rem` pointer sleep again for the time left there.
        let r = Regs {
            orig_rax: libc::SYS_nanosleep as u64,
            rdi: 0x5000,
            rsi: 0x6000,
            ..sleeping
        }
        .with_syscall_restart();
        assert_eq!((r.rax, r.rdi, r.rsi, r.rip), (35, 0x6000, 0x6000, 0xffe));
        let r = Regs {
            orig_rax: libc::SYS_clock_nanosleep as u64,
            rdx: 0x5000,
            r10: 0x6000,
            ..sleeping
        }
        .with_syscall_restart();
        assert_eq!((r.rax, r.rdx, r.r10, r.rip), (230, 0x6000, 0x6000, 0xffe));
        let without_rem = Regs {
            orig_rax: libc::SYS_nanosleep as u64,
            rdi: 0x5000,
            ..sleeping
        };
        assert_eq!(
            without_rem.with_syscall_restart().rax as i64,
            -libc::EINTR as i64
        );
        // In place too, so that the next checkpoint sees a clock_nanosleep
        // again, not restart_syscall.
        let r = Regs {
            orig_rax: libc::SYS_clock_nanosleep as u64,
            r10: 0x6000,
            ..sleeping
        }
        .with_restart_in_place();
        assert_eq!((r.rax, r.rdx, r.rip), (230, 0x6000, 0xffe));
        assert_eq!(
            without_rem.with_restart_in_place().rax,
            libc::SYS_restart_syscall as u64
        );
    }

    #[test]
    fn a_thaw_reissues_only_sleeps() {
        let base = Regs {
            orig_rax: 7,
            rip: 0x1000,
            ..Regs::default()
        };
        let sleeping = Regs {
            rax: (-ERESTART_RESTARTBLOCK) as u64,
            ..base
        };
        let without_rem = Regs {
            orig_rax: libc::SYS_nanosleep as u64,
            rdi: 0x5000,
            ..sleeping
        };
        // What a thaw reissues: only such a sleep; the rest the kernel
        // restarts itself.
        assert_eq!(
            Regs {
                orig_rax: libc::SYS_clock_nanosleep as u64,
                r10: 0x6000,
                ..sleeping
            }
            .sleep_restarted_in_place()
            .map(|r| (r.rax, r.rdx)),
            Some((230, 0x6000))
        );
        assert_eq!(without_rem.sleep_restarted_in_place(), None);
        assert_eq!(
            Regs {
                rax: (-ERESTARTSYS) as u64,
                ..base
            }
            .sleep_restarted_in_place(),
            None
        );
    }
}
