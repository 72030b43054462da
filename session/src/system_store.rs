//! The session library for a service: every user's snapshots in one
//! root-owned store, and the operations hiberd offers on them (save,
//! restore, list, rename, delete, screenshot), each with progress and, for
//! a save, cancellation that leaves the session as it was.
//!
//! ```text
//! BASE/                       /var/lib/hiber, root's
//!     UID/                    root-owned, 0700: the user cannot write
//!                             what root will restore
//!         ID/                 an image (see docs/image-format.md)
//!         ID.tmp-PID/         an image being written: never listed
//!         .store/             the chunk packs the user's images share
//!         .meta/ID.json       name, kind and creation time
//! ```
//!
//! Who may do what is the caller's business (hiberd's authorization); this
//! module only checks what makes a request wrong whoever asks: the
//! session must be the owner's, an image must be whole, a restore never
//! gives the owner credentials it did not have.

use crate::discover::{self, DiscoverError, FindOptions};
use crate::display_lock::{DisplayLock, DisplayLockError};
use crate::display_session::{self, SaveOptions, SessionError};
use crate::snapshots::{self, SnapshotsError};
use hiber_core::devices::{DeviceError, DevicePolicies};
use hiber_core::image::{ImageReader, PruneStats};
use hiber_core::sys::wrap::{PathIo, WrapIoResult};
use hiber_core::{CheckpointError, PrecopyMode, Report, Snapshot, Stage};
use std::fs;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Where the store lives unless told otherwise.
pub const DEFAULT_BASE: &str = "/var/lib/hiber";
const META: &str = ".meta";
const PAGE: u64 = 4096;
/// Longest snapshot name a user may give.
const MAX_NAME: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum SystemStoreError {
    #[error("no X server on display :{display}")]
    NoSuchDisplay { display: u32 },
    #[error("uid {uid} has no snapshot {id:?}")]
    NoSuchSnapshot { uid: u32, id: String },
    // No uid or display: `reason` names both.
    #[error("not the caller's session: {reason}")]
    NotOwner { reason: String },
    // No subject: the caller's cancel ends the whole job.
    #[error("cancelled: a save leaves the session as it was, a restore runs nothing")]
    Cancelled,
    // No pid: the refusals name each process.
    #[error("the session cannot be saved:\n{refusals}")]
    Refused { refusals: String },
    #[error("snapshot {id:?} cannot be restored: {problem}")]
    NotRestorable { id: String, problem: String },
    #[error("{name:?} is not a snapshot name: {why}")]
    BadName { name: String, why: &'static str },
    // No subject but the caller's word, which it carries.
    #[error("{kind:?} is not a kind of snapshot (manual, logout or sleep)")]
    BadKind { kind: String },
    #[error("snapshot {id:?} has no screen {screen}")]
    NoSuchScreen { id: String, screen: u32 },
    #[error(
        "{path} is owned by uid {uid} with mode {mode:o}; the store must be root's alone (0700)"
    )]
    UnsafeStore { path: PathBuf, uid: u32, mode: u32 },
    #[error("user with uid {uid} is unknown")]
    NoSuchUser {
        uid: u32,
        #[source]
        source: io::Error,
    },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    DisplayLock(#[from] DisplayLockError),
    #[error(transparent)]
    Devices(#[from] DeviceError),
    #[error(transparent)]
    Session(SessionError),
    #[error(transparent)]
    Snapshots(#[from] SnapshotsError),
}

impl From<PathIo> for SystemStoreError {
    fn from(e: PathIo) -> Self {
        SystemStoreError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

type Result<T> = std::result::Result<T, SystemStoreError>;

impl From<SessionError> for SystemStoreError {
    /// The errors a client can act on get their own variants.
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Discover(DiscoverError::NoDisplay { display, .. }) => {
                SystemStoreError::NoSuchDisplay { display }
            }
            SessionError::Discover(
                e @ (DiscoverError::OtherUser { .. }
                | DiscoverError::ForeignClient { .. }
                | DiscoverError::ForeignDescendant { .. }),
            ) => SystemStoreError::NotOwner {
                reason: e.to_string(),
            },
            SessionError::Checkpoint(CheckpointError::Cancelled { .. }) => {
                SystemStoreError::Cancelled
            }
            SessionError::Restore(hiber_core::RestoreError::Cancelled { .. }) => {
                SystemStoreError::Cancelled
            }
            SessionError::Checkpoint(CheckpointError::Refused(report)) => {
                SystemStoreError::Refused {
                    refusals: report.refusals_text(),
                }
            }
            e => SystemStoreError::Session(e),
        }
    }
}

/// Why a snapshot is made: shown to the user, and a `sleep` one is offered
/// at the next login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveKind {
    Manual,
    Logout,
    Sleep,
}

impl SaveKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "manual" => Ok(Self::Manual),
            "logout" => Ok(Self::Logout),
            "sleep" => Ok(Self::Sleep),
            _ => Err(SystemStoreError::BadKind { kind: s.into() }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Logout => "logout",
            Self::Sleep => "sleep",
        }
    }
}

