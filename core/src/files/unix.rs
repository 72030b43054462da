//! Unix sockets: stream, datagram and seqpacket; connected pairs with the
//! bytes (or messages) queued in each direction, listeners bound to paths
//! or abstract names, unconnected sockets.
//!
//! The kernel tells peers apart only through sock_diag (see `sockdiag`).
//! Queued data is read without consuming it: `MSG_PEEK` with `SO_PEEK_OFF`
//! walks the receive queue, then the program's peek offset is put back.
//! At restore a connected pair is a `socketpair`, each end's queue sent
//! again from the other end. A socket whose peer is outside the saved set
//! is Reset: restored with its peer closed, so the program reads its queued
//! data, then end-of-file, as if the peer had gone.

use super::error::{FileError, Refusal, Result as FileResult, Unsaved};
use super::fsnode::{self, SavedNode};
use super::kind::{status_flags_as_saved, Collecting, FdKind, Opened, Probe, Restoring};
use super::sockopt::{self, SO_PEEK_OFF};
use crate::image::{ChunkRef, ImageReader, ImageWriter};
use crate::policy::Policy;
use crate::sockdiag::{self, UnixDiag};
use crate::sys::socket::{
    getsockopt_int, new_socket, peek_message, send, setsockopt_int, shutdown, socketpair, UnixAddr,
};
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Bound on the bytes queued on one socket that a checkpoint saves.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
const RCV_SHUTDOWN: u8 = 1;
const SEND_SHUTDOWN: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Peer {
    /// Not connected.
    None,
    /// The socket with this inode, saved too.
    Inside { ino: u64 },
    /// Connected to a socket outside the set.
    Outside,
    /// Its peer had already closed at checkpoint time: restoring it with
    /// the peer closed is exact, nothing is broken.
    Closed,
    /// Connected to a saved listener that has not accepted the connection
    /// yet (`embryo`: the waiting server end, in `listener`'s queue).
    Pending { listener: u64, embryo: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnixSocket {
    pub ino: u64,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub kind: i32,
    /// Bound address: path bytes, or an abstract name starting with NUL.
    #[serde(with = "hex::serde")]
    pub name: Vec<u8>,
    /// For a path name: the socket file (owner, group, mode, or gone) and
    /// its directory as the checkpoint found them (see `fsnode`). Images
    /// without it bind with the holder's umask in the restorer's cwd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<SavedNode>,
    /// `listen` backlog, for a listening socket.
    pub backlog: Option<u32>,
    /// For a listener: the connections waiting to be accepted, in order,
    /// by the inode of their client socket.
    #[serde(default)]
    pub accept_queue: Vec<u64>,
    pub peer: Peer,
    pub shutdown: u8,
    pub passcred: bool,
    pub sndbuf: i32,
    pub rcvbuf: i32,
    /// Other options the program set (see `sockopt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<sockopt::SocketOption>,
    /// Lengths of the queued messages (one entry for a stream's bytes).
    pub queue_lens: Vec<u32>,
    pub queue: Vec<ChunkRef>,
    /// The queued data between checkpoint and dump; never in the image.
    #[serde(skip)]
    pub pending: Vec<Vec<u8>>,
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "datagram",
        libc::SOCK_SEQPACKET => "seqpacket",
        _ => "other",
    }
}

fn printable(name: &[u8]) -> String {
    match name.first() {
        // Abstract: every byte is the name's; a NUL in it is shown escaped
        // (text for people and for D-Bus may not hold one).
        Some(0) => format!(
            "@{}",
            String::from_utf8_lossy(&name[1..]).replace('\0', "\\0")
        ),
        // A path ends at its NUL (Xvfb binds with it counted in the length).
        _ => {
            String::from_utf8_lossy(name.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
        }
    }
}

/// Read the receive queue without consuming it: one entry per message.
/// Refuses (Err) when file descriptors are in flight.
fn peek_queue(fd: RawFd, kind: i32) -> Result<Vec<Vec<u8>>, Refusal> {
    let saved = getsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF)
        .map_err(|e| format!("reading SO_PEEK_OFF: {e}"))?;
    setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, 0)
        .map_err(|e| format!("setting SO_PEEK_OFF: {e}"))?;
    let result = (|| {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut total = 0usize;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let peeked = match peek_message(fd, &mut buf) {
                Ok(p) => p,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(out),
                Err(e) => return Err(format!("peeking at queued data: {e}").into()),
            };
            if peeked.rights {
                return Err(Refusal::for_now(
                    "file descriptors in flight (SCM_RIGHTS) are not supported yet".into(),
                ));
            }
            let n = peeked.len;
            if n == 0 {
                // End of stream: the peer shut down. A seqpacket socket
                // whose peer closed answers 0 forever, and a zero-length
                // message does not move the peek offset: either way the
                // walk ends here. Bytes queued past an empty seqpacket
                // message (FIONREAD counts them all) cannot be reached.
                let left = crate::sys::fd::queued_bytes(fd).unwrap_or(0).max(0) as usize;
                if kind == libc::SOCK_SEQPACKET && left > total {
                    return Err(Refusal::for_now(
                        "a zero-length message queued before others".into(),
                    ));
                }
                return Ok(out);
            }
            if peeked.truncated {
                return Err(String::from("a queued message larger than 256 KiB").into());
            }
            total += n;
            if total > MAX_QUEUED_BYTES {
                return Err(format!("more than {MAX_QUEUED_BYTES} bytes queued").into());
            }
            if kind == libc::SOCK_STREAM {
                match out.first_mut() {
                    Some(all) => all.extend_from_slice(&buf[..n]),
                    None => out.push(buf[..n].to_vec()),
                }
            } else {
                out.push(buf[..n].to_vec());
            }
        }
    })();
    // Put the program's peek offset back whatever happened.
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, saved);
    result
}

