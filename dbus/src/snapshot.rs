//! `org.hiber.Hiber1.Snapshot`: one object per snapshot. Its owner (and
//! root) may read its properties and act on it; anyone else is told
//! `NotAuthorized`, whatever they ask.

use crate::auth::{self, Caller};
use crate::daemon::{snapshot_path, Daemon};
use crate::error::{Error, Result};
use crate::objects::Properties;
use hiber_session::display_session::parse_display;
use hiber_session::display_session::{DisplayChoice, MemoryLoading, RestoreHow};
use hiber_session::system_store::SnapshotEntry;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::info;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{fdo, interface};

pub const SNAPSHOT_IFACE: &str = "org.hiber.Hiber1.Snapshot";

#[derive(Debug)]
pub struct SnapshotObject {
    daemon: Arc<Daemon>,
    pub entry: SnapshotEntry,
}

impl SnapshotObject {
    pub fn new(daemon: Arc<Daemon>, entry: SnapshotEntry) -> Self {
        Self { daemon, entry }
    }

    fn path(&self) -> OwnedObjectPath {
        snapshot_path(self.entry.uid, &self.entry.id)
    }

    /// A property read: only by the owner or root. Reads without a header
    /// are hiberd's own (ObjectManager, which filters by caller itself).
    async fn readable(&self, hdr: Option<Header<'_>>) -> fdo::Result<()> {
        let Some(hdr) = hdr else { return Ok(()) };
        self.owner_or_root(&hdr)
            .await
            .map(|_| ())
            .map_err(Error::into_fdo)
    }

    async fn owner_or_root(&self, hdr: &Header<'_>) -> Result<Caller> {
        let d = &self.daemon;
        let caller = d.auth.caller(d.conn(), hdr).await?;
        if !caller.may_touch(self.entry.uid) {
            return Err(Error::NotAuthorized(format!(
                "uid {} may not use another user's snapshot",
                caller.uid
            )));
        }
        Ok(caller)
    }

    /// The hard rule, then polkit: `own_action` for one's own snapshot,
    /// manage-other-users for root acting on another's.
    async fn authorize(&self, hdr: &Header<'_>, own_action: &str) -> Result<Caller> {
        self.daemon.touch();
        let caller = self.owner_or_root(hdr).await?;
        let action = if caller.uid == self.entry.uid {
            own_action
        } else {
            auth::MANAGE_OTHERS
        };
        self.daemon
            .auth
            .polkit(self.daemon.conn(), hdr, caller, action)
            .await?;
        Ok(caller)
    }

    pub fn properties(&self) -> Properties {
        let e = &self.entry;
        let v = |v: Value<'_>| OwnedValue::try_from(v).expect("plain values have no fds");
        HashMap::from([
            ("Id".into(), v(e.id.as_str().into())),
            ("Name".into(), v(e.name.as_str().into())),
            ("OwnerUid".into(), v(e.uid.into())),
            ("Display".into(), v(e.display.as_str().into())),
            ("Created".into(), v(e.created_us.into())),
            ("Kind".into(), v(e.kind.as_str().into())),
            ("Size".into(), v(e.size.into())),
            ("TotalSize".into(), v(e.total_size.into())),
            ("Windows".into(), v(e.windows.clone().into())),
            ("Detached".into(), v(e.detached.clone().into())),
            ("Screens".into(), v(e.screens.into())),
            ("Restorable".into(), v(e.restorable.into())),
            ("Problem".into(), v(e.problem.as_str().into())),
            ("Pending".into(), v(e.pending.into())),
        ])
    }

