//! The app's view state in plain Rust types: what a snapshot, a finding
//! and a job look like to the user, with the words and numbers the widgets
//! show. No GTK here, so the unit tests drive it without a display.

use std::collections::HashMap;
use zbus::zvariant::OwnedValue;

/// One snapshot as `org.hiber.Hiber1.Snapshot` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    /// Its object path on the bus.
    pub path: String,
    pub id: String,
    pub name: String,
    pub display: String,
    /// Microseconds since the epoch.
    pub created_us: u64,
    /// manual, logout or sleep.
    pub kind: String,
    /// Bytes only this snapshot uses: what deleting it frees.
    pub size: u64,
    pub total_size: u64,
    /// (title, class) of each window.
    pub windows: Vec<(String, String)>,
    pub detached: Vec<String>,
    pub screens: u32,
    pub restorable: bool,
    pub problem: String,
    /// Saved at logout (or before a sleep) and not brought back yet:
    /// offered at the next login.
    pub pending: bool,
}

fn prop<T>(props: &HashMap<String, OwnedValue>, key: &str) -> Result<T, String>
where
    T: TryFrom<OwnedValue>,
{
    let v = props
        .get(key)
        .ok_or_else(|| format!("property {key} is missing"))?;
    let v = v.try_clone().map_err(|e| format!("property {key}: {e}"))?;
    T::try_from(v).map_err(|_| format!("property {key} has the wrong type"))
}

impl SnapshotInfo {
    /// From the properties `GetAll` returned for the object at `path`.
    pub fn from_properties(
        path: &str,
        props: &HashMap<String, OwnedValue>,
    ) -> Result<Self, String> {
        Ok(Self {
            path: path.to_string(),
            id: prop(props, "Id")?,
            name: prop(props, "Name")?,
            display: prop(props, "Display")?,
            created_us: prop(props, "Created")?,
            kind: prop(props, "Kind")?,
            size: prop(props, "Size")?,
            total_size: prop(props, "TotalSize")?,
            windows: prop(props, "Windows")?,
            detached: prop(props, "Detached")?,
            // Older hiberd builds had no Screens: one screen then.
            screens: prop(props, "Screens").unwrap_or(1),
            restorable: prop(props, "Restorable")?,
            problem: prop(props, "Problem")?,
            // Older hiberd builds had no Pending: nothing is then.
            pending: prop(props, "Pending").unwrap_or(false),
        })
    }

    /// The line under the name: "2 hours ago · 18 MB · 3 windows".
    pub fn summary(&self, now_us: u64) -> String {
        let windows = match self.windows.len() {
            1 => "1 window".to_string(),
            n => format!("{n} windows"),
        };
        let mut s = format!(
            "{} · {} · {windows}",
            relative_date(self.created_us, now_us),
            human_size(self.size)
        );
        if self.pending {
            s.push_str(" · waiting to be restored");
        }
        if !self.restorable {
            s.push_str(" · cannot be restored");
        }
        s
    }

    /// What pending means, for the details view.
    pub fn pending_words(&self) -> Option<&'static str> {
        self.pending.then_some(match self.kind.as_str() {
            "sleep" => "Saved before a sleep the computer did not wake from; offered back at your next login",
            _ => "Saved when you logged out; offered back at your next login",
        })
    }

    /// The offer at login: what the snapshot holds, in one sentence.
    pub fn offer_text(&self, now_us: u64) -> String {
        let when = relative_date(self.created_us, now_us);
        let why = match self.kind.as_str() {
            "sleep" => "before the computer went to sleep",
            _ => "when you logged out",
        };
        let windows = match self.windows.len() {
            0 => "no windows".to_string(),
            1 => "1 window".to_string(),
            n => format!("{n} windows"),
        };
        let mut names: Vec<&str> = self
            .windows
            .iter()
            .map(|(title, class)| {
                if title.is_empty() {
                    class.as_str()
                } else {
                    title.as_str()
                }
            })
            .filter(|n| !n.is_empty())
            .take(3)
            .collect();
        names.dedup();
        let list = if names.is_empty() {
            String::new()
        } else {
            format!(": {}", names.join(", "))
        };
        format!(
            "Your session on display {} was saved {why}, {when}, with {windows}{list}.",
            self.display
        )
    }

    /// What the kind means, for the details view.
    pub fn kind_words(&self) -> &str {
        match self.kind.as_str() {
            "manual" => "Saved by hand",
            "logout" => "Saved at log out",
            "sleep" => "Saved before sleep",
            other => other,
        }
    }
}

