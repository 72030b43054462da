//! The pack reader: a pack index (the store's `HASH OFFSET RAW STORED`
//! lines) and a pack's bytes, separated by the first NUL byte; every
//! reference the index parser accepts is read from the pack with the
//! reader's own decoder. A chunk that reads back must be exactly what its
//! reference says.

#![no_main]

use hiber_core::image::{parse_pack_index, read_chunk_from};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let (index, pack) = match data.iter().position(|&b| b == 0) {
        Some(n) => (&data[..n], &data[n + 1..]),
        None => (data, &[][..]),
    };
    let path = Path::new("fuzz/packs/0.pack");
    let mut out = Vec::new();
    // A bounded number of references: each may decompress 4 MiB.
    for r in parse_pack_index("0", index).iter().take(16) {
        if read_chunk_from(path, pack, r, &mut out).is_ok() {
            assert_eq!(out.len(), r.raw_len as usize);
            assert_eq!(blake3::hash(&out).to_hex().as_str(), r.hash);
        }
    }
});
