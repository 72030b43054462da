//! The swap: each node of the built tree, seized from outside, gets the
//! saved process's address space and state in place of its own, through
//! the gadget mapped where the saved layout has a hole.

use super::error::Result;
use super::node::GADGET_LEN;
use crate::creds::Creds;
use crate::memory::shmem::MapTarget;
use crate::memory::{self, MmImage, PAGE_SIZE};
use crate::procfs::{self, MapsPath};
use crate::procmem::ProcMem;
use crate::ptrace::{self, PtraceError, Stop};
use crate::remote::{RemoteTask, Scratch};
use crate::snapshot::ProcessImage;
use crate::{creds, signals, thread};
use std::time::Instant;

/// What a swap leaves the restorer: the threads it made, with `lazy` the
/// uffd its lazy mappings are registered with, and the pages to fill (by
/// the restorer's fillers: the swap runs on a tracer thread, which hands
/// them over when it answers).
pub(super) struct Swapped<'a> {
    pub threads: Vec<i32>,
    pub uffd: Option<std::os::fd::OwnedFd>,
    pub fill: Vec<memory::fill::FillJob<'a>>,
}

/// Replace the node's address space and state with the saved process's.
/// With `lazy` (the image), its private anonymous mappings are registered for the
/// page server instead of filled (see `memory::lazy`).
// One function over ~80 lines, on purpose: the order of its steps is the
// point (mappings before the user namespace, handlers before signals,
// threads before timers, credentials last), and it reads top to bottom.
pub(super) fn swap<'a>(
    pid: i32,
    gadget: u64,
    p: &'a ProcessImage,
    shmem_targets: &[MapTarget],
    current: &Creds,
    lazy: Option<&crate::image::ImageReader>,
) -> Result<Swapped<'a>> {
    let mm =
        p.mm.as_ref()
            .expect("validated: live processes have memory");
    // One stop per call until the handlers are set (see `stepping`).
    let task = RemoteTask::with_trap(pid, gadget)?;
    let scratch = Scratch {
        addr: gadget + PAGE_SIZE,
        len: (GADGET_LEN - PAGE_SIZE) as usize,
    };
    let mut mem = ProcMem::new(pid, true);

    let here = procfs::ProcDir::new(pid).maps()?;
    let rseq = ptrace::get_rseq(pid)?;
    task.syscall_batch(
        &mut mem,
        &scratch,
        0,
        gadget + crate::remote::BATCH_OFFSET,
        &leave_node_calls(&here, gadget, rseq),
    )?;
    // From here the task opens files (its mappings, its executable) as
    // the saved process would.
    creds::take_fs_identity(&task, &mut mem, &scratch, &p.creds, current)?;
    let t0 = Instant::now();
    memory::move_vdso(&task, pid, mm, &here)?;
    memory::map_all(
        &task,
        &mut mem,
        &scratch,
        gadget + crate::remote::BATCH_OFFSET,
        mm,
        &|i| shmem_targets[i].clone(),
        memory::FsIds {
            saved: p.creds.uid[3],
            restorer: current.uid[3],
        },
    )?;
    let t_map = t0.elapsed();
    // Right after the mappings exist and before anything can forbid it
    // (credentials, seccomp filters, a user namespace): nothing from here
    // to the release reads or writes the program's anonymous memory, so
    // no fault waits for a server that does not run yet.
    let uffd = match lazy {
        Some(reader) => {
            // Besides what the kernel writes (rseq areas), the command
            // line and environment: other processes read them through
            // the kernel (`ps`, `pgrep -f`, /proc/PID/cmdline), whose
            // remote reads do not wait for a page server and read empty.
            let f = &mm.fields;
            let mut touched: Vec<(u64, u64)> = p
                .threads
                .iter()
                .filter_map(|t| t.rseq.as_ref().map(|r| (r.addr, r.len as u64)))
                .collect();
            touched.push((f.arg_start, f.env_end.saturating_sub(f.arg_start)));
            memory::lazy::fill_touched(&mut mem, &mm.vmas, &touched, reader)?;
            memory::lazy::register(&task, pid, &mm.vmas)?
        }
        None => None,
    };
    // Eager: a uffd to copy the pages in through, made now, while the
    // target may still make one (the restorer's credentials, no seccomp
    // filter), and armed at the end of the swap.
    let fill_uffd = match lazy {
        Some(_) => None,
        None => memory::fill::open(&task, pid, &mm.vmas)?,
    };
    // A user namespace in which it holds capabilities: made now, while it
    // is one thread and root, after the mappings of the restorer's shared
    // memory; its supplementary groups first (the namespace may deny
    // setgroups).
    let recreated_user = p
        .namespaces
        .as_ref()
        .and_then(|n| n.user.as_ref())
        .filter(|u| u.recreate);
    let after_unshare;
    let current = match recreated_user {
        Some(user) => {
            creds::set_groups(&task, &mut mem, &scratch, &p.creds.groups)?;
            crate::namespaces::recreate_user(
                &task,
                pid,
                user,
                current.uid[1] == 0,
                p.creds.gid[1],
            )?;
            after_unshare = creds::Creds {
                groups: p.creds.groups.clone(),
                ..current.clone()
            };
            &after_unshare
        }
        None => current,
    };
    memory::set_mm_fields(&task, &mut mem, &scratch, mm)?;
    let task = task.stepping();
    signals::restore_actions(&task, &mut mem, &scratch, &p.sigactions)?;
    // The other threads: created by the main one (so they share its mm,
    // files and handlers), each then given its own state. Credentials are
    // per thread, so each sets its own, last.
    let mut created = Vec::new();
    if p.threads.len() > 1 {
        // EXITKILL again: the options are replaced as a whole (threads
        // created now inherit them).
        ptrace::set_options(pid, libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_EXITKILL)?;
    }
    for t in &p.threads[1..] {
        let tid =
            thread::create(&task, &mut mem, &scratch, t.tid, &t.ns_tids).map_err(|e| match e {
                crate::remote::RemoteError::Syscall {
                    errno: libc::EEXIST,
                    ..
                } => super::error::RestoreError::ThreadIdTaken {
                    pid,
                    tid: t.tid,
                    nested: t.ns_tids.clone(),
                    holder: super::lock::holder_of(t.tid),
                },
                e => e.into(),
            })?;
        created.push(tid);
        let tt = RemoteTask::new(tid, gadget)?;
        thread::restore(&tt, &mut mem, &scratch, t)?;
        // Named as the process sees itself (a nested pid namespace).
        let (own_pid, own_tid) = (p.own_tid(p.pid), p.own_tid(t.tid));
        signals::requeue(&tt, &mut mem, &scratch, own_pid, Some(own_tid), &t.pending)?;
        let own = t.creds.as_ref().unwrap_or(&p.creds);
        crate::seccomp::restore(&tt, &mut mem, &p.seccomp_filters, &t.seccomp)?;
        creds::restore(&tt, &mut mem, &scratch, own, current)?;
        tt.finish_with(
            libc::SYS_getpid,
            [0; 6],
            &t.regs.with_syscall_restart(),
            t.sigmask,
        )?;
    }
    // Before any signal is queued: the helper thread it takes must not
    // take one of them.
    crate::gone_dir::enter(&task, &mut mem, &scratch, gadget, p)?;
    tracing::trace!(pid, vmas = mm.vmas.len(), ?t_map, t_threads = ?t0.elapsed(), "swapped");
    // After the threads: a timer may signal one of them.
    // Thread targets named as the process sees them.
    let mut timers = p.timers.clone();
    for t in &mut timers.posix {
        t.target = p.own_tid(t.target);
    }
    crate::timers::restore(&task, &mut mem, &scratch, &timers)?;
    let th = &p.threads[0];
    thread::restore(&task, &mut mem, &scratch, th)?;
    let own_pid = p.own_tid(p.pid);
    signals::requeue(&task, &mut mem, &scratch, own_pid, None, &p.shared_pending)?;
    signals::requeue(
        &task,
        &mut mem,
        &scratch,
        own_pid,
        Some(own_pid),
        &th.pending,
    )?;
    // Its filters just before its credentials: see `seccomp`.
    crate::seccomp::restore(&task, &mut mem, &p.seccomp_filters, &th.seccomp)?;
    creds::restore(&task, &mut mem, &scratch, &p.creds, current)?;
    let regs = th.regs.with_syscall_restart();
    task.finish_with(
        libc::SYS_munmap,
        [gadget, GADGET_LEN, 0, 0, 0, 0],
        &regs,
        th.sigmask,
    )?;
    // The pages go in on the fillers' threads, while every task of the
    // process stays stopped until the release: with a uffd registered
    // only now, no fault can wait on a page not yet in.
    let fill_uffd = fill_uffd.and_then(|u| memory::fill::arm(u, pid, &mm.vmas));
    let fill = mm
        .vmas
        .iter()
        .filter(|v| uffd.is_none() || !memory::lazy::is_lazy(v))
        .flat_map(|v| memory::fill::fill_jobs(pid, v, fill_uffd.as_ref()))
        .collect();
    Ok(Swapped {
        threads: created,
        uffd,
        fill,
    })
}

