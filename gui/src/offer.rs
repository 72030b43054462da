//! The offer at login (`hiber-gtk --offer-pending`, run by the XDG
//! autostart entry): when the user has a pending snapshot (saved at logout
//! or before a sleep never woken from), a window offers it back —
//! Restore, Later, Discard. Restore asks hiberd for the saved display, or
//! the first free one above it when this login's X server holds it, and
//! then says where the session is and how to get there. A snapshot that
//! cannot be restored (hiberd's check, or the restore failing) is shown
//! with the reason; the user keeps it (in the app's list, no longer
//! offered) or discards it. Nothing is ever deleted without the user
//! asking. With no pending snapshot it exits at once, showing nothing.

use crate::bus::{self, Event, Failure, Hiber};
use crate::console;
use crate::model::{self, JobEnd, JobView, SnapshotInfo};
use adw::prelude::*;
use gtk::glib;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tracing::{info, warn};

/// The offer's widgets and where it stands.
struct Offer {
    app: adw::Application,
    hiber: Hiber,
    snapshot: SnapshotInfo,
    window: adw::ApplicationWindow,
    page: adw::StatusPage,
    buttons: gtk::Box,
    progress: gtk::ProgressBar,
    /// The restore job being followed, once hiberd named it.
    job: RefCell<Option<String>>,
    /// Job ends seen before the job's path was known (a fast restore can
    /// end before `Restore` returned).
    early: RefCell<Vec<(String, JobEnd)>>,
    restoring: Cell<bool>,
}

/// A button of the offer: its label, a style class, what it does.
type OfferButton = (&'static str, Option<&'static str>, fn(&Rc<Offer>));

fn now_us() -> u64 {
    glib::real_time().max(0) as u64
}

/// Look for a pending snapshot; offer the newest, or quit at once. The
/// exit status goes to `status` (1 when hiberd cannot be asked).
pub fn start(app: &adw::Application, status: Rc<Cell<i32>>) {
    // Kept running while the bus is asked, with no window yet.
    let hold = app.hold();
    let app = app.clone();
    glib::spawn_future_local(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (hiber, list) = match bus::on_bus(Hiber::connect(tx)).await {
            Ok(connected) => connected,
            Err(failure) => {
                // At login, with nobody asking: the log says it, no window.
                eprintln!("hiber-gtk: cannot look for a pending session: {failure}");
                status.set(1);
                drop(hold);
                return app.quit();
            }
        };
        let mut pending: Vec<SnapshotInfo> = list.into_iter().filter(|s| s.pending).collect();
        model::sort_newest_first(&mut pending);
        let Some(newest) = pending.first().cloned() else {
            info!("no pending snapshot: nothing to offer");
            drop(hold);
            return app.quit();
        };
        info!(
            snapshot = newest.path,
            pending = pending.len(),
            "offering a pending snapshot"
        );
        let offer = Offer::new(&app, hiber, newest, pending.len());
        drop(hold);
        while let Some(ev) = rx.recv().await {
            offer.on_event(ev);
        }
    });
}

fn pill(label: &str, class: Option<&str>) -> gtk::Button {
    let b = gtk::Button::builder().label(label).build();
    b.add_css_class("pill");
    if let Some(c) = class {
        b.add_css_class(c);
    }
    b
}