/// Classify one unix socket (already fetched as `held`) of process `pid`,
/// which holds `creds`.
fn checkpoint(
    held: &OwnedFd,
    ino: u64,
    diag: &HashMap<u64, UnixDiag>,
    pid: i32,
    creds: Option<&crate::creds::Creds>,
) -> Result<UnixSocket, Refusal> {
    let d = diag
        .get(&ino)
        .ok_or_else(|| format!("unix socket {ino} not found by sock_diag"))?;
    let fd = held.as_raw_fd();
    let kind = d.kind as i32;
    if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&kind) {
        return Err(format!("unix socket of type {kind}").into());
    }
    let name = d.name.clone().unwrap_or_default();
    // A path name's socket file, as its program sees it, told from another
    // file at the same path by the inode the kernel keeps for the socket.
    let file = match (name.first(), d.vfs) {
        (Some(&c), Some(vfs)) if c != 0 => fsnode::inspect(pid, creds, &name_path(&name), |st| {
            vfs.is(st.st_ino, st.st_dev)
        }),
        _ => None,
    };
    let opt = |o| {
        getsockopt_int(fd, libc::SOL_SOCKET, o).map_err(|e| format!("reading socket options: {e}"))
    };
    let s = UnixSocket {
        ino,
        kind,
        name,
        file,
        backlog: None,
        accept_queue: Vec::new(),
        peer: Peer::None,
        shutdown: d.shutdown,
        passcred: opt(libc::SO_PASSCRED)? != 0,
        sndbuf: opt(libc::SO_SNDBUF)?,
        rcvbuf: opt(libc::SO_RCVBUF)?,
        options: sockopt::checkpoint(fd, libc::AF_UNIX, kind, 0),
        queue_lens: Vec::new(),
        queue: Vec::new(),
        pending: Vec::new(),
    };
    if d.state == sockdiag::STATE_LISTEN {
        listening(s, d, diag)
    } else {
        with_peer_and_queue(s, d, fd)
    }
}

/// A listening socket `s` (`d` as sock_diag reports it) with its accept
/// queue.
fn listening(
    mut s: UnixSocket,
    d: &UnixDiag,
    diag: &HashMap<u64, UnixDiag>,
) -> Result<UnixSocket, Refusal> {
    // A waiting connection is made again at restore; data its client
    // already sent sits in a socket no fd reaches: refused.
    // sock_diag lists a waiting connection by its client's inode; what
    // the client sent and nobody read yet is its write queue.
    let holds_data = |client: &u64| diag.get(client).is_some_and(|c| c.wqueue > 0);
    if let Some(e) = d.pending.iter().find(|c| holds_data(c)) {
        return Err(Refusal::for_now(format!(
            "listening socket {}: a connection waiting to be accepted (socket {e}) already holds data: not supported yet",
            printable(&s.name)
        )));
    }
    s.accept_queue = d.pending.clone();
    // sock_diag reports a listener's backlog as its write queue.
    s.backlog = Some(d.wqueue);
    Ok(s)
}

