//! Acceptance 3 of the app's issue: without hiberd the app says so on a
//! status page, which one and what to do, and Ctrl+Q quits it cleanly.

mod common;

use common::{start_app, Desktop, SystemBus, DEADLINE};
use std::fs;

#[test]
fn without_hiberd_a_status_page_says_so_and_ctrl_q_quits() {
    let bus = SystemBus::start(None);
    let desktop = Desktop::start();
    let log = desktop.user.dir().join("app.log");
    let mut app = start_app(&desktop, &bus.address, &log);
    desktop.atspi_ok(&["wait", "label", "Hiber's Service Is Not Installed"]);
    desktop.atspi_ok(&["wait", "push button", "Try Again"]);
    let unnamed = desktop.atspi_ok(&["unnamed"]);
    assert_eq!(unnamed, "", "controls without an accessible name");
    // Nothing to save with: the header bar's button is there, disabled.
    let out = desktop.atspi_ok(&["state", "push button", "Save Session"]);
    assert!(
        !out.split_whitespace().any(|s| s == "sensitive"),
        "Save Session is enabled without hiberd: {out}"
    );
    let shot = desktop.screenshot("absent");
    let light = common::brightness(&shot, 380, 580);
    assert!(
        light > 0.8,
        "the light style's background is light: {light}"
    );
    desktop.keys(app.pid(), "ctrl+q");
    let status = app.wait_exit(DEADLINE);
    assert!(
        status.success(),
        "hiber-gtk exited with {status}; its log:\n{}",
        common::log_text(&log)
    );
}

/// With the system asking for the dark style (libadwaita's debug setting
/// stands for the desktop's preference), the window is dark.
#[test]
fn the_window_follows_the_dark_style() {
    let bus = SystemBus::start(None);
    let desktop = Desktop::start();
    let log = desktop.user.dir().join("app.log");
    let app = desktop.app_binary();
    let mut cmd = desktop.command(&[app.to_str().expect("a UTF-8 path")], Some(&log));
    cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .env("ADW_DEBUG_COLOR_SCHEME", "prefer-dark");
    let mut app = common::Started::spawn("hiber-gtk", &mut cmd);
    desktop.atspi_ok(&["wait", "label", "Hiber's Service Is Not Installed"]);
    let shot = desktop.screenshot("absent-dark");
    let dark = common::brightness(&shot, 380, 580);
    assert!(dark < 0.3, "the dark style's background is dark: {dark}");
    desktop.keys(app.pid(), "ctrl+q");
    assert!(app.wait_exit(DEADLINE).success());
}

/// hiberd installed (an activation file) but failing to start: the page
/// says it is not running, and Try Again asks again without a hang.
#[test]
fn hiberd_that_cannot_start_is_reported_not_running() {
    let services = tempfile::tempdir().expect("a service directory");
    fs::write(
        services.path().join("org.hiber.Hiber1.service"),
        "[D-BUS Service]\nName=org.hiber.Hiber1\nExec=/bin/false\nUser=root\n",
    )
    .expect("writing the activation file");
    let bus = SystemBus::start(Some(services.path()));
    let desktop = Desktop::start();
    let log = desktop.user.dir().join("app.log");
    let mut app = start_app(&desktop, &bus.address, &log);
    desktop.atspi_ok(&["wait", "label", "Hiber's Service Is Not Running"]);
    desktop.atspi_ok(&["press", "push button", "Try Again"]);
    desktop.atspi_ok(&["wait", "label", "Hiber's Service Is Not Running"]);
    desktop.keys(app.pid(), "ctrl+q");
    let status = app.wait_exit(DEADLINE);
    assert!(status.success(), "hiber-gtk exited with {status}");
}
