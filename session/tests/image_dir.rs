//! The image directory as untrusted input, end to end: a real saved image
//! whose document, packs or packs directory were replaced by FIFOs,
//! symlinks (to a FIFO, to a root-only file outside the image), a
//! directory, another user's file, a truncated or a huge file. `hiber
//! inspect`, `inspect --verify` and `restore` each exit 1 at once with an
//! error naming the image path and what is wrong with it, never block,
//! never say anything about the file outside, and leave no process.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Any of the runs below answers in well under a second; a run still
/// going after this long is blocked.
const HANG: Duration = Duration::from_secs(20);

/// `hiber ARGS`, ended (by pid) and failed if it does not exit in time.
fn hiber_within(args: &[&str], out_dir: &Path) -> Output {
    let (out_path, err_path) = (out_dir.join("stdout"), out_dir.join("stderr"));
    let mut child = Command::new(hiber_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("running hiber");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > HANG {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("hiber {args:?} blocked for {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: fs::read(&out_path).unwrap(),
        stderr: fs::read(&err_path).unwrap(),
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

fn copy_image(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).unwrap();
    fs::copy(from.join("snapshot"), to.join("snapshot")).unwrap();
    fs::create_dir(to.join("packs")).unwrap();
    for e in fs::read_dir(from.join("packs")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join("packs").join(e.file_name())).unwrap();
    }
}

/// The largest pack of an image (the one chunks surely live in).
fn a_pack(img: &Path) -> PathBuf {
    fs::read_dir(img.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("the image has a pack")
}

/// Where the last chunk the document references in `pack` ends: a pack
/// can hold chunks no document references (pre-copied pages written
/// again at the freeze), which a cut past them would not touch.
fn referenced_end(img: &Path, pack: &Path) -> u64 {
    fn walk(v: &serde_json::Value, id: &str, end: &mut u64) {
        match v {
            serde_json::Value::Object(o) => {
                if o.get("pack").and_then(|p| p.as_str()) == Some(id) {
                    let n = |k: &str| o.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
                    *end = (*end).max(n("offset") + n("stored_len"));
                }
                o.values().for_each(|x| walk(x, id, end));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, id, end)),
            _ => {}
        }
    }
    let bytes = fs::read(img.join("snapshot")).unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&bytes[nl + 1..]).unwrap();
    let id = pack.file_stem().unwrap().to_str().unwrap();
    let mut end = 0;
    walk(&doc, id, &mut end);
    assert!(end > 0, "the document references {}", pack.display());
    end
}

const SECRET: &str = "root-only-secret-5c2e";
/// The secret file's size: no message may show it.
const SECRET_BYTES: usize = 7919;

#[test]
fn planted_entries_give_a_clear_error_and_never_block() {
    let t = tempdir();
    let saved = t.path().join("saved");
    let mut r = Reaper::new();
    let pid = r.spawn_sleep();
    r.checkpoint_stop(pid, &saved);

    let secret = t.path().join("outside").join("shadow");
    fs::create_dir(secret.parent().unwrap()).unwrap();
    fs::write(
        &secret,
        &SECRET.repeat(SECRET_BYTES).as_bytes()[..SECRET_BYTES],
    )
    .unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let fifo = t.path().join("outside").join("fifo");
    mkfifo(&fifo);

    // (what, the entry planted, how, the words the error must hold)
    type Plant = fn(&Path, &Path, &Path);
    let cases: Vec<(&str, &str, Plant, &str)> = vec![
        (
            "document as a FIFO",
            "snapshot",
            |p, _, _| mkfifo(p),
            "is not a regular file (it is a FIFO)",
        ),
        (
            "document as a symlink to a FIFO",
            "snapshot",
            |p, _, f| symlink(f, p).unwrap(),
            "is a symlink",
        ),
        (
            "document as a symlink to a root-only file",
            "snapshot",
            |p, s, _| symlink(s, p).unwrap(),
            "is a symlink",
        ),
        (
            "a huge document",
            "snapshot",
            |p, _, _| {
                let f = fs::File::create(p).unwrap();
                f.set_len(1 << 40).unwrap();
            },
            "is larger than any hiber writes",
        ),
        (
            "pack as a FIFO",
            "pack",
            |p, _, _| mkfifo(p),
            "is not a regular file (it is a FIFO)",
        ),
        (
            "pack as a symlink to a FIFO",
            "pack",
            |p, _, f| symlink(f, p).unwrap(),
            "is a symlink",
        ),
        (
            "pack as a symlink to a root-only file",
            "pack",
            |p, s, _| symlink(s, p).unwrap(),
            "is a symlink",
        ),
        (
            "pack as a directory",
            "pack",
            |p, _, _| fs::create_dir(p).unwrap(),
            "is not a regular file (it is a directory)",
        ),
        (
            "packs directory as a symlink",
            "packs",
            |p, _, _| symlink(p.with_file_name("packs-moved"), p).unwrap(),
            "is a symlink",
        ),
    ];

    for (n, (what, entry, plant, expected)) in cases.into_iter().enumerate() {
        let img = t.path().join(format!("img{n}"));
        copy_image(&saved, &img);
        let target = match entry {
            "snapshot" => img.join("snapshot"),
            "pack" => a_pack(&img),
            _ => {
                fs::rename(img.join("packs"), img.join("packs-moved")).unwrap();
                img.join("packs")
            }
        };
        if entry != "packs" {
            fs::remove_file(&target).unwrap();
        }
        plant(&target, &secret, &fifo);
        check_refused(what, &img, &target, expected, &secret, pid, t.path());
    }

    // Another user's pack in root's image; a pack cut short.
    let img = t.path().join("img-owner");
    copy_image(&saved, &img);
    let pack = a_pack(&img);
    std::os::unix::fs::chown(&pack, Some(65534), Some(65534)).unwrap();
    check_refused(
        "a pack owned by another user",
        &img,
        &pack,
        "is owned by uid 65534",
        &secret,
        pid,
        t.path(),
    );

    let img = t.path().join("img-short");
    copy_image(&saved, &img);
    let pack = a_pack(&img);
    let short = referenced_end(&img, &pack) - 1;
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(short)
        .unwrap();
    check_refused(
        "a truncated pack",
        &img,
        &pack,
        "ends before chunk",
        &secret,
        pid,
        t.path(),
    );
    for verb in ["inspect", "restore"] {
        let out = hiber_within(&[verb, path(&img)], t.path());
        assert!(
            !stderr(&out).contains(&short.to_string()),
            "{verb} shows the pack's size: {}",
            stderr(&out)
        );
    }

    // The untouched copy still restores: the checks refuse only what is planted.
    let img = t.path().join("img-whole");
    copy_image(&saved, &img);
    let out = hiber_within(&["inspect", path(&img), "--verify"], t.path());
    assert_ok(&out, "inspect --verify of a whole copy");
}

#[track_caller]
fn check_refused(
    what: &str,
    img: &Path,
    target: &Path,
    expected: &str,
    secret: &Path,
    pid: i32,
    scratch: &Path,
) {
    for args in [
        vec!["inspect", path(img)],
        vec!["inspect", path(img), "--verify"],
        vec!["restore", path(img)],
    ] {
        let out = hiber_within(&args, scratch);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?} with {what}: {err}");
        assert!(
            err.contains(path(target)) && err.contains(expected),
            "{args:?} with {what}: {err:?} does not say {} {expected:?}",
            target.display()
        );
        assert!(
            !err.contains(SECRET)
                && !err.contains(&SECRET_BYTES.to_string())
                && !err.contains(path(secret)),
            "{args:?} with {what} reveals the file outside the image: {err}"
        );
        assert!(
            state(pid).is_none(),
            "{args:?} with {what} left pid {pid} running"
        );
    }
}

