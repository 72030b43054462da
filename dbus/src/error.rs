//! The errors clients see, named under `org.hiber.Hiber1.Error.` so they
//! match on names, not on text.

use hiber_session::service::ServiceError;

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

    /// As a property getter's error (zbus wants an fdo error there), with
    /// this error's own name.
    pub fn into_fdo(self) -> zbus::fdo::Error {
        let name = match zbus::names::OwnedErrorName::try_from(self.dbus_name()) {
            Ok(n) => n,
            Err(e) => return zbus::fdo::Error::Failed(e.to_string()),
        };
        // A method error carries the reply it came in; this one never
        // travels as a reply, so any message does.
        match zbus::Message::method_call("/", "Get").and_then(|b| b.build(&())) {
            Ok(msg) => {
                zbus::fdo::Error::ZBus(zbus::Error::MethodError(name, Some(self.message()), msg))
            }
            Err(e) => zbus::fdo::Error::Failed(e.to_string()),
        }
    }
}

impl From<ServiceError> for Error {
    fn from(e: ServiceError) -> Self {
        let text = e.to_string();
        match e {
            ServiceError::NoSuchDisplay { .. } => Error::NoSuchDisplay(text),
            ServiceError::NoSuchSnapshot { .. } => Error::NoSuchSnapshot(text),
            ServiceError::NotOwner { .. } => Error::NotAuthorized(text),
            ServiceError::Cancelled => Error::Cancelled(text),
            ServiceError::Refused { .. } => Error::Refused(text),
            _ => Error::Failed(text),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
