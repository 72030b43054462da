//! Namespaces of a sandbox: a process in user, network and IPC namespaces
//! of its own (firefox's content processes are each in a user namespace
//! that maps the user's own ids, an empty network namespace and an IPC
//! namespace of their own). Restored in the restorer's namespaces, the
//! process would run outside its sandbox: with the network and the
//! host's IPC objects in reach. So they are saved and made again.
//!
//! What is supported: a network namespace holding only a loopback that
//! is down and an IPC namespace without SysV objects, made again empty
//! (held by one process, or shared along its forks); and a user namespace whose parent is the
//! checkpointer's, that maps ids only to themselves and in which the
//! process holds no capability. Such a user namespace gives the process no
//! right it would not have without it (its ids are the same, it has no
//! capability in it, and the namespaces below are made by root at
//! restore), so the process is restored in the restorer's user namespace
//! (shared by several processes or not):
//! a task in a user namespace of its own could no longer get its threads'
//! saved ids (clone3's set_tid asks for CAP_SYS_ADMIN over the pid
//! namespace's owner) nor map the restorer's shared memory. `check` says
//! so. Anything else (a namespace shared other than by inheritance, mount, pid,
//! UTS, cgroup or time namespaces of its own, two levels of user
//! namespaces, other ids mapped, capabilities in it) is refused by `check`
//! with its reason.
//!
//! At restore a network or IPC namespace is made at the birth of the
//! process that made it (clone3 with `CLONE_NEWNET`/`CLONE_NEWIPC`, by a
//! restore node still root), and the processes that share it are born
//! into it by that process's forks, as they were (chromium's zygote and
//! its children share one; firefox's content processes each have one).

use crate::sys::wrap::PidIo;
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

/// What the kernel allows in a map file (`uid_map`, `gid_map`).
pub const MAX_MAP_LINES: usize = 340;

/// The namespaces of a process that differ from the checkpointer's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    pub user: Option<UserNamespace>,
    /// A network namespace of its own (holding only a loopback, down).
    #[serde(default)]
    pub net: bool,
    /// An IPC namespace of its own (no SysV objects).
    #[serde(default)]
    pub ipc: bool,
    /// The namespaces' inode numbers at checkpoint: (user, net, ipc).
    #[serde(default)]
    pub ids: (u64, u64, u64),
    /// The inode of its pid namespace, when it is nested below the
    /// checkpointer's (0: the same); its pids there are
    /// `ProcessImage::ns_pids`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pid: u64,
    /// The pid namespace its children go to, when it is not its own (it
    /// made one with `unshare(CLONE_NEWPID)`, as `unshare --pid --fork`
    /// does, and forked that namespace's pid 1): 0 otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pid_for_children: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    /// The uid that made it (its owner, in the parent namespace).
    pub owner: u32,
    /// `inside outside count` lines of `uid_map` and `gid_map`.
    pub uid_map: Vec<[u32; 3]>,
    pub gid_map: Vec<[u32; 3]>,
    /// `/proc/PID/setgroups` said "deny".
    pub setgroups_deny: bool,
    /// The process holds capabilities in it (chromium's zygote, which
    /// makes its renderers' pid namespaces): made again for it at restore,
    /// so that they apply there and not in the restorer's namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recreate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("pid {pid}: reading {what}")]
    Read {
        pid: i32,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("pid {pid}: writing {}", path.display())]
    Write {
        pid: i32,
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pid {pid}: making its user namespace again")]
    Remote {
        pid: i32,
        #[source]
        source: crate::remote::RemoteError,
    },
}

impl From<PidIo> for NamespaceError {
    fn from(e: PidIo) -> Self {
        NamespaceError::Read {
            pid: e.pid,
            what: e.what.into(),
            source: e.source,
        }
    }
}

/// Inode of `/proc/PID/ns/KIND`.
fn ns_inode(pid: &str, kind: &str) -> io::Result<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}")).map(|m| m.ino())
}

