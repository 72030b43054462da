//! userfaultfd: making one, the handshake, registering ranges (missing
//! pages for a lazy restore, write protection for pre-copy), filling and
//! waking, and reading its event messages. libc: the syscall and the
//! UFFDIO ioctls are in neither nix nor rustix.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The protocol version `UFFDIO_API` asks for.
pub const API: u64 = 0xaa;
/// A `userfaultfd()` flag: faults from user mode only.
pub const USER_MODE_ONLY: i32 = 1;
/// `UFFDIO_REGISTER_MODE_MISSING`: faults on pages not yet present.
pub const REGISTER_MODE_MISSING: u64 = 1;
/// `UFFDIO_REGISTER_MODE_WP`: write faults on write-protected pages.
pub const REGISTER_MODE_WP: u64 = 1 << 1;
pub const FEATURE_EVENT_FORK: u64 = 1 << 1;
pub const FEATURE_EVENT_REMAP: u64 = 1 << 2;
pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
pub const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
pub const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
pub const FEATURE_WP_ASYNC: u64 = 1 << 15;

/// `_IOWR(0xaa, 0x3f, struct uffdio_api)`
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
/// `_IOWR(0xaa, 0x00, struct uffdio_register)`
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
/// `_IOR(0xaa, 0x02, struct uffdio_range)`
const UFFDIO_WAKE: libc::c_ulong = 0x8010_aa02;
/// `_IOWR(0xaa, 0x03, struct uffdio_copy)`
const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
/// `_IOWR(0xaa, 0x04, struct uffdio_zeropage)`
const UFFDIO_ZEROPAGE: libc::c_ulong = 0xc020_aa04;

const EVENT_PAGEFAULT: u8 = 0x12;
const EVENT_FORK: u8 = 0x13;
const EVENT_REMAP: u8 = 0x14;
const EVENT_REMOVE: u8 = 0x15;
const EVENT_UNMAP: u8 = 0x16;
/// `sizeof(struct uffd_msg)`
const MSG_LEN: usize = 32;
/// Messages read at most by one [`read_events`].
const MAX_EVENTS: usize = 64;

#[repr(C)]
#[derive(Debug, Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

