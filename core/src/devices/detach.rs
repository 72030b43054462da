//! A detached device (simulated hot-unplug). At checkpoint only its
//! identity is recorded, with the `remove` event the uevent proxy replays
//! into the restored session; nothing is read from the device. At restore
//! its fd number holds a dead stand-in: an `O_PATH` descriptor of the
//! device node, on which `fstat` still reports the device while read,
//! write, ioctl and mmap fail with EBADF, the way an fd of an unplugged
//! device stops working. When the node is gone (or is another device now),
//! the stand-in is of a placeholder node made in [`PLACEHOLDER_DIR`],
//! opened and unlinked at once.

use super::error::DeviceError;
use super::policy::{describe, Classified};
use super::sysfs::{DeviceIdentity, MAX_PROPERTIES};
use crate::uevent::Uevent;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tracing::debug;

/// Where placeholder nodes are made (root only, 0700); each lives only
/// between its `mknod` and the `unlink` right after the `open`.
pub const PLACEHOLDER_DIR: &str = "/run/hiber/stand-ins";
/// Longest string accepted from an image in a device record.
const MAX_STRING: usize = 4096;

/// What an image holds of a device whose state it does not save (detached
/// or reattached): which node, which device, and the rule that decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The node the program opened.
    pub path: PathBuf,
    pub major: u32,
    pub minor: u32,
    /// The sysfs subsystem, `unknown` when sysfs did not know the device.
    pub class: String,
    /// The rule that decided its policy ("class drm (built-in)").
    pub rule: String,
    pub identity: Option<DeviceIdentity>,
}

impl DeviceRecord {
    pub fn of(c: &Classified) -> Self {
        Self {
            path: c.path.clone(),
            major: c.devnum.0,
            minor: c.devnum.1,
            class: c.class().to_string(),
            rule: c.decision.describe_rule(),
            identity: c.identity.clone(),
        }
    }

    pub fn describe(&self) -> String {
        describe(&self.path, (self.major, self.minor), &self.class)
    }

    /// Bounds on what an image may hold here.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(id) = &self.identity {
            id.validate()?;
        }
        if self.major > 0xfff || self.minor > 0xf_ffff {
            return Err(format!("device number {}:{}", self.major, self.minor));
        }
        if self.path.as_os_str().len() > MAX_STRING {
            return Err("device path too long".into());
        }
        Ok(())
    }

    /// The dead stand-in for this device (see the module text).
    pub fn stand_in(&self) -> Result<OwnedFd, DeviceError> {
        stand_in(
            &self.path,
            (self.major, self.minor),
            Path::new(PLACEHOLDER_DIR),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    #[serde(flatten)]
    pub device: DeviceRecord,
    /// The synthetic hot-unplug of the device, replayed at restore.
    pub remove: Uevent,
    /// The fd was already an `O_PATH` handle (a stand-in of an earlier
    /// restore): nothing was open on the device.
    #[serde(default)]
    pub handle_only: bool,
}

/// The synthetic `remove` of every device the saved processes had open and
/// lose at restore, once per device: what the uevent proxy replays. An fd
/// that was already a stand-in (of an earlier restore) had its remove then.
pub fn removes<'a>(detached: impl IntoIterator<Item = &'a Detached>) -> Vec<Uevent> {
    let mut out: Vec<Uevent> = Vec::new();
    for d in detached {
        let seen = out
            .iter()
            .any(|e| e.devpath == d.remove.devpath && e.devnum == d.remove.devnum);
        if !d.handle_only && !seen {
            out.push(d.remove.clone());
        }
    }
    out
}

impl Detached {
    pub fn describe(&self) -> String {
        self.device.describe()
    }

    /// Record a device the table detaches.
    pub fn checkpoint(c: &Classified, handle_only: bool) -> Self {
        Self {
            device: DeviceRecord::of(c),
            remove: remove_event(c.identity.as_ref(), c.devnum),
            handle_only,
        }
    }

