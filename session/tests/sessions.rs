//! `hiber session` on real X sessions: found from their display, saved
//! into the snapshots directory, restored under a keeper, and compared
//! with what was recorded. Independent checks use the X tools (xwininfo,
//! xdotool), not hiber's own window list.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A small session: Xvfb, xclock, xeyes, and an xterm whose shell counts
/// into DIR/count. The launching bash stays outside the session.
const SESSION: &str = r#"
D=$1; DIR=$2
Xvfb ":$D" -screen 0 800x600x24 -nolisten tcp -noreset > "$DIR/xvfb.log" 2>&1 &
# Not the socket file: it appears before Xvfb listens.
# -noreset: else the server resets when that probe disconnects, and a
# client connecting during the reset fails too.
until xwininfo -root -display ":$D" > /dev/null 2>&1; do sleep 0.05; done
export DISPLAY=":$D" COUNT="$DIR/count"
xclock -update 1 -geometry 100x100+0+0 &
xeyes -geometry 100x100+200+0 &
xterm -geometry 60x10+0+200 -e bash --norc --noprofile -c '
    (n=0; while :; do n=$((n+1)); echo $n > "$COUNT"; sleep 0.2; done) &
    exec bash --norc --noprofile -i' &
wait
"#;

fn session_hiber(snapshots: &Path, args: &[&str]) -> Output {
    Command::new(hiber_bin())
        .args(args)
        .env("HIBER_SNAPSHOTS", snapshots)
        .output()
        .expect("running hiber")
}

fn json(o: &Output, what: &str) -> Value {
    assert_ok(o, what);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{what} --json: {e}"))
}

fn x(display: u32, prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .env("DISPLAY", format!(":{display}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {prog}: {e}"))
}

