//! cgroup v2: which cgroup a process is in, saved and joined again at
//! restore, and the freezer.
//!
//! The freezer is used when the task set is exactly the processes
//! of one cgroup (a session in a systemd scope, say): writing 1 to its
//! `cgroup.freeze` stops every task at once, so no fork can race with the
//! ptrace seizing that follows. The tasks are then seized and interrupted
//! while frozen (a ptrace trap takes precedence over the freezer trap, so
//! they reach their ptrace stops) and the cgroup is thawed again: from then
//! on ptrace alone holds them. The guard thaws the cgroup on every path.

use crate::sys::process::WriteIfOrphaned;
use std::collections::BTreeSet;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How long a cgroup may take to report itself frozen.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the cgroup v2 hierarchy is mounted, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// The cgroup v2 path of `pid` ("0::/path" in /proc/PID/cgroup).
pub fn cgroup_of(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Put the restored process `pid` back into the cgroup it was saved in
/// (`path` as /proc/PID/cgroup names it), when that cgroup exists here
/// and is not where the process already is. Ok(false) when there is
/// nothing to join: no cgroup v2, or the cgroup is gone (another machine,
/// a scope that ended).
pub fn join(pid: i32, path: &str) -> io::Result<bool> {
    if path.is_empty() || path == "/" || cgroup_of(pid).as_deref() == Some(path) {
        return Ok(false);
    }
    let Some(mount) = cgroup2_mount() else {
        return Ok(false);
    };
    let dir = mount.join(path.trim_start_matches('/'));
    // A path from an image: it must stay below the mount.
    if path.split('/').any(|c| c == "..") || !dir.join("cgroup.procs").is_file() {
        return Ok(false);
    }
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
    Ok(true)
}

/// The cgroup that holds `pid` frozen, if one does (v2 `cgroup.events`
/// says "frozen 1", or the v1 freezer's state is not THAWED): its tasks
/// would stop in the freezer, not in our remote calls.
pub fn frozen(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            let dir = cgroup2_mount()?.join(rel);
            let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
            if events.lines().any(|l| l == "frozen 1") {
                return Some(dir.display().to_string());
            }
        } else if controllers.split(',').any(|c| c == "freezer") {
            let dir = Path::new("/sys/fs/cgroup/freezer").join(rel);
            let state = std::fs::read_to_string(dir.join("freezer.state")).unwrap_or_default();
            if !state.trim().is_empty() && state.trim() != "THAWED" {
                return Some(dir.display().to_string());
            }
        }
    }
    None
}

/// Every process of the cgroup at `dir` and of the cgroups below it.
fn members(dir: &Path, out: &mut BTreeSet<i32>) -> io::Result<()> {
    for l in std::fs::read_to_string(dir.join("cgroup.procs"))?.lines() {
        if let Ok(pid) = l.trim().parse() {
            out.insert(pid);
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            members(&entry.path(), out)?;
        }
    }
    Ok(())
}

/// The cgroup (with the cgroups below it) whose processes are exactly
/// `pids`, if there is one; never the root cgroup.
pub(crate) fn exactly(pids: &BTreeSet<i32>) -> Option<PathBuf> {
    // The set was scanned a moment before: a short-lived child in it (a
    // shell loop's `sleep`) may be reaped by now, and has no cgroup left.
    let path = pids.iter().find_map(|&p| cgroup_of(p))?;
    if path == "/" || path.is_empty() {
        return None;
    }
    let ended_since = |p: i32| {
        crate::procfs::ProcDir::new(p)
            .stat()
            .map_or(true, |s| s.state == 'Z' || s.state == 'X')
    };
    // The set's live processes must all be in that cgroup or below it.
    let inside = |p: &str| p == path || p.starts_with(&format!("{path}/"));
    if !pids
        .iter()
        .all(|&p| cgroup_of(p).map_or_else(|| ended_since(p), |c| inside(&c)))
    {
        return None;
    }
    let dir = cgroup2_mount()?.join(path.trim_start_matches('/'));
    let mut all = BTreeSet::new();
    members(&dir, &mut all).ok()?;
    // The set was scanned a moment before the cgroup was read: a busy tree
    // (a shell loop) forked or lost a child meanwhile. Those differences
    // are the set's own; anything else in the cgroup is not.
    let forked_since = |p: i32| {
        let mut p = p;
        // A child forked since, or its own child: its ancestry reaches the set.
        for _ in 0..4 {
            match crate::procfs::ProcDir::new(p).stat() {
                Ok(s) if pids.contains(&s.ppid) => return true,
                Ok(s) if all.contains(&s.ppid) => p = s.ppid,
                _ => return false,
            }
        }
        false
    };
    let same = all.difference(pids).all(|&p| forked_since(p))
        && pids.difference(&all).all(|&p| ended_since(p));
    same.then_some(dir)
}

