//! `PAGEMAP_SCAN` (Linux 6.7+): the pages of a range that fall in some
//! categories (present, swapped, written since write-protected, file,
//! zero page), as ranges, in one call for what takes /proc/PID/pagemap one
//! entry per page. Older kernels answer ENOTTY; callers fall back to
//! pagemap.

use crate::sys::pagemap::{self, PageRegion, ScanArgs};
use std::fs::File;
use std::io;

/// Write-protect the matching pages as they are reported.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// Fail unless the range is registered for asynchronous write protection.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_FILE: u64 = 1 << 2;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;

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
        let args = ScanArgs {
            flags: q.flags,
            start: at,
            end,
            category_inverted: q.inverted,
            category_mask: q.all,
            category_anyof_mask: q.any,
            return_mask: q.all | q.any,
        };
        let (n, walk_end) = pagemap::scan(pagemap, args, &mut regions)?;
        for r in &regions[..n] {
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
        if walk_end <= at {
            return Err(io::Error::from(io::ErrorKind::InvalidData));
        }
        at = walk_end;
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

    /// Our own memory: a buffer with a few pages touched is reported as
    /// those pages exactly (where the kernel has the ioctl).
    #[test]
    fn touched_pages_of_a_fresh_mapping_are_found() {
        const PAGE: usize = 4096;
        let mut map = crate::sys::mm::Mapping::anonymous(16 * PAGE).unwrap();
        let base = map.addr();
        for page in [1usize, 2, 7] {
            map.write(page * PAGE, 1);
        }
        // A read of an untouched page maps the zero page.
        let _ = map.read_volatile(9 * PAGE);
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        let present = Query {
            inverted: PAGE_IS_PFNZERO,
            all: PAGE_IS_PFNZERO,
            any: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            ..Query::default()
        };
        let found = scan(&pagemap, base as u64, (base + 16 * PAGE) as u64, present);
        drop(map);
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