impl Offer {
    fn new(app: &adw::Application, hiber: Hiber, snapshot: SnapshotInfo, count: usize) -> Rc<Self> {
        let window = adw::ApplicationWindow::builder()
            .application(app)
            .title("Restore Your Session")
            .default_width(680)
            .default_height(580)
            .build();
        let header = adw::HeaderBar::builder()
            .title_widget(&adw::WindowTitle::new("Hiber", "Your saved session"))
            .build();
        let page = adw::StatusPage::builder()
            .icon_name("org.hiber.Hiber-symbolic")
            .vexpand(true)
            .build();
        let buttons = gtk::Box::builder()
            .spacing(12)
            .halign(gtk::Align::Center)
            .build();
        let progress = gtk::ProgressBar::builder().visible(false).build();
        progress.update_property(&[gtk::accessible::Property::Label("Restore progress")]);
        let inner = gtk::Box::builder()
            .orientation(gtk::Orientation::Vertical)
            .spacing(18)
            .build();
        inner.append(&progress);
        inner.append(&buttons);
        page.set_child(Some(&inner));
        let content = gtk::Box::builder()
            .orientation(gtk::Orientation::Vertical)
            .build();
        content.append(&header);
        content.append(&page);
        window.set_content(Some(&content));
        let offer = Rc::new(Self {
            app: app.clone(),
            hiber,
            snapshot,
            window,
            page,
            buttons,
            progress,
            job: RefCell::new(None),
            early: RefCell::new(Vec::new()),
            restoring: Cell::new(false),
        });
        if offer.snapshot.restorable {
            offer.show_offer(count);
        } else {
            let problem = offer.snapshot.problem.clone();
            offer.show_cannot("Your Saved Session Cannot Be Restored", &problem);
        }
        offer.window.present();
        offer
    }

    fn set_buttons(self: &Rc<Self>, buttons: &[OfferButton]) {
        while let Some(child) = self.buttons.first_child() {
            self.buttons.remove(&child);
        }
        for &(label, class, f) in buttons {
            let b = pill(label, class);
            let me = Rc::downgrade(self);
            b.connect_clicked(move |_| {
                if let Some(me) = me.upgrade() {
                    f(&me)
                }
            });
            self.buttons.append(&b);
        }
        self.buttons.set_visible(!buttons.is_empty());
    }

    fn show_offer(self: &Rc<Self>, count: usize) {
        self.page.set_title("Restore Your Session?");
        let mut text = self.snapshot.offer_text(now_us());
        text.push_str(" Restore brings its windows and programs back where they were.");
        if count > 1 {
            text.push_str(&format!(
                " ({} older saved sessions wait in Hiber's list.)",
                count - 1
            ));
        }
        self.page.set_description(Some(&text));
        self.set_buttons(&[
            ("Restore", Some("suggested-action"), Self::restore),
            ("Later", None, Self::later),
            ("Discard", Some("destructive-action"), Self::ask_discard),
        ]);
    }

    /// The snapshot cannot come back (hiberd's check, or the restore
    /// failed): why, then Keep or Discard.
    fn show_cannot(self: &Rc<Self>, title: &str, why: &str) {
        self.progress.set_visible(false);
        self.page.set_title(title);
        self.page.set_description(Some(&format!(
            "{} It cannot be restored: {why}\n\nKeep it in Hiber's list of snapshots, to try again from the app (it is no longer offered at login), or discard it.",
            self.snapshot.offer_text(now_us())
        )));
        self.set_buttons(&[
            ("Keep", Some("suggested-action"), Self::keep),
            ("Discard", Some("destructive-action"), Self::ask_discard),
        ]);
    }

    /// Later: it stays pending, offered again at the next login.
    fn later(self: &Rc<Self>) {
        info!(snapshot = self.snapshot.path, "later: left pending");
        self.app.quit();
    }

    fn keep(self: &Rc<Self>) {
        let (hiber, path) = (self.hiber.clone(), self.snapshot.path.clone());
        let me = self.clone();
        glib::spawn_future_local(async move {
            match bus::on_bus(async move { hiber.clear_pending(&path).await }).await {
                Ok(()) => {
                    info!(snapshot = me.snapshot.path, "kept, no longer pending");
                    me.app.quit();
                }
                Err(e) => me.error("Cannot Keep the Snapshot", &e),
            }
        });
    }

    fn ask_discard(self: &Rc<Self>) {
        let d = adw::MessageDialog::new(
            Some(&self.window),
            Some("Discard the Saved Session?"),
            Some(&format!(
                "Its windows and programs cannot be brought back. This frees {} of disk space.",
                model::human_size(self.snapshot.size)
            )),
        );
        d.add_responses(&[("cancel", "_Cancel"), ("discard", "_Discard Session")]);
        d.set_response_appearance("discard", adw::ResponseAppearance::Destructive);
        d.set_default_response(Some("cancel"));
        d.set_close_response("cancel");
        let me = Rc::downgrade(self);
        d.connect_response(None, move |_, response| {
            if let (Some(me), "discard") = (me.upgrade(), response) {
                me.discard();
            }
        });
        d.present();
    }

