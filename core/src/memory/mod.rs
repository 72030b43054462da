//! Memory: the address space of a process, its mappings and their pages.
//!
//! Checkpoint walks /proc/PID/maps, decides per mapping what must be saved
//! (anonymous pages that were touched, the modified pages of private file
//! mappings, the contents of shared anonymous memory) and streams those
//! pages, in windows of 64 pages, to the image's chunk sink. Zero pages of
//! anonymous memory are not stored: an untouched anonymous page reads zero.
//!
//! Restore recreates each mapping at its address with its protection from
//! inside the task (remote mmap through the restore gadget) and writes the
//! saved pages back from the outside.

use crate::devices::DevicePolicies;
use crate::image::{ChunkRef, ChunkSink};
use crate::pagescan::{
    self, Query, PAGE_IS_FILE, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED,
};
use crate::policy::{Policy, Report, Subject};
use crate::procfs::{MapsEntry, MapsPath, PagemapEntry, SmapsEntry};
use crate::procmem::ProcMem;
use crate::remote::{RemoteTask, Scratch};
use crate::sys::wrap::WrapIoResult;
pub mod fill;
pub mod lazy;
pub mod pages;
pub mod shmem;

use pages::Result;
pub use pages::{
    fill_pages, resolve, MemoryError, PageChunk, PendingChunk, PAGE_SIZE, WINDOW_BYTES,
    WINDOW_PAGES,
};
pub(crate) use pages::{is_zero, runs};
use serde::{Deserialize, Serialize};
use shmem::{MapTarget, ShmemTable};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What backs a mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Backing {
    /// Private anonymous memory (heap, stack, malloc arenas).
    Anon,
    /// A file; private mappings carry their modified pages.
    File {
        path: PathBuf,
        offset: u64,
        size: u64,
        mtime_ns: i64,
    },
    /// Shared memory (anonymous, memfd, SysV): one object of `Snapshot::shmem`.
    Shmem {
        object: usize,
        offset: u64,
    },
    Vdso,
    Vvar,
    VvarVclock,
    /// Memory of a detached char device: the mapping is restored, not its
    /// contents (zero-filled anonymous memory, shared if it was).
    Device {
        path: PathBuf,
        major: u32,
        minor: u32,
        class: String,
    },
}

/// One mapping (VMA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    pub growsdown: bool,
    pub backing: Backing,
    pub pages: Vec<PageChunk>,
}

impl Vma {
    /// A mapping as /proc lists it, with no pages saved yet.
    fn of(m: &MapsEntry, growsdown: bool, backing: Backing) -> Self {
        Vma {
            start: m.start,
            end: m.end,
            read: m.read,
            write: m.write,
            exec: m.exec,
            shared: m.shared,
            growsdown,
            backing,
            pages: Vec::new(),
        }
    }

    /// Whether its pages are the process's own (anonymous memory, or the
    /// copy-on-write pages of a private file mapping): the pages
    /// [`dump_private_pages`] saves.
    pub fn has_private_pages(&self) -> bool {
        matches!(self.backing, Backing::Anon)
            || matches!(self.backing, Backing::File { .. } | Backing::Shmem { .. } if !self.shared)
    }

    fn prot(&self) -> u64 {
        let mut p = 0;
        if self.read {
            p |= libc::PROT_READ;
        }
        if self.write {
            p |= libc::PROT_WRITE;
        }
        if self.exec {
            p |= libc::PROT_EXEC;
        }
        p as u64
    }
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// The `mm` fields set with `PR_SET_MM_MAP`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// The address space of one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmImage {
    pub vmas: Vec<Vma>,
    pub fields: MmFields,
    #[serde(with = "hex::serde")]
    pub auxv: Vec<u8>,
    pub exe: Option<PathBuf>,
}

impl MmImage {
    pub fn page_chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        self.vmas
            .iter()
            .flat_map(|v| v.pages.iter().map(|p| &p.chunk))
    }
}

/// The device number of the char device behind mapping `m` of `pid`:
/// `map_files` reaches the mapped file itself even when its path is gone
/// or names another node now.
fn mapped_char_device(pid: i32, m: &MapsEntry) -> Option<(u32, u32)> {
    use std::os::unix::fs::FileTypeExt;
    let md = std::fs::metadata(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)).ok()?;
    let rdev = md.rdev();
    md.file_type()
        .is_char_device()
        .then(|| (libc::major(rdev), libc::minor(rdev)))
}

fn is_device(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    md.file_type().is_char_device() || md.file_type().is_block_device()
}

/// Size and modification time, which identify the version of a file.
fn file_identity(md: &std::fs::Metadata) -> (u64, i64) {
    (md.size(), md.mtime() * 1_000_000_000 + md.mtime_nsec())
}

/// Whether a mapping of `pid` has its missing pages filled by a
/// userfaultfd ("um" in smaps): see [`refused_while_filled_by_userfaultfd`].
/// A process that cannot be read is not (the save then says why).
pub fn filled_by_userfaultfd(pid: i32) -> bool {
    crate::procfs::ProcDir::new(pid)
        .smaps()
        .is_ok_and(|s| s.iter().any(registered_for_missing_pages))
}

/// "um" in the mapping's smaps flags.
fn registered_for_missing_pages(entry: &SmapsEntry) -> bool {
    entry.vm_flags.iter().any(|f| f == "um")
}

/// A mapping registered for missing pages with a userfaultfd ("um" in
/// smaps) is refused for now: a page not in yet looks never touched to
/// pagemap, and would be saved as zeros. Mostly a lazy restore still
/// filling the process, which ends by itself.
fn refused_while_filled_by_userfaultfd(
    pid: i32,
    entry: &SmapsEntry,
    subject: &Subject,
    report: &mut Report,
) -> bool {
    if !registered_for_missing_pages(entry) {
        return false;
    }
    report.refuse_for_now(
        pid,
        subject.clone(),
        "anon memory",
        "its missing pages are filled by a userfaultfd (a lazy restore still bringing them in?): saved now, they would read as zeros; save again once every page is in",
    );
    true
}

