//! Regular files, including files deleted while open ("ghosts", whose
//! contents go into the image), and directories.

use super::error::{FileError, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::image::{ChunkRef, ImageReader, ImageWriter};
use crate::procfs::FdInfo;
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Largest deleted-while-open file whose contents are saved.
pub const MAX_GHOST_BYTES: u64 = crate::memory::MAX_DELETED_FILE_BYTES;
const GHOST_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegularFile {
    pub path: PathBuf,
    pub pos: u64,
    pub ghost: Option<Ghost>,
}

/// Contents of a file that was deleted while open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ghost {
    pub mode: u32,
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
}

impl RegularFile {
    pub(super) fn dump_ghost(
        &mut self,
        held: &OwnedFd,
        writer: &ImageWriter,
    ) -> Result<(), FileError> {
        let Some(ghost) = &mut self.ghost else {
            return Ok(());
        };
        // Read through a fresh read-only open of the same inode (the
        // program's fd may be write-only), with pread: the program's own
        // offset is not moved.
        let file = File::from(open_path(
            Path::new(&format!("/proc/self/fd/{}", held.as_raw_fd())),
            libc::O_RDONLY,
        )?);
        let mut buf = vec![0u8; GHOST_CHUNK];
        let mut off = 0;
        while off < ghost.size {
            let want = (ghost.size - off).min(GHOST_CHUNK as u64) as usize;
            let n = file
                .read_at(&mut buf[..want], off)
                .at_path("reading deleted file", &self.path)?;
            if n == 0 {
                break;
            }
            ghost.chunks.push(writer.put_chunk(&buf[..n])?);
            off += n as u64;
        }
        ghost.size = off;
        Ok(())
    }

    fn open(&self, flags: u32, image: &ImageReader) -> Result<OwnedFd, FileError> {
        // Open-time flags never reach open() (validation refuses them too);
        // nor does O_TMPFILE's own bit, which would ask for a directory.
        let tmpfile_bit = libc::O_TMPFILE & !libc::O_DIRECTORY;
        let flags = (flags as i32) & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | tmpfile_bit);
        // A process's own /proc file: its process does not exist yet. A
        // placeholder now; the process opens the file itself once it is
        // born (see `restore::node`).
        if proc_pid_file(&self.path).is_some() {
            return open_as(
                Path::new("/dev/null"),
                libc::O_RDONLY,
                libc::S_IFCHR,
                |_| Ok(()),
            );
        }
        let fd = match &self.ghost {
            None => open_as(&self.path, flags, libc::S_IFREG, |_| Ok(()))?,
            Some(ghost) => restore_ghost(&self.path, ghost, flags, image)?,
        };
        crate::sys::fd::seek_to(&fd, self.pos as i64).at_path("seeking", &self.path)?;
        Ok(fd)
    }
}

/// The files of a process's own /proc directory that come back: its view
/// of the mounts, which the restorer's own shows the same (a restored
/// process is in the restorer's mount namespace). GLib keeps
/// `/proc/self/mountinfo` open to watch the mounts.
pub const PROC_SELF_FILES: [&str; 3] = ["mountinfo", "mounts", "mountstats"];

/// Files of a process's own /proc directory that are reopened, at restore,
/// in the restored process with the same pid (chromium's renderers keep
/// their `status` and `statm` open to read their memory use). Read-only
/// reports of the process itself: nothing in them acts on anything.
pub const PROC_PID_FILES: [&str; 12] = [
    "status",
    "statm",
    "stat",
    "io",
    "limits",
    "cgroup",
    "smaps",
    "smaps_rollup",
    "maps",
    "oom_score",
    "cmdline",
    "comm",
];

/// The pid whose /proc file `path` is, when it is one of
/// [`PROC_PID_FILES`] (`/proc/PID/NAME`).
pub fn proc_pid_file(path: &Path) -> Option<i32> {
    let rest = path.strip_prefix("/proc").ok()?;
    let mut parts = rest.components().map(|c| c.as_os_str().to_string_lossy());
    let pid: i32 = parts.next()?.parse().ok()?;
    let name = parts.next()?;
    (parts.next().is_none() && PROC_PID_FILES.contains(&name.as_ref())).then_some(pid)
}

