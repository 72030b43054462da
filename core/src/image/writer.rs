//! Writing an image: chunks hashed, compressed and appended to packs by a
//! pool of workers; the document and an atomic commit at the end.

use super::format::{
    create_private_dir_all, create_private_file, index_file, pack_file, ChunkRef, ImageError,
    ReadError, Result, DOCUMENT, FORMAT_VERSION, MAGIC, MAX_CHUNK_BYTES, PACKS, PACK_BYTES,
};
use super::store::StoreIndex;
use crate::sys::wrap::WrapIoResult;
use serde::Serialize;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

const ZSTD_LEVEL: i32 = 1;
/// Start writeback of a pack every this many bytes.
const WRITEBACK_BYTES: u64 = 8 << 20;

/// Bytes handled by a writer so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Chunks referenced (with repeats).
    pub chunks: u64,
    /// Uncompressed bytes of every chunk referenced.
    pub raw_bytes: u64,
    /// Bytes this writer wrote to disk (chunks not found in the store).
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

/// The pack chunks are appended to now.
#[derive(Debug)]
struct OpenPack {
    id: String,
    file: File,
    size: u64,
    /// Bytes already handed to writeback.
    flushed: u64,
}

#[derive(Debug)]
struct Shared {
    /// `DIR.tmp-PID/packs`.
    packs: PathBuf,
    store: Option<StoreIndex>,
    /// Every chunk this image holds so far, by hash.
    known: Mutex<HashMap<String, ChunkRef>>,
    /// Store packs linked into this image (Ok) or found unusable (Err).
    store_packs: Mutex<HashMap<String, bool>>,
    /// The packer of chunks put from the caller's thread ([`ImageWriter::put_chunk`]).
    caller: Mutex<Packer>,
    /// The chunks of each pack this writer made, for its index.
    written: Mutex<HashMap<String, Vec<ChunkRef>>>,
    next_pack: AtomicU64,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked while holding a lock fails the whole write
    // anyway (finish reports it); the data under the lock stays usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn put(&self, raw: &[u8], packer: &mut Packer) -> Result<ChunkRef> {
        let hash = blake3::hash(raw).to_hex().to_string();
        let raw_len = u32::try_from(raw.len())
            .ok()
            .filter(|&l| l > 0 && l <= MAX_CHUNK_BYTES)
            .ok_or_else(|| ImageError::BadChunkRef {
                hash: hash.clone(),
                reason: format!("chunk of {} bytes", raw.len()),
            })?;
        self.counters.chunks.fetch_add(1, Ordering::Relaxed);
        self.counters
            .raw_bytes
            .fetch_add(raw_len as u64, Ordering::Relaxed);
        if let Some(r) = lock(&self.known).get(&hash) {
            self.counters.reused_chunks.fetch_add(1, Ordering::Relaxed);
            return Ok(r.clone());
        }
        if let Some(r) = self.reuse_from_store(&hash)? {
            self.counters.reused_chunks.fetch_add(1, Ordering::Relaxed);
            lock(&self.known).insert(hash, r.clone());
            return Ok(r);
        }
        // Two workers meeting the same new chunk at once both append it;
        // either copy is a valid reference.
        let Packer { encoder, pack } = packer;
        let data = encoder.encode(raw)?;
        let r = self.append(pack, hash, raw_len, data)?;
        self.counters
            .written_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        lock(&self.known).insert(r.hash.clone(), r.clone());
        Ok(r)
    }

    /// [`Shared::put`] of a queued chunk, with its tag.
    fn store(&self, raw: &[u8], tag: u64, packer: &mut Packer) -> Result<Stored> {
        self.put(raw, packer).map(|chunk| Stored {
            chunk: Some(chunk),
            tag: Some(tag),
        })
    }

    /// The store's copy of a chunk, once its pack is linked into this image.
    fn reuse_from_store(&self, hash: &str) -> Result<Option<ChunkRef>> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let Some(r) = store.chunks.get(hash) else {
            return Ok(None);
        };
        let mut linked = lock(&self.store_packs);
        let usable = match linked.get(&r.pack) {
            Some(&u) => u,
            None => {
                let u = store.link_into(&r.pack, &self.packs);
                linked.insert(r.pack.clone(), u);
                u
            }
        };
        Ok(usable.then(|| r.clone()))
    }

    /// Append to this packer's own pack (opening a new one when full).
    /// Each worker has its own pack: writers of one file contend on its
    /// inode lock.
    fn append(
        &self,
        cur: &mut Option<OpenPack>,
        hash: String,
        raw_len: u32,
        data: &[u8],
    ) -> Result<ChunkRef> {
        if cur
            .as_ref()
            .is_none_or(|p| p.size + data.len() as u64 > PACK_BYTES)
        {
            let id = format!(
                "{:016x}{:08x}{:08x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                std::process::id(),
                self.next_pack.fetch_add(1, Ordering::Relaxed)
            );
            let path = pack_file(&self.packs, &id);
            let file = create_private_file(&path, true).at_path("creating", &path)?;
            lock(&self.written).insert(id.clone(), Vec::new());
            *cur = Some(OpenPack {
                id,
                file,
                size: 0,
                flushed: 0,
            });
        }
        let pack = cur.as_mut().expect("a pack is open");
        let r = ChunkRef {
            hash,
            raw_len,
            stored_len: data.len() as u32,
            pack: pack.id.clone(),
            offset: pack.size,
        };
        pack.file
            .write_all(data)
            .at_path("writing", pack_file(&self.packs, &r.pack))?;
        pack.size += data.len() as u64;
        lock(&self.written)
            .get_mut(&pack.id)
            .expect("pack registered")
            .push(r.clone());
        if pack.size - pack.flushed >= WRITEBACK_BYTES {
            // Start writeback now, so the commit's syncfs finds little left
            // to do: the disk works while we dump.
            let _ = crate::sys::fs::start_writeback(
                &pack.file,
                pack.flushed as i64,
                (pack.size - pack.flushed) as i64,
            );
            pack.flushed = pack.size;
        }
        Ok(r)
    }
}

