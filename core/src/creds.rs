//! Credentials: uids, gids, supplementary groups, capabilities and
//! no_new_privs. Restored last, and only as far as the caller may hold
//! them: root restores any; anyone else only their own ids with no
//! capability.

use crate::procfs::Status;
use crate::procmem::ProcMem;
use crate::remote::{RemoteError, RemoteTask, Scratch};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creds {
    /// real, effective, saved, filesystem
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
}

impl Creds {
    pub fn from_status(s: &Status) -> Self {
        Self {
            uid: s.uid,
            gid: s.gid,
            groups: s.groups.clone(),
            cap_inh: s.cap_inh,
            cap_prm: s.cap_prm,
            cap_eff: s.cap_eff,
            cap_bnd: s.cap_bnd,
            cap_amb: s.cap_amb,
            no_new_privs: s.no_new_privs,
        }
    }

    /// Why a caller with `caller` credentials may not restore these, if so.
    pub fn not_allowed_for(&self, caller: &Creds) -> Option<String> {
        if caller.uid[1] == 0 {
            return None;
        }
        if self.uid.iter().any(|&u| u != caller.uid[0]) {
            return Some(format!(
                "uids {:?} are not the caller's uid {}",
                self.uid, caller.uid[0]
            ));
        }
        let mut allowed: Vec<u32> = caller.groups.clone();
        allowed.push(caller.gid[0]);
        if let Some(g) = self
            .gid
            .iter()
            .chain(&self.groups)
            .find(|g| !allowed.contains(g))
        {
            return Some(format!("gid {g} is not one of the caller's groups"));
        }
        if self.cap_prm | self.cap_eff | self.cap_inh | self.cap_amb != 0 {
            return Some("the process holds capabilities, which only root may restore".into());
        }
        None
    }

    /// The credentials a process of the user `uid` has when started
    /// plainly: the user's ids, the groups the system gives the user, no
    /// capabilities (what that user may restore: see [`Creds::not_allowed_for`]).
    pub fn of_user(uid: u32) -> std::io::Result<Self> {
        let (gid, mut groups) = crate::sys::creds::user_groups(uid, 1024)?;
        groups.sort_unstable();
        groups.dedup();
        Ok(Self {
            uid: [uid; 4],
            gid: [gid; 4],
            groups,
            cap_inh: 0,
            cap_prm: 0,
            cap_eff: 0,
            cap_bnd: 0,
            cap_amb: 0,
            no_new_privs: false,
        })
    }

