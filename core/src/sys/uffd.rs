//! userfaultfd: the handshake and registering ranges for write
//! protection. libc: the UFFDIO ioctls are in neither nix nor rustix.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// `_IOWR(0xaa, 0x3f, struct uffdio_api)`
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
/// `_IOWR(0xaa, 0x00, struct uffdio_register)`
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;

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

/// The `UFFDIO_API` handshake: protocol `api`, asking for `features`.
pub fn api(uffd: impl AsFd, api: u64, features: u64) -> io::Result<()> {
    let mut arg = UffdioApi {
        api,
        features,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes a struct uffdio_api.
    if unsafe { libc::ioctl(uffd.as_fd().as_raw_fd(), UFFDIO_API, &mut arg) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
    }
}
