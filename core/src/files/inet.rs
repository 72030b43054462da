//! IPv4 and IPv6 sockets. Listening TCP sockets and bound UDP sockets are
//! bound again to their address; a connected UDP socket is connected again.
//! A TCP connection cannot be carried over (its peer has moved on): it is
//! Reset, restored as a socket that is no longer connected, so the program
//! sees its connection gone and reconnects, as after a network failure.

use super::error::{FileError, Refusal, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use super::sockopt;
use crate::policy::Policy;
use crate::sys::fd::queued_bytes;
use crate::sys::socket::{getsockopt_int, new_socket, setsockopt_int};
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InetState {
    Listening,
    /// TCP connected (or connecting): restored unconnected.
    Connection,
    /// UDP with a default peer.
    Connected,
    Unconnected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InetSocket {
    pub family: i32,
    /// `SOCK_STREAM` or `SOCK_DGRAM`.
    pub kind: i32,
    pub protocol: i32,
    pub state: InetState,
    /// Local and peer `sockaddr` bytes (empty: none).
    #[serde(with = "hex::serde")]
    pub local: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub peer: Vec<u8>,
    pub reuse_addr: bool,
    /// Other options the program set (see `sockopt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<sockopt::SocketOption>,
}

fn name(fd: RawFd, peer: bool) -> Vec<u8> {
    crate::sys::socket::address(fd, peer).unwrap_or_default()
}

/// The port of a sockaddr_in/in6 (both keep it at bytes 2..4).
fn port(addr: &[u8]) -> u16 {
    addr.get(2..4)
        .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]))
}

pub(super) fn checkpoint(held: &OwnedFd, family: i32) -> Result<InetSocket, Refusal> {
    let fd = held.as_raw_fd();
    let e = |err: io::Error| format!("reading a socket: {err}");
    let kind = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).map_err(e)?;
    if kind != libc::SOCK_STREAM && kind != libc::SOCK_DGRAM {
        return Err(format!("IP socket of type {kind} (raw, SCTP...) is not supported yet").into());
    }
    let listening = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).map_err(e)? != 0;
    let local = name(fd, false);
    let peer = name(fd, true);
    let state = match (kind, listening, peer.is_empty()) {
        (_, true, _) => InetState::Listening,
        (libc::SOCK_STREAM, false, false) => InetState::Connection,
        (libc::SOCK_DGRAM, false, false) => InetState::Connected,
        _ => InetState::Unconnected,
    };
    if kind == libc::SOCK_DGRAM {
        // An unreadable count is taken as nothing queued.
        let queued = queued_bytes(fd).unwrap_or(0);
        if queued > 0 {
            return Err(Refusal::for_now(
                "UDP socket with datagrams waiting (they cannot be put back)".into(),
            ));
        }
    }
    let protocol = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).map_err(e)?;
    Ok(InetSocket {
        family,
        kind,
        protocol,
        state,
        // An unbound socket reports port 0: nothing to bind again.
        local: if port(&local) == 0 { Vec::new() } else { local },
        peer,
        reuse_addr: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR).map_err(e)? != 0,
        options: sockopt::checkpoint(fd, family, kind, protocol),
    })
}

impl InetSocket {
    fn open(&self, flags: u32) -> Result<OwnedFd, FileError> {
        let nonblock = if flags as i32 & libc::O_NONBLOCK != 0 {
            libc::SOCK_NONBLOCK
        } else {
            0
        };
        let fd = new_socket(self.family, self.kind | nonblock, self.protocol)
            .doing("creating an IP socket")?;
        // Before the bind: IPV6_V6ONLY and SO_REUSEPORT decide whether it
        // succeeds.
        sockopt::restore(fd.as_raw_fd(), &self.options)?;
        // A listener's port may still have connections in TIME_WAIT from
        // before: allow the bind, then set the option as saved.
        if self.reuse_addr || self.state == InetState::Listening {
            let _ = setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
        }
        // A connection's local port was the kernel's pick: not bound again.
        if !self.local.is_empty() && self.state != InetState::Connection {
            crate::sys::socket::bind_bytes(&fd, &self.local)
                .doing("binding an IP socket to its saved address (is the port taken?)")?;
        }
        if !self.reuse_addr {
            let _ = setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 0);
        }
        match self.state {
            InetState::Listening => {
                crate::sys::socket::listen(&fd, libc::SOMAXCONN)
                    .doing("listening on an IP socket")?;
            }
            InetState::Connected => {
                let _ = crate::sys::socket::connect_bytes(&fd, &self.peer);
            }
            InetState::Connection | InetState::Unconnected => {}
        }
        Ok(fd)
    }
}

impl FdKind for InetSocket {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        let fam = if self.family == libc::AF_INET6 {
            "IPv6"
        } else {
            "IPv4"
        };
        let proto = if self.kind == libc::SOCK_STREAM {
            "TCP"
        } else {
            "UDP"
        };
        let what = match self.state {
            InetState::Listening => "listening",
            InetState::Connection => "connection",
            InetState::Connected => "connected",
            InetState::Unconnected => "unconnected",
        };
        format!(
            "{fam} {proto} socket, {what}, local port {}",
            port(&self.local)
        )
    }

    fn policy(&self) -> Policy {
        match self.state {
            InetState::Connection => Policy::Reset,
            InetState::Connected => Policy::Reopen,
            _ => Policy::Restore,
        }
    }

    fn reason(&self, _: &Probe<'_>, _: &()) -> String {
        match self.state {
            InetState::Connection => "a TCP connection cannot be carried over: restored unconnected (the program sees the connection gone and reconnects)".into(),
            InetState::Listening => "listening again on its address".into(),
            InetState::Connected => "bound and connected again to its peer".into(),
            InetState::Unconnected => "recreated, bound to its address if it had one".into(),
        }
    }

    fn claims(fd: &Probe<'_>) -> bool {
        fd.is_socket(libc::AF_INET) || fd.is_socket(libc::AF_INET6)
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), _: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        let family = fd.family().unwrap_or(libc::AF_INET);
        Ok(checkpoint(fd.file, family)?)
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, flags: u32, _: &mut (), _: &Restoring<'_>) -> FileResult<Opened> {
        self.open(flags).map(Opened::from)
    }
}
