//! Nodes a restore makes in the filesystem for a session: the socket file
//! of a socket bound to a path, a FIFO, and the directory holding either
//! when it vanished since the save (`/tmp/tmux-UID`, a runtime directory's
//! `gnupg/`). Each comes back with the owner, group and mode its program's
//! had, so that new clients (of the user, of its group) reach it as before.
//!
//! At checkpoint the node is looked at as its holder sees it: through
//! `/proc/PID/root` (an absolute name) or `/proc/PID/cwd` (a relative
//! one), with the holder's filesystem identity, and recorded only when it
//! is the object itself (a socket's file is told from another at its path
//! by the inode sock_diag reports). A node missing at save time is a fact
//! recorded too: its socket comes back bound under its name but without a
//! file, as it was.
//!
//! At restore everything here runs with the holder's filesystem identity
//! (see `creds::with_fs_identity`): the kernel checks every directory made,
//! socket bound, FIFO made, owner and mode changed against the saved
//! process's user, never root. A directory is made again only when its
//! saved owner is that user and its own parent exists; it is made with
//! `mkdirat` and opened `O_NOFOLLOW`, so no symlink is followed into it,
//! and an existing one is never changed. The umask and the cwd a node is
//! made with are set on a thread of its own (`unshare(CLONE_FS)`), never
//! the restorer's.

use super::error::FileError;
use crate::creds::Creds;
use crate::sys::wrap::WrapIoResult;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Owner, group and permission bits of a file or directory, as saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
}

impl Owner {
    fn of(st: &rustix::fs::Stat) -> Self {
        Owner {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
        }
    }
}

/// What a checkpoint found at the path of a socket file or FIFO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedNode {
    /// The node itself; None when its path named nothing, or another
    /// file, at save time (it had been removed or replaced).
    pub node: Option<Owner>,
    /// The directory holding it, to make again if it is gone at restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<Owner>,
    /// For a relative name: the directory it is relative to, the holder's
    /// working directory at save time (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<PathBuf>,
}

