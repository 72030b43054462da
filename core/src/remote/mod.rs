//! Remote syscalls: running one syscall inside a ptrace-stopped task.
//!
//! The task's registers are pointed at a `syscall` instruction (found in its
//! vdso at checkpoint, or in Hiber's gadget page at restore), stepped through
//! syscall entry and exit, and put back exactly as found. All signals are
//! blocked meanwhile so that nothing is delivered, or lost, in between.
//! At checkpoint the calls run from a [`lifeline`] slot, so that a
//! checkpointer dying at any instant leaves the task as it was.

pub mod lifeline;

use crate::procmem::{ProcMem, ProcMemError};
use crate::ptrace::{self, PtraceError, Regs, Stop};
pub use lifeline::{Lifeline, ResultUndo, Slot, Undo};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Ptrace(#[from] PtraceError),
    #[error(transparent)]
    Memory(#[from] ProcMemError),
    #[error("remote {name} in pid {pid} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Syscall {
        pid: i32,
        name: &'static str,
        errno: i32,
    },
    #[error("no syscall instruction found in the vdso of pid {pid}")]
    NoSyscallInsn { pid: i32 },
    #[error(
        "pid {pid}: {len} bytes at offset {offset} do not fit the {capacity} byte scratch area"
    )]
    ScratchOverflow {
        pid: i32,
        offset: usize,
        len: usize,
        capacity: usize,
    },
}

type Result<T> = std::result::Result<T, RemoteError>;

/// Take over the main thread `pid` of a frozen process whose vdso is at
/// `vdso`, through a lifeline when its vdso has room for one (the
/// lifeline's slot 1 is then free for its other threads, in turn). Once
/// every task is put back, [`Lifeline::clear`] the lifeline.
pub fn take_over(
    pid: i32,
    mem: &mut ProcMem,
    vdso: (u64, u64),
) -> Result<(RemoteTask, Option<Lifeline>)> {
    let lifeline = Lifeline::install(mem, vdso);
    let task = match &lifeline {
        Some(l) => RemoteTask::guarded(pid, l.slot(0), mem)?,
        None => RemoteTask::new(pid, find_syscall_insn(mem, vdso.0, vdso.1)?)?,
    };
    Ok((task, lifeline))
}

/// A task held in a ptrace stop, ready to run syscalls on our behalf.
#[derive(Debug)]
pub struct RemoteTask {
    tid: i32,
    saved_regs: Regs,
    saved_mask: u64,
    syscall_ip: u64,
    /// The lifeline slot its calls run from, when guarded.
    slot: Option<Slot>,
    /// An `int3` follows the `syscall` instruction: a call runs to the
    /// trap in one stop, where stepping through entry and exit takes two.
    trap_after: bool,
    restored: bool,
}

impl RemoteTask {
    /// Take over `tid` (already in a ptrace stop). `syscall_ip` is the
    /// address of a `syscall` instruction mapped executable in it.
    pub fn new(tid: i32, syscall_ip: u64) -> Result<Self> {
        let saved_regs = ptrace::get_regs(tid)?;
        // For a task stopped in sigsuspend, ppoll, pselect6 or epoll_pwait
        // the kernel answers with the task's own mask (saved_sigmask), not
        // the call's temporary one; setting the mask through ptrace then
        // drops the temporary one, and the call restarts with its argument.
        let saved_mask = ptrace::get_sigmask(tid)?;
        ptrace::set_sigmask(tid, u64::MAX)?;
        Ok(Self {
            tid,
            saved_regs,
            saved_mask,
            syscall_ip,
            slot: None,
            trap_after: false,
            restored: false,
        })
    }

    /// [`RemoteTask::new`] with `syscall_ip` followed by an `int3` (the
    /// restore gadget's `syscall; int3`): each call then costs one ptrace
    /// stop (run to the trap) instead of two (syscall entry, then exit).
    pub fn with_trap(tid: i32, syscall_ip: u64) -> Result<Self> {
        // Not built with `..Self::new()`: that copies the fields out of a
        // task whose drop then puts its registers and mask back.
        let mut task = Self::new(tid, syscall_ip)?;
        task.trap_after = true;
        Ok(task)
    }

