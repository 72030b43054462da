//! A normal user's session (uid 1500; hiber as root) saved with `--stop`
//! and restored: its listening sockets, FIFOs and the directories holding
//! them come back with the owner, group and mode they had, made again
//! when they were removed meanwhile, and new clients started after the
//! restore reach the X server, the session buses, tmux, ssh-agent,
//! gpg-agent, pipewire and its pulse server.

mod common;

use common::user::{UserSession, USER_UID};
use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Xvfb, and an xterm whose shell starts the session's services as its
/// background jobs (a bus on a path, a bus on an abstract name, ssh-agent,
/// a client of gpg-agent, a sleep holding a FIFO), then becomes a tmux
/// client. The tmux server and gpg-agent leave the tree (they are found
/// through their clients' sockets).
const SESSION: &str = r#"
D=$1; L=$2
Xvfb ":$D" -screen 0 640x480x24 -nolisten tcp -noreset > "$L/xvfb.log" 2>&1 &
until xdpyinfo -display ":$D" > /dev/null 2>&1; do sleep 0.05; done
export DISPLAY=":$D" L
xterm -geometry 80x20+0+0 -e bash --norc --noprofile -c '
    R=$XDG_RUNTIME_DIR
    dbus-daemon --session --nofork --address="unix:path=$R/bus" > "$L/bus.log" 2>&1 &
    dbus-daemon --session --nofork --address="unix:abstract=$R/abstract-bus" --print-address=3 3> "$L/abstract.tmp" > "$L/bus2.log" 2>&1 &
    ssh-agent -D -a "$R/ssh-agent.sock" > "$L/ssh-agent.log" 2>&1 &
    if command -v gpg-agent > /dev/null; then
        # gpg-agent leaves the tree; its client keeps it in the session.
        sleep 100000 | gpg-connect-agent > "$L/gpg-client.log" 2>&1 &
    fi
    # The sound server, as a desktop starts it: pipewire and its pulse
    # server (sockets pipewire-0 and pulse/native in the runtime dir).
    pipewire > "$L/pipewire.log" 2>&1 &
    pipewire-pulse > "$L/pipewire-pulse.log" 2>&1 &
    mkfifo -m 0620 "$R/fifo"
    sleep 100000 3<> "$R/fifo" &
    until [ -S "$R/bus" ] && [ -s "$L/abstract.tmp" ] && [ -S "$R/pipewire-0" ] \
        && [ -S "$R/pulse/native" ]; do sleep 0.05; done
    mv "$L/abstract.tmp" "$L/abstract.addr"
    exec tmux new-session "bash --norc --noprofile -i"' &
wait
"#;

/// A file's type and its owner, group and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    uid: u32,
    gid: u32,
    mode: u32,
}

