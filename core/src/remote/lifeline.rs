//! The lifeline: a way home for a task that runs our remote calls, should
//! the checkpointer die meanwhile.
//!
//! While a task runs remote syscalls its registers point at a `syscall`
//! instruction with our arguments and all its signals are blocked. If the
//! checkpointer dies then (SIGKILL, the OOM killer), the kernel detaches
//! the task and it runs on from there: without help, off into the vdso
//! with our registers, or with its signals blocked for good. So each remote
//! call of a checkpoint runs from a `syscall` instruction followed by code
//! that sends the task home: its signal mask back with `rt_sigprocmask`,
//! its flags and every general register loaded from data written beside
//! the code, then a jump to where it was (an interrupted syscall set to
//! restart, exactly as a normal put-back leaves it). A live tracer stops
//! the task at the call's exit and never lets it reach that code; only a
//! dead one does. The FPU and vector registers need no help: syscalls
//! leave them alone.
//!
//! The code lives in the zero padding after the end of the kernel's vdso
//! image, in the vdso's last page: written through /proc/PID/mem, it maps
//! nothing new and sits where the program never jumps (the process gets a
//! private copy of that page). It is zeroed again once the task is back.
//! Without room there, calls go unguarded as before.

use crate::procmem::{ProcMem, ProcMemError};
use crate::ptrace::Regs;

/// x86-64 code of one slot: the remote call's `syscall`, then the way home
/// (offsets of the data are rip-relative, so every slot has the same code):
///
/// ```text
///   0: syscall                     ; the remote call
///   2: mov rdi, rax                ; undo what the call made, if it was to:
///      if RESULT_UNDO == 1 and rdi is an fd:      close(rdi)
///      if RESULT_UNDO == 2 and rdi is no error:   munmap(rdi, UNMAP_LEN)
///      if CLOSE_FD >= 0:                          close(CLOSE_FD)
///      if UNMAP_ADDR != 0:                        munmap(UNMAP_ADDR, UNMAP_LEN)
///      rt_sigprocmask(SIG_SETMASK, &MASK, NULL, 8)
///      mov rsp, [rip + RSP_TMP]    ; below the red zone of the task's stack
///      push qword [rip + RFLAGS]
///      popfq
///      mov rax, [rip + RAX] ... mov r15, [rip + R15]
///      mov rsp, [rip + RSP]
///      jmp qword [rip + RIP]
/// ```
const CODE: [u8; CODE_LEN] = [
    0x0f, 0x05, 0x48, 0x89, 0xc7, 0x48, 0x8b, 0x0d, 0xa4, 0x01, 0x00, 0x00, 0x48, 0x83, 0xf9, 0x01,
    0x75, 0x12, 0x48, 0x81, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x77, 0x26, 0xb8, 0x03, 0x00, 0x00, 0x00,
    0x0f, 0x05, 0xeb, 0x1d, 0x48, 0x83, 0xf9, 0x02, 0x75, 0x17, 0x48, 0x81, 0xff, 0x01, 0xf0, 0xff,
    0xff, 0x73, 0x0e, 0x48, 0x8b, 0x35, 0x8e, 0x01, 0x00, 0x00, 0xb8, 0x0b, 0x00, 0x00, 0x00, 0x0f,
    0x05, 0x48, 0x8b, 0x3d, 0x70, 0x01, 0x00, 0x00, 0x48, 0x85, 0xff, 0x78, 0x07, 0xb8, 0x03, 0x00,
    0x00, 0x00, 0x0f, 0x05, 0x48, 0x8b, 0x3d, 0x65, 0x01, 0x00, 0x00, 0x48, 0x85, 0xff, 0x74, 0x0e,
    0x48, 0x8b, 0x35, 0x61, 0x01, 0x00, 0x00, 0xb8, 0x0b, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xb8, 0x0e,
    0x00, 0x00, 0x00, 0xbf, 0x02, 0x00, 0x00, 0x00, 0x48, 0x8d, 0x35, 0x91, 0x00, 0x00, 0x00, 0x31,
    0xd2, 0x41, 0xba, 0x08, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x8b, 0x25, 0x88, 0x00, 0x00, 0x00,
    0xff, 0x35, 0x8a, 0x00, 0x00, 0x00, 0x9d, 0x48, 0x8b, 0x05, 0x8a, 0x00, 0x00, 0x00, 0x48, 0x8b,
    0x1d, 0x8b, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x0d, 0x8c, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x15, 0x8d,
    0x00, 0x00, 0x00, 0x48, 0x8b, 0x35, 0x8e, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x3d, 0x8f, 0x00, 0x00,
    0x00, 0x48, 0x8b, 0x2d, 0x90, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x05, 0x91, 0x00, 0x00, 0x00, 0x4c,
    0x8b, 0x0d, 0x92, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x15, 0x93, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x1d,
    0x94, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x25, 0x95, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x2d, 0x96, 0x00,
    0x00, 0x00, 0x4c, 0x8b, 0x35, 0x97, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x3d, 0x98, 0x00, 0x00, 0x00,
    0x48, 0x8b, 0x25, 0x99, 0x00, 0x00, 0x00, 0xff, 0x25, 0x9b, 0x00, 0x00, 0x00, 0xcc, 0xcc, 0xcc,
];
const CODE_LEN: usize = 272;
/// Where the way home starts, right after the call's `syscall`.
const BACK_OFFSET: u64 = 2;
/// The data the code loads, in this order, right after the code: the
/// signal mask, the stack pointer used for `popfq`, rflags, rax, rbx,
/// rcx, rdx, rsi, rdi, rbp, r8 to r15, rsp, rip; then what to undo:
/// RESULT_UNDO, CLOSE_FD, UNMAP_ADDR, UNMAP_LEN.
const DATA_WORDS: usize = 24;
const HOME_WORDS: usize = 20;
const SLOT_LEN: usize = CODE_LEN + 8 * DATA_WORDS;
/// Slots a checkpoint uses at once: the main thread's, and one for the
/// other threads, which it takes in turn.
pub const SLOTS: usize = 2;
/// Room left after the vdso image before the first slot.
const MARGIN: usize = 64;
/// `popfq` runs on the task's own stack, below the 128-byte red zone a
/// leaf function may be using.
const BELOW_RED_ZONE: u64 = 256;
/// Bigger than any vdso: a mapping this large is not one we understand.
const MAX_VDSO: u64 = 64 * 1024;

