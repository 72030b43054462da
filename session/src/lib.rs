//! hiber-session: the desktop layer and the `hiber` command-line tool.
//!
//! It finds a session from its X display (`discover`), records its windows
//! and screenshots (`desktop`), saves and restores it through the engine
//! (`display_session`), and keeps the user's snapshots (`snapshots`), and
//! offers all of it to a service (`system_store`: hiberd's store and jobs).
//! It tells the engine which processes are X servers (`xserver`). The
//! CLI's commands live in the binary. It never imports the D-Bus service
//! or the GUI.

pub mod desktop;
pub mod discover;
pub mod display_lock;
pub mod display_session;
pub mod error;
pub mod format;
pub mod memory_loading;
pub mod moved_server;
pub mod service_files;
pub mod services;
pub mod snapshots;
pub mod system_store;
pub mod xserver;

pub use error::{Error, Result};
