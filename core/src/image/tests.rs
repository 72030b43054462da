use super::format::*;
use super::*;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::PathBuf;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Doc {
    refs: Vec<ChunkRef>,
}

fn page(seed: u8) -> Vec<u8> {
    (0..65536u32)
        .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 8) as u8)
        .collect()
}

fn random(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn write(dir: &Path, store: Option<&Path>, data: &[Vec<u8>], workers: usize) -> (WriteStats, Doc) {
    let w = ImageWriter::create(dir, store).unwrap();
    let mut sink = w.sink(workers, 4);
    for (i, d) in data.iter().enumerate() {
        sink.submit(d.clone(), i as u64).unwrap();
    }
    let refs = sink
        .finish()
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            assert_eq!(s.tag, Some(i as u64));
            s.chunk.expect("bytes are stored")
        })
        .collect();
    let stats = w.stats();
    let doc = Doc { refs };
    w.commit(&doc).unwrap();
    (stats, doc)
}

#[test]
fn round_trip_and_store_reuse() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let data = vec![page(3), page(5), page(3), random(4096, 1)];
    // One worker: two workers may both store the repeated page, each copy
    // in its own pack, and a pack holding only the copy the second image
    // does not use is rightly pruned below.
    let (s1, doc) = write(&t.path().join("a"), Some(&store), &data, 1);
    assert_eq!(s1.chunks, 4);
    assert_eq!(s1.reused_chunks, 1, "the repeated page is stored once");
    let (r, back): (ImageReader, Doc) = ImageReader::open(&t.path().join("a")).unwrap();
    assert_eq!(back, doc);
    r.check_chunks(&back.refs).unwrap();
    let mut buf = Vec::new();
    for (d, c) in data.iter().zip(&back.refs) {
        r.read_chunk(c, &mut buf).unwrap();
        assert_eq!(&buf, d);
    }
    // A second image of the same data plus one new chunk writes only that one.
    let mut more = data.clone();
    more.push(random(8192, 2));
    let (s2, doc2) = write(&t.path().join("b"), Some(&store), &more, 2);
    assert_eq!(s2.written_bytes, doc2.refs[4].stored_len as u64);
    assert_eq!(s2.reused_chunks, 4);
    // The first image can go; the second still reads everything.
    fs::remove_dir_all(t.path().join("a")).unwrap();
    let pruned = prune_store(&store).unwrap();
    assert_eq!(pruned.removed_packs, 0, "b links every pack");
    let (r2, _): (ImageReader, Doc) = ImageReader::open(&t.path().join("b")).unwrap();
    for (d, c) in more.iter().zip(&doc2.refs) {
        r2.read_chunk(c, &mut buf).unwrap();
        assert_eq!(&buf, d);
    }
    fs::remove_dir_all(t.path().join("b")).unwrap();
    let pruned = prune_store(&store).unwrap();
    assert!(
        pruned.removed_packs >= 2 && pruned.kept_packs == 0,
        "{pruned:?}"
    );
    assert_eq!(
        fs::read_dir(store.join(PACKS)).unwrap().count(),
        0,
        "packs and indexes gone"
    );
    assert!(ImageWriter::create(&t.path().join("c"), Some(&store)).is_ok());
}

