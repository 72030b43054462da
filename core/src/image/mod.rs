//! The image on disk: a directory with one versioned metadata document and
//! page data in content-addressed chunks, appended to pack files.
//!
//! ```text
//! DIR/snapshot              "hiber-image VERSION BLAKE3 LEN\n" + LEN bytes of JSON
//! DIR/packs/ID.pack         chunks back to back: zstd frames, or raw bytes
//!                           where zstd does not shrink them
//! DIR/packs/ID.idx          one line per chunk of the pack: HASH OFFSET RAW STORED
//! STORE/packs/ID.pack|idx   the same files, hard links, shared between images
//! ```
//!
//! A chunk is named by the blake3 hash of its uncompressed bytes. A later
//! checkpoint into the same store looks each chunk up in the store's index
//! and, for one it finds, links the pack that holds it instead of writing
//! it again: a second save writes only what changed. Packs (up to 64 MiB)
//! rather than a file per chunk, because creating thousands of small files
//! costs more than writing their bytes.
//!
//! An image is written under `DIR.tmp-PID` and renamed into place after one
//! `syncfs`: a crash leaves either no image or a whole one. Every read
//! checks the document checksum, every chunk reference's shape and bounds,
//! and every chunk's hash after decompression.
//!
//! Images of older formats are read too, never written: one module per
//! past format (`v1`) converts its document into the next format's and
//! serves its chunks, so the rest of the engine sees a current image.

mod dir;
mod format;
mod reader;
mod store;
mod v1;
mod writer;

pub use format::{
    create_private_dir_all, ChunkRef, ImageError, ReadError, Result, Unsafe, FORMAT_VERSION,
    MAX_CHUNK_BYTES, MAX_DOCUMENT_BYTES, MAX_HEADER_BYTES, OLDEST_READ_VERSION, PACK_BYTES,
};
use format::{DOCUMENT, PACKS};
pub use reader::{parse_document, read_chunk_from, ImageReader};
pub use store::{parse_pack_index, prune_store, PruneStats};
pub use writer::{
    remove_staging, ChunkReader, ChunkSink, CommittedImage, ImageWriter, Stored, WriteStats,
};

use std::path::Path;

/// Whether `dir` holds an image document (it may still be corrupt). A
/// symlink named like the document is not followed: it is no image.
pub fn is_image(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(DOCUMENT)).is_ok_and(|m| m.is_file())
}

/// Bytes of the image at `dir` on disk: its document and its packs (and
/// their indexes), or a format-1 image's chunk files, counting only the image's own regular files: nothing
/// is followed, so no size of a file outside the image is ever added in.
/// 0 for what cannot be read.
pub fn image_bytes(dir: &Path) -> u64 {
    let regular = |d: &dir::SafeDir, name: &str| match d.lstat(name) {
        Ok(Some(st)) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() => {
            st.st_size as u64
        }
        _ => 0,
    };
    let Ok(root) = dir::SafeDir::open(dir) else {
        return 0;
    };
    let mut total = regular(&root, DOCUMENT);
    if let Ok(Some(packs)) = root.subdir(PACKS) {
        for name in packs.names().unwrap_or_default() {
            total += regular(&packs, &name);
        }
    }
    if let Ok(Some(chunks)) = root.subdir(v1::CHUNKS) {
        for fan in chunks.names().unwrap_or_default() {
            if let Ok(Some(fan)) = chunks.subdir(&fan) {
                for name in fan.names().unwrap_or_default() {
                    total += regular(&fan, &name);
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests;