    /// From now on step each call through its entry and exit, never
    /// trapping: an `int3` raises a forced SIGTRAP, which resets a blocked
    /// or ignored SIGTRAP's handler to the default and could be taken for
    /// a SIGTRAP the task has queued. Called before the task gets its
    /// signal handlers or signals.
    pub fn stepping(mut self) -> Self {
        self.trap_after = false;
        self
    }

    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// The `syscall` instruction its calls run from.
    pub fn syscall_ip(&self) -> u64 {
        self.syscall_ip
    }

    /// The signal mask the task had before we took it over.
    pub fn saved_mask(&self) -> u64 {
        self.saved_mask
    }

    pub fn saved_regs(&self) -> &Regs {
        &self.saved_regs
    }

    /// Take over `tid` (already in a ptrace stop) with its calls run from
    /// `slot` of its process's lifeline: from the first change made here
    /// to the put-back, a tracer dying at any instant sends the task home
    /// (see [`lifeline`]).
    pub fn guarded(tid: i32, slot: Slot, mem: &mut ProcMem) -> Result<Self> {
        let saved_regs = ptrace::get_regs(tid)?;
        let saved_mask = ptrace::get_sigmask(tid)?;
        let home = saved_regs.with_restart_in_place();
        slot.set_home(mem, &home, saved_mask)?;
        // The registers first: with them at the way home, a dead tracer
        // leaves no blocked mask behind either.
        ptrace::set_regs(
            tid,
            &Regs {
                rip: slot.back_ip,
                orig_rax: u64::MAX,
                ..home
            },
        )?;
        crate::faults::point("remote: task sent to its lifeline");
        let task = Self {
            tid,
            saved_regs,
            saved_mask,
            syscall_ip: slot.syscall_ip,
            slot: Some(slot),
            trap_after: false,
            restored: false,
        };
        // On failure the drop puts the registers back.
        ptrace::set_sigmask(tid, u64::MAX)?;
        Ok(task)
    }

    /// What the task undoes should its tracer die before the next change
    /// of undo (see [`Undo`]); nothing for an unguarded task.
    pub fn set_undo(&self, mem: &mut ProcMem, undo: &Undo) -> Result<()> {
        match &self.slot {
            Some(slot) => Ok(slot.set_undo(mem, undo)?),
            None => Ok(()),
        }
    }

    /// Run one syscall; returns the raw result (negative errno on failure).
    pub fn syscall_raw(&self, nr: i64, args: [u64; 6]) -> Result<i64> {
        let regs = self.call_regs(nr, args);
        ptrace::set_regs(self.tid, &regs)?;
        crate::faults::point("remote: call registers set");
        if self.trap_after {
            self.run_to_trap("a syscall")?;
            crate::faults::point("remote: at the trap after a syscall");
            return Ok(ptrace::get_regs(self.tid)?.rax as i64);
        }
        self.step_syscall("syscall entry")?;
        crate::faults::point("remote: at syscall entry");
        self.step_syscall("syscall exit")?;
        crate::faults::point("remote: at syscall exit");
        Ok(ptrace::get_regs(self.tid)?.rax as i64)
    }

    /// Run one syscall; a negative result is an error naming the call.
    pub fn syscall(&self, name: &'static str, nr: i64, args: [u64; 6]) -> Result<u64> {
        tracing::trace!(tid = self.tid, name, "remote call");
        let r = self.syscall_raw(nr, args)?;
        if (-4095..0).contains(&r) {
            return Err(RemoteError::Syscall {
                pid: self.tid,
                name,
                errno: -r as i32,
            });
        }
        Ok(r as u64)
    }

