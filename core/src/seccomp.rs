//! Seccomp filters: a sandboxed program (a browser's zygote and content
//! processes, a portal, systemd's services) runs under classic BPF filters
//! that the kernel gives no way to read from inside and no way to remove.
//!
//! While we trace, the filters are suspended (`PTRACE_O_SUSPEND_SECCOMP`,
//! see `ptrace`): a filter that traps `getpid` would otherwise answer our
//! remote calls with SIGSYS. At checkpoint each thread's chain is read
//! through ptrace (`PTRACE_SECCOMP_GET_FILTER`, with its flags from
//! `PTRACE_GET_SECCOMP_METADATA`); threads share their chain when a
//! filter was installed with TSYNC or before they were created, so the
//! image holds each distinct filter once per process and each thread the
//! list of its own, oldest first.
//!
//! At restore each thread installs its chain, oldest first, just before
//! its credentials: still privileged, so no `NO_NEW_PRIVS` is needed (it
//! comes back with the credentials when the program had set it), and
//! still traced with the filters suspended, so the restore's last calls
//! are not filtered. A filter only ever takes rights away from the
//! process that holds it: an image's filters cannot make the restore
//! reach anything beyond the restored processes.

use crate::procmem::ProcMem;
use crate::ptrace::{self, PtraceError};
use crate::remote::{RemoteError, RemoteTask, Scratch};
use serde::{Deserialize, Serialize};

/// One classic BPF instruction (`struct sock_filter`) is 8 bytes.
pub const INSN_LEN: usize = 8;
/// The kernel's BPF_MAXINSNS: the longest filter it installs.
pub const MAX_INSNS: usize = 4096;
/// Filter flags that describe a filter rather than act once at install:
/// SECCOMP_FILTER_FLAG_LOG and SECCOMP_FILTER_FLAG_SPEC_ALLOW.
pub const KEPT_FLAGS: u64 = 2 | 4;
/// A chain longer than this is not a program's sandbox.
pub const MAX_CHAIN: usize = 256;

/// One installed filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// `SECCOMP_FILTER_FLAG_*` it was installed with (those in
    /// [`KEPT_FLAGS`]).
    pub flags: u64,
    /// Its instructions, as the kernel reports them.
    #[serde(with = "hex::serde")]
    pub program: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("tid {tid}: reading its seccomp filter {index}")]
    Read {
        tid: i32,
        index: u64,
        #[source]
        source: PtraceError,
    },
    #[error("tid {tid} has more than {MAX_CHAIN} seccomp filters")]
    TooMany { tid: i32 },
}

/// The chain of a stopped thread `tid`, oldest first, as indices into the
/// process's `table` (filters new to it are added).
pub fn checkpoint(tid: i32, table: &mut Vec<Filter>) -> Result<Vec<u32>, SeccompError> {
    let mut newest_first = Vec::new();
    for index in 0.. {
        let read = ptrace::seccomp_filter(tid, index).map_err(|source| SeccompError::Read {
            tid,
            index,
            source,
        })?;
        let Some((program, flags)) = read else { break };
        if newest_first.len() == MAX_CHAIN {
            return Err(SeccompError::TooMany { tid });
        }
        let filter = Filter {
            flags: flags & KEPT_FLAGS,
            program,
        };
        let at = match table.iter().position(|f| *f == filter) {
            Some(i) => i,
            None => {
                table.push(filter);
                table.len() - 1
            }
        };
        newest_first.push(at as u32);
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// Install `chain` (indices into `table`, oldest first) in the traced
/// thread behind `task`. The programs go into a mapping of their own:
/// the longest is 32 KiB, more than the restore's scratch holds.
pub fn restore(
    task: &RemoteTask,
    mem: &mut ProcMem,
    table: &[Filter],
    chain: &[u32],
) -> Result<(), RemoteError> {
    if chain.is_empty() {
        return Ok(());
    }
    let longest = chain
        .iter()
        .map(|&i| table[i as usize].program.len())
        .max()
        .unwrap_or(0);
    // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    const FPROG_LEN: usize = 16;
    let area = Scratch::map(task, mem, longest + FPROG_LEN)?;
    let installed = (|| -> Result<(), RemoteError> {
        for &i in chain {
            let filter = &table[i as usize];
            let program = area.write(mem, FPROG_LEN, &filter.program)?;
            let mut fprog = [0u8; FPROG_LEN];
            let count = (filter.program.len() / INSN_LEN) as u16;
            fprog[..2].copy_from_slice(&count.to_ne_bytes());
            fprog[8..].copy_from_slice(&program.to_ne_bytes());
            let fprog_addr = area.write(mem, 0, &fprog)?;
            task.syscall(
                "seccomp(SECCOMP_SET_MODE_FILTER)",
                libc::SYS_seccomp,
                [
                    libc::SECCOMP_SET_MODE_FILTER as u64,
                    filter.flags,
                    fprog_addr,
                    0,
                    0,
                    0,
                ],
            )?;
        }
        Ok(())
    })();
    let unmapped = area.unmap(task, mem);
    installed?;
    unmapped
}
