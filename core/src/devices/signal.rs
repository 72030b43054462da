//! The signal an X server gets once its card is reattached, by name (the
//! configuration's and an image's).

/// The signal sent when the configuration names none: Xorg's xf86 VT code
/// registers SIGUSR1 as both the release and the acquire signal.
pub const DEFAULT: &str = "USR1";
/// Signals the configuration may name.
const SIGNALS: &[(&str, i32)] = &[
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("HUP", libc::SIGHUP),
    ("CONT", libc::SIGCONT),
    ("WINCH", libc::SIGWINCH),
];
/// The signal number of a name from the configuration or an image:
/// `USR1` or `SIGUSR1`, any case.
pub fn parse(name: &str) -> Option<i32> {
    let name = name.trim();
    let bare = name
        .get(..3)
        .filter(|p| p.eq_ignore_ascii_case("SIG"))
        .map_or(name, |_| &name[3..]);
    SIGNALS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(bare))
        .map(|&(_, s)| s)
}
