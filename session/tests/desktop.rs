//! A small graphical session saved and restored as one process tree: a
//! session bus, an X server, a GTK 4 program, X clients, a terminal with a
//! shell, two bus monitors and a multi-threaded python program.

mod common;

use common::*;
use std::fs;
use std::process::{Command, Stdio};

const SESSION: &str = include_str!("../../packaging/desktop-session.sh");

#[test]
fn x_session_with_gtk_bus_terminal_and_threads_comes_back() {
    let t = tempdir();
    let dir = t.path();
    let display = free_display();
    let _x_files = XFiles(display);
    let img = dir.join("img");
    let mut r = Reaper::new();
    let root = r.spawn(
        Command::new("bash")
            .args(["-c", SESSION, "session", &display.to_string(), path(dir)])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let x = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .env("DISPLAY", format!(":{display}"))
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}/bus", dir.display()),
            )
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {prog}: {e}"))
    };
    let windows = || -> Vec<String> {
        let out = x("xwininfo", &["-root", "-tree"]);
        let mut v: Vec<String> = stdout(&out)
            .lines()
            .filter(|l| l.contains('"') && !l.contains("has no name"))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .collect();
        v.sort();
        v
    };
    let ping = |word: &str| {
        let out = x(
            "dbus-send",
            &[
                "--session",
                "--type=signal",
                "/org/hiber/Test",
                "org.hiber.Test.Ping",
                &format!("string:{word}"),
            ],
        );
        out.status.success()
    };
    let monitor_saw = |word: &str| {
        fs::read_to_string(dir.join("monitor.log"))
            .unwrap_or_default()
            .contains(&format!("\"{word}\""))
    };
    // A cold GTK start (font and icon caches) can take a while on 2 cores.
    wait_until(
        "gtk4-demo, xclock, xeyes and xterm to map their windows",
        DEADLINE * 4,
        || {
            let w = windows();
            (["GTK Demo", "xclock", "xeyes", "xterm"]
                .iter()
                .all(|n| w.iter().any(|l| l.contains(n))))
            .then_some(())
        },
    );
    // gdbus monitor sees the bus announce every client: dbus-send's own
    // connections among them.
    let gdbus_seen = || {
        fs::read_to_string(dir.join("gdbus.log"))
            .unwrap_or_default()
            .matches("NameOwnerChanged")
            .count()
    };
    wait_until("the bus monitors to receive", DEADLINE, || {
        (ping("before") && monitor_saw("before") && gdbus_seen() > 0).then_some(())
    });
    wait_lines(&dir.join("py.log"), 5);
    let before_windows = windows();
    let shot = || x("xwd", &["-root", "-silent"]).stdout;
    let before_shot = pixels(&shot());

    r.checkpoint_stop(root, &img);
    let saved_gdbus = gdbus_seen();
    let saved_py = complete_lines(&dir.join("py.log")).len();
    r.restore(&img, &[]);

    assert_eq!(windows(), before_windows, "the same windows");
    let after_shot = pixels(&shot());
    assert_eq!(after_shot.len(), before_shot.len());
    for (y, (a, b)) in after_shot.iter().zip(&before_shot).enumerate() {
        for (xp, (pa, pb)) in a.iter().zip(b).enumerate() {
            // The clock's window (100x100 at 0,0, with its border) moves on.
            if !(xp < 110 && y < 110) {
                assert_eq!(pa, pb, "pixel ({xp}, {y}) changed");
            }
        }
    }
    // The GTK program answers the keyboard: its window changes.
    let gtk = stdout(&x("xdotool", &["search", "--name", "GTK Demo"]))
        .lines()
        .next()
        .expect("the GTK window")
        .to_string();
    assert!(x("xdotool", &["windowfocus", "--sync", &gtk])
        .status
        .success());
    wait_until("gtk4-demo to redraw after keys", DEADLINE, || {
        // Pressed again each round: the first may come before GTK takes focus.
        x("xdotool", &["key", "Down"]);
        (pixels(&shot()) != after_shot).then_some(())
    });
    // Typing reaches bash through the X server and xterm.
    let typed = dir.join("typed");
    let term = stdout(&x("xdotool", &["search", "--class", "xterm"]))
        .lines()
        .next()
        .expect("the xterm window")
        .to_string();
    let command = format!("echo typed-after-restore > {}", typed.display());
    // Focused, so xdotool types through XTEST (xterm ignores sent events).
    assert!(x("xdotool", &["windowfocus", "--sync", &term])
        .status
        .success());
    assert!(x("xdotool", &["type", "--window", &term, &command])
        .status
        .success());
    assert!(x("xdotool", &["key", "--window", &term, "Return"])
        .status
        .success());
    wait_until("bash to run what was typed", DEADLINE, || {
        (fs::read_to_string(&typed).unwrap_or_default() == "typed-after-restore\n").then_some(())
    });
    // The bus answers and the restored monitor keeps receiving.
    assert!(ping("after-restore"));
    wait_until(
        "the monitor to see a signal sent after restore",
        DEADLINE,
        || monitor_saw("after-restore").then_some(()),
    );
    wait_until(
        "gdbus monitor to see the bus announce a client after restore",
        DEADLINE,
        || (gdbus_seen() > saved_gdbus).then_some(()),
    );
    // The python threads go on, counting exactly.
    let lines = wait_lines(&dir.join("py.log"), saved_py + 10);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l, &format!("{} True", i + 1), "python line {}", i + 1);
    }
}
