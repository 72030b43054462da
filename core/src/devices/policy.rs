//! Which policy each char device gets: rules from the command line, the
//! system file and the built-in table, looked up in one place
//! ([`DevicePolicies::decide`]).

use crate::policy::Policy;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::error::DeviceError;
use super::signal;
use super::sysfs::{DeviceIdentity, SysRoots};

/// The system configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/hiber/devices.toml";
/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What a rule names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Selector {
    /// A sysfs subsystem: `drm`, `input`, `sound`.
    Class(String),
    /// One device number.
    Devnum(u32, u32),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Class(c) => write!(f, "class {c}"),
            Selector::Devnum(ma, mi) => write!(f, "device {ma}:{mi}"),
        }
    }
}

/// Where a rule comes from, in order of precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    File(PathBuf),
    /// The device is an X server's primary DRM card (see [`Use`]).
    Automatic,
    BuiltIn,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("--device-policy"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Automatic => f.write_str("automatic: an X server's primary DRM card"),
            Origin::BuiltIn => f.write_str("built-in"),
        }
    }
}

/// The policies a device may get. `Reattach` is the X server's primary
/// DRM card's (reopen the live card, drive the VT re-enter path;
/// experimental): that card gets it without a rule, and a rule may ask
/// for it for another card.
const DEVICE_POLICIES: &[(&str, Policy)] = &[
    ("reopen", Policy::Reopen),
    ("detach", Policy::Detach),
    ("reattach", Policy::Reattach),
    ("refuse", Policy::Refuse),
];

/// The built-in rules by class: (class, policy, why).
pub const BUILTIN_CLASSES: &[(&str, Policy, &str)] = &[
    ("mem", Policy::Reopen, "a stateless device, reopened by path"),
    (
        "tty",
        Policy::Refuse,
        "ptys and /dev/tty are saved by the pty code; the modes of virtual consoles and serial lines are not saved yet",
    ),
    ("drm", Policy::Detach, "GPU state cannot be saved; Mesa and X drivers handle a card going away"),
    ("input", Policy::Detach, "evdev users (libinput) drop an unplugged device and take a new one from udev"),
    ("sound", Policy::Detach, "ALSA users (PulseAudio, PipeWire) drop an unplugged card and take a new one from udev"),
    ("hidraw", Policy::Detach, "hidraw users handle a device being unplugged"),
    ("video4linux", Policy::Detach, "camera streams cannot be saved; v4l2 users handle an unplugged camera"),
    ("usb", Policy::Detach, "raw USB (libusb) users handle a device being unplugged"),
    ("usbmisc", Policy::Detach, "hiddev and other USB nodes: handled as unplugged"),
];

/// The built-in rules by device number, over the class rules: the mem
/// class also holds devices that are anything but stateless.
pub const BUILTIN_DEVICES: &[((u32, u32), Policy, &str)] = &[
    ((1, 1), Policy::Refuse, "/dev/mem: physical memory"),
    ((1, 2), Policy::Refuse, "/dev/kmem"),
    ((1, 4), Policy::Refuse, "/dev/port: I/O ports"),
    (
        (1, 11),
        Policy::Refuse,
        "/dev/kmsg: its read position belongs to the open file",
    ),
];

/// One layer of rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub rules: BTreeMap<Selector, Policy>,
}

impl Rules {
    fn get(&self, devnum: (u32, u32), class: Option<&str>) -> Option<(Selector, Policy)> {
        let by_devnum = Selector::Devnum(devnum.0, devnum.1);
        let by_class = class.map(|c| Selector::Class(c.to_string()));
        std::iter::once(by_devnum)
            .chain(by_class)
            .find_map(|s| self.rules.get(&s).map(|&p| (s, p)))
    }

    fn insert(&mut self, rule: &str, key: &str, value: &str) -> Result<(), DeviceError> {
        let bad = |message: String| DeviceError::BadRule {
            rule: rule.to_string(),
            message,
        };
        let policy = DEVICE_POLICIES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(value.trim()))
            .map(|&(_, p)| p)
            .ok_or_else(|| {
                bad(format!(
                    "unknown policy {value:?} (one of reopen, detach, reattach, refuse)"
                ))
            })?;
        self.rules
            .insert(parse_selector(key.trim()).map_err(bad)?, policy);
        Ok(())
    }
}

