//! `org.hiber.Hiber1.Manager` at `/org/hiber/Hiber1`: check and save a
//! display's session, list snapshots, the jobs running.

use crate::auth::{self, Caller};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use hiber_session::display_session::parse_display;
use hiber_session::system_store::{self, SaveKind, SaveRequest};
use std::collections::HashMap;
use std::sync::Arc;
use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

#[derive(Debug)]
pub struct Manager {
    pub daemon: Arc<Daemon>,
}

impl Manager {
    /// The display, its owner, and the caller, once the caller may save
    /// that display's session: root any; a user only its own, with every
    /// process of it running as that user (found without freezing
    /// anything), and polkit's yes.
    async fn may_save(&self, hdr: &Header<'_>, display: &str) -> Result<(u32, u32, Caller)> {
        let d = &self.daemon;
        d.touch();
        let caller = d.auth.caller(d.conn(), hdr).await?;
        let n = parse_display(display)
            .ok_or_else(|| Error::NoSuchDisplay(format!("{display:?} is not a display (:N)")))?;
        let owner = tokio::task::spawn_blocking(move || -> Result<u32> {
            let owner = system_store::display_owner(n)?;
            if caller.may_touch(owner) && !caller.is_root() {
                // Every process it would save must be the caller's too.
                hiber_session::display_session::find(
                    n,
                    &hiber_session::discover::FindOptions {
                        user: caller.uid,
                        exclude: Vec::new(),
                        services: system_store::service_rules(),
                    },
                )
                .map_err(system_store::SystemStoreError::from)?;
            }
            Ok(owner)
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))??;
        if !caller.may_touch(owner) {
            return Err(Error::NotAuthorized(format!(
                "display :{n} is uid {owner}'s session; uid {} may save only its own",
                caller.uid
            )));
        }
        let action = if caller.uid == owner {
            auth::SAVE_OWN
        } else {
            auth::MANAGE_OTHERS
        };
        d.auth.polkit(d.conn(), hdr, caller, action).await?;
        Ok((n, owner, caller))
    }
}

fn option<'a, T>(options: &'a HashMap<String, OwnedValue>, key: &str) -> Result<Option<T>>
where
    T: TryFrom<&'a Value<'a>>,
{
    match options.get(key) {
        None => Ok(None),
        Some(v) => T::try_from(v)
            .map(Some)
            .map_err(|_| Error::Failed(format!("option {key:?} has the wrong type"))),
    }
}

#[interface(name = "org.hiber.Hiber1.Manager")]
impl Manager {
    /// What a save of `display`'s session would do: whether it can be
    /// saved, and each finding that changes something (pid, subject, kind,
    /// policy, reason): every policy but Restore, which a session holds by
    /// the thousand (its mappings) and which tells a user nothing. The
    /// session is frozen for the inspection and let go at once.
    #[zbus(out_args("savable", "findings"))]
    async fn check_session(
        &self,
        display: &str,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(bool, Vec<HashMap<String, OwnedValue>>)> {
        let (n, owner, _) = self.may_save(&hdr, display).await?;
        let report = tokio::task::spawn_blocking(move || system_store::check(n, owner))
            .await
            .map_err(|e| Error::Failed(e.to_string()))??;
        let v = |v: Value<'_>| OwnedValue::try_from(v).expect("plain values have no fds");
        let findings = report
            .findings
            .iter()
            .filter(|f| f.policy != hiber_core::Policy::Restore)
            .map(|f| {
                let text = |x: &dyn std::fmt::Debug| format!("{x:?}").to_lowercase();
                HashMap::from([
                    ("pid".to_string(), v(f.pid.into())),
                    ("subject".to_string(), v(text(&f.subject).into())),
                    ("kind".to_string(), v(f.kind.as_str().into())),
                    ("policy".to_string(), v(text(&f.policy).into())),
                    ("reason".to_string(), v(f.reason.as_str().into())),
                ])
            })
            .collect();
        Ok((report.is_checkpointable(), findings))
    }

    /// Save `display`'s session into its owner's store. Options: `name`
    /// (s), `stop` (b: end the session once the snapshot is committed),
    /// `kind` (s: manual, logout, sleep). Returns the job at once.
    #[zbus(out_args("job"))]
    async fn save_session(
        &self,
        display: &str,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedObjectPath> {
        self.daemon.refuse_if_stopping()?;
        for k in options.keys() {
            if !["name", "stop", "kind"].contains(&k.as_str()) {
                return Err(Error::Failed(format!("unknown option {k:?}")));
            }
        }
        let name: Option<String> = option::<&str>(&options, "name")?.map(str::to_string);
        let stop = option::<bool>(&options, "stop")?.unwrap_or(false);
        let kind = match option::<&str>(&options, "kind")? {
            Some(k) => SaveKind::parse(k)?,
            None => SaveKind::Manual,
        };
        if let Some(name) = &name {
            system_store::check_name(name)?;
        }
        let (display, owner, caller) = self.may_save(&hdr, display).await?;
        let req = SaveRequest {
            display,
            owner,
            name,
            kind,
            stop,
        };
        crate::job::start_save(&self.daemon, caller, req).await
    }

    /// The caller's snapshots (root: everyone's).
    #[zbus(out_args("snapshots"))]
    async fn list_snapshots(
        &self,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<OwnedObjectPath>> {
        let d = &self.daemon;
        d.touch();
        let caller = d.auth.caller(d.conn(), &hdr).await?;
        d.sync_snapshots(caller.uid).await;
        Ok(d.snapshots_of(caller.uid))
    }

    /// Save the caller's sessions (every display it runs) before the
    /// system sleeps, or no longer. Kept by hiberd; while anyone opted in,
    /// hiberd holds a logind delay inhibitor for sleep and stays running.
    async fn set_save_before_sleep(
        &self,
        enabled: bool,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<()> {
        let d = &self.daemon;
        d.touch();
        let caller = d.auth.caller(d.conn(), &hdr).await?;
        d.auth
            .polkit(d.conn(), &hdr, caller, auth::SAVE_OWN)
            .await?;
        d.sleep.set(caller.uid, enabled)
    }

    /// Whether the caller's sessions are saved before sleep.
    #[zbus(out_args("enabled"))]
    async fn get_save_before_sleep(&self, #[zbus(header)] hdr: Header<'_>) -> Result<bool> {
        let d = &self.daemon;
        d.touch();
        let caller = d.auth.caller(d.conn(), &hdr).await?;
        Ok(d.sleep.enabled(caller.uid))
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").into()
    }

    /// The jobs running, and those just ended.
    #[zbus(property)]
    fn jobs(&self) -> Vec<OwnedObjectPath> {
        self.daemon.job_paths()
    }

    #[zbus(signal)]
    pub async fn snapshot_added(
        emitter: &SignalEmitter<'_>,
        snapshot: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn snapshot_removed(
        emitter: &SignalEmitter<'_>,
        snapshot: ObjectPath<'_>,
    ) -> zbus::Result<()>;
}
