//! `PAGEMAP_SCAN` (Linux 6.7+): the pages of a range that fall in some
//! categories (present, swapped, written since write-protected, file,
//! zero page), as ranges, in one call for what takes /proc/PID/pagemap one
//! entry per page. Older kernels answer ENOTTY; callers fall back to
//! pagemap.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `_IOWR('f', 16, struct pm_scan_arg)`
pub(crate) const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
/// Write-protect the matching pages as they are reported.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// Fail unless the range is registered for asynchronous write protection.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_FILE: u64 = 1 << 2;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;

#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct PmScanArg {
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

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// Which pages a scan reports: a page matches when, with the categories
/// in `inverted` flipped, it has every category of `all` and, unless
/// `any` is empty, one of `any`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Query {
    pub inverted: u64,
    pub all: u64,
    pub any: u64,
    /// `PM_SCAN_*` flags.
    pub flags: u64,
}

/// The matching pages of [start, end) of the process whose pagemap is
/// open, as address ranges in order, with the categories of each among
/// those the query names. Always with an output vector: without one the
/// kernel takes a fast path that, when write-protecting, also plants
/// write-protect markers in every empty page table entry.
pub fn scan(pagemap: &File, start: u64, end: u64, q: Query) -> io::Result<Vec<Region>> {
    let mut out: Vec<Region> = Vec::new();
    let mut regions = [PageRegion::default(); 256];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: q.flags,
            start: at,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_inverted: q.inverted,
            category_mask: q.all,
            category_anyof_mask: q.any,
            return_mask: q.all | q.any,
            ..Default::default()
        };
        // SAFETY: PAGEMAP_SCAN reads the argument and writes at most
        // vec_len regions to vec, which points to `regions`.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for r in &regions[..n as usize] {
            match out.last_mut() {
                Some(last) if last.end == r.start && last.categories == r.categories => {
                    last.end = r.end;
                }
                _ => out.push(Region {
                    start: r.start,
                    end: r.end,
                    categories: r.categories,
                }),
            }
        }
        if arg.walk_end <= at {
            return Err(io::Error::from(io::ErrorKind::InvalidData));
        }
        at = arg.walk_end;
    }
    Ok(out)
}

/// Pages [start, end) that share `categories`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
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

    /// Our own memory: a buffer with a few pages touched is reported as
    /// those pages exactly (where the kernel has the ioctl).
    #[test]
    fn touched_pages_of_a_fresh_mapping_are_found() {
        const PAGE: usize = 4096;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                16 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base as usize;
        for page in [1usize, 2, 7] {
            // SAFETY: inside the mapping made above.
            unsafe { *((base + page * PAGE) as *mut u8) = 1 };
        }
        // A read of an untouched page maps the zero page.
        // SAFETY: inside the mapping made above.
        let _ = unsafe { std::ptr::read_volatile((base + 9 * PAGE) as *const u8) };
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        let present = Query {
            inverted: PAGE_IS_PFNZERO,
            all: PAGE_IS_PFNZERO,
            any: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            ..Query::default()
        };
        let found = scan(&pagemap, base as u64, (base + 16 * PAGE) as u64, present);
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(base as *mut libc::c_void, 16 * PAGE) };
        match found {
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
                eprintln!("PAGEMAP_SCAN is not supported by this kernel");
            }
            found => {
                let b = base as u64;
                let p = PAGE as u64;
                let ranges: Vec<(u64, u64)> =
                    found.unwrap().iter().map(|r| (r.start, r.end)).collect();
                assert_eq!(ranges, [(b + p, b + 3 * p), (b + 7 * p, b + 8 * p)]);
            }
        }
    }
}
