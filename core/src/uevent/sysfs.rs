//! The devices present now, as the cold-plug `add` events of the proxy's
//! synthetic sequence: each device of a subsystem (`/sys/class/NAME` or
//! `/sys/bus/NAME/devices`), its `uevent` file, and udev's database entry
//! (`/run/udev/data/…`) where a udevd keeps one.

use super::{Uevent, UeventError, MAX_PROPERTIES};
use crate::sys::wrap::WrapIoResult;
use std::io::Read;
use std::path::Path;

/// Most devices one subsystem may list (a restore replays them all).
pub const MAX_DEVICES: usize = 4096;
/// A sysfs attribute is at most a page; udev's database entries are small.
const MAX_FILE: u64 = 64 * 1024;

/// `KEY=VALUE` lines of a sysfs `uevent` file.
pub fn parse_uevent_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .take(MAX_PROPERTIES)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What udev's database says about a device (`/run/udev/data/c1:5`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdevDb {
    /// `E:` lines: properties the rules set (`ID_*`, …).
    pub properties: Vec<(String, String)>,
    /// `G:` lines: every tag.
    pub tags: Vec<String>,
    /// `Q:` lines: the tags the last event set.
    pub current_tags: Vec<String>,
    /// `I:` line: when udev first saw the device (CLOCK_MONOTONIC, µs).
    pub usec_initialized: Option<u64>,
}

pub fn parse_udev_db(text: &str) -> UdevDb {
    let mut db = UdevDb::default();
    for line in text.lines().take(4 * MAX_PROPERTIES) {
        let Some((kind, rest)) = line.split_once(':') else {
            continue;
        };
        match kind {
            "E" => {
                if let Some((k, v)) = rest.split_once('=') {
                    db.properties.push((k.into(), v.into()));
                }
            }
            "G" => db.tags.push(rest.into()),
            "Q" => db.current_tags.push(rest.into()),
            "I" => db.usec_initialized = rest.parse().ok(),
            _ => {}
        }
    }
    db.properties.truncate(MAX_PROPERTIES / 2);
    db
}

