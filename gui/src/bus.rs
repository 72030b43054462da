//! hiberd on the system bus, seen from the app.
//!
//! The workspace builds zbus with its `tokio` feature (hiberd needs it),
//! and cargo unifies a dependency's features across the workspace: a gui
//! crate asking for zbus's own `async-io` executor would still get a zbus
//! that expects to run inside tokio. So every bus call runs on a tokio
//! runtime thread ([`on_bus`]) and the GLib main loop awaits its
//! `JoinHandle`, which any executor may poll: the UI thread never blocks.

use crate::model::{Finding, JobEnd, SnapshotInfo};
use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};
use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};
use zbus::{proxy, Connection, DBusError, MatchRule, MessageStream};

pub const BUS_NAME: &str = "org.hiber.Hiber1";
const SNAPSHOT_IFACE: &str = "org.hiber.Hiber1.Snapshot";
const JOB_IFACE: &str = "org.hiber.Hiber1.Job";
/// A call hiberd has not answered by then is reported, never waited on
/// for ever (a hung service must not hang the app).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[proxy(
    interface = "org.hiber.Hiber1.Manager",
    default_service = "org.hiber.Hiber1",
    default_path = "/org/hiber/Hiber1",
    gen_blocking = false
)]
trait Manager {
    fn check_session(
        &self,
        display: &str,
    ) -> zbus::Result<(bool, Vec<HashMap<String, OwnedValue>>)>;
    fn save_session(
        &self,
        display: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn list_snapshots(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
    fn set_save_before_sleep(&self, enabled: bool) -> zbus::Result<()>;
    fn get_save_before_sleep(&self) -> zbus::Result<bool>;
}

#[proxy(
    interface = "org.hiber.Hiber1.Snapshot",
    default_service = "org.hiber.Hiber1",
    gen_blocking = false
)]
trait Snapshot {
    fn restore(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<OwnedObjectPath>;
    fn rename(&self, name: &str) -> zbus::Result<()>;
    fn clear_pending(&self) -> zbus::Result<()>;
    fn delete(&self) -> zbus::Result<()>;
    fn open_screenshot(&self, screen: u32) -> zbus::Result<zbus::zvariant::OwnedFd>;
}

#[proxy(
    interface = "org.hiber.Hiber1.Job",
    default_service = "org.hiber.Hiber1",
    gen_blocking = false
)]
trait Job {
    fn cancel(&self) -> zbus::Result<()>;
}

/// Why hiberd could not be used, in the terms the status page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No system bus to talk to.
    NoBus(String),
    /// Nothing on the bus is or can become org.hiber.Hiber1.
    NotInstalled,
    /// hiberd is installed but could not be started, or went away.
    NotRunning(String),
    /// The bus policy or hiberd (polkit) said no.
    Refused(String),
    /// hiberd did not answer in time.
    NoAnswer,
    /// hiberd answered with an error of its own.
    Hiberd { name: String, message: String },
}

impl Failure {
    pub fn from_zbus(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, message, _) => {
                Self::from_name(name.as_str(), message.unwrap_or_default())
            }
            zbus::Error::FDO(e) => match *e {
                zbus::fdo::Error::ZBus(inner) => Self::from_zbus(inner),
                zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                    Self::NotInstalled
                }
                zbus::fdo::Error::AccessDenied(m) => Self::Refused(m),
                zbus::fdo::Error::NoReply(_) | zbus::fdo::Error::Timeout(_) => Self::NoAnswer,
                other => Self::from_name(
                    other.name().as_str(),
                    other.description().unwrap_or_default().to_string(),
                ),
            },
            zbus::Error::InputOutput(e) => Self::NoBus(e.to_string()),
            zbus::Error::Address(m) => Self::NoBus(m),
            other => Self::Hiberd {
                name: "org.hiber.Hiber1.Error.Failed".into(),
                message: other.to_string(),
            },
        }
    }

    fn from_name(name: &str, message: String) -> Self {
        match name {
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner" => Self::NotInstalled,
            "org.freedesktop.DBus.Error.AccessDenied" | "org.hiber.Hiber1.Error.NotAuthorized" => {
                Self::Refused(message)
            }
            "org.freedesktop.DBus.Error.NoReply" | "org.freedesktop.DBus.Error.Timeout" => {
                Self::NoAnswer
            }
            n if n.starts_with("org.freedesktop.DBus.Error.Spawn") => Self::NotRunning(message),
            _ => Self::Hiberd {
                name: name.to_string(),
                message,
            },
        }
    }

    /// Whether the app as a whole cannot work (the status page), rather
    /// than one operation failing (a dialog).
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, Self::Hiberd { .. } | Self::Refused(_))
    }

    /// What went wrong in a few words, to put inside a sentence.
    pub fn short(&self) -> String {
        match self {
            Self::NoBus(e) => format!("the system bus cannot be reached ({e})"),
            Self::NotInstalled => "hiberd is not installed".into(),
            Self::NotRunning(e) => format!("hiberd could not be started ({e})"),
            Self::Refused(e) => format!("hiberd refused ({e})"),
            Self::NoAnswer => "hiberd did not answer".into(),
            Self::Hiberd { message, .. } => message.clone(),
        }
    }

    /// A title and what to do, for the status page or a dialog.
    pub fn words(&self) -> (String, String) {
        match self {
            Self::NoBus(e) => (
                "No System Bus".into(),
                format!("The app talks to Hiber's service over the system bus, which cannot be reached ({e}). Check that dbus is running, then try again."),
            ),
            Self::NotInstalled => (
                "Hiber's Service Is Not Installed".into(),
                "The app needs hiberd, which is not installed on this computer. Install Hiber's service (hiberd), then try again.".into(),
            ),
            Self::NotRunning(e) => (
                "Hiber's Service Is Not Running".into(),
                format!("hiberd is installed but could not be started ({e}). Ask your administrator to look at its log, then try again."),
            ),
            Self::Refused(e) => (
                "Not Allowed".into(),
                format!("Hiber's service refused this account: {e}. Ask your administrator for permission to save sessions."),
            ),
            Self::NoAnswer => (
                "Hiber's Service Does Not Answer".into(),
                "hiberd did not reply in time. Try again in a moment.".into(),
            ),
            Self::Hiberd { name, message } => {
                let short = name.rsplit('.').next().unwrap_or(name);
                (short.to_string(), message.clone())
            }
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (title, text) = self.words();
        write!(f, "{title}: {text}")
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hiber-bus")
            .enable_all()
            .build()
            .expect("a tokio runtime for the bus (threads and an epoll fd)")
    })
}