#[test]
fn corruption_is_named() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    let (_, doc) = write(&dir, None, &[page(7)], 2);
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
    let c = &doc.refs[0];
    let pack = r.pack_path(&c.pack);
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&pack, &bytes).unwrap();
    let mut buf = Vec::new();
    let (r, _) = open().unwrap();
    let err = r.read_chunk(c, &mut buf).unwrap_err();
    assert!(matches!(err, ImageError::ChunkCorrupt { .. }), "{err}");
    assert!(err.to_string().contains(&c.hash));

    fs::write(&pack, &bytes[..mid]).unwrap();
    let (r, _) = open().unwrap();
    assert!(matches!(
        r.check_chunks(&doc.refs),
        Err(ImageError::PackTooShort { .. })
    ));
    fs::remove_file(&pack).unwrap();
    let (r, _) = open().unwrap();
    assert!(matches!(
        r.check_chunks(&doc.refs),
        Err(ImageError::MissingPack { .. })
    ));

    let hostile = ChunkRef {
        pack: "../../etc/passwd".into(),
        ..c.clone()
    };
    assert!(matches!(
        r.check_chunks([&hostile]),
        Err(ImageError::BadChunkRef { .. })
    ));
    let huge = ChunkRef {
        offset: u64::MAX - 1,
        ..c.clone()
    };
    assert!(matches!(
        r.check_chunks([&huge]),
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

/// Chunks read by the workers: their bytes are stored like submitted ones,
/// an empty read stores nothing, an unreadable one (tolerated) gives no
/// tag, and a failing one fails the sink naming its reason.
#[test]
fn workers_read_chunks_themselves() {
    let t = tempfile::tempdir().unwrap();
    let w = ImageWriter::create(&t.path().join("img"), None).unwrap();
    let mut sink = w.sink(2, 4);
    let bytes = page(7);
    let copy = bytes.clone();
    let read = sink
        .submit_read(Box::new(move |buf: &mut Vec<u8>| {
            buf.extend_from_slice(&copy);
            Ok(Some(5))
        }))
        .unwrap();
    let empty = sink
        .submit_read(Box::new(|_: &mut Vec<u8>| Ok(Some(0))))
        .unwrap();
    let unread = sink
        .submit_read(Box::new(|_: &mut Vec<u8>| Ok(None)))
        .unwrap();
    sink.drain().unwrap();
    assert_eq!(sink.stored(unread).unwrap().tag, None);
    let stored = sink.finish().unwrap();
    assert_eq!(stored[read].tag, Some(5));
    let chunk = stored[read].chunk.clone().expect("stored");
    assert_eq!(
        stored[empty],
        Stored {
            chunk: None,
            tag: Some(0)
        }
    );
    w.commit(&Doc {
        refs: vec![chunk.clone()],
    })
    .unwrap();
    let (r, _doc): (ImageReader, Doc) = ImageReader::open(&t.path().join("img")).unwrap();
    let mut out = Vec::new();
    r.read_chunk(&chunk, &mut out).unwrap();
    assert_eq!(out, bytes);

    let w = ImageWriter::create(&t.path().join("img2"), None).unwrap();
    let mut sink = w.sink(1, 4);
    sink.submit_read(Box::new(|_: &mut Vec<u8>| Err("the page went away".into())))
        .unwrap();
    let err = sink.finish().unwrap_err();
    assert!(matches!(err, ImageError::Read(_)), "{err:?}");
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "the page went away"
    );
}

/// Run `f` on a thread and fail the test if it does not return within a
/// few seconds: the reads below must never block.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} blocked"))
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// A file outside the image that only root may read, with contents and a
/// size an error message must never show.
struct Secret {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

const SECRET: &str = "root-only-secret-7d1f";

impl Secret {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shadow");
        // 4391 bytes: a size no message in this module otherwise shows.
        fs::write(
            &path,
            &SECRET.repeat(4391 / SECRET.len() + 1).as_bytes()[..4391],
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        Self { _dir: dir, path }
    }

    fn assert_not_in(&self, message: &str) {
        assert!(
            !message.contains(SECRET) && !message.contains("4391"),
            "the error reveals the file outside the image: {message}"
        );
        assert!(
            !message.contains(&*self.path.to_string_lossy()),
            "the error names the file outside the image: {message}"
        );
    }
}

fn replace_with(path: &Path, how: &str, secret: &Secret) {
    fs::remove_file(path).unwrap();
    match how {
        "fifo" => mkfifo(path),
        "symlink to a fifo" => {
            let fifo = secret._dir.path().join(format!("fifo-{}", rand_suffix()));
            mkfifo(&fifo);
            std::os::unix::fs::symlink(&fifo, path).unwrap();
        }
        "symlink to a root-only file" => std::os::unix::fs::symlink(&secret.path, path).unwrap(),
        "directory" => fs::create_dir(path).unwrap(),
        other => panic!("no way to plant {other}"),
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

const PLANTS: [&str; 4] = [
    "fifo",
    "symlink to a fifo",
    "symlink to a root-only file",
    "directory",
];

/// The document replaced by a FIFO, a symlink (to a FIFO or to a file
/// outside the image) or a directory: a clear error naming it, at once.
#[test]
fn planted_document_is_refused_without_blocking() {
    let secret = Secret::new();
    for how in PLANTS {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        write(&dir, None, &[page(2)], 1);
        replace_with(&dir.join(DOCUMENT), how, &secret);
        let d = dir.clone();
        let err = within(how, move || ImageReader::open::<Doc>(&d).unwrap_err());
        let msg = err.to_string();
        assert!(matches!(err, ImageError::Unsafe { .. }), "{how}: {msg}");
        assert!(
            msg.contains(&*dir.join(DOCUMENT).to_string_lossy()),
            "{msg}"
        );
        let expected = if how.starts_with("symlink") {
            "is a symlink"
        } else {
            "is not a regular file"
        };
        assert!(msg.contains(expected), "{how}: {msg}");
        secret.assert_not_in(&msg);
        assert!(!is_image(&dir) || how == "directory", "{how}");
    }
}

/// The same for a pack, through both ways of reading one.
#[test]
fn planted_pack_is_refused_without_blocking() {
    let secret = Secret::new();
    for how in PLANTS {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        let (_, doc) = write(&dir, None, &[page(4)], 1);
        let (r, _) = ImageReader::open::<Doc>(&dir).unwrap();
        let pack = r.pack_path(&doc.refs[0].pack);
        replace_with(&pack, how, &secret);
        let refs = doc.refs.clone();
        let (checked, read) = within(how, move || {
            let checked = r.check_chunks(&refs).unwrap_err();
            let mut buf = Vec::new();
            (checked, r.read_chunk(&refs[0], &mut buf).unwrap_err())
        });
        for err in [checked, read] {
            let msg = err.to_string();
            assert!(matches!(err, ImageError::Unsafe { .. }), "{how}: {msg}");
            assert!(msg.contains(&*pack.to_string_lossy()), "{msg}");
            secret.assert_not_in(&msg);
        }
    }
}

/// A symlinked packs directory is not followed, even to a real pack.
#[test]
fn symlinked_packs_directory_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    let (_, doc) = write(&dir, None, &[page(6)], 1);
    let elsewhere = t.path().join("elsewhere");
    fs::rename(dir.join(PACKS), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join(PACKS)).unwrap();
    let (r, _) = ImageReader::open::<Doc>(&dir).unwrap();
    let err = r.check_chunks(&doc.refs).unwrap_err();
    assert!(
        matches!(&err, ImageError::Unsafe { what: Unsafe::Symlink, path } if path.ends_with(PACKS)),
        "{err}"
    );
}

/// Another user's pack in a root image, or root's image directory holding
/// another user's document: refused, naming the uid.
#[test]
fn files_of_another_owner_are_refused() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    let (_, doc) = write(&dir, None, &[page(8)], 1);
    let owner = fs::metadata(&dir).unwrap().uid();
    let other = if owner == 65534 { 65533 } else { 65534 };
    let (r, _) = ImageReader::open::<Doc>(&dir).unwrap();
    let pack = r.pack_path(&doc.refs[0].pack);
    if std::os::unix::fs::chown(&pack, Some(other), None).is_err() {
        println!("skipped: changing a file's owner needs root");
        return;
    }
    let err = r.check_chunks(&doc.refs).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ImageError::Unsafe { what: Unsafe::Owner { found, .. }, .. } if found == other),
        "{msg}"
    );
    assert!(msg.contains(&format!("uid {other}")), "{msg}");
    std::os::unix::fs::chown(dir.join(DOCUMENT), Some(other), None).unwrap();
    let err = ImageReader::open::<Doc>(&dir).unwrap_err();
    assert!(
        err.to_string().contains(&format!("owned by uid {other}")),
        "{err}"
    );
}