    /// The snapshot as the store has it now; `PropertiesChanged` for
    /// `Pending` when that changed (the other properties that move are
    /// only invalidated, or not signalled at all).
    pub async fn refresh(&mut self, emitter: &SignalEmitter<'_>) -> Result<()> {
        let store = self.daemon.store.clone();
        let (uid, id) = (self.entry.uid, self.entry.id.clone());
        let entry = tokio::task::spawn_blocking(move || store.entry(uid, &id))
            .await
            .map_err(|e| Error::Failed(e.to_string()))??;
        let was = self.entry.pending;
        self.entry = entry;
        if was != self.entry.pending {
            info!(path = %self.path(), pending = self.entry.pending, "pending changed");
            // Invalidated, not sent, as Name: signals reach every client.
            self.pending_invalidate(emitter).await?;
        }
        Ok(())
    }
}

#[interface(name = "org.hiber.Hiber1.Snapshot")]
impl SnapshotObject {
    /// Restore the snapshot's session, as its owner, on its display, or
    /// as option `display` says: "free" (the saved display, else the
    /// first free one above it), or ":N". Option `memory`: "auto" (the
    /// default: lazy from 256 MiB), "eager" or "lazy". Returns the job.
    #[zbus(out_args("job"))]
    async fn restore(
        &self,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedObjectPath> {
        self.daemon.refuse_if_stopping()?;
        if let Some(k) = options
            .keys()
            .find(|k| !["display", "memory"].contains(&k.as_str()))
        {
            return Err(Error::Failed(format!("unknown option {k:?}")));
        }
        let memory = match options.get("memory") {
            None => MemoryLoading::Auto,
            Some(v) => {
                let text = <&str>::try_from(v)
                    .map_err(|_| Error::Failed("option \"memory\" is a string".into()))?;
                MemoryLoading::parse(text).ok_or_else(|| {
                    Error::Failed(format!(
                        "option \"memory\": {text:?} is not one of \"auto\", \"eager\", \"lazy\""
                    ))
                })?
            }
        };
        let onto = match options.get("display") {
            None => DisplayChoice::Saved,
            Some(v) => {
                let text = <&str>::try_from(v)
                    .map_err(|_| Error::Failed("option \"display\" is a string".into()))?;
                DisplayChoice::parse(text).ok_or_else(|| {
                    Error::Failed(format!(
                        "option \"display\": {text:?} is neither \"free\" nor a display \":N\""
                    ))
                })?
            }
        };
        let caller = self.authorize(&hdr, auth::RESTORE_OWN).await?;
        if !self.entry.restorable {
            return Err(Error::Failed(format!(
                "snapshot {} cannot be restored: {}",
                self.entry.id, self.entry.problem
            )));
        }
        let display = parse_display(&self.entry.display)
            .ok_or_else(|| Error::Failed(format!("bad display {:?}", self.entry.display)))?;
        crate::job::start_restore(
            &self.daemon,
            caller,
            self.path(),
            self.entry.uid,
            self.entry.id.clone(),
            display,
            RestoreHow {
                display: onto,
                memory,
            },
        )
        .await
    }

    /// Give the snapshot another name.
    async fn rename(
        &mut self,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<()> {
        self.authorize(&hdr, auth::DELETE_OWN).await?;
        let store = self.daemon.store.clone();
        let (uid, id) = (self.entry.uid, self.entry.id.clone());
        let entry = tokio::task::spawn_blocking(move || store.rename(uid, &id, &name))
            .await
            .map_err(|e| Error::Failed(e.to_string()))??;
        self.entry = entry;
        // Invalidated, not sent: the new name is the owner's business.
        fdo::Properties::properties_changed(
            &emitter,
            zbus::names::InterfaceName::from_static_str_unchecked(SNAPSHOT_IFACE),
            HashMap::new(),
            std::borrow::Cow::Borrowed(&["Name"]),
        )
        .await?;
        Ok(())
    }

    /// Keep the snapshot as an ordinary one: no longer pending, so no
    /// longer offered at login (a restore of it, or a resume after the
    /// sleep it was saved for, does the same).
    async fn clear_pending(
        &mut self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<()> {
        self.authorize(&hdr, auth::DELETE_OWN).await?;
        let store = self.daemon.store.clone();
        let (uid, id) = (self.entry.uid, self.entry.id.clone());
        tokio::task::spawn_blocking(move || store.set_pending(uid, &id, false))
            .await
            .map_err(|e| Error::Failed(e.to_string()))??;
        self.refresh(&emitter).await
    }

    /// Delete the snapshot and the store space only it used.
    async fn delete(&self, #[zbus(header)] hdr: Header<'_>) -> Result<()> {
        self.authorize(&hdr, auth::DELETE_OWN).await?;
        let path = self.path();
        if let Some(job) = self.daemon.snapshot_busy(&path) {
            return Err(Error::Busy(format!("the snapshot is busy with job {job}")));
        }
        let store = self.daemon.store.clone();
        let (uid, id) = (self.entry.uid, self.entry.id.clone());
        let stats = tokio::task::spawn_blocking(move || store.delete(uid, &id))
            .await
            .map_err(|e| Error::Failed(e.to_string()))??;
        info!(path = %path, freed = stats.removed_bytes, "deleted");
        // The object cannot be removed from inside its own call.
        let daemon = self.daemon.clone();
        tokio::spawn(async move {
            if let Err(error) = daemon.unserve_snapshot(&path.as_ref()).await {
                tracing::warn!(%error, "removing a deleted snapshot's object");
            }
        });
        Ok(())
    }

    /// A read-only fd of screen `screen`'s PNG.
    #[zbus(out_args("png"))]
    async fn open_screenshot(
        &self,
        screen: u32,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<zbus::zvariant::OwnedFd> {
        self.daemon.touch();
        self.owner_or_root(&hdr).await?;
        let store = self.daemon.store.clone();
        let (uid, id) = (self.entry.uid, self.entry.id.clone());
        let fd = tokio::task::spawn_blocking(move || store.screenshot(uid, &id, screen))
            .await
            .map_err(|e| Error::Failed(e.to_string()))??;
        Ok(fd.into())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn id(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<String> {
        self.readable(hdr).await?;
        Ok(self.entry.id.clone())
    }

    #[zbus(property(emits_changed_signal = "invalidates"))]
    async fn name(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<String> {
        self.readable(hdr).await?;
        Ok(self.entry.name.clone())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn owner_uid(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<u32> {
        self.readable(hdr).await?;
        Ok(self.entry.uid)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn display(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<String> {
        self.readable(hdr).await?;
        Ok(self.entry.display.clone())
    }

    /// Microseconds since the epoch.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn created(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<u64> {
        self.readable(hdr).await?;
        Ok(self.entry.created_us)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn kind(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<String> {
        self.readable(hdr).await?;
        Ok(self.entry.kind.clone())
    }

    #[zbus(property(emits_changed_signal = "false"))]
    async fn size(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<u64> {
        self.readable(hdr).await?;
        Ok(self.entry.size)
    }

    #[zbus(property(emits_changed_signal = "false"))]
    async fn total_size(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<u64> {
        self.readable(hdr).await?;
        Ok(self.entry.total_size)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn windows(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> fdo::Result<Vec<(String, String)>> {
        self.readable(hdr).await?;
        Ok(self.entry.windows.clone())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn detached(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<Vec<String>> {
        self.readable(hdr).await?;
        Ok(self.entry.detached.clone())
    }

    /// How many screens have a screenshot (`OpenScreenshot` 0 to N-1).
    #[zbus(property(emits_changed_signal = "const"))]
    async fn screens(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<u32> {
        self.readable(hdr).await?;
        Ok(self.entry.screens)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn restorable(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<bool> {
        self.readable(hdr).await?;
        Ok(self.entry.restorable)
    }

    /// Saved at logout or before a sleep and not brought back yet:
    /// offered at the next login, never deleted automatically.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    async fn pending(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<bool> {
        self.readable(hdr).await?;
        Ok(self.entry.pending)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn problem(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> fdo::Result<String> {
        self.readable(hdr).await?;
        Ok(self.entry.problem.clone())
    }
}
