//! Acceptance 2 of the app's issue: while hiberd saves a session holding
//! 200 MiB of memory, the app answers the keyboard (F2 opens Rename) and
//! still shows the job running. It checks that the app stays usable, not
//! a number (the issue's closing note has the measurement). Ignored by
//! default: it can only see the answer while the save still runs, and a
//! 200 MiB save can end first.

mod common;

use common::{Desktop, Hiberd};

/// 200 MiB of memory that does not compress or elide (random bytes,
/// every page touched), held until the session ends.
const HOG: &str = r#"
import os, signal, sys
hog = bytearray(os.urandom(200 << 20))
open(sys.argv[1], "w").write("ready\n")
signal.pause()
"#;

#[test]
#[ignore = "races the save: on a fast machine 200 MiB are saved before the key's answer can be seen (run it with --ignored to look)"]
fn the_app_answers_keys_while_a_200_mib_session_is_saved() {
    let hiberd = Hiberd::start();
    let mut desktop = Desktop::start();
    let log = desktop.user.dir().join("app.log");
    let app = desktop.spawn_app(&hiberd.bus.address, &log);
    desktop.atspi_ok(&["wait", "label", "No Snapshots"]);

    // A first snapshot, to have something F2 can rename.
    save_until(&desktop, "image", "Screenshot of ");
    desktop.atspi_ok(&["wait-count", "image", "Screenshot of ", "1"]);

    // Then 200 MiB that no snapshot holds yet.
    let ready = desktop.user.dir().join("hog-ready");
    let ready_arg = ready.to_str().expect("a UTF-8 path").to_string();
    desktop.spawn(
        "the memory hog",
        &["/usr/bin/python3", "-c", HOG, &ready_arg],
        None,
    );
    common::wait_until("the hog's 200 MiB", common::DEADLINE, || {
        std::fs::read_to_string(&ready)
            .ok()?
            .contains("ready")
            .then_some(())
    });
    // The second save runs; F2 still opens Rename while it does.
    save_until(&desktop, "label", "Saving the session");
    desktop.keys(app, "F2");
    desktop.atspi_ok(&["wait", "label", "Rename Snapshot"]);
    let running = desktop.atspi(&["wait-count", "label", "Saving the session", "1", "0.5"]);
    assert!(
        running.status.success(),
        "Rename came only after the save ended: the app did not answer while it ran"
    );
    desktop.screenshot("responsive");
    desktop.keys_to_window("Rename Snapshot", "Escape");
    desktop.atspi_ok(&["wait-count", "image", "Screenshot of ", "2"]);
    assert_eq!(hiberd.stored().len(), 2);
}

/// Save Session, going on past the check's dialog if it comes, until one
/// object of `role` named `prefix`... shows.
fn save_until(desktop: &Desktop, role: &str, prefix: &str) {
    // One driver process for the press and the wait: see save_restore.rs.
    let came = desktop.atspi_ok(&[
        "press",
        "push button",
        "Save Session",
        "--",
        "label-or-count",
        "Save This Session?",
        role,
        prefix,
        "1",
    ]);
    if came.lines().last() == Some("label") {
        desktop.atspi_ok(&[
            "click",
            "Save Anyway",
            "--",
            "wait-count",
            role,
            prefix,
            "1",
        ]);
    }
}