/// A socket `s` that does not listen (`d` as sock_diag reports it, `fd`
/// the checkpointer's open file of it) with its peer and its queued messages.
fn with_peer_and_queue(mut s: UnixSocket, d: &UnixDiag, fd: RawFd) -> Result<UnixSocket, Refusal> {
    s.peer = match d.peer {
        Some(p) if p != 0 => Peer::Inside { ino: p }, // confirmed or turned Outside later
        // A peer that closed leaves no inode, and shuts this end both ways.
        _ if d.state == sockdiag::STATE_ESTABLISHED && d.shutdown == 3 => Peer::Closed,
        _ if d.state == sockdiag::STATE_ESTABLISHED => Peer::Outside,
        _ => Peer::None,
    };
    // A stream or seqpacket socket has a queue only once connected, and the
    // kernel answers a peek at any other with EINVAL: one caught between
    // socket() and connect(), or inside a connect() still waiting for room
    // in the listener's backlog (that call restarts after restore).
    s.pending = if s.kind == libc::SOCK_DGRAM || d.state == sockdiag::STATE_ESTABLISHED {
        peek_queue(fd, s.kind)?
    } else {
        Vec::new()
    };
    if s.peer == Peer::None && !s.pending.is_empty() {
        return Err(Refusal::for_now(
            "unconnected socket with queued messages (their senders are not kept): not supported yet".into(),
        ));
    }
    s.queue_lens = s.pending.iter().map(|m| m.len() as u32).collect();
    Ok(s)
}

impl UnixSocket {
    /// Store the queued data in the image.
    pub(super) fn dump(&mut self, writer: &ImageWriter) -> Result<(), FileError> {
        let all: Vec<u8> = std::mem::take(&mut self.pending).concat();
        for piece in all.chunks(1 << 20) {
            self.queue.push(writer.put_chunk(piece)?);
        }
        Ok(())
    }

    fn messages(&self, image: &ImageReader) -> Result<Vec<Vec<u8>>, FileError> {
        let mut all = Vec::new();
        let mut buf = Vec::new();
        for c in &self.queue {
            image.read_chunk(c, &mut buf)?;
            all.extend_from_slice(&buf);
        }
        let total: u64 = self.queue_lens.iter().map(|&l| l as u64).sum();
        if total != all.len() as u64 {
            return Err(FileError::Create {
                what: "refilling a unix socket: the saved queue does not match its lengths",
                source: io::Error::from(io::ErrorKind::InvalidData),
            });
        }
        let mut out = Vec::new();
        let mut at = 0;
        for &l in &self.queue_lens {
            out.push(all[at..at + l as usize].to_vec());
            at += l as usize;
        }
        Ok(out)
    }
}

fn pair_of(kind: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(libc::AF_UNIX, kind)
}

/// Send `messages` from `from` into `to`'s receive queue, with buffers
/// forced large enough to hold them (root may exceed the sysctl limits).
fn refill(from: &OwnedFd, to: &OwnedFd, messages: &[Vec<u8>]) -> Result<(), FileError> {
    if messages.is_empty() {
        return Ok(());
    }
    let total: usize = messages.iter().map(Vec::len).sum::<usize>() * 2 + (1 << 20);
    let total = total.min(i32::MAX as usize) as i32;
    let _ = setsockopt_int(
        from.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        total,
    );
    let _ = setsockopt_int(
        to.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        total,
    );
    for m in messages {
        match send(from, m, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Ok(n) if n == m.len() => {}
            Ok(_) => Err(io::Error::from(io::ErrorKind::WriteZero))
                .doing("refilling a unix socket's queue")?,
            Err(e) => Err(e).doing("refilling a unix socket's queue")?,
        }
    }
    Ok(())
}