/// Newest first, the order the list shows.
pub fn sort_newest_first(snapshots: &mut [SnapshotInfo]) {
    snapshots.sort_by(|a, b| b.created_us.cmp(&a.created_us).then(a.id.cmp(&b.id)));
}

/// "just now", "5 minutes ago", "2 hours ago", "yesterday", "3 days ago".
pub fn relative_date(then_us: u64, now_us: u64) -> String {
    let secs = now_us.saturating_sub(then_us) / 1_000_000;
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        0..=59 => "just now".into(),
        60..=3599 => plural(secs / 60, "minute"),
        3600..=86_399 => plural(secs / 3600, "hour"),
        86_400..=172_799 => "yesterday".into(),
        _ if secs < 60 * 86_400 => plural(secs / 86_400, "day"),
        _ if secs < 730 * 86_400 => plural(secs / (30 * 86_400), "month"),
        _ => plural(secs / (365 * 86_400), "year"),
    }
}

/// Sizes in SI units as GNOME shows them ("18 MB", "1.2 GB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return if bytes == 1 {
            "1 byte".into()
        } else {
            format!("{bytes} bytes")
        };
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 999.5 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if v < 9.95 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// One finding of `CheckSession`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub pid: i32,
    /// What the resource is: "IPv4 TCP socket, connection, local port 22".
    pub kind: String,
    /// restore, reopen, detach, reattach, reset, refuse.
    pub policy: String,
    pub reason: String,
}

impl Finding {
    pub fn from_dict(d: &HashMap<String, OwnedValue>) -> Result<Self, String> {
        Ok(Self {
            pid: prop(d, "pid")?,
            kind: prop(d, "kind")?,
            policy: prop(d, "policy")?,
            reason: prop(d, "reason")?,
        })
    }

    /// What the user should know before saving, in plain words, with the
    /// program's name when it is known; `None` when the thing comes back as
    /// it was.
    pub fn sentence(&self, program: Option<&str>) -> Option<String> {
        let who = match program {
            Some(p) => format!("{p} (process {})", self.pid),
            None => format!("Process {}", self.pid),
        };
        let what = self.plain_kind();
        match self.policy.as_str() {
            "restore" | "reopen" | "reattach" => None,
            "detach" => Some(format!(
                "{who}: {what} will be disconnected, as if it was unplugged"
            )),
            "reset" => Some(format!("{who}: {what} will be closed ({})", self.reason)),
            "refuse" => Some(format!("{who} cannot be saved yet: {}", self.reason)),
            other => Some(format!("{who}: {what}: {other} ({})", self.reason)),
        }
    }

    /// "the network connection on local port 22" rather than the engine's
    /// "IPv4 TCP socket, connection, local port 22".
    fn plain_kind(&self) -> String {
        let k = self.kind.as_str();
        if k.contains("TCP socket") || k.contains("UDP socket") {
            let port = k
                .rsplit("local port ")
                .next()
                .filter(|_| k.contains("local port "));
            return match port {
                Some(p) => format!("the network connection from local port {p}"),
                None => "a network connection".into(),
            };
        }
        if k.starts_with("unix socket") {
            return "a connection to a program outside the session".into();
        }
        if k.starts_with("pidfd") {
            return "its handle on a process outside the session".into();
        }
        format!("the {k}")
    }
}

/// What `CheckSession` said, ready for the check dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub saveable: bool,
    /// One sentence per finding worth telling, deduplicated.
    pub sentences: Vec<String>,
}