/// What one thread needs to put chunks: its compressor and its pack.
#[derive(Debug, Default)]
struct Packer {
    encoder: Encoder,
    pack: Option<OpenPack>,
}

/// A compressor and output buffer, reused for every chunk.
struct Encoder {
    compressor: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self {
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .expect("zstd compressor at a valid level"),
            out: Vec::new(),
        }
    }
}

impl Encoder {
    /// The bytes to store: zstd when it shrinks the chunk, else the raw bytes.
    fn encode<'a>(&'a mut self, raw: &'a [u8]) -> Result<&'a [u8]> {
        // Memory that does not compress (already compressed media, keys,
        // random data) is common; a trial on the first page saves the
        // full attempt.
        const PROBE: usize = 4096;
        if raw.len() > 4 * PROBE {
            self.out.clear();
            self.out.reserve(zstd::zstd_safe::compress_bound(PROBE));
            let probe = self
                .compressor
                .compress_to_buffer(&raw[..PROBE], &mut self.out)
                .at_path("compressing a chunk", PathBuf::new())?;
            if probe >= PROBE - PROBE / 32 {
                return Ok(raw);
            }
        }
        self.out.clear();
        self.out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        let packed = self
            .compressor
            .compress_to_buffer(raw, &mut self.out)
            .at_path("compressing a chunk", PathBuf::new())?;
        Ok(if packed < raw.len() {
            &self.out[..packed]
        } else {
            raw
        })
    }
}

/// An image being written. Dropped before [`ImageWriter::commit`], it
/// removes everything it wrote.
#[derive(Debug)]
pub struct ImageWriter {
    dir: PathBuf,
    tmp: PathBuf,
    shared: Arc<Shared>,
    committed: bool,
    /// Dropped uncommitted, empty `tmp` but keep it (see
    /// [`ImageWriter::create_staged`]).
    keep_staging: bool,
}

/// What a commit produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedImage {
    /// Bytes of the image directory: the document and every pack it links.
    pub image_bytes: u64,
}

fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Remove the unfinished images (`NAME.tmp-PID`) in `parent` that
/// checkpointers which died left behind: directories of our own user
/// whose pid runs no process any more. One whose pid is alive may be
/// another save in progress, or that pid taken since: it is left.
fn remove_abandoned(parent: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let me = crate::sys::process::euid();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.rsplit_once(".tmp-"))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            match fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed an image a killed checkpoint left unfinished")
                }
                Err(err) => {
                    tracing::debug!(path = %path.display(), %err, "could not remove an unfinished image")
                }
            }
        }
    }
}

impl ImageWriter {
    /// Start an image at `dir` (which must not exist), reusing chunks from `store`.
    pub fn create(dir: &Path, store: Option<&Path>) -> Result<Self> {
        Self::open_tmp(dir, store, false)
    }

