//! Issue 16's acceptance 2, suspend-to-image of one session, with a real
//! hiberd (root, on a private system bus with its packaged policy,
//! polkitd beside it) and the test user's desktops: a session (Xvfb, a
//! session bus, an xterm whose shell counts) is suspended — gone, its
//! snapshot pending —, then a new "login" of the user runs the command of
//! the packaged autostart entry, and the user's choice is made through the
//! accessibility tree as a user would: Restore brings the session back
//! (its window, its shell counting on, no longer pending), on its own
//! display when that is free, on another when the new login's X server
//! holds it (the offer saying which); Later leaves it pending, Discard
//! (confirmed) deletes it; with nothing pending the command exits at once.

mod common;

use common::{Desktop, Hiberd, Started, DEADLINE};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const WINDOW: &str = "hiber-suspend-test-xterm";

/// One test at a time: each frees a display number and counts on getting
/// it back (its own restore, or its new login's X server), which another
/// test's X server, picking the lowest free number, could take meanwhile.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// An xterm whose shell counts into `count` five times a second; its
/// window titled [`WINDOW`]. Returns the counter's file once it counts.
fn counting_xterm(desktop: &mut Desktop) -> PathBuf {
    let count = desktop.user.dir().join("count");
    let script = format!(
        "(n=0; while :; do n=$((n+1)); echo $n > {}; sleep 0.2; done) & exec bash --norc --noprofile -i",
        count.display()
    );
    desktop.spawn(
        "xterm",
        &[
            "xterm",
            "-T",
            WINDOW,
            "-e",
            "bash",
            "--norc",
            "--noprofile",
            "-c",
            &script,
        ],
        None,
    );
    desktop.window_by_title(WINDOW);
    common::wait_until("the shell to count to 3", DEADLINE, || {
        (read_count(&count)? >= 3).then_some(())
    });
    count
}

