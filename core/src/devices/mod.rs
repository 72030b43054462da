//! Devices: which policy each char device gets, from a table of data.
//!
//! A device's class is its sysfs subsystem (`/sys/dev/char/MAJ:MIN/subsystem`).
//! Rules map a class, or one `major:minor`, to a policy. Three layers of
//! rules are consulted in order, the first match winning: the command
//! line's (`--device-policy`), the system file's (`/etc/hiber/devices.toml`),
//! then the automatic one (an X server's primary DRM card is reattached),
//! then the built-in ones below; inside a layer a `major:minor` rule comes
//! before a class rule. [`DevicePolicies::decide`] is the one place this
//! lookup happens, for fds and mappings alike.
//!
//! Ptys and `/dev/tty` never reach the table: the pty code owns them.
//! `detach` holds what a detached device becomes (its record, the stand-in
//! at restore); `reattach` what a reattached card becomes (experimental);
//! `sysfs` reads a device's identity.
//! `policy` holds the rules and their lookup; `signal` the signal a
//! reattached X server gets.

pub mod detach;
pub mod error;
pub mod policy;
pub mod reattach;
pub mod signal;
pub mod sysfs;

pub use detach::{removes, Detached};
pub use error::DeviceError;
pub use policy::*;
pub use reattach::Reattached;
pub use sysfs::{DeviceIdentity, SysRoots, UdevEntry};
