//! Reading an image: the document with its checksum, and chunks verified
//! against their references. Everything is read through [`SafeDir`]: no
//! symlink followed, nothing that can block, nothing but the image's own
//! regular files. The parsers below work on bytes, so the fuzz targets
//! run exactly the code a restore runs.
//!
//! An image of an older format is read through the conversion chain: its
//! version's module turns its document into the next version's, up to
//! [`Current`], and serves its chunks as this format's references; the
//! caller gets the same document and chunk reads as from a current image.

use super::dir::SafeDir;
use super::format::{
    pack_file, pack_name, ChunkRef, Current, ImageError, Result, DOCUMENT, FORMAT_VERSION, MAGIC,
    MAX_DOCUMENT_BYTES, MAX_HEADER_BYTES, OLDEST_READ_VERSION, PACKS,
};
use super::v1;
use crate::sys::wrap::WrapIoResult;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Parse a document (header, checksum, JSON) from its bytes, with every
/// limit the reader applies, converted from an older format where it is
/// one; errors name `path`.
pub fn parse_document<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    parse_versioned(path, bytes).map(|(_, doc)| doc)
}

/// The document's format version, and the document in this build's schema.
fn parse_versioned<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<(u32, T)> {
    let not_image = |reason: &str| ImageError::NotAnImage {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let window = &bytes[..bytes.len().min(MAX_HEADER_BYTES as usize)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return Err(not_image(
            "the document does not start with a hiber-image header",
        ));
    };
    let header =
        std::str::from_utf8(&bytes[..newline]).map_err(|_| not_image("the header is not text"))?;
    let fields: Vec<&str> = header.split(' ').collect();
    if fields.len() != 4 || fields[0] != MAGIC {
        return Err(not_image(
            "the document does not start with a hiber-image header",
        ));
    }
    let version: u32 = fields[1]
        .parse()
        .map_err(|_| not_image("bad version in the header"))?;
    if version > FORMAT_VERSION {
        return Err(ImageError::NewerVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    if version < OLDEST_READ_VERSION {
        return Err(ImageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let sum = fields[2];
    let len: u64 = fields[3]
        .parse()
        .map_err(|_| not_image("bad length in the header"))?;
    if len > MAX_DOCUMENT_BYTES {
        return Err(not_image("the document is larger than any hiber writes"));
    }
    let json = &bytes[newline + 1..];
    if (json.len() as u64) < len {
        return Err(ImageError::DocumentTruncated {
            path: path.to_path_buf(),
            expected: len,
            found: json.len() as u64,
        });
    }
    if json.len() as u64 > len || blake3::hash(json).to_hex().as_str() != sum {
        return Err(ImageError::DocumentChecksum {
            path: path.to_path_buf(),
        });
    }
    let json_err = |source| ImageError::Json {
        path: path.to_path_buf(),
        source,
    };
    if version == FORMAT_VERSION {
        return Ok((version, serde_json::from_slice(json).map_err(json_err)?));
    }
    // The chain: a new format adds its predecessor's module and an arm
    // here, and the older arms convert into that predecessor's document.
    let current = match version {
        v1::VERSION => Current::try_from(v1::Document {
            path: path.to_path_buf(),
            json: serde_json::from_slice(json).map_err(json_err)?,
        })?,
        found => {
            return Err(ImageError::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
            })
        }
    };
    Ok((
        version,
        serde_json::from_value(current.0).map_err(json_err)?,
    ))
}

/// Read, decompress and verify the chunk `r` from the bytes of its pack
/// (`path` names it in errors): what [`ImageReader::read_chunk`] does with
/// a pack file.
pub fn read_chunk_from(path: &Path, pack: &[u8], r: &ChunkRef, out: &mut Vec<u8>) -> Result<()> {
    read_chunk_with(path, pack.len() as u64, r, out, |buf, offset| {
        // Within bounds: read_chunk_with checked the end against the size.
        let start = offset as usize;
        buf.copy_from_slice(&pack[start..start + buf.len()]);
        Ok(())
    })
}

/// The one chunk decoder: the reference's shape, its end against the
/// pack's size, then exactly `stored_len` bytes read at its offset,
/// decompressed into at most `raw_len` bytes and checked against the hash.
fn read_chunk_with(
    path: &Path,
    pack_size: u64,
    r: &ChunkRef,
    out: &mut Vec<u8>,
    read_at: impl Fn(&mut [u8], u64) -> io::Result<()>,
) -> Result<()> {
    r.check_shape()?;
    if r.end() > pack_size {
        return Err(ImageError::PackTooShort {
            path: path.to_path_buf(),
            hash: r.hash.clone(),
            end: r.end(),
        });
    }
    let corrupt = |reason: String| ImageError::ChunkCorrupt {
        path: path.to_path_buf(),
        hash: r.hash.clone(),
        reason,
    };
    out.clear();
    if r.stored_len == r.raw_len {
        out.resize(r.raw_len as usize, 0);
        read_at(out, r.offset).at_path("reading", path)?;
    } else {
        let mut stored = vec![0u8; r.stored_len as usize];
        read_at(&mut stored, r.offset).at_path("reading", path)?;
        out.reserve_exact(r.raw_len as usize);
        // One decompression context per thread, not one per chunk.
        thread_local! {
            static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let n = DCTX
            .with_borrow_mut(|slot| {
                let d = match slot {
                    Some(d) => d,
                    None => slot.insert(zstd::bulk::Decompressor::new()?),
                };
                d.decompress_to_buffer(&stored, out)
            })
            .map_err(|e| corrupt(format!("zstd: {e}")))?;
        if n != r.raw_len as usize {
            return Err(corrupt(format!(
                "decompressed to {n} bytes, expected {}",
                r.raw_len
            )));
        }
    }
    if blake3::hash(out).to_hex().as_str() != r.hash {
        return Err(corrupt("content does not match its hash".into()));
    }
    Ok(())
}

/// A committed image, open for reading.
#[derive(Debug)]
pub struct ImageReader {
    dir: SafeDir,
    version: u32,
    /// The packs directory, once opened (None inside: the image has none).
    packs_dir: Mutex<Option<Option<Arc<SafeDir>>>>,
    /// Open packs and their sizes, by id.
    packs: Mutex<HashMap<String, (Arc<File>, u64)>>,
    /// A format-1 image's chunk files, where it has no packs.
    loose: Option<v1::LooseChunks>,
}

impl ImageReader {
    /// Open the image at `dir` and parse its document.
    pub fn open<T: DeserializeOwned>(dir: &Path) -> Result<(Self, T)> {
        let path = dir.join(DOCUMENT);
        let root = SafeDir::open(dir)?;
        let (f, size) = root
            .file(DOCUMENT, MAX_HEADER_BYTES + MAX_DOCUMENT_BYTES)?
            .ok_or_else(|| ImageError::NotAnImage {
                path: dir.to_path_buf(),
                reason: "it has no snapshot document".into(),
            })?;
        let mut bytes = Vec::with_capacity(size as usize);
        // The file may grow after its size was checked: read no more.
        f.take(MAX_HEADER_BYTES + MAX_DOCUMENT_BYTES + 1)
            .read_to_end(&mut bytes)
            .at_path("reading", &path)?;
        let (version, doc) = parse_versioned(&path, &bytes)?;
        Ok((
            Self {
                dir: root,
                version,
                packs_dir: Mutex::new(None),
                packs: Mutex::new(HashMap::new()),
                loose: (version == v1::VERSION).then(v1::LooseChunks::default),
            },
            doc,
        ))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The image's format on disk (its document was converted to this
    /// build's where it is older).
    pub fn version(&self) -> u32 {
        self.version
    }

    pub(super) fn pack_path(&self, id: &str) -> PathBuf {
        pack_file(&self.dir.path().join(PACKS), id)
    }

    /// Where the chunk `r` is read from: its pack, or its own file in a
    /// format-1 image.
    pub(super) fn chunk_path(&self, r: &ChunkRef) -> PathBuf {
        match &self.loose {
            Some(_) => v1::LooseChunks::path(self.dir.path(), &r.hash),
            None => self.pack_path(&r.pack),
        }
    }

    fn packs_dir(&self) -> Result<Option<Arc<SafeDir>>> {
        let mut slot = self.packs_dir.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = &*slot {
            return Ok(d.clone());
        }
        let d = self.dir.subdir(PACKS)?.map(Arc::new);
        *slot = Some(d.clone());
        Ok(d)
    }

    /// The pack holding `r`, checked to reach past its end, and its size.
    fn pack(&self, r: &ChunkRef) -> Result<(Arc<File>, u64)> {
        if let Some(loose) = &self.loose {
            let (f, size) = loose.open(&self.dir, r)?;
            return Ok((Arc::new(f), size));
        }
        let mut packs = self.packs.lock().unwrap_or_else(|e| e.into_inner());
        let (file, size) = match packs.get(&r.pack) {
            Some((f, s)) => (Arc::clone(f), *s),
            None => {
                let missing = || ImageError::MissingPack {
                    path: self.chunk_path(r),
                    hash: r.hash.clone(),
                };
                let dir = self.packs_dir()?.ok_or_else(missing)?;
                let (f, size) = dir
                    // No bound on the whole: reads are bounded by the
                    // reference, checked against the size.
                    .file(&pack_name(&r.pack), u64::MAX)?
                    .ok_or_else(missing)?;
                let f = Arc::new(f);
                packs.insert(r.pack.clone(), (Arc::clone(&f), size));
                (f, size)
            }
        };
        if r.end() > size {
            return Err(ImageError::PackTooShort {
                path: self.chunk_path(r),
                hash: r.hash.clone(),
                end: r.end(),
            });
        }
        Ok((file, size))
    }

    /// The fds this reader holds (its directory, the packs directory and
    /// every pack opened so far): a process forked from its holder that
    /// closes everything else keeps these to go on reading.
    pub fn held_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        let mut fds = vec![self.dir.raw_fd()];
        if let Some(Some(d)) = &*self.packs_dir.lock().unwrap_or_else(|e| e.into_inner()) {
            fds.push(d.raw_fd());
        }
        let packs = self.packs.lock().unwrap_or_else(|e| e.into_inner());
        fds.extend(packs.values().map(|(f, _)| f.as_raw_fd()));
        if let Some(loose) = &self.loose {
            fds.extend(loose.held_fds());
        }
        fds
    }

    /// Check that every referenced chunk is well-formed and inside its pack.
    pub fn check_chunks<'a>(&self, refs: impl IntoIterator<Item = &'a ChunkRef>) -> Result<()> {
        for r in refs {
            r.check_shape()?;
            self.pack(r)?;
        }
        Ok(())
    }

    /// Read, decompress and verify one chunk into `out`.
    pub fn read_chunk(&self, r: &ChunkRef, out: &mut Vec<u8>) -> Result<()> {
        r.check_shape()?;
        let (file, size) = self.pack(r)?;
        read_chunk_with(&self.chunk_path(r), size, r, out, |buf, offset| {
            file.read_exact_at(buf, offset)
        })
    }
}
