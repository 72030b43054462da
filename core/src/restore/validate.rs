//! The one validation pass of an untrusted document, before a restore
//! creates anything: the checkpoint-time rules applied again. Every object
//! kind, policy, device class, path, size, count, id and credential must be
//! one a checkpoint could have written; anything else is refused with the
//! field named. Every size the document gives is bounded here, before any
//! later step uses it.
//!
//! [`document`] is the part that depends on the document alone (`hiber
//! inspect` runs it too); [`validate`] adds what depends on the caller and
//! this machine: the caller's credentials and limits, the device table,
//! the mapped files, the chunks.

use super::error::RestoreError;
use crate::creds::Creds;
use crate::devices::{DevicePolicies, SysRoots, Use};
use crate::files::{self, FileKind};
use crate::image::{ChunkRef, ImageReader};
use crate::memory::shmem::ShmemKind;
use crate::memory::{self, Backing, MmImage, PAGE_SIZE};
use crate::policy::Policy;
use crate::ptrace::QueuedSignal;
use crate::seccomp;
use crate::snapshot::{ProcessImage, Snapshot};
use crate::sys::wrap::WrapIoResult;
use crate::uevent::MAX_MESSAGE;
use std::collections::HashSet;
use std::path::Path;

/// Bounds on what an image may ask for, checked before anything is created.
const MAX_PROCESSES: usize = 4096;
const MAX_FDS_PER_PROCESS: usize = 65536;
const MAX_THREADS: usize = 4096;
const MAX_DETACHED: usize = 4096;

/// What a document holds that no checkpoint writes: the field, and why.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// "pid 12 fd 3", "file 4", "pipe 2", "shared object 0"...
    pub field: String,
    pub reason: String,
}

type Result<T> = std::result::Result<T, Invalid>;

