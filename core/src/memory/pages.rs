//! Page data: the windows of 64 pages that chunks hold, which of a
//! window's pages a chunk stores, and writing saved pages back. Below the
//! mappings (`memory`) and the shared objects (`memory::shmem`), which
//! both keep their pages this way.

use crate::image::{ChunkRef, ImageError, ImageReader, Stored};
use crate::procfs::ProcfsError;
use crate::procmem::ProcMemError;
use crate::remote::RemoteError;
use crate::sys::wrap::{PathIo, PidIo};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::PathBuf;

pub const PAGE_SIZE: u64 = 4096;

/// Pages per chunk window: the unit of deduplication between snapshots.
pub const WINDOW_PAGES: u64 = 64;

pub const WINDOW_BYTES: u64 = PAGE_SIZE * WINDOW_PAGES;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(transparent)]
    Procfs(#[from] ProcfsError),
    #[error(transparent)]
    ProcMem(#[from] ProcMemError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("pid {pid}: mapped file {path} changed since the checkpoint ({what})")]
    FileChanged {
        pid: i32,
        path: PathBuf,
        what: String,
    },
    #[error("pid {pid}: the {name} layout of this kernel differs from the image's (saved {saved} bytes, here {here})")]
    VdsoLayout {
        pid: i32,
        name: &'static str,
        saved: u64,
        here: u64,
    },
    #[error("chunk {hash} of pid {pid} at {addr:#x} holds {found} bytes, its page bitmap says {expected}")]
    ChunkShape {
        pid: i32,
        addr: u64,
        hash: String,
        expected: usize,
        found: usize,
    },
    #[error("pid {pid}: mapping {start:#x}-{end:#x} ({what}) carries saved pages, which a checkpoint never writes for it: its pages are the file's or object's own")]
    PagesOnShared {
        pid: i32,
        start: u64,
        end: u64,
        what: String,
    },
    #[error("pid {pid}: {what}")]
    Lazy {
        pid: i32,
        what: &'static str,
        source: io::Error,
    },
    #[error("pid {pid}: UFFDIO_COPY of its pages at {addr:#x}")]
    CopyIn {
        pid: i32,
        addr: u64,
        source: io::Error,
    },
    // No pid: the running kernel lacks the features.
    #[error("this kernel's userfaultfd lacks features {missing:#x} that a lazy restore needs (EVENT_FORK, EVENT_REMAP, EVENT_REMOVE, EVENT_UNMAP)")]
    LazyUnsupported { missing: u64 },
    #[error("pid {pid}: mapping {start:#x}-{end:#x} in the image is malformed (not page aligned, outside user space, out of order, or with saved pages outside it)")]
    BadMapping { pid: i32, start: u64, end: u64 },
}

impl From<PathIo> for MemoryError {
    fn from(e: PathIo) -> Self {
        MemoryError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

impl From<PidIo> for MemoryError {
    fn from(e: PidIo) -> Self {
        MemoryError::Lazy {
            pid: e.pid,
            what: e.what,
            source: e.source,
        }
    }
}

pub(super) type Result<T> = std::result::Result<T, MemoryError>;

/// Saved pages of one window: which of its 64 pages are stored, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageChunk {
    /// Address (or object offset) of the window's first page.
    pub addr: u64,
    /// Bit i set: page `addr + i * 4096` is in the chunk, in order.
    pub bitmap: u64,
    pub chunk: ChunkRef,
}

/// A chunk submitted to the sink whose reference, and the bitmap of the
/// pages it holds (its tag), arrive at `finish`.
#[derive(Debug, Clone)]
pub struct PendingChunk {
    pub ticket: usize,
    pub addr: u64,
}

/// Whether every byte of `data` is zero (a page, or the short tail of an
/// object's last page).
pub(crate) fn is_zero(data: &[u8]) -> bool {
    let words = data.chunks_exact(64);
    let tail = words.remainder();
    words
        .chain(std::iter::once(tail))
        .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
}

/// Runs of set bits: (first bit, count).
pub(crate) fn runs(bitmap: u64) -> impl Iterator<Item = (u32, u32)> {
    let mut rest = bitmap;
    std::iter::from_fn(move || {
        if rest == 0 {
            return None;
        }
        let start = rest.trailing_zeros();
        let len = (rest >> start).trailing_ones();
        rest &= if start + len >= 64 {
            0
        } else {
            !0u64 << (start + len)
        };
        Some((start, len))
    })
}

/// Turn pending chunks into page chunks once the sink has finished;
/// chunks that stored nothing (all zero) are left out.
pub fn resolve(pending: Vec<PendingChunk>, stored: &[Stored]) -> Vec<PageChunk> {
    pending
        .into_iter()
        .filter_map(|p| {
            let s = &stored[p.ticket];
            Some(PageChunk {
                addr: p.addr,
                bitmap: s.tag?,
                chunk: s.chunk.clone()?,
            })
        })
        .collect()
}

/// Write saved pages at their addresses through `write(addr, bytes)`.
pub fn fill_pages(
    pid: i32,
    pages: &[PageChunk],
    image: &ImageReader,
    buf: &mut Vec<u8>,
    mut write: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    for pc in pages {
        image.read_chunk(&pc.chunk, buf)?;
        let expected = pc.bitmap.count_ones() as usize * PAGE_SIZE as usize;
        if buf.len() != expected {
            return Err(MemoryError::ChunkShape {
                pid,
                addr: pc.addr,
                hash: pc.chunk.hash.clone(),
                expected,
                found: buf.len(),
            });
        }
        let mut off = 0;
        for (start, len) in runs(pc.bitmap) {
            let bytes = len as usize * PAGE_SIZE as usize;
            write(pc.addr + start as u64 * PAGE_SIZE, &buf[off..off + bytes])?;
            off += bytes;
        }
    }
    Ok(())
}
