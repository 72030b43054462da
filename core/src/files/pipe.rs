//! Pipes and FIFOs, with the bytes queued in them.
//!
//! Queued data is read without consuming it: a fresh read end is opened on
//! the same pipe through /proc and `tee`d into a pipe of ours. A pipe whose
//! other end no saved process holds is Reset: restored with that end closed,
//! so the reader sees end-of-file after the saved data, and a writer EPIPE.

use super::error::{FileError, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::image::{ChunkRef, ImageReader, ImageWriter};
use crate::policy::{Policy, Report, Subject};
use crate::sys::fd::set_status_flags;
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Bound on queued bytes per pipe (the kernel caps unprivileged pipes at 1 MiB).
pub const MAX_PIPE_DATA: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeEnd {
    /// Index into `Snapshot::pipes`.
    pub pipe: usize,
    pub read: bool,
    pub write: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeImage {
    pub inode: u64,
    /// The FIFO's path, for named pipes.
    pub fifo: Option<PathBuf>,
    /// The FIFO's owner, group and mode, and its directory's, as the
    /// checkpoint found them: a FIFO gone by the restore is made again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<super::fsnode::SavedNode>,
    pub size: u32,
    pub data_len: u64,
    pub data: Vec<ChunkRef>,
}

/// Pipes met at checkpoint.
#[derive(Debug, Default)]
pub struct PipeTable {
    pub pipes: Vec<PipeImage>,
    index: HashMap<(u64, u64), usize>,
    holders: Vec<(i32, i32, PipeEnd)>,
    dumped: Vec<bool>,
}

fn pipe_size(fd: &OwnedFd) -> u32 {
    match crate::sys::fd::pipe_size(fd) {
        Ok(r) if r > 0 => r as u32,
        _ => 65536,
    }
}

fn reopen(fd: &OwnedFd, flags: i32) -> io::Result<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("no NUL in a /proc path");
    crate::sys::fs::open(&path, flags | libc::O_CLOEXEC, 0)
}

impl PipeTable {
    /// Save fd `fd` of process `pid` (`holder`: both).
    pub(super) fn checkpoint(
        &mut self,
        holder: (i32, i32),
        target: &Path,
        local: &OwnedFd,
        flags: u32,
        st: &libc::stat,
        creds: Option<&crate::creds::Creds>,
    ) -> PipeEnd {
        let (pid, fd) = holder;
        let key = (st.st_dev, st.st_ino);
        // A FIFO removed while open has no name left: nobody can open it
        // again, so it is a plain pipe between its holders.
        let fifo = (!target.to_string_lossy().starts_with("pipe:[") && st.st_nlink > 0)
            .then(|| target.to_path_buf());
        let pipe = *self.index.entry(key).or_insert_with(|| {
            // The FIFO's fstat is its file's: its owner and mode are
            // saved from it, and its directory's as its holder sees it.
            let node = fifo.as_deref().and_then(|path| {
                super::fsnode::inspect(pid, creds, path, |x| {
                    x.st_ino == st.st_ino && x.st_dev == st.st_dev
                })
            });
            self.pipes.push(PipeImage {
                inode: st.st_ino,
                fifo,
                node,
                size: pipe_size(local),
                data_len: 0,
                data: Vec::new(),
            });
            self.dumped.push(false);
            self.pipes.len() - 1
        });
        let acc = flags as i32 & libc::O_ACCMODE;
        let end = PipeEnd {
            pipe,
            read: acc != libc::O_WRONLY,
            write: acc != libc::O_RDONLY,
        };
        self.holders.push((pid, fd, end));
        end
    }

    pub(super) fn reason(&self, end: &PipeEnd) -> String {
        match &self.pipes[end.pipe].fifo {
            Some(p) => format!("FIFO {}: queued data saved", p.display()),
            None => "queued data saved".into(),
        }
    }

    /// Mark pipes with an end outside the set as Reset.
    pub(super) fn report_external(&self, report: &mut Report) {
        for (i, p) in self.pipes.iter().enumerate() {
            let ends = self.holders.iter().filter(|h| h.2.pipe == i);
            let readers = ends.clone().any(|h| h.2.read);
            let writers = ends.clone().any(|h| h.2.write);
            // A FIFO can be opened again by path, so its peers may come back.
            if (readers && writers) || p.fifo.is_some() {
                continue;
            }
            let missing = if readers { "write" } else { "read" };
            for &(pid, fd, _) in ends {
                if let Some(f) = report
                    .findings
                    .iter_mut()
                    .find(|f| f.pid == pid && f.subject == Subject::Fd { fd })
                {
                    f.policy = Policy::Reset;
                    f.reason = format!(
                        "the {missing} end is outside the saved set: restored closed (the program sees {})",
                        if readers { "end-of-file after the queued data" } else { "EPIPE" }
                    );
                }
            }
        }
    }

    /// Save the queued bytes of pipe `i`, once, reading through `held`.
    pub(super) fn dump(
        &mut self,
        i: usize,
        held: &OwnedFd,
        writer: &ImageWriter,
    ) -> Result<(), FileError> {
        if self.dumped[i] {
            return Ok(());
        }
        self.dumped[i] = true;
        let reader = reopen(held, libc::O_RDONLY | libc::O_NONBLOCK)
            .doing("opening a pipe to peek at its data")?;
        let (ours_r, ours_w) = crate::sys::pipe::pipe().doing("creating a pipe")?;
        let size = self.pipes[i].size.max(65536);
        // Best effort, as at restore (see `refill`).
        let _ = crate::sys::fd::set_pipe_size(&ours_w, size as usize);
        let n: i64 =
            match crate::sys::pipe::tee_nonblocking(&reader, &ours_w, MAX_PIPE_DATA as usize) {
                Ok(n) => n as i64,
                Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => -1,
                Err(err) => Err(err).doing("copying pipe data with tee")?,
            };
        let queued = crate::sys::fd::queued_bytes(reader.as_raw_fd()).unwrap_or(0);
        if i64::from(queued) > n.max(0) {
            // Never save part of a pipe's data silently.
            return Err(FileError::Create {
                what: "copying pipe data: the pipe holds more than could be copied",
                source: io::Error::other(format!("{queued} bytes queued, {n} copied")),
            });
        }
        drop(ours_w);
        let mut data = Vec::new();
        std::fs::File::from(ours_r)
            .read_to_end(&mut data)
            .doing("reading copied pipe data")?;
        let p = &mut self.pipes[i];
        p.data_len = data.len() as u64;
        if !data.is_empty() {
            // Chunks are bounded in size; a full pipe may hold more.
            for piece in data.chunks(1 << 20) {
                p.data.push(writer.put_chunk(piece)?);
            }
        }
        Ok(())
    }
}

/// Put pipe `i`'s saved data back through its write end `w`, never
/// blocking: the write end is non-blocking meanwhile (its holders get
/// their own flags when it is handed out), and data that does not fit is
/// an error naming the pipe, not a restore stuck on a full pipe.
fn refill(i: usize, p: &PipeImage, w: &OwnedFd, image: &ImageReader) -> Result<(), FileError> {
    let err = |what: &'static str| {
        move |source: io::Error| FileError::Pipe {
            index: i,
            what,
            source,
        }
    };
    // Best effort: above 1 MiB needs CAP_SYS_RESOURCE; the data may fit anyway.
    let capacity = crate::sys::fd::set_pipe_size(w, p.size as usize);
    if p.data.is_empty() {
        return Ok(());
    }
    let capacity = match capacity {
        Ok(c) if c > 0 => c as u64,
        _ => crate::sys::fd::pipe_size(w).unwrap_or(0) as u64,
    };
    if p.data_len > capacity {
        return Err(err("its saved data does not fit its capacity")(
            io::Error::other(format!("{} bytes into {capacity}", p.data_len)),
        ));
    }
    set_status_flags(w, libc::O_NONBLOCK as u32)
        .map_err(err("making the write end non-blocking"))?;
    let mut file = std::fs::File::from(w.try_clone().map_err(err("duplicating a pipe fd"))?);
    let mut buf = Vec::new();
    let mut written = 0u64;
    for c in &p.data {
        image.read_chunk(c, &mut buf)?;
        written += buf.len() as u64;
        if written > p.data_len {
            return Err(err("its saved data is longer than data_len")(
                io::Error::other(format!("more than {} bytes", p.data_len)),
            ));
        }
        // A full pipe answers EAGAIN (an error), never blocks.
        file.write_all(&buf)
            .map_err(err("refilling it with its saved data"))?;
    }
    Ok(())
}

