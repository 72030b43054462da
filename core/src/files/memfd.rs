//! memfd file descriptors. The memory itself is a shared object of
//! `Snapshot::shmem` (`crate::memory::shmem`), shared with the memfd's mappings and
//! other fds; the fd keeps only which object it opens and its offset. At
//! restore each saved open file is a fresh open of the recreated memfd,
//! with the saved access mode and offset.

use super::error::{FileError, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::memory::shmem::{SharedObjects, ShmemTable};
use crate::procfs::FdInfo;
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemfdFile {
    /// Index into `Snapshot::shmem`.
    pub object: usize,
    pub name: String,
    pub pos: u64,
}

impl MemfdFile {
    fn open(&self, flags: u32, shared: &SharedObjects) -> Result<OwnedFd, FileError> {
        let memfd = shared.file(self.object).ok_or(FileError::BadReference {
            what: "memfd object",
            index: self.object,
        })?;
        let keep = (libc::O_ACCMODE | libc::O_APPEND | libc::O_NONBLOCK) as u32;
        let fd = super::regular::open_path(
            Path::new(&format!("/proc/self/fd/{}", memfd.as_raw_fd())),
            (flags & keep) as i32,
        )?;
        crate::sys::fd::seek_to(&fd, self.pos as i64).doing("seeking a memfd")?;
        Ok(fd)
    }
}

/// Classify a memfd fd; `target` is its /proc link (`/memfd:NAME (deleted)`).
pub(super) fn checkpoint(
    held: &OwnedFd,
    target: &str,
    info: &FdInfo,
    st: &libc::stat,
    shmem: &mut ShmemTable,
) -> Result<MemfdFile, String> {
    let name = target
        .strip_prefix("/memfd:")
        .unwrap_or(target)
        .strip_suffix(" (deleted)")
        .unwrap_or(target);
    let copy = held
        .try_clone()
        .map_err(|e| format!("duplicating the memfd: {e}"))?;
    let object = shmem.of_memfd(copy, st, name);
    Ok(MemfdFile {
        object,
        name: name.to_string(),
        pos: info.pos,
    })
}

impl FdKind for MemfdFile {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        format!("memfd {}", self.name)
    }

    fn reason(&self, _: &Probe<'_>, _: &()) -> String {
        "recreated with its name, size, contents and seals; shared with its mappings".into()
    }

    fn claims(fd: &Probe<'_>) -> bool {
        fd.file_type() == libc::S_IFREG && fd.name.starts_with("/memfd:")
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), cx: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        Ok(checkpoint(fd.file, fd.name, fd.info, fd.stat, cx.shmem)?)
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, flags: u32, _: &mut (), cx: &Restoring<'_>) -> FileResult<Opened> {
        self.open(flags, cx.shared).map(Opened::from)
    }
}
