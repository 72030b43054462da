//! Socket options a program set on its sockets: timeouts, keepalive,
//! `TCP_NODELAY`, `IPV6_V6ONLY`, linger, peek offset and the like.
//!
//! At checkpoint every option of the table below that applies to the
//! socket's family and type is read, and compared with a fresh socket of
//! the same family, type and protocol: only the options the program
//! changed are kept. At restore they are set on the new socket right after
//! it is created (before `bind`, which `IPV6_V6ONLY` and `SO_REUSEPORT`
//! must precede) or, for unix sockets, once the queues are refilled (the
//! peek offset counts into the queue).
//!
//! The table holds only options that any program may set without
//! privileges: a restore (often run by root) never sets what the program
//! could not have set itself, whatever the image says.

use super::error::FileError;
use crate::sys::socket::{getsockopt_bytes, setsockopt_bytes};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, OnceLock};

/// One option the program changed, as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketOption {
    /// Its name (`SO_KEEPALIVE`), for people reading the image.
    pub name: String,
    pub level: i32,
    pub option: i32,
    pub value: OptionValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OptionValue {
    Int {
        value: i32,
    },
    /// `SO_RCVTIMEO`, `SO_SNDTIMEO`: a `struct timeval`, in microseconds.
    Timeout {
        micros: i64,
    },
    /// `SO_LINGER`.
    Linger {
        on: bool,
        secs: i32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Int,
    Timeout,
    Linger,
}

/// Which sockets an option is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applies {
    Any,
    Unix,
    /// IPv4 or IPv6, any type.
    Ip,
    Ip4,
    Ip6,
    Tcp,
    Udp,
    Netlink,
}

struct Known {
    name: &'static str,
    level: i32,
    option: i32,
    shape: Shape,
    applies: Applies,
}

const SOL_NETLINK: i32 = 270;
// Options libc does not name on every target.
pub(super) const SO_PEEK_OFF: i32 = 42;
const SO_TIMESTAMP_NEW: i32 = 63;
const SO_TIMESTAMPNS_NEW: i32 = 64;
const IP_BIND_ADDRESS_NO_PORT: i32 = 24;
const IPV6_FREEBIND: i32 = 78;
const NETLINK_PKTINFO: i32 = 3;
const NETLINK_BROADCAST_ERROR: i32 = 4;
const NETLINK_NO_ENOBUFS: i32 = 5;
const NETLINK_CAP_ACK: i32 = 10;
const NETLINK_EXT_ACK: i32 = 11;
const NETLINK_GET_STRICT_CHK: i32 = 12;

macro_rules! known {
    ($level:expr, $opt:ident, $shape:ident, $applies:ident) => {
        Known {
            name: stringify!($opt),
            level: $level,
            option: $opt,
            shape: Shape::$shape,
            applies: Applies::$applies,
        }
    };
}

use libc::{
    IPPROTO_IP, IPPROTO_IPV6, IPPROTO_TCP, IPV6_MTU_DISCOVER, IPV6_MULTICAST_HOPS,
    IPV6_MULTICAST_LOOP, IPV6_RECVERR, IPV6_RECVPKTINFO, IPV6_TCLASS, IPV6_UNICAST_HOPS,
    IPV6_V6ONLY, IP_FREEBIND, IP_MTU_DISCOVER, IP_MULTICAST_LOOP, IP_MULTICAST_TTL, IP_PKTINFO,
    IP_RECVERR, IP_RECVTOS, IP_RECVTTL, IP_TOS, IP_TTL, SOL_SOCKET, SO_BROADCAST, SO_DONTROUTE,
    SO_KEEPALIVE, SO_LINGER, SO_OOBINLINE, SO_PASSSEC, SO_RCVBUF, SO_RCVLOWAT, SO_RCVTIMEO,
    SO_REUSEPORT, SO_SNDBUF, SO_SNDTIMEO, SO_TIMESTAMP, SO_TIMESTAMPNS, TCP_DEFER_ACCEPT,
    TCP_FASTOPEN, TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_NODELAY, TCP_NOTSENT_LOWAT,
    TCP_USER_TIMEOUT,
};