    fn discard(self: &Rc<Self>) {
        let (hiber, path) = (self.hiber.clone(), self.snapshot.path.clone());
        let me = self.clone();
        glib::spawn_future_local(async move {
            match bus::on_bus(async move { hiber.delete(&path).await }).await {
                Ok(()) => {
                    info!(snapshot = me.snapshot.path, "discarded");
                    me.app.quit();
                }
                Err(e) => me.error("Cannot Discard the Snapshot", &e),
            }
        });
    }

    fn restore(self: &Rc<Self>) {
        if self.restoring.replace(true) {
            return;
        }
        self.page.set_title("Restoring Your Session…");
        self.page
            .set_description(Some(&self.snapshot.offer_text(now_us())));
        self.set_buttons(&[]);
        self.progress.set_visible(true);
        self.progress.pulse();
        let (hiber, path) = (self.hiber.clone(), self.snapshot.path.clone());
        let me = self.clone();
        glib::spawn_future_local(async move {
            match bus::on_bus(async move { hiber.restore_anywhere(&path).await }).await {
                Ok(job) => {
                    info!(job, "restoring");
                    *me.job.borrow_mut() = Some(job.clone());
                    let early = {
                        let mut early = me.early.borrow_mut();
                        let i = early.iter().position(|(p, _)| *p == job);
                        i.map(|i| early.remove(i).1)
                    };
                    if let Some(end) = early {
                        me.job_ended(end);
                    }
                }
                Err(e) => {
                    me.restoring.set(false);
                    me.show_cannot("Your Session Could Not Be Restored", &e.short());
                }
            }
        });
    }

    fn on_event(self: &Rc<Self>, ev: Event) {
        let ours = |p: &str| self.job.borrow().as_deref() == Some(p);
        match ev {
            Event::JobChanged(p, props) if ours(&p) => {
                let mut view = JobView::new(&p);
                view.update(&props);
                if view.progress_valid && view.progress > 0.0 {
                    self.progress.set_fraction(view.progress);
                }
            }
            Event::JobCompleted(p, end) => {
                if ours(&p) {
                    self.job_ended(end);
                } else if self.restoring.get() && self.job.borrow().is_none() {
                    self.early.borrow_mut().push((p, end));
                }
            }
            Event::ServiceGone | Event::ConnectionLost if self.restoring.get() => {
                self.job.borrow_mut().take();
                self.restoring.set(false);
                self.show_cannot(
                    "Your Session Could Not Be Restored",
                    "Hiber's service stopped before the restore ended",
                );
            }
            _ => {}
        }
    }

    fn job_ended(self: &Rc<Self>, end: JobEnd) {
        self.job.borrow_mut().take();
        self.restoring.set(false);
        self.progress.set_visible(false);
        info!(
            success = end.success,
            error = end.error,
            message = end.message,
            "restore ended"
        );
        if !end.success {
            let why = if end.message.is_empty() {
                end.error.clone()
            } else {
                end.message.clone()
            };
            return self.show_cannot("Your Session Could Not Be Restored", &why);
        }
        let on = end.restored_on(&self.snapshot.display);
        // The key of its VT, unless this login's server says the same VT
        // (then the restored server's is not to be trusted).
        let here = WidgetExt::display(&self.window).name().to_string();
        let vt = console::vt_of_display(&on).filter(|v| console::vt_of_display(&here) != Some(*v));
        let (title, body) = model::restored_words(&on, &self.snapshot.display, vt);
        self.page.set_title(&title);
        self.page.set_description(Some(&body));
        self.set_buttons(&[("Close", Some("suggested-action"), |me| me.app.quit())]);
    }

    fn error(&self, heading: &str, failure: &Failure) {
        warn!(%failure, heading, "offer");
        let (_, text) = failure.words();
        let d = adw::MessageDialog::new(Some(&self.window), Some(heading), Some(&text));
        d.add_response("close", "_Close");
        d.set_default_response(Some("close"));
        d.set_close_response("close");
        d.present();
    }
}
