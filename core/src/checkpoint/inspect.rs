//! Inspection: what every process of the frozen set is, read from /proc
//! and, through remote calls, from inside (registers, signal handlers,
//! timers); each refusal goes into the report.

use super::error::Result;
use crate::creds::Creds;
use crate::devices::DevicePolicies;
use crate::files::{FileKind, FileTable};
use crate::freeze::{Frozen, FrozenProcess};
use crate::memory::shmem::ShmemTable;
use crate::memory::{self, MmFields, MmImage};
use crate::policy::{Policy, ProcessSummary, Report, Subject};
use crate::precopy;
use crate::procfs::{MapsPath, ProcDir};
use crate::procmem::ProcMem;
use crate::ptrace;
use crate::remote::{self, Lifeline, RemoteError, RemoteTask, Scratch};
use crate::snapshot::{ProcessImage, Rlimit, Snapshot};
use crate::{signals, thread};
use std::path::PathBuf;

/// Size of the scratch area mapped in a task for remote calls.
pub const SCRATCH_LEN: usize = 4 * 4096;

/// What was learned about the set while frozen, before any page is read.
#[derive(Debug)]
pub(super) struct Inspection {
    pub snapshot: Snapshot,
    pub files: FileTable,
    pub shmem: ShmemTable,
}

pub(super) fn rlimits(pid: i32) -> Result<Vec<Rlimit>> {
    Ok(ProcDir::new(pid)
        .limits()?
        .into_iter()
        .enumerate()
        .map(|(resource, (cur, max))| Rlimit {
            resource: resource as u32,
            cur,
            max,
        })
        .collect())
}

/// A process left out of the image: the report says why.
pub(super) struct Refused;

/// The steps of [`inspect_process`] that may refuse the process.
pub(super) type Step<T> = std::result::Result<T, Refused>;

// Long because: the steps in order, each named, and the image record they
// fill; each step that may refuse the process ends it with a `let … else`,
// which split into pieces would be passed back and matched again.
pub(super) fn inspect_process(
    fp: &FrozenProcess,
    flags: Option<&crate::procfs::FlagsHint>,
    devices: &DevicePolicies,
    files: &mut FileTable,
    shmem: &mut ShmemTable,
    report: &mut Report,
) -> Result<Option<ProcessImage>> {
    let pid = fp.pid;
    let dir = ProcDir::new(pid);
    let stat = dir.stat()?;
    let status = dir.status()?;
    report.processes.push(ProcessSummary {
        pid,
        ppid: fp.ppid,
        comm: stat.comm.clone(),
        threads: fp.threads.len(),
        zombie: fp.zombie,
    });
    let base = base_image(fp, &stat, &status);
    if fp.zombie {
        report.add(
            pid,
            Subject::Process,
            "zombie",
            Policy::Restore,
            "recreated as a zombie with its exit status",
        );
        return Ok(Some(ProcessImage {
            zombie_status: Some(stat.exit_code),
            ..base
        }));
    }
    let Ok(live_threads) = live_threads(fp, &dir, &stat.comm, report) else {
        return Ok(None);
    };
    let Ok(namespaces) = namespaces_of(fp, &dir, &status, report)? else {
        return Ok(None);
    };
    let t0 = std::time::Instant::now();
    let smaps = dir.smaps_hinted(flags)?;
    refuse_left_out_mappings(pid, &smaps, files, report);
    let vmas = memory::classify(pid, &smaps, shmem, devices, report);
    let t_mem = t0.elapsed();
    let fds = files.collect(pid, shmem, report)?;
    if let Some(ns) = &namespaces {
        report_namespaces(pid, ns, &status.ns_pid, &fds, files, report);
    }
    let t_files = t0.elapsed();
    let locks = crate::locks::checkpoint(pid, &files.lock_lines, report);
    let (cwd, root, cwd_gone, root_gone) = cwd_and_root(pid, &dir, report)?;
    let exe = dir
        .exe()
        .ok()
        .filter(|e| !e.to_string_lossy().ends_with(" (deleted)"));
    let Ok(()) = seccomp_allowed(pid, status.seccomp, report) else {
        return Ok(None);
    };
    let Ok((brk, sigactions, mut threads, timers)) =
        inspect_from_inside(pid, &smaps, &status, &live_threads, report)?
    else {
        return Ok(None);
    };
    let Ok(seccomp_filters) = thread_seccomp(pid, &status, &base.creds, &mut threads, report)?
    else {
        return Ok(None);
    };
    let shared_pending = ptrace::peek_siginfo(pid, true).map_err(RemoteError::from)?;
    tracing::trace!(pid, ?t_mem, ?t_files, total = ?t0.elapsed(), "inspected process");
    let ctty = (stat.session == pid)
        .then(|| crate::files::pty::pty_of_tty_nr(stat.tty_nr))
        .flatten();
    Ok(Some(ProcessImage {
        ctty,
        timers,
        locks,
        job_stop: fp.job_stop,
        cwd,
        root,
        cwd_gone,
        root_gone,
        umask: status.umask.unwrap_or(0o022),
        personality: dir.personality()?,
        rlimits: rlimits(pid)?,
        mm: Some(MmImage {
            vmas,
            fields: mm_fields(&stat, brk),
            auxv: dir.auxv()?,
            exe,
        }),
        threads,
        sigactions,
        shared_pending,
        fds,
        seccomp_filters,
        namespaces,
        ..base
    }))
}