fn node(p: &Path) -> Option<Node> {
    let m = fs::symlink_metadata(p).ok()?;
    let t = m.file_type();
    let kind = if t.is_socket() {
        "socket"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_dir() {
        "directory"
    } else {
        "other"
    };
    Some(Node {
        kind,
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode() & 0o7777,
    })
}

struct Desk {
    user: UserSession,
    display: u32,
    logs: PathBuf,
    gnupg: PathBuf,
}

impl Desk {
    fn new() -> Self {
        let user = UserSession::new();
        let logs = user.dir().join("logs");
        let gnupg = user.home.join(".gnupg");
        for d in [&logs, &gnupg] {
            fs::create_dir(d).unwrap();
            std::os::unix::fs::chown(d, Some(USER_UID), Some(USER_UID)).unwrap();
        }
        fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Desk {
            user,
            display: free_display(),
            logs,
            gnupg,
        }
    }

    /// `args` run as the user in the session's environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.user.command(args, None);
        c.env("DISPLAY", format!(":{}", self.display))
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}", self.bus().display()),
            )
            .env("TMUX_TMPDIR", &self.user.runtime)
            .env("GNUPGHOME", &self.gnupg)
            .env("SSH_AUTH_SOCK", self.user.runtime.join("ssh-agent.sock"))
            .env("L", &self.logs);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
    }

    fn bus(&self) -> PathBuf {
        self.user.runtime.join("bus")
    }

    fn tmux_dir(&self) -> PathBuf {
        self.user.runtime.join(format!("tmux-{USER_UID}"))
    }

    /// gpg-agent's socket, when gpg-agent is installed.
    fn gpg_socket(&self) -> Option<PathBuf> {
        if !Path::new("/usr/bin/gpg-agent").exists() {
            return None;
        }
        let o = self.run(&["gpgconf", "--list-dirs", "agent-socket"]);
        o.status.success().then(|| PathBuf::from(stdout(&o).trim()))
    }

    fn x_socket(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/.X11-unix/X{}", self.display))
    }

    fn hiber(&self, snapshots: &Path, args: &[&str]) -> Value {
        let o = Command::new(hiber_bin())
            .args(args)
            .env("HIBER_SNAPSHOTS", snapshots)
            .env("HIBER_LOG", "info")
            .output()
            .expect("running hiber");
        if !o.status.success() {
            let ps = Command::new("ps")
                .args(["-u", &USER_UID.to_string(), "-o", "pid,ppid,stat,cmd"])
                .output()
                .expect("running ps");
            eprintln!("the user's processes:\n{}", stdout(&ps));
        }
        assert_ok(&o, &format!("hiber {args:?}"));
        serde_json::from_slice(&o.stdout).expect("hiber --json output")
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for e in fs::read_dir(&self.logs).unwrap().flatten() {
            out += &format!(
                "--- {}\n{}\n",
                e.path().display(),
                fs::read_to_string(e.path()).unwrap_or_default()
            );
        }
        out
    }
}

/// Every socket file, FIFO and directory of the session a new client
/// needs, with its owner, group and mode.
fn nodes(desk: &Desk) -> Vec<(PathBuf, Option<Node>)> {
    let mut paths = vec![
        desk.x_socket(),
        desk.bus(),
        desk.user.runtime.join("ssh-agent.sock"),
        desk.tmux_dir(),
        desk.tmux_dir().join("default"),
        desk.user.runtime.join("fifo"),
    ];
    paths.extend(desk.gpg_socket());
    paths.into_iter().map(|p| (p.clone(), node(&p))).collect()
}

