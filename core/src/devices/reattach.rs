//! Reattach (experimental): an X server's primary DRM card. Xorg cannot
//! drop its primary GPU through udev the way it drops any other device,
//! so this card is not detached: at checkpoint its identity is recorded
//! with what reopening it needs (devpath, `DEVNAME`, the parent's PCI
//! slot and `boot_vga`); at restore the live card matching it is opened
//! with the saved flags at the fd's number, and once the restored tree
//! runs the server gets the signal its VT code switches on (SIGUSR1 by
//! default). No `remove` event is recorded: the server would not handle
//! one for this card. Without a matching live card the fd gets the
//! detached stand-in and a warning: the server will fail to draw.
//!
//! Built against recorded sysfs fixtures only; no DRM device was
//! available where it was written.

use super::detach::DeviceRecord;
use super::error::DeviceError;
use super::policy::Classified;
use super::signal;
use super::sysfs::{devpath_of_link, property, read_bounded, DeviceIdentity, SysRoots};
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// Most entries of `/sys/class/drm` looked at.
const MAX_CLASS_ENTRIES: usize = 1024;
/// Longest string accepted from an image in a card record.
const MAX_STRING: usize = 4096;

/// `N` of a card's `DEVNAME` `dri/cardN`; None for render nodes and
/// anything else.
pub fn card_number(devname: &str) -> Option<u32> {
    let n = devname.strip_prefix("dri/card")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

/// What reopening a DRM card needs, as sysfs tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// Below `/sys`: `/devices/pci0000:00/0000:00:02.0/drm/card0`.
    pub devpath: String,
    /// `dri/card0`.
    pub devname: String,
    pub devnum: (u32, u32),
    /// `PCI_SLOT_NAME` of the parent device's `uevent` (`0000:00:02.0`).
    pub pci_slot: Option<String>,
    /// The parent's `boot_vga`: the card the firmware booted on.
    pub boot_vga: Option<bool>,
}

impl Card {
    /// The card of an identity that is one: class `drm`, `DEVTYPE`
    /// `drm_minor`, `DEVNAME` `dri/cardN` (not a render node).
    pub fn of(roots: &SysRoots, id: &DeviceIdentity) -> Option<Card> {
        let devname = id.devname.as_deref()?;
        let is_card = id.subsystem == "drm"
            && id.devtype.as_deref() == Some("drm_minor")
            && card_number(devname).is_some();
        if !is_card {
            return None;
        }
        let parent = roots
            .sysfs
            .join(id.devpath.trim_start_matches('/'))
            .join("device");
        let pci_slot = read_bounded(&parent.join("uevent")).ok().and_then(|t| {
            property(&super::sysfs::parse_uevent(&t), "PCI_SLOT_NAME").map(str::to_string)
        });
        let boot_vga = read_bounded(&parent.join("boot_vga"))
            .ok()
            .and_then(|t| parse_boot_vga(&t));
        Some(Card {
            devpath: id.devpath.clone(),
            devname: devname.to_string(),
            devnum: id.devnum,
            pci_slot,
            boot_vga,
        })
    }

    fn number(&self) -> u32 {
        card_number(&self.devname).unwrap_or(u32::MAX)
    }

    fn validate(&self) -> Result<(), String> {
        let strings = [&self.devpath, &self.devname]
            .into_iter()
            .chain(self.pci_slot.as_ref());
        if strings.into_iter().any(|s| s.len() > MAX_STRING) {
            return Err("card record with too long a string".into());
        }
        if card_number(&self.devname).is_none() {
            return Err(format!("card record with DEVNAME {:?}", self.devname));
        }
        Ok(())
    }
}