/// What `/proc/PID/stat` and `status` give of a process; the rest is
/// filled in by [`inspect_process`].
pub(super) fn base_image(
    fp: &FrozenProcess,
    stat: &crate::procfs::Stat,
    status: &crate::procfs::Status,
) -> ProcessImage {
    let pid = fp.pid;
    ProcessImage {
        pid,
        ppid: fp.ppid,
        pgid: stat.pgrp,
        sid: stat.session,
        comm: stat.comm.clone(),
        zombie_status: None,
        creds: Creds::from_status(status),
        cwd: PathBuf::new(),
        root: PathBuf::new(),
        cwd_gone: false,
        root_gone: false,
        umask: 0,
        personality: 0,
        rlimits: Vec::new(),
        mm: None,
        threads: Vec::new(),
        sigactions: Vec::new(),
        shared_pending: Vec::new(),
        fds: Vec::new(),
        ctty: None,
        timers: Default::default(),
        locks: Vec::new(),
        cgroup: crate::cgroup::cgroup_of(pid),
        job_stop: None,
        seccomp_filters: Vec::new(),
        namespaces: None,
        ns_pids: status.ns_pid.iter().skip(1).copied().collect(),
    }
}

/// The threads saved (those that ended during the freeze are not), with
/// the process's finding; refused when the main thread has ended.
pub(super) fn live_threads(
    fp: &FrozenProcess,
    dir: &ProcDir,
    comm: &str,
    report: &mut Report,
) -> Step<Vec<i32>> {
    let pid = fp.pid;
    let exited_threads: Vec<i32> = fp
        .threads
        .iter()
        .copied()
        .filter(|&t| {
            dir.task(t)
                .stat()
                .map_or(true, |s| s.state == 'Z' || s.state == 'X')
        })
        .collect();
    if exited_threads.contains(&pid) {
        report.add(
            pid,
            Subject::Process,
            format!("process {comm} whose main thread has exited"),
            Policy::Refuse,
            "the main thread has exited but the process lives on: not supported yet",
        );
        return Err(Refused);
    }
    // Another thread that ended during the freeze (a thread pool's idle
    // worker) waits, a zombie, for us as its tracer: it is done, and is
    // not saved.
    let live_threads: Vec<i32> = fp
        .threads
        .iter()
        .copied()
        .filter(|t| !exited_threads.contains(t))
        .collect();
    if !exited_threads.is_empty() {
        tracing::debug!(
            pid,
            ?exited_threads,
            "threads that ended during the freeze are left out"
        );
    }
    let threads_text = match live_threads.len() {
        1 => "single-threaded process".to_string(),
        n => format!("process with {n} threads, each saved with its own state"),
    };
    report.add(
        pid,
        Subject::Process,
        format!("process {comm}"),
        Policy::Restore,
        match fp.job_stop {
            Some(sig) => format!(
                "{threads_text}, stopped by {} (job control): stopped again by it after restore",
                crate::signals::name(sig)
            ),
            None => threads_text,
        },
    );
    Ok(live_threads)
}

