//! Session services that cannot be saved, in a normal user's session:
//! the real document portal (a FUSE server the session bus activates,
//! with its setuid mount helper) is left out of the set, ended with the
//! session by `--stop` with its mount, and activated again on first use
//! after the restore.

mod common;

use common::user::{UserSession, USER_UID};
use common::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

/// Exports a file through the document portal (`Add`, which takes an fd;
/// persistent, so the permission store keeps it when the portal ends)
/// and prints the document id.
const ADD_DOCUMENT: &str = r#"
import os, sys
from gi.repository import Gio, GLib
bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
fds = Gio.UnixFDList.new()
idx = fds.append(os.open(sys.argv[1], os.O_PATH | os.O_CLOEXEC))
res, _ = bus.call_with_unix_fd_list_sync(
    "org.freedesktop.portal.Documents", "/org/freedesktop/portal/documents",
    "org.freedesktop.portal.Documents", "Add", GLib.Variant("(hbb)", (idx, True, True)),
    GLib.VariantType("(s)"), Gio.DBusCallFlags.NONE, 10000, fds, None)
print(res.unpack()[0])
"#;

/// Watches the directory argv[1] with inotify while holding a session bus
/// connection (so it belongs to the session), and logs "wd WD" once, then
/// "event WD MASK" for every event.
const WATCHER: &str = r#"
import ctypes, os, struct, sys
from gi.repository import Gio
bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_CLOEXEC)
wd = libc.inotify_add_watch(fd, sys.argv[1].encode(), 0xfff)
if wd < 0:
    sys.exit("inotify_add_watch: errno %d" % ctypes.get_errno())
print("wd", wd, flush=True)
while True:
    data = os.read(fd, 4096)
    while data:
        w, mask, cookie, n = struct.unpack_from("iIII", data)
        print("event", w, hex(mask), flush=True)
        data = data[16 + n:]
"#;

/// Holds two fds of argv[1] inside the portal's mount (one read 9 bytes
/// in, one for appending) and a session bus connection (so it belongs to
/// the session); on SIGUSR1 reads the rest and appends a line.
const HOLDER: &str = r#"
import os, signal, sys
from gi.repository import Gio
bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
r = os.open(sys.argv[1], os.O_RDONLY)
w = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
print("fds %d %d head %r" % (r, w, os.read(r, 9)), flush=True)
def go(sig, frame):
    try:
        rest = os.read(r, 100)
        n = os.write(w, b"written after the restore\n")
        print("rest %r wrote %d" % (rest, n), flush=True)
    except OSError as e:
        print("error %s" % e, flush=True)
signal.signal(signal.SIGUSR1, go)
while True:
    signal.pause()
"#;

struct Desk {
    u: UserSession,
    display: u32,
    bus: String,
}

impl Desk {
    /// `args` run as the user in the session (DISPLAY and the bus set),
    /// to completion.
    fn run(&self, args: &[&str]) -> Output {
        self.u
            .command(args, None)
            .env("DISPLAY", format!(":{}", self.display))
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
    }

    fn doc(&self) -> PathBuf {
        self.u.runtime.join("doc")
    }

    /// The portal's mount point, asked through the bus (which activates
    /// the portal when it is not running).
    fn mount_point(&self) -> String {
        let out = self.run(&[
            "gdbus",
            "call",
            "--session",
            "--timeout",
            "20",
            "--dest",
            "org.freedesktop.portal.Documents",
            "--object-path",
            "/org/freedesktop/portal/documents",
            "--method",
            "org.freedesktop.portal.Documents.GetMountPoint",
        ]);
        assert_ok(&out, "GetMountPoint");
        stdout(&out)
    }

    /// Whether the user reads `text` in `file` (root may not look into
    /// another user's FUSE mount).
    fn reads(&self, file: &Path) -> Option<String> {
        let out = self.run(&["cat", path(file)]);
        out.status.success().then(|| stdout(&out))
    }
}

/// The FUSE mounts at `at` now.
fn mounted(at: &Path) -> usize {
    hiber_session::services::fuse_mounts()
        .iter()
        .filter(|m| m.mount_point == at)
        .count()
}

/// The pid of the user's process running `exe` whose environment names
/// this session's runtime directory.
fn find_process(exe: &str, runtime: &Path) -> Option<i32> {
    let want = format!("XDG_RUNTIME_DIR={}", runtime.display()).into_bytes();
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let is = fs::read_link(format!("/proc/{pid}/exe")).ok()? == Path::new(exe);
        let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
        (is && env.split(|&b| b == 0).any(|v| v == want) && alive(pid)).then_some(pid)
    })
}

/// Unmounts the portal's mount if a failed test left it (as root, that
/// very mount point).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        while mounted(&self.0) > 0 {
            let c = std::ffi::CString::new(path(&self.0)).unwrap();
            // SAFETY: a NUL-terminated path; MNT_DETACH takes no data.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                break;
            }
        }
    }
}

