//! Files a process holds open inside the FUSE mount of a session service
//! left out of the set (the document portal's `$XDG_RUNTIME_DIR/doc`,
//! gvfsd-fuse's `$XDG_RUNTIME_DIR/gvfs`).
//!
//! The server is not saved, so neither is the open file: at checkpoint
//! only its path, offset and flags are recorded, from `/proc` (root may
//! not look into another user's FUSE mount, and the file is never
//! touched). At restore the fd gets a dead stand-in (an `O_PATH` handle:
//! reads and writes fail with EBADF). Once the caller has brought the
//! service back (D-Bus activation on the restored session bus) and its
//! mount answers, [`reopen`] opens the path again inside the holder, as
//! the holder, and puts it over the stand-in with its offset: the
//! program's next read goes on where it stopped.

use super::error::{FileError, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::policy::Policy;
use crate::procfs::FdInfo;
use crate::procmem::ProcMem;
use crate::remote::{self, ResultUndo, Scratch, Undo};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Longest D-Bus name (the specification's limit).
const MAX_BUS_NAME: usize = 255;
/// The stand-in's name, which [`reopen`] checks the fd still holds.
const STAND_IN_NAME: &str = "hiber-service-file";

/// A FUSE mount served by a left-out service, and how the desktop brings
/// the service back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceMount {
    pub path: PathBuf,
    /// The session bus name whose activation starts the server again
    /// (its own, or the starter's that runs it); None when nothing does.
    pub bus_name: Option<String>,
}

/// An open file inside a left-out service's FUSE mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFile {
    pub path: PathBuf,
    pub pos: u64,
    /// The mount it lies in, and the service's bus name.
    pub mount: ServiceMount,
}

#[derive(Debug, thiserror::Error)]
pub enum ReopenError {
    #[error("making the stand-in of {path}")]
    StandIn { path: PathBuf, source: io::Error },
    #[error("pid {pid} fd {fd} no longer holds the stand-in of {path} (closed or replaced since the restore): left alone")]
    NotStandIn { pid: i32, fd: i32, path: PathBuf },
    #[error("pid {pid} has no vdso to run the reopen through")]
    NoVdso { pid: i32 },
    #[error(transparent)]
    Procfs(#[from] crate::procfs::ProcfsError),
    #[error(transparent)]
    Freeze(#[from] crate::freeze::FreezeError),
    #[error("pid {pid} fd {fd}: reopening {path}")]
    Remote {
        pid: i32,
        fd: i32,
        path: PathBuf,
        source: remote::RemoteError,
    },
}

impl ServiceFile {
    /// What happens to it, for the report.
    pub fn what_happens(&self) -> String {
        match &self.mount.bus_name {
            Some(name) => format!(
                "the server of {} is left out of the set: a dead stand-in at restore, reopened by path at its offset once {name} is activated again and its mount answers",
                self.mount.path.display()
            ),
            None => format!(
                "the server of {} is left out of the set and nothing on the bus starts it again: a dead stand-in at restore, reopened by path only if its mount is back",
                self.mount.path.display()
            ),
        }
    }

    /// Recorded from `/proc` alone: the fd's target and fdinfo.
    pub(super) fn record(target: &Path, info: &FdInfo, mount: &ServiceMount) -> Self {
        Self {
            path: target.to_path_buf(),
            pos: info.pos,
            mount: mount.clone(),
        }
    }

    /// Checks of an image's record (see `restore::validate`).
    pub fn validate(&self) -> Result<(), String> {
        if !self.mount.path.is_absolute() || !self.path.starts_with(&self.mount.path) {
            return Err(format!(
                "path {:?} outside its service's mount {:?}",
                self.path, self.mount.path
            ));
        }
        if self.pos > i64::MAX as u64 {
            return Err(format!("offset {}", self.pos));
        }
        if let Some(name) = &self.mount.bus_name {
            let well_formed = !name.is_empty()
                && name.len() <= MAX_BUS_NAME
                && name.contains('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !well_formed {
                return Err(format!("bus name {name:?}"));
            }
        }
        Ok(())
    }

    /// The dead stand-in: an `O_PATH` handle of an empty memfd named
    /// after this kind, which [`reopen`] recognises.
    fn open(&self) -> Result<OwnedFd, ReopenError> {
        let err = |source| ReopenError::StandIn {
            path: self.path.clone(),
            source,
        };
        let name = std::ffi::CString::new(STAND_IN_NAME).expect("no NUL in the name");
        let memfd = crate::sys::fs::memfd(&name).map_err(err)?;
        let link = std::ffi::CString::new(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&memfd)
        ))
        .expect("no NUL in a /proc path");
        crate::sys::fs::open(&link, libc::O_PATH | libc::O_CLOEXEC, 0).map_err(err)
    }
}

