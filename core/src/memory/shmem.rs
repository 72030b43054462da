//! Shared memory objects: memory that several mappings or fds see as one.
//!
//! Four kinds, one table: shared anonymous memory (`MAP_SHARED |
//! MAP_ANONYMOUS`, `/dev/zero`, SysV segments already removed with
//! `IPC_RMID`), memfds (name, size, contents and seals), SysV segments
//! that still have their id (the X server's MIT-SHM buffers before the
//! client removes them), and files deleted while mapped (a library
//! replaced by an upgrade, an unlinked temporary file), whose contents
//! exist nowhere else.
//!
//! Checkpoint groups every mapping and fd of one object by (device, inode)
//! and reads its contents once, through `/proc/PID/map_files` or the fd the
//! checkpointer holds. Restore creates each object before the tree: a memfd
//! (named as before for a memfd), or for a SysV segment the same id through
//! `/proc/sys/kernel/shm_next_id`. A SysV id already in use is refused,
//! except when it holds the leftover of the saved segment itself (same key
//! and size, nobody attached: what `checkpoint --stop` leaves behind), which
//! is taken over. Seals go on last, once every mapping exists, because a
//! write seal forbids the writable mappings a program made before sealing.

use super::pages::{self, MemoryError, PageChunk, PendingChunk, PAGE_SIZE};
use crate::image::{ImageError, ImageReader};
use crate::policy::{Policy, Report, Subject};
use crate::procfs::MapsEntry;
use crate::sys::shm;
use crate::sys::wrap::PathIo;
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum ShmemError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("SysV shared memory id {id} is taken by another segment (key {key:#x}, {size} bytes, {attached} attachments): the image's segment needs that id")]
    SysvIdTaken {
        id: i32,
        key: i32,
        size: u64,
        attached: u64,
    },
    #[error("SysV shared memory key {key:#x} already names another segment: the image's segment {id} needs it")]
    SysvKeyTaken { id: i32, key: i32 },
    #[error("SysV shared memory segment {id}: {what}")]
    Sysv {
        id: i32,
        what: &'static str,
        source: io::Error,
    },
}