/// `MAJ:MIN` or a class name (lower-case letters, digits, `_`, `-`).
pub fn parse_selector(key: &str) -> Result<Selector, String> {
    if let Some((ma, mi)) = key.split_once(':') {
        let num = |s: &str, max: u32| s.parse::<u32>().ok().filter(|&n| n <= max);
        return match (num(ma, 0xfff), num(mi, 0xf_ffff)) {
            (Some(ma), Some(mi)) => Ok(Selector::Devnum(ma, mi)),
            _ => Err(format!("{key:?} is not a device number MAJOR:MINOR")),
        };
    }
    let valid = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(Selector::Class(key.to_string()))
    } else {
        Err(format!("{key:?} is neither a device class nor MAJOR:MINOR"))
    }
}

/// The configuration file: two tables of `name = "policy"`, and the
/// settings of Reattach.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    classes: BTreeMap<String, String>,
    #[serde(default)]
    devices: BTreeMap<String, String>,
    #[serde(default)]
    reattach: ReattachConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReattachConfig {
    /// The signal that drives the X server's VT acquire path.
    signal: Option<String>,
}

/// What a configuration file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub rules: Rules,
    /// `[reattach] signal`, checked to be one Hiber sends.
    pub reattach_signal: Option<String>,
}

/// A configuration file's text (`path` names it in errors).
pub fn parse_config(path: &Path, text: &str) -> Result<Config, DeviceError> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| DeviceError::BadConfig {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })?;
    let reattach_signal = file.reattach.signal;
    if let Some(sig) = &reattach_signal {
        if signal::parse(sig).is_none() {
            return Err(DeviceError::BadConfig {
                path: path.to_path_buf(),
                message: format!(
                    "[reattach] signal = {sig:?}: not one of USR1, USR2, HUP, CONT, WINCH"
                ),
            });
        }
    }
    let mut rules = Rules::default();
    for (table, entries) in [("classes", &file.classes), ("devices", &file.devices)] {
        for (key, value) in entries {
            let is_devnum = key.contains(':');
            if is_devnum != (table == "devices") {
                return Err(DeviceError::BadConfig {
                    path: path.to_path_buf(),
                    message: format!(
                        "[{table}] {key:?}: device numbers go in [devices], classes in [classes]"
                    ),
                });
            }
            rules
                .insert(&format!("{key} = {value:?}"), key, value)
                .map_err(|e| DeviceError::BadConfig {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        }
    }
    Ok(Config {
        rules,
        reattach_signal,
    })
}

/// Rules of `--device-policy` values: `CLASS=POLICY` or `MAJ:MIN=POLICY`.
pub fn parse_flags<S: AsRef<str>>(flags: &[S]) -> Result<Rules, DeviceError> {
    let mut rules = Rules::default();
    for flag in flags {
        let flag = flag.as_ref();
        let (key, value) = flag.split_once('=').ok_or_else(|| DeviceError::BadRule {
            rule: flag.to_string(),
            message: "expected CLASS=POLICY or MAJOR:MINOR=POLICY".into(),
        })?;
        rules.insert(flag, key, value)?;
    }
    Ok(rules)
}

/// The policy a device gets, and the rule that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub policy: Policy,
    /// The rule that matched; None when no rule names the device's class.
    pub rule: Option<(Selector, Origin)>,
}

impl Decision {
    /// "class drm (built-in)", "device 1:5 (/etc/hiber/devices.toml)".
    pub fn describe_rule(&self) -> String {
        match &self.rule {
            Some((sel, origin)) => format!("{sel} ({origin})"),
            None => "no rule for its class".into(),
        }
    }
}

/// What a char device is to the process holding it, for the automatic
/// rule: the primary DRM card of a process the session layer names (its
/// X server, see [`DevicePolicies::reattach_primary_of`]) is reattached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Plain,
    PrimaryCard,
}

impl Use {
    /// `devnum`'s use, `primary` being the holder's primary card when the
    /// holder is named in [`DevicePolicies::reattach_primary_of`]
    /// ([`super::reattach::primary_of`]).
    pub fn of(devnum: (u32, u32), primary: Option<(u32, u32)>) -> Self {
        if primary == Some(devnum) {
            Use::PrimaryCard
        } else {
            Use::Plain
        }
    }
}

