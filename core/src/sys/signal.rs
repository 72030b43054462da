//! Signal dispositions and the calling thread's signal mask. libc for
//! dispositions (nix's `signal` and `sigaction` are unsafe by signature:
//! a handler could be any function; these set none); nix for the mask
//! (`sigprocmask`, complete, exact and safe).

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::io;

/// Put `sig`'s disposition back to the default with glibc's `signal(sig,
/// SIG_DFL)`.
pub fn set_default(sig: i32) -> io::Result<()> {
    // SAFETY: SIG_DFL installs no handler; sig is a plain number.
    if unsafe { libc::signal(sig, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Put `sig`'s disposition back to the default with the bare
/// `rt_sigaction` syscall and an all-zero kernel `struct sigaction`
/// (SIG_DFL, no flags, no restorer, an empty mask), as a fresh exec
/// leaves it.
pub fn reset_raw(sig: i32) -> io::Result<()> {
    // The kernel's struct sigaction on x86-64: handler, flags, restorer,
    // an 8-byte mask.
    let act = [0u64; 4];
    // SAFETY: rt_sigaction reads 32 bytes from `act` (a local) and writes
    // nothing (old action null); the sigset size is 8.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, act.as_ptr(), 0usize, 8usize) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unblock every signal of the calling thread (`sigprocmask(SIG_SETMASK,
/// {})`).
pub fn unblock_all() -> io::Result<()> {
    Ok(nix::sys::signal::sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    )?)
}

/// Block `sig` for the calling thread (`sigprocmask(SIG_BLOCK)`).
pub fn block(sig: i32) -> io::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::try_from(sig)?);
    Ok(nix::sys::signal::sigprocmask(
        SigmaskHow::SIG_BLOCK,
        Some(&set),
        None,
    )?)
}

/// Unblock `sig` for the calling thread (`sigprocmask(SIG_UNBLOCK)`).
pub fn unblock(sig: i32) -> io::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::try_from(sig)?);
    Ok(nix::sys::signal::sigprocmask(
        SigmaskHow::SIG_UNBLOCK,
        Some(&set),
        None,
    )?)
}

/// Run `f` with `sig` blocked too (`sigprocmask(SIG_BLOCK)`), then put
/// the mask back as it was (`sigprocmask(SIG_SETMASK)`). A number nix's
/// `Signal` cannot name is not blocked.
pub fn with_blocked<T>(sig: i32, f: impl FnOnce() -> T) -> T {
    let Ok(sig) = Signal::try_from(sig) else {
        return f();
    };
    let mut block = SigSet::empty();
    block.add(sig);
    let mut old = SigSet::empty();
    // Cannot fail with a valid `how` and sets.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut old));
    let out = f();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    out
}