fn read_count(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn window_on(display: u32, title: &str) -> bool {
    Command::new("xdotool")
        .args(["search", "--name", title])
        .env("DISPLAY", format!(":{display}"))
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// The snapshot objects hiberd lists to root.
fn snapshots(hiberd: &Hiberd) -> Vec<String> {
    common::listed(&hiberd.bus)
        .split('\'')
        .filter(|p| p.starts_with("/org/hiber/Hiber1/snapshots/"))
        .map(str::to_string)
        .collect()
}

/// The one snapshot hiberd lists, once it does.
#[track_caller]
fn the_snapshot(hiberd: &Hiberd) -> String {
    common::wait_until("hiberd to list the snapshot", DEADLINE, || {
        let s = snapshots(hiberd);
        (s.len() == 1).then(|| s[0].clone())
    })
}

/// The snapshot's `Pending`, read on the bus as root.
fn pending(hiberd: &Hiberd, snapshot: &str) -> bool {
    let out = Command::new("gdbus")
        .args(["call", "--system", "--dest", "org.hiber.Hiber1"])
        .args(["--object-path", snapshot])
        .args(["--method", "org.freedesktop.DBus.Properties.Get"])
        .args(["org.hiber.Hiber1.Snapshot", "Pending"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &hiberd.bus.address)
        .output()
        .expect("running gdbus");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reading Pending of {snapshot}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match text.trim() {
        "(<true>,)" => true,
        "(<false>,)" => false,
        other => panic!("Pending of {snapshot} reads {other:?}"),
    }
}

fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The suspended session's processes are gone, every one: the X server,
/// the xterm, the shell and its counter, and what they talked to (the
/// session bus, when a program of the session used it: one that no saved
/// program used is not part of the session, and a login manager ends it).
#[track_caller]
fn wait_gone(desktop: &mut Desktop) {
    wait_gone_unreaped(desktop);
    desktop.reap();
}

/// [`wait_gone`], leaving the processes this test started zombies: their
/// pids stay taken.
#[track_caller]
fn wait_gone_unreaped(desktop: &Desktop) {
    let left = || -> Vec<String> {
        desktop
            .running()
            .into_iter()
            .map(|p| format!("{p} ({})", comm(p)))
            .filter(|p| !p.ends_with("(dbus-daemon)"))
            .collect()
    };
    let until = Instant::now() + DEADLINE;
    while !left().is_empty() {
        assert!(
            Instant::now() < until,
            "timed out after {DEADLINE:?} waiting for the suspended session's processes to end: {:?} run on",
            left()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The command of the packaged autostart entry, run by the user in the
/// new login's desktop (the app's copy in the user's directory for the
/// `hiber-gtk` it names).
fn run_autostart(desktop: &Desktop, hiberd: &Hiberd, log: &Path) -> Started {
    let entry = common::packaging().join("org.hiber.Hiber-offer.desktop");
    let text = fs::read_to_string(&entry).unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("Exec="))
        .expect("the autostart entry's Exec line");
    let mut words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(words[0], "hiber-gtk", "the entry runs the app: {exec}");
    words[0] = desktop
        .app_binary()
        .to_str()
        .expect("a UTF-8 path")
        .to_string();
    let args: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut cmd = desktop.command(&args, Some(log));
    cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &hiberd.bus.address)
        .env("HIBER_GTK_LOG", "debug");
    Started::spawn("the autostart entry's hiber-gtk", &mut cmd)
}

#[track_caller]
fn exits_zero(app: &mut Started, log: &Path) {
    let status = app.wait_exit(DEADLINE);
    assert!(
        status.success(),
        "the offer exited with {status}:\n{}",
        common::log_text(log)
    );
}

/// The last lines of a log, for a failure's message.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The driver, which must succeed; else the offer's and hiberd's logs.
#[track_caller]
fn drive(login: &Desktop, hiberd: &Hiberd, log: &Path, args: &[&str]) -> String {
    let out = login.atspi(args);
    assert!(
        out.status.success(),
        "atspi.py {args:?}: {}{}\nthe offer's log ends:\n{}\nhiberd's log ends:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&common::log_text(log), 20),
        tail(&hiberd.log(), 30)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Restore pressed in the offer; what it said, and how long it took from
/// the press to the words.
fn restore_from_offer(login: &Desktop, hiberd: &Hiberd, log: &Path) -> (String, f64) {
    drive(
        login,
        hiberd,
        log,
        &["wait", "label", "Restore Your Session?"],
    );
    let t = Instant::now();
    let said = drive(
        login,
        hiberd,
        log,
        &[
            "press",
            "push button",
            "Restore",
            "--",
            "wait-any",
            "label",
            "Your session is back on display ",
            "Your Session Could Not Be Restored",
        ],
    );
    let secs = t.elapsed().as_secs_f64();
    let labels = drive(login, hiberd, log, &["names", "label"]);
    assert!(
        said.lines().last() == Some("Your session is back on display "),
        "the restore failed; the offer says: {labels}\nhiberd's log ends:\n{}",
        tail(&hiberd.log(), 30)
    );
    let line = labels
        .lines()
        .find(|l| l.starts_with("Your session is back"))
        .unwrap_or_else(|| panic!("the offer's words: {labels}"))
        .to_string();
    (line, secs)
}

/// Back: the window on `display`, the shell counting on from where it
/// was (past `before`, read just before the suspend: a shell that started
/// over would count from 1), the snapshot no longer pending.
#[track_caller]
fn came_back(hiberd: &Hiberd, snapshot: &str, display: u32, count: &Path, before: u64) {
    common::wait_until(
        &format!("{WINDOW} back on display :{display}"),
        DEADLINE,
        || window_on(display, WINDOW).then_some(()),
    );
    let mut seen = Vec::new();
    common::wait_until("the restored shell to count on", DEADLINE, || {
        let n = read_count(count)?;
        seen.push(n);
        (n > before + 2).then_some(())
    });
    assert!(
        seen.iter().all(|&n| n >= before),
        "the shell counted on from {before}, it did not start over: {seen:?}"
    );
    common::wait_until("the snapshot to be no longer pending", DEADLINE, || {
        (!pending(hiberd, snapshot)).then_some(())
    });
}

/// The socket and lock files of display `display` left by its X server,
/// killed by a suspend and never restored (the session was discarded):
/// removed, unless an X server started since holds the lock.
fn remove_stale_display_files(display: u32) {
    let lock = format!("/tmp/.X{display}-lock");
    let holder: Option<i32> = fs::read_to_string(&lock)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    if holder.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
        return;
    }
    let _ = fs::remove_file(format!("/tmp/.X11-unix/X{display}"));
    let _ = fs::remove_file(lock);
}

/// `hiber session suspend` of `desktop`'s display into hiberd's store, as
/// root; what it printed (`--json`).
#[track_caller]
fn suspend(hiberd: &Hiberd, desktop: &Desktop) -> serde_json::Value {
    let out = Command::new(common::hiber_bin())
        .args(["session", "suspend", "--json", "--display"])
        .arg(format!(":{}", desktop.display))
        .arg("--state-dir")
        .arg(hiberd.store())
        .output()
        .expect("running hiber session suspend");
    assert!(
        out.status.success(),
        "hiber session suspend: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("its JSON")
}

#[test]
fn a_suspended_session_comes_back_at_the_next_login_on_its_free_display() {
    let _serial = one_at_a_time();
    let hiberd = Hiberd::start();
    // hiberd runs before the suspend: the snapshot the CLI writes into its
    // store must show on the bus all the same.
    assert!(snapshots(&hiberd).is_empty(), "an empty store");
    let mut first = Desktop::start();
    let count = counting_xterm(&mut first);
    // The new login's X server, started while the first still holds its
    // display: it gets another number, and the saved one is free later.
    let login = Desktop::start();
    assert_ne!(login.display, first.display);

    // Not as the user: the store is root's; the error says what to do
    // instead, and the session runs on.
    let hiber = first.user.dir().join("hiber");
    fs::copy(common::hiber_bin(), &hiber).expect("copying hiber for the user");
    let display = format!(":{}", first.display);
    let out = first
        .command(
            &[
                hiber.to_str().expect("a UTF-8 path"),
                "session",
                "suspend",
                "--display",
                &display,
            ],
            None,
        )
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("running hiber session suspend as the user");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("which is root's alone")
            && said.contains("Save and Log Out")
            && said.contains("SaveSession"),
        "a user is told to ask hiberd: {said}"
    );
    assert!(first.running().len() > 2, "the session runs on");
    assert!(window_on(first.display, WINDOW));

    // Another saver of this display (hiberd's job, another hook) holds
    // its lock in the store: the suspend is refused, naming it, and the
    // session runs on.
    let locks = hiberd.store().join("locks");
    fs::create_dir_all(&locks).expect("the store's lock directory");
    let lock_path = locks.join(format!("display-{}", first.display));
    let mut held = fs::File::create(&lock_path).expect("the display's lock file");
    held.try_lock()
        .expect("locking the display as another saver");
    std::io::Write::write_all(&mut held, b"4242").expect("naming the holder");
    let out = Command::new(common::hiber_bin())
        .args(["session", "suspend", "--display", &display, "--state-dir"])
        .arg(hiberd.store())
        .output()
        .expect("running hiber session suspend");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains(&format!(
                "display {display} is being saved by another hiber (pid 4242)"
            )),
        "a second saver of one display is refused: {said}"
    );
    assert!(first.running().len() > 2, "the session runs on");
    assert!(
        snapshots(&hiberd).is_empty(),
        "no snapshot from the refused suspend"
    );
    drop(held);

    // hiber session suspend, as root. The count read before: the shell
    // may be ended between emptying its file and writing it.
    let before = read_count(&count).expect("the count before the suspend");
    let t = Instant::now();
    let json = suspend(&hiberd, &first);
    let suspend_secs = t.elapsed().as_secs_f64();
    assert_eq!(json["pending"], true, "{json}");
    assert_eq!(json["uid"], common::user::USER_UID, "{json}");
    wait_gone(&mut first);
    assert!(
        !window_on(first.display, WINDOW),
        "the session's window is gone"
    );
    let snapshot = the_snapshot(&hiberd);
    assert!(pending(&hiberd, &snapshot), "the snapshot is pending");

    let log = login.user.dir().join("offer.log");
    let mut offer = run_autostart(&login, &hiberd, &log);
    login.atspi_ok(&["wait", "label", "Restore Your Session?"]);
    login.screenshot("offer");
    let (said, restore_secs) = restore_from_offer(&login, &hiberd, &log);
    assert_eq!(
        said,
        format!("Your session is back on display :{}", first.display)
    );
    came_back(&hiberd, &snapshot, first.display, &count, before);
    login.screenshot("offer-restored");
    login.atspi_ok(&["press", "push button", "Close"]);
    exits_zero(&mut offer, &log);
    eprintln!(
        "suspend (hiber session suspend, until it returned): {suspend_secs:.2} s; \
         restore (Restore pressed until the offer said where): {restore_secs:.2} s"
    );
    first.end_all();
    drop(login);
    drop(hiberd);
}

#[test]
fn save_and_log_out_then_the_next_login_holds_the_display_and_gets_it_back_on_another() {
    let _serial = one_at_a_time();
    let hiberd = Hiberd::start();
    let mut first = Desktop::start();
    let count = counting_xterm(&mut first);
    let log = first.user.dir().join("app.log");
    first.spawn_app(&hiberd.bus.address, &log);
    first.atspi_ok(&["wait", "label", "No Snapshots"]);

    // Save and Log Out, confirmed, as a user would. The driver stays
    // until the session ends (it is part of it: one that left while
    // hiberd looked at the session would make it start over): it waits
    // for what never comes, and is ended with the session.
    let before = read_count(&count).expect("the count before the suspend");
    let t = Instant::now();
    let driver = first.atspi(&[
        "press",
        "push button",
        "Save and Log Out",
        "--",
        "click",
        "Log Out",
        "--",
        "wait",
        "label",
        "the session was not ended",
        "120",
    ]);
    let logout_secs = t.elapsed().as_secs_f64();
    let said = String::from_utf8_lossy(&driver.stdout).into_owned();
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        ["pressed", "pressed"],
        "the driver pressed both, then was ended with the session ({}): {}",
        driver.status,
        String::from_utf8_lossy(&driver.stderr)
    );
    assert!(
        driver.status.code().is_none(),
        "the driver was ended by a signal, with the session: {}",
        driver.status
    );
    wait_gone(&mut first);
    let snapshot = the_snapshot(&hiberd);
    assert!(pending(&hiberd, &snapshot), "the snapshot is pending");

    // The new login's X server takes the display the session was on.
    let login = Desktop::start_on(first.display);
    let offer_log = login.user.dir().join("offer.log");
    let mut offer = run_autostart(&login, &hiberd, &offer_log);
    let (said, restore_secs) = restore_from_offer(&login, &hiberd, &offer_log);
    let now: u32 = said
        .strip_prefix("Your session is back on display :")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a display number in {said:?}"));
    assert_ne!(now, first.display, "not on the new login's display");
    let body = login.atspi_ok(&["names", "label"]);
    assert!(
        body.contains(&format!(
            "Display :{}, where it was saved, is this login's now, so it came back on :{now}.",
            first.display
        )) && body.contains(&format!("DISPLAY=:{now}")),
        "the offer says why and how to get there: {body}"
    );
    login.screenshot("offer-restored-elsewhere");
    came_back(&hiberd, &snapshot, now, &count, before);
    assert!(
        !window_on(first.display, WINDOW),
        "the new login's server shows none of the session"
    );
    login.atspi_ok(&["press", "push button", "Close"]);
    exits_zero(&mut offer, &offer_log);
    eprintln!(
        "save and log out (pressed until the session ended): {logout_secs:.2} s; \
         restore onto :{now} (Restore pressed until the offer said where): {restore_secs:.2} s"
    );
    first.end_all();
    drop(login);
    // The moved display's files are the restored server's, ended above.
    for f in [
        format!("/tmp/.X11-unix/X{now}"),
        format!("/tmp/.X{now}-lock"),
    ] {
        let _ = fs::remove_file(f);
    }
    drop(hiberd);
}

#[test]
fn nothing_pending_shows_nothing_later_keeps_it_and_discard_deletes_it() {
    let _serial = one_at_a_time();
    let hiberd = Hiberd::start();
    let login = Desktop::start();
    let log = login.user.dir().join("offer.log");

    // Nothing pending: the autostart command exits at once, no window.
    let mut offer = run_autostart(&login, &hiberd, &log);
    exits_zero(&mut offer, &log);
    assert!(
        common::log_text(&log).contains("no pending snapshot"),
        "{}",
        common::log_text(&log)
    );
    assert!(!window_on(login.display, "Restore Your Session"));

    // A session saved by hiberd with stop and kind logout (as a session
    // manager calls it at logout).
    let mut first = Desktop::start();
    counting_xterm(&mut first);
    let out = Command::new("gdbus")
        .args(["call", "--system", "--dest", "org.hiber.Hiber1"])
        .args(["--object-path", "/org/hiber/Hiber1"])
        .args(["--method", "org.hiber.Hiber1.Manager.SaveSession"])
        .arg(format!(":{}", first.display))
        .arg("{'kind': <'logout'>, 'stop': <true>}")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &hiberd.bus.address)
        .output()
        .expect("running gdbus");
    assert!(
        out.status.success(),
        "SaveSession: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapshot = the_snapshot(&hiberd);
    wait_gone(&mut first);
    assert!(pending(&hiberd, &snapshot), "the snapshot is pending");

    // Later: it stays, pending.
    let mut offer = run_autostart(&login, &hiberd, &log);
    login.atspi_ok(&["wait", "label", "Restore Your Session?"]);
    login.atspi_ok(&["press", "push button", "Later"]);
    exits_zero(&mut offer, &log);
    assert_eq!(hiberd.stored().len(), 1, "Later deletes nothing");
    assert!(pending(&hiberd, &snapshot), "still pending after Later");

    // The app's list marks it as waiting to be restored.
    let app_log = login.user.dir().join("app.log");
    let app = common::start_app(&login, &hiberd.bus.address, &app_log);
    drive(
        &login,
        &hiberd,
        &app_log,
        &["wait-count", "push button", "Restore ", "1"],
    );
    let labels = drive(&login, &hiberd, &app_log, &["names", "label"]);
    assert!(
        labels
            .lines()
            .any(|l| l.contains(" window") && l.ends_with(" · waiting to be restored")),
        "the card says it waits to be restored: {labels}"
    );
    login.screenshot("pending-in-the-list");
    // One hiber-gtk on the accessibility bus at a time.
    drop(app);

    // Discard, confirmed: it goes.
    let mut offer = run_autostart(&login, &hiberd, &log);
    login.atspi_ok(&["wait", "label", "Restore Your Session?"]);
    login.atspi_ok(&["press", "push button", "Discard"]);
    login.atspi_ok(&["wait", "label", "Discard the Saved Session?"]);
    login.screenshot("offer-discard");
    // Asked first: nothing is gone before the user confirms.
    assert_eq!(hiberd.stored().len(), 1, "asked before deleting");
    login.atspi_ok(&["click", "Discard Session"]);
    exits_zero(&mut offer, &log);
    common::wait_until("the snapshot to leave the store", DEADLINE, || {
        hiberd.stored().is_empty().then_some(())
    });
    assert!(snapshots(&hiberd).is_empty(), "hiberd lists nothing");
    remove_stale_display_files(first.display);
    drop(first);
    drop(login);
    drop(hiberd);
}

/// A pending snapshot hiberd knows it cannot restore (its document
/// damaged) is shown with why, and Keep keeps it, no longer pending (the
/// change signalled); a restore that fails (a saved pid still taken, by a
/// zombie nobody reaped) is shown with hiberd's message, and Discard
/// deletes it once confirmed.
#[test]
fn a_snapshot_that_cannot_come_back_is_shown_with_why_then_kept_or_discarded() {
    let _serial = one_at_a_time();
    let hiberd = Hiberd::start();
    let login = Desktop::start();
    let mut first = Desktop::start();
    counting_xterm(&mut first);
    // Written before hiberd runs: it reads the damage when it starts.
    let damaged = suspend(&hiberd, &first)["id"]
        .as_str()
        .expect("the snapshot's id")
        .to_string();
    wait_gone(&mut first);
    let document = hiberd
        .store()
        .join(common::user::USER_UID.to_string())
        .join(&damaged)
        .join("snapshot");
    let bytes = fs::read(&document).expect("the snapshot's document");
    fs::write(&document, &bytes[..bytes.len() / 2]).expect("damaging the document");
    let snapshot = the_snapshot(&hiberd);
    assert!(pending(&hiberd, &snapshot), "pending");

    let signals = login.user.dir().join("signals");
    let mut monitor = Started::spawn(
        "gdbus monitor",
        Command::new("gdbus")
            .args(["monitor", "--system", "--dest", "org.hiber.Hiber1"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &hiberd.bus.address)
            .stdout(fs::File::create(&signals).expect("the monitor's file")),
    );
    common::wait_until("gdbus monitor to watch hiberd", DEADLINE, || {
        common::log_text(&signals)
            .contains("is owned by")
            .then_some(())
    });
    let log = login.user.dir().join("offer.log");
    let mut offer = run_autostart(&login, &hiberd, &log);
    drive(
        &login,
        &hiberd,
        &log,
        &["wait", "label", "Your Saved Session Cannot Be Restored"],
    );
    let labels = drive(&login, &hiberd, &log, &["names", "label"]);
    assert!(
        labels.contains("It cannot be restored: damaged:"),
        "the offer says why: {labels}"
    );
    login.screenshot("offer-cannot");
    drive(&login, &hiberd, &log, &["press", "push button", "Keep"]);
    exits_zero(&mut offer, &log);
    assert!(!pending(&hiberd, &snapshot), "kept: no longer pending");
    assert_eq!(
        hiberd.stored(),
        std::slice::from_ref(&damaged),
        "kept: still stored"
    );
    common::wait_until("PropertiesChanged invalidating Pending", DEADLINE, || {
        common::log_text(&signals)
            .lines()
            .any(|l| {
                l.starts_with(&format!(
                    "{snapshot}: org.freedesktop.DBus.Properties.PropertiesChanged"
                )) && l.contains("'Pending'")
            })
            .then_some(())
    });
    let _ = monitor.child.kill();
    let _ = monitor.child.wait();

    // A restore that fails: the session's pids are still taken (its
    // zombies, which this test does not reap yet).
    let mut second = Desktop::start();
    counting_xterm(&mut second);
    let failing = suspend(&hiberd, &second)["id"]
        .as_str()
        .expect("the snapshot's id")
        .to_string();
    wait_gone_unreaped(&second);
    let mut offer = run_autostart(&login, &hiberd, &log);
    drive(
        &login,
        &hiberd,
        &log,
        &["wait", "label", "Restore Your Session?"],
    );
    drive(
        &login,
        &hiberd,
        &log,
        &[
            "press",
            "push button",
            "Restore",
            "--",
            "wait",
            "label",
            "Your Session Could Not Be Restored",
            "120",
        ],
    );
    let labels = drive(&login, &hiberd, &log, &["names", "label"]);
    assert!(
        labels.contains("It cannot be restored:") && labels.contains("is taken by a zombie"),
        "the offer gives hiberd's reason: {labels}"
    );
    assert!(
        !window_on(second.display, WINDOW),
        "a failed restore leaves nothing running"
    );
    login.screenshot("offer-failed");
    drive(&login, &hiberd, &log, &["press", "push button", "Discard"]);
    drive(
        &login,
        &hiberd,
        &log,
        &["wait", "label", "Discard the Saved Session?"],
    );
    assert_eq!(hiberd.stored().len(), 2, "asked before deleting");
    drive(&login, &hiberd, &log, &["click", "Discard Session"]);
    exits_zero(&mut offer, &log);
    common::wait_until("the failed snapshot to leave the store", DEADLINE, || {
        (hiberd.stored() == std::slice::from_ref(&damaged)).then_some(())
    });
    assert!(!hiberd.stored().contains(&failing));
    second.reap();
    remove_stale_display_files(second.display);
    drop(second);
    drop(first);
    drop(login);
    drop(hiberd);
}