/// `path` as restore reopens it: a file of the holder's own /proc
/// directory (the kernel names `/proc/self/X` as `/proc/PID/X`) becomes
/// `/proc/self/X` when it is one of [`PROC_SELF_FILES`]; any other file of
/// a process's /proc directory is refused (it names a process that is
/// gone once restored, or another one). Files of /proc that belong to no
/// process (`/proc/cpuinfo`...) stay as they are.
fn proc_file(pid: i32, path: &Path) -> Result<PathBuf, String> {
    let Ok(rest) = path.strip_prefix("/proc") else {
        return Ok(path.to_path_buf());
    };
    let mut parts = rest.components().map(|c| c.as_os_str().to_string_lossy());
    let Some(first) = parts.next() else {
        return Ok(path.to_path_buf());
    };
    let owner: Option<i32> = first.parse().ok();
    if owner.is_none() && first != "self" && first != "thread-self" {
        return Ok(path.to_path_buf());
    }
    let name: Vec<_> = parts.collect();
    if owner == Some(pid) && name.len() == 1 && PROC_SELF_FILES.contains(&name[0].as_ref()) {
        return Ok(Path::new("/proc/self").join(name[0].as_ref()));
    }
    // Its own, by pid (which the restore gives it again): opened again
    // by the restored process (and by those that share the open file).
    if owner == Some(pid) && proc_pid_file(path).is_some() {
        return Ok(path.to_path_buf());
    }
    Err(format!(
        "{} is a /proc file of {}: only a process's own {}, {} come back yet",
        path.display(),
        match owner {
            Some(p) if p == pid => "this process".to_string(),
            Some(p) => format!("pid {p}"),
            None => first.to_string(),
        },
        PROC_SELF_FILES.join(", "),
        PROC_PID_FILES.join(", ")
    ))
}

pub(super) fn checkpoint(
    pid: i32,
    fd: i32,
    target: &Path,
    info: &FdInfo,
    st: &libc::stat,
) -> Result<RegularFile, String> {
    let text = target.to_string_lossy();
    let (path, deleted) = match text.strip_suffix(" (deleted)") {
        Some(p) if st.st_nlink == 0 => (PathBuf::from(p), true),
        _ => (target.to_path_buf(), false),
    };
    if !path.is_absolute() {
        return Err(format!(
            "pid {pid} fd {fd}: file outside this mount namespace ({text})"
        ));
    }
    if text.starts_with("/secretmem") {
        return Err("memfd_secret memory cannot be read by another process".into());
    }
    let path = proc_file(pid, &path)?;
    let ghost = if deleted {
        if st.st_size as u64 > MAX_GHOST_BYTES {
            return Err(format!(
                "deleted file of {} bytes, above the {} byte limit for saved contents",
                st.st_size, MAX_GHOST_BYTES
            ));
        }
        Some(Ghost {
            mode: st.st_mode & 0o7777,
            size: st.st_size as u64,
            chunks: Vec::new(),
        })
    } else {
        None
    };
    Ok(RegularFile {
        path,
        pos: info.pos,
        ghost,
    })
}