/// Open FIFO `path` of pipe `p` read-write, making it again (with its
/// saved owner, group and mode, in its directory, made again if gone: see
/// `fsnode`) when it is gone. O_RDWR never blocks on a FIFO; it keeps the
/// FIFO open while the program's own ends are opened. Only a FIFO: the
/// path may name something else by now.
fn open_fifo(path: &Path, p: &PipeImage) -> Result<OwnedFd, FileError> {
    let open = || {
        super::regular::open_as(path, libc::O_RDWR | libc::O_NONBLOCK, libc::S_IFIFO, |_| {
            Ok(())
        })
    };
    match open() {
        Err(FileError::Path { source, .. })
            if source.raw_os_error() == Some(libc::ENOENT) && p.node.is_some() =>
        {
            make_fifo(path, p.node.as_ref().expect("just checked"))?;
            open()
        }
        r => r,
    }
}

/// Make FIFO `path` again as saved; one that was not at its path at save
/// time is not made (its open then fails, naming the path).
fn make_fifo(path: &Path, saved: &super::fsnode::SavedNode) -> Result<(), FileError> {
    use super::fsnode;
    let Some(owner) = &saved.node else {
        return Err(FileError::NotMade {
            path: path.to_path_buf(),
            reason: "the FIFO was not at its path at save time".into(),
        });
    };
    fsnode::in_private_fs(|| {
        let (dir, leaf) = fsnode::directory_of(path, saved.dir.as_ref())?;
        fsnode::set_umask(0);
        match rustix::fs::mknodat(
            &dir,
            &leaf,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(owner.mode & 0o777),
            0,
        ) {
            Ok(()) => {
                fsnode::set_owner(&dir, &leaf, path, owner);
                tracing::info!(path = %path.display(), uid = owner.uid, gid = owner.gid, mode = owner.mode, "made a FIFO gone since the save again");
                Ok(())
            }
            // Made meanwhile by someone else: opened as it is.
            Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(FileError::Path {
                op: "making the FIFO again",
                path: path.to_path_buf(),
                source: io::Error::from_raw_os_error(e.raw_os_error()),
            }),
        }
    })
}

