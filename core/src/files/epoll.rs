//! epoll: the instance, and its watches (fd, events, data), from fdinfo.
//!
//! The kernel keys a watch by (file, fd number), so a watch must be added
//! with the fd number the program used. The instance is created in the
//! restorer like any file; its watches are added by the restored process
//! itself once its fds sit at their numbers (see `restore::node`), by the
//! process the watches were read from.

use super::error::{FileError, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::procfs::FdInfo;
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{OwnedFd, RawFd};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// The watched fd's number in `owner`.
    pub fd: i32,
    pub events: u32,
    pub data: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoll {
    /// The process whose fd numbers the watches use; it adds them.
    pub owner: i32,
    pub watches: Vec<Watch>,
}

/// Parse the `tfd:` lines. Each target must be open in `pid` under that
/// number, on the inode fdinfo names (else it was closed and the number
/// reused, or the watch belongs to another process's table).
pub(super) fn checkpoint(
    pid: i32,
    info: &FdInfo,
    fd_inode: &dyn Fn(i32) -> Option<u64>,
) -> Result<Epoll, String> {
    let mut watches = Vec::new();
    for (k, v) in info.extra.iter().filter(|(k, _)| k == "tfd") {
        let words: Vec<&str> = v.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        let ino_of = words.iter().find_map(|w| w.strip_prefix("ino:"));
        let (Some(fd), Some(events), Some(data), Some(ino)) = (
            words.first().and_then(|w| w.parse::<i32>().ok()),
            after("events:").and_then(|e| u32::from_str_radix(e, 16).ok()),
            after("data:").and_then(|d| u64::from_str_radix(d, 16).ok()),
            ino_of.and_then(|i| u64::from_str_radix(i, 16).ok()),
        ) else {
            return Err(format!("unreadable epoll watch line {k}: {v}"));
        };
        if fd_inode(fd) != Some(ino) {
            return Err(format!(
                "epoll watches fd {fd}, which pid {pid} no longer holds under that number"
            ));
        }
        watches.push(Watch { fd, events, data });
    }
    Ok(Epoll {
        owner: pid,
        watches,
    })
}

impl Epoll {
    fn open(&self) -> Result<OwnedFd, FileError> {
        Ok(crate::sys::event::epoll_create().doing("creating an epoll instance")?)
    }

    /// Add the watches; called in the owner with its fds at their numbers.
    /// Async-signal-safe (no allocation): it runs in a forked child.
    /// Add the saved watches to `epfd`, but those on fds `detached` says
    /// are stand-ins of detached devices: an `O_PATH` fd cannot be watched
    /// (EBADF), and the program learns of the unplug from its fd's errors
    /// and the replayed `remove` event instead.
    pub fn add_watches(
        &self,
        epfd: RawFd,
        detached: &dyn Fn(i32) -> bool,
    ) -> Result<(), (i32, io::Error)> {
        for w in self.watches.iter().filter(|w| !detached(w.fd)) {
            crate::sys::event::epoll_add(epfd, w.fd, w.events, w.data).map_err(|e| (w.fd, e))?;
        }
        Ok(())
    }
}

impl FdKind for Epoll {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        format!("epoll with {} watches", self.watches.len())
    }

    fn reason(&self, _: &Probe<'_>, _: &()) -> String {
        "recreated; its watches are added back by the process under the same fd numbers".into()
    }

    fn claims(fd: &Probe<'_>) -> bool {
        fd.is_anon("[eventpoll]")
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), _: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        use std::os::unix::fs::MetadataExt;
        let pid = fd.pid;
        let inode = |n: i32| {
            std::fs::metadata(format!("/proc/{pid}/fd/{n}"))
                .ok()
                .map(|m| m.ino())
        };
        Ok(checkpoint(pid, fd.info, &inode)?)
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, flags: u32, _: &mut (), _: &Restoring<'_>) -> FileResult<Opened> {
        let fd = self.open()?;
        super::kind::status_flags_as_saved(&fd, flags)?;
        Ok(fd.into())
    }
}