/// Options and shutdown state, once the queues are refilled.
fn finish(fd: &OwnedFd, s: &UnixSocket) -> Result<(), FileError> {
    let raw = fd.as_raw_fd();
    // The kernel doubles what it is given; the saved values are doubled.
    let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, s.sndbuf / 2);
    let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, s.rcvbuf / 2);
    if s.passcred {
        setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_PASSCRED, 1).doing("setting SO_PASSCRED")?;
    }
    sockopt::restore(raw, &s.options)?;
    for (bit, how) in [
        (SEND_SHUTDOWN, libc::SHUT_WR),
        (RCV_SHUTDOWN, libc::SHUT_RD),
    ] {
        if s.shutdown & bit != 0 {
            let _ = shutdown(fd, how);
        }
    }
    Ok(())
}

/// Unix sockets being restored: the second end of each pair waits here
/// until its file comes.
#[derive(Debug, Default)]
struct UnixEnds {
    waiting: HashMap<u64, OwnedFd>,
}

impl UnixEnds {
    /// Open socket `s`; `peer_of(ino)` finds the saved peer's image.
    /// `client_of(ino)`: the saved client socket of a waiting connection.
    pub fn open(
        &mut self,
        s: &UnixSocket,
        peer_of: &dyn Fn(u64) -> Option<UnixSocket>,
        client_of: &dyn Fn(u64) -> Option<UnixSocket>,
        image: &ImageReader,
    ) -> Result<OwnedFd, FileError> {
        if let Some(fd) = self.waiting.remove(&s.ino) {
            return Ok(fd);
        }
        if let Some(backlog) = s.backlog {
            let fd = listen(s, backlog)?;
            // The waiting connections, in their order: the saved clients
            // get theirs; those of outside clients are closed at once (the
            // server accepts a hung-up connection).
            for &client_ino in &s.accept_queue {
                let client = connect_to(s)?;
                if let Some(c) = client_of(client_ino) {
                    finish(&client, &c)?;
                    self.waiting.insert(c.ino, client);
                }
            }
            return Ok(fd);
        }
        if let Peer::Pending { listener, .. } = &s.peer {
            // Make the listener now (it connects this client), and keep it
            // for when its own file comes.
            let l = peer_of(*listener).ok_or(FileError::BadReference {
                what: "unix listener",
                index: 0,
            })?;
            let lfd = self.open(&l, peer_of, client_of, image)?;
            self.waiting.insert(l.ino, lfd);
            return self.waiting.remove(&s.ino).ok_or(FileError::BadReference {
                what: "pending unix connection",
                index: 0,
            });
        }
        match &s.peer {
            Peer::Inside { ino } => {
                let Some(peer) = peer_of(*ino) else {
                    return reset(s, image);
                };
                let (mine, theirs) = pair_of(s.kind).doing("creating a unix socket pair")?;
                refill(&theirs, &mine, &s.messages(image)?)?;
                refill(&mine, &theirs, &peer.messages(image)?)?;
                finish(&mine, s)?;
                finish(&theirs, &peer)?;
                self.waiting.insert(peer.ino, theirs);
                Ok(mine)
            }
            Peer::Outside | Peer::Closed => reset(s, image),
            Peer::Pending { .. } => unreachable!("handled above"),
            Peer::None => {
                let fd = new_socket(libc::AF_UNIX, s.kind, 0).doing("creating a unix socket")?;
                if !s.name.is_empty() {
                    bind(&fd, s)?;
                }
                finish(&fd, s)?;
                Ok(fd)
            }
        }
    }
}

/// A new client connection to the (just restored) listener `l`.
fn connect_to(l: &UnixSocket) -> Result<OwnedFd, FileError> {
    let fd = new_socket(libc::AF_UNIX, l.kind, 0).doing("creating a unix socket")?;
    let addr = UnixAddr::new(&l.name).doing("a unix socket name too long")?;
    addr.connect(&fd)
        .doing("remaking a connection waiting to be accepted")?;
    Ok(fd)
}

/// A socket whose peer is gone: its queue, then end-of-file.
fn reset(s: &UnixSocket, image: &ImageReader) -> Result<OwnedFd, FileError> {
    let (mine, theirs) = pair_of(s.kind).doing("creating a unix socket pair")?;
    refill(&theirs, &mine, &s.messages(image)?)?;
    drop(theirs);
    finish(&mine, s)?;
    Ok(mine)
}