impl CheckReport {
    pub fn new(saveable: bool, findings: &[Finding], comm: impl Fn(i32) -> Option<String>) -> Self {
        let mut sentences = Vec::new();
        for f in findings {
            if let Some(s) = f.sentence(comm(f.pid).as_deref()) {
                if !sentences.contains(&s) {
                    sentences.push(s);
                }
            }
        }
        Self {
            saveable,
            sentences,
        }
    }

    /// The check dialog's heading and text.
    pub fn question(&self) -> (&'static str, String) {
        let (heading, intro) = if self.saveable {
            (
                "Save This Session?",
                "Most of the session comes back as it is, but:",
            )
        } else {
            (
                "This Session Cannot Be Saved Yet",
                "Hiber cannot save this session now:",
            )
        };
        let mut body = intro.to_string();
        for s in &self.sentences {
            body.push_str("\n• ");
            body.push_str(s);
        }
        (heading, body)
    }

    /// Whether the user needs to be asked before saving.
    pub fn needs_asking(&self) -> bool {
        !self.saveable || !self.sentences.is_empty()
    }
}

/// A job's state as its properties tell it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobView {
    pub path: String,
    /// save or restore.
    pub operation: String,
    pub stage: String,
    pub progress: f64,
    pub progress_valid: bool,
    pub bytes: u64,
    pub rate: u64,
    pub cancelable: bool,
}

impl JobView {
    pub fn new(path: &str) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }

    /// Apply (some of) its properties, as `GetAll` or `PropertiesChanged`
    /// sent them; unknown or mistyped ones are left as they were.
    pub fn update(&mut self, props: &HashMap<String, OwnedValue>) {
        if let Ok(v) = prop(props, "Operation") {
            self.operation = v;
        }
        if let Ok(v) = prop(props, "Stage") {
            self.stage = v;
        }
        if let Ok(v) = prop(props, "Progress") {
            self.progress = v;
        }
        if let Ok(v) = prop(props, "ProgressValid") {
            self.progress_valid = v;
        }
        if let Ok(v) = prop(props, "Bytes") {
            self.bytes = v;
        }
        if let Ok(v) = prop(props, "Rate") {
            self.rate = v;
        }
        if let Ok(v) = prop(props, "Cancelable") {
            self.cancelable = v;
        }
    }

    /// "Saving: writing memory · 40 MB/s".
    pub fn title(&self) -> String {
        let op = match self.operation.as_str() {
            "save" => "Saving the session",
            "restore" => "Restoring the session",
            "" => "Working",
            other => other,
        };
        let mut s = if self.stage.is_empty() {
            op.to_string()
        } else {
            format!("{op}: {}", self.stage)
        };
        if self.rate > 0 {
            s.push_str(&format!(" · {}/s", human_size(self.rate)));
        }
        s
    }
}

/// A job's end, as its `Completed` signal said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    pub success: bool,
    pub error: String,
    pub message: String,
}

impl JobEnd {
    /// Cancelled by the user: no error dialog for that.
    pub fn cancelled(&self) -> bool {
        self.error == "org.hiber.Hiber1.Error.Cancelled"
    }

    /// Where a successful restore put the session: the display hiberd's
    /// message names when it is not the saved one, else the saved one.
    pub fn restored_on(&self, saved: &str) -> String {
        self.message
            .strip_prefix("restored on display ")
            .and_then(|m| m.split_whitespace().next())
            .filter(|d| d.starts_with(':'))
            .unwrap_or(saved)
            .to_string()
    }
}

