//! Finding the session of an X display from the kernel's view, on real X
//! servers, clients started by unrelated parents, and a session bus.

mod common;

use common::{alive, path, tempdir, tree, wait_until, Reaper, DEADLINE};
use hiber_core::sockdiag::{self, STATE_LISTEN};
use hiber_session::discover::{find_session, DiscoverError, FindOptions, SessionSet};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};

/// Setting uids to nobody's before exec (setpriv keeps the pid).
const AS_NOBODY: [&str; 4] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

/// The displays our servers held: a killed server leaves its socket and
/// lock file behind. Declared before the Reaper, so it is dropped after
/// the servers are killed.
#[derive(Debug, Default)]
struct XFiles(Vec<u32>);

impl Drop for XFiles {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = fs::remove_file(format!("/tmp/.X11-unix/X{d}"));
            let _ = fs::remove_file(format!("/tmp/.X{d}-lock"));
        }
    }
}

fn listening(name: &[u8]) -> bool {
    sockdiag::unix_sockets()
        .expect("sock_diag")
        .values()
        .any(|s| {
            // Xvfb counts the path's terminating NUL in the address.
            let bound = s
                .name
                .as_deref()
                .map(|n| n.strip_suffix(b"\0").unwrap_or(n));
            s.state == STATE_LISTEN && bound == Some(name)
        })
}

fn free(d: u32) -> bool {
    !Path::new(&format!("/tmp/.X11-unix/X{d}")).exists()
        && !Path::new(&format!("/tmp/.X{d}-lock")).exists()
}