/// What the store keeps beside an image: what the user calls it, and
/// whether it waits to be offered back.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Meta {
    name: String,
    kind: SaveKind,
    created_us: u64,
    /// A logout or sleep snapshot not yet brought back: offered at the
    /// next login, never deleted automatically.
    #[serde(default)]
    pending: bool,
}

/// One snapshot as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotEntry {
    pub uid: u32,
    pub id: String,
    pub name: String,
    /// `:N`, or empty when the image cannot be read.
    pub display: String,
    /// Microseconds since the epoch.
    pub created_us: u64,
    pub kind: String,
    /// Bytes only this snapshot uses (freed by deleting it).
    pub size: u64,
    /// Bytes of the image with every pack it links.
    pub total_size: u64,
    /// (title, class) of each window.
    pub windows: Vec<(String, String)>,
    /// Devices detached at save (their `/dev` names, or sysfs paths).
    pub detached: Vec<String>,
    pub screens: u32,
    pub restorable: bool,
    /// Why it cannot be restored; empty when it can.
    pub problem: String,
    /// Saved at logout or before sleep and not brought back yet.
    pub pending: bool,
}

/// How far an operation is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub stage: &'static str,
    /// 0.0 to 1.0.
    pub fraction: f64,
    pub bytes_done: u64,
    /// 0 while not known yet.
    pub bytes_expected: u64,
}

/// The caller of a long operation: hears its progress, may cancel it.
pub trait JobControl: Sync {
    fn progress(&self, progress: Progress);
    /// Asked at each stage of a save, and of a restore until its processes
    /// run; true ends it, leaving the session (or the display) as it was.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A save to make.
#[derive(Debug, Clone)]
pub struct SaveRequest {
    pub display: u32,
    /// Whose session it must be: the X server and every saved process run
    /// as this uid, and the snapshot goes to this user's store.
    pub owner: u32,
    pub name: Option<String>,
    pub kind: SaveKind,
    /// End the session once the snapshot is committed.
    pub stop: bool,
}

/// What a restore brought back.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RestoreOutcome {
    /// Where the session runs now.
    pub display: u32,
    /// The display it was saved on (None from a helper of an older hiberd).
    #[serde(default)]
    pub saved_display: Option<u32>,
    /// Every restored process, as the caller sees it.
    pub pids: Vec<i32>,
    pub keeper: Option<i32>,
    pub windows: usize,
    /// Windows recorded but not shown now, or changed.
    pub changes: usize,
    /// Whether its memory comes in lazily (false from an older helper).
    #[serde(default)]
    pub lazy: bool,
}

/// The uid running `display`'s X server: whose session it is.
pub fn display_owner(display: u32) -> Result<u32> {
    let pid = discover::x_server_of(display)
        .map_err(|e| SystemStoreError::from(SessionError::Discover(e)))?
        .ok_or(SystemStoreError::NoSuchDisplay { display })?;
    let path = PathBuf::from(format!("/proc/{pid}"));
    Ok(fs::metadata(&path)
        .map(|m| m.uid())
        .at_path("reading", &path)?)
}