/// New clients, started after the restore, reach every service.
fn new_clients_connect(desk: &Desk, r: &mut Reaper, round: usize) {
    let ok = |o: &Output, what: &str| {
        assert!(
            o.status.success(),
            "round {round}: {what} failed ({}): {}{}\n{}",
            o.status,
            stdout(o),
            stderr(o),
            desk.logs()
        )
    };
    let o = desk.run(&["xdpyinfo"]);
    ok(&o, "xdpyinfo");
    assert!(stdout(&o).contains(&format!("name of display:    :{}", desk.display)));
    // A new terminal window: it runs its command once it has its window.
    let mark = desk.logs.join(format!("xterm-{round}.ok"));
    let xterm = r.spawn(&mut desk.command(&[
        "xterm",
        "-e",
        "sh",
        "-c",
        &format!("echo ok > {}", mark.display()),
    ]));
    wait_until("a new xterm to run its command", DEADLINE, || {
        fs::read_to_string(&mark).ok().filter(|s| s.trim() == "ok")
    });
    r.wait_children(&[xterm]);
    let list_names = |address: &str| {
        desk.run(&[
            "dbus-send",
            &format!("--bus={address}"),
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.ListNames",
        ])
    };
    let o = desk.run(&[
        "dbus-send",
        "--session",
        "--print-reply",
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.GetId",
    ]);
    ok(&o, "dbus-send --session");
    let abstract_addr = fs::read_to_string(desk.logs.join("abstract.addr")).unwrap();
    let abstract_addr = abstract_addr.trim();
    assert!(abstract_addr.contains("abstract="), "{abstract_addr}");
    ok(&list_names(abstract_addr), "dbus-send to the abstract bus");
    let o = desk.run(&["tmux", "ls"]);
    ok(&o, "tmux ls");
    let before = stdout(&desk.run(&["tmux", "list-windows"])).lines().count();
    ok(&desk.run(&["tmux", "new-window", "-d"]), "tmux new-window");
    let after = stdout(&desk.run(&["tmux", "list-windows"])).lines().count();
    assert_eq!(after, before + 1, "round {round}: tmux windows");
    let o = desk.run(&["ssh-add", "-l"]);
    // 1: the agent answered it holds no key; 2: no agent to talk to.
    assert!(
        stdout(&o).contains("no identities"),
        "round {round}: ssh-add -l: {}{}",
        stdout(&o),
        stderr(&o)
    );
    // The sound server answers a new client, on both of its sockets.
    let o = desk.run(&["pw-cli", "info", "0"]);
    ok(&o, "pw-cli info 0");
    assert!(
        stdout(&o).contains("PipeWire:Interface:Core"),
        "round {round}: pw-cli: {}",
        stdout(&o)
    );
    let pulse = desk.user.runtime.join("pulse/native");
    let o = desk.run(&[
        "/usr/bin/python3",
        "-c",
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')",
        path(&pulse),
    ]);
    ok(&o, "connecting to pipewire-pulse");
    if desk.gpg_socket().is_some() {
        let o = desk.run(&[
            "gpg-connect-agent",
            "--no-autostart",
            "GETINFO version",
            "/bye",
        ]);
        ok(&o, "gpg-connect-agent");
        assert!(
            stdout(&o).lines().any(|l| l.starts_with("D ")),
            "round {round}: gpg-agent answered {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
}

/// The session's processes, from `hiber session check`.
fn session_pids(desk: &Desk, snapshots: &Path) -> Vec<i32> {
    let d = format!(":{}", desk.display);
    let v = desk.hiber(
        snapshots,
        &[
            "session",
            "check",
            "--display",
            &d,
            "--user",
            "1500",
            "--json",
        ],
    );
    serde_json::from_value(v["processes"].clone()).expect("processes")
}

#[test]
fn a_users_listeners_come_back_as_they_were_for_new_clients_twice() {
    let desk = Desk::new();
    let _x = XFiles(desk.display);
    let t = tempdir();
    let snapshots = t.path().join("snapshots");
    if desk.gpg_socket().is_none() {
        eprintln!("gpg-agent is not installed (gnupg-agent): its socket is not checked");
    }

    let mut r = Reaper::new();
    let launcher = r.spawn(&mut desk.command(&[
        "bash",
        "-c",
        SESSION,
        "session",
        &desk.display.to_string(),
        path(&desk.logs),
    ]));
    wait_until("the session's services and tmux", DEADLINE, || {
        let ready = desk.tmux_dir().join("default").exists()
            && desk.user.runtime.join("ssh-agent.sock").exists()
            && desk.gpg_socket().is_none_or(|s| s.exists())
            && desk.run(&["tmux", "ls"]).status.success();
        ready.then_some(())
    });
    let saved = nodes(&desk);
    eprintln!("saved: {saved:#?}");
    for (p, n) in &saved {
        let n = n
            .as_ref()
            .unwrap_or_else(|| panic!("{} is missing", p.display()));
        if p.starts_with(&desk.user.runtime) {
            assert_eq!(n.uid, USER_UID, "{} belongs to the user", p.display());
        }
    }

    let mut pids = session_pids(&desk, &snapshots);
    let d = format!(":{}", desk.display);
    for round in 1..=2 {
        for &p in &pids {
            r.adopt(p);
        }
        let v = desk.hiber(
            &snapshots,
            &[
                "session",
                "checkpoint",
                "--display",
                &d,
                "--user",
                "1500",
                "--stop",
                "--json",
            ],
        );
        r.wait_children(&[launcher]);
        // Every pid the image holds must be free again (the session may
        // have changed since it was listed).
        let image = v["dir"].as_str().expect("the snapshot's directory");
        let inspected = Command::new(hiber_bin())
            .args(["inspect", image, "--json"])
            .output()
            .expect("running hiber inspect");
        assert_ok(&inspected, "hiber inspect");
        let inspected: Value = serde_json::from_slice(&inspected.stdout).unwrap();
        for p in inspected["snapshot"]["processes"]
            .as_array()
            .expect("processes")
        {
            let p = p["pid"].as_i64().expect("pid") as i32;
            r.adopt(p);
            wait_gone(p);
        }
        for &p in &pids {
            wait_gone(p);
        }
        // What a reboot or a logout takes away: tmux's directory with its
        // socket, the agents' sockets and the FIFO. The bus's and the X
        // server's socket files stay, dead, to be taken over.
        fs::remove_dir_all(desk.tmux_dir()).unwrap();
        fs::remove_file(desk.user.runtime.join("ssh-agent.sock")).unwrap();
        fs::remove_file(desk.user.runtime.join("fifo")).unwrap();
        if let Some(s) = desk.gpg_socket() {
            fs::remove_file(s).unwrap();
        }
        assert!(desk.bus().exists() && desk.x_socket().exists());

        let restored = desk.hiber(&snapshots, &["session", "restore", image, "--json"]);
        let now: Vec<i32> = restored["pids"]
            .as_array()
            .expect("pids")
            .iter()
            .map(|p| p[1].as_i64().expect("pid") as i32)
            .collect();
        for &p in &now {
            r.adopt(p);
        }
        if let Some(k) = restored["keeper"].as_i64() {
            r.adopt(k as i32);
        }
        assert_eq!(
            nodes(&desk),
            saved,
            "round {round}: the socket files, FIFO and directory as saved"
        );
        new_clients_connect(&desk, &mut r, round);
        pids = session_pids(&desk, &snapshots);
        assert!(
            now.iter().all(|p| pids.contains(p)),
            "round {round}: the restored {now:?} make up the session {pids:?}"
        );
    }
}

/// A listener bound to a relative name comes back in its program's
/// working directory, with its mode; one whose file its program removed
/// comes back bound to its name without a file, and the new file of
/// another program at that path is left alone.
const NAMES: &str = r#"
import os, socket, sys
os.umask(0o027)
here = socket.socket(socket.AF_UNIX)
here.bind("rel.sock")
here.listen(8)
gone = socket.socket(socket.AF_UNIX)
gone.bind(sys.argv[1])
gone.listen(8)
os.unlink(sys.argv[1])
print("ready", flush=True)
while True:
    c, _ = here.accept()
    c.sendall((here.getsockname() + " " + gone.getsockname() + "\n").encode())
    c.close()
"#;

const ASK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
print(s.makefile().readline().strip())
"#;

#[test]
fn relative_and_removed_socket_names_come_back_as_they_were() {
    let user = UserSession::new();
    let t = tempdir();
    let img = t.path().join("img");
    let log = user.dir().join("names.log");
    let gone = user.runtime.join("gone.sock");
    let mut r = Reaper::new();
    let pid =
        r.spawn(&mut user.command(&["/usr/bin/python3", "-c", NAMES, path(&gone)], Some(&log)));
    wait_until("the listeners", DEADLINE, || {
        lines(&log).iter().any(|l| l == "ready").then_some(())
    });
    let rel = user.home.join("rel.sock");
    let saved = node(&rel).expect("rel.sock in the program's working directory");
    assert_eq!(
        saved,
        Node {
            kind: "socket",
            uid: USER_UID,
            gid: USER_UID,
            mode: 0o750
        }
    );
    let ask = |what: &str| {
        let o = user
            .command(&["/usr/bin/python3", "-c", ASK, path(&rel)], None)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        stdout(&o).trim().to_string()
    };
    let names = format!("rel.sock {}", gone.display());
    assert_eq!(ask("before"), names);

    r.checkpoint_stop(pid, &img);
    fs::remove_file(&rel).unwrap();
    // Another program's file now at the removed socket's path.
    fs::write(&gone, b"someone else's").unwrap();
    r.restore(&img, &[]);
    assert_eq!(node(&rel), Some(saved), "rel.sock made again as saved");
    assert_eq!(ask("after the restore"), names);
    assert_eq!(fs::read(&gone).unwrap(), b"someone else's");
    assert!(
        !fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".hiber-bind-")),
        "no private directory left behind"
    );
}