impl From<PathIo> for ShmemError {
    fn from(e: PathIo) -> Self {
        ShmemError::Io {
            what: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

type Result<T> = std::result::Result<T, ShmemError>;

/// What kind of object this is, and what it carries besides its pages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ShmemKind {
    /// Shared anonymous memory, or a SysV segment already removed.
    #[default]
    Anonymous,
    /// A memfd: its name (as given to `memfd_create`) and `F_GET_SEALS`.
    Memfd { name: String, seals: u32 },
    /// A SysV segment that still has its id.
    Sysv(SysvSegment),
    /// A file deleted while mapped, by the path it had: recreated as a
    /// memfd named after it, which its mappings (shared or private) map.
    DeletedFile { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysvSegment {
    pub id: i32,
    pub key: i32,
    /// Permission bits (`shm_perm.mode & 0o777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// One shared memory object of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmemObject {
    /// (device, inode) of the object at checkpoint, to group its users.
    pub dev: (u32, u32),
    pub inode: u64,
    /// The object's size (the file's, not its mappings' extent).
    pub size: u64,
    #[serde(default)]
    pub kind: ShmemKind,
    pub pages: Vec<PageChunk>,
}

impl ShmemObject {
    pub fn describe(&self) -> String {
        match &self.kind {
            ShmemKind::Anonymous => "shared anon memory".into(),
            ShmemKind::Memfd { name, .. } => format!("memfd {name}"),
            ShmemKind::Sysv(s) => format!("SysV shared memory segment {} (key {:#x})", s.id, s.key),
            ShmemKind::DeletedFile { path } => format!("deleted file {}", path.display()),
        }
    }

    /// Seals whose presence forbids writable shared mappings made later.
    fn write_sealed(&self) -> bool {
        matches!(self.kind, ShmemKind::Memfd { seals, .. }
            if seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) as u32 != 0)
    }
}

/// Where to read an object's contents from at dump time.
#[derive(Debug)]
enum Source {
    Mapping { pid: i32, start: u64, end: u64 },
    Fd(OwnedFd),
}

/// Shared objects met while inspecting, by (device, inode).
#[derive(Debug, Default)]
pub struct ShmemTable {
    pub objects: Vec<ShmemObject>,
    sources: Vec<Source>,
    /// Mappings of each object in the saved set (SysV attachment count).
    mappings: Vec<u64>,
    index: BTreeMap<((u32, u32), u64), usize>,
}

/// One line of `/proc/sysvipc/shm`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SysvLine {
    key: i32,
    id: i32,
    mode: u32,
    size: u64,
    attached: u64,
    uid: u32,
    gid: u32,
}

const SHM_DEST: u32 = 0o1000;

fn sysv_segments() -> Vec<SysvLine> {
    let Ok(text) = std::fs::read_to_string("/proc/sysvipc/shm") else {
        return Vec::new();
    };
    text.lines().skip(1).filter_map(parse_sysv_line).collect()
}

/// `key shmid perms size cpid lpid nattch uid gid cuid cgid ...`
fn parse_sysv_line(line: &str) -> Option<SysvLine> {
    let f: Vec<&str> = line.split_whitespace().collect();
    Some(SysvLine {
        key: f.first()?.parse().ok()?,
        id: f.get(1)?.parse().ok()?,
        mode: u32::from_str_radix(f.get(2)?, 8).ok()?,
        size: f.get(3)?.parse().ok()?,
        attached: f.get(6)?.parse().ok()?,
        uid: f.get(7)?.parse().ok()?,
        gid: f.get(8)?.parse().ok()?,
    })
}

/// The live (not removed) SysV segment `id`, if any.
fn live_sysv(id: u64) -> Option<SysvLine> {
    sysv_segments()
        .into_iter()
        .find(|s| s.id as u64 == id && s.mode & SHM_DEST == 0)
}

impl ShmemTable {
    /// The object behind a shared mapping of shmem (`/dev/zero`, `/SYSV…`,
    /// `/memfd:…`); `name` is the mapping's path.
    pub(crate) fn of_mapping(&mut self, pid: i32, m: &MapsEntry, name: &str) -> usize {
        let i = self.mapped(pid, m);
        if self.objects[i].kind == ShmemKind::Anonymous {
            if let Some(memfd) = name.strip_prefix("/memfd:") {
                self.objects[i].kind = ShmemKind::Memfd {
                    name: memfd.to_string(),
                    seals: 0,
                };
            } else if name.starts_with("/SYSV") {
                // A SysV segment's inode is its id.
                if let Some(s) = live_sysv(m.inode) {
                    self.objects[i].kind = ShmemKind::Sysv(SysvSegment {
                        id: s.id,
                        key: s.key,
                        mode: s.mode & 0o777,
                        uid: s.uid,
                        gid: s.gid,
                    });
                }
            }
        }
        i
    }

    /// The file behind a mapping of a file since deleted (`path`, as it
    /// was named).
    pub(crate) fn of_deleted_file(
        &mut self,
        pid: i32,
        m: &MapsEntry,
        path: &std::path::Path,
    ) -> usize {
        let i = self.mapped(pid, m);
        self.objects[i].kind = ShmemKind::DeletedFile {
            path: path.to_path_buf(),
        };
        i
    }

    /// The object that mapping `m` of `pid` maps, counted as one more
    /// mapping of it; its contents are read through the first mapping met.
    fn mapped(&mut self, pid: i32, m: &MapsEntry) -> usize {
        let key = ((m.dev_major, m.dev_minor), m.inode);
        let i = self.entry(key, || Source::Mapping {
            pid,
            start: m.start,
            end: m.end,
        });
        self.mappings[i] += 1;
        i
    }

    /// The memfd behind an fd the checkpointer holds a copy of.
    pub(crate) fn of_memfd(&mut self, fd: OwnedFd, st: &libc::stat, name: &str) -> usize {
        let key = ((libc::major(st.st_dev), libc::minor(st.st_dev)), st.st_ino);
        let mut fd = Some(fd);
        let i = self.entry(key, || Source::Fd(fd.take().expect("called once")));
        // Reading through the fd beats a mapping: it sees the whole file.
        if let Some(fd) = fd {
            self.sources[i] = Source::Fd(fd);
        }
        self.objects[i].kind = ShmemKind::Memfd {
            name: name.to_string(),
            seals: 0,
        };
        i
    }

    fn entry(&mut self, key: ((u32, u32), u64), source: impl FnOnce() -> Source) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.objects.len();
        self.objects.push(ShmemObject {
            dev: key.0,
            inode: key.1,
            size: 0,
            kind: ShmemKind::Anonymous,
            pages: Vec::new(),
        });
        self.sources.push(source());
        self.mappings.push(0);
        self.index.insert(key, i);
        i
    }

    /// The files deleted while mapped, by (device number, inode): their
    /// fds in the set share the recreated object too (see
    /// `FileTable::share_deleted_with_mappings`).
    pub fn deleted_files(&self) -> impl Iterator<Item = (u64, u64, usize)> + '_ {
        self.objects
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o.kind, ShmemKind::DeletedFile { .. }))
            .map(|(i, o)| (libc::makedev(o.dev.0, o.dev.1), o.inode, i))
    }

    /// Tell the user about SysV segments that processes outside the set
    /// also have attached: their id stays taken while those run.
    pub fn report_outside_attachments(&self, report: &mut Report) {
        let segments = sysv_segments();
        for ((obj, source), &ours) in self.objects.iter().zip(&self.sources).zip(&self.mappings) {
            let ShmemKind::Sysv(seg) = &obj.kind else {
                continue;
            };
            let Source::Mapping { pid, start, end } = *source else {
                continue;
            };
            let attached = segments
                .iter()
                .find(|s| s.id == seg.id)
                .map_or(0, |s| s.attached);
            if attached > ours {
                report.add(
                    pid,
                    Subject::Mapping { start, end },
                    obj.describe(),
                    Policy::Restore,
                    format!("also attached {} times outside the saved set: restoring on this machine needs its id free (those processes ended or detached)", attached - ours),
                );
            }
        }
    }

    /// Read every object's size, seals and contents into `sink`. Returns,
    /// per object, the chunks submitted for it.
    pub fn dump(
        &mut self,
        sink: &mut crate::image::ChunkSink<'_>,
    ) -> std::result::Result<Vec<Vec<PendingChunk>>, MemoryError> {
        let mut out = Vec::with_capacity(self.objects.len());
        for (obj, source) in self.objects.iter_mut().zip(&self.sources) {
            let (file, path) = open_source(source)?;
            obj.size = file.metadata().at_path("reading", &path)?.size();
            if let ShmemKind::Memfd { seals, .. } = &mut obj.kind {
                *seals = crate::sys::fd::seals(&file).unwrap_or(0);
            }
            out.push(dump_contents(&file, &path, obj.size, sink)?);
        }
        Ok(out)
    }
}