/// The namespaces of its own the process is in; refused when one cannot
/// be made again.
pub(super) fn namespaces_of(
    fp: &FrozenProcess,
    dir: &ProcDir,
    status: &crate::procfs::Status,
    report: &mut Report,
) -> Result<Step<Option<crate::namespaces::Namespaces>>> {
    let pid = fp.pid;
    let mut namespaces = match crate::namespaces::checkpoint(pid) {
        Ok(ns) => ns,
        Err(Ok(reason)) => {
            report.add(pid, Subject::Process, "namespaces", Policy::Refuse, reason);
            return Ok(Err(Refused));
        }
        Err(Err(e)) => return Err(e.into()),
    };
    let capabilities = status.cap_eff | status.cap_prm | status.cap_inh | status.cap_amb;
    if let Some(user) = namespaces.as_mut().and_then(|n| n.user.as_mut()) {
        if capabilities != 0 {
            // Made again by the process itself, which needs it to be one
            // thread (unshare) and not chrooted; its threads' ids could
            // not be taken from inside.
            let root = dir.root().ok();
            let why = if fp.threads.len() > 1 {
                Some("it has several threads")
            } else if root.as_deref() != Some(std::path::Path::new("/"))
                && !root
                    .as_deref()
                    .is_some_and(|r| crate::gone_dir::is_gone(pid, "root", r))
            {
                Some("it is chrooted")
            } else {
                None
            };
            if let Some(why) = why {
                report.add(
                    pid,
                    Subject::Process,
                    "user namespace",
                    Policy::Refuse,
                    format!(
                        "capabilities held in a user namespace of its own, and {why}: not supported yet"
                    ),
                );
                return Ok(Err(Refused));
            }
            user.recreate = true;
        }
    }
    Ok(Ok(namespaces))
}

/// A mapping of a left-out service's file would be read through the
/// server (which may answer no one but its user) and cannot be mapped
/// again before the service is back: refused.
pub(super) fn refuse_left_out_mappings(
    pid: i32,
    smaps: &[crate::procfs::SmapsEntry],
    files: &FileTable,
    report: &mut Report,
) {
    for entry in smaps {
        if let MapsPath::File { path, .. } = &entry.map.path {
            if let Some(m) = files
                .left_out_mounts
                .iter()
                .find(|m| path.starts_with(&m.path))
            {
                report.add(
                    pid,
                    Subject::Mapping {
                        start: entry.map.start,
                        end: entry.map.end,
                    },
                    format!("mapping of {} of a left-out FUSE server", path.display()),
                    Policy::Refuse,
                    format!(
                        "the server of {} is left out of the set: a mapping of its files cannot be made again",
                        m.path.display()
                    ),
                );
            }
        }
    }
}

