//! Image format 1, written by hiber up to commit 308f2d2 (format 2 came
//! with 0a6f4d5): each chunk a file of its own, and chunk references
//! without a pack or an offset.
//!
//! ```text
//! DIR/snapshot              "hiber-image 1 BLAKE3 LEN\n" + LEN bytes of JSON
//! DIR/chunks/ab/abcd…       one chunk, exactly its stored bytes: a zstd
//!                           frame, or the raw bytes where zstd did not
//!                           shrink them (ab: the hash's first two digits)
//! ```
//!
//! Reading one, the document is converted into format 2's ([`Document`]
//! into [`Current`]), and the loose chunk files are served as packs of one
//! chunk each ([`LooseChunks`]): a converted reference names its own hash
//! as its pack, at offset 0. The rest of the engine sees a format-2 image.
//!
//! The conversion works on the document's JSON tree, not on frozen copies
//! of every format-1 struct: the two formats differ in the chunk reference
//! alone (typed here, [`ChunkRef`]), and a typed conversion into the
//! current structs would have to change each time one of them gains a
//! field, where this one targets format 2's JSON, which within format 2
//! only ever gains fields that default when absent. Written once, this
//! module does not change when the schema does.

use super::dir::SafeDir;
use super::format::{ChunkRef as CurrentChunkRef, Current, ImageError, Result, MAX_CHUNK_BYTES};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The format this module reads.
pub(super) const VERSION: u32 = 1;
/// The directory of loose chunks in a format-1 image.
pub(super) const CHUNKS: &str = "chunks";

/// A format-1 chunk reference: the chunk's file is named by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChunkRef {
    pub hash: String,
    pub raw_len: u32,
    pub stored_len: u32,
}

impl TryFrom<ChunkRef> for CurrentChunkRef {
    type Error = ImageError;

    /// The chunk as a pack of its own: the pack id is the hash (64 hex
    /// digits, a valid pack id), the chunk at its start. Shape-checked, so
    /// nothing converted names a path outside `DIR/chunks`.
    fn try_from(r: ChunkRef) -> Result<Self> {
        let out = Self {
            pack: r.hash.clone(),
            hash: r.hash,
            raw_len: r.raw_len,
            stored_len: r.stored_len,
            offset: 0,
        };
        out.check_shape()?;
        Ok(out)
    }
}

/// A format-1 document: the JSON of a format-1 `Snapshot`, and the path
/// its errors name.
#[derive(Debug)]
pub(super) struct Document {
    pub path: PathBuf,
    pub json: Value,
}

impl TryFrom<Document> for Current {
    type Error = ImageError;

    /// Every chunk reference, at the places format 1 had them (its
    /// `Snapshot::chunks`), converted; anything else is format 2's already.
    fn try_from(mut doc: Document) -> Result<Self> {
        let path = doc.path;
        let mut at = Walk {
            path: &path,
            pointer: String::new(),
        };
        at.each(&mut doc.json, "processes", |at, process| {
            at.optional(process, "mm", |at, mm| {
                at.each(mm, "vmas", |at, vma| {
                    at.each(vma, "pages", |at, page| {
                        at.field(page, "chunk", Walk::chunk)
                    })
                })
            })
        })?;
        at.each(&mut doc.json, "shmem", |at, object| {
            at.each(object, "pages", |at, page| {
                at.field(page, "chunk", Walk::chunk)
            })
        })?;
        at.each(&mut doc.json, "files", |at, file| {
            at.field(file, "kind", |at, kind| {
                if kind.get("type").and_then(Value::as_str) != Some("regular") {
                    return Ok(());
                }
                at.optional(kind, "ghost", |at, ghost| {
                    at.each(ghost, "chunks", Walk::chunk)
                })
            })
        })?;
        at.each(&mut doc.json, "pipes", |at, pipe| {
            at.each(pipe, "data", Walk::chunk)
        })?;
        Ok(Current(doc.json))
    }
}

/// A place in the document being converted, as a JSON pointer for errors.
struct Walk<'a> {
    path: &'a Path,
    pointer: String,
}