    /// Credentials of the calling process.
    pub fn of_self() -> std::io::Result<Self> {
        let text = std::fs::read_to_string("/proc/self/status")?;
        crate::procfs::parse_status(&text)
            .map(|s| Self::from_status(&s))
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

const CREDS_OFF: usize = 8192 + 2048;

/// Give the task `target`'s filesystem identity (supplementary groups,
/// fsgid, fsuid) ahead of its whole credentials, which come last: what it
/// opens meanwhile (the files it maps, its executable) is checked against
/// the saved process, never the restorer (root's power over files goes
/// with its fsuid 0).
pub fn take_fs_identity(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    target: &Creds,
    current: &Creds,
) -> Result<(), RemoteError> {
    if target.groups != current.groups {
        set_groups(task, mem, scratch, &target.groups)?;
    }
    // setfsgid and setfsuid answer the previous id, never an error: ask
    // again with an invalid id to see that the change took.
    for (nr, name, id) in [
        (libc::SYS_setfsgid, "setfsgid", target.gid[3]),
        (libc::SYS_setfsuid, "setfsuid", target.uid[3]),
    ] {
        task.syscall(name, nr, [id as u64, 0, 0, 0, 0, 0])?;
        if task.syscall(name, nr, [u32::MAX as u64, 0, 0, 0, 0, 0])? as u32 != id {
            return Err(RemoteError::Syscall {
                pid: task.tid(),
                name,
                errno: libc::EPERM,
            });
        }
    }
    Ok(())
}

/// Set the task's supplementary groups.
pub(crate) fn set_groups(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    groups: &[u32],
) -> Result<(), RemoteError> {
    let raw: Vec<u8> = groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    let addr = scratch.write(mem, CREDS_OFF, &raw)?;
    task.syscall(
        "setgroups",
        libc::SYS_setgroups,
        [groups.len() as u64, addr, 0, 0, 0, 0],
    )
    .map(drop)
}

/// Set `target` in a task that now holds `current` (the restorer's).
pub fn restore(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    target: &Creds,
    current: &Creds,
) -> Result<(), RemoteError> {
    if target != current {
        if target.groups != current.groups {
            set_groups(task, mem, scratch, &target.groups)?;
        }
        // Bounding set first: dropping needs CAP_SETPCAP, which goes with the uid.
        drop_bounding(task, target, current)?;
        // Capabilities kept across the change of uid, until capset.
        let keep = target.cap_prm != 0 && target.uid.iter().all(|&u| u != 0);
        if keep {
            set_keepcaps(task, true)?;
        }
        set_ids(task, target)?;
        set_caps(task, mem, scratch, target)?;
        if keep {
            set_keepcaps(task, false)?;
        }
        raise_ambient(task, target)?;
    }
    if target.no_new_privs && !current.no_new_privs {
        task.syscall(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            libc::SYS_prctl,
            [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
        )?;
    }
    Ok(())
}

/// Drop from the task's bounding set (`current`'s) what `target`'s lacks.
fn drop_bounding(task: &RemoteTask, target: &Creds, current: &Creds) -> Result<(), RemoteError> {
    for cap in 0..64u64 {
        if current.cap_bnd & (1 << cap) != 0 && target.cap_bnd & (1 << cap) == 0 {
            task.syscall(
                "prctl(PR_CAPBSET_DROP)",
                libc::SYS_prctl,
                [libc::PR_CAPBSET_DROP as u64, cap, 0, 0, 0, 0],
            )?;
        }
    }
    Ok(())
}

/// Whether the task keeps its permitted capabilities when its uids change.
fn set_keepcaps(task: &RemoteTask, on: bool) -> Result<(), RemoteError> {
    task.syscall(
        "prctl(PR_SET_KEEPCAPS)",
        libc::SYS_prctl,
        [libc::PR_SET_KEEPCAPS as u64, on as u64, 0, 0, 0, 0],
    )
    .map(drop)
}

/// Set `target`'s gids, then its uids (real, effective, saved, file system).
fn set_ids(task: &RemoteTask, target: &Creds) -> Result<(), RemoteError> {
    task.syscall(
        "setresgid",
        libc::SYS_setresgid,
        [
            target.gid[0] as u64,
            target.gid[1] as u64,
            target.gid[2] as u64,
            0,
            0,
            0,
        ],
    )?;
    task.syscall(
        "setfsgid",
        libc::SYS_setfsgid,
        [target.gid[3] as u64, 0, 0, 0, 0, 0],
    )?;
    task.syscall(
        "setresuid",
        libc::SYS_setresuid,
        [
            target.uid[0] as u64,
            target.uid[1] as u64,
            target.uid[2] as u64,
            0,
            0,
            0,
        ],
    )?;
    task.syscall(
        "setfsuid",
        libc::SYS_setfsuid,
        [target.uid[3] as u64, 0, 0, 0, 0, 0],
    )
    .map(drop)
}

/// Set `target`'s effective, permitted and inheritable capabilities.
fn set_caps(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    target: &Creds,
) -> Result<(), RemoteError> {
    // capset: header {version 3, pid 0} then two {effective, permitted, inheritable} words.
    let mut caps = Vec::new();
    caps.extend_from_slice(&0x2008_0522u32.to_ne_bytes());
    caps.extend_from_slice(&0i32.to_ne_bytes());
    for half in [0u32, 32] {
        for v in [target.cap_eff, target.cap_prm, target.cap_inh] {
            caps.extend_from_slice(&((v >> half) as u32).to_ne_bytes());
        }
    }
    let hdr = scratch.write(mem, CREDS_OFF, &caps)?;
    task.syscall("capset", libc::SYS_capset, [hdr, hdr + 8, 0, 0, 0, 0])
        .map(drop)
}

/// Raise `target`'s ambient capabilities (which must be permitted and
/// inheritable by now).
fn raise_ambient(task: &RemoteTask, target: &Creds) -> Result<(), RemoteError> {
    for cap in 0..64u64 {
        if target.cap_amb & (1 << cap) != 0 {
            task.syscall(
                "prctl(PR_CAP_AMBIENT_RAISE)",
                libc::SYS_prctl,
                [
                    libc::PR_CAP_AMBIENT as u64,
                    libc::PR_CAP_AMBIENT_RAISE as u64,
                    cap,
                    0,
                    0,
                    0,
                ],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, gid: u32) -> Creds {
        Creds {
            uid: [uid; 4],
            gid: [gid; 4],
            groups: vec![gid],
            cap_inh: 0,
            cap_prm: 0,
            cap_eff: 0,
            cap_bnd: !0,
            cap_amb: 0,
            no_new_privs: false,
        }
    }

    #[test]
    fn root_may_restore_anyone_users_only_themselves() {
        let root = Creds {
            cap_prm: !0,
            cap_eff: !0,
            ..user(0, 0)
        };
        assert_eq!(user(1000, 1000).not_allowed_for(&root), None);
        assert_eq!(user(1000, 1000).not_allowed_for(&user(1000, 1000)), None);
        assert!(user(1001, 1000)
            .not_allowed_for(&user(1000, 1000))
            .unwrap()
            .contains("uid"));
        assert!(user(1000, 5)
            .not_allowed_for(&user(1000, 1000))
            .unwrap()
            .contains("gid 5"));
        let capped = Creds {
            cap_prm: 1,
            ..user(1000, 1000)
        };
        assert!(capped
            .not_allowed_for(&user(1000, 1000))
            .unwrap()
            .contains("capabilities"));
    }
}

/// Run `f` with this thread's filesystem identity (fsuid, fsgid,
/// supplementary groups) switched to `creds`': what `f` opens is checked
/// against the saved process's identity, and what it creates (a socket
/// bound to a path) is owned by it, never by the restorer. Root's
/// power over files goes with its fsuid 0 (the kernel drops the
/// filesystem capabilities while the fsuid is not 0), so an image cannot
/// make a root restore open a file its process could not. Per thread:
/// raw system calls, not glibc's `setgroups`, which changes every thread.
pub fn with_fs_identity<T>(creds: &Creds, f: impl FnOnce() -> T) -> std::io::Result<T> {
    let old = FsIdentity::current()?;
    let new = FsIdentity {
        uid: creds.uid[3],
        gid: creds.gid[3],
        groups: creds.groups.clone(),
    };
    if new == old {
        return Ok(f());
    }
    new.enter()?;
    let out = f();
    old.enter()
        .expect("the restorer's own filesystem identity can always be taken back");
    Ok(out)
}

#[derive(Debug, PartialEq, Eq)]
struct FsIdentity {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl FsIdentity {
    fn current() -> std::io::Result<Self> {
        let uid = crate::sys::creds::fsuid();
        let gid = crate::sys::creds::fsgid();
        let groups = crate::sys::creds::groups()?;
        Ok(Self { uid, gid, groups })
    }

    /// Take this identity on the calling thread; checked, since setfsuid
    /// and setfsgid report no failure.
    fn enter(&self) -> std::io::Result<()> {
        crate::sys::creds::set_groups(&self.groups)?;
        crate::sys::creds::set_fsgid(self.gid);
        crate::sys::creds::set_fsuid(self.uid);
        let now = Self::current()?;
        if now != *self {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(())
    }
}