/// A document larger than any writer makes is refused from its size,
/// before a byte is read (a sparse file: nothing is allocated).
#[test]
fn huge_document_is_refused_before_reading() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    write(&dir, None, &[page(9)], 1);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(dir.join(DOCUMENT))
        .unwrap();
    f.set_len(MAX_HEADER_BYTES + MAX_DOCUMENT_BYTES + 1)
        .unwrap();
    let d = dir.clone();
    let err = within("a huge document", move || {
        ImageReader::open::<Doc>(&d).unwrap_err()
    });
    assert!(
        matches!(
            err,
            ImageError::Unsafe {
                what: Unsafe::TooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
}

/// A truncated pack: an error naming the pack and the chunk, not its size.
#[test]
fn truncated_pack_names_the_chunk_not_the_size() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    let (_, doc) = write(&dir, None, &[random(20000, 3)], 1);
    let (r, _) = ImageReader::open::<Doc>(&dir).unwrap();
    let pack = r.pack_path(&doc.refs[0].pack);
    let f = fs::OpenOptions::new().write(true).open(&pack).unwrap();
    let short = f.metadata().unwrap().len() - 1;
    f.set_len(short).unwrap();
    let err = r.check_chunks(&doc.refs).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::PackTooShort { .. }), "{msg}");
    assert!(
        msg.contains(&doc.refs[0].hash) && !msg.contains(&short.to_string()),
        "{msg}"
    );
}