impl Walk<'_> {
    fn error(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Convert {
            path: self.path.to_path_buf(),
            version: VERSION,
            at: if self.pointer.is_empty() {
                "/".into()
            } else {
                self.pointer.clone()
            },
            reason: reason.into(),
        }
    }

    /// `f` on `v`'s member `key`, with the pointer extended.
    fn enter<T>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let len = self.pointer.len();
        self.pointer.push('/');
        self.pointer.push_str(key);
        let out = f(self);
        self.pointer.truncate(len);
        out
    }

    fn member<'v>(&self, v: &'v mut Value, key: &str) -> Result<&'v mut Value> {
        match v {
            Value::Object(m) => m
                .get_mut(key)
                .ok_or_else(|| self.error(format!("no member {key:?}"))),
            _ => Err(self.error("not an object")),
        }
    }

    /// `f` on the member `key` of `v`, which must be there.
    fn field(
        &mut self,
        v: &mut Value,
        key: &str,
        f: impl FnOnce(&mut Self, &mut Value) -> Result<()>,
    ) -> Result<()> {
        let m = self.member(v, key)?;
        self.enter(key, |at| f(at, m))
    }

    /// `f` on the member `key` of `v` unless it is null.
    fn optional(
        &mut self,
        v: &mut Value,
        key: &str,
        f: impl FnOnce(&mut Self, &mut Value) -> Result<()>,
    ) -> Result<()> {
        self.field(v, key, |at, m| if m.is_null() { Ok(()) } else { f(at, m) })
    }

    /// `f` on each element of the array `key` of `v`.
    fn each(
        &mut self,
        v: &mut Value,
        key: &str,
        mut f: impl FnMut(&mut Self, &mut Value) -> Result<()>,
    ) -> Result<()> {
        self.field(v, key, |at, array| {
            let Value::Array(items) = array else {
                return Err(at.error("not an array"));
            };
            for (i, item) in items.iter_mut().enumerate() {
                at.enter(&i.to_string(), |at| f(at, item))?;
            }
            Ok(())
        })
    }

    /// The format-1 chunk reference at `v`, replaced by its format-2 form.
    fn chunk(&mut self, v: &mut Value) -> Result<()> {
        let old: ChunkRef = serde_json::from_value(v.take())
            .map_err(|e| self.error(format!("not a format-1 chunk reference: {e}")))?;
        let new = CurrentChunkRef::try_from(old)?;
        *v = serde_json::to_value(new).map_err(ImageError::Serialize)?;
        Ok(())
    }
}

/// The loose chunk files of a format-1 image, read as packs of one chunk
/// each, through the same [`SafeDir`] rules as packs: nothing followed,
/// nothing but the image's own regular files. A file is opened for each
/// read and closed after (an image may hold many thousands); the
/// directories above them stay open, so [`Self::held_fds`] is enough for a
/// process that closes everything else to go on reading.
#[derive(Debug, Default)]
pub(super) struct LooseChunks {
    /// `DIR/chunks`, once opened (None inside: the image has none).
    dir: Mutex<Option<Option<Arc<SafeDir>>>>,
    /// Its directories `ab`, by name, once looked up (None: absent).
    fans: Mutex<HashMap<String, Option<Arc<SafeDir>>>>,
}

impl LooseChunks {
    /// `DIR/chunks/ab/HASH`, for errors.
    pub fn path(root: &Path, hash: &str) -> PathBuf {
        root.join(CHUNKS)
            .join(hash.get(..2).unwrap_or(hash))
            .join(hash)
    }

    fn fan(&self, root: &SafeDir, name: &str) -> Result<Option<Arc<SafeDir>>> {
        let chunks = {
            let mut slot = self.dir.lock().unwrap_or_else(|e| e.into_inner());
            match &*slot {
                Some(d) => d.clone(),
                None => slot.insert(root.subdir(CHUNKS)?.map(Arc::new)).clone(),
            }
        };
        let Some(chunks) = chunks else {
            return Ok(None);
        };
        let mut fans = self.fans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = fans.get(name) {
            return Ok(d.clone());
        }
        let d = chunks.subdir(name)?.map(Arc::new);
        fans.insert(name.to_string(), d.clone());
        Ok(d)
    }

    /// The file of chunk `r` (a converted reference: its pack is its hash,
    /// at offset 0), which must hold exactly its `stored_len` bytes, and
    /// that size.
    pub fn open(&self, root: &SafeDir, r: &CurrentChunkRef) -> Result<(File, u64)> {
        r.check_shape()?;
        if r.pack != r.hash || r.offset != 0 {
            return Err(ImageError::BadChunkRef {
                hash: r.hash.clone(),
                reason: "a format-1 chunk is a file of its own (its pack is its hash, at offset 0)"
                    .into(),
            });
        }
        let path = Self::path(root.path(), &r.hash);
        let missing = || ImageError::MissingChunk {
            path: path.clone(),
            hash: r.hash.clone(),
        };
        let fan = self.fan(root, &r.hash[..2])?.ok_or_else(missing)?;
        let (file, size) = fan
            .file(&r.hash, MAX_CHUNK_BYTES as u64)?
            .ok_or_else(missing)?;
        if size != r.stored_len as u64 {
            // No size: only that it is not the chunk's, as for a pack.
            return Err(ImageError::ChunkCorrupt {
                path,
                hash: r.hash.clone(),
                reason: format!("its file does not hold the {} bytes stored", r.stored_len),
            });
        }
        Ok((file, size))
    }

    /// The directories held open so far: `DIR/chunks` and its `ab`s.
    pub fn held_fds(&self) -> Vec<std::os::fd::RawFd> {
        let mut fds = Vec::new();
        if let Some(Some(d)) = &*self.dir.lock().unwrap_or_else(|e| e.into_inner()) {
            fds.push(d.raw_fd());
        }
        let fans = self.fans.lock().unwrap_or_else(|e| e.into_inner());
        fds.extend(fans.values().flatten().map(|d| d.raw_fd()));
        fds
    }
}
