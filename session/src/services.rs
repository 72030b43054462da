//! Session services that cannot be saved, from a table of data: FUSE
//! servers (the document portal, gvfsd-fuse) and their setuid mount
//! helpers. A FUSE server's kernel mount and its `/dev/fuse` connection
//! cannot be saved, and a mount helper runs as root.
//!
//! They are left out of the session's set with their descendants, even
//! below a saved process (the engine prunes their subtrees: the parent is
//! saved without them). Their clients' connections to them are Reset. A
//! save with `--stop` ends them with the session and unmounts their FUSE
//! mounts, so no dead mount ("Transport endpoint is not connected") is
//! left; without it they keep running. At restore they come back the way
//! the desktop brings them: D-Bus activation on first use.
//!
//! A process is a service by the first match of: a rule naming its
//! executable (the system file's, `/etc/hiber/services.toml`, then the
//! built-in ones), a rule naming the executable of one of its children
//! (`with_child`: gvfsd, which starts gvfsd-fuse and is the only way it
//! comes back), holding `/dev/fuse` (any other FUSE server), or being a
//! FUSE mount helper (`fusermount`, `fusermount3`). [`ServiceRules::decide`]
//! is the one place this lookup happens.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The system configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/hiber/services.toml";
/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// How long a service has to end after SIGTERM, then after SIGKILL.
const END_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a FUSE mount has to go once its server has ended (its mount
/// helper unmounts it) before it is unmounted here.
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("reading service policy file {path}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("service policy file {path} is larger than {MAX_CONFIG_BYTES} bytes")]
    ConfigTooLarge { path: PathBuf },
    #[error("service policy file {path}: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("pid {pid} ({comm}) did not end within {} s of SIGKILL", END_TIMEOUT.as_secs())]
    NotEnded { pid: i32, comm: String },
    #[error("unmounting the FUSE mount {path} of pid {pid}")]
    Unmount {
        pid: i32,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What kind of service a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Serves a FUSE mount through `/dev/fuse`.
    FuseServer,
    /// A FUSE server's mount helper (setuid root, stays as its child to
    /// unmount when it ends).
    MountHelper,
    /// The parent that starts a FUSE server and is the only way it comes
    /// back (gvfsd for gvfsd-fuse).
    Starter,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::FuseServer => "FUSE server",
            Kind::MountHelper => "FUSE mount helper",
            Kind::Starter => "starter of a FUSE server",
        })
    }
}

/// One rule: the executables it names and what is known of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A short name: "xdg-document-portal".
    pub name: String,
    /// Absolute executable paths (as `/proc/PID/exe` shows them).
    pub exe: Vec<PathBuf>,
    pub kind: Kind,
    /// The D-Bus name whose activation starts it again.
    #[serde(default)]
    pub bus_name: Option<String>,
    /// For a starter: the executables of the children that make it one.
    #[serde(default)]
    pub with_child: Vec<PathBuf>,
    /// Why it cannot be saved.
    pub why: String,
}

/// The built-in rules: (name, executables, kind, bus name, children that
/// make it a starter, why).
#[allow(clippy::type_complexity)]
pub const BUILTIN: &[(&str, &[&str], Kind, Option<&str>, &[&str], &str)] = &[
    (
        "xdg-document-portal",
        &["/usr/libexec/xdg-document-portal"],
        Kind::FuseServer,
        Some("org.freedesktop.portal.Documents"),
        &[],
        "serves $XDG_RUNTIME_DIR/doc over FUSE: its mount and /dev/fuse connection cannot be saved",
    ),
    (
        "gvfsd-fuse",
        &["/usr/libexec/gvfsd-fuse"],
        Kind::FuseServer,
        None,
        &[],
        "serves $XDG_RUNTIME_DIR/gvfs over FUSE: its mount and /dev/fuse connection cannot be saved",
    ),
    (
        "gvfsd",
        &["/usr/libexec/gvfsd"],
        Kind::Starter,
        Some("org.gtk.vfs.Daemon"),
        &["/usr/libexec/gvfsd-fuse"],
        "starts gvfsd-fuse, which cannot be saved, once, when it starts: left out with it so that activating it starts both again",
    ),
    (
        "fusermount3",
        &["/usr/bin/fusermount3", "/bin/fusermount3"],
        Kind::MountHelper,
        None,
        &[],
        "a FUSE server's mount helper: setuid root, it unmounts the server's mount when the server ends",
    ),
    (
        "fusermount",
        &["/usr/bin/fusermount", "/bin/fusermount"],
        Kind::MountHelper,
        None,
        &[],
        "a FUSE server's mount helper: setuid root, it unmounts the server's mount when the server ends",
    ),
];