/// Every device rule in force, and where device identities are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicies {
    pub flags: Rules,
    /// The configuration file's rules, and its path.
    pub file: Option<(PathBuf, Rules)>,
    pub roots: SysRoots,
    /// The signal sent to an X server whose card was reattached.
    pub reattach_signal: String,
    /// Pids whose primary DRM card is reattached: the session layer names
    /// its X servers (core does not know what an X server is).
    pub reattach_primary_of: BTreeSet<i32>,
}

impl Default for DevicePolicies {
    /// The built-in rules alone, identities from `/sys` and `/run/udev`.
    fn default() -> Self {
        Self {
            flags: Rules::default(),
            file: None,
            roots: SysRoots::default(),
            reattach_signal: signal::DEFAULT.into(),
            reattach_primary_of: BTreeSet::new(),
        }
    }
}

impl DevicePolicies {
    /// Rules from `flags` over those of the file `file` (when given and
    /// present: an absent system file is no error) over the built-in ones.
    pub fn load<S: AsRef<str>>(file: Option<&Path>, flags: &[S]) -> Result<Self, DeviceError> {
        let config = match file {
            Some(path) => read_config(path)?.map(|c| (path.to_path_buf(), c)),
            None => None,
        };
        let reattach_signal = config
            .as_ref()
            .and_then(|(_, c)| c.reattach_signal.clone())
            .unwrap_or_else(|| signal::DEFAULT.into());
        Ok(Self {
            flags: parse_flags(flags)?,
            file: config.map(|(p, c)| (p, c.rules)),
            roots: SysRoots::default(),
            reattach_signal,
            reattach_primary_of: BTreeSet::new(),
        })
    }

    /// The one lookup, first match winning: the command line's rules, the
    /// file's, then the automatic rule (an X server's primary DRM card is
    /// reattached: `use_`), then the built-in rules. So any rule naming
    /// the card or its class, on the command line or in the file, wins
    /// over the automatic Reattach.
    pub fn decide(&self, devnum: (u32, u32), class: Option<&str>, use_: Use) -> Decision {
        let layers = [
            Some((&self.flags, Origin::Flag)),
            self.file
                .as_ref()
                .map(|(p, r)| (r, Origin::File(p.clone()))),
        ];
        for (rules, origin) in layers.into_iter().flatten() {
            if let Some((sel, policy)) = rules.get(devnum, class) {
                return Decision {
                    policy,
                    rule: Some((sel, origin)),
                };
            }
        }
        if use_ == Use::PrimaryCard {
            return Decision {
                policy: Policy::Reattach,
                rule: Some((Selector::Devnum(devnum.0, devnum.1), Origin::Automatic)),
            };
        }
        if let Some(&(_, policy, _)) = BUILTIN_DEVICES.iter().find(|d| d.0 == devnum) {
            return Decision {
                policy,
                rule: Some((Selector::Devnum(devnum.0, devnum.1), Origin::BuiltIn)),
            };
        }
        match class.and_then(|c| BUILTIN_CLASSES.iter().find(|b| b.0 == c)) {
            Some(&(c, policy, _)) => Decision {
                policy,
                rule: Some((Selector::Class(c.into()), Origin::BuiltIn)),
            },
            None => Decision {
                policy: Policy::Refuse,
                rule: None,
            },
        }
    }

    /// Classify char device `major:minor` opened (or mapped) at `path`.
    pub fn classify(&self, path: &Path, major: u32, minor: u32, use_: Use) -> Classified {
        let identity = self.roots.char_device(major, minor);
        let class = identity.as_ref().map(|i| i.subsystem.clone());
        let decision = self.decide((major, minor), class.as_deref(), use_);
        Classified {
            path: path.to_path_buf(),
            devnum: (major, minor),
            identity,
            decision,
        }
    }
}

/// Read a configuration file; Ok(None) when it does not exist.
fn read_config(path: &Path) -> Result<Option<Config>, DeviceError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DeviceError::ReadConfig {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| DeviceError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(DeviceError::ConfigTooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    parse_config(path, &text).map(Some)
}

/// A char device with its identity and policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub path: PathBuf,
    pub devnum: (u32, u32),
    /// None when sysfs does not know the device number.
    pub identity: Option<DeviceIdentity>,
    pub decision: Decision,
}

impl Classified {
    pub fn class(&self) -> &str {
        match &self.identity {
            Some(i) if !i.subsystem.is_empty() => &i.subsystem,
            _ => "unknown",
        }
    }

    /// "char device /dev/dri/card0 (226:0), class drm".
    pub fn describe(&self) -> String {
        describe(&self.path, self.devnum, self.class())
    }

