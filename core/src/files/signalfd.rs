//! signalfd: the set of signals it reads, from fdinfo. The signals
//! themselves are the process's pending signals, saved with it.

use super::error::{FileError, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::procfs::FdInfo;
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalFd {
    /// Bit n-1 set: signal n.
    pub mask: u64,
}

pub(super) fn checkpoint(info: &FdInfo) -> Result<SignalFd, String> {
    let mask = info
        .get("sigmask")
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .ok_or("signalfd without a sigmask in fdinfo")?;
    Ok(SignalFd { mask })
}

impl SignalFd {
    fn open(&self, flags: u32) -> Result<OwnedFd, FileError> {
        let mut sfd_flags = libc::SFD_CLOEXEC;
        if flags as i32 & libc::O_NONBLOCK != 0 {
            sfd_flags |= libc::SFD_NONBLOCK;
        }
        // The kernel's sigset is the mask's bytes; signalfd4 takes its size.
        let mask = self.mask;
        Ok(crate::sys::event::signalfd(mask, sfd_flags).doing("creating a signalfd")?)
    }
}

impl FdKind for SignalFd {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        format!("signalfd for signal mask {:#x}", self.mask)
    }

    fn reason(&self, _: &Probe<'_>, _: &()) -> String {
        "recreated with its signal mask".into()
    }

    fn claims(fd: &Probe<'_>) -> bool {
        fd.is_anon("[signalfd]")
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
