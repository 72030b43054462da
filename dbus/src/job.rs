//! `org.hiber.Hiber1.Job` (after udisks2's Job): a save or restore that
//! goes on in the background, whoever called it, reporting progress
//! through properties (signalled at most every [`TICK`]) and ending with
//! `Completed`. Its object stays [`Daemon::linger`] after that.

use crate::auth::Caller;
use crate::daemon::{Daemon, ROOT};
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::objects::{Objects, Properties};
use hiber_session::system_store::{
    JobControl, Progress, RestoreOutcome, SaveRequest, SnapshotEntry,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{fdo, interface};

pub const JOB_IFACE: &str = "org.hiber.Hiber1.Job";
/// The shortest time between two PropertiesChanged of one job.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct JobState {
    operation: &'static str,
    stage: String,
    progress: f64,
    progress_valid: bool,
    bytes_done: u64,
    bytes: u64,
    start_us: u64,
    started: Instant,
    cancelable: bool,
    started_by: u32,
    objects: Vec<OwnedObjectPath>,
    dirty: bool,
}

impl JobState {
    fn rate(&self) -> u64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            (self.bytes_done as f64 / secs) as u64
        } else {
            0
        }
    }

    fn expected_end(&self) -> u64 {
        if !self.progress_valid || self.progress < 0.05 {
            return 0;
        }
        let elapsed = self.started.elapsed().as_micros() as f64;
        self.start_us + (elapsed / self.progress) as u64
    }
}

/// The engine's side of a job: progress in, cancellation out.
#[derive(Debug, Clone)]
struct Control {
    state: Arc<Mutex<JobState>>,
    cancel: Arc<AtomicBool>,
}

impl Control {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl JobControl for Control {
    fn progress(&self, p: Progress) {
        let mut st = self.lock();
        st.stage = p.stage.into();
        // Never backwards: a save that starts over keeps its progress.
        st.progress = st.progress.max(p.fraction.clamp(0.0, 1.0));
        st.progress_valid = true;
        if p.bytes_expected > 0 {
            st.bytes = p.bytes_expected;
        }
        st.bytes_done = st.bytes_done.max(p.bytes_done);
        // Every page of a restore is in: what is left is letting the
        // processes go, which nothing undoes.
        if st.operation == "restore" && p.bytes_expected > 0 && p.bytes_done >= p.bytes_expected {
            st.cancelable = false;
        }
        st.dirty = true;
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
pub struct JobObject {
    daemon: Arc<Daemon>,
    path: OwnedObjectPath,
    state: Arc<Mutex<JobState>>,
    cancel: Arc<AtomicBool>,
}

impl JobObject {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn properties(&self) -> Properties {
        let st = self.lock();
        let v = |v: Value<'_>| OwnedValue::try_from(v).expect("plain values have no fds");
        HashMap::from([
            ("Operation".into(), v(st.operation.into())),
            ("Stage".into(), v(st.stage.as_str().into())),
            ("Progress".into(), v(st.progress.into())),
            ("ProgressValid".into(), v(st.progress_valid.into())),
            ("Bytes".into(), v(st.bytes.into())),
            ("Rate".into(), v(st.rate().into())),
            ("StartTime".into(), v(st.start_us.into())),
            ("ExpectedEndTime".into(), v(st.expected_end().into())),
            ("Cancelable".into(), v(st.cancelable.into())),
            ("StartedByUid".into(), v(st.started_by.into())),
            ("Objects".into(), v(st.objects.clone().into())),
        ])
    }

    /// The properties that move, for one PropertiesChanged.
    fn moving(&self) -> HashMap<&'static str, OwnedValue> {
        let mut all = self.properties();
        [
            "Stage",
            "Progress",
            "ProgressValid",
            "Bytes",
            "Rate",
            "ExpectedEndTime",
            "Cancelable",
            "Objects",
        ]
        .into_iter()
        .filter_map(|k| Some((k, all.remove(k)?)))
        .collect()
    }
}

#[interface(name = "org.hiber.Hiber1.Job")]
impl JobObject {
    /// Cancel the job: a save leaves the session as it was and makes no
    /// snapshot; a restore ends what it made and runs nothing. Only while
    /// `Cancelable`; by whoever started it, or root.
    async fn cancel(&self, #[zbus(header)] hdr: Header<'_>) -> Result<()> {
        let d = &self.daemon;
        d.touch();
        let caller = d.auth.caller(d.conn(), &hdr).await?;
        let (started_by, cancelable) = {
            let st = self.lock();
            (st.started_by, st.cancelable)
        };
        if !caller.may_touch(started_by) {
            return Err(Error::NotAuthorized(format!(
                "uid {} may not cancel a job of uid {started_by}",
                caller.uid
            )));
        }
        let running = d.job(&self.path).is_some_and(|j| j.running);
        if !running {
            return Err(Error::Failed("the job has ended".into()));
        }
        if !cancelable {
            return Err(Error::Failed("this job cannot be cancelled now".into()));
        }
        info!(job = %self.path, uid = caller.uid, "cancel asked");
        self.cancel.store(true, Ordering::Release);
        Ok(())
    }

