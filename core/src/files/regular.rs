//! Regular files, including files deleted while open ("ghosts", whose
//! contents go into the image), and directories.

use super::{FileError, FileKind};
use crate::image::{ChunkRef, ImageReader, ImageWriter};
use crate::procfs::FdInfo;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Largest deleted-while-open file whose contents are saved.
pub const MAX_GHOST_BYTES: u64 = 1 << 30;
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
    pub fn describe(&self) -> String {
        match self.ghost {
            Some(_) => format!("deleted file {}", self.path.display()),
            None => format!("regular file {}", self.path.display()),
        }
    }

    pub fn chunks(&self) -> Vec<&ChunkRef> {
        self.ghost.iter().flat_map(|g| g.chunks.iter()).collect()
    }

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
                .map_err(|source| FileError::Path {
                    op: "reading deleted file",
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            ghost.chunks.push(writer.put_chunk(&buf[..n])?);
            off += n as u64;
        }
        ghost.size = off;
        Ok(())
    }

    pub(super) fn restore(&self, flags: u32, image: &ImageReader) -> Result<OwnedFd, FileError> {
        let flags = (flags as i32) & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL);
        let fd = match &self.ghost {
            None => open_path(&self.path, flags)?,
            Some(ghost) => restore_ghost(&self.path, ghost, flags, image)?,
        };
        // SAFETY: lseek on an open fd; no memory involved.
        if unsafe { libc::lseek(fd.as_raw_fd(), self.pos as i64, libc::SEEK_SET) } < 0 {
            return Err(FileError::Path {
                op: "seeking",
                path: self.path.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(fd)
    }
}

pub(super) fn checkpoint(
    pid: i32,
    fd: i32,
    target: &Path,
    info: &FdInfo,
    st: &libc::stat,
) -> Result<FileKind, String> {
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
    Ok(FileKind::Regular(RegularFile {
        path,
        pos: info.pos,
        ghost,
    }))
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
    // SAFETY: c is a valid NUL-terminated path; open returns a new fd or -1.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        return Err(FileError::Path {
            op: "opening",
            path: path.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Recreate a deleted file: written under its old name when that is free
/// (so the restored link reads "<path> (deleted)" as before), or as an
/// unnamed temporary file in the same directory, then unlinked.
fn restore_ghost(
    path: &Path,
    ghost: &Ghost,
    flags: i32,
    image: &ImageReader,
) -> Result<OwnedFd, FileError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let named = open_path(path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL);
    let (scratch, link) = match named {
        Ok(fd) => (fd, Some(path)),
        Err(_) => (open_path(dir, libc::O_RDWR | libc::O_TMPFILE)?, None),
    };
    let result = (|| {
        let file = File::from(scratch.try_clone().map_err(|source| FileError::Create {
            what: "duplicating a ghost file fd",
            source,
        })?);
        let mut off = 0u64;
        let mut buf = Vec::new();
        for chunk in &ghost.chunks {
            image.read_chunk(chunk, &mut buf)?;
            file.write_all_at(&buf, off)
                .map_err(|source| FileError::Path {
                    op: "writing deleted file contents",
                    path: path.to_path_buf(),
                    source,
                })?;
            off += buf.len() as u64;
        }
        // A temporary file may land on an inode with old data: cut it to
        // the saved size (which also restores trailing holes).
        file.set_len(ghost.size).map_err(|source| FileError::Path {
            op: "sizing deleted file",
            path: path.to_path_buf(),
            source,
        })?;
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(ghost.mode))
            .map_err(|source| FileError::Path {
                op: "setting mode of",
                path: path.to_path_buf(),
                source,
            })?;
        // The program's own OFD, with its own flags, on the same inode.
        open_path(
            Path::new(&format!("/proc/self/fd/{}", scratch.as_raw_fd())),
            flags,
        )
    })();
    if let Some(p) = link {
        let _ = std::fs::remove_file(p);
    }
    result
}