    /// Like [`ImageWriter::create`], for a checkpoint that may be tried
    /// again: its unfinished directory (`DIR.tmp-PID`) is made once and
    /// kept, emptied, between tries, until [`remove_staging`]. Programs
    /// watching the image's parent directory (a home directory is watched
    /// by GTK programs) would otherwise get an inotify event for each try
    /// while frozen, and hold it unread: a refusal, at every try.
    pub fn create_staged(dir: &Path, store: Option<&Path>) -> Result<Self> {
        Self::open_tmp(dir, store, true)
    }

    fn open_tmp(dir: &Path, store: Option<&Path>, keep_staging: bool) -> Result<Self> {
        if dir.exists() {
            return Err(ImageError::Exists {
                path: dir.to_path_buf(),
            });
        }
        let name = dir.file_name().ok_or_else(|| ImageError::NotAnImage {
            path: dir.to_path_buf(),
            reason: "an image needs a directory name".into(),
        })?;
        let parent = parent_of(dir);
        create_private_dir_all(&parent).at_path("creating", &parent)?;
        let tmp = parent.join(format!(
            "{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if tmp.is_dir() && keep_staging {
            // Ours from an earlier try, or a stale one: emptied in place.
            empty_dir(&tmp).at_path("emptying", &tmp)?;
        } else if tmp.exists() {
            // Left by an earlier run of a process with our pid: never committed.
            fs::remove_dir_all(&tmp).at_path("removing stale", &tmp)?;
        }
        remove_abandoned(&parent);
        let packs = tmp.join(PACKS);
        create_private_dir_all(&packs).at_path("creating", &packs)?;
        let store = store.map(StoreIndex::load).transpose()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tmp,
            keep_staging,
            shared: Arc::new(Shared {
                packs,
                store,
                known: Mutex::new(HashMap::new()),
                store_packs: Mutex::new(HashMap::new()),
                caller: Mutex::new(Packer::default()),
                written: Mutex::new(HashMap::new()),
                next_pack: AtomicU64::new(0),
                counters: Counters::default(),
            }),
            committed: false,
        })
    }

    /// Store one chunk from the calling thread.
    pub fn put_chunk(&self, raw: &[u8]) -> Result<ChunkRef> {
        self.shared.put(raw, &mut lock(&self.shared.caller))
    }

    /// A pool of `threads` workers reading, hashing, compressing and
    /// writing chunks, with at most `max_in_flight` chunks of the caller's
    /// bytes queued (bounding memory). Chunks the workers read themselves
    /// hold no bytes while queued: their queue is not bounded, so the
    /// caller never waits on the workers to queue them.
    pub fn sink(&self, threads: usize, max_in_flight: usize) -> ChunkSink<'_> {
        let (job_tx, job_rx) = mpsc::channel::<(usize, Job)>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let workers = (0..threads.max(1))
            .map(|_| {
                let abandoned = Arc::clone(&abandoned);
                let jobs = Arc::clone(&job_rx);
                let done = done_tx.clone();
                let shared = Arc::clone(&self.shared);
                std::thread::spawn(move || {
                    // Yield to the checkpointer's ptrace exchanges (a
                    // chain of wake-ups, the critical path while frozen)
                    // and to the running session during pre-copy.
                    let _ = crate::sys::process::set_thread_nice(10);
                    let mut packer = Packer::default();
                    // Chunks this worker reads itself land here; it stays
                    // mapped from one to the next.
                    let mut own = Vec::new();
                    loop {
                        let job = lock(&jobs).recv();
                        let Ok((ticket, job)) = job else { break };
                        if abandoned.load(Ordering::Relaxed) {
                            // Dropped unfinished (a refusal, an error): the
                            // rest of the queue is not wanted.
                            break;
                        }
                        let carried_bytes = matches!(job, Job::Bytes(..));
                        let result = match job {
                            Job::Bytes(data, tag) => shared.store(&data, tag, &mut packer),
                            Job::Read(read) => {
                                own.clear();
                                match read(&mut own) {
                                    Ok(Some(tag)) if !own.is_empty() => {
                                        shared.store(&own, tag, &mut packer)
                                    }
                                    Ok(tag) => Ok(Stored { chunk: None, tag }),
                                    Err(e) => Err(ImageError::Read(e)),
                                }
                            }
                        };
                        if done.send((ticket, carried_bytes, result)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        ChunkSink {
            abandoned,
            jobs: Some(job_tx),
            max_bytes_in_flight: max_in_flight.max(1),
            bytes_in_flight: 0,
            done: done_rx,
            workers,
            next: 0,
            finished: 0,
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

    /// Write the indexes and the document, add the new packs to the store,
    /// make everything durable and move the image into place.
    pub fn commit<T: Serialize>(mut self, document: &T) -> Result<CommittedImage> {
        let packs = &self.shared.packs;
        let written = std::mem::take(&mut *lock(&self.shared.written));
        lock(&self.shared.caller).pack = None;
        for (id, chunks) in &written {
            let path = index_file(packs, id);
            let text: String = chunks.iter().map(ChunkRef::index_line).collect();
            create_private_file(&path, false)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .at_path("writing", &path)?;
            if let Some(store) = &self.shared.store {
                // Best effort: an image is whole without the store; a store
                // on another filesystem just does not learn these chunks.
                if let Err(e) = store.add(packs, id) {
                    tracing::warn!(pack = %id, error = %e, "could not add a pack to the store");
                }
            }
        }
        let json = serde_json::to_vec(document).map_err(ImageError::Serialize)?;
        let header = format!(
            "{MAGIC} {FORMAT_VERSION} {} {}\n",
            blake3::hash(&json).to_hex(),
            json.len()
        );
        let doc_path = self.tmp.join(DOCUMENT);
        let mut f = create_private_file(&doc_path, false).at_path("creating", &doc_path)?;
        f.write_all(header.as_bytes())
            .at_path("writing", &doc_path)?;
        f.write_all(&json).at_path("writing", &doc_path)?;
        // One syncfs covers the packs, indexes and document (and the store
        // when it shares the filesystem).
        syncfs(&f, &doc_path)?;
        if let Some(store) = &self.shared.store {
            store.sync()?;
        }
        drop(f);
        if self.dir.exists() {
            return Err(ImageError::Exists {
                path: self.dir.clone(),
            });
        }
        fs::rename(&self.tmp, &self.dir).at_path("renaming into place", &self.dir)?;
        self.committed = true;
        let parent = parent_of(&self.dir);
        File::open(&parent)
            .and_then(|d| d.sync_all())
            .at_path("syncing", &parent)?;
        let mut image_bytes = (header.len() + json.len()) as u64;
        let packs = self.dir.join(PACKS);
        for e in fs::read_dir(&packs).at_path("listing", &packs)? {
            let e = e.at_path("listing", &packs)?;
            image_bytes += e.metadata().at_path("reading", e.path())?.len();
        }
        Ok(CommittedImage { image_bytes })
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        if !self.committed {
            let removed = if self.keep_staging {
                empty_dir(&self.tmp)
            } else {
                fs::remove_dir_all(&self.tmp)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %self.tmp.display(), error = %e, "could not remove an unfinished image");
            }
        }
    }
}

/// Removes what `dir` holds, not `dir` itself.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            fs::remove_dir_all(e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Removes the unfinished directory [`ImageWriter::create_staged`] kept
/// for `dir`, once no try is left.
pub fn remove_staging(dir: &Path) {
    let Some(name) = dir.file_name() else { return };
    let tmp = parent_of(dir).join(format!(
        "{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if let Err(e) = fs::remove_dir_all(&tmp) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %tmp.display(), error = %e, "could not remove an unfinished image");
        }
    }
}

fn syncfs(f: &File, path: &Path) -> Result<()> {
    Ok(crate::sys::fs::syncfs(f).at_path("syncing", path)?)
}

/// Reads the bytes of one chunk in the worker that then stores it, so
/// that reading runs on every worker and the bytes are hashed and
/// compressed while still in cache. It appends them to the buffer it is
/// given (empty) and returns a tag for the caller: Ok(Some(tag)), with
/// nothing appended when there is nothing to store; Ok(None) when the
/// chunk could not be read and that is acceptable; Err fails the sink.
pub type ChunkReader =
    Box<dyn FnOnce(&mut Vec<u8>) -> std::result::Result<Option<u64>, ReadError> + Send>;

enum Job {
    /// Bytes the caller read, and their tag.
    Bytes(Vec<u8>, u64),
    Read(ChunkReader),
}

/// What became of one queued chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// None: there was nothing to store.
    pub chunk: Option<ChunkRef>,
    /// The tag given with the bytes or returned by the reader; None: a
    /// reader could not read its chunk.
    pub tag: Option<u64>,
}

/// Chunks handed to a writer's worker pool; tickets index the result of
/// [`ChunkSink::finish`].
pub struct ChunkSink<'a> {
    /// Set when the sink is dropped unfinished: the workers stop at once.
    abandoned: Arc<AtomicBool>,
    jobs: Option<mpsc::Sender<(usize, Job)>>,
    /// Results: ticket, whether the job carried the caller's bytes.
    done: mpsc::Receiver<(usize, bool, Result<Stored>)>,
    max_bytes_in_flight: usize,
    /// Queued chunks of the caller's bytes not yet done.
    bytes_in_flight: usize,
    workers: Vec<JoinHandle<()>>,
    next: usize,
    /// Chunks whose result arrived.
    finished: usize,
    results: Vec<Option<Stored>>,
    _writer: PhantomData<&'a ImageWriter>,
}

impl std::fmt::Debug for ChunkSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkSink")
            .field("queued", &self.next)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl ChunkSink<'_> {
    /// Queue one chunk of bytes, with a tag; blocks while the queue is
    /// full. An error of an earlier chunk is returned here as soon as it
    /// is known.
    pub fn submit(&mut self, data: Vec<u8>, tag: u64) -> Result<usize> {
        while self.bytes_in_flight >= self.max_bytes_in_flight {
            match self.done.recv() {
                Ok(item) => self.record(item)?,
                Err(_) => return Err(ImageError::WorkerPanicked),
            }
        }
        self.bytes_in_flight += 1;
        self.send(Job::Bytes(data, tag))
    }

    /// Queue one chunk that a worker reads itself.
    pub fn submit_read(&mut self, read: ChunkReader) -> Result<usize> {
        self.send(Job::Read(read))
    }

    fn send(&mut self, job: Job) -> Result<usize> {
        self.collect(false)?;
        let ticket = self.next;
        self.next += 1;
        let jobs = self.jobs.as_ref().expect("sink not finished");
        if jobs.send((ticket, job)).is_err() {
            // Every worker is gone: the reason is in the results.
            self.collect(true)?;
            return Err(ImageError::WorkerPanicked);
        }
        Ok(ticket)
    }

    fn record(&mut self, (ticket, carried_bytes, r): (usize, bool, Result<Stored>)) -> Result<()> {
        if carried_bytes {
            self.bytes_in_flight -= 1;
        }
        if self.results.len() <= ticket {
            self.results.resize(ticket + 1, None);
        }
        self.finished += 1;
        self.results[ticket] = Some(r?);
        Ok(())
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
            self.record(item)?;
        }
    }

    /// Wait until every chunk queued so far is done: after this, nothing
    /// queued is still being read.
    pub fn drain(&mut self) -> Result<()> {
        self.drain_while(std::time::Duration::MAX, |_, _| true)
            .map(drop)
    }

    /// [`ChunkSink::drain`], telling `go_on` the chunks done and queued
    /// (at most every `every`, and once all are done) and stopping as soon
    /// as it answers false: then Ok(false), and the chunks still queued
    /// are left to the caller, which drops the sink (its workers stop).
    pub fn drain_while(
        &mut self,
        every: std::time::Duration,
        mut go_on: impl FnMut(usize, usize) -> bool,
    ) -> Result<bool> {
        let mut told = std::time::Instant::now();
        while self.finished < self.next {
            match self.done.recv() {
                Ok(item) => self.record(item)?,
                Err(_) => return Err(ImageError::WorkerPanicked),
            }
            if told.elapsed() >= every {
                told = std::time::Instant::now();
                if !go_on(self.finished, self.next) {
                    return Ok(false);
                }
            }
        }
        Ok(go_on(self.finished, self.next))
    }

    /// Chunks done and queued so far (the done ones as last collected).
    pub fn counts(&self) -> (usize, usize) {
        (self.finished, self.next)
    }

    /// The result of a chunk already done (see [`ChunkSink::drain`]).
    pub fn stored(&self, ticket: usize) -> Option<&Stored> {
        self.results.get(ticket)?.as_ref()
    }

    /// Wait for every queued chunk; the results, by ticket.
    pub fn finish(mut self) -> Result<Vec<Stored>> {
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
        let mut results = std::mem::take(&mut self.results);
        results.resize(self.next, None);
        results
            .into_iter()
            .map(|r| r.ok_or(ImageError::WorkerPanicked))
            .collect()
    }
}

impl Drop for ChunkSink<'_> {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