/// Classify the mappings of `pid` (from smaps), adding findings to `report`.
/// Shared anonymous objects are collected into `shmem`, keyed by inode.
pub fn classify(
    pid: i32,
    smaps: &[SmapsEntry],
    shmem: &mut ShmemTable,
    devices: &DevicePolicies,
    report: &mut Report,
) -> Vec<Vma> {
    let mut vmas = Vec::new();
    // A library has several mappings: each file is looked at once.
    let mut metadata: std::collections::HashMap<&Path, io::Result<std::fs::Metadata>> =
        std::collections::HashMap::new();
    for entry in smaps {
        let m = &entry.map;
        let subject = mapping_subject(m);
        if refused_while_filled_by_userfaultfd(pid, entry, &subject, report) {
            continue;
        }
        let growsdown = entry.vm_flags.iter().any(|f| f == "gd");
        let backing = match &m.path {
            MapsPath::Vsyscall => continue,
            MapsPath::Vdso => Backing::Vdso,
            MapsPath::Vvar => Backing::Vvar,
            MapsPath::VvarVclock => Backing::VvarVclock,
            MapsPath::Anonymous | MapsPath::Heap | MapsPath::Stack => Backing::Anon,
            MapsPath::Other(name) if name.starts_with("[anon:") => Backing::Anon,
            MapsPath::File { path, deleted } => {
                let name = path.to_string_lossy();
                // A SysV segment's inode is its id, which may be 0.
                let shm_like =
                    (m.inode != 0 || name.starts_with("/SYSV")) && *deleted && is_shmem_name(path);
                // A memfd may be mapped private too; the others are
                // shared whenever they are shared memory at all.
                if shm_like && (m.shared || name.starts_with("/memfd:")) {
                    let object = shmem.of_mapping(pid, m, &name);
                    Backing::Shmem {
                        object,
                        offset: m.offset,
                    }
                } else if *deleted {
                    let Some(backing) = deleted_file_backing(pid, m, path, shmem, report) else {
                        continue;
                    };
                    backing
                } else {
                    let md = metadata
                        .entry(path.as_path())
                        .or_insert_with(|| std::fs::metadata(path));
                    let device = md.as_ref().is_ok_and(is_device)
                        || (md.is_err() && mapped_char_device(pid, m).is_some());
                    if device {
                        vmas.extend(device_mapping(pid, m, path, growsdown, devices, report));
                        continue;
                    }
                    let Some(backing) = file_backing(pid, m, path, md, report) else {
                        continue;
                    };
                    backing
                }
            }
            MapsPath::Other(name) => {
                report.add(
                    pid,
                    subject,
                    format!("mapping {name}"),
                    Policy::Refuse,
                    "special mapping of an unsupported kind",
                );
                continue;
            }
        };
        let what = match &backing {
            Backing::Shmem { object, .. } => shmem.objects[*object].describe(),
            _ => describe(&backing, m.shared),
        };
        let why = restore_reason(&backing, m.shared, shmem);
        report.add(pid, subject, what, Policy::Restore, why);
        vmas.push(Vma::of(m, growsdown, backing));
    }
    vmas
}

/// The subject of a finding about mapping `m`.
fn mapping_subject(m: &MapsEntry) -> Subject {
    Subject::Mapping {
        start: m.start,
        end: m.end,
    }
}

/// A mapping of a file deleted since it was mapped: its contents are
/// saved as a shared object when the file is small enough and can still
/// be reached, else the mapping is refused (None).
fn deleted_file_backing(
    pid: i32,
    m: &MapsEntry,
    path: &Path,
    shmem: &mut ShmemTable,
    report: &mut Report,
) -> Option<Backing> {
    match deleted_file_size(pid, m) {
        Ok(size) if size <= MAX_DELETED_FILE_BYTES => {
            let object = shmem.of_deleted_file(pid, m, path);
            Some(Backing::Shmem {
                object,
                offset: m.offset,
            })
        }
        found => {
            let why = match found {
                Ok(size) => format!(
                    "a deleted file of {size} bytes (at most {MAX_DELETED_FILE_BYTES} are saved)"
                ),
                Err(e) => format!("the deleted file cannot be reached: {e}"),
            };
            report.add(
                pid,
                mapping_subject(m),
                format!("mapping of deleted file {}", path.display()),
                Policy::Refuse,
                why,
            );
            None
        }
    }
}

/// A mapping of a device (DRM buffers, framebuffers, sound rings): device
/// memory that cannot be read back as the file's contents. Restored as
/// zero-filled memory when its device is detached, else refused (None).
fn device_mapping(
    pid: i32,
    m: &MapsEntry,
    path: &Path,
    growsdown: bool,
    devices: &DevicePolicies,
    report: &mut Report,
) -> Option<Vma> {
    let subject = mapping_subject(m);
    let Some((major, minor)) = mapped_char_device(pid, m) else {
        report.add(
            pid,
            subject,
            format!("device mapping {}", path.display()),
            Policy::Refuse,
            "mappings of block devices are not supported",
        );
        return None;
    };
    // A mapping is never the X server's card itself: the
    // automatic Reattach is for fds. A reattached card's
    // buffers are gone with the old open, so its mappings
    // come back as a detached device's.
    let c = devices.classify(path, major, minor, crate::devices::Use::Plain);
    let what = format!("device mapping of {}", c.describe());
    if !matches!(c.decision.policy, Policy::Detach | Policy::Reattach) {
        report.add(
            pid,
            subject,
            what,
            Policy::Refuse,
            c.reason(&format!(
                "{}, and only mappings of detached devices can be restored (as zero-filled memory)",
                c.decision.policy
            )),
        );
        return None;
    }
    report.add(
        pid,
        subject,
        what,
        Policy::Detach,
        c.reason("the mapping is restored, not its contents: zero-filled memory at the same address and protection"),
    );
    Some(Vma::of(
        m,
        growsdown,
        Backing::Device {
            path: path.to_path_buf(),
            major,
            minor,
            class: c.class().to_string(),
        },
    ))
}

