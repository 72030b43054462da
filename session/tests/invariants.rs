//! What must hold when things go wrong: a failed checkpoint leaves the
//! processes running and unchanged; a failed restore leaves no process
//! behind and the image as it was; a damaged image gets an error naming
//! the damage.

mod common;

use common::*;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn read_line_with(log: &Path, prefix: &str) -> String {
    wait_until(
        &format!("a line starting with {prefix:?} in {}", log.display()),
        DEADLINE,
        || {
            complete_lines(log)
                .into_iter()
                .find(|l| l.starts_with(prefix))
        },
    )
}

/// The pack files of an image (or of one being written), with data in them.
fn pack_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pack"))
                .filter(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn checkpointer_killed_mid_dump_leaves_the_process_running_and_unchanged() {
    let t = tempdir();
    let log = t.path().join("workload.log");
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let pid = r.spawn(
        Command::new(hiber_bin())
            .args(["bench-workload", "256"])
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::null()),
    );
    let ready = read_line_with(&log, "ready ");
    let before = ready.strip_prefix("ready ").unwrap().to_string();

    let mut ck = Command::new(hiber_bin())
        .args([
            "checkpoint",
            &pid.to_string(),
            "-o",
            path(&img),
            "--no-store",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let chunks = t.path().join(format!("img.tmp-{}", ck.id())).join("packs");
    wait_until(
        "the checkpointer to write its first chunks",
        DEADLINE,
        || {
            assert!(
                ck.try_wait().unwrap().is_none(),
                "the checkpoint ended before it could be interrupted"
            );
            (!pack_files(&chunks).is_empty()).then_some(())
        },
    );
    ck.kill().unwrap();
    ck.wait().unwrap();

    assert!(
        !img.exists(),
        "no image may appear from a killed checkpoint"
    );
    wait_until(
        "the workload to be released by its dead tracer",
        DEADLINE,
        || {
            (status_field(pid, "TracerPid").as_deref() == Some("0") && state(pid) == Some('S'))
                .then_some(())
        },
    );
    // SAFETY: signalling the workload this test started.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let after = read_line_with(&log, "sum ");
    assert_eq!(after, format!("sum {before}"), "memory changed");

    // And a new checkpoint of it works.
    let out = hiber(&[
        "checkpoint",
        &pid.to_string(),
        "-o",
        path(&img),
        "--no-store",
    ]);
    assert_ok(&out, "checkpoint after an interrupted one");
    assert!(alive(pid));
}

/// A sleep saved with --stop: (image, pid, reaper).
fn saved_sleep(t: &Path) -> (std::path::PathBuf, i32, Reaper) {
    let img = t.join("img");
    let mut r = Reaper::new();
    let pid = r.spawn_sleep();
    r.checkpoint_stop(pid, &img);
    (img, pid, r)
}

#[test]
fn failed_restore_leaves_no_process_and_the_image_intact() {
    let t = tempdir();
    let (img, pid, _r) = saved_sleep(t.path());
    // Damage one chunk without changing its size: only reading it finds
    // out, after the processes exist, so they must be taken down again.
    let packs = pack_files(&img.join("packs"));
    let victim = packs.last().expect("the image has packs").clone();
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&victim, &bytes).unwrap();
    let before = snapshot_files(&img);

    let out = hiber(&["restore", path(&img)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("is corrupt")
            && err.contains(&victim.file_name().unwrap().to_string_lossy().to_string()),
        "{err}"
    );
    wait_gone(pid);
    assert_eq!(snapshot_files(&img), before, "restore changed the image");
}

#[test]
fn damaged_images_get_errors_naming_the_damage() {
    let t = tempdir();
    let (img, pid, _r) = saved_sleep(t.path());
    let doc = img.join("snapshot");
    let original = fs::read(&doc).unwrap();
    let chunk = pack_files(&img.join("packs"))
        .first()
        .expect("chunks")
        .clone();
    let chunk_bytes = fs::read(&chunk).unwrap();
    let chunk_name = chunk.file_name().unwrap().to_string_lossy().to_string();

    let expect_error = |what: &str, needle: &str| {
        for verb in ["restore", "inspect"] {
            let args: Vec<&str> = if verb == "inspect" {
                vec![verb, path(&img), "--verify"]
            } else {
                vec![verb, path(&img)]
            };
            let out = hiber(&args);
            assert_eq!(out.status.code(), Some(1), "{verb} of an image with {what}");
            let err = stderr(&out);
            assert!(
                err.contains(needle),
                "{verb} with {what}: {err:?} does not mention {needle:?}"
            );
            assert!(
                state(pid).is_none(),
                "{verb} with {what} left pid {pid} behind"
            );
        }
    };

    let mut flipped = original.clone();
    let at = original.len() - 20;
    flipped[at] ^= 0x01;
    fs::write(&doc, &flipped).unwrap();
    expect_error("a flipped metadata byte", "metadata checksum mismatch");

    fs::write(&doc, &original[..original.len() / 2]).unwrap();
    expect_error("truncated metadata", "metadata truncated");

    fs::write(&doc, b"").unwrap();
    expect_error("empty metadata", "not a hiber image");
    fs::write(&doc, &original).unwrap();

    fs::write(&chunk, &chunk_bytes[..chunk_bytes.len() - 1]).unwrap();
    expect_error(
        "a truncated pack",
        &format!("{chunk_name} ends before chunk"),
    );

    fs::remove_file(&chunk).unwrap();
    expect_error("a missing pack", &format!("{chunk_name} is missing"));

    let mut bad = chunk_bytes.clone();
    bad[0] ^= 0xff;
    fs::write(&chunk, &bad).unwrap();
    let out = hiber(&["inspect", path(&img), "--verify"]);
    assert!(
        stderr(&out).contains(&format!("{chunk_name} is corrupt")),
        "{}",
        stderr(&out)
    );

    fs::write(&chunk, &chunk_bytes).unwrap();
    let out = hiber(&["inspect", path(&img), "--verify"]);
    assert_ok(&out, "inspect of the repaired image");
}

#[test]
fn refused_process_is_reported_and_nothing_is_written() {
    let t = tempdir();
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let pid = r.spawn(
        Command::new("/usr/bin/python3")
            .args([
                "-u",
                "-c",
                "import socket,time\ns = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\nprint('ready')\ntime.sleep(1000)",
            ])
            .stdout(Stdio::piped()),
    );
    // The ready line comes once the sockets exist.
    let mut child_out = None;
    for c in r_children(&mut r) {
        child_out = c.stdout.take();
    }
    let mut line = String::new();
    BufReader::new(child_out.expect("piped stdout"))
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");

    let out = hiber(&["check", &pid.to_string()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stdout(&out).contains("Refuse")
            && stdout(&out).contains("packet sockets are not supported yet"),
        "{}",
        stdout(&out)
    );

    let out = hiber(&["checkpoint", &pid.to_string(), "-o", path(&img)]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("packet sockets are not supported yet"),
        "{}",
        stderr(&out)
    );
    assert!(!img.exists());
    assert!(fs::read_dir(t.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("img")));
    assert!(alive(pid));
    assert_eq!(status_field(pid, "TracerPid").unwrap(), "0");
}

fn r_children(r: &mut Reaper) -> &mut Vec<std::process::Child> {
    r.children_mut()
}

#[test]
fn hostile_documents_are_refused_before_anything_runs() {
    let t = tempdir();
    let (img, pid, _r) = saved_sleep(t.path());
    let original = fs::read(img.join("snapshot")).unwrap();
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let first_paged_vma = |v: &mut serde_json::Value| -> usize {
        v["processes"][0]["mm"]["vmas"]
            .as_array()
            .unwrap()
            .iter()
            .position(|m| !m["pages"].as_array().unwrap().is_empty())
            .unwrap()
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "a page outside its mapping",
            Box::new(move |v| {
                let i = first_paged_vma(v);
                v["processes"][0]["mm"]["vmas"][i]["pages"][0]["addr"] =
                    serde_json::json!(0x1000u64);
            }),
            "in the image is malformed",
        ),
        (
            "a pack path leaving the image",
            Box::new(move |v| {
                let i = first_paged_vma(v);
                v["processes"][0]["mm"]["vmas"][i]["pages"][0]["chunk"]["pack"] =
                    serde_json::json!("../../etc");
            }),
            "bad pack id",
        ),
        (
            "an fd referring to no file",
            Box::new(|v| v["processes"][0]["fds"][0]["file"] = serde_json::json!(99_999)),
            "refers to file 99999",
        ),
        (
            "pid 0",
            Box::new(|v| v["processes"][0]["pid"] = serde_json::json!(0)),
            "process with pid 0",
        ),
        (
            "a job stop by SIGKILL",
            Box::new(|v| v["processes"][0]["job_stop"] = serde_json::json!(libc::SIGKILL)),
            "stopped by signal 9, not a stop signal",
        ),
        (
            "a mapping above user space",
            Box::new(|v| {
                let n = v["processes"][0]["mm"]["vmas"].as_array().unwrap().len();
                v["processes"][0]["mm"]["vmas"][n - 1]["end"] = serde_json::json!(u64::MAX - 4095);
            }),
            "in the image is malformed",
        ),
        (
            "the same process twice",
            Box::new(|v| {
                let p = v["processes"][0].clone();
                v["processes"].as_array_mut().unwrap().push(p);
            }),
            "appears twice",
        ),
    ];
    for (what, edit, needle) in cases {
        fs::write(img.join("snapshot"), &original).unwrap();
        rewrite_document(&img, edit);
        let out = hiber(&["restore", path(&img)]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "{what}: {:?} lacks {needle:?}",
            stderr(&out)
        );
        assert!(state(pid).is_none(), "{what}: a process was left behind");
    }
    // The untouched document still restores.
    fs::write(img.join("snapshot"), &original).unwrap();
    let mut r = Reaper::new();
    r.restore(&img, &[]);
    assert!(alive(pid));
}

/// An image holds the memory of what it saved (keys, passwords): every
/// directory and file of it, and of the store it shares, is its owner's
/// alone, whatever the umask.
#[test]
fn images_and_stores_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempdir();
    let img = t.path().join("saves").join("img");
    let mut r = Reaper::new();
    let pid = r.spawn_sleep();
    let out = hiber(&["checkpoint", &pid.to_string(), "-o", path(&img)]);
    assert_ok(&out, "checkpoint");
    let mut seen = 0;
    let mut todo = vec![t.path().join("saves")];
    while let Some(p) = todo.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        assert_eq!(
            md.permissions().mode() & 0o077,
            0,
            "{} is mode {:o}",
            p.display(),
            md.permissions().mode()
        );
        seen += 1;
        if md.is_dir() {
            todo.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    // The parent, the image with its document, packs and indexes, and the
    // store beside it.
    assert!(seen >= 8, "only {seen} entries");
    assert!(t.path().join("saves/.hiber-store/packs").is_dir());
}

/// A process whose main thread has exited while another runs on is
/// refused, naming why, and keeps running untouched.
#[test]
fn a_process_whose_main_thread_exited_is_refused_and_runs_on() {
    let t = tempdir();
    let log = t.path().join("ticks");
    let mut r = Reaper::new();
    let pid = r.spawn_python(
        "import threading, ctypes, time\n\
         def work():\n\
         \x20   while True:\n\
         \x20       print('tick', flush=True); time.sleep(0.01)\n\
         threading.Thread(target=work).start()\n\
         ctypes.CDLL(None).pthread_exit(None)",
        &[],
        &log,
    );
    wait_until("the main thread to exit", DEADLINE, || {
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat"))
            .ok()
            .filter(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
    });
    let out = hiber(&[
        "checkpoint",
        &pid.to_string(),
        "-o",
        path(&t.path().join("img")),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the main thread has exited"),
        "{}",
        stderr(&out)
    );
    let ticks = lines(&log).len();
    wait_until("the worker to tick on", DEADLINE, || {
        (lines(&log).len() > ticks).then_some(())
    });
}

/// A process under a tracer (strace) is a refusal with the reason (exit
/// 3), for `check`, for a checkpoint that pre-copies and for one that does
/// not; nothing is written and it runs on, still traced by its tracer.
#[test]
fn a_traced_process_is_refused_with_the_reason() {
    let t = tempdir();
    let mut r = Reaper::new();
    let pid = r.spawn_sleep();
    let mut strace = Command::new("strace")
        .args(["-p", &pid.to_string(), "-o", "/dev/null"])
        .stderr(Stdio::null())
        .spawn()
        .expect("running strace");
    let tracer = strace.id().to_string();
    wait_until("strace to attach", DEADLINE, || {
        (status_field(pid, "TracerPid").as_deref() == Some(tracer.as_str())).then_some(())
    });
    let img = t.path().join("img");
    let pid_s = pid.to_string();
    let runs: [&[&str]; 3] = [
        &["check", &pid_s],
        &["checkpoint", &pid_s, "-o", path(&img)],
        &["checkpoint", &pid_s, "-o", path(&img), "--no-precopy"],
    ];
    for args in runs {
        let out = hiber(args);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(3), "{args:?}: {text}");
        assert!(
            text.contains(&format!("traced by pid {tracer} (strace)"))
                && text.contains("cannot be saved"),
            "{args:?}: {text}"
        );
        assert!(!img.exists(), "{args:?} wrote an image");
    }
    assert_eq!(status_field(pid, "TracerPid").unwrap(), tracer);
    assert_eq!(state(pid), Some('S'));
    strace.kill().unwrap();
    strace.wait().unwrap();
}

/// A set that exited before it could be saved is an error, not an image of
/// a zombie that "restores" nothing.
#[test]
fn a_set_that_exited_before_its_save_is_an_error() {
    let t = tempdir();
    let mut r = Reaper::new();
    let pid = r.spawn_sleep();
    // SAFETY: kill of the sleep this test started; it stays a zombie (our
    // child, not yet waited for) while hiber looks at it.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_until("the sleep to be a zombie", DEADLINE, || {
        (state(pid) == Some('Z')).then_some(())
    });
    let img = t.path().join("img");
    for extra in [&[][..], &["--stop"], &["--no-precopy"]] {
        let out = Command::new(hiber_bin())
            .args(["checkpoint", &pid.to_string(), "-o", path(&img)])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("exited while it was being saved"),
            "{extra:?}: {}",
            stderr(&out)
        );
        assert!(!img.exists(), "{extra:?} wrote an image");
    }
}