    /// Run a syscall that creates a task (clone3 with the tracer's
    /// `PTRACE_O_TRACECLONE` set): returns the result and the new task's id
    /// as the tracer sees it. The new task is left in its first ptrace stop.
    pub fn syscall_cloning(
        &self,
        name: &'static str,
        nr: i64,
        args: [u64; 6],
    ) -> Result<(u64, i32)> {
        let regs = self.call_regs(nr, args);
        ptrace::set_regs(self.tid, &regs)?;
        self.step_syscall("clone entry")?;
        ptrace::resume_to_syscall(self.tid)?;
        let (stop, status) = ptrace::wait(self.tid)?;
        if status >> 16 != libc::PTRACE_EVENT_CLONE {
            // The call failed before creating anything: we are at its exit.
            if stop == Stop::Syscall {
                let r = ptrace::get_regs(self.tid)?.rax as i64;
                return Err(RemoteError::Syscall {
                    pid: self.tid,
                    name,
                    errno: if (-4095..0).contains(&r) {
                        -r as i32
                    } else {
                        libc::EPROTO
                    },
                });
            }
            return Err(PtraceError::UnexpectedStop {
                tid: self.tid,
                status,
                during: "clone",
            }
            .into());
        }
        let child = ptrace::event_msg(self.tid)? as i32;
        self.step_syscall("clone exit")?;
        let r = ptrace::get_regs(self.tid)?.rax as i64;
        if (-4095..0).contains(&r) {
            return Err(RemoteError::Syscall {
                pid: self.tid,
                name,
                errno: -r as i32,
            });
        }
        // The new task's first stop.
        match ptrace::wait(child)? {
            (Stop::Event { .. }, _) => Ok((r as u64, child)),
            (_, status) => Err(PtraceError::UnexpectedStop {
                tid: child,
                status,
                during: "the new thread's first stop",
            }
            .into()),
        }
    }

    fn call_regs(&self, nr: i64, args: [u64; 6]) -> Regs {
        Regs {
            rax: nr as u64,
            // Not "in a syscall": no restart logic may touch our registers.
            orig_rax: u64::MAX,
            rdi: args[0],
            rsi: args[1],
            rdx: args[2],
            r10: args[3],
            r8: args[4],
            r9: args[5],
            rip: self.syscall_ip,
            ..self.saved_regs
        }
    }

    fn step_syscall(&self, during: &'static str) -> Result<()> {
        ptrace::resume_to_syscall(self.tid)?;
        let mut stop = ptrace::wait(self.tid)?;
        while let (Stop::Event { .. }, _) = stop {
            // An interrupt left over from the freeze (a signal stop came
            // first and the task was interrupted again): consumed, go on.
            ptrace::resume_to_syscall(self.tid)?;
            stop = ptrace::wait(self.tid)?;
        }
        match stop {
            (Stop::Syscall, _) => Ok(()),
            (Stop::Exited(_) | Stop::Killed(_), _) => Err(PtraceError::Exited {
                tid: self.tid,
                during,
            }
            .into()),
            (_, status) => Err(PtraceError::UnexpectedStop {
                tid: self.tid,
                status,
                during,
            }
            .into()),
        }
    }

    /// Run a last syscall that removes the code it runs from (the restore
    /// gadget), and leave the task at the syscall's exit with `final_regs`
    /// set and its signal mask `mask`: it must never return to the gadget.
    pub fn finish_with(
        mut self,
        nr: i64,
        args: [u64; 6],
        final_regs: &Regs,
        mask: u64,
    ) -> Result<()> {
        let regs = self.call_regs(nr, args);
        ptrace::set_regs(self.tid, &regs)?;
        self.step_syscall("final syscall entry")?;
        self.step_syscall("final syscall exit")?;
        ptrace::set_regs(self.tid, final_regs)?;
        ptrace::set_sigmask(self.tid, mask)?;
        self.restored = true;
        Ok(())
    }