/// A mapping of a regular file, remapped from it at restore: identified
/// by its size and modification time (`md`), or refused (None) when it
/// cannot be stat'ed.
fn file_backing(
    pid: i32,
    m: &MapsEntry,
    path: &Path,
    md: &io::Result<std::fs::Metadata>,
    report: &mut Report,
) -> Option<Backing> {
    match md {
        Ok(md) => {
            let (size, mtime_ns) = file_identity(md);
            Some(Backing::File {
                path: path.to_path_buf(),
                offset: m.offset,
                size,
                mtime_ns,
            })
        }
        Err(err) => {
            report.add(
                pid,
                mapping_subject(m),
                format!("file mapping {}", path.display()),
                Policy::Refuse,
                format!("cannot stat the mapped file: {err}"),
            );
            None
        }
    }
}

/// Why a mapping with `backing` can be restored, for its finding.
fn restore_reason(backing: &Backing, shared: bool, shmem: &ShmemTable) -> &'static str {
    match backing {
        Backing::Anon => "touched pages saved, zero pages elided",
        Backing::File { .. } if shared => "remapped from the file, which holds the contents",
        Backing::File { .. } => "remapped from the file, modified pages saved",
        Backing::Shmem { object, .. } => match shmem.objects[*object].kind {
            crate::memory::shmem::ShmemKind::DeletedFile { .. } if shared => "the deleted file's contents saved once for all its mappings, recreated as a memfd",
            crate::memory::shmem::ShmemKind::DeletedFile { .. } => "the deleted file's contents saved once for all its mappings, recreated as a memfd mapped privately; modified pages saved",
            _ if !shared => "mapped privately from a shared memory object saved once for all its mappings; modified pages saved",
            _ => "shared memory object saved once for all its mappings",
        },
        _ => "kernel-provided mapping, moved to its address at restore",
    }
}

/// The largest file deleted while mapped whose contents a checkpoint
/// saves (as for files deleted while open).
pub const MAX_DELETED_FILE_BYTES: u64 = 1 << 30;

/// The size of the regular file behind mapping `m` of `pid`, reached
/// through `map_files` (its path is gone); an error for anything else
/// (a deleted device node).
fn deleted_file_size(pid: i32, m: &MapsEntry) -> io::Result<u64> {
    let md = std::fs::metadata(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))?;
    if !md.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(md.size())
}

fn is_shmem_name(path: &Path) -> bool {
    let s = path.to_string_lossy();
    s == "/dev/zero" || s.starts_with("/SYSV") || s.starts_with("/memfd:")
}

fn describe(backing: &Backing, shared: bool) -> String {
    match backing {
        Backing::Anon => "anon memory".into(),
        Backing::File { path, .. } => format!(
            "{} file mapping {}",
            if shared { "shared" } else { "private" },
            path.display()
        ),
        Backing::Shmem { .. } => "shared memory".into(),
        Backing::Vdso => "[vdso]".into(),
        Backing::Vvar => "[vvar]".into(),
        Backing::VvarVclock => "[vvar_vclock]".into(),
        Backing::Device {
            path, major, minor, ..
        } => format!("device mapping {} ({major}:{minor})", path.display()),
    }
}

/// Which pages of a window must be saved, from its pagemap entries.
fn wanted(backing: &Backing, shared: bool, e: PagemapEntry) -> bool {
    match backing {
        Backing::Anon => e.present() || e.swapped(),
        // A private file page that is present but not a file page is an
        // anonymous copy-on-write page: the program wrote it.
        Backing::File { .. } | Backing::Shmem { .. } if !shared => {
            (e.present() && !e.file_or_shared()) || e.swapped()
        }
        _ => false,
    }
}

/// One window of a mapping as saved: which pages it wanted (present or
/// swapped) and the chunk queued for the non-zero ones (None: nothing to
/// save; a chunk can still turn out all zero, and store nothing).
#[derive(Debug, Clone)]
pub struct DumpedWindow {
    pub addr: u64,
    pub wanted: u64,
    pub chunk: Option<PendingChunk>,
}

/// How a page read that fails is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFailure {
    /// The checkpoint fails (the processes are frozen: nothing may change).
    Fatal,
    /// The window is marked unread (its tag is None) and the dump goes
    /// on: pre-copy, where a running process may unmap what is being read.
    Tolerated,
}

/// What an earlier pass over the same process (pre-copy) saved that still
/// holds, so that it is neither looked for nor read again.
pub trait Earlier {
    /// The window at `addr` of `vma` as saved before, if it still holds
    /// with the pages `wanted` now.
    fn window(&self, vma: &Vma, addr: u64, wanted: u64) -> Option<DumpedWindow>;
    /// Whether `vma` had no pages to save then and cannot have gained any
    /// since (nothing in it was written): its pages need not be scanned.
    fn still_empty(&self, vma: &Vma) -> bool;
}

/// No earlier pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstPass;

impl Earlier for FirstPass {
    fn window(&self, _: &Vma, _: u64, _: u64) -> Option<DumpedWindow> {
        None
    }
    fn still_empty(&self, _: &Vma) -> bool {
        false
    }
}

/// Save the pages of one process's private mappings into `sink`: the
/// windows are found here, from pagemap, and read by the sink's workers.
/// Returns, per vma index, its windows that hold pages. The pages are
/// read only once the sink is drained or finished.
pub fn dump_private_pages(
    pid: i32,
    vmas: &[Vma],
    sink: &mut ChunkSink<'_>,
    failure: ReadFailure,
    earlier: &dyn Earlier,
) -> Result<Vec<Vec<DumpedWindow>>> {
    let pagemap_path = PathBuf::from(format!("/proc/{pid}/pagemap"));
    let pagemap = File::open(&pagemap_path).at_path("reading", &pagemap_path)?;
    let mut finder = WindowFinder::new(&pagemap);
    let mut out = Vec::with_capacity(vmas.len());
    for vma in vmas {
        let mut pending = Vec::new();
        if !vma.has_private_pages() || earlier.still_empty(vma) {
            out.push(pending);
            continue;
        }
        let windows = finder.windows(vma).at_path("reading", &pagemap_path)?;
        let elide_zero = matches!(vma.backing, Backing::Anon);
        for (window, bitmap) in windows {
            if let Some(w) = earlier.window(vma, window, bitmap) {
                pending.push(w);
                continue;
            }
            let ticket =
                sink.submit_read(Box::new(move |data: &mut Vec<u8>| {
                    match read_window(
                        &mut ProcMem::new(pid, false),
                        window,
                        bitmap,
                        elide_zero,
                        data,
                    ) {
                        Ok(kept) => Ok(Some(kept)),
                        Err(err) if failure == ReadFailure::Tolerated => {
                            tracing::debug!(pid, window, %err, "window not read");
                            data.clear();
                            Ok(None)
                        }
                        Err(err) => Err(err.into()),
                    }
                }))?;
            pending.push(DumpedWindow {
                addr: window,
                wanted: bitmap,
                chunk: Some(PendingChunk {
                    ticket,
                    addr: window,
                }),
            });
        }
        out.push(pending);
    }
    Ok(out)
}

