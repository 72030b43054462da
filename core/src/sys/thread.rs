//! Threads: what the kernel keeps per thread that a tracer may read.

use std::io;

/// The robust futex list of thread `tid`: its head address and length
/// (`get_robust_list`; needs ptrace access to it). libc: neither nix nor
/// rustix has it.
pub fn robust_list(tid: i32) -> io::Result<(u64, usize)> {
    let mut head = 0u64;
    let mut len = 0usize;
    // SAFETY: get_robust_list writes a pointer and a length to our two out
    // variables.
    let r = unsafe { libc::syscall(libc::SYS_get_robust_list, tid, &mut head, &mut len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((head, len))
}