/// A store whose indexes or packs are FIFOs or symlinks: the writer does
/// not block, does not reuse them, and still writes a whole image; a
/// symlinked store packs directory is refused.
#[test]
fn planted_store_entries_are_skipped() {
    let secret = Secret::new();
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let data = vec![page(11), page(12)];
    write(&t.path().join("a"), Some(&store), &data, 1);
    let mut ids: Vec<String> = fs::read_dir(store.join(PACKS))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".idx").map(str::to_string))
        .collect();
    ids.sort();
    assert!(!ids.is_empty());
    for (n, id) in ids.iter().enumerate() {
        // One pack behind a symlink, the other's index a FIFO.
        if n % 2 == 0 {
            let pack = pack_file(&store.join(PACKS), id);
            let copy = t.path().join(format!("copy-{id}"));
            fs::copy(&pack, &copy).unwrap();
            fs::remove_file(&pack).unwrap();
            std::os::unix::fs::symlink(&copy, &pack).unwrap();
        } else {
            replace_with(&index_file(&store.join(PACKS), id), "fifo", &secret);
        }
    }
    // And an index that is a symlink to a file outside.
    std::os::unix::fs::symlink(&secret.path, store.join(PACKS).join("abcd.idx")).unwrap();
    let (b, s) = (t.path().join("b"), store.clone());
    let (stats, doc) = within("a write with a planted store", move || {
        write(&b, Some(&s), &data, 1)
    });
    assert_eq!(stats.reused_chunks, 0, "nothing planted is reused");
    let (r, _) = ImageReader::open::<Doc>(&t.path().join("b")).unwrap();
    r.check_chunks(&doc.refs).unwrap();

    fs::rename(store.join(PACKS), t.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(t.path().join("moved"), store.join(PACKS)).unwrap();
    let err = ImageWriter::create(&t.path().join("c"), Some(&store)).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Unsafe {
                what: Unsafe::Symlink,
                ..
            }
        ),
        "{err}"
    );
    let err = prune_store(&store).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Unsafe {
                what: Unsafe::Symlink,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        fs::read_dir(t.path().join("moved")).unwrap().count() > 0,
        "prune removed nothing through the link"
    );
}