/// The named windows of the display, as xwininfo sees them, sorted.
fn windows(display: u32) -> Vec<String> {
    let mut v: Vec<String> = stdout(&x(display, "xwininfo", &["-root", "-tree"]))
        .lines()
        .filter(|l| l.contains('"') && !l.contains("has no name"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

fn wait_windows(display: u32, names: &[&str]) -> Vec<String> {
    let until = std::time::Instant::now() + DEADLINE;
    loop {
        let w = windows(display);
        if names
            .iter()
            .all(|n| w.iter().any(|l| l.contains(&format!("\"{n}\""))))
        {
            return w;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for windows {names:?} on :{display}; it has {w:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn count(dir: &Path) -> u64 {
    fs::read_to_string(dir.join("count"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn children(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    v.sort();
    v
}

fn start_session(r: &mut Reaper, display: u32, dir: &Path) -> i32 {
    let launcher = r.spawn(
        Command::new("bash")
            .args(["-c", SESSION, "session", &display.to_string(), path(dir)])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_windows(display, &["xclock", "xeyes", "xterm"]);
    wait_until("the shell to count", DEADLINE, || {
        (count(dir) > 1).then_some(())
    });
    launcher
}

/// Adopt what `hiber session restore --json` reports, so the test ends it.
fn adopt_restored(r: &mut Reaper, v: &Value) -> (Vec<i32>, i32) {
    let pids: Vec<i32> = v["pids"]
        .as_array()
        .expect("pids")
        .iter()
        .map(|p| p[1].as_i64().expect("pid") as i32)
        .collect();
    let keeper = v["keeper"].as_i64().expect("a keeper") as i32;
    for &p in &pids {
        r.adopt(p);
    }
    r.adopt(keeper);
    (pids, keeper)
}

#[test]
fn saving_one_of_two_sessions_twice_leaves_the_other_alone_and_restores_by_name() {
    let t = tempdir();
    let snapshots = t.path().join("snapshots");
    let (d1, d2) = (free_display(), free_display());
    let _x = (XFiles(d1), XFiles(d2));
    let (dir1, dir2) = (t.path().join("s1"), t.path().join("s2"));
    fs::create_dir_all(&dir1).unwrap();
    fs::create_dir_all(&dir2).unwrap();
    let mut r = Reaper::new();
    let l1 = start_session(&mut r, d1, &dir1);
    let l2 = start_session(&mut r, d2, &dir2);
    // Xvfb, xclock, xeyes, xterm of the other session.
    let other = children(l2);

    let checked = json(
        &session_hiber(
            &snapshots,
            &["session", "check", "--display", &format!(":{d1}"), "--json"],
        ),
        "session check",
    );
    // The trees of the launcher's children: Xvfb, xclock, xeyes, xterm.
    let mut roots: Vec<i32> = serde_json::from_value(checked["roots"].clone()).unwrap();
    roots.sort();
    assert_eq!(roots, children(l1), "the roots of :{d1}'s session");
    let ours: Vec<i32> = tree(l1).into_iter().filter(|&p| p != l1).collect();

    let first = json(
        &session_hiber(
            &snapshots,
            &[
                "session",
                "checkpoint",
                "--display",
                &format!(":{d1}"),
                "--json",
            ],
        ),
        "first session checkpoint",
    );
    assert_eq!(first["windows"].as_u64(), Some(3), "{first}");
    let before_windows = windows(d1);
    let second = json(
        &session_hiber(
            &snapshots,
            &[
                "session",
                "checkpoint",
                "--display",
                &format!(":{d1}"),
                "--stop",
                "--json",
            ],
        ),
        "second session checkpoint",
    );
    let (w1, w2) = (
        first["written_bytes"].as_u64().unwrap(),
        second["written_bytes"].as_u64().unwrap(),
    );
    eprintln!("first save wrote {w1} bytes, the second {w2}");
    assert!(
        w2 * 4 < w1,
        "the second save wrote {w2} bytes, the first {w1}"
    );
    r.wait_children(&[l1]);
    for &p in &ours {
        wait_gone(p);
    }

    // The other session never stopped: it is all there, untraced, counting.
    let inspected = json(
        &hiber(&["inspect", second["dir"].as_str().unwrap(), "--json"]),
        "inspect",
    );
    let saved: Vec<i64> = inspected["snapshot"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    for &p in &other {
        assert!(alive(p), "pid {p} of the other session");
        assert_eq!(status_field(p, "TracerPid").as_deref(), Some("0"));
        assert!(
            !saved.contains(&(p as i64)),
            "pid {p} of :{d2} is in the image"
        );
    }
    let c2 = count(&dir2);
    wait_until("the other session's shell to go on", DEADLINE, || {
        (count(&dir2) > c2).then_some(())
    });

    let list = json(
        &session_hiber(&snapshots, &["session", "list", "--json"]),
        "list",
    );
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list
        .iter()
        .all(|s| s["windows"].as_u64() == Some(3)
            && s["display"].as_str() == Some(&format!(":{d1}"))));
    let names: Vec<&str> = list.iter().map(|s| s["name"].as_str().unwrap()).collect();

    let count_at_save = count(&dir1);
    let restored = json(
        &session_hiber(&snapshots, &["session", "restore", names[1], "--json"]),
        "session restore",
    );
    let (pids, keeper) = adopt_restored(&mut r, &restored);
    assert_eq!(restored["changes"], Value::Array(vec![]), "{restored}");
    assert_eq!(windows(d1), before_windows);
    for p in &roots {
        assert!(pids.contains(p), "pid {p} restored with its pid");
        assert_eq!(
            status_field(*p, "PPid"),
            Some(keeper.to_string()),
            "the parent of {p}"
        );
    }
    wait_until("the restored shell to count on", DEADLINE, || {
        (count(&dir1) > count_at_save + 1).then_some(())
    });

    let rm = session_hiber(&snapshots, &["session", "rm", names[0]]);
    assert_ok(&rm, "session rm");
    let list = json(
        &session_hiber(&snapshots, &["session", "list", "--json"]),
        "list",
    );
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"].as_str(), Some(names[1]));
    let gone = session_hiber(&snapshots, &["session", "rm", names[0]]);
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains(names[0]), "{}", stderr(&gone));
}

/// Start Xvfb on `display` with `extra` arguments (`-ac`, a screen size…),
/// as `nobody` when asked, and wait until it listens.
fn start_xvfb(r: &mut Reaper, display: u32, extra: &[&str], as_nobody: bool) -> i32 {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "Xvfb"]);
        c
    } else {
        Command::new("Xvfb")
    };
    let pid = r.spawn(
        cmd.arg(format!(":{display}"))
            .args(extra)
            .args(["-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_until(&format!("Xvfb :{display} to listen"), DEADLINE, || {
        Path::new(&format!("/tmp/.X11-unix/X{display}"))
            .exists()
            .then_some(())
    });
    pid
}

/// The screen of `display` as pixel rows, through xwd.
fn screen(display: u32) -> Vec<Vec<u32>> {
    pixels(&x(display, "xwd", &["-root", "-silent"]).stdout)
}

fn region(p: &[Vec<u32>], x0: usize, y0: usize, w: usize, h: usize) -> Vec<u32> {
    p[y0..y0 + h]
        .iter()
        .flat_map(|row| row[x0..x0 + w].iter().copied())
        .collect()
}

fn window_id(display: u32, class: &str) -> String {
    stdout(&x(display, "xdotool", &["search", "--class", class]))
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no {class} window"))
        .to_string()
}

#[test]
fn clients_started_by_unrelated_shells_come_back_drawing_under_the_keeper() {
    let t = tempdir();
    let img = t.path().join("img");
    let d = free_display();
    let _x = XFiles(d);
    let mut r = Reaper::new();
    let xvfb = start_xvfb(&mut r, d, &["-screen", "0", "640x480x24"], false);
    let shell = |r: &mut Reaper, script: &str| {
        r.spawn(
            Command::new("bash")
                .args(["-c", script])
                .env("DISPLAY", format!(":{d}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    };
    // Two shells outside the session, and one inside it (the xterm's).
    let a = shell(&mut r, "xclock -update 1 -geometry 100x100+0+0 & wait");
    let b = shell(&mut r, "xeyes -geometry 100x100+200+0 & wait");
    let term = shell(
        &mut r,
        "exec xterm -geometry 40x5+0+200 -e bash --norc --noprofile -c \
         'xlogo -geometry 100x100+400+0 & exec bash --norc --noprofile -i'",
    );
    let before = wait_windows(d, &["xclock", "xeyes", "xterm", "xlogo"]);

    let saved = json(
        &hiber(&[
            "session",
            "checkpoint",
            "--display",
            &format!(":{d}"),
            "-o",
            path(&img),
            "--stop",
            "--json",
        ]),
        "session checkpoint --stop",
    );
    assert_eq!(saved["windows"].as_u64(), Some(4), "{saved}");
    // The outside shells saw their clients end; the session is gone.
    r.wait_children(&[a, b, term, xvfb]);
    for p in [a, b, term, xvfb] {
        wait_gone(p);
    }

    let restored = json(
        &hiber(&["session", "restore", path(&img), "--json"]),
        "session restore",
    );
    let (pids, keeper) = adopt_restored(&mut r, &restored);
    assert_eq!(restored["changes"], Value::Array(vec![]), "{restored}");
    assert_eq!(windows(d), before);
    assert!(pids.contains(&xvfb) && pids.contains(&term));
    for p in [xvfb, term] {
        assert_eq!(
            status_field(p, "PPid"),
            Some(keeper.to_string()),
            "parent of {p}"
        );
    }
    let comm_parent = |comm: &str| {
        pids.iter()
            .find(|&&p| {
                fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
            })
            .map(|&p| status_field(p, "PPid").unwrap())
            .unwrap_or_else(|| panic!("{comm} restored"))
    };
    // Their shells stayed outside: the keeper took them.
    assert_eq!(comm_parent("xclock"), keeper.to_string());
    assert_eq!(comm_parent("xeyes"), keeper.to_string());
    // xlogo's shell is the xterm's bash, restored with it.
    assert_ne!(comm_parent("xlogo"), keeper.to_string());

    // Every client draws: the clock ticks; xeyes and xlogo repaint after
    // being unmapped and mapped again (the server only paints their
    // background; the drawing is theirs).
    let shot = screen(d);
    wait_until("xclock to redraw", DEADLINE, || {
        (region(&screen(d), 0, 0, 100, 100) != region(&shot, 0, 0, 100, 100)).then_some(())
    });
    for (class, x0) in [("xeyes", 200), ("xlogo", 400)] {
        let drawn = region(&shot, x0, 0, 100, 100);
        let id = window_id(d, class);
        assert!(x(d, "xdotool", &["windowunmap", "--sync", &id])
            .status
            .success());
        assert_ne!(
            region(&screen(d), x0, 0, 100, 100),
            drawn,
            "{class} unmapped"
        );
        assert!(x(d, "xdotool", &["windowmap", "--sync", &id])
            .status
            .success());
        wait_until(&format!("{class} to repaint"), DEADLINE, || {
            (region(&screen(d), x0, 0, 100, 100) == drawn).then_some(())
        });
    }
}

/// (alive, stopped, traced) of each pid: what a freeze would change.
fn undisturbed(pids: &[i32]) {
    for &p in pids {
        assert!(alive(p), "pid {p} is still running");
        assert!(
            !matches!(state(p), Some('t' | 'T')),
            "pid {p} is not stopped"
        );
        assert_eq!(
            status_field(p, "TracerPid").as_deref(),
            Some("0"),
            "pid {p}"
        );
    }
}

#[test]
fn missing_displays_and_other_users_are_refused_before_anything_is_frozen() {
    let t = tempdir();
    let img = t.path().join("img");
    let mut r = Reaper::new();

    let none = free_display();
    let out = hiber(&[
        "session",
        "checkpoint",
        "--display",
        &format!(":{none}"),
        "-o",
        path(&img),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(":{none}")),
        "{}",
        stderr(&out)
    );
    assert!(!img.exists());

    // An X server of another user (nobody).
    let theirs = free_display();
    let _x1 = XFiles(theirs);
    let xvfb = start_xvfb(&mut r, theirs, &["-screen", "0", "320x240x24"], true);
    let out = hiber(&[
        "session",
        "checkpoint",
        "--display",
        &format!(":{theirs}"),
        "-o",
        path(&img),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("65534") || err.contains("nobody"), "{err}");
    assert!(!img.exists());
    undisturbed(&[xvfb]);

    // Our X server with a client of another user on it.
    let ours = free_display();
    let _x2 = XFiles(ours);
    let xvfb = start_xvfb(&mut r, ours, &["-ac", "-screen", "0", "320x240x24"], false);
    let mine = r.spawn(
        Command::new("xclock")
            .env("DISPLAY", format!(":{ours}"))
            .stderr(Stdio::null()),
    );
    let foreign = r.spawn(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "xeyes"])
            .env("DISPLAY", format!(":{ours}"))
            .stderr(Stdio::null()),
    );
    wait_windows(ours, &["xclock", "xeyes"]);
    for cmd in ["check", "checkpoint"] {
        let mut args = vec!["session", cmd, "--display"];
        let disp = format!(":{ours}");
        args.push(&disp);
        if cmd == "checkpoint" {
            args.extend(["-o", path(&img)]);
        }
        let out = hiber(&args);
        assert_eq!(out.status.code(), Some(1), "session {cmd}");
        let err = stderr(&out);
        assert!(err.contains(&foreign.to_string()), "session {cmd}: {err}");
    }
    assert!(!img.exists());
    undisturbed(&[xvfb, mine, foreign]);
}

#[test]
fn demo_restores_a_matching_session() {
    let t = tempdir();
    let out = hiber(&["demo", "--dir", path(t.path())]);
    assert_ok(&out, "hiber demo");
    let text = stdout(&out);
    assert!(text.contains("matched the saved one"), "{text}");
    for name in ["before-screen-0.png", "after-screen-0.png"] {
        let png = fs::read(t.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is a PNG");
        assert!(text.contains(name), "the demo says where {name} is");
    }
}

/// A session that has a cgroup of its own (as a systemd scope gives it)
/// is frozen through that cgroup; its launcher stays outside.
#[test]
fn a_session_in_its_own_cgroup_is_frozen_through_it() {
    let t = tempdir();
    let img = t.path().join("img");
    let mount = cgroup2_mount().expect("a cgroup v2 hierarchy");
    let d = free_display();
    let _x = XFiles(d);
    // Dropped after the reaper has ended the processes inside it.
    let cg = TestCgroup(mount.join(format!("hiber-test-session-{}", std::process::id())));
    fs::create_dir(&cg.0).unwrap();
    let mut r = Reaper::new();
    // A session that forks nothing by itself: a process forked while the
    // set is compared with the cgroup makes the freeze fall back to ptrace.
    let xvfb = start_xvfb(&mut r, d, &["-screen", "0", "320x240x24"], false);
    let mut members = vec![xvfb];
    for (prog, geometry) in [("xclock", "100x100+0+0"), ("xeyes", "100x100+100+0")] {
        members.push(
            r.spawn(
                Command::new(prog)
                    .args(["-geometry", geometry])
                    .env("DISPLAY", format!(":{d}"))
                    .stderr(Stdio::null()),
            ),
        );
    }
    wait_windows(d, &["xclock", "xeyes"]);
    for p in &members {
        fs::write(cg.0.join("cgroup.procs"), p.to_string()).unwrap();
    }
    let save = |out: &Path, extra: &[&str]| {
        let mut args = vec!["session", "checkpoint", "--display"];
        let disp = format!(":{d}");
        args.push(&disp);
        args.extend(["-o", path(out), "--json"]);
        args.extend_from_slice(extra);
        json(&hiber(&args), "session checkpoint")
    };
    let saved = save(&img, &[]);
    assert_eq!(
        saved["frozen_cgroup"].as_str(),
        Some(path(&cg.0)),
        "{saved}"
    );
    assert_eq!(saved["windows"].as_u64(), Some(2));
    // Thawed, untraced, running.
    assert_eq!(
        fs::read_to_string(cg.0.join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "0"
    );
    undisturbed(&members);

    // Suspended and restored, it is back in its cgroup: the next save
    // freezes it through the cgroup again.
    let stopped = t.path().join("stopped");
    save(&stopped, &["--stop"]);
    r.wait_children(&members);
    for &p in &members {
        wait_gone(p);
    }
    let restored = json(
        &hiber(&["session", "restore", path(&stopped), "--json"]),
        "session restore",
    );
    let (pids, _) = adopt_restored(&mut r, &restored);
    let inside = fs::read_to_string(cg.0.join("cgroup.procs")).unwrap();
    for p in &pids {
        assert!(
            inside.lines().any(|l| l == p.to_string()),
            "pid {p} back in {}",
            cg.0.display()
        );
    }
    let again = save(&t.path().join("again"), &[]);
    assert_eq!(
        again["frozen_cgroup"].as_str(),
        Some(path(&cg.0)),
        "{again}"
    );
}

/// A program that joins the session after it was found is seen by the
/// check made once the set is frozen, so the save starts over with it.
#[test]
fn a_client_that_joins_after_the_session_was_found_is_noticed() {
    use hiber_session::discover::FindOptions;
    use hiber_session::display_session::joined_since;
    let d = free_display();
    let _x = XFiles(d);
    let mut r = Reaper::new();
    // A session that forks nothing by itself (start_session's counting
    // shell forks a sleep every 0.2 s, which a freeze would include).
    start_xvfb(&mut r, d, &["-screen", "0", "320x240x24"], false);
    r.spawn(
        Command::new("xclock")
            .env("DISPLAY", format!(":{d}"))
            .stderr(Stdio::null()),
    );
    wait_windows(d, &["xclock"]);
    let find = FindOptions {
        user: 0,
        exclude: Vec::new(),
        ..Default::default()
    };
    let found = hiber_session::display_session::find(d, &find).unwrap();
    assert!(joined_since(d, &find, &found.processes).unwrap().is_empty());
    let late = r.spawn(
        Command::new("xlogo")
            .env("DISPLAY", format!(":{d}"))
            .stderr(Stdio::null()),
    );
    wait_windows(d, &["xlogo"]);
    assert_eq!(joined_since(d, &find, &found.processes).unwrap(), [late]);
}

/// A path that is not an image is named with what is wrong with it, not
/// taken for a snapshot name.
#[test]
fn a_path_that_is_not_an_image_says_why() {
    let t = tempdir();
    let missing = t.path().join("missing");
    let out = hiber(&["session", "restore", path(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "{} is not an image: it does not exist",
            missing.display()
        )),
        "{}",
        stderr(&out)
    );
    let out = hiber(&["session", "restore", path(t.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("it holds no snapshot document"),
        "{}",
        stderr(&out)
    );
}