fn bad(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Highest pid the kernel hands out (`PID_MAX_LIMIT` on 64-bit).
const PID_MAX: i32 = 4_194_304;
/// `PATH_MAX`, with its NUL.
const PATH_MAX: usize = 4096;
/// Supplementary groups a restore can set: they go through the restore
/// gadget's scratch area (`creds::restore`), which holds 1536.
pub const MAX_GROUPS: usize = 1024;
/// The kernel's saved auxv is `AT_VECTOR_SIZE` words (under 60 on every
/// architecture): what /proc/PID/auxv gives, and `PR_SET_MM_MAP` takes.
pub const MAX_AUXV: usize = 512;
/// A comm or thread name is 15 bytes; as lossy UTF-8 it may triple.
const MAX_NAME: usize = 64;
/// A memfd name (`NAME_MAX` less the "memfd:" prefix).
const MAX_MEMFD_NAME: usize = 249;
/// Mappings per process (`vm.max_map_count` is 65530 by default).
const MAX_VMAS: usize = 1 << 20;
/// Open file descriptions, pipes and shared objects per image.
const MAX_FILES: usize = 1 << 20;
/// Signals queued per thread or process, POSIX timers and file locks per
/// process: far above what RLIMIT_SIGPENDING and real programs allow.
const MAX_QUEUED: usize = 1 << 16;
const MAX_TIMERS: usize = 1 << 16;
const MAX_LOCKS: usize = 1 << 16;
/// The FPU/xstate regset (a few KiB, 11 KiB with AMX).
const MAX_XSTATE: usize = 64 << 10;
/// Resources of setrlimit (`RLIM_NLIMITS`).
const RLIMITS: u32 = 16;
/// A raw siginfo.
const SIGINFO_LEN: usize = 128;
/// Signals are 1 to 64.
const MAX_SIGNAL: i32 = 64;
/// Shared memory object sizes (tmpfs files are sparse, but bounded).
const MAX_OBJECT_BYTES: u64 = 1 << 40;
/// Largest pipe buffer restored (the queued bytes' bound too).
const MAX_PIPE_SIZE: u32 = files::pipe::MAX_PIPE_DATA as u32;
/// Bytes per chunk of file or pipe data.
const DATA_CHUNK: u64 = 1 << 20;
/// Free-form strings of the document (hostname, kernel, version).
const MAX_STRING: usize = 4096;
/// A socket filter (`BPF_MAXINSNS`).
const MAX_FILTER: usize = 4096;
/// Pid namespaces nested below the restorer's (the kernel allows 32 levels
/// in all).
const MAX_NESTED_PID_NS: usize = 31;

/// Ids in nested pid namespaces: at most [`MAX_NESTED_PID_NS`] levels, each
/// a pid.
fn nested_pids(field: &str, what: &str, ids: &[i32]) -> Result<()> {
    if ids.len() > MAX_NESTED_PID_NS || ids.iter().any(|&i| !(1..=PID_MAX).contains(&i)) {
        return Err(bad(
            field,
            format!("{what} in nested pid namespaces {ids:?} (at most {MAX_NESTED_PID_NS} levels, each 1 to {PID_MAX})"),
        ));
    }
    Ok(())
}

/// Inotify watches per instance (`max_user_watches` is far below).
const MAX_WATCHES: usize = 1 << 20;
/// A unix socket name (`sun_path`).
const MAX_SUN_PATH: usize = 108;
/// File status flags an open file description can hold (what fdinfo
/// shows); the open-time ones (O_CREAT, O_EXCL, O_TRUNC, O_NOCTTY) never
/// are, and must not reach an open() at restore.
const STATUS_FLAGS: u32 = (libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_ASYNC
    | libc::O_DIRECT
    | KERNEL_O_LARGEFILE
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_NOATIME
    | libc::O_PATH
    | libc::O_TMPFILE) as u32;
/// The kernel sets O_LARGEFILE on every 64-bit open (libc's is 0 there).
const KERNEL_O_LARGEFILE: i32 = 0o100000;
const OPEN_TIME_FLAGS: u32 = (libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY) as u32;

/// A path as the kernel writes it (`/proc` links, maps): absolute, within
/// `PATH_MAX`, no NUL, no empty, `.` or `..` component. Anything else
/// cannot come from a checkpoint, and could point the restore elsewhere.
fn check_path(field: &str, what: &str, p: &Path) -> Result<()> {
    let b = p.as_os_str().as_encoded_bytes();
    let why = if b.first() != Some(&b'/') {
        Some("not absolute")
    } else if b.len() >= PATH_MAX {
        Some("longer than PATH_MAX")
    } else if b.contains(&0) {
        Some("holds a NUL byte")
    } else if b != b"/"
        && b[1..]
            .split(|&c| c == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..")
    {
        Some("not canonical (an empty, `.` or `..` component)")
    } else {
        None
    };
    match why {
        Some(why) => Err(bad(field, format!("{what} {p:?} is {why}"))),
        None => Ok(()),
    }
}

fn check_name(field: &str, what: &str, s: &str, max: usize) -> Result<()> {
    if s.len() > max || s.contains('\0') {
        return Err(bad(
            field,
            format!("{what} of {} bytes (at most {max}, no NUL)", s.len()),
        ));
    }
    Ok(())
}

/// Data saved in non-empty chunks of at most [`DATA_CHUNK`] bytes, adding
/// up to exactly `len`.
fn check_data(field: &str, what: &str, chunks: &[ChunkRef], len: u64) -> Result<()> {
    let sum = chunks
        .iter()
        .fold(0u64, |a, c| a.saturating_add(c.raw_len as u64));
    let sized = chunks
        .iter()
        .all(|c| c.raw_len > 0 && c.raw_len as u64 <= DATA_CHUNK);
    if !sized || sum != len {
        return Err(bad(
            field,
            format!(
                "{what} says {len} bytes but its {} chunks hold {sum}",
                chunks.len()
            ),
        ));
    }
    Ok(())
}

fn check_signals(field: &str, what: &str, queued: &[QueuedSignal]) -> Result<()> {
    if queued.len() > MAX_QUEUED {
        return Err(bad(
            field,
            format!("{} {what} (at most {MAX_QUEUED})", queued.len()),
        ));
    }
    for s in queued {
        if !(1..=MAX_SIGNAL).contains(&s.signo) || s.info.len() != SIGINFO_LEN {
            return Err(bad(
                field,
                format!(
                    "{what}: signal {} with a siginfo of {} bytes (signals 1 to {MAX_SIGNAL}, {SIGINFO_LEN} bytes)",
                    s.signo,
                    s.info.len()
                ),
            ));
        }
    }
    Ok(())
}

/// The highest capability this kernel knows.
fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
        .min(63)
}

/// Ids a kernel holds: never -1 (which setresuid reads as "leave
/// unchanged", so the task would stay root), groups and capabilities
/// bounded.
fn check_creds(field: &str, c: &Creds) -> Result<()> {
    if let Some(id) = c
        .uid
        .iter()
        .chain(&c.gid)
        .chain(&c.groups)
        .find(|&&id| id == u32::MAX)
    {
        return Err(bad(field, format!("id {id} (-1) in its credentials")));
    }
    if c.groups.len() > MAX_GROUPS {
        return Err(bad(
            field,
            format!(
                "{} supplementary groups (at most {MAX_GROUPS} can be restored)",
                c.groups.len()
            ),
        ));
    }
    let known = if cap_last_cap() >= 63 {
        u64::MAX
    } else {
        (1u64 << (cap_last_cap() + 1)) - 1
    };
    let caps = c.cap_inh | c.cap_prm | c.cap_eff | c.cap_bnd | c.cap_amb;
    if caps & !known != 0 {
        return Err(bad(
            field,
            format!("capabilities {caps:#x} beyond this kernel's {known:#x}"),
        ));
    }
    Ok(())
}

/// Everything about `snap` that depends on the document alone.
pub fn document(snap: &Snapshot) -> Result<()> {
    if snap.processes.is_empty() || snap.processes.len() > MAX_PROCESSES {
        return Err(bad(
            "processes",
            format!(
                "{} processes (1 to {MAX_PROCESSES} allowed)",
                snap.processes.len()
            ),
        ));
    }
    for (what, s) in [
        ("hiber_version", &snap.hiber_version),
        ("hostname", &snap.hostname),
        ("kernel", &snap.kernel),
    ] {
        check_name(what, "a string", s, MAX_STRING)?;
    }
    for (what, n) in [
        ("files", snap.files.len()),
        ("pipes", snap.pipes.len()),
        ("shmem", snap.shmem.len()),
        ("roots", snap.roots.len()),
    ] {
        if n > MAX_FILES {
            return Err(bad(what, format!("{n} entries (at most {MAX_FILES})")));
        }
    }
    // A checkpoint that refused anything wrote no image.
    if let Some(f) = snap.report.refused().next() {
        return Err(bad(
            "report",
            format!(
                "pid {} {} was refused at checkpoint ({}), yet the image holds it",
                f.pid, f.subject, f.reason
            ),
        ));
    }
    for p in &snap.processes {
        process(snap, p)?;
    }
    for (i, f) in snap.files.iter().enumerate() {
        file(snap, i, f)?;
    }
    for (i, p) in snap.pipes.iter().enumerate() {
        pipe(i, p)?;
    }
    for (i, obj) in snap.shmem.iter().enumerate() {
        shmem(i, obj)?;
        // A SysV segment belongs to the saved processes: its owner is one
        // of theirs (so the caller's checks of their credentials cover it).
        if let ShmemKind::Sysv(s) = &obj.kind {
            let owned = snap.processes.iter().any(|p| {
                p.creds.uid.contains(&s.uid)
                    && (p.creds.gid.contains(&s.gid) || p.creds.groups.contains(&s.gid))
            });
            if !owned {
                return Err(bad(
                    format!("shared object {i}"),
                    format!(
                        "SysV segment owned by {}:{}, which no saved process is",
                        s.uid, s.gid
                    ),
                ));
            }
        }
    }
    if snap.detached.len() > MAX_DETACHED {
        return Err(bad(
            "detached",
            format!(
                "{} detached devices (at most {MAX_DETACHED})",
                snap.detached.len()
            ),
        ));
    }
    for ev in &snap.detached {
        // Encoding checks sizes; the subsystem becomes a sysfs path.
        let ok = crate::uevent::sysfs::valid_subsystem(&ev.subsystem)
            && ev.devpath.starts_with("/devices/")
            && !ev.devpath.split('/').any(|c| c == "..")
            && ev.properties.len() <= crate::uevent::MAX_PROPERTIES
            && crate::uevent::libudev::encode(ev, 0).is_ok_and(|m| m.len() <= MAX_MESSAGE);
        if !ok {
            return Err(bad(
                "detached",
                format!("detached device event {} {:?}", ev.action, ev.devpath),
            ));
        }
    }
    Ok(())
}

fn process(snap: &Snapshot, p: &ProcessImage) -> Result<()> {
    let field = format!("pid {}", p.pid);
    let field = field.as_str();
    if p.pid <= 0
        || p.pid > PID_MAX
        || !(0..=PID_MAX).contains(&p.ppid)
        || !(0..=PID_MAX).contains(&p.pgid)
        || !(0..=PID_MAX).contains(&p.sid)
    {
        // A pgid or sid of 0: led from outside the pid namespace.
        return Err(bad(
            field,
            format!(
                "process with pid {} ppid {} pgid {} sid {} (pids are 1 to {PID_MAX})",
                p.pid, p.ppid, p.pgid, p.sid
            ),
        ));
    }
    check_name(field, "comm", &p.comm, MAX_NAME)?;
    if let Some(sig) = p.job_stop {
        // Only a stop: the restore sends this signal itself.
        if !crate::signals::is_job_stop(sig) {
            return Err(bad(
                field,
                format!("stopped by signal {sig}, not a stop signal"),
            ));
        }
    }
    check_creds(field, &p.creds)?;
    nested_pids(field, "pids", &p.ns_pids)?;
    for t in &p.threads {
        nested_pids(field, "thread ids", &t.ns_tids)?;
        if t.ns_tids.len() != p.ns_pids.len() {
            return Err(bad(
                field,
                format!(
                    "thread {} in {} nested pid namespaces, its process in {}",
                    t.tid,
                    t.ns_tids.len(),
                    p.ns_pids.len()
                ),
            ));
        }
    }
    if let Some(user) = p.namespaces.as_ref().and_then(|n| n.user.as_ref()) {
        user_namespace(field, p, user)?;
    }
    if p.umask > 0o777 {
        return Err(bad(field, format!("umask {:#o}", p.umask)));
    }
    let mut resources = HashSet::new();
    for r in &p.rlimits {
        if r.resource >= RLIMITS || !resources.insert(r.resource) || r.cur > r.max {
            return Err(bad(
                field,
                format!(
                    "rlimit {} of {} / {} (resources 0 to {}, once each, soft at most hard)",
                    r.resource,
                    r.cur,
                    r.max,
                    RLIMITS - 1
                ),
            ));
        }
    }
    if let Some(cg) = &p.cgroup {
        check_path(field, "cgroup", Path::new(cg))?;
    }
    if p.fds.len() > MAX_FDS_PER_PROCESS {
        return Err(bad(field, format!("has {} fds", p.fds.len())));
    }
    let mut numbers = HashSet::new();
    for f in &p.fds {
        if f.file >= snap.files.len() || f.fd < 0 || f.fd >= 1 << 20 || !numbers.insert(f.fd) {
            return Err(bad(
                format!("{field} fd {}", f.fd),
                format!(
                    "refers to file {}, which the image does not contain, or the fd number is out of range or given twice",
                    f.file
                ),
            ));
        }
    }
    if let Some(index) = p.ctty {
        let held = snap
            .files
            .iter()
            .any(|f| matches!(&f.kind, FileKind::Pty(t) if t.index == index));
        if !held {
            return Err(bad(
                field,
                format!("controlling terminal pty {index}, which the image does not contain"),
            ));
        }
    }
    if p.locks.len() > MAX_LOCKS {
        return Err(bad(field, format!("{} file locks", p.locks.len())));
    }
    if let Some(l) = p.locks.iter().find(|l| !numbers.contains(&l.fd)) {
        return Err(bad(
            field,
            format!("a file lock on fd {}, which it does not hold", l.fd),
        ));
    }
    check_signals(field, "signals pending for the process", &p.shared_pending)?;
    if p.sigactions.len() > MAX_SIGNAL as usize {
        return Err(bad(field, format!("{} signal actions", p.sigactions.len())));
    }
    let mut signals = HashSet::new();
    for a in &p.sigactions {
        if !(1..=MAX_SIGNAL).contains(&a.signo)
            || a.signo == libc::SIGKILL
            || a.signo == libc::SIGSTOP
            || !signals.insert(a.signo)
        {
            return Err(bad(field, format!("an action for signal {}", a.signo)));
        }
    }
    timers(field, p)?;
    if p.zombie_status.is_some() {
        return Ok(());
    }
    // A zombie has no cwd or root, only a live process.
    if p.root_gone && !p.cwd_gone {
        return Err(bad(field, "a working directory under a root that is gone"));
    }
    if !p.cwd_gone {
        check_path(field, "cwd", &p.cwd)?;
    }
    if !p.root_gone {
        check_path(field, "root", &p.root)?;
    }
    let Some(mm) = &p.mm else {
        return Err(bad(field, "has no memory image"));
    };
    threads(field, p)?;
    mm_image(snap, field, p.pid, mm)
}

/// A user namespace the restorer makes may map only ids the process has,
/// one per line: what its owner could have made unprivileged. Anything
/// more (root's ids, a range) would hand the restored process rights the
/// restorer has and it had not.
/// Whether this machine lets a normal user make a user namespace (Debian's
/// `kernel.unprivileged_userns_clone`, `user.max_user_namespaces`): the
/// restore makes one, with capabilities in it, only for a process whose
/// user could have made it.
fn users_may_make_user_namespaces() -> bool {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    read("/proc/sys/kernel/unprivileged_userns_clone") != Some(0)
        && read("/proc/sys/user/max_user_namespaces") != Some(0)
}

fn user_namespace(
    field: &str,
    p: &ProcessImage,
    user: &crate::namespaces::UserNamespace,
) -> Result<()> {
    if user.recreate && !users_may_make_user_namespaces() {
        return Err(bad(
            field,
            "a user namespace to make with capabilities in it, on a machine where users may not make user namespaces".to_string(),
        ));
    }
    let gids: Vec<u32> = p.creds.gid.iter().chain(&p.creds.groups).copied().collect();
    for (name, map, own) in [
        ("uid_map", &user.uid_map, &p.creds.uid[..]),
        ("gid_map", &user.gid_map, &gids[..]),
    ] {
        if map.len() > crate::namespaces::MAX_MAP_LINES {
            return Err(bad(field, format!("a {name} of {} lines", map.len())));
        }
        if let Some(l) = map.iter().find(|l| l[2] != 1 || !own.contains(&l[1])) {
            return Err(bad(
                field,
                format!(
                    "a {name} line {} {} {} mapping ids the process does not have",
                    l[0], l[1], l[2]
                ),
            ));
        }
    }
    if !p.creds.uid.contains(&user.owner) {
        return Err(bad(
            field,
            format!(
                "a user namespace owned by uid {}, not one of its own",
                user.owner
            ),
        ));
    }
    Ok(())
}

fn threads(field: &str, p: &ProcessImage) -> Result<()> {
    let mut tids: Vec<i32> = p.threads.iter().map(|t| t.tid).collect();
    tids.sort_unstable();
    tids.dedup();
    if p.threads.is_empty()
        || p.threads.len() > MAX_THREADS
        || p.threads[0].tid != p.pid
        || tids.len() != p.threads.len()
        || tids.iter().any(|&t| t <= 0 || t > PID_MAX)
    {
        let shown: Vec<i32> = p.threads.iter().take(16).map(|t| t.tid).collect();
        return Err(bad(
            field,
            format!("has {} threads {shown:?}", p.threads.len()),
        ));
    }
    for t in &p.threads {
        let field = format!("{field} thread {}", t.tid);
        check_name(&field, "name", &t.name, MAX_NAME)?;
        if t.xstate.len() > MAX_XSTATE {
            return Err(bad(
                field,
                format!("xstate of {} bytes (at most {MAX_XSTATE})", t.xstate.len()),
            ));
        }
        check_signals(&field, "signals pending for the thread", &t.pending)?;
        if let Some(c) = &t.creds {
            check_creds(&field, c)?;
        }
        if t.seccomp.len() > seccomp::MAX_CHAIN {
            return Err(bad(
                field,
                format!(
                    "{} seccomp filters (at most {})",
                    t.seccomp.len(),
                    seccomp::MAX_CHAIN
                ),
            ));
        }
        if let Some(i) = t
            .seccomp
            .iter()
            .find(|&&i| i as usize >= p.seccomp_filters.len())
        {
            return Err(bad(
                field,
                format!("seccomp filter {i} of {} listed", p.seccomp_filters.len()),
            ));
        }
    }
    for (i, f) in p.seccomp_filters.iter().enumerate() {
        let len = f.program.len();
        if len == 0 || len % seccomp::INSN_LEN != 0 || len > seccomp::MAX_INSNS * seccomp::INSN_LEN
        {
            return Err(bad(
                field,
                format!(
                    "seccomp filter {i} of {len} bytes (whole instructions, at most {})",
                    seccomp::MAX_INSNS
                ),
            ));
        }
        if f.flags & !seccomp::KEPT_FLAGS != 0 {
            return Err(bad(
                field,
                format!("seccomp filter {i} with flags {:#x}", f.flags),
            ));
        }
    }
    Ok(())
}

fn timers(field: &str, p: &ProcessImage) -> Result<()> {
    const SIGEV_SIGNAL: i32 = 0;
    const SIGEV_NONE: i32 = 1;
    const SIGEV_THREAD_ID: i32 = 4;
    let t = &p.timers;
    let spec_ok = |spec: &crate::timers::Spec| {
        spec.iter()
            .all(|&(s, ns)| s >= 0 && (0..1_000_000_000).contains(&ns))
    };
    let mut which = HashSet::new();
    for (w, spec) in &t.itimers {
        if !(0..=2).contains(w) || !which.insert(*w) || !spec_ok(spec) {
            return Err(bad(field, format!("interval timer {w} {spec:?}")));
        }
    }
    if t.posix.len() > MAX_TIMERS {
        return Err(bad(field, format!("{} POSIX timers", t.posix.len())));
    }
    let mut ids = HashSet::new();
    for pt in &t.posix {
        let how = pt.notify & !SIGEV_THREAD_ID;
        let notify_ok = (how == SIGEV_SIGNAL || how == SIGEV_NONE)
            && (pt.notify & SIGEV_THREAD_ID == 0 || p.threads.iter().any(|t| t.tid == pt.target));
        if pt.id < 0
            || !ids.insert(pt.id)
            || !(0..=MAX_SIGNAL).contains(&pt.signo)
            || !notify_ok
            || !spec_ok(&pt.spec)
        {
            return Err(bad(
                field,
                format!(
                    "POSIX timer {} (signal {}, notify {}, target {})",
                    pt.id, pt.signo, pt.notify, pt.target
                ),
            ));
        }
    }
    Ok(())
}

fn mm_image(snap: &Snapshot, field: &str, pid: i32, mm: &MmImage) -> Result<()> {
    if mm.vmas.len() > MAX_VMAS {
        return Err(bad(field, format!("{} mappings", mm.vmas.len())));
    }
    if mm.auxv.len() > MAX_AUXV || !mm.auxv.len().is_multiple_of(16) {
        return Err(bad(
            field,
            format!(
                "auxv of {} bytes (pairs of words, at most {MAX_AUXV} bytes)",
                mm.auxv.len()
            ),
        ));
    }
    if let Some(exe) = &mm.exe {
        check_path(field, "exe", exe)?;
    }
    for v in &mm.vmas {
        let field = format!("{field} mapping {:#x}-{:#x}", v.start, v.end);
        match &v.backing {
            Backing::File { path, .. } => check_path(&field, "file", path)?,
            Backing::Device {
                path, major, minor, ..
            } => {
                check_path(&field, "device", path)?;
                if *major > 0xfff || *minor > 0xf_ffff || !v.pages.is_empty() {
                    return Err(bad(
                        field,
                        format!("device {major}:{minor} mapping with saved pages or a bad number"),
                    ));
                }
            }
            Backing::Shmem { object, .. } if *object >= snap.shmem.len() => {
                return Err(bad(
                    field,
                    format!("maps shared object {object}, which the image does not contain"),
                ));
            }
            _ => {}
        }
    }
    memory::validate_layout(pid, mm).map_err(|e| bad(field, e.to_string()))
}

fn file(snap: &Snapshot, i: usize, f: &files::OpenFile) -> Result<()> {
    let field = format!("file {i} ({})", f.kind.tag());
    let field = field.as_str();
    // A thread's pidfd carries PIDFD_THREAD, which is O_EXCL's bit.
    let open_time = match f.kind {
        FileKind::Pidfd(_) => OPEN_TIME_FLAGS & !(libc::O_EXCL as u32),
        _ => OPEN_TIME_FLAGS,
    };
    let status = match f.kind {
        FileKind::Pidfd(_) => STATUS_FLAGS | libc::O_EXCL as u32,
        _ => STATUS_FLAGS,
    };
    if f.flags & !status != 0
        || f.flags & open_time != 0
        || f.flags & libc::O_ACCMODE as u32 == libc::O_ACCMODE as u32
    {
        return Err(bad(
            field,
            format!("open flags {:#o}, which no open file holds", f.flags),
        ));
    }
    match &f.kind {
        FileKind::Regular(r) => {
            check_path(field, "path", &r.path)?;
            // A checkpoint writes no other file of a process's /proc
            // directory: opened by the restorer, `/proc/self/mem` would be
            // the restorer's own memory.
            if let Ok(rest) = r.path.strip_prefix("/proc") {
                let mut parts = rest.components().map(|c| c.as_os_str().to_string_lossy());
                let first = parts.next().unwrap_or_default();
                let per_process = first == "self"
                    || first == "thread-self"
                    || (!first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()));
                let name: Vec<_> = parts.collect();
                let own_mounts = first == "self"
                    && name.len() == 1
                    && files::regular::PROC_SELF_FILES.contains(&name[0].as_ref());
                // A saved process's own report, opened by a restored process.
                let saved_report = files::regular::proc_pid_file(&r.path).is_some_and(|pid| {
                    snap.processes
                        .iter()
                        .any(|p| p.pid == pid && p.zombie_status.is_none())
                });
                if per_process && !own_mounts && !saved_report {
                    return Err(bad(
                        field,
                        format!(
                            "path {:?} is a file of a process's /proc directory, which a checkpoint never saves",
                            r.path
                        ),
                    ));
                }
            }
            if r.pos > i64::MAX as u64 {
                return Err(bad(field, format!("offset {}", r.pos)));
            }
            if let Some(g) = &r.ghost {
                if g.mode > 0o7777 || g.size > files::regular::MAX_GHOST_BYTES {
                    return Err(bad(
                        field,
                        format!(
                            "deleted file of mode {:#o} and {} bytes (at most {})",
                            g.mode,
                            g.size,
                            files::regular::MAX_GHOST_BYTES
                        ),
                    ));
                }
                check_data(field, "the deleted file's contents", &g.chunks, g.size)?;
            }
        }
        FileKind::Directory(d) => check_path(field, "path", &d.path)?,
        FileKind::Memfd(m) => {
            if m.object >= snap.shmem.len() {
                return Err(bad(
                    field,
                    format!("memfd object {} does not exist", m.object),
                ));
            }
            check_name(field, "memfd name", &m.name, MAX_MEMFD_NAME)?;
        }
        FileKind::Pipe(end) if end.pipe >= snap.pipes.len() || !(end.read || end.write) => {
            return Err(bad(
                field,
                format!(
                    "pipe {} does not exist, or the end neither reads nor writes",
                    end.pipe
                ),
            ));
        }
        FileKind::CharDevice(c) => {
            check_path(field, "path", &c.path)?;
            if c.major > 0xfff || c.minor > 0xf_ffff {
                return Err(bad(field, format!("device number {}:{}", c.major, c.minor)));
            }
        }
        FileKind::Detached(d) => d.validate().map_err(|reason| bad(field, reason))?,
        FileKind::ServiceFile(sf) => {
            check_path(field, "path", &sf.path)?;
            sf.validate().map_err(|reason| bad(field, reason))?
        }
        FileKind::Reattached(r) => r.validate().map_err(|reason| bad(field, reason))?,
        FileKind::UnixSocket(u) => {
            if u.name.len() > MAX_SUN_PATH {
                return Err(bad(
                    field,
                    format!(
                        "unix socket name of {} bytes (at most {MAX_SUN_PATH})",
                        u.name.len()
                    ),
                ));
            }
            // A path name is kept as the program gave it to bind (maybe
            // relative, maybe with `//`), but never climbs with `..`.
            if u.name.first().is_some_and(|&b| b != 0) {
                let name = u.name.strip_suffix(&[0]).unwrap_or(&u.name);
                if name.contains(&0) || name.split(|&c| c == b'/').any(|c| c == b"..") {
                    return Err(bad(
                        field,
                        format!(
                            "unix socket path {:?} holds `..` or a NUL",
                            String::from_utf8_lossy(name)
                        ),
                    ));
                }
            }
            if let Some(node) = &u.file {
                saved_node(field, node)?;
            }
        }
        FileKind::Inet(s) => {
            // Stream and datagram sockets only, as checkpoint saves (a raw
            // socket made by a root restore would be a privilege).
            let family_ok = (s.family == libc::AF_INET || s.family == libc::AF_INET6)
                && (s.kind == libc::SOCK_STREAM || s.kind == libc::SOCK_DGRAM);
            let size = std::mem::size_of::<libc::sockaddr_storage>();
            if !family_ok || s.local.len() > size || s.peer.len() > size {
                return Err(bad(
                    field,
                    format!(
                        "IP socket of family {} and type {} with addresses of {} and {} bytes",
                        s.family,
                        s.kind,
                        s.local.len(),
                        s.peer.len()
                    ),
                ));
            }
        }
        FileKind::Netlink(n) => {
            let kind_ok = n.kind == libc::SOCK_RAW || n.kind == libc::SOCK_DGRAM;
            if !kind_ok || n.filter.len() > MAX_FILTER {
                return Err(bad(
                    field,
                    format!(
                        "netlink socket of type {} with a filter of {} instructions (at most {MAX_FILTER})",
                        n.kind,
                        n.filter.len()
                    ),
                ));
            }
        }
        FileKind::Pidfd(p) if p.inside && !snap.processes.iter().any(|q| q.pid == p.pid) => {
            // Only a saved process is opened again; any other pid would
            // hand the restored program a handle to a process outside.
            return Err(bad(
                field,
                format!(
                    "pidfd of pid {}, said to be saved, which the image does not contain",
                    p.pid
                ),
            ));
        }
        FileKind::Inotify(i) => {
            if i.watches.len() > MAX_WATCHES {
                return Err(bad(
                    field,
                    format!(
                        "{} inotify watches (at most {MAX_WATCHES})",
                        i.watches.len()
                    ),
                ));
            }
            for w in &i.watches {
                check_path(field, "inotify watch", &w.path)?;
            }
        }
        FileKind::Pty(p) if p.index >= 1 << 20 => {
            return Err(bad(field, format!("pty number {}", p.index)));
        }
        // The kinds with no check here check their records themselves.
        other => other.validate().map_err(|reason| bad(field, reason))?,
    }
    Ok(())
}

