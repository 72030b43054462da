//! timerfd: its clock, remaining time, interval and expirations not yet
//! read, from fdinfo. Restored relative to the restore: the time left is
//! the time left at checkpoint.

use super::error::{FileError, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::procfs::FdInfo;
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerFd {
    pub clockid: i32,
    /// Expirations not yet read.
    pub ticks: u64,
    /// `TFD_TIMER_ABSTIME` / `TFD_TIMER_CANCEL_ON_SET` as set by the program.
    pub settime_flags: u32,
    /// Time left, (seconds, nanoseconds); zero when disarmed.
    pub value: (i64, i64),
    pub interval: (i64, i64),
}

fn pair(v: &str) -> Option<(i64, i64)> {
    let v = v.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (a, b) = v.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

pub(super) fn checkpoint(info: &FdInfo) -> Result<TimerFd, String> {
    let field = |k: &str| {
        info.get(k)
            .ok_or_else(|| format!("timerfd without {k} in fdinfo"))
    };
    let t = TimerFd {
        clockid: field("clockid")?
            .trim()
            .parse()
            .map_err(|_| "bad timerfd clockid")?,
        ticks: field("ticks")?
            .trim()
            .parse()
            .map_err(|_| "bad timerfd ticks")?,
        settime_flags: u32::from_str_radix(field("settime flags")?.trim(), 8)
            .map_err(|_| "bad timerfd flags")?,
        value: pair(field("it_value")?).ok_or("bad timerfd it_value")?,
        interval: pair(field("it_interval")?).ok_or("bad timerfd it_interval")?,
    };
    Ok(t)
}

impl TimerFd {
    fn open(&self, flags: u32) -> Result<OwnedFd, FileError> {
        let mut tfd_flags = libc::TFD_CLOEXEC;
        if flags as i32 & libc::O_NONBLOCK != 0 {
            tfd_flags |= libc::TFD_NONBLOCK;
        }
        let fd = crate::sys::event::timerfd(self.clockid, tfd_flags).doing("creating a timerfd")?;
        // Relative: the absolute deadline of the saved timer is gone with
        // its clock's origin (another boot, another machine).
        crate::sys::event::timerfd_arm(&fd, self.value, self.interval).doing("arming a timerfd")?;
        if self.ticks > 0 {
            crate::sys::event::timerfd_set_ticks(&fd, self.ticks)
                .doing("setting a timerfd's pending expirations")?;
        }
        Ok(fd)
    }
}

impl FdKind for TimerFd {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        format!(
            "timerfd (clock {}, {}.{:09} s left)",
            self.clockid, self.value.0, self.value.1
        )
    }

    fn reason(&self, _: &Probe<'_>, _: &()) -> String {
        "time left, interval and unread expirations restored; time left counts from the restore"
            .into()
    }

    fn claims(fd: &Probe<'_>) -> bool {
        fd.is_anon("[timerfd]")
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