/// The rule for a FUSE server no rule names (it holds `/dev/fuse`).
const ANY_FUSE_SERVER: &str = "serves a FUSE mount (holds /dev/fuse): its mount and /dev/fuse connection cannot be saved; nothing names how it comes back";

/// Where a rule comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "path")]
pub enum Origin {
    File(PathBuf),
    BuiltIn,
    /// No rule: the process holds `/dev/fuse`.
    HoldsFuse,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::BuiltIn => f.write_str("built-in"),
            Origin::HoldsFuse => f.write_str("holds /dev/fuse"),
        }
    }
}

/// The configuration file: `[[service]]` entries, each a [`Rule`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    service: Vec<Rule>,
}

/// What the lookup needs to know of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Its executable, as `/proc/PID/exe` reads (None: unreadable).
    pub exe: Option<PathBuf>,
    /// It holds an fd of `/dev/fuse`.
    pub holds_fuse: bool,
}

impl Facts {
    /// A live process's facts.
    pub fn of(pid: i32) -> Self {
        let dir = hiber_core::procfs::ProcDir::new(pid);
        let holds_fuse = dir.fds().is_ok_and(|fds| {
            fds.into_iter()
                .any(|fd| dir.fd_target(fd).is_ok_and(|t| is_dev_fuse(&t)))
        });
        Facts {
            exe: dir.exe().ok(),
            holds_fuse,
        }
    }
}

/// Whether an fd link names `/dev/fuse`.
pub fn is_dev_fuse(target: &Path) -> bool {
    target == Path::new("/dev/fuse")
}

/// Why a process is a service: the rule and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub name: String,
    pub kind: Kind,
    pub bus_name: Option<String>,
    pub why: String,
    pub origin: Origin,
}

/// Every rule in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRules {
    /// The configuration file's rules, and its path; consulted first.
    pub file: Option<(PathBuf, Vec<Rule>)>,
}

impl Default for ServiceRules {
    /// The built-in rules alone.
    fn default() -> Self {
        Self { file: None }
    }
}

/// The built-in rules as [`Rule`]s.
pub fn builtin() -> Vec<Rule> {
    BUILTIN
        .iter()
        .map(|&(name, exe, kind, bus, with_child, why)| Rule {
            name: name.into(),
            exe: exe.iter().map(PathBuf::from).collect(),
            kind,
            bus_name: bus.map(str::to_string),
            with_child: with_child.iter().map(PathBuf::from).collect(),
            why: why.into(),
        })
        .collect()
}

/// A configuration file's text (`path` names it in errors).
pub fn parse_config(path: &Path, text: &str) -> Result<Vec<Rule>, ServiceError> {
    let bad = |message: String| ServiceError::BadConfig {
        path: path.to_path_buf(),
        message,
    };
    let file: ConfigFile = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
    for r in &file.service {
        if r.exe.is_empty() || r.exe.iter().chain(&r.with_child).any(|e| !e.is_absolute()) {
            return Err(bad(format!(
                "service {:?}: exe (and with_child) must be absolute paths, exe at least one",
                r.name
            )));
        }
        if (r.kind == Kind::Starter) == r.with_child.is_empty() {
            return Err(bad(format!(
                "service {:?}: with_child is for kind = \"starter\", and a starter needs it",
                r.name
            )));
        }
    }
    Ok(file.service)
}