    /// The device's name and sysfs path, and the rule that decided.
    pub fn reason(&self, what_happens: &str) -> String {
        let name = match &self.identity {
            Some(i) => format!(
                "{} at {}",
                i.devname.as_deref().unwrap_or("(no DEVNAME)"),
                i.devpath
            ),
            None => "not in sysfs".into(),
        };
        format!("{name}; {}: {what_happens}", self.decision.describe_rule())
    }
}

pub fn describe(path: &Path, devnum: (u32, u32), class: &str) -> String {
    format!(
        "char device {} ({}:{}), class {class}",
        path.display(),
        devnum.0,
        devnum.1
    )
}

#[cfg(test)]
mod tests {
    use super::super::sysfs::tests::*;
    use super::*;

    #[test]
    fn builtin_table() {
        let p = DevicePolicies::default();
        let d = |ma, mi, class| p.decide((ma, mi), Some(class), Use::Plain).policy;
        assert_eq!(d(1, 5, "mem"), Policy::Reopen);
        assert_eq!(
            d(1, 1, "mem"),
            Policy::Refuse,
            "/dev/mem overrides its class"
        );
        assert_eq!(d(226, 0, "drm"), Policy::Detach);
        assert_eq!(d(226, 128, "drm"), Policy::Detach);
        assert_eq!(d(13, 64, "input"), Policy::Detach);
        assert_eq!(d(116, 2, "sound"), Policy::Detach);
        assert_eq!(d(81, 0, "video4linux"), Policy::Detach);
        assert_eq!(d(10, 229, "misc"), Policy::Refuse);
        assert_eq!(p.decide((250, 0), None, Use::Plain).policy, Policy::Refuse);
        assert_eq!(
            p.decide((250, 0), None, Use::Plain).describe_rule(),
            "no rule for its class"
        );
    }

    #[test]
    fn config_file_format() {
        let path = Path::new("/etc/hiber/devices.toml");
        let rules = parse_config(
            path,
            "[classes]\ndrm = \"reattach\"\nmisc = \"Detach\"\n[devices]\n\"1:5\" = \"detach\"\n",
        )
        .unwrap()
        .rules;
        assert_eq!(rules.rules.len(), 3);
        assert_eq!(rules.rules[&Selector::Devnum(1, 5)], Policy::Detach);
        assert_eq!(rules.rules[&Selector::Class("misc".into())], Policy::Detach);
        let reattach = parse_config(path, "[reattach]\nsignal = \"SIGUSR2\"\n").unwrap();
        assert_eq!(reattach.reattach_signal.as_deref(), Some("SIGUSR2"));
        assert_eq!(reattach.rules, Rules::default());
        for bad in [
            "[reattach]\nsignal = \"KILL\"\n",
            "[reattach]\nsignl = \"USR1\"\n",
            "[classes]\ndrm = \"restore\"\n",
            "[devices]\ndrm = \"detach\"\n",
            "[classes]\n\"1:5\" = \"detach\"\n",
            "[devices]\n\"1:99999999\" = \"detach\"\n",
            "[other]\nx = 1\n",
            "[classes]\n\"Bad Name\" = \"detach\"\n",
            "not toml",
        ] {
            let e = parse_config(path, bad).expect_err(bad);
            assert!(e.to_string().contains("devices.toml"), "{e}");
        }
    }

    #[test]
    fn flags_parse() {
        let r = parse_flags(&["sound=refuse", "13:64=reopen"]).unwrap();
        assert_eq!(r.rules[&Selector::Class("sound".into())], Policy::Refuse);
        assert_eq!(r.rules[&Selector::Devnum(13, 64)], Policy::Reopen);
        assert!(parse_flags(&["sound"]).is_err());
        assert!(parse_flags(&["sound=maybe"]).is_err());
        assert!(parse_flags(&["=detach"]).is_err());
    }

