//! One snapshot in the list: its screenshot, name, date, size and window
//! count, with Restore, Rename and Delete. The buttons name window actions
//! with the snapshot's path as their target; the row holds no logic.

use crate::model::SnapshotInfo;
use adw::prelude::*;
use adw::subclass::prelude::*;
use gtk::{gdk, glib};

mod imp {
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug, Default, gtk::CompositeTemplate)]
    #[template(resource = "/org/hiber/Hiber/snapshot_row.ui")]
    pub struct SnapshotRow {
        #[template_child]
        pub thumbnail: TemplateChild<gtk::Picture>,
        #[template_child]
        pub restore_button: TemplateChild<gtk::Button>,
        #[template_child]
        pub rename_button: TemplateChild<gtk::Button>,
        #[template_child]
        pub details_button: TemplateChild<gtk::Button>,
        #[template_child]
        pub delete_button: TemplateChild<gtk::Button>,
        pub path: RefCell<String>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for SnapshotRow {
        const NAME: &'static str = "HiberSnapshotRow";
        type Type = super::SnapshotRow;
        type ParentType = adw::ActionRow;

        fn class_init(klass: &mut Self::Class) {
            klass.bind_template();
        }

        fn instance_init(obj: &glib::subclass::InitializingObject<Self>) {
            obj.init_template();
        }
    }

    impl ObjectImpl for SnapshotRow {}
    impl WidgetImpl for SnapshotRow {}
    impl ListBoxRowImpl for SnapshotRow {}
    impl PreferencesRowImpl for SnapshotRow {}
    impl ActionRowImpl for SnapshotRow {}
}

glib::wrapper! {
    pub struct SnapshotRow(ObjectSubclass<imp::SnapshotRow>)
        @extends adw::ActionRow, adw::PreferencesRow, gtk::ListBoxRow, gtk::Widget,
        @implements gtk::Accessible, gtk::Actionable, gtk::Buildable, gtk::ConstraintTarget;
}

impl SnapshotRow {
    pub fn new(info: &SnapshotInfo, texture: Option<&gdk::Texture>, now_us: u64) -> Self {
        let row: Self = glib::Object::new();
        if let Some(t) = texture {
            row.imp().thumbnail.set_paintable(Some(t));
        }
        row.show(info, now_us);
        row
    }

    pub fn path(&self) -> String {
        self.imp().path.borrow().clone()
    }

    /// Show `info`: the texts, the buttons' targets, and accessible names
    /// that say which snapshot each button acts on.
    pub fn show(&self, info: &SnapshotInfo, now_us: u64) {
        let imp = self.imp();
        *imp.path.borrow_mut() = info.path.clone();
        PreferencesRowExt::set_title(self, &glib::markup_escape_text(&info.name));
        ActionRowExt::set_subtitle(self, &glib::markup_escape_text(&info.summary(now_us)));
        let target = info.path.to_variant();
        for (button, action, verb) in [
            (&*imp.restore_button, "win.restore", "Restore"),
            (&*imp.rename_button, "win.rename-snapshot", "Rename"),
            (&*imp.details_button, "win.details", "Details of"),
            (&*imp.delete_button, "win.delete-snapshot", "Delete"),
        ] {
            button.set_action_target_value(Some(&target));
            button.set_action_name(Some(action));
            button.update_property(&[gtk::accessible::Property::Label(&format!(
                "{verb} {}",
                info.name
            ))]);
        }
        imp.restore_button.set_sensitive(info.restorable);
        if !info.restorable {
            imp.restore_button
                .set_tooltip_text(Some(&format!("Cannot be restored: {}", info.problem)));
        }
        let label = if imp.thumbnail.paintable().is_some() {
            format!("Screenshot of {}", info.name)
        } else {
            format!("No screenshot of {} yet", info.name)
        };
        imp.thumbnail
            .update_property(&[gtk::accessible::Property::Label(&label)]);
    }

    /// The screenshot, once it has come; its accessible name says so.
    pub fn set_thumbnail(&self, texture: &gdk::Texture, name: &str) {
        let thumbnail = &self.imp().thumbnail;
        thumbnail.set_paintable(Some(texture));
        thumbnail.update_property(&[gtk::accessible::Property::Label(&format!(
            "Screenshot of {name}"
        ))]);
    }
}
