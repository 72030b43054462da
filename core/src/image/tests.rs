use super::*;
use serde::{Deserialize, Serialize};
use std::fs;

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
