//! hiberd against a real system bus (the distribution's dbus-daemon with
//! the packaged policy and activation file), a real polkitd, and real
//! desktop sessions run by the test users; see common/mod.rs. Issue 14's
//! acceptance points, one test each or two.

mod common;

use common::users::{DESK, OTHER};
use common::{grant_rules, state, wait_until, Env};
use serde_json::Value;
use std::fs;

/// The `<interface name="org.hiber.Hiber1.…">` elements of an
/// introspection document, comments and blank space between tags gone.
fn hiber_interfaces(xml: &str) -> Vec<String> {
    let mut text = String::new();
    let mut rest = xml;
    while let Some(at) = rest.find("<!--") {
        text.push_str(&rest[..at]);
        let end = rest[at..].find("-->").expect("a comment ends") + at + 3;
        rest = &rest[end..];
    }
    text.push_str(rest);
    let compact: String = text
        .split('<')
        .map(|part| {
            let (tag, between) = part.split_once('>').unwrap_or((part, ""));
            let tag = tag.split_whitespace().collect::<Vec<_>>().join(" ");
            let tag = tag.replace(" />", "/>");
            format!("<{tag}>{}", between.trim())
        })
        .skip(1)
        .collect();
    compact
        .split("<interface ")
        .skip(1)
        .filter(|i| i.starts_with("name=\"org.hiber.Hiber1."))
        .map(|i| {
            let end = i.find("</interface>").expect("an interface ends");
            format!("<interface {}", &i[..end])
        })
        .collect()
}

#[test]
fn hiberd_is_started_by_the_bus_and_introspects_as_checked_in() {
    let env = Env::start(&grant_rules(&[&DESK]));
    // Nobody started hiberd: the bus does, for the first call, which it
    // answers.
    assert_eq!(env.hiberd(), None, "hiberd runs before any call");
    assert_eq!(env.ok(&DESK, &["list"]), Value::Array(Vec::new()));
    let pid = env.hiberd().expect("hiberd runs after the first call");
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("hiberd's status")
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .map(|l| l.split_whitespace().nth(1) == Some("0")),
        Some(true),
        "hiberd runs as root (User=root in the activation file)"
    );

    let live = env.ok(&DESK, &["introspect", "/org/hiber/Hiber1"]);
    let live = live.as_str().expect("XML");
    let checked_in =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/org.hiber.Hiber1.xml"))
            .expect("reading dbus/org.hiber.Hiber1.xml");
    let ours = hiber_interfaces(&checked_in);
    assert_eq!(ours.len(), 3, "the checked-in XML has three interfaces");
    let manager = hiber_interfaces(live);
    assert_eq!(manager, ours[..1], "the Manager as served");
}

/// Every live process of the user in the test's namespace, with its state.
fn user_processes(env: &Env, uid: u32) -> Vec<(i32, char)> {
    env.processes()
        .into_iter()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(|u| u == uid.to_string()))
                    == Some(true)
            })
        })
        .filter_map(|pid| Some((pid, state(pid)?)))
        .filter(|&(_, s)| s != 'Z' && s != 'X')
        .collect()
}

/// None of the user's processes is stopped or traced: nothing is frozen.
#[track_caller]
fn nothing_frozen(env: &Env, uid: u32) {
    let stopped: Vec<_> = user_processes(env, uid)
        .into_iter()
        .filter(|(_, s)| matches!(s, 'T' | 't'))
        .collect();
    assert!(
        stopped.is_empty(),
        "uid {uid}'s processes stopped: {stopped:?}"
    );
}

/// Zombies of `uid` that wait for pid 1 to reap them (in any namespace:
/// a zombie has none left to tell).
fn orphan_zombies(uid: u32) -> Vec<i32> {
    fs::read_dir("/proc")
        .expect("listing /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(rest) = stat.rfind(')').map(|at| &stat[at + 2..]) else {
                return false;
            };
            let mut f = rest.split_whitespace();
            let (state, ppid) = (f.next(), f.next());
            state == Some("Z")
                && ppid == Some("1")
                && fs::metadata(format!("/proc/{pid}"))
                    .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid)
        })
        .collect()
}

