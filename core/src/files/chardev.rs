//! Character devices that hold no state (the kernel's mem class: null,
//! zero, full, random, urandom): reopened by path at restore, with the
//! device number checked. Other devices are for the device layer
//! (detach by simulated hot-unplug) and are refused here.

use super::{FileError, FileKind};
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharDevice {
    pub path: PathBuf,
    pub major: u32,
    pub minor: u32,
}

/// Stateless devices that are safe to reopen: (major, minor, name).
pub const REOPENABLE: &[(u32, u32, &str)] = &[
    (1, 3, "null"),
    (1, 5, "zero"),
    (1, 7, "full"),
    (1, 8, "random"),
    (1, 9, "urandom"),
];

impl CharDevice {
    pub fn describe(&self) -> String {
        format!(
            "char device {} ({}:{})",
            self.path.display(),
            self.major,
            self.minor
        )
    }

    pub(super) fn restore(&self, flags: u32) -> Result<OwnedFd, FileError> {
        let fd =
            super::regular::open_path(&self.path, flags as i32 & !(libc::O_CREAT | libc::O_TRUNC))?;
        let st = super::fstat(&fd).map_err(|source| FileError::Path {
            op: "fstat",
            path: self.path.clone(),
            source,
        })?;
        let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
        let is_char = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
        if !is_char || (major, minor) != (self.major, self.minor) {
            return Err(FileError::DeviceMismatch {
                path: self.path.clone(),
                expected: format!("char {}:{}", self.major, self.minor),
                found: format!(
                    "{}{major}:{minor}",
                    if is_char {
                        "char "
                    } else {
                        "not a char device, "
                    }
                ),
            });
        }
        Ok(fd)
    }
}

pub(super) fn checkpoint(target: &Path, st: &libc::stat) -> Result<FileKind, String> {
    let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
    if !REOPENABLE
        .iter()
        .any(|&(ma, mi, _)| (ma, mi) == (major, minor))
    {
        return Err(format!(
            "char device {major}:{minor} ({}) is not a stateless device; terminals and device detach are not supported yet",
            target.display()
        ));
    }
    // The path the program opened may be gone (a chroot, a private /dev):
    // fall back to the canonical node, whose identity restore checks anyway.
    let path = match std::fs::metadata(target) {
        Ok(md) if md.file_type().is_char_device() => target.to_path_buf(),
        _ => {
            let name = REOPENABLE
                .iter()
                .find(|d| (d.0, d.1) == (major, minor))
                .map(|d| d.2);
            PathBuf::from(format!("/dev/{}", name.unwrap_or("null")))
        }
    };
    Ok(FileKind::CharDevice(CharDevice { path, major, minor }))
}