/// The engine's report on `display`'s session, which must be `owner`'s.
/// The session is frozen for the inspection and let go at once.
pub fn check(display: u32, owner: u32) -> Result<Report> {
    let devices = DevicePolicies::load(None, &[] as &[&str])?;
    let opts = FindOptions {
        user: owner,
        exclude: Vec::new(),
        services: service_rules(),
    };
    let (_, report) = display_session::check(display, &opts, &devices)?;
    Ok(report)
}

/// The session service rules of the system file over the built-in ones;
/// a file that does not load is named in the log and the built-in rules
/// apply.
pub fn service_rules() -> crate::services::ServiceRules {
    let file = std::path::Path::new(crate::services::SYSTEM_CONFIG);
    crate::services::ServiceRules::load(Some(file)).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the session service rules file does not load: built-in rules only");
        crate::services::ServiceRules::default()
    })
}

/// Microseconds since the epoch: how the store dates snapshots.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Whether `id` can name an image of the store: a plain name, not the
/// store, the metadata, or an image still being written.
fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && !id.contains(".tmp-")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A name a user may give: printable, one line, not too long.
pub fn check_name(name: &str) -> Result<()> {
    let why = if name.trim().is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME {
        Some("it is longer than 255 bytes")
    } else if name.chars().any(char::is_control) {
        Some("it holds control characters")
    } else {
        None
    };
    match why {
        Some(why) => Err(SystemStoreError::BadName {
            name: name.into(),
            why,
        }),
        None => Ok(()),
    }
}

/// Whether the saver `pid` that named an unfinished image still runs: a
/// zombie does not (a killed hiberd is one until its parent, the bus,
/// reaps it, and the bus starts the next hiberd meanwhile).
fn saver_runs(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().next());
        !matches!(state, Some("Z" | "X") | None)
    })
}

/// The root-owned store of every user's snapshots.
#[derive(Debug, Clone)]
pub struct Store {
    base: PathBuf,
}

