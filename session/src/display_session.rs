//! A display's whole session: found from the display (not from pids),
//! saved with its window list and a screenshot of every screen, restored
//! under a session keeper and compared with what was recorded.
//!
//! The window list and screenshots are taken just before the freeze (after
//! pre-copy), with the X server grabbed so they show one instant, and are
//! stored in the image as attachments: `desktop.json` and `screen-N.png`.
//! They cannot be taken while frozen: the X server is part of the set.

use crate::desktop::{self, DesktopRecord, Screenshot, WindowChange, X11Error};
use crate::discover::{self, DiscoverError, FindOptions, SessionSet};
pub use crate::memory_loading::MemoryLoading;
use crate::services::{self, ServiceRules};
use hiber_core::attachment::{Attachment, AttachmentError};
use hiber_core::image::{ImageError, ImageReader};
use hiber_core::{
    devices::DevicePolicies, CheckpointError, CheckpointObserver, CheckpointOptions,
    CheckpointStats, Report, RestoreError, RestoreOptions, Restored, Snapshot, Stage,
};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// The attachment holding the [`DesktopRecord`] as JSON.
pub const DESKTOP_ATTACHMENT: &str = "desktop.json";
/// How long a restored X server has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error(transparent)]
    X11(#[from] X11Error),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    #[error("{path}: its desktop record does not parse: {reason}")]
    BadRecord { path: PathBuf, reason: String },
    #[error("{path} holds processes but no desktop session; restore it with `hiber restore`")]
    NotASession { path: PathBuf },
    #[error("no display from :{} to :{MAX_DISPLAY} is free to restore the session of :{saved} onto", saved + 1)]
    NoFreeDisplay { saved: u32 },
    #[error("display :{display} is in use by pid {pid} ({comm}); end that X server, or restore the session onto a free display (--free-display)")]
    DisplayInUse {
        display: u32,
        pid: i32,
        comm: String,
    },
    #[error("pid {pid} ({comm}) cannot be left out of the session ({reason}): it runs under pid {parent} of the session, and a process is saved with all its descendants; run hiber from outside the session")]
    LeftOutBelow {
        pid: i32,
        comm: String,
        reason: String,
        parent: i32,
    },
    #[error("{path}: the recorded display {display:?} is not of the form :N")]
    BadDisplay { path: PathBuf, display: String },
    #[error("the restored X server of display :{display} did not answer within {} s: {source}", ANSWER_TIMEOUT.as_secs())]
    NoAnswer {
        display: u32,
        #[source]
        source: X11Error,
    },
    #[error("making a lazy restore's status file under {dir}")]
    LazyStatus {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, SessionError>;

/// The display number in `:N`, `:N.S` or `N`.
pub fn parse_display(s: &str) -> Option<u32> {
    let s = s.strip_prefix(':').unwrap_or(s);
    let n = s.split('.').next()?;
    n.parse().ok()
}

#[derive(Debug, Clone)]
pub struct SaveOptions {
    pub display: u32,
    /// Whose session it must be.
    pub user: u32,
    /// Pids never to include (with their descendants).
    pub exclude: Vec<i32>,
    /// Which processes are session services left out of the set.
    pub services: ServiceRules,
    pub dir: PathBuf,
    pub store: Option<PathBuf>,
    pub stop: bool,
    /// With `stop`: end the session only once its image read back whole
    /// (see `CheckpointOptions::verify_before_stop`).
    pub verify_before_stop: bool,
    pub no_reset: bool,
    /// When memory is saved while the session runs (see `PrecopyMode`).
    pub precopy: hiber_core::PrecopyMode,
    /// How char devices are classified (reopened, detached, refused).
    pub devices: DevicePolicies,
}

#[derive(Debug)]
pub struct Saved {
    pub session: SessionSet,
    pub stats: CheckpointStats,
    pub record: DesktopRecord,
    /// With `stop`: the session services that were ended with it.
    pub ended: Vec<services::Ended>,
}

/// Find the session on `display` and the engine's report on it. The
/// session is frozen for the inspection and let go at once.
pub fn check(
    display: u32,
    opts: &FindOptions,
    devices: &DevicePolicies,
) -> Result<(SessionSet, Report)> {
    let session = find(display, opts)?;
    let left_out = session.left_out();
    let devices = crate::xserver::reattaching_x_servers(devices, &session.roots, &left_out.pids);
    let report = hiber_core::check_without(&session.roots, &left_out, &devices)?;
    Ok((session, report))
}

/// The session on `display`, as the engine can save it.
pub fn find(display: u32, opts: &FindOptions) -> Result<SessionSet> {
    let session = discover::find_session(display, opts)?;
    // The engine saves whole trees: a process left out below a member
    // (hiber itself, run from a terminal of the session, or an excluded
    // pid) cannot be left out. Session services can: the engine prunes
    // their subtrees.
    for o in &session.outside {
        let parent = hiber_core::procfs::ProcDir::new(o.pid)
            .stat()
            .map_or(0, |s| s.ppid);
        if session.processes.contains(&parent) {
            return Err(SessionError::LeftOutBelow {
                pid: o.pid,
                comm: o.comm.clone(),
                reason: o.reason.clone(),
                parent,
            });
        }
    }
    Ok(session)
}

/// Processes joined the session between finding it and freezing it (a
/// program started meanwhile): the save starts over.
#[derive(Debug, thiserror::Error)]
#[error("processes {joined:?} joined the session on display :{display} while it was being saved")]
pub struct SessionGrew {
    pub display: u32,
    pub joined: Vec<i32>,
}

/// The processes of the session on `display` now that are not in `pids`
/// (the set being saved). The kernel's view only (sock_diag, /proc), so it
/// works while the X server is frozen.
pub fn joined_since(
    display: u32,
    find: &FindOptions,
    pids: &std::collections::BTreeSet<i32>,
) -> Result<Vec<i32>> {
    let now = discover::find_session(display, find)?;
    Ok(now.processes.difference(pids).copied().collect())
}

/// How many times a save starts over when the session grew meanwhile.
const SAVE_ATTEMPTS: usize = 3;

/// Takes the desktop record just before the freeze, and checks the frozen
/// set is still the whole session.
struct Recorder<'a> {
    display: u32,
    find: &'a FindOptions,
    progress: &'a dyn Fn(Stage),
    cancelled: &'a dyn Fn() -> bool,
    record: Mutex<Option<DesktopRecord>>,
}

impl CheckpointObserver for Recorder<'_> {
    fn stage(&self, stage: Stage) {
        (self.progress)(stage)
    }

    fn cancelled(&self) -> bool {
        (self.cancelled)()
    }

    fn before_freeze(
        &self,
    ) -> std::result::Result<Vec<Attachment>, Box<dyn std::error::Error + Send + Sync>> {
        let t0 = Instant::now();
        let desktop::Capture {
            record,
            screenshots,
        } = desktop::record(&format!(":{}", self.display))?;
        let mut out = vec![Attachment {
            name: DESKTOP_ATTACHMENT.into(),
            media_type: "application/json".into(),
            bytes: serde_json::to_vec_pretty(&record)?,
        }];
        out.extend(screenshots.into_iter().map(|s| Attachment {
            name: screenshot_name(s.screen),
            media_type: "image/png".into(),
            bytes: s.png,
        }));
        let n = self.display;
        debug!(display = n, windows = record.windows.len(), elapsed = ?t0.elapsed(), "desktop recorded");
        *self.record.lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
        Ok(out)
    }

    fn while_frozen(
        &self,
        pids: &std::collections::BTreeSet<i32>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let joined = joined_since(self.display, self.find, pids)?;
        if joined.is_empty() {
            Ok(())
        } else {
            Err(Box::new(SessionGrew {
                display: self.display,
                joined,
            }))
        }
    }
}

