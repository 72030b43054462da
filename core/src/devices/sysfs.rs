//! A device's identity as sysfs and udev know it: the sysfs path of
//! `/sys/dev/char/MAJ:MIN`, its subsystem, the properties of its `uevent`
//! file, and udev's database entry `/run/udev/data/cMAJ:MIN` when udev runs.
//! The parsers are pure functions of the files' text; the reader only
//! fetches that text, with sizes bounded, from roots tests can move.

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Most bytes read from one sysfs `uevent` file or udev database file (a
/// real one is well under 4 KiB).
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Most properties kept from one file.
pub const MAX_PROPERTIES: usize = 512;

/// udev's database entry of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdevEntry {
    /// `E:KEY=value`: the properties rules added (`ID_*`, `ID_SEAT`, …).
    pub properties: Vec<(String, String)>,
    /// `G:tag`: every tag the device ever had (`seat`, `uaccess`, …).
    pub tags: Vec<String>,
    /// `Q:tag`: the tags of the device's last event.
    pub current_tags: Vec<String>,
    /// `S:link`: symlinks below `/dev` (`input/by-path/…`).
    pub symlinks: Vec<String>,
    /// `I:usec`: when udev first initialised the device (CLOCK_MONOTONIC).
    pub initialized_usec: Option<u64>,
}

/// Everything sysfs and udev say about one device node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// Below `/sys`, e.g. `/devices/pci0000:00/0000:00:02.0/drm/card0`.
    pub devpath: String,
    /// Last component of the device's `subsystem` link (`drm`, `input`…).
    pub subsystem: String,
    pub devtype: Option<String>,
    /// `DEVNAME` below `/dev`, e.g. `dri/card0`.
    pub devname: Option<String>,
    pub devnum: (u32, u32),
    /// The `uevent` file's properties, in order.
    pub uevent: Vec<(String, String)>,
    pub udev: Option<UdevEntry>,
}

impl DeviceIdentity {
    /// Bounds on an identity read from an image: at most 8 ×
    /// [`MAX_PROPERTIES`] strings of at most 4 KiB each.
    pub fn validate(&self) -> Result<(), String> {
        const MAX_STRING: usize = 4096;
        let udev = self.udev.iter().flat_map(|u| {
            u.properties
                .iter()
                .flat_map(|(k, v)| [k, v])
                .chain(&u.tags)
                .chain(&u.current_tags)
                .chain(&u.symlinks)
        });
        let strings = self
            .uevent
            .iter()
            .flat_map(|(k, v)| [k, v])
            .chain(udev)
            .chain([&self.devpath, &self.subsystem])
            .chain(&self.devtype)
            .chain(&self.devname);
        let mut count = 0;
        for s in strings {
            count += 1;
            if s.len() > MAX_STRING || count > 8 * MAX_PROPERTIES {
                return Err("device record with too many or too long properties".into());
            }
        }
        Ok(())
    }
}