/// Whether `pid`'s `fd` is still the stand-in of a service file.
fn holds_stand_in(pid: i32, fd: i32) -> bool {
    let dir = crate::procfs::ProcDir::new(pid);
    let named = dir.fd_target(fd).is_ok_and(|t| {
        t.to_string_lossy()
            .starts_with(&format!("/memfd:{STAND_IN_NAME} "))
    });
    named
        && dir
            .fdinfo(fd)
            .is_ok_and(|i| i.flags & libc::O_PATH as u32 != 0)
}

/// Open `file` again inside `pid` (running, restored) with `flags` and put
/// it over the stand-in at `fd`, at its saved offset. Only the holder is
/// stopped meanwhile (its children run on); it runs the open itself, with
/// its own credentials and mount namespace. The caller has made sure the
/// mount answers: the open runs in the holder and is not interrupted.
pub fn reopen(
    pid: i32,
    fd: i32,
    cloexec: bool,
    flags: u32,
    file: &ServiceFile,
) -> Result<(), ReopenError> {
    let children = crate::freeze::list_tree(&[pid])?
        .into_iter()
        .filter(|&c| c != pid)
        .collect::<Vec<_>>();
    let frozen = crate::freeze::Frozen::freeze_without(&[pid], &children)?;
    let result = (|| {
        if !holds_stand_in(pid, fd) {
            return Err(ReopenError::NotStandIn {
                pid,
                fd,
                path: file.path.clone(),
            });
        }
        let vdso = crate::procfs::ProcDir::new(pid)
            .maps()?
            .into_iter()
            .find(|m| matches!(m.path, crate::procfs::MapsPath::Vdso))
            .map(|m| (m.start, m.end))
            .ok_or(ReopenError::NoVdso { pid })?;
        let remote_err = |source| ReopenError::Remote {
            pid,
            fd,
            path: file.path.clone(),
            source,
        };
        let mut mem = ProcMem::new(pid, true);
        let (task, lifeline) = remote::take_over(pid, &mut mem, vdso).map_err(remote_err)?;
        let done = run_reopen(&task, &mut mem, fd, cloexec, flags, file).map_err(remote_err);
        let back = task.restore().map_err(remote_err);
        if let Some(l) = lifeline {
            l.clear(&mut mem);
        }
        done.and(back)
    })();
    frozen.thaw();
    result
}

