//! The main window: Save Session in the header bar, the snapshots newest
//! first, a job's progress with Cancel, and status pages for no snapshots
//! and for hiberd being unavailable. Every bus call goes through
//! [`bus::on_bus`] and is awaited on the GLib main loop.

use crate::bus::{self, Event, Failure, Hiber};
use crate::details::Details;
use crate::model::{self, CheckReport, JobEnd, JobView, SnapshotInfo};
use crate::snapshot_row::SnapshotRow;
use adw::prelude::*;
use adw::subclass::prelude::*;
use gtk::{gdk, gio, glib};
use std::collections::HashMap;
use tracing::{info, warn};

/// Job ends seen before the app learnt the job's path (a fast job can end
/// before `SaveSession` has returned); kept this many at most.
const EARLY_ENDS: usize = 16;

#[derive(Debug, Default)]
pub struct State {
    hiber: Option<Hiber>,
    /// Newest first.
    snapshots: Vec<SnapshotInfo>,
    rows: Vec<SnapshotRow>,
    thumbnails: HashMap<String, gdk::Texture>,
    job: Option<JobView>,
    early_ends: Vec<(String, JobEnd)>,
    /// Bumped at each connection, so events of an old one are dropped.
    generation: u64,
}

mod imp {
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug, Default, gtk::CompositeTemplate)]
    #[template(resource = "/org/hiber/Hiber/window.ui")]
    pub struct Window {
        #[template_child]
        pub toasts: TemplateChild<adw::ToastOverlay>,
        #[template_child]
        pub stack: TemplateChild<gtk::Stack>,
        #[template_child]
        pub list: TemplateChild<gtk::ListBox>,
        #[template_child]
        pub job_revealer: TemplateChild<gtk::Revealer>,
        #[template_child]
        pub job_label: TemplateChild<gtk::Label>,
        #[template_child]
        pub job_progress: TemplateChild<gtk::ProgressBar>,
        #[template_child]
        pub job_cancel: TemplateChild<gtk::Button>,
        #[template_child]
        pub unavailable_page: TemplateChild<adw::StatusPage>,
        pub state: RefCell<State>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for Window {
        const NAME: &'static str = "HiberWindow";
        type Type = super::Window;
        type ParentType = adw::ApplicationWindow;

        fn class_init(klass: &mut Self::Class) {
            klass.bind_template();
        }

        fn instance_init(obj: &glib::subclass::InitializingObject<Self>) {
            obj.init_template();
        }
    }

    impl ObjectImpl for Window {
        fn constructed(&self) {
            self.parent_constructed();
            let w = self.obj();
            w.add_actions();
            w.imp()
                .job_revealer
                .update_state(&[gtk::accessible::State::Hidden(true)]);
            self.list.connect_row_activated(glib::clone!(
                #[weak]
                w,
                move |_, row| {
                    if let Some(row) = row.downcast_ref::<SnapshotRow>() {
                        w.show_details(&row.path());
                    }
                }
            ));
            // Relative dates move on by themselves.
            glib::timeout_add_seconds_local(
                60,
                glib::clone!(
                    #[weak]
                    w,
                    #[upgrade_or]
                    glib::ControlFlow::Break,
                    move || {
                        w.refresh_rows();
                        glib::ControlFlow::Continue
                    }
                ),
            );
        }
    }
    impl WidgetImpl for Window {}
    impl WindowImpl for Window {}
    impl ApplicationWindowImpl for Window {}
    impl AdwApplicationWindowImpl for Window {}
}

glib::wrapper! {
    pub struct Window(ObjectSubclass<imp::Window>)
        @extends adw::ApplicationWindow, gtk::ApplicationWindow, gtk::Window, gtk::Widget,
        @implements gio::ActionGroup, gio::ActionMap, gtk::Accessible, gtk::Buildable,
                    gtk::ConstraintTarget, gtk::Native, gtk::Root, gtk::ShortcutManager;
}

fn now_us() -> u64 {
    glib::real_time().max(0) as u64
}

impl Window {
    pub fn new(app: &adw::Application) -> Self {
        let w: Self = glib::Object::builder().property("application", app).build();
        w.connect_hiberd();
        w
    }

