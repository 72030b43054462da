//! hiber-gtk: Hiber's GTK app. A client of hiberd only: it saves the
//! session it is shown on, lists, restores, renames and deletes the user's
//! snapshots, all through `org.hiber.Hiber1` on the system bus. It never
//! links the engine.
//!
//! `hiber-gtk --offer-pending` (the XDG autostart entry, at login): offer
//! the user's pending snapshot back, or exit at once when there is none
//! (see `offer`).

mod bus;
mod console;
mod details;
mod model;
mod offer;
mod snapshot_row;
mod window;

use adw::prelude::*;
use gtk::{gio, glib};
use std::cell::Cell;
use std::rc::Rc;

const APP_ID: &str = "org.hiber.Hiber";

fn main() -> glib::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("HIBER_GTK_LOG").unwrap_or_else(|_| "info".into()),
        ))
        .with_writer(std::io::stderr)
        .init();
    gio::resources_register_include!("hiber.gresource")
        .expect("the resources compiled into the binary");
    let mut args: Vec<String> = std::env::args().collect();
    let offer_pending = match args.get(1).map(String::as_str) {
        Some("--offer-pending") => {
            args.remove(1);
            true
        }
        _ => false,
    };
    if let Some(other) = args.get(1) {
        eprintln!("hiber-gtk: unknown argument {other:?} (hiber-gtk [--offer-pending])");
        return glib::ExitCode::from(2i32);
    }
    let app = adw::Application::builder()
        .application_id(APP_ID)
        .resource_base_path("/org/hiber/Hiber")
        .build();
    // The offer is a window of its own, whether or not the app runs.
    if offer_pending {
        app.set_flags(gio::ApplicationFlags::NON_UNIQUE);
    }
    app.connect_startup(|app| {
        // The default scheme follows the system's light or dark
        // preference; no colour of our own is hard-coded (style.css).
        adw::StyleManager::default().set_color_scheme(adw::ColorScheme::Default);
        gtk::Window::set_default_icon_name(APP_ID);
        let quit = gio::SimpleAction::new("quit", None);
        quit.connect_activate(glib::clone!(
            #[weak]
            app,
            move |_, _| app.quit()
        ));
        app.add_action(&quit);
        for (action, keys) in [
            ("app.quit", &["<Control>q"][..]),
            ("win.save", &["<Control>s"]),
            ("win.delete", &["Delete"]),
            ("win.rename", &["F2"]),
            ("window.close", &["<Control>w"]),
        ] {
            app.set_accels_for_action(action, keys);
        }
    });
    let status = Rc::new(Cell::new(0));
    let offer_status = status.clone();
    app.connect_activate(move |app| {
        if offer_pending {
            return offer::start(app, offer_status.clone());
        }
        if let Some(w) = app.active_window() {
            return w.present();
        }
        window::Window::new(app).present();
    });
    let code = app.run_with_args(&args[..1]);
    match status.get() {
        0 => code,
        n => glib::ExitCode::from(n),
    }
}
