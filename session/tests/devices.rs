//! Detached devices on real processes: a device of this machine (/dev/zero,
//! 1:5, harmless and always there) is made a detached device by the test's
//! policy file, saved with `checkpoint --stop` and restored. The program
//! goes on, finds its fd dead (EBADF) but still the device by fstat, and
//! its private mapping of the device back zero-filled in place.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// A policy file that detaches /dev/zero (1:5) and /dev/random (1:8),
/// `mem` devices.
fn detach_zero(dir: &Path) -> std::path::PathBuf {
    let f = dir.join("devices.toml");
    fs::write(
        &f,
        "[devices]\n\"1:5\" = \"detach\"\n\"1:8\" = \"detach\"\n",
    )
    .unwrap();
    f
}

/// `hiber checkpoint ROOT -o DIR --stop` with `extra` arguments, then wait
/// until the tree is gone, so its pids are free for the restore.
#[track_caller]
fn checkpoint_stop(r: &mut Reaper, root: i32, dir: &Path, extra: &[&str]) {
    let pids: Vec<i32> = tree(root).into_iter().collect();
    for &p in &pids {
        r.adopt(p);
    }
    let root_s = root.to_string();
    let mut args = vec!["checkpoint", &root_s, "-o", path(dir), "--stop", "--json"];
    args.extend_from_slice(extra);
    assert_ok(&hiber(&args), "checkpoint --stop");
    r.wait_children(&pids);
    for p in pids {
        wait_gone(p);
    }
}

/// Reads its fd of /dev/zero each step and prints what read and fstat
/// say, and how many fds its epoll finds ready: /dev/random is watched.
const READER: &str = r#"
import errno, os, select, stat, sys, time
fd = os.open("/dev/zero", os.O_RDONLY)
rnd = os.open("/dev/random", os.O_RDONLY)
ep = select.epoll()
ep.register(rnd, select.EPOLLIN)
k = 0
while True:
    k += 1
    try:
        r = "read %d" % len(os.read(fd, 4))
    except OSError as e:
        r = "read " + errno.errorcode[e.errno]
    st = os.fstat(fd)
    kind = "char" if stat.S_ISCHR(st.st_mode) else "other"
    print(k, fd, r, "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)), kind, "ready", len(ep.poll(0)), flush=True)
    time.sleep(0.005)
"#;

fn spawn_python(r: &mut Reaper, script: &str, log: &Path) -> i32 {
    r.spawn(
        Command::new("/usr/bin/python3")
            .args(["-c", script])
            .stdout(fs::File::create(log).unwrap())
            .stderr(Stdio::null()),
    )
}

fn finding<'a>(report: &'a Value, pid: i32, kind_prefix: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["pid"] == pid && f["kind"].as_str().unwrap_or("").starts_with(kind_prefix))
        .unwrap_or_else(|| panic!("no finding {kind_prefix:?} for pid {pid} in {report:#}"))
}

