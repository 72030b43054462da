//! Device events (uevents) as the kernel and udev broadcast them on
//! `NETLINK_KOBJECT_UEVENT`: the record both the device layer (which saves
//! a detached device's identity and its synthetic `remove`) and the uevent
//! proxy (which replays and forwards events into a restored session) use.
//!
//! `kernel` and `libudev` are the two wire formats (multicast groups 1 and
//! 2), `sysfs` reads the devices present now and udev's database, `proxy`
//! owns the session's private network namespace and the proxy loop.

pub mod kernel;
pub mod libudev;
pub mod proxy;
pub mod sysfs;

use crate::sys::wrap::PathIo;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::PathBuf;

/// `NETLINK_KOBJECT_UEVENT`: the netlink protocol of device events.
pub const NETLINK_KOBJECT_UEVENT: i32 = 15;
/// Multicast group of the kernel's own events.
pub const GROUP_KERNEL: u32 = 1;
/// Multicast group of udev's events (after rule processing).
pub const GROUP_UDEV: u32 = 2;
/// Largest message read or written: libudev's receive buffer is 8 KiB, a
/// longer message would reach its listeners truncated (and be dropped).
pub const MAX_MESSAGE: usize = 8192;
/// Most properties one event may carry (the kernel allows 64; udev adds
/// its database's).
pub const MAX_PROPERTIES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum UeventError {
    // No path: a message from a socket, not a file.
    #[error("malformed {format} message: {reason}")]
    Malformed {
        format: &'static str,
        reason: String,
    },
    #[error("{op} {path}")]
    Sysfs {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    // No pid, fd or path: the socket is hiber's own, being made.
    #[error("uevent proxy: {op}")]
    Socket { op: &'static str, source: io::Error },
    // No pid, fd or path: the namespace is hiber's own, being made.
    #[error("the session's network namespace: {op}")]
    Namespace { op: &'static str, source: io::Error },
}

impl From<PathIo> for UeventError {
    fn from(e: PathIo) -> Self {
        UeventError::Sysfs {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// One device event: what a `udevadm monitor --property` line shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uevent {
    /// `add`, `remove`, `change`, `bind`, `unbind`, `move`, …
    pub action: String,
    /// The sysfs path below `/sys`, e.g. `/devices/virtual/mem/zero`.
    pub devpath: String,
    /// `SUBSYSTEM`, e.g. `mem`, `drm`, `input`, `sound`.
    pub subsystem: String,
    /// `DEVTYPE`, when the device has one (`drm_minor`, `disk`, …).
    pub devtype: Option<String>,
    /// `DEVNAME` relative to `/dev`, e.g. `dri/card0`.
    pub devname: Option<String>,
    /// `MAJOR`/`MINOR`, for a device node.
    pub devnum: Option<(u32, u32)>,
    /// `SEQNUM` as the kernel numbered it (0 for a synthetic event).
    pub seqnum: u64,
    /// Every other property (`KEY=value`), in order: the uevent file's
    /// and, for udev's events, the udev database's (`ID_*`, `TAGS`, …).
    pub properties: Vec<(String, String)>,
    /// udev tags (`seat`, `uaccess`, …), for udev's bloom filter.
    pub tags: Vec<String>,
}

impl Uevent {
    /// The value of property `key`, whether it has a field of its own or not.
    pub fn property(&self, key: &str) -> Option<String> {
        match key {
            "ACTION" => Some(self.action.clone()),
            "DEVPATH" => Some(self.devpath.clone()),
            "SUBSYSTEM" => Some(self.subsystem.clone()),
            "DEVTYPE" => self.devtype.clone(),
            "DEVNAME" => self.devname.clone(),
            "MAJOR" => self.devnum.map(|d| d.0.to_string()),
            "MINOR" => self.devnum.map(|d| d.1.to_string()),
            "SEQNUM" => Some(self.seqnum.to_string()),
            _ => self
                .properties
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone()),
        }
    }

    /// Build an event from `KEY=VALUE` pairs in the order a message or a
    /// uevent file holds them. Keys with a field of their own go there;
    /// `TAGS` (`:a:b:`) becomes `tags`; the rest stay in order.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        format: &'static str,
    ) -> Result<Uevent, UeventError> {
        let bad = |reason: String| UeventError::Malformed { format, reason };
        let mut ev = Uevent::default();
        let (mut major, mut minor) = (None, None);
        let mut count = 0usize;
        for (k, v) in pairs {
            count += 1;
            if count > MAX_PROPERTIES {
                return Err(bad(format!("more than {MAX_PROPERTIES} properties")));
            }
            let num = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| bad(format!("{k}={v} is not a number")))
            };
            match k {
                "ACTION" => ev.action = v.into(),
                "DEVPATH" => ev.devpath = v.into(),
                "SUBSYSTEM" => ev.subsystem = v.into(),
                "DEVTYPE" => ev.devtype = Some(v.into()),
                "DEVNAME" => ev.devname = Some(v.into()),
                "MAJOR" => major = Some(num(v)?),
                "MINOR" => minor = Some(num(v)?),
                "SEQNUM" => {
                    ev.seqnum = v
                        .parse()
                        .map_err(|_| bad(format!("SEQNUM={v} is not a number")))?
                }
                "TAGS" => ev.tags = split_tags(v),
                _ => ev.properties.push((k.into(), v.into())),
            }
        }
        ev.devnum = match (major, minor) {
            (Some(a), Some(b)) => Some((a, b)),
            (None, None) => None,
            _ => return Err(bad("MAJOR without MINOR or the reverse".into())),
        };
        Ok(ev)
    }
}

/// `:seat:uaccess:` → `["seat", "uaccess"]`.
fn split_tags(v: &str) -> Vec<String> {
    v.split(':')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Split `KEY=VALUE\0KEY=VALUE\0…` into pairs; entries without `=` are an
/// error (neither the kernel nor udev writes them).
fn nul_pairs<'a>(
    body: &'a [u8],
    format: &'static str,
) -> Result<Vec<(&'a str, &'a str)>, UeventError> {
    let bad = |reason: String| UeventError::Malformed { format, reason };
    let mut out = Vec::new();
    for entry in body.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        if out.len() >= MAX_PROPERTIES {
            return Err(bad(format!("more than {MAX_PROPERTIES} properties")));
        }
        let s = std::str::from_utf8(entry).map_err(|_| bad("a property is not UTF-8".into()))?;
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| bad(format!("property {s:?} has no '='")))?;
        out.push((k, v));
    }
    Ok(out)
}

