//! Save before sleep: the users who opted in (the store's
//! `save-before-sleep` file, one uid a line), a logind `delay` inhibitor
//! for sleep held while at least one did, and on `PrepareForSleep(true)` a
//! save (kind `sleep`, the session left running) of each display such a
//! user runs. The inhibitor is let go once those saves end, or before
//! logind's `InhibitDelayMaxUSec` runs out, whichever comes first; a save
//! still running then is cancelled (the session goes on as it was, no
//! snapshot is made). It is taken again on `PrepareForSleep(false)`.

use crate::auth::Caller;
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use futures_lite::StreamExt;
use hiber_session::system_store::{self, SaveKind, SaveRequest};
use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};
use zbus::zvariant::OwnedObjectPath;

/// logind's default InhibitDelayMaxSec, when its property cannot be read.
const DEFAULT_DELAY_MAX: Duration = Duration::from_secs(5);
/// How long before logind's deadline the inhibitor is let go at the
/// latest: a tenth of the delay, at most this much.
const MARGIN_MAX: Duration = Duration::from_millis(500);
/// How often hiberd tries again to take the inhibitor when logind was not
/// there.
const RETRY: Duration = Duration::from_secs(5);

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1",
    gen_blocking = false
)]
trait Login1 {
    fn inhibit(
        &self,
        what: &str,
        who: &str,
        why: &str,
        mode: &str,
    ) -> zbus::Result<zbus::zvariant::OwnedFd>;

    #[zbus(signal)]
    fn prepare_for_sleep(&self, start: bool) -> zbus::Result<()>;
}

/// Who opted in, and the inhibitor.
#[derive(Debug)]
pub struct Sleep {
    file: PathBuf,
    users: Mutex<BTreeSet<u32>>,
    /// The inhibitor's fd: logind delays sleep while it is open.
    lock: Mutex<Option<OwnedFd>>,
    /// Between PrepareForSleep(true) and (false): the inhibitor is not
    /// taken again (logind would wait for it once more).
    sleeping: std::sync::atomic::AtomicBool,
    changed: tokio::sync::Notify,
}

impl Sleep {
    /// The setting kept in `base` (the store), as it was left.
    pub fn load(base: &Path) -> Self {
        let file = base.join("save-before-sleep");
        let users = match std::fs::read_to_string(&file) {
            Ok(text) => text
                .lines()
                .filter_map(|l| {
                    let uid = l.trim().parse().ok();
                    if uid.is_none() && !l.trim().is_empty() {
                        warn!(file = %file.display(), line = l, "not a uid; ignored");
                    }
                    uid
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(error) => {
                warn!(file = %file.display(), %error, "cannot read who saves before sleep");
                BTreeSet::new()
            }
        };
        Self {
            file,
            users: Mutex::new(users),
            lock: Mutex::new(None),
            sleeping: false.into(),
            changed: tokio::sync::Notify::new(),
        }
    }

    pub fn users(&self) -> BTreeSet<u32> {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn enabled(&self, uid: u32) -> bool {
        self.users().contains(&uid)
    }

    /// Opt `uid` in or out; kept in the file before it is answered.
    pub fn set(&self, uid: u32, enabled: bool) -> Result<()> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = users.clone();
        if enabled {
            next.insert(uid);
        } else {
            next.remove(&uid);
        }
        // The file exists while anyone opted in: the hiberd-sleep.path unit
        // starts hiberd at boot on that alone.
        let written = if next.is_empty() {
            match std::fs::remove_file(&self.file) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        } else {
            let text: String = next.iter().map(|u| format!("{u}\n")).collect();
            let tmp = self.file.with_extension("tmp");
            std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.file))
        };
        written.map_err(|e| Error::Failed(format!("writing {}: {e}", self.file.display())))?;
        *users = next;
        drop(users);
        info!(uid, enabled, "save before sleep");
        self.changed.notify_one();
        Ok(())
    }