/// `IPV6_V6ONLY` first: it must be set before anything binds.
static TABLE: &[Known] = &[
    known!(IPPROTO_IPV6, IPV6_V6ONLY, Int, Ip6),
    known!(SOL_SOCKET, SO_KEEPALIVE, Int, Ip),
    known!(SOL_SOCKET, SO_BROADCAST, Int, Udp),
    known!(SOL_SOCKET, SO_REUSEPORT, Int, Ip),
    known!(SOL_SOCKET, SO_DONTROUTE, Int, Ip),
    known!(SOL_SOCKET, SO_OOBINLINE, Int, Tcp),
    known!(SOL_SOCKET, SO_RCVLOWAT, Int, Any),
    known!(SOL_SOCKET, SO_PASSSEC, Int, Unix),
    // The four timestamp options read as one flag each: exactly the one
    // the program chose (old or new cmsg layout, micro or nano) reads 1.
    known!(SOL_SOCKET, SO_TIMESTAMP, Int, Any),
    known!(SOL_SOCKET, SO_TIMESTAMPNS, Int, Any),
    known!(SOL_SOCKET, SO_TIMESTAMP_NEW, Int, Any),
    known!(SOL_SOCKET, SO_TIMESTAMPNS_NEW, Int, Any),
    known!(SOL_SOCKET, SO_RCVTIMEO, Timeout, Any),
    known!(SOL_SOCKET, SO_SNDTIMEO, Timeout, Any),
    known!(SOL_SOCKET, SO_LINGER, Linger, Any),
    known!(SOL_SOCKET, SO_PEEK_OFF, Int, Unix),
    // TCP grows its buffers by itself (and would lock them if set): only
    // UDP's are kept here; unix and netlink sockets keep theirs already.
    known!(SOL_SOCKET, SO_SNDBUF, Int, Udp),
    known!(SOL_SOCKET, SO_RCVBUF, Int, Udp),
    known!(IPPROTO_TCP, TCP_NODELAY, Int, Tcp),
    known!(IPPROTO_TCP, TCP_KEEPIDLE, Int, Tcp),
    known!(IPPROTO_TCP, TCP_KEEPINTVL, Int, Tcp),
    known!(IPPROTO_TCP, TCP_KEEPCNT, Int, Tcp),
    known!(IPPROTO_TCP, TCP_DEFER_ACCEPT, Int, Tcp),
    known!(IPPROTO_TCP, TCP_USER_TIMEOUT, Int, Tcp),
    known!(IPPROTO_TCP, TCP_FASTOPEN, Int, Tcp),
    known!(IPPROTO_TCP, TCP_NOTSENT_LOWAT, Int, Tcp),
    known!(IPPROTO_IP, IP_TOS, Int, Ip4),
    known!(IPPROTO_IP, IP_TTL, Int, Ip4),
    known!(IPPROTO_IP, IP_RECVERR, Int, Ip4),
    known!(IPPROTO_IP, IP_MTU_DISCOVER, Int, Ip4),
    known!(IPPROTO_IP, IP_MULTICAST_TTL, Int, Ip4),
    known!(IPPROTO_IP, IP_MULTICAST_LOOP, Int, Ip4),
    known!(IPPROTO_IP, IP_PKTINFO, Int, Ip4),
    known!(IPPROTO_IP, IP_RECVTOS, Int, Ip4),
    known!(IPPROTO_IP, IP_RECVTTL, Int, Ip4),
    known!(IPPROTO_IP, IP_FREEBIND, Int, Ip4),
    known!(IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, Int, Ip4),
    known!(IPPROTO_IPV6, IPV6_UNICAST_HOPS, Int, Ip6),
    known!(IPPROTO_IPV6, IPV6_MULTICAST_HOPS, Int, Ip6),
    known!(IPPROTO_IPV6, IPV6_MULTICAST_LOOP, Int, Ip6),
    known!(IPPROTO_IPV6, IPV6_RECVPKTINFO, Int, Ip6),
    known!(IPPROTO_IPV6, IPV6_TCLASS, Int, Ip6),
    known!(IPPROTO_IPV6, IPV6_RECVERR, Int, Ip6),
    known!(IPPROTO_IPV6, IPV6_MTU_DISCOVER, Int, Ip6),
    known!(IPPROTO_IPV6, IPV6_FREEBIND, Int, Ip6),
    known!(SOL_NETLINK, NETLINK_PKTINFO, Int, Netlink),
    known!(SOL_NETLINK, NETLINK_BROADCAST_ERROR, Int, Netlink),
    known!(SOL_NETLINK, NETLINK_NO_ENOBUFS, Int, Netlink),
    known!(SOL_NETLINK, NETLINK_CAP_ACK, Int, Netlink),
    known!(SOL_NETLINK, NETLINK_EXT_ACK, Int, Netlink),
    known!(SOL_NETLINK, NETLINK_GET_STRICT_CHK, Int, Netlink),
];

impl Applies {
    fn to(self, domain: i32, kind: i32) -> bool {
        let ip = domain == libc::AF_INET || domain == libc::AF_INET6;
        match self {
            Applies::Any => true,
            Applies::Unix => domain == libc::AF_UNIX,
            Applies::Ip => ip,
            Applies::Ip4 => domain == libc::AF_INET,
            Applies::Ip6 => domain == libc::AF_INET6,
            Applies::Tcp => ip && kind == libc::SOCK_STREAM,
            Applies::Udp => ip && kind == libc::SOCK_DGRAM,
            Applies::Netlink => domain == libc::AF_NETLINK,
        }
    }
}

