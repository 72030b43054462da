//! Who is calling, from the message: the sender's credentials as the bus
//! daemon saw them (never hiberd's own), the hard rules that hold without
//! polkit, and polkit's answer on top.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use tracing::debug;
use zbus::message::Header;
use zbus::names::{BusName, UniqueName};
use zbus::Connection;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

pub const SAVE_OWN: &str = "org.hiber.Hiber1.save-own-session";
pub const RESTORE_OWN: &str = "org.hiber.Hiber1.restore-own-snapshot";
pub const DELETE_OWN: &str = "org.hiber.Hiber1.delete-own-snapshot";
pub const MANAGE_OTHERS: &str = "org.hiber.Hiber1.manage-other-users";

/// Unique names are never reused on a bus, so a sender's credentials can
/// be kept; the cache is emptied when it grows past this.
const CACHE: usize = 1024;

/// The process behind a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub pid: u32,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The hard rule: a user acts on its own things; root on anyone's.
    pub fn may_touch(&self, owner: u32) -> bool {
        self.is_root() || self.uid == owner
    }
}

#[derive(Debug, Default)]
pub struct Auth {
    callers: Mutex<HashMap<String, Caller>>,
}

impl Auth {
    /// The caller of the message with `hdr`, from the bus daemon.
    pub async fn caller(&self, conn: &Connection, hdr: &Header<'_>) -> Result<Caller> {
        let sender: &UniqueName<'_> = hdr
            .sender()
            .ok_or_else(|| Error::NotAuthorized("the message names no sender".into()))?;
        if let Some(c) = self.lock().get(sender.as_str()) {
            return Ok(*c);
        }
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let creds = dbus
            .get_connection_credentials(BusName::Unique(sender.to_owned()))
            .await
            .map_err(|e| Error::NotAuthorized(format!("no credentials for {sender}: {e}")))?;
        let (Some(uid), Some(pid)) = (creds.unix_user_id(), creds.process_id()) else {
            return Err(Error::NotAuthorized(format!(
                "the bus gave no uid and pid for {sender}"
            )));
        };
        let caller = Caller { uid, pid };
        let mut cache = self.lock();
        if cache.len() >= CACHE {
            cache.clear();
        }
        cache.insert(sender.to_string(), caller);
        Ok(caller)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Caller>> {
        self.callers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// polkit's answer for `action`, the subject being the message's
    /// sender. Root is not asked. Without polkit on the bus, everyone else
    /// is refused.
    pub async fn polkit(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
        caller: Caller,
        action: &str,
    ) -> Result<()> {
        if caller.is_root() {
            return Ok(());
        }
        let subject = Subject::new_for_message_header(hdr)
            .map_err(|e| Error::NotAuthorized(format!("no polkit subject: {e}")))?;
        let authority = AuthorityProxy::new(conn).await?;
        let result = authority
            .check_authorization(
                &subject,
                action,
                &HashMap::new(),
                CheckAuthorizationFlags::AllowUserInteraction.into(),
                "",
            )
            .await;
        match result {
            Ok(r) if r.is_authorized => {
                debug!(uid = caller.uid, pid = caller.pid, action, "polkit authorized");
                Ok(())
            }
            Ok(r) => Err(Error::NotAuthorized(format!(
                "polkit does not authorize uid {} for {action}{}",
                caller.uid,
                if r.is_challenge {
                    " (it would need authentication, and no agent answered)"
                } else {
                    ""
                }
            ))),
            Err(zbus::Error::MethodError(name, _, _))
                if [
                    "org.freedesktop.DBus.Error.ServiceUnknown",
                    "org.freedesktop.DBus.Error.NameHasNoOwner",
                ]
                .contains(&name.as_str()) =>
            {
                Err(Error::NotAuthorized(format!(
                    "polkit (org.freedesktop.PolicyKit1) is not on the system bus, and without it only root may {action}"
                )))
            }
            Err(e) => Err(Error::NotAuthorized(format!(
                "polkit could not decide {action}: {e}"
            ))),
        }
    }
}
