//! The image on disk: a directory with one versioned metadata document and
//! content-addressed chunks of page data.
//!
//! ```text
//! DIR/snapshot            "hiber-image VERSION BLAKE3 LEN\n" + LEN bytes of JSON
//! DIR/chunks/ab/abcd...   one chunk: zstd frame, or raw when zstd does not shrink it
//! STORE/ab/abcd...        the same chunk in the store; DIR's copy is a hard link
//! ```
//!
//! A chunk is named by the blake3 hash of its uncompressed bytes, so a
//! later checkpoint of the same processes finds unchanged windows in the
//! store and only links them. An image is written under `DIR.tmp-PID` and
//! renamed into place after one `syncfs`: a crash leaves either no image or
//! a whole one. Every read checks the document checksum, every chunk's
//! size against its reference and its hash after decompression.

mod store;

pub use store::{prune_store, PruneStats};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Version of the image layout and document schema this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest chunk a reader accepts (the writer makes 256 KiB page windows).
pub const MAX_CHUNK_BYTES: u32 = 4 << 20;
/// Largest metadata document a reader accepts.
pub const MAX_DOCUMENT_BYTES: u64 = 256 << 20;
const MAGIC: &str = "hiber-image";
const DOCUMENT: &str = "snapshot";
const CHUNKS: &str = "chunks";
const ZSTD_LEVEL: i32 = 1;

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
    #[error("{path} has image format {found}; this hiber reads format {FORMAT_VERSION}")]
    UnsupportedVersion { path: PathBuf, found: u32 },
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
    #[error("serialising the metadata: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("chunk {path} is missing")]
    MissingChunk { path: PathBuf },
    #[error("chunk {path} has {found} bytes, the image says {expected}")]
    ChunkSize {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("chunk {path} is corrupt: {reason}")]
    ChunkCorrupt { path: PathBuf, reason: String },
    #[error("bad chunk reference {hash:?}: {reason}")]
    BadChunkRef { hash: String, reason: String },
    #[error("chunk writer thread failed")]
    WorkerPanicked,
}

pub type Result<T> = std::result::Result<T, ImageError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A reference from the document to one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// blake3 of the uncompressed bytes, 64 lowercase hex digits.
    pub hash: String,
    pub raw_len: u32,
    /// Bytes on disk; equal to `raw_len` for a chunk stored uncompressed.
    pub stored_len: u32,
}

impl ChunkRef {
    /// `chunks/ab/abcd...` relative to a directory of chunks.
    fn rel_path(&self) -> PathBuf {
        PathBuf::from(&self.hash[..2]).join(&self.hash)
    }

    fn check_shape(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(ImageError::BadChunkRef {
                hash: self.hash.clone(),
                reason: reason.into(),
            })
        };
        if self.hash.len() != 64
            || !self
                .hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return bad("not 64 lowercase hex digits");
        }
        if self.raw_len == 0 || self.raw_len > MAX_CHUNK_BYTES {
            return bad("uncompressed length out of bounds");
        }
        if self.stored_len == 0 || self.stored_len > self.raw_len {
            return bad("stored length out of bounds");
        }
        Ok(())
    }
}

/// Bytes handled by a writer so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Chunks referenced (with repeats).
    pub chunks: u64,
    /// Uncompressed bytes of every chunk referenced.
    pub raw_bytes: u64,
    /// Bytes this writer wrote to disk (chunks new to the store).
    pub written_bytes: u64,
    /// Chunks found in the store or already in this image.
    pub reused_chunks: u64,
}

#[derive(Debug, Default)]
struct Counters {
    chunks: AtomicU64,
    raw_bytes: AtomicU64,
    written_bytes: AtomicU64,
    reused_chunks: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    /// `DIR.tmp-PID/chunks`.
    chunks: PathBuf,
    store: Option<PathBuf>,
    /// Hashes already linked into this image.
    linked: Mutex<HashMap<String, u32>>,
    counters: Counters,
}