    fn add_actions(&self) {
        let plain = |name: &str, f: fn(&Self)| {
            let a = gio::SimpleAction::new(name, None);
            a.connect_activate(glib::clone!(
                #[weak(rename_to = w)]
                self,
                move |_, _| f(&w)
            ));
            self.add_action(&a);
        };
        plain("save", Self::save);
        plain("save-logout", Self::ask_save_logout);
        plain("cancel-job", Self::cancel_job);
        plain("reconnect", Self::connect_hiberd);
        plain("delete", |w| {
            if let Some(p) = w.selected() {
                w.ask_delete(&p);
            }
        });
        plain("rename", |w| {
            if let Some(p) = w.selected() {
                w.ask_rename(&p);
            }
        });
        let with_path = |name: &str, f: fn(&Self, &str)| {
            let a = gio::SimpleAction::new(name, Some(glib::VariantTy::STRING));
            a.connect_activate(glib::clone!(
                #[weak(rename_to = w)]
                self,
                move |_, p| {
                    if let Some(p) = p.and_then(|p| p.str()) {
                        f(&w, p)
                    }
                }
            ));
            self.add_action(&a);
        };
        // A check item whose state is hiberd's setting: read once
        // connected, and changed only by hiberd's answer.
        let sleep = gio::SimpleAction::new_stateful("save-before-sleep", None, &false.to_variant());
        sleep.connect_activate(glib::clone!(
            #[weak(rename_to = w)]
            self,
            move |a, _| w.toggle_save_before_sleep(a)
        ));
        self.add_action(&sleep);
        with_path("restore", Self::restore);
        with_path("rename-snapshot", Self::ask_rename);
        with_path("delete-snapshot", Self::ask_delete);
        with_path("details", Self::show_details);
        self.enable_actions();
    }

    fn action(&self, name: &str) -> Option<gio::SimpleAction> {
        self.lookup_action(name)?.downcast().ok()
    }

    /// What can be done now: nothing without hiberd; no second job while
    /// one runs (hiberd would say Busy); keys on a snapshot need one.
    fn enable_actions(&self) {
        let st = self.imp().state.borrow();
        let connected = st.hiber.is_some();
        let idle = connected && st.job.is_none();
        let any = connected && !st.snapshots.is_empty();
        drop(st);
        for (name, on) in [
            ("save", idle),
            ("save-logout", idle),
            ("restore", idle),
            ("cancel-job", connected),
            ("delete", any),
            ("rename", any),
            ("delete-snapshot", connected),
            ("rename-snapshot", connected),
            ("details", connected),
            ("save-before-sleep", connected),
        ] {
            if let Some(a) = self.action(name) {
                a.set_enabled(on);
            }
        }
    }

    fn hiber(&self) -> Option<Hiber> {
        self.imp().state.borrow().hiber.clone()
    }

    fn toast(&self, text: &str) {
        self.imp().toasts.add_toast(adw::Toast::new(text));
    }

    /// The display this window is shown on, as hiberd names it (":N").
    fn display_name(&self) -> String {
        WidgetExt::display(self).name().to_string()
    }

    // --- connection ---------------------------------------------------

