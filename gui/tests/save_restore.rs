//! Acceptance 1 of the app's issue, with a real hiberd (as root, on a
//! private system bus with its packaged policy, polkitd beside it) and the
//! test user's desktops: Save Session is activated through the
//! accessibility tree, a card with the session's thumbnail comes; from a
//! second desktop, after the first session was ended, Restore brings its
//! window back; Delete takes the card and the snapshot away.

mod common;

use common::{Desktop, Hiberd, DEADLINE};
use std::process::Command;

const WINDOW: &str = "hiber-gui-test-xterm";

/// A program in the xterm that holds a TCP connection to the test's
/// listener, outside the session: the check says the connection will be
/// closed.
const TCP_CLIENT: &str = r#"
import signal, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
signal.pause()
"#;

#[test]
fn save_from_the_app_then_restore_and_delete_from_another_desktop() {
    let hiberd = Hiberd::start();
    let mut first = Desktop::start();
    // The connection waits in the listener's queue, never accepted: the
    // test only needs it open.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a TCP listener");
    let port = listener
        .local_addr()
        .expect("its address")
        .port()
        .to_string();
    let xterm_log = first.user.dir().join("xterm.log");
    let xterm = first.spawn(
        "xterm",
        &[
            "xterm",
            "-T",
            WINDOW,
            "-e",
            "/usr/bin/python3",
            "-c",
            TCP_CLIENT,
            &port,
        ],
        Some(&xterm_log),
    );
    first.window_by_title_of(WINDOW, xterm, &xterm_log);
    let log = first.user.dir().join("app.log");
    let app = first.spawn_app(&hiberd.bus.address, &log);
    first.atspi_ok(&["wait", "label", "No Snapshots"]);
    first.screenshot_of(app, "empty");

    // Save, the way a user would: a toast, then a card whose thumbnail
    // has come.
    let checked = save(&first, 1);
    assert!(
        checked.asked,
        "the check's dialog came: the session holds a TCP connection"
    );
    let toast = first.atspi_ok(&["wait-count", "label", "Session saved", "1"]);
    assert!(toast.contains(" MB") || toast.contains(" kB"), "{toast}");
    assert_eq!(hiberd.stored().len(), 1, "one snapshot in the store");
    first.screenshot("one-snapshot");
    save(&first, 2);
    let shots = save(&first, 3).names;
    assert_eq!(hiberd.stored().len(), 3, "three snapshots in the store");
    first.screenshot_of(app, "three-snapshots");
    let unnamed = first.atspi_ok(&["unnamed"]);
    assert_eq!(unnamed, "", "controls without an accessible name");
    // Newest first. The selection stays on the first card there was (the
    // oldest now): F2 renames it.
    assert_eq!(shots.len(), 3, "{shots:?}");
    first.keys(app, "F2");
    first.atspi_ok(&["wait", "label", "Rename Snapshot"]);
    first.keys_to_window("Rename Snapshot", "ctrl+a");
    first.type_to_window("Rename Snapshot", "Before lunch");
    first.keys_to_window("Rename Snapshot", "Return");
    let name = "Before lunch".to_string();
    first.atspi_ok(&["wait", "image", &format!("Screenshot of {name}")]);
    let renamed = first.atspi_ok(&["names", "image"]);
    assert!(!renamed.contains(shots[2].as_str()), "{renamed}");
    for kept in &shots[..2] {
        assert!(
            renamed.contains(kept.as_str()),
            "{kept} kept its name: {renamed}"
        );
    }
    let newest = shots[0].clone();

    // Its details, in a window of their own.
    first.atspi_ok(&["press", "push button", &format!("Details of {name}")]);
    first.atspi_ok(&["wait", "push button", "Restore This Snapshot"]);
    first.screenshot_window("Snapshot “", "details");
    first.keys_to_window("Snapshot “", "Escape");
    first.atspi_ok(&["gone", "push button", "Restore This Snapshot"]);

    // A second desktop of the same user shows the snapshot too.
    let mut second = Desktop::start();
    let log2 = second.user.dir().join("app.log");
    let app2 = second.spawn_app(&hiberd.bus.address, &log2);
    second.atspi_ok(&["wait", "push button", &format!("Restore {name}")]);

    // The first session ends; Restore brings its window back.
    let display = first.display;
    first.end_session();
    assert!(
        !window_exists(display, WINDOW),
        "the first session's window is gone"
    );
    second.atspi_ok(&["press", "push button", &format!("Restore {name}")]);
    second.atspi_ok(&["wait-count", "label", "Session restored", "1"]);
    common::wait_until(
        &format!("{WINDOW} back on display :{display}"),
        DEADLINE,
        || window_exists(display, WINDOW).then_some(()),
    );
    common::screenshot(display, None, "restored");

    // The Delete key deletes the selected card (the newest, here): the
    // card and the snapshot go.
    second.keys(app2, "Delete");
    second.screenshot_window("Delete", "delete-dialog");
    second.atspi_ok(&["click", "Delete"]);
    second.atspi_ok(&["gone", "push button", &format!("Delete {newest}")]);
    second.atspi_ok(&["wait-count", "list item", "", "2"]);
    common::wait_until("the snapshot to leave the store", DEADLINE, || {
        (hiberd.stored().len() == 2).then_some(())
    });
    // The restored session is the first desktop's again: ended with it.
    first.end_all();
    drop(listener);
    drop(hiberd);
}