/// The namespaces of `pid` that differ from ours, or why they cannot be
/// saved (`Err(Ok(reason))`); `Err(Err(_))` when they could not be read.
pub fn checkpoint(pid: i32) -> Result<Option<Namespaces>, Result<String, NamespaceError>> {
    let p = pid.to_string();
    let read = |kind: &str| -> Result<(u64, u64), Result<String, NamespaceError>> {
        let theirs = ns_inode(&p, kind).map_err(|source| {
            Err(NamespaceError::Read {
                pid,
                what: format!("its {kind} namespace"),
                source,
            })
        })?;
        let ours = ns_inode("self", kind).map_err(|source| {
            Err(NamespaceError::Read {
                pid,
                what: format!("the checkpointer's {kind} namespace"),
                source,
            })
        })?;
        Ok((theirs, ours))
    };
    for kind in ["mnt", "uts", "cgroup", "time"] {
        let (theirs, ours) = match read(kind) {
            // A kernel without the kind has it for nobody.
            Err(Err(NamespaceError::Read { source, .. }))
                if source.kind() == io::ErrorKind::NotFound =>
            {
                continue
            }
            r => r?,
        };
        if theirs != ours {
            return Err(Ok(format!(
                "in a {kind} namespace of its own: not supported yet"
            )));
        }
    }
    let (user, user_ours) = read("user")?;
    let (net, net_ours) = read("net")?;
    let (ipc, ipc_ours) = read("ipc")?;
    let (pid_ns, pid_ours) = read("pid")?;
    let (for_children, _) = read("pid_for_children")?;
    if (user, net, ipc, pid_ns, for_children) == (user_ours, net_ours, ipc_ours, pid_ours, pid_ours)
    {
        return Ok(None);
    }
    let user_ns = if user != user_ours {
        Some(user_namespace(pid, user_ours)?)
    } else {
        None
    };
    if net != net_ours {
        if let Some(reason) = net_contents(pid).map_err(Err)? {
            return Err(Ok(reason));
        }
    }
    if ipc != ipc_ours {
        if let Some(reason) = ipc_contents(pid).map_err(Err)? {
            return Err(Ok(reason));
        }
    }
    Ok(Some(Namespaces {
        user: user_ns,
        net: net != net_ours,
        ipc: ipc != ipc_ours,
        ids: (user, net, ipc),
        pid: if pid_ns != pid_ours { pid_ns } else { 0 },
        pid_for_children: if for_children != pid_ns {
            for_children
        } else {
            0
        },
    }))
}

fn user_namespace(pid: i32, ours: u64) -> Result<UserNamespace, Result<String, NamespaceError>> {
    let err = |what: &str| {
        let what = what.to_string();
        move |source| Err(NamespaceError::Read { pid, what, source })
    };
    let ns =
        std::fs::File::open(format!("/proc/{pid}/ns/user")).map_err(err("its user namespace"))?;
    // Below ours, at any depth (chromium's sandbox nests two: its
    // namespace is made inside one a helper made). The maps read from here
    // are composed down to our namespace, so "ids only to themselves" below
    // holds for the whole chain.
    let mut level: OwnedFd = ns.try_clone().map_err(err("its user namespace"))?.into();
    let mut depth = 0;
    loop {
        // EPERM past the top of ours.
        let Ok(parent) = crate::sys::ns::parent(&level) else {
            return Err(Ok(
                "in a user namespace that is not below the checkpointer's: not supported".into(),
            ));
        };
        level = parent;
        let ino = std::fs::File::from(
            level
                .try_clone()
                .map_err(err("its user namespace's parent"))?,
        )
        .metadata()
        .map_err(err("its user namespace's parent"))?
        .ino();
        depth += 1;
        if ino == ours {
            break;
        }
        if depth >= 32 {
            return Err(Ok("in a user namespace more than 32 levels deep".into()));
        }
    }
    let owner = crate::sys::ns::owner_uid(&ns).map_err(err("its user namespace's owner"))?;
    let map = |name: &str| -> Result<Vec<[u32; 3]>, Result<String, NamespaceError>> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{name}")).map_err(err(name))?;
        text.lines()
            .map(|l| {
                let f: Vec<u32> = l
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect();
                match f[..] {
                    [a, b, c] => Ok([a, b, c]),
                    _ => Err(Err(NamespaceError::Read {
                        pid,
                        what: format!("{name} line {l:?}"),
                        source: io::ErrorKind::InvalidData.into(),
                    })),
                }
            })
            .collect()
    };
    let setgroups =
        std::fs::read_to_string(format!("/proc/{pid}/setgroups")).map_err(err("setgroups"))?;
    let user = UserNamespace {
        owner,
        uid_map: map("uid_map")?,
        gid_map: map("gid_map")?,
        setgroups_deny: setgroups.trim() == "deny",
        recreate: false,
    };
    let identity = |m: &[[u32; 3]]| m.iter().all(|l| l[0] == l[1]);
    if !identity(&user.uid_map) || !identity(&user.gid_map) {
        return Err(Ok(
            "in a user namespace that maps ids to others: not supported yet".into(),
        ));
    }
    Ok(user)
}

