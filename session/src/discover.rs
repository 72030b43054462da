//! The processes of the session on an X display, found from the kernel's
//! view alone (one sock_diag dump and one /proc scan): no connection to
//! the display.
//!
//! - The X server holds the listening socket `/tmp/.X11-unix/XN` or
//!   `@/tmp/.X11-unix/XN`; it must be the user's.
//! - Its clients hold a socket connected to one of its sockets (or share
//!   one of its sockets). Another user's client is an error.
//! - Members' descendants are members; another user's is an error.
//! - The holders of unix sockets connected to a member's (its peer, the
//!   sockets whose peer it is, those waiting in its listener's queue, and
//!   those sharing it) are members, until nothing new comes in. This
//!   brings in the session bus and the helpers clients talk to.
//! - Never members, reported as outside with the member connected to them:
//!   pid 1, kernel threads, excluded pids and their descendants, the
//!   caller and its ancestors, the X server's ancestors, other users'
//!   peers, and a peer that is no X client and is an ancestor of a member
//!   (systemd --user above the bus), unless once all else has settled
//!   every process it started is a member (at-spi-bus-launcher above the
//!   accessibility bus): then it brings in nothing but itself.
//! - A process connected to nothing of the session (a shell that only
//!   started a client) is neither a member nor reported.
//! - Session services that cannot be saved (`services`: FUSE servers and
//!   their mount helpers) are never members, even below a member: they
//!   are listed apart, with their descendants, and bring nothing in.

use crate::services::{self, Facts, LeftOut, ServiceRules};
use hiber_core::files::service_file::ServiceMount;
use hiber_core::procfs::{ProcDir, ProcfsError};
use hiber_core::sockdiag::{self, UnixDiag, STATE_LISTEN};
use hiber_core::sys::wrap::{PathIo, WrapIoResult};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use tracing::{debug, info, trace};

/// Whose session to find, and what never to include.
#[derive(Debug, Clone, Default)]
pub struct FindOptions {
    /// The session must be this user's: its X server, X clients and
    /// descendants run with this uid (all four of real, effective, saved,
    /// filesystem).
    pub user: u32,
    /// Pids never to include, with their descendants.
    pub exclude: Vec<i32>,
    /// Which processes are session services left out of the set.
    pub services: ServiceRules,
}

/// A process a member is connected to (or shares a socket with) that the
/// set cannot include.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsidePeer {
    pub pid: i32,
    pub comm: String,
    pub uid: u32,
    /// The member holding the socket (or, for a descendant left out, its
    /// parent).
    pub member: i32,
    /// Why it is not a member: "pid 1", "excluded", "the calling process",
    /// "ancestor of the calling process (pid N)", "ancestor of the X server
    /// (pid N)", "ancestor of member pid N", "process of another user (uid U)".
    pub reason: String,
}

/// The session on one display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSet {
    pub display: u32,
    /// The pid of the X server.
    pub x_server: i32,
    /// The X server's owner (its effective uid).
    pub uid: u32,
    /// Every process of the session, closed under descendants.
    pub processes: BTreeSet<i32>,
    /// Members whose parent is not a member, ascending: what the engine is
    /// given (it saves each root's whole tree).
    pub roots: Vec<i32>,
    /// What the set talks to but cannot include, one entry per process
    /// (the first member found connected to it), by pid.
    pub outside: Vec<OutsidePeer>,
    /// Session services left out of the set (with their descendants),
    /// found below a member or connected to one, by pid.
    pub services: Vec<LeftOut>,
}