/// `boot_vga`'s text: `1` or `0`.
pub fn parse_boot_vga(text: &str) -> Option<bool> {
    match text.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// The primary card among those an X server holds: the one the firmware
/// booted on (`boot_vga` 1), else the lowest-numbered.
pub fn primary(cards: &[Card]) -> Option<&Card> {
    cards
        .iter()
        .find(|c| c.boot_vga == Some(true))
        .or_else(|| cards.iter().min_by_key(|c| c.number()))
}

/// The primary card among the char devices `devnums` (a process's open
/// char devices), by what sysfs says of each.
pub fn primary_of(roots: &SysRoots, devnums: &[(u32, u32)]) -> Option<Card> {
    let mut cards: Vec<Card> = Vec::new();
    for &(major, minor) in devnums {
        let card = roots
            .char_device(major, minor)
            .and_then(|id| Card::of(roots, &id));
        if let Some(card) = card.filter(|c| !cards.contains(c)) {
            cards.push(card);
        }
    }
    primary(&cards).cloned()
}

/// The live card a saved one is: the same PCI slot when the saved card
/// had one, else the same devpath, else the same `DEVNAME`.
pub fn matching<'a>(saved: &Card, live: &'a [Card]) -> Option<&'a Card> {
    match &saved.pci_slot {
        Some(slot) => live.iter().find(|c| c.pci_slot.as_ref() == Some(slot)),
        None => live
            .iter()
            .find(|c| c.devpath == saved.devpath)
            .or_else(|| live.iter().find(|c| c.devname == saved.devname)),
    }
}

/// The DRM cards present now: the entries of `/sys/class/drm` that are
/// cards (connectors such as `card0-HDMI-A-1` and render nodes are not).
pub fn live_cards(roots: &SysRoots) -> Vec<Card> {
    let Ok(entries) = std::fs::read_dir(roots.sysfs.join("class/drm")) else {
        return Vec::new();
    };
    let mut cards = Vec::new();
    for entry in entries.take(MAX_CLASS_ENTRIES).flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        // `class/drm/X` lies two levels below the root, as `dev/char/X` does.
        let Some(devpath) = devpath_of_link(&target) else {
            continue;
        };
        let dir = roots.sysfs.join(devpath.trim_start_matches('/'));
        let Ok(text) = read_bounded(&dir.join("uevent")) else {
            continue;
        };
        let uevent = super::sysfs::parse_uevent(&text);
        let num = |k| property(&uevent, k).and_then(|v| v.parse::<u32>().ok());
        let (Some(major), Some(minor)) = (num("MAJOR"), num("MINOR")) else {
            continue;
        };
        let id = DeviceIdentity {
            devtype: property(&uevent, "DEVTYPE").map(str::to_string),
            devname: property(&uevent, "DEVNAME").map(str::to_string),
            subsystem: "drm".into(),
            devpath,
            devnum: (major, minor),
            uevent: Vec::new(),
            udev: None,
        };
        cards.extend(Card::of(roots, &id));
    }
    cards.sort_by_key(Card::number);
    cards
}

/// A reattached card: what the image holds for its fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reattached {
    /// The node the server opened, its class (`drm`) and rule.
    #[serde(flatten)]
    pub device: DeviceRecord,
    pub card: Card,
    /// Sent to the holder once the restored tree runs (`USR1`).
    pub signal: String,
}

/// What the restore made of a reattached card.
#[derive(Debug)]
pub enum Reopened {
    /// The live card, opened with the saved flags.
    Live(OwnedFd),
    /// No matching live card: the detached stand-in.
    StandIn(OwnedFd),
}

impl Reattached {
    pub fn describe(&self) -> String {
        self.device.describe()
    }

    /// Record a card the table reattaches; None when the device is not a
    /// DRM card (nothing to reopen).
    pub fn checkpoint(c: &Classified, roots: &SysRoots, signal: &str) -> Option<Self> {
        let card = Card::of(roots, c.identity.as_ref()?)?;
        Some(Self {
            device: DeviceRecord::of(c),
            card,
            signal: signal.to_string(),
        })
    }

    /// Bounds on what an image may hold here.
    pub fn validate(&self) -> Result<(), String> {
        self.device.validate()?;
        self.card.validate()?;
        if signal::parse(&self.signal).is_none() {
            return Err(format!("reattach signal {:?}", self.signal));
        }
        Ok(())
    }