/// What the report says of a process's namespaces of its own, and of its
/// sockets that cannot follow it into them.
pub(super) fn report_namespaces(
    pid: i32,
    ns: &crate::namespaces::Namespaces,
    ns_pid: &[i32],
    fds: &[crate::files::FdImage],
    files: &FileTable,
    report: &mut Report,
) {
    if ns.net {
        // Sockets are made by the restorer, in its own network namespace.
        for f in fds {
            let file = &files.files[f.file].kind;
            let bound_abstract =
                matches!(file, FileKind::UnixSocket(u) if u.name.first() == Some(&0));
            if matches!(file, FileKind::Inet(_) | FileKind::Netlink(_)) || bound_abstract {
                report.add(
                    pid,
                    Subject::Fd { fd: f.fd },
                    file.describe(),
                    Policy::Refuse,
                    "a socket of a network namespace of its process's own: not supported yet",
                );
            }
        }
    }
    if ns.net || ns.ipc {
        report.add(
            pid,
            Subject::Process,
            format!(
                "namespaces of its own:{}{}",
                if ns.net { " network (empty)" } else { "" },
                if ns.ipc { " IPC (empty)" } else { "" },
            ),
            Policy::Restore,
            "made again, empty, at restore",
        );
    }
    if ns.pid != 0 {
        report.add(
            pid,
            Subject::Process,
            format!("in a nested pid namespace (pids {ns_pid:?})"),
            Policy::Restore,
            "made again by its parent's fork with its pid at every level (clone3 set_tid); a namespace's pid 1 makes it (CLONE_NEWPID)",
        );
    }
    if ns.user.as_ref().is_some_and(|u| u.recreate) {
        report.add(
            pid,
            Subject::Process,
            "user namespace mapping its own ids, capabilities held in it",
            Policy::Restore,
            "made again by the process at restore (unshare, before its credentials), with its maps: its capabilities apply there only",
        );
    } else if ns.user.is_some() {
        report.add(
            pid,
            Subject::Process,
            "user namespace mapping its own ids, no capability in it",
            Policy::Restore,
            "restored in the restorer's user namespace: the same ids and no capability, so the same rights",
        );
    }
}

/// The working and root directories, and whether each is a gone task's
/// (see `gone_dir`); what cannot be made again is refused in the report.
pub(super) fn cwd_and_root(
    pid: i32,
    dir: &ProcDir,
    report: &mut Report,
) -> Result<(PathBuf, PathBuf, bool, bool)> {
    let cwd = dir.cwd()?;
    let root = dir.root()?;
    let cwd_gone = crate::gone_dir::is_gone(pid, "cwd", &cwd);
    let root_gone = crate::gone_dir::is_gone(pid, "root", &root);
    for (what, p, gone) in [("cwd", &cwd, cwd_gone), ("root", &root, root_gone)] {
        if gone {
            report.add(
                pid,
                Subject::Process,
                format!("{what} {}", p.display()),
                Policy::Restore,
                "the directory of a task that has exited (a sandbox's empty root): an empty dead directory again at restore",
            );
        }
    }
    if root_gone && !cwd_gone {
        report.add(
            pid,
            Subject::Process,
            format!("cwd {} under a root that is gone", cwd.display()),
            Policy::Refuse,
            "a working directory elsewhere than the gone root it is under: not supported",
        );
    }
    for (what, p) in [("cwd", &cwd), ("root", &root)] {
        if p.to_string_lossy().ends_with(" (deleted)") {
            report.add(
                pid,
                Subject::Process,
                format!("{what} {}", p.display()),
                Policy::Refuse,
                "the directory was deleted",
            );
        }
    }
    Ok((cwd, root, cwd_gone, root_gone))
}

/// Whether the process's seccomp mode lets it be saved.
pub(super) fn seccomp_allowed(pid: i32, mode: u32, report: &mut Report) -> Step<()> {
    match mode {
        0 => Ok(()),
        2 if ptrace::suspends_seccomp() => Ok(()),
        2 => {
            report.add(
                pid,
                Subject::Process,
                "seccomp filter",
                Policy::Refuse,
                "its filters can be read, and kept from trapping the checkpoint's calls, only by a tracer with CAP_SYS_ADMIN: save as root",
            );
            Err(Refused)
        }
        _ => {
            report.add(
                pid,
                Subject::Process,
                "strict seccomp mode",
                Policy::Refuse,
                "a process in SECCOMP_MODE_STRICT may only read, write and exit: not supported",
            );
            Err(Refused)
        }
    }
}