fn open_source(source: &Source) -> std::result::Result<(File, PathBuf), MemoryError> {
    let path = match source {
        Source::Mapping { pid, start, end } => {
            PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
        }
        // A fresh read-only open: the program's own offset stays put.
        Source::Fd(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
    };
    let file = File::open(&path).at_path("reading", &path)?;
    Ok((file, path))
}

/// Non-zero pages of `file` up to `size`, in windows, into `sink`.
fn dump_contents(
    file: &File,
    path: &std::path::Path,
    size: u64,
    sink: &mut crate::image::ChunkSink<'_>,
) -> std::result::Result<Vec<PendingChunk>, MemoryError> {
    let window_bytes = PAGE_SIZE * pages::WINDOW_PAGES;
    let mut pending = Vec::new();
    let mut offset = 0;
    let mut buf = vec![0u8; window_bytes as usize];
    while offset < size {
        let len = (size - offset).min(window_bytes) as usize;
        let n = file
            .read_at(&mut buf[..len], offset)
            .at_path("reading", path)?;
        let mut bitmap = 0u64;
        let mut data = Vec::new();
        for (i, page) in buf[..n].chunks(PAGE_SIZE as usize).enumerate() {
            if !pages::is_zero(page) {
                bitmap |= 1 << i;
                data.extend_from_slice(page);
                data.resize(data.len().next_multiple_of(PAGE_SIZE as usize), 0);
            }
        }
        if bitmap != 0 {
            pending.push(PendingChunk {
                ticket: sink.submit(data, bitmap)?,
                addr: offset,
            });
        }
        if n < len {
            break;
        }
        offset += window_bytes;
    }
    Ok(pending)
}

/// How a restored task reaches a shared object to map it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapTarget {
    /// A path the task opens; `write_sealed`: open read-only for mappings
    /// that are not writable (a write seal forbids the others).
    File { path: PathBuf, write_sealed: bool },
    /// A SysV segment the task attaches with `shmat`.
    Sysv { id: i32, size: u64 },
}