fn pipe(i: usize, p: &files::pipe::PipeImage) -> Result<()> {
    let field = format!("pipe {i}");
    let field = field.as_str();
    if let Some(path) = &p.fifo {
        check_path(field, "FIFO", path)?;
    }
    if let Some(node) = &p.node {
        saved_node(field, node)?;
    }
    // F_GETPIPE_SZ gives a power of two of at least a page.
    if !p.size.is_power_of_two() || (p.size as u64) < PAGE_SIZE || p.size > MAX_PIPE_SIZE {
        return Err(bad(
            field,
            format!(
                "capacity of {} bytes (a power of two, {PAGE_SIZE} to {MAX_PIPE_SIZE})",
                p.size
            ),
        ));
    }
    if p.data_len > p.size as u64 {
        return Err(bad(
            field,
            format!(
                "data_len {} is more than its capacity of {} bytes",
                p.data_len, p.size
            ),
        ));
    }
    check_data(field, "data_len", &p.data, p.data_len)
}

fn shmem(i: usize, obj: &crate::memory::shmem::ShmemObject) -> Result<()> {
    let field = format!("shared object {i}");
    let field = field.as_str();
    if obj.size > MAX_OBJECT_BYTES {
        return Err(bad(
            field,
            format!("size of {} bytes (at most {MAX_OBJECT_BYTES})", obj.size),
        ));
    }
    let size = obj.size.next_multiple_of(PAGE_SIZE);
    let outside = obj.pages.iter().any(|p| {
        p.addr % PAGE_SIZE != 0
            || p.addr
                .saturating_add((64 - p.bitmap.leading_zeros() as u64) * PAGE_SIZE)
                > size
    });
    if outside {
        return Err(bad(
            field,
            format!("has pages outside its {} bytes", obj.size),
        ));
    }
    match &obj.kind {
        ShmemKind::Sysv(s)
            if s.id < 0 || s.mode > 0o777 || s.uid == u32::MAX || s.gid == u32::MAX =>
        {
            Err(bad(
                field,
                format!(
                    "SysV segment with a bad id {}, mode {:#o} or owner {}:{}",
                    s.id, s.mode, s.uid, s.gid
                ),
            ))
        }
        ShmemKind::Memfd { name, .. } => check_name(field, "memfd name", name, MAX_MEMFD_NAME),
        ShmemKind::DeletedFile { path } => check_path(field, "deleted file", path),
        _ => Ok(()),
    }
}

