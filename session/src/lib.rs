//! hiber-session: the desktop layer and the `hiber` command-line tool.
//!
//! It holds the CLI's commands over the engine (`hiber-core`): check,
//! checkpoint, restore, inspect, the demonstration and the benchmark; and
//! finding the processes of a session from its X display (`discover`).
//! Recording windows and screenshots, and the uevent proxy come with their
//! own issues. It never imports the D-Bus service or the GUI.

pub mod discover;
pub mod format;