#[derive(Debug)]
enum Created {
    File(OwnedFd),
    /// `made`: created by this restore (removed again if it fails), not
    /// the saved segment's own leftover.
    Sysv {
        id: i32,
        made: bool,
    },
    /// A SysV segment [`SharedObjects::create_sysv`] has not made yet.
    SysvLater,
}

/// The image's shared objects, created for a restore. Dropped before
/// `keep()`, it removes the SysV segments it made.
#[derive(Debug)]
pub struct SharedObjects {
    created: Vec<Created>,
    kept: bool,
}

/// linux/fcntl.h and linux/memfd.h (newer than the libc crate's tables).
const F_SEAL_EXEC: u32 = 0x20;
const MFD_NOEXEC_SEAL: u32 = 0x8;

fn memfd_create(name: &str, flags: u32) -> io::Result<OwnedFd> {
    let c =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    crate::sys::fs::memfd_with(&c, flags)
}

impl SharedObjects {
    /// Create every object of the image but its SysV segments, filled with
    /// its saved contents; [`SharedObjects::create_sysv`] makes those.
    pub fn create(objects: &[ShmemObject], image: &ImageReader) -> Result<Self> {
        let mut me = SharedObjects {
            created: Vec::with_capacity(objects.len()),
            kept: false,
        };
        for obj in objects {
            let created = match &obj.kind {
                ShmemKind::Sysv(_) => Created::SysvLater,
                ShmemKind::Anonymous => Created::File(create_memfd("hiber-shmem", 0, obj, image)?),
                ShmemKind::DeletedFile { path } => {
                    // memfd names are short; the file's own name is enough
                    // for whoever reads /proc/PID/maps.
                    let name: String = path
                        .file_name()
                        .map(|n| n.to_string_lossy().chars().take(200).collect())
                        .unwrap_or_else(|| "hiber-deleted".into());
                    Created::File(create_memfd(&name, 0, obj, image)?)
                }
                ShmemKind::Memfd { name, seals } => {
                    // Without MFD_ALLOW_SEALING a memfd reports F_SEAL_SEAL alone.
                    let mut flags = if *seals == libc::F_SEAL_SEAL as u32 {
                        0
                    } else {
                        libc::MFD_ALLOW_SEALING
                    };
                    // F_SEAL_EXEC is given at creation (MFD_NOEXEC_SEAL, or
                    // the vm.memfd_noexec default): added later, over a
                    // writable shared mapping, the kernel refuses it (EBUSY).
                    if seals & F_SEAL_EXEC != 0 {
                        flags |= MFD_NOEXEC_SEAL;
                    }
                    Created::File(create_memfd(name, flags, obj, image)?)
                }
            };
            me.created.push(created);
        }
        Ok(me)
    }