fn get(fd: RawFd, k: &Known) -> io::Result<OptionValue> {
    let mut buf = [0u8; 16];
    getsockopt_bytes(fd, k.level, k.option, &mut buf)?;
    let int_at = |at: usize| i32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    let long_at = |at: usize| i64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    Ok(match k.shape {
        Shape::Int => OptionValue::Int { value: int_at(0) },
        Shape::Timeout => OptionValue::Timeout {
            micros: long_at(0)
                .saturating_mul(1_000_000)
                .saturating_add(long_at(8)),
        },
        Shape::Linger => OptionValue::Linger {
            on: int_at(0) != 0,
            secs: int_at(4),
        },
    })
}

fn set(fd: RawFd, k: &Known, value: OptionValue) -> io::Result<()> {
    let mut buf = [0u8; 16];
    let len = match (k.shape, value) {
        (Shape::Int, OptionValue::Int { value }) => {
            // Buffer sizes read back doubled (the kernel's bookkeeping share).
            let v = if k.level == SOL_SOCKET && (k.option == SO_SNDBUF || k.option == SO_RCVBUF) {
                value / 2
            } else {
                value
            };
            buf[..4].copy_from_slice(&v.to_ne_bytes());
            4
        }
        (Shape::Timeout, OptionValue::Timeout { micros }) if micros >= 0 => {
            buf[..8].copy_from_slice(&(micros / 1_000_000).to_ne_bytes());
            buf[8..].copy_from_slice(&(micros % 1_000_000).to_ne_bytes());
            16
        }
        (Shape::Linger, OptionValue::Linger { on, secs }) => {
            buf[..4].copy_from_slice(&i32::from(on).to_ne_bytes());
            buf[4..8].copy_from_slice(&secs.to_ne_bytes());
            8
        }
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    setsockopt_bytes(fd, k.level, k.option, &buf[..len])
}

type Defaults = Vec<Option<OptionValue>>;
/// Socket family, type and protocol.
type SocketShape = (i32, i32, i32);

/// What a fresh socket of one family, type and protocol reads, by table
/// index (None: this kernel does not know the option there).
fn defaults(domain: i32, kind: i32, protocol: i32) -> Option<Defaults> {
    static CACHE: OnceLock<Mutex<HashMap<SocketShape, Option<Defaults>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry((domain, kind, protocol))
        .or_insert_with(|| {
            let fresh = crate::sys::socket::new_socket(domain, kind, protocol).ok()?;
            Some(
                TABLE
                    .iter()
                    .map(|k| get(fresh.as_raw_fd(), k).ok())
                    .collect(),
            )
        })
        .clone()
}

/// The options of socket `fd` that differ from a fresh socket's. `kind`
/// is the socket type (`SO_TYPE`). A socket type this process cannot
/// create (to compare with) keeps no options.
pub(super) fn checkpoint(fd: RawFd, domain: i32, kind: i32, protocol: i32) -> Vec<SocketOption> {
    let Some(fresh) = defaults(domain, kind, protocol) else {
        tracing::debug!(
            domain,
            kind,
            protocol,
            "no fresh socket to compare options with"
        );
        return Vec::new();
    };
    TABLE
        .iter()
        .zip(fresh)
        .filter(|(k, _)| k.applies.to(domain, kind))
        .filter_map(|(k, default)| {
            let default = default?;
            let now = get(fd, k).ok()?;
            (now != default).then(|| SocketOption {
                name: k.name.into(),
                level: k.level,
                option: k.option,
                value: now,
            })
        })
        .collect()
}

/// Set the saved options on the new socket `fd`. An option outside the
/// table (a hand-made image) or one the kernel refuses fails the restore,
/// naming it.
pub(super) fn restore(fd: RawFd, options: &[SocketOption]) -> Result<(), FileError> {
    for o in options {
        let Some(k) = TABLE
            .iter()
            .find(|k| k.level == o.level && k.option == o.option)
        else {
            return Err(FileError::SocketOption {
                name: format!("{} (level {}, option {})", o.name, o.level, o.option),
                source: io::Error::new(io::ErrorKind::InvalidData, "not an option hiber restores"),
            });
        };
        set(fd, k, o.value).map_err(|source| FileError::SocketOption {
            name: k.name.into(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::socket::{getsockopt_int, new_socket, setsockopt_int};
    use std::os::fd::OwnedFd;

    fn names(options: &[SocketOption]) -> Vec<&str> {
        options.iter().map(|o| o.name.as_str()).collect()
    }

    /// Options set on a real socket are found, nothing else is, and a new
    /// socket given them reads the same.
    fn round_trip(
        domain: i32,
        kind: i32,
        protocol: i32,
        set_up: impl Fn(&OwnedFd),
    ) -> Vec<SocketOption> {
        let s = new_socket(domain, kind, protocol).unwrap();
        assert!(checkpoint(s.as_raw_fd(), domain, kind, protocol).is_empty());
        set_up(&s);
        let saved = checkpoint(s.as_raw_fd(), domain, kind, protocol);
        let again = new_socket(domain, kind, protocol).unwrap();
        restore(again.as_raw_fd(), &saved).unwrap();
        assert_eq!(checkpoint(again.as_raw_fd(), domain, kind, protocol), saved);
        saved
    }

    fn timeout(fd: &OwnedFd, option: i32, secs: i64, usecs: i64) {
        // A struct timeval: seconds, then microseconds.
        let mut tv = secs.to_ne_bytes().to_vec();
        tv.extend_from_slice(&usecs.to_ne_bytes());
        setsockopt_bytes(fd.as_raw_fd(), SOL_SOCKET, option, &tv).unwrap();
    }

    #[test]
    fn tcp_options_survive() {
        let saved = round_trip(libc::AF_INET6, libc::SOCK_STREAM, 0, |s| {
            let fd = s.as_raw_fd();
            setsockopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1).unwrap();
            setsockopt_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1).unwrap();
            setsockopt_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, 77).unwrap();
            setsockopt_int(fd, IPPROTO_TCP, TCP_NODELAY, 1).unwrap();
            timeout(s, SO_RCVTIMEO, 1, 500_000);
            // A struct linger: l_onoff, then l_linger.
            let l = [1i32.to_ne_bytes(), 9i32.to_ne_bytes()].concat();
            setsockopt_bytes(fd, SOL_SOCKET, SO_LINGER, &l).unwrap();
        });
        assert_eq!(
            names(&saved),
            [
                "IPV6_V6ONLY",
                "SO_KEEPALIVE",
                "SO_RCVTIMEO",
                "SO_LINGER",
                "TCP_NODELAY",
                "TCP_KEEPIDLE"
            ]
        );
        assert!(saved.contains(&SocketOption {
            name: "SO_RCVTIMEO".into(),
            level: SOL_SOCKET,
            option: SO_RCVTIMEO,
            value: OptionValue::Timeout { micros: 1_500_000 },
        }));
        assert!(saved
            .iter()
            .any(|o| o.value == OptionValue::Linger { on: true, secs: 9 }));
    }

    #[test]
    fn unix_udp_and_netlink_options_survive() {
        let unix = round_trip(libc::AF_UNIX, libc::SOCK_STREAM, 0, |s| {
            setsockopt_int(s.as_raw_fd(), SOL_SOCKET, SO_PEEK_OFF, 3).unwrap();
            timeout(s, SO_SNDTIMEO, 2, 250_000);
        });
        assert_eq!(names(&unix), ["SO_SNDTIMEO", "SO_PEEK_OFF"]);
        let udp = round_trip(libc::AF_INET, libc::SOCK_DGRAM, 0, |s| {
            setsockopt_int(s.as_raw_fd(), SOL_SOCKET, SO_BROADCAST, 1).unwrap();
            setsockopt_int(s.as_raw_fd(), IPPROTO_IP, IP_TOS, 0x10).unwrap();
            setsockopt_int(s.as_raw_fd(), SOL_SOCKET, SO_RCVBUF, 100_000).unwrap();
        });
        assert_eq!(names(&udp), ["SO_BROADCAST", "SO_RCVBUF", "IP_TOS"]);
        let nl = round_trip(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE, |s| {
            setsockopt_int(s.as_raw_fd(), SOL_NETLINK, NETLINK_NO_ENOBUFS, 1).unwrap();
        });
        assert_eq!(names(&nl), ["NETLINK_NO_ENOBUFS"]);
    }

    #[test]
    fn options_outside_the_table_are_refused() {
        let s = new_socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        // SO_MARK needs CAP_NET_ADMIN: a program without it could not have
        // set it, so no image may ask for it.
        let hostile = [SocketOption {
            name: "SO_KEEPALIVE".into(),
            level: SOL_SOCKET,
            option: libc::SO_MARK,
            value: OptionValue::Int { value: 7 },
        }];
        let e = restore(s.as_raw_fd(), &hostile).unwrap_err();
        assert!(e.to_string().contains("(level 1, option 36)"), "{e}");
        let why = std::error::Error::source(&e).unwrap().to_string();
        assert_eq!(why, "not an option hiber restores");
        let mark = getsockopt_int(s.as_raw_fd(), SOL_SOCKET, libc::SO_MARK);
        assert_eq!(mark.unwrap(), 0);
    }
}