/// Flip every 16th byte of every pack under `dir`, at any depth: every
/// chunk is hit, not only one that perhaps no document references (a
/// pack can hold pre-copied pages written again at the freeze).
fn corrupt_packs(dir: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += corrupt_packs(&p);
        } else if p.extension().is_some_and(|x| x == "pack") {
            let mut bytes = fs::read(&p).unwrap();
            bytes.iter_mut().step_by(16).for_each(|b| *b ^= 0xff);
            fs::write(&p, bytes).unwrap();
            n += 1;
        }
    }
    n
}

/// `checkpoint --stop --verify` ends the processes only once the image
/// reads back whole. A second save whose chunks come from a store that
/// rotted since (bytes flipped all through every pack) does not: the image is
/// removed and the process runs on; into a sound store the same save
/// ends it.
#[test]
fn a_stop_save_that_does_not_read_back_whole_leaves_the_processes_running() {
    let t = tempdir();
    let store = t.path().join("store");
    let mut r = Reaper::new();
    let pid = r.spawn_sleep();
    let pid_s = pid.to_string();
    let first = t.path().join("first");
    let out = hiber(&[
        "checkpoint",
        &pid_s,
        "-o",
        path(&first),
        "--store",
        path(&store),
        "--json",
    ]);
    assert_ok(&out, "first checkpoint");
    assert!(corrupt_packs(&store) > 0, "the store holds packs");

    let second = t.path().join("second");
    let out = hiber(&[
        "checkpoint",
        &pid_s,
        "-o",
        path(&second),
        "--store",
        path(&store),
        "--stop",
        "--verify",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(path(&second)) && err.contains("did not read back whole"),
        "{err}"
    );
    assert!(!second.exists(), "the image that failed is removed");
    assert!(alive(pid), "the process runs on");
    // Not left stopped: it sleeps again (it may still be on its way).
    assert!(!matches!(state(pid), Some('T' | 't')), "{:?}", state(pid));
    wait_until("the process to sleep again", DEADLINE, || {
        (state(pid) == Some('S')).then_some(())
    });

    let third = t.path().join("third");
    r.checkpoint_stop_with(pid, &third, &["--verify", "--no-store"]);
    wait_gone(pid);
}