/// Bind `fd` to `s`'s name. A path name whose file the checkpoint saw is
/// bound with the saved mode (as the umask) and given the saved owner and
/// group, in its directory (made again if it is gone, when that is safe:
/// see `fsnode`), relative names against the saved working directory; one
/// whose file was gone at save time is bound under its name in a private
/// tree, so that it comes back without a file, as it was.
fn bind(fd: &OwnedFd, s: &UnixSocket) -> Result<(), FileError> {
    let file = match &s.file {
        Some(f) if s.name.first() != Some(&0) => f,
        _ => return bind_here(fd, s),
    };
    let name = name_path(&s.name);
    let full = fsnode::full_path(&name, file)?;
    let base = |root: &std::path::Path| -> Result<(), FileError> {
        let Some(base) = &file.base else {
            return Ok(());
        };
        let at = root.join(base.strip_prefix("/").unwrap_or(base));
        let dir = std::fs::File::open(&at).at_path("opening the working directory of", &at)?;
        fsnode::enter(&dir, &at)
    };
    match &file.node {
        Some(owner) => fsnode::in_private_fs(|| {
            let (dir, leaf) = fsnode::directory_of(&full, file.dir.as_ref())?;
            base(std::path::Path::new("/"))?;
            fsnode::set_umask(!owner.mode & 0o777);
            bind_here(fd, s)?;
            fsnode::set_owner(&dir, &leaf, &full, owner);
            tracing::debug!(path = %full.display(), uid = owner.uid, gid = owner.gid, mode = owner.mode, "socket file made as saved");
            Ok(())
        }),
        None => {
            let scratch = fsnode::Scratch::new()?;
            scratch.make_parents(full.strip_prefix("/").unwrap_or(&full))?;
            fsnode::in_private_fs(|| {
                scratch.enter_as_root()?;
                base(std::path::Path::new("/"))?;
                Ok(bind_raw(fd, s).at_path(
                    "binding (without its file, gone at save time) a unix socket to",
                    &full,
                )?)
            })?;
            tracing::debug!(path = %full.display(), "socket bound without a file, as saved");
            Ok(())
        }
    }
}

/// `bind(2)` of `fd` to `s`'s name, as it is.
fn bind_raw(fd: &OwnedFd, s: &UnixSocket) -> io::Result<()> {
    UnixAddr::new(&s.name)?.bind(fd)
}

/// Bind where the name leads from here; a dead socket file left at the
/// path (by the saved process, or a failed restore) is taken over.
fn bind_here(fd: &OwnedFd, s: &UnixSocket) -> Result<(), FileError> {
    let addr = UnixAddr::new(&s.name).doing("a unix socket name too long")?;
    let err = match bind_raw(fd, s) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let path_name = s.name.first() != Some(&0);
    if err.raw_os_error() == Some(libc::EADDRINUSE) && path_name {
        // The socket file of the saved process is still there. Take it
        // over only if nobody answers on it.
        let probe = new_socket(libc::AF_UNIX, s.kind, 0).doing("creating a unix socket")?;
        let live = addr.connect(&probe).is_ok();
        if !live {
            let path = name_path(&s.name);
            if std::fs::symlink_metadata(&path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(&path);
                if bind_raw(fd, s).is_ok() {
                    return Ok(());
                }
            }
        }
    }
    Err(FileError::Path {
        op: "binding a unix socket to",
        path: printable(&s.name).into(),
        source: io::Error::from_raw_os_error(err.raw_os_error().unwrap_or(libc::EADDRINUSE)),
    })
}

/// The filesystem path of a path name (its trailing NUL dropped).
fn name_path(name: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(name.strip_suffix(&[0]).unwrap_or(name)).into()
}

fn listen(s: &UnixSocket, backlog: u32) -> Result<OwnedFd, FileError> {
    let fd = new_socket(libc::AF_UNIX, s.kind, 0).doing("creating a unix socket")?;
    if !s.name.is_empty() {
        bind(&fd, s)?;
    }
    crate::sys::socket::listen(&fd, backlog.min(i32::MAX as u32) as i32)
        .doing("listening on a unix socket")?;
    finish(&fd, s)?;
    Ok(fd)
}

/// The unix sockets sock_diag listed, by inode: every network namespace
/// met is read once, when its first socket is met (inodes are unique
/// across namespaces; a socket pair may span two).
#[derive(Debug, Default)]
pub struct UnixSeen {
    diag: HashMap<u64, UnixDiag>,
    /// The network namespaces (inodes) read.
    read: std::collections::HashSet<u64>,
}

