//! The corpus: a normal user's desktop as Debian's packages make it — a
//! window manager, a VTE terminal with vim and tmux, a GTK 3 editor, a
//! GTK 4/libadwaita app and the portal stack (xdg-desktop-portal, its GTK
//! backend, the document portal with its FUSE mount, the permission store,
//! the accessibility bus, GVfs) — saved with `--stop` and restored twice
//! in a row, the second time with a GTK file chooser open. After each
//! restore the unsaved text of vim and the editor is there and saved, the
//! calculator computes, the file chooser closes, and new clients reach the
//! bus, the portals, tmux and the X server.

mod common;

use common::user::{UserSession, USER_UID};
use common::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const SESSION: &str = include_str!("corpus-session.sh");

/// What acceptance asks of `hiber session check` on any session of the
/// corpus (a deadline, not a benchmark).
const CHECK_DEADLINE: Duration = Duration::from_secs(10);

struct Desk {
    u: UserSession,
    display: u32,
    data: PathBuf,
}

impl Desk {
    /// `args` as the user, in the session's environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.u.command(args, None);
        c.env("DISPLAY", format!(":{}", self.display))
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}", self.u.runtime.join("bus").display()),
            )
            .env("TMUX_TMPDIR", &self.u.runtime)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
    }

    fn xdo(&self, args: &[&str]) -> Output {
        let mut all = vec!["xdotool"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// The first window whose name matches `pattern` (a regex).
    fn window(&self, pattern: &str) -> Option<String> {
        let out = self.xdo(&["search", "--name", pattern]);
        stdout(&out).lines().next().map(str::to_string)
    }

    fn wait_window(&self, pattern: &str) -> String {
        wait_until(&format!("a window named {pattern:?}"), DEADLINE, || {
            self.window(pattern)
        })
    }

    /// The names of the mapped top-level windows, sorted.
    fn window_names(&self) -> Vec<String> {
        let out = self.xdo(&["search", "--onlyvisible", "--name", "."]);
        let mut names: Vec<String> = stdout(&out)
            .lines()
            .map(|w| stdout(&self.xdo(&["getwindowname", w])).trim().to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Gives `window` the focus (through the window manager) and sends it
    /// `keys` (xdotool key names) or, with `text`, types it.
    fn focus(&self, window: &str) {
        assert_ok(
            &self.xdo(&["windowactivate", "--sync", window]),
            "activating a window",
        );
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["key", "--delay", "30"];
        args.extend_from_slice(keys);
        assert_ok(&self.xdo(&args), "sending keys");
    }

    fn type_text(&self, text: &str) {
        assert_ok(&self.xdo(&["type", "--delay", "30", text]), "typing");
    }

    /// The clipboard's text, as the user reads it.
    fn clipboard(&self) -> String {
        stdout(&self.run(&["xclip", "-o", "-selection", "clipboard"]))
    }

    fn file(&self, name: &str) -> String {
        fs::read_to_string(self.data.join(name)).unwrap_or_default()
    }

    /// The screen, saved for a person to look at (XWD, under the target
    /// directory).
    fn keep_screenshot(&self, name: &str) {
        let out = self.run(&["xwd", "-root", "-silent"]);
        assert_ok(&out, "xwd");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corpus");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("{name}.xwd")), &out.stdout).unwrap();
    }
}

/// Unmounts the document portal's mount if a failed test left it.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        while hiber_session::services::fuse_mounts()
            .iter()
            .any(|m| m.mount_point == self.0)
        {
            let c = std::ffi::CString::new(path(&self.0)).unwrap();
            // SAFETY: a NUL-terminated path; MNT_DETACH takes no data.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                break;
            }
        }
    }
}

