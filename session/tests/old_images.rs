//! `hiber inspect` and `hiber restore` on the images older builds wrote
//! (`core/tests/images/vN`, see its README): a format-1 image is read
//! through its conversion without the commands knowing. The saved
//! `sleep` comes back in a new pid namespace with its command line, its
//! pipe's queued bytes and its deleted file, eagerly and lazily (the page
//! server reading the format-1 chunk files), where the files it mapped
//! are still those it mapped; where they changed (another machine), the
//! restore is refused naming the file.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

fn fixture(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../core/tests/images/v{version}"))
}

/// `hiber inspect --verify --json` of the image: this build's reading.
fn inspect(dir: &Path) -> Value {
    let out = hiber(&["inspect", path(dir), "--verify", "--json"]);
    assert_ok(&out, "inspect --verify");
    serde_json::from_slice(&out.stdout).expect("inspect --json output")
}

/// The first mapped file whose size or mtime is not what the image saved.
fn changed_mapping(snapshot: &Value) -> Option<String> {
    for p in snapshot["processes"].as_array().unwrap() {
        for v in p["mm"]["vmas"].as_array().unwrap() {
            let b = &v["backing"];
            if b["type"] != "file" {
                continue;
            }
            let file = b["path"].as_str().unwrap();
            let same = fs::metadata(file).is_ok_and(|m| {
                m.size() == b["size"].as_u64().unwrap()
                    && m.mtime() * 1_000_000_000 + m.mtime_nsec() == b["mtime_ns"].as_i64().unwrap()
            });
            if !same {
                return Some(file.to_string());
            }
        }
    }
    None
}

fn restores_or_names_what_changed(version: u32) {
    let dir = fixture(version).join("image");
    let said = inspect(&dir);
    assert_eq!(said["format_version"], version);
    assert_eq!(said["verified"], true);
    let snap = &said["snapshot"];
    let saved_pid = snap["roots"][0].as_i64().unwrap() as i32;
    assert_eq!(snap["processes"][0]["comm"], "sleep");

    let mut r = Reaper::new();
    let changed = changed_mapping(snap);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    if changed.is_some() || snap["kernel"] != kernel.trim() {
        let out = hiber(&["restore", path(&dir), "--pidns", "--json"]);
        if let Some(file) = changed {
            assert_eq!(out.status.code(), Some(1), "restore of {}", dir.display());
            let err = stderr(&out);
            assert!(
                err.contains(&format!(
                    "pid {saved_pid}: mapped file {file} changed since the checkpoint"
                )),
                "{err}"
            );
            return;
        }
        // Same files, another kernel: it restores, or names the kernel
        // layout that differs.
        if !out.status.success() {
            let err = stderr(&out);
            assert!(
                err.contains("layout of this kernel differs from the image's"),
                "{err}"
            );
            return;
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        for p in v["pids"].as_array().unwrap() {
            r.adopt(p[1].as_i64().unwrap() as i32);
        }
        r.adopt(v["keeper"].as_i64().unwrap() as i32);
        return;
    }

    let restored = r.restore(&dir, &["--pidns"]);
    check_restored(version, saved_pid, &restored);
    // Lazily: the page server, which closes all but the fds the image's
    // reader holds, fills the stack (the command line) from the chunks.
    let t = tempdir();
    let status = t.path().join("lazy.json");
    let restored = r.restore(&dir, &["--pidns", "--lazy", "--lazy-status", path(&status)]);
    check_restored(version, saved_pid, &restored);
    let done = wait_until("the page server to finish", DEADLINE, || {
        let v: Value = serde_json::from_slice(&fs::read(&status).ok()?).ok()?;
        (v["state"] != "serving").then_some(v)
    });
    assert_eq!(done["state"], "done", "{done}");
}

fn check_restored(version: u32, saved_pid: i32, restored: &Restored) {
    assert!(restored.keeper.is_some());
    assert_eq!(restored.pids.len(), 1);
    let (inner, pid) = restored.pids[0];
    assert_eq!(inner, saved_pid);
    let cmdline = fs::read(fixture(version).join("cmdline")).unwrap();
    assert_eq!(fs::read(format!("/proc/{pid}/cmdline")).unwrap(), cmdline);
    assert_eq!(
        fs::read(format!("/proc/{pid}/fd/5")).unwrap(),
        fs::read(fixture(version).join("ghost")).unwrap(),
        "the deleted file's contents"
    );
    // The pipe's read end, opened again through /proc: its queued bytes.
    let mut pipe = fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/3"))
        .unwrap();
    let mut queued = vec![0u8; 4096];
    let n = std::io::Read::read(&mut pipe, &mut queued).unwrap();
    assert_eq!(
        &queued[..n],
        fs::read(fixture(version).join("pipe")).unwrap()
    );
    assert!(alive(pid));
}

#[test]
fn a_format_1_image_inspects_and_restores() {
    restores_or_names_what_changed(1);
}

#[test]
fn an_image_of_the_first_format_2_build_inspects_and_restores() {
    restores_or_names_what_changed(2);
}