/// The pipes of an image, recreated in the restorer with their data.
#[derive(Debug)]
pub struct PipeEnds {
    /// Per pipe: (read end, write end) first handed out, then reopened.
    ends: Vec<(OwnedFd, OwnedFd, bool, bool)>,
}

impl PipeEnds {
    /// Make every pipe; a FIFO is opened (or made again) with the
    /// filesystem identity of the first saved process holding it
    /// (`holders`, by pipe).
    pub fn create(
        pipes: &[PipeImage],
        holders: &[Option<&crate::creds::Creds>],
        image: &ImageReader,
    ) -> Result<Self, FileError> {
        let mut ends = Vec::with_capacity(pipes.len());
        for (i, p) in pipes.iter().enumerate() {
            let (r, w) = match &p.fifo {
                Some(path) => {
                    let open = || match holders.get(i).copied().flatten() {
                        Some(creds) => crate::creds::with_fs_identity(creds, || open_fifo(path, p))
                            .doing("taking the filesystem identity of the FIFO's saved holder")?,
                        None => open_fifo(path, p),
                    };
                    let anchor = open()?;
                    let r = reopen(&anchor, libc::O_RDONLY | libc::O_NONBLOCK)
                        .at_path("opening FIFO", path)?;
                    (r, anchor)
                }
                None => crate::sys::pipe::pipe().doing("creating a pipe")?,
            };
            refill(i, p, &w, image)?;
            ends.push((r, w, false, false));
        }
        Ok(Self { ends })
    }

    pub fn open(&mut self, end: &PipeEnd, flags: u32) -> Result<OwnedFd, FileError> {
        let Some(slot) = self.ends.get_mut(end.pipe) else {
            return Err(FileError::BadReference {
                what: "pipe",
                index: end.pipe,
            });
        };
        let acc = flags as i32 & libc::O_ACCMODE;
        let fd = if acc == libc::O_RDWR {
            reopen(&slot.1, libc::O_RDWR).doing("opening a pipe end")?
        } else if end.write {
            if slot.3 {
                reopen(&slot.1, libc::O_WRONLY | libc::O_NONBLOCK).doing("opening a pipe end")?
            } else {
                slot.3 = true;
                slot.1.try_clone().doing("opening a pipe end")?
            }
        } else if slot.2 {
            reopen(&slot.0, libc::O_RDONLY | libc::O_NONBLOCK).doing("opening a pipe end")?
        } else {
            slot.2 = true;
            slot.0.try_clone().doing("opening a pipe end")?
        };
        set_status_flags(&fd, flags & !(libc::O_ACCMODE as u32)).doing("opening a pipe end")?;
        Ok(fd)
    }
}

impl FdKind for PipeEnd {
    type Seen = PipeTable;
    /// Made by `files::restore_all` from the image's pipes
    /// (`Snapshot::pipes`), which no file record holds.
    type Opening = PipeEnds;

    fn describe(&self) -> String {
        let end = match (self.read, self.write) {
            (true, true) => "read/write end",
            (true, false) => "read end",
            _ => "write end",
        };
        format!("pipe #{} {end}", self.pipe)
    }

    fn reason(&self, _: &Probe<'_>, pipes: &PipeTable) -> String {
        pipes.reason(self)
    }

    fn claims(fd: &Probe<'_>) -> bool {
        fd.file_type() == libc::S_IFIFO
    }

    fn checkpoint(
        fd: &Probe<'_>,
        pipes: &mut PipeTable,
        _: &mut Collecting<'_>,
    ) -> Result<Self, Unsaved> {
        Ok(pipes.checkpoint(
            (fd.pid, fd.fd),
            fd.target,
            fd.file,
            fd.flags,
            fd.stat,
            fd.creds,
        ))
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<PipeEnds> {
        Ok(PipeEnds { ends: Vec::new() })
    }

    fn restore(&self, flags: u32, ends: &mut PipeEnds, _: &Restoring<'_>) -> FileResult<Opened> {
        ends.open(self, flags).map(Opened::from)
    }
}