/// State only visible from inside, by remote calls through the vdso (see
/// [`inspect_inside`]); refused without a vdso.
pub(super) fn inspect_from_inside(
    pid: i32,
    smaps: &[crate::procfs::SmapsEntry],
    status: &crate::procfs::Status,
    live_threads: &[i32],
    report: &mut Report,
) -> Result<Step<InsideState>> {
    let vdso = smaps
        .iter()
        .find(|s| matches!(s.map.path, MapsPath::Vdso))
        .map(|s| (s.map.start, s.map.end));
    let Some((vstart, vend)) = vdso else {
        report.add(
            pid,
            Subject::Process,
            "process without vdso",
            Policy::Refuse,
            "no vdso to run remote calls through",
        );
        return Ok(Err(Refused));
    };
    let mut mem = ProcMem::new(pid, true);
    let (task, lifeline) = remote::take_over(pid, &mut mem, (vstart, vend))?;
    let inside = (|| -> Result<_> {
        let scratch = Scratch::map(&task, &mut mem, SCRATCH_LEN)?;
        let inspected = inspect_inside(
            &task,
            lifeline.as_ref(),
            &mut mem,
            &scratch,
            status.sig_cgt | status.sig_ign,
            live_threads,
        );
        let unmapped = scratch.unmap(&task, &mut mem);
        let inspected = inspected?;
        unmapped?;
        Ok(inspected)
    })();
    task.restore()?;
    if let Some(l) = lifeline {
        l.clear(&mut mem);
    }
    Ok(Ok(inside?))
}

/// Each thread's seccomp filters (read through ptrace, shared ones once)
/// and credentials where they differ from the process's; refused for a
/// thread in strict mode.
pub(super) fn thread_seccomp(
    pid: i32,
    status: &crate::procfs::Status,
    creds: &Creds,
    threads: &mut [crate::thread::ThreadImage],
    report: &mut Report,
) -> Result<Step<Vec<crate::seccomp::Filter>>> {
    let mut seccomp_filters = Vec::new();
    for t in threads.iter_mut() {
        let seccomp = if t.tid == pid {
            status.seccomp
        } else {
            let own = ProcDir::new(pid).task(t.tid).status()?;
            let own_creds = Creds::from_status(&own);
            t.creds = (own_creds != *creds).then_some(own_creds);
            own.seccomp
        };
        match seccomp {
            0 => {}
            2 => t.seccomp = crate::seccomp::checkpoint(t.tid, &mut seccomp_filters)?,
            mode => {
                // A thread of its own in strict mode, the main one not.
                report.add(
                    pid,
                    Subject::Process,
                    format!("thread {} in seccomp mode {mode}", t.tid),
                    Policy::Refuse,
                    "a thread in SECCOMP_MODE_STRICT: not supported",
                );
                return Ok(Err(Refused));
            }
        }
    }
    if !seccomp_filters.is_empty() {
        report.add(
            pid,
            Subject::Process,
            format!("{} seccomp filter(s)", seccomp_filters.len()),
            Policy::Restore,
            "read through ptrace and installed again in each thread that had them",
        );
    }
    Ok(Ok(seccomp_filters))
}

/// The memory layout fields of `stat`, with the brk read from inside.
pub(super) fn mm_fields(stat: &crate::procfs::Stat, brk: u64) -> MmFields {
    MmFields {
        start_code: stat.start_code,
        end_code: stat.end_code,
        start_data: stat.start_data,
        end_data: stat.end_data,
        start_brk: stat.start_brk,
        brk,
        start_stack: stat.start_stack,
        arg_start: stat.arg_start,
        arg_end: stat.arg_end,
        env_start: stat.env_start,
        env_end: stat.env_end,
    }
}