#[test]
fn detached_device_fd_is_dead_after_restore_but_fstat_still_shows_it() {
    let t = tempdir();
    let log = t.path().join("reader.log");
    let img = t.path().join("img");
    let policy = detach_zero(t.path());
    let mut r = Reaper::new();
    let pid = spawn_python(&mut r, READER, &log);
    let before = wait_lines(&log, 5);
    let fd: i32 = before[0].split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        before[0].ends_with(" read 4 1:5 char ready 1"),
        "{}",
        before[0]
    );

    // check names the device, its class and the rule from the file.
    let out = hiber(&[
        "check",
        &pid.to_string(),
        "--json",
        "--device-policy-file",
        path(&policy),
    ]);
    assert_ok(&out, "check");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = finding(&report, pid, "char device /dev/zero (1:5), class mem");
    assert_eq!(f["subject"]["fd"], fd);
    assert_eq!(f["policy"], "Detach");
    let reason = f["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "zero at /devices/virtual/mem/zero; device 1:5 ({}): detached",
            policy.display()
        )),
        "{reason}"
    );

    checkpoint_stop(&mut r, pid, &img, &["--device-policy-file", path(&policy)]);
    let saved = complete_lines(&log).len();
    let inspect = hiber(&["inspect", path(&img), "--json"]);
    assert_ok(&inspect, "inspect");
    let snap: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let detached = snap["snapshot"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| (f["kind"]["type"] == "detached").then(|| &f["kind"]))
        .unwrap_or_else(|| panic!("a detached device in the image: {snap:#}"));
    assert_eq!(detached["class"], "mem");
    assert_eq!(detached["identity"]["devpath"], "/devices/virtual/mem/zero");
    assert_eq!(detached["remove"]["action"], "remove");
    assert_eq!(detached["remove"]["devname"], "zero");
    assert_eq!(detached["remove"]["devnum"], serde_json::json!([1, 5]));

    r.restore(&img, &[]);
    let all = wait_lines(&log, saved + 10);
    for (i, l) in all.iter().enumerate() {
        let k = i + 1;
        // After the restore the epoll no longer watches the detached
        // /dev/random: a stand-in cannot be watched.
        let expected = if k <= saved {
            "read 4 1:5 char ready 1"
        } else {
            "read EBADF 1:5 char ready 0"
        };
        assert_eq!(
            l,
            &format!("{k} {fd} {expected}"),
            "line {k} (saved at {saved})"
        );
    }
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    assert_eq!(
        link,
        Path::new("/dev/zero"),
        "the stand-in is of the live node"
    );
}

/// Private mappings of /dev/zero (one read-write, written to; one
/// read-only) and a shared one, whose memory the kernel keeps in shmem.
const MAPPER: &str = r#"
import ctypes, mmap, os, time
fd = os.open("/dev/zero", os.O_RDWR)
rw = mmap.mmap(fd, 8192, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)
ro = mmap.mmap(fd, 4096, mmap.MAP_PRIVATE, mmap.PROT_READ)
sh = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
os.close(fd)
rw[0:5] = b"hello"
rw[4096:4101] = b"world"
sh[0:5] = b"kept!"
rw_at = ctypes.addressof(ctypes.c_char.from_buffer(rw))
sh_at = ctypes.addressof(ctypes.c_char.from_buffer(sh))
k = 0
while True:
    k += 1
    print(k, "%x" % rw_at, "%x" % sh_at, rw[0:5].hex(), rw[4096:4101].hex(), ro[0:4].hex(), sh[0:5].hex(), flush=True)
    time.sleep(0.005)
"#;

fn range(line: &str) -> (u64, u64) {
    let (a, b) = line
        .split_whitespace()
        .next()
        .unwrap()
        .split_once('-')
        .unwrap();
    (
        u64::from_str_radix(a, 16).unwrap(),
        u64::from_str_radix(b, 16).unwrap(),
    )
}

/// The `/proc/PID/maps` line of the mapping holding all of `[at, at+len)`
/// (a restored anonymous mapping may have merged with a neighbour).
fn maps_line(pid: i32, at: u64, len: u64) -> String {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .find(|l| {
            let (start, end) = range(l);
            start <= at && at + len <= end
        })
        .unwrap_or_else(|| panic!("no mapping holds {at:x}+{len:#x} in pid {pid}:\n{maps}"))
        .to_string()
}

fn perms(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap()
}