/// Run `f` on a thread of ours moved into `pid`'s namespace of `kind`
/// (`CLONE_NEWNET`, `CLONE_NEWIPC`: both may be entered by one thread).
fn inside_namespace<T: Send>(
    pid: i32,
    kind: &'static str,
    flag: libc::c_int,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> Result<T, NamespaceError> {
    let err = |source| NamespaceError::Read {
        pid,
        what: format!("its {kind} namespace"),
        source,
    };
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/{kind}")).map_err(err)?;
    inside_namespace_fd(&ns.into(), flag, f).map_err(err)
}

/// Run `f` on a thread of ours moved into the namespace `ns` (an nsfs fd)
/// of kind `flag`; the caller's threads stay where they are.
pub(crate) fn inside_namespace_fd<T: Send>(
    ns: &OwnedFd,
    flag: libc::c_int,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::sys::ns::setns(ns, flag)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the thread reading a namespace panicked")))
    })
}

/// Why the network namespace of `pid` cannot be made again empty, if so.
fn net_contents(pid: i32) -> Result<Option<String>, NamespaceError> {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .with_pid(pid, "its network devices")?;
    let others: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .filter(|n| *n != "lo")
        .collect();
    if !others.is_empty() {
        return Ok(Some(format!(
            "in a network namespace of its own with devices {others:?}: not supported yet"
        )));
    }
    let lo_up = inside_namespace(pid, "net", libc::CLONE_NEWNET, || {
        Ok(crate::sys::socket::interface_flags(b"lo")? & libc::IFF_UP != 0)
    })?;
    Ok(lo_up.then(|| {
        "in a network namespace of its own whose loopback is up: not supported yet".into()
    }))
}

/// Why the IPC namespace of `pid` cannot be made again empty, if so.
fn ipc_contents(pid: i32) -> Result<Option<String>, NamespaceError> {
    let counts = inside_namespace(pid, "ipc", libc::CLONE_NEWIPC, || {
        ["shm", "sem", "msg"]
            .iter()
            .map(|k| {
                std::fs::read_to_string(format!("/proc/sysvipc/{k}"))
                    .map(|t| (*k, t.lines().count().saturating_sub(1)))
            })
            .collect::<io::Result<Vec<_>>>()
    })?;
    let held: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{n} SysV {k}"))
        .collect();
    Ok((!held.is_empty()).then(|| {
        format!(
            "in an IPC namespace of its own holding {}: not supported yet",
            held.join(", ")
        )
    }))
}

/// What the layout checks below read of a saved process (kept apart
/// from the snapshot's types, which sit above this module).
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub ns_pids: &'a [i32],
    pub namespaces: Option<&'a Namespaces>,
}