impl Store {
    pub fn new(base: impl Into<PathBuf>) -> Self {
        Self { base: base.into() }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `uid`'s directory, without creating it.
    pub fn user_dir(&self, uid: u32) -> PathBuf {
        self.base.join(uid.to_string())
    }

    /// `uid`'s directory, made when missing; refused unless it is ours
    /// (the service's user) and nobody else's to write or read.
    fn open_user(&self, uid: u32) -> Result<PathBuf> {
        let dir = self.user_dir(uid);
        hiber_core::image::create_private_dir_all(&dir).at_path("creating", &dir)?;
        self.check_private(&dir)?;
        Ok(dir)
    }

    fn check_private(&self, dir: &Path) -> Result<()> {
        let m = fs::symlink_metadata(dir).at_path("reading", dir)?;
        // SAFETY: geteuid has no arguments and cannot fail.
        let me = unsafe { libc::geteuid() };
        let mode = m.permissions().mode() & 0o7777;
        if !m.is_dir() || m.uid() != me || mode & 0o077 != 0 {
            return Err(SystemStoreError::UnsafeStore {
                path: dir.to_path_buf(),
                uid: m.uid(),
                mode,
            });
        }
        Ok(())
    }

    /// The uids that have a directory in the store.
    pub fn users(&self) -> Vec<u32> {
        let Ok(rd) = fs::read_dir(&self.base) else {
            return Vec::new();
        };
        let mut out: Vec<u32> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        out.sort_unstable();
        out
    }

    /// After a crash: remove the images a killed save left unfinished
    /// (`ID.tmp-PID` whose pid runs no more). They are never listed; this
    /// gives their space back.
    pub fn recover(&self) {
        for uid in self.users() {
            let dir = self.user_dir(uid);
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.rsplit_once(".tmp-"))
                    .and_then(|(_, pid)| pid.parse::<u32>().ok())
                else {
                    continue;
                };
                if !saver_runs(pid) {
                    let path = e.path();
                    match fs::remove_dir_all(&path) {
                        Ok(()) => info!(path = %path.display(), "removed a save left unfinished"),
                        Err(error) => {
                            warn!(path = %path.display(), %error, "could not remove an unfinished save")
                        }
                    }
                }
            }
            // The metadata of a save that never committed (written before
            // the save, so that one ending a session is never lost).
            let Ok(metas) = fs::read_dir(dir.join(META)) else {
                continue;
            };
            for m in metas.flatten() {
                let name = m.file_name();
                let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                    continue;
                };
                let staging = fs::read_dir(&dir).into_iter().flatten().flatten().any(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(&format!("{id}.tmp-")))
                });
                if is_id(id) && !dir.join(id).exists() && !staging {
                    let _ = fs::remove_file(m.path());
                    info!(
                        uid,
                        id, "removed the metadata of a save that never committed"
                    );
                }
            }
        }
    }

    /// `uid`'s snapshots, oldest first; damaged ones are listed too, not
    /// restorable, with their problem.
    pub fn list(&self, uid: u32) -> Result<Vec<SnapshotEntry>> {
        let dir = self.user_dir(uid);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SystemStoreError::Io {
                    op: "listing",
                    path: dir,
                    source,
                })
            }
        };
        self.check_private(&dir)?;
        let mut out: Vec<SnapshotEntry> = rd
            .flatten()
            .filter_map(|e| {
                let id = e.file_name().into_string().ok()?;
                let committed = is_id(&id) && e.file_type().is_ok_and(|t| t.is_dir());
                committed.then(|| self.read_entry(uid, &dir, &id))
            })
            .collect();
        out.sort_by(|a, b| (a.created_us, &a.id).cmp(&(b.created_us, &b.id)));
        Ok(out)
    }

    /// The ids of `uid`'s committed snapshots, without reading them: what
    /// a service compares with the snapshots it serves, to find those
    /// another writer of the store (`hiber session suspend`) added or
    /// removed.
    pub fn ids(&self, uid: u32) -> Vec<String> {
        let Ok(rd) = fs::read_dir(self.user_dir(uid)) else {
            return Vec::new();
        };
        let mut out: Vec<String> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| is_id(id))
            .collect();
        out.sort();
        out
    }

    /// One snapshot of `uid`.
    pub fn entry(&self, uid: u32, id: &str) -> Result<SnapshotEntry> {
        let dir = self.image_dir(uid, id)?;
        Ok(self.read_entry(uid, dir.parent().expect("an image has a parent"), id))
    }

    fn image_dir(&self, uid: u32, id: &str) -> Result<PathBuf> {
        let missing = || SystemStoreError::NoSuchSnapshot { uid, id: id.into() };
        if !is_id(id) {
            return Err(missing());
        }
        let dir = self.user_dir(uid);
        let image = dir.join(id);
        if !fs::symlink_metadata(&image).is_ok_and(|m| m.is_dir()) {
            return Err(missing());
        }
        self.check_private(&dir)?;
        Ok(image)
    }

    fn meta_path(dir: &Path, id: &str) -> PathBuf {
        dir.join(META).join(format!("{id}.json"))
    }

    fn read_meta(dir: &Path, id: &str) -> Option<Meta> {
        let bytes = fs::read(Self::meta_path(dir, id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write_meta(dir: &Path, id: &str, meta: &Meta) -> Result<()> {
        let metas = dir.join(META);
        hiber_core::image::create_private_dir_all(&metas).at_path("creating", &metas)?;
        let path = Self::meta_path(dir, id);
        let tmp = metas.join(format!(".{id}.json.tmp"));
        let bytes = serde_json::to_vec(meta).expect("the metadata serialises");
        let mut f = fs::File::create(&tmp).at_path("creating", &tmp)?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .at_path("writing", &tmp)?;
        Ok(fs::rename(&tmp, &path).at_path("renaming into place", &path)?)
    }

    fn read_entry(&self, uid: u32, dir: &Path, id: &str) -> SnapshotEntry {
        let path = dir.join(id);
        let meta = Self::read_meta(dir, id);
        let (size, total_size) = sizes(&path);
        let mut e = SnapshotEntry {
            uid,
            id: id.into(),
            name: meta
                .as_ref()
                .map_or_else(|| id.to_string(), |m| m.name.clone()),
            display: String::new(),
            created_us: meta.as_ref().map_or(0, |m| m.created_us),
            kind: meta
                .as_ref()
                .map_or(SaveKind::Manual, |m| m.kind)
                .as_str()
                .into(),
            size,
            total_size,
            windows: Vec::new(),
            detached: Vec::new(),
            screens: 0,
            restorable: false,
            problem: String::new(),
            pending: meta.as_ref().is_some_and(|m| m.pending),
        };
        let opened: std::result::Result<(ImageReader, Snapshot), _> = ImageReader::open(&path);
        let (reader, snap) = match opened {
            Ok(o) => o,
            Err(err) => {
                e.problem = format!("damaged: {err}");
                return e;
            }
        };
        if e.created_us == 0 {
            e.created_us = snap.created_unix * 1_000_000;
        }
        e.detached = snap
            .detached
            .iter()
            .map(|u| u.devname.clone().unwrap_or_else(|| u.devpath.clone()))
            .collect();
        match display_session::stored_record(&reader, &snap) {
            Ok(Some(record)) => {
                e.display = record.display;
                e.screens = snap
                    .attachments
                    .iter()
                    .filter(|a| a.media_type == "image/png")
                    .count() as u32;
                e.windows = record
                    .windows
                    .into_iter()
                    .map(|w| (w.title.unwrap_or_default(), w.class.unwrap_or_default()))
                    .collect();
            }
            Ok(None) => {
                e.problem = "it holds no desktop session".into();
                return e;
            }
            Err(err) => {
                e.problem = format!("damaged: {err}");
                return e;
            }
        }
        let here = uname_release();
        if snap.kernel != here {
            e.problem = format!("made on kernel {}; this machine runs {here}", snap.kernel);
            return e;
        }
        e.restorable = true;
        e
    }

    /// Save `req.display`'s session into its owner's store. Listed only
    /// once committed; cancelled or failed, nothing is left and the
    /// session runs on as it was.
    pub fn save(&self, req: &SaveRequest, job: &dyn JobControl) -> Result<SnapshotEntry> {
        if let Some(name) = &req.name {
            check_name(name)?;
        }
        let dir = self.open_user(req.owner)?;
        let _saving = DisplayLock::take(&self.base, req.display)?;
        let id = snapshots::new_name(&dir, req.display);
        let devices = DevicePolicies::load(None, &[] as &[&str])?;
        let opts = SaveOptions {
            // A save that ends the session (logout, suspend) ends it only
            // once the image reads back whole.
            verify_before_stop: req.stop,
            display: req.display,
            user: req.owner,
            exclude: Vec::new(),
            dir: dir.join(&id),
            store: Some(snapshots::store_of(&dir)),
            stop: req.stop,
            no_reset: false,
            // Not with stop: a session that ends anyway gains nothing
            // the user sees from a shorter freeze (the wait is the total,
            // which pre-copy does not shorten), and a job's progress and
            // Cancel are heard between the stages of the freeze, where a
            // pre-copy would hold them for most of the save.
            precopy: if req.stop {
                PrecopyMode::Never
            } else {
                PrecopyMode::Auto
            },
            devices,
            services: service_rules(),
        };
        let created_us = now_us();
        let report = |stage: Stage| {
            let (name, fraction, done, expected) = match stage {
                Stage::WaitingForMemory => ("waiting for restored memory", 0.05, 0, 0),
                // Its share grows with the chunks read of those queued.
                Stage::Precopying { done, queued } => (
                    "precopying",
                    0.1 + 0.3 * done as f64 / queued.max(1) as f64,
                    0,
                    0,
                ),
                Stage::Freezing => ("freezing", 0.4, 0, 0),
                Stage::Inspecting => ("inspecting", 0.5, 0, 0),
                Stage::DumpingMemory { done, total } => (
                    "saving memory",
                    0.5 + 0.4 * done as f64 / total.max(1) as f64,
                    done * PAGE,
                    total * PAGE,
                ),
                Stage::Committing => ("committing", 0.95, 0, 0),
            };
            job.progress(Progress {
                stage: name,
                fraction,
                bytes_done: done,
                bytes_expected: expected,
            });
        };
        job.progress(Progress {
            stage: "finding the session",
            fraction: 0.0,
            bytes_done: 0,
            bytes_expected: 0,
        });
        // Written first: a save that ends the session must be found
        // pending even if this service dies right after the commit.
        let meta = Meta {
            name: req.name.clone().unwrap_or_else(|| id.clone()),
            kind: req.kind,
            created_us,
            pending: req.kind != SaveKind::Manual,
        };
        Self::write_meta(&dir, &id, &meta)?;
        let saved = match display_session::save_cancellable(&opts, &report, &|| job.cancelled()) {
            Ok(saved) => saved,
            Err(e) => {
                let _ = fs::remove_file(Self::meta_path(&dir, &id));
                return Err(e.into());
            }
        };
        info!(
            display = req.display,
            owner = req.owner,
            id,
            processes = saved.stats.processes,
            "session saved"
        );
        let entry = self.read_entry(req.owner, &dir, &id);
        job.progress(Progress {
            stage: "done",
            fraction: 1.0,
            bytes_done: saved.stats.bytes_raw,
            bytes_expected: saved.stats.bytes_raw,
        });
        Ok(entry)
    }

    /// Restore `uid`'s snapshot `id` on behalf of `uid`: whoever asks, the
    /// restored processes get no credential that user did not have.
    /// Whether it is restorable at all (`SnapshotEntry::restorable`, from
    /// [`Store::entry`] or [`Store::list`]) is the caller's to ask first, as
    /// hiberd does before it starts a job: reading the document here too
    /// would be its third reading in a restore, time the user waits for
    /// (a damaged image still fails, when the restore reads it).
    pub fn restore(
        &self,
        uid: u32,
        id: &str,
        how: display_session::RestoreHow,
        job: &dyn JobControl,
    ) -> Result<RestoreOutcome> {
        let image = self.image_dir(uid, id)?;
        let creds = hiber_core::creds::Creds::of_user(uid)
            .map_err(|source| SystemStoreError::NoSuchUser { uid, source })?;
        job.progress(Progress {
            stage: "restoring",
            fraction: 0.0,
            bytes_done: 0,
            bytes_expected: 0,
        });
        let progress = |done: u64, total: u64| {
            job.progress(Progress {
                stage: "restoring",
                fraction: 0.9 * done as f64 / total.max(1) as f64,
                bytes_done: done,
                bytes_expected: total,
            })
        };
        let r = display_session::restore_onto(
            &image,
            Some(creds),
            how.display,
            how.memory,
            &progress,
            &|| job.cancelled(),
        )?;
        // Back and answering: no longer waiting to be offered.
        if let Err(e) = self.set_pending(uid, id, false) {
            warn!(uid, id, error = %e, "could not mark the restored snapshot as no longer pending");
        }
        let mut pids: Vec<i32> = r.restored.pids.iter().map(|p| p.1).collect();
        pids.sort_unstable();
        job.progress(Progress {
            stage: "done",
            fraction: 1.0,
            bytes_done: 0,
            bytes_expected: 0,
        });
        Ok(RestoreOutcome {
            display: r.display,
            saved_display: Some(r.saved_display),
            pids,
            keeper: r.restored.keeper,
            windows: r.now.windows.len(),
            changes: r.changes.len(),
            lazy: r.memory == display_session::MemoryLoading::Lazy,
        })
    }

    /// Mark `uid`'s snapshot `id` as waiting to be offered back (or not).
    pub fn set_pending(&self, uid: u32, id: &str, pending: bool) -> Result<()> {
        let image = self.image_dir(uid, id)?;
        let dir = image.parent().expect("an image has a parent");
        match Self::read_meta(dir, id) {
            Some(meta) if meta.pending == pending => Ok(()),
            Some(mut meta) => {
                meta.pending = pending;
                Self::write_meta(dir, id, &meta)
            }
            None if !pending => Ok(()),
            None => Self::write_meta(
                dir,
                id,
                &Meta {
                    name: id.into(),
                    kind: SaveKind::Manual,
                    created_us: 0,
                    pending,
                },
            ),
        }
    }

    /// `uid`'s snapshots waiting to be offered back, newest first.
    pub fn pending(&self, uid: u32) -> Result<Vec<SnapshotEntry>> {
        let mut out: Vec<SnapshotEntry> =
            self.list(uid)?.into_iter().filter(|e| e.pending).collect();
        out.reverse();
        Ok(out)
    }

    /// Give `uid`'s snapshot `id` another name.
    pub fn rename(&self, uid: u32, id: &str, name: &str) -> Result<SnapshotEntry> {
        check_name(name)?;
        let image = self.image_dir(uid, id)?;
        let dir = image.parent().expect("an image has a parent");
        let mut meta = Self::read_meta(dir, id).unwrap_or(Meta {
            name: id.into(),
            kind: SaveKind::Manual,
            created_us: 0,
            pending: false,
        });
        meta.name = name.into();
        Self::write_meta(dir, id, &meta)?;
        Ok(self.read_entry(uid, dir, id))
    }

    /// Remove `uid`'s snapshot `id` and the store space only it used.
    pub fn delete(&self, uid: u32, id: &str) -> Result<PruneStats> {
        let image = self.image_dir(uid, id)?;
        let dir = image.parent().expect("an image has a parent").to_path_buf();
        let stats = snapshots::remove(&dir, id)?;
        let meta = Self::meta_path(&dir, id);
        if let Err(e) = fs::remove_file(&meta) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(SystemStoreError::Io {
                    op: "removing",
                    path: meta,
                    source: e,
                });
            }
        }
        info!(uid, id, freed = stats.removed_bytes, "snapshot deleted");
        Ok(stats)
    }

    /// Screen `screen`'s PNG, as a read-only fd of a sealed memory file:
    /// the store itself stays root's alone.
    pub fn screenshot(&self, uid: u32, id: &str, screen: u32) -> Result<OwnedFd> {
        let image = self.image_dir(uid, id)?;
        let (reader, snap): (ImageReader, Snapshot) = ImageReader::open(&image)
            .map_err(|e| SystemStoreError::Session(SessionError::Image(e)))?;
        let name = display_session::screenshot_name(screen);
        let stored = snap
            .attachment(&name)
            .ok_or_else(|| SystemStoreError::NoSuchScreen {
                id: id.into(),
                screen,
            })?;
        let png = hiber_core::attachment::read(&reader, stored)
            .map_err(|e| SystemStoreError::Session(SessionError::Attachment(e)))?;
        sealed_file(&png)
    }
}