/// `--stop` by a caller that could not restore the image (no
/// CAP_CHECKPOINT_RESTORE) is refused before anything is frozen: the
/// process would be gone for good. Saving it without `--stop` works.
#[test]
fn stop_is_refused_to_a_caller_that_could_not_restore() {
    let t = tempdir();
    fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut r = Reaper::new();
    // It holds nothing of the test's: nobody could not open root's pipes
    // (the output, cargo's jobserver) to save them.
    let mut sleep = as_nobody(&["sleep", "1000"], None);
    let pid = r.spawn(&mut sleep);
    wait_until("sleep to run as nobody", DEADLINE, || {
        fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .filter(|c| c.starts_with(b"sleep"))
    });
    let hiber_as_nobody = |args: &[&str]| {
        let mut cmd = as_nobody(&[path(&hiber_bin())], None);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.output().unwrap()
    };
    let img = t.path().join("img");
    let out = hiber_as_nobody(&["checkpoint", &pid.to_string(), "-o", path(&img), "--stop"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("could not restore them")
            && stderr(&out).contains("CAP_CHECKPOINT_RESTORE"),
        "{}",
        stderr(&out)
    );
    assert!(!img.exists());
    assert_eq!(state(pid), Some('S'));
    assert_eq!(status_field(pid, "TracerPid").unwrap(), "0");
    let out = hiber_as_nobody(&["checkpoint", &pid.to_string(), "-o", path(&img)]);
    assert_ok(
        &out,
        "a checkpoint without --stop by the process's own user",
    );
    assert_eq!(state(pid), Some('S'));
}

/// A process in a cgroup someone else froze is refused at once (it could
/// not run the calls that save it; ptrace waits on it would never end),
/// and the cgroup stays frozen: it is not ours to thaw.
#[test]
fn a_process_in_a_frozen_cgroup_is_refused_and_left_frozen() {
    let mount = cgroup2_mount().expect("a cgroup v2 hierarchy (cgroup2 in /proc/self/mountinfo)");
    let cg = TestCgroup(mount.join(format!("hiber-frozen-{}", std::process::id())));
    fs::create_dir(&cg.0).unwrap();
    let mut r = Reaper::new();
    let pid = r.spawn(Command::new("sh").arg("-c").arg(format!(
        "echo $$ > {}/cgroup.procs && exec sleep 1000",
        cg.0.display()
    )));
    wait_until("sleep in its cgroup", DEADLINE, || {
        fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .filter(|c| c.starts_with(b"sleep"))
    });
    fs::write(cg.0.join("cgroup.freeze"), "1").unwrap();
    wait_until("the cgroup frozen", DEADLINE, || {
        fs::read_to_string(cg.0.join("cgroup.events"))
            .ok()?
            .lines()
            .any(|l| l == "frozen 1")
            .then_some(())
    });
    let t = tempdir();
    let img = t.path().join("img");
    let pid_s = pid.to_string();
    let runs: [&[&str]; 2] = [
        &["check", &pid_s],
        &["checkpoint", &pid_s, "-o", path(&img)],
    ];
    for args in runs {
        let out = Command::new("timeout")
            .arg("30")
            .arg(hiber_bin())
            .args(args)
            .output()
            .unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(3), "{args:?}: {text}");
        assert!(text.contains("frozen cgroup"), "{args:?}: {text}");
    }
    assert!(!img.exists());
    assert_eq!(
        fs::read_to_string(cg.0.join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "1"
    );
    fs::write(cg.0.join("cgroup.freeze"), "0").unwrap();
}

/// A root restore opens each file as the saved process that holds it: a
/// file its process can no longer read is refused (no root power lent to
/// an image), and a socket it listened on comes back owned by it, not by
/// root.
#[test]
fn a_root_restore_opens_files_as_their_saved_holder() {
    let t = tempdir();
    fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let secret = t.path().join("secret");
    fs::write(&secret, "readable when saved").unwrap();
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let sock_dir = t.path().join("run");
    fs::create_dir(&sock_dir).unwrap();
    std::os::unix::fs::chown(&sock_dir, Some(65534), Some(65534)).unwrap();
    let log = t.path().join("log");
    fs::write(&log, "").unwrap();
    std::os::unix::fs::chown(&log, Some(65534), Some(65534)).unwrap();
    let script = r#"
import socket, sys, time
f = open(sys.argv[1])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[2])
s.listen()
print("ready", flush=True)
time.sleep(1000)
"#;
    let mut r = Reaper::new();
    let mut cmd = as_nobody(&["/usr/bin/python3", "-c", script], Some(&log));
    cmd.arg(&secret).arg(sock_dir.join("listener"));
    let pid = r.spawn(&mut cmd);
    wait_until("the program's socket and file", DEADLINE, || {
        complete_lines(&log).into_iter().find(|l| l == "ready")
    });
    let img = t.path().join("img");
    r.checkpoint_stop(pid, &img);
    fs::remove_file(sock_dir.join("listener")).unwrap();

    // Its process may not read the file any more: neither may the restore.
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = hiber(&["restore", path(&img)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(path(&secret)) && stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(state(pid).is_none(), "a process was left behind");

    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    r.restore(&img, &[]);
    let meta = fs::symlink_metadata(sock_dir.join("listener")).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta)
        ),
        (65534, 65534),
        "the restored listener's socket file belongs to its program's user"
    );
}

