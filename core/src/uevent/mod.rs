//! Device events (uevents) as the kernel and udev broadcast them on
//! `NETLINK_KOBJECT_UEVENT`: the record both the device layer (which saves
//! a detached device's identity and its synthetic `remove`) and the uevent
//! proxy (which replays and forwards events into a restored session) use.

use serde::{Deserialize, Serialize};

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