/// What the node drops before the saved process comes in, as one batch of
/// calls (one stop, where a call each cost a ptrace round trip each: a
/// node's copy of the restorer has some 35 mappings): its parent-death
/// signal, its rseq area, and every mapping but the gadget and the vdso.
fn leave_node_calls(
    here: &[procfs::MapsEntry],
    gadget: u64,
    rseq: Option<ptrace::Rseq>,
) -> Vec<(&'static str, i64, [u64; 6])> {
    // The node was born to die with its parent; the program was not (the
    // image does not record a parent-death signal: none is set). EXITKILL
    // covers it from here to the release.
    let mut calls = vec![(
        "prctl(PR_SET_PDEATHSIG)",
        libc::SYS_prctl,
        [libc::PR_SET_PDEATHSIG as u64, 0, 0, 0, 0, 0],
    )];
    // The node's glibc registered rseq; the area is about to disappear.
    if let Some(r) = rseq {
        const RSEQ_FLAG_UNREGISTER: u64 = 1;
        calls.push((
            "rseq(unregister)",
            libc::SYS_rseq,
            [
                r.addr,
                r.len as u64,
                RSEQ_FLAG_UNREGISTER,
                r.signature as u64,
                0,
                0,
            ],
        ));
    }
    let munmap =
        |(start, end): (u64, u64)| ("munmap", libc::SYS_munmap, [start, end - start, 0, 0, 0, 0]);
    calls.extend(unmapped_runs(here, gadget).into_iter().map(munmap));
    calls
}