/// One slot of a task's lifeline: where its remote calls run.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// The `syscall` instruction remote calls run from.
    pub syscall_ip: u64,
    /// Where a task goes when its tracer is gone after a call.
    pub back_ip: u64,
    data: u64,
}

impl Slot {
    /// Write where the task goes home to: `home`'s registers and `mask`,
    /// with nothing to undo.
    pub(super) fn set_home(
        &self,
        mem: &mut ProcMem,
        home: &Regs,
        mask: u64,
    ) -> Result<(), ProcMemError> {
        let words: [u64; HOME_WORDS] = [
            mask,
            home.rsp.wrapping_sub(BELOW_RED_ZONE),
            home.eflags,
            home.rax,
            home.rbx,
            home.rcx,
            home.rdx,
            home.rsi,
            home.rdi,
            home.rbp,
            home.r8,
            home.r9,
            home.r10,
            home.r11,
            home.r12,
            home.r13,
            home.r14,
            home.r15,
            home.rsp,
            home.rip,
        ];
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        bytes.extend(Undo::default().words().iter().flat_map(|w| w.to_ne_bytes()));
        mem.write(self.data, &bytes)
    }

    /// Write what the way home undoes first.
    pub(super) fn set_undo(&self, mem: &mut ProcMem, undo: &Undo) -> Result<(), ProcMemError> {
        let bytes: Vec<u8> = undo.words().iter().flat_map(|w| w.to_ne_bytes()).collect();
        mem.write(self.data + 8 * HOME_WORDS as u64, &bytes)
    }
}

/// What a task sent home by its lifeline undoes first: the things our
/// remote calls made in it that it must not keep (the scratch mapping, a
/// userfaultfd taken over). Only one task of a process ever holds an
/// undo, so nothing is undone twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Undo {
    /// What to undo of the result of the call being made.
    pub result: ResultUndo,
    /// An fd our calls opened in the task.
    pub close: Option<i32>,
    /// A mapping our calls made in the task (address, length); the length
    /// also serves [`ResultUndo::Unmap`].
    pub unmap: Option<(u64, u64)>,
}

/// The call being made creates something: undo it from its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResultUndo {
    #[default]
    Nothing,
    /// The result is an fd: close it.
    Close,
    /// The result is a mapping of this length: unmap it.
    Unmap(u64),
}