impl ServiceRules {
    /// The rules of `file` (when given and present: an absent system file
    /// is no error) over the built-in ones.
    pub fn load(file: Option<&Path>) -> Result<Self, ServiceError> {
        let Some(path) = file else {
            return Ok(Self::default());
        };
        let read = |source| ServiceError::ReadConfig {
            path: path.to_path_buf(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(read(e)),
        };
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ServiceError::ConfigTooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Ok(Self {
            file: Some((path.to_path_buf(), parse_config(path, &text)?)),
        })
    }

    /// The one lookup: is the process with `facts`, whose children have
    /// `children`, a service, and by which rule. The file's rules before
    /// the built-in ones; a rule naming the executable before one naming
    /// a child's; then any holder of `/dev/fuse`.
    pub fn decide(&self, facts: &Facts, children: &[Facts]) -> Option<Decision> {
        let layers = [
            self.file
                .as_ref()
                .map(|(p, r)| (r.clone(), Origin::File(p.clone()))),
            Some((builtin(), Origin::BuiltIn)),
        ];
        let decision = |r: &Rule, origin: &Origin| Decision {
            name: r.name.clone(),
            kind: r.kind,
            bus_name: r.bus_name.clone(),
            why: r.why.clone(),
            origin: origin.clone(),
        };
        let exe = facts.exe.as_deref();
        for (rules, origin) in layers.iter().flatten() {
            if let Some(r) = rules
                .iter()
                .find(|r| exe.is_some_and(|e| r.exe.iter().any(|x| x == e)))
            {
                // A starter is one only while it has started the service.
                if r.kind != Kind::Starter || children_match(r, children) {
                    return Some(decision(r, origin));
                }
            }
        }
        if facts.holds_fuse {
            return Some(Decision {
                name: exe
                    .and_then(|e| e.file_name())
                    .map_or("FUSE server".into(), |n| n.to_string_lossy().into_owned()),
                kind: Kind::FuseServer,
                bus_name: None,
                why: ANY_FUSE_SERVER.into(),
                origin: Origin::HoldsFuse,
            });
        }
        None
    }
}

fn children_match(r: &Rule, children: &[Facts]) -> bool {
    children
        .iter()
        .any(|c| c.exe.as_ref().is_some_and(|e| r.with_child.contains(e)))
}

/// A service left out of a session, with what it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    pub pid: i32,
    pub comm: String,
    pub uid: u32,
    /// Its start time (clock ticks after boot), so that ending it by pid
    /// never ends another process that took the pid.
    pub start_time: u64,
    pub ppid: i32,
    /// The member it was found from: its parent when it runs below one,
    /// else the member connected to it.
    pub member: i32,
    /// Whether it runs below a member (its subtree is pruned from the set).
    pub below_member: bool,
    /// Its descendants (mount helpers, a starter's service), left out with it.
    pub descendants: Vec<i32>,
    /// The FUSE mounts it serves (its own or a descendant's).
    pub mounts: Vec<PathBuf>,
    pub decision: Decision,
}

