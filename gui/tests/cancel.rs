//! Cancel from the app: Save Session is activated through the
//! accessibility tree, and while the save job runs its Cancel Job button
//! is pressed the same way. The session goes on unchanged (its programs
//! run, with the same pids, window and memory), no snapshot is listed or
//! stored, and the app says the save was cancelled (a toast), not that it
//! failed (no error dialog).

mod common;

use common::{Desktop, Hiberd, Hog, DEADLINE};
use serde_json::Value;

const WINDOW: &str = "hiber-gui-cancel-xterm";

/// Enough memory that the save still runs when Cancel is pressed (it may
/// be pressed as soon as the job is Cancelable, which it is from its
/// start; a save of this much takes seconds here).
const HOG_MIB: u64 = 600;

#[test]
fn cancelling_a_save_from_the_app_leaves_the_session_and_no_snapshot() {
    let hiberd = Hiberd::start();
    let mut desktop = Desktop::start();
    let xterm = desktop.spawn("xterm", &["xterm", "-T", WINDOW], None);
    let window = desktop.window_by_title(WINDOW);
    let hog = Hog::start(&mut desktop, HOG_MIB);
    let digest = hog.digest();
    let log = desktop.user.dir().join("app.log");
    let app = desktop.spawn_app(&hiberd.bus.address, &log);
    desktop.atspi_ok(&["wait", "label", "No Snapshots"]);

    let out = desktop.atspi_ok(&["save-cancel", &hiberd.bus.address]);
    let report: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the driver's report {out:?}: {e}"));
    eprintln!("{report}");
    assert_eq!(
        report["pressed"], true,
        "Cancel Job took its action: {report}"
    );
    assert_eq!(
        report["said"],
        "Cancelled; nothing was changed",
        "the app's word on the cancelled save: {report}\nhiberd's log:\n{}",
        hiberd.log()
    );
    assert_eq!(
        report["failure_dialog"], false,
        "a failure dialog came: {report}"
    );
    assert_eq!(report["end"], "failed", "the job ended unsaved: {report}");
    desktop.screenshot("cancelled");

    // Nothing listed, nothing stored, the empty state still shown.
    let listed = common::listed(&hiberd.bus);
    assert!(
        listed.contains("@ao []"),
        "hiberd lists no snapshot after the cancel: {listed}"
    );
    assert_eq!(hiberd.stored(), Vec::<String>::new(), "the store is empty");
    desktop.atspi_ok(&["wait", "label", "No Snapshots"]);
    let unsaved = desktop.atspi_ok(&["count", "image", "Screenshot of "]);
    assert_eq!(unsaved.trim(), "0", "no card");

    // The session runs as it did: the same processes, not stopped, the
    // window there, the memory the same.
    for (what, pid) in [("the xterm", xterm), ("the app", app), ("the hog", hog.pid)] {
        let state = common::process_state(pid);
        assert!(
            state.is_some_and(|s| !matches!(s, 'T' | 't' | 'Z' | 'X')),
            "{what} (pid {pid}) runs on after the cancel: state {state:?}"
        );
    }
    assert!(hog.running());
    assert_eq!(
        desktop.window_by_title(WINDOW),
        window,
        "the same xterm window"
    );
    assert_eq!(hog.digest(), digest, "the hog's memory is unchanged");
    // The app goes on working: Save Session is offered again.
    common::wait_until("Save Session to be offered again", DEADLINE, || {
        let state = desktop.atspi(&["state", "push button", "Save Session"]);
        String::from_utf8_lossy(&state.stdout)
            .contains("sensitive")
            .then_some(())
    });
}
