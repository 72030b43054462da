//! What the image's files are named and hold: the format's constants, the
//! errors, a chunk reference, and the few file-making helpers every part
//! of `image` shares (the lowest file of `image`).

use crate::sys::wrap::PathIo;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// Version of the image layout and document schema this build writes, and
/// the newest it reads.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest version this build reads: each version from it up to
/// [`FORMAT_VERSION`] has its module converting its images into the next.
pub const OLDEST_READ_VERSION: u32 = 1;
/// Largest chunk a reader accepts (the writer makes 256 KiB page windows).
pub const MAX_CHUNK_BYTES: u32 = 4 << 20;
/// Largest metadata document a reader accepts.
pub const MAX_DOCUMENT_BYTES: u64 = 256 << 20;
/// Longest header line of a document, its newline included.
pub const MAX_HEADER_BYTES: u64 = 200;
/// Largest pack index the store reads (a pack of 64 MiB in chunks of
/// 512 bytes); a larger one is skipped, like a damaged one.
pub(super) const MAX_INDEX_BYTES: u64 = 16 << 20;
/// A pack is closed once it reaches this size.
pub const PACK_BYTES: u64 = 64 << 20;
pub(super) const MAGIC: &str = "hiber-image";
pub(super) const DOCUMENT: &str = "snapshot";
pub(super) const PACKS: &str = "packs";

/// A document in this build's format, not yet typed: what each older
/// format's document converts into (through the formats between).
#[derive(Debug)]
pub(super) struct Current(pub serde_json::Value);

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} already exists; choose another directory or remove it")]
    Exists { path: PathBuf },
    #[error("{path} is not a hiber image: {reason}")]
    NotAnImage { path: PathBuf, reason: String },
    #[error("{path} has image format {found}; this hiber reads formats {OLDEST_READ_VERSION} to {FORMAT_VERSION}")]
    UnsupportedVersion { path: PathBuf, found: u32 },
    #[error("{path} has image format {found}, written by a newer hiber; this hiber reads formats {OLDEST_READ_VERSION} to {FORMAT_VERSION}: read it with the newer hiber")]
    NewerVersion { path: PathBuf, found: u32 },
    /// A document of an older format that does not convert into the
    /// current one; `at` is a JSON pointer into it.
    #[error("{path}: the format-{version} document does not convert into format {FORMAT_VERSION}: at {at}: {reason}")]
    Convert {
        path: PathBuf,
        version: u32,
        at: String,
        reason: String,
    },
    #[error("{path}: metadata checksum mismatch (the document is corrupt)")]
    DocumentChecksum { path: PathBuf },
    #[error("{path}: metadata truncated: {found} of {expected} bytes")]
    DocumentTruncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path}: metadata does not parse")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    // No path: the document is serialised in memory before it is written.
    #[error("serialising the metadata")]
    Serialize(#[source] serde_json::Error),
    #[error("pack {path} is missing (it holds chunk {hash})")]
    MissingPack { path: PathBuf, hash: String },
    /// The file of a chunk of a format-1 image, where each chunk had one.
    #[error("chunk file {path} is missing (it holds chunk {hash})")]
    MissingChunk { path: PathBuf, hash: String },
    // No size: the message says nothing about the file but that it is short.
    #[error("pack {path} ends before chunk {hash} does (at byte {end})")]
    PackTooShort {
        path: PathBuf,
        hash: String,
        end: u64,
    },
    /// An entry of the image directory that no writer makes: a symlink,
    /// a FIFO or device, another user's file, a file too large.
    #[error("{path} {what}")]
    Unsafe { path: PathBuf, what: Unsafe },
    #[error("chunk {hash} in {path} is corrupt: {reason}")]
    ChunkCorrupt {
        path: PathBuf,
        hash: String,
        reason: String,
    },
    // No path: a reference in the document; the hash is its subject.
    #[error("bad chunk reference {hash:?}: {reason}")]
    BadChunkRef { hash: String, reason: String },
    // No path: a thread of the writer ended, not a file.
    #[error("chunk writer thread failed")]
    WorkerPanicked,
    // No path: the caller's reader of a chunk's data failed; the source says what.
    #[error("reading the data of a chunk")]
    Read(#[source] ReadError),
}

impl From<PathIo> for ImageError {
    fn from(e: PathIo) -> Self {
        ImageError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// Why a [`ChunkReader`] could not read its chunk.
pub type ReadError = Box<dyn std::error::Error + Send + Sync>;

pub type Result<T> = std::result::Result<T, ImageError>;

/// Images hold the memory of the processes saved (keys, passwords,
/// documents): their directories are the owner's alone (0700), and so are
/// the stores they share chunks with.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// A new file of an image, readable by its owner alone (0600).
pub(super) fn create_private_file(path: &Path, exclusive: bool) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::File::options();
    o.write(true).mode(0o600);
    if exclusive {
        o.create_new(true);
    } else {
        o.create(true).truncate(true);
    }
    o.open(path)
}

/// A reference from the document to one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// blake3 of the uncompressed bytes, 64 lowercase hex digits.
    pub hash: String,
    pub raw_len: u32,
    /// Bytes in the pack; equal to `raw_len` for a chunk stored uncompressed.
    pub stored_len: u32,
    /// The pack's id (its file name without `.pack`).
    pub pack: String,
    pub offset: u64,
}

pub(super) fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ChunkRef {
    /// Reject references no writer makes; in particular a pack id is hex,
    /// so it cannot name a path outside the image.
    pub fn check_shape(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(ImageError::BadChunkRef {
                hash: self.hash.clone(),
                reason: reason.into(),
            })
        };
        if self.hash.len() != 64 || !is_hex(&self.hash) {
            return bad("not 64 lowercase hex digits");
        }
        if self.pack.is_empty() || self.pack.len() > 64 || !is_hex(&self.pack) {
            return bad("bad pack id");
        }
        if self.raw_len == 0 || self.raw_len > MAX_CHUNK_BYTES {
            return bad("uncompressed length out of bounds");
        }
        if self.stored_len == 0 || self.stored_len > self.raw_len {
            return bad("stored length out of bounds");
        }
        if self.offset.checked_add(self.stored_len as u64).is_none() {
            return bad("offset out of bounds");
        }
        Ok(())
    }

    pub(super) fn end(&self) -> u64 {
        self.offset + self.stored_len as u64
    }

    /// The line of a pack index for this chunk.
    pub(super) fn index_line(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.hash, self.offset, self.raw_len, self.stored_len
        )
    }
}

pub(super) fn pack_name(id: &str) -> String {
    format!("{id}.pack")
}

pub(super) fn index_name(id: &str) -> String {
    format!("{id}.idx")
}

pub(super) fn pack_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(pack_name(id))
}

pub(super) fn index_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(index_name(id))
}

/// What is wrong with an entry of an image directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsafe {
    #[error("is a symlink")]
    Symlink,
    #[error("is not a regular file (it is {0})")]
    NotRegular(&'static str),
    #[error("is not a directory (it is {0})")]
    NotDirectory(&'static str),
    #[error("is owned by uid {found}, not by the image's owner (uid {owner}) or root")]
    Owner { found: u32, owner: u32 },
    #[error("is larger than any hiber writes ({max} bytes at most)")]
    TooLarge { max: u64 },
}