/// A tiny deterministic generator for the mutation loops.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A few random edits: bytes flipped, set to interesting values,
    /// inserted, removed, copied within, or the tail cut.
    fn mutate(&mut self, data: &mut Vec<u8>) {
        const INTERESTING: &[&[u8]] = &[
            b"0",
            b"-1",
            b"4294967295",
            b"18446744073709551615",
            b"null",
            b"[]",
            b"{}",
            b"\"\"",
            b"1e999",
            b"\"../../etc/shadow\"",
        ];
        for _ in 0..1 + self.below(4) {
            let at = self.below(data.len());
            match self.below(7) {
                0 if !data.is_empty() => data[at] ^= 1 << self.below(8),
                1 => {
                    let v = INTERESTING[self.below(INTERESTING.len())];
                    let end = (at + v.len()).min(data.len());
                    data.splice(at..end, v.iter().copied());
                }
                2 => data.insert(at, self.next() as u8),
                3 if !data.is_empty() => {
                    let n = self.below(64).min(data.len() - at);
                    data.drain(at..at + n);
                }
                4 if !data.is_empty() => {
                    let from = self.below(data.len());
                    let n = self.below(256).min(data.len() - from);
                    let piece = data[from..from + n].to_vec();
                    data.splice(at..at, piece);
                }
                // A number of the JSON swapped for an edge value: the
                // document stays JSON, and the limits are what is tried.
                5 | 6 => {
                    const NUMBERS: &[&[u8]] = &[
                        b"0",
                        b"1",
                        b"4096",
                        b"65536",
                        b"2147483647",
                        b"4294967295",
                        b"4294967296",
                        b"18446744073709551615",
                        b"1099511627776",
                    ];
                    let Some(start) = data[at..].iter().position(u8::is_ascii_digit) else {
                        continue;
                    };
                    let start = at + start;
                    let len = data[start..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                    let v = NUMBERS[self.below(NUMBERS.len())];
                    data.splice(start..start + len, v.iter().copied());
                }
                _ => {}
            }
        }
        if self.below(20) == 0 {
            let at = self.below(data.len());
            data.truncate(at);
        }
    }
}

/// The JSON after a document's header line, behind a header that matches
/// it, so that mutations reach the parser past the checksum.
fn rewrap(data: &[u8]) -> Vec<u8> {
    rewrap_as(FORMAT_VERSION, data)
}

