//! Kernel keyrings. libc: neither nix nor rustix has `keyctl`.

use std::io;

/// Give the calling thread a new, empty, anonymous session keyring
/// (`KEYCTL_JOIN_SESSION_KEYRING` with no name).
pub fn join_new_session_keyring() -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with an operation number and a null name (anonymous).
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