impl SessionSet {
    /// What the engine leaves out: the subtrees of the services running
    /// below a member (their parents are saved without them), and the
    /// FUSE mounts of every service.
    pub fn left_out(&self) -> hiber_core::LeftOut {
        hiber_core::LeftOut {
            pids: self
                .services
                .iter()
                .filter(|s| s.below_member)
                .map(|s| s.pid)
                .collect(),
            mounts: {
                // A mount found under two services (gvfsd-fuse alone and
                // below gvfsd) comes back by the one with a bus name.
                let mut mounts: Vec<ServiceMount> = Vec::new();
                for s in &self.services {
                    for path in &s.mounts {
                        let bus_name = s.decision.bus_name.clone();
                        match mounts.iter_mut().find(|m| &m.path == path) {
                            Some(m) => {
                                if m.bus_name.is_none() {
                                    m.bus_name = bus_name;
                                }
                            }
                            None => mounts.push(ServiceMount {
                                path: path.clone(),
                                bus_name,
                            }),
                        }
                    }
                }
                mounts
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("no X server on display :{display}: nothing listens on {}", .paths.join(" or "))]
    NoDisplay { display: u32, paths: Vec<String> },
    #[error(
        "display :{display} belongs to user {user} (uid {uid}, X server pid {pid}), not to uid {expected}"
    )]
    OtherUser {
        display: u32,
        pid: i32,
        uid: u32,
        /// The owner's name from /etc/passwd, or the uid in digits.
        user: String,
        expected: u32,
    },
    #[error("display :{display} has a client of another user: pid {pid} ({comm}), uid {uid}")]
    ForeignClient {
        display: u32,
        pid: i32,
        uid: u32,
        comm: String,
    },
    #[error(
        "pid {pid} ({comm}), started by pid {parent} of the session on display :{display}, runs as another user (uid {uid})"
    )]
    ForeignDescendant {
        display: u32,
        pid: i32,
        uid: u32,
        comm: String,
        parent: i32,
    },
    // No pid or path: sock_diag lists the sockets of the whole network namespace.
    #[error("listing unix sockets through sock_diag")]
    SockDiag(#[source] io::Error),
    #[error("{op} {path}")]
    Proc {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<PathIo> for DiscoverError {
    fn from(e: PathIo) -> Self {
        DiscoverError::Proc {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// The session on `display`: its X server, its clients, their trees, and
/// the processes they are connected to through unix sockets.
pub fn find_session(display: u32, opts: &FindOptions) -> Result<SessionSet, DiscoverError> {
    let socks = sockdiag::unix_sockets().map_err(DiscoverError::SockDiag)?;
    let world = World::new(scan_proc()?, socks);
    let x_server = world.x_server(display)?;
    let mut uids = |pid: i32| ProcDir::new(pid).status().ok().map(|s| s.uid);
    let xu = uids(x_server).ok_or_else(|| no_display(display))?;
    if let Some(uid) = foreign_uid(xu, opts.user) {
        let user = fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|t| passwd_name(&t, uid).map(str::to_string))
            .unwrap_or_else(|| uid.to_string());
        return Err(DiscoverError::OtherUser {
            display,
            pid: x_server,
            uid,
            user,
            expected: opts.user,
        });
    }
    let mut set = world.close(
        display,
        x_server,
        opts,
        std::process::id() as i32,
        &mut uids,
    )?;
    let mounts = services::fuse_mounts();
    for s in &mut set.services {
        let stat = ProcDir::new(s.pid).stat().ok();
        s.start_time = stat.map_or(0, |st| st.start_time);
        s.uid = uids(s.pid).map_or(s.uid, |u| u[1]);
        let cmdlines: Vec<Vec<String>> = std::iter::once(s.pid)
            .chain(s.descendants.iter().copied())
            .map(services::cmdline)
            .collect();
        s.mounts = services::mounts_served(&cmdlines, s.uid, &mounts);
    }
    services::log(&set.services);
    // `display` names tracing's own function inside its macros.
    let n = display;
    info!(
        display = n,
        x_server,
        members = set.processes.len(),
        roots = ?set.roots,
        outside = set.outside.len(),
        services = set.services.len(),
        "found the session"
    );
    Ok(set)
}

/// The X server listening on `display` now, if any.
pub fn x_server_of(display: u32) -> Result<Option<i32>, DiscoverError> {
    let socks = sockdiag::unix_sockets().map_err(DiscoverError::SockDiag)?;
    match World::new(scan_proc()?, socks).x_server(display) {
        Ok(pid) => Ok(Some(pid)),
        Err(DiscoverError::NoDisplay { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The two names an X server listens on for display N: the path and the
/// abstract name (written with a leading NUL).
pub fn display_names(display: u32) -> [Vec<u8>; 2] {
    let path = format!("/tmp/.X11-unix/X{display}").into_bytes();
    let mut abs = vec![0];
    abs.extend_from_slice(&path);
    [path, abs]
}

/// A bound name as a program means it: a path bound with its terminating
/// NUL counted in the address length (Xvfb does this) ends at the NUL;
/// an abstract name (leading NUL) is every byte.
fn bound_name(name: &[u8]) -> &[u8] {
    match name {
        [0, ..] => name,
        _ => name.split(|&b| b == 0).next().unwrap_or(name),
    }
}

fn no_display(display: u32) -> DiscoverError {
    DiscoverError::NoDisplay {
        display,
        paths: vec![
            format!("/tmp/.X11-unix/X{display}"),
            format!("@/tmp/.X11-unix/X{display}"),
        ],
    }
}

/// The uid by which `uids` (real, effective, saved, fs) is not `user`:
/// the effective one first, as it is the one that acts.
fn foreign_uid(uids: [u32; 4], user: u32) -> Option<u32> {
    [uids[1], uids[0], uids[2], uids[3]]
        .into_iter()
        .find(|&u| u != user)
}

/// The name of `uid` in the text of /etc/passwd.
fn passwd_name(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?.parse::<u32>().ok()?;
        (id == uid && !name.is_empty()).then_some(name)
    })
}

/// The inode of a `socket:[N]` fd link.
fn socket_inode(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// One process as the scan saw it.
#[derive(Debug, Clone, Default)]
struct Proc {
    ppid: i32,
    comm: String,
    kernel_thread: bool,
    /// Inodes of the sockets its fds refer to (unix or not).
    sockets: Vec<u64>,
    /// Its executable and whether it holds `/dev/fuse`.
    facts: Facts,
}

/// Every process with its parent and sockets. A process that ends during
/// the scan is left out (or kept without the fds it had left to read);
/// one whose fds cannot be read (another user's, when not root) is kept
/// for its parent link. Threads are assumed to share their process's fd
/// table, as nearly all do.
fn scan_proc() -> Result<HashMap<i32, Proc>, DiscoverError> {
    let dir = fs::read_dir("/proc").at_path("reading", "/proc")?;
    let mut out = HashMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let pd = ProcDir::new(pid);
        let stat = match pd.stat() {
            Ok(s) => s,
            Err(e) => {
                trace!(pid, error = %e, "skipping a process");
                continue;
            }
        };
        let mut p = Proc {
            ppid: stat.ppid,
            comm: stat.comm.clone(),
            kernel_thread: stat.kernel_thread(),
            sockets: Vec::new(),
            facts: Facts::default(),
        };
        if !p.kernel_thread {
            p.facts.exe = pd.exe().ok();
            match pd.fds() {
                Ok(fds) => {
                    // An fd closed since the listing is simply not there.
                    let targets: Vec<PathBuf> = fds
                        .into_iter()
                        .filter_map(|fd| pd.fd_target(fd).ok())
                        .collect();
                    p.facts.holds_fuse = targets.iter().any(|t| services::is_dev_fuse(t));
                    p.sockets = targets.iter().filter_map(|t| socket_inode(t)).collect();
                }
                Err(ProcfsError::ProcessGone { .. }) => continue,
                Err(e) => trace!(pid, error = %e, "fds unreadable"),
            }
        }
        out.insert(pid, p);
    }
    Ok(out)
}

/// The processes and unix sockets of the machine as read once, with the
/// indexes the search walks.
#[derive(Debug, Default)]
struct World {
    procs: HashMap<i32, Proc>,
    children: HashMap<i32, Vec<i32>>,
    socks: HashMap<u64, UnixDiag>,
    /// The pids holding each socket.
    holders: HashMap<u64, Vec<i32>>,
    /// Sockets by the socket they are connected to.
    by_peer: HashMap<u64, Vec<u64>>,
    /// A connection not yet accepted (held by no one) -> its listener.
    listener_of: HashMap<u64, u64>,
}

impl World {
    fn new(procs: HashMap<i32, Proc>, socks: HashMap<u64, UnixDiag>) -> Self {
        let mut w = World {
            socks,
            ..World::default()
        };
        for (&pid, p) in &procs {
            w.children.entry(p.ppid).or_default().push(pid);
            for &ino in &p.sockets {
                let h = w.holders.entry(ino).or_default();
                // Two fds on one socket: one holder.
                if !h.contains(&pid) {
                    h.push(pid);
                }
            }
        }
        for c in w.children.values_mut() {
            c.sort_unstable();
        }
        for h in w.holders.values_mut() {
            h.sort_unstable();
        }
        for (&ino, d) in &w.socks {
            if let Some(peer) = d.peer {
                w.by_peer.entry(peer).or_default().push(ino);
            }
            for &e in &d.pending {
                w.listener_of.insert(e, ino);
            }
        }
        w.procs = procs;
        w
    }

    fn ppid(&self, pid: i32) -> i32 {
        self.procs.get(&pid).map_or(0, |p| p.ppid)
    }

    fn comm(&self, pid: i32) -> String {
        self.procs
            .get(&pid)
            .map(|p| p.comm.clone())
            .unwrap_or_default()
    }

    /// Parent, grandparent, ... up to the top of our pid namespace.
    fn ancestors(&self, pid: i32) -> impl Iterator<Item = i32> + '_ {
        let mut p = pid;
        let mut steps = 0;
        std::iter::from_fn(move || {
            p = self.ppid(p);
            steps += 1;
            // The bound guards against a pid reused mid-scan making a loop.
            (p > 0 && steps <= self.procs.len()).then_some(p)
        })
    }

    /// `pid` and every descendant, parents before children.
    fn tree(&self, pid: i32) -> Vec<i32> {
        let mut out = vec![pid];
        let mut i = 0;
        while i < out.len() {
            if let Some(c) = self.children.get(&out[i]) {
                out.extend(c.iter().copied().filter(|&c| c != pid));
            }
            i += 1;
        }
        out
    }

    fn sockets_of(&self, pid: i32) -> &[u64] {
        self.procs.get(&pid).map_or(&[], |p| &p.sockets[..])
    }

    /// The unix sockets connected to `ino`: its peer (or, when that is a
    /// connection its server has not accepted yet, the listener), the
    /// sockets whose peer it is, and for a listener the clients of the
    /// connections waiting in its queue.
    fn connected(&self, ino: u64) -> Vec<u64> {
        let Some(d) = self.socks.get(&ino) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(peer) = d.peer {
            out.push(*self.listener_of.get(&peer).unwrap_or(&peer));
        }
        out.extend(self.by_peer.get(&ino).into_iter().flatten());
        for e in &d.pending {
            out.extend(self.by_peer.get(e).into_iter().flatten());
        }
        out
    }

    /// The processes on the other side of `pid`'s unix sockets, and those
    /// sharing one of them (an fd inherited or passed), ascending.
    fn peers(&self, pid: i32) -> Vec<i32> {
        let mut out = BTreeSet::new();
        for &ino in self.sockets_of(pid) {
            if !self.socks.contains_key(&ino) {
                continue;
            }
            let near = std::iter::once(ino).chain(self.connected(ino));
            for s in near {
                out.extend(self.holders.get(&s).into_iter().flatten().copied());
            }
        }
        out.remove(&pid);
        out.into_iter().collect()
    }

    /// The X server of `display`: the holder of its listening sockets. If
    /// several processes hold them (a fork about to exec), the topmost.
    fn x_server(&self, display: u32) -> Result<i32, DiscoverError> {
        let names = display_names(display);
        let mut holders: Vec<i32> = self
            .socks
            .values()
            .filter(|d| d.state == STATE_LISTEN)
            .filter(|d| {
                d.name
                    .as_deref()
                    .is_some_and(|n| names.iter().any(|x| x == bound_name(n)))
            })
            .flat_map(|d| self.holders.get(&d.ino).into_iter().flatten().copied())
            .collect();
        holders.sort_unstable();
        holders.dedup();
        let top = holders
            .iter()
            .copied()
            .find(|&p| !self.ancestors(p).any(|a| holders.contains(&a)));
        match top {
            Some(pid) => {
                let n = display;
                debug!(display = n, pid, holders = ?holders, "X server");
                Ok(pid)
            }
            None => Err(no_display(display)),
        }
    }

    /// Close the set from the X server (see the module's comment). `uids`
    /// gives a process's uids, None when it has gone.
    fn close(
        &self,
        display: u32,
        x_server: i32,
        opts: &FindOptions,
        caller: i32,
        uids: &mut dyn FnMut(i32) -> Option<[u32; 4]>,
    ) -> Result<SessionSet, DiscoverError> {
        let mut c = Closure {
            w: self,
            display,
            x_server,
            user: opts.user,
            caller,
            excluded: opts.exclude.iter().flat_map(|&e| self.tree(e)).collect(),
            caller_line: std::iter::once(caller)
                .chain(self.ancestors(caller))
                .collect(),
            x_line: self.ancestors(x_server).collect(),
            clients: self.peers(x_server).into_iter().collect(),
            above: HashMap::new(),
            deferred: BTreeMap::new(),
            members: BTreeSet::new(),
            outside: BTreeMap::new(),
            services: BTreeMap::new(),
            rules: &opts.services,
            scan: VecDeque::new(),
            uids,
        };
        // Mark the clients' ancestors before anything is admitted, so the
        // order of the search does not decide which peers are above one.
        for &cl in &c.clients {
            for a in self.ancestors(cl) {
                c.above.entry(a).or_insert(cl);
            }
        }
        c.admit(x_server, x_server)?;
        let clients: Vec<i32> = c.clients.iter().copied().collect();
        for pid in clients {
            c.consider(pid, x_server)?;
        }
        loop {
            while let Some(m) = c.scan.pop_front() {
                for pid in self.peers(m) {
                    c.consider(pid, m)?;
                }
            }
            // Once nothing else comes in, a peer above members joins if
            // every process it started is a member (it brings in nothing
            // but itself: at-spi-bus-launcher above the accessibility
            // bus); that may bring in new peers, so go round again.
            let ready: Vec<i32> = c
                .deferred
                .keys()
                .copied()
                .filter(|&p| c.started_only_members(p))
                .collect();
            if ready.is_empty() {
                break;
            }
            for p in ready {
                let (via, ..) = c.deferred.remove(&p).expect("deferred");
                c.admit(p, via)?;
            }
        }
        for (pid, (via, below, uid)) in std::mem::take(&mut c.deferred) {
            c.leave_out(pid, uid, via, format!("ancestor of member pid {below}"));
        }
        let processes = c.members;
        // A service found through a socket before its parent was admitted
        // runs below a member all the same.
        for sv in c.services.values_mut() {
            if processes.contains(&sv.ppid) {
                sv.below_member = true;
                sv.member = sv.ppid;
            }
        }
        let roots = processes
            .iter()
            .copied()
            .filter(|&p| !processes.contains(&self.ppid(p)))
            .collect();
        Ok(SessionSet {
            display,
            x_server,
            uid: opts.user,
            processes,
            roots,
            outside: c.outside.into_values().collect(),
            services: c.services.into_values().collect(),
        })
    }
}

/// The state of one search.
struct Closure<'a> {
    w: &'a World,
    display: u32,
    x_server: i32,
    user: u32,
    caller: i32,
    /// `opts.exclude` and their descendants.
    excluded: HashSet<i32>,
    /// The caller and its ancestors.
    caller_line: HashSet<i32>,
    /// The X server's ancestors.
    x_line: HashSet<i32>,
    /// Processes holding a socket connected to the X server's.
    clients: BTreeSet<i32>,
    /// Ancestors of X clients and members -> one of those below it.
    above: HashMap<i32, i32>,
    /// Peers above a member, waiting for the rest to settle: pid -> (the
    /// member connected to it, the one below it, its uid).
    deferred: BTreeMap<i32, (i32, i32, u32)>,
    members: BTreeSet<i32>,
    outside: BTreeMap<i32, OutsidePeer>,
    /// Session services left out, by pid (their descendants with them).
    services: BTreeMap<i32, LeftOut>,
    rules: &'a ServiceRules,
    /// Members whose sockets are still to be followed.
    scan: VecDeque<i32>,
    uids: &'a mut dyn FnMut(i32) -> Option<[u32; 4]>,
}

impl std::fmt::Debug for Closure<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closure")
            .field("display", &self.display)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

impl Closure<'_> {
    /// The service rule `pid` falls under, if any.
    fn service(&self, pid: i32) -> Option<services::Decision> {
        let p = self.w.procs.get(&pid)?;
        let children: Vec<Facts> = self
            .w
            .children
            .get(&pid)
            .into_iter()
            .flatten()
            .filter_map(|c| self.w.procs.get(c).map(|p| p.facts.clone()))
            .collect();
        self.rules.decide(&p.facts, &children)
    }

    /// Whether `pid` is a service, left out with its descendants (found
    /// from `member`, below it or not); once left out, it is found again.
    fn left_out_service(&mut self, pid: i32, member: i32, below: bool) -> bool {
        if self.services.contains_key(&pid) {
            return true;
        }
        let Some(decision) = self.service(pid) else {
            return false;
        };
        debug!(pid, member, below, name = %decision.name, "session service left out");
        let mut descendants = self.w.tree(pid)[1..].to_vec();
        descendants.sort_unstable();
        self.services.insert(
            pid,
            LeftOut {
                pid,
                comm: self.w.comm(pid),
                uid: self.user,
                start_time: 0,
                ppid: self.w.ppid(pid),
                member,
                below_member: below,
                descendants,
                mounts: Vec::new(),
                decision,
            },
        );
        true
    }

    /// Whether every process `pid` started is a member, services it
    /// started and their descendants aside.
    fn started_only_members(&self, pid: i32) -> bool {
        let left: HashSet<i32> = self
            .services
            .values()
            .flat_map(|s| std::iter::once(s.pid).chain(s.descendants.iter().copied()))
            .collect();
        self.w.tree(pid)[1..]
            .iter()
            .all(|d| self.members.contains(d) || left.contains(d))
    }

    /// Why `pid` may never be a member, whatever connects it.
    fn fenced(&self, pid: i32) -> Option<String> {
        let p = self.w.procs.get(&pid)?;
        Some(if pid == 1 {
            "pid 1".into()
        } else if p.kernel_thread {
            "kernel thread".into()
        } else if self.excluded.contains(&pid) {
            "excluded".into()
        } else if pid == self.caller {
            "the calling process".into()
        } else if self.caller_line.contains(&pid) {
            format!("ancestor of the calling process (pid {})", self.caller)
        } else if self.x_line.contains(&pid) {
            format!("ancestor of the X server (pid {})", self.x_server)
        } else {
            return None;
        })
    }

    fn leave_out(&mut self, pid: i32, uid: u32, member: i32, reason: String) {
        if self.outside.contains_key(&pid) {
            return;
        }
        debug!(pid, member, reason = %reason, "outside the session");
        self.outside.insert(
            pid,
            OutsidePeer {
                pid,
                comm: self.w.comm(pid),
                uid,
                member,
                reason,
            },
        );
    }

    /// The error for a process of another user that would be a member.
    fn foreign(&self, pid: i32, uid: u32) -> DiscoverError {
        let (display, comm) = (self.display, self.w.comm(pid));
        if self.clients.contains(&pid) {
            DiscoverError::ForeignClient {
                display,
                pid,
                uid,
                comm,
            }
        } else {
            DiscoverError::ForeignDescendant {
                display,
                pid,
                uid,
                comm,
                parent: self.w.ppid(pid),
            }
        }
    }

    /// `pid` is connected to member `via`: admit it or say why not.
    fn consider(&mut self, pid: i32, via: i32) -> Result<(), DiscoverError> {
        if self.members.contains(&pid)
            || self.outside.contains_key(&pid)
            || self.deferred.contains_key(&pid)
            || self.services.contains_key(&pid)
        {
            return Ok(());
        }
        // Gone since the scan: nothing to save or report.
        let Some(uids) = (self.uids)(pid) else {
            return Ok(());
        };
        if let Some(reason) = self.fenced(pid) {
            self.leave_out(pid, uids[1], via, reason);
            return Ok(());
        }
        // A service connected to the set (the document portal, orphaned
        // once the bus activated it) is no member; nor is one below a
        // member, wherever that member came from.
        let below = self.members.contains(&self.w.ppid(pid));
        if self.left_out_service(pid, if below { self.w.ppid(pid) } else { via }, below) {
            return Ok(());
        }
        let client = self.clients.contains(&pid);
        if let Some(uid) = foreign_uid(uids, self.user) {
            if client {
                return Err(self.foreign(pid, uid));
            }
            self.leave_out(
                pid,
                uid,
                via,
                format!("process of another user (uid {uid})"),
            );
            return Ok(());
        }
        // An X client is the session even when it started others (an
        // xterm whose shell runs xclock); any other peer above a member
        // (systemd --user behind the bus) would bring in all it started,
        // so it waits until the set has settled.
        if !client {
            if let Some(&below) = self.above.get(&pid) {
                self.deferred.insert(pid, (via, below, uids[1]));
                return Ok(());
            }
        }
        self.admit(pid, via)
    }

    /// Make `pid` and its descendants members.
    fn admit(&mut self, pid: i32, via: i32) -> Result<(), DiscoverError> {
        let mut todo = vec![pid];
        while let Some(p) = todo.pop() {
            if self.members.contains(&p) {
                continue;
            }
            if p != pid {
                let parent = self.w.ppid(p);
                let Some(uids) = (self.uids)(p) else {
                    continue;
                };
                if let Some(reason) = self.fenced(p) {
                    // The engine saves whole trees: the caller must skip it.
                    self.leave_out(p, uids[1], parent, reason);
                    continue;
                }
                // A service below a member: the engine prunes its subtree.
                if self.left_out_service(p, parent, true) {
                    continue;
                }
                if let Some(uid) = foreign_uid(uids, self.user) {
                    return Err(self.foreign(p, uid));
                }
            }
            trace!(pid = p, via, "member");
            self.members.insert(p);
            self.scan.push_back(p);
            for a in self.w.ancestors(p) {
                if self.above.insert(a, p).is_some() {
                    break;
                }
            }
            todo.extend(self.w.children.get(&p).into_iter().flatten().copied());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hiber_core::sockdiag::STATE_ESTABLISHED;

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(Path::new("socket:[123456]")), Some(123456));
        assert_eq!(socket_inode(Path::new("pipe:[12]")), None);
        assert_eq!(socket_inode(Path::new("/tmp/socket:[1]")), None);
        assert_eq!(socket_inode(Path::new("anon_inode:[eventfd]")), None);
    }

    #[test]
    fn names_as_bound() {
        // What sock_diag gives for Xvfb :333's two listeners.
        assert_eq!(bound_name(b"/tmp/.X11-unix/X333\0"), b"/tmp/.X11-unix/X333");
        assert_eq!(
            bound_name(b"\0/tmp/.X11-unix/X333"),
            b"\0/tmp/.X11-unix/X333"
        );
        assert_eq!(bound_name(b"/run/bus"), b"/run/bus");
    }

    #[test]
    fn user_names_from_passwd() {
        // The head of Debian 12's /etc/passwd, and a line with no uid.
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                      broken\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(passwd_name(passwd, 0), Some("root"));
        assert_eq!(passwd_name(passwd, 65534), Some("nobody"));
        assert_eq!(passwd_name(passwd, 1000), None);
    }

    #[test]
    fn effective_uid_first() {
        assert_eq!(foreign_uid([5, 5, 5, 5], 5), None);
        assert_eq!(foreign_uid([5, 0, 0, 0], 5), Some(0));
        assert_eq!(foreign_uid([5, 5, 0, 5], 5), Some(0));
        assert_eq!(foreign_uid([1, 2, 3, 4], 1), Some(2));
    }

    fn sock(ino: u64, peer: Option<u64>) -> UnixDiag {
        UnixDiag {
            ino,
            kind: libc::SOCK_STREAM as u8,
            state: STATE_ESTABLISHED,
            peer,
            ..UnixDiag::default()
        }
    }

    /// Both ends of a connection.
    fn pair(a: u64, b: u64) -> [UnixDiag; 2] {
        [sock(a, Some(b)), sock(b, Some(a))]
    }

    fn listener(ino: u64, name: &[u8], pending: &[u64]) -> UnixDiag {
        UnixDiag {
            state: STATE_LISTEN,
            name: Some(name.to_vec()),
            pending: pending.to_vec(),
            ..sock(ino, None)
        }
    }

    fn world(procs: &[(i32, i32, &str, &[u64])], socks: Vec<UnixDiag>) -> World {
        let procs = procs
            .iter()
            .map(|&(pid, ppid, comm, sockets)| {
                let p = Proc {
                    ppid,
                    comm: comm.into(),
                    kernel_thread: false,
                    sockets: sockets.to_vec(),
                    facts: Facts::default(),
                };
                (pid, p)
            })
            .collect();
        World::new(procs, socks.into_iter().map(|d| (d.ino, d)).collect())
    }

    /// A desktop as the kernel shows it: xinit above the X server and
    /// connected to it, an xterm whose shell runs xclock, a launcher
    /// (connected to the bus) that started a GTK program and a sleep, the
    /// bus started by systemd --user, two processes connecting to the bus
    /// whose connections it has not accepted yet (one of another user),
    /// an accessibility bus (connected to the GTK program) whose launcher
    /// is on the session bus and talks to a helper, pid 1 and the caller
    /// connected too.
    fn desktop() -> World {
        let mut socks = vec![
            listener(100, b"\0/tmp/.X11-unix/X7", &[]),
            listener(104, b"/tmp/.X11-unix/X7\0", &[]),
            listener(400, b"/run/user/0/bus", &[410, 413]),
            sock(411, Some(410)),
            sock(412, Some(413)),
        ];
        for (a, b) in [
            (101, 201),
            (102, 202),
            (103, 203),
            (105, 205),
            (106, 206),
            (304, 404),
            (303, 403),
            (501, 502),
            (305, 481),
            (408, 480),
            (482, 902),
            (900, 901),
        ] {
            socks.extend(pair(a, b));
        }
        world(
            &[
                (1, 0, "init", &[900]),
                (3, 1, "launcher", &[303]),
                (4, 1, "systemd", &[501]),
                (6, 4, "(sd-pam)", &[]),
                (7, 3, "sleep", &[]),
                (5, 1, "xinit", &[205]),
                (10, 5, "Xvfb", &[100, 101, 102, 103, 104, 105, 106]),
                (20, 1, "xterm", &[201]),
                (21, 20, "bash", &[]),
                (22, 21, "xclock", &[202]),
                (30, 3, "gtk4-demo", &[203, 304, 305]),
                (40, 4, "dbus-daemon", &[400, 403, 404, 480, 502, 901]),
                (50, 1, "other", &[411]),
                (60, 1, "late", &[412]),
                (70, 1, "unrelated", &[]),
                (80, 1, "at-spi-bus-laun", &[408, 482]),
                (81, 80, "dbus-daemon", &[481]),
                (90, 1, "helper", &[902]),
                (99, 1, "hiber", &[206]),
            ],
            socks,
        )
    }

    fn find(w: &World, exclude: &[i32], foreign: &[i32]) -> Result<SessionSet, DiscoverError> {
        let x = w.x_server(7)?;
        let opts = FindOptions {
            user: 0,
            exclude: exclude.to_vec(),
            ..Default::default()
        };
        let mut uids = |pid: i32| {
            let u = if foreign.contains(&pid) { 1000 } else { 0 };
            w.procs.contains_key(&pid).then_some([u; 4])
        };
        w.close(7, x, &opts, 99, &mut uids)
    }

    fn reasons(set: &SessionSet) -> Vec<(i32, i32, &str)> {
        set.outside
            .iter()
            .map(|o| (o.pid, o.member, o.reason.as_str()))
            .collect()
    }

    #[test]
    fn closes_the_desktop() {
        let set = find(&desktop(), &[], &[50]).unwrap();
        assert_eq!(set.x_server, 10);
        assert_eq!(
            set.processes,
            BTreeSet::from([10, 20, 21, 22, 30, 40, 60, 80, 81, 90])
        );
        // The accessibility bus's launcher joined once the rest settled.
        assert_eq!(set.roots, [10, 20, 30, 40, 60, 80, 90]);
        assert_eq!(
            reasons(&set),
            [
                (1, 40, "pid 1"),
                (3, 40, "ancestor of member pid 30"),
                (4, 40, "ancestor of member pid 40"),
                (5, 10, "ancestor of the X server (pid 10)"),
                (50, 40, "process of another user (uid 1000)"),
                (99, 10, "the calling process"),
            ]
        );
    }

    #[test]
    fn excluded_pids_take_their_trees() {
        let set = find(&desktop(), &[20], &[50]).unwrap();
        assert_eq!(set.processes, BTreeSet::from([10, 30, 40, 60, 80, 81, 90]));
        let r = reasons(&set);
        assert!(r.contains(&(20, 10, "excluded")), "{r:?}");
        assert!(r.contains(&(22, 10, "excluded")), "{r:?}");
        // Not connected to anything: not reported.
        assert!(!r.iter().any(|o| o.0 == 21), "{r:?}");
    }

    #[test]
    fn another_users_client_or_descendant_is_an_error() {
        match find(&desktop(), &[], &[22]) {
            Err(DiscoverError::ForeignClient {
                pid: 22,
                uid: 1000,
                comm,
                ..
            }) => {
                assert_eq!(comm, "xclock")
            }
            other => panic!("{other:?}"),
        }
        match find(&desktop(), &[], &[21]) {
            Err(DiscoverError::ForeignDescendant {
                pid: 21,
                parent: 20,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    /// `w` with these processes' executables and `/dev/fuse` holding set.
    fn with_facts(mut w: World, facts: &[(i32, &str, bool)]) -> World {
        for &(pid, exe, fuse) in facts {
            let p = w.procs.get_mut(&pid).expect("a process of the world");
            p.facts = Facts {
                exe: Some(exe.into()),
                holds_fuse: fuse,
            };
        }
        w
    }

    #[test]
    fn session_services_are_left_out_with_their_helpers() {
        // The desktop, plus: the document portal the bus activated (then
        // orphaned) connected to the bus, with its root mount helper;
        // gvfsd below the launcher, with gvfsd-fuse and its helper; an
        // unknown FUSE server below the xterm's shell.
        let mut w = desktop();
        let mut socks: Vec<UnixDiag> = w.socks.drain().map(|(_, d)| d).collect();
        socks.extend(pair(600, 601));
        socks.extend(pair(602, 603));
        socks.extend(pair(610, 611));
        let mut procs: Vec<(i32, i32, String, Vec<u64>)> = w
            .procs
            .iter()
            .map(|(&pid, p)| (pid, p.ppid, p.comm.clone(), p.sockets.clone()))
            .collect();
        procs
            .iter_mut()
            .find(|p| p.0 == 40)
            .unwrap()
            .3
            .extend([601]);
        procs
            .iter_mut()
            .find(|p| p.0 == 30)
            .unwrap()
            .3
            .extend([611]);
        procs.extend([
            (100, 1, "xdg-document-po".into(), vec![600, 602]),
            (101, 100, "fusermount3".into(), vec![603]),
            (110, 30, "gvfsd".into(), vec![610]),
            (111, 110, "gvfsd-fuse".into(), vec![]),
            (112, 111, "fusermount3".into(), vec![]),
            (113, 110, "gvfsd-trash".into(), vec![]),
            (120, 21, "sshfs".into(), vec![]),
        ]);
        let procs: Vec<(i32, i32, &str, &[u64])> = procs
            .iter()
            .map(|(a, b, c, d)| (*a, *b, c.as_str(), &d[..]))
            .collect();
        w = world(&procs, socks);
        let w = with_facts(
            w,
            &[
                (100, "/usr/libexec/xdg-document-portal", true),
                (101, "/usr/bin/fusermount3", false),
                (110, "/usr/libexec/gvfsd", false),
                (111, "/usr/libexec/gvfsd-fuse", true),
                (112, "/usr/bin/fusermount3", false),
                (113, "/usr/libexec/gvfsd-trash", false),
                (120, "/usr/bin/sshfs", true),
            ],
        );
        // The helpers are root's: they would refuse the session.
        let set = find(&w, &[], &[50, 101, 112]).unwrap();
        for p in [100, 101, 110, 111, 112, 113, 120] {
            assert!(!set.processes.contains(&p), "{p} in {:?}", set.processes);
        }
        assert!(set.processes.contains(&30) && set.processes.contains(&21));
        let found: Vec<(i32, &str, i32, bool, &[i32])> = set
            .services
            .iter()
            .map(|s| {
                (
                    s.pid,
                    s.decision.name.as_str(),
                    s.member,
                    s.below_member,
                    &s.descendants[..],
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (100, "xdg-document-portal", 40, false, &[101][..]),
                (110, "gvfsd", 30, true, &[111, 112, 113][..]),
                (120, "sshfs", 21, true, &[][..]),
            ]
        );
        assert_eq!(set.left_out().pids, [110, 120]);
        // Nothing of theirs is reported as an outside peer.
        assert!(set.outside.iter().all(|o| o.pid < 100), "{:?}", set.outside);
    }

    #[test]
    fn x_server_by_either_name() {
        let w = desktop();
        assert!(matches!(
            w.x_server(8),
            Err(DiscoverError::NoDisplay { display: 8, .. })
        ));
        // The path listener, held by the server and by a child it forked.
        let w = world(
            &[(10, 1, "Xvfb", &[100]), (11, 10, "Xvfb", &[100])],
            vec![listener(100, b"/tmp/.X11-unix/X3", &[])],
        );
        assert_eq!(w.x_server(3).unwrap(), 10);
        let e = w.x_server(4).unwrap_err().to_string();
        assert!(e.contains("/tmp/.X11-unix/X4 or @/tmp/.X11-unix/X4"), "{e}");
    }
}
