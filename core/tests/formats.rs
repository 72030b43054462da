//! The conversion chain on real images: `tests/images/vN/image` was saved
//! by a hiber build of format N (see `tests/images/README.md`), and
//! `vN/inspect.json` is what that build's own `hiber inspect --json
//! --verify` said of it. This build reads each into its current document:
//! the same processes, mappings and chunks as the writer saw, every chunk
//! read back against its hash, the command line found in the saved stack,
//! the pipe's queued bytes and the deleted file's contents as they were.
//! A hostile format-1 image (planted chunk files, references edited to
//! point elsewhere) gets an error naming the path, never a panic.

use hiber_core::files::FileKind;
use hiber_core::image::{ImageError, ImageReader, FORMAT_VERSION};
use hiber_core::Snapshot;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

fn fixture(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/images/v{version}"))
}

/// What the writing build's `inspect --json --verify` said.
fn recorded(version: u32) -> Value {
    let text = fs::read_to_string(fixture(version).join("inspect.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The bytes at `addr..addr + len` of the process's saved memory, read
/// from the chunk that holds them (4 KiB pages, 64 to a chunk).
fn saved_bytes(reader: &ImageReader, snap: &Snapshot, pid: i32, addr: u64, len: u64) -> Vec<u8> {
    let mm = snap.process(pid).unwrap().mm.as_ref().unwrap();
    let vma = mm
        .vmas
        .iter()
        .find(|v| v.start <= addr && addr < v.end)
        .unwrap_or_else(|| panic!("no mapping of pid {pid} holds {addr:#x}"));
    let page = addr & !4095;
    let window = vma
        .pages
        .iter()
        .find(|w| w.addr <= page && page < w.addr + 64 * 4096)
        .unwrap_or_else(|| panic!("no saved window of pid {pid} holds {page:#x}"));
    let bit = (page - window.addr) / 4096;
    assert!(
        window.bitmap & (1 << bit) != 0,
        "page {page:#x} of pid {pid} not saved"
    );
    let before = (window.bitmap & ((1 << bit) - 1)).count_ones() as u64;
    let mut chunk = Vec::new();
    reader.read_chunk(&window.chunk, &mut chunk).unwrap();
    let at = (before * 4096 + (addr - page)) as usize;
    assert!(addr - page + len <= 4096, "the bytes cross a page");
    chunk[at..at + len as usize].to_vec()
}

/// Bytes of the regular files under `dir`.
fn regular_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            total += regular_bytes(&e.path());
        } else if t.is_file() {
            total += e.metadata().unwrap().len();
        }
    }
    total
}

/// The image of `version` against what its writer recorded: processes,
/// mappings, chunks, bytes; every chunk read and verified; the saved
/// command line where the process's stack held it.
fn reads_like_its_writer_said(version: u32) {
    let dir = fixture(version).join("image");
    let (reader, snap): (ImageReader, Snapshot) = ImageReader::open(&dir).unwrap();
    assert_eq!(reader.version(), version);
    hiber_core::restore::validate::document(&snap).unwrap();
    let said = recorded(version);
    assert_eq!(said["format_version"], version);
    let theirs = &said["snapshot"];
    assert_eq!(
        snap.hiber_version,
        theirs["hiber_version"].as_str().unwrap()
    );
    assert_eq!(snap.created_unix, theirs["created_unix"].as_u64().unwrap());
    assert_eq!(
        snap.roots,
        serde_json::from_value::<Vec<i32>>(theirs["roots"].clone()).unwrap()
    );
    let processes = theirs["processes"].as_array().unwrap();
    assert!(!processes.is_empty());
    assert_eq!(snap.processes.len(), processes.len());
    for (mine, theirs) in snap.processes.iter().zip(processes) {
        assert_eq!(mine.pid as i64, theirs["pid"].as_i64().unwrap());
        assert_eq!(mine.ppid as i64, theirs["ppid"].as_i64().unwrap());
        assert_eq!(mine.comm, theirs["comm"].as_str().unwrap());
        let (mm, their_mm) = (mine.mm.as_ref().unwrap(), &theirs["mm"]);
        let their_vmas = their_mm["vmas"].as_array().unwrap();
        assert_eq!(mm.vmas.len(), their_vmas.len(), "pid {}", mine.pid);
        for (v, t) in mm.vmas.iter().zip(their_vmas) {
            assert_eq!(v.start, t["start"].as_u64().unwrap());
            assert_eq!(v.end, t["end"].as_u64().unwrap());
            assert_eq!(v.pages.len(), t["pages"].as_array().unwrap().len());
            for (w, tw) in v.pages.iter().zip(t["pages"].as_array().unwrap()) {
                assert_eq!(w.chunk.hash, tw["chunk"]["hash"].as_str().unwrap());
                assert_eq!(
                    w.chunk.raw_len as u64,
                    tw["chunk"]["raw_len"].as_u64().unwrap()
                );
            }
        }
        assert_eq!(
            mine.threads.len(),
            theirs["threads"].as_array().unwrap().len()
        );
        assert_eq!(mine.fds.len(), theirs["fds"].as_array().unwrap().len());
    }
    let chunks = snap.chunks();
    assert_eq!(chunks.len() as u64, said["chunks"].as_u64().unwrap());
    let bytes: u64 = chunks.iter().map(|c| c.raw_len as u64).sum();
    assert_eq!(bytes, said["data_bytes"].as_u64().unwrap());
    reader.check_chunks(chunks.iter().copied()).unwrap();
    // Its size on disk: the document and the chunk files or packs.
    assert_eq!(hiber_core::image::image_bytes(&dir), regular_bytes(&dir));
    let mut buf = Vec::new();
    for c in &chunks {
        reader.read_chunk(c, &mut buf).unwrap();
        assert_eq!(buf.len(), c.raw_len as usize);
    }
    // The command line the README gives, in the saved stack where the
    // kernel put it (`arg_start..arg_end`): page data read through the
    // converted references is the process's own.
    let cmdline = fs::read(fixture(version).join("cmdline")).unwrap();
    let pid = snap.roots[0];
    let fields = &snap.process(pid).unwrap().mm.as_ref().unwrap().fields;
    assert_eq!(fields.arg_end - fields.arg_start, cmdline.len() as u64);
    assert_eq!(
        saved_bytes(&reader, &snap, pid, fields.arg_start, cmdline.len() as u64),
        cmdline
    );
    // The pipe's queued bytes and the deleted file's contents, as the
    // program that made the image wrote them.
    let mut joined = |chunks: &[hiber_core::image::ChunkRef]| {
        let mut all = Vec::new();
        for c in chunks {
            reader.read_chunk(c, &mut buf).unwrap();
            all.extend_from_slice(&buf);
        }
        all
    };
    let pipe = fs::read(fixture(version).join("pipe")).unwrap();
    assert_eq!(snap.pipes.len(), 1);
    assert_eq!(joined(&snap.pipes[0].data), pipe);
    let ghost = fs::read(fixture(version).join("ghost")).unwrap();
    let ghosts: Vec<_> = snap
        .files
        .iter()
        .filter_map(|f| match &f.kind {
            FileKind::Regular(r) => r.ghost.as_ref(),
            _ => None,
        })
        .collect();
    assert_eq!(ghosts.len(), 1);
    assert_eq!(joined(&ghosts[0].chunks), ghost);
}