    fn holding(&self) -> bool {
        self.lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn release(&self) {
        if self
            .lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some()
        {
            info!("sleep inhibitor released");
        }
    }

    /// Take the inhibitor when someone opted in (and the system is not on
    /// its way to sleep), let it go when nobody did. False when it is
    /// wanted and logind refused or was not there.
    async fn sync(&self, logind: &Login1Proxy<'_>) -> bool {
        let want = !self.users().is_empty() && !self.sleeping.load(Ordering::Acquire);
        if !want {
            self.release();
            return true;
        }
        if self.holding() {
            return true;
        }
        match logind
            .inhibit("sleep", "Hiber", "Saving sessions before sleep", "delay")
            .await
        {
            Ok(fd) => {
                *self.lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(fd.into());
                info!("sleep inhibitor taken");
                true
            }
            Err(error) => {
                warn!(%error, "logind refused the sleep inhibitor");
                false
            }
        }
    }
}

/// logind's InhibitDelayMaxUSec.
async fn delay_max(conn: &zbus::Connection) -> Duration {
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination("org.freedesktop.login1")
        .and_then(|b| b.path("/org/freedesktop/login1"));
    let read = async {
        let props = props?.build().await?;
        let v = props
            .get(
                zbus::names::InterfaceName::from_static_str_unchecked(
                    "org.freedesktop.login1.Manager",
                ),
                "InhibitDelayMaxUSec",
            )
            .await?;
        u64::try_from(v).map_err(zbus::Error::from)
    };
    match read.await {
        Ok(us) => Duration::from_micros(us),
        Err(error) => {
            warn!(%error, default = ?DEFAULT_DELAY_MAX, "cannot read InhibitDelayMaxUSec");
            DEFAULT_DELAY_MAX
        }
    }
}

/// The displays whose X server runs as `uid`.
fn displays_of(uid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/tmp/.X11-unix") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix('X')?.parse().ok())
        .filter(|n| system_store::display_owner(*n).is_ok_and(|o| o == uid))
        .collect();
    out.sort_unstable();
    out
}

/// Follow logind for as long as hiberd runs.
pub async fn watch(daemon: Arc<Daemon>) {
    let conn = daemon.conn().clone();
    let logind = match Login1Proxy::new(&conn).await {
        Ok(p) => p,
        Err(error) => return warn!(%error, "no logind proxy: no saves before sleep"),
    };
    let mut signals = match logind.receive_prepare_for_sleep().await {
        Ok(s) => s,
        Err(error) => return warn!(%error, "cannot follow PrepareForSleep: no saves before sleep"),
    };
    // When the last sleep began (microseconds since the epoch): its
    // snapshots stop being pending once the machine is back.
    let mut slept_at: Option<u64> = None;
    loop {
        let settled = daemon.sleep.sync(&logind).await;
        let retry = async {
            if settled {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(RETRY).await
            }
        };
        tokio::select! {
            _ = daemon.sleep.changed.notified() => {}
            _ = retry => {}
            signal = signals.next() => {
                let Some(signal) = signal else {
                    return warn!("logind's signals ended: no saves before sleep");
                };
                match signal.args().map(|a| *a.start()) {
                    Ok(true) => {
                        slept_at = Some(system_store::now_us());
                        before_sleep(&daemon, &conn).await
                    }
                    Ok(false) => {
                        info!("resumed");
                        daemon.sleep.sleeping.store(false, Ordering::Release);
                        if let Some(since) = slept_at.take() {
                            let d = daemon.clone();
                            let cleared = tokio::task::spawn_blocking(move || resumed(&d, since))
                                .await
                                .unwrap_or_default();
                            for (uid, id) in cleared {
                                if let Some(path) = daemon.served(uid, &id) {
                                    daemon.refresh_snapshot(&path).await;
                                }
                            }
                        }
                    }
                    Err(error) => warn!(%error, "a PrepareForSleep without its argument"),
                }
            }
        }
    }
}

/// The machine is back: the sessions saved before this sleep ran on, so
/// their snapshots are no longer offered at the next login (one from a
/// sleep the machine never woke from stays pending).
fn resumed(daemon: &Daemon, since: u64) -> Vec<(u32, String)> {
    let mut cleared = Vec::new();
    for uid in daemon.sleep.users() {
        let Ok(entries) = daemon.store.list(uid) else {
            continue;
        };
        for e in entries
            .iter()
            .filter(|e| e.pending && e.kind == "sleep" && e.created_us >= since)
        {
            match daemon.store.set_pending(uid, &e.id, false) {
                Ok(()) => {
                    info!(uid, id = %e.id, "resumed: the sleep snapshot is no longer pending");
                    cleared.push((uid, e.id.clone()));
                }
                Err(error) => {
                    warn!(uid, id = %e.id, %error, "cannot clear a sleep snapshot's pending mark")
                }
            }
        }
    }
    cleared
}

/// Save the opted-in users' sessions, then let the inhibitor go: once the
/// saves end, or at the deadline, cancelling those still running.
async fn before_sleep(daemon: &Arc<Daemon>, conn: &zbus::Connection) {
    let sleep = &daemon.sleep;
    sleep.sleeping.store(true, Ordering::Release);
    let started = Instant::now();
    let max = delay_max(conn).await;
    let deadline = started + max.saturating_sub((max / 10).min(MARGIN_MAX));
    if !sleep.holding() {
        info!("going to sleep without the inhibitor: nothing saved");
        return;
    }
    let users = sleep.users();
    let found = tokio::task::spawn_blocking(move || {
        users
            .into_iter()
            .flat_map(|uid| displays_of(uid).into_iter().map(move |d| (uid, d)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut jobs: Vec<OwnedObjectPath> = Vec::new();
    for (uid, n) in found {
        let req = SaveRequest {
            display: n,
            owner: uid,
            name: None,
            kind: SaveKind::Sleep,
            stop: false,
        };
        let caller = Caller {
            uid,
            pid: std::process::id(),
        };
        match crate::job::start_save(daemon, caller, req).await {
            Ok(job) => {
                info!(uid, display = n, job = %job, "saving before sleep");
                jobs.push(job);
            }
            Err(error) => warn!(uid, display = n, %error, "cannot save before sleep"),
        }
    }
    let running = |jobs: &[OwnedObjectPath]| {
        jobs.iter()
            .filter(|j| daemon.job(j).is_some_and(|e| e.running))
            .count()
    };
    while running(&jobs) > 0 {
        let ended = daemon.job_ended.notified();
        if running(&jobs) == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, ended).await.is_err() {
            for j in &jobs {
                if let Some(e) = daemon.job(j).filter(|e| e.running) {
                    if e.cancelable {
                        warn!(job = %j, "not saved in time for sleep: cancelled");
                        e.cancel.store(true, Ordering::Release);
                    } else {
                        warn!(job = %j, "not saved in time for sleep: it finishes after");
                    }
                }
            }
            break;
        }
    }
    sleep.release();
    info!(
        saves = jobs.len(),
        elapsed = ?started.elapsed(),
        delay_max = ?max,
        "ready to sleep"
    );
}