    /// The job ended: `success`, else the error's D-Bus name and message.
    #[zbus(signal)]
    pub async fn completed(
        emitter: &SignalEmitter<'_>,
        success: bool,
        error: &str,
        message: &str,
    ) -> zbus::Result<()>;

    /// `save` or `restore`.
    #[zbus(property(emits_changed_signal = "const"))]
    fn operation(&self) -> String {
        self.lock().operation.into()
    }

    #[zbus(property)]
    fn stage(&self) -> String {
        self.lock().stage.clone()
    }

    /// 0.0 to 1.0, when `ProgressValid`.
    #[zbus(property)]
    fn progress(&self) -> f64 {
        self.lock().progress
    }

    #[zbus(property)]
    fn progress_valid(&self) -> bool {
        self.lock().progress_valid
    }

    /// Bytes the job deals with (0 while unknown).
    #[zbus(property)]
    fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Bytes per second so far.
    #[zbus(property)]
    fn rate(&self) -> u64 {
        self.lock().rate()
    }

    /// Microseconds since the epoch.
    #[zbus(property(emits_changed_signal = "const"))]
    fn start_time(&self) -> u64 {
        self.lock().start_us
    }

    /// Microseconds since the epoch; 0 while unknown.
    #[zbus(property)]
    fn expected_end_time(&self) -> u64 {
        self.lock().expected_end()
    }