/// The fields every event must have, checked after decoding.
fn require_identity(ev: &Uevent, format: &'static str) -> Result<(), UeventError> {
    let missing = if ev.action.is_empty() {
        "ACTION"
    } else if !ev.devpath.starts_with('/') {
        "DEVPATH"
    } else if ev.subsystem.is_empty() {
        "SUBSYSTEM"
    } else {
        return Ok(());
    };
    Err(UeventError::Malformed {
        format,
        reason: format!("no {missing}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_fill_fields_and_keep_the_rest_in_order() {
        let ev = Uevent::from_pairs(
            [
                ("ACTION", "add"),
                ("DEVPATH", "/devices/virtual/mem/zero"),
                ("SUBSYSTEM", "mem"),
                ("MAJOR", "1"),
                ("MINOR", "5"),
                ("DEVNAME", "zero"),
                ("DEVMODE", "0666"),
                ("TAGS", ":seat:uaccess:"),
                ("SEQNUM", "823"),
            ],
            "test",
        )
        .unwrap();
        assert_eq!(ev.devnum, Some((1, 5)));
        assert_eq!(ev.seqnum, 823);
        assert_eq!(ev.tags, ["seat", "uaccess"]);
        assert_eq!(ev.properties, [("DEVMODE".into(), "0666".into())]);
        assert_eq!(ev.property("MINOR").as_deref(), Some("5"));
    }

    #[test]
    fn half_a_device_number_is_refused() {
        assert!(Uevent::from_pairs([("MAJOR", "1")], "test").is_err());
        assert!(Uevent::from_pairs([("MAJOR", "x"), ("MINOR", "1")], "test").is_err());
    }

    #[test]
    fn too_many_properties_are_refused() {
        let many: Vec<(String, String)> = (0..=MAX_PROPERTIES)
            .map(|i| (format!("K{i}"), "v".into()))
            .collect();
        let r = Uevent::from_pairs(many.iter().map(|(k, v)| (k.as_str(), v.as_str())), "test");
        assert!(r.is_err());
    }
}
