//! The image document parser: a document's bytes as a restore reads them
//! (header, checksum, JSON), then the structural checks that need no
//! filesystem. Each input is tried twice: as it is, and with its body put
//! behind a header whose checksum and length match, so that mutations get
//! past the checksum into the JSON.

#![no_main]

use hiber_core::image::parse_document;
use hiber_core::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fn checks(snap: &Snapshot) {
    snap.check_offline();
    // Restore's own pass over the document (what needs no caller).
    let _ = hiber_core::restore::validate::document(snap);
    let total: u64 = snap.chunks().iter().map(|c| c.raw_len as u64).sum();
    assert!(snap.memory_bytes() <= total, "attachments counted twice");
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz/snapshot");
    if let Ok(snap) = parse_document::<Snapshot>(path, data) {
        checks(&snap);
    }
    // The body: what follows the first line, or everything if none.
    let body = match data.iter().position(|&b| b == b'\n') {
        Some(n) if n < 200 => &data[n + 1..],
        _ => data,
    };
    let mut doc = format!(
        "hiber-image {} {} {}\n",
        hiber_core::image::FORMAT_VERSION,
        blake3::hash(body).to_hex(),
        body.len()
    )
    .into_bytes();
    doc.extend_from_slice(body);
    if let Ok(snap) = parse_document::<Snapshot>(path, &doc) {
        checks(&snap);
    }
});
