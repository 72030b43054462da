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

/// Every process of the user in the test's namespace, with its state.
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

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[test]
fn a_user_saves_restores_and_deletes_its_own_session_over_the_bus() {
    let mut env = Env::start(&grant_rules(&[&DESK]));
    let desktop = env.desktop(&DESK);

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
    desktop.wait_windows(&env, &["xclock", "xeyes", "xterm"]);
    wait_until("the restored shell to count on", || {
        (desktop.count() > counted + 1).then_some(())
    });
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
