//! Netlink sockets: recreated with their protocol, multicast groups,
//! `SO_PASSCRED`, receive buffer and classic BPF filter (libudev's
//! monitors need all three: it drops messages without credentials, and
//! filters by subsystem in the kernel). Their port id is the kernel's to
//! choose again, so they are Reopen; one with messages waiting is refused
//! (they cannot be put back).
//!
//! Device event sockets (`NETLINK_KOBJECT_UEVENT`) are created inside the
//! restored session's own network namespace when the restore gives one
//! (see `uevent::proxy`), so only the session hears the proxy.

use super::error::{FileError, Refusal, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use super::sockopt;
use crate::policy::Policy;
use crate::sys::fd::queued_bytes;
use crate::sys::socket::{getsockopt_int, new_socket, setsockopt_int};
use crate::sys::wrap::WrapIoResult;
use crate::uevent::proxy::SessionNet;
use crate::uevent::NETLINK_KOBJECT_UEVENT;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
pub const MAX_FILTER: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetlinkSocket {
    pub protocol: i32,
    /// `SOCK_RAW` or `SOCK_DGRAM`.
    pub kind: i32,
    /// Bound (a port id assigned); unbound sockets stay unbound.
    pub bound: bool,
    /// The first 32 multicast groups joined, as `bind` takes them.
    pub groups: u32,
    /// `SO_PASSCRED`: the sender's credentials come with each message.
    #[serde(default)]
    pub passcred: bool,
    /// `SO_RCVBUF` as getsockopt reports it (twice what was asked); 0: not saved.
    #[serde(default)]
    pub rcvbuf: i32,
    /// The classic BPF filter attached (`SO_ATTACH_FILTER`), if any.
    #[serde(default)]
    pub filter: Vec<SockFilter>,
    /// Other options the program set (see `sockopt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<sockopt::SocketOption>,
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The filter attached to `fd` (empty if none).
fn get_filter(fd: RawFd) -> io::Result<Vec<SockFilter>> {
    Ok(crate::sys::socket::get_filter(fd, MAX_FILTER)?
        .iter()
        .map(|i| SockFilter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect())
}

fn set_filter(fd: RawFd, filter: &[SockFilter]) -> io::Result<()> {
    let mut ins: Vec<libc::sock_filter> = filter
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    crate::sys::socket::set_filter(fd, &mut ins)
}

pub(super) fn checkpoint(held: &OwnedFd) -> Result<NetlinkSocket, Refusal> {
    let fd = held.as_raw_fd();
    let e = |err: io::Error| format!("reading a netlink socket: {err}");
    // An unreadable count is taken as nothing queued.
    let queued = queued_bytes(fd).unwrap_or(0);
    if queued > 0 {
        return Err(Refusal::for_now(format!(
            "netlink socket with {queued} bytes of unread messages"
        )));
    }
    let (nl_pid, nl_groups) = crate::sys::socket::netlink_name(fd).map_err(e)?;
    let protocol = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).map_err(e)?;
    let kind = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).map_err(e)?;
    Ok(NetlinkSocket {
        protocol,
        kind,
        bound: nl_pid != 0,
        groups: nl_groups,
        passcred: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED).map_err(e)? != 0,
        rcvbuf: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).map_err(e)?,
        filter: get_filter(fd).map_err(e)?,
        options: sockopt::checkpoint(fd, libc::AF_NETLINK, kind, protocol),
    })
}

impl NetlinkSocket {
    /// A `NETLINK_KOBJECT_UEVENT` socket: device events.
    pub fn is_uevent(&self) -> bool {
        self.protocol == NETLINK_KOBJECT_UEVENT
    }

    /// Recreate the socket; a uevent one inside `net` when given.
    fn open(&self, flags: u32, net: Option<&SessionNet>) -> Result<OwnedFd, FileError> {
        match net {
            Some(net) if self.is_uevent() => net.run(|| self.create(flags))?,
            _ => self.create(flags),
        }
    }

    fn create(&self, flags: u32) -> Result<OwnedFd, FileError> {
        if self.filter.len() > MAX_FILTER {
            Err::<(), _>(io::Error::from_raw_os_error(libc::EINVAL))
                .doing("restoring a netlink socket's filter")?;
        }
        let nonblock = if flags as i32 & libc::O_NONBLOCK != 0 {
            libc::SOCK_NONBLOCK
        } else {
            0
        };
        let fd = new_socket(libc::AF_NETLINK, self.kind | nonblock, self.protocol)
            .doing("creating a netlink socket")?;
        let raw = fd.as_raw_fd();
        if self.passcred {
            setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)
                .doing("setting SO_PASSCRED on a netlink socket")?;
        }
        if self.rcvbuf > 0 {
            // The kernel doubles what it is given; FORCE passes the
            // rmem_max cap the program may have passed with it too.
            let size = self.rcvbuf / 2;
            if setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
                setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, size)
                    .doing("setting a netlink socket's receive buffer")?;
            }
        }
        sockopt::restore(raw, &self.options)?;
        if !self.filter.is_empty() {
            set_filter(raw, &self.filter).doing("attaching a netlink socket's filter")?;
        }
        if self.bound {
            crate::sys::socket::bind_netlink(&fd, self.groups).doing("binding a netlink socket")?;
        }
        Ok(fd)
    }
}

impl FdKind for NetlinkSocket {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        if self.is_uevent() {
            return format!("device event (uevent) socket, groups {:#x}", self.groups);
        }
        format!(
            "netlink socket (protocol {}, groups {:#x})",
            self.protocol, self.groups
        )
    }

    fn policy(&self) -> Policy {
        Policy::Reopen
    }

    fn reason(&self, _: &Probe<'_>, _: &()) -> String {
        if self.is_uevent() {
            "device event socket: recreated with its groups, SO_PASSCRED and filter inside the restored session's own network namespace, where the uevent proxy replays the detached devices' events and forwards the host's".into()
        } else {
            "recreated with its protocol and multicast groups (the kernel picks its port id)".into()
        }
    }

    fn claims(fd: &Probe<'_>) -> bool {
        fd.is_socket(libc::AF_NETLINK)
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), _: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        Ok(checkpoint(fd.file)?)
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, flags: u32, _: &mut (), cx: &Restoring<'_>) -> FileResult<Opened> {
        self.open(flags, cx.uevent_net).map(Opened::from)
    }
}
