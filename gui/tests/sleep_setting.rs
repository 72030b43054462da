//! The app's switch for issue 16's save before sleep: the primary menu's
//! "Save Before Sleep" item shows hiberd's setting for this user and
//! changes it, as a user would (the menu opened and the item activated
//! through the accessibility tree); hiberd keeps it in its store, and a
//! restarted app reads it back from hiberd.

mod common;

use common::{start_app, wait_until, Desktop, Hiberd, DEADLINE};
use std::fs;

/// hiberd's file of the users who opted in (there while anyone did).
fn opted_in(hiberd: &Hiberd) -> Option<String> {
    fs::read_to_string(hiberd.state.path().join("store/save-before-sleep")).ok()
}

const ITEM: [&str; 2] = ["check menu item", "Save Before Sleep"];

/// Whether the menu's item reads checked (the menu opened, then closed
/// with Escape).
fn item_checked(desktop: &Desktop, app: i32) -> bool {
    let states = desktop.atspi_ok(&[
        "press",
        "push button",
        "Main Menu",
        "--",
        "state",
        ITEM[0],
        ITEM[1],
    ]);
    desktop.keys(app, "Escape");
    states.split_whitespace().any(|s| s == "checked")
}

/// Activate the menu's item, as a user would, and wait for the app's
/// toast `said` (hiberd answered).
fn switch_item(desktop: &Desktop, said: &str) {
    desktop.atspi_ok(&[
        "press",
        "push button",
        "Main Menu",
        "--",
        "press",
        ITEM[0],
        ITEM[1],
        "--",
        "wait",
        "label",
        said,
    ]);
}

#[test]
fn the_menu_switches_saving_before_sleep_and_shows_hiberds_setting() {
    let hiberd = Hiberd::start();
    let desktop = Desktop::start();
    let log = desktop.user.dir().join("app.log");
    let mut app = start_app(&desktop, &hiberd.bus.address, &log);
    desktop.atspi_ok(&["wait", "label", "No Snapshots"]);
    assert_eq!(opted_in(&hiberd), None, "nobody opted in at first");
    assert!(!item_checked(&desktop, app.pid()), "unchecked at first");

    // On: hiberd keeps this user in its store, the app says so.
    switch_item(
        &desktop,
        "Your sessions will be saved before the computer sleeps",
    );
    let uid = common::user::USER_UID;
    wait_until("hiberd to keep the opt-in", DEADLINE, || {
        (opted_in(&hiberd) == Some(format!("{uid}\n"))).then_some(())
    });

    // A new app reads the setting from hiberd.
    desktop.keys(app.pid(), "ctrl+q");
    assert!(app.wait_exit(DEADLINE).success(), "the app quits");
    let mut app = start_app(&desktop, &hiberd.bus.address, &log);
    desktop.atspi_ok(&["wait", "label", "No Snapshots"]);
    wait_until("the item to show hiberd's setting", DEADLINE, || {
        item_checked(&desktop, app.pid()).then_some(())
    });

    // Off: the store forgets it.
    switch_item(
        &desktop,
        "Your sessions will no longer be saved before sleep",
    );
    wait_until("hiberd to drop the opt-in", DEADLINE, || {
        opted_in(&hiberd).is_none().then_some(())
    });
    assert!(!item_checked(&desktop, app.pid()), "unchecked again");
    desktop.keys(app.pid(), "ctrl+q");
    assert!(app.wait_exit(DEADLINE).success(), "the app quits");
}
