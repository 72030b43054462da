//! Open files: the fd table of each process and the open file descriptions
//! (OFDs) behind it.
//!
//! At checkpoint every fd is fetched into the checkpointer with
//! `pidfd_getfd` (the same OFD: offsets and flags shared), classified by
//! kind, and fds that share one OFD (inherited across fork, dup'ed) are
//! found with `kcmp` so that restore opens the OFD once and hands it to
//! every holder.
//!
//! Bottom-up: `error`, then `kind` (the [`kind::FdKind`] trait every kind
//! implements), the kind modules (each the record saved in the image with
//! both directions), `table` (the list of kinds, from which [`FileKind`]
//! and its dispatch are made), and here the fd tables of the processes.

pub mod chardev;
pub mod directory;
pub mod epoll;
pub mod error;
pub mod eventfd;
pub mod fsnode;
pub mod inet;
pub mod inotify;
pub mod kind;
pub mod memfd;
pub mod netlink;
pub mod pidfd;
pub mod pipe;
pub mod pty;
pub mod regular;
pub mod service_file;
pub mod signalfd;
pub mod sockopt;
pub mod table;
pub mod timerfd;
pub mod unix;

pub use error::{FileError, Refusal};
pub use table::FileKind;

use crate::image::{ImageReader, ImageWriter};
use crate::memory::shmem::{SharedObjects, ShmemTable};
use crate::policy::{Policy, Report, Subject};
use crate::procfs::{FdInfo, ProcDir};
use crate::sys::fd::{dup_above, fstat, pidfd_getfd, pidfd_open, same_ofd};
use crate::sys::wrap::WrapIoResult;
use error::{Result, Unsaved};
use kind::{Collecting, Probe, Restoring};
use serde::{Deserialize, Serialize};
use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;

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

