//! A user's session saved with `--stop` while a new login's X server took
//! its display meanwhile: the plain restore is refused and touches
//! nothing; `--free-display` brings it back on the next free number, its
//! X server listening there, its programs running on, and a new client
//! reaching it there while the new server keeps its own display.

mod common;

use common::user::UserSession;
use common::*;
use std::fs;
use std::path::Path;

/// The user's xterm shell counts into argv[1] five times a second.
const COUNTER: &str = r#"(n=0; while :; do n=$((n+1)); echo $n > "$0"; sleep 0.2; done) & exec bash --norc --noprofile -i"#;

fn count(file: &Path) -> u64 {
    fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn start_xvfb(r: &mut Reaper, u: &UserSession, display: u32, log: &Path) -> i32 {
    let pid = r.spawn(&mut u.command(
        &[
            "Xvfb",
            &format!(":{display}"),
            "-nolisten",
            "tcp",
            "-noreset",
        ],
        Some(log),
    ));
    wait_until(&format!("Xvfb :{display} to answer"), DEADLINE, || {
        u.run_on(display, &["xwininfo", "-root"])
            .status
            .success()
            .then_some(())
    });
    pid
}

#[test]
fn a_session_whose_display_was_taken_comes_back_on_a_free_one() {
    let mut r = Reaper::new();
    let u = UserSession::new();
    let display = free_display();
    let _x = XFiles(display);
    let log = u.dir().join("log");
    let counter = u.dir().join("count");
    let xvfb = start_xvfb(&mut r, &u, display, &log);
    let xterm = r.spawn(
        u.command(
            &[
                "xterm",
                "-e",
                "bash",
                "--norc",
                "--noprofile",
                "-c",
                COUNTER,
                counter.to_str().unwrap(),
            ],
            Some(&log),
        )
        .env("DISPLAY", format!(":{display}")),
    );
    wait_until("the xterm's window", DEADLINE, || {
        u.shows_window(display, "xterm").then_some(())
    });
    wait_until("the shell to count", DEADLINE, || {
        (count(&counter) > 1).then_some(())
    });

    let d = format!(":{display}");
    let img = u.dir().join("img");
    let saved = r.session_stop(&d, &img, &[xvfb, xterm]);

    // A new login's X server takes the display.
    let new_log = u.dir().join("new.log");
    let new_server = start_xvfb(&mut r, &u, display, &new_log);

    // The plain restore is refused, naming the server, and leaves nothing.
    let refused = hiber(&["session", "restore", path(&img)]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let err = stderr(&refused);
    assert!(
        err.contains(&format!(
            "display :{display} is in use by pid {new_server} (Xvfb)"
        )) && err.contains("--free-display"),
        "{err}"
    );
    let stopped_at = count(&counter);
    for p in &saved.processes {
        assert!(!alive(p["pid"].as_i64().unwrap() as i32));
    }

    // With --free-display it comes back on the next free number.
    let v = r.session_restore(&img, &["--free-display"]);
    let moved = v["display"].as_u64().unwrap() as u32;
    let _moved_files = XFiles(moved);
    assert_eq!(v["saved_display"], display);
    assert!(moved > display, "{v}");
    assert_eq!(v["changes"].as_array().unwrap().len(), 0, "{v}");
    let restored_server = v["pids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == xvfb)
        .map(|p| p[1].as_i64().unwrap() as i32)
        .expect("the X server among the restored");
    // It listens there (path and abstract name), and its lock file says so.
    assert_eq!(
        hiber_session::discover::x_server_of(moved).unwrap(),
        Some(restored_server)
    );
    assert_eq!(
        fs::read_to_string(format!("/tmp/.X{moved}-lock"))
            .unwrap()
            .trim(),
        restored_server.to_string()
    );
    // A new client finds the xterm there; the new login's server is its own.
    assert!(u.shows_window(moved, "xterm"));
    assert!(!u.shows_window(display, "xterm"));
    assert_eq!(
        hiber_session::discover::x_server_of(display).unwrap(),
        Some(new_server)
    );
    wait_until("the restored shell to count on", DEADLINE, || {
        (count(&counter) > stopped_at + 2).then_some(())
    });

    // The moved server ends (its user logs out): it removes its files for
    // the number it has now, and leaves the new login's alone.
    // SAFETY: kill on a pid this test restored and still holds.
    assert_eq!(unsafe { libc::kill(restored_server, libc::SIGTERM) }, 0);
    wait_until("the moved X server to exit", DEADLINE, || {
        matches!(state(restored_server), None | Some('Z')).then_some(())
    });
    let socket = format!("/tmp/.X11-unix/X{display}");
    let lock = format!("/tmp/.X{display}-lock");
    assert!(
        Path::new(&socket).exists(),
        "the new login's socket {socket} is still there"
    );
    assert_eq!(
        fs::read_to_string(&lock).map(|s| s.trim().to_string()).ok(),
        Some(new_server.to_string()),
        "the new login's lock {lock} is still there, and its own"
    );
    assert_eq!(
        hiber_session::discover::x_server_of(display).unwrap(),
        Some(new_server),
        "the new login's server still answers on :{display}"
    );
    assert!(
        !Path::new(&format!("/tmp/.X11-unix/X{moved}")).exists()
            && !Path::new(&format!("/tmp/.X{moved}-lock")).exists(),
        "the moved server removed its own files for :{moved}"
    );
    drop(r);
}
