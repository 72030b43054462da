//! Device events for restored sessions: listeners on the real libudev
//! (pyudev through ctypes) and on a raw group-1 socket are saved, restored
//! with a detached device, and hear the synthetic sequence from the
//! session's uevent proxy, then real events; listeners outside the session
//! hear none of it; `udevadm monitor` inside the session's namespace
//! decodes what the proxy sends. Needs python3-pyudev and udev (udevadm;
//! udevd must not run).

mod common;

use common::*;
use hiber_core::uevent::{libudev, Uevent, GROUP_UDEV, NETLINK_KOBJECT_UEVENT};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

const ZERO: &str = "/devices/virtual/mem/zero";

/// What a program does with its own device on hot-plug events, as a
/// libinput or a Mesa would: it holds /dev/zero open, closes it on
/// `remove` and opens it again on `add`; the first add or remove also
/// tries the old fd. Each event line ends with what happened to the fd.
const HOLDER: &str = r#"
import errno, os
zero = os.open('/dev/zero', os.O_RDONLY)
first = True
def react(action, node):
    global zero, first
    note = ''
    if node == '/dev/zero' and action in ('add', 'remove'):
        if first:
            first = False
            try:
                os.read(zero, 1)
                note = ' old-fd-works'
            except OSError as e:
                note = ' old-fd-' + errno.errorcode[e.errno]
        if zero is not None:
            os.close(zero)
            zero = None
        if action == 'add':
            zero = os.open('/dev/zero', os.O_RDONLY)
    if zero is None:
        return note + ' closed'
    try:
        return note + (' working' if os.read(zero, 4) == bytes(4) else ' wrong')
    except OSError as e:
        return note + ' ' + errno.errorcode[e.errno]
"#;

/// A libudev monitor (source "udev", group 2) filtered to the mem
/// subsystem: libudev attaches a BPF filter on the subsystem hash.
const LIBUDEV_LISTENER: &str = r#"
import sys, pyudev
mon = pyudev.Monitor.from_netlink(pyudev.Context(), source='udev')
mon.filter_by('mem')
mon.start()
out = open(sys.argv[1], 'a', buffering=1)
out.write('ready\n')
while True:
    dev = mon.poll()
    if dev is not None:
        state = react(dev.action, dev.device_node)
        out.write(f"{dev.action} {dev.device_path} {dev.device_node} {dev.get('SEQNUM')}{state}\n")
"#;

/// A raw NETLINK_KOBJECT_UEVENT socket on group 1 (kernel format).
const RAW_LISTENER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 15)
s.bind((0, 1))
out = open(sys.argv[1], 'a', buffering=1)
out.write('ready\n')
while True:
    f = s.recv(16384).split(b'\0')
    if f[0].startswith(b'libudev'):
        continue
    p = dict(x.split(b'=', 1) for x in f[1:] if b'=' in x)
    action, name = p[b'ACTION'].decode(), p.get(b'DEVNAME', b'-').decode()
    state = react(action, '/dev/' + name)
    out.write(f"{action} {p[b'DEVPATH'].decode()} {name} {p[b'SEQNUM'].decode()}{state}\n")
"#;