/// A subsystem name from an image, checked before it becomes a path.
pub fn valid_subsystem(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// The cold-plug event for the device at `devpath`, from the text of its
/// uevent file and udev's database entry for it.
pub fn add_event(
    devpath: &str,
    subsystem: &str,
    uevent_file: &str,
    db: Option<&UdevDb>,
) -> Result<Uevent, UeventError> {
    let file = parse_uevent_file(uevent_file);
    let head = [
        ("ACTION", "add"),
        ("DEVPATH", devpath),
        ("SUBSYSTEM", subsystem),
    ];
    let pairs = head
        .into_iter()
        .chain(file.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut ev = Uevent::from_pairs(pairs, "sysfs uevent file")?;
    if let Some(db) = db {
        ev.properties.extend(db.properties.iter().cloned());
        ev.tags.clone_from(&db.tags);
        if let Some(usec) = db.usec_initialized {
            ev.properties
                .push(("USEC_INITIALIZED".into(), usec.to_string()));
        }
        if !db.current_tags.is_empty() {
            let current = format!(":{}:", db.current_tags.join(":"));
            ev.properties.push(("CURRENT_TAGS".into(), current));
        }
    }
    Ok(ev)
}

fn read_bounded(path: &Path) -> Result<String, UeventError> {
    let mut s = String::new();
    std::fs::File::open(path)
        .at_path("reading", path)?
        .take(MAX_FILE)
        .read_to_string(&mut s)
        .at_path("reading", path)?;
    Ok(s)
}

/// udev's database entry for a device, if a udevd keeps one.
fn udev_db(ev: &Uevent, sysname: &str) -> Option<UdevDb> {
    let id = match ev.devnum {
        Some((major, minor)) if ev.subsystem == "block" => format!("b{major}:{minor}"),
        Some((major, minor)) => format!("c{major}:{minor}"),
        None => format!("+{}:{sysname}", ev.subsystem),
    };
    read_bounded(&Path::new("/run/udev/data").join(id))
        .ok()
        .map(|t| parse_udev_db(&t))
}

/// A cold-plug `add` for every device of `subsystem` present now, sorted
/// by devpath. `sys` is the sysfs mount (`/sys`).
pub fn present(sys: &Path, subsystem: &str) -> Result<Vec<Uevent>, UeventError> {
    if !valid_subsystem(subsystem) {
        return Err(UeventError::Malformed {
            format: "image",
            reason: format!("subsystem name {subsystem:?}"),
        });
    }
    let class = sys.join("class").join(subsystem);
    let dir = if class.is_dir() {
        class
    } else {
        sys.join("bus").join(subsystem).join("devices")
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        // No such subsystem here: no device of it is present.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(UeventError::Sysfs {
                op: "listing",
                path: dir,
                source,
            })
        }
    };
    let devices = sys.join("devices");
    let mut out = Vec::new();
    for entry in entries.flatten().take(MAX_DEVICES) {
        let Ok(real) = std::fs::canonicalize(entry.path()) else {
            continue;
        };
        let Ok(rel) = real.strip_prefix(sys) else {
            continue;
        };
        if !real.starts_with(&devices) {
            continue;
        }
        let devpath = format!("/{}", rel.display());
        // A device that goes away meanwhile is simply not present.
        let Ok(text) = read_bounded(&real.join("uevent")) else {
            continue;
        };
        let mut ev = add_event(&devpath, subsystem, &text, None)?;
        let sysname = entry.file_name().to_string_lossy().into_owned();
        if let Some(db) = udev_db(&ev, &sysname) {
            ev = add_event(&devpath, subsystem, &text, Some(&db))?;
        }
        out.push(ev);
    }
    out.sort_by(|a, b| a.devpath.cmp(&b.devpath));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uevent_file_becomes_a_cold_plug_add() {
        // /sys/devices/virtual/mem/zero/uevent on this machine.
        let text = "MAJOR=1\nMINOR=5\nDEVNAME=zero\nDEVMODE=0666\n";
        let ev = add_event("/devices/virtual/mem/zero", "mem", text, None).unwrap();
        assert_eq!(ev.action, "add");
        assert_eq!(ev.devnum, Some((1, 5)));
        assert_eq!(ev.devname.as_deref(), Some("zero"));
        assert_eq!(ev.properties, [("DEVMODE".into(), "0666".into())]);
    }

    #[test]
    fn udev_database_entries_add_properties_tags_and_time() {
        // The shape of /run/udev/data/c226:0 on a desktop with a udevd.
        let db = parse_udev_db(
            "S:dri/by-path/pci-0000:00:02.0-card\nI:4051208\nE:ID_PATH=pci-0000:00:02.0\n\
             E:ID_FOR_SEAT=drm-pci-0000_00_02_0\nG:seat\nG:uaccess\nQ:seat\nQ:uaccess\nV:1\n",
        );
        assert_eq!(db.usec_initialized, Some(4051208));
        assert_eq!(db.tags, ["seat", "uaccess"]);
        let ev = add_event(
            "/devices/pci0000:00/0000:00:02.0/drm/card0",
            "drm",
            "MAJOR=226\nMINOR=0\nDEVNAME=dri/card0\nDEVTYPE=drm_minor\n",
            Some(&db),
        )
        .unwrap();
        assert_eq!(ev.devtype.as_deref(), Some("drm_minor"));
        assert_eq!(ev.tags, ["seat", "uaccess"]);
        assert_eq!(
            ev.property("CURRENT_TAGS").as_deref(),
            Some(":seat:uaccess:")
        );
        assert_eq!(ev.property("USEC_INITIALIZED").as_deref(), Some("4051208"));
    }

    #[test]
    fn subsystem_names_cannot_escape_sysfs() {
        assert!(valid_subsystem("mem"));
        assert!(valid_subsystem("usb-serial"));
        for bad in ["", "..", ".", "a/b", "../../etc"] {
            assert!(!valid_subsystem(bad), "{bad}");
        }
    }

    #[test]
    fn the_mem_class_of_this_machine_is_present() {
        let devs = present(Path::new("/sys"), "mem").unwrap();
        let zero = devs
            .iter()
            .find(|d| d.devpath == "/devices/virtual/mem/zero")
            .expect("/dev/zero's device");
        assert_eq!(zero.devnum, Some((1, 5)));
        assert!(present(Path::new("/sys"), "no-such-subsystem")
            .unwrap()
            .is_empty());
    }
}
