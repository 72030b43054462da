//! The errors clients see, named under `org.hiber.Hiber1.Error.` so they
//! match on names, not on text.

use hiber_session::system_store::SystemStoreError;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.hiber.Hiber1.Error")]
pub enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller may not do this (hard rules or polkit).
    NotAuthorized(String),
    /// The job was cancelled; nothing changed.
    Cancelled(String),
    /// Another job works on the same display or snapshot.
    Busy(String),
    NoSuchDisplay(String),
    NoSuchSnapshot(String),
    /// The session cannot be saved; the message lists the refusals.
    Refused(String),
    Failed(String),
}

impl Error {
    /// The D-Bus name, for a job's `Completed` signal.
    pub fn dbus_name(&self) -> String {
        zbus::DBusError::name(self).to_string()
    }

    pub fn message(&self) -> String {
        match self {
            Error::ZBus(e) => e.to_string(),
            Error::NotAuthorized(m)
            | Error::Cancelled(m)
            | Error::Busy(m)
            | Error::NoSuchDisplay(m)
            | Error::NoSuchSnapshot(m)
            | Error::Refused(m)
            | Error::Failed(m) => m.clone(),
        }
    }

    /// The error a D-Bus name stands for (from the restore helper).
    pub fn from_name(name: &str, message: String) -> Self {
        match name.strip_prefix("org.hiber.Hiber1.Error.") {
            Some("NotAuthorized") => Error::NotAuthorized(message),
            Some("Cancelled") => Error::Cancelled(message),
            Some("Busy") => Error::Busy(message),
            Some("NoSuchDisplay") => Error::NoSuchDisplay(message),
            Some("NoSuchSnapshot") => Error::NoSuchSnapshot(message),
            Some("Refused") => Error::Refused(message),
            _ => Error::Failed(message),
        }
    }

    /// As a property getter's (or a standard interface's) error. zbus
    /// replies to those with the name of an fdo error, never with ours, so
    /// a refusal is the standard `org.freedesktop.DBus.Error.AccessDenied`
    /// and anything else `org.freedesktop.DBus.Error.Failed`; the message
    /// is ours either way.
    pub fn into_fdo(self) -> zbus::fdo::Error {
        match self {
            Error::NotAuthorized(m) => zbus::fdo::Error::AccessDenied(m),
            e => zbus::fdo::Error::Failed(e.message()),
        }
    }
}

impl From<SystemStoreError> for Error {
    fn from(e: SystemStoreError) -> Self {
        let text = e.to_string();
        match e {
            SystemStoreError::NoSuchDisplay { .. } => Error::NoSuchDisplay(text),
            SystemStoreError::NoSuchSnapshot { .. } => Error::NoSuchSnapshot(text),
            SystemStoreError::NotOwner { .. } => Error::NotAuthorized(text),
            SystemStoreError::Cancelled => Error::Cancelled(text),
            SystemStoreError::Refused { .. } => Error::Refused(text),
            SystemStoreError::DisplayLock(
                hiber_session::display_lock::DisplayLockError::Busy { .. },
            ) => Error::Busy(text),
            _ => Error::Failed(text),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
