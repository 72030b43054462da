//! The chunk store shared by images: pruning what no image holds.
//!
//! Images hard-link their chunks from the store, so a store chunk whose
//! link count is 1 belongs to no image any more (deleted images leave
//! such chunks behind). Images on another filesystem hold copies and do
//! not pin store chunks.

use super::{io_err, ImageError, Result};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What [`prune_store`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub removed_chunks: u64,
    pub removed_bytes: u64,
    pub kept_chunks: u64,
}

/// Remove store chunks that no image links to, and stale temporary files.
pub fn prune_store(store: &Path) -> Result<PruneStats> {
    let mut stats = PruneStats::default();
    let entries = match fs::read_dir(store) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(stats),
        Err(source) => {
            return Err(ImageError::Io {
                op: "listing",
                path: store.to_path_buf(),
                source,
            })
        }
    };
    for fan in entries {
        let fan = fan.map_err(io_err("listing", store))?.path();
        if !fan.is_dir() {
            continue;
        }
        for chunk in fs::read_dir(&fan).map_err(io_err("listing", &fan))? {
            let path = chunk.map_err(io_err("listing", &fan))?.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
            let stale_tmp = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"));
            if meta.is_file() && (meta.nlink() == 1 || stale_tmp) {
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                stats.removed_chunks += 1;
                stats.removed_bytes += meta.len();
            } else {
                stats.kept_chunks += 1;
            }
        }
    }
    Ok(stats)
}