    /// The signal number to send (validated at load).
    pub fn signal_number(&self) -> i32 {
        signal::parse(&self.signal).unwrap_or(libc::SIGUSR1)
    }

    /// Open the live card matching the saved one with `flags`, or else
    /// the stand-in (with a warning).
    pub fn restore(&self, flags: u32, roots: &SysRoots) -> Result<Reopened, DeviceError> {
        let live = live_cards(roots);
        let Some(card) = matching(&self.card, &live) else {
            warn!(
                path = %self.device.path.display(),
                devpath = %self.card.devpath,
                pci_slot = ?self.card.pci_slot,
                "no live DRM card matches the reattached one: a dead stand-in instead; the X server will fail to draw"
            );
            return Ok(Reopened::StandIn(self.device.stand_in()?));
        };
        let node = self.node_of(card);
        let fd = open_card(&node, flags, card.devnum)?;
        info!(
            path = %node.display(),
            major = card.devnum.0,
            minor = card.devnum.1,
            devpath = %card.devpath,
            "reattached the live DRM card (experimental)"
        );
        Ok(Reopened::Live(fd))
    }

    /// The node to open for the live card: the saved path while it is
    /// that device (a `by-path` link, a private `/dev`), else
    /// `/dev/DEVNAME`.
    fn node_of(&self, card: &Card) -> PathBuf {
        let is_it = std::fs::metadata(&self.device.path).is_ok_and(|m| {
            m.file_type().is_char_device()
                && (libc::major(m.rdev()), libc::minor(m.rdev())) == card.devnum
        });
        if is_it {
            self.device.path.clone()
        } else {
            Path::new("/dev").join(&card.devname)
        }
    }
}

/// Open `node` with the saved `flags` (never creating or truncating) and
/// check it is char device `devnum`.
fn open_card(node: &Path, flags: u32, devnum: (u32, u32)) -> Result<OwnedFd, DeviceError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |op: &'static str| {
        let path = node.to_path_buf();
        move |source| DeviceError::Reopen {
            major: devnum.0,
            minor: devnum.1,
            path,
            op,
            source,
        }
    };
    let flags = flags as i32 & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL);
    let accmode = flags & libc::O_ACCMODE;
    let file = std::fs::OpenOptions::new()
        .read(accmode != libc::O_WRONLY)
        .write(accmode != libc::O_RDONLY)
        .custom_flags(flags & !libc::O_ACCMODE)
        .open(node)
        .map_err(err("open"))?;
    let md = file.metadata().map_err(err("fstat"))?;
    let found = (libc::major(md.rdev()), libc::minor(md.rdev()));
    if !md.file_type().is_char_device() || found != devnum {
        return Err(err("checking the device number")(
            std::io::Error::from_raw_os_error(libc::ENODEV),
        ));
    }
    Ok(file.into())
}

