//! hiber-gtk: Hiber's GTK app. A client of hiberd only: it saves the
//! session it is shown on, lists, restores, renames and deletes the user's
//! snapshots, all through `org.hiber.Hiber1` on the system bus. It never
//! links the engine.

mod bus;
mod details;
mod model;
mod snapshot_row;
mod window;

use adw::prelude::*;
use gtk::{gio, glib};

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
    let app = adw::Application::builder()
        .application_id(APP_ID)
        .resource_base_path("/org/hiber/Hiber")
        .build();
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
    app.connect_activate(|app| {
        if let Some(w) = app.active_window() {
            return w.present();
        }
        window::Window::new(app).present();
    });
    app.run()
}
