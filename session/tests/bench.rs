//! `hiber bench` runs its whole course (memory rows, the `--stop` save, the
//! tree saved and restored) and reports what it measured. Behaviour, not
//! figures: the numbers themselves are for the closing notes, and come
//! from release builds.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn the_benchmark_saves_and_restores_memory_and_a_tree() {
    let t = tempdir();
    let out = hiber(&[
        "bench",
        "--sizes",
        "1",
        "--tree",
        "5",
        "--json",
        "--dir",
        t.path().to_str().expect("a UTF-8 temporary directory"),
    ]);
    assert!(out.status.success(), "hiber bench: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bench's JSON {:?}: {e}", stdout(&out)));

    let rows = report["memory"].as_array().expect("memory rows");
    assert_eq!(rows.len(), 1, "{report:#}");
    let row = &rows[0];
    assert_eq!(row["mib"], 1);
    // The workload's memory does not compress: the image holds at least it.
    let image = row["image_bytes"].as_u64().expect("image_bytes");
    assert!(image >= 1 << 20, "a 1 MiB workload's image: {image} bytes");
    // The second save into the same store writes less than a whole image.
    let again = row["incremental_written_bytes"]
        .as_u64()
        .expect("incremental");
    assert!(again < image, "incremental {again} of an image of {image}");
    for key in [
        "checkpoint_ms",
        "frozen_ms",
        "stop_ms",
        "restore_ms",
        "write_ms",
        "read_ms",
        "lazy_running_ms",
        "lazy_total_ms",
        "lazy_ratio",
    ] {
        let v = row[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {row:#}"));
        assert!(v > 0.0, "{key} = {v}");
    }
    // Running before every page is in: the server finishes after.
    assert!(
        row["lazy_total_ms"].as_f64() >= row["lazy_running_ms"].as_f64(),
        "{row:#}"
    );

    let tree = &report["tree"];
    assert_eq!(tree["processes"], 5, "{report:#}");
    for key in ["spawn_ms", "stop_ms", "restore_ms"] {
        let v = tree[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {tree:#}"));
        assert!(v > 0.0, "{key} = {v}");
    }
    // Every image and baseline file removed.
    let left: Vec<_> = std::fs::read_dir(t.path())
        .expect("reading the bench directory")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left in the bench directory: {left:?}");
}

/// `--compare-criu` checks its CRIU before measuring anything: a path
/// that does not run, and a CRIU older than 4, are clear errors naming
/// the path and what it said. (A comparison with a real CRIU is run by
/// hand: CRIU is not installed where the suite runs.)
#[test]
fn a_missing_or_old_criu_is_refused_before_anything_is_measured() {
    let t = tempdir();
    let dir = t.path().join("bench");
    let dir_s = dir.to_str().expect("a UTF-8 temporary directory");
    let bench_against = |criu: &str| {
        hiber(&[
            "bench",
            "--sizes",
            "1",
            "--tree",
            "0",
            "--dir",
            dir_s,
            "--compare-criu",
            criu,
        ])
    };

    let out = bench_against("/nonexistent/criu");
    assert!(!out.status.success(), "bench with a missing CRIU succeeded");
    let err = stderr(&out);
    assert!(err.contains("/nonexistent/criu"), "{err}");
    assert!(err.contains("does not run"), "{err}");
    assert!(
        !err.contains("measuring"),
        "measured before the check: {err}"
    );

    let old = t.path().join("criu");
    std::fs::write(
        &old,
        "#!/bin/sh\necho 'Version: 3.17'\necho 'GitID: v3.17'\n",
    )
    .expect("writing the old CRIU script");
    let mut perms = std::fs::metadata(&old).expect("its metadata").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&old, perms).expect("making the old CRIU script executable");
    let out = bench_against(old.to_str().expect("a UTF-8 path"));
    assert!(!out.status.success(), "bench with CRIU 3.17 succeeded");
    let err = stderr(&out);
    assert!(err.contains(old.to_str().expect("a UTF-8 path")), "{err}");
    assert!(err.contains("\"3.17\""), "{err}");
    assert!(err.contains("CRIU 4 or newer"), "{err}");
    assert!(
        !err.contains("measuring"),
        "measured before the check: {err}"
    );
    // Nothing was measured, so nothing was made.
    assert!(!dir.exists(), "bench made {}", dir.display());
}