/// Finds the windows of a mapping holding pages to save, with
/// `PAGEMAP_SCAN` where the kernel has it, else from pagemap entries.
struct WindowFinder<'a> {
    pagemap: &'a File,
    scan: bool,
    entries: Vec<u8>,
}

impl<'a> WindowFinder<'a> {
    /// Pagemap is read for many windows at once: sparse reservations (a
    /// GTK program's) span thousands of windows, and one read each cost
    /// more than the pages themselves.
    const PAGEMAP_BATCH_PAGES: u64 = WINDOW_PAGES * 64;

    fn new(pagemap: &'a File) -> Self {
        Self {
            pagemap,
            scan: true,
            entries: Vec::new(),
        }
    }

    /// (window address, bitmap of its pages to save), in address order.
    fn windows(&mut self, vma: &Vma) -> io::Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        if self.scan {
            match self.scanned(vma, &mut out) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
                    self.scan = false;
                    out.clear();
                }
                r => return r.map(|()| out),
            }
        }
        self.read_entries(vma, vma.start, vma.end, &mut out)?;
        Ok(out)
    }

    /// The same pages as [`wanted`] picks from pagemap entries, less the
    /// zero page mapped by reads of anonymous memory (it would be read
    /// and dropped as zero anyway).
    fn scanned(&mut self, vma: &Vma, out: &mut Vec<(u64, u64)>) -> io::Result<()> {
        let query = match vma.backing {
            Backing::Anon => Query {
                inverted: PAGE_IS_PFNZERO,
                all: PAGE_IS_PFNZERO,
                any: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                ..Query::default()
            },
            // Not a file page: an anonymous copy-on-write page.
            _ => Query {
                inverted: PAGE_IS_FILE,
                all: PAGE_IS_FILE,
                any: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                ..Query::default()
            },
        };
        for r in pagescan::scan(self.pagemap, vma.start, vma.end, query)? {
            if r.categories & PAGE_IS_PRESENT != 0 {
                add_pages(out, r.start, r.end);
            } else {
                // The scan counts the write-protect markers of a tracked
                // range (pre-copy) as swapped; pagemap tells them apart.
                self.read_entries(vma, r.start, r.end, out)?;
            }
        }
        Ok(())
    }

    /// The pages of [lo, hi) of `vma` that [`wanted`] picks from their
    /// pagemap entries, read many at a time.
    fn read_entries(
        &mut self,
        vma: &Vma,
        lo: u64,
        hi: u64,
        out: &mut Vec<(u64, u64)>,
    ) -> io::Result<()> {
        self.entries
            .resize((Self::PAGEMAP_BATCH_PAGES * 8) as usize, 0);
        let mut batch = lo;
        while batch < hi {
            let upto = (batch + Self::PAGEMAP_BATCH_PAGES * PAGE_SIZE).min(hi);
            let n = ((upto - batch) / PAGE_SIZE) as usize;
            self.pagemap
                .read_exact_at(&mut self.entries[..n * 8], batch / PAGE_SIZE * 8)?;
            for (i, e) in self.entries[..n * 8].chunks_exact(8).enumerate() {
                let e = PagemapEntry(u64::from_ne_bytes(e.try_into().expect("8 bytes")));
                if wanted(&vma.backing, vma.shared, e) {
                    let page = batch + i as u64 * PAGE_SIZE;
                    add_pages(out, page, page + PAGE_SIZE);
                }
            }
            batch = upto;
        }
        Ok(())
    }
}

/// Add the pages [start, end) to `out`, (window, bitmap) in address
/// order; pages come in address order.
fn add_pages(out: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    let mut page = start;
    while page < end {
        let window = page & !(WINDOW_BYTES - 1);
        let upto = end.min(window + WINDOW_BYTES);
        let first = (page - window) / PAGE_SIZE;
        let n = (upto - page) / PAGE_SIZE;
        let bits = if n == WINDOW_PAGES {
            !0
        } else {
            ((1u64 << n) - 1) << first
        };
        match out.last_mut() {
            Some(last) if last.0 == window => last.1 |= bits,
            _ => out.push((window, bits)),
        }
        page = upto;
    }
}

/// Read the pages of `bitmap` in the window at `window`, appended to
/// `data` (empty); with `elide_zero`, zero pages are dropped from the
/// bitmap and the data. Returns the bitmap of the pages kept.
fn read_window(
    mem: &mut ProcMem,
    window: u64,
    bitmap: u64,
    elide_zero: bool,
    data: &mut Vec<u8>,
) -> Result<u64> {
    for (start, len) in runs(bitmap) {
        mem.read_append(
            window + u64::from(start) * PAGE_SIZE,
            len as usize * PAGE_SIZE as usize,
            data,
        )?;
    }
    if !elide_zero {
        return Ok(bitmap);
    }
    let mut kept = 0u64;
    let mut w = 0usize;
    let mut r = 0usize;
    for (start, len) in runs(bitmap) {
        for bit in start..start + len {
            let page = r..r + PAGE_SIZE as usize;
            if !is_zero(&data[page.clone()]) {
                kept |= 1 << bit;
                if w != page.start {
                    data.copy_within(page, w);
                }
                w += PAGE_SIZE as usize;
            }
            r += PAGE_SIZE as usize;
        }
    }
    data.truncate(w);
    Ok(kept)
}

