//! eventfd: its counter and semaphore mode, from fdinfo.

use super::error::{FileError, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::procfs::FdInfo;
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFd {
    pub count: u64,
    pub semaphore: bool,
}

impl EventFd {
    fn open(&self, flags: u32) -> Result<OwnedFd, FileError> {
        let mut efd_flags = libc::EFD_CLOEXEC;
        if self.semaphore {
            efd_flags |= libc::EFD_SEMAPHORE;
        }
        if flags as i32 & libc::O_NONBLOCK != 0 {
            efd_flags |= libc::EFD_NONBLOCK;
        }
        // eventfd's initial value is an unsigned int; larger counts are
        // added with a write.
        let initial = u32::try_from(self.count).unwrap_or(0);
        let fd = crate::sys::event::eventfd(initial, efd_flags).doing("creating an eventfd")?;
        if u64::from(initial) != self.count {
            use std::io::Write;
            let mut f = std::fs::File::from(fd.try_clone().doing("duplicating an eventfd")?);
            f.write_all(&self.count.to_ne_bytes())
                .doing("setting an eventfd counter")?;
        }
        Ok(fd)
    }
}

pub(super) fn checkpoint(info: &FdInfo) -> Result<EventFd, String> {
    let count = info
        .eventfd_count()
        .ok_or_else(|| "eventfd without an eventfd-count line in fdinfo".to_string())?;
    let semaphore = info
        .get("eventfd-semaphore")
        .is_some_and(|v| v.trim() == "1");
    Ok(EventFd { count, semaphore })
}

impl FdKind for EventFd {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        "eventfd".into()
    }

    fn reason(&self, _: &Probe<'_>, _: &()) -> String {
        "recreated with its counter and mode".into()
    }

    fn claims(fd: &Probe<'_>) -> bool {
        fd.is_anon("[eventfd]")
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