#[test]
fn device_mappings_come_back_in_place_zero_filled() {
    let t = tempdir();
    let log = t.path().join("mapper.log");
    let img = t.path().join("img");
    let policy = detach_zero(t.path());
    let mut r = Reaper::new();
    let pid = spawn_python(&mut r, MAPPER, &log);
    let first = wait_lines(&log, 3)[0].clone();
    let w: Vec<&str> = first.split(' ').collect();
    let (rw_at, sh_at) = (
        u64::from_str_radix(w[1], 16).unwrap(),
        u64::from_str_radix(w[2], 16).unwrap(),
    );
    assert_eq!(
        &w[3..],
        ["68656c6c6f", "776f726c64", "00000000", "6b65707421"],
        "{first}"
    );
    let rw_line = maps_line(pid, rw_at, 8192);
    assert_eq!(range(&rw_line), (rw_at, rw_at + 8192));
    assert!(
        rw_line.ends_with(" /dev/zero"),
        "a private device mapping: {rw_line}"
    );
    let ro_start = fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .find(|l| l.ends_with(" /dev/zero") && perms(l) == "r--p")
        .map(|l| u64::from_str_radix(l.split('-').next().unwrap(), 16).unwrap())
        .expect("the read-only mapping");

    // The report says what happens to a mapping of a detached device.
    let out = hiber(&[
        "check",
        &pid.to_string(),
        "--json",
        "--device-policy-file",
        path(&policy),
    ]);
    assert_ok(&out, "check");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = finding(
        &report,
        pid,
        "device mapping of char device /dev/zero (1:5), class mem",
    );
    assert_eq!(f["policy"], "Detach");
    assert!(f["reason"].as_str().unwrap().contains("zero-filled"), "{f}");

    checkpoint_stop(&mut r, pid, &img, &["--device-policy-file", path(&policy)]);
    let saved = complete_lines(&log).len();
    r.restore(&img, &[]);
    let all = wait_lines(&log, saved + 5);
    for l in &all[saved..] {
        let w: Vec<&str> = l.split(' ').collect();
        assert_eq!(
            &w[1..3],
            [format!("{rw_at:x}"), format!("{sh_at:x}")],
            "{l}"
        );
        assert_eq!(
            &w[3..],
            ["0000000000", "0000000000", "00000000", "6b65707421"],
            "private device memory zero-filled, shared memory kept: {l}"
        );
    }
    let rw_after = maps_line(pid, rw_at, 8192);
    let ro_after = maps_line(pid, ro_start, 4096);
    assert_eq!(perms(&rw_after), "rw-p", "{rw_after}");
    assert_eq!(perms(&ro_after), "r--p", "{ro_after}");
}

#[test]
fn device_policy_flag_over_file_over_builtin_on_the_command_line() {
    let t = tempdir();
    let policy = detach_zero(t.path());
    let mut r = Reaper::new();
    let log = t.path().join("reader.log");
    let pid = spawn_python(&mut r, READER, &log);
    wait_lines(&log, 1);
    let pid_s = pid.to_string();
    let policy_of = |extra: &[&str], env: Option<&Path>| {
        let mut cmd = Command::new(hiber_bin());
        cmd.args(["check", &pid_s, "--json"]).args(extra);
        match env {
            Some(p) => cmd.env("HIBER_DEVICE_POLICY_FILE", p),
            None => cmd.env_remove("HIBER_DEVICE_POLICY_FILE"),
        };
        let out = cmd.output().unwrap();
        let report: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
        let f = finding(&report, pid, "char device /dev/zero (1:5)");
        (f["policy"].as_str().unwrap().to_string(), out.status.code())
    };
    // Built-in: the mem class is reopened (unless this machine's own
    // policy file says otherwise: then that is what a plain check shows).
    if !Path::new("/etc/hiber/devices.toml").exists() {
        assert_eq!(policy_of(&[], None), ("Reopen".into(), Some(0)));
    }
    // The file, by flag or by environment.
    let file = ["--device-policy-file", path(&policy)];
    assert_eq!(policy_of(&file, None), ("Detach".into(), Some(0)));
    assert_eq!(policy_of(&[], Some(&policy)), ("Detach".into(), Some(0)));
    // A flag over the file; a class flag over the file's device rule.
    let refuse = [&file[..], &["--device-policy", "mem=refuse"]].concat();
    assert_eq!(policy_of(&refuse, None), ("Refuse".into(), Some(3)));
    let reattach = [&file[..], &["--device-policy", "1:5=reattach"]].concat();
    let (p, code) = policy_of(&reattach, None);
    assert_eq!(
        (p.as_str(), code),
        ("Refuse", Some(3)),
        "Reattach is only for DRM cards"
    );
    // A bad rule or a missing named file is an error, not a fallback.
    let out = hiber(&["check", &pid_s, "--device-policy", "mem=maybe"]);
    assert!(
        !out.status.success() && stderr(&out).contains("unknown policy"),
        "{}",
        stderr(&out)
    );
    let out = hiber(&[
        "check",
        &pid_s,
        "--device-policy-file",
        "/nonexistent/devices.toml",
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("does not exist"),
        "{}",
        stderr(&out)
    );
}
