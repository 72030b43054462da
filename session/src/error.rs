//! The crate's error: each module's error rolled up with `#[from]`, and
//! the engine's (`hiber_core::Error`) beside them, for a caller that drives
//! several modules (hiberd, the GUI). Each module keeps its own error,
//! which callers match on (`SystemStoreError::Refused`,
//! `SessionError::Checkpoint`); this one prints each exactly as its module
//! does. No module of this crate returns it.

use crate::desktop::X11Error;
use crate::discover::DiscoverError;
use crate::display_lock::DisplayLockError;
use crate::display_session::SessionError;
use crate::services::ServiceError;
use crate::snapshots::SnapshotsError;
use crate::system_store::SystemStoreError;

/// Any error of hiber-session. Its message is the module error's own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] SystemStoreError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error(transparent)]
    X11(#[from] X11Error),
    #[error(transparent)]
    Snapshots(#[from] SnapshotsError),
    #[error(transparent)]
    DisplayLock(#[from] DisplayLockError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Core(#[from] hiber_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolled_up_error_prints_as_its_module_does() {
        let module = SystemStoreError::NoSuchDisplay { display: 7 };
        let text = module.to_string();
        assert_eq!(Error::from(module).to_string(), text);
        let core: hiber_core::Error = hiber_core::CheckpointError::Cancelled { stage: "x" }.into();
        let text = core.to_string();
        assert_eq!(Error::from(core).to_string(), text);
    }
}