impl UnixSeen {
    /// Reads the unix sockets of the network namespace `socket` belongs
    /// to, once per namespace: sock_diag answers for the namespace it is
    /// asked from, and a sandbox's sockets live in its own namespace (and
    /// travel to processes outside it).
    fn read_namespace_of(&mut self, socket: &OwnedFd) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let ns = crate::sys::socket::netns_of(socket)?;
        let ino = std::fs::File::from(ns.try_clone()?).metadata()?.ino();
        if self.read.contains(&ino) {
            return Ok(());
        }
        let ours = std::fs::metadata("/proc/self/ns/net")?.ino();
        let found = if ino == ours {
            sockdiag::unix_sockets()?
        } else {
            crate::namespaces::inside_namespace_fd(&ns, libc::CLONE_NEWNET, sockdiag::unix_sockets)?
        };
        self.diag.extend(found);
        self.read.insert(ino);
        Ok(())
    }
}

/// Unix sockets being restored: the pairs half made, and every saved
/// socket by inode (to find a peer or a waiting client).
#[derive(Debug)]
pub struct UnixOpening {
    ends: UnixEnds,
    by_ino: HashMap<u64, UnixSocket>,
}

impl FdKind for UnixSocket {
    type Seen = UnixSeen;
    type Opening = UnixOpening;

    fn describe(&self) -> String {
        let what = match (&self.backlog, &self.peer) {
            (Some(_), _) => "listening",
            (None, Peer::Inside { .. } | Peer::Pending { .. }) => "connected",
            (None, Peer::Outside) => "connected",
            (None, Peer::Closed) => "connected, peer closed",
            (None, Peer::None) => "unconnected",
        };
        if self.name.is_empty() {
            format!("unix {} socket, {what}", kind_name(self.kind))
        } else {
            format!(
                "unix {} socket {}, {what}",
                kind_name(self.kind),
                printable(&self.name)
            )
        }
    }

    fn policy(&self) -> Policy {
        if self.peer == Peer::Outside {
            Policy::Reset
        } else {
            Policy::Restore
        }
    }

    fn reason(&self, _: &Probe<'_>, _: &UnixSeen) -> String {
        if self.backlog.is_some() {
            "listening again under its name".into()
        } else {
            "recreated with its peer and the data queued each way".into()
        }
    }

    fn chunks(&self) -> Vec<&ChunkRef> {
        self.queue.iter().collect()
    }

    fn claims(fd: &Probe<'_>) -> bool {
        fd.is_socket(libc::AF_UNIX)
    }

    fn checkpoint(
        fd: &Probe<'_>,
        seen: &mut UnixSeen,
        _: &mut Collecting<'_>,
    ) -> Result<Self, Unsaved> {
        seen.read_namespace_of(fd.file).on_fd(
            fd.pid,
            fd.fd,
            "querying the unix sockets of its network namespace (sock_diag)",
        )?;
        Ok(checkpoint(
            fd.file,
            fd.stat.st_ino,
            &seen.diag,
            fd.pid,
            fd.creds,
        )?)
    }

    fn opening(all: &[&Self], _: &Restoring<'_>) -> FileResult<UnixOpening> {
        Ok(UnixOpening {
            ends: UnixEnds::default(),
            by_ino: all.iter().map(|u| (u.ino, (*u).clone())).collect(),
        })
    }

    fn restore(
        &self,
        flags: u32,
        opening: &mut UnixOpening,
        cx: &Restoring<'_>,
    ) -> FileResult<Opened> {
        let UnixOpening { ends, by_ino } = opening;
        let peer_of = |ino: u64| by_ino.get(&ino).cloned();
        let client_of = |ino: u64| {
            by_ino
                .get(&ino)
                .filter(|u| matches!(u.peer, Peer::Pending { .. }))
                .cloned()
        };
        let fd = ends.open(self, &peer_of, &client_of, cx.image)?;
        status_flags_as_saved(&fd, flags)?;
        Ok(fd.into())
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn names_print_without_nul() {
        // Xvfb binds its path with the NUL counted.
        assert_eq!(printable(b"/tmp/.X11-unix/X0\0"), "/tmp/.X11-unix/X0");
        assert_eq!(printable(b"\0/tmp/.X11-unix/X0"), "@/tmp/.X11-unix/X0");
        assert_eq!(printable(b"\0a\0b"), "@a\\0b");
    }
}