/// A process in a pid namespace nested below the checkpointer's is made
/// by its parent's fork, with its pid at every level (`clone3`'s
/// `set_tid`): so its parent must be saved and fork it (same session, or
/// a session of its own), and either share its pid namespace or be the
/// parent of that namespace's first process (pid 1, made with
/// `CLONE_NEWPID`). Its process group must be its parent's or its own: a
/// group of another namespace's numbering cannot be joined from inside.
pub fn refuse_pid_layout(processes: &[Member<'_>], report: &mut crate::policy::Report) {
    let by_pid: std::collections::HashMap<i32, &Member<'_>> =
        processes.iter().map(|p| (p.pid, p)).collect();
    let pid_ns = |p: &Member<'_>| p.namespaces.map_or(0, |n| n.pid);
    // A namespace made by unshare: its pid 1 must be a saved child (the
    // restore forks that child into a new namespace, then enters it for
    // the children to come).
    for p in processes {
        let Some(made) = p
            .namespaces
            .as_ref()
            .map(|n| n.pid_for_children)
            .filter(|&m| m != 0)
        else {
            continue;
        };
        let has_first = processes.iter().any(|c| {
            c.ppid == p.pid
                && pid_ns(c) == made
                && c.ns_pids.len() == p.ns_pids.len() + 1
                && c.ns_pids.last() == Some(&1)
        });
        if !has_first {
            report.add(
                p.pid,
                crate::policy::Subject::Process,
                "a pid namespace made for its children",
                crate::policy::Policy::Refuse,
                "its children go to a pid namespace whose pid 1 is not its saved child: not supported yet",
            );
        }
    }
    for p in processes.iter().filter(|p| !p.ns_pids.is_empty()) {
        let why = match by_pid.get(&p.ppid) {
            None => Some("its parent, outside the set, would have to make it".to_string()),
            Some(parent) => {
                let same = parent.ns_pids.len() == p.ns_pids.len() && pid_ns(parent) == pid_ns(p);
                let first =
                    parent.ns_pids.len() + 1 == p.ns_pids.len() && p.ns_pids.last() == Some(&1);
                if !same && !first {
                    Some(format!(
                        "its pid namespace is neither its parent's (pid {}) nor one its parent made with it as pid 1",
                        parent.pid
                    ))
                } else if p.sid != parent.sid && p.sid != p.pid {
                    Some(format!(
                        "its session {} is not its parent's nor its own",
                        p.sid
                    ))
                } else if p.pgid != parent.pgid && p.pgid != p.pid {
                    Some(format!(
                        "its process group {} is not its parent's nor its own",
                        p.pgid
                    ))
                } else {
                    None
                }
            }
        };
        if let Some(why) = why {
            report.add(
                p.pid,
                crate::policy::Subject::Process,
                format!("in a nested pid namespace (pids {:?})", p.ns_pids),
                crate::policy::Policy::Refuse,
                format!("{why}: not supported yet"),
            );
        }
    }
}

/// A network or IPC namespace of its own held by several saved processes
/// is made once, at the birth of the one whose parent does not hold it,
/// and inherited by the fork of the others: so each other holder's parent
/// must hold it too, and fork it (same session, or a session of its own:
/// a process forked by a session helper gets the restorer's namespaces).
/// Any other sharing is refused. A shared user namespace needs nothing:
/// it is not made again (see the module's text).
pub fn refuse_shared(processes: &[Member<'_>], report: &mut crate::policy::Report) {
    let by_pid: std::collections::HashMap<i32, &Member<'_>> =
        processes.iter().map(|p| (p.pid, p)).collect();
    let mut holders: std::collections::HashMap<(&str, u64), Vec<i32>> = Default::default();
    for p in processes {
        let Some(ns) = p.namespaces else { continue };
        let (_, net, ipc) = ns.ids;
        for (kind, own, id) in [("network", ns.net, net), ("IPC", ns.ipc, ipc)] {
            if own {
                holders.entry((kind, id)).or_default().push(p.pid);
            }
        }
    }
    for ((kind, _), pids) in holders {
        if pids.len() < 2 {
            continue;
        }
        let inherits = |pid: &i32| {
            let p = by_pid[pid];
            pids.contains(&p.ppid)
                && by_pid
                    .get(&p.ppid)
                    .is_some_and(|parent| p.sid == parent.sid || p.sid == p.pid)
        };
        let makers = pids.iter().filter(|p| !inherits(p)).count();
        if makers == 1 {
            continue;
        }
        for &pid in &pids {
            report.add(
                pid,
                crate::policy::Subject::Process,
                format!("{kind} namespace shared with pids {pids:?}"),
                crate::policy::Policy::Refuse,
                "a namespace of their own shared by processes that did not inherit it from one another: not supported yet",
            );
        }
    }
}

/// Make `pid`'s user namespace again from inside (`task`, one thread, still
/// root, before its credentials), with the saved maps: its capabilities,
/// set next, then apply in that namespace only. Its owner is the saved
/// one, as the kernel takes it from the maker's effective ids: owned by
/// root, the user would lose the rights an owner has over it (entering
/// it, tracing the processes in it), and the next save of the session
/// would be refused. `root_restore`: the task is root's and takes the
/// owner's uid (and `egid`) for the unshare; otherwise its ids are the
/// restoring user's, which validation found to be the owner's.
pub fn recreate_user(
    task: &crate::remote::RemoteTask,
    pid: i32,
    user: &UserNamespace,
    root_restore: bool,
    egid: u32,
) -> Result<(), NamespaceError> {
    let call = |name, nr, args| {
        task.syscall(name, nr, args)
            .map_err(|source| NamespaceError::Remote { pid, source })
    };
    if !root_restore {
        call(
            "unshare(CLONE_NEWUSER)",
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        )?;
        return write_maps(pid, user);
    }
    // The effective ids become the owner's, for the unshare only; root's
    // capabilities stay effective meanwhile (no fixup at the change of
    // uid), so that the unshare is root's, wherever users may not make
    // user namespaces. In the new namespace it holds every capability,
    // with which its credentials and securebits are then set.
    let fixup = libc::SECBIT_NO_SETUID_FIXUP as u64;
    let keep = u64::MAX; // -1: unchanged
    call(
        "prctl(PR_SET_SECUREBITS)",
        libc::SYS_prctl,
        [libc::PR_SET_SECUREBITS as u64, fixup, 0, 0, 0, 0],
    )?;
    call(
        "setresgid",
        libc::SYS_setresgid,
        [keep, egid.into(), keep, 0, 0, 0],
    )?;
    call(
        "setresuid",
        libc::SYS_setresuid,
        [keep, user.owner.into(), keep, 0, 0, 0],
    )?;
    call(
        "unshare(CLONE_NEWUSER)",
        libc::SYS_unshare,
        [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
    )?;
    call(
        "prctl(PR_SET_SECUREBITS)",
        libc::SYS_prctl,
        [libc::PR_SET_SECUREBITS as u64, 0, 0, 0, 0, 0],
    )?;
    write_maps(pid, user)
}

/// The new user namespace's maps, written from outside.
fn write_maps(pid: i32, user: &UserNamespace) -> Result<(), NamespaceError> {
    let lines = |map: &[[u32; 3]]| -> String {
        map.iter()
            .map(|[inside, outside, count]| format!("{inside} {outside} {count}\n"))
            .collect()
    };
    // setgroups before gid_map: the kernel takes it only then.
    let writes = [
        (
            "setgroups",
            if user.setgroups_deny { "deny" } else { "allow" }.to_string(),
        ),
        ("uid_map", lines(&user.uid_map)),
        ("gid_map", lines(&user.gid_map)),
    ];
    for (name, text) in writes {
        let path = std::path::PathBuf::from(format!("/proc/{pid}/{name}"));
        std::fs::write(&path, text).map_err(|source| NamespaceError::Write {
            pid,
            path,
            source,
        })?;
    }
    Ok(())
}