/// The open files of the whole task set, built at checkpoint.
#[derive(Debug, Default)]
pub struct FileTable {
    pub files: Vec<OpenFile>,
    /// What each kind keeps across the fds it meets (the pipes met…).
    seen: table::Seen,
    /// Our copy of each OFD, to compare and to read data through.
    held: Vec<OwnedFd>,
    by_inode: HashMap<(u64, u64), Vec<usize>>,
    /// (pid, fd, file index) of every fd saved.
    holders: Vec<(i32, i32, usize)>,
    /// `lock:` lines of the fdinfo of the process last collected:
    /// (fd, file index, line).
    pub lock_lines: Vec<(i32, usize, String)>,
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
        let pidfd = pidfd_open(pid).on_fd(pid, -1, "pidfd_open")?;
        let stat = dir.stat()?;
        if stat.session == pid {
            self.leaders.insert(pid);
        }
        self.lock_lines.clear();
        let fd_numbers = dir.fds()?;
        let holder = Holder {
            pid,
            x_primary: self.primary_card(pid, &stat.comm, &fd_numbers),
            pidfd,
            // Socket files and FIFOs are looked at as their holder would.
            creds: dir
                .status()
                .ok()
                .map(|s| crate::creds::Creds::from_status(&s)),
            tty_nr: stat.tty_nr,
            session: stat.session,
            dir,
            left_out_mounts: self
                .left_out_mounts
                .iter()
                .map(|m| m.path.clone())
                .collect(),
        };
        let mut fds = Vec::new();
        for fd in fd_numbers {
            fds.extend(self.collect_fd(&holder, fd, shmem, report)?);
        }
        Ok(fds)
    }

    /// Classify fd `fd` of `holder`: None when it is refused (reported).
    fn collect_fd(
        &mut self,
        holder: &Holder,
        fd: i32,
        shmem: &mut ShmemTable,
        report: &mut Report,
    ) -> Result<Option<FdImage>> {
        let pid = holder.pid;
        let info = holder.dir.fdinfo(fd)?;
        let target = holder.dir.fd_target(fd)?;
        if let Some(mount) = self
            .left_out_mounts
            .iter()
            .find(|m| target.starts_with(&m.path))
        {
            let file = service_file::ServiceFile::record(&target, &info, mount);
            return self.collect_service_file(holder, fd, &info, file, report);
        }
        let local = pidfd_getfd(&holder.pidfd, fd).on_fd(pid, fd, "pidfd_getfd")?;
        let st = fstat(&local).on_fd(pid, fd, "fstat")?;
        let flags = info.flags & !(libc::O_CLOEXEC as u32);
        let key = (st.st_dev, st.st_ino);
        // An OFD already met (fork, dup, SCM_RIGHTS): reuse it.
        let i = match self.saved_ofd(key, &local) {
            Some(i) => {
                let f = &self.files[i];
                report.add(
                    pid,
                    Subject::Fd { fd },
                    f.kind.describe(),
                    f.kind.policy(),
                    "shares an open file description already saved",
                );
                i
            }
            None => {
                let name = target.to_string_lossy().into_owned();
                let probe = Probe {
                    pid,
                    fd,
                    file: &local,
                    target: &target,
                    name: &name,
                    info: &info,
                    stat: &st,
                    flags,
                    creds: holder.creds.as_ref(),
                    tty_nr: holder.tty_nr,
                    session: holder.session,
                    devices: &self.devices,
                    x_primary: holder.x_primary,
                    family: OnceCell::new(),
                    device: OnceCell::new(),
                };
                let mut cx = Collecting {
                    shmem,
                    left_out_mounts: &holder.left_out_mounts,
                };
                let Some(kind) = save_or_refuse(&probe, &mut self.seen, &mut cx, report)? else {
                    return Ok(None);
                };
                self.push_file(OpenFile { flags, kind }, local, key)
            }
        };
        self.holders.push((pid, fd, i));
        self.lock_lines.extend(
            info.extra
                .iter()
                .filter(|(k, _)| k == "lock")
                .map(|(_, v)| (fd, i, v.clone())),
        );
        Ok(Some(FdImage {
            fd,
            cloexec: info.flags & libc::O_CLOEXEC as u32 != 0,
            file: i,
        }))
    }

    /// The index of the saved file whose open file description `local`
    /// is, among those of inode `key`.
    fn saved_ofd(&self, key: (u64, u64), local: &OwnedFd) -> Option<usize> {
        self.by_inode
            .get(&key)
            .and_then(|c| c.iter().find(|&&i| same_ofd(&self.held[i], local)))
            .copied()
    }

    /// Save a new open file description; its index.
    fn push_file(&mut self, file: OpenFile, local: OwnedFd, key: (u64, u64)) -> usize {
        let i = self.files.len();
        self.files.push(file);
        self.held.push(local);
        self.by_inode.entry(key).or_default().push(i);
        i
    }

    /// Adds a file of a left-out service's mount, sharing the open file
    /// description already saved when another fd holds it (pidfd_getfd
    /// and kcmp do not reach into the file system).
    /// Recorded from /proc alone: root may not look into the mount. A lock
    /// on it could not be taken again.
    fn collect_service_file(
        &mut self,
        holder: &Holder,
        fd: i32,
        info: &FdInfo,
        file: service_file::ServiceFile,
        report: &mut Report,
    ) -> Result<Option<FdImage>> {
        let pid = holder.pid;
        if info.extra.iter().any(|(k, _)| k == "lock") {
            report.add(
                pid,
                Subject::Fd { fd },
                format!("file {} of a left-out FUSE server", file.path.display()),
                Policy::Refuse,
                "it holds a lock, which a reopen by path cannot take again",
            );
            return Ok(None);
        }
        let local = pidfd_getfd(&holder.pidfd, fd).on_fd(pid, fd, "pidfd_getfd")?;
        let flags = info.flags & !(libc::O_CLOEXEC as u32);
        // No fstat (it would ask the server): all such files share a key.
        let key = (u64::MAX, info.ino);
        let i = match self.saved_ofd(key, &local) {
            Some(i) => i,
            None => self.push_file(
                OpenFile {
                    flags,
                    kind: FileKind::ServiceFile(file),
                },
                local,
                key,
            ),
        };
        let FileKind::ServiceFile(f) = &self.files[i].kind else {
            unreachable!("index {i} was found or pushed as a service file");
        };
        report.add(
            pid,
            Subject::Fd { fd },
            kind::FdKind::describe(f),
            Policy::Reopen,
            f.what_happens(),
        );
        self.holders.push((pid, fd, i));
        Ok(Some(FdImage {
            fd,
            cloexec: info.flags & libc::O_CLOEXEC as u32 != 0,
            file: i,
        }))
    }

    /// The device number of the primary DRM card `pid` holds when the
    /// session layer asked for it (the automatic Reattach rule for its X
    /// servers), from a look at its fds' device numbers before they are
    /// classified.
    fn primary_card(&self, pid: i32, comm: &str, fds: &[i32]) -> Option<(u32, u32)> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if !self.devices.reattach_primary_of.contains(&pid) {
            return None;
        }
        let devnums: Vec<(u32, u32)> = fds
            .iter()
            .filter_map(|fd| std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok())
            .filter(|m| m.file_type().is_char_device())
            .map(|m| (libc::major(m.rdev()), libc::minor(m.rdev())))
            .collect();
        let card = crate::devices::reattach::primary_of(&self.devices.roots, &devnums)?;
        tracing::debug!(pid, comm, devname = %card.devname, boot_vga = ?card.boot_vga, "the primary DRM card to reattach");
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
        self.seen.pipe.report_external(report);
        self.classify_pidfds(saved, report);
        let ends = self.classify_lone_pty_ends(report);
        self.classify_dev_tty(&ends, report);
        self.classify_unix_peers(report);
    }

    /// A pty needs its master: a slave alone is a terminal outside the
    /// set (the one hiber runs in, say); a master alone hangs up. The
    /// ends (index, master) of the saved ptys.
    fn classify_lone_pty_ends(&mut self, report: &mut Report) -> HashSet<(u32, bool)> {
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
        ends
    }

    /// A unix socket whose peer no saved process holds is Reset; a client
    /// waiting in a saved listener's queue is noted as pending there.
    fn classify_unix_peers(&mut self, report: &mut Report) {
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
                FileKind::Pipe(end) => self.seen.pipe.dump(end.pipe, held, writer)?,
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

    /// The pipes met, for the image (`Snapshot::pipes`).
    pub fn take_pipes(&mut self) -> Vec<pipe::PipeImage> {
        std::mem::take(&mut self.seen.pipe.pipes)
    }

    /// Put back what the dump read out of live objects (pty queues), while
    /// the processes are still frozen (dropping the table does it too).
    pub fn put_back(&mut self) {
        self.taken.put_back();
    }
}