impl Shared {
    fn put(
        &self,
        raw: &[u8],
        compressor: &mut zstd::bulk::Compressor<'static>,
    ) -> Result<ChunkRef> {
        let hash = blake3::hash(raw).to_hex().to_string();
        let len = u32::try_from(raw.len())
            .ok()
            .filter(|&l| l > 0 && l <= MAX_CHUNK_BYTES)
            .ok_or_else(|| ImageError::BadChunkRef {
                hash: hash.clone(),
                reason: format!("chunk of {} bytes", raw.len()),
            })?;
        self.counters.chunks.fetch_add(1, Ordering::Relaxed);
        self.counters
            .raw_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        let mut r = ChunkRef {
            hash,
            raw_len: len,
            stored_len: 0,
        };
        let dest = self.chunks.join(r.rel_path());
        if let Some(&stored) = self.linked.lock().expect("linked set").get(&r.hash) {
            self.counters.reused_chunks.fetch_add(1, Ordering::Relaxed);
            r.stored_len = stored;
            return Ok(r);
        }
        // Two workers may meet the same new chunk at once: both write it
        // under private temporary names and the renames agree.
        let r = self.store_new(raw, r, &dest, compressor)?;
        self.linked
            .lock()
            .expect("linked set")
            .insert(r.hash.clone(), r.stored_len);
        Ok(r)
    }

    fn store_new(
        &self,
        raw: &[u8],
        mut r: ChunkRef,
        dest: &Path,
        compressor: &mut zstd::bulk::Compressor<'static>,
    ) -> Result<ChunkRef> {
        let len = r.raw_len;
        let dir = dest.parent().expect("chunk path has a parent");
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        if let Some(store) = &self.store {
            let in_store = store.join(r.rel_path());
            if let Ok(meta) = fs::metadata(&in_store) {
                if meta.len() <= len as u64 && meta.len() > 0 {
                    if link_or_copy(&in_store, dest)? {
                        self.counters
                            .written_bytes
                            .fetch_add(meta.len(), Ordering::Relaxed);
                    }
                    self.counters.reused_chunks.fetch_add(1, Ordering::Relaxed);
                    r.stored_len = meta.len() as u32;
                    return Ok(r);
                }
            }
            let data = encode(raw, compressor)?;
            r.stored_len = data.len() as u32;
            write_new(&in_store, &data)?;
            self.counters
                .written_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            link_or_copy(&in_store, dest)?;
        } else {
            let data = encode(raw, compressor)?;
            r.stored_len = data.len() as u32;
            write_new(dest, &data)?;
            self.counters
                .written_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Ok(r)
    }
}

fn compressor() -> zstd::bulk::Compressor<'static> {
    zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd compressor at a valid level")
}

/// The bytes to store: zstd when it shrinks the chunk, else the raw bytes.
fn encode(raw: &[u8], compressor: &mut zstd::bulk::Compressor<'static>) -> Result<Vec<u8>> {
    let packed = compressor.compress(raw).map_err(|source| ImageError::Io {
        op: "compressing a chunk",
        path: PathBuf::new(),
        source,
    })?;
    Ok(if packed.len() < raw.len() {
        packed
    } else {
        raw.to_vec()
    })
}

/// Write `data` to `path` through a temporary name, so a chunk is never
/// seen half-written under its hash.
fn write_new(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().expect("chunk path has a parent");
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    f.write_all(data).map_err(io_err("writing", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err("renaming into place", path))
}

/// Hard-link `from` to `to`; copy when they are on different filesystems.
/// Returns whether it copied.
fn link_or_copy(from: &Path, to: &Path) -> Result<bool> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e)
            if e.raw_os_error() == Some(libc::EXDEV) || e.raw_os_error() == Some(libc::EMLINK) =>
        {
            let data = fs::read(from).map_err(io_err("reading", from))?;
            write_new(to, &data)?;
            Ok(true)
        }
        Err(source) => Err(ImageError::Io {
            op: "linking",
            path: to.to_path_buf(),
            source,
        }),
    }
}

/// An image being written. Dropped before [`ImageWriter::commit`], it
/// removes everything it wrote except chunks added to the store.
#[derive(Debug)]
pub struct ImageWriter {
    dir: PathBuf,
    tmp: PathBuf,
    shared: Arc<Shared>,
    committed: bool,
}

/// What a commit produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedImage {
    /// Bytes of the image directory: the document and every chunk it holds.
    pub image_bytes: u64,
}