    /// End this task (a helper thread the restore made) with `exit(0)`,
    /// and reap it, its tracer: its registers are not put back.
    pub fn exit_thread(mut self) -> Result<()> {
        let regs = self.call_regs(libc::SYS_exit, [0; 6]);
        ptrace::set_regs(self.tid, &regs)?;
        self.restored = true;
        ptrace::cont(self.tid, 0)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match ptrace::wait_until(self.tid, deadline)? {
                Some((Stop::Exited(_) | Stop::Killed(_), _)) => return Ok(()),
                Some(_) => ptrace::cont(self.tid, 0)?,
                None => {
                    return Err(PtraceError::UnexpectedStop {
                        tid: self.tid,
                        status: 0,
                        during: "the helper thread's exit (not gone within 5 s)",
                    }
                    .into())
                }
            }
        }
    }

    /// Run `calls` in order with one stop: the restore gadget's batch
    /// loop at `batch_ip` (see [`BATCH_CODE`]) executes each from a table
    /// written to `scratch` at `offset`, stopping at the first error.
    /// Returns every result; an error names the call that failed.
    pub fn syscall_batch(
        &self,
        mem: &mut ProcMem,
        scratch: &Scratch,
        offset: usize,
        batch_ip: u64,
        calls: &[(&'static str, i64, [u64; 6])],
    ) -> Result<Vec<u64>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let mut table = Vec::with_capacity(calls.len() * BATCH_ENTRY);
        for (_, nr, args) in calls {
            table.extend_from_slice(&(*nr as u64).to_ne_bytes());
            for a in args {
                table.extend_from_slice(&a.to_ne_bytes());
            }
            table.extend_from_slice(&0u64.to_ne_bytes());
        }
        let table_addr = scratch.write(mem, offset, &table)?;
        let regs = Regs {
            rip: batch_ip,
            rbx: table_addr,
            r12: calls.len() as u64,
            orig_rax: u64::MAX,
            ..self.saved_regs
        };
        ptrace::set_regs(self.tid, &regs)?;
        self.run_to_trap("a batch of syscalls")?;
        let left = ptrace::get_regs(self.tid)?.r12 as usize;
        scratch.read(mem, offset, &mut table)?;
        let results: Vec<u64> = table
            .chunks_exact(BATCH_ENTRY)
            .map(|e| u64::from_ne_bytes(e[56..64].try_into().expect("8 bytes")))
            .collect();
        if left > 0 {
            let i = calls.len() - left;
            return Err(RemoteError::Syscall {
                pid: self.tid,
                name: calls[i].0,
                errno: -(results[i] as i64) as i32,
            });
        }
        Ok(results)
    }

    /// Let the task run (every signal but SIGKILL blocked) to the `int3`
    /// its registers lead to.
    fn run_to_trap(&self, during: &'static str) -> Result<()> {
        ptrace::cont(self.tid, 0)?;
        let mut stop = ptrace::wait(self.tid)?;
        while let (Stop::Event { .. }, _) = stop {
            // An interrupt left over from the freeze: consumed, go on.
            ptrace::cont(self.tid, 0)?;
            stop = ptrace::wait(self.tid)?;
        }
        match stop {
            // The trap's forced SIGTRAP unblocked SIGTRAP: blocked again,
            // so that one sent from outside waits, as every other signal
            // does, rather than stop the next call before it runs.
            (Stop::Signal(libc::SIGTRAP), _) => Ok(ptrace::set_sigmask(self.tid, u64::MAX)?),
            (Stop::Exited(_) | Stop::Killed(_), _) => Err(PtraceError::Exited {
                tid: self.tid,
                during,
            }
            .into()),
            (_, status) => Err(PtraceError::UnexpectedStop {
                tid: self.tid,
                status,
                during,
            }
            .into()),
        }
    }

    /// Put the registers and signal mask back as found.
    pub fn restore(mut self) -> Result<()> {
        self.put_back()
    }

    fn put_back(&mut self) -> Result<()> {
        if self.restored {
            return Ok(());
        }
        self.restored = true;
        // The mask before the registers: until they are back, a lifeline
        // still leads home (and sets the same mask again).
        let mask = ptrace::set_sigmask(self.tid, self.saved_mask);
        crate::faults::point("remote: mask put back");
        // We stopped it in a syscall and ran our own since: the kernel's
        // restart path will not run for the interrupted one, so restart it
        // here as the kernel would have.
        let regs = ptrace::set_regs(self.tid, &self.saved_regs.with_restart_in_place());
        Ok(mask.and(regs)?)
    }
}

impl Drop for RemoteTask {
    fn drop(&mut self) {
        // A failure half way must still leave the task as it was.
        if let Err(err) = self.put_back() {
            tracing::warn!(tid = self.tid, %err, "could not put registers back");
        }
    }
}

/// Bytes of one entry of a syscall batch: number, six arguments, result.
pub const BATCH_ENTRY: usize = 64;