/// A new userfaultfd of this process's mm, with the `O_*` bits `flags`.
pub fn open(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: userfaultfd takes flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The `UFFDIO_API` handshake: protocol `api`, asking for `features`;
/// the features the kernel reports.
pub fn api(uffd: impl AsFd, api: u64, features: u64) -> io::Result<u64> {
    let mut arg = UffdioApi {
        api,
        features,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes a struct uffdio_api.
    if unsafe { libc::ioctl(uffd.as_fd().as_raw_fd(), UFFDIO_API, &mut arg) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(arg.features)
}

/// Register `len` bytes from `start` in `mode` (`UFFDIO_REGISTER`).
pub fn register(uffd: impl AsFd, start: u64, len: u64, mode: u64) -> io::Result<()> {
    let mut arg = UffdioRegister {
        start,
        len,
        mode,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads and writes a struct uffdio_register.
    if unsafe { libc::ioctl(uffd.as_fd().as_raw_fd(), UFFDIO_REGISTER, &mut arg) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Copy `src` to `dst` in the uffd's mm and wake who waits there
/// (`UFFDIO_COPY`). The error carries the bytes that went in before it
/// (the kernel's `copy`: > 0 after a partial copy, else 0 or -errno).
pub fn copy(uffd: impl AsFd, dst: u64, src: &[u8]) -> Result<(), (io::Error, i64)> {
    let mut arg = UffdioCopy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        mode: 0,
        copy: 0,
    };
    // SAFETY: UFFDIO_COPY reads and writes a struct uffdio_copy; the
    // kernel reads `len` bytes at `src`, all inside the borrowed slice.
    if unsafe { libc::ioctl(uffd.as_fd().as_raw_fd(), UFFDIO_COPY, &mut arg) } != 0 {
        return Err((io::Error::last_os_error(), arg.copy));
    }
    Ok(())
}

/// Map the zero page over `len` bytes from `start` in the uffd's mm and
/// wake who waits there (`UFFDIO_ZEROPAGE`).
pub fn zeropage(uffd: impl AsFd, start: u64, len: u64) -> io::Result<()> {
    let mut arg = UffdioZeropage {
        range: UffdioRange { start, len },
        mode: 0,
        zeropage: 0,
    };
    // SAFETY: UFFDIO_ZEROPAGE reads and writes a struct uffdio_zeropage.
    if unsafe { libc::ioctl(uffd.as_fd().as_raw_fd(), UFFDIO_ZEROPAGE, &mut arg) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Wake who waits on `len` bytes from `start` (`UFFDIO_WAKE`).
pub fn wake(uffd: impl AsFd, start: u64, len: u64) -> io::Result<()> {
    let mut arg = UffdioRange { start, len };
    // SAFETY: UFFDIO_WAKE reads a struct uffdio_range.
    if unsafe { libc::ioctl(uffd.as_fd().as_raw_fd(), UFFDIO_WAKE, &mut arg) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One message read from a userfaultfd.
#[derive(Debug)]
pub enum Event {
    /// A fault at `addr` waits.
    PageFault { addr: u64 },
    /// A child's mm got its own uffd, now in our fd table.
    Fork { uffd: OwnedFd },
    /// `len` bytes moved from `from` to `to` (mremap).
    Remap { from: u64, to: u64, len: u64 },
    /// `start..end` was discarded (madvise DONTNEED/REMOVE).
    Remove { start: u64, end: u64 },
    /// `start..end` was unmapped.
    Unmap { start: u64, end: u64 },
    /// A message of a kind not asked for.
    Other(u8),
}

/// One `read(2)` of the messages waiting on `uffd` (up to 64): none at
/// end of file; `EAGAIN` and `EINTR` come back as errors.
pub fn read_events(uffd: impl AsFd) -> io::Result<Vec<Event>> {
    let mut msgs = [0u8; MSG_LEN * MAX_EVENTS];
    let n = crate::sys::fd::read(uffd.as_fd().as_raw_fd(), &mut msgs)?;
    Ok(msgs[..n].chunks_exact(MSG_LEN).map(parse_event).collect())
}

fn parse_event(m: &[u8]) -> Event {
    let u64_at = |o: usize| u64::from_ne_bytes(m[o..o + 8].try_into().expect("8 bytes"));
    match m[0] {
        EVENT_PAGEFAULT => Event::PageFault { addr: u64_at(16) },
        EVENT_FORK => {
            let ufd = u32::from_ne_bytes(m[8..12].try_into().expect("4 bytes"));
            // SAFETY: the kernel installed this fd in our table for the
            // child's mm with the message; we own it now.
            let uffd = unsafe { OwnedFd::from_raw_fd(ufd as RawFd) };
            Event::Fork { uffd }
        }
        EVENT_REMAP => Event::Remap {
            from: u64_at(8),
            to: u64_at(16),
            len: u64_at(24),
        },
        EVENT_REMOVE => Event::Remove {
            start: u64_at(8),
            end: u64_at(16),
        },
        EVENT_UNMAP => Event::Unmap {
            start: u64_at(8),
            end: u64_at(16),
        },
        other => Event::Other(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_their_structs() {
        let iowr = |ty: libc::c_ulong, nr: libc::c_ulong, size: usize| -> libc::c_ulong {
            (3 << 30) | ((size as libc::c_ulong) << 16) | (ty << 8) | nr
        };
        assert_eq!(
            iowr(0xaa, 0x3f, std::mem::size_of::<UffdioApi>()),
            UFFDIO_API
        );
        assert_eq!(
            iowr(0xaa, 0x00, std::mem::size_of::<UffdioRegister>()),
            UFFDIO_REGISTER
        );
        let ior = |ty: libc::c_ulong, nr: libc::c_ulong, size: usize| -> libc::c_ulong {
            (2 << 30) | ((size as libc::c_ulong) << 16) | (ty << 8) | nr
        };
        assert_eq!(
            ior(0xaa, 0x02, std::mem::size_of::<UffdioRange>()),
            UFFDIO_WAKE
        );
        assert_eq!(
            iowr(0xaa, 0x03, std::mem::size_of::<UffdioCopy>()),
            UFFDIO_COPY
        );
        assert_eq!(
            iowr(0xaa, 0x04, std::mem::size_of::<UffdioZeropage>()),
            UFFDIO_ZEROPAGE
        );
    }
}