/// Drive the VT re-enter path of a restored X server: send it `signal`.
pub fn signal_server(pid: i32, signal: i32) -> Result<(), DeviceError> {
    // pid is a process this restore made.
    crate::sys::process::kill(pid, signal).map_err(|source| DeviceError::Signal {
        pid,
        signal,
        source,
    })?;
    info!(pid, signal, "sent the X server its VT acquire signal");
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::policy::{DevicePolicies, Use};
    use super::super::sysfs::tests::{fake_device, roots};
    use super::*;
    use crate::policy::Policy;
    use std::os::unix::fs::symlink;

    pub const CARD0_UEVENT: &str = "MAJOR=226\nMINOR=0\nDEVNAME=dri/card0\nDEVTYPE=drm_minor\n";
    pub const CARD1_UEVENT: &str = "MAJOR=226\nMINOR=1\nDEVNAME=dri/card1\nDEVTYPE=drm_minor\n";
    pub const RENDER_UEVENT: &str =
        "MAJOR=226\nMINOR=128\nDEVNAME=dri/renderD128\nDEVTYPE=drm_minor\n";
    /// The parent PCI device's `uevent` of an Intel laptop's iGPU.
    pub const PCI_UEVENT: &str = "DRIVER=i915\nPCI_CLASS=30000\nPCI_ID=8086:9A49\nPCI_SUBSYS_ID=1028:0A38\nPCI_SLOT_NAME=0000:00:02.0\nMODALIAS=pci:v00008086d00009A49sv00001028sd00000A38bc03sc00i00\n";
    pub const PCI2_UEVENT: &str = "DRIVER=nouveau\nPCI_CLASS=30200\nPCI_SLOT_NAME=0000:01:00.0\n";

    /// A card device below a PCI device: the `device` link to the parent,
    /// its `uevent` and `boot_vga`, and the `class/drm` entry.
    pub fn fake_card(
        root: &Path,
        devnum: (u32, u32),
        pci: &str,
        name: &str,
        uevent: &str,
        pci_uevent: &str,
        boot_vga: Option<&str>,
    ) {
        let devpath = format!("/devices/pci0000:00/{pci}/drm/{name}");
        fake_device(root, devnum, &devpath, "drm", uevent, None);
        let sys = root.join("sys");
        let parent = sys.join(format!("devices/pci0000:00/{pci}"));
        std::fs::write(parent.join("uevent"), pci_uevent).unwrap();
        if let Some(b) = boot_vga {
            std::fs::write(parent.join("boot_vga"), b).unwrap();
        }
        let dir = sys.join(devpath.trim_start_matches('/'));
        let _ = symlink(format!("../../../{pci}"), dir.join("device"));
        std::fs::create_dir_all(sys.join("class/drm")).unwrap();
        symlink(format!("../..{devpath}"), sys.join("class/drm").join(name)).unwrap();
    }

    /// The machine of the brief: card0 (boot VGA) and its render node on
    /// 0000:00:02.0, card1 (no boot_vga) on 0000:01:00.0.
    pub fn two_card_machine(root: &Path) -> SysRoots {
        fake_card(
            root,
            (226, 0),
            "0000:00:02.0",
            "card0",
            CARD0_UEVENT,
            PCI_UEVENT,
            Some("1\n"),
        );
        fake_card(
            root,
            (226, 128),
            "0000:00:02.0",
            "renderD128",
            RENDER_UEVENT,
            PCI_UEVENT,
            None,
        );
        fake_card(
            root,
            (226, 1),
            "0000:01:00.0",
            "card1",
            CARD1_UEVENT,
            PCI2_UEVENT,
            None,
        );
        roots(root)
    }

    #[test]
    fn card_names_signals_and_boot_vga() {
        assert_eq!(card_number("dri/card0"), Some(0));
        assert_eq!(card_number("dri/card12"), Some(12));
        assert_eq!(card_number("dri/renderD128"), None);
        assert_eq!(card_number("dri/card"), None);
        assert_eq!(card_number("dri/card0-HDMI-A-1"), None);
        assert_eq!(signal::parse("USR1"), Some(libc::SIGUSR1));
        assert_eq!(signal::parse("sigusr2"), Some(libc::SIGUSR2));
        assert_eq!(signal::parse("KILL"), None);
        assert_eq!(signal::parse(""), None);
        assert_eq!(parse_boot_vga("1\n"), Some(true));
        assert_eq!(parse_boot_vga("0\n"), Some(false));
        assert_eq!(parse_boot_vga("x"), None);
    }

    #[test]
    fn cards_read_from_a_fixture_tree() {
        let t = tempfile::tempdir().unwrap();
        let r = two_card_machine(t.path());
        let live = live_cards(&r);
        let names: Vec<&str> = live.iter().map(|c| c.devname.as_str()).collect();
        assert_eq!(
            names,
            ["dri/card0", "dri/card1"],
            "render nodes are not cards"
        );
        assert_eq!(
            live[0],
            Card {
                devpath: "/devices/pci0000:00/0000:00:02.0/drm/card0".into(),
                devname: "dri/card0".into(),
                devnum: (226, 0),
                pci_slot: Some("0000:00:02.0".into()),
                boot_vga: Some(true),
            }
        );
        assert_eq!(live[1].pci_slot.as_deref(), Some("0000:01:00.0"));
        assert_eq!(live[1].boot_vga, None);
    }

    #[test]
    fn primary_is_boot_vga_else_lowest() {
        let t = tempfile::tempdir().unwrap();
        let r = two_card_machine(t.path());
        let all = [(226, 1), (226, 128), (226, 0), (1, 5)];
        assert_eq!(primary_of(&r, &all).map(|c| c.devnum), Some((226, 0)));
        // Without the boot card, the lowest-numbered card held.
        assert_eq!(
            primary_of(&r, &[(226, 128), (226, 1)]).map(|c| c.devnum),
            Some((226, 1))
        );
        let mut cards = live_cards(&r);
        cards.iter_mut().for_each(|c| c.boot_vga = None);
        cards.reverse();
        assert_eq!(primary(&cards).map(|c| c.devnum), Some((226, 0)));
        assert_eq!(primary_of(&r, &[(226, 128)]), None, "a render node alone");
    }

    fn classify_as(p: &DevicePolicies, devnum: (u32, u32), x_server: bool) -> Policy {
        let held = [(226, 0), (226, 1), (226, 128)];
        let primary = x_server
            .then(|| primary_of(&p.roots, &held))
            .flatten()
            .map(|c| c.devnum);
        let node = format!("/dev/x{}-{}", devnum.0, devnum.1);
        p.classify(
            Path::new(&node),
            devnum.0,
            devnum.1,
            Use::of(devnum, primary),
        )
        .decision
        .policy
    }

    #[test]
    fn an_x_servers_primary_card_is_reattached_automatically() {
        let t = tempfile::tempdir().unwrap();
        let p = DevicePolicies {
            roots: two_card_machine(t.path()),
            ..DevicePolicies::default()
        };
        assert_eq!(classify_as(&p, (226, 0), true), Policy::Reattach);
        assert_eq!(
            classify_as(&p, (226, 1), true),
            Policy::Detach,
            "not primary"
        );
        assert_eq!(
            classify_as(&p, (226, 128), true),
            Policy::Detach,
            "render node"
        );
        assert_eq!(
            classify_as(&p, (226, 0), false),
            Policy::Detach,
            "not an X server"
        );
        let c = p.classify(Path::new("/dev/dri/card0"), 226, 0, Use::PrimaryCard);
        assert_eq!(
            c.decision.describe_rule(),
            "device 226:0 (automatic: an X server's primary DRM card)"
        );
        let r = Reattached::checkpoint(&c, &p.roots, signal::DEFAULT).expect("a card");
        assert_eq!(r.card.pci_slot.as_deref(), Some("0000:00:02.0"));
        assert_eq!(r.card.boot_vga, Some(true));
        assert_eq!(r.signal_number(), libc::SIGUSR1);
        assert_eq!(r.validate(), Ok(()));
        let mut hostile = r.clone();
        hostile.signal = "KILL".into();
        assert!(hostile.validate().is_err());
        hostile = r;
        hostile.card.devname = "dri/renderD128".into();
        assert!(hostile.validate().is_err());
    }

    #[test]
    fn a_rule_wins_over_the_automatic_reattach() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("devices.toml");
        std::fs::write(&file, "[devices]\n\"226:0\" = \"detach\"\n").unwrap();
        let mut p = DevicePolicies::load(Some(&file), &[] as &[&str]).unwrap();
        p.roots = two_card_machine(t.path());
        assert_eq!(
            classify_as(&p, (226, 0), true),
            Policy::Detach,
            "the file's device rule"
        );
        let mut p = DevicePolicies::load(None, &["drm=refuse"]).unwrap();
        p.roots = roots(t.path());
        assert_eq!(
            classify_as(&p, (226, 0), true),
            Policy::Refuse,
            "a class flag"
        );
        let mut p = DevicePolicies::load(None, &["226:1=reattach"]).unwrap();
        p.roots = roots(t.path());
        assert_eq!(
            classify_as(&p, (226, 1), false),
            Policy::Reattach,
            "asked for by a rule"
        );
    }

    #[test]
    fn the_live_card_by_slot_then_devpath_then_name() {
        let card = |devpath: &str, name: &str, slot: Option<&str>| Card {
            devpath: devpath.into(),
            devname: name.into(),
            devnum: (226, card_number(name).unwrap()),
            pci_slot: slot.map(str::to_string),
            boot_vga: None,
        };
        let live = [
            card("/devices/a/drm/card0", "dri/card0", Some("0000:01:00.0")),
            card("/devices/b/drm/card1", "dri/card1", Some("0000:00:02.0")),
        ];
        // The same GPU renumbered: its slot finds it.
        let saved = card("/devices/b/drm/card0", "dri/card0", Some("0000:00:02.0"));
        assert_eq!(matching(&saved, &live).map(|c| c.devnum), Some((226, 1)));
        // A slot this machine lacks: no card, even with the same name.
        let saved = card("/devices/c/drm/card0", "dri/card0", Some("0000:02:00.0"));
        assert_eq!(matching(&saved, &live), None);
        // No slot saved: devpath, then name.
        let saved = card("/devices/b/drm/card1", "dri/card0", None);
        assert_eq!(matching(&saved, &live).map(|c| c.devnum), Some((226, 1)));
        let saved = card("/devices/z/drm/card0", "dri/card0", None);
        assert_eq!(matching(&saved, &live).map(|c| c.devnum), Some((226, 0)));
    }

    #[test]
    fn restore_opens_the_live_card_or_falls_back_to_a_stand_in() {
        use std::os::fd::AsRawFd;
        let t = tempfile::tempdir().unwrap();
        // /dev/full (1:7) plays the live card0 of the fixture.
        let uevent = "MAJOR=1\nMINOR=7\nDEVNAME=dri/card0\nDEVTYPE=drm_minor\n";
        fake_card(
            t.path(),
            (1, 7),
            "0000:00:02.0",
            "card0",
            uevent,
            PCI_UEVENT,
            Some("1"),
        );
        let p = DevicePolicies {
            roots: roots(t.path()),
            ..DevicePolicies::default()
        };
        let c = p.classify(Path::new("/dev/full"), 1, 7, Use::PrimaryCard);
        let r = Reattached::checkpoint(&c, &p.roots, "USR1").expect("a card");
        let flags = (libc::O_RDWR | libc::O_NONBLOCK) as u32;
        let Reopened::Live(fd) = r.restore(flags, &p.roots).unwrap() else {
            panic!("the live card")
        };
        let got = crate::sys::fd::status_flags_of(fd.as_raw_fd()).unwrap();
        assert_eq!(got & libc::O_ACCMODE, libc::O_RDWR);
        assert_ne!(got & libc::O_NONBLOCK, 0, "the saved flags");
        assert_eq!(got & libc::O_PATH, 0, "a live open, not a handle");
        let mut b = [1u8; 4];
        let n = crate::sys::fd::read(fd.as_raw_fd(), &mut b).unwrap();
        assert_eq!((n, b), (4, [0; 4]), "/dev/full reads zeros");
        // Another machine: no card on that slot.
        let elsewhere = SysRoots {
            sysfs: t.path().join("nothing"),
            udev_data: t.path().join("nothing"),
        };
        let Reopened::StandIn(fd) = r.restore(flags, &elsewhere).unwrap() else {
            panic!("a stand-in")
        };
        let got = crate::sys::fd::status_flags_of(fd.as_raw_fd()).unwrap();
        assert_ne!(got & libc::O_PATH, 0, "the detached stand-in");
    }
}
