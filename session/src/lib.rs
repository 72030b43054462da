//! hiber-session: the desktop layer and the `hiber` command-line tool.
//!
//! It holds the CLI's commands over the engine (`hiber-core`): check,
//! checkpoint, restore, inspect, the demonstration and the benchmark; and
//! [`desktop`], the record of an X display's windows and screenshots taken
//! at a checkpoint. Finding a session from an X display and the uevent
//! proxy come with their own issues. It never imports the D-Bus service or
//! the GUI.

pub mod desktop;
pub mod format;