/// Every process of the test user whose environment names this session's
/// runtime directory: what the bus activated, which no one else started.
fn session_processes(runtime: &Path) -> Vec<i32> {
    let want = format!("XDG_RUNTIME_DIR={}", runtime.display()).into_bytes();
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let mine = status_field(pid, "Uid")
            .is_some_and(|u| u.split_whitespace().next() == Some(&USER_UID.to_string()));
        let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if mine && env.split(|&b| b == 0).any(|v| v == want) {
            pids.push(pid);
        }
    }
    pids
}

/// Ends, when dropped, what the session's bus activated (no one else
/// started those): before the reaper ends the rest.
struct EndActivated(PathBuf);

impl Drop for EndActivated {
    fn drop(&mut self) {
        for p in session_processes(&self.0) {
            // SAFETY: kill by pid of a process of this test's session.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

/// `hiber args`, killed and failed if it does not answer by `deadline`.
fn hiber_within(args: &[&str], deadline: Duration) -> Output {
    let child: Child = Command::new(hiber_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting hiber");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    // Its output is read while it runs (a full pipe would stall it).
    let reader = std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(deadline) {
        Ok(out) => {
            let _ = reader.join();
            out.expect("hiber's output")
        }
        Err(_) => {
            // SAFETY: kill by pid of the hiber this function started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = reader.join();
            panic!("hiber {args:?} did not answer within {deadline:?}");
        }
    }
}

#[test]
fn a_users_desktop_with_portals_comes_back_twice_and_new_clients_reach_it() {
    let needed = [
        "/usr/bin/openbox",
        "/usr/bin/xfce4-terminal",
        "/usr/bin/mousepad",
        "/usr/bin/gnome-calculator",
        "/usr/libexec/xdg-desktop-portal",
        "/usr/libexec/xdg-desktop-portal-gtk",
        "/usr/bin/xclip",
    ];
    if let Some(missing) = needed.iter().find(|p| !Path::new(p).exists()) {
        panic!("{missing} is missing: packaging/install-deps.sh installs it");
    }
    let mut r = Reaper::new();
    let u = UserSession::new();
    let display = free_display();
    let _x = XFiles(display);
    let data = u.dir().join("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("mousepad.txt"), "line one\n").unwrap();
    for p in [&data, &data.join("mousepad.txt")] {
        std::os::unix::fs::chown(p, Some(USER_UID), Some(USER_UID)).unwrap();
    }
    let desk = Desk { u, display, data };
    let _unmount = Unmount(desk.u.runtime.join("doc"));
    let _activated = EndActivated(desk.u.runtime.clone());
    let log = desk.u.dir().join("session.log");
    let d = display.to_string();
    let mut session = desk.u.command(
        &["bash", "-c", SESSION, "corpus", &d, path(&desk.data)],
        Some(&log),
    );
    session.env("TMUX_TMPDIR", &desk.u.runtime);
    r.spawn(&mut session);
    // A cold start of three GTK programs and the portals on 2 cores.
    wait_until(
        "the corpus session to be up (see session.log)",
        DEADLINE * 4,
        || desk.data.join("ready").exists().then_some(()),
    );

    // Unsaved work before the first save: text typed into vim (still in
    // insert mode) and into the editor.
    let vim = desk.wait_window("^vim-term$");
    desk.focus(&vim);
    desk.type_text("ibefore the first save");
    let editor = desk.wait_window("mousepad.txt - Mousepad$");
    desk.focus(&editor);
    desk.keys(&["ctrl+End"]);
    desk.type_text("typed before the first save");
    wait_until("the editor to mark its text modified", DEADLINE, || {
        desk.window(r"^\*.*mousepad.txt - Mousepad$")
    });

    let user = USER_UID.to_string();
    let dsp = format!(":{display}");
    for cycle in 1..=2 {
        if cycle == 2 {
            // A file chooser open at save time (GLib holds the process's
            // own /proc/self/mountinfo; GVfs watches the portal's mount).
            desk.focus(&desk.wait_window("mousepad.txt - Mousepad$"));
            desk.keys(&["ctrl+o"]);
            desk.wait_window("^Open File$");
        }
        let check = hiber_within(
            &[
                "session",
                "check",
                "--display",
                &dsp,
                "--user",
                &user,
                "--json",
            ],
            CHECK_DEADLINE,
        );
        assert_ok(&check, &format!("session check before save {cycle}"));
        let v: Value = serde_json::from_slice(&check.stdout).unwrap();
        let services: Vec<&str> = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["decision"]["name"].as_str())
            .collect();
        assert!(services.contains(&"xdg-document-portal"), "{services:?}");
        let before_windows = desk.window_names();
        desk.keep_screenshot(&format!("cycle-{cycle}-before"));

        let img = desk.u.dir().join(format!("img{cycle}"));
        let saved = hiber(&[
            "session",
            "checkpoint",
            "--display",
            &dsp,
            "--user",
            &user,
            "-o",
            path(&img),
            "--stop",
            "--json",
        ]);
        assert_ok(&saved, &format!("save {cycle} with --stop"));
        // Every saved process and thread gone (the set saved, which may
        // have grown since the check), so their ids are free again.
        let inspected = hiber(&["inspect", path(&img), "--json"]);
        assert_ok(&inspected, "hiber inspect");
        let inspected: Value = serde_json::from_slice(&inspected.stdout).unwrap();
        for p in inspected["snapshot"]["processes"].as_array().unwrap() {
            for t in p["threads"].as_array().into_iter().flatten() {
                wait_gone(t["tid"].as_i64().unwrap() as i32);
            }
            wait_gone(p["pid"].as_i64().unwrap() as i32);
        }
        r.reap();

        let restored = hiber(&["session", "restore", path(&img), "--json"]);
        assert_ok(&restored, &format!("restore {cycle}"));
        let rv: Value = serde_json::from_slice(&restored.stdout).unwrap();
        for p in rv["pids"].as_array().unwrap() {
            r.adopt(p[1].as_i64().unwrap() as i32);
        }
        if let Some(k) = rv["keeper"].as_i64() {
            r.adopt(k as i32);
        }
        assert_eq!(
            desk.window_names(),
            before_windows,
            "windows after restore {cycle}"
        );
        desk.keep_screenshot(&format!("cycle-{cycle}-restored"));

        // New clients: the bus, the portals (a new document portal is
        // activated), tmux, the X server.
        let names = desk.run(&[
            "dbus-send",
            "--session",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.ListNames",
        ]);
        assert_ok(&names, &format!("dbus-send after restore {cycle}"));
        assert!(stdout(&names).contains("org.freedesktop.portal.Desktop"));
        let read = desk.run(&[
            "gdbus",
            "call",
            "--session",
            "--timeout",
            "20",
            "--dest",
            "org.freedesktop.portal.Desktop",
            "--object-path",
            "/org/freedesktop/portal/desktop",
            "--method",
            "org.freedesktop.portal.Settings.Read",
            "org.freedesktop.appearance",
            "color-scheme",
        ]);
        assert_ok(&read, "the restored settings portal answering");
        let mount = desk.run(&[
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
        assert_ok(&mount, "the document portal activated again");
        let tmux = desk.run(&["tmux", "ls"]);
        assert_ok(&tmux, &format!("tmux ls after restore {cycle}"));
        assert!(stdout(&tmux).starts_with("work:"), "{}", stdout(&tmux));
        let title = format!("new-xterm-{cycle}");
        let xterm = r.spawn(
            desk.command(&["xterm", "-T", &title])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        desk.wait_window(&format!("^{title}$"));
        // SAFETY: kill by pid of the xterm this test started.
        unsafe { libc::kill(xterm, libc::SIGTERM) };
        r.wait_children(&[xterm]);

        // The apps answer: the file chooser closes, the editor saves what
        // was typed before the save, vim writes its buffer, the calculator
        // computes.
        if cycle == 2 {
            let chooser = desk.wait_window("^Open File$");
            desk.focus(&chooser);
            desk.keys(&["Escape"]);
            wait_until("the file chooser to close", DEADLINE, || {
                desk.window("^Open File$").is_none().then_some(())
            });
        }
        let editor = desk.wait_window("mousepad.txt - Mousepad$");
        desk.focus(&editor);
        desk.keys(&["ctrl+s"]);
        let typed: Vec<String> = (1..=cycle)
            .map(|c| {
                if c == 1 {
                    "typed before the first save".to_string()
                } else {
                    format!(" and before save {c}")
                }
            })
            .collect();
        wait_until("the editor to save its text", DEADLINE, || {
            (desk.file("mousepad.txt") == format!("line one\n{}", typed.concat())).then_some(())
        });
        let vim = desk.wait_window("^vim-term$");
        desk.focus(&vim);
        desk.keys(&["Escape"]);
        desk.type_text(":w");
        desk.keys(&["Return"]);
        let vim_lines: Vec<String> = (1..=cycle)
            .map(|c| {
                if c == 1 {
                    "before the first save".to_string()
                } else {
                    format!("before save {c}")
                }
            })
            .collect();
        wait_until("vim to write its buffer", DEADLINE, || {
            (desk.file("vim.txt") == format!("{}\n", vim_lines.join("\n"))).then_some(())
        });
        let calculator = desk.wait_window("^Calculator$");
        desk.focus(&calculator);
        let (a, b) = (6 + cycle, 7);
        desk.keys(&["Escape"]);
        desk.type_text(&format!("{a}*{b}"));
        desk.keys(&["Return"]);
        wait_until("the calculator's result in the clipboard", DEADLINE, || {
            desk.keys(&["ctrl+c"]);
            (desk.clipboard().trim() == (a * b).to_string()).then_some(())
        });

        // Unsaved work for the next save.
        if cycle == 1 {
            desk.focus(&vim);
            desk.type_text("obefore save 2");
            desk.focus(&editor);
            desk.keys(&["ctrl+End"]);
            desk.type_text(" and before save 2");
            wait_until("the editor to mark its text modified", DEADLINE, || {
                desk.window(r"^\*.*mousepad.txt - Mousepad$")
            });
        }
    }

    // The portal activated after the last restore ends first, by itself,
    // so that its helper unmounts; then the rest of the session.
    let doc = desk.u.runtime.join("doc");
    let portal = session_processes(&desk.u.runtime).into_iter().find(|&p| {
        fs::read_link(format!("/proc/{p}/exe"))
            .is_ok_and(|e| e == Path::new("/usr/libexec/xdg-document-portal"))
    });
    if let Some(portal) = portal {
        // SAFETY: kill by pid of the portal this test's session activated.
        unsafe { libc::kill(portal, libc::SIGTERM) };
        wait_until("the new document portal to unmount", DEADLINE, || {
            (!hiber_session::services::fuse_mounts()
                .iter()
                .any(|m| m.mount_point == doc))
            .then_some(())
        });
    }
    for p in session_processes(&desk.u.runtime) {
        r.adopt(p);
    }
}

/// The bus as dbus-launch starts it (`--fork`): it leads a session of its
/// own, and the services it activates are orphans in that session. The
/// restore forks them from the bus with CLONE_PARENT, so they are back in
/// the bus's session with the root's child as parent; `check` finds such a
/// layout rebuildable before anything is stopped.
#[test]
fn a_bus_started_like_dbus_launch_comes_back_with_its_activated_services() {
    if !Path::new("/usr/libexec/xdg-desktop-portal").exists() {
        panic!("xdg-desktop-portal is missing: packaging/install-deps.sh installs it");
    }
    let mut r = Reaper::new();
    let u = UserSession::new();
    let display = free_display();
    let _x = XFiles(display);
    let desk = Desk {
        data: u.dir().to_path_buf(),
        u,
        display,
    };
    let _unmount = Unmount(desk.u.runtime.join("doc"));
    let _activated = EndActivated(desk.u.runtime.clone());
    let log = desk.u.dir().join("session.log");
    let bus = desk.u.runtime.join("bus");
    let script = r#"
        export DISPLAY=":$1" DBUS_SESSION_BUS_ADDRESS="unix:path=$XDG_RUNTIME_DIR/bus"
        dbus-daemon --session --fork --print-pid=3 --address="$DBUS_SESSION_BUS_ADDRESS" 3> "$2/bus.pid"
        Xvfb ":$1" -nolisten tcp -noreset &
        until xwininfo -root > /dev/null 2>&1; do sleep 0.05; done
        dbus-update-activation-environment DISPLAY
        xterm -T xterm -e bash --norc --noprofile &
        wait
    "#;
    let d = display.to_string();
    let launcher = r.spawn(&mut desk.u.command(
        &["bash", "-c", script, "launch", &d, path(desk.u.dir())],
        Some(&log),
    ));
    let bus_pid: i32 = wait_until("the bus's pid", DEADLINE, || {
        fs::read_to_string(desk.u.dir().join("bus.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    r.adopt(bus_pid);
    wait_until("the bus to listen", DEADLINE, || bus.exists().then_some(()));
    desk.wait_window("^xterm$");
    let settings = || {
        desk.run(&[
            "gdbus",
            "call",
            "--session",
            "--timeout",
            "20",
            "--dest",
            "org.freedesktop.portal.Desktop",
            "--object-path",
            "/org/freedesktop/portal/desktop",
            "--method",
            "org.freedesktop.portal.Settings.Read",
            "org.freedesktop.appearance",
            "color-scheme",
        ])
    };
    assert_ok(&settings(), "the settings portal, activated");
    let sid = |p: i32| status_field(p, "NSsid").and_then(|s| s.parse::<i32>().ok());
    let portal = session_processes(&desk.u.runtime)
        .into_iter()
        .find(|&p| {
            fs::read_link(format!("/proc/{p}/exe"))
                .is_ok_and(|e| e == Path::new("/usr/libexec/xdg-desktop-portal"))
        })
        .expect("the activated portal");
    assert_eq!(sid(bus_pid), Some(bus_pid), "the bus leads its session");
    assert_eq!(
        sid(portal),
        Some(bus_pid),
        "the portal is in the bus's session"
    );
    assert_ne!(
        status_field(portal, "PPid").as_deref(),
        Some(bus_pid.to_string().as_str()),
        "the portal is an orphan"
    );

    let user = USER_UID.to_string();
    let dsp = format!(":{display}");
    let check = hiber_within(
        &[
            "session",
            "check",
            "--display",
            &dsp,
            "--user",
            &user,
            "--json",
        ],
        CHECK_DEADLINE,
    );
    assert_ok(&check, "session check");
    let img = desk.u.dir().join("img");
    let saved = hiber(&[
        "session",
        "checkpoint",
        "--display",
        &dsp,
        "--user",
        &user,
        "-o",
        path(&img),
        "--stop",
    ]);
    assert_ok(&saved, "save with --stop");
    r.wait_children(&[launcher]);
    for p in [bus_pid, portal] {
        wait_gone(p);
    }
    let restored = hiber(&["session", "restore", path(&img), "--json"]);
    assert_ok(&restored, "restore");
    let rv: Value = serde_json::from_slice(&restored.stdout).unwrap();
    for p in rv["pids"].as_array().unwrap() {
        r.adopt(p[1].as_i64().unwrap() as i32);
    }
    if let Some(k) = rv["keeper"].as_i64() {
        r.adopt(k as i32);
    }
    assert_eq!(sid(bus_pid), Some(bus_pid));
    assert_eq!(
        sid(portal),
        Some(bus_pid),
        "the portal back in the bus's session"
    );
    assert_ne!(
        status_field(portal, "PPid").as_deref(),
        Some(bus_pid.to_string().as_str())
    );
    assert_ok(&settings(), "the restored portal answering a new client");
    desk.wait_window("^xterm$");
}