/// The whole pass a restore runs: [`document`], then the checks that
/// depend on the caller (credentials, limits) and on this machine (the
/// device table, mapped files unchanged, every chunk present).
pub(super) fn validate(
    dir: &Path,
    snap: &Snapshot,
    reader: &ImageReader,
    sys_roots: &SysRoots,
    on_behalf_of: Option<&Creds>,
) -> std::result::Result<(), RestoreError> {
    let invalid = |e: Invalid| RestoreError::Invalid {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    };
    document(snap).map_err(invalid)?;
    // The credentials the image's must not exceed: the user this restore
    // acts for, else the restorer's own.
    let caller = match on_behalf_of {
        Some(user) => user.clone(),
        None => Creds::of_self().doing("reading the caller's credentials")?,
    };
    // Device classes by this machine's sysfs and its device table (the
    // built-in rules and the system file: never the rules of whoever
    // made the image), exactly as `hiber check` decides at checkpoint.
    let mut devices = DevicePolicies::load(
        Some(Path::new(crate::devices::SYSTEM_CONFIG)),
        &[] as &[&str],
    )
    .map_err(|e| invalid(bad("device table", e.to_string())))?;
    devices.roots = sys_roots.clone();
    for (i, f) in snap.files.iter().enumerate() {
        if let FileKind::CharDevice(c) = &f.kind {
            // Reopened live: only what the table reopens.
            let d = devices.classify(&c.path, c.major, c.minor, Use::Plain);
            if d.decision.policy != Policy::Reopen {
                return Err(invalid(bad(
                    format!("file {i} (char_device)"),
                    format!(
                        "{} is {} here ({}): only devices the device table reopens are opened at restore",
                        d.describe(),
                        d.decision.policy,
                        d.decision.describe_rule()
                    ),
                )));
            }
        }
    }
    for p in &snap.processes {
        let thread_creds = p.threads.iter().filter_map(|t| t.creds.as_ref());
        for c in std::iter::once(&p.creds).chain(thread_creds) {
            if let Some(reason) = c.not_allowed_for(&caller) {
                return Err(RestoreError::Credentials { pid: p.pid, reason });
            }
        }
        for r in &p.rlimits {
            if let Some(max) = hard_limit(r.resource) {
                if r.max > max {
                    return Err(invalid(bad(
                        format!("pid {}", p.pid),
                        format!(
                            "rlimit {} hard limit {} is above the restorer's own, {max}",
                            r.resource, r.max
                        ),
                    )));
                }
            }
        }
        // Device mappings come back as zero-filled memory and detached
        // fds as dead stand-ins whatever the table says: only a reopened
        // device is live, and that is checked above.
        let Some(mm) = &p.mm else { continue };
        if !p.is_zombie() {
            memory::check_files(p.pid, mm)?;
        }
    }
    for (i, f) in snap.files.iter().enumerate() {
        if let FileKind::UnixSocket(u) = &f.kind {
            socket_path_allowed(snap, i, u).map_err(invalid)?;
        }
    }
    for (i, p) in snap.pipes.iter().enumerate() {
        fifo_allowed(snap, i, p).map_err(invalid)?;
    }
    reader.check_chunks(snap.chunks())?;
    Ok(())
}

