//! Reattach (experimental) on a real process, without DRM.
//!
//! There is no DRM device on the machines these tests run on, so no real
//! X server and no real card take part. What stands in: a recorded sysfs
//! tree (`HIBER_SYSFS_ROOT`) in which device 1:5 (/dev/zero, harmless and
//! always there) is `dri/card0`, class `drm`, `DEVTYPE=drm_minor`, below
//! PCI device 0000:00:02.0 with `boot_vga` 1; and python3 started through
//! a link named `Xorg`, so the kernel names the process `Xorg`, holding
//! /dev/zero and counting the SIGUSR1s it gets.
//!
//! What this proves: the classifier gives the "X server"'s card Reattach
//! without any rule; the image records the card (PCI slot, boot_vga,
//! devname) and no remove event; the restore finds the live card in
//! sysfs by its PCI slot, opens it with the saved flags at the same fd
//! number (a live open: reads work, same device number, not an `O_PATH`
//! stand-in), and sends the process SIGUSR1 exactly once after the tree
//! runs; without a matching card it falls back to the stand-in and sends
//! nothing. What it does not prove: that a real Xorg re-enters its VT and
//! draws again on a reopened card (DRM master, modesetting state, the
//! VT's own process-switch mode): that needs real hardware.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Counts SIGUSR1s and, in the handler, reads its fd again; the loop
/// reads the fd each step and prints what read and fstat say.
const FAKE_XORG: &str = r#"
import errno, os, signal, sys, time
fd = os.open("/dev/zero", os.O_RDONLY | os.O_NONBLOCK)
got = 0
def read():
    try:
        return "read %d" % len(os.read(fd, 4))
    except OSError as e:
        return "read " + errno.errorcode[e.errno]
def on_usr1(sig, frame):
    global got
    got += 1
    print("usr1", got, read(), flush=True)