impl SavedNode {
    /// Why this record could not come from a checkpoint, if so.
    pub fn invalid(&self) -> Option<String> {
        for (what, o) in [("node", &self.node), ("directory", &self.dir)] {
            if let Some(o) = o {
                if o.mode > 0o7777 || o.uid == u32::MAX || o.gid == u32::MAX {
                    return Some(format!(
                        "{what} owner {}:{} mode {:o}",
                        o.uid, o.gid, o.mode
                    ));
                }
            }
        }
        None
    }
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// `rel` for use relative to a directory fd: "." for the directory itself.
fn or_dot(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

/// What process `pid` (holding `creds`) sees at `name`, a path as it gave
/// it to `bind` or `open`; `is_node` tells the object itself from another
/// file at its path. None when the holder cannot look there (nothing is
/// recorded, and the restore makes the node as an older image's).
pub(crate) fn inspect(
    pid: i32,
    creds: Option<&Creds>,
    name: &Path,
    is_node: impl Fn(&rustix::fs::Stat) -> bool,
) -> Option<SavedNode> {
    let (anchor, rel, base) = match name.strip_prefix("/") {
        Ok(rel) => (format!("/proc/{pid}/root"), rel, None),
        Err(_) => {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
            (format!("/proc/{pid}/cwd"), name, Some(cwd))
        }
    };
    // The magic link is crossed as the checkpointer (a process that made
    // itself undumpable hides it from its own user); the path below it is
    // walked as the holder, so a symlink the program planted reveals
    // nothing its user could not see.
    let anchor = rustix::fs::open(
        anchor.as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let look = || {
        let node = rustix::fs::statat(&anchor, or_dot(rel), AtFlags::SYMLINK_NOFOLLOW);
        let dir = rustix::fs::statat(
            &anchor,
            or_dot(rel.parent().unwrap_or(Path::new(""))),
            AtFlags::empty(),
        );
        (node, dir)
    };
    let (node, dir) = match creds {
        Some(c) => crate::creds::with_fs_identity(c, look).ok()?,
        None => look(),
    };
    let node = match node {
        Ok(st) if is_node(&st) => Some(Owner::of(&st)),
        Ok(_) | Err(Errno::NOENT) | Err(Errno::NOTDIR) => None,
        Err(_) => return None,
    };
    let dir = dir
        .ok()
        .filter(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
        .map(|st| Owner::of(&st));
    Some(SavedNode { node, dir, base })
}

/// Run `f` on a thread of its own whose working directory, root and umask
/// are its own (`unshare(CLONE_FS)`), so that `f` may change them. The
/// thread starts with the calling thread's credentials (the kernel copies
/// them at `clone`): the holder's filesystem identity when the caller took
/// it.
pub(crate) fn in_private_fs<T: Send>(
    f: impl FnOnce() -> Result<T, FileError> + Send,
) -> Result<T, FileError> {
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            crate::sys::ns::unshare(libc::CLONE_FS)
                .doing("giving a thread its own working directory and umask")?;
            f()
        });
        match worker.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Set the umask of the calling thread (run it in [`in_private_fs`]).
pub(crate) fn set_umask(mask: u32) {
    crate::sys::fs::set_umask(mask);
}

/// Make `dir` the calling thread's working directory (in [`in_private_fs`]).
pub(crate) fn enter(dir: &impl AsFd, path: &Path) -> Result<(), FileError> {
    Ok(crate::sys::fs::fchdir(dir.as_fd()).at_path("entering", path)?)
}

/// The calling thread's filesystem uid.
fn fsuid() -> u32 {
    crate::sys::creds::fsuid()
}

/// The absolute path of node `name` (relative ones against the saved
/// working directory).
pub(crate) fn full_path(name: &Path, saved: &SavedNode) -> Result<PathBuf, FileError> {
    if name.is_absolute() {
        return Ok(name.to_path_buf());
    }
    match &saved.base {
        Some(base) => Ok(base.join(name)),
        None => Err(FileError::NotMade {
            path: name.to_path_buf(),
            reason: "a relative name without the directory it was relative to".into(),
        }),
    }
}

/// The directory that holds node `full` (an absolute path) and its last
/// component. A directory gone since the save is made again as
/// `saved_dir` says, when that is safe (see [`make_dir`]).
pub(crate) fn directory_of(
    full: &Path,
    saved_dir: Option<&Owner>,
) -> Result<(OwnedFd, PathBuf), FileError> {
    let (Some(parent), Some(leaf)) = (full.parent(), full.file_name()) else {
        return Err(FileError::NotMade {
            path: full.to_path_buf(),
            reason: "not a path to a file in a directory".into(),
        });
    };
    let dir = match rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => make_dir(parent, saved_dir)?,
        Err(e) => {
            return Err(FileError::Path {
                op: "opening the directory",
                path: parent.to_path_buf(),
                source: errno(e),
            })
        }
    };
    Ok((dir, PathBuf::from(leaf)))
}

/// Make directory `path` again, as its saved owner, group and mode say,
/// with the calling thread's filesystem identity. Refused unless the
/// saved owner is that identity's uid (a directory of another user, or of
/// root, such as `/tmp/.X11-unix`, is the system's to make) and its own
/// parent exists (one level only). Made with `mkdirat` under the parent
/// opened here and reopened with `O_NOFOLLOW`: nothing else is created or
/// changed, and a directory someone else made meanwhile is used as it is.
fn make_dir(path: &Path, saved: Option<&Owner>) -> Result<OwnedFd, FileError> {
    let not_made = |reason: String| FileError::NotMade {
        path: path.to_path_buf(),
        reason,
    };
    let Some(want) = saved else {
        return Err(not_made(
            "it is gone, and the image does not say whose it was".into(),
        ));
    };
    let me = fsuid();
    if want.uid != me {
        return Err(not_made(format!(
            "it is gone, and it belonged to uid {}, not to uid {me} of the process that needs it",
            want.uid
        )));
    }
    let (Some(parent), Some(leaf)) = (path.parent(), path.file_name()) else {
        return Err(not_made("it has no parent directory".into()));
    };
    let parent_fd = rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        not_made(format!(
            "its parent {} cannot be opened: {e}",
            parent.display()
        ))
    })?;
    let (dir, made) = mkdir_under(&parent_fd, leaf, path)?;
    if !made {
        return Ok(dir);
    }
    give_saved_owner(&dir, path, want, me)?;
    tracing::info!(path = %path.display(), uid = want.uid, gid = want.gid, mode = want.mode, "made a directory gone since the save again");
    Ok(dir)
}