/// A frozen cgroup; thawed when dropped, or by its sentinel if we die.
#[derive(Debug)]
pub(crate) struct CgroupFreeze {
    dir: PathBuf,
    // Dropped after `drop` has thawed the cgroup.
    _sentinel: WriteIfOrphaned,
}

impl CgroupFreeze {
    /// Freeze the cgroup at `dir` and wait until the kernel reports every
    /// task frozen. A cgroup someone else froze is refused: we would thaw
    /// it after us, and its tasks could not run our remote calls.
    pub fn freeze(dir: &Path) -> io::Result<Self> {
        let control = dir.join("cgroup.freeze");
        if std::fs::read_to_string(&control)?.trim() != "0" {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "the cgroup is frozen already",
            ));
        }
        let sentinel = sentinel(&control)?;
        std::fs::write(&control, "1")?;
        let guard = CgroupFreeze {
            dir: dir.to_path_buf(),
            _sentinel: sentinel,
        };
        crate::faults::point("cgroup: frozen");
        let events = std::fs::File::open(dir.join("cgroup.events"))?;
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        loop {
            // Read through the polled file first: a change after this read
            // wakes the poll (the kernel signals every change of the file).
            let mut buf = [0u8; 256];
            let n = std::os::unix::fs::FileExt::read_at(&events, &mut buf, 0)?;
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.lines().any(|l| l == "frozen 1") {
                debug!(cgroup = %dir.display(), "cgroup frozen");
                return Ok(guard);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the cgroup did not report itself frozen",
                ));
            }
            let _ = crate::sys::event::poll_one(
                events.as_raw_fd(),
                libc::POLLPRI,
                left.as_millis().min(100) as i32,
            );
        }
    }
}

impl Drop for CgroupFreeze {
    fn drop(&mut self) {
        if let Err(err) = std::fs::write(self.dir.join("cgroup.freeze"), "0") {
            warn!(cgroup = %self.dir.display(), %err, "could not thaw the cgroup");
        }
    }
}

/// A process that thaws a frozen cgroup if we die first. The kernel lets
/// ptrace tracees go when their tracer dies, but a frozen cgroup stays
/// frozen with nobody left to thaw it. The sentinel waits on a pipe whose
/// write end only we hold: a byte means we thawed it ourselves; end of
/// file without one means we are gone, and it writes 0 to `cgroup.freeze`.
/// It lives in a process group of its own, so a ^C or a kill of our group
/// does not take it along.
fn sentinel(control: &Path) -> io::Result<WriteIfOrphaned> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(control.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    WriteIfOrphaned::spawn(&path, b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    /// A cgroup made for one test, with the child moved into it; the
    /// child is ended and the cgroup removed when dropped.
    struct CgroupWith {
        dir: PathBuf,
        child: Child,
    }

    impl Drop for CgroupWith {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir(&self.dir);
        }
    }

    #[test]
    fn a_set_member_reaped_since_the_scan_does_not_hide_the_cgroup() {
        let mount = cgroup2_mount().expect("a cgroup v2 hierarchy");
        let dir = mount.join(format!("hiber-unit-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        // A pid lower than the live one's that was in the set and is gone
        // now: a shell loop's `sleep` reaped between the scan and the look.
        let mut gone = Command::new("true").spawn().unwrap();
        let gone_pid = gone.id() as i32;
        gone.wait().unwrap();
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        let held = CgroupWith { dir, child };
        let pid = held.child.id() as i32;
        std::fs::write(held.dir.join("cgroup.procs"), pid.to_string()).unwrap();
        let set: BTreeSet<i32> = [pid, gone_pid].into();
        assert_eq!(exactly(&set), Some(held.dir.clone()));
        // A live process of the set outside the cgroup rules it out.
        let with_us: BTreeSet<i32> = [pid, gone_pid, std::process::id() as i32].into();
        assert_eq!(exactly(&with_us), None);
    }
}