signal.signal(signal.SIGUSR1, on_usr1)
k = 0
while True:
    k += 1
    st = os.fstat(fd)
    print(k, fd, read(), "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)), "usr1", got, flush=True)
    time.sleep(0.005)
"#;

/// A sysfs tree where 1:5 is the boot VGA card `dri/card0` and the mem
/// devices but /dev/zero are this machine's (through a link to /sys).
fn fixture_sysfs(root: &Path) -> PathBuf {
    let sys = root.join("sys");
    let pci = sys.join("devices/pci0000:00/0000:00:02.0");
    let card = pci.join("drm/card0");
    fs::create_dir_all(&card).unwrap();
    fs::create_dir_all(sys.join("class/drm")).unwrap();
    fs::create_dir_all(sys.join("dev/char")).unwrap();
    fs::write(
        card.join("uevent"),
        "MAJOR=1\nMINOR=5\nDEVNAME=dri/card0\nDEVTYPE=drm_minor\n",
    )
    .unwrap();
    symlink("../../../../../class/drm", card.join("subsystem")).unwrap();
    symlink("../../../0000:00:02.0", card.join("device")).unwrap();
    fs::write(
        pci.join("uevent"),
        "DRIVER=i915\nPCI_CLASS=30000\nPCI_ID=8086:9A49\nPCI_SLOT_NAME=0000:00:02.0\n",
    )
    .unwrap();
    fs::write(pci.join("boot_vga"), "1\n").unwrap();
    let devpath = "../../devices/pci0000:00/0000:00:02.0/drm/card0";
    symlink(devpath, sys.join("dev/char/1:5")).unwrap();
    symlink(devpath, sys.join("class/drm/card0")).unwrap();
    // /dev/null (stdin) and the rest: the machine's own.
    symlink("/sys/devices/virtual", sys.join("devices/virtual")).unwrap();
    for n in [3, 7, 8, 9] {
        symlink(
            fs::read_link(format!("/sys/dev/char/1:{n}")).unwrap(),
            sys.join(format!("dev/char/1:{n}")),
        )
        .unwrap();
    }
    sys
}

/// `hiber ARGS` with the device table from `policy` and, when given,
/// sysfs read from `sysfs`.
fn hiber_with(args: &[&str], policy: &Path, sysfs: Option<&Path>) -> Output {
    let mut cmd = Command::new(hiber_bin());
    cmd.args(args).env("HIBER_DEVICE_POLICY_FILE", policy);
    match sysfs {
        Some(s) => cmd.env("HIBER_SYSFS_ROOT", s),
        None => cmd.env_remove("HIBER_SYSFS_ROOT"),
    };
    cmd.output().expect("running hiber")
}

struct Setup {
    _t: tempfile::TempDir,
    r: Reaper,
    pid: i32,
    fd: i32,
    log: PathBuf,
    img: PathBuf,
    policy: PathBuf,
    sysfs: PathBuf,
}

/// Start the fake X server and check what `hiber check` says of its card.
fn start() -> Setup {
    let t = tempdir();
    let sysfs = fixture_sysfs(t.path());
    let policy = t.path().join("devices.toml");
    fs::write(&policy, "# no rules: the built-in table alone\n").unwrap();
    let xorg = t.path().join("Xorg");
    symlink("/usr/bin/python3", &xorg).unwrap();
    let log = t.path().join("xorg.log");
    let mut r = Reaper::new();
    let pid = r.spawn(
        Command::new(&xorg)
            .args(["-c", FAKE_XORG])
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::null()),
    );
    let first = wait_lines(&log, 3)[0].clone();
    let fd: i32 = first.split(' ').nth(1).unwrap().parse().unwrap();
    assert_eq!(
        first,
        format!("1 {fd} read 4 1:5 usr1 0"),
        "the program runs"
    );
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/comm")).unwrap(),
        "Xorg\n",
        "the kernel names it after the link"
    );

    let out = hiber_with(
        &["check", &pid.to_string(), "--json"],
        &policy,
        Some(&sysfs),
    );
    assert_ok(&out, "check");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["pid"] == pid && f["subject"]["fd"] == fd)
        .unwrap_or_else(|| panic!("fd {fd} in {report:#}"));
    assert_eq!(f["policy"], "Reattach");
    assert_eq!(f["kind"], "char device /dev/zero (1:5), class drm");
    let reason = f["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "dri/card0 at /devices/pci0000:00/0000:00:02.0/drm/card0; device 1:5 (automatic: an X server's primary DRM card): Reattach (experimental): "
        ) && reason.contains("PCI slot 0000:00:02.0")
            && reason.contains("SIGUSR1"),
        "{reason}"
    );
    let img = t.path().join("img");
    Setup {
        _t: t,
        r,
        pid,
        fd,
        log,
        img,
        policy,
        sysfs,
    }
}

/// `checkpoint --stop` under the fixture sysfs; the image's record.
fn checkpoint_stop(s: &mut Setup) -> Value {
    s.r.adopt(s.pid);
    let args = [
        "checkpoint",
        &s.pid.to_string(),
        "-o",
        path(&s.img),
        "--stop",
        "--json",
    ];
    let out = hiber_with(&args, &s.policy, Some(&s.sysfs));
    assert_ok(&out, "checkpoint --stop");
    s.r.wait_children(&[s.pid]);
    wait_gone(s.pid);
    let inspect = hiber(&["inspect", path(&s.img), "--json"]);
    assert_ok(&inspect, "inspect");
    let snap: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        snap["snapshot"]["detached"],
        serde_json::json!([]),
        "no remove event for a reattached card"
    );
    snap["snapshot"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"]["type"] == "reattached")
        .unwrap_or_else(|| panic!("a reattached card in the image: {snap:#}"))
        .clone()
}

/// `hiber restore` with or without the fixture sysfs; the restored pid.
fn restore(s: &mut Setup, sysfs: Option<&Path>) -> i32 {
    let out = hiber_with(&["restore", path(&s.img), "--json"], &s.policy, sysfs);
    assert_ok(&out, "restore");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pids: Vec<(i32, i32)> = serde_json::from_value(v["pids"].clone()).unwrap();
    for &(_, now) in &pids {
        s.r.adopt(now);
    }
    if let Some(keeper) = v["keeper"].as_i64() {
        s.r.adopt(keeper as i32);
    }
    assert_eq!(pids, [(s.pid, s.pid)]);
    s.pid
}