impl Undo {
    fn words(&self) -> [u64; DATA_WORDS - HOME_WORDS] {
        let (result, result_len) = match self.result {
            ResultUndo::Nothing => (0, 0),
            ResultUndo::Close => (1, 0),
            ResultUndo::Unmap(len) => (2, len),
        };
        let (addr, len) = self.unmap.unwrap_or((0, result_len));
        [
            result,
            self.close.map_or(u64::MAX, |fd| fd as u64),
            addr,
            len,
        ]
    }
}

/// The lifeline code written into one process's vdso padding.
#[derive(Debug)]
pub struct Lifeline {
    pid: i32,
    start: u64,
}

impl Lifeline {
    /// Write the lifeline into the padding of the vdso at `vdso` of the
    /// process behind `mem`, frozen. None when there is no room (or the
    /// write fails): remote calls then go unguarded.
    pub fn install(mem: &mut ProcMem, vdso: (u64, u64)) -> Option<Self> {
        let pid = mem.pid();
        let len = vdso.1.checked_sub(vdso.0).filter(|&l| l <= MAX_VDSO)?;
        let mut image = vec![0u8; len as usize];
        if let Err(err) = mem.read(vdso.0, &mut image) {
            tracing::debug!(pid, %err, "no lifeline: the vdso is unreadable");
            return None;
        }
        let Some(offset) = free_tail(&image) else {
            tracing::debug!(pid, "no lifeline: no room after the vdso image");
            return None;
        };
        let code: Vec<u8> = (0..SLOTS)
            .flat_map(|_| CODE.iter().copied().chain([0u8; 8 * DATA_WORDS]))
            .collect();
        let start = vdso.0 + offset as u64;
        // A lifeline a dead checkpointer left may still be some thread's
        // way home (one in a job-control stop since, that has not run
        // again): take it home now, as its way would have, before the
        // region is written anew. Every thread is in a ptrace stop here.
        let region = start..start + (SLOTS * SLOT_LEN) as u64;
        for tid in crate::procfs::ProcDir::new(pid).tasks().unwrap_or_default() {
            let Ok(regs) = crate::ptrace::get_regs(tid) else {
                continue;
            };
            if !region.contains(&regs.rip) {
                continue;
            }
            let slot = (regs.rip - start) as usize / SLOT_LEN;
            if let Err(err) = take_home(mem, tid, &regs, start + (slot * SLOT_LEN) as u64) {
                tracing::warn!(pid, tid, %err, "no lifeline: could not take home a thread left on its way by an earlier checkpointer");
                return None;
            }
        }
        if let Err(err) = mem.write(start, &code) {
            tracing::debug!(pid, %err, "no lifeline: the vdso padding is not writable");
            return None;
        }
        Some(Self { pid, start })
    }

    pub fn slot(&self, i: usize) -> Slot {
        assert!(i < SLOTS, "lifeline slot {i} of {SLOTS}");
        let at = self.start + (i * SLOT_LEN) as u64;
        Slot {
            syscall_ip: at,
            back_ip: at + BACK_OFFSET,
            data: at + CODE_LEN as u64,
        }
    }

    /// Zero the padding again, once every task is back on its own. A
    /// failure leaves unreachable bytes there, and is only logged.
    pub fn clear(self, mem: &mut ProcMem) {
        debug_assert_eq!(mem.pid(), self.pid);
        if let Err(err) = mem.write(self.start, &[0u8; SLOTS * SLOT_LEN]) {
            tracing::warn!(pid = self.pid, %err, "could not clear the lifeline from the vdso padding");
        }
    }
}

