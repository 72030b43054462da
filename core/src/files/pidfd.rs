//! pidfd: a handle to a process (GLib's child watch holds one for each
//! child it spawns). Saved as the pid it refers to. Restored by opening
//! the restored process again, in the holder once every process of the
//! tree exists (see `restore::node`); when the process had already exited,
//! or is outside the saved set, as a handle to an exited process, which is
//! what a program sees when its child is gone.

use super::error::{FileError, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::policy::Policy;
use crate::procfs::FdInfo;
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::OwnedFd;

/// `PIDFD_THREAD` (Linux 6.9): a handle to one thread. It is `O_EXCL`.
const PIDFD_THREAD: i32 = libc::O_EXCL;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pidfd {
    /// The process (or thread) it refers to; -1 once that has exited.
    pub pid: i32,
    /// A handle to one thread (`PIDFD_THREAD`).
    pub thread: bool,
    /// `pid` is a process of the saved set, so it is opened again.
    pub inside: bool,
}

impl Pidfd {
    fn pidfd_flags(&self, file_flags: u32) -> i32 {
        let mut flags = file_flags as i32 & libc::O_NONBLOCK;
        if self.thread {
            flags |= PIDFD_THREAD;
        }
        flags
    }

    /// The restorer's object: a handle to an exited process. For a pid of
    /// the set it is only a placeholder, replaced in the holder by
    /// [`Pidfd::open_in_holder`].
    fn open(&self, file_flags: u32) -> Result<OwnedFd, FileError> {
        Ok(exited(file_flags as i32 & libc::O_NONBLOCK)
            .doing("creating a pidfd of an exited process")?)
    }

    /// Open the saved process again, from a process of the restored tree
    /// (so `pid` is read in its pid namespace).
    pub fn open_in_holder(&self, file_flags: u32) -> io::Result<OwnedFd> {
        open(self.pid, self.pidfd_flags(file_flags))
    }
}

fn open(pid: i32, flags: i32) -> io::Result<OwnedFd> {
    crate::sys::fd::pidfd_open_flags(pid, flags)
}

/// A pidfd of a child that has exited and been reaped.
fn exited(flags: i32) -> io::Result<OwnedFd> {
    // A zombie can still be opened; then it is reaped.
    crate::sys::process::with_exited_child(|child| open(child, flags))?
}

pub(super) fn checkpoint(info: &FdInfo) -> Result<Pidfd, String> {
    let pid: i32 = info
        .get("Pid")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "pidfd without a Pid line in fdinfo".to_string())?;
    if pid == 0 {
        return Err("pidfd of a process in another pid namespace".into());
    }
    Ok(Pidfd {
        pid,
        thread: info.flags as i32 & PIDFD_THREAD != 0,
        inside: false,
    })
}

impl FdKind for Pidfd {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        match (self.pid, self.inside) {
            (-1, _) => "pidfd of a process that has exited".into(),
            (pid, true) => format!("pidfd of pid {pid}"),
            (pid, false) => format!("pidfd of pid {pid}, outside the saved set"),
        }
    }

    fn policy(&self) -> Policy {
        if self.pid > 0 && !self.inside {
            Policy::Reset
        } else {
            Policy::Restore
        }
    }

    fn claims(fd: &Probe<'_>) -> bool {
        // Linux 6.9+ names it `pidfd:[INO]` (pidfs).
        fd.is_anon("[pidfd]") || fd.untyped() && fd.name.starts_with("pidfd:")
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), _: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        Ok(checkpoint(fd.info)?)
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, flags: u32, _: &mut (), _: &Restoring<'_>) -> FileResult<Opened> {
        self.open(flags).map(Opened::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn poll_in(fd: &OwnedFd) -> bool {
        let revents = crate::sys::event::poll_one(fd.as_raw_fd(), libc::POLLIN, 0).unwrap_or(0);
        revents & libc::POLLIN != 0
    }

    #[test]
    fn a_handle_to_an_exited_process_reads_as_exited() {
        let fd = Pidfd {
            pid: -1,
            thread: false,
            inside: false,
        }
        .open(libc::O_NONBLOCK as u32)
        .unwrap();
        assert!(poll_in(&fd), "an exited process's pidfd is readable");
        let fl = crate::sys::fd::status_flags_of(fd.as_raw_fd()).unwrap();
        assert_ne!(fl & libc::O_NONBLOCK, 0);
        let me = open(std::process::id() as i32, 0).unwrap();
        assert!(!poll_in(&me), "a live process's pidfd is not");
    }
}