#[test]
fn a_format_1_image_reads_through_its_conversion() {
    reads_like_its_writer_said(1);
}

#[test]
fn a_format_2_image_of_the_first_format_2_build_reads_as_it_is() {
    reads_like_its_writer_said(2);
}

/// Copy of a fixture image under a temporary directory, to damage.
fn copy_image(version: u32, to: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(e.file_name()));
            } else {
                fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    let dir = to.join(format!("v{version}"));
    copy(&fixture(version).join("image"), &dir);
    dir
}

/// `json` as the document of `dir`, behind a header of `version`.
fn write_document(dir: &Path, version: u32, json: &[u8]) {
    let mut doc = format!(
        "hiber-image {version} {} {}\n",
        blake3::hash(json).to_hex(),
        json.len()
    )
    .into_bytes();
    doc.extend_from_slice(json);
    fs::write(dir.join("snapshot"), doc).unwrap();
}

fn document_json(dir: &Path) -> Value {
    let bytes = fs::read(dir.join("snapshot")).unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    serde_json::from_slice(&bytes[nl + 1..]).unwrap()
}

/// Open `dir`, check and read every chunk: the first error.
fn read_all(dir: &Path) -> Result<(), ImageError> {
    let (reader, snap): (ImageReader, Snapshot) = ImageReader::open(dir)?;
    let chunks = snap.chunks();
    reader.check_chunks(chunks.iter().copied())?;
    let mut buf = Vec::new();
    for c in &chunks {
        reader.read_chunk(c, &mut buf)?;
    }
    Ok(())
}

/// The first page chunk of the root process's first saved window.
fn first_chunk(doc: &Value) -> String {
    let vmas = doc["processes"][0]["mm"]["vmas"].as_array().unwrap();
    let v = vmas
        .iter()
        .find(|v| !v["pages"].as_array().unwrap().is_empty())
        .unwrap();
    v["pages"][0]["chunk"]["hash"].as_str().unwrap().to_string()
}

fn chunk_file(dir: &Path, hash: &str) -> PathBuf {
    dir.join("chunks").join(&hash[..2]).join(hash)
}