/// Checks before anything is created: [`validate_layout`], then
/// [`check_files`].
pub fn validate(pid: i32, mm: &MmImage) -> Result<()> {
    validate_layout(pid, mm)?;
    check_files(pid, mm)
}

/// The layout a checkpoint writes: page-aligned mappings in user space, in
/// order, every saved page inside its mapping, and pages saved only where
/// they are the process's own ([`Vma::has_private_pages`]): never on a
/// shared file mapping, whose pages are the file's (written there, they
/// would land in the file on disk).
pub fn validate_layout(pid: i32, mm: &MmImage) -> Result<()> {
    const TASK_SIZE: u64 = 0x7fff_ffff_f000;
    let mut previous_end = 0;
    for v in &mm.vmas {
        // Every saved page inside its mapping: a hostile image must not
        // make the restorer write anywhere else.
        let page_inside = |p: &PageChunk| {
            p.addr.is_multiple_of(PAGE_SIZE)
                && (0..64).filter(|b| p.bitmap & (1 << b) != 0).all(|b| {
                    let at = p.addr.saturating_add(b * PAGE_SIZE);
                    at >= v.start && at.saturating_add(PAGE_SIZE) <= v.end
                })
        };
        let chunks_inside = v.pages.iter().all(page_inside);
        let ordered = v.start >= previous_end;
        previous_end = v.end;
        if v.start % PAGE_SIZE != 0
            || v.end % PAGE_SIZE != 0
            || v.start >= v.end
            || v.end > TASK_SIZE
            || !chunks_inside
            || !ordered
        {
            return Err(MemoryError::BadMapping {
                pid,
                start: v.start,
                end: v.end,
            });
        }
        if !v.pages.is_empty() && !v.has_private_pages() {
            return Err(MemoryError::PagesOnShared {
                pid,
                start: v.start,
                end: v.end,
                what: describe(&v.backing, v.shared),
            });
        }
    }
    Ok(())
}

/// Mapped files unchanged since the checkpoint (size and mtime).
pub fn check_files(pid: i32, mm: &MmImage) -> Result<()> {
    for v in &mm.vmas {
        if let Backing::File {
            path,
            size,
            mtime_ns,
            ..
        } = &v.backing
        {
            let md = std::fs::metadata(path).at_path("reading", path)?;
            let (s, m) = file_identity(&md);
            if !md.is_file() {
                return Err(MemoryError::FileChanged {
                    pid,
                    path: path.clone(),
                    what: "no longer a regular file".into(),
                });
            }
            if s != *size || m != *mtime_ns {
                return Err(MemoryError::FileChanged {
                    pid,
                    path: path.clone(),
                    what: format!("size {size} -> {s}, mtime {mtime_ns} -> {m}"),
                });
            }
        }
    }
    Ok(())
}

/// Offsets inside the restore gadget's scratch area.
const SCRATCH_PATH: usize = 0;

/// The file system uids a swap opens files with: the saved process's for
/// its files, the restorer's for the restorer's own objects.
#[derive(Debug, Clone, Copy)]
pub struct FsIds {
    pub saved: u32,
    pub restorer: u32,
}

/// Where a mapping's memory comes from.
enum Source {
    Anon,
    /// Index into [`MapPlan::files`].
    File(usize),
}

/// What [`map_all`] opens, maps and attaches, worked out from the image
/// before the task runs any call.
struct MapPlan<'a> {
    /// (path, open read-write) of each file to open.
    files: Vec<(PathBuf, bool)>,
    /// Which of them are the restorer's own objects (shared memory it made,
    /// reached through its /proc fd directory).
    restorers: Vec<bool>,
    /// Each mapping made with mmap, with its offset into its source.
    maps: Vec<(&'a Vma, Source, u64)>,
    /// Each SysV attachment: the mapping, the segment's id and size, the offset.
    sysv: Vec<(&'a Vma, i32, u64, u64)>,
}

impl<'a> MapPlan<'a> {
    fn new(mm: &'a MmImage, shared: &dyn Fn(usize) -> MapTarget) -> Self {
        let mut plan = MapPlan {
            files: Vec::new(),
            restorers: Vec::new(),
            maps: Vec::new(),
            sysv: Vec::new(),
        };
        for v in &mm.vmas {
            let mut ours = false;
            let (path, offset, rw) = match &v.backing {
                // A detached device's memory comes back zero-filled.
                Backing::Anon | Backing::Device { .. } => {
                    plan.maps.push((v, Source::Anon, 0));
                    continue;
                }
                Backing::File { path, offset, .. } => (path.clone(), *offset, v.shared && v.write),
                Backing::Shmem { object, offset } => match shared(*object) {
                    MapTarget::File { path, write_sealed } => {
                        ours = true;
                        (path, *offset, v.write || !write_sealed)
                    }
                    MapTarget::Sysv { id, size } => {
                        plan.sysv.push((v, id, size, *offset));
                        continue;
                    }
                },
                Backing::Vdso | Backing::Vvar | Backing::VvarVclock => continue,
            };
            let i = match plan.files.iter().position(|f| f.0 == path && f.1 == rw) {
                Some(i) => i,
                None => {
                    plan.files.push((path, rw));
                    plan.restorers.push(ours);
                    plan.files.len() - 1
                }
            };
            plan.maps.push((v, Source::File(i), offset));
        }
        plan
    }
}

/// The task's openat of the path at `addr`.
fn open_call(addr: u64, rw: bool) -> (&'static str, i64, [u64; 6]) {
    let mode = if rw { libc::O_RDWR } else { libc::O_RDONLY };
    (
        "openat",
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            addr,
            // Never blocking: a FIFO put where the file was would
            // hold the restore forever (mmap then refuses it).
            (mode | libc::O_CLOEXEC | libc::O_NONBLOCK) as u64,
            0,
            0,
            0,
        ],
    )
}