#[test]
fn the_document_portal_is_left_out_ended_and_activated_again() {
    if !Path::new("/usr/libexec/xdg-document-portal").exists() {
        eprintln!("skipped: xdg-document-portal is not installed (package xdg-desktop-portal)");
        return;
    }
    let mut r = Reaper::new();
    let u = UserSession::new();
    let display = free_display();
    let _x = XFiles(display);
    let bus_path = u.runtime.join("bus");
    let desk = Desk {
        bus: format!("unix:path={}", bus_path.display()),
        u,
        display,
    };
    let _unmount = Unmount(desk.doc());
    let log = desk.u.dir().join("log");

    // The session: Xvfb, the session bus, and an xterm whose shell keeps
    // a bus client (so the bus is the session's).
    let xvfb = r.spawn(&mut desk.u.command(
        &[
            "Xvfb",
            &format!(":{display}"),
            "-nolisten",
            "tcp",
            "-noreset",
        ],
        Some(&log),
    ));
    wait_until(&format!("Xvfb :{display} to listen"), DEADLINE, || {
        Path::new(&format!("/tmp/.X11-unix/X{display}"))
            .exists()
            .then_some(())
    });
    // The bus as a login's: in the session of a shell that started it
    // (the bus is no session leader, so neither are the services it
    // activates).
    let launcher = r.spawn(&mut desk.u.command(
        &[
            "bash",
            "-c",
            "dbus-daemon --session --nofork --nopidfile --address=\"$1\" & wait",
            "launcher",
            &desk.bus,
        ],
        Some(&log),
    ));
    wait_until("the session bus to listen", DEADLINE, || {
        bus_path.exists().then_some(())
    });
    let bus = find_process("/usr/bin/dbus-daemon", &desk.u.runtime).expect("the bus");
    let xterm = r.spawn(
        desk.u
            .command(
                &[
                    "xterm",
                    "-e",
                    "bash",
                    "--norc",
                    "--noprofile",
                    "-c",
                    "gdbus monitor --session --dest org.freedesktop.DBus & exec bash --norc --noprofile -i",
                ],
                Some(&log),
            )
            .env("DISPLAY", format!(":{display}"))
            .env("DBUS_SESSION_BUS_ADDRESS", &desk.bus),
    );
    wait_until("the xterm's bus client", DEADLINE, || {
        find_process("/usr/bin/gdbus", &desk.u.runtime)
    });

    // The portal, activated by a first call, mounts its FUSE file system
    // through fusermount3 (root, setuid), which stays as its child.
    let doc = desk.doc();
    assert!(desk.mount_point().contains(path(&doc)));
    let portal = wait_until("the document portal", DEADLINE, || {
        find_process("/usr/libexec/xdg-document-portal", &desk.u.runtime)
    });
    r.adopt(portal);
    assert_eq!(mounted(&doc), 1, "the portal's mount");
    let note = desk.u.home.join("note.txt");
    fs::write(&note, "exported through the portal\n").unwrap();
    std::os::unix::fs::chown(&note, Some(USER_UID), Some(USER_UID)).unwrap();
    let script = desk.u.dir().join("add.py");
    fs::write(&script, ADD_DOCUMENT).unwrap();
    let added = desk.run(&["/usr/bin/python3", path(&script), path(&note)]);
    assert_ok(&added, "adding a document");
    let id = stdout(&added).trim().to_string();
    let exported = doc.join(&id).join("note.txt");
    assert_eq!(
        desk.reads(&exported).as_deref(),
        Some("exported through the portal\n")
    );
    let helpers: Vec<i32> = tree(portal).into_iter().filter(|&p| p != portal).collect();
    assert!(
        helpers
            .iter()
            .any(|&p| status_field(p, "Uid")
                .is_some_and(|u| u.split_whitespace().nth(1) == Some("0"))),
        "the portal's setuid root mount helper among {helpers:?}"
    );

    let d = format!(":{display}");
    let user = USER_UID.to_string();

    // A client holding files of the portal's mount, one read part-way:
    // check says they are reopened, without touching them (root may not
    // look into the mount).
    let holder_log = desk.u.dir().join("holder.log");
    let holder = r.spawn(
        desk.u
            .command(
                &["/usr/bin/python3", "-c", HOLDER, path(&exported)],
                Some(&holder_log),
            )
            .env("DBUS_SESSION_BUS_ADDRESS", &desk.bus),
    );
    let first = wait_lines(&holder_log, 1)[0].clone();
    let fds: Vec<i64> = first
        .strip_prefix("fds ")
        .and_then(|l| l.split(" head ").next())
        .expect("the holder's fds")
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(first.ends_with("head b'exported '"), "{first}");
    let check = hiber(&[
        "session",
        "check",
        "--display",
        &d,
        "--user",
        &user,
        "--json",
    ]);
    assert_ok(&check, "session check with the holder");
    let v: Value = serde_json::from_slice(&check.stdout).unwrap();
    let reopened: Vec<&Value> = v["report"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["pid"] == holder
                && f["policy"] == "Reopen"
                && f["kind"]
                    .as_str()
                    .is_some_and(|k| k.ends_with("of a left-out FUSE server"))
        })
        .collect();
    assert_eq!(reopened.len(), 2, "{reopened:?}");
    for (f, fd) in reopened.iter().zip(&fds) {
        assert_eq!(f["subject"]["fd"], *fd);
        let reason = f["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("the server of {} is left out", doc.display()))
                && reason.contains("once org.freedesktop.portal.Documents is activated again"),
            "{reason}"
        );
    }
    // A program watching the portal's mount with inotify (as GVfs and
    // file choosers do).
    let watcher_script = desk.u.dir().join("watch.py");
    fs::write(&watcher_script, WATCHER).unwrap();
    let watch_log = desk.u.dir().join("watch.log");
    let watcher = r.spawn(
        desk.u
            .command(
                &["/usr/bin/python3", path(&watcher_script), path(&doc)],
                Some(&watch_log),
            )
            .env("DBUS_SESSION_BUS_ADDRESS", &desk.bus),
    );
    let wd = wait_lines(&watch_log, 1)[0]
        .strip_prefix("wd ")
        .expect("the watcher's watch descriptor")
        .to_string();

    // check lists the portal apart, with its helper and what becomes of
    // it; the session around it can be saved.
    let check = hiber(&[
        "session",
        "check",
        "--display",
        &d,
        "--user",
        &user,
        "--json",
    ]);
    assert_ok(&check, "session check");
    let v: Value = serde_json::from_slice(&check.stdout).unwrap();
    let ended_watch: Vec<&Value> = v["report"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["pid"] == watcher && f["policy"] == "Reset")
        .collect();
    assert_eq!(ended_watch.len(), 1, "{ended_watch:?}");
    assert!(
        ended_watch[0]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "watch {wd} on {} of a left-out FUSE server's mount",
                doc.display()
            )),
        "{ended_watch:?}"
    );
    let services = v["services"].as_array().expect("services");
    let s = services
        .iter()
        .find(|s| s["pid"] == portal)
        .unwrap_or_else(|| panic!("the portal among {services:?}"));
    assert_eq!(s["decision"]["name"], "xdg-document-portal");
    assert_eq!(
        s["decision"]["bus_name"],
        "org.freedesktop.portal.Documents"
    );
    assert_eq!(s["mounts"][0].as_str(), Some(path(&doc)));
    for h in &helpers {
        assert!(s["descendants"].as_array().unwrap().contains(&(*h).into()));
    }
    let fate = s["fate"].as_str().unwrap();
    assert!(
        fate.contains("D-Bus activation of org.freedesktop.portal.Documents"),
        "{fate}"
    );
    let members: Vec<i64> = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    assert!(!members.contains(&(portal as i64)));
    for p in [xvfb, bus] {
        assert!(members.contains(&(p as i64)), "{p} in {members:?}");
    }
    let text = hiber(&["session", "check", "--display", &d, "--user", &user]);
    assert!(
        stdout(&text).contains(&format!("session service pid {portal} (xdg-document-po)")),
        "{}",
        stdout(&text)
    );

    // Saved with --stop: the session ends, the portal with it, and its
    // mount is gone (not left dead).
    let img = desk.u.dir().join("img");
    let saved = r
        .session_stop(&d, &img, &[xvfb, launcher, xterm, watcher, holder])
        .answer;
    assert_eq!(saved["services_ended"][0]["pid"], portal, "{saved}");
    assert!(saved["services_ended"][0]["problem"].is_null(), "{saved}");
    let old: Vec<i32> = [xvfb, bus, xterm, portal]
        .into_iter()
        .chain(helpers.iter().copied())
        .collect();
    for &p in &old {
        wait_gone(p);
    }
    assert_eq!(mounted(&doc), 0, "the portal's mount after --stop");

    // Restored, the portal is brought back for the holder's files (the
    // bus activates it; it mounts again and serves the document exported
    // before), and they are reopened where the holder left them.
    let v = r.session_restore(&img, &[]);
    let reopened = v["reopened"].as_array().expect("reopened");
    assert_eq!(reopened.len(), 2, "{v}");
    for f in reopened {
        assert_eq!(f["pid"], holder, "{f}");
        assert!(f["problem"].is_null(), "{f}");
        assert_eq!(f["path"].as_str(), Some(path(&exported)));
    }
    let again = wait_until("the portal activated again", DEADLINE, || {
        find_process("/usr/libexec/xdg-document-portal", &desk.u.runtime)
    });
    r.adopt(again);
    assert_ne!(again, portal);
    assert_eq!(mounted(&doc), 1, "one live mount, the new portal's");
    // The watch on the portal's mount came back ended, as an unmount
    // ends it: the watcher reads IN_IGNORED for its descriptor.
    wait_until("the watcher to read IN_IGNORED", DEADLINE, || {
        lines(&watch_log)
            .contains(&format!("event {wd} 0x8000"))
            .then_some(())
    });
    // The holder reads on from its offset and writes through the other fd.
    // SAFETY: kill by pid of the restored holder this test started.
    unsafe { libc::kill(holder, libc::SIGUSR1) };
    let after = wait_lines(&holder_log, 2)[1].clone();
    assert_eq!(after, "rest b'through the portal\\n' wrote 26");
    assert_eq!(
        fs::read_to_string(&note).unwrap(),
        "exported through the portal\nwritten after the restore\n"
    );
    assert!(desk.mount_point().contains(path(&doc)));
    assert_eq!(
        desk.reads(&exported).as_deref(),
        Some("exported through the portal\nwritten after the restore\n")
    );
    // The restored shell's bus client still reaches the restored bus: a
    // new client sees it on the bus.
    let names = desk.run(&[
        "gdbus",
        "call",
        "--session",
        "--dest",
        "org.freedesktop.DBus",
        "--object-path",
        "/org/freedesktop/DBus",
        "--method",
        "org.freedesktop.DBus.ListNames",
    ]);
    assert_ok(&names, "ListNames on the restored bus");
    assert!(
        stdout(&names).contains("org.freedesktop.portal.Documents"),
        "{}",
        stdout(&names)
    );
    // The new portal ends first, by itself (SIGTERM), so that its helper
    // unmounts; then the rest.
    let again_tree = tree(again);
    // SAFETY: kill by pid of the portal this test had activated.
    unsafe { libc::kill(again, libc::SIGTERM) };
    for &p in &again_tree {
        wait_until(
            &format!("pid {p} of the new portal to end"),
            DEADLINE,
            || (!alive(p)).then_some(()),
        );
    }
    wait_until("the new portal's mount to go", DEADLINE, || {
        (mounted(&doc) == 0).then_some(())
    });
    drop(r);
}