fn fd_flags(pid: i32, fd: i32) -> u32 {
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap()
        .trim();
    u32::from_str_radix(flags, 8).unwrap()
}

#[test]
fn x_servers_card_is_reopened_live_and_the_server_signalled_once() {
    let mut s = start();
    let rec = checkpoint_stop(&mut s);
    assert_eq!(
        rec["flags"].as_u64().unwrap() as i32 & libc::O_NONBLOCK,
        libc::O_NONBLOCK,
        "the fd's open flags are saved: {rec}"
    );
    let card = &rec["kind"]["card"];
    assert_eq!(card["pci_slot"], "0000:00:02.0");
    assert_eq!(card["boot_vga"], true);
    assert_eq!(card["devname"], "dri/card0");
    assert_eq!(
        card["devpath"],
        "/devices/pci0000:00/0000:00:02.0/drm/card0"
    );
    assert_eq!(rec["kind"]["signal"], "USR1");
    let saved = complete_lines(&s.log);
    assert!(
        saved.iter().all(|l| !l.starts_with("usr1")),
        "no signal before the restore"
    );

    let sysfs = s.sysfs.clone();
    let pid = restore(&mut s, Some(&sysfs));
    // The handler's line, whenever the restorer's signal lands (under
    // load, more than 30 loop lines may come first), then enough loop
    // lines to see a second signal.
    let n = saved.len();
    let handled = wait_until("the server's SIGUSR1 handler to run", DEADLINE, || {
        complete_lines(&s.log)[n..]
            .iter()
            .position(|l| l.starts_with("usr1"))
            .map(|i| n + i)
    });
    let all = wait_lines(&s.log, handled + 1 + 30);
    let after = &all[n..];
    let usr1: Vec<&String> = after.iter().filter(|l| l.starts_with("usr1")).collect();
    assert_eq!(
        usr1,
        [&"usr1 1 read 4".to_string()],
        "one SIGUSR1, and the fd reads in the handler"
    );
    for l in after.iter().filter(|l| !l.starts_with("usr1")) {
        let w: Vec<&str> = l.split(' ').collect();
        assert_eq!(
            &w[1..6],
            [&s.fd.to_string(), "read", "4", "1:5", "usr1"],
            "{l}"
        );
    }
    let last = after.iter().rfind(|l| !l.starts_with("usr1")).unwrap();
    assert!(last.ends_with(" usr1 1"), "{last}");
    // A live open of the device, at the same number, with the saved flags.
    let link = format!("/proc/{pid}/fd/{}", s.fd);
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("/dev/zero"));
    let rdev = fs::metadata(&link).unwrap().rdev();
    assert_eq!((libc::major(rdev), libc::minor(rdev)), (1, 5));
    let flags = fd_flags(pid, s.fd);
    assert_eq!(flags & libc::O_PATH as u32, 0, "not an O_PATH stand-in");
    assert_ne!(flags & libc::O_NONBLOCK as u32, 0, "O_NONBLOCK as saved");
}

#[test]
fn without_a_matching_card_the_stand_in_and_no_signal() {
    let mut s = start();
    checkpoint_stop(&mut s);
    let n = complete_lines(&s.log).len();
    // This machine's own /sys: no DRM card at all.
    let pid = restore(&mut s, None);
    let all = wait_lines(&s.log, n + 20);
    for l in &all[n..] {
        assert_eq!(
            l.split(' ').skip(1).collect::<Vec<_>>(),
            [&s.fd.to_string(), "read", "EBADF", "1:5", "usr1", "0"],
            "a dead stand-in, never signalled: {l}"
        );
    }
    assert_ne!(fd_flags(pid, s.fd) & libc::O_PATH as u32, 0);
}
