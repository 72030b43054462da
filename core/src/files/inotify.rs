//! inotify: its watches (descriptor, mask, watched path), from fdinfo.
//!
//! fdinfo names each watched inode by a file handle; the checkpointer
//! opens it (`open_by_handle_at`) to learn its path. At restore watches are
//! added back in descriptor order, with throw-away watches to skip numbers
//! no longer in use, so every watch gets its old descriptor: programs map
//! events to what they watch by it. Unread events cannot be put back, so an
//! inotify with events waiting is refused.

use super::{queued_bytes, FileError, FileKind, Refusal};
use crate::procfs::FdInfo;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub wd: i32,
    pub mask: u32,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inotify {
    /// By descriptor, ascending.
    pub watches: Vec<Watch>,
}

/// A mount point of the filesystem with kernel device number `sdev`.
fn mount_of(sdev: u64) -> Option<PathBuf> {
    let (major, minor) = (sdev >> 20, sdev & 0xfffff);
    let want = format!("{major}:{minor}");
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut fallback = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() > 4 && f[2] == want {
            if f[3] == "/" {
                return Some(PathBuf::from(f[4]));
            }
            fallback.get_or_insert_with(|| PathBuf::from(f[4]));
        }
    }
    fallback
}

/// The path of the inode a file handle names, on the filesystem `sdev`.
fn path_of(sdev: u64, handle_type: i32, handle: &[u8]) -> io::Result<PathBuf> {
    let mount =
        mount_of(sdev).ok_or_else(|| io::Error::other(format!("no mount of device {sdev:#x}")))?;
    let mount_fd = std::fs::File::open(&mount)?;
    // struct file_handle: handle_bytes (u32), handle_type (i32), bytes.
    let mut raw = Vec::with_capacity(8 + handle.len());
    raw.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    raw.extend_from_slice(&handle_type.to_ne_bytes());
    raw.extend_from_slice(handle);
    // SAFETY: raw holds a complete struct file_handle; the call returns a
    // new fd or -1.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            raw.as_mut_ptr().cast(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if path.to_string_lossy().ends_with(" (deleted)") {
        return Err(io::Error::other("the watched file was deleted"));
    }
    Ok(path)
}

/// One watch as fdinfo prints it: "wd:1f ino:... sdev:... mask:...
/// ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:...". The
/// kernel prints every number in hex, the watch descriptor too.
#[derive(Debug, PartialEq, Eq)]
struct FdinfoWatch {
    wd: i32,
    mask: u64,
    sdev: u64,
    htype: i32,
    handle: Vec<u8>,
}

impl FdinfoWatch {
    fn parse(line: &str) -> Option<Self> {
        let field = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key));
        let hex = |key: &str| field(key).and_then(|x| u64::from_str_radix(x, 16).ok());
        Some(Self {
            wd: field("wd:").and_then(|x| i32::from_str_radix(x, 16).ok())?,
            mask: hex("mask:")?,
            sdev: hex("sdev:")?,
            htype: field("fhandle-type:").and_then(|x| i32::from_str_radix(x, 16).ok())?,
            handle: field("f_handle:").and_then(|x| hex::decode(x).ok())?,
        })
    }
}

pub(super) fn checkpoint(held: &OwnedFd, info: &FdInfo) -> Result<FileKind, Refusal> {
    // An unreadable count is taken as nothing queued.
    let queued = queued_bytes(held.as_raw_fd()).unwrap_or(0);
    if queued > 0 {
        return Err(Refusal::for_now(format!(
            "inotify with {queued} bytes of unread events (they cannot be put back)"
        )));
    }
    let mut watches = Vec::new();
    // fdinfo lines "inotify wd:1 ino:..." come split at their first colon.
    for (k, v) in info.extra.iter().filter(|(k, _)| k.starts_with("inotify ")) {
        let v = &format!("{}:{v}", &k["inotify ".len()..]);
        let Some(FdinfoWatch {
            wd,
            mask,
            sdev,
            htype,
            handle,
        }) = FdinfoWatch::parse(v)
        else {
            return Err(format!("unreadable inotify watch: {v}").into());
        };
        let path = path_of(sdev, htype, &handle)
            .map_err(|e| format!("inotify watch {wd}: its path cannot be found ({e})"))?;
        watches.push(Watch {
            wd,
            mask: mask as u32,
            path,
        });
    }
    watches.sort_by_key(|w| w.wd);
    Ok(FileKind::Inotify(Inotify { watches }))
}

impl Inotify {
    pub fn describe(&self) -> String {
        format!("inotify with {} watches", self.watches.len())
    }

    pub(super) fn restore(&self, flags: u32) -> Result<OwnedFd, FileError> {
        let err = |what: &'static str| move |source: io::Error| FileError::Create { what, source };
        // Non-blocking while we set it up (to drain our own events).
        // SAFETY: inotify_init1 takes flags, returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(err("creating an inotify instance")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: a fresh fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for w in &self.watches {
            let c = CString::new(w.path.as_os_str().as_encoded_bytes()).map_err(|_| {
                FileError::Path {
                    op: "watching",
                    path: w.path.clone(),
                    source: io::Error::from(io::ErrorKind::InvalidInput),
                }
            })?;
            loop {
                // SAFETY: add_watch with a NUL-terminated path.
                let got = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), w.mask) };
                if got < 0 {
                    return Err(FileError::Path {
                        op: "watching (inotify)",
                        path: w.path.clone(),
                        source: io::Error::last_os_error(),
                    });
                }
                if got == w.wd {
                    break;
                }
                if got > w.wd {
                    return Err(FileError::Path {
                        op: "giving an inotify watch its old descriptor",
                        path: w.path.clone(),
                        source: io::Error::other(format!("got {got}, want {}", w.wd)),
                    });
                }
                // A number to skip: descriptors only grow.
                // SAFETY: removing the watch we just added.
                unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), got) };
            }
        }
        // Removing the throw-away watches queued IN_IGNORED events: drop them.
        let mut buf = [0u8; 4096];
        // SAFETY: non-blocking reads into our buffer until nothing is left.
        while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        let nonblock = flags as i32 & libc::O_NONBLOCK;
        // SAFETY: F_SETFL on our fd.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, nonblock) };
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as a 6.x kernel prints them, for watch descriptors 9, 16 and
    /// 31: in hex, so "10" is 16, not ten.
    #[test]
    fn fdinfo_watch_descriptors_are_hex() {
        let lines = [
            "wd:9 ino:2b1 sdev:800001 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:b102000064c92b8a",
            "wd:10 ino:2 sdev:fd00001 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:0200000000000000",
            "wd:1f ino:2 sdev:fd00001 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:0200000000000000",
        ];
        let wds: Vec<i32> = lines
            .iter()
            .map(|l| FdinfoWatch::parse(l).unwrap().wd)
            .collect();
        assert_eq!(wds, [9, 16, 31]);
        let w = FdinfoWatch::parse(lines[0]).unwrap();
        assert_eq!((w.mask, w.sdev, w.htype), (0xfc6, 0x800001, 1));
        assert_eq!(w.handle, hex::decode("b102000064c92b8a").unwrap());
        assert_eq!(FdinfoWatch::parse("wd:zz ino:2"), None);
    }
}
