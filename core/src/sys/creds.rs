//! Credentials: the user database's account of a uid, and the calling
//! thread's filesystem identity (fsuid, fsgid, supplementary groups).
//! libc: `setfsuid`/`setfsgid` report the old id rather than errors, and
//! getpwuid_r/getgrouplist are libc's own (NSS), in neither nix nor
//! rustix as such.

use std::io;

/// The primary gid of user `uid` and the groups the system gives that
/// user (`getpwuid_r`, `getgrouplist`); at most `max` groups.
pub fn user_groups(uid: u32, max: usize) -> io::Result<(u32, Vec<u32>)> {
    // SAFETY: passwd is plain data (integers and pointers); all-zero is a
    // valid value, filled by getpwuid_r before use.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r fills `pw` with pointers into `buf`, both
    // valid for the call; `found` says whether it found the user.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if r != 0 || found.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no user with uid {uid}"),
        ));
    }
    let gid = pw.pw_gid;
    let mut groups = vec![0 as libc::gid_t; max];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: getgrouplist writes at most `n` ids into `groups`;
    // pw_name points into `buf`, alive here.
    let r = unsafe { libc::getgrouplist(pw.pw_name, gid, groups.as_mut_ptr(), &mut n) };
    if r < 0 {
        return Err(io::Error::other(format!(
            "uid {uid} is in more than {} groups",
            groups.len()
        )));
    }
    groups.truncate(n as usize);
    Ok((gid, groups))
}

/// The calling thread's filesystem uid.
pub fn fsuid() -> u32 {
    // SAFETY: setfsuid with an invalid id changes nothing and returns the
    // current one.
    unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 }
}

/// The calling thread's filesystem gid.
pub fn fsgid() -> u32 {
    // SAFETY: setfsgid with an invalid id changes nothing and returns the
    // current one.
    unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 }
}

/// Set the calling thread's filesystem uid; unchecked (the kernel
/// reports no failure: read it back with [`fsuid`]).
pub fn set_fsuid(uid: u32) {
    // SAFETY: a plain id argument; only this thread changes.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
}

/// Set the calling thread's filesystem gid; unchecked, as [`set_fsuid`].
pub fn set_fsgid(gid: u32) {
    // SAFETY: a plain id argument; only this thread changes.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) };
}

/// The calling thread's supplementary groups (`getgroups`, raw).
pub fn groups() -> io::Result<Vec<u32>> {
    // SAFETY: getgroups with a zero size returns the count only.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<u32>()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0u32; n as usize];
    // SAFETY: getgroups fills at most n entries of a buffer of n.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, n, groups.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    Ok(groups)
}

/// Set the calling thread's supplementary groups (the raw `setgroups`
/// syscall: this thread only, not glibc's every-thread broadcast).
pub fn set_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: setgroups reads `len` ids from a valid buffer.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