/// What [`FileTable::collect`] knows of the process whose fds it reads.
struct Holder {
    pid: i32,
    pidfd: OwnedFd,
    dir: ProcDir,
    creds: Option<crate::creds::Creds>,
    /// Its controlling terminal and session (`/proc/PID/stat`).
    tty_nr: i32,
    session: i32,
    /// Its primary DRM card, when the session layer asked for it.
    x_primary: Option<(u32, u32)>,
    left_out_mounts: Vec<PathBuf>,
}

/// The kind `fd` is saved as, reported with why; None when it is refused
/// (reported too). Err stops the checkpoint.
fn save_or_refuse(
    fd: &Probe<'_>,
    seen: &mut table::Seen,
    cx: &mut Collecting<'_>,
    report: &mut Report,
) -> Result<Option<FileKind>> {
    let subject = Subject::Fd { fd: fd.fd };
    let refusal = match table::checkpoint(fd, seen, cx) {
        Some(Ok((kind, reason))) => {
            report.add(fd.pid, subject, kind.describe(), kind.policy(), reason);
            return Ok(Some(kind));
        }
        Some(Err(Unsaved::Failed(e))) => return Err(e),
        Some(Err(Unsaved::Refused(r))) => r,
        None => table::unclaimed(fd),
    };
    let what = refusal.what.unwrap_or_else(|| fd.name.to_string());
    if refusal.transient {
        report.refuse_for_now(fd.pid, subject, what, refusal.reason);
    } else {
        report.add(fd.pid, subject, what, Policy::Refuse, refusal.reason);
    }
    Ok(None)
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
    // The pipes are the one kind with a section of the image of their own
    // (`Snapshot::pipes`): made here, all at once.
    // A FIFO is opened as the first saved process holding one of its ends.
    let mut pipe_holders: Vec<Option<&crate::creds::Creds>> = vec![None; pipes.len()];
    for (f, holder) in files.iter().zip(holders) {
        if let (FileKind::Pipe(end), Some(h)) = (&f.kind, holder) {
            if let Some(slot) = pipe_holders.get_mut(end.pipe) {
                slot.get_or_insert(h);
            }
        }
    }
    let pipe_ends = pipe::PipeEnds::create(pipes, &pipe_holders, image)?;
    let cx = Restoring {
        image,
        shared,
        uevent_net,
        sys,
    };
    let mut opening = table::Opening::new(files.iter().map(|f| &f.kind), &cx)?;
    opening.pipe = pipe_ends;
    let mut out = Vec::with_capacity(files.len());
    let mut reattached = Vec::new();
    for (i, f) in files.iter().enumerate() {
        // Opened, bound or created as the saved process that holds it:
        // with its filesystem identity, never the restorer's.
        let mut open = || opening.restore(&f.kind, f.flags, &cx);
        let opened = match holders.get(i).copied().flatten() {
            Some(creds) => crate::creds::with_fs_identity(creds, open)
                .doing("taking the filesystem identity of the file's saved holder")??,
            None => open()?,
        };
        if opened.live_device {
            reattached.push(i);
        }
        let fd =
            dup_above(&opened.fd, base).doing("moving a restored fd above the target fd range")?;
        out.push(fd);
    }
    Ok(RestoredFiles {
        fds: out,
        reattached,
    })
}