/// Save Session as a user would; when the check finds something, the app
/// says it in a dialog and the user goes on. Returns the snapshots' names
/// once `cards` cards show with their thumbnails, newest first, and whether
/// the dialog came.
fn save(desktop: &Desktop, cards: usize) -> Saved {
    // Each press is chained with the wait after it in one driver process:
    // the driver talks to the session's buses, so hiberd counts it in the
    // session, and one that ended while hiberd looked would fail the save.
    let n = cards.to_string();
    let came = desktop.atspi_ok(&[
        "press",
        "push button",
        "Save Session",
        "--",
        "label-or-count",
        "Save This Session?",
        "image",
        "Screenshot of ",
        &n,
    ]);
    let shots = if came.lines().last() == Some("label") {
        let labels = desktop.atspi_ok(&["names", "label"]);
        assert!(
            labels.contains("the network connection from local port"),
            "the check's dialog names the TCP connection: {labels}"
        );
        desktop.screenshot_window("Save This Session", "check-dialog");
        let answer = [
            "click",
            "Save Anyway",
            "--",
            "wait-count",
            "image",
            "Screenshot of ",
            &n,
        ];
        let first = desktop.atspi(&answer);
        if first.status.success() {
            String::from_utf8_lossy(&first.stdout).into_owned()
        } else {
            // A driver's view of the tree is its own (libatspi caches it
            // from the app's events): when the answer did not take, a new
            // driver looks and answers once more, and the test says what
            // each saw. A dialog that a new driver cannot answer either
            // fails the test.
            let fresh = desktop.atspi(&["dump"]);
            eprintln!(
                "the check's dialog did not take the first answer:\n{}{}\na new driver sees:\n{}",
                String::from_utf8_lossy(&first.stdout),
                String::from_utf8_lossy(&first.stderr),
                String::from_utf8_lossy(&fresh.stdout)
            );
            desktop.atspi_ok(&answer)
        }
    } else {
        desktop.atspi_ok(&["wait-count", "image", "Screenshot of ", &n])
    };
    Saved {
        names: shots
            .lines()
            .filter_map(|l| l.strip_prefix("Screenshot of "))
            .map(str::to_string)
            .collect(),
        asked: came.lines().last() == Some("label"),
    }
}

struct Saved {
    names: Vec<String>,
    asked: bool,
}

fn window_exists(display: u32, title: &str) -> bool {
    Command::new("xdotool")
        .args(["search", "--name", title])
        .env("DISPLAY", format!(":{display}"))
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}