    /// Create the image's SysV segments, calling `made(id)` right after
    /// each segment this restore creates (not a leftover it takes over)
    /// exists, before it is filled. Apart because a segment outlives
    /// whoever made it: a restore makes them once something that survives
    /// its death is there to remove them (`made` tells it which).
    pub fn create_sysv(
        &mut self,
        objects: &[ShmemObject],
        image: &ImageReader,
        made: &dyn Fn(i32),
    ) -> Result<()> {
        for (obj, created) in objects.iter().zip(self.created.iter_mut()) {
            if let (ShmemKind::Sysv(seg), Created::SysvLater) = (&obj.kind, &*created) {
                *created = create_sysv(seg, obj, image, made)?;
            }
        }
        Ok(())
    }

    /// How the task `restorer_pid`'s children reach object `i`.
    pub fn target(&self, i: usize, restorer_pid: i32, objects: &[ShmemObject]) -> MapTarget {
        match &self.created[i] {
            Created::File(fd) => MapTarget::File {
                path: PathBuf::from(format!("/proc/{restorer_pid}/fd/{}", fd.as_raw_fd())),
                write_sealed: objects[i].write_sealed(),
            },
            Created::Sysv { id, .. } => MapTarget::Sysv {
                id: *id,
                size: objects[i].size,
            },
            Created::SysvLater => unreachable!("SysV segments are created before they are mapped"),
        }
    }

    /// The memfd of object `i`, to reopen for the fds that held it.
    pub fn file(&self, i: usize) -> Option<&OwnedFd> {
        match self.created.get(i)? {
            Created::File(fd) => Some(fd),
            Created::Sysv { .. } | Created::SysvLater => None,
        }
    }