/// The attachment name of screen `n`'s screenshot.
pub fn screenshot_name(screen: u32) -> String {
    format!("screen-{screen}.png")
}

/// Save the session on `opts.display` into `opts.dir`. When a process
/// joins the session while it is being saved, the save starts over (a
/// few times), so the image never misses one of its programs.
pub fn save(opts: &SaveOptions, progress: &dyn Fn(Stage)) -> Result<Saved> {
    save_cancellable(opts, progress, &|| false)
}

/// [`save`], asking `cancelled` at each stage: once it says yes the save
/// ends with [`CheckpointError::Cancelled`] and the session runs on as it
/// was (nothing is committed).
pub fn save_cancellable(
    opts: &SaveOptions,
    progress: &dyn Fn(Stage),
    cancelled: &dyn Fn() -> bool,
) -> Result<Saved> {
    let find_opts = FindOptions {
        user: opts.user,
        exclude: opts.exclude.clone(),
        services: opts.services.clone(),
    };
    let mut attempt = 1;
    loop {
        match save_once(opts, &find_opts, progress, cancelled) {
            Err(SessionError::Checkpoint(CheckpointError::Observer(e)))
                if attempt < SAVE_ATTEMPTS && e.downcast_ref::<SessionGrew>().is_some() =>
            {
                info!(attempt, reason = %e, "starting the save over");
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn save_once(
    opts: &SaveOptions,
    find_opts: &FindOptions,
    progress: &dyn Fn(Stage),
    cancelled: &dyn Fn() -> bool,
) -> Result<Saved> {
    let session = find(opts.display, find_opts)?;
    info!(display = opts.display, x_server = session.x_server, processes = session.processes.len(), roots = ?session.roots, "session found");
    let recorder = Recorder {
        display: opts.display,
        find: find_opts,
        progress,
        cancelled,
        record: Mutex::new(None),
    };
    let stats = hiber_core::checkpoint(
        &CheckpointOptions {
            verify_before_stop: opts.verify_before_stop,
            roots: session.roots.clone(),
            dir: opts.dir.clone(),
            store: opts.store.clone(),
            stop: opts.stop,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            no_reset: opts.no_reset,
            precopy: opts.precopy,
            devices: crate::xserver::reattaching_x_servers(
                &opts.devices,
                &session.roots,
                &session.left_out().pids,
            ),
            left_out: session.left_out(),
        },
        &recorder,
    )?;
    // The services belong to the session that ended: they end too, and
    // their FUSE mounts go with them (a dead mount would fail every path
    // lookup in it until someone unmounted it).
    let ended = if opts.stop {
        services::end(&session.services)
    } else {
        Vec::new()
    };
    let record = recorder
        .record
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .expect("a committed checkpoint called before_freeze");
    Ok(Saved {
        session,
        stats,
        record,
        ended,
    })
}

/// What an image holds of a desktop: the record and its screenshots.
#[derive(Debug, Clone)]
pub struct StoredDesktop {
    pub record: DesktopRecord,
    /// (attachment name, PNG bytes), one per screen.
    pub screenshots: Vec<(String, Vec<u8>)>,
}

/// The window list stored with an image, or None for a plain process
/// image. Reads no screenshot.
pub fn stored_record(reader: &ImageReader, snap: &Snapshot) -> Result<Option<DesktopRecord>> {
    let Some(stored) = snap.attachment(DESKTOP_ATTACHMENT) else {
        return Ok(None);
    };
    let bytes = hiber_core::attachment::read(reader, stored)?;
    let record = serde_json::from_slice(&bytes).map_err(|e| SessionError::BadRecord {
        path: reader.dir().to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(Some(record))
}

/// The screenshots stored with an image: (attachment name, PNG bytes).
pub fn stored_screenshots(reader: &ImageReader, snap: &Snapshot) -> Result<Vec<(String, Vec<u8>)>> {
    snap.attachments
        .iter()
        .filter(|a| a.media_type == "image/png")
        .map(|a| Ok((a.name.clone(), hiber_core::attachment::read(reader, a)?)))
        .collect()
}

/// The desktop stored with an image, or None for a plain process image.
pub fn stored_desktop(reader: &ImageReader, snap: &Snapshot) -> Result<Option<StoredDesktop>> {
    let Some(record) = stored_record(reader, snap)? else {
        return Ok(None);
    };
    Ok(Some(StoredDesktop {
        record,
        screenshots: stored_screenshots(reader, snap)?,
    }))
}

#[derive(Debug)]
pub struct RestoredSession {
    pub display: u32,
    pub restored: Restored,
    pub recorded: StoredDesktop,
    /// The desktop as the restored X server shows it.
    pub now: DesktopRecord,
    pub now_screens: Vec<Screenshot>,
    /// How the window list differs from the recorded one.
    pub changes: Vec<WindowChange>,
    /// The display it was saved on (differs from `display` when it was
    /// restored onto another one).
    pub saved_display: u32,
    /// Files inside left-out services' mounts, reopened (or not) once
    /// their services were back.
    pub reopened: Vec<crate::service_files::Reopened>,
    /// How its memory came back: eager or lazy (then `restored.lazy_status`
    /// names the page server's status file until every page is in).
    pub memory: MemoryLoading,
}

/// Restore the session saved in `image` under a session keeper, then
/// compare its windows with the recorded ones.
pub fn restore(image: &Path) -> Result<RestoredSession> {
    restore_as(image, None, &|_, _| {})
}

/// [`restore`] on behalf of a user (a service restoring a user's session:
/// the image's credentials must be ones that user could restore), calling
/// `progress(done, total)` with bytes of page data written.
pub fn restore_as(
    image: &Path,
    on_behalf_of: Option<hiber_core::creds::Creds>,
    progress: &dyn Fn(u64, u64),
) -> Result<RestoredSession> {
    restore_as_cancellable(image, on_behalf_of, progress, &|| false)
}

/// [`restore_as`], asking `cancelled` until the restored processes run:
/// once it says yes, what was made is ended and the restore fails with
/// [`hiber_core::RestoreError::Cancelled`].
pub fn restore_as_cancellable(
    image: &Path,
    on_behalf_of: Option<hiber_core::creds::Creds>,
    progress: &dyn Fn(u64, u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<RestoredSession> {
    restore_onto(
        image,
        on_behalf_of,
        DisplayChoice::Saved,
        MemoryLoading::Auto,
        progress,
        cancelled,
    )
}

/// Which display a session comes back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayChoice {
    /// The one it was saved on; refused when another X server holds it.
    Saved,
    /// The saved one when free, else the first free number above it.
    SavedOrFree,
    /// This one (refused when taken).
    Exactly(u32),
}

impl DisplayChoice {
    /// From a request's text: "" (the saved display), "free" (the saved
    /// one, else the first free one above it), or ":N".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" => Some(Self::Saved),
            "free" => Some(Self::SavedOrFree),
            _ if s.starts_with(':') => parse_display(s).map(Self::Exactly),
            _ => None,
        }
    }

    /// The text [`DisplayChoice::parse`] reads back.
    pub fn to_arg(self) -> String {
        match self {
            Self::Saved => String::new(),
            Self::SavedOrFree => "free".into(),
            Self::Exactly(n) => format!(":{n}"),
        }
    }
}

/// Where a session comes back, and how its memory does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreHow {
    pub display: DisplayChoice,
    pub memory: MemoryLoading,
}

impl Default for RestoreHow {
    fn default() -> Self {
        Self {
            display: DisplayChoice::Saved,
            memory: MemoryLoading::Auto,
        }
    }
}

/// Whether display `n` is free: no X server listens on it, and neither
/// its socket file nor its lock file is there.
fn display_free(n: u32) -> Result<bool> {
    if discover::x_server_of(n)?.is_some() {
        return Ok(false);
    }
    let there = |p: String| Path::new(&p).symlink_metadata().is_ok();
    Ok(!there(format!("/tmp/.X11-unix/X{n}")) && !there(format!("/tmp/.X{n}-lock")))
}

/// Highest display number looked at for a free one.
const MAX_DISPLAY: u32 = 1000;

/// The display to restore on, by `choice`, and the X server's listeners to
/// bind there when it is not the saved one.
fn pick_display(
    saved: u32,
    choice: DisplayChoice,
) -> Result<(u32, hiber_core::restore::ListenerRenames)> {
    let in_use = |display: u32, pid: Option<i32>| {
        let pid = pid.unwrap_or(0);
        SessionError::DisplayInUse {
            display,
            pid,
            comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
                .trim_end()
                .to_string(),
        }
    };
    // One scan of the X servers for the saved display serves every choice.
    let saved_server = discover::x_server_of(saved)?;
    let target = match choice {
        DisplayChoice::Saved if saved_server.is_some() => return Err(in_use(saved, saved_server)),
        DisplayChoice::Saved => saved,
        DisplayChoice::Exactly(n) if n == saved && saved_server.is_none() => n,
        DisplayChoice::Exactly(n) if n != saved && display_free(n)? => n,
        DisplayChoice::Exactly(n) if n == saved => return Err(in_use(n, saved_server)),
        DisplayChoice::Exactly(n) => return Err(in_use(n, discover::x_server_of(n)?)),
        DisplayChoice::SavedOrFree if saved_server.is_none() => saved,
        DisplayChoice::SavedOrFree => {
            let mut found = None;
            for n in saved + 1..=MAX_DISPLAY {
                if display_free(n)? {
                    found = Some(n);
                    break;
                }
            }
            found.ok_or(SessionError::NoFreeDisplay { saved })?
        }
    };
    let renames = if target == saved {
        Vec::new()
    } else {
        discover::display_names(saved)
            .into_iter()
            .zip(discover::display_names(target))
            .collect()
    };
    Ok((target, renames))
}

/// The lock file an X server keeps for its display (`/tmp/.X<n>-lock`,
/// its pid in ten columns), made for a server moved onto `display` so
/// that a new server does not try to take the number. Made only when
/// absent, never through a link; owned by the server's user.
fn write_display_lock(display: u32, server: i32) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/tmp/.X{display}-lock");
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .and_then(|mut f| {
            writeln!(f, "{server:>10}")?;
            if let Ok(status) = hiber_core::procfs::ProcDir::new(server).status() {
                let c = hiber_core::creds::Creds::from_status(&status);
                std::os::unix::fs::fchown(&f, Some(c.uid[1]), Some(c.gid[1]))?;
            }
            Ok(())
        });
    if let Err(e) = made {
        tracing::warn!(path, error = %e, "could not make the moved X server's lock file");
    }
}

/// [`restore_as_cancellable`] onto the display `choice` names. On another
/// display than the saved one, the X server listens on that number's
/// socket names; programs that were connected stay connected, but a
/// program started later from a restored shell still reads the old
/// number in its `DISPLAY`.
pub fn restore_onto(
    image: &Path,
    on_behalf_of: Option<hiber_core::creds::Creds>,
    choice: DisplayChoice,
    memory: MemoryLoading,
    progress: &dyn Fn(u64, u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<RestoredSession> {
    let (reader, snap): (ImageReader, Snapshot) = ImageReader::open(image)?;
    let recorded = stored_desktop(&reader, &snap)?.ok_or_else(|| SessionError::NotASession {
        path: image.to_path_buf(),
    })?;
    let display =
        parse_display(&recorded.record.display).ok_or_else(|| SessionError::BadDisplay {
            path: image.to_path_buf(),
            display: recorded.record.display.clone(),
        })?;
    let saved_display = display;
    let (display, listener_renames) = pick_display(saved_display, choice)?;
    let memory = memory.decide(snap.lazy_bytes());
    let status_dir = Path::new(crate::memory_loading::STATUS_DIR);
    let lazy = memory
        .options(status_dir)
        .map_err(|source| SessionError::LazyStatus {
            dir: status_dir.to_path_buf(),
            source,
        })?;
    let opts = RestoreOptions {
        dir: image.to_path_buf(),
        pidns: false,
        keeper: true,
        sys_roots: Default::default(),
        on_behalf_of,
        listener_renames,
        lazy,
    };
    // The engine reads the document again to report progress; a plain
    // restore reuses the one read here.
    drop(reader);
    let restored = hiber_core::restore_cancellable(&opts, progress, cancelled)?;
    if display != saved_display {
        if let Ok(Some(server)) = discover::x_server_of(display) {
            write_display_lock(display, server);
            let n = crate::moved_server::rename_display(server, saved_display, display);
            debug!(
                server,
                names = n,
                "the moved server's names for its display rewritten"
            );
        }
        let now = display;
        info!(
            saved = saved_display,
            display = now,
            "session restored onto another display"
        );
    }
    let pending = snap.pending_service_files();
    drop(snap);
    // The server runs from the moment the tree is released; a first
    // connection can still race its return to the poll loop.
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let (now, now_screens) = loop {
        match desktop::record(&format!(":{display}")) {
            Ok(c) => break (c.record, c.screenshots),
            Err(source) if Instant::now() > deadline => {
                return Err(SessionError::NoAnswer { display, source })
            }
            Err(e) => {
                // `display` names tracing's own function inside its macros.
                let n = display;
                debug!(display = n, error = %e, "restored X server not answering yet");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let changes = desktop::diff(&recorded.record.windows, &now.windows);
    let live = |pid: i32| {
        restored
            .pids
            .iter()
            .find(|&&(saved, _)| saved == pid)
            .map(|&(_, now)| now)
    };
    let reopened = crate::service_files::reopen_all(&pending, &live);
    Ok(RestoredSession {
        saved_display,
        reopened,
        display,
        restored,
        recorded,
        now,
        now_screens,
        changes,
        memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_parse() {
        assert_eq!(parse_display(":1"), Some(1));
        assert_eq!(parse_display(":12.0"), Some(12));
        assert_eq!(parse_display("7"), Some(7));
        assert_eq!(parse_display("host:1"), None);
        assert_eq!(parse_display(":x"), None);
    }
}