/// `KEY=value` lines of a sysfs `uevent` file, in order. Lines without `=`
/// are skipped; at most [`MAX_PROPERTIES`] are kept.
pub fn parse_uevent(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .take(MAX_PROPERTIES)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// udev's database file format (`src/libsystemd/sd-device/device-private.c`):
/// one record per line, a letter, a colon, the value. Unknown letters (`W:`
/// watch handle, `V:` version, `L:` link priority) are skipped.
pub fn parse_udev_db(text: &str) -> UdevEntry {
    let mut e = UdevEntry::default();
    for line in text.lines() {
        let Some((tag, value)) = line.split_once(':') else {
            continue;
        };
        let full = e.properties.len() + e.tags.len() + e.current_tags.len() + e.symlinks.len()
            >= MAX_PROPERTIES;
        match tag {
            _ if full => break,
            "E" => {
                if let Some((k, v)) = value.split_once('=') {
                    e.properties.push((k.to_string(), v.to_string()));
                }
            }
            "G" => e.tags.push(value.to_string()),
            "Q" => e.current_tags.push(value.to_string()),
            "S" => e.symlinks.push(value.to_string()),
            "I" => e.initialized_usec = value.trim().parse().ok(),
            _ => {}
        }
    }
    e
}

/// The device path below `/sys` of a `/sys/dev/char/MAJ:MIN` link target
/// such as `../../devices/virtual/mem/zero`: the link lives two levels
/// below the root, so leading `..` climb to it. None for a target that
/// leaves the root or is absolute.
pub fn devpath_of_link(target: &Path) -> Option<String> {
    let mut parts: Vec<String> = vec!["dev".into(), "char".into()];
    for c in target.components() {
        match c {
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| format!("/{}", parts.join("/")))
}

/// The subsystem named by a `subsystem` link target (`../../../../class/drm`).
pub fn subsystem_of_link(target: &Path) -> Option<String> {
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

pub(super) fn read_bounded(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

pub(super) fn property<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
    props
        .iter()
        .find_map(|(k, v)| (k == key).then_some(v.as_str()))
}

/// Where identities are read from: `/sys` and `/run/udev/data` on a live
/// system; fixture trees in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoots {
    pub sysfs: PathBuf,
    pub udev_data: PathBuf,
}

impl Default for SysRoots {
    fn default() -> Self {
        Self {
            sysfs: PathBuf::from("/sys"),
            udev_data: PathBuf::from("/run/udev/data"),
        }
    }
}

impl SysRoots {
    /// The identity of char device `major:minor`, or None when sysfs does
    /// not know it (no `/sys/dev/char/MAJ:MIN` link). A missing udev entry
    /// is normal (no udevd); a missing or unreadable `uevent` file leaves
    /// the properties empty.
    pub fn char_device(&self, major: u32, minor: u32) -> Option<DeviceIdentity> {
        let link = self.sysfs.join(format!("dev/char/{major}:{minor}"));
        let devpath = devpath_of_link(&std::fs::read_link(&link).ok()?)?;
        let dir = self.sysfs.join(devpath.trim_start_matches('/'));
        let subsystem = std::fs::read_link(dir.join("subsystem"))
            .ok()
            .and_then(|t| subsystem_of_link(&t))
            .unwrap_or_default();
        let uevent = read_bounded(&dir.join("uevent"))
            .map(|t| parse_uevent(&t))
            .unwrap_or_default();
        let udev = read_bounded(&self.udev_data.join(format!("c{major}:{minor}")))
            .ok()
            .map(|t| parse_udev_db(&t));
        Some(DeviceIdentity {
            devtype: property(&uevent, "DEVTYPE").map(str::to_string),
            devname: property(&uevent, "DEVNAME").map(str::to_string),
            devpath,
            subsystem,
            devnum: (major, minor),
            uevent,
            udev,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `/sys/dev/char/226:0/uevent` of an Intel laptop's first card.
    pub const DRM_CARD0_UEVENT: &str = "MAJOR=226\nMINOR=0\nDEVNAME=dri/card0\nDEVTYPE=drm_minor\n";
    /// `/run/udev/data/c226:0` on the same laptop (systemd 252).
    pub const DRM_CARD0_UDEV: &str = "\
S:dri/by-path/pci-0000:00:02.0-card
I:4129551
E:ID_PATH=pci-0000:00:02.0
E:ID_PATH_TAG=pci-0000_00_02_0
E:ID_FOR_SEAT=drm-pci-0000_00_02_0
E:ID_SEAT=seat0
G:seat
G:uaccess
G:master-of-seat
Q:seat
Q:uaccess
Q:master-of-seat
V:1
";
    /// `/sys/dev/char/13:64/uevent`: an evdev node (keyboard).
    pub const EVDEV_UEVENT: &str = "MAJOR=13\nMINOR=64\nDEVNAME=input/event0\n";
    /// `/sys/dev/char/116:2/uevent`: an ALSA PCM playback node.
    pub const ALSA_PCM_UEVENT: &str = "MAJOR=116\nMINOR=2\nDEVNAME=snd/pcmC0D0p\n";

    #[test]
    fn uevent_file_properties_in_order() {
        let p = parse_uevent(DRM_CARD0_UEVENT);
        assert_eq!(
            p,
            vec![
                ("MAJOR".into(), "226".into()),
                ("MINOR".into(), "0".into()),
                ("DEVNAME".into(), "dri/card0".into()),
                ("DEVTYPE".into(), "drm_minor".into()),
            ]
        );
        assert_eq!(
            parse_uevent("no equals\n=empty key\nA=b=c\n"),
            vec![("A".into(), "b=c".into())]
        );
        let many: String = (0..2000).map(|i| format!("K{i}=v\n")).collect();
        assert_eq!(parse_uevent(&many).len(), MAX_PROPERTIES);
    }

    #[test]
    fn udev_database_entry() {
        let e = parse_udev_db(DRM_CARD0_UDEV);
        assert_eq!(e.symlinks, vec!["dri/by-path/pci-0000:00:02.0-card"]);
        assert_eq!(e.initialized_usec, Some(4129551));
        assert_eq!(e.properties.len(), 4);
        assert_eq!(e.properties[3], ("ID_SEAT".into(), "seat0".into()));
        assert_eq!(e.tags, vec!["seat", "uaccess", "master-of-seat"]);
        assert_eq!(e.current_tags, e.tags);
        assert_eq!(
            parse_udev_db("garbage\nE:NOEQUALS\nI:x\n"),
            UdevEntry::default()
        );
    }

    #[test]
    fn links_resolve_below_the_root_only() {
        assert_eq!(
            devpath_of_link(Path::new("../../devices/virtual/mem/zero")).as_deref(),
            Some("/devices/virtual/mem/zero")
        );
        assert_eq!(devpath_of_link(Path::new("../../../etc")), None);
        assert_eq!(devpath_of_link(Path::new("/etc/passwd")), None);
        assert_eq!(
            subsystem_of_link(Path::new("../../../../class/drm")).as_deref(),
            Some("drm")
        );
    }

    /// A fixture sysfs tree (and udev database) with one char device, laid
    /// out as the kernel does: `dev/char/MAJ:MIN` links to the device
    /// directory, whose `subsystem` links to `class/NAME`.
    pub fn fake_device(
        root: &Path,
        devnum: (u32, u32),
        devpath: &str,
        subsystem: &str,
        uevent: &str,
        udev: Option<&str>,
    ) {
        use std::os::unix::fs::symlink;
        let dir = root.join("sys").join(devpath.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(root.join("sys/dev/char")).unwrap();
        std::fs::create_dir_all(root.join(format!("sys/class/{subsystem}"))).unwrap();
        std::fs::create_dir_all(root.join("udev")).unwrap();
        std::fs::write(dir.join("uevent"), uevent).unwrap();
        let depth = devpath.trim_start_matches('/').split('/').count();
        symlink(
            format!("{}class/{subsystem}", "../".repeat(depth)),
            dir.join("subsystem"),
        )
        .unwrap();
        symlink(
            format!("../..{devpath}"),
            root.join(format!("sys/dev/char/{}:{}", devnum.0, devnum.1)),
        )
        .unwrap();
        if let Some(db) = udev {
            std::fs::write(root.join(format!("udev/c{}:{}", devnum.0, devnum.1)), db).unwrap();
        }
    }

    pub fn roots(root: &Path) -> SysRoots {
        SysRoots {
            sysfs: root.join("sys"),
            udev_data: root.join("udev"),
        }
    }

    #[test]
    fn identity_read_from_a_fixture_tree() {
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
        let id = roots(t.path()).char_device(226, 0).expect("known device");
        assert_eq!(id.devpath, devpath);
        assert_eq!(id.subsystem, "drm");
        assert_eq!(id.devtype.as_deref(), Some("drm_minor"));
        assert_eq!(id.devname.as_deref(), Some("dri/card0"));
        assert_eq!(id.udev.as_ref().map(|u| u.tags.len()), Some(3));
        assert_eq!(roots(t.path()).char_device(226, 1), None);
    }

    #[test]
    fn identity_of_a_device_of_this_machine() {
        // /dev/zero is on every machine this runs on; udev may or may not be.
        let id = SysRoots::default()
            .char_device(1, 5)
            .expect("/sys knows 1:5");
        assert_eq!(id.devpath, "/devices/virtual/mem/zero");
        assert_eq!(id.subsystem, "mem");
        assert_eq!(id.devname.as_deref(), Some("zero"));
    }
}