/// A socket file's or FIFO's saved owner and mode: ids a file can have,
/// permission bits only, and an absolute, canonical working directory.
fn saved_node(field: &str, n: &files::fsnode::SavedNode) -> Result<()> {
    if let Some(why) = n.invalid() {
        return Err(bad(field, why));
    }
    if let Some(base) = &n.base {
        check_path(field, "working directory", base)?;
    }
    Ok(())
}

/// Whether credentials `c` grant the access bits `want` (4 read, 2 write,
/// 1 search) on a file of metadata `md`, by its mode bits (root: any).
fn permitted(c: &Creds, md: &std::fs::Metadata, want: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (uid, mode) = (c.uid[3], md.mode());
    let bits = if uid == md.uid() {
        mode >> 6
    } else if c.gid[3] == md.gid() || c.groups.contains(&md.gid()) {
        mode >> 3
    } else {
        mode
    };
    uid == 0 || bits & want == want
}

/// A FIFO named by the document is opened (and its saved bytes written
/// into it) only when each saved holder could open it for the end it
/// holds: else an image could feed bytes to a FIFO of someone else's.
fn fifo_allowed(snap: &Snapshot, i: usize, p: &files::pipe::PipeImage) -> Result<()> {
    let Some(path) = &p.fifo else {
        return Ok(());
    };
    // A FIFO that is not there fails the open later, harmlessly.
    let Ok(md) = std::fs::metadata(path) else {
        return Ok(());
    };
    for q in &snap.processes {
        for fd in &q.fds {
            let Some(FileKind::Pipe(end)) = snap.files.get(fd.file).map(|f| &f.kind) else {
                continue;
            };
            let want = if end.read { 4 } else { 0 } | if end.write { 2 } else { 0 };
            if end.pipe == i && !permitted(&q.creds, &md, want) {
                return Err(bad(
                    format!("pipe {i}"),
                    format!(
                        "FIFO {} may not be opened by pid {} (uid {}) for the end it holds",
                        path.display(),
                        q.pid,
                        q.creds.uid[3]
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A unix socket bound to a path makes (and may first remove) a socket
/// file there: only in a directory one of its saved holders could write
/// to, by the directory's mode bits and their credentials (root's, any).
fn socket_path_allowed(snap: &Snapshot, i: usize, u: &files::unix::UnixSocket) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    if u.name.first().is_none_or(|&b| b == 0) {
        return Ok(());
    }
    let name = u.name.strip_suffix(&[0]).unwrap_or(&u.name);
    let name = Path::new(std::ffi::OsStr::from_bytes(name));
    // A relative name is bound in the working directory saved with it.
    let path = match u.file.as_ref().and_then(|f| f.base.as_ref()) {
        Some(base) if name.is_relative() => base.join(name),
        _ => name.to_path_buf(),
    };
    let path = path.as_path();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // A directory that is not there fails the bind later, harmlessly.
    let Ok(md) = std::fs::metadata(dir) else {
        return Ok(());
    };
    let may_write = |c: &Creds| permitted(c, &md, 3);
    let holders = snap
        .processes
        .iter()
        .filter(|p| p.fds.iter().any(|f| f.file == i));
    if holders.clone().any(|p| may_write(&p.creds)) {
        return Ok(());
    }
    let uids: Vec<u32> = holders.map(|p| p.creds.uid[3]).collect();
    Err(bad(
        format!("file {i} (unix_socket)"),
        format!(
            "socket path {} is in {}, which its holders (uids {uids:?}) may not write to",
            path.display(),
            dir.display()
        ),
    ))
}

/// The restorer's own hard limit for `resource`, when it is not unlimited.
fn hard_limit(resource: u32) -> Option<u64> {
    // The resource was range-checked.
    match crate::sys::process::limit(resource) {
        Ok((_, hard)) if hard != libc::RLIM_INFINITY => Some(hard),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_canonical_and_absolute() {
        for ok in ["/", "/etc/passwd", "/tmp/a b (deleted)", "/a/.hidden/..x"] {
            assert!(check_path("f", "path", Path::new(ok)).is_ok(), "{ok}");
        }
        for (no, why) in [
            ("etc/passwd", "not absolute"),
            ("/tmp/../etc/cron.d/x", "not canonical"),
            ("/tmp/./x", "not canonical"),
            ("//etc", "not canonical"),
            ("/etc/", "not canonical"),
            ("/a\0b", "NUL"),
        ] {
            let e = check_path("file 3", "path", Path::new(no)).unwrap_err();
            assert!(e.to_string().starts_with("file 3: path"), "{e}");
            assert!(e.to_string().contains(why), "{no}: {e}");
        }
        let long = format!("/{}", "a".repeat(PATH_MAX));
        assert!(check_path("f", "p", Path::new(&long)).is_err());
    }

    #[test]
    fn data_must_add_up_to_its_length() {
        let chunk = |n: u32| ChunkRef {
            hash: "0".repeat(64),
            raw_len: n,
            stored_len: n,
            pack: "p".into(),
            offset: 0,
        };
        assert!(check_data("pipe 0", "data_len", &[chunk(10), chunk(5)], 15).is_ok());
        assert!(check_data("pipe 0", "data_len", &[], 0).is_ok());
        let e = check_data("pipe 0", "data_len", &[chunk(10)], 1 << 40).unwrap_err();
        assert!(
            e.to_string()
                .contains("pipe 0: data_len says 1099511627776 bytes"),
            "{e}"
        );
        // More chunks than the length needs.
        assert!(check_data("pipe 0", "data_len", &[chunk(0), chunk(0)], 0).is_err());
    }

    /// What slips past the bounds is an error naming the pid, not a panic.
    #[test]
    fn scratch_overflow_is_an_error() {
        let me = std::process::id() as i32;
        let mut mem = crate::procmem::ProcMem::new(me, false);
        let scratch = crate::remote::Scratch { addr: 0, len: 16 };
        let e = scratch
            .write(&mut mem, 10, &[0; 8])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("pid {me}: 8 bytes at offset 10 do not fit the 16 byte scratch area")
        );
        let mut out = [0u8; 4];
        assert!(scratch.read(&mut mem, usize::MAX, &mut out).is_err());
    }

    #[test]
    fn ids_of_minus_one_and_too_many_groups_are_refused() {
        let mut c = Creds {
            uid: [1000; 4],
            gid: [1000; 4],
            groups: vec![1000],
            cap_inh: 0,
            cap_prm: 0,
            cap_eff: 0,
            cap_bnd: 0,
            cap_amb: 0,
            no_new_privs: false,
        };
        assert!(check_creds("pid 1", &c).is_ok());
        c.uid[1] = u32::MAX;
        assert!(check_creds("pid 1", &c)
            .unwrap_err()
            .to_string()
            .contains("(-1)"));
        c.uid[1] = 1000;
        c.groups = vec![5; MAX_GROUPS + 1];
        let e = check_creds("pid 1", &c).unwrap_err().to_string();
        assert!(e.contains("1025 supplementary groups"), "{e}");
    }
}