    #[zbus(property)]
    fn cancelable(&self) -> bool {
        self.lock().cancelable
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn started_by_uid(&self) -> u32 {
        self.lock().started_by
    }

    /// The snapshot the job works on (a save's, once committed).
    #[zbus(property)]
    fn objects(&self) -> Vec<OwnedObjectPath> {
        self.lock().objects.clone()
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What a job's work gives back.
enum Outcome {
    Saved(SnapshotEntry),
    Restored(RestoreOutcome),
}

/// Serve a job object and run `work` on a blocking thread; the job
/// reports until it completes, then lingers and goes.
async fn run<F>(
    daemon: &Arc<Daemon>,
    path: OwnedObjectPath,
    cancel: Arc<AtomicBool>,
    operation: &'static str,
    caller: Caller,
    objects: Vec<OwnedObjectPath>,
    work: F,
) -> Result<OwnedObjectPath>
where
    F: FnOnce(&Control) -> Result<Outcome> + Send + 'static,
{
    let state = Arc::new(Mutex::new(JobState {
        operation,
        stage: "queued".into(),
        progress: 0.0,
        progress_valid: true,
        bytes_done: 0,
        bytes: 0,
        start_us: now_us(),
        started: Instant::now(),
        cancelable: true,
        started_by: caller.uid,
        objects,
        dirty: false,
    }));
    let object = JobObject {
        daemon: daemon.clone(),
        path: path.clone(),
        state: state.clone(),
        cancel: cancel.clone(),
    };
    let props = object.properties();
    let server = daemon.conn().object_server();
    let served = server.at(&path, object).await;
    if let Err(e) = served {
        daemon.end_job(&path);
        daemon.forget_job(&path);
        return Err(e.into());
    }
    announce(daemon, &path, Some(props)).await;
    info!(job = %path, operation, uid = caller.uid, pid = caller.pid, "job started");
    let control = Control { state, cancel };
    let d = daemon.clone();
    let p = path.clone();
    tokio::spawn(async move {
        let worker = control.clone();
        let mut work = tokio::task::spawn_blocking(move || work(&worker));
        let mut tick = tokio::time::interval(TICK);
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tick.tick() => emit_moving(&d, &p, &control).await,
            }
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => Err(Error::Failed(format!("the job's worker failed: {e}"))),
        };
        finish(&d, &p, &control, result).await;
    });
    Ok(path)
}

async fn emit_moving(daemon: &Daemon, path: &OwnedObjectPath, control: &Control) {
    if !std::mem::take(&mut control.lock().dirty) {
        return;
    }
    let server = daemon.conn().object_server();
    let Ok(iface) = server.interface::<_, JobObject>(path).await else {
        return;
    };
    let changed = iface.get().await.moving();
    let changed: HashMap<&str, Value<'_>> = changed
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect();
    if let Err(error) = fdo::Properties::properties_changed(
        iface.signal_emitter(),
        zbus::names::InterfaceName::from_static_str_unchecked(JOB_IFACE),
        changed,
        std::borrow::Cow::Borrowed(&[]),
    )
    .await
    {
        warn!(%error, job = %path, "signalling progress");
    }
}

async fn finish(
    daemon: &Arc<Daemon>,
    path: &OwnedObjectPath,
    control: &Control,
    result: Result<Outcome>,
) {
    let result = match result {
        Ok(Outcome::Saved(entry)) => match daemon.serve_snapshot(entry, true).await {
            Ok(snapshot) => {
                control.lock().objects = vec![snapshot];
                Ok(String::new())
            }
            Err(e) => Err(Error::Failed(format!("serving the new snapshot: {e}"))),
        },
        Ok(Outcome::Restored(r)) => {
            crate::scope::hand_over(daemon.conn(), &r).await;
            // Back: no longer pending (the helper wrote it in the store).
            let snapshots = control.lock().objects.clone();
            for s in &snapshots {
                daemon.refresh_snapshot(s).await;
            }
            // The one thing a client must be told of a success: the
            // session came back on another display than its own.
            Ok(match r.saved_display {
                Some(saved) if saved != r.display => format!(
                    "restored on display :{} (saved on :{saved}, which another X server holds)",
                    r.display
                ),
                _ => String::new(),
            })
        }
        Err(e) => Err(e),
    };
    {
        let mut st = control.lock();
        st.cancelable = false;
        st.dirty = true;
        if result.is_ok() {
            st.progress = 1.0;
            st.stage = "done".into();
        } else {
            st.stage = "failed".into();
        }
    }
    daemon.end_job(path);
    emit_moving(daemon, path, control).await;
    let (success, name, message) = match &result {
        Ok(note) => (true, String::new(), note.clone()),
        Err(e) => (false, e.dbus_name(), e.message()),
    };
    info!(job = %path, success, error = name, message, "job completed");
    let server = daemon.conn().object_server();
    if let Ok(iface) = server.interface::<_, JobObject>(path).await {
        if let Err(error) =
            JobObject::completed(iface.signal_emitter(), success, &name, &message).await
        {
            warn!(%error, job = %path, "signalling completion");
        }
    }
    tokio::time::sleep(daemon.linger).await;
    let _ = server.remove::<JobObject, _>(path).await;
    daemon.forget_job(path);
    if let Ok(om) = server.interface::<_, Objects>(ROOT).await {
        let _ = Objects::interfaces_removed(
            om.signal_emitter(),
            path.as_ref(),
            vec![JOB_IFACE.to_string()],
        )
        .await;
    }
    jobs_changed(daemon).await;
}

/// InterfacesAdded for a new job, and the Manager's `Jobs`.
async fn announce(daemon: &Daemon, path: &OwnedObjectPath, props: Option<Properties>) {
    let server = daemon.conn().object_server();
    if let (Some(props), Ok(om)) = (props, server.interface::<_, Objects>(ROOT).await) {
        let ifaces = HashMap::from([(JOB_IFACE.to_string(), props)]);
        if let Err(error) =
            Objects::interfaces_added(om.signal_emitter(), path.as_ref(), ifaces).await
        {
            warn!(%error, "signalling a new job");
        }
    }
    jobs_changed(daemon).await;
}

async fn jobs_changed(daemon: &Daemon) {
    let server = daemon.conn().object_server();
    if let Ok(m) = server.interface::<_, Manager>(ROOT).await {
        let _ = m.get().await.jobs_changed(m.signal_emitter()).await;
    }
}

/// A save of `req`, as a job.
pub async fn start_save(
    daemon: &Arc<Daemon>,
    caller: Caller,
    req: SaveRequest,
) -> Result<OwnedObjectPath> {
    let (path, cancel) = daemon.start_job(req.display, None, true)?;
    let store = daemon.store.clone();
    run(daemon, path, cancel, "save", caller, Vec::new(), move |c| {
        Ok(Outcome::Saved(store.save(&req, c)?))
    })
    .await
}

/// A restore of `uid`'s snapshot `id` onto `display`, as a job. It runs in
/// a helper process of its own: the restored session's keeper is the
/// helper's child, so when the helper exits the session belongs to nobody
/// of hiberd's (not its child, not under its lifetime).
pub async fn start_restore(
    daemon: &Arc<Daemon>,
    caller: Caller,
    snapshot: OwnedObjectPath,
    uid: u32,
    id: String,
    display: u32,
    how: hiber_session::display_session::RestoreHow,
) -> Result<OwnedObjectPath> {
    let (path, cancel) = daemon.start_job(display, Some(&snapshot), true)?;
    let base = daemon.store.base().to_path_buf();
    run(
        daemon,
        path,
        cancel,
        "restore",
        caller,
        vec![snapshot],
        move |c| crate::restore_helper::run_helper(&base, uid, &id, how, c).map(Outcome::Restored),
    )
    .await
}
