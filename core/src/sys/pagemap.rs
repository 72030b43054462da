//! `PAGEMAP_SCAN` (Linux 6.7+) on an open `/proc/PID/pagemap`: one call
//! of the ioctl. libc: it is in neither nix nor rustix.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// `_IOWR('f', 16, struct pm_scan_arg)`
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;

#[repr(C)]
#[derive(Debug, Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// A `struct page_region`: pages [start, end) with `categories`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// What one scan asks: the range, the `PM_SCAN_*` flags and the
/// category masks as `struct pm_scan_arg` names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanArgs {
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}

/// One `PAGEMAP_SCAN` of `pagemap`, filling `out`: the count of regions
/// written and where the walk ended.
pub fn scan(pagemap: impl AsFd, a: ScanArgs, out: &mut [PageRegion]) -> io::Result<(usize, u64)> {
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        flags: a.flags,
        start: a.start,
        end: a.end,
        vec: out.as_mut_ptr() as u64,
        vec_len: out.len() as u64,
        category_inverted: a.category_inverted,
        category_mask: a.category_mask,
        category_anyof_mask: a.category_anyof_mask,
        return_mask: a.return_mask,
        ..Default::default()
    };
    // SAFETY: PAGEMAP_SCAN reads the argument and writes at most vec_len
    // regions to vec, which points to `out`.
    let n = unsafe { libc::ioctl(pagemap.as_fd().as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, arg.walk_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_matches_the_struct() {
        let size = std::mem::size_of::<PmScanArg>() as libc::c_ulong;
        let iowr = (3 << 30) | (size << 16) | (libc::c_ulong::from(b'f') << 8) | 16;
        assert_eq!(iowr, PAGEMAP_SCAN);
    }
}
