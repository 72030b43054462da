//! After the dump: the page windows resolved into chunk references, the
//! tables moved into the image document, and with `--stop` the committed
//! image read back before the processes end.

use super::error::{CheckpointError, Result};
use crate::files::{FileKind, FileTable};
use crate::freeze::Frozen;
use crate::image::ImageError;
use crate::memory;
use crate::memory::shmem::ShmemTable;
use crate::snapshot::Snapshot;
use std::path::Path;
use std::time::Instant;
use tracing::debug;

/// The page windows a process's private pages were handed to the writer
/// in, per mapping.
pub(super) type PageWindows = Vec<Vec<memory::DumpedWindow>>;

/// Every mapping's and shared object's page windows, once the writer
/// has stored them: chunk references of the image.
pub(super) fn resolve_pages(
    snapshot: &mut Snapshot,
    pending: Vec<PageWindows>,
    shmem: &mut ShmemTable,
    shm_pending: Vec<Vec<memory::PendingChunk>>,
    stored: &[crate::image::Stored],
) {
    for (p, pend) in snapshot.processes.iter_mut().zip(pending) {
        if let Some(mm) = &mut p.mm {
            for (v, windows) in mm.vmas.iter_mut().zip(pend) {
                v.pages = memory::resolve(
                    windows.into_iter().filter_map(|w| w.chunk).collect(),
                    stored,
                );
            }
        }
    }
    for (obj, pend) in shmem.objects.iter_mut().zip(shm_pending) {
        obj.pages = memory::resolve(pend, stored);
    }
}

/// The files, pipes, detached devices' events and shared objects, from
/// the tables the inspection filled into the image.
pub(super) fn take_tables(snapshot: &mut Snapshot, files: &mut FileTable, shmem: &mut ShmemTable) {
    snapshot.files = std::mem::take(&mut files.files);
    snapshot.detached =
        crate::devices::removes(snapshot.files.iter().filter_map(|f| match &f.kind {
            FileKind::Detached(d) => Some(&**d),
            _ => None,
        }));
    snapshot.pipes = files.take_pipes();
    snapshot.shmem = std::mem::take(&mut shmem.objects);
}

/// `--stop --verify`: the committed image at `dir` read back whole before
/// the processes end; else it is removed and they go on.
pub(super) fn verified(frozen: Frozen, dir: &Path, t0: Instant) -> Result<Frozen> {
    if let Err(source) = verify(dir) {
        tracing::warn!(dir = %dir.display(), error = %source, "committed image did not read back whole: removed, the processes go on");
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove the image that failed verification");
        }
        frozen.thaw();
        return Err(CheckpointError::NotVerified {
            dir: dir.to_path_buf(),
            source,
        });
    }
    debug!(elapsed = ?t0.elapsed(), "image read back whole");
    Ok(frozen)
}

/// Read the image in `dir` back: its document, then every chunk it names
/// against its hash.
pub(super) fn verify(dir: &std::path::Path) -> std::result::Result<(), ImageError> {
    let (reader, snap): (crate::image::ImageReader, Snapshot) =
        crate::image::ImageReader::open(dir)?;
    let chunks = snap.chunks();
    reader.check_chunks(chunks.iter().copied())?;
    let mut buf = Vec::new();
    for c in &chunks {
        reader.read_chunk(c, &mut buf)?;
    }
    Ok(())
}