/// Start Xvfb (as `prefix` says) on a free display and wait until it
/// listens on both names. Another test or program may take the number
/// between our look and the server's start: then the server exits and
/// the next number is tried.
fn start_xvfb(r: &mut Reaper, files: &mut XFiles, prefix: &[&str], extra: &[&str]) -> (u32, i32) {
    for d in (300..400).filter(|&d| free(d)) {
        let mut cmd = Command::new(prefix.first().copied().unwrap_or("Xvfb"));
        if !prefix.is_empty() {
            cmd.args(&prefix[1..]).arg("Xvfb");
        }
        cmd.arg(format!(":{d}"))
            .args(["-screen", "0", "640x480x24", "-nolisten", "tcp"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let pid = r.spawn(&mut cmd);
        let lock = format!("/tmp/.X{d}-lock");
        let ours = wait_until(&format!("Xvfb :{d} to start or fail"), DEADLINE, || {
            if !alive(pid) {
                return Some(false);
            }
            let held =
                fs::read_to_string(&lock).is_ok_and(|t| t.trim().parse::<i32>().ok() == Some(pid));
            let sock = format!("/tmp/.X11-unix/X{d}");
            let abs = [b"\0".as_slice(), sock.as_bytes()].concat();
            (held && listening(sock.as_bytes()) && listening(&abs)).then_some(true)
        });
        if ours {
            files.0.push(d);
            return (d, pid);
        }
    }
    panic!("no free X display in 300..400");
}

/// An X program (or any) with the display and the bus in its environment.
fn client(prog: &str, display: u32, bus: &str) -> Command {
    let mut c = Command::new(prog);
    c.env("DISPLAY", format!(":{display}"))
        .env("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={bus}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The descendant of `parent` running `comm`.
fn named(parent: i32, comm: &str) -> Option<i32> {
    tree(parent).into_iter().find(|&p| {
        p != parent
            && fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim_end() == comm)
    })
}

/// The session id from /proc/PID/stat.
fn session_id(pid: i32) -> Option<i32> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].split(' ').nth(3)?.parse().ok()
}

fn root_opts() -> FindOptions {
    FindOptions {
        user: 0,
        exclude: Vec::new(),
        ..Default::default()
    }
}

fn reason(set: &SessionSet, pid: i32) -> Option<(i32, &str)> {
    set.outside
        .iter()
        .find(|o| o.pid == pid)
        .map(|o| (o.member, o.reason.as_str()))
}

/// A launcher that is no X client but shares a socketpair with the
/// xlogo it starts (a peer of a member, and its ancestor); it runs its
/// arguments too, unconnected, when given some.
const LAUNCHER: &str = "
import socket, subprocess, sys
a, b = socket.socketpair()
p = subprocess.Popen(['xlogo'], pass_fds=[b.fileno()])
b.close()
if sys.argv[1:]:
    subprocess.Popen(sys.argv[1:])
p.wait()
";

#[test]
fn clients_of_unrelated_parents_and_the_bus() {
    let dir = tempdir();
    let mut files = XFiles::default();
    let mut r = Reaper::new();
    let (d, x) = start_xvfb(&mut r, &mut files, &[], &[]);
    let bus = format!("{}/bus", path(dir.path()));
    let daemon = r.spawn(client("dbus-daemon", d, &bus).args([
        "--session",
        "--nofork",
        "--nopidfile",
        &format!("--address=unix:path={bus}"),
    ]));
    wait_until("the bus to listen", DEADLINE, || {
        listening(bus.as_bytes()).then_some(())
    });
    // Two shells that are not X clients, each the parent of one.
    let shell1 = r.spawn(client("bash", d, &bus).args(["-c", "xclock & wait"]));
    let shell2 = r.spawn(client("bash", d, &bus).args(["-c", "xeyes & wait"]));
    // One that started nothing else (it joins), one that did (it stays out).
    let supervisor = r.spawn(client("python3", d, &bus).args(["-c", LAUNCHER]));
    let launcher = r.spawn(client("python3", d, &bus).args(["-c", LAUNCHER, "sleep", "1000"]));
    let xterm = r.spawn(client("xterm", d, &bus).args(["-e", "bash", "--norc", "--noprofile"]));
    // Connected to both the display and the bus.
    let gtk = r.spawn(
        client("gtk4-demo", d, &bus)
            .env("GDK_BACKEND", "x11")
            .env("GSK_RENDERER", "cairo"),
    );
    // The test itself as an X client: the caller is never a member.
    let me = std::process::id() as i32;
    let _own = UnixStream::connect(format!("/tmp/.X11-unix/X{d}")).expect("connecting to Xvfb");

    let (set, [xclock, xeyes, xlogo1, xlogo2, shell, sleep]) =
        wait_until("every client and the bus in the set", DEADLINE, || {
            let started = [
                named(shell1, "xclock")?,
                named(shell2, "xeyes")?,
                named(supervisor, "xlogo")?,
                named(launcher, "xlogo")?,
                named(xterm, "bash")?,
                named(launcher, "sleep")?,
            ];
            let set = find_session(d, &root_opts()).ok()?;
            [x, xterm, gtk, daemon, supervisor]
                .iter()
                .chain(&started[..5])
                .all(|p| set.processes.contains(p))
                .then_some((set, started))
        });
    assert_eq!((set.display, set.x_server, set.uid), (d, x, 0));
    for (pid, what) in [
        (shell1, "the shell of xclock"),
        (shell2, "the shell of xeyes"),
        (launcher, "the launcher of xlogo and sleep"),
        (sleep, "the sleep"),
        (me, "the test"),
    ] {
        assert!(!set.processes.contains(&pid), "{what} in {set:#?}");
    }
    // The bus activates services (at-spi-bus-launcher for gtk4-demo)
    // through a fork that exits: they are orphans, the Reaper's to end.
    for &p in &set.processes {
        r.adopt(p);
    }
    // Nothing but what this test started, and what those started: the
    // orphans were started by this test's bus. Most stay in the bus's
    // session; a service that makes its own session (setsid) still carries
    // the bus's address its activation gave it. A process of another test
    // (its own bus and display) fails both.
    let ours = tree(me);
    let bus_address = format!("DBUS_SESSION_BUS_ADDRESS=unix:path={bus}");
    for &p in set.processes.difference(&ours) {
        let environ = fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
        let activated_here = environ
            .split(|&b| b == 0)
            .any(|v| v == bus_address.as_bytes());
        let cmdline = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        assert!(
            session_id(p) == Some(daemon) || activated_here,
            "{p} ({}) in session {:?}, not the bus's ({daemon}), and not activated by it: {set:#?}",
            String::from_utf8_lossy(&cmdline).replace('\0', " "),
            session_id(p)
        );
    }
    let roots: BTreeSet<i32> = set.roots.iter().copied().collect();
    for pid in [x, xclock, xeyes, supervisor, xlogo2, xterm, gtk, daemon] {
        assert!(roots.contains(&pid), "{pid} not a root: {set:#?}");
    }
    assert!(
        !roots.contains(&shell) && !roots.contains(&xlogo1),
        "{set:#?}"
    );
    // Unconnected shells are not reported; the connected launcher is.
    assert_eq!(reason(&set, shell1), None);
    assert_eq!(reason(&set, shell2), None);
    let ancestor = format!("ancestor of member pid {xlogo2}");
    assert_eq!(
        reason(&set, launcher),
        Some((xlogo2, ancestor.as_str())),
        "{set:#?}"
    );
    assert_eq!(reason(&set, me), Some((x, "the calling process")));

    // Excluding the xterm takes its shell too.
    let opts = FindOptions {
        user: 0,
        exclude: vec![xterm],
        ..Default::default()
    };
    let set = find_session(d, &opts).expect("the session without the xterm");
    assert!(!set.processes.contains(&xterm) && !set.processes.contains(&shell));
    assert!(set.processes.contains(&xclock) && set.processes.contains(&daemon));
    assert_eq!(reason(&set, xterm), Some((x, "excluded")));
}

#[test]
fn two_displays_are_disjoint() {
    let mut files = XFiles::default();
    let mut r = Reaper::new();
    let (d1, x1) = start_xvfb(&mut r, &mut files, &[], &[]);
    let (d2, x2) = start_xvfb(&mut r, &mut files, &[], &[]);
    let eyes = r.spawn(&mut client("xeyes", d1, "/nonexistent"));
    let clock = r.spawn(&mut client("xclock", d2, "/nonexistent"));
    let find = |d: u32, want: [i32; 2]| {
        wait_until(&format!("display :{d} with its client"), DEADLINE, || {
            find_session(d, &root_opts())
                .ok()
                .filter(|s| want.iter().all(|p| s.processes.contains(p)))
        })
    };
    let s1 = find(d1, [x1, eyes]);
    let s2 = find(d2, [x2, clock]);
    assert!(s1.processes.is_disjoint(&s2.processes), "{s1:#?} {s2:#?}");
    // Each holds its server and client and their children (Xvfb forks
    // xkbcomp for a moment), nothing else.
    let own = |a: i32, b: i32| -> BTreeSet<i32> { tree(a).union(&tree(b)).copied().collect() };
    assert!(s1.processes.is_subset(&own(x1, eyes)), "{s1:#?}");
    assert!(s2.processes.is_subset(&own(x2, clock)), "{s2:#?}");
    assert_eq!((s1.x_server, s2.x_server), (x1, x2));
}

#[test]
fn no_display() {
    let d = (6000..7000).find(|&d| free(d)).expect("a free display");
    match find_session(d, &root_opts()) {
        Err(e @ DiscoverError::NoDisplay { display, .. }) if display == d => {
            let text = e.to_string();
            assert!(text.contains(&format!("/tmp/.X11-unix/X{d}")), "{text}");
        }
        other => panic!("display :{d}: {other:?}"),
    }
}

#[test]
fn display_of_another_user() {
    let mut files = XFiles::default();
    let mut r = Reaper::new();
    let (d, x) = start_xvfb(&mut r, &mut files, &AS_NOBODY, &[]);
    match find_session(d, &root_opts()) {
        Err(e @ DiscoverError::OtherUser { pid, uid, .. }) if pid == x && uid == 65534 => {
            let text = e.to_string();
            assert!(text.contains("nobody"), "{text}");
        }
        other => panic!("display :{d}: {other:?}"),
    }
}

#[test]
fn client_of_another_user() {
    let mut files = XFiles::default();
    let mut r = Reaper::new();
    // No access control: any local user may connect.
    let (d, x) = start_xvfb(&mut r, &mut files, &[], &["-ac"]);
    let eyes = r.spawn(
        client(AS_NOBODY[0], d, "/nonexistent")
            .args(&AS_NOBODY[1..])
            .arg("xeyes")
            .env("HOME", "/nonexistent"),
    );
    let err = wait_until(
        "the foreign client to be refused",
        DEADLINE,
        || match find_session(d, &root_opts()) {
            Ok(set) => {
                assert_eq!(set.x_server, x);
                None
            }
            Err(e) => Some(e),
        },
    );
    match err {
        DiscoverError::ForeignClient {
            display,
            pid,
            uid,
            comm,
        } => assert_eq!(
            (display, pid, uid, comm.as_str()),
            (d, eyes, 65534, "xeyes")
        ),
        other => panic!("{other:?}"),
    }
}
