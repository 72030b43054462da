//! Entries of an image directory (or a chunk store) opened as untrusted
//! input: whoever wrote the image may have planted FIFOs, devices and
//! symlinks in it, and a root restore must neither block on them nor read
//! through them, nor say anything about a file outside the image.
//!
//! The directory is opened once; every entry is then looked up relative
//! to it, never followed when it is a symlink, opened without blocking,
//! and checked on the open descriptor to be what is expected (a regular
//! file or a directory), owned by the directory's owner or root, and no
//! larger than what a writer makes. Errors name the entry in the image and
//! what is wrong with it, and nothing else.

use super::format::{ImageError, Result, Unsafe};
use crate::sys::wrap::WrapIoResult;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Flags of every open in an image directory: never follow the last
/// component, never wait for a writer or a device, never become a
/// controlling terminal, never leak into children.
const OPEN: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown type",
    }
}

/// An open directory of an image, and the owner its entries must have.
#[derive(Debug)]
pub(super) struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
    owner: u32,
}

impl SafeDir {
    /// Open the directory the caller named. Its own path is the caller's
    /// to resolve (it may be reached through a symlink); everything below
    /// it is not.
    pub fn open(path: &Path) -> Result<Self> {
        let flags = OPEN.difference(OFlags::NOFOLLOW).union(OFlags::DIRECTORY);
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
            Errno::NOENT => ImageError::NotAnImage {
                path: path.to_path_buf(),
                reason: "no such directory".into(),
            },
            e => open_error(path, e, true),
        })?;
        let st = stat(&fd, path)?;
        expect_dir(path, &st)?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            owner: st.st_uid,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }

    fn entry(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// The entry's metadata without following it; None when it is absent.
    pub fn lstat(&self, name: &str) -> Result<Option<Stat>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io(self.entry(name), "reading", e)),
        }
    }

    fn check_owner(&self, path: &Path, st: &Stat) -> Result<()> {
        if st.st_uid == self.owner || st.st_uid == 0 {
            Ok(())
        } else {
            Err(refused_entry(
                path,
                Unsafe::Owner {
                    found: st.st_uid,
                    owner: self.owner,
                },
            ))
        }
    }

    /// The subdirectory `name`; None when it is absent. It keeps this
    /// directory's owner as the owner its entries must have.
    pub fn subdir(&self, name: &str) -> Result<Option<SafeDir>> {
        let path = self.entry(name);
        let Some(st) = self.lstat(name)? else {
            return Ok(None);
        };
        expect_dir(&path, &st)?;
        self.check_owner(&path, &st)?;
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OPEN.union(OFlags::DIRECTORY),
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(open_error(&path, e, true)),
        };
        let opened = stat(&fd, &path)?;
        same_entry(&path, &st, &opened)?;
        expect_dir(&path, &opened)?;
        self.check_owner(&path, &opened)?;
        Ok(Some(SafeDir {
            fd,
            path,
            owner: self.owner,
        }))
    }

    /// The regular file `name`, of at most `max` bytes, and its size; None
    /// when it is absent. Nothing else is opened: a FIFO, device or symlink
    /// is refused from its metadata, and the descriptor is checked again.
    pub fn file(&self, name: &str, max: u64) -> Result<Option<(File, u64)>> {
        let path = self.entry(name);
        let Some(st) = self.lstat(name)? else {
            return Ok(None);
        };
        expect_file(&path, &st)?;
        self.check_owner(&path, &st)?;
        let fd = match rustix::fs::openat(&self.fd, name, OPEN, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(open_error(&path, e, false)),
        };
        // Swapped since the lstat: judge what was opened.
        let opened = stat(&fd, &path)?;
        same_entry(&path, &st, &opened)?;
        expect_file(&path, &opened)?;
        self.check_owner(&path, &opened)?;
        let size = opened.st_size as u64;
        if size > max {
            return Err(refused_entry(&path, Unsafe::TooLarge { max }));
        }
        Ok(Some((File::from(fd), size)))
    }

    /// Names of the entries, in no order ("." and ".." left out).
    pub fn names(&self) -> Result<Vec<String>> {
        let dir = rustix::fs::Dir::read_from(&self.fd).at_path("listing", &self.path)?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.at_path("listing", &self.path)?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name != "." && name != ".." {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }

    /// The entry `name` if it is a regular file the rules allow, with its
    /// link count and size, without opening it.
    pub fn regular_meta(&self, name: &str) -> Result<Option<Stat>> {
        let path = self.entry(name);
        let Some(st) = self.lstat(name)? else {
            return Ok(None);
        };
        expect_file(&path, &st)?;
        self.check_owner(&path, &st)?;
        Ok(Some(st))
    }

    /// Remove the entry `name` (not following it); absent is fine.
    pub fn remove(&self, name: &str) -> Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io(self.entry(name), "removing", e)),
        }
    }
}

fn stat(fd: &OwnedFd, path: &Path) -> Result<Stat> {
    Ok(rustix::fs::fstat(fd).at_path("reading", path)?)
}

fn expect_dir(path: &Path, st: &Stat) -> Result<()> {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => Ok(()),
        FileType::Symlink => Err(refused_entry(path, Unsafe::Symlink)),
        t => Err(refused_entry(path, Unsafe::NotDirectory(kind_name(t)))),
    }
}

fn expect_file(path: &Path, st: &Stat) -> Result<()> {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Ok(()),
        FileType::Symlink => Err(refused_entry(path, Unsafe::Symlink)),
        t => Err(refused_entry(path, Unsafe::NotRegular(kind_name(t)))),
    }
}

fn same_entry(path: &Path, before: &Stat, opened: &Stat) -> Result<()> {
    if (before.st_dev, before.st_ino) == (opened.st_dev, opened.st_ino) {
        Ok(())
    } else {
        Err(io(
            path.to_path_buf(),
            "opening",
            std::io::Error::other("it was replaced while being opened"),
        ))
    }
}

fn refused_entry(path: &Path, what: Unsafe) -> ImageError {
    ImageError::Unsafe {
        path: path.to_path_buf(),
        what,
    }
}

/// ELOOP from an O_NOFOLLOW open means a symlink; ENOTDIR from an
/// O_DIRECTORY one means something else stands there. Other errors say
/// nothing about what a link points at (the link is never followed).
fn open_error(path: &Path, e: Errno, dir: bool) -> ImageError {
    match e {
        Errno::LOOP => refused_entry(path, Unsafe::Symlink),
        Errno::NOTDIR if dir => refused_entry(path, Unsafe::NotDirectory("another kind of file")),
        e => io(path.to_path_buf(), "opening", e),
    }
}

fn io(path: PathBuf, op: &'static str, e: impl Into<std::io::Error>) -> ImageError {
    ImageError::Io {
        op,
        path,
        source: e.into(),
    }
}
