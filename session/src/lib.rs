//! hiber-session: the desktop layer and the `hiber` command-line tool.
//!
//! For now it holds the CLI's commands over the engine (`hiber-core`): check,
//! checkpoint, restore, inspect, the demonstration and the benchmark.
//! Finding a session from an X display, recording windows and screenshots,
//! and the uevent proxy come with their own issues. It never imports the
//! D-Bus service or the GUI.

pub mod format;