/// What a process's main thread and each other thread tell from inside:
/// its brk, signal handlers, every thread's state and its POSIX timers.
/// The other threads take the lifeline's second slot in turn.
pub(super) fn inspect_inside(
    task: &RemoteTask,
    lifeline: Option<&Lifeline>,
    mem: &mut ProcMem,
    scratch: &Scratch,
    handled: u64,
    live_threads: &[i32],
) -> Result<InsideState> {
    let pid = task.tid();
    let brk = task.syscall("brk", libc::SYS_brk, [0; 6])?;
    let actions = signals::checkpoint_actions(task, mem, scratch, handled)?;
    let mut threads = vec![thread::checkpoint(task, mem, scratch)?];
    // The other threads, each through its own stop, sharing the scratch.
    for &tid in live_threads.iter().filter(|&&t| t != pid) {
        let t = match lifeline {
            Some(l) => RemoteTask::guarded(tid, l.slot(1), mem)?,
            None => RemoteTask::new(tid, task.syscall_ip())?,
        };
        let th = thread::checkpoint(&t, mem, scratch);
        t.restore()?;
        threads.push(th?);
    }
    let timers = crate::timers::checkpoint(task, mem, scratch, pid)?;
    Ok((brk, actions, threads, timers))
}

pub(super) type InsideState = (
    u64,
    Vec<signals::SigAction>,
    Vec<thread::ThreadImage>,
    crate::timers::Timers,
);

/// `precopied`: what pre-copy learned before the freeze (mapping flags),
/// so less is read while frozen. `inspected` hears of each process as soon
/// as it is inspected, so its pages can be saved while the next process is
/// (inspection is a chain of ptrace round trips that leaves the other
/// cores idle).
pub(super) fn inspect(
    frozen: &Frozen,
    precopied: Option<&precopy::Precopy>,
    devices: &DevicePolicies,
    left_out_mounts: &[crate::files::service_file::ServiceMount],
    mut inspected: impl FnMut(&ProcessImage, &Report) -> Result<()>,
) -> Result<Inspection> {
    let mut report = Report::default();
    let mut files = FileTable::default();
    files.devices = devices.clone();
    files.left_out_mounts = left_out_mounts.to_vec();
    let mut shmem = ShmemTable::default();
    let mut processes = Vec::new();
    for fp in frozen.processes.values() {
        let flags = precopied.and_then(|p| p.flags_of(fp.pid));
        if let Some(p) = inspect_process(fp, flags, devices, &mut files, &mut shmem, &mut report)? {
            inspected(&p, &report)?;
            processes.push(p);
        }
    }
    let members: Vec<crate::namespaces::Member<'_>> = processes
        .iter()
        .map(|p| crate::namespaces::Member {
            pid: p.pid,
            ppid: p.ppid,
            pgid: p.pgid,
            sid: p.sid,
            ns_pids: &p.ns_pids,
            namespaces: p.namespaces.as_ref(),
        })
        .collect();
    crate::namespaces::refuse_shared(&members, &mut report);
    crate::namespaces::refuse_pid_layout(&members, &mut report);
    crate::restore::plan::refuse_unbuildable(&processes, &mut report);
    let saved: std::collections::HashSet<i32> = frozen.processes.keys().copied().collect();
    files.finish_classification(&saved, &mut report);
    let terminals: Vec<_> = saved
        .iter()
        .filter_map(|&pid| ProcDir::new(pid).stat().ok())
        .map(|st| (st.tty_nr, st.session, st.tpgid))
        .collect();
    files.fill_terminal_groups(&terminals);
    shmem.report_outside_attachments(&mut report);
    files.share_deleted_with_mappings(shmem.deleted_files(), &mut report);
    let uname = uname();
    let snapshot = Snapshot {
        hiber_version: env!("CARGO_PKG_VERSION").into(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        hostname: uname.0,
        kernel: uname.1,
        roots: frozen.roots.clone(),
        processes,
        files: Vec::new(),
        pipes: Vec::new(),
        shmem: Vec::new(),
        report,
        attachments: Vec::new(),
        detached: Vec::new(),
    };
    Ok(Inspection {
        snapshot,
        files,
        shmem,
    })
}

pub(super) fn uname() -> (String, String) {
    crate::sys::host::uname()
}