/// Run `work` on the bus thread; await the result from any executor (the
/// GLib main loop's, here). It gives up after [`CALL_TIMEOUT`].
pub async fn on_bus<T, F>(work: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Failure>> + Send + 'static,
{
    let handle = runtime().spawn(async move {
        tokio::time::timeout(CALL_TIMEOUT, work)
            .await
            .unwrap_or(Err(Failure::NoAnswer))
    });
    match handle.await {
        Ok(r) => r,
        Err(e) => Err(Failure::Hiberd {
            name: "org.hiber.Hiber1.Error.Failed".into(),
            message: format!("the bus thread failed: {e}"),
        }),
    }
}

/// What hiberd tells the app unasked.
#[derive(Debug)]
pub enum Event {
    SnapshotAdded(String),
    SnapshotRemoved(String),
    /// A snapshot's Name changed (it is invalidated, not sent).
    SnapshotChanged(String),
    JobChanged(String, HashMap<String, OwnedValue>),
    JobCompleted(String, JobEnd),
    /// hiberd left the bus (it stopped or crashed).
    ServiceGone,
    /// The app's own connection to the bus broke.
    ConnectionLost,
}

/// The app's connection to hiberd.
#[derive(Debug, Clone)]
pub struct Hiber {
    conn: Connection,
}

impl Hiber {
    /// Connect to the system bus and see that hiberd is there (or can be
    /// activated): a first `ListSnapshots` tells the app which page to
    /// show. Signals go to `events` from then on.
    pub async fn connect(
        events: UnboundedSender<Event>,
    ) -> Result<(Self, Vec<SnapshotInfo>), Failure> {
        let conn = Connection::system().await.map_err(Failure::from_zbus)?;
        let me = Self { conn };
        // Subscribe before listing, so a snapshot added in between is not
        // missed (the list merges by path).
        me.subscribe(events).await?;
        let list = me.snapshots().await?;
        Ok((me, list))
    }

    async fn subscribe(&self, events: UnboundedSender<Event>) -> Result<(), Failure> {
        let rule = |b: zbus::match_rule::Builder<'static>| b.build();
        let rules = [
            rule(
                MatchRule::builder()
                    .msg_type(zbus::message::Type::Signal)
                    .sender(BUS_NAME)
                    .map_err(Failure::from_zbus)?
                    .interface("org.hiber.Hiber1.Manager")
                    .map_err(Failure::from_zbus)?,
            ),
            rule(
                MatchRule::builder()
                    .msg_type(zbus::message::Type::Signal)
                    .sender(BUS_NAME)
                    .map_err(Failure::from_zbus)?
                    .interface(JOB_IFACE)
                    .map_err(Failure::from_zbus)?,
            ),
            rule(
                MatchRule::builder()
                    .msg_type(zbus::message::Type::Signal)
                    .sender(BUS_NAME)
                    .map_err(Failure::from_zbus)?
                    .interface("org.freedesktop.DBus.Properties")
                    .map_err(Failure::from_zbus)?,
            ),
            rule(
                MatchRule::builder()
                    .msg_type(zbus::message::Type::Signal)
                    .sender("org.freedesktop.DBus")
                    .map_err(Failure::from_zbus)?
                    .member("NameOwnerChanged")
                    .map_err(Failure::from_zbus)?
                    .add_arg(BUS_NAME)
                    .map_err(Failure::from_zbus)?,
            ),
        ];
        for r in rules {
            let mut stream = MessageStream::for_match_rule(r, &self.conn, Some(64))
                .await
                .map_err(Failure::from_zbus)?;
            let events = events.clone();
            tokio::spawn(async move {
                use futures_lite::StreamExt;
                while let Some(Ok(msg)) = stream.next().await {
                    if let Some(ev) = event_of(&msg) {
                        if events.send(ev).is_err() {
                            return;
                        }
                    }
                }
                // The connection broke: the bus went away, or this app
                // was restored from a snapshot and its socket was reset.
                let _ = events.send(Event::ConnectionLost);
            });
        }
        Ok(())
    }

    async fn manager(&self) -> Result<ManagerProxy<'static>, Failure> {
        ManagerProxy::builder(&self.conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(Failure::from_zbus)
    }

    async fn object<'a, P>(&self, path: &'a str) -> Result<P, Failure>
    where
        P: From<zbus::Proxy<'a>> + zbus::proxy::Defaults,
    {
        zbus::proxy::Builder::<P>::new(&self.conn)
            .path(path)
            .map_err(Failure::from_zbus)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(Failure::from_zbus)
    }

    /// The caller's snapshots, with their properties.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotInfo>, Failure> {
        let paths = self
            .manager()
            .await?
            .list_snapshots()
            .await
            .map_err(Failure::from_zbus)?;
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            match self.snapshot(p.as_str()).await {
                Ok(s) => out.push(s),
                // Deleted between the list and the read: not an error.
                Err(Failure::Hiberd { name, .. })
                    if name.ends_with("UnknownObject") || name.ends_with("UnknownMethod") =>
                {
                    debug!(path = %p, "snapshot gone while listing")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub async fn snapshot(&self, path: &str) -> Result<SnapshotInfo, Failure> {
        let props = PropertiesProxy::builder(&self.conn)
            .destination(BUS_NAME)
            .and_then(|b| b.path(path.to_string()))
            .map_err(Failure::from_zbus)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(Failure::from_zbus)?;
        let all = props
            .get_all(InterfaceName::from_static_str_unchecked(SNAPSHOT_IFACE))
            .await
            .map_err(|e| Failure::from_zbus(e.into()))?;
        SnapshotInfo::from_properties(path, &all).map_err(|message| Failure::Hiberd {
            name: "org.hiber.Hiber1.Error.Failed".into(),
            message: format!("snapshot {path}: {message}"),
        })
    }

    pub async fn job_properties(&self, path: &str) -> Result<HashMap<String, OwnedValue>, Failure> {
        let props = PropertiesProxy::builder(&self.conn)
            .destination(BUS_NAME)
            .and_then(|b| b.path(path.to_string()))
            .map_err(Failure::from_zbus)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(Failure::from_zbus)?;
        props
            .get_all(InterfaceName::from_static_str_unchecked(JOB_IFACE))
            .await
            .map_err(|e| Failure::from_zbus(e.into()))
    }

    pub async fn check(&self, display: &str) -> Result<(bool, Vec<Finding>), Failure> {
        let (ok, dicts) = self
            .manager()
            .await?
            .check_session(display)
            .await
            .map_err(Failure::from_zbus)?;
        let mut findings = Vec::with_capacity(dicts.len());
        for d in &dicts {
            match Finding::from_dict(d) {
                Ok(f) => findings.push(f),
                Err(e) => warn!(error = %e, "a finding the app cannot read"),
            }
        }
        Ok((ok, findings))
    }

    /// Start a save of `display`'s session; the job's path.
    pub async fn save(&self, display: &str) -> Result<String, Failure> {
        let job = self
            .manager()
            .await?
            .save_session(display, HashMap::from([("kind", Value::from("manual"))]))
            .await
            .map_err(Failure::from_zbus)?;
        Ok(job.to_string())
    }

    /// Whether hiberd saves this user's sessions before the machine sleeps.
    pub async fn save_before_sleep(&self) -> Result<bool, Failure> {
        self.manager()
            .await?
            .get_save_before_sleep()
            .await
            .map_err(Failure::from_zbus)
    }

    /// Opt in or out of saving before sleep; what hiberd keeps now.
    pub async fn set_save_before_sleep(&self, enabled: bool) -> Result<bool, Failure> {
        let manager = self.manager().await?;
        manager
            .set_save_before_sleep(enabled)
            .await
            .map_err(Failure::from_zbus)?;
        manager
            .get_save_before_sleep()
            .await
            .map_err(Failure::from_zbus)
    }

    /// Save `display`'s session and end it once the snapshot is committed
    /// and read back whole (hiberd's job): Save and Log Out.
    pub async fn save_and_log_out(&self, display: &str) -> Result<String, Failure> {
        let job = self
            .manager()
            .await?
            .save_session(
                display,
                HashMap::from([("kind", Value::from("logout")), ("stop", Value::from(true))]),
            )
            .await
            .map_err(Failure::from_zbus)?;
        Ok(job.to_string())
    }

    /// Restore on the saved display, or on the first free one above it
    /// when an X server (this login's) holds it.
    pub async fn restore_anywhere(&self, snapshot: &str) -> Result<String, Failure> {
        let p: SnapshotProxy<'_> = self.object(snapshot).await?;
        let job = p
            .restore(HashMap::from([("display", Value::from("free"))]))
            .await
            .map_err(Failure::from_zbus)?;
        Ok(job.to_string())
    }

    /// Keep a pending snapshot as an ordinary one (no longer offered).
    pub async fn clear_pending(&self, snapshot: &str) -> Result<(), Failure> {
        let p: SnapshotProxy<'_> = self.object(snapshot).await?;
        p.clear_pending().await.map_err(Failure::from_zbus)
    }

    pub async fn rename(&self, snapshot: &str, name: &str) -> Result<(), Failure> {
        let p: SnapshotProxy<'_> = self.object(snapshot).await?;
        p.rename(name).await.map_err(Failure::from_zbus)
    }

    pub async fn delete(&self, snapshot: &str) -> Result<(), Failure> {
        let p: SnapshotProxy<'_> = self.object(snapshot).await?;
        p.delete().await.map_err(Failure::from_zbus)
    }

    pub async fn cancel(&self, job: &str) -> Result<(), Failure> {
        let p: JobProxy<'_> = self.object(job).await?;
        p.cancel().await.map_err(Failure::from_zbus)
    }

    /// Screen `screen`'s PNG, read from the fd hiberd hands out.
    pub async fn screenshot(&self, snapshot: &str, screen: u32) -> Result<Vec<u8>, Failure> {
        let p: SnapshotProxy<'_> = self.object(snapshot).await?;
        let fd = p
            .open_screenshot(screen)
            .await
            .map_err(Failure::from_zbus)?;
        let fd: std::os::fd::OwnedFd = fd.into();
        tokio::task::spawn_blocking(move || {
            let mut png = Vec::new();
            std::fs::File::from(fd).read_to_end(&mut png).map(|_| png)
        })
        .await
        .map_err(|e| Failure::Hiberd {
            name: "org.hiber.Hiber1.Error.Failed".into(),
            message: e.to_string(),
        })?
        .map_err(|e| Failure::Hiberd {
            name: "org.hiber.Hiber1.Error.Failed".into(),
            message: format!("reading the screenshot of {snapshot}: {e}"),
        })
    }
}

/// The event a signal stands for, if the app cares.
fn event_of(msg: &zbus::Message) -> Option<Event> {
    let hdr = msg.header();
    let member = hdr.member()?.as_str().to_string();
    let iface = hdr.interface()?.as_str().to_string();
    let path = hdr.path()?.as_str().to_string();
    let body = msg.body();
    match (iface.as_str(), member.as_str()) {
        ("org.hiber.Hiber1.Manager", "SnapshotAdded") => {
            let p: ObjectPath<'_> = body.deserialize().ok()?;
            Some(Event::SnapshotAdded(p.to_string()))
        }
        ("org.hiber.Hiber1.Manager", "SnapshotRemoved") => {
            let p: ObjectPath<'_> = body.deserialize().ok()?;
            Some(Event::SnapshotRemoved(p.to_string()))
        }
        (JOB_IFACE, "Completed") => {
            let (success, error, message): (bool, String, String) = body.deserialize().ok()?;
            Some(Event::JobCompleted(
                path,
                JobEnd {
                    success,
                    error,
                    message,
                },
            ))
        }
        ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
            let (i, changed, _invalidated): (String, HashMap<String, OwnedValue>, Vec<String>) =
                body.deserialize().ok()?;
            match i.as_str() {
                JOB_IFACE => Some(Event::JobChanged(path, changed)),
                SNAPSHOT_IFACE => Some(Event::SnapshotChanged(path)),
                _ => None,
            }
        }
        ("org.freedesktop.DBus", "NameOwnerChanged") => {
            let (_name, _old, new): (String, String, String) = body.deserialize().ok()?;
            new.is_empty().then_some(Event::ServiceGone)
        }
        _ => None,
    }
}