/// Where the batch loop sits in the restore gadget's code page.
pub const BATCH_OFFSET: u64 = 16;

/// x86-64 code of the batch loop: with rbx pointing at a table of
/// [`BATCH_ENTRY`]-byte entries and r12 their count, run each syscall,
/// store its result in the entry, stop at the first error (r12 then
/// counts the calls not done, the failed one included) or at the end, and
/// trap with int3.
pub const BATCH_CODE: [u8; 56] = [
    0x4d, 0x85, 0xe4, // 0: test r12, r12
    0x74, 0x32, // 3: jz done (55)
    0x48, 0x8b, 0x03, // 5: mov rax, [rbx]
    0x48, 0x8b, 0x7b, 0x08, // 8: mov rdi, [rbx+8]
    0x48, 0x8b, 0x73, 0x10, // 12: mov rsi, [rbx+16]
    0x48, 0x8b, 0x53, 0x18, // 16: mov rdx, [rbx+24]
    0x4c, 0x8b, 0x53, 0x20, // 20: mov r10, [rbx+32]
    0x4c, 0x8b, 0x43, 0x28, // 24: mov r8, [rbx+40]
    0x4c, 0x8b, 0x4b, 0x30, // 28: mov r9, [rbx+48]
    0x0f, 0x05, // 32: syscall
    0x48, 0x89, 0x43, 0x38, // 34: mov [rbx+56], rax
    0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, // 38: cmp rax, -4095
    0x73, 0x09, // 44: jae done (55)
    0x48, 0x83, 0xc3, 0x40, // 46: add rbx, 64
    0x49, 0xff, 0xcc, // 50: dec r12
    0xeb, 0xc9, // 53: jmp 0
    0xcc, // 55: done: int3
];

/// A few pages of memory mapped in the target for syscall arguments.
#[derive(Debug)]
pub struct Scratch {
    pub addr: u64,
    pub len: usize,
}

impl Scratch {
    /// Map `len` bytes of anonymous memory in the task; a guarded task
    /// unmaps it on its way home.
    pub fn map(task: &RemoteTask, mem: &mut ProcMem, len: usize) -> Result<Self> {
        let unmap = Undo {
            result: ResultUndo::Unmap(len as u64),
            ..Undo::default()
        };
        task.set_undo(mem, &unmap)?;
        let addr = task.syscall(
            "mmap",
            libc::SYS_mmap,
            [
                0,
                len as u64,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        task.set_undo(
            mem,
            &Undo {
                unmap: Some((addr, len as u64)),
                ..Undo::default()
            },
        )?;
        Ok(Self { addr, len })
    }

    pub fn unmap(self, task: &RemoteTask, mem: &mut ProcMem) -> Result<()> {
        task.syscall(
            "munmap",
            libc::SYS_munmap,
            [self.addr, self.len as u64, 0, 0, 0, 0],
        )?;
        task.set_undo(mem, &Undo::default())
    }

    /// Where `len` bytes at `offset` go, when they fit.
    fn span(&self, mem: &ProcMem, offset: usize, len: usize) -> Result<u64> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.addr + offset as u64),
            _ => Err(RemoteError::ScratchOverflow {
                pid: mem.pid(),
                offset,
                len,
                capacity: self.len,
            }),
        }
    }

    pub fn write(&self, mem: &mut ProcMem, offset: usize, data: &[u8]) -> Result<u64> {
        self.span(mem, offset, data.len())?;
        let addr = self.addr + offset as u64;
        mem.write(addr, data)?;
        Ok(addr)
    }

    pub fn read(&self, mem: &mut ProcMem, offset: usize, out: &mut [u8]) -> Result<()> {
        let addr = self.span(mem, offset, out.len())?;
        mem.read(addr, out)?;
        Ok(())
    }
}

/// Address of a `syscall` instruction inside `[start, end)` of the task
/// (its vdso, which every process maps executable).
pub fn find_syscall_insn(mem: &mut ProcMem, start: u64, end: u64) -> Result<u64> {
    let mut code = vec![0u8; (end - start) as usize];
    mem.read(start, &mut code)?;
    code.windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|off| start + off as u64)
        .ok_or(RemoteError::NoSyscallInsn { pid: mem.pid() })
}