/// The spans to unmap to drop every mapping of `here` (sorted, as
/// /proc lists them) but the gadget and the vdso's: each run of
/// neighbouring mappings to drop is one span, the holes between them
/// included (unmapping nothing there).
fn unmapped_runs(here: &[procfs::MapsEntry], gadget: u64) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut open = false;
    for m in here {
        let keep = matches!(
            m.path,
            MapsPath::Vdso | MapsPath::Vvar | MapsPath::VvarVclock | MapsPath::Vsyscall
        ) || (m.start >= gadget && m.end <= gadget + GADGET_LEN);
        if keep {
            open = false;
        } else if let (true, Some(run)) = (open, runs.last_mut()) {
            run.1 = m.end;
        } else {
            runs.push((m.start, m.end));
            open = true;
        }
    }
    runs
}

pub(super) fn wait_event_stop(pid: i32) -> Result<()> {
    loop {
        match ptrace::wait(pid)? {
            (Stop::Event { .. }, _) => return Ok(()),
            // Any ptrace stop clears the pending interrupt: ask again.
            (Stop::Signal(sig), _) => {
                ptrace::cont(pid, sig)?;
                ptrace::interrupt(pid)?;
            }
            (Stop::Syscall, _) => {
                ptrace::cont(pid, 0)?;
                ptrace::interrupt(pid)?;
            }
            (_, status) => {
                return Err(PtraceError::UnexpectedStop {
                    tid: pid,
                    status,
                    during: "seizing a restored task",
                }
                .into())
            }
        }
    }
}