/// `pid`'s parent, its parent's parent, and so on.
fn ancestors(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut p = pid;
    while let Some(parent) = fs::read_to_string(format!("/proc/{p}/stat"))
        .ok()
        .and_then(|s| {
            s[s.rfind(')')? + 2..]
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
    {
        if parent <= 1 || out.contains(&parent) {
            break;
        }
        out.push(parent);
        p = parent;
    }
    out
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[test]
fn a_user_saves_restores_and_deletes_its_own_session_over_the_bus() {
    let mut env = Env::start(&grant_rules(&[&DESK]));
    let desktop = env.desktop(&DESK);

    // The check first, as the app asks it: savable, with only what a save
    // would change, and hiberd still on the bus after it (a name with a
    // NUL in a finding once made the bus drop hiberd's connection).
    let checked = env.ok(&DESK, &["check", &desktop.name()]);
    assert_eq!(checked["savable"], true, "{checked}");
    let findings = checked["findings"].as_array().expect("findings");
    assert!(
        findings.iter().all(|f| f["policy"] != "restore"),
        "only what changes: {checked}"
    );
    let again = env.ok(&DESK, &["check", &desktop.name()]);
    assert_eq!(
        again["savable"], true,
        "hiberd answers a second check: {again}"
    );

    // Save with stop: the job's progress rises to 1 and it completes.
    let saved = env.ok(
        &DESK,
        &["save", &desktop.name(), "stop", "name=work", "introspect"],
    );
    assert_eq!(saved["timeout"], Value::Null, "{saved}");
    assert_eq!(
        saved["completed"],
        serde_json::json!([true, "", ""]),
        "{saved}"
    );
    let progress: Vec<f64> = saved["progress"]
        .as_array()
        .expect("progress")
        .iter()
        .map(|p| p.as_f64().expect("a double"))
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]) && progress.last() == Some(&1.0),
        "Progress rises to 1: {progress:?}"
    );
    assert!(
        progress.iter().any(|&p| p > 0.0 && p < 1.0),
        "Progress was seen on its way: {progress:?}"
    );
    let objects = saved["objects"].as_array().expect("objects");
    let snapshot = objects
        .last()
        .and_then(|o| o[0].as_str())
        .expect("the job names its snapshot");
    let listed = env.ok(&DESK, &["list"]);
    assert_eq!(listed, serde_json::json!([snapshot]));

    let props = env.ok(&DESK, &["props", snapshot]);
    assert_eq!(str_of(&props, "Name"), "work");
    assert_eq!(props["OwnerUid"], DESK.uid);
    assert_eq!(str_of(&props, "Display"), desktop.name());
    assert_eq!(props["Restorable"], true, "{props}");
    let windows: Vec<&str> = props["Windows"]
        .as_array()
        .expect("Windows")
        .iter()
        .filter_map(|w| w[1].as_str())
        .collect();
    for class in ["XClock", "XEyes", "XTerm"] {
        assert!(windows.contains(&class), "{class} in Windows {props}");
    }
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_micros() as u64;
    let created = props["Created"].as_u64().expect("Created");
    assert!(
        created <= now_us && created > now_us - 600_000_000,
        "Created {created}"
    );
    let size = props["Size"].as_u64().expect("Size");
    assert!(size > 0 && size <= props["TotalSize"].as_u64().expect("TotalSize"));

    let png = desktop.dir.join("screen0.png");
    let shot = env.ok(
        &DESK,
        &["screenshot", snapshot, "0", png.to_str().expect("utf-8")],
    );
    assert_eq!(shot["writable"], false, "the screenshot's fd is read-only");
    let bytes = fs::read(&png).expect("the screenshot's copy");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG: {shot}");

    // Stopped: the session's windows and shell are gone.
    wait_until("the saved session to end", || {
        user_processes(&env, DESK.uid).is_empty().then_some(())
    });
    env.reap_children();
    let counted = desktop.count();

    // Restore: the windows come back and the shell goes on counting.
    let restored = env.ok(&DESK, &["restore", snapshot]);
    assert_eq!(
        restored["completed"],
        serde_json::json!([true, "", ""]),
        "{restored}"
    );
    let restore_progress = restored["progress"].as_array().expect("progress");
    assert_eq!(
        restore_progress.last().and_then(Value::as_f64),
        Some(1.0),
        "the restore's Progress ends at 1: {restored}"
    );
    desktop.wait_windows(&env, &["xclock", "xeyes", "xterm"]);
    wait_until("the restored shell to count on", || {
        (desktop.count() > counted + 1).then_some(())
    });
    // The restored session is not hiberd's: none of its processes descends
    // from hiberd, and stopping hiberd leaves it running.
    let hiberd = env.hiberd().expect("hiberd runs");
    // Not the counting loop's short `sleep`s, nor a copy of the loop
    // forked for the next one and not yet a `sleep` (same command line as
    // its parent): they come and go.
    let cmdline = |pid: i32| fs::read(format!("/proc/{pid}/cmdline")).ok();
    let transient = |pid: i32| {
        let sleep =
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep");
        let ppid = common::status_ppid(pid);
        sleep || ppid.is_some_and(|pp| cmdline(pid).is_some() && cmdline(pid) == cmdline(pp))
    };
    let session: Vec<(i32, char)> = user_processes(&env, DESK.uid)
        .into_iter()
        .filter(|&(pid, _)| !transient(pid))
        .collect();
    assert!(session.len() >= 5, "the restored session: {session:?}");
    for &(pid, _) in &session {
        assert!(
            !ancestors(pid).contains(&hiberd),
            "restored pid {pid} descends from hiberd {hiberd}"
        );
    }
    // SAFETY: kill by pid of the hiberd in this test's namespace.
    assert_eq!(unsafe { libc::kill(hiberd, libc::SIGTERM) }, 0);
    wait_until("hiberd to stop on SIGTERM", || {
        state(hiberd).is_none_or(|s| s == 'Z').then_some(())
    });
    desktop.wait_counting();
    let after: Vec<i32> = user_processes(&env, DESK.uid).iter().map(|p| p.0).collect();
    for (pid, _) in &session {
        assert!(after.contains(pid), "restored pid {pid} gone with hiberd");
    }

    let snapshot_xml = env.ok(&DESK, &["introspect", snapshot]);

    // Delete: unlisted, its store space freed.
    let before = env.store_bytes(DESK.uid);
    assert_eq!(env.ok(&DESK, &["delete", snapshot]), Value::Null);
    assert_eq!(env.ok(&DESK, &["list"]), serde_json::json!([]));
    let after = env.store_bytes(DESK.uid);
    assert!(
        before - after >= size * 9 / 10,
        "deleting freed {} bytes of the {size} only it used",
        before - after
    );
    let gone = env.client(&DESK, &["props", snapshot]);
    assert!(
        gone.get("error").is_some(),
        "a deleted snapshot's object: {gone}"
    );

    // The objects as served are the checked-in XML's.
    let checked_in = hiber_interfaces(
        &fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/org.hiber.Hiber1.xml"))
            .expect("reading dbus/org.hiber.Hiber1.xml"),
    );
    let job_xml = str_of(&saved, "job_xml");
    assert_eq!(
        hiber_interfaces(snapshot_xml.as_str().expect("XML")),
        checked_in[1..2],
        "the Snapshot as served"
    );
    assert_eq!(
        hiber_interfaces(job_xml),
        checked_in[2..3],
        "the Job as served"
    );
}