    #[test]
    fn flag_over_file_over_builtin() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("devices.toml");
        std::fs::write(
            &file,
            "[classes]\nmem = \"refuse\"\ndrm = \"refuse\"\n[devices]\n\"1:5\" = \"detach\"\n",
        )
        .unwrap();
        // Built-in alone.
        let p = DevicePolicies::load(Some(&t.path().join("absent.toml")), &[] as &[&str]).unwrap();
        assert_eq!(p.file, None, "an absent file is no error");
        assert_eq!(
            p.decide((1, 5), Some("mem"), Use::Plain).policy,
            Policy::Reopen
        );
        // The file over the built-in, its device rule over its class rule.
        let p = DevicePolicies::load(Some(&file), &[] as &[&str]).unwrap();
        let d = p.decide((1, 5), Some("mem"), Use::Plain);
        assert_eq!(d.policy, Policy::Detach);
        assert_eq!(
            d.describe_rule(),
            format!("device 1:5 ({})", file.display())
        );
        assert_eq!(
            p.decide((1, 3), Some("mem"), Use::Plain).policy,
            Policy::Refuse
        );
        assert_eq!(
            p.decide((226, 0), Some("drm"), Use::Plain).policy,
            Policy::Refuse
        );
        // A flag over the file, even a class flag over a file's device rule.
        let p = DevicePolicies::load(Some(&file), &["mem=reopen", "226:0=reattach"]).unwrap();
        let d = p.decide((1, 5), Some("mem"), Use::Plain);
        assert_eq!(d.policy, Policy::Reopen);
        assert_eq!(d.describe_rule(), "class mem (--device-policy)");
        assert_eq!(
            p.decide((226, 0), Some("drm"), Use::Plain).policy,
            Policy::Reattach
        );
        assert_eq!(
            p.decide((226, 1), Some("drm"), Use::Plain).policy,
            Policy::Refuse
        );
        assert_eq!(p.reattach_signal, "USR1", "the default signal");
        std::fs::write(&file, "[reattach]\nsignal = \"USR2\"\n").unwrap();
        let p = DevicePolicies::load(Some(&file), &[] as &[&str]).unwrap();
        assert_eq!(p.reattach_signal, "USR2");
        // A broken file is an error, not a silent fallback.
        std::fs::write(&file, "[classes]\ndrm = 3\n").unwrap();
        assert!(DevicePolicies::load(Some(&file), &[] as &[&str]).is_err());
    }

    fn fixture_machine(root: &Path) -> DevicePolicies {
        fake_device(
            root,
            (226, 0),
            "/devices/pci0000:00/0000:00:02.0/drm/card0",
            "drm",
            DRM_CARD0_UEVENT,
            Some(DRM_CARD0_UDEV),
        );
        fake_device(
            root,
            (13, 64),
            "/devices/platform/i8042/serio0/input/input3/event0",
            "input",
            EVDEV_UEVENT,
            None,
        );
        fake_device(
            root,
            (116, 2),
            "/devices/pci0000:00/0000:00:1f.3/sound/card0/pcmC0D0p",
            "sound",
            ALSA_PCM_UEVENT,
            None,
        );
        DevicePolicies {
            roots: roots(root),
            ..DevicePolicies::default()
        }
    }

    #[test]
    fn drm_evdev_and_alsa_nodes_are_detached_with_their_names() {
        let t = tempfile::tempdir().unwrap();
        let p = fixture_machine(t.path());
        for (devnum, node, class, name) in [
            ((226, 0), "/dev/dri/card0", "drm", "dri/card0"),
            ((13, 64), "/dev/input/event0", "input", "input/event0"),
            ((116, 2), "/dev/snd/pcmC0D0p", "sound", "snd/pcmC0D0p"),
        ] {
            let c = p.classify(Path::new(node), devnum.0, devnum.1, Use::Plain);
            assert_eq!(c.decision.policy, Policy::Detach, "{node}");
            assert_eq!(
                c.describe(),
                format!(
                    "char device {node} ({}:{}), class {class}",
                    devnum.0, devnum.1
                )
            );
            let reason = c.reason("detached");
            assert!(reason.starts_with(name), "{reason}");
            assert!(
                reason.contains(&format!("class {class} (built-in)")),
                "{reason}"
            );
        }
        let card = p.classify(Path::new("/dev/dri/card0"), 226, 0, Use::Plain);
        let id = card.identity.expect("in the fixture tree");
        assert_eq!(id.devtype.as_deref(), Some("drm_minor"));
        assert_eq!(
            id.udev.map(|u| u.tags),
            Some(vec![
                "seat".into(),
                "uaccess".into(),
                "master-of-seat".into()
            ])
        );
        let unknown = p.classify(Path::new("/dev/odd"), 240, 0, Use::Plain);
        assert_eq!(unknown.class(), "unknown");
        assert_eq!(unknown.decision.policy, Policy::Refuse);
    }
}
