//! inotify: its watches (descriptor, mask, watched path), from fdinfo.
//!
//! fdinfo names each watched inode by a file handle; the checkpointer
//! opens it (`open_by_handle_at`) to learn its path. At restore watches are
//! added back in descriptor order, with throw-away watches to skip numbers
//! no longer in use, so every watch gets its old descriptor: programs map
//! events to what they watch by it. Unread events cannot be put back, so an
//! inotify with events waiting is refused.
//!
//! A watch on the FUSE mount of a server left out of the set (the document
//! portal's, which GVfs and file choosers watch) cannot be looked at, and
//! the mount ends with the session: such a watch comes back ended, as an
//! unmount ends it (its descriptor kept, an `IN_IGNORED` event for it
//! queued), so the program drops it as it would after an unmount.

use super::error::{FileError, Refusal, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::policy::Policy;
use crate::procfs::FdInfo;
use crate::sys::fd::queued_bytes;
use crate::sys::inotify;
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub wd: i32,
    pub mask: u32,
    /// The watched file; for a watch on a left-out mount, the mount point.
    pub path: PathBuf,
    /// The watch was on the FUSE mount of a left-out server, at this mount
    /// point: restored ended (`IN_IGNORED` queued).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_left_out_mount: bool,
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
    let fd = crate::sys::fs::open_by_handle(
        &mount_fd,
        handle_type,
        handle,
        libc::O_PATH | libc::O_CLOEXEC,
    )?;
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

/// `left_out_mounts`: mount points of FUSE servers left out of the set
/// (their watches are ended at restore, not looked at).
pub(super) fn checkpoint(
    held: &OwnedFd,
    info: &FdInfo,
    left_out_mounts: &[PathBuf],
) -> Result<Inotify, Refusal> {
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
        // Root may not look into another user's FUSE mount, and the
        // server may answer no one: known by the device number alone.
        if let Some(mount) =
            mount_of(sdev).filter(|m| left_out_mounts.iter().any(|l| m.starts_with(l)))
        {
            watches.push(Watch {
                wd,
                mask: mask as u32,
                path: mount,
                on_left_out_mount: true,
            });
            continue;
        }
        let path = path_of(sdev, htype, &handle)
            .map_err(|e| format!("inotify watch {wd}: its path cannot be found ({e})"))?;
        watches.push(Watch {
            wd,
            mask: mask as u32,
            path,
            on_left_out_mount: false,
        });
    }
    watches.sort_by_key(|w| w.wd);
    Ok(Inotify { watches })
}

impl Inotify {
    /// The watches restored ended (on left-out mounts).
    pub fn ended(&self) -> impl Iterator<Item = &Watch> {
        self.watches.iter().filter(|w| w.on_left_out_mount)
    }

    fn open(&self, flags: u32) -> Result<OwnedFd, FileError> {
        // Non-blocking while we set it up (to drain our own events).
        let fd = inotify::init_nonblocking().doing("creating an inotify instance")?;
        // Ended watches hold their descriptors on an inode of our own
        // (a memfd, watched by no saved watch) until the end.
        let stand_in = if self.ended().next().is_some() {
            let name = CString::new("hiber-inotify-stand-in").expect("no NUL");
            Some(crate::sys::fs::memfd(&name).doing("creating an inotify stand-in")?)
        } else {
            None
        };
        let stand_in_path = stand_in
            .as_ref()
            .map(|m| PathBuf::from(format!("/proc/self/fd/{}", m.as_raw_fd())));
        let mut ended = Vec::new();
        for w in &self.watches {
            let path = match (&stand_in_path, w.on_left_out_mount) {
                (Some(p), true) => p,
                _ => &w.path,
            };
            let c =
                CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| FileError::Path {
                    op: "watching",
                    path: w.path.clone(),
                    source: io::Error::from(io::ErrorKind::InvalidInput),
                })?;
            loop {
                let got =
                    inotify::add_watch(&fd, &c, w.mask).at_path("watching (inotify)", &w.path)?;
                if got == w.wd {
                    if w.on_left_out_mount {
                        ended.push(got);
                    }
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
                let _ = inotify::remove_watch(&fd, got);
            }
        }
        // Removing the throw-away watches queued IN_IGNORED events: drop them.
        let mut buf = [0u8; 4096];
        // Non-blocking reads until nothing is left.
        while crate::sys::fd::read(fd.as_raw_fd(), &mut buf).is_ok_and(|n| n > 0) {}
        // Now end the watches of left-out mounts: their IN_IGNORED stays
        // queued for the program, as an unmount's would.
        for wd in ended {
            let _ = inotify::remove_watch(&fd, wd);
        }
        drop(stand_in);
        let nonblock = flags & libc::O_NONBLOCK as u32;
        // As before the checkpoint: no error to report if it fails.
        let _ = crate::sys::fd::set_status_flags(&fd, nonblock);
        Ok(fd)
    }
}

impl FdKind for Inotify {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        format!("inotify with {} watches", self.watches.len())
    }

    fn policy(&self) -> Policy {
        if self.ended().next().is_some() {
            Policy::Reset
        } else {
            Policy::Restore
        }
    }

    /// Why the restore does what it does, for the report.
    fn reason(&self, _: &Probe<'_>, _: &()) -> String {
        let ended: Vec<String> = self
            .ended()
            .map(|w| format!("{} on {}", w.wd, w.path.display()))
            .collect();
        if ended.is_empty() {
            return "watches added again by path under their old descriptors".into();
        }
        format!(
            "watches added again by path under their old descriptors; watch {} of a left-out FUSE server's mount comes back ended as by an unmount (IN_IGNORED queued)",
            ended.join(", ")
        )
    }

    fn claims(fd: &Probe<'_>) -> bool {
        fd.is_anon("inotify")
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), cx: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        Ok(checkpoint(fd.file, fd.info, cx.left_out_mounts)?)
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, flags: u32, _: &mut (), _: &Restoring<'_>) -> FileResult<Opened> {
        self.open(flags).map(Opened::from)
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
