//! The one trait every kind of open file implements, and what its two
//! halves are given. A kind module (`pipe`, `unix`, `eventfd`…) holds the
//! record saved in the image and its `impl FdKind`; `table` lists the
//! kinds once, and everything else (the image's `FileKind`, the
//! classification of a fd, the report, the restore) follows from it.

use super::error::{Result, Unsaved};
use crate::creds::Creds;
use crate::devices::{Classified, DevicePolicies, SysRoots, Use};
use crate::image::{ChunkRef, ImageReader};
use crate::memory::shmem::{SharedObjects, ShmemTable};
use crate::policy::Policy;
use crate::procfs::FdInfo;
use crate::sys::fd::set_status_flags;
use crate::sys::wrap::WrapIoResult;
use crate::uevent::proxy::SessionNet;
use std::cell::OnceCell;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The reason a kind gives the report when it has nothing better to say.
pub const RECREATED: &str = "recreated with its flags and offset";

/// One kind of open file: its record in the image (`Self`), how a fd is
/// recognised and saved as one, what the report says of it, and how it is
/// opened again.
pub trait FdKind: Sized {
    /// What one checkpoint keeps for this kind across the fds it meets
    /// (the pipes met so far, the unix sockets sock_diag listed); `()`
    /// for most.
    type Seen: Default + std::fmt::Debug;
    /// What one restore keeps for this kind across the files it opens
    /// (the other ends of pipes and socket pairs already made).
    type Opening;

    /// What the file is, for the report ("pipe #3 read end").
    fn describe(&self) -> String;

    /// What restore does with it.
    fn policy(&self) -> Policy {
        Policy::Restore
    }

    /// Why, for the report, when the file is first saved.
    fn reason(&self, _fd: &Probe<'_>, _seen: &Self::Seen) -> String {
        RECREATED.into()
    }

    /// The image chunks the record refers to (for validation and export).
    fn chunks(&self) -> Vec<&ChunkRef> {
        Vec::new()
    }

    /// Checks of the record on its own, read from an image (bounds,
    /// lengths); checks against the rest of the image are
    /// `restore::validate`'s. Err says what is wrong.
    fn validate(&self) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Whether `fd` is of this kind. The table asks the kinds in its
    /// order; the first that claims a fd saves it.
    fn claims(fd: &Probe<'_>) -> bool;

    /// Save `fd`, or say why it cannot be saved.
    fn checkpoint(
        fd: &Probe<'_>,
        seen: &mut Self::Seen,
        cx: &mut Collecting<'_>,
    ) -> std::result::Result<Self, Unsaved>;

    /// The restore-wide state, from every file of this kind in the image.
    fn opening(all: &[&Self], cx: &Restoring<'_>) -> Result<Self::Opening>;

    /// Open the file again (in the restorer, as its saved holder) with
    /// the status flags `flags` (`O_*`, without `O_CLOEXEC`).
    fn restore(
        &self,
        flags: u32,
        opening: &mut Self::Opening,
        cx: &Restoring<'_>,
    ) -> Result<Opened>;
}

/// A file restore opened.
#[derive(Debug)]
pub struct Opened {
    pub fd: OwnedFd,
    /// A live device reopened in place (a reattached card), not a stand-in.
    pub live_device: bool,
}

impl From<OwnedFd> for Opened {
    fn from(fd: OwnedFd) -> Self {
        Opened {
            fd,
            live_device: false,
        }
    }
}

/// One fd of a process at checkpoint, as every kind may look at it.
pub struct Probe<'a> {
    pub pid: i32,
    pub fd: i32,
    /// Our copy of the fd (`pidfd_getfd`: the same open file description).
    pub file: &'a OwnedFd,
    /// Where `/proc/PID/fd/N` points ("pipe:[123]", "anon_inode:[eventfd]").
    pub target: &'a Path,
    /// `target` as text.
    pub name: &'a str,
    pub info: &'a FdInfo,
    pub stat: &'a libc::stat,
    /// Status flags and access mode, without `O_CLOEXEC`.
    pub flags: u32,
    /// The holder's credentials: socket files and FIFOs are looked at as
    /// it would.
    pub creds: Option<&'a Creds>,
    /// The holder's controlling terminal and session (`/proc/PID/stat`).
    pub tty_nr: i32,
    pub session: i32,
    /// The device table char devices are classified by, and the device
    /// number of the holder's primary card when the session layer asked
    /// for it to be reattached.
    pub devices: &'a DevicePolicies,
    pub x_primary: Option<(u32, u32)>,
    /// Looked up on the first question (see [`Probe::family`], [`Probe::device`]).
    pub(super) family: OnceCell<std::result::Result<i32, String>>,
    pub(super) device: OnceCell<Classified>,
}

impl Probe<'_> {
    /// The file type bits of `st_mode` (`S_IFREG`, `S_IFSOCK`…).
    pub fn file_type(&self) -> libc::mode_t {
        self.stat.st_mode & libc::S_IFMT
    }

