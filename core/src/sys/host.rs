//! This machine: its name and kernel, on rustix (`uname`).

/// This machine's node name and kernel release.
pub fn uname() -> (String, String) {
    let u = rustix::system::uname();
    (
        u.nodename().to_string_lossy().into_owned(),
        u.release().to_string_lossy().into_owned(),
    )
}