/// Holes of a saved layout where the gadget may go.
pub(super) fn gadget_candidates(mm: &MmImage) -> Vec<u64> {
    let mut spans: Vec<(u64, u64)> = mm.vmas.iter().map(|v| (v.start, v.end)).collect();
    spans.sort_unstable();
    let mut out = Vec::new();
    let mut prev_end = 0x1_0000_0000u64; // stay above the low 4 GiB, where binaries live
    let guard = 16 * PAGE_SIZE;
    for &(start, end) in spans
        .iter()
        .chain(std::iter::once(&(0x7fff_ffff_0000, 0x7fff_ffff_0000)))
    {
        if start > prev_end + 2 * guard + GADGET_LEN {
            // Try a few places in each hole: the restorer's own mappings
            // (which the node still has) may sit in some of them.
            let hole = start - prev_end;
            for frac in [1u64, 2, 3] {
                let addr = (prev_end + hole * frac / 4) & !(PAGE_SIZE - 1);
                if addr >= prev_end + guard && addr + GADGET_LEN + guard <= start {
                    out.push(addr);
                }
            }
        }
        prev_end = prev_end.max(end);
        if out.len() >= 24 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: u64, end: u64, path: MapsPath) -> procfs::MapsEntry {
        procfs::MapsEntry {
            start,
            end,
            read: true,
            write: false,
            exec: false,
            shared: false,
            offset: 0,
            dev_major: 0,
            dev_minor: 0,
            inode: 0,
            path,
        }
    }

    #[test]
    fn the_node_is_unmapped_in_runs_around_the_gadget_and_the_vdso() {
        let gadget = 0x7000_0000;
        let file = || MapsPath::File {
            path: "/usr/bin/hiber".into(),
            deleted: false,
        };
        let here = [
            entry(0x5000, 0x6000, file()),
            entry(0x6000, 0x9000, file()),
            entry(0x10000, 0x11000, MapsPath::Heap),
            entry(gadget, gadget + GADGET_LEN, MapsPath::Anonymous),
            entry(0x7100_0000, 0x7100_1000, MapsPath::Anonymous),
            entry(0x7ff0_0000, 0x7ff2_0000, MapsPath::Stack),
            entry(0x7ff3_0000, 0x7ff3_4000, MapsPath::Vvar),
            entry(0x7ff3_4000, 0x7ff3_6000, MapsPath::Vdso),
            entry(0x7ff4_0000, 0x7ff4_1000, MapsPath::Anonymous),
            entry(
                0xffff_ffff_ff60_0000,
                0xffff_ffff_ff60_1000,
                MapsPath::Vsyscall,
            ),
        ];
        assert_eq!(
            unmapped_runs(&here, gadget),
            [
                (0x5000, 0x11000),
                (0x7100_0000, 0x7ff2_0000),
                (0x7ff4_0000, 0x7ff4_1000)
            ]
        );
        let calls = leave_node_calls(&here, gadget, None);
        assert_eq!(calls[0].0, "prctl(PR_SET_PDEATHSIG)");
        assert_eq!(calls.len(), 4);
        assert_eq!(calls[1].2[..2], [0x5000, 0x11000 - 0x5000]);
    }

    #[test]
    fn nothing_is_unmapped_when_only_kept_mappings_are_left() {
        let gadget = 0x7000_0000;
        let here = [
            entry(gadget, gadget + GADGET_LEN, MapsPath::Anonymous),
            entry(0x7ff3_4000, 0x7ff3_6000, MapsPath::Vdso),
        ];
        assert!(unmapped_runs(&here, gadget).is_empty());
    }
}