    /// Bounds on what an image may hold here.
    pub fn validate(&self) -> Result<(), String> {
        self.device.validate()?;
        let strings = self
            .remove
            .properties
            .iter()
            .flat_map(|(k, v)| [k, v])
            .chain(&self.remove.tags);
        let mut count = 0;
        for s in strings {
            count += 1;
            if s.len() > MAX_STRING || count > 8 * MAX_PROPERTIES {
                return Err("device record with too many or too long properties".into());
            }
        }
        Ok(())
    }

    /// The dead stand-in for this device (see the module text).
    pub fn restore(&self) -> Result<OwnedFd, DeviceError> {
        self.device.stand_in()
    }
}

/// The `remove` event of a device, as udev would broadcast it: the
/// uevent file's properties, then the udev database's, without the keys
/// the record carries in fields of their own.
pub fn remove_event(identity: Option<&DeviceIdentity>, devnum: (u32, u32)) -> Uevent {
    let Some(id) = identity else {
        return Uevent {
            action: "remove".into(),
            devnum: Some(devnum),
            ..Uevent::default()
        };
    };
    const OWN_FIELDS: &[&str] = &[
        "ACTION",
        "DEVPATH",
        "SUBSYSTEM",
        "DEVTYPE",
        "DEVNAME",
        "MAJOR",
        "MINOR",
        "SEQNUM",
    ];
    let mut properties: Vec<(String, String)> = Vec::new();
    let udev_props = id.udev.iter().flat_map(|u| &u.properties);
    for (k, v) in id.uevent.iter().chain(udev_props) {
        if !OWN_FIELDS.contains(&k.as_str()) && !properties.iter().any(|(pk, _)| pk == k) {
            properties.push((k.clone(), v.clone()));
        }
    }
    Uevent {
        action: "remove".into(),
        devpath: id.devpath.clone(),
        subsystem: id.subsystem.clone(),
        devtype: id.devtype.clone(),
        devname: id.devname.clone(),
        devnum: Some(devnum),
        seqnum: 0,
        properties,
        tags: id.udev.as_ref().map(|u| u.tags.clone()).unwrap_or_default(),
    }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn open_o_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // O_PATH opens nothing on the device itself.
    crate::sys::fs::open(&c, libc::O_PATH | libc::O_CLOEXEC, 0)
}

fn is_char_device(fd: &OwnedFd, devnum: (u32, u32)) -> bool {
    crate::sys::fd::fstat(fd).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && (libc::major(st.st_rdev), libc::minor(st.st_rdev)) == devnum
    })
}

