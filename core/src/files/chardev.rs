//! Character devices other than terminals: the device table
//! (`crate::devices`) gives each its policy. Stateless ones (the mem
//! class: null, zero, full, random, urandom) are reopened by path at
//! restore with the device number checked; detached ones are recorded by
//! `devices::detach`, reattached ones (an X server's primary DRM card,
//! experimental) by `devices::reattach`; the rest are refused.

use super::{FileError, FileKind};
use crate::devices::{Detached, DevicePolicies, Reattached, Use};
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
    pub fn describe(&self) -> String {
        let class = if self.class.is_empty() {
            "unknown"
        } else {
            &self.class
        };
        crate::devices::describe(&self.path, (self.major, self.minor), class)
    }

    pub(super) fn restore(&self, flags: u32) -> Result<OwnedFd, FileError> {
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

/// Classify char device `st` opened at `target` (ptys and `/dev/tty` are
/// the pty code's) by the device table: the kind saved and why, or what
/// the device is and why it is refused. `o_path`: the fd is an `O_PATH` handle, which
/// holds nothing open on the device (a stand-in of an earlier restore).
/// `x_primary`: the holder is an X server and this is its primary card's
/// device number.
pub(super) fn checkpoint(
    target: &Path,
    st: &libc::stat,
    o_path: bool,
    x_primary: Option<(u32, u32)>,
    devices: &DevicePolicies,
) -> Result<(FileKind, String), (String, String)> {
    let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
    let c = devices.classify(target, major, minor, Use::of((major, minor), x_primary));
    tracing::debug!(major, minor, class = c.class(), policy = %c.decision.policy, "char device");
    if o_path {
        let d = Detached::checkpoint(&c, true);
        let reason = c.reason("an O_PATH handle, nothing open on the device: restored as such a handle (a dead stand-in)");
        return Ok((FileKind::Detached(Box::new(d)), reason));
    }
    match c.decision.policy {
        Policy::Reopen => {
            // The path the program opened may be gone (a chroot, a private
            // /dev): fall back to the node udev would make, whose identity
            // restore checks anyway.
            let path = match std::fs::metadata(target) {
                Ok(md) if md.file_type().is_char_device() => target.to_path_buf(),
                _ => match c.identity.as_ref().and_then(|i| i.devname.as_deref()) {
                    Some(name) => Path::new("/dev").join(name),
                    None => target.to_path_buf(),
                },
            };
            let reason = c.reason("reopened by path, major:minor checked");
            Ok((
                FileKind::CharDevice(CharDevice {
                    path,
                    major,
                    minor,
                    class: c.class().to_string(),
                }),
                reason,
            ))
        }
        Policy::Detach => {
            let reason = c.reason(
                "detached: a dead stand-in at restore (fstat shows the device, I/O fails with EBADF), its remove event replayed",
            );
            Ok((FileKind::Detached(Box::new(Detached::checkpoint(&c, false))), reason))
        }
        Policy::Reattach => match Reattached::checkpoint(&c, &devices.roots, &devices.reattach_signal) {
            Some(r) => {
                let reason = c.reason(&format!(
                    "Reattach (experimental): Xorg cannot drop its primary GPU through udev, so the live card (PCI slot {}) is opened again in place at restore and the server sent SIG{} to re-enter its VT; no remove event",
                    r.card.pci_slot.as_deref().unwrap_or("unknown"),
                    r.signal.trim_start_matches("SIG"),
                ));
                Ok((FileKind::Reattached(Box::new(r)), reason))
            }
            None => Err((
                c.describe(),
                c.reason("Reattach (experimental) is only for DRM cards (DEVTYPE drm_minor, DEVNAME dri/cardN) that sysfs knows"),
            )),
        },
        _ => Err((
            c.describe(),
            c.reason("refused (a --device-policy or devices.toml rule can detach it)"),
        )),
    }
}