impl LeftOut {
    /// What happens to it, in words: at the save, and at the restore.
    pub fn fate(&self, stop: Option<bool>) -> String {
        let mounts = if self.mounts.is_empty() {
            String::new()
        } else {
            format!(
                ", its FUSE mount {} unmounted",
                self.mounts
                    .iter()
                    .map(|m| m.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let save = match stop {
            Some(true) => format!("ended with the session{mounts}"),
            Some(false) => "keeps running".to_string(),
            None => format!("with --stop ended with the session{mounts}; else keeps running"),
        };
        let back = match &self.decision.bus_name {
            Some(name) => format!("started again by D-Bus activation of {name} on first use"),
            None if self.decision.kind == Kind::MountHelper => {
                "started again by its FUSE server".to_string()
            }
            None => "not started again by Hiber; whatever started it may".to_string(),
        };
        format!("not saved; {save}; its clients' connections Reset; after restore {back}")
    }
}

/// A line of `/proc/self/mountinfo` that Hiber reads: a FUSE mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseMount {
    pub mount_point: PathBuf,
    /// `fuse`, `fuse.portal`, `fuse.gvfsd-fuse`, `fuseblk`.
    pub fstype: String,
    /// The `user_id=` of its super options.
    pub user_id: Option<u32>,
}

/// The FUSE mounts in mountinfo text.
pub fn parse_fuse_mounts(text: &str) -> Vec<FuseMount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = unescape(left.split(' ').nth(4)?);
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let is_fuse = fstype == "fuse" || fstype == "fuseblk" || fstype.starts_with("fuse.");
            if !is_fuse {
                return None;
            }
            let _source = r.next();
            let user_id = r.next().and_then(|opts| {
                opts.split(',')
                    .find_map(|o| o.strip_prefix("user_id=")?.parse().ok())
            });
            Some(FuseMount {
                mount_point,
                fstype,
                user_id,
            })
        })
        .collect()
}