    fn connect_hiberd(&self) {
        let imp = self.imp();
        self.show_page("loading");
        let generation = {
            let mut st = imp.state.borrow_mut();
            st.hiber = None;
            st.generation += 1;
            st.generation
        };
        self.enable_actions();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = w)]
            self,
            async move {
                match bus::on_bus(Hiber::connect(tx)).await {
                    Ok((hiber, list)) => {
                        info!(snapshots = list.len(), "connected to hiberd");
                        w.imp().state.borrow_mut().hiber = Some(hiber);
                        w.set_snapshots(list);
                        w.fetch_save_before_sleep();
                    }
                    Err(failure) => {
                        w.unavailable(&failure);
                        return;
                    }
                }
                while let Some(ev) = rx.recv().await {
                    if w.imp().state.borrow().generation != generation {
                        return;
                    }
                    w.on_event(ev);
                }
            }
        ));
    }

    // --- save before sleep ----------------------------------------------

    fn fetch_save_before_sleep(&self) {
        let Some(hiber) = self.hiber() else { return };
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = w)]
            self,
            async move {
                match bus::on_bus(async move { hiber.save_before_sleep().await }).await {
                    Ok(on) => {
                        if let Some(a) = w.action("save-before-sleep") {
                            a.set_state(&on.to_variant());
                        }
                    }
                    Err(failure) => warn!(%failure, "cannot read the save-before-sleep setting"),
                }
            }
        ));
    }

    fn toggle_save_before_sleep(&self, action: &gio::SimpleAction) {
        let Some(hiber) = self.hiber() else { return };
        let want = !action
            .state()
            .and_then(|v| v.get::<bool>())
            .unwrap_or(false);
        // One change at a time; the item shows hiberd's answer.
        action.set_enabled(false);
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = w)]
            self,
            #[weak]
            action,
            async move {
                match bus::on_bus(async move { hiber.set_save_before_sleep(want).await }).await {
                    Ok(on) => {
                        action.set_state(&on.to_variant());
                        w.toast(if on {
                            "Your sessions will be saved before the computer sleeps"
                        } else {
                            "Your sessions will no longer be saved before sleep"
                        });
                    }
                    Err(failure) => w.failed("Cannot Change Saving Before Sleep", &failure),
                }
                action.set_enabled(w.hiber().is_some());
            }
        ));
    }

    /// Show one page of the stack. The others are marked hidden for
    /// assistive technologies too: GTK 4.8 leaves a stack's hidden pages
    /// in the accessibility tree looking like the shown one.
    fn show_page(&self, name: &str) {
        let stack = &self.imp().stack;
        stack.set_visible_child_name(name);
        let pages = stack.pages();
        for i in 0..pages.n_items() {
            let Some(page) = pages.item(i).and_downcast::<gtk::StackPage>() else {
                continue;
            };
            let hidden = page.name().as_deref() != Some(name);
            page.child()
                .update_state(&[gtk::accessible::State::Hidden(hidden)]);
        }
    }

    fn unavailable(&self, failure: &Failure) {
        warn!(%failure, "hiberd unavailable");
        let (title, text) = failure.words();
        let page = &self.imp().unavailable_page;
        page.set_title(&title);
        page.set_description(Some(&text));
        self.show_page("unavailable");
        self.imp().state.borrow_mut().hiber = None;
        self.enable_actions();
    }

    /// A failure of one operation: the status page when hiberd as a whole
    /// is gone, else a dialog.
    fn failed(&self, heading: &str, failure: &Failure) {
        if failure.is_unavailable() {
            self.unavailable(failure);
        } else {
            self.error_dialog(heading, failure);
        }
    }

    fn error_dialog(&self, heading: &str, failure: &Failure) {
        let (title, text) = failure.words();
        let d = adw::MessageDialog::new(Some(self), Some(heading), Some(&text));
        d.add_response("close", "_Close");
        d.set_default_response(Some("close"));
        d.set_close_response("close");
        let details = gtk::Expander::builder().label("Details").build();
        details.update_property(&[gtk::accessible::Property::Label("Details")]);
        let name = match failure {
            Failure::Hiberd { name, .. } => name.clone(),
            _ => title,
        };
        let label = gtk::Label::builder()
            .label(format!("{name}\n{text}"))
            .selectable(true)
            .wrap(true)
            .xalign(0.0)
            .build();
        label.add_css_class("monospace");
        details.set_child(Some(&label));
        d.set_extra_child(Some(&details));
        d.present();
    }

    fn on_event(&self, ev: Event) {
        match ev {
            Event::SnapshotAdded(p) | Event::SnapshotChanged(p) => self.fetch_snapshot(&p),
            Event::SnapshotRemoved(p) => self.remove_snapshot(&p),
            Event::JobChanged(p, props) => {
                let mut st = self.imp().state.borrow_mut();
                if let Some(job) = st.job.as_mut().filter(|j| j.path == p) {
                    job.update(&props);
                    drop(st);
                    self.show_job();
                }
            }
            Event::JobCompleted(p, end) => {
                let ours = self
                    .imp()
                    .state
                    .borrow()
                    .job
                    .as_ref()
                    .is_some_and(|j| j.path == p);
                if ours {
                    self.job_ended(end);
                } else {
                    let mut st = self.imp().state.borrow_mut();
                    if st.early_ends.len() == EARLY_ENDS {
                        st.early_ends.remove(0);
                    }
                    st.early_ends.push((p, end));
                }
            }
            Event::ConnectionLost => {
                // Connect again (a restored app comes back with its old
                // socket reset); whatever was running is hiberd's to end.
                warn!("the connection to the system bus broke; connecting again");
                self.stop_busy();
                self.connect_hiberd();
            }
            Event::ServiceGone => {
                // hiberd leaves when idle and comes back on the next call;
                // only a job it was running is lost.
                let following = self
                    .imp()
                    .state
                    .borrow()
                    .job
                    .as_ref()
                    .is_some_and(|j| !j.path.is_empty());
                if following {
                    self.job_ended(JobEnd {
                        success: false,
                        error: "org.hiber.Hiber1.Error.Failed".into(),
                        message: "hiberd stopped before the job ended".into(),
                    });
                }
            }
        }
    }

    // --- the list -----------------------------------------------------

    fn set_snapshots(&self, mut list: Vec<SnapshotInfo>) {
        model::sort_newest_first(&mut list);
        self.imp().state.borrow_mut().snapshots = list;
        self.rebuild_list();
    }

    fn fetch_snapshot(&self, path: &str) {
        let Some(hiber) = self.hiber() else { return };
        let path = path.to_string();
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = w)]
            self,
            async move {
                let p = path.clone();
                match bus::on_bus(async move { hiber.snapshot(&p).await }).await {
                    Ok(info) => w.put_snapshot(info),
                    Err(e) => warn!(%e, path, "reading a snapshot"),
                }
            }
        ));
    }

    fn put_snapshot(&self, info: SnapshotInfo) {
        {
            let mut st = self.imp().state.borrow_mut();
            st.snapshots.retain(|s| s.path != info.path);
            st.snapshots.push(info);
            model::sort_newest_first(&mut st.snapshots);
        }
        self.rebuild_list();
    }

    fn remove_snapshot(&self, path: &str) {
        {
            let mut st = self.imp().state.borrow_mut();
            st.snapshots.retain(|s| s.path != path);
            st.thumbnails.remove(path);
        }
        self.rebuild_list();
    }

    /// The rows again from the state, keeping the selection.
    fn rebuild_list(&self) {
        let imp = self.imp();
        let selected = self.selected();
        let list = &imp.list;
        while let Some(child) = list.first_child() {
            list.remove(&child);
        }
        let now = now_us();
        let mut missing = Vec::new();
        let rows: Vec<SnapshotRow> = {
            let st = imp.state.borrow();
            st.snapshots
                .iter()
                .map(|s| {
                    let texture = st.thumbnails.get(&s.path);
                    if texture.is_none() && s.screens > 0 {
                        missing.push(s.path.clone());
                    }
                    SnapshotRow::new(s, texture, now)
                })
                .collect()
        };
        for row in &rows {
            list.append(row);
            if selected.as_deref() == Some(row.path().as_str()) {
                list.select_row(Some(row));
            }
        }
        if list.selected_row().is_none() {
            list.select_row(rows.first());
        }
        let empty = rows.is_empty();
        imp.state.borrow_mut().rows = rows;
        if imp.stack.visible_child_name().as_deref() != Some("unavailable") {
            self.show_page(if empty { "empty" } else { "list" });
        }
        for p in missing {
            self.fetch_thumbnail(p);
        }
        self.enable_actions();
    }

    fn refresh_rows(&self) {
        let st = self.imp().state.borrow();
        let now = now_us();
        for row in &st.rows {
            if let Some(s) = st.snapshots.iter().find(|s| s.path == row.path()) {
                row.show(s, now);
            }
        }
    }

    fn fetch_thumbnail(&self, path: String) {
        let Some(hiber) = self.hiber() else { return };
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = w)]
            self,
            async move {
                let p = path.clone();
                let png = match bus::on_bus(async move { hiber.screenshot(&p, 0).await }).await {
                    Ok(png) => png,
                    Err(e) => return warn!(%e, path, "fetching a screenshot"),
                };
                let texture = match gdk::Texture::from_bytes(&glib::Bytes::from_owned(png)) {
                    Ok(t) => t,
                    Err(e) => return warn!(%e, path, "decoding a screenshot"),
                };
                let st = &mut *w.imp().state.borrow_mut();
                let name = st
                    .snapshots
                    .iter()
                    .find(|s| s.path == path)
                    .map(|s| s.name.clone());
                if let (Some(row), Some(name)) = (st.rows.iter().find(|r| r.path() == path), name) {
                    row.set_thumbnail(&texture, &name);
                }
                st.thumbnails.insert(path, texture);
            }
        ));
    }

    fn selected(&self) -> Option<String> {
        let row = self.imp().list.selected_row()?;
        Some(row.downcast_ref::<SnapshotRow>()?.path())
    }

    fn info(&self, path: &str) -> Option<SnapshotInfo> {
        let st = self.imp().state.borrow();
        st.snapshots.iter().find(|s| s.path == path).cloned()
    }

    fn show_details(&self, path: &str) {
        let Some(info) = self.info(path) else { return };
        let texture = self.imp().state.borrow().thumbnails.get(path).cloned();
        Details::new(self.upcast_ref(), &info, texture.as_ref(), now_us()).present();
    }

    // --- save, restore, jobs ------------------------------------------

    fn save(&self) {
        let Some(hiber) = self.hiber() else { return };
        let display = self.display_name();
        self.start_busy("Checking the session…");
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = w)]
            self,
            async move {
                let (h, d) = (hiber.clone(), display.clone());
                let checked = bus::on_bus(async move {
                    let (ok, findings) = h.check(&d).await?;
                    Ok(CheckReport::new(ok, &findings, process_name))
                })
                .await;
                info!(ok = checked.is_ok(), "session checked");
                match checked {
                    Ok(report) if report.needs_asking() => {
                        let (heading, body) = report.question();
                        w.ask_save(hiber, display, heading, &body, report.saveable)
                    }
                    Ok(_) => w.start_save(hiber, display),
                    // The check is advice: when it fails but hiberd may
                    // still save (it refuses what it cannot), ask.
                    Err(e @ (Failure::NoAnswer | Failure::Hiberd { .. })) => {
                        let body = format!(
                            "Hiber could not check the session first: {}.\n\nSaving may still work: anything that cannot be saved stops it, and nothing changes.",
                            e.short()
                        );
                        w.ask_save(hiber, display, "Save This Session?", &body, true)
                    }
                    Err(e) => {
                        w.stop_busy();
                        w.failed("Cannot Check the Session", &e);
                    }
                }
            }
        ));
    }

    /// The check found something: say it plainly, save only if asked to.
    fn ask_save(&self, hiber: Hiber, display: String, heading: &str, body: &str, saveable: bool) {
        let d = adw::MessageDialog::new(Some(self), Some(heading), Some(body));
        d.add_response("cancel", "_Cancel");
        if saveable {
            d.add_response("save", "_Save Anyway");
            d.set_response_appearance("save", adw::ResponseAppearance::Suggested);
            d.set_default_response(Some("save"));
        } else {
            d.add_response("save", "_Try Anyway");
            d.set_default_response(Some("cancel"));
        }
        d.set_close_response("cancel");
        d.connect_response(
            None,
            glib::clone!(
                #[weak(rename_to = w)]
                self,
                move |_, response| {
                    info!(response, "the check's dialog answered");
                    if response == "save" {
                        w.start_save(hiber.clone(), display.clone());
                    } else {
                        w.stop_busy();
                    }
                }
            ),
        );
        d.present();
    }

    /// Save and Log Out: asked first, since every window closes. hiberd
    /// ends the session only once the snapshot is committed and read back
    /// whole; a save that fails leaves it running, and says so here.
    fn ask_save_logout(&self) {
        if self.hiber().is_none() {
            return;
        }
        let d = adw::MessageDialog::new(
            Some(self),
            Some("Save and Log Out?"),
            Some("Every window of this session closes once it is saved. At your next login Hiber offers to bring it back as it was."),
        );
        d.add_responses(&[("cancel", "_Cancel"), ("logout", "_Log Out")]);
        d.set_response_appearance("logout", adw::ResponseAppearance::Suggested);
        d.set_default_response(Some("logout"));
        d.set_close_response("cancel");
        d.connect_response(
            None,
            glib::clone!(
                #[weak(rename_to = w)]
                self,
                move |_, response| {
                    if response == "logout" {
                        w.start_save_logout();
                    }
                }
            ),
        );
        d.present();
    }

    fn start_save_logout(&self) {
        let Some(hiber) = self.hiber() else { return };
        let display = self.display_name();
        self.start_job(
            "Saving before logging out…",
            "save",
            "Saving Failed",
            async move { hiber.save_and_log_out(&display).await },
        );
    }

    fn start_save(&self, hiber: Hiber, display: String) {
        self.start_job("Starting the save…", "save", "Saving Failed", async move {
            hiber.save(&display).await
        });
    }

    fn restore(&self, path: &str) {
        let Some(hiber) = self.hiber() else { return };
        let path = path.to_string();
        // On its display, or on a free one when an X server (a new
        // login's) holds it: the toast says where.
        self.start_job(
            "Starting the restore…",
            "restore",
            "Restoring Failed",
            async move { hiber.restore_anywhere(&path).await },
        );
    }

    /// Busy with `busy` while `start` asks hiberd for a job, then follow
    /// the job; a refusal ends the busy state and shows `failed_heading`.
    fn start_job<F>(
        &self,
        busy: &str,
        operation: &'static str,
        failed_heading: &'static str,
        start: F,
    ) where
        F: std::future::Future<Output = Result<String, Failure>> + Send + 'static,
    {
        self.start_busy(busy);
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = w)]
            self,
            async move {
                match bus::on_bus(start).await {
                    Ok(job) => w.follow_job(job, operation),
                    Err(e) => {
                        w.stop_busy();
                        w.failed(failed_heading, &e);
                    }
                }
            }
        ));
    }

    /// The job bar shows, with a pulsing bar until a job reports progress.
    fn start_busy(&self, text: &str) {
        let imp = self.imp();
        {
            let mut st = imp.state.borrow_mut();
            st.job = Some(JobView::new(""));
            // Ends seen before this call are not its job's (a hiberd
            // started again numbers its jobs from 1 again).
            st.early_ends.clear();
        }
        imp.job_label.set_label(text);
        imp.job_progress.pulse();
        imp.job_cancel.set_sensitive(false);
        imp.job_revealer.set_reveal_child(true);
        imp.job_revealer
            .update_state(&[gtk::accessible::State::Hidden(false)]);
        self.enable_actions();
    }

    fn stop_busy(&self) {
        let imp = self.imp();
        imp.state.borrow_mut().job = None;
        imp.job_revealer.set_reveal_child(false);
        // Hidden for assistive technologies too, as for the stack's pages.
        imp.job_revealer
            .update_state(&[gtk::accessible::State::Hidden(true)]);
        self.enable_actions();
    }

    fn follow_job(&self, path: String, operation: &str) {
        info!(job = path, operation, "following a job");
        let early = {
            let mut st = self.imp().state.borrow_mut();
            let mut job = JobView::new(&path);
            job.operation = operation.into();
            st.job = Some(job);
            let i = st.early_ends.iter().position(|(p, _)| *p == path);
            i.map(|i| st.early_ends.remove(i).1)
        };
        self.show_job();
        if let Some(end) = early {
            return self.job_ended(end);
        }
        let Some(hiber) = self.hiber() else { return };
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = w)]
            self,
            async move {
                let p = path.clone();
                // Properties now; the signals carry them on from here.
                if let Ok(props) = bus::on_bus(async move { hiber.job_properties(&p).await }).await
                {
                    let mut st = w.imp().state.borrow_mut();
                    if let Some(job) = st.job.as_mut().filter(|j| j.path == path) {
                        job.update(&props);
                        drop(st);
                        w.show_job();
                    }
                }
            }
        ));
    }

    fn show_job(&self) {
        let imp = self.imp();
        let st = imp.state.borrow();
        let Some(job) = &st.job else { return };
        imp.job_label.set_label(&job.title());
        if job.progress_valid {
            imp.job_progress.set_fraction(job.progress);
        } else {
            imp.job_progress.pulse();
        }
        imp.job_cancel.set_sensitive(job.cancelable);
    }

    fn cancel_job(&self) {
        let Some(hiber) = self.hiber() else { return };
        let Some(path) = self
            .imp()
            .state
            .borrow()
            .job
            .as_ref()
            .map(|j| j.path.clone())
            .filter(|p| !p.is_empty())
        else {
            return;
        };
        self.imp().job_cancel.set_sensitive(false);
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = w)]
            self,
            async move {
                if let Err(e) = bus::on_bus(async move { hiber.cancel(&path).await }).await {
                    w.error_dialog("Cannot Cancel", &e);
                }
            }
        ));
    }

    fn job_ended(&self, end: JobEnd) {
        let job = self.imp().state.borrow_mut().job.take();
        self.stop_busy();
        let operation = job.map(|j| j.operation).unwrap_or_default();
        info!(
            operation,
            success = end.success,
            error = end.error,
            "job ended"
        );
        if end.cancelled() {
            self.toast("Cancelled; nothing was changed");
        } else if !end.success {
            let heading = if operation == "restore" {
                "Restoring Failed"
            } else {
                "Saving Failed"
            };
            self.error_dialog(
                heading,
                &Failure::Hiberd {
                    name: end.error,
                    message: end.message,
                },
            );
        } else if operation == "restore" {
            // hiberd's message is empty unless the session moved.
            let moved = end.restored_on("");
            if moved.is_empty() {
                self.toast("Session restored");
            } else {
                self.toast(&format!(
                    "Session restored on display {moved}: its own is taken"
                ));
            }
        } else {
            self.toast_saved();
        }
    }

    /// "Session saved — 18 MB", once the new snapshot is listed (hiberd
    /// announces it before the job ends; the list may not have it yet).
    fn toast_saved(&self) {
        let Some(hiber) = self.hiber() else { return };
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = w)]
            self,
            async move {
                match bus::on_bus(async move { hiber.snapshots().await }).await {
                    Ok(mut list) => {
                        model::sort_newest_first(&mut list);
                        let text = match list.first() {
                            Some(s) => format!("Session saved — {}", model::human_size(s.size)),
                            None => "Session saved".to_string(),
                        };
                        w.set_snapshots(list);
                        w.toast(&text);
                    }
                    Err(_) => w.toast("Session saved"),
                }
            }
        ));
    }

    // --- rename and delete --------------------------------------------

    fn ask_rename(&self, path: &str) {
        let Some(info) = self.info(path) else { return };
        let d = adw::MessageDialog::new(Some(self), Some("Rename Snapshot"), None);
        let entry = gtk::Entry::builder()
            .text(&info.name)
            .activates_default(true)
            .build();
        entry.update_property(&[gtk::accessible::Property::Label("New name")]);
        d.set_extra_child(Some(&entry));
        d.add_responses(&[("cancel", "_Cancel"), ("rename", "_Rename")]);
        d.set_response_appearance("rename", adw::ResponseAppearance::Suggested);
        d.set_default_response(Some("rename"));
        d.set_close_response("cancel");
        let path = path.to_string();
        d.connect_response(
            None,
            glib::clone!(
                #[weak(rename_to = w)]
                self,
                #[weak]
                entry,
                move |_, response| {
                    let name = entry.text().trim().to_string();
                    if response == "rename" && !name.is_empty() && name != info.name {
                        w.rename(path.clone(), name);
                    }
                }
            ),
        );
        d.present();
        entry.grab_focus();
    }

    fn rename(&self, path: String, name: String) {
        let Some(hiber) = self.hiber() else { return };
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = w)]
            self,
            async move {
                let p = path.clone();
                let renamed = bus::on_bus(async move {
                    hiber.rename(&p, &name).await?;
                    hiber.snapshot(&p).await
                })
                .await;
                match renamed {
                    Ok(info) => w.put_snapshot(info),
                    Err(e) => w.failed("Renaming Failed", &e),
                }
            }
        ));
    }

    fn ask_delete(&self, path: &str) {
        let Some(info) = self.info(path) else { return };
        let d = adw::MessageDialog::new(
            Some(self),
            Some(&format!("Delete “{}”?", info.name)),
            Some(&format!(
                "This frees {} of disk space. The snapshot cannot be brought back.",
                model::human_size(info.size)
            )),
        );
        d.add_responses(&[("cancel", "_Cancel"), ("delete", "_Delete")]);
        d.set_response_appearance("delete", adw::ResponseAppearance::Destructive);
        d.set_default_response(Some("cancel"));
        d.set_close_response("cancel");
        d.connect_response(
            None,
            glib::clone!(
                #[weak(rename_to = w)]
                self,
                move |_, response| {
                    if response == "delete" {
                        w.delete(info.clone());
                    }
                }
            ),
        );
        d.present();
    }

    fn delete(&self, info: SnapshotInfo) {
        let Some(hiber) = self.hiber() else { return };
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = w)]
            self,
            async move {
                let p = info.path.clone();
                match bus::on_bus(async move { hiber.delete(&p).await }).await {
                    Ok(()) => {
                        w.remove_snapshot(&info.path);
                        w.toast(&format!(
                            "Snapshot deleted — {} freed",
                            model::human_size(info.size)
                        ));
                    }
                    Err(e) => w.failed("Deleting Failed", &e),
                }
            }
        ));
    }
}

/// A process's name from /proc, for the check's sentences (the app runs as
/// the session's user, who may read it).
fn process_name(pid: i32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_string()).filter(|c| !c.is_empty())
}