impl ImageWriter {
    /// Start an image at `dir` (which must not exist), reusing chunks from `store`.
    pub fn create(dir: &Path, store: Option<&Path>) -> Result<Self> {
        if dir.exists() {
            return Err(ImageError::Exists {
                path: dir.to_path_buf(),
            });
        }
        let name = dir.file_name().ok_or_else(|| ImageError::NotAnImage {
            path: dir.to_path_buf(),
            reason: "an image needs a directory name".into(),
        })?;
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(io_err("creating", &parent))?;
        let tmp = parent.join(format!(
            "{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if tmp.exists() {
            // Left by an earlier run of a process with our pid: never committed.
            fs::remove_dir_all(&tmp).map_err(io_err("removing stale", &tmp))?;
        }
        let chunks = tmp.join(CHUNKS);
        fs::create_dir_all(&chunks).map_err(io_err("creating", &chunks))?;
        if let Some(s) = store {
            fs::create_dir_all(s).map_err(io_err("creating store", s))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tmp,
            shared: Arc::new(Shared {
                chunks,
                store: store.map(Path::to_path_buf),
                linked: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
            committed: false,
        })
    }

    /// Store one chunk from the calling thread.
    pub fn put_chunk(&self, raw: &[u8]) -> Result<ChunkRef> {
        self.shared.put(raw, &mut compressor())
    }

    /// A pool of `threads` workers hashing, compressing and writing chunks,
    /// with at most `max_in_flight` chunks queued (bounding memory).
    pub fn sink(&self, threads: usize, max_in_flight: usize) -> ChunkSink<'_> {
        let (job_tx, job_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(max_in_flight.max(1));
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel();
        let workers = (0..threads.max(1))
            .map(|_| {
                let jobs = Arc::clone(&job_rx);
                let done = done_tx.clone();
                let shared = Arc::clone(&self.shared);
                std::thread::spawn(move || {
                    let mut c = compressor();
                    loop {
                        let job = jobs.lock().expect("job queue").recv();
                        let Ok((ticket, data)) = job else { break };
                        let result = shared.put(&data, &mut c);
                        if done.send((ticket, result)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        ChunkSink {
            jobs: Some(job_tx),
            done: done_rx,
            workers,
            next: 0,
            results: Vec::new(),
            _writer: PhantomData,
        }
    }

    pub fn stats(&self) -> WriteStats {
        let c = &self.shared.counters;
        WriteStats {
            chunks: c.chunks.load(Ordering::Relaxed),
            raw_bytes: c.raw_bytes.load(Ordering::Relaxed),
            written_bytes: c.written_bytes.load(Ordering::Relaxed),
            reused_chunks: c.reused_chunks.load(Ordering::Relaxed),
        }
    }

    /// Write the document, make everything durable and move the image into place.
    pub fn commit<T: Serialize>(mut self, document: &T) -> Result<CommittedImage> {
        let json = serde_json::to_vec(document).map_err(ImageError::Serialize)?;
        let header = format!(
            "{MAGIC} {FORMAT_VERSION} {} {}\n",
            blake3::hash(&json).to_hex(),
            json.len()
        );
        let doc_path = self.tmp.join(DOCUMENT);
        let mut f = File::create(&doc_path).map_err(io_err("creating", &doc_path))?;
        f.write_all(header.as_bytes())
            .map_err(io_err("writing", &doc_path))?;
        f.write_all(&json).map_err(io_err("writing", &doc_path))?;
        // One syncfs covers the chunks and the document (and the store when
        // it shares the filesystem); cheaper than an fsync per chunk.
        syncfs(&f, &doc_path)?;
        if let Some(store) = &self.shared.store {
            let s = File::open(store).map_err(io_err("opening", store))?;
            syncfs(&s, store)?;
        }
        drop(f);
        if self.dir.exists() {
            return Err(ImageError::Exists {
                path: self.dir.clone(),
            });
        }
        fs::rename(&self.tmp, &self.dir).map_err(io_err("renaming into place", &self.dir))?;
        self.committed = true;
        let parent = match self.dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing", &parent))?;
        let image_bytes = (header.len() + json.len()) as u64 + dir_bytes(&self.dir.join(CHUNKS))?;
        Ok(CommittedImage { image_bytes })
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = fs::remove_dir_all(&self.tmp) {
                tracing::warn!(path = %self.tmp.display(), error = %e, "could not remove an unfinished image");
            }
        }
    }
}

fn syncfs(f: &File, path: &Path) -> Result<()> {
    // SAFETY: syncfs only takes a valid fd.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(ImageError::Io {
            op: "syncing",
            path: path.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).map_err(io_err("listing", &d))? {
            let e = e.map_err(io_err("listing", &d))?;
            let meta = e.metadata().map_err(io_err("reading", &e.path()))?;
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// Chunks handed to a writer's worker pool; tickets index the result of
/// [`ChunkSink::finish`].
#[derive(Debug)]
pub struct ChunkSink<'a> {
    jobs: Option<mpsc::SyncSender<(usize, Vec<u8>)>>,
    done: mpsc::Receiver<(usize, Result<ChunkRef>)>,
    workers: Vec<JoinHandle<()>>,
    next: usize,
    results: Vec<Option<ChunkRef>>,
    _writer: PhantomData<&'a ImageWriter>,
}

impl ChunkSink<'_> {
    /// Queue one chunk; blocks while the queue is full. An error of an
    /// earlier chunk is returned here as soon as it is known.
    pub fn submit(&mut self, data: Vec<u8>) -> Result<usize> {
        self.collect(false)?;
        let ticket = self.next;
        self.next += 1;
        let jobs = self.jobs.as_ref().expect("sink not finished");
        if jobs.send((ticket, data)).is_err() {
            // Every worker is gone: the reason is in the results.
            self.collect(true)?;
            return Err(ImageError::WorkerPanicked);
        }
        Ok(ticket)
    }

    fn collect(&mut self, all: bool) -> Result<()> {
        loop {
            let item = if all {
                match self.done.recv() {
                    Ok(i) => i,
                    Err(_) => return Ok(()),
                }
            } else {
                match self.done.try_recv() {
                    Ok(i) => i,
                    Err(_) => return Ok(()),
                }
            };
            let (ticket, r) = item;
            if self.results.len() <= ticket {
                self.results.resize(ticket + 1, None);
            }
            self.results[ticket] = Some(r?);
        }
    }

    /// Wait for every queued chunk; the references, by ticket.
    pub fn finish(mut self) -> Result<Vec<ChunkRef>> {
        self.jobs = None;
        let collected = self.collect(true);
        let mut panicked = false;
        for w in self.workers.drain(..) {
            panicked |= w.join().is_err();
        }
        collected?;
        if panicked {
            return Err(ImageError::WorkerPanicked);
        }
        let mut out = Vec::with_capacity(self.next);
        for r in std::mem::take(&mut self.results)
            .into_iter()
            .chain(std::iter::repeat(None))
            .take(self.next)
        {
            out.push(r.ok_or(ImageError::WorkerPanicked)?);
        }
        Ok(out)
    }
}

impl Drop for ChunkSink<'_> {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A committed image, open for reading.
#[derive(Debug)]
pub struct ImageReader {
    dir: PathBuf,
    version: u32,
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

    fn chunk_path(&self, r: &ChunkRef) -> PathBuf {
        self.dir.join(CHUNKS).join(r.rel_path())
    }

    /// Check that every referenced chunk is well-formed, present and of its size.
    pub fn check_chunks<'a>(&self, refs: impl IntoIterator<Item = &'a ChunkRef>) -> Result<()> {
        for r in refs {
            r.check_shape()?;
            let path = self.chunk_path(r);
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ImageError::MissingChunk { path })
                }
                Err(source) => {
                    return Err(ImageError::Io {
                        op: "reading",
                        path,
                        source,
                    })
                }
            };
            if meta.len() != r.stored_len as u64 {
                return Err(ImageError::ChunkSize {
                    path,
                    expected: r.stored_len as u64,
                    found: meta.len(),
                });
            }
        }
        Ok(())
    }

    /// Read, decompress and verify one chunk into `out`.
    pub fn read_chunk(&self, r: &ChunkRef, out: &mut Vec<u8>) -> Result<()> {
        r.check_shape()?;
        let path = self.chunk_path(r);
        let mut f = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::MissingChunk { path: path.clone() },
            _ => ImageError::Io {
                op: "opening",
                path: path.clone(),
                source: e,
            },
        })?;
        let mut stored = Vec::with_capacity(r.stored_len as usize);
        Read::by_ref(&mut f)
            .take(r.stored_len as u64 + 1)
            .read_to_end(&mut stored)
            .map_err(io_err("reading", &path))?;
        if stored.len() as u64 != r.stored_len as u64 {
            return Err(ImageError::ChunkSize {
                path,
                expected: r.stored_len as u64,
                found: stored.len() as u64,
            });
        }
        out.clear();
        if r.stored_len == r.raw_len {
            out.extend_from_slice(&stored);
        } else {
            out.reserve(r.raw_len as usize);
            let n = zstd::bulk::Decompressor::new()
                .and_then(|mut d| d.decompress_to_buffer(&stored, out))
                .map_err(|e| ImageError::ChunkCorrupt {
                    path: path.clone(),
                    reason: format!("zstd: {e}"),
                })?;
            if n != r.raw_len as usize {
                return Err(ImageError::ChunkCorrupt {
                    path,
                    reason: format!("decompressed to {n} bytes, expected {}", r.raw_len),
                });
            }
        }
        if blake3::hash(out).to_hex().as_str() != r.hash {
            return Err(ImageError::ChunkCorrupt {
                path,
                reason: "content does not match its hash".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Doc {
        refs: Vec<ChunkRef>,
    }

    fn page(seed: u8) -> Vec<u8> {
        (0..65536u32)
            .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 8) as u8)
            .collect()
    }

    fn write(dir: &Path, store: Option<&Path>, data: &[Vec<u8>]) -> (WriteStats, Doc) {
        let w = ImageWriter::create(dir, store).unwrap();
        let mut sink = w.sink(2, 4);
        for d in data {
            sink.submit(d.clone()).unwrap();
        }
        let refs = sink.finish().unwrap();
        let stats = w.stats();
        let doc = Doc { refs };
        w.commit(&doc).unwrap();
        (stats, doc)
    }

    #[test]
    fn round_trip_and_store_reuse() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let data = vec![page(3), page(5), page(3), random];
        let (s1, doc) = write(&t.path().join("a"), Some(&store), &data);
        assert_eq!(s1.chunks, 4);
        assert_eq!(s1.reused_chunks, 1);
        let (r, back): (ImageReader, Doc) = ImageReader::open(&t.path().join("a")).unwrap();
        assert_eq!(back, doc);
        r.check_chunks(&back.refs).unwrap();
        let mut buf = Vec::new();
        for (d, c) in data.iter().zip(&back.refs) {
            r.read_chunk(c, &mut buf).unwrap();
            assert_eq!(&buf, d);
        }
        // A second image of the same data writes nothing new.
        let (s2, _) = write(&t.path().join("b"), Some(&store), &data);
        assert_eq!(s2.written_bytes, 0);
        assert_eq!(s2.reused_chunks, 4);
        assert!(ImageWriter::create(&t.path().join("a"), None).is_err());
    }

    #[test]
    fn corruption_is_named() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        let (_, doc) = write(&dir, None, &[page(7)]);
        let open = || ImageReader::open::<Doc>(&dir);
        let doc_path = dir.join(DOCUMENT);
        let original = fs::read(&doc_path).unwrap();

        let mut flipped = original.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        fs::write(&doc_path, &flipped).unwrap();
        assert!(matches!(open(), Err(ImageError::DocumentChecksum { .. })));

        fs::write(&doc_path, &original[..original.len() - 10]).unwrap();
        assert!(matches!(open(), Err(ImageError::DocumentTruncated { .. })));
        fs::write(&doc_path, &original).unwrap();

        let (r, _) = open().unwrap();
        let chunk = r.chunk_path(&doc.refs[0]);
        let mut bytes = fs::read(&chunk).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&chunk, &bytes).unwrap();
        let mut buf = Vec::new();
        let err = r.read_chunk(&doc.refs[0], &mut buf).unwrap_err();
        assert!(matches!(err, ImageError::ChunkCorrupt { .. }), "{err}");
        assert!(err.to_string().contains(&doc.refs[0].hash));

        fs::write(&chunk, &bytes[..mid]).unwrap();
        assert!(matches!(
            r.check_chunks(&doc.refs),
            Err(ImageError::ChunkSize { .. })
        ));
        fs::remove_file(&chunk).unwrap();
        assert!(matches!(
            r.check_chunks(&doc.refs),
            Err(ImageError::MissingChunk { .. })
        ));

        let hostile = ChunkRef {
            hash: "../../etc/passwd".into(),
            raw_len: 1,
            stored_len: 1,
        };
        assert!(matches!(
            r.check_chunks([&hostile]),
            Err(ImageError::BadChunkRef { .. })
        ));
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        let w = ImageWriter::create(&dir, None).unwrap();
        w.put_chunk(&page(1)).unwrap();
        drop(w);
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
    }
}
