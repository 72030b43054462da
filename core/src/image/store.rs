//! The chunk store shared by images: its index, and pruning what no image
//! holds any more.
//!
//! Images hard-link the packs they use from the store, so a store pack
//! whose link count is 1 belongs to no image (deleted images leave such
//! packs behind) and can go. A pack is linked into the image being written
//! as soon as one of its chunks is reused, so pruning at the same time
//! cannot take it away; a chunk whose pack vanished between the lookup and
//! the link is simply written again.

use super::dir::SafeDir;
use super::format::{
    create_private_dir_all, index_file, index_name, is_hex, pack_file, pack_name, ChunkRef,
    ImageError, Result, MAX_INDEX_BYTES, PACKS,
};
use crate::sys::wrap::WrapIoResult;
use rustix::fs::{AtFlags, CWD};
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the store's chunks are, by hash.
#[derive(Debug)]
pub(super) struct StoreIndex {
    pub packs: PathBuf,
    /// `packs`, opened once: links are made relative to it, so a store
    /// directory swapped for a symlink later cannot redirect them.
    dir: SafeDir,
    pub chunks: HashMap<String, ChunkRef>,
    /// The file (device, inode) of each pack whose chunks are indexed.
    files: HashMap<String, (u64, u64)>,
}

impl StoreIndex {
    /// Read every pack index of the store at `store` (created if missing).
    /// Damaged index lines are skipped, and so are indexes or packs the
    /// image reader would refuse (symlinks, FIFOs, another user's files,
    /// indexes too large): the store is a cache, and a chunk not found in
    /// it is written again.
    pub fn load(store: &Path) -> Result<Self> {
        let packs = store.join(PACKS);
        create_private_dir_all(&packs).at_path("creating store", &packs)?;
        let dir = SafeDir::open(store)?
            .subdir(PACKS)?
            .ok_or_else(|| ImageError::Io {
                op: "opening store",
                path: packs.clone(),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
        let mut chunks = HashMap::new();
        let mut files = HashMap::new();
        for name in dir.names()? {
            let Some(id) = name.strip_suffix(".idx") else {
                continue;
            };
            if !is_hex(id) {
                continue;
            }
            let usable = dir.regular_meta(&pack_name(id)).and_then(|pack| {
                let index = dir.file(&name, MAX_INDEX_BYTES)?;
                Ok(pack.zip(index))
            });
            let (pack, (index, _)) = match usable {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "store pack skipped");
                    continue;
                }
            };
            let mut text = Vec::new();
            if index.take(MAX_INDEX_BYTES).read_to_end(&mut text).is_err() {
                continue;
            }
            let size = pack.st_size as u64;
            // A reference past the pack's end would make an unreadable image.
            for r in parse_pack_index(id, &text) {
                if r.end() <= size {
                    chunks.insert(r.hash.clone(), r);
                }
            }
            files.insert(id.to_string(), (pack.st_dev, pack.st_ino));
        }
        Ok(Self {
            packs,
            dir,
            chunks,
            files,
        })
    }

    /// Link the store's pack `id` (and its index) into `dest`, an image's
    /// packs directory being written; false when it cannot be used (pruned
    /// meanwhile, another filesystem, or no longer the file indexed).
    pub fn link_into(&self, id: &str, dest: &Path) -> bool {
        let Some(&indexed) = self.files.get(id) else {
            return false;
        };
        let pack = pack_file(dest, id);
        if let Err(e) =
            rustix::fs::linkat(self.dir.fd(), pack_name(id), CWD, &pack, AtFlags::empty())
        {
            tracing::debug!(pack = %id, error = %e, "store pack not usable");
            return false;
        }
        // Judge the link made, in a directory only this writer writes: the
        // store's entry may have been replaced since it was indexed.
        let same =
            fs::symlink_metadata(&pack).is_ok_and(|m| m.is_file() && (m.dev(), m.ino()) == indexed);
        if !same {
            tracing::warn!(pack = %id, "store pack replaced since it was indexed; not used");
            let _ = fs::remove_file(&pack);
            return false;
        }
        // The index travels with the pack, for the next store.
        let index = index_file(dest, id);
        if rustix::fs::linkat(self.dir.fd(), index_name(id), CWD, &index, AtFlags::empty()).is_ok()
            && !fs::symlink_metadata(&index).is_ok_and(|m| m.is_file())
        {
            let _ = fs::remove_file(&index);
        }
        true
    }

    /// Add the pack `id` of `src` (a new image's packs directory) and its
    /// index to the store.
    pub fn add(&self, src: &Path, id: &str) -> std::io::Result<()> {
        rustix::fs::linkat(
            CWD,
            pack_file(src, id),
            self.dir.fd(),
            pack_name(id),
            AtFlags::empty(),
        )?;
        rustix::fs::linkat(
            CWD,
            index_file(src, id),
            self.dir.fd(),
            index_name(id),
            AtFlags::empty(),
        )?;
        Ok(())
    }

    /// Make the store's filesystem durable.
    pub fn sync(&self) -> Result<()> {
        Ok(rustix::fs::syncfs(self.dir.fd()).at_path("syncing", &self.packs)?)
    }
}

/// The chunk references of the index of pack `id`, one per line
/// (`HASH OFFSET RAW STORED`). Lines that are not one a writer makes are
/// skipped: the store is a cache, and a chunk not found in it is written
/// again.
pub fn parse_pack_index(id: &str, text: &[u8]) -> Vec<ChunkRef> {
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
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
            out.push(r);
        }
    }
    out
}

/// What [`prune_store`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub removed_packs: u64,
    pub removed_bytes: u64,
    pub kept_packs: u64,
}

/// Remove store packs (and their indexes) that no image links to. Only
/// regular files directly in the store's packs directory are removed;
/// nothing there is followed.
pub fn prune_store(store: &Path) -> Result<PruneStats> {
    let mut stats = PruneStats::default();
    let top = match SafeDir::open(store) {
        Ok(d) => d,
        Err(ImageError::NotAnImage { .. }) => return Ok(stats),
        Err(e) => return Err(e),
    };
    let Some(dir) = top.subdir(PACKS)? else {
        return Ok(stats);
    };
    for name in dir.names()? {
        let Some(id) = name.strip_suffix(".pack") else {
            continue;
        };
        let Some(st) = dir.lstat(&name)? else {
            continue;
        };
        let regular = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
        if regular && st.st_nlink == 1 {
            // The index first: a pack without one is never reused.
            dir.remove(&index_name(id))?;
            dir.remove(&name)?;
            stats.removed_packs += 1;
            stats.removed_bytes += st.st_size as u64;
        } else {
            stats.kept_packs += 1;
        }
    }
    Ok(stats)
}