    /// Put the memfds' seals on, once every mapping exists.
    pub fn seal(&self, objects: &[ShmemObject]) -> Result<()> {
        for (obj, created) in objects.iter().zip(&self.created) {
            let (ShmemKind::Memfd { name, seals }, Created::File(fd)) = (&obj.kind, created) else {
                continue;
            };
            let seal = libc::F_SEAL_SEAL as u32;
            if *seals == seal || *seals == 0 {
                continue;
            }
            // F_SEAL_SEAL last: it forbids adding the others. F_SEAL_EXEC
            // is there since the creation.
            for add in [*seals & !seal & !F_SEAL_EXEC, *seals & seal] {
                if add == 0 {
                    continue;
                }
                if let Err(source) = crate::sys::fd::add_seals(fd, add) {
                    return Err(ShmemError::Io {
                        what: "sealing",
                        path: PathBuf::from(format!("memfd:{name}")),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// The restore succeeded: the SysV segments stay.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for SharedObjects {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for c in &self.created {
            if let Created::Sysv { id, made: true } = c {
                debug!(id, "removing SysV segment of a failed restore");
                let _ = shm::remove(*id);
            }
        }
    }
}

fn create_memfd(name: &str, flags: u32, obj: &ShmemObject, image: &ImageReader) -> Result<OwnedFd> {
    let path = PathBuf::from(format!("memfd:{name}"));
    let fd = memfd_create(name, flags).at_path("creating", &path)?;
    let file = File::from(fd.try_clone().at_path("duplicating", &path)?);
    let mut buf = Vec::new();
    pages::fill_pages(-1, &obj.pages, image, &mut buf, |off, data| {
        Ok(file.write_all_at(data, off).at_path("writing", &path)?)
    })?;
    // After the pages: the last one is written whole, past an odd size.
    file.set_len(obj.size).at_path("sizing", &path)?;
    Ok(fd)
}

/// Recreate segment `seg` under its id (or take over its own leftover) and
/// fill it.
fn create_sysv(
    seg: &SysvSegment,
    obj: &ShmemObject,
    image: &ImageReader,
    made_one: &dyn Fn(i32),
) -> Result<Created> {
    let id = seg.id;
    let made = match sysv_segments().into_iter().find(|s| s.id == id) {
        Some(s)
            if s.key == seg.key
                && s.size == obj.size
                && s.attached == 0
                && s.mode & SHM_DEST == 0
                // Another owner's segment is never filled with image data.
                && (s.uid, s.gid) == (seg.uid, seg.gid) =>
        {
            debug!(id, "taking over the saved segment's leftover");
            false
        }
        Some(s) => {
            return Err(ShmemError::SysvIdTaken {
                id,
                key: s.key,
                size: s.size,
                attached: s.attached,
            })
        }
        None => {
            make_sysv_under_id(seg, obj)?;
            made_one(id);
            true
        }
    };
    let created = Created::Sysv { id, made };
    match fill_sysv(seg, obj, image, made) {
        Ok(()) => Ok(created),
        Err(e) => {
            if made {
                let _ = shm::remove(id);
            }
            Err(e)
        }
    }
}

/// The error of SysV segment `id` when step `what` fails.
fn sysv_err(id: i32, what: &'static str) -> impl Fn(io::Error) -> ShmemError {
    move |source| ShmemError::Sysv { id, what, source }
}

/// Create segment `seg` anew under its saved id (and key and mode).
fn make_sysv_under_id(seg: &SysvSegment, obj: &ShmemObject) -> Result<()> {
    let id = seg.id;
    // The kernel hands out the id written here to the next shmget
    // of this IPC namespace, then forgets it.
    std::fs::write("/proc/sys/kernel/shm_next_id", format!("{id}\n"))
        .map_err(sysv_err(id, "writing /proc/sys/kernel/shm_next_id"))?;
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | (seg.mode & 0o777) as i32;
    let got = match shm::get(seg.key, obj.size as usize, flags) {
        Ok(got) => got,
        Err(e) => {
            let _ = std::fs::write("/proc/sys/kernel/shm_next_id", "-1\n");
            if e.raw_os_error() == Some(libc::EEXIST) {
                return Err(ShmemError::SysvKeyTaken { id, key: seg.key });
            }
            return Err(sysv_err(id, "creating the segment")(e));
        }
    };
    if got != id {
        let _ = shm::remove(got);
        return Err(ShmemError::SysvIdTaken {
            id,
            key: seg.key,
            size: obj.size,
            attached: 0,
        });
    }
    Ok(())
}

/// Give segment `seg` its saved owner and mode and fill it with the
/// saved pages; a leftover not `made` here is zeroed first.
fn fill_sysv(seg: &SysvSegment, obj: &ShmemObject, image: &ImageReader, made: bool) -> Result<()> {
    let id = seg.id;
    let sys = |what| sysv_err(id, what);
    let mut ds = shm::stat(id).map_err(sys("reading its permissions"))?;
    ds.shm_perm.uid = seg.uid;
    ds.shm_perm.gid = seg.gid;
    ds.shm_perm.mode = (seg.mode & 0o777) as _;
    shm::set(id, &mut ds).map_err(sys("setting its owner and mode"))?;
    let len = obj.size.next_multiple_of(PAGE_SIZE) as usize;
    let mut at = shm::Attached::new(id, len).map_err(sys("attaching it in the restorer"))?;
    let mem = at.bytes_mut();
    if !made {
        mem.fill(0);
    }
    let mut buf = Vec::new();
    let r = pages::fill_pages(-1, &obj.pages, image, &mut buf, |off, data| {
        let end = off as usize + data.len();
        match mem.get_mut(off as usize..end) {
            Some(dst) => {
                dst.copy_from_slice(data);
                Ok(())
            }
            None => Err(MemoryError::BadMapping {
                pid: -1,
                start: off,
                end: end as u64,
            }),
        }
    });
    drop(at);
    r?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysv_line_parsed() {
        let l = "       1234      32769  1600       65536  4321  4321      2  1000  1000  1000  1000 1700000000 0 1700000000 65536 0";
        assert_eq!(
            parse_sysv_line(l),
            Some(SysvLine {
                key: 1234,
                id: 32769,
                mode: 0o1600,
                size: 65536,
                attached: 2,
                uid: 1000,
                gid: 1000,
            })
        );
        assert_eq!(parse_sysv_line("key shmid perms"), None);
    }
}
