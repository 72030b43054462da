//! Netlink sockets: recreated with their protocol and multicast groups.
//! Their port id is the kernel's to choose again, so they are Reopen;
//! one with messages waiting is refused (they cannot be put back).

use super::{getsockopt_int, new_socket, queued_bytes, FileError, FileKind};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetlinkSocket {
    pub protocol: i32,
    /// `SOCK_RAW` or `SOCK_DGRAM`.
    pub kind: i32,
    /// Bound (a port id assigned); unbound sockets stay unbound.
    pub bound: bool,
    /// The first 32 multicast groups joined, as `bind` takes them.
    pub groups: u32,
}

pub(super) fn checkpoint(held: &OwnedFd) -> Result<FileKind, String> {
    let fd = held.as_raw_fd();
    let e = |err: io::Error| format!("reading a netlink socket: {err}");
    // An unreadable count is taken as nothing queued.
    let queued = queued_bytes(fd).unwrap_or(0);
    if queued > 0 {
        return Err(format!(
            "netlink socket with {queued} bytes of unread messages"
        ));
    }
    // SAFETY: sockaddr_nl is plain data; getsockname fills it.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: getsockname into a valid sockaddr_nl.
    if unsafe { libc::getsockname(fd, (&mut a as *mut libc::sockaddr_nl).cast(), &mut len) } != 0 {
        return Err(e(io::Error::last_os_error()));
    }
    Ok(FileKind::Netlink(NetlinkSocket {
        protocol: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).map_err(e)?,
        kind: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).map_err(e)?,
        bound: a.nl_pid != 0,
        groups: a.nl_groups,
    }))
}

impl NetlinkSocket {
    pub fn describe(&self) -> String {
        format!(
            "netlink socket (protocol {}, groups {:#x})",
            self.protocol, self.groups
        )
    }

    pub(super) fn restore(&self, flags: u32) -> Result<OwnedFd, FileError> {
        let err = |what: &'static str| move |source: io::Error| FileError::Create { what, source };
        let nonblock = if flags as i32 & libc::O_NONBLOCK != 0 {
            libc::SOCK_NONBLOCK
        } else {
            0
        };
        let fd = new_socket(libc::AF_NETLINK, self.kind | nonblock, self.protocol)
            .map_err(err("creating a netlink socket"))?;
        if self.bound {
            // SAFETY: sockaddr_nl is plain data.
            let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            a.nl_groups = self.groups;
            // SAFETY: bind with a valid sockaddr_nl.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&a as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(err("binding a netlink socket")(io::Error::last_os_error()));
            }
        }
        Ok(fd)
    }
}