/// A restored task maps its files as the saved process would open them:
/// a file it mapped, which its user can no longer read, is refused rather
/// than mapped with root's power.
#[test]
fn a_root_restore_maps_files_as_the_saved_process() {
    let t = tempdir();
    fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mapped = t.path().join("mapped");
    fs::write(&mapped, vec![7u8; 8192]).unwrap();
    fs::set_permissions(&mapped, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let log = t.path().join("log");
    fs::write(&log, "").unwrap();
    std::os::unix::fs::chown(&log, Some(65534), Some(65534)).unwrap();
    // Mapped, then the file closed: only the mapping names it (python's
    // own mmap module would keep a duplicate fd).
    let script = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
fd = os.open(sys.argv[1], os.O_RDONLY)
p = libc.mmap(None, 8192, 1, 2, fd, 0)
os.close(fd)
print("ready", ctypes.c_ubyte.from_address(p).value, flush=True)
time.sleep(1000)
"#;
    let mut r = Reaper::new();
    let mut cmd = as_nobody(&["/usr/bin/python3", "-c", script], Some(&log));
    cmd.arg(&mapped);
    let pid = r.spawn(&mut cmd);
    wait_until("the program's mapping", DEADLINE, || {
        complete_lines(&log).into_iter().find(|l| l == "ready 7")
    });
    let img = t.path().join("img");
    r.checkpoint_stop(pid, &img);
    fs::set_permissions(&mapped, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = hiber(&["restore", path(&img)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    // The half-built task was killed; init reaps it (here within about a
    // second).
    wait_until("the half-built task to be gone", DEADLINE, || {
        state(pid).is_none().then_some(())
    });
    fs::set_permissions(&mapped, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    r.restore(&img, &[]);
    assert!(alive(pid));
}

/// A root restore on behalf of a user (`--for-user`, what the service
/// does for its callers) refuses an image whose processes that user could
/// not restore, and restores the user's own.
#[test]
fn a_restore_for_a_user_never_gains_credentials() {
    let t = tempdir();
    let mut r = Reaper::new();
    let root_sleep = r.spawn_sleep();
    let root_img = t.path().join("root-img");
    r.checkpoint_stop(root_sleep, &root_img);
    let out = hiber(&["restore", path(&root_img), "--for-user", "65534"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("pid {root_sleep}"))
            && stderr(&out).contains("not the caller's uid 65534"),
        "{}",
        stderr(&out)
    );
    assert!(state(root_sleep).is_none());

    let mut sleep = as_nobody(&["sleep", "1000"], None);
    let nobody = r.spawn(&mut sleep);
    wait_until("sleep to run as nobody", DEADLINE, || {
        fs::read(format!("/proc/{nobody}/cmdline"))
            .ok()
            .filter(|c| c.starts_with(b"sleep"))
    });
    let img = t.path().join("nobody-img");
    r.checkpoint_stop(nobody, &img);
    r.restore(&img, &["--for-user", "65534"]);
    assert_eq!(
        status_field(nobody, "Uid")
            .unwrap()
            .split_whitespace()
            .next(),
        Some("65534")
    );
}

/// A process's own /proc/self/mountinfo (GLib keeps it open) comes back as
/// the restored process's own, at its offset, and so does its own status
/// (chromium keeps it open), opened again by the restored process; another
/// process's /proc file is refused by `check` with the reason
/// (restore could only fail on it once the process is gone), and an image
/// naming one (`/proc/self/mem` would be the restorer's own memory) is
/// refused before anything is created.
#[test]
fn proc_files_of_a_process_come_back_or_are_refused() {
    let t = tempdir();
    let log = t.path().join("log");
    let script = r#"
import signal, sys, time
import os
f = open("/proc/self/mountinfo")
first = f.readline()
cpu = open("/proc/cpuinfo")
st = open("/proc/self/status")
def more(*_):
    line = f.readline()
    st.seek(0)
    me = [l.split()[1] for l in st if l.startswith("Pid:")][0]
    print("next", " - " in line and line != first, cpu.readline().split(":")[0].strip(), me == str(os.getpid()), flush=True)
signal.signal(signal.SIGUSR1, more)
print("ready", flush=True)
while True:
    time.sleep(1000)
"#;
    let mut r = Reaper::new();
    let pid = r.spawn_python(script, &[], &log);
    wait_until("the program's /proc files", DEADLINE, || {
        complete_lines(&log).into_iter().find(|l| l == "ready")
    });
    let img = t.path().join("img");
    r.checkpoint_stop(pid, &img);
    let doc = fs::read(img.join("snapshot")).unwrap();
    assert!(
        String::from_utf8_lossy(&doc).contains("/proc/self/mountinfo"),
        "saved as the process's own"
    );
    r.restore(&img, &[]);
    // SAFETY: kill of the process this test restored.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    wait_until("the next mountinfo line, at its offset", DEADLINE, || {
        complete_lines(&log)
            .into_iter()
            .find(|l| l == "next True processor True")
    });

    // A hostile image naming another /proc file of a process.
    let original = fs::read(img.join("snapshot")).unwrap();
    r.kill_all();
    rewrite_document(&img, |v| {
        for f in v["files"].as_array_mut().unwrap() {
            if f["kind"]["path"] == "/proc/self/mountinfo" {
                f["kind"]["path"] = serde_json::json!("/proc/self/mem");
            }
        }
    });
    let out = hiber(&["restore", path(&img)]);
    if out.status.success() {
        // Restored after all: the test fails, and ends what it restored.
        r.adopt(pid);
    }
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/proc/self/mem") && stderr(&out).contains("never saves"),
        "{}",
        stderr(&out)
    );
    fs::write(img.join("snapshot"), original).unwrap();

    // A /proc file of another process (its parent's): refused by check,
    // with the reason.
    let log2 = t.path().join("log2");
    let status = r.spawn_python(
        "import os, time\nf = open('/proc/%d/status' % os.getppid())\nprint('ready', flush=True)\ntime.sleep(1000)",
        &[],
        &log2,
    );
    wait_until("the program holding its status", DEADLINE, || {
        complete_lines(&log2).into_iter().find(|l| l == "ready")
    });
    let out = hiber(&["check", &status.to_string()]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!(
            "/proc/{}/status is a /proc file of pid {}",
            std::process::id(),
            std::process::id()
        )),
        "{}",
        stdout(&out)
    );
}