/// What the offer at login says once the session is back: where, and how
/// to get there (the key of its virtual terminal, when that is known).
pub fn restored_words(on: &str, saved: &str, vt: Option<u32>) -> (String, String) {
    let title = format!("Your session is back on display {on}");
    let keys = match vt {
        Some(n) => format!("Press Ctrl+Alt+F{n} to switch to it (its X server is on virtual terminal {n}), or use your login screen's “Switch User”."),
        None => "Switch to it as you switch between logged-in users: with your login screen's “Switch User”, or the Ctrl+Alt+F key of the virtual terminal its X server runs on.".to_string(),
    };
    let how = format!("{keys} Programs you start there from this login need DISPLAY=");
    let body = if on == saved {
        format!("It runs where it was saved. {how}{on}.")
    } else {
        format!(
            "Display {saved}, where it was saved, is this login's now, so it came back on {on}. {how}{on}."
        )
    };
    (title, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::Value;

    fn owned(v: Value<'_>) -> OwnedValue {
        OwnedValue::try_from(v).unwrap()
    }

    fn props() -> HashMap<String, OwnedValue> {
        HashMap::from([
            ("Id".into(), owned("20261206-1".into())),
            ("Name".into(), owned("Before the meeting".into())),
            ("OwnerUid".into(), owned(1500u32.into())),
            ("Display".into(), owned(":7".into())),
            ("Created".into(), owned(1_000_000_000u64.into())),
            ("Kind".into(), owned("manual".into())),
            ("Size".into(), owned(18_000_000u64.into())),
            ("TotalSize".into(), owned(30_000_000u64.into())),
            (
                "Windows".into(),
                owned(vec![("xterm".to_string(), "XTerm".to_string())].into()),
            ),
            ("Detached".into(), owned(Vec::<String>::new().into())),
            ("Screens".into(), owned(1u32.into())),
            ("Restorable".into(), owned(true.into())),
            ("Problem".into(), owned("".into())),
            ("Pending".into(), owned(false.into())),
        ])
    }

    #[test]
    fn snapshot_from_properties_and_summary() {
        let s = SnapshotInfo::from_properties("/org/hiber/Hiber1/s/1", &props()).unwrap();
        assert_eq!(s.name, "Before the meeting");
        assert_eq!(s.windows, vec![("xterm".into(), "XTerm".into())]);
        let two_hours = 2 * 3600 * 1_000_000;
        assert_eq!(
            s.summary(s.created_us + two_hours),
            "2 hours ago · 18 MB · 1 window"
        );
    }

    #[test]
    fn pending_snapshots_say_so_and_restores_say_where() {
        let mut p = props();
        p.insert("Pending".into(), owned(true.into()));
        p.insert("Kind".into(), owned("logout".into()));
        let s = SnapshotInfo::from_properties("/x", &p).unwrap();
        assert!(s.summary(s.created_us).ends_with("waiting to be restored"));
        assert!(s.pending_words().unwrap().contains("logged out"));
        assert_eq!(
            s.offer_text(s.created_us + 300_000_000),
            "Your session on display :7 was saved when you logged out, 5 minutes ago, with 1 window: xterm."
        );
        let moved = JobEnd {
            success: true,
            error: String::new(),
            message: "restored on display :8 (saved on :7, which another X server holds)".into(),
        };
        assert_eq!(moved.restored_on(":7"), ":8");
        let home = JobEnd {
            message: String::new(),
            ..moved
        };
        assert_eq!(home.restored_on(":7"), ":7");
        let (title, body) = restored_words(":8", ":7", None);
        assert_eq!(title, "Your session is back on display :8");
        assert!(body.contains("Display :7, where it was saved") && body.ends_with("DISPLAY=:8."));
        let (_, body) = restored_words(":7", ":7", Some(2));
        assert!(body.starts_with("It runs where it was saved. Press Ctrl+Alt+F2 to switch to it"));
    }

    #[test]
    fn a_missing_property_is_named() {
        let mut p = props();
        p.remove("Size");
        let e = SnapshotInfo::from_properties("/x", &p).unwrap_err();
        assert!(e.contains("Size"), "{e}");
        let mut p = props();
        p.insert("Size".into(), owned("big".into()));
        let e = SnapshotInfo::from_properties("/x", &p).unwrap_err();
        assert!(e.contains("wrong type"), "{e}");
    }

    #[test]
    fn newest_first() {
        let base = SnapshotInfo::from_properties("/a", &props()).unwrap();
        let mut v: Vec<_> = [3u64, 9, 1]
            .iter()
            .map(|&c| SnapshotInfo {
                created_us: c,
                id: c.to_string(),
                ..base.clone()
            })
            .collect();
        sort_newest_first(&mut v);
        let order: Vec<_> = v.iter().map(|s| s.created_us).collect();
        assert_eq!(order, [9, 3, 1]);
    }

    #[test]
    fn relative_dates() {
        let now = 2_000_000_000 * 1_000_000u64;
        let ago = |s: u64| relative_date(now - s * 1_000_000, now);
        assert_eq!(ago(5), "just now");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(5 * 60 + 30), "5 minutes ago");
        assert_eq!(ago(2 * 3600), "2 hours ago");
        assert_eq!(ago(30 * 3600), "yesterday");
        assert_eq!(ago(3 * 86_400), "3 days ago");
        assert_eq!(ago(90 * 86_400), "3 months ago");
        assert_eq!(ago(3 * 365 * 86_400), "3 years ago");
        // A clock set back shows "just now", not a huge number.
        assert_eq!(relative_date(now + 5, now), "just now");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 bytes");
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(999), "999 bytes");
        assert_eq!(human_size(1000), "1.0 kB");
        assert_eq!(human_size(18_000_000), "18 MB");
        assert_eq!(human_size(1_234_000_000), "1.2 GB");
        assert_eq!(human_size(999_999), "1.0 MB");
    }

    fn finding(kind: &str, policy: &str, reason: &str) -> Finding {
        Finding {
            pid: 42,
            kind: kind.into(),
            policy: policy.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn findings_in_plain_words() {
        let tcp = finding(
            "IPv4 TCP socket, connection, local port 51514",
            "reset",
            "a live TCP connection cannot be moved",
        );
        assert_eq!(
            tcp.sentence(Some("ssh")).unwrap(),
            "ssh (process 42): the network connection from local port 51514 will be closed (a live TCP connection cannot be moved)"
        );
        let refuse = finding("process", "refuse", "its sandbox uses a nested namespace");
        assert_eq!(
            refuse.sentence(Some("firefox-esr")).unwrap(),
            "firefox-esr (process 42) cannot be saved yet: its sandbox uses a nested namespace"
        );
        let gone = finding("character device /dev/video0", "detach", "a camera");
        assert_eq!(
            gone.sentence(None).unwrap(),
            "Process 42: the character device /dev/video0 will be disconnected, as if it was unplugged"
        );
        assert_eq!(finding("pipe", "restore", "").sentence(None), None);
    }

    #[test]
    fn check_report_asks_only_when_something_changes() {
        let quiet = CheckReport::new(true, &[finding("pipe", "restore", "")], |_| None);
        assert!(!quiet.needs_asking());
        let f = finding("pidfd of pid 9", "reset", "outside");
        let loud = CheckReport::new(true, &[f.clone(), f], |_| Some("bash".into()));
        assert_eq!(loud.sentences.len(), 1, "{:?}", loud.sentences);
        assert!(loud.needs_asking());
        assert!(CheckReport::new(false, &[], |_| None).needs_asking());
        let (heading, body) = loud.question();
        assert_eq!(heading, "Save This Session?");
        assert!(
            body.ends_with(
                "\n• bash (process 42): its handle on a process outside the session will be closed (outside)"
            ),
            "{body}"
        );
    }

    #[test]
    fn job_view_follows_its_properties() {
        let mut j = JobView::new("/org/hiber/Hiber1/job/1");
        j.update(&HashMap::from([
            ("Operation".into(), owned("save".into())),
            ("Stage".into(), owned("writing memory".into())),
            ("Progress".into(), owned(0.5f64.into())),
            ("Rate".into(), owned(40_000_000u64.into())),
        ]));
        assert_eq!(j.progress, 0.5);
        assert_eq!(j.title(), "Saving the session: writing memory · 40 MB/s");
        // A mistyped value is ignored rather than zeroing the bar.
        j.update(&HashMap::from([("Progress".into(), owned("x".into()))]));
        assert_eq!(j.progress, 0.5);
    }
}