/// An `O_PATH` fd whose `fstat` reports char device `devnum`: of `path`
/// when that is still the device, else of a placeholder node made in
/// `placeholders` (mode 0: not even reopenable through `/proc/self/fd`
/// by anyone but root) and unlinked at once.
pub fn stand_in(
    path: &Path,
    devnum: (u32, u32),
    placeholders: &Path,
) -> Result<OwnedFd, DeviceError> {
    if let Ok(fd) = open_o_path(path) {
        if is_char_device(&fd, devnum) {
            return Ok(fd);
        }
    }
    let err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| DeviceError::StandIn {
            major: devnum.0,
            minor: devnum.1,
            path,
            op,
            source,
        }
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(placeholders)
            .map_err(err("creating the placeholder directory", placeholders))?;
    }
    // Unique per restorer and call: concurrent restores never collide.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let node = placeholders.join(format!(
        "char-{}-{}.{}.{n}",
        devnum.0,
        devnum.1,
        std::process::id()
    ));
    let c = cstring(&node).map_err(err("naming the placeholder", &node))?;
    let dev = libc::makedev(devnum.0, devnum.1);
    crate::sys::fs::mknod_char(&c, dev).map_err(err("mknod", &node))?;
    let fd = open_o_path(&node);
    let _ = std::fs::remove_file(&node);
    let fd = fd.map_err(err("opening the placeholder", &node))?;
    debug!(path = %path.display(), major = devnum.0, minor = devnum.1, "stand-in of a placeholder node");
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::super::policy::DevicePolicies;
    use super::super::sysfs::tests::*;
    use super::*;
    use std::os::fd::AsRawFd;

    fn errno_of<T>(r: io::Result<T>) -> Option<i32> {
        r.err().map(|e| e.raw_os_error().unwrap_or(0))
    }

    fn assert_dead(fd: &OwnedFd, devnum: (u32, u32)) {
        assert!(is_char_device(fd, devnum), "fstat reports the device");
        let mut b = [0u8; 8];
        let r = crate::sys::fd::read(fd.as_raw_fd(), &mut b);
        assert_eq!(errno_of(r), Some(libc::EBADF), "read");
        let r = crate::sys::fd::write(fd.as_raw_fd(), &b);
        assert_eq!(errno_of(r), Some(libc::EBADF), "write");
        let r = crate::sys::fd::queued_bytes(fd.as_raw_fd());
        assert_eq!(errno_of(r), Some(libc::EBADF), "ioctl");
        let r = crate::sys::mm::Mapping::private_read(fd, 4096);
        assert_eq!(errno_of(r), Some(libc::EBADF), "mmap");
    }

    #[test]
    fn stand_in_of_the_live_node_is_dead_but_reports_the_device() {
        let t = tempfile::tempdir().unwrap();
        let fd = stand_in(Path::new("/dev/full"), (1, 7), t.path()).unwrap();
        assert_dead(&fd, (1, 7));
        let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(target, Path::new("/dev/full"));
    }

    #[test]
    fn stand_in_of_a_gone_node_is_a_placeholder_left_nowhere() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("stand-ins");
        // Not there at all, and there but another device.
        for path in [Path::new("/dev/dri/card-gone"), Path::new("/dev/null")] {
            let fd = stand_in(path, (226, 0), &dir).unwrap();
            assert_dead(&fd, (226, 0));
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "placeholders unlinked"
        );
    }

    #[test]
    fn drm_card_record_and_its_remove_event() {
        let t = tempfile::tempdir().unwrap();
        let devpath = "/devices/pci0000:00/0000:00:02.0/drm/card0";
        fake_device(
            t.path(),
            (226, 0),
            devpath,
            "drm",
            DRM_CARD0_UEVENT,
            Some(DRM_CARD0_UDEV),
        );
        let p = DevicePolicies {
            roots: roots(t.path()),
            ..DevicePolicies::default()
        };
        let d = Detached::checkpoint(
            &p.classify(
                Path::new("/dev/dri/card0"),
                226,
                0,
                super::super::policy::Use::Plain,
            ),
            false,
        );
        assert_eq!(d.device.class, "drm");
        assert_eq!(d.device.rule, "class drm (built-in)");
        assert_eq!(
            d.describe(),
            "char device /dev/dri/card0 (226:0), class drm"
        );
        let e = &d.remove;
        assert_eq!(e.action, "remove");
        assert_eq!(e.devpath, devpath);
        assert_eq!(e.subsystem, "drm");
        assert_eq!(e.devtype.as_deref(), Some("drm_minor"));
        assert_eq!(e.devname.as_deref(), Some("dri/card0"));
        assert_eq!(e.devnum, Some((226, 0)));
        assert_eq!(e.seqnum, 0);
        let keys: Vec<&str> = e.properties.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ID_PATH", "ID_PATH_TAG", "ID_FOR_SEAT", "ID_SEAT"]);
        assert_eq!(e.tags, ["seat", "uaccess", "master-of-seat"]);
        assert_eq!(d.validate(), Ok(()));

        let mut hostile = d.clone();
        hostile.remove.properties = vec![("K".into(), "v".repeat(MAX_STRING + 1))];
        assert!(hostile.validate().is_err());
        hostile = d;
        hostile.device.major = 1 << 20;
        assert!(hostile.validate().is_err());
    }

    #[test]
    fn unknown_device_still_gets_a_remove_with_its_number() {
        let e = remove_event(None, (240, 3));
        assert_eq!((e.action.as_str(), e.devnum), ("remove", Some((240, 3))));
    }
}
