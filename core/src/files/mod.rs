//! Open files: the fd table of each process and the open file descriptions
//! (OFDs) behind it.
//!
//! At checkpoint every fd is fetched into the checkpointer with
//! `pidfd_getfd` (the same OFD: offsets and flags shared), classified by
//! kind, and fds that share one OFD (inherited across fork, dup'ed) are
//! found with `kcmp` so that restore opens the OFD once and hands it to
//! every holder. Each kind lives in its own module with both directions.

pub mod chardev;
pub mod epoll;
pub mod eventfd;
pub mod fsnode;
pub mod inet;
pub mod inotify;
pub mod memfd;
pub mod netlink;
pub mod pidfd;
pub mod pipe;
pub mod pty;
pub mod regular;
pub mod service_file;
pub mod signalfd;
pub mod sockopt;
pub mod timerfd;
pub mod unix;

use crate::image::{ChunkRef, ImageError, ImageReader, ImageWriter};
use crate::memory::shmem::{SharedObjects, ShmemTable};
use crate::policy::{Policy, Report, Subject};
use crate::procfs::{ProcDir, ProcfsError};
use crate::sys::fd::{fstat, pidfd_getfd, pidfd_open, same_ofd};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Procfs(#[from] ProcfsError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Uevent(#[from] crate::uevent::UeventError),
    #[error("pid {pid} fd {fd}: {op}")]
    Fd {
        pid: i32,
        fd: i32,
        op: &'static str,
        source: io::Error,
    },
    #[error("{op} {path}")]
    Path {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} is device {found}, the image expects {expected}")]
    DeviceMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// A node of the filesystem (a directory, a socket file) the restore
    /// would have to make, and must not.
    #[error("not making {path}: {reason}")]
    NotMade { path: PathBuf, reason: String },
    #[error("{what}")]
    Create {
        what: &'static str,
        source: io::Error,
    },
    #[error("image refers to {what} {index}, which it does not contain")]
    BadReference { what: &'static str, index: usize },
    #[error(transparent)]
    Device(#[from] crate::devices::DeviceError),
    #[error("setting socket option {name}")]
    SocketOption { name: String, source: io::Error },
    #[error("pipe {index}: {what}")]
    Pipe {
        index: usize,
        what: &'static str,
        source: io::Error,
    },
    #[error("pty {index}: {op}")]
    Pty {
        index: u32,
        op: &'static str,
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, FileError>;

/// Why one open file cannot be saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub reason: String,
    /// Data in flight that the processes consume by themselves once they
    /// run (a message carrying fds, unread events): a later try may work.
    pub transient: bool,
}

impl Refusal {
    /// A refusal for data in flight (see [`Refusal::transient`]).
    pub fn for_now(reason: String) -> Self {
        Refusal {
            reason,
            transient: true,
        }
    }
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal {
            reason,
            transient: false,
        }
    }
}

/// One fd of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdImage {
    pub fd: i32,
    pub cloexec: bool,
    /// Index into `Snapshot::files`.
    pub file: usize,
}

/// One open file description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFile {
    /// File status flags and access mode (`O_*`), without `O_CLOEXEC`.
    pub flags: u32,
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileKind {
    Regular(regular::RegularFile),
    Memfd(memfd::MemfdFile),
    Directory {
        path: PathBuf,
    },
    /// One end of a pipe or FIFO of `Snapshot::pipes`.
    Pipe(pipe::PipeEnd),
    CharDevice(chardev::CharDevice),
    /// A device detached by simulated hot-unplug: a dead stand-in.
    Detached(Box<crate::devices::Detached>),
    /// An X server's primary DRM card (experimental): the live card
    /// reopened at restore.
    Reattached(Box<crate::devices::Reattached>),
    EventFd(eventfd::EventFd),
    TimerFd(timerfd::TimerFd),
    SignalFd(signalfd::SignalFd),
    Epoll(epoll::Epoll),
    UnixSocket(unix::UnixSocket),
    Pty(pty::PtyEnd),
    /// An open file of `/dev/tty`: its holder's controlling terminal.
    DevTty(pty::DevTty),
    Inotify(inotify::Inotify),
    Netlink(netlink::NetlinkSocket),
    Inet(inet::InetSocket),
    Pidfd(pidfd::Pidfd),
    /// A file inside the FUSE mount of a session service left out of the
    /// set: a dead stand-in, reopened by path once the service is back.
    ServiceFile(service_file::ServiceFile),
}

impl FileKind {
    pub fn describe(&self) -> String {
        match self {
            FileKind::Regular(r) => r.describe(),
            FileKind::Memfd(m) => m.describe(),
            FileKind::Directory { path } => format!("directory {}", path.display()),
            FileKind::Pipe(p) => p.describe(),
            FileKind::CharDevice(c) => c.describe(),
            FileKind::Detached(d) => d.describe(),
            FileKind::Reattached(r) => r.describe(),
            FileKind::EventFd(_) => "eventfd".into(),
            FileKind::TimerFd(t) => t.describe(),
            FileKind::SignalFd(s) => format!("signalfd for signal mask {:#x}", s.mask),
            FileKind::Epoll(e) => e.describe(),
            FileKind::UnixSocket(u) => u.describe(),
            FileKind::Pty(p) => p.describe(),
            FileKind::DevTty(t) => t.describe(),
            FileKind::Inotify(i) => i.describe(),
            FileKind::Netlink(n) => n.describe(),
            FileKind::Inet(i) => i.describe(),
            FileKind::Pidfd(p) => p.describe(),
            FileKind::ServiceFile(f) => f.describe(),
        }
    }

    pub fn policy(&self) -> Policy {
        match self {
            FileKind::CharDevice(_) => Policy::Reopen,
            FileKind::Detached(_) => Policy::Detach,
            FileKind::Reattached(_) => Policy::Reattach,
            FileKind::UnixSocket(u) if u.peer == unix::Peer::Outside => Policy::Reset,
            FileKind::Netlink(_) => Policy::Reopen,
            FileKind::ServiceFile(_) => Policy::Reopen,
            FileKind::DevTty(t) if t.external => Policy::Reopen,
            FileKind::Inet(i) if i.state == inet::InetState::Connection => Policy::Reset,
            FileKind::Inet(i) if i.state == inet::InetState::Connected => Policy::Reopen,
            FileKind::Pidfd(p) if p.pid > 0 && !p.inside => Policy::Reset,
            FileKind::Inotify(i) if i.ended().next().is_some() => Policy::Reset,
            _ => Policy::Restore,
        }
    }

    pub fn chunks(&self) -> Vec<&ChunkRef> {
        match self {
            FileKind::Regular(r) => r.chunks(),
            FileKind::UnixSocket(u) => u.chunks(),
            FileKind::Pty(p) => p.chunks(),
            _ => Vec::new(),
        }
    }
}

/// The open files of the whole task set, built at checkpoint.
#[derive(Debug, Default)]
pub struct FileTable {
    pub files: Vec<OpenFile>,
    pub pipes: pipe::PipeTable,
    /// Our copy of each OFD, to compare and to read data through.
    held: Vec<OwnedFd>,
    by_inode: HashMap<(u64, u64), Vec<usize>>,
    /// (pid, fd, file index) of every fd saved.
    holders: Vec<(i32, i32, usize)>,
    /// `lock:` lines of the fdinfo of the process last collected:
    /// (fd, file index, line).
    pub lock_lines: Vec<(i32, usize, String)>,
    /// Every unix socket of the network namespaces of the processes met,
    /// each namespace read once when its first socket is met (inodes are
    /// unique across namespaces; a socket pair may span two).
    unix_diag: HashMap<u64, crate::sockdiag::UnixDiag>,
    /// The network namespaces (inodes) whose unix sockets are read.
    unix_diag_read: std::collections::HashSet<u64>,
    /// Pids of the session leaders collected.
    leaders: std::collections::HashSet<i32>,
    /// Pty queues the dump read out: put back unless the processes end.
    taken: pty::Taken,
    /// The device table char devices are classified by.
    pub devices: crate::devices::DevicePolicies,
    /// Mount points of FUSE file systems whose servers are left out of the
    /// set (see [`crate::checkpoint::LeftOut`]): their files are not
    /// looked at (the server may answer no one but its user).
    pub left_out_mounts: Vec<service_file::ServiceMount>,
}

impl FileTable {
    /// Classify every fd of `pid`; refusals go to `report` (and the fd is left out).
    pub fn collect(
        &mut self,
        pid: i32,
        shmem: &mut ShmemTable,
        report: &mut Report,
    ) -> Result<Vec<FdImage>> {
        let dir = ProcDir::new(pid);
        let pidfd = pidfd_open(pid).map_err(|source| FileError::Fd {
            pid,
            fd: -1,
            op: "pidfd_open",
            source,
        })?;
        let stat = dir.stat()?;
        // Socket files and FIFOs are looked at as their holder would.
        let creds = dir
            .status()
            .ok()
            .map(|s| crate::creds::Creds::from_status(&s));
        if stat.session == pid {
            self.leaders.insert(pid);
        }
        let mut fds = Vec::new();
        self.lock_lines.clear();
        let fd_numbers = dir.fds()?;
        let x_primary = self.x_primary_card(pid, &stat.comm, &dir, &fd_numbers);
        for fd in fd_numbers {
            // The device table's account of a char device, for the report.
            let mut device_reason = None;
            let mut device_kind = None;
            let info = dir.fdinfo(fd)?;
            let target = dir.fd_target(fd)?;
            if let Some(mount) = self
                .left_out_mounts
                .iter()
                .find(|m| target.starts_with(&m.path))
            {
                // Recorded from /proc alone: root may not look into the
                // mount. A lock on it could not be taken again.
                if info.extra.iter().any(|(k, _)| k == "lock") {
                    report.add(
                        pid,
                        Subject::Fd { fd },
                        format!("file {} of a left-out FUSE server", target.display()),
                        Policy::Refuse,
                        "it holds a lock, which a reopen by path cannot take again",
                    );
                    continue;
                }
                let file = service_file::ServiceFile::checkpoint(&target, &info, mount);
                self.collect_service_file(pid, fd, &pidfd, &info, file, report, &mut fds)?;
                continue;
            }
            let local = pidfd_getfd(&pidfd, fd).map_err(|source| FileError::Fd {
                pid,
                fd,
                op: "pidfd_getfd",
                source,
            })?;
            let st = fstat(&local).map_err(|source| FileError::Fd {
                pid,
                fd,
                op: "fstat",
                source,
            })?;
            let locks: Vec<String> = info
                .extra
                .iter()
                .filter(|(k, _)| k == "lock")
                .map(|(_, v)| v.clone())
                .collect();
            let cloexec = info.flags & libc::O_CLOEXEC as u32 != 0;
            let flags = info.flags & !(libc::O_CLOEXEC as u32);
            let key = (st.st_dev, st.st_ino);
            // An OFD already met (fork, dup, SCM_RIGHTS): reuse it.
            if let Some(&i) = self
                .by_inode
                .get(&key)
                .and_then(|c| c.iter().find(|&&i| same_ofd(&self.held[i], &local)))
            {
                let f = &self.files[i];
                report.add(
                    pid,
                    Subject::Fd { fd },
                    f.kind.describe(),
                    f.kind.policy(),
                    "shares an open file description already saved",
                );
                self.holders.push((pid, fd, i));
                self.lock_lines
                    .extend(locks.iter().map(|l| (fd, i, l.clone())));
                fds.push(FdImage {
                    fd,
                    cloexec,
                    file: i,
                });
                continue;
            }
            let target_str = target.to_string_lossy().into_owned();
            let kind: std::result::Result<FileKind, Refusal> = match st.st_mode & libc::S_IFMT {
                libc::S_IFREG if target_str.starts_with("/memfd:") => {
                    memfd::checkpoint(&local, &target_str, &info, &st, shmem).map_err(Refusal::from)
                }
                libc::S_IFREG => {
                    regular::checkpoint(pid, fd, &target, &info, &st).map_err(Refusal::from)
                }
                libc::S_IFDIR => Ok(FileKind::Directory {
                    path: target.clone(),
                }),
                libc::S_IFIFO => Ok(self.pipes.checkpoint(
                    (pid, fd),
                    &target,
                    &local,
                    flags,
                    &st,
                    creds.as_ref(),
                )),
                libc::S_IFCHR => {
                    let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
                    if pty::is_master(major, minor) {
                        pty::checkpoint(&local, true, None)
                    } else if pty::is_slave_major(major) {
                        pty::checkpoint(&local, false, Some((major - 136) * 256 + minor))
                    } else if pty::is_dev_tty(major, minor) {
                        pty::checkpoint_dev_tty(stat.tty_nr, stat.session).map_err(Refusal::from)
                    } else {
                        let o_path = info.flags & libc::O_PATH as u32 != 0;
                        match chardev::checkpoint(&target, &st, o_path, x_primary, &self.devices) {
                            Ok((kind, reason)) => {
                                device_reason = Some(reason);
                                Ok(kind)
                            }
                            Err((kind, reason)) => {
                                device_kind = Some(kind);
                                Err(reason.into())
                            }
                        }
                    }
                }
                libc::S_IFSOCK => match unix::domain(&local) {
                    Ok(libc::AF_UNIX) => {
                        self.read_unix_diag(&local).map_err(|source| FileError::Fd {
                            pid,
                            fd,
                            op: "querying the unix sockets of its network namespace (sock_diag)",
                            source,
                        })?;
                        unix::checkpoint(&local, st.st_ino, &self.unix_diag, pid, creds.as_ref())
                    }
                    Ok(libc::AF_NETLINK) => netlink::checkpoint(&local),
                    Ok(family @ (libc::AF_INET | libc::AF_INET6)) => {
                        inet::checkpoint(&local, family)
                    }
                    Ok(domain) => Err(Refusal::from(format!(
                        "{} sockets are not supported yet",
                        match domain {
                            libc::AF_INET => "IPv4",
                            libc::AF_INET6 => "IPv6",
                            libc::AF_NETLINK => "netlink",
                            libc::AF_PACKET => "packet",
                            _ => "this family of",
                        }
                    ))),
                    Err(e) => Err(format!("socket of unknown family: {e}").into()),
                },
                _ if target_str == "anon_inode:[eventfd]" => {
                    eventfd::checkpoint(&info).map_err(Refusal::from)
                }
                _ if target_str == "anon_inode:[timerfd]" => {
                    timerfd::checkpoint(&info).map_err(Refusal::from)
                }
                _ if target_str == "anon_inode:inotify" => {
                    let mounts: Vec<_> = self
                        .left_out_mounts
                        .iter()
                        .map(|m| m.path.clone())
                        .collect();
                    inotify::checkpoint(&local, &info, &mounts)
                }
                _ if target_str == "anon_inode:[signalfd]" => {
                    signalfd::checkpoint(&info).map_err(Refusal::from)
                }
                // Linux 6.9+ names it `pidfd:[INO]` (pidfs).
                _ if target_str == "anon_inode:[pidfd]" || target_str.starts_with("pidfd:") => {
                    pidfd::checkpoint(&info).map_err(Refusal::from)
                }
                _ if target_str == "anon_inode:[eventpoll]" => {
                    use std::os::unix::fs::MetadataExt;
                    let inode = |n: i32| {
                        std::fs::metadata(format!("/proc/{pid}/fd/{n}"))
                            .ok()
                            .map(|m| m.ino())
                    };
                    epoll::checkpoint(pid, &info, &inode).map_err(Refusal::from)
                }
                _ => Err(format!("{target_str}: this kind of file is not supported yet").into()),
            };
            match kind {
                Ok(kind) => {
                    let policy = kind.policy();
                    let reason = match &kind {
                        _ if device_reason.is_some() => device_reason.take().expect("just checked"),
                        FileKind::Pipe(end) => self.pipes.reason(end),
                        FileKind::Regular(r) if r.ghost.is_some() => {
                            "deleted while open: contents saved in the image".into()
                        }
                        FileKind::TimerFd(_) => "time left, interval and unread expirations restored; time left counts from the restore".into(),
                        FileKind::SignalFd(_) => "recreated with its signal mask".into(),
                        FileKind::Memfd(_) => "recreated with its name, size, contents and seals; shared with its mappings".into(),
                        FileKind::Epoll(_) => "recreated; its watches are added back by the process under the same fd numbers".into(),
                        FileKind::EventFd(_) => "recreated with its counter and mode".into(),
                        FileKind::UnixSocket(u) if u.backlog.is_some() => "listening again under its name".into(),
                        FileKind::UnixSocket(_) => "recreated with its peer and the data queued each way".into(),
                        FileKind::Inet(i) => match i.state {
                            inet::InetState::Connection => "a TCP connection cannot be carried over: restored unconnected (the program sees the connection gone and reconnects)".into(),
                            inet::InetState::Listening => "listening again on its address".into(),
                            inet::InetState::Connected => "bound and connected again to its peer".into(),
                            inet::InetState::Unconnected => "recreated, bound to its address if it had one".into(),
                        },
                        FileKind::Netlink(n) if n.is_uevent() => "device event socket: recreated with its groups, SO_PASSCRED and filter inside the restored session's own network namespace, where the uevent proxy replays the detached devices' events and forwards the host's".into(),
                        FileKind::Netlink(_) => "recreated with its protocol and multicast groups (the kernel picks its port id)".into(),
                        FileKind::Inotify(i) => i.reason(),
                        FileKind::Pty(_) => "a fresh pty with the saved termios, window size, modes and the bytes queued each way (its number may change)".into(),
                        FileKind::DevTty(_) => "opened again as /dev/tty on the restored controlling terminal".into(),
                        _ => "recreated with its flags and offset".into(),
                    };
                    report.add(pid, Subject::Fd { fd }, kind.describe(), policy, reason);
                    let i = self.files.len();
                    self.files.push(OpenFile { flags, kind });
                    self.held.push(local);
                    self.by_inode.entry(key).or_default().push(i);
                    self.holders.push((pid, fd, i));
                    self.lock_lines
                        .extend(locks.iter().map(|l| (fd, i, l.clone())));
                    fds.push(FdImage {
                        fd,
                        cloexec,
                        file: i,
                    });
                }
                Err(Refusal { reason, transient }) => {
                    let kind = device_kind.unwrap_or(target_str);
                    if transient {
                        report.refuse_for_now(pid, Subject::Fd { fd }, kind, reason);
                    } else {
                        report.add(pid, Subject::Fd { fd }, kind, Policy::Refuse, reason);
                    }
                }
            }
        }
        Ok(fds)
    }

    /// Adds a file of a left-out service's mount, sharing the open file
    /// description already saved when another fd holds it (pidfd_getfd
    /// and kcmp do not reach into the file system).
    #[allow(clippy::too_many_arguments)]
    fn collect_service_file(
        &mut self,
        pid: i32,
        fd: i32,
        pidfd: &OwnedFd,
        info: &crate::procfs::FdInfo,
        file: service_file::ServiceFile,
        report: &mut Report,
        fds: &mut Vec<FdImage>,
    ) -> Result<()> {
        let local = pidfd_getfd(pidfd, fd).map_err(|source| FileError::Fd {
            pid,
            fd,
            op: "pidfd_getfd",
            source,
        })?;
        let cloexec = info.flags & libc::O_CLOEXEC as u32 != 0;
        let flags = info.flags & !(libc::O_CLOEXEC as u32);
        // No fstat (it would ask the server): all such files share a key.
        let key = (u64::MAX, info.ino);
        let shared = self
            .by_inode
            .get(&key)
            .and_then(|c| c.iter().find(|&&i| same_ofd(&self.held[i], &local)))
            .copied();
        let i = match shared {
            Some(i) => i,
            None => {
                let i = self.files.len();
                self.files.push(OpenFile {
                    flags,
                    kind: FileKind::ServiceFile(file),
                });
                self.held.push(local);
                self.by_inode.entry(key).or_default().push(i);
                i
            }
        };
        let FileKind::ServiceFile(f) = &self.files[i].kind else {
            unreachable!("index {i} was found or pushed as a service file");
        };
        report.add(
            pid,
            Subject::Fd { fd },
            f.describe(),
            Policy::Reopen,
            f.reason(),
        );
        self.holders.push((pid, fd, i));
        fds.push(FdImage {
            fd,
            cloexec,
            file: i,
        });
        Ok(())
    }

    /// Reads the unix sockets of the network namespace `socket` belongs
    /// to, once per namespace: sock_diag answers for the namespace it is
    /// asked from, and a sandbox's sockets live in its own namespace (and
    /// travel to processes outside it).
    fn read_unix_diag(&mut self, socket: &OwnedFd) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        /// `SIOCGSKNS`: an fd of the socket's network namespace.
        const SIOCGSKNS: libc::c_ulong = 0x894C;
        // SAFETY: the ioctl takes no argument and returns a new fd or -1.
        let raw = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGSKNS) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd owned by nobody else.
        let ns = unsafe { OwnedFd::from_raw_fd(raw) };
        let ino = std::fs::File::from(ns.try_clone()?).metadata()?.ino();
        if self.unix_diag_read.contains(&ino) {
            return Ok(());
        }
        let ours = std::fs::metadata("/proc/self/ns/net")?.ino();
        let found = if ino == ours {
            crate::sockdiag::unix_sockets()?
        } else {
            crate::namespaces::inside_namespace_fd(
                &ns,
                libc::CLONE_NEWNET,
                crate::sockdiag::unix_sockets,
            )?
        };
        self.unix_diag.extend(found);
        self.unix_diag_read.insert(ino);
        Ok(())
    }

    /// The device number of the primary DRM card `pid` holds when it is an
    /// X server (the automatic Reattach rule), from a look at its fds'
    /// device numbers before they are classified.
    fn x_primary_card(
        &self,
        pid: i32,
        comm: &str,
        dir: &ProcDir,
        fds: &[i32],
    ) -> Option<(u32, u32)> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if !crate::devices::reattach::is_x_server(comm, dir.exe().ok().as_deref()) {
            return None;
        }
        let devnums: Vec<(u32, u32)> = fds
            .iter()
            .filter_map(|fd| std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok())
            .filter(|m| m.file_type().is_char_device())
            .map(|m| (libc::major(m.rdev()), libc::minor(m.rdev())))
            .collect();
        let card = crate::devices::reattach::primary_of(&self.devices.roots, &devnums)?;
        tracing::debug!(pid, comm, devname = %card.devname, boot_vga = ?card.boot_vga, "an X server's primary DRM card");
        Some(card.devnum)
    }

    /// Open files of a file deleted while open that the set also maps
    /// (`deleted`: device number, inode and shared object of each file
    /// deleted while mapped) become fds of that object, as a memfd's are:
    /// restored, fds and mappings still share one file, and its contents
    /// are saved once.
    pub fn share_deleted_with_mappings(
        &mut self,
        deleted: impl Iterator<Item = (u64, u64, usize)>,
        report: &mut Report,
    ) {
        for (dev, ino, object) in deleted {
            let Some(files) = self.by_inode.get(&(dev, ino)) else {
                continue;
            };
            for &i in files {
                let FileKind::Regular(r) = &self.files[i].kind else {
                    continue;
                };
                if r.ghost.is_none() {
                    continue;
                }
                let name = r
                    .path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                self.files[i].kind = FileKind::Memfd(memfd::MemfdFile {
                    object,
                    name,
                    pos: r.pos,
                });
                for &(pid, fd, _) in self.holders.iter().filter(|h| h.2 == i) {
                    if let Some(f) = report
                        .findings
                        .iter_mut()
                        .find(|f| f.pid == pid && f.subject == Subject::Fd { fd })
                    {
                        f.reason = "deleted file, also mapped: restored as the memfd its mappings map, at its offset".into();
                    }
                }
            }
        }
    }

    /// After every process is collected: pipe peers are known, and which
    /// pids are saved.
    pub fn finish_classification(&mut self, saved: &HashSet<i32>, report: &mut Report) {
        self.pipes.report_external(report);
        self.classify_pidfds(saved, report);
        // A pty needs its master: a slave alone is a terminal outside the
        // set (the one hiber runs in, say); a master alone hangs up.
        let ends: std::collections::HashSet<(u32, bool)> = self
            .files
            .iter()
            .filter_map(|f| match &f.kind {
                FileKind::Pty(p) => Some((p.index, p.master)),
                _ => None,
            })
            .collect();
        for &(pid, fd, i) in &self.holders {
            let FileKind::Pty(p) = &mut self.files[i].kind else {
                continue;
            };
            if ends.contains(&(p.index, !p.master)) {
                continue;
            }
            p.external = !p.master;
            if let Some(finding) = report
                .findings
                .iter_mut()
                .find(|x| x.pid == pid && x.subject == Subject::Fd { fd })
            {
                if p.master {
                    finding.policy = Policy::Reset;
                    finding.reason = "no saved process holds its slave: restored with the slave closed (the program reads the output still queued, then sees the hang-up)".into();
                } else {
                    finding.policy = Policy::Reopen;
                    finding.reason = "the terminal it runs in is outside the saved set: restored as the terminal `hiber restore` runs in (what was typed ahead stays in the outside terminal)".into();
                }
            }
        }
        self.classify_dev_tty(&ends, report);
        // A unix socket whose peer no saved process holds is Reset.
        let saved: std::collections::HashSet<u64> = self
            .files
            .iter()
            .filter_map(|f| match &f.kind {
                FileKind::UnixSocket(u) => Some(u.ino),
                _ => None,
            })
            .collect();
        // Clients of connections waiting in a saved listener's queue.
        let waiting_in: HashMap<u64, u64> = self
            .files
            .iter()
            .filter_map(|f| match &f.kind {
                FileKind::UnixSocket(u) => Some(u),
                _ => None,
            })
            .flat_map(|u| u.accept_queue.iter().map(move |&e| (e, u.ino)))
            .collect();
        for (i, f) in self.files.iter_mut().enumerate() {
            let FileKind::UnixSocket(u) = &mut f.kind else {
                continue;
            };
            // Waiting in a saved listener's queue (sock_diag may or may not
            // name the waiting server end as its peer), or truly outside.
            if let Some(&listener) = waiting_in.get(&u.ino) {
                let embryo = match u.peer {
                    unix::Peer::Inside { ino } => ino,
                    _ => 0,
                };
                u.peer = unix::Peer::Pending { listener, embryo };
            } else if matches!(u.peer, unix::Peer::Inside { ino } if !saved.contains(&ino)) {
                u.peer = unix::Peer::Outside;
            }
            if u.peer != unix::Peer::Outside {
                continue;
            }
            for &(pid, fd, _) in self.holders.iter().filter(|h| h.2 == i) {
                if let Some(finding) = report
                    .findings
                    .iter_mut()
                    .find(|x| x.pid == pid && x.subject == Subject::Fd { fd })
                {
                    finding.policy = Policy::Reset;
                    finding.reason = "its peer is outside the saved set: restored with the peer closed (the program reads the queued data, then end-of-file)".into();
                }
            }
        }
    }

    /// A pidfd of a saved process is opened again; of one outside, it
    /// comes back as a handle to an exited process.
    fn classify_pidfds(&mut self, saved: &HashSet<i32>, report: &mut Report) {
        for &(pid, fd, i) in &self.holders {
            let FileKind::Pidfd(p) = &mut self.files[i].kind else {
                continue;
            };
            p.inside = saved.contains(&p.pid);
            let reason = match (p.pid, p.inside) {
                (-1, _) => "its process had exited: restored as a handle to an exited process",
                (_, true) => "the process it refers to is saved too: opened again on the restored process",
                (_, false) => "the process it refers to is outside the saved set: restored as a handle to an exited process",
            };
            if let Some(finding) = report
                .findings
                .iter_mut()
                .find(|x| x.pid == pid && x.subject == Subject::Fd { fd })
            {
                finding.kind = self.files[i].kind.describe();
                finding.policy = self.files[i].kind.policy();
                finding.reason = reason.into();
            }
        }
    }

    /// A `/dev/tty` file is opened again at restore by its session leader
    /// once that has its terminal back: the leader, the master and a slave
    /// file of the terminal must be saved. A session led from outside has
    /// an outside terminal: the one `hiber restore` runs in.
    fn classify_dev_tty(
        &mut self,
        ends: &std::collections::HashSet<(u32, bool)>,
        report: &mut Report,
    ) {
        let inside_slave: std::collections::HashSet<u32> = self
            .files
            .iter()
            .filter_map(|f| match &f.kind {
                FileKind::Pty(p) if !p.master && !p.external => Some(p.index),
                _ => None,
            })
            .collect();
        for &(pid, fd, i) in &self.holders {
            let FileKind::DevTty(t) = &mut self.files[i].kind else {
                continue;
            };
            let master = ends.contains(&(t.index, true));
            let (policy, reason) = if self.leaders.contains(&t.session) {
                if master && inside_slave.contains(&t.index) {
                    (
                        Policy::Restore,
                        format!("opened again by its session leader (pid {}) once it has its controlling terminal, pty {}, back", t.session, t.index),
                    )
                } else {
                    (
                        Policy::Refuse,
                        format!("its controlling terminal, pty {}, is not saved with its master and an open slave: the session leader could not take it back", t.index),
                    )
                }
            } else if master {
                (
                    Policy::Refuse,
                    format!("its session leader (pid {}) is outside the saved set, so the restored pty {} could not become its controlling terminal", t.session, t.index),
                )
            } else {
                t.external = true;
                (
                    Policy::Reopen,
                    "its session is led from outside the saved set: opened as /dev/tty of `hiber restore`, the terminal it runs in (restoring without one fails)".into(),
                )
            };
            if let Some(finding) = report
                .findings
                .iter_mut()
                .find(|x| x.pid == pid && x.subject == Subject::Fd { fd })
            {
                finding.policy = policy;
                finding.reason = reason;
            }
        }
    }

    /// Save the data held by files and pipes (queued pipe bytes, contents of
    /// deleted files, pty queues) into the image.
    pub fn dump_data(&mut self, writer: &ImageWriter) -> Result<()> {
        for (file, held) in self.files.iter_mut().zip(&self.held) {
            match &mut file.kind {
                FileKind::Regular(r) => r.dump_ghost(held, writer)?,
                FileKind::Pipe(end) => self.pipes.dump(end.pipe, held, writer)?,
                FileKind::UnixSocket(u) => u.dump(writer)?,
                _ => {}
            }
        }
        self.dump_pty_queues(writer)
    }

    /// Read out the queues of every pty whose master is saved (see
    /// `pty`): the output on the master's entry, the input on the first
    /// saved open file of its slave.
    fn dump_pty_queues(&mut self, writer: &ImageWriter) -> Result<()> {
        let mut masters = Vec::new();
        let mut slaves: HashMap<u32, usize> = HashMap::new();
        for (i, f) in self.files.iter().enumerate() {
            match &f.kind {
                FileKind::Pty(p) if p.master => masters.push(i),
                FileKind::Pty(p) if !p.external => {
                    slaves.entry(p.index).or_insert(i);
                }
                _ => {}
            }
        }
        for m in masters {
            let FileKind::Pty(end) = &self.files[m].kind else {
                continue;
            };
            let (index, packet, termios) = (end.index, end.packet_mode, end.termios.clone());
            let slave = slaves.get(&index).copied();
            let (input, output) = self
                .taken
                .take(index, &self.held[m], slave.is_some(), packet, &termios)
                .map_err(|source| FileError::Pty {
                    index,
                    op: "reading the bytes queued in the terminal",
                    source,
                })?;
            for i in std::iter::once(m).chain(slave) {
                if let FileKind::Pty(end) = &mut self.files[i].kind {
                    end.dump_queue(writer, output, input)?;
                }
            }
        }
        Ok(())
    }

    /// The session and foreground group of every saved pty slave the
    /// ioctls could not tell (they answer only the terminal's own
    /// processes, ENOTTY to us): from `terminals`, (tty_nr, session,
    /// tpgid) of the saved processes' /proc/PID/stat, whose tty is that pty.
    pub fn fill_terminal_groups(&mut self, terminals: &[(i32, i32, i32)]) {
        for f in &mut self.files {
            let FileKind::Pty(end) = &mut f.kind else {
                continue;
            };
            if end.master || end.external || (end.session > 0 && end.foreground > 0) {
                continue;
            }
            let found = terminals
                .iter()
                .find(|(tty, _, _)| pty::pty_of_tty_nr(*tty) == Some(end.index));
            if let Some(&(_, session, tpgid)) = found {
                if end.session <= 0 {
                    end.session = session;
                }
                if end.foreground <= 0 && tpgid > 0 {
                    end.foreground = tpgid;
                }
            }
        }
    }

    /// Put back what the dump read out of live objects (pty queues), while
    /// the processes are still frozen (dropping the table does it too).
    pub fn put_back(&mut self) {
        self.taken.put_back();
    }
}