/// The engine saves a parent without a left-out child: the child runs on
/// (it is neither frozen nor ended by `stop`), and the restored parent
/// has only its other children.
#[test]
fn the_engine_saves_a_parent_without_a_pruned_child() {
    let mut r = Reaper::new();
    let parent = r.spawn(
        std::process::Command::new("bash")
            // The first in a session of its own: a left-out process in a
            // saved leader's session or group keeps the leader's pid taken.
            .args(["-c", "setsid sleep 1000 & sleep 1000 & wait"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let sid = |p: i32| status_field(p, "NSsid");
    let (left, kept) = wait_until("bash's two sleeps", DEADLINE, || {
        let k: Vec<i32> = tree(parent).into_iter().filter(|&p| p != parent).collect();
        let asleep = k.iter().all(|&p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        let own = k.iter().copied().find(|&p| sid(p) == Some(p.to_string()));
        let other = k.iter().copied().find(|&p| Some(p) != own);
        (k.len() == 2 && asleep).then_some((own?, other?))
    });
    r.adopt(left);
    r.adopt(kept);
    let left_out = hiber_core::LeftOut {
        pids: vec![left],
        mounts: Vec::new(),
    };
    let report = hiber_core::check_without(&[parent], &left_out, &Default::default()).unwrap();
    let checked: Vec<i32> = report.processes.iter().map(|p| p.pid).collect();
    assert_eq!(checked, [parent, kept]);

    let img = tempdir();
    let stats = hiber_core::checkpoint(
        &hiber_core::CheckpointOptions {
            verify_before_stop: false,
            roots: vec![parent],
            dir: img.path().join("img"),
            store: None,
            stop: true,
            threads: 1,
            no_reset: false,
            precopy: hiber_core::PrecopyMode::Never,
            devices: Default::default(),
            left_out,
        },
        &|_| {},
    )
    .unwrap();
    assert_eq!(stats.processes, 2);
    r.wait_children(&[parent]);
    wait_gone(parent);
    wait_gone(kept);
    // The left-out child was neither stopped nor ended.
    assert!(alive(left));
    assert_eq!(state(left), Some('S'));

    let restored = r.restore(&img.path().join("img"), &[]);
    let now: Vec<i32> = restored.pids.iter().map(|p| p.1).collect();
    assert_eq!(now, [parent, kept]);
    let children: Vec<i32> = tree(parent).into_iter().filter(|&p| p != parent).collect();
    assert_eq!(children, [kept]);
    assert!(alive(left));
}