/// Make directory `leaf` under `parent_fd` (`path`), mode 0700 until its
/// saved mode is set, and open it without following a link: the open
/// directory, and whether it was made here (false: someone else made it
/// meanwhile).
fn mkdir_under(
    parent_fd: &OwnedFd,
    leaf: &OsStr,
    path: &Path,
) -> Result<(OwnedFd, bool), FileError> {
    let made = match rustix::fs::mkdirat(parent_fd, leaf, Mode::from_raw_mode(0o700)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => {
            return Err(FileError::Path {
                op: "making the directory again",
                path: path.to_path_buf(),
                source: errno(e),
            })
        }
    };
    let dir = rustix::fs::openat(
        parent_fd,
        leaf,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at_path("opening the directory made again", path)?;
    Ok((dir, made))
}

/// Give directory `dir` (`path`), just made by uid `me`, the group and
/// mode `want` saved; refused when what was made is not `me`'s.
fn give_saved_owner(dir: &OwnedFd, path: &Path, want: &Owner, me: u32) -> Result<(), FileError> {
    let not_made = |reason: String| FileError::NotMade {
        path: path.to_path_buf(),
        reason,
    };
    let st = rustix::fs::fstat(dir).at_path("fstat", path)?;
    if st.st_uid != me {
        return Err(not_made(format!(
            "what was made there belongs to uid {}",
            st.st_uid
        )));
    }
    if st.st_gid != want.gid {
        if let Err(e) = rustix::fs::fchown(dir, None, Some(rustix::fs::Gid::from_raw(want.gid))) {
            tracing::warn!(path = %path.display(), gid = want.gid, error = %e, "the directory made again keeps the holder's group");
        }
    }
    // Without the setuid bit, meaningless on a directory.
    Ok(
        rustix::fs::fchmod(dir, Mode::from_raw_mode(want.mode & 0o3777))
            .at_path("setting the saved mode of", path)?,
    )
}

/// Give node `leaf` of `dir`, just made by the restore, the saved owner,
/// group and mode where they differ (a socket's mode is set by the umask
/// it is bound with; its group may need a change). As the holder: what
/// the kernel refuses it (another user's uid) is left, with a warning.
pub(crate) fn set_owner(dir: &OwnedFd, leaf: &Path, full: &Path, want: &Owner) {
    let Ok(st) = rustix::fs::statat(dir, leaf, AtFlags::SYMLINK_NOFOLLOW) else {
        return;
    };
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::Socket && kind != FileType::Fifo {
        return;
    }
    let uid = (st.st_uid != want.uid).then(|| rustix::fs::Uid::from_raw(want.uid));
    let gid = (st.st_gid != want.gid).then(|| rustix::fs::Gid::from_raw(want.gid));
    if uid.is_some() || gid.is_some() {
        if let Err(e) = rustix::fs::chownat(dir, leaf, uid, gid, AtFlags::SYMLINK_NOFOLLOW) {
            tracing::warn!(path = %full.display(), uid = want.uid, gid = want.gid, error = %e, "the restored node keeps the holder's owner and group");
        }
    }
    if st.st_mode & 0o7777 != want.mode & 0o777 {
        // Only permission bits: no setuid, setgid or sticky bit is made.
        if let Err(e) = rustix::fs::chmodat(
            dir,
            leaf,
            Mode::from_raw_mode(want.mode & 0o777),
            AtFlags::empty(),
        ) {
            tracing::warn!(path = %full.display(), mode = want.mode, error = %e, "the restored node keeps another mode");
        }
    }
}

/// A private directory tree, made by the holder in the temporary
/// directory, in which a socket whose file was gone at save time is bound
/// under its own name (the thread's root moved there), then removed.
pub(crate) struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new() -> Result<Self, FileError> {
        let tmp = std::env::temp_dir();
        for n in 0..100u32 {
            let path = tmp.join(format!(".hiber-bind-{}-{n}", std::process::id()));
            match rustix::fs::mkdir(&path, Mode::from_raw_mode(0o700)) {
                Ok(()) => return Ok(Scratch { path }),
                Err(Errno::EXIST) => continue,
                Err(e) => {
                    return Err(FileError::Path {
                        op: "making a private directory in",
                        path: tmp,
                        source: errno(e),
                    })
                }
            }
        }
        Err(FileError::NotMade {
            path: tmp,
            reason: "no free name for a private directory".into(),
        })
    }

    /// Make `rel`'s parent directories inside the tree.
    pub fn make_parents(&self, rel: &Path) -> Result<(), FileError> {
        if let Some(p) = rel.parent() {
            std::fs::create_dir_all(self.path.join(p))
                .at_path("making a private directory", self.path.join(p))?;
        }
        Ok(())
    }

    /// Make the tree the calling thread's root and working directory (in
    /// [`in_private_fs`], which has kept `CAP_SYS_CHROOT`: it is not one
    /// of the file capabilities the holder's fsuid drops).
    pub fn enter_as_root(&self) -> Result<(), FileError> {
        let dir = rustix::fs::open(
            &self.path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at_path("opening", &self.path)?;
        enter(&dir, &self.path)?;
        crate::sys::fs::chroot_here().at_path("moving a thread's root to", &self.path)?;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // remove_dir_all never follows a symlink out of the tree.
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "a private directory is left behind");
        }
    }
}