fn cpath(path: &Path) -> Result<CString, FileError> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| FileError::Path {
        op: "opening",
        path: path.to_path_buf(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

/// open(2) with exact flags (std's OpenOptions cannot express them all).
pub fn open_path(path: &Path, flags: i32) -> Result<OwnedFd, FileError> {
    let c = cpath(path)?;
    Ok(crate::sys::fs::open(&c, flags | libc::O_CLOEXEC, 0o600).at_path("opening", path)?)
}

/// Open `path`, a file the document names, as restore does: only when it
/// is still the kind of file saved (`kind`, an `S_IF*` type, and whatever
/// `check` asks of its stat), never following a symlink in its last
/// component, and never blocking (a FIFO or device where a file was
/// would): the path is first opened `O_PATH` (which opens nothing) and
/// checked, then that very inode is opened with `flags` and `O_NONBLOCK`,
/// which is cleared again unless `flags` has it.
pub fn open_as(
    path: &Path,
    flags: i32,
    kind: u32,
    check: impl FnOnce(&libc::stat) -> Result<(), FileError>,
) -> Result<OwnedFd, FileError> {
    let handle = open_path(path, libc::O_PATH | libc::O_NOFOLLOW)?;
    let st = crate::sys::fd::fstat(&handle).at_path("fstat", path)?;
    if st.st_mode & libc::S_IFMT != kind {
        return Err(FileError::Path {
            op: "opening (it is not the kind of file the image saved)",
            path: path.to_path_buf(),
            source: io::Error::from_raw_os_error(match kind {
                libc::S_IFDIR => libc::ENOTDIR,
                _ => libc::EINVAL,
            }),
        });
    }
    check(&st)?;
    if flags & libc::O_PATH != 0 {
        return Ok(handle);
    }
    // O_NOFOLLOW stays in a file's flags once opened (sqlite opens its
    // databases so); on the /proc magic link it would refuse the link
    // itself (ELOOP). The O_PATH open above did not follow one.
    let fd = open_path(
        Path::new(&format!("/proc/self/fd/{}", handle.as_raw_fd())),
        (flags & !libc::O_NOFOLLOW) | libc::O_NONBLOCK,
    )
    .map_err(|e| match e {
        FileError::Path { op, source, .. } => FileError::Path {
            op,
            path: path.to_path_buf(),
            source,
        },
        e => e,
    })?;
    if flags & libc::O_NONBLOCK == 0 {
        crate::sys::fd::set_status_flags(&fd, (flags & !libc::O_ACCMODE) as u32).map_err(
            |source| FileError::Path {
                op: "clearing O_NONBLOCK on",
                path: path.to_path_buf(),
                source,
            },
        )?;
    }
    Ok(fd)
}

/// Recreate a deleted file as a memfd named after it, never at a path:
/// the document's path is only a name. Its mode loses the setuid, setgid
/// and sticky bits (the restorer creates it, so an image must not make it
/// a privileged executable).
fn restore_ghost(
    path: &Path,
    ghost: &Ghost,
    flags: i32,
    image: &ImageReader,
) -> Result<OwnedFd, FileError> {
    let name: String = path
        .file_name()
        .map(|n| {
            // memfd names are at most 249 bytes.
            let mut name = String::new();
            for c in n.to_string_lossy().chars().filter(|&c| c != '\0') {
                if name.len() + c.len_utf8() > 200 {
                    break;
                }
                name.push(c);
            }
            name
        })
        .unwrap_or_else(|| "hiber-deleted".into());
    let c = CString::new(name).unwrap_or_else(|_| c"hiber-deleted".to_owned());
    let scratch = crate::sys::fs::memfd(&c).doing("creating a memfd for a deleted file")?;
    let file = File::from(scratch.try_clone().doing("duplicating a ghost file fd")?);
    let mut off = 0u64;
    let mut buf = Vec::new();
    for chunk in &ghost.chunks {
        image.read_chunk(chunk, &mut buf)?;
        if off.saturating_add(buf.len() as u64) > ghost.size {
            return Err(FileError::Path {
                op: "deleted file contents larger than its saved size",
                path: path.to_path_buf(),
                source: io::Error::from_raw_os_error(libc::EFBIG),
            });
        }
        file.write_all_at(&buf, off)
            .at_path("writing deleted file contents", path)?;
        off += buf.len() as u64;
    }
    // The saved size (which also restores trailing holes).
    file.set_len(ghost.size)
        .at_path("sizing deleted file", path)?;
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
        ghost.mode & GHOST_MODE_BITS,
    ))
    .at_path("setting mode of", path)?;
    // The program's own OFD, with its own flags, on the same inode.
    open_path(
        Path::new(&format!("/proc/self/fd/{}", scratch.as_raw_fd())),
        flags,
    )
}

/// Mode bits a recreated deleted file keeps: no setuid, setgid or sticky.
pub const GHOST_MODE_BITS: u32 = 0o777;

impl FdKind for RegularFile {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        match self.ghost {
            Some(_) => format!("deleted file {}", self.path.display()),
            None => format!("regular file {}", self.path.display()),
        }
    }

    fn reason(&self, _: &Probe<'_>, _: &()) -> String {
        match self.ghost {
            Some(_) => "deleted while open: contents saved in the image".into(),
            None => super::kind::RECREATED.into(),
        }
    }

    fn chunks(&self) -> Vec<&ChunkRef> {
        self.ghost.iter().flat_map(|g| g.chunks.iter()).collect()
    }

    fn claims(fd: &Probe<'_>) -> bool {
        fd.file_type() == libc::S_IFREG && !fd.name.starts_with("/memfd:")
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), _: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        Ok(checkpoint(fd.pid, fd.fd, fd.target, fd.info, fd.stat)?)
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, flags: u32, _: &mut (), cx: &Restoring<'_>) -> FileResult<Opened> {
        self.open(flags, cx.image).map(Opened::from)
    }
}