/// (bytes only the image uses, bytes of the image): a pack linked by the
/// image and the store alone (two links) is the image's own.
fn sizes(image: &Path) -> (u64, u64) {
    let total = hiber_core::image::image_bytes(image);
    let mut own = fs::symlink_metadata(image.join("snapshot")).map_or(0, |m| m.len());
    if let Ok(rd) = fs::read_dir(image.join("packs")) {
        for e in rd.flatten() {
            if let Ok(m) = e.path().symlink_metadata() {
                if m.is_file() && m.nlink() <= 2 {
                    own += m.len();
                }
            }
        }
    }
    (own, total)
}

fn uname_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `bytes` in a memory file sealed against every change, opened again
/// read-only: the fd to hand to a client.
fn sealed_file(bytes: &[u8]) -> Result<OwnedFd> {
    let what = Path::new("memfd:hiber-screenshot");
    // SAFETY: memfd_create with a NUL-terminated name and plain flags.
    let fd = unsafe {
        libc::memfd_create(
            c"hiber-screenshot".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        Err::<(), _>(io::Error::last_os_error()).at_path("creating", what)?;
    }
    // SAFETY: fd was just created and is ours alone.
    let mut file = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes).at_path("writing", what)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our own open memfd.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0 {
        Err::<(), _>(io::Error::last_os_error()).at_path("sealing", what)?;
    }
    // Opened again through /proc: a read-only description of the same file.
    let path = PathBuf::from(format!("/proc/self/fd/{fd}"));
    let ro = fs::File::open(&path).at_path("reopening", &path)?;
    Ok(OwnedFd::from(ro))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_and_never_unfinished() {
        assert!(is_id("display-1-20261125-173005"));
        assert!(is_id("display-1-20261125-173005-2"));
        for bad in ["", ".store", ".meta", "a/b", "display-1.tmp-42", "x y", "é"] {
            assert!(!is_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_are_one_printable_line() {
        assert!(check_name("Before the demo ✓").is_ok());
        for bad in ["", "  ", "a\nb", "\u{7}"] {
            assert!(matches!(
                check_name(bad),
                Err(SystemStoreError::BadName { .. })
            ));
        }
        assert!(check_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn kinds_parse() {
        for k in ["manual", "logout", "sleep"] {
            assert_eq!(SaveKind::parse(k).unwrap().as_str(), k);
        }
        assert!(matches!(
            SaveKind::parse("nap"),
            Err(SystemStoreError::BadKind { .. })
        ));
    }

    #[test]
    fn screenshots_come_sealed_and_read_only() {
        let fd = sealed_file(b"\x89PNG fake").unwrap();
        let mut f = fs::File::from(fd);
        assert!(f.write_all(b"x").is_err(), "the fd is read-only");
        let mut back = Vec::new();
        io::Read::read_to_end(&mut f, &mut back).unwrap();
        assert_eq!(back, b"\x89PNG fake");
    }

    #[test]
    fn a_store_others_can_read_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::new(t.path());
        let dir = store.open_user(4242).unwrap();
        assert!(store.list(4242).unwrap().is_empty());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            store.list(4242),
            Err(SystemStoreError::UnsafeStore { .. })
        ));
        assert!(matches!(
            store.entry(4242, "display-1-x"),
            Err(SystemStoreError::NoSuchSnapshot { .. })
        ));
    }

    #[test]
    fn pending_marks_survive_and_orphan_metadata_goes() {
        let base = tempfile::tempdir().unwrap();
        let store = Store::new(base.path().join("store"));
        let dir = store.open_user(1500).unwrap();
        // An image directory (unreadable as an image: listed, damaged).
        let id = "display-7-20261206-230000";
        hiber_core::image::create_private_dir_all(&dir.join(id)).unwrap();
        assert!(store.pending(1500).unwrap().is_empty());
        // Ids: committed images only, not one being written, nor the
        // store's own directories.
        hiber_core::image::create_private_dir_all(&dir.join("display-7-x.tmp-42")).unwrap();
        hiber_core::image::create_private_dir_all(&snapshots::store_of(&dir)).unwrap();
        assert_eq!(store.ids(1500), [id]);
        assert!(store.ids(1501).is_empty());
        store.set_pending(1500, id, true).unwrap();
        let pending = store.pending(1500).unwrap();
        assert_eq!(pending.len(), 1);
        assert!(pending[0].pending && pending[0].id == id);
        store.set_pending(1500, id, false).unwrap();
        assert!(store.pending(1500).unwrap().is_empty());
        assert!(matches!(
            store.set_pending(1500, "display-7-absent", true),
            Err(SystemStoreError::NoSuchSnapshot { .. })
        ));
        // The metadata of a save that never committed goes at recovery;
        // an image's stays.
        let orphan = Store::meta_path(&dir, "display-7-20261206-230500");
        fs::write(&orphan, b"{}").unwrap();
        store.recover();
        assert!(!orphan.exists());
        assert!(Store::meta_path(&dir, id).exists());
    }
}