/// Recreate every mapping of `mm` in a task whose own mappings are gone
/// (but for the gadget and the vdso, already moved). `shared(i)` says how
/// the task reaches shared object `i`. The calls go in batches run by the
/// gadget's loop at `batch_ip` (one ptrace stop per batch, not two per
/// call): first every file is opened, then every mapping made, then the
/// files closed; SysV attachments follow one by one.
pub fn map_all(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    batch_ip: u64,
    mm: &MmImage,
    shared: &dyn Fn(usize) -> MapTarget,
    fs_ids: FsIds,
) -> Result<()> {
    let plan = MapPlan::new(mm, shared);
    let mut fds = vec![u64::MAX; plan.files.len()];
    open_restorers_objects(task, mem, scratch, &plan, fs_ids, &mut fds)?;
    // Paths go in the first half of the scratch area, the table in the
    // second.
    let half = scratch.len / 2;
    let per_batch = half / crate::remote::BATCH_ENTRY;
    open_files(task, mem, scratch, batch_ip, &plan, &mut fds)?;
    let calls = mmap_calls(&plan.maps, &fds);
    let mapped = calls.chunks(per_batch).try_for_each(|c| {
        task.syscall_batch(mem, scratch, half, batch_ip, c)
            .map(drop)
    });
    let closes: Vec<_> = fds
        .iter()
        .filter(|&&fd| fd != u64::MAX)
        .map(|&fd| ("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0]))
        .collect();
    // Close the files whatever happened to the mappings.
    for c in closes.chunks(per_batch) {
        task.syscall_batch(mem, scratch, half, batch_ip, c)?;
    }
    mapped?;
    for (v, id, size, offset) in plan.sysv {
        attach_sysv(task, v, id, size, offset)?;
    }
    Ok(())
}

/// Open the restorer's own objects of `plan` in the task, one by one, into
/// `fds`. They are opened with the restorer's file system identity (its
/// /proc fd directory is closed to the saved process's), the task's
/// others with the saved process's, given it before.
fn open_restorers_objects(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    plan: &MapPlan<'_>,
    fs_ids: FsIds,
    fds: &mut [u64],
) -> Result<()> {
    let bracket = fs_ids.saved != fs_ids.restorer;
    if bracket && plan.restorers.contains(&true) {
        task.syscall(
            "setfsuid",
            libc::SYS_setfsuid,
            [fs_ids.restorer as u64, 0, 0, 0, 0, 0],
        )?;
    }
    let mine = (|| -> Result<()> {
        for (i, (path, rw)) in plan.files.iter().enumerate() {
            if !plan.restorers[i] {
                continue;
            }
            let mut bytes = path.as_os_str().as_encoded_bytes().to_vec();
            bytes.push(0);
            let addr = scratch.write(mem, 0, &bytes)?;
            let (name, nr, args) = open_call(addr, *rw);
            fds[i] = task.syscall(name, nr, args)?;
        }
        Ok(())
    })();
    if bracket && plan.restorers.contains(&true) {
        task.syscall(
            "setfsuid",
            libc::SYS_setfsuid,
            [fs_ids.saved as u64, 0, 0, 0, 0, 0],
        )?;
    }
    mine
}

/// Open the files of `plan` that are not the restorer's in the task, in
/// batches, into `fds`: the paths in the first half of the scratch area,
/// the batch's table in the second.
fn open_files(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    batch_ip: u64,
    plan: &MapPlan<'_>,
    fds: &mut [u64],
) -> Result<()> {
    let half = scratch.len / 2;
    let per_batch = half / crate::remote::BATCH_ENTRY;
    let mut pending = plan
        .files
        .iter()
        .enumerate()
        .filter(|(i, _)| !plan.restorers[*i])
        .peekable();
    while pending.peek().is_some() {
        let mut calls = Vec::new();
        let mut indices = Vec::new();
        let mut used = 0;
        while let Some((i, (path, rw))) = pending.peek() {
            let mut bytes = path.as_os_str().as_encoded_bytes().to_vec();
            bytes.push(0);
            if calls.len() == per_batch || (used + bytes.len() > half && !calls.is_empty()) {
                break;
            }
            let addr = scratch.write(mem, used, &bytes)?;
            used += bytes.len();
            calls.push(open_call(addr, *rw));
            indices.push(*i);
            pending.next();
        }
        let opened = task.syscall_batch(mem, scratch, half, batch_ip, &calls)?;
        for (i, fd) in indices.into_iter().zip(opened) {
            fds[i] = fd;
        }
    }
    Ok(())
}

/// The task's mmap of each mapping in `maps`, from the files opened as `fds`.
fn mmap_calls(maps: &[(&Vma, Source, u64)], fds: &[u64]) -> Vec<(&'static str, i64, [u64; 6])> {
    maps.iter()
        .map(|(v, source, offset)| {
            let share = if v.shared {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            };
            let mut flags = share | libc::MAP_FIXED;
            let fd = match source {
                Source::Anon => {
                    flags |= libc::MAP_ANONYMOUS;
                    if v.growsdown {
                        flags |= libc::MAP_GROWSDOWN;
                    }
                    u64::MAX
                }
                Source::File(i) => fds[*i],
            };
            (
                "mmap",
                libc::SYS_mmap,
                [v.start, v.len(), v.prot(), flags as u64, fd, *offset],
            )
        })
        .collect()
}

/// Attach SysV segment `id` so that its bytes from `offset` appear at the
/// mapping `v`, as the saved attachment (or the part of it left after a
/// partial munmap) did. shmat cannot map part of a segment at a chosen
/// place, so the task attaches the whole segment where the kernel likes,
/// cuts off what the mapping did not cover and moves the rest into place;
/// a placeholder over `v` first keeps the kernel from choosing it.
fn attach_sysv(task: &RemoteTask, v: &Vma, id: i32, size: u64, offset: u64) -> Result<()> {
    let seg_len = size.next_multiple_of(PAGE_SIZE);
    if offset.checked_add(v.len()).is_none_or(|end| end > seg_len) {
        return Err(MemoryError::BadMapping {
            pid: task.tid(),
            start: v.start,
            end: v.end,
        });
    }
    task.syscall(
        "mmap(placeholder)",
        libc::SYS_mmap,
        [
            v.start,
            v.len(),
            libc::PROT_NONE as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED) as u64,
            u64::MAX,
            0,
        ],
    )?;
    let flags = if v.write { 0 } else { libc::SHM_RDONLY };
    let at = task.syscall(
        "shmat",
        libc::SYS_shmat,
        [id as u64, 0, flags as u64, 0, 0, 0],
    )?;
    let munmap = |start: u64, len: u64| {
        task.syscall("munmap", libc::SYS_munmap, [start, len, 0, 0, 0, 0])
            .map(drop)
    };
    if offset > 0 {
        munmap(at, offset)?;
    }
    let tail = offset + v.len();
    if tail < seg_len {
        munmap(at + tail, seg_len - tail)?;
    }
    task.syscall(
        "mremap(shm)",
        libc::SYS_mremap,
        [
            at + offset,
            v.len(),
            v.len(),
            (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
            v.start,
            0,
        ],
    )?;
    // shmat gives read (and write) but never exec: set what was saved.
    let attached = libc::PROT_READ as u64 | if v.write { libc::PROT_WRITE as u64 } else { 0 };
    if v.prot() != attached {
        task.syscall(
            "mprotect(shm)",
            libc::SYS_mprotect,
            [v.start, v.len(), v.prot(), 0, 0, 0],
        )?;
    }
    Ok(())
}

/// Set the `mm` fields, auxv and exe link (`PR_SET_MM_MAP`).
pub fn set_mm_fields(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    mm: &MmImage,
) -> Result<()> {
    const PR_SET_MM: u64 = 35;
    const PR_SET_MM_MAP: u64 = 14;
    // The kernel refuses (EBUSY) to replace an exe link whose file is still
    // mapped, which is the case when the restorer runs the same binary as
    // the image; the link is then already right.
    let same_exe = mm.exe.as_ref().is_some_and(|exe| {
        let current = std::fs::metadata(format!("/proc/{}/exe", task.tid()));
        let saved = std::fs::metadata(exe);
        matches!((current, saved), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
    });
    let exe_fd = match &mm.exe {
        Some(_) if same_exe => None,
        Some(exe) => {
            let mut bytes = exe.as_os_str().as_encoded_bytes().to_vec();
            bytes.push(0);
            let addr = scratch.write(mem, SCRATCH_PATH, &bytes)?;
            Some(task.syscall(
                "openat(exe)",
                libc::SYS_openat,
                [
                    libc::AT_FDCWD as u64,
                    addr,
                    (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK) as u64,
                    0,
                    0,
                    0,
                ],
            )?)
        }
        None => None,
    };
    let auxv_off = 4096;
    let auxv_addr = scratch.write(mem, auxv_off, &mm.auxv)?;
    let f = &mm.fields;
    let mut map = Vec::with_capacity(104);
    for v in [
        f.start_code,
        f.end_code,
        f.start_data,
        f.end_data,
        f.start_brk,
        f.brk,
        f.start_stack,
        f.arg_start,
        f.arg_end,
        f.env_start,
        f.env_end,
        auxv_addr,
    ] {
        map.extend_from_slice(&v.to_ne_bytes());
    }
    map.extend_from_slice(&(mm.auxv.len() as u32).to_ne_bytes());
    map.extend_from_slice(&(exe_fd.map(|fd| fd as u32).unwrap_or(u32::MAX)).to_ne_bytes());
    let map_addr = scratch.write(mem, 2048, &map)?;
    let r = task.syscall(
        "prctl(PR_SET_MM_MAP)",
        libc::SYS_prctl,
        [PR_SET_MM, PR_SET_MM_MAP, map_addr, map.len() as u64, 0, 0],
    );
    if let Some(fd) = exe_fd {
        task.syscall("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    }
    r?;
    Ok(())
}

/// Move the task's own vdso, vvar and vvar_vclock to the image's addresses.
/// `current` are the task's mappings of those three now.
pub fn move_vdso(task: &RemoteTask, pid: i32, mm: &MmImage, current: &[MapsEntry]) -> Result<()> {
    let mut moves = vdso_moves(pid, mm, current)?;
    // A target overlapping the current place of any of the three would make
    // mremap fail: park them all in free space first.
    let overlaps = moves.iter().any(|&(_, to, len)| {
        moves
            .iter()
            .any(|&(from, _, flen)| to < from + flen && from < to + len)
    });
    if overlaps {
        let total: u64 = moves.iter().map(|m| m.2).sum();
        let park = task.syscall(
            "mmap(park)",
            libc::SYS_mmap,
            [
                0,
                total,
                0,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        let mut at = park;
        for m in &mut moves {
            remap_vdso(task, m.0, at, m.2)?;
            m.0 = at;
            at += m.2;
        }
    }
    for (from, to, len) in moves {
        if from != to {
            remap_vdso(task, from, to, len)?;
        }
    }
    Ok(())
}

/// The moves (from, to, length) that put the task's vvar, vvar_vclock and
/// vdso (`current`) where the image has them; an error when the two
/// layouts differ in which there are or in their sizes.
fn vdso_moves(pid: i32, mm: &MmImage, current: &[MapsEntry]) -> Result<Vec<(u64, u64, u64)>> {
    type Kind = (&'static str, fn(&Backing) -> bool, fn(&MapsPath) -> bool);
    let kinds: [Kind; 3] = [
        (
            "vvar",
            |b| matches!(b, Backing::Vvar),
            |p| matches!(p, MapsPath::Vvar),
        ),
        (
            "vvar_vclock",
            |b| matches!(b, Backing::VvarVclock),
            |p| matches!(p, MapsPath::VvarVclock),
        ),
        (
            "vdso",
            |b| matches!(b, Backing::Vdso),
            |p| matches!(p, MapsPath::Vdso),
        ),
    ];
    let mut moves = Vec::new();
    for (name, saved_is, here_is) in kinds {
        let saved = mm.vmas.iter().find(|v| saved_is(&v.backing));
        let here = current.iter().find(|m| here_is(&m.path));
        match (saved, here) {
            (Some(s), Some(h)) => {
                if s.len() != h.end - h.start {
                    return Err(MemoryError::VdsoLayout {
                        pid,
                        name,
                        saved: s.len(),
                        here: h.end - h.start,
                    });
                }
                moves.push((h.start, s.start, s.len()));
            }
            (None, None) => {}
            (s, h) => {
                return Err(MemoryError::VdsoLayout {
                    pid,
                    name,
                    saved: s.map_or(0, Vma::len),
                    here: h.map_or(0, |h| h.end - h.start),
                })
            }
        }
    }
    Ok(moves)
}

/// Move the task's `len` bytes of vdso (or vvar) at `from` to `to`.
fn remap_vdso(task: &RemoteTask, from: u64, to: u64, len: u64) -> Result<()> {
    task.syscall(
        "mremap(vdso)",
        libc::SYS_mremap,
        [
            from,
            len,
            len,
            (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
            to,
            0,
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of a shared mapping are never written, whatever the document
    /// says, and the layout check refuses them; a private file mapping's
    /// (copy-on-write) are.
    #[test]
    fn pages_of_shared_mappings_are_never_filled() {
        let chunk = ChunkRef {
            hash: "0".repeat(64),
            raw_len: 4096,
            stored_len: 4096,
            pack: "p".into(),
            offset: 0,
        };
        let mut vma = Vma {
            start: 0x10_0000_0000,
            end: 0x10_0004_0000,
            read: true,
            write: true,
            exec: false,
            shared: true,
            growsdown: false,
            backing: Backing::File {
                path: "/var/tmp/canary".into(),
                offset: 0,
                size: 1 << 18,
                mtime_ns: 0,
            },
            pages: vec![PageChunk {
                addr: 0x10_0000_0000,
                bitmap: 1,
                chunk,
            }],
        };
        let mm = |v: &Vma| MmImage {
            vmas: vec![v.clone()],
            fields: MmFields::default(),
            auxv: Vec::new(),
            exe: None,
        };
        assert_eq!(fill::fill_jobs(7, &vma, None).count(), 0);
        let e = validate_layout(7, &mm(&vma)).unwrap_err().to_string();
        assert!(e.contains("carries saved pages"), "{e}");
        vma.backing = Backing::Shmem {
            object: 0,
            offset: 0,
        };
        assert_eq!(fill::fill_jobs(7, &vma, None).count(), 0);
        vma.shared = false;
        assert_eq!(fill::fill_jobs(7, &vma, None).count(), 1);
        assert!(validate_layout(7, &mm(&vma)).is_ok());
    }

    /// The two ways of finding pages agree on our own memory, except for
    /// the zero page a read maps, which only the scan leaves out (it
    /// would be read and dropped as zero anyway).
    #[test]
    fn scan_and_pagemap_entries_find_the_same_pages() {
        let len = 2 * WINDOW_BYTES as usize;
        let mut map = crate::sys::mm::Mapping::anonymous(len).unwrap();
        let base = map.addr() as u64;
        let page = |i: u64| (i * PAGE_SIZE) as usize;
        for i in [1, 2, 63, 64, 70] {
            map.write(page(i), 1);
        }
        let _ = map.read_volatile(page(9));
        let vma = Vma {
            start: base,
            end: base + len as u64,
            read: true,
            write: true,
            exec: false,
            shared: false,
            growsdown: false,
            backing: Backing::Anon,
            pages: Vec::new(),
        };
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        let mut finder = WindowFinder::new(&pagemap);
        let scanned = finder.windows(&vma).unwrap();
        finder.scan = false;
        let from_entries = finder.windows(&vma).unwrap();
        drop(map);
        let bits = |ws: &[(u64, u64)]| -> Vec<u64> {
            ws.iter()
                .flat_map(|&(w, b)| {
                    (0..WINDOW_PAGES)
                        .filter(move |i| b & (1 << i) != 0)
                        .map(move |i| (w + i * PAGE_SIZE - base) / PAGE_SIZE)
                })
                .collect()
        };
        assert_eq!(bits(&from_entries), [1, 2, 9, 63, 64, 70]);
        let probe = pagescan::scan(&pagemap, base, base + PAGE_SIZE, Query::default());
        if matches!(&probe, Err(e) if e.raw_os_error() == Some(libc::ENOTTY)) {
            eprintln!("PAGEMAP_SCAN is not supported by this kernel: pagemap entries only");
            assert_eq!(scanned, from_entries);
        } else {
            assert_eq!(bits(&scanned), [1, 2, 63, 64, 70]);
        }
    }

    #[test]
    fn page_ranges_become_window_bitmaps() {
        let w = WINDOW_BYTES;
        let p = PAGE_SIZE;
        let mut out = Vec::new();
        // Two pages at the end of window 0 running into window 1, a whole
        // window 2, then one page of window 3 added in two steps.
        add_pages(&mut out, w - 2 * p, w + p);
        add_pages(&mut out, 2 * w, 3 * w);
        add_pages(&mut out, 3 * w + 5 * p, 3 * w + 6 * p);
        add_pages(&mut out, 3 * w + 6 * p, 3 * w + 7 * p);
        assert_eq!(
            out,
            [(0, 0b11 << 62), (w, 1), (2 * w, !0), (3 * w, 0b11 << 5)]
        );
    }

    #[test]
    fn runs_of_bits() {
        assert_eq!(runs(0).collect::<Vec<_>>(), vec![]);
        assert_eq!(
            runs(0b1011_0001).collect::<Vec<_>>(),
            vec![(0, 1), (4, 2), (7, 1)]
        );
        assert_eq!(runs(u64::MAX).collect::<Vec<_>>(), vec![(0, 64)]);
        assert_eq!(runs(1 << 63).collect::<Vec<_>>(), vec![(63, 1)]);
    }

    #[test]
    fn zero_pages_detected() {
        let mut p = vec![0u8; 4096];
        assert!(is_zero(&p));
        p[4095] = 1;
        assert!(!is_zero(&p));
        assert!(!is_zero(&p[4000..]), "a short tail is checked too");
        assert!(is_zero(&p[..4000]));
    }
}
