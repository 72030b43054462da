//! hiberd's state: the store, the snapshot objects it serves, the jobs
//! running, and when it is idle or stopping.

use crate::auth::Auth;
use crate::error::{Error, Result};
use crate::objects::{self, Objects};
use crate::snapshot::SnapshotObject;
use hiber_session::system_store::{SnapshotEntry, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::{info, warn};
use zbus::zvariant::{ObjectPath, OwnedObjectPath};
use zbus::Connection;

pub const ROOT: &str = "/org/hiber/Hiber1";
pub const BUS_NAME: &str = "org.hiber.Hiber1";

/// A job known to the daemon, running or lingering after completion.
#[derive(Debug, Clone)]
pub struct JobEntry {
    pub cancel: Arc<AtomicBool>,
    pub running: bool,
    pub cancelable: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Snapshot object path -> (owner uid, id).
    snapshots: HashMap<OwnedObjectPath, (u32, String)>,
    /// Display -> the job working on it.
    displays: HashMap<u32, OwnedObjectPath>,
    /// Snapshot object path -> the job restoring it.
    busy_snapshots: HashMap<OwnedObjectPath, OwnedObjectPath>,
    jobs: HashMap<OwnedObjectPath, JobEntry>,
}

#[derive(Debug)]
pub struct Daemon {
    pub store: Store,
    pub auth: Auth,
    conn: OnceLock<Connection>,
    state: Mutex<State>,
    next_job: AtomicU64,
    last_call: Mutex<Instant>,
    pub stopping: AtomicBool,
    /// Woken when a job ends.
    pub job_ended: tokio::sync::Notify,
    /// How long a finished job's object stays.
    pub linger: Duration,
    /// Who saves before sleep, and logind's inhibitor.
    pub sleep: crate::sleep::Sleep,
}

/// A snapshot's object path: opaque (a hash of owner and id), so the path
/// tells nobody whose snapshot it is or what it is called.
pub fn snapshot_path(uid: u32, id: &str) -> OwnedObjectPath {
    let hash = blake3::hash(format!("{uid}/{id}").as_bytes());
    let hex = hash.to_hex();
    OwnedObjectPath::try_from(format!("{ROOT}/snapshots/s{}", &hex[..16]))
        .expect("hex digits make a valid path element")
}

impl Daemon {
    pub fn new(store: Store, linger: Duration) -> Arc<Self> {
        let sleep = crate::sleep::Sleep::load(store.base());
        Arc::new(Self {
            sleep,
            store,
            auth: Auth::default(),
            conn: OnceLock::new(),
            state: Mutex::new(State::default()),
            next_job: AtomicU64::new(1),
            last_call: Mutex::new(Instant::now()),
            stopping: AtomicBool::new(false),
            job_ended: tokio::sync::Notify::new(),
            linger,
        })
    }

    pub fn set_connection(&self, conn: Connection) {
        let _ = self.conn.set(conn);
    }

    pub fn conn(&self) -> &Connection {
        self.conn
            .get()
            .expect("the connection is set before serving")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A method was called: the daemon is not idle.
    pub fn touch(&self) {
        *self.last_call.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// How long nothing happened; None while jobs run or while someone
    /// saves before sleep (hiberd must be there to hear logind then).
    pub fn idle_for(&self) -> Option<Duration> {
        if !self.state().jobs.is_empty() || !self.sleep.users().is_empty() {
            return None;
        }
        Some(
            self.last_call
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed(),
        )
    }

    pub fn refuse_if_stopping(&self) -> Result<()> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(Error::Failed("hiberd is stopping".into()));
        }
        Ok(())
    }

    /// Serve an object for every snapshot in the store.
    pub async fn load_snapshots(self: &Arc<Self>) -> zbus::Result<()> {
        for uid in self.store.users() {
            match self.store.list(uid) {
                Ok(entries) => {
                    for e in entries {
                        self.serve_snapshot(e, false).await?;
                    }
                }
                Err(error) => warn!(uid, %error, "cannot list the user's snapshots"),
            }
        }
        Ok(())
    }

    /// Serve `entry`'s object; `announce` signals it to clients. One
    /// served already (found by [`Daemon::sync_snapshots`] first) is left
    /// as it is.
    pub async fn serve_snapshot(
        self: &Arc<Self>,
        entry: SnapshotEntry,
        announce: bool,
    ) -> zbus::Result<OwnedObjectPath> {
        let path = snapshot_path(entry.uid, &entry.id);
        let known = self
            .state()
            .snapshots
            .insert(path.clone(), (entry.uid, entry.id.clone()))
            .is_some();
        if known {
            return Ok(path);
        }
        let server = self.conn().object_server();
        server
            .at(&path, SnapshotObject::new(self.clone(), entry))
            .await?;
        if announce {
            let emitter = server.interface::<_, Objects>(ROOT).await?;
            let e = emitter.signal_emitter();
            objects::snapshot_added(e, &path).await?;
            crate::manager::Manager::snapshot_added(e, path.as_ref()).await?;
        }
        info!(path = %path, "snapshot served");
        Ok(path)
    }

    pub async fn unserve_snapshot(self: &Arc<Self>, path: &ObjectPath<'_>) -> zbus::Result<()> {
        let known = self
            .state()
            .snapshots
            .remove(&OwnedObjectPath::from(path.to_owned()))
            .is_some();
        if !known {
            return Ok(());
        }
        let server = self.conn().object_server();
        server.remove::<SnapshotObject, _>(path).await?;
        let emitter = server.interface::<_, Objects>(ROOT).await?;
        let e = emitter.signal_emitter();
        objects::interfaces_removed_snapshot(e, path).await?;
        crate::manager::Manager::snapshot_removed(e, path.clone()).await?;
        Ok(())
    }

    /// Serve what the store holds for `uid` (root: every user) and no
    /// more: snapshots another writer of the store added
    /// (`hiber session suspend` as root) or removed while hiberd ran.
    /// Only the store's directory is read, and the new images.
    pub async fn sync_snapshots(self: &Arc<Self>, uid: u32) {
        let store = self.store.clone();
        let users = if uid == 0 { store.users() } else { vec![uid] };
        let in_store = tokio::task::spawn_blocking(move || {
            users
                .into_iter()
                .flat_map(|u| store.ids(u).into_iter().map(move |id| (u, id)))
                .collect::<std::collections::HashSet<(u32, String)>>()
        })
        .await
        .unwrap_or_default();
        let (added, removed) = {
            let st = self.state();
            let served: std::collections::HashSet<&(u32, String)> = st
                .snapshots
                .values()
                .filter(|(owner, _)| uid == 0 || *owner == uid)
                .collect();
            let added: Vec<(u32, String)> = in_store
                .iter()
                .filter(|k| !served.contains(k))
                .cloned()
                .collect();
            let removed: Vec<OwnedObjectPath> = st
                .snapshots
                .iter()
                .filter(|(_, k)| (uid == 0 || k.0 == uid) && !in_store.contains(*k))
                .map(|(p, _)| p.clone())
                .collect();
            (added, removed)
        };
        for (owner, id) in added {
            let store = self.store.clone();
            let entry = tokio::task::spawn_blocking(move || store.entry(owner, &id)).await;
            match entry {
                Ok(Ok(e)) => {
                    if let Err(error) = self.serve_snapshot(e, true).await {
                        warn!(owner, %error, "serving a snapshot found in the store");
                    }
                }
                Ok(Err(error)) => warn!(owner, %error, "reading a snapshot found in the store"),
                Err(error) => warn!(owner, %error, "reading a snapshot found in the store"),
            }
        }
        for path in removed {
            // Busy (a restore of it runs): not gone.
            if self.snapshot_busy(&path).is_some() {
                continue;
            }
            info!(path = %path, "snapshot gone from the store");
            if let Err(error) = self.unserve_snapshot(&path.as_ref()).await {
                warn!(%error, "removing a snapshot gone from the store");
            }
        }
    }

    /// Read a served snapshot again from the store (its `Pending` changed:
    /// restored, resumed from sleep), signalling what changed.
    pub async fn refresh_snapshot(&self, path: &OwnedObjectPath) {
        let server = self.conn().object_server();
        let Ok(iface) = server.interface::<_, SnapshotObject>(path).await else {
            return;
        };
        let emitter = iface.signal_emitter().clone();
        let refreshed = iface.get_mut().await.refresh(&emitter).await;
        if let Err(error) = refreshed {
            warn!(path = %path, %error, "reading a snapshot again");
        }
    }

    /// The object path of `uid`'s snapshot `id`, when it is served.
    pub fn served(&self, uid: u32, id: &str) -> Option<OwnedObjectPath> {
        let path = snapshot_path(uid, id);
        self.state().snapshots.contains_key(&path).then_some(path)
    }

    /// The snapshot objects `uid` may see (every one for root).
    pub fn snapshots_of(&self, uid: u32) -> Vec<OwnedObjectPath> {
        let mut paths: Vec<_> = self
            .state()
            .snapshots
            .iter()
            .filter(|(_, (owner, _))| uid == 0 || *owner == uid)
            .map(|(p, _)| p.clone())
            .collect();
        paths.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        paths
    }

    pub fn job_paths(&self) -> Vec<OwnedObjectPath> {
        let mut paths: Vec<_> = self.state().jobs.keys().cloned().collect();
        paths.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        paths
    }

    pub fn job(&self, path: &OwnedObjectPath) -> Option<JobEntry> {
        self.state().jobs.get(path).cloned()
    }

    /// Claim `display` (and `snapshot`, for a restore) for a new job, or
    /// say which job holds it.
    pub fn start_job(
        &self,
        display: u32,
        snapshot: Option<&OwnedObjectPath>,
        cancelable: bool,
    ) -> Result<(OwnedObjectPath, Arc<AtomicBool>)> {
        let mut st = self.state();
        if let Some(job) = st.displays.get(&display) {
            return Err(Error::Busy(format!(
                "display :{display} is busy with job {job}"
            )));
        }
        if let Some(job) = snapshot.and_then(|s| st.busy_snapshots.get(s)) {
            return Err(Error::Busy(format!("the snapshot is busy with job {job}")));
        }
        let n = self.next_job.fetch_add(1, Ordering::Relaxed);
        let path = OwnedObjectPath::try_from(format!("{ROOT}/jobs/{n}"))
            .expect("a number makes a valid path element");
        let cancel = Arc::new(AtomicBool::new(false));
        st.displays.insert(display, path.clone());
        if let Some(s) = snapshot {
            st.busy_snapshots.insert(s.clone(), path.clone());
        }
        st.jobs.insert(
            path.clone(),
            JobEntry {
                cancel: cancel.clone(),
                running: true,
                cancelable,
            },
        );
        Ok((path, cancel))
    }

    /// The job at `path` ended: its display and snapshot are free again;
    /// its object lingers until [`Daemon::forget_job`].
    pub fn end_job(&self, path: &OwnedObjectPath) {
        let mut st = self.state();
        st.displays.retain(|_, j| j != path);
        st.busy_snapshots.retain(|_, j| j != path);
        if let Some(j) = st.jobs.get_mut(path) {
            j.running = false;
        }
        drop(st);
        self.job_ended.notify_waiters();
    }

    pub fn forget_job(&self, path: &OwnedObjectPath) {
        self.state().jobs.remove(path);
        self.job_ended.notify_waiters();
    }

    pub fn running_jobs(&self) -> usize {
        self.state().jobs.values().filter(|j| j.running).count()
    }

    pub fn snapshot_busy(&self, path: &OwnedObjectPath) -> Option<OwnedObjectPath> {
        self.state().busy_snapshots.get(path).cloned()
    }

    /// Stopping: cancel what can be cancelled, and let the rest finish.
    pub fn cancel_all(&self) {
        for (path, j) in &self.state().jobs {
            if j.running && j.cancelable {
                info!(job = %path, "cancelling for shutdown");
                j.cancel.store(true, Ordering::Release);
            }
        }
    }
}