/// Do for `tid`, stopped on its way home at `regs` in the slot at
/// `slot`, what that way does: registers, flags and signal mask back from
/// the slot's data. What it was to undo (a userfaultfd fd, a scratch
/// mapping of the dead checkpointer) is left, and said.
fn take_home(mem: &mut ProcMem, tid: i32, regs: &Regs, slot: u64) -> Result<(), String> {
    let mut data = [0u8; 8 * DATA_WORDS];
    mem.read(slot + CODE_LEN as u64, &mut data)
        .map_err(|e| e.to_string())?;
    let w: Vec<u64> = data
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let home = Regs {
        eflags: w[2],
        rax: w[3],
        rbx: w[4],
        rcx: w[5],
        rdx: w[6],
        rsi: w[7],
        rdi: w[8],
        rbp: w[9],
        r8: w[10],
        r9: w[11],
        r10: w[12],
        r11: w[13],
        r12: w[14],
        r13: w[15],
        r14: w[16],
        r15: w[17],
        rsp: w[18],
        rip: w[19],
        orig_rax: u64::MAX,
        ..*regs
    };
    if w[20] != 0 || w[21] != u64::MAX || w[22] != 0 {
        tracing::warn!(
            tid,
            result_undo = w[20],
            fd = w[21] as i64,
            mapping = w[22],
            "an fd or mapping of a checkpointer that died stays in this task"
        );
    }
    // The mask first: until the registers are home, the way home is still
    // there (and sets the same mask again).
    crate::ptrace::set_sigmask(tid, w[0]).map_err(|e| e.to_string())?;
    crate::ptrace::set_regs(tid, &home).map_err(|e| e.to_string())?;
    tracing::info!(
        tid,
        rip = home.rip,
        "took home a thread an earlier checkpointer left on its way"
    );
    Ok(())
}

/// Offset in the vdso `image` where [`SLOTS`] slots fit after the end of
/// everything the ELF image describes (program and section headers and
/// what they cover): bytes that are zero, or a lifeline a checkpointer
/// killed earlier left there.
fn free_tail(image: &[u8]) -> Option<usize> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(image.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(image.get(o..o + 8)?.try_into().ok()?));
    if image.get(..4) != Some(b"\x7fELF".as_slice()) || image.get(4) != Some(&2) {
        return None;
    }
    let phoff = u64_at(0x20)? as usize;
    let shoff = u64_at(0x28)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let mut end = shoff.checked_add(shnum.checked_mul(shentsize)?)?;
    end = end.max(phoff.checked_add(phnum.checked_mul(phentsize)?)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let covered = u64_at(ph + 8)?.checked_add(u64_at(ph + 32)?)?;
        end = end.max(usize::try_from(covered).ok()?);
    }
    let start = (end + MARGIN).next_multiple_of(64);
    let tail = image.get(start..start.checked_add(SLOTS * SLOT_LEN)?)?;
    let free = tail.iter().all(|&b| b == 0) || tail.starts_with(&CODE);
    free.then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data offsets the code's rip-relative operands reach: (where
    /// the instruction starts, its length, the word it must reach).
    #[test]
    fn code_reaches_the_words_in_the_documented_order() {
        let disp = |at: usize| i32::from_le_bytes(CODE[at..at + 4].try_into().unwrap()) as usize;
        let mut operands = vec![
            (5, 7, 20),  // RESULT_UNDO
            (51, 7, 23), // UNMAP_LEN
            (65, 7, 21), // CLOSE_FD
            (84, 7, 22), // UNMAP_ADDR
            (96, 7, 23), // UNMAP_LEN
            (120, 7, 0), // lea rsi, MASK
            (137, 7, 1), // RSP_TMP
            (144, 6, 2), // push RFLAGS
        ];
        // rax, rbx, rcx, rdx, rsi, rdi, rbp, r8 .. r15, rsp: 7-byte loads.
        operands.extend((0..16).map(|k| (151 + 7 * k, 7, 3 + k)));
        operands.push((263, 6, 19)); // jmp RIP
        for (start, len, word) in operands {
            let end = start + len;
            assert_eq!(
                end + disp(end - 4),
                CODE_LEN + 8 * word,
                "operand at {start}"
            );
        }
        assert_eq!(SLOT_LEN % 8, 0);
    }

    #[test]
    fn the_tail_after_this_process_vdso_has_room() {
        let me = std::process::id() as i32;
        let vdso = crate::procfs::ProcDir::new(me)
            .maps()
            .unwrap()
            .into_iter()
            .find(|m| matches!(m.path, crate::procfs::MapsPath::Vdso))
            .expect("a vdso");
        let (a, b) = (vdso.start, vdso.end);
        let mut mem = ProcMem::new(me, false);
        let mut image = vec![0u8; (b - a) as usize];
        mem.read(a, &mut image).unwrap();
        let start = free_tail(&image).expect("room after the vdso image");
        assert!(image[start..].iter().all(|&x| x == 0));
        // A lifeline left behind is room too; anything else is not.
        image[start..start + CODE_LEN].copy_from_slice(&CODE);
        assert_eq!(free_tail(&image), Some(start));
        image[start] = 0x90;
        assert_eq!(free_tail(&image), None);
    }
}
