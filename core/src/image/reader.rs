//! Reading an image: the document with its checksum, and chunks verified
//! against their references.

use super::{
    io_err, pack_file, ChunkRef, ImageError, Result, DOCUMENT, FORMAT_VERSION, MAGIC,
    MAX_DOCUMENT_BYTES, PACKS,
};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A committed image, open for reading.
#[derive(Debug)]
pub struct ImageReader {
    dir: PathBuf,
    version: u32,
    /// Open packs and their sizes, by id.
    packs: Mutex<HashMap<String, (Arc<File>, u64)>>,
}

impl ImageReader {
    /// Open the image at `dir` and parse its document.
    pub fn open<T: DeserializeOwned>(dir: &Path) -> Result<(Self, T)> {
        let path = dir.join(DOCUMENT);
        let not_image = |reason: &str| ImageError::NotAnImage {
            path: dir.to_path_buf(),
            reason: reason.into(),
        };
        if !dir.is_dir() {
            return Err(not_image("no such directory"));
        }
        let mut f = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => not_image("it has no snapshot document"),
            _ => ImageError::Io {
                op: "opening",
                path: path.clone(),
                source: e,
            },
        })?;
        let mut header = Vec::new();
        let mut byte = [0u8; 1];
        while header.len() < 200 {
            match f.read(&mut byte).map_err(io_err("reading", &path))? {
                0 => break,
                _ if byte[0] == b'\n' => break,
                _ => header.push(byte[0]),
            }
        }
        let header = String::from_utf8(header).map_err(|_| not_image("the header is not text"))?;
        let fields: Vec<&str> = header.split(' ').collect();
        if fields.len() != 4 || fields[0] != MAGIC {
            return Err(not_image(
                "the document does not start with a hiber-image header",
            ));
        }
        let version: u32 = fields[1]
            .parse()
            .map_err(|_| not_image("bad version in the header"))?;
        if version != FORMAT_VERSION {
            return Err(ImageError::UnsupportedVersion {
                path: path.clone(),
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
        let mut json = Vec::with_capacity(len as usize);
        Read::by_ref(&mut f)
            .take(len + 1)
            .read_to_end(&mut json)
            .map_err(io_err("reading", &path))?;
        if (json.len() as u64) < len {
            return Err(ImageError::DocumentTruncated {
                path,
                expected: len,
                found: json.len() as u64,
            });
        }
        if json.len() as u64 > len || blake3::hash(&json).to_hex().as_str() != sum {
            return Err(ImageError::DocumentChecksum { path });
        }
        let doc =
            serde_json::from_slice(&json).map_err(|source| ImageError::Json { path, source })?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                version,
                packs: Mutex::new(HashMap::new()),
            },
            doc,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub(super) fn pack_path(&self, id: &str) -> PathBuf {
        pack_file(&self.dir.join(PACKS), id)
    }

    /// The pack holding `r`, checked to reach past its end.
    fn pack(&self, r: &ChunkRef) -> Result<Arc<File>> {
        let mut packs = self.packs.lock().unwrap_or_else(|e| e.into_inner());
        let (file, size) = match packs.get(&r.pack) {
            Some((f, s)) => (Arc::clone(f), *s),
            None => {
                let path = self.pack_path(&r.pack);
                let f = File::open(&path).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => ImageError::MissingPack {
                        path: path.clone(),
                        hash: r.hash.clone(),
                    },
                    _ => ImageError::Io {
                        op: "opening",
                        path: path.clone(),
                        source: e,
                    },
                })?;
                let size = f.metadata().map_err(io_err("reading", &path))?.len();
                let f = Arc::new(f);
                packs.insert(r.pack.clone(), (Arc::clone(&f), size));
                (f, size)
            }
        };
        if r.end() > size {
            return Err(ImageError::PackTooShort {
                path: self.pack_path(&r.pack),
                hash: r.hash.clone(),
                size,
                end: r.end(),
            });
        }
        Ok(file)
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
        let file = self.pack(r)?;
        let corrupt = |reason: String| ImageError::ChunkCorrupt {
            path: self.pack_path(&r.pack),
            hash: r.hash.clone(),
            reason,
        };
        out.clear();
        if r.stored_len == r.raw_len {
            out.resize(r.raw_len as usize, 0);
            file.read_exact_at(out, r.offset)
                .map_err(io_err("reading", &self.pack_path(&r.pack)))?;
        } else {
            let mut stored = vec![0u8; r.stored_len as usize];
            file.read_exact_at(&mut stored, r.offset)
                .map_err(io_err("reading", &self.pack_path(&r.pack)))?;
            out.reserve(r.raw_len as usize);
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
}