#[test]
fn a_damaged_format_1_image_is_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let expect = |dir: &Path, want: &[&str]| {
        let err = read_all(dir)
            .expect_err("a damaged image read whole")
            .to_string();
        for w in want {
            assert!(err.contains(w), "{err:?} does not say {w:?}");
        }
    };

    // A chunk file missing, cut short, grown, corrupt, a symlink, a FIFO.
    let dir = copy_image(1, &t.path().join("missing"));
    let hash = first_chunk(&document_json(&dir));
    let file = chunk_file(&dir, &hash);
    let file_s = file.display().to_string();
    fs::remove_file(&file).unwrap();
    expect(&dir, &["chunk file", &file_s, "is missing", &hash]);

    let dir = copy_image(1, &t.path().join("short"));
    let file = chunk_file(&dir, &hash);
    let data = fs::read(&file).unwrap();
    fs::write(&file, &data[..data.len() - 1]).unwrap();
    expect(&dir, &[&file.display().to_string(), "does not hold the"]);
    fs::write(&file, [&data[..], b"x"].concat()).unwrap();
    expect(&dir, &[&file.display().to_string(), "does not hold the"]);
    let mut flipped = data.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55;
    fs::write(&file, &flipped).unwrap();
    expect(&dir, &[&file.display().to_string(), "is corrupt"]);

    let dir = copy_image(1, &t.path().join("symlink"));
    let file = chunk_file(&dir, &hash);
    let outside = t.path().join("outside");
    fs::write(&outside, &data).unwrap();
    fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&outside, &file).unwrap();
    expect(&dir, &[&file.display().to_string(), "is a symlink"]);

    let dir = copy_image(1, &t.path().join("fifo"));
    let file = chunk_file(&dir, &hash);
    fs::remove_file(&file).unwrap();
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    expect(
        &dir,
        &[
            &file.display().to_string(),
            "is not a regular file (it is a FIFO)",
        ],
    );

    // The chunks directory a symlink to a copy of itself.
    let dir = copy_image(1, &t.path().join("chunks-link"));
    let real = t.path().join("real-chunks");
    fs::rename(dir.join("chunks"), &real).unwrap();
    std::os::unix::fs::symlink(&real, dir.join("chunks")).unwrap();
    expect(
        &dir,
        &[&dir.join("chunks").display().to_string(), "is a symlink"],
    );

    // References edited: a hash naming a path outside, a member no
    // format-1 reference has, one missing, a reference of format 2.
    let dir = copy_image(1, &t.path().join("edited"));
    let doc = document_json(&dir);
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut d = doc.clone();
        let vmas = d["processes"][0]["mm"]["vmas"].as_array_mut().unwrap();
        let v = vmas
            .iter_mut()
            .find(|v| !v["pages"].as_array().unwrap().is_empty())
            .unwrap();
        f(&mut v["pages"][0]["chunk"]);
        write_document(&dir, 1, &serde_json::to_vec(&d).unwrap());
    };
    edit(&|c| c["hash"] = "../../../../etc/shadow".into());
    expect(
        &dir,
        &["bad chunk reference", "not 64 lowercase hex digits"],
    );
    edit(&|c| c["pack"] = "00".into());
    expect(
        &dir,
        &[
            "the format-1 document does not convert",
            "/processes/0/mm/vmas/",
            "/pages/0/chunk",
            "unknown field `pack`",
        ],
    );
    edit(&|c| {
        c.as_object_mut().unwrap().remove("stored_len");
    });
    expect(&dir, &["does not convert", "missing field `stored_len`"]);
    edit(&|c| c["raw_len"] = 0x7fff_ffff.into());
    expect(
        &dir,
        &["bad chunk reference", "uncompressed length out of bounds"],
    );
    edit(&|c| c["raw_len"] = (-1).into());
    expect(&dir, &["does not convert", "/chunk"]);
    // A pipe's data that is not an array.
    let mut d = doc.clone();
    d["pipes"] = serde_json::json!([{ "data": 7 }]);
    write_document(&dir, 1, &serde_json::to_vec(&d).unwrap());
    expect(
        &dir,
        &["does not convert", "at /pipes/0/data: not an array"],
    );
}

#[test]
fn versions_this_build_does_not_read_are_named() {
    let t = tempfile::tempdir().unwrap();
    let dir = copy_image(2, t.path());
    let json = serde_json::to_vec(&document_json(&dir)).unwrap();
    let path = dir.join("snapshot").display().to_string();
    let newer = FORMAT_VERSION + 1;
    write_document(&dir, newer, &json);
    let err = read_all(&dir).unwrap_err();
    assert!(matches!(err, ImageError::NewerVersion { found, .. } if found == newer));
    let err = err.to_string();
    for w in [
        &path,
        &format!("image format {newer}"),
        "written by a newer hiber",
        "reads formats 1 to 2",
    ] {
        assert!(err.contains(w), "{err:?} does not say {w:?}");
    }
    write_document(&dir, 0, &json);
    let err = read_all(&dir).unwrap_err().to_string();
    assert!(
        err.contains("image format 0; this hiber reads formats 1 to 2"),
        "{err}"
    );
    // A format-2 document under a format-1 header: its references are
    // not format 1's, and the conversion says so.
    write_document(&dir, 1, &json);
    let err = read_all(&dir).unwrap_err().to_string();
    assert!(
        err.contains("does not convert")
            && err.contains("not a format-1 chunk reference: unknown field"),
        "{err}"
    );
}