/// mountinfo's octal escapes (`\040` for a space) undone.
fn unescape(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(o) => {
                out.push((o[0] - b'0') * 64 + (o[1] - b'0') * 8 + (o[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The FUSE mounts now.
pub fn fuse_mounts() -> Vec<FuseMount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_fuse_mounts(&t))
        .unwrap_or_default()
}

/// The FUSE mounts a service serves, of `mounts` (owned by `uid`): those
/// named on its or its descendants' command lines (a mount helper's
/// `fusermount3 -o ... -- /run/user/1000/doc`, `gvfsd-fuse
/// /run/user/1000/gvfs`).
pub fn mounts_served(cmdlines: &[Vec<String>], uid: u32, mounts: &[FuseMount]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| m.user_id.is_none_or(|u| u == uid))
        .filter(|m| {
            cmdlines
                .iter()
                .flatten()
                .any(|a| Path::new(a) == m.mount_point)
        })
        .map(|m| m.mount_point.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A process's command line, split at its NULs.
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `pid`'s start time, when it is still the process it was (alive, not a
/// zombie).
fn running(pid: i32, start_time: u64) -> bool {
    hiber_core::procfs::ProcDir::new(pid)
        .stat()
        .is_ok_and(|s| s.start_time == start_time && s.state != 'Z' && s.state != 'X')
}

/// What ending one service did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ended {
    pub pid: i32,
    pub comm: String,
    /// It needed SIGKILL.
    pub killed: bool,
    /// FUSE mounts Hiber unmounted (its helper had not).
    pub unmounted: Vec<PathBuf>,
    /// What could not be done: it would not end, or a mount stayed.
    pub problem: Option<String>,
}

/// End the services left out of a session that `--stop` ended: SIGTERM,
/// then SIGKILL after a while, each process by pid only while it is still
/// the one found (same start time); then unmount what they served if
/// their helper did not. One service's failure does not stop the others'.
pub fn end(services: &[LeftOut]) -> Vec<Ended> {
    services
        .iter()
        .map(|s| {
            let mut ended = Ended {
                pid: s.pid,
                comm: s.comm.clone(),
                killed: false,
                unmounted: Vec::new(),
                problem: None,
            };
            if let Err(e) = end_one(s, &mut ended) {
                warn!(pid = s.pid, comm = %s.comm, error = %e, "ending a session service");
                ended.problem = Some(e.to_string());
            }
            info!(pid = s.pid, comm = %s.comm, killed = ended.killed, unmounted = ?ended.unmounted, "ended a session service");
            ended
        })
        .collect()
}

fn end_one(s: &LeftOut, ended: &mut Ended) -> Result<(), ServiceError> {
    let mut procs = vec![(s.pid, s.start_time)];
    for &d in &s.descendants {
        if let Ok(st) = hiber_core::procfs::ProcDir::new(d).stat() {
            procs.push((d, st.start_time));
        }
    }
    let alive = |procs: &[(i32, u64)]| -> Vec<i32> {
        procs
            .iter()
            .filter(|&&(p, t)| running(p, t))
            .map(|&(p, _)| p)
            .collect()
    };
    let signal = |pids: &[i32], sig: i32| {
        for &p in pids {
            // SAFETY: kill of a pid checked just now to be the process
            // found (same start time).
            unsafe { libc::kill(p, sig) };
        }
    };
    // The service first: its mount helper unmounts when it ends.
    if running(s.pid, s.start_time) {
        signal(&[s.pid], libc::SIGTERM);
    }
    if !wait_for(END_TIMEOUT, || alive(&procs).is_empty()) {
        ended.killed = true;
        signal(&alive(&procs), libc::SIGKILL);
        if !wait_for(END_TIMEOUT, || alive(&procs).is_empty()) {
            let pid = alive(&procs)[0];
            return Err(ServiceError::NotEnded {
                pid,
                comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .unwrap_or_default()
                    .trim_end()
                    .into(),
            });
        }
    }
    let mounted = |m: &Path| fuse_mounts().iter().any(|f| f.mount_point == m);
    for m in &s.mounts {
        if wait_for(UNMOUNT_TIMEOUT, || !mounted(m)) {
            continue;
        }
        unmount(m).map_err(|source| ServiceError::Unmount {
            pid: s.pid,
            path: m.clone(),
            source,
        })?;
        ended.unmounted.push(m.clone());
    }
    Ok(())
}

/// Unmount a dead FUSE mount: `umount2` as root, else the user's own
/// `fusermount3 -u -z` (a FUSE mount's owner may unmount it).
fn unmount(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: c is a NUL-terminated path; MNT_DETACH takes no data.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
        return Err(std::io::Error::last_os_error());
    }
    let out = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Poll `done` until it holds or `timeout` passes; whether it held.
fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The left-out services by pid, for lookups.
pub fn by_pid(services: &[LeftOut]) -> BTreeMap<i32, &LeftOut> {
    services.iter().map(|s| (s.pid, s)).collect()
}

/// Log the services found, at debug level.
pub fn log(services: &[LeftOut]) {
    for s in services {
        debug!(pid = s.pid, comm = %s.comm, name = %s.decision.name, kind = %s.decision.kind, mounts = ?s.mounts, "session service left out");
    }
    if services
        .iter()
        .any(|s| s.decision.origin == Origin::HoldsFuse)
    {
        warn!("a FUSE server no rule names is left out of the session; it is not started again after restore");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(exe: &str, fuse: bool) -> Facts {
        Facts {
            exe: Some(exe.into()),
            holds_fuse: fuse,
        }
    }

    #[test]
    fn the_document_portal_and_its_helper() {
        let rules = ServiceRules::default();
        let d = rules
            .decide(&facts("/usr/libexec/xdg-document-portal", true), &[])
            .unwrap();
        assert_eq!(d.name, "xdg-document-portal");
        assert_eq!(d.kind, Kind::FuseServer);
        assert_eq!(
            d.bus_name.as_deref(),
            Some("org.freedesktop.portal.Documents")
        );
        assert_eq!(d.origin, Origin::BuiltIn);
        let h = rules
            .decide(&facts("/usr/bin/fusermount3", false), &[])
            .unwrap();
        assert_eq!(h.kind, Kind::MountHelper);
        assert!(rules.decide(&facts("/usr/bin/xterm", false), &[]).is_none());
    }

    #[test]
    fn gvfsd_is_a_service_only_with_gvfsd_fuse() {
        let rules = ServiceRules::default();
        let gvfsd = facts("/usr/libexec/gvfsd", false);
        assert!(rules
            .decide(&gvfsd, &[facts("/usr/libexec/gvfsd-trash", false)])
            .is_none());
        let d = rules
            .decide(&gvfsd, &[facts("/usr/libexec/gvfsd-fuse", true)])
            .unwrap();
        assert_eq!(d.kind, Kind::Starter);
        assert_eq!(d.bus_name.as_deref(), Some("org.gtk.vfs.Daemon"));
    }

    #[test]
    fn any_holder_of_dev_fuse() {
        let rules = ServiceRules::default();
        let d = rules.decide(&facts("/usr/bin/sshfs", true), &[]).unwrap();
        assert_eq!(d.name, "sshfs");
        assert_eq!(d.origin, Origin::HoldsFuse);
        assert!(d.bus_name.is_none());
    }

    #[test]
    fn the_file_comes_first() {
        let path = Path::new("/etc/hiber/services.toml");
        let text = r#"
            [[service]]
            name = "my-fs"
            exe = ["/usr/bin/sshfs"]
            kind = "fuse-server"
            bus_name = "org.example.MyFs"
            why = "a FUSE server"
        "#;
        let rules = ServiceRules {
            file: Some((path.into(), parse_config(path, text).unwrap())),
        };
        let d = rules.decide(&facts("/usr/bin/sshfs", true), &[]).unwrap();
        assert_eq!(d.name, "my-fs");
        assert_eq!(d.origin, Origin::File(path.into()));
        let e = parse_config(
            path,
            "[[service]]\nname = \"x\"\nexe = [\"rel\"]\nkind = \"fuse-server\"\nwhy = \"\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("absolute"), "{e}");
        let e = parse_config(
            path,
            "[[service]]\nname = \"x\"\nexe = [\"/a\"]\nkind = \"starter\"\nwhy = \"\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("with_child"), "{e}");
        assert!(parse_config(path, "[[service]]\nbogus = 1\n").is_err());
    }

    #[test]
    fn fuse_mounts_from_mountinfo() {
        // Lines captured on Debian 12 with the document portal running.
        let text = "27 22 0:26 / /tmp rw,nosuid,nodev shared:14 - tmpfs tmpfs rw\n\
            55 27 0:50 / /tmp/svc-exp/u.m4O9/run/doc rw,nosuid,nodev,relatime - fuse.portal portal rw,user_id=1500,group_id=1500\n\
            56 27 0:51 / /tmp/a\\040b/gvfs rw,nosuid,nodev,relatime - fuse.gvfsd-fuse gvfsd-fuse rw,user_id=1000,group_id=1000\n";
        let m = parse_fuse_mounts(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, Path::new("/tmp/svc-exp/u.m4O9/run/doc"));
        assert_eq!(m[0].fstype, "fuse.portal");
        assert_eq!(m[0].user_id, Some(1500));
        assert_eq!(m[1].mount_point, Path::new("/tmp/a b/gvfs"));
        let helper: Vec<String> = "fusermount3 -o rw,nosuid,nodev,fsname=portal,auto_unmount,subtype=portal -- /tmp/svc-exp/u.m4O9/run/doc"
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(
            mounts_served(
                &[
                    vec!["/usr/libexec/xdg-document-portal".into()],
                    helper.clone()
                ],
                1500,
                &m
            ),
            [PathBuf::from("/tmp/svc-exp/u.m4O9/run/doc")]
        );
        // Another user's mount at that path is not this service's.
        assert!(mounts_served(&[helper], 1000, &m).is_empty());
    }

    #[test]
    fn the_fate_in_words() {
        let s = LeftOut {
            pid: 5,
            comm: "xdg-document-po".into(),
            uid: 1500,
            start_time: 1,
            ppid: 1,
            member: 4,
            below_member: false,
            descendants: vec![6],
            mounts: vec!["/run/user/1500/doc".into()],
            decision: ServiceRules::default()
                .decide(&facts("/usr/libexec/xdg-document-portal", true), &[])
                .unwrap(),
        };
        let f = s.fate(Some(true));
        assert!(
            f.contains("ended with the session, its FUSE mount /run/user/1500/doc unmounted"),
            "{f}"
        );
        assert!(
            f.contains("D-Bus activation of org.freedesktop.portal.Documents"),
            "{f}"
        );
        assert!(s.fate(Some(false)).contains("keeps running"));
    }
}