    /// Major and minor of a device file.
    pub fn rdev(&self) -> (u32, u32) {
        (
            libc::major(self.stat.st_rdev),
            libc::minor(self.stat.st_rdev),
        )
    }

    /// Whether the fd is none of the file types `st_mode` can tell (an
    /// anonymous inode: eventfd, epoll, a pidfd…).
    pub fn untyped(&self) -> bool {
        !matches!(
            self.file_type(),
            libc::S_IFREG | libc::S_IFDIR | libc::S_IFIFO | libc::S_IFCHR | libc::S_IFSOCK
        )
    }

    /// Whether the fd is the anonymous inode `anon_inode:NAME`.
    pub fn is_anon(&self, name: &str) -> bool {
        self.untyped()
            && self
                .name
                .strip_prefix("anon_inode:")
                .is_some_and(|n| n == name)
    }

    /// The address family of a socket (`SO_DOMAIN`), asked once.
    pub fn family(&self) -> std::result::Result<i32, &str> {
        self.family
            .get_or_init(|| {
                crate::sys::socket::getsockopt_int(
                    std::os::fd::AsRawFd::as_raw_fd(self.file),
                    libc::SOL_SOCKET,
                    libc::SO_DOMAIN,
                )
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .copied()
            .map_err(String::as_str)
    }

    /// Whether the fd is a socket of address family `family`.
    pub fn is_socket(&self, family: i32) -> bool {
        self.file_type() == libc::S_IFSOCK && self.family() == Ok(family)
    }

    /// The device table's account of a char device, looked up once.
    pub fn device(&self) -> &Classified {
        self.device.get_or_init(|| {
            let (major, minor) = self.rdev();
            let c = self.devices.classify(
                self.target,
                major,
                minor,
                Use::of((major, minor), self.x_primary),
            );
            tracing::debug!(major, minor, class = c.class(), policy = %c.decision.policy, "char device");
            c
        })
    }

    /// Whether the fd is an `O_PATH` handle.
    pub fn is_o_path(&self) -> bool {
        self.flags & libc::O_PATH as u32 != 0
    }
}

impl std::fmt::Debug for Probe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("pid", &self.pid)
            .field("fd", &self.fd)
            .field("target", &self.target)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

/// What every kind may use at checkpoint beyond its own [`FdKind::Seen`].
#[derive(Debug)]
pub struct Collecting<'a> {
    /// Shared memory objects (a memfd's contents are saved once, with
    /// its mappings).
    pub shmem: &'a mut ShmemTable,
    /// Mount points of the FUSE servers left out of the set.
    pub left_out_mounts: &'a [PathBuf],
}

/// What every kind may use at restore beyond its own [`FdKind::Opening`].
#[derive(Debug)]
pub struct Restoring<'a> {
    pub image: &'a ImageReader,
    pub shared: &'a SharedObjects,
    /// The restored session's network namespace, for device event sockets.
    pub uevent_net: Option<&'a SessionNet>,
    /// Where live cards to reattach are looked up.
    pub sys: &'a SysRoots,
}

/// Give a fd made by a syscall (a socket, an epoll) the saved
/// `O_NONBLOCK`, the one status flag it keeps; they start blocking.
pub fn status_flags_as_saved(fd: &OwnedFd, flags: u32) -> Result<()> {
    Ok(set_status_flags(fd, flags & libc::O_NONBLOCK as u32)
        .doing("setting the saved O_NONBLOCK")?)
}