/// The open files made by [`restore_all`].
#[derive(Debug)]
pub struct RestoredFiles {
    /// Index i is `files[i]`.
    pub fds: Vec<OwnedFd>,
    /// Indices of the reattached cards that are live opens (not stand-ins).
    pub reattached: Vec<usize>,
}

/// Open every OFD of the image in the restorer, each at or above `base`.
/// Device event sockets are created in `uevent_net` when given; live
/// cards to reattach are looked up in `sys`.
// Each argument is a different source the files come from (the issue on
// the module layout gives this a context type).
#[allow(clippy::too_many_arguments)]
pub fn restore_all(
    files: &[OpenFile],
    holders: &[Option<&crate::creds::Creds>],
    pipes: &[pipe::PipeImage],
    image: &ImageReader,
    shared: &SharedObjects,
    base: RawFd,
    uevent_net: Option<&crate::uevent::proxy::SessionNet>,
    sys: &crate::devices::SysRoots,
) -> Result<RestoredFiles> {
    // A FIFO is opened as the first saved process holding one of its ends.
    let mut pipe_holders: Vec<Option<&crate::creds::Creds>> = vec![None; pipes.len()];
    for (f, holder) in files.iter().zip(holders) {
        if let (FileKind::Pipe(end), Some(h)) = (&f.kind, holder) {
            if let Some(slot) = pipe_holders.get_mut(end.pipe) {
                slot.get_or_insert(h);
            }
        }
    }
    let mut pipe_ends = pipe::PipeEnds::create(pipes, &pipe_holders, image)?;
    let mut unix_ends = unix::UnixEnds::default();
    let unix_by_ino: HashMap<u64, &unix::UnixSocket> = files
        .iter()
        .filter_map(|f| match &f.kind {
            FileKind::UnixSocket(u) => Some((u.ino, u)),
            _ => None,
        })
        .collect();
    let peer_of = |ino: u64| unix_by_ino.get(&ino).map(|u| (*u).clone());
    let client_of = |ino: u64| {
        unix_by_ino
            .get(&ino)
            .filter(|u| matches!(u.peer, unix::Peer::Pending { .. }))
            .map(|u| (*u).clone())
    };
    let mut ptys = pty::PtyPairs::default();
    let pty_end = |index: u32, master: bool| {
        files.iter().find_map(|f| match &f.kind {
            FileKind::Pty(p) if p.index == index && p.master == master => Some(p.clone()),
            _ => None,
        })
    };
    let mut out = Vec::with_capacity(files.len());
    let mut reattached = Vec::new();
    for (i, f) in files.iter().enumerate() {
        // Opened, bound or created as the saved process that holds it:
        // with its filesystem identity, never the restorer's.
        let mut open = || -> Result<OwnedFd> {
            Ok(match &f.kind {
                FileKind::Regular(r) => r.restore(f.flags, image)?,
                FileKind::Memfd(m) => m.restore(f.flags, shared)?,
                FileKind::Directory { path } => regular::open_as(
                    path,
                    (f.flags as i32) | libc::O_DIRECTORY,
                    libc::S_IFDIR,
                    |_| Ok(()),
                )?,
                FileKind::Pipe(end) => pipe_ends.open(end, f.flags)?,
                FileKind::CharDevice(c) => c.restore(f.flags)?,
                FileKind::Detached(d) => d.restore()?,
                FileKind::Reattached(r) => match r.restore(f.flags, sys)? {
                    crate::devices::reattach::Reopened::Live(fd) => {
                        reattached.push(i);
                        fd
                    }
                    crate::devices::reattach::Reopened::StandIn(fd) => fd,
                },
                FileKind::EventFd(e) => e.restore(f.flags)?,
                FileKind::TimerFd(t) => t.restore(f.flags)?,
                FileKind::SignalFd(sfd) => sfd.restore(f.flags)?,
                FileKind::Epoll(e) => {
                    let fd = e.restore()?;
                    status_flags_as_saved(&fd, f.flags)?;
                    fd
                }
                FileKind::UnixSocket(u) => {
                    let fd = unix_ends.open(u, &peer_of, &client_of, image)?;
                    status_flags_as_saved(&fd, f.flags)?;
                    fd
                }
                FileKind::Pty(p) => ptys.open(p, f.flags, &pty_end, image)?,
                FileKind::DevTty(t) => t.restore(f.flags)?,
                FileKind::Inotify(i) => i.restore(f.flags)?,
                FileKind::Netlink(n) => n.restore(f.flags, uevent_net)?,
                FileKind::Inet(i) => i.restore(f.flags)?,
                FileKind::Pidfd(p) => p.restore(f.flags)?,
                FileKind::ServiceFile(sf) => sf.restore().map_err(|e| FileError::Create {
                    what: "making the stand-in of a service's file",
                    source: io::Error::other(e.to_string()),
                })?,
            })
        };
        let fd = match holders.get(i).copied().flatten() {
            Some(creds) => crate::creds::with_fs_identity(creds, open).map_err(|source| {
                FileError::Create {
                    what: "taking the filesystem identity of the file's saved holder",
                    source,
                }
            })??,
            None => open()?,
        };
        out.push(move_above(fd, base)?);
    }
    Ok(RestoredFiles {
        fds: out,
        reattached,
    })
}

/// Re-number `fd` to the lowest free number at or above `base`.
fn move_above(fd: OwnedFd, base: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an open fd returns a new fd or -1.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, base) };
    if r < 0 {
        return Err(FileError::Create {
            what: "moving a restored fd above the target fd range",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Set a fd's status flags (O_NONBLOCK, O_APPEND...) as saved.
/// Objects created by a syscall (sockets, epoll) start blocking: give them
/// the saved `O_NONBLOCK` (the only status flag they keep).
fn status_flags_as_saved(fd: &OwnedFd, flags: u32) -> Result<()> {
    set_status_flags(fd, flags & libc::O_NONBLOCK as u32).map_err(|source| FileError::Create {
        what: "setting the saved O_NONBLOCK",
        source,
    })
}

fn set_status_flags(fd: &OwnedFd, flags: u32) -> io::Result<()> {
    // SAFETY: F_SETFL on an open fd with an integer argument.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags as libc::c_int) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
