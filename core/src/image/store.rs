//! The chunk store shared by images: its index, and pruning what no image
//! holds any more.
//!
//! Images hard-link the packs they use from the store, so a store pack
//! whose link count is 1 belongs to no image (deleted images leave such
//! packs behind) and can go. A pack is linked into the image being written
//! as soon as one of its chunks is reused, so pruning at the same time
//! cannot take it away; a chunk whose pack vanished between the lookup and
//! the link is simply written again.

use super::{
    create_private_dir_all, index_file, io_err, is_hex, pack_file, ChunkRef, ImageError, Result,
    PACKS,
};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the store's chunks are, by hash.
#[derive(Debug, Default)]
pub(super) struct StoreIndex {
    pub packs: PathBuf,
    pub chunks: HashMap<String, ChunkRef>,
}

impl StoreIndex {
    /// Read every pack index of the store at `store` (created if missing).
    /// Damaged index lines are skipped: the store is a cache, and a chunk
    /// not found in it is written again.
    pub fn load(store: &Path) -> Result<Self> {
        let packs = store.join(PACKS);
        create_private_dir_all(&packs).map_err(io_err("creating store", &packs))?;
        let mut chunks = HashMap::new();
        for e in fs::read_dir(&packs).map_err(io_err("listing", &packs))? {
            let path = e.map_err(io_err("listing", &packs))?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".idx"))
            else {
                continue;
            };
            if !is_hex(id) {
                continue;
            }
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines() {
                let f: Vec<&str> = line.split(' ').collect();
                let [hash, offset, raw, stored] = f[..] else {
                    continue;
                };
                let (Ok(offset), Ok(raw_len), Ok(stored_len)) =
                    (offset.parse(), raw.parse(), stored.parse())
                else {
                    continue;
                };
                let r = ChunkRef {
                    hash: hash.to_string(),
                    raw_len,
                    stored_len,
                    pack: id.to_string(),
                    offset,
                };
                if r.check_shape().is_ok() {
                    chunks.insert(r.hash.clone(), r);
                }
            }
        }
        Ok(Self { packs, chunks })
    }

    pub fn pack(&self, id: &str) -> PathBuf {
        pack_file(&self.packs, id)
    }

    pub fn index(&self, id: &str) -> PathBuf {
        index_file(&self.packs, id)
    }
}

/// What [`prune_store`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub removed_packs: u64,
    pub removed_bytes: u64,
    pub kept_packs: u64,
}

/// Remove store packs (and their indexes) that no image links to.
pub fn prune_store(store: &Path) -> Result<PruneStats> {
    let mut stats = PruneStats::default();
    let packs = store.join(PACKS);
    let entries = match fs::read_dir(&packs) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(stats),
        Err(source) => {
            return Err(ImageError::Io {
                op: "listing",
                path: packs,
                source,
            })
        }
    };
    for e in entries {
        let path = e.map_err(io_err("listing", &packs))?.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pack"))
        else {
            continue;
        };
        let meta = fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
        if meta.is_file() && meta.nlink() == 1 {
            let idx = index_file(&packs, id);
            // The index first: a pack without one is never reused.
            match fs::remove_file(&idx) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ImageError::Io {
                        op: "removing",
                        path: idx,
                        source,
                    })
                }
            }
            fs::remove_file(&path).map_err(io_err("removing", &path))?;
            stats.removed_packs += 1;
            stats.removed_bytes += meta.len();
        } else {
            stats.kept_packs += 1;
        }
    }
    Ok(stats)
}