fn python(script: &str, out: &Path) -> Command {
    let mut c = Command::new("/usr/bin/python3");
    c.args(["-c", &format!("{HOLDER}{script}"), path(out)])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Lines of `file` about `devpath`, as "ACTION".
fn actions_for(file: &Path, devpath: &str) -> Vec<String> {
    complete_lines(file)
        .iter()
        .filter(|l| l.split_whitespace().nth(1) == Some(devpath))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// Wait until the actions of `file` for `devpath`, leaving out `change`s
/// (real events another test may trigger meanwhile), begin with `want`.
#[track_caller]
fn wait_actions(file: &Path, devpath: &str, want: &[&str]) -> Vec<String> {
    wait_until(
        &format!("{} to show {want:?} for {devpath}", file.display()),
        DEADLINE,
        || {
            let got: Vec<String> = actions_for(file, devpath)
                .into_iter()
                .filter(|a| a != "change")
                .collect();
            got.starts_with(&want.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .then_some(got)
        },
    )
}

/// Wait until `file` shows a `change` of `devpath` after its last
/// add or remove.
#[track_caller]
fn wait_change_after_sequence(file: &Path, devpath: &str) {
    wait_until(
        &format!("{} to show a change of {devpath}", file.display()),
        DEADLINE,
        || {
            let got = actions_for(file, devpath);
            let last = got.iter().rposition(|a| a != "change").map_or(0, |i| i + 1);
            got[last..].iter().any(|a| a == "change").then_some(())
        },
    )
}

/// `echo change > /sys/devices/virtual/mem/zero/uevent`: a real kernel event.
fn trigger_zero_change() {
    fs::write(format!("/sys{ZERO}/uevent"), "change").expect("triggering a uevent");
}

/// Send `ev` in libudev's format on group 2 of the host's namespace, as
/// udevd would (a marker for listeners outside the session).
fn send_udev_marker(ev: &Uevent) {
    // SAFETY: socket() with constant arguments; a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, NETLINK_KOBJECT_UEVENT) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd, ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let msg = libudev::encode(ev, 1).unwrap();
    // SAFETY: sockaddr_nl is plain data.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a.nl_groups = GROUP_UDEV;
    // SAFETY: sendto with a valid buffer and address.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&a as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    let err = std::io::Error::last_os_error();
    assert!(
        rc >= 0 || err.raw_os_error() == Some(libc::ECONNREFUSED),
        "{err}"
    );
}

fn net_ns(pid: &str) -> std::path::PathBuf {
    fs::read_link(format!("/proc/{pid}/ns/net")).unwrap()
}

#[test]
fn restored_listeners_hear_cold_plug_remove_and_real_events_and_outsiders_do_not() {
    assert!(
        !Path::new("/run/udev/control").exists(),
        "this test expects no udevd on the host"
    );
    let t = tempdir();
    let img = t.path().join("img");
    let (udev_in, raw_in) = (t.path().join("udev-in"), t.path().join("raw-in"));
    let (udev_out, raw_out) = (t.path().join("udev-out"), t.path().join("raw-out"));
    let mut r = Reaper::new();
    // The session: a shell with both listeners.
    let script = format!(
        "/usr/bin/python3 -c \"$1\" '{}' & /usr/bin/python3 -c \"$2\" '{}' & wait",
        udev_in.display(),
        raw_in.display()
    );
    let (udev_script, raw_script) = (
        format!("{HOLDER}{LIBUDEV_LISTENER}"),
        format!("{HOLDER}{RAW_LISTENER}"),
    );
    let root = r.spawn(
        Command::new("bash")
            .args(["-c", &script, "bash", &udev_script, &raw_script])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_lines(&udev_in, 1);
    wait_lines(&raw_in, 1);
    // Their /dev/zero is detached (the test's policy file), so the image
    // holds its synthetic remove.
    let policy = t.path().join("devices.toml");
    fs::write(&policy, "[devices]\n\"1:5\" = \"detach\"\n").unwrap();
    let out = r.checkpoint_stop_with(root, &img, &["--device-policy-file", path(&policy)]);
    assert_eq!(out["processes"], 3);

    // Outside the session: the same two kinds of listener.
    r.spawn(&mut python(LIBUDEV_LISTENER, &udev_out));
    r.spawn(&mut python(RAW_LISTENER, &raw_out));
    wait_lines(&udev_out, 1);
    wait_lines(&raw_out, 1);

    // No --keeper: the uevent sockets imply it.
    let restored = r.restore(&img, &[]);
    let keeper = restored.keeper.expect("a keeper runs the uevent proxy");
    // The processes stay in the host's network namespace; the keeper
    // moves into the session's once the tree runs.
    let host_ns = net_ns("self");
    for &(_, pid) in &restored.pids {
        assert_eq!(net_ns(&pid.to_string()), host_ns, "pid {pid}");
    }
    wait_until(
        "the keeper to enter the session's namespace",
        DEADLINE,
        || (net_ns(&keeper.to_string()) != host_ns).then_some(()),
    );

    // The synthetic sequence: cold-plug adds for the mem class, the stored
    // remove, and /dev/zero added again since it is present.
    let want = ["add", "remove", "add"];
    for file in [&udev_in, &raw_in] {
        let got = wait_actions(file, ZERO, &want);
        assert_eq!(got, want, "{}", file.display());
        let lines = complete_lines(file);
        let remove = lines
            .iter()
            .position(|l| l.starts_with(&format!("remove {ZERO}")))
            .unwrap();
        for dev in ["null", "full", "random", "urandom"] {
            let add = lines
                .iter()
                .position(|l| l.starts_with(&format!("add /devices/virtual/mem/{dev} ")))
                .unwrap_or_else(|| panic!("{}: no cold-plug add of {dev}", file.display()));
            assert!(
                add < remove,
                "{}: cold-plug adds come first",
                file.display()
            );
        }
        assert!(lines[remove].contains("zero"), "{}", lines[remove]);
        // The program's own handling: its old fd was dead (EBADF), it
        // closed it on remove and ends with a working fd after the add.
        let zero: Vec<&String> = lines
            .iter()
            .filter(|l| l.split_whitespace().nth(1) == Some(ZERO) && !l.starts_with("change"))
            .collect();
        assert!(
            zero[0].ends_with("old-fd-EBADF working"),
            "{}: {zero:?}",
            file.display()
        );
        assert!(lines[remove].ends_with(" closed"), "{}", lines[remove]);
        assert!(zero.last().unwrap().ends_with(" working"), "{zero:?}");
    }
    // libudev saw the node and a non-zero SEQNUM.
    let udev_lines = complete_lines(&udev_in);
    let l = udev_lines
        .iter()
        .find(|l| l.starts_with(&format!("remove {ZERO}")))
        .unwrap();
    assert!(l.contains(" /dev/zero "), "{l}");
    assert_ne!(l.split_whitespace().nth(3), Some("0"), "{l}");

    // A real event after the restore reaches both restored listeners: the
    // kernel's own on group 1, the proxy's translation on group 2.
    trigger_zero_change();
    wait_change_after_sequence(&udev_in, ZERO);
    wait_change_after_sequence(&raw_in, ZERO);
    wait_change_after_sequence(&raw_out, ZERO);

    // The outside libudev listener heard nothing of the session: a marker
    // sent on the host's group 2 after everything else is the first thing
    // it hears.
    let marker = Uevent {
        action: "change".into(),
        devpath: "/devices/virtual/mem/full".into(),
        subsystem: "mem".into(),
        seqnum: 1,
        ..Default::default()
    };
    send_udev_marker(&marker);
    wait_change_after_sequence(&udev_out, &marker.devpath);
    assert_eq!(
        complete_lines(&udev_out),
        ["ready", "change /devices/virtual/mem/full None 1 working"],
        "outside libudev listener"
    );
    let raw_out_lines = complete_lines(&raw_out);
    assert!(
        !raw_out_lines
            .iter()
            .any(|l| l.starts_with("add /devices/virtual/mem/")
                || l.starts_with("remove /devices/virtual/mem/")),
        "outside raw listener heard synthetic events: {raw_out_lines:?}"
    );
    // The proxy ends with the session.
    for &(_, pid) in &restored.pids {
        // SAFETY: kill of a restored process by pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    wait_until("the keeper to end with its session", DEADLINE, || {
        (!alive(keeper)).then_some(())
    });
}

#[test]
fn udevadm_in_the_session_namespace_decodes_the_proxy_messages() {
    let t = tempdir();
    let img = t.path().join("img");
    let raw_in = t.path().join("raw-in");
    let monitor = t.path().join("udevadm");
    let mut r = Reaper::new();
    let pid = r.spawn(&mut python(RAW_LISTENER, &raw_in));
    wait_lines(&raw_in, 1);
    r.checkpoint_stop(pid, &img);
    let restored = r.restore(&img, &[]);
    let keeper = restored.keeper.expect("a keeper runs the uevent proxy");
    let host_ns = net_ns("self");
    wait_until(
        "the keeper to enter the session's namespace",
        DEADLINE,
        || (net_ns(&keeper.to_string()) != host_ns).then_some(()),
    );

    // udevd is not started: udevadm only listens, in the session's namespace.
    r.spawn(
        Command::new("nsenter")
            .arg(format!("--net=/proc/{keeper}/ns/net"))
            .args([
                "stdbuf",
                "-oL",
                "udevadm",
                "monitor",
                "--udev",
                "--property",
            ])
            .args(["--subsystem-match=mem"])
            .stdout(fs::File::create(&monitor).unwrap())
            .stderr(Stdio::null()),
    );
    wait_until("udevadm to listen", DEADLINE, || {
        complete_lines(&monitor)
            .iter()
            .any(|l| l.starts_with("UDEV - "))
            .then_some(())
    });
    trigger_zero_change();
    let event = wait_until("udevadm to print the change", DEADLINE, || {
        let lines = complete_lines(&monitor);
        let start = lines
            .iter()
            .position(|l| l.starts_with("UDEV  [") && l.contains(ZERO))?;
        let end = start + lines[start..].iter().position(|l| l.is_empty())?;
        Some(lines[start..end].to_vec())
    });
    for want in [
        "ACTION=change",
        &format!("DEVPATH={ZERO}"),
        "SUBSYSTEM=mem",
        "DEVNAME=/dev/zero",
        "MAJOR=1",
        "MINOR=5",
        "DEVMODE=0666",
    ] {
        assert!(event.iter().any(|l| l == want), "{want} not in {event:?}");
    }
    for key in ["SEQNUM=", "USEC_INITIALIZED="] {
        assert!(
            event
                .iter()
                .any(|l| l.starts_with(key) && !l.ends_with("=0")),
            "{key} not in {event:?}"
        );
    }
    // The restored raw listener heard the kernel's own copy once: the
    // proxy does not repeat kernel events on group 1 (a copy would carry
    // the same SEQNUM).
    wait_change_after_sequence(&raw_in, ZERO);
    let lines = complete_lines(&raw_in);
    let seqnums: Vec<&str> = lines
        .iter()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    let mut unique = seqnums.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        seqnums.len(),
        "repeated kernel events: {lines:?}"
    );
}
