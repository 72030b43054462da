//! Character devices other than terminals: the device table
//! (`crate::devices`) gives each its policy. Stateless ones (the mem
//! class: null, zero, full, random, urandom) are reopened by path at
//! restore with the device number checked; detached ones are recorded by
//! `devices::detach`, reattached ones (an X server's primary DRM card,
//! experimental) by `devices::reattach`; the rest are refused. All three
//! records are made from the device table's account of the device
//! ([`Probe::device`]).

use super::error::{FileError, Refusal, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::devices::reattach::Reopened;
use crate::devices::{Detached, Reattached};
use crate::policy::Policy;
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharDevice {
    pub path: PathBuf,
    pub major: u32,
    pub minor: u32,
    /// The sysfs subsystem, for the report (empty in older images).
    #[serde(default)]
    pub class: String,
}

impl CharDevice {
    /// Reopen the device by path.
    fn open(&self, flags: u32) -> Result<OwnedFd, FileError> {
        // The device number is checked before the device is opened: opening
        // another device may already do something.
        let expected = (self.major, self.minor);
        super::regular::open_as(
            &self.path,
            flags as i32 & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL),
            libc::S_IFCHR,
            |st| {
                let found = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
                if found == expected {
                    return Ok(());
                }
                Err(FileError::DeviceMismatch {
                    path: self.path.clone(),
                    expected: format!("char {}:{}", self.major, self.minor),
                    found: format!("char {}:{}", found.0, found.1),
                })
            },
        )
    }
}

impl FdKind for CharDevice {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        let class = if self.class.is_empty() {
            "unknown"
        } else {
            &self.class
        };
        crate::devices::describe(&self.path, (self.major, self.minor), class)
    }

    fn policy(&self) -> Policy {
        Policy::Reopen
    }

    fn reason(&self, fd: &Probe<'_>, _: &()) -> String {
        fd.device().reason("reopened by path, major:minor checked")
    }

    /// A char device the device table does not detach or reattach: reopened
    /// when the table says so, else refused.
    fn claims(fd: &Probe<'_>) -> bool {
        is_device(fd)
            && !fd.is_o_path()
            && !matches!(
                fd.device().decision.policy,
                Policy::Detach | Policy::Reattach
            )
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), _: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        let c = fd.device();
        if c.decision.policy != Policy::Reopen {
            return Err(refused(
                c,
                "refused (a --device-policy or devices.toml rule can detach it)",
            ));
        }
        // The path the program opened may be gone (a chroot, a private
        // /dev): fall back to the node udev would make, whose identity
        // restore checks anyway.
        let path = match std::fs::metadata(fd.target) {
            Ok(md) if md.file_type().is_char_device() => fd.target.to_path_buf(),
            _ => match c.identity.as_ref().and_then(|i| i.devname.as_deref()) {
                Some(name) => Path::new("/dev").join(name),
                None => fd.target.to_path_buf(),
            },
        };
        let (major, minor) = fd.rdev();
        Ok(CharDevice {
            path,
            major,
            minor,
            class: c.class().to_string(),
        })
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, flags: u32, _: &mut (), _: &Restoring<'_>) -> FileResult<Opened> {
        self.open(flags).map(Opened::from)
    }
}

/// A char device other than a terminal (ptys and `/dev/tty` are the pty
/// module's).
fn is_device(fd: &Probe<'_>) -> bool {
    let (major, minor) = fd.rdev();
    fd.file_type() == libc::S_IFCHR
        && !super::pty::is_master(major, minor)
        && !super::pty::is_slave_major(major)
        && !super::pty::is_dev_tty(major, minor)
}

/// A refusal naming the device as the device table knows it.
fn refused(c: &crate::devices::Classified, what_happens: &str) -> Unsaved {
    Unsaved::Refused(Refusal {
        what: Some(c.describe()),
        ..Refusal::from(c.reason(what_happens))
    })
}

/// Detached by simulated hot-unplug, or an `O_PATH` handle (which holds
/// nothing open on the device: a stand-in of an earlier restore).
impl FdKind for Box<Detached> {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        Detached::describe(self)
    }

    fn policy(&self) -> Policy {
        Policy::Detach
    }

    fn reason(&self, fd: &Probe<'_>, _: &()) -> String {
        fd.device().reason(if self.handle_only {
            "an O_PATH handle, nothing open on the device: restored as such a handle (a dead stand-in)"
        } else {
            "detached: a dead stand-in at restore (fstat shows the device, I/O fails with EBADF), its remove event replayed"
        })
    }

    fn claims(fd: &Probe<'_>) -> bool {
        is_device(fd) && (fd.is_o_path() || fd.device().decision.policy == Policy::Detach)
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), _: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        Ok(Box::new(Detached::checkpoint(fd.device(), fd.is_o_path())))
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, _: u32, _: &mut (), _: &Restoring<'_>) -> FileResult<Opened> {
        Ok(Detached::restore(self)?.into())
    }
}

/// An X server's primary DRM card (experimental): the live card reopened
/// in place at restore.
impl FdKind for Box<Reattached> {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        Reattached::describe(self)
    }

    fn policy(&self) -> Policy {
        Policy::Reattach
    }

    fn reason(&self, fd: &Probe<'_>, _: &()) -> String {
        fd.device().reason(&format!(
            "Reattach (experimental): Xorg cannot drop its primary GPU through udev, so the live card (PCI slot {}) is opened again in place at restore and the server sent SIG{} to re-enter its VT; no remove event",
            self.card.pci_slot.as_deref().unwrap_or("unknown"),
            self.signal.trim_start_matches("SIG"),
        ))
    }

    fn claims(fd: &Probe<'_>) -> bool {
        is_device(fd) && !fd.is_o_path() && fd.device().decision.policy == Policy::Reattach
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), _: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        let c = fd.device();
        match Reattached::checkpoint(c, &fd.devices.roots, &fd.devices.reattach_signal) {
            Some(r) => Ok(Box::new(r)),
            None => Err(refused(
                c,
                "Reattach (experimental) is only for DRM cards (DEVTYPE drm_minor, DEVNAME dri/cardN) that sysfs knows",
            )),
        }
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, flags: u32, _: &mut (), cx: &Restoring<'_>) -> FileResult<Opened> {
        Ok(match Reattached::restore(self, flags, cx.sys)? {
            Reopened::Live(fd) => Opened {
                fd,
                live_device: true,
            },
            Reopened::StandIn(fd) => fd.into(),
        })
    }
}
