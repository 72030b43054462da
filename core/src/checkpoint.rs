//! Checkpoint: freeze, inspect, classify, dump, commit, resume (or stop).
//!
//! Any failure before the commit drops the frozen set, which lets every
//! task go on exactly as it was, and drops the uncommitted image. What the
//! dump reads out of live objects (pty queues) goes back while the set is
//! still frozen: right after the dump, or on a failure inside it.

use crate::attachment::{self, Attachment, AttachmentError};
use crate::creds::Creds;
use crate::devices::DevicePolicies;
use crate::files::{FileError, FileKind, FileTable};
use crate::freeze::{FreezeError, Frozen, FrozenProcess};
use crate::image::{ImageError, ImageWriter};
use crate::memory::shmem::ShmemTable;
use crate::memory::{self, MemoryError, MmFields, MmImage};
use crate::policy::{Policy, ProcessSummary, Report, Subject};
use crate::precopy;
use crate::procfs::{MapsPath, ProcDir, ProcfsError};
use crate::procmem::ProcMem;
use crate::ptrace;
use crate::remote::{self, Lifeline, RemoteError, RemoteTask, Scratch};
use crate::snapshot::{ProcessImage, Rlimit, Snapshot};
use crate::{signals, thread};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{debug, info};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Freeze(#[from] FreezeError),
    #[error(transparent)]
    Procfs(#[from] ProcfsError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("the task set cannot be checkpointed:\n{}", .0.refusals_text())]
    Refused(Box<Report>),
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Observer(Box<dyn std::error::Error + Send + Sync>),
    #[error(
        "every process to save exited while it was being saved (pids {pids:?}); nothing was saved"
    )]
    AllExited { pids: Vec<i32> },
    #[error("--stop would end the processes, but this caller could not restore them ({reason}); save without --stop, or as root")]
    StopWithoutRestore { reason: String },
    #[error("the image {} did not read back whole ({source}); it was removed and the processes run on", dir.display())]
    NotVerified {
        dir: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error("the checkpoint was cancelled at stage {stage}; the processes run on as they were")]
    Cancelled { stage: &'static str },
    #[error("pid {pid}: {what}")]
    Os {
        pid: i32,
        what: &'static str,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, CheckpointError>;

/// Size of the scratch area mapped in a task for remote calls.
pub const SCRATCH_LEN: usize = 4 * 4096;

/// What was learned about the set while frozen, before any page is read.
#[derive(Debug)]
struct Inspection {
    snapshot: Snapshot,
    files: FileTable,
    shmem: ShmemTable,
}

fn rlimits(pid: i32) -> Result<Vec<Rlimit>> {
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
struct Refused;

/// The steps of [`inspect_process`] that may refuse the process.
type Step<T> = std::result::Result<T, Refused>;

// Just over ~80 lines: the steps in order, each named, and the image
// record they fill.
fn inspect_process(
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
fn base_image(
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
fn live_threads(
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
fn namespaces_of(
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
fn refuse_left_out_mappings(
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
fn report_namespaces(
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
fn cwd_and_root(
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
fn seccomp_allowed(pid: i32, mode: u32, report: &mut Report) -> Step<()> {
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
fn inspect_from_inside(
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
fn thread_seccomp(
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
fn mm_fields(stat: &crate::procfs::Stat, brk: u64) -> MmFields {
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
fn inspect_inside(
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

type InsideState = (
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
fn inspect(
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

fn uname() -> (String, String) {
    // SAFETY: utsname is plain old data; zeroed is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid out pointer.
    unsafe { libc::uname(&mut u) };
    let s = |f: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates each field within its array.
        unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    (s(&u.nodename), s(&u.release))
}

/// The checkpointability report of the trees under `roots`, char devices
/// classified by `devices`. The tasks are frozen for the inspection and
/// let go at once.
pub fn check(roots: &[i32], devices: &DevicePolicies) -> Result<Report> {
    check_without(roots, &LeftOut::default(), devices)
}

/// [`check`] of the trees under `roots` without what `left_out` names
/// (see [`CheckpointOptions::left_out`]).
pub fn check_without(
    roots: &[i32],
    left_out: &LeftOut,
    devices: &DevicePolicies,
) -> Result<Report> {
    let frozen = match freeze(roots, &left_out.pids) {
        Err(CheckpointError::Refused(report)) => return Ok(*report),
        other => other?,
    };
    let inspection = inspect(&frozen, None, devices, &left_out.mounts, |_, _| Ok(()))?;
    frozen.thaw();
    Ok(inspection.snapshot.report)
}

/// Freeze the trees under `roots`. A set that is gone, or only zombies,
/// by the time it is frozen is an error: an image of nothing would
/// restore nothing.
fn freeze(roots: &[i32], prune: &[i32]) -> Result<Frozen> {
    let frozen = Frozen::freeze_without(roots, prune).map_err(freeze_refusal)?;
    if frozen.processes.values().all(|p| p.zombie) {
        return Err(CheckpointError::AllExited {
            pids: frozen.processes.keys().copied().collect(),
        });
    }
    Ok(frozen)
}

/// A traced task, or one in a cgroup someone froze, is a refusal,
/// reported as `check` reports any other.
fn freeze_refusal(e: FreezeError) -> CheckpointError {
    let (pid, what, reason) = match e {
        FreezeError::Traced {
            pid,
            tid,
            tracer,
            comm,
        } => (
            pid,
            format!("tid {tid} traced by pid {tracer} ({comm})"),
            "a process under a debugger or tracer cannot be saved; detach it first",
        ),
        FreezeError::CgroupFrozen { pid, cgroup } => (
            pid,
            format!("in the frozen cgroup {cgroup}"),
            "a frozen process cannot run the calls that save it; thaw its cgroup first",
        ),
        e => return e.into(),
    };
    let dir = ProcDir::new(pid);
    let stat = dir.stat().ok();
    let mut report = Report::default();
    report.processes.push(ProcessSummary {
        pid,
        ppid: stat.as_ref().map_or(0, |s| s.ppid),
        comm: stat.map(|s| s.comm).unwrap_or_default(),
        threads: dir.tasks().map_or(0, |t| t.len()),
        zombie: false,
    });
    report.add(pid, Subject::Process, what, Policy::Refuse, reason);
    CheckpointError::Refused(Box::new(report))
}

/// Why this caller could not restore what it saves, if it could not:
/// recreating processes with their pids needs CAP_CHECKPOINT_RESTORE (or
/// CAP_SYS_ADMIN). Checked before `--stop` ends anything.
fn cannot_restore() -> Option<String> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_CHECKPOINT_RESTORE: u32 = 40;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
    let has = |cap: u32| eff & (1 << cap) != 0;
    (!has(CAP_SYS_ADMIN) && !has(CAP_CHECKPOINT_RESTORE)).then(|| {
        "restoring processes with their pids needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN".into()
    })
}

#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    pub roots: Vec<i32>,
    pub dir: PathBuf,
    /// Chunk store shared by successive images; None keeps chunks in the image only.
    pub store: Option<PathBuf>,
    /// End the processes once the image is committed.
    pub stop: bool,
    /// With `stop`: read the committed image back (every chunk against
    /// its hash) while the processes are still frozen, and end them only
    /// if it is whole; else the image is removed and they run on. For a
    /// save that ends a user's session (logout, suspend).
    pub verify_before_stop: bool,
    pub threads: usize,
    /// Refuse instead of restoring anything broken (Reset policy).
    pub no_reset: bool,
    /// Without `stop`: save most memory while the processes run, then
    /// freeze them only to save what changed (see `precopy`).
    pub precopy: bool,
    /// The device table: which char devices are reopened, detached or
    /// refused.
    pub devices: DevicePolicies,
    /// What is left out of the trees under `roots` (services that cannot
    /// be saved).
    pub left_out: LeftOut,
}

/// Processes left out of the trees being saved, and the FUSE mounts they
/// serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// Pids left out with their descendants although they are below a
    /// root: their parents are saved without them, and they run on
    /// whatever `stop` says (the caller ends them). What the set shares
    /// with them is outside the set (Reset).
    pub pids: Vec<i32>,
    /// FUSE file systems served by left-out processes: a saved fd of a
    /// file in one is recorded without being looked at, and reopened by
    /// path once the service is back (see `files::service_file`).
    pub mounts: Vec<crate::files::service_file::ServiceMount>,
}

/// Read the image in `dir` back: its document, then every chunk it names
/// against its hash.
fn verify(dir: &std::path::Path) -> std::result::Result<(), ImageError> {
    let (reader, snap): (crate::image::ImageReader, Snapshot) =
        crate::image::ImageReader::open(dir)?;
    let chunks = snap.chunks();
    reader.check_chunks(chunks.iter().copied())?;
    let mut buf = Vec::new();
    for c in &chunks {
        reader.read_chunk(c, &mut buf)?;
    }
    Ok(())
}

/// Stages reported while a checkpoint runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Saving memory while the processes run (write tracking on).
    Precopying,
    Freezing,
    Inspecting,
    DumpingMemory {
        done: u64,
        total: u64,
    },
    Committing,
}

/// What the caller of a checkpoint hears, and what it may add.
pub trait CheckpointObserver {
    fn stage(&self, _stage: Stage) {}

    /// Called once, just before the set is frozen (after pre-copy): what
    /// it returns is stored with the image. An error ends the checkpoint
    /// before anything is frozen.
    fn before_freeze(
        &self,
    ) -> std::result::Result<Vec<Attachment>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Vec::new())
    }

    /// Called once the set is frozen, with its pids, before anything is
    /// read: a last check that the set is still the one wanted (nothing
    /// joined it meanwhile). An error thaws it and ends the checkpoint.
    fn while_frozen(
        &self,
        _pids: &std::collections::BTreeSet<i32>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }

    /// Asked at each stage boundary and just before the commit: true ends
    /// the checkpoint there with [`CheckpointError::Cancelled`], through
    /// the same path as any failure (the set is thawed, the unfinished
    /// image removed). Past the commit a checkpoint is not cancelled.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A plain progress callback observes the stages and attaches nothing.
impl<F: Fn(Stage)> CheckpointObserver for F {
    fn stage(&self, stage: Stage) {
        self(stage)
    }
}

#[derive(Debug, Clone)]
pub struct CheckpointStats {
    pub dir: PathBuf,
    pub processes: usize,
    pub frozen: Duration,
    pub total: Duration,
    /// Page and file data saved (uncompressed).
    pub bytes_raw: u64,
    /// New bytes written to the store by this checkpoint.
    pub bytes_written: u64,
    /// Page data saved by pre-copy while the processes ran, and still
    /// valid at the freeze (not saved again).
    pub precopied_bytes: u64,
    /// The cgroup frozen first, when the set was exactly its processes.
    pub frozen_cgroup: Option<PathBuf>,
    /// Bytes of the image on disk (metadata + chunks it references).
    pub image_bytes: u64,
    pub report: Report,
    /// Tries it took: more than one when data in flight refused the first.
    pub attempts: u32,
}

/// How long to let the processes run before trying again when only data in
/// flight refused the checkpoint (see [`Report::refused_only_for_now`]):
/// a message carrying fds is read, unread events are consumed, within
/// milliseconds of a program running again.
const RETRY_AFTER: [Duration; 3] = [
    Duration::from_millis(25),
    Duration::from_millis(100),
    Duration::from_millis(400),
];

/// Save the trees under `opts.roots` into `opts.dir`. A checkpoint refused
/// only for data in flight lets the processes run a moment and tries
/// again, up to three more times; the last refusal is returned.
pub fn checkpoint(
    opts: &CheckpointOptions,
    observer: &dyn CheckpointObserver,
) -> Result<CheckpointStats> {
    if opts.stop {
        if let Some(reason) = cannot_restore() {
            return Err(CheckpointError::StopWithoutRestore { reason });
        }
    }
    let result = checkpoint_tries(opts, observer);
    if result.is_err() {
        crate::image::remove_staging(&opts.dir);
    }
    result
}

fn checkpoint_tries(
    opts: &CheckpointOptions,
    observer: &dyn CheckpointObserver,
) -> Result<CheckpointStats> {
    let mut waits = RETRY_AFTER.iter();
    let mut attempts = 1;
    loop {
        match checkpoint_once(opts, observer) {
            Err(CheckpointError::Refused(report)) if report.refused_only_for_now() => {
                let Some(&wait) = waits.next() else {
                    return Err(CheckpointError::Refused(report));
                };
                info!(
                    attempt = attempts,
                    wait_ms = wait.as_millis() as u64,
                    refusals = %report.refusals_text(),
                    "refused only for data in flight: trying again"
                );
                std::thread::sleep(wait);
                attempts += 1;
            }
            Ok(stats) => return Ok(CheckpointStats { attempts, ..stats }),
            Err(e) => return Err(e),
        }
    }
}

/// The page windows a process's private pages were handed to the writer
/// in, per mapping.
type PageWindows = Vec<Vec<memory::DumpedWindow>>;

/// Pre-copy: pages written while the set still runs (see `precopy`).
fn precopy_pages(
    opts: &CheckpointOptions,
    sink: &mut crate::image::ChunkSink<'_>,
) -> Result<precopy::Precopy> {
    precopy::run_without(&opts.roots, &opts.left_out.pids, sink).map_err(|e| match e {
        precopy::PrecopyError::Freeze(e) => freeze_refusal(e),
        precopy::PrecopyError::Image(e) => CheckpointError::from(e),
    })
}

/// Every mapping's and shared object's page windows, once the writer
/// has stored them: chunk references of the image.
fn resolve_pages(
    snapshot: &mut Snapshot,
    pending: Vec<PageWindows>,
    shmem: &mut ShmemTable,
    shm_pending: Vec<Vec<memory::PendingChunk>>,
    stored: &[crate::image::Stored],
) {
    for (p, pend) in snapshot.processes.iter_mut().zip(pending) {
        if let Some(mm) = &mut p.mm {
            for (v, windows) in mm.vmas.iter_mut().zip(pend) {
                v.pages = memory::resolve(
                    windows.into_iter().filter_map(|w| w.chunk).collect(),
                    stored,
                );
            }
        }
    }
    for (obj, pend) in shmem.objects.iter_mut().zip(shm_pending) {
        obj.pages = memory::resolve(pend, stored);
    }
}

/// The files, pipes, detached devices' events and shared objects, from
/// the tables the inspection filled into the image.
fn take_tables(snapshot: &mut Snapshot, files: &mut FileTable, shmem: &mut ShmemTable) {
    snapshot.files = std::mem::take(&mut files.files);
    snapshot.detached =
        crate::devices::removes(snapshot.files.iter().filter_map(|f| match &f.kind {
            FileKind::Detached(d) => Some(&**d),
            _ => None,
        }));
    snapshot.pipes = files.take_pipes();
    snapshot.shmem = std::mem::take(&mut shmem.objects);
}

/// `--stop`: the committed image read back whole first when asked; else
/// it is removed and the processes go on.
fn verified(frozen: Frozen, opts: &CheckpointOptions, t0: Instant) -> Result<Frozen> {
    if opts.verify_before_stop {
        if let Err(source) = verify(&opts.dir) {
            tracing::warn!(dir = %opts.dir.display(), error = %source, "committed image did not read back whole: removed, the processes go on");
            if let Err(e) = std::fs::remove_dir_all(&opts.dir) {
                tracing::warn!(dir = %opts.dir.display(), error = %e, "could not remove the image that failed verification");
            }
            frozen.thaw();
            return Err(CheckpointError::NotVerified {
                dir: opts.dir.clone(),
                source,
            });
        }
        debug!(elapsed = ?t0.elapsed(), "image read back whole");
    }
    Ok(frozen)
}

/// Inspect the frozen set, each process's private pages handed to `sink`
/// as soon as it is inspected (while the next one is); the pages' windows
/// per process and the bytes pre-copy had already written.
fn inspect_dumping(
    frozen: &Frozen,
    precopied: Option<&precopy::Precopy>,
    opts: &CheckpointOptions,
    sink: &mut crate::image::ChunkSink<'_>,
) -> Result<(Inspection, Vec<PageWindows>, u64)> {
    let mut pending = Vec::new();
    let mut precopied_bytes = 0u64;
    let inspection = inspect(
        frozen,
        precopied,
        &opts.devices,
        &opts.left_out.mounts,
        |p, report| {
            // Nothing is saved past a refusal: the checkpoint will stop there.
            let Some(mm) = p.mm.as_ref().filter(|_| report.is_checkpointable()) else {
                pending.push(Vec::new());
                return Ok(());
            };
            let reuse = precopied
                .map(|pc| pc.reuse_for(p.pid, &mm.vmas))
                .unwrap_or_default();
            pending.push(memory::dump_private_pages(
                p.pid,
                &mm.vmas,
                sink,
                memory::ReadFailure::Fatal,
                &reuse,
            )?);
            precopied_bytes += reuse.reused_bytes();
            Ok(())
        },
    )?;
    Ok((inspection, pending, precopied_bytes))
}

// Over ~80 lines, on purpose: the writers, the sink, `frozen` and `files`
// are locals whose drop order is the failure path (queues put back before
// the processes go, an unfinished image removed); each step is a named
// function.
fn checkpoint_once(
    opts: &CheckpointOptions,
    observer: &dyn CheckpointObserver,
) -> Result<CheckpointStats> {
    let progress = |stage| observer.stage(stage);
    let go_on = |stage| match observer.cancelled() {
        true => Err(CheckpointError::Cancelled { stage }),
        false => Ok(()),
    };
    go_on("starting")?;
    let t0 = Instant::now();
    let threads = opts.threads.max(1);
    // Pre-copy writes pages before the set is inspected, so the image is
    // opened first; a refusal found later removes it again.
    let early_writer = (opts.precopy && !opts.stop)
        .then(|| ImageWriter::create_staged(&opts.dir, opts.store.as_deref()))
        .transpose()?;
    debug!(elapsed = ?t0.elapsed(), "image opened");
    let mut early_sink = early_writer.as_ref().map(|w| w.sink(threads, threads * 4));
    let precopied = match &mut early_sink {
        Some(sink) => {
            progress(Stage::Precopying);
            Some(precopy_pages(opts, sink)?)
        }
        None => None,
    };
    go_on("precopying")?;
    let attachments = observer
        .before_freeze()
        .map_err(CheckpointError::Observer)?;
    go_on("freezing")?;
    progress(Stage::Freezing);
    // Frozen time counts from the first stop, which happens inside freeze().
    let frozen_at = Instant::now();
    let frozen = freeze(&opts.roots, &opts.left_out.pids)?;
    let frozen_cgroup = frozen.cgroup.clone();
    debug!(elapsed = ?t0.elapsed(), "frozen");
    observer
        .while_frozen(&frozen.processes.keys().copied().collect())
        .map_err(CheckpointError::Observer)?;
    go_on("inspecting")?;
    progress(Stage::Inspecting);
    // The image is opened before the inspection so each process's pages
    // are saved while the next one is inspected; a refusal found at the
    // end drops the unfinished image.
    let late_writer = early_writer
        .is_none()
        .then(|| ImageWriter::create_staged(&opts.dir, opts.store.as_deref()))
        .transpose()?;
    let writer = early_writer
        .as_ref()
        .or(late_writer.as_ref())
        .expect("one of them");
    let mut sink = early_sink.unwrap_or_else(|| writer.sink(threads, threads * 4));
    let (
        Inspection {
            mut snapshot,
            mut files,
            mut shmem,
        },
        pending,
        precopied_bytes,
    ) = inspect_dumping(&frozen, precopied.as_ref(), opts, &mut sink)?;
    debug!(elapsed = ?t0.elapsed(), "inspected");
    if opts.no_reset {
        snapshot.report.refuse_resets();
    }
    if !snapshot.report.is_checkpointable() {
        return Err(CheckpointError::Refused(Box::new(snapshot.report)));
    }
    go_on("dumping memory")?;
    let total_pages: u64 = snapshot
        .processes
        .iter()
        .filter_map(|p| p.mm.as_ref())
        .flat_map(|m| &m.vmas)
        .map(|v| v.len())
        .sum();
    progress(Stage::DumpingMemory {
        done: total_pages,
        total: total_pages,
    });
    let shm_pending = shmem.dump(&mut sink)?;
    // The workers read the pages: they must be done before the processes
    // may change them.
    sink.drain()?;
    debug!(elapsed = ?t0.elapsed(), precopied_bytes, "pages read");
    // A failure inside dump_data drops `files`, which puts back what it
    // read, before `frozen` (declared earlier) lets the processes go. Past
    // it, the queues go back at once, whatever follows: the processes go on
    // (no --stop, a failed commit, this checkpointer killed) or are ended.
    files.dump_data(writer)?;
    files.put_back();
    debug!(elapsed = ?t0.elapsed(), "file data written");
    // Everything is captured in our buffers: a process that goes on
    // running cannot change the image any more, so it need not wait for
    // the disk. One that is to end waits until the image is durable.
    let mut frozen = Some(frozen);
    let mut frozen_for = precopied.as_ref().map_or(Duration::ZERO, |p| p.frozen);
    if !opts.stop {
        frozen.take().expect("still frozen").thaw();
        frozen_for += frozen_at.elapsed();
    }
    let stored = sink.finish()?;
    debug!(elapsed = ?t0.elapsed(), "pages written");
    resolve_pages(&mut snapshot, pending, &mut shmem, shm_pending, &stored);
    snapshot.attachments = attachment::store(writer, &attachments)?;
    take_tables(&mut snapshot, &mut files, &mut shmem);
    go_on("committing")?;
    progress(Stage::Committing);
    crate::faults::point("checkpoint: committing");
    let stats = writer.stats();
    let processes = snapshot.processes.len();
    let committed = early_writer
        .or(late_writer)
        .expect("one of them")
        .commit(&snapshot)?;
    if let Some(frozen) = frozen.take() {
        let frozen = verified(frozen, opts, t0)?;
        crate::faults::point("checkpoint: committed, ending the processes");
        frozen_for += frozen_at.elapsed();
        frozen.kill_all();
    }
    let total = t0.elapsed();
    info!(dir = %opts.dir.display(), processes, ?frozen_for, ?total, "checkpoint committed");
    debug!(?stats, "image write statistics");
    Ok(CheckpointStats {
        dir: opts.dir.clone(),
        processes,
        frozen: frozen_for,
        total,
        bytes_raw: snapshot.memory_bytes(),
        bytes_written: stats.written_bytes,
        precopied_bytes,
        frozen_cgroup,
        image_bytes: committed.image_bytes,
        report: snapshot.report,
        attempts: 1,
    })
}