/// The same behind a header of `version`.
fn rewrap_as(version: u32, data: &[u8]) -> Vec<u8> {
    let body = match data.iter().position(|&b| b == b'\n') {
        Some(n) if n < MAX_HEADER_BYTES as usize => &data[n + 1..],
        _ => data,
    };
    let mut out = format!(
        "{MAGIC} {version} {} {}\n",
        blake3::hash(body).to_hex(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

const SEED_DOCUMENTS: [&[u8]; 2] = [
    include_bytes!("../../fuzz/seeds/document/sleep.snapshot"),
    include_bytes!("../../fuzz/seeds/document/pipeline.snapshot"),
];

/// What the `document` fuzz target does, a few thousand times, in the
/// normal suite: mutated real documents never make the parser panic.
#[test]
fn mutated_documents_never_panic() {
    use crate::snapshot::Snapshot;
    let path = Path::new("mutated/snapshot");
    for seed in SEED_DOCUMENTS {
        let snap: Snapshot = parse_document(path, seed).expect("the seed parses");
        assert!(!snap.chunks().is_empty());
    }
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut parsed = 0;
    for i in 0..3000 {
        let mut data = SEED_DOCUMENTS[i % SEED_DOCUMENTS.len()].to_vec();
        rng.mutate(&mut data);
        for doc in [data.clone(), rewrap(&data)] {
            if let Ok(snap) = parse_document::<Snapshot>(path, &doc) {
                parsed += 1;
                snap.check_offline();
                let _ = crate::restore::validate::document(&snap);
            }
        }
    }
    // Most single edits of the JSON still parse: the loop reached past
    // the checksum.
    println!("{parsed} of 6000 mutated documents parsed");
    assert!(parsed > 200, "only {parsed} mutated documents parsed");
}

/// The same through the format-1 conversion: the document of the
/// checked-in format-1 image, mutated, behind a format-1 header.
#[test]
fn mutated_format_1_documents_never_panic() {
    use crate::snapshot::Snapshot;
    let seed: &[u8] = include_bytes!("../../tests/images/v1/image/snapshot");
    let path = Path::new("mutated/snapshot");
    let snap: Snapshot = parse_document(path, seed).expect("the format-1 document converts");
    assert!(!snap.chunks().is_empty());
    assert!(snap
        .chunks()
        .iter()
        .all(|c| c.pack == c.hash && c.offset == 0));
    let mut rng = Rng(0x0001_5eed_cafe_f00d);
    let (mut parsed, mut unconverted) = (0, 0);
    for _ in 0..3000 {
        let mut data = seed.to_vec();
        rng.mutate(&mut data);
        match parse_document::<Snapshot>(path, &rewrap_as(1, &data)) {
            Ok(snap) => {
                parsed += 1;
                snap.check_offline();
                let _ = crate::restore::validate::document(&snap);
            }
            Err(ImageError::Convert { .. } | ImageError::BadChunkRef { .. }) => unconverted += 1,
            Err(_) => {}
        }
    }
    println!("{parsed} of 3000 mutated format-1 documents parsed, {unconverted} did not convert");
    assert!(parsed > 100, "only {parsed} mutated documents parsed");
    assert!(unconverted > 0, "no mutation reached a chunk reference");
}

const SEED_PACKS: [&[u8]; 3] = [
    include_bytes!("../../fuzz/seeds/pack/pack1"),
    include_bytes!("../../fuzz/seeds/pack/pack2"),
    include_bytes!("../../fuzz/seeds/pack/pack3"),
];

/// What the `pack` fuzz target does: a pack index and a pack, mutated;
/// every reference read back is what it says, none panics.
#[test]
fn mutated_packs_never_panic() {
    let path = Path::new("mutated/0.pack");
    let split = |data: &[u8]| -> (Vec<u8>, Vec<u8>) {
        let n = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        (
            data[..n].to_vec(),
            data.get(n + 1..).unwrap_or(&[]).to_vec(),
        )
    };
    let mut out = Vec::new();
    for seed in SEED_PACKS {
        let (index, pack) = split(seed);
        let refs = parse_pack_index("0", &index);
        assert!(!refs.is_empty());
        for r in &refs {
            read_chunk_from(path, &pack, r, &mut out).expect("a seed chunk reads");
        }
    }
    let mut rng = Rng(0xfeed_5678_9abc_def1);
    let (mut read, mut refused) = (0, 0);
    for i in 0..3000 {
        let mut data = SEED_PACKS[i % SEED_PACKS.len()].to_vec();
        rng.mutate(&mut data);
        let (index, pack) = split(&data);
        for r in parse_pack_index("0", &index).iter().take(16) {
            match read_chunk_from(path, &pack, r, &mut out) {
                Ok(()) => {
                    read += 1;
                    assert_eq!(out.len(), r.raw_len as usize);
                    assert_eq!(blake3::hash(&out).to_hex().as_str(), r.hash);
                }
                Err(_) => refused += 1,
            }
        }
    }
    assert!(read > 0 && refused > 0, "{read} read, {refused} refused");
}

/// The size of an image counts its own regular files only: a pack
/// replaced by a symlink to a file outside adds nothing.
#[test]
fn image_bytes_never_counts_what_a_symlink_points_at() {
    let secret = Secret::new();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    let (_, doc) = write(&dir, None, &[random(9000, 5)], 1);
    let on_disk = |p: PathBuf| fs::symlink_metadata(p).unwrap().len();
    let pack = pack_file(&dir.join(PACKS), &doc.refs[0].pack);
    let index = index_file(&dir.join(PACKS), &doc.refs[0].pack);
    let whole = on_disk(dir.join(DOCUMENT)) + on_disk(pack.clone()) + on_disk(index.clone());
    assert_eq!(image_bytes(&dir), whole);
    let pack_bytes = on_disk(pack.clone());
    replace_with(&pack, "symlink to a root-only file", &secret);
    assert_eq!(image_bytes(&dir), whole - pack_bytes);
}
