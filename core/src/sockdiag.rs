//! Unix sockets as the kernel's sock_diag netlink interface describes
//! them: type, state, bound name, peer, pending connections, shutdown.
//! Nothing else tells which socket is connected to which.

use crate::sys::socket;
use std::collections::HashMap;
use std::io;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_VFS: u32 = 0x02;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_ICONS: u32 = 0x08;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;
/// Socket state as sock_diag reports it (TCP state numbers).
pub const STATE_ESTABLISHED: u8 = 1;
pub const STATE_LISTEN: u8 = 10;

/// One unix socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixDiag {
    pub ino: u64,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub kind: u8,
    pub state: u8,
    /// Bound address: a path, or an abstract name starting with NUL.
    pub name: Option<Vec<u8>>,
    /// For a socket bound to a path: the inode and device of the socket
    /// file bind made (the kernel keeps them even once the file is gone).
    pub vfs: Option<VfsNode>,
    pub peer: Option<u64>,
    /// Connections waiting to be accepted (listeners), by socket inode.
    pub pending: Vec<u64>,
    /// Bytes (or, for a listener, connections) queued to be received.
    pub rqueue: u32,
    /// Bytes queued to be sent (or, for a listener, its backlog).
    pub wqueue: u32,
    /// `RCV_SHUTDOWN` (1) and `SEND_SHUTDOWN` (2).
    pub shutdown: u8,
}

/// The socket file of a path-bound socket, as sock_diag reports it: its
/// inode number (the low 32 bits) and its filesystem's device number in
/// the kernel's internal encoding (major << 20 | minor).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VfsNode {
    pub ino: u32,
    pub dev: u32,
}

impl VfsNode {
    /// Whether the file of inode `ino` on device `dev` (`stat`'s
    /// `st_ino` and `st_dev`) is this socket file.
    pub fn is(&self, ino: u64, dev: u64) -> bool {
        ino as u32 == self.ino
            && libc::major(dev) == self.dev >> 20
            && libc::minor(dev) == self.dev & 0xf_ffff
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

/// Every unix socket of this network namespace, by inode.
pub fn unix_sockets() -> io::Result<HashMap<u64, UnixDiag>> {
    let sock = socket::new_socket(libc::AF_NETLINK, libc::SOCK_DGRAM, libc::NETLINK_SOCK_DIAG)?;
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.push(libc::AF_UNIX as u8);
    req.push(0); // protocol
    req.extend_from_slice(&0u16.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&0u32.to_ne_bytes()); // any inode
    let show =
        UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
    req.extend_from_slice(&show.to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]); // no cookie
                                       // To the kernel: the socket's default destination, address 0.
    socket::send(&sock, &req, 0)?;
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = socket::recv(&sock, &mut buf, 0)?;
        let b = &buf[..n];
        let mut at = 0;
        while at + 16 <= b.len() {
            let len = u32_at(b, at) as usize;
            let kind = u16_at(b, at + 4);
            if len < 16 || at + len > b.len() {
                return Err(io::Error::other("malformed sock_diag reply"));
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = -(u32_at(b, at + 16) as i32);
                    return Err(io::Error::from_raw_os_error(errno));
                }
                _ => {
                    if let Some(d) = parse_msg(&b[at + 16..at + len]) {
                        out.insert(d.ino, d);
                    }
                }
            }
            at += (len + 3) & !3;
        }
    }
}

fn parse_msg(m: &[u8]) -> Option<UnixDiag> {
    if m.len() < 16 {
        return None;
    }
    let mut d = UnixDiag {
        kind: m[1],
        state: m[2],
        ino: u32_at(m, 4) as u64,
        ..UnixDiag::default()
    };
    let mut at = 16;
    while at + 4 <= m.len() {
        let len = u16_at(m, at) as usize;
        let kind = u16_at(m, at + 2);
        if len < 4 || at + len > m.len() {
            break;
        }
        let payload = &m[at + 4..at + len];
        match kind {
            UNIX_DIAG_NAME => d.name = Some(payload.to_vec()),
            UNIX_DIAG_VFS if payload.len() >= 8 => {
                d.vfs = Some(VfsNode {
                    ino: u32_at(payload, 0),
                    dev: u32_at(payload, 4),
                })
            }
            UNIX_DIAG_PEER if payload.len() >= 4 => d.peer = Some(u32_at(payload, 0) as u64),
            UNIX_DIAG_ICONS => {
                d.pending = payload
                    .chunks_exact(4)
                    .map(|c| u32_at(c, 0) as u64)
                    .collect()
            }
            UNIX_DIAG_RQLEN if payload.len() >= 8 => {
                d.rqueue = u32_at(payload, 0);
                d.wqueue = u32_at(payload, 4);
            }
            UNIX_DIAG_SHUTDOWN if !payload.is_empty() => d.shutdown = payload[0],
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixStream;

    #[test]
    fn finds_a_socketpair_and_its_peer() {
        let (a, b) = UnixStream::pair().unwrap();
        let ino = |s: &UnixStream| {
            std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
                .unwrap()
                .ino()
        };
        let all = unix_sockets().unwrap();
        let da = &all[&ino(&a)];
        assert_eq!(da.peer, Some(ino(&b)));
        assert_eq!(
            (da.kind, da.state),
            (libc::SOCK_STREAM as u8, STATE_ESTABLISHED)
        );
        b.shutdown(std::net::Shutdown::Write).unwrap();
        let all = unix_sockets().unwrap();
        assert_eq!(all[&ino(&b)].shutdown & 2, 2);
    }

    #[test]
    fn names_the_socket_file_of_a_bound_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))
            .unwrap()
            .ino();
        let stat = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap();
        let vfs = unix_sockets().unwrap()[&ino].vfs.expect("a socket file");
        let st = stat(&path);
        assert!(vfs.is(st.ino(), st.dev()));
        // Another file at the same path is not the socket's.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"").unwrap();
        let st = stat(&path);
        assert!(!vfs.is(st.ino(), st.dev()));
        assert_eq!(unix_sockets().unwrap()[&ino].vfs, Some(vfs));
    }
}
