//! A snapshot's details: the full screenshot, its windows, what was
//! disconnected, its kind, and Restore.

use crate::model::{human_size, SnapshotInfo};
use adw::prelude::*;
use adw::subclass::prelude::*;
use gtk::{gdk, glib};

mod imp {
    use super::*;

    #[derive(Debug, Default, gtk::CompositeTemplate)]
    #[template(resource = "/org/hiber/Hiber/details.ui")]
    pub struct Details {
        #[template_child]
        pub title: TemplateChild<adw::WindowTitle>,
        #[template_child]
        pub restore_button: TemplateChild<gtk::Button>,
        #[template_child]
        pub screenshot: TemplateChild<gtk::Picture>,
        #[template_child]
        pub about_group: TemplateChild<adw::PreferencesGroup>,
        #[template_child]
        pub windows_group: TemplateChild<adw::PreferencesGroup>,
        #[template_child]
        pub detached_group: TemplateChild<adw::PreferencesGroup>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for Details {
        const NAME: &'static str = "HiberDetails";
        type Type = super::Details;
        type ParentType = adw::Window;

        fn class_init(klass: &mut Self::Class) {
            klass.bind_template();
            klass.add_binding_action(gdk::Key::Escape, gdk::ModifierType::empty(), "window.close");
        }

        fn instance_init(obj: &glib::subclass::InitializingObject<Self>) {
            obj.init_template();
        }
    }

    impl ObjectImpl for Details {}
    impl WidgetImpl for Details {}
    impl WindowImpl for Details {}
    impl AdwWindowImpl for Details {}
}

glib::wrapper! {
    pub struct Details(ObjectSubclass<imp::Details>)
        @extends adw::Window, gtk::Window, gtk::Widget,
        @implements gtk::Accessible, gtk::Buildable, gtk::ConstraintTarget, gtk::Native, gtk::Root, gtk::ShortcutManager;
}

fn row(title: &str, subtitle: &str) -> adw::ActionRow {
    let r = adw::ActionRow::builder()
        .title(glib::markup_escape_text(title))
        .subtitle(glib::markup_escape_text(subtitle))
        .build();
    r.update_property(&[gtk::accessible::Property::Label(title)]);
    r
}

impl Details {
    pub fn new(
        parent: &adw::ApplicationWindow,
        info: &SnapshotInfo,
        screenshot: Option<&gdk::Texture>,
        now_us: u64,
    ) -> Self {
        let w: Self = glib::Object::builder()
            .property("transient-for", parent)
            .property("title", format!("Snapshot “{}”", info.name))
            .build();
        let imp = w.imp();
        imp.title.set_title(&info.name);
        imp.title.set_subtitle(&info.summary(now_us));
        imp.screenshot.set_paintable(screenshot);
        imp.restore_button
            .set_action_target_value(Some(&info.path.to_variant()));
        imp.restore_button.set_action_name(Some("win.restore"));
        imp.restore_button.set_sensitive(info.restorable);
        // A window's actions are not seen from another window: the main
        // window's group is put in this one, and this one closes.
        w.insert_action_group("win", Some(parent));
        imp.restore_button.connect_clicked(glib::clone!(
            #[weak]
            w,
            move |_| GtkWindowExt::close(&w)
        ));
        let about = &imp.about_group;
        about.add(&row("Kind", info.kind_words()));
        about.add(&row(
            "Space it uses alone",
            &format!(
                "{} (with shared data {})",
                human_size(info.size),
                human_size(info.total_size)
            ),
        ));
        about.add(&row("Display", &info.display));
        if let Some(words) = info.pending_words() {
            about.add(&row("Waiting to be restored", words));
        }
        if !info.restorable {
            about.add(&row("Cannot be restored", &info.problem));
        }
        if info.windows.is_empty() {
            imp.windows_group
                .add(&row("No windows", "The session had no windows open"));
        }
        for (title, class) in &info.windows {
            let t = if title.is_empty() { class } else { title };
            imp.windows_group.add(&row(t, class));
        }
        imp.detached_group.set_visible(!info.detached.is_empty());
        for d in &info.detached {
            imp.detached_group
                .add(&row(d, "disconnected, as if unplugged"));
        }
        w
    }
}