/// The remote calls: openat into a new fd, lseek, dup3 over `fd`, close.
/// Should we die between them, the lifeline closes what was opened and
/// unmaps the scratch page.
fn run_reopen(
    task: &remote::RemoteTask,
    mem: &mut ProcMem,
    fd: i32,
    cloexec: bool,
    flags: u32,
    file: &ServiceFile,
) -> Result<(), remote::RemoteError> {
    let mut path = file.path.as_os_str().as_encoded_bytes().to_vec();
    path.push(0);
    let len = path.len().div_ceil(4096) * 4096;
    let scratch = Scratch::map(task, mem, len)?;
    let addr = scratch.write(mem, 0, &path)?;
    let unmap = Some((scratch.addr, scratch.len as u64));
    task.set_undo(
        mem,
        &Undo {
            result: ResultUndo::Close,
            unmap,
            ..Undo::default()
        },
    )?;
    let open_flags = flags | (libc::O_CLOEXEC | libc::O_NOCTTY) as u32;
    let new = task.syscall(
        "openat",
        libc::SYS_openat,
        [libc::AT_FDCWD as u64, addr, open_flags as u64, 0, 0, 0],
    )?;
    task.set_undo(
        mem,
        &Undo {
            close: Some(new as i32),
            unmap,
            ..Undo::default()
        },
    )?;
    if file.pos > 0 {
        // A file that cannot seek keeps offset 0; the open is still
        // better than the stand-in.
        let _ = task.syscall_raw(
            libc::SYS_lseek,
            [new, file.pos, libc::SEEK_SET as u64, 0, 0, 0],
        );
    }
    let dup_flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
    let placed = task.syscall("dup3", libc::SYS_dup3, [new, fd as u64, dup_flags, 0, 0, 0]);
    let closed = task.syscall("close", libc::SYS_close, [new, 0, 0, 0, 0, 0]);
    task.set_undo(
        mem,
        &Undo {
            unmap,
            ..Undo::default()
        },
    )?;
    let unmapped = scratch.unmap(task, mem);
    placed?;
    closed?;
    unmapped
}

/// One fd of a restored process waiting for its service to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The holder's pid in the image.
    pub pid: i32,
    pub fd: i32,
    pub cloexec: bool,
    pub flags: u32,
    pub file: ServiceFile,
}

impl FdKind for ServiceFile {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        format!("file {} of a left-out FUSE server", self.path.display())
    }

    fn policy(&self) -> Policy {
        Policy::Reopen
    }

    fn reason(&self, _: &Probe<'_>, _: &()) -> String {
        self.what_happens()
    }

    /// Files of a left-out service's mount are recorded from `/proc` alone
    /// (`FileTable::collect_service_file`), before any kind is asked.
    fn claims(_: &Probe<'_>) -> bool {
        false
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), _: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        Err(format!(
            "{}: not inside a left-out service's mount",
            fd.target.display()
        )
        .into())
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, _: u32, _: &mut (), _: &Restoring<'_>) -> FileResult<Opened> {
        self.open()
            .map(Opened::from)
            .map_err(|e| FileError::Create {
                what: "making the stand-in of a service's file",
                source: std::io::Error::other(e.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn doc(path: &str, bus_name: Option<&str>) -> ServiceFile {
        ServiceFile {
            path: path.into(),
            pos: 9,
            mount: ServiceMount {
                path: "/run/user/1500/doc".into(),
                bus_name: bus_name.map(String::from),
            },
        }
    }

    #[test]
    fn an_image_names_only_files_under_the_mount_and_a_bus_name() {
        let ok = doc(
            "/run/user/1500/doc/a6c4/note.txt",
            Some("org.freedesktop.portal.Documents"),
        );
        assert_eq!(ok.validate(), Ok(()));
        assert!(doc("/etc/shadow", None).validate().is_err());
        assert!(doc("/run/user/1500/documents/x", None).validate().is_err());
        let bad_name = doc("/run/user/1500/doc/x", Some("not a name; rm -rf"));
        assert!(bad_name.validate().unwrap_err().contains("bus name"));
        let far = ServiceFile {
            pos: u64::MAX,
            ..ok.clone()
        };
        assert!(far.validate().unwrap_err().contains("offset"));
    }

    #[test]
    fn the_stand_in_is_dead_and_recognised() {
        let me = std::process::id() as i32;
        let stand_in = doc("/run/user/1500/doc/x", None).open().unwrap();
        assert!(holds_stand_in(me, stand_in.as_raw_fd()));
        let mut b = [0u8; 4];
        let r = crate::sys::fd::read(stand_in.as_raw_fd(), &mut b);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EBADF));
        let other = std::fs::File::open("/proc/self/status").unwrap();
        assert!(!holds_stand_in(me, other.as_raw_fd()));
    }
}