/// The snapshot a completed save's job names in its `Objects`.
#[track_caller]
fn snapshot_of(saved: &Value) -> String {
    saved["objects"]
        .as_array()
        .and_then(|o| o.last())
        .and_then(|o| o[0].as_str())
        .unwrap_or_else(|| panic!("the job names its snapshot: {saved}"))
        .to_string()
}

const NOT_AUTHORIZED: &str = "org.hiber.Hiber1.Error.NotAuthorized";

/// The client's answer is a NotAuthorized error; its message.
#[track_caller]
fn refused(v: Value, what: &str) -> String {
    assert_eq!(v["error"], NOT_AUTHORIZED, "{what}: {v}");
    v["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn other_users_and_owners_without_the_grant_are_refused() {
    let mut env = Env::start(&grant_rules(&[&DESK, &OTHER]));
    let desktop = env.desktop(&DESK);
    let saved = env.ok(&DESK, &["save", &desktop.name(), "name=mine"]);
    assert_eq!(saved["completed"][0], true, "{saved}");
    let snapshot = snapshot_of(&saved);
    let png = env.user_dir(&OTHER, "other").join("stolen.png");
    let png = png.to_str().expect("utf-8");

    // The other user, granted its own actions by polkit, sees nothing of
    // it and may do nothing with it, nor with the first user's display.
    let other = env.desktop(&OTHER);
    let own = env.ok(&OTHER, &["save", &other.name(), "name=theirs"]);
    assert_eq!(
        own["completed"][0], true,
        "the other user saves its own: {own}"
    );
    let theirs = snapshot_of(&own);
    assert_eq!(env.ok(&OTHER, &["list"]), serde_json::json!([theirs]));
    let objects = env.ok(&OTHER, &["objects"]);
    assert_eq!(
        objects[&theirs],
        serde_json::json!(["org.hiber.Hiber1.Snapshot"]),
        "{objects}"
    );
    assert_eq!(objects.get(&snapshot), None, "{objects}");
    let objects = env.ok(&DESK, &["objects"]);
    assert!(
        objects.get(&snapshot).is_some() && objects.get(&theirs).is_none(),
        "the owner's objects: {objects}"
    );
    // GetAll leaves out what may not be read (zbus's GetAll skips a
    // property whose getter fails): nothing; each Get says why.
    assert_eq!(
        env.client(&OTHER, &["props", &snapshot]),
        serde_json::json!({"ok": {}}),
        "GetAll by another user"
    );
    for property in ["Name", "Windows", "Size", "Pending"] {
        let v = env.client(&OTHER, &["get", &snapshot, property]);
        assert_eq!(
            v["error"], "org.freedesktop.DBus.Error.AccessDenied",
            "Get {property}: {v}"
        );
    }
    refused(env.client(&OTHER, &["restore", &snapshot]), "Restore");
    refused(env.client(&OTHER, &["rename", &snapshot, "x"]), "Rename");
    refused(env.client(&OTHER, &["delete", &snapshot]), "Delete");
    refused(
        env.client(&OTHER, &["clear-pending", &snapshot]),
        "ClearPending",
    );
    refused(
        env.client(&OTHER, &["screenshot", &snapshot, "0", png]),
        "OpenScreenshot",
    );
    assert!(
        !std::path::Path::new(png).exists(),
        "no screenshot was read"
    );
    let display = refused(
        env.client(&OTHER, &["save", &desktop.name()]),
        "SaveSession",
    );
    assert!(display.contains("only its own"), "{display}");
    // Nothing of the first user's was frozen, and its snapshot is as it was.
    nothing_frozen(&env, DESK.uid);
    desktop.wait_counting();
    let props = env.ok(&DESK, &["props", &snapshot]);
    assert_eq!(props["Name"], "mine");
    assert_eq!(props["Pending"], false, "a manual save is not pending");
    assert_eq!(
        env.ok(&DESK, &["list"]),
        serde_json::json!([snapshot]),
        "the owner's list"
    );

    // Without polkit's grant, the owner is refused too.
    env.set_rules(&grant_rules(&[&OTHER]));
    wait_until("polkitd to reload the rules without the grant", || {
        (!env.pkcheck("org.hiber.Hiber1.save-own-session", desktop.launcher)).then_some(())
    });
    let why = refused(
        env.client(&DESK, &["save", &desktop.name()]),
        "the owner's save",
    );
    assert!(why.contains("polkit"), "{why}");
    refused(
        env.client(&DESK, &["restore", &snapshot]),
        "the owner's Restore",
    );
    refused(
        env.client(&DESK, &["rename", &snapshot, "x"]),
        "the owner's Rename",
    );
    refused(
        env.client(&DESK, &["delete", &snapshot]),
        "the owner's Delete",
    );
    refused(
        env.client(&DESK, &["clear-pending", &snapshot]),
        "the owner's ClearPending",
    );
    nothing_frozen(&env, DESK.uid);
    desktop.wait_counting();
    assert_eq!(env.ok(&DESK, &["get", &snapshot, "Name"]), "mine");
    assert_eq!(env.ok(&DESK, &["list"]), serde_json::json!([snapshot]));
}

/// A process of the session holding 512 MiB of random bytes, so a save
/// takes long enough to be cancelled or killed half way; it writes its pid
/// to DIR/hog once they are made.
const HOG: &str = r#"/usr/bin/python3 -c '
import os, signal, sys
data = os.urandom(512 << 20)
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
signal.pause()' "$COUNT.hog" &"#;

#[test]
fn a_cancelled_or_crashed_save_leaves_the_session_running_and_lists_nothing_half_made() {
    let mut env = Env::start(&grant_rules(&[&DESK]));
    let desktop = env.desktop_with(&DESK, HOG);
    let hog: i32 = wait_until("the session's hog to fill its memory", || {
        fs::read_to_string(desktop.dir.join("count.hog"))
            .ok()?
            .parse()
            .ok()
    });

    // Cancel while it pre-copies (an ordinary save, 512 MiB to read while
    // the session runs): pre-copy's progress (above 0.1, below 0.4) is
    // reported as the chunks are read, and the Cancel is heard there,
    // before anything is frozen.
    let cancelled = env.ok(&DESK, &["save", &desktop.name(), "cancel-at=0.11"]);
    assert_eq!(
        cancelled["completed"][1], "org.hiber.Hiber1.Error.Cancelled",
        "{cancelled}"
    );
    let heard_at = cancelled["cancel"]["ok"].as_f64();
    assert!(
        heard_at.is_some_and(|p| p > 0.1 && p < 0.4),
        "Cancel sent during the pre-copy: {cancelled}"
    );
    let stages = cancelled["stages"].as_array().unwrap();
    assert!(
        stages.iter().any(|s| s == "precopying") && !stages.iter().any(|s| s == "freezing"),
        "ended in the pre-copy, never frozen: {cancelled}"
    );
    assert_eq!(env.ok(&DESK, &["list"]), serde_json::json!([]));
    assert!(common::state(hog).is_some(), "the hog runs on");
    nothing_frozen(&env, DESK.uid);

    // Cancel once the session is frozen (Progress 0.4: "freezing"); the
    // save would end the session once committed (stop): it must not.
    let cancelled = env.ok(&DESK, &["save", &desktop.name(), "stop", "cancel-at=0.4"]);
    assert!(
        cancelled["cancel"]["ok"].is_number(),
        "Cancel answered: {cancelled}"
    );
    assert_eq!(cancelled["completed"][0], false, "{cancelled}");
    assert_eq!(
        cancelled["completed"][1], "org.hiber.Hiber1.Error.Cancelled",
        "{cancelled}"
    );
    assert_eq!(env.ok(&DESK, &["list"]), serde_json::json!([]));
    assert!(common::state(hog).is_some(), "the hog runs on");
    nothing_frozen(&env, DESK.uid);
    desktop.wait_counting();
    desktop.wait_windows(&env, &["xclock", "xeyes", "xterm"]);

    // A save whose caller goes away once it started: it completes anyway.
    let home = env.user_dir(&DESK, "home-1500");
    let mut caller = env
        .user(
            &DESK,
            &home,
            &[
                "/usr/bin/python3",
                "-c",
                common::CLIENT,
                "save",
                &desktop.name(),
                "stream",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the client");
    let first = std::io::BufRead::lines(std::io::BufReader::new(
        caller.stdout.take().expect("piped"),
    ))
    .next();
    assert!(
        first.is_some_and(|l| l.is_ok_and(|l| l.contains("progress"))),
        "the save started"
    );
    caller.kill().expect("killing the client");
    caller.wait().expect("reaping the client");
    let earlier = wait_until("the save of a gone caller to be listed", || {
        let listed = env.ok(&DESK, &["list"]);
        let listed = listed.as_array()?;
        (listed.len() == 1).then(|| listed[0].as_str().map(str::to_string))?
    });
    // Then one whose hiberd is killed half way.
    let hiberd = env.hiberd().expect("hiberd runs");
    let mut client = env
        .user(
            &DESK,
            &home,
            &[
                "/usr/bin/python3",
                "-c",
                common::CLIENT,
                "save",
                &desktop.name(),
                "stop",
                "stream",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the client");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        client.stdout.take().expect("piped"),
    ));
    let mut seen = Vec::new();
    let half_way = lines.find_map(|l| {
        let v: Value = serde_json::from_str(&l.ok()?).ok()?;
        seen.push(v.clone());
        v["progress"].as_f64().filter(|&p| (0.4..0.95).contains(&p))
    });
    assert!(half_way.is_some(), "the save froze the session: {seen:?}");
    // SAFETY: kill by pid of the hiberd in this test's namespace.
    assert_eq!(unsafe { libc::kill(hiberd, libc::SIGKILL) }, 0);
    let last: Value = lines
        .map_while(|l| l.ok())
        .filter_map(|l| serde_json::from_str(&l).ok())
        .last()
        .expect("the client's answer");
    let _ = client.wait();
    assert_eq!(last["ok"]["vanished"], true, "{last}");

    // The session runs on, unfrozen.
    wait_until("the killed save's session to run again", || {
        user_processes(&env, DESK.uid)
            .iter()
            .all(|(_, s)| !matches!(s, 'T' | 't'))
            .then_some(())
    });
    assert!(common::state(hog).is_some(), "the hog runs on");
    desktop.wait_counting();
    desktop.wait_windows(&env, &["xclock", "xeyes", "xterm"]);

    // hiberd again (by activation): the earlier snapshot only, nothing
    // half-made in the store.
    assert_eq!(env.ok(&DESK, &["list"]), serde_json::json!([earlier]));
    assert_ne!(env.hiberd(), Some(hiberd));
    assert_eq!(env.ok(&DESK, &["get", &earlier, "Restorable"]), true);
    let left: Vec<String> = fs::read_dir(env.inside("/var/lib/hiber/1500"))
        .expect("the user's store")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "half-made images left: {left:?}");
}

#[test]
fn a_restore_cancelled_before_its_processes_run_leaves_nothing_running() {
    let mut env = Env::start(&grant_rules(&[&DESK]));
    let desktop = env.desktop_with(&DESK, HOG);
    wait_until("the session's hog to fill its memory", || {
        fs::read_to_string(desktop.dir.join("count.hog")).ok()
    });
    let saved = env.ok(&DESK, &["save", &desktop.name(), "stop"]);
    assert_eq!(saved["completed"][0], true, "{saved}");
    let snapshot = snapshot_of(&saved);
    wait_until("the saved session to end", || {
        user_processes(&env, DESK.uid).is_empty().then_some(())
    });
    env.reap_children();

    // Cancelled at its first progress, while 512 MiB are still going in.
    let cancelled = env.ok(&DESK, &["restore", &snapshot, "cancel-at=0"]);
    assert!(
        cancelled["cancel"]["ok"].is_number(),
        "Cancel answered: {cancelled}"
    );
    assert_eq!(
        cancelled["completed"][1], "org.hiber.Hiber1.Error.Cancelled",
        "{cancelled}"
    );
    assert_eq!(cancelled["cancelable"][0], true, "{cancelled}");
    wait_until("the cancelled restore's processes to be gone", || {
        user_processes(&env, DESK.uid).is_empty().then_some(())
    });
    assert_eq!(
        hiber_session::discover::x_server_of(desktop.display).expect("X servers"),
        None,
        "no X server on the display"
    );
    assert_eq!(env.ok(&DESK, &["list"]), serde_json::json!([snapshot]));
    assert_eq!(env.ok(&DESK, &["get", &snapshot, "Restorable"]), true);

    // The same snapshot restores in full afterwards, once the ended
    // processes' pids are free again (killed orphans are zombies until pid 1
    // reaps them, a little later here).
    wait_until("the cancelled restore's processes to be reaped", || {
        orphan_zombies(DESK.uid).is_empty().then_some(())
    });
    let counted = desktop.count();
    let restored = env.ok(&DESK, &["restore", &snapshot]);
    assert_eq!(restored["completed"][0], true, "{restored}");
    assert_eq!(
        restored["cancelable"].as_array().and_then(|c| c.last()),
        Some(&Value::Bool(false)),
        "not cancelable once every page is in: {restored}"
    );
    desktop.wait_windows(&env, &["xclock", "xeyes", "xterm"]);
    wait_until("the restored shell to count on", || {
        (desktop.count() > counted + 1).then_some(())
    });
}

/// A snapshot whose display a new login's X server took: Restore without
/// options is refused naming that server; with `display: ":N"` (a number
/// this test binary hands out, so that no parallel test takes it; "free"
/// is the CLI test's) the session comes back there, its windows there,
/// its shell counting, and Completed's message says where. That restore
/// asks `memory: "lazy"`: the X server's names for its display are
/// rewritten while its pages still come in; a `memory` hiberd does not
/// know is refused, naming it.
#[test]
fn a_snapshot_whose_display_was_taken_comes_back_on_a_free_one_when_asked() {
    let mut env = Env::start(&grant_rules(&[&DESK]));
    let desktop = env.desktop(&DESK);
    let saved = env.ok(&DESK, &["save", &desktop.name(), "stop"]);
    let snapshot = saved["objects"]
        .as_array()
        .and_then(|o| o.last())
        .and_then(|o| o[0].as_str())
        .expect("the job names its snapshot")
        .to_string();
    wait_until("the saved session to end", || {
        user_processes(&env, DESK.uid).is_empty().then_some(())
    });
    env.reap_children();
    let counted = desktop.count();

    // The new login's X server on the same display.
    let dir = desktop.dir.clone();
    let mut x = env.user(
        &DESK,
        &dir,
        &["Xvfb", &desktop.name(), "-nolisten", "tcp", "-noreset"],
    );
    x.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut new_server = x.spawn().expect("starting the new login's Xvfb");
    wait_until("the new X server to answer", || {
        env.root(&["xwininfo", "-root", "-display", &desktop.name()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?
            .success()
            .then_some(())
    });

    let refused = env.ok(&DESK, &["restore", &snapshot]);
    let completed = refused["completed"].as_array().expect("completed");
    assert_eq!(completed[0], false, "{refused}");
    let message = completed[2].as_str().expect("a message");
    assert!(
        message.contains(&format!("display {} is in use", desktop.name()))
            && message.contains("free display"),
        "{message}"
    );

    let bad = env.client(&DESK, &["restore", &snapshot, "memory=fast"]);
    assert_eq!(bad["error"], "org.hiber.Hiber1.Error.Failed", "{bad}");
    assert!(
        bad["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"fast\""),
        "{bad}"
    );

    let target = common::free_display();
    let moved = env.ok(
        &DESK,
        &[
            "restore",
            &snapshot,
            &format!("display=:{target}"),
            "memory=lazy",
        ],
    );
    let completed = moved["completed"].as_array().expect("completed");
    assert_eq!(completed[0], true, "{moved}");
    let message = completed[2].as_str().expect("a message");
    let now: u32 = message
        .strip_prefix("restored on display :")
        .and_then(|m| m.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the new display in {message:?}"));
    assert_eq!(now, target, "{message}");
    let on_new = common::Desktop {
        display: now,
        dir: desktop.dir.clone(),
        launcher: desktop.launcher,
    };
    on_new.wait_windows(&env, &["xclock", "xeyes", "xterm"]);
    wait_until("the restored shell to count on", || {
        (desktop.count() > counted + 1).then_some(())
    });
    assert!(
        desktop
            .windows(&env)
            .iter()
            .all(|w| !w.contains("\"xterm\"")),
        "the new login's server shows none of the session"
    );
    let _ = new_server.kill();
    let _ = new_server.wait();
    // Env ends the processes; the moved display's files are ours.
    drop(env);
    for f in [
        format!("/tmp/.X11-unix/X{now}"),
        format!("/tmp/.X{now}-lock"),
    ] {
        let _ = fs::remove_file(f);
    }
}
