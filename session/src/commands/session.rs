//! `hiber session`: a display's whole session, found from the display.

use super::check::{exit_status, print_refused, print_report, CheckFlags, EXIT_REFUSED};
use super::checkpoint::SaveFlags;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hiber_core::{CheckpointError, Stage};
use hiber_session::discover::{FindOptions, SessionSet};
use hiber_session::display_session::{self, SaveOptions, SessionError};
use hiber_session::services::{self, ServiceRules};
use hiber_session::{format, snapshots, system_store};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Find the session on a display and report what can be saved.
    Check {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        flags: CheckFlags,
    },
    /// Save the session on a display (into the snapshots directory unless -o).
    Checkpoint {
        #[command(flatten)]
        target: Target,
        /// Image directory [default: a new snapshot in the snapshots directory].
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        save: SaveFlags,
    },
    /// Restore a saved session (a snapshot name or an image directory) and
    /// compare its windows with the recorded ones.
    Restore {
        snapshot: String,
        /// Restore onto this display (`:N`) instead of the saved one.
        #[arg(long, value_name = ":N", value_parser = parse_display_arg, conflicts_with = "free_display")]
        display: Option<u32>,
        /// When another X server holds the saved display, restore onto the
        /// first free display number above it.
        #[arg(long)]
        free_display: bool,
        /// How memory comes back: `lazy` (the session runs at once, pages
        /// follow on first touch and in the background), `eager` (every
        /// page before it runs) or `auto` (lazy from 256 MiB of memory).
        #[arg(long, value_name = "HOW", default_value = "auto", value_parser = parse_memory_arg)]
        memory: display_session::MemoryLoading,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Suspend the session on a display: save it into hiberd's store
    /// (kind logout, pending), read the image back, and end the session
    /// only once it is whole; the app offers it back at the next login.
    Suspend {
        /// The X display, `:N` [default: $DISPLAY].
        #[arg(long, short)]
        display: Option<String>,
        /// Whose session it must be [default: the display's owner].
        #[arg(long)]
        user: Option<u32>,
        /// A name for the snapshot [default: its id].
        #[arg(long)]
        name: Option<String>,
        /// hiberd's store [default: $HIBER_STATE_DIR, else /var/lib/hiber].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the snapshots with their date, size and window count.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a snapshot and the store space only it used.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Which session: a display, and whose it must be.
#[derive(Debug, Args)]
pub struct Target {
    /// The X display, `:N` [default: $DISPLAY].
    #[arg(long, short)]
    display: Option<String>,
    /// Whose session it must be (root only) [default: the caller].
    #[arg(long)]
    user: Option<u32>,
    /// Never include this pid or its descendants (repeatable).
    #[arg(long)]
    exclude: Vec<i32>,
}

impl Target {
    fn display(&self) -> Result<u32> {
        let given = match &self.display {
            Some(d) => d.clone(),
            None => {
                std::env::var("DISPLAY").context("no --display given and DISPLAY is not set")?
            }
        };
        display_session::parse_display(&given)
            .with_context(|| format!("{given:?} is not a local X display (:N)"))
    }

    fn find(&self) -> Result<FindOptions> {
        // SAFETY: getuid cannot fail.
        let caller = unsafe { libc::getuid() };
        let user = self.user.unwrap_or(caller);
        if user != caller && caller != 0 {
            bail!("only root may act on another user's session");
        }
        Ok(FindOptions {
            user,
            exclude: self.exclude.clone(),
            services: service_rules()?,
        })
    }
}

/// Environment variable naming the service policy file (for tests and
/// trial configurations).
pub const SERVICE_POLICY_FILE_ENV: &str = "HIBER_SERVICE_POLICY_FILE";

/// The session-service rules: `$HIBER_SERVICE_POLICY_FILE` (which must
/// exist) or `/etc/hiber/services.toml` (when it exists) over the built-in
/// ones.
fn service_rules() -> Result<ServiceRules> {
    let named = std::env::var_os(SERVICE_POLICY_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if let Some(path) = &named {
        if !path.exists() {
            bail!("service policy file {} does not exist", path.display());
        }
    }
    let file = named.unwrap_or_else(|| PathBuf::from(services::SYSTEM_CONFIG));
    ServiceRules::load(Some(&file)).context("loading the session service rules")
}

/// The session services left out, and what becomes of them (`stop`: the
/// save's, None for check).
fn print_services(session: &SessionSet, stop: Option<bool>) {
    for s in &session.services {
        let with = if s.descendants.is_empty() {
            String::new()
        } else {
            format!(" with pids {:?}", s.descendants)
        };
        let place = if s.below_member {
            format!("started by pid {} of the session", s.member)
        } else {
            format!("talks with pid {}", s.member)
        };
        println!(
            "session service pid {} ({}){with}, {place}: {} ({}, {}): {}",
            s.pid,
            s.comm,
            s.decision.kind,
            s.decision.name,
            s.decision.origin,
            s.fate(stop)
        );
    }
}

fn print_outside(session: &SessionSet) {
    for o in &session.outside {
        eprintln!(
            "hiber: outside the session: pid {} ({}) talks with pid {}: {}",
            o.pid, o.comm, o.member, o.reason
        );
    }
}

pub fn run(cmd: SessionCommand) -> Result<ExitCode> {
    match cmd {
        SessionCommand::Check { target, flags } => check(&target, &flags),
        SessionCommand::Checkpoint {
            target,
            output,
            save,
        } => checkpoint(&target, output, &save),
        SessionCommand::Restore {
            snapshot,
            display,
            free_display,
            memory,
            json,
        } => {
            let choice = match (display, free_display) {
                (Some(n), _) => display_session::DisplayChoice::Exactly(n),
                (None, true) => display_session::DisplayChoice::SavedOrFree,
                (None, false) => display_session::DisplayChoice::Saved,
            };
            restore(&snapshot, choice, memory, json)
        }
        SessionCommand::Suspend {
            display,
            user,
            name,
            state_dir,
            json,
        } => suspend(display, user, name, state_dir, json),
        SessionCommand::List { json } => list(json),
        SessionCommand::Rm { names } => rm(&names),
    }
}

#[derive(Debug, Serialize)]
struct CheckOutput<'a> {
    display: u32,
    x_server: i32,
    processes: Vec<i32>,
    roots: &'a [i32],
    /// Session services left out of the set, and what becomes of them.
    services: Vec<ServiceOutput<'a>>,
    report: &'a hiber_core::Report,
}

#[derive(Debug, Serialize)]
struct ServiceOutput<'a> {
    #[serde(flatten)]
    service: &'a services::LeftOut,
    fate: String,
}

fn check(target: &Target, flags: &CheckFlags) -> Result<ExitCode> {
    let display = target.display()?;
    let devices = flags.devices.load()?;
    let (session, mut report) = display_session::check(display, &target.find()?, &devices)
        .with_context(|| format!("checking the session on display :{display}"))?;
    if flags.no_reset {
        report.refuse_resets();
    }
    if flags.json {
        let out = CheckOutput {
            display,
            x_server: session.x_server,
            processes: session.processes.iter().copied().collect(),
            roots: &session.roots,
            services: session
                .services
                .iter()
                .map(|s| ServiceOutput {
                    service: s,
                    fate: s.fate(None),
                })
                .collect(),
            report: &report,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "display :{display}: X server pid {}, {} processes in {} trees",
            session.x_server,
            session.processes.len(),
            session.roots.len()
        );
        print_outside(&session);
        print_services(&session, None);
        print_report(&report, flags.brief);
    }
    Ok(exit_status(&report))
}

#[derive(Debug, Serialize)]
struct CheckpointOutput {
    display: u32,
    windows: usize,
    /// With --stop: the session services ended with the session.
    services_ended: Vec<services::Ended>,
    #[serde(flatten)]
    saved: super::checkpoint::Output,
}

fn checkpoint(target: &Target, output: Option<PathBuf>, save: &SaveFlags) -> Result<ExitCode> {
    let precopy = save.precopy_mode();
    let SaveFlags {
        stop,
        verify,
        no_reset,
        json,
        ref devices,
        ..
    } = *save;
    let display = target.display()?;
    let devices = devices.load()?;
    let (dir, store) = match output {
        Some(o) => {
            let store = super::checkpoint::default_store(&o);
            (o, store)
        }
        None => {
            let root = snapshots::default_dir();
            // Snapshots hold the session's memory: the owner's alone.
            hiber_core::image::create_private_dir_all(&root)
                .with_context(|| format!("creating {}", root.display()))?;
            let name = snapshots::new_name(&root, display);
            (root.join(name), snapshots::store_of(&root))
        }
    };
    let find = target.find()?;
    let opts = SaveOptions {
        verify_before_stop: verify,
        display,
        user: find.user,
        exclude: target.exclude.clone(),
        services: find.services,
        dir: dir.clone(),
        store: Some(store),
        stop,
        no_reset,
        precopy,
        devices,
    };
    let bar = (std::io::stderr().is_terminal() && !json).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
        bar
    });
    let progress = |stage: Stage| {
        if let Some(bar) = &bar {
            bar.set_message(match stage {
                Stage::WaitingForMemory => "waiting for the restored memory to come in",
                Stage::Precopying { .. } => "saving memory while the session runs",
                Stage::Freezing => "freezing",
                Stage::Inspecting => "inspecting",
                Stage::DumpingMemory { .. } => "saving memory",
                Stage::Committing => "committing",
            });
            bar.tick();
        }
    };
    let result = display_session::save(&opts, &progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let saved = match result {
        Ok(s) => s,
        Err(SessionError::Checkpoint(CheckpointError::Refused(report))) => {
            print_refused(&report, "the session keeps running");
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "saving the session on display :{display} into {}",
                    dir.display()
                )
            })
        }
    };
    let stats = &saved.stats;
    let out = CheckpointOutput {
        display,
        windows: saved.record.windows.len(),
        services_ended: saved.ended.clone(),
        saved: stats.into(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_outside(&saved.session);
        print_services(&saved.session, Some(stop));
        for e in saved.ended.iter().filter(|e| e.problem.is_some()) {
            eprintln!(
                "hiber: session service pid {} ({}): {}",
                e.pid,
                e.comm,
                e.problem.as_deref().unwrap_or_default()
            );
        }
        println!(
            "saved the session on display :{display} ({} processes, {} windows) to {}: frozen {}, total {}, image {}, {} newly written{}",
            out.saved.processes,
            out.windows,
            out.saved.dir.display(),
            format::millis(stats.frozen),
            format::millis(stats.total),
            format::bytes(out.saved.image_bytes),
            format::bytes(out.saved.written_bytes),
            if stop { "; session ended" } else { "" },
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct RestoreOutput {
    display: u32,
    saved_display: u32,
    pids: Vec<(i32, i32)>,
    keeper: Option<i32>,
    elapsed_ms: f64,
    windows: usize,
    changes: Vec<String>,
    reopened: Vec<hiber_session::service_files::Reopened>,
    /// "eager" or "lazy".
    memory: display_session::MemoryLoading,
    /// A lazy restore's page server status file, while pages come in.
    lazy_status: Option<std::path::PathBuf>,
}

fn parse_display_arg(s: &str) -> std::result::Result<u32, String> {
    display_session::parse_display(s).ok_or_else(|| format!("{s:?} is not a display (:N)"))
}

fn parse_memory_arg(s: &str) -> std::result::Result<display_session::MemoryLoading, String> {
    display_session::MemoryLoading::parse(s)
        .ok_or_else(|| format!("{s:?} is not one of auto, eager, lazy"))
}

fn restore(
    what: &str,
    choice: display_session::DisplayChoice,
    memory: display_session::MemoryLoading,
    json: bool,
) -> Result<ExitCode> {
    let dir = snapshots::resolve(&snapshots::default_dir(), what)?;
    let r = display_session::restore_onto(&dir, None, choice, memory, &|_, _| {}, &|| false)
        .with_context(|| format!("restoring the session in {}", dir.display()))?;
    let changes: Vec<String> = r.changes.iter().map(|c| c.to_string()).collect();
    if json {
        let out = RestoreOutput {
            display: r.display,
            saved_display: r.saved_display,
            pids: r.restored.pids.clone(),
            keeper: r.restored.keeper,
            elapsed_ms: r.restored.elapsed.as_secs_f64() * 1e3,
            windows: r.now.windows.len(),
            changes,
            reopened: r.reopened.clone(),
            memory: r.memory,
            lazy_status: r.restored.lazy_status.clone(),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "restored the session on display :{} ({} processes) in {}; keeper pid {}",
        r.display,
        r.restored.pids.len(),
        format::millis(r.restored.elapsed),
        r.restored.keeper.map_or("none".into(), |k| k.to_string()),
    );
    if let Some(status) = &r.restored.lazy_status {
        println!(
            "its memory comes in lazily, on first touch and in the background; status: {} (removed once every page is in)",
            status.display()
        );
    }
    if r.display != r.saved_display {
        println!(
            "saved on display :{}, which another X server holds: restored onto :{} (connected programs follow; a program started from a restored shell still reads DISPLAY=:{} — start it with DISPLAY=:{})",
            r.saved_display, r.display, r.saved_display, r.display
        );
    }
    if changes.is_empty() {
        println!(
            "all {} recorded windows are back as they were",
            r.recorded.record.windows.len()
        );
    } else {
        println!("the windows differ from the recorded ones:");
        for c in &changes {
            println!("  {c}");
        }
    }
    for f in &r.reopened {
        match &f.problem {
            None => println!(
                "reopened {} (pid {} fd {}) once its service was back",
                f.path.display(),
                f.pid,
                f.fd
            ),
            Some(why) => println!(
                "not reopened: {} (pid {} fd {}): {why}; reads of it fail",
                f.path.display(),
                f.pid,
                f.fd
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The progress of a suspend, on a terminal.
struct SuspendProgress {
    bar: Option<ProgressBar>,
}

impl system_store::JobControl for SuspendProgress {
    fn progress(&self, p: system_store::Progress) {
        if let Some(bar) = &self.bar {
            bar.set_message(p.stage);
            bar.tick();
        }
    }
}

/// Save `display`'s session as hiberd's `SaveSession` with `stop` and kind
/// `logout` does (the same `system_store` call): into the root-owned
/// store, marked pending before it starts, verified before the session
/// ends.
fn suspend(
    display: Option<String>,
    user: Option<u32>,
    name: Option<String>,
    state_dir: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    let target = Target {
        display,
        user: None,
        exclude: Vec::new(),
    };
    let display = target.display()?;
    let base = state_dir
        .or_else(|| std::env::var_os("HIBER_STATE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| system_store::DEFAULT_BASE.into());
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "hiber session suspend writes hiberd's store {}, which is root's alone: run it as root, \
             or let hiberd do it (the app's Save and Log Out, or: busctl call org.hiber.Hiber1 \
             /org/hiber/Hiber1 org.hiber.Hiber1.Manager SaveSession 'sa{{sv}}' :{display} 2 kind s logout stop b true)",
            base.display()
        );
    }
    let owner = match user {
        Some(u) => u,
        None => system_store::display_owner(display)
            .with_context(|| format!("finding whose session display :{display} is"))?,
    };
    let store = system_store::Store::new(&base);
    let req = system_store::SaveRequest {
        display,
        owner,
        name,
        kind: system_store::SaveKind::Logout,
        stop: true,
    };
    let bar = (std::io::stderr().is_terminal() && !json).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
        bar
    });
    let progress = SuspendProgress { bar };
    let started = std::time::Instant::now();
    let result = store.save(&req, &progress);
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    let entry = match result {
        Ok(e) => e,
        Err(system_store::SystemStoreError::Refused { refusals }) => {
            eprintln!("hiber: the session cannot be saved; it keeps running:\n{refusals}");
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "suspending the session on display :{display} into {}; it keeps running",
                    base.display()
                )
            })
        }
    };
    let elapsed = started.elapsed();
    if json {
        let out = serde_json::json!({
            "display": display,
            "uid": entry.uid,
            "id": entry.id,
            "dir": store.user_dir(entry.uid).join(&entry.id),
            "pending": entry.pending,
            "windows": entry.windows.len(),
            "size": entry.size,
            "elapsed_ms": elapsed.as_secs_f64() * 1e3,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "suspended the session on display :{display} (uid {}, {} windows) in {}: snapshot {} in {}, {}; the session has ended and is offered back at the next login",
            entry.uid,
            entry.windows.len(),
            format::millis(elapsed),
            entry.id,
            store.user_dir(entry.uid).display(),
            format::bytes(entry.size),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn list(json: bool) -> Result<ExitCode> {
    let dir = snapshots::default_dir();
    let all = snapshots::list(&dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("no snapshots in {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32} {:<20} {:>10} {:>8} {:>9}",
        "NAME", "SAVED", "SIZE", "DISPLAY", "WINDOWS"
    );
    for s in &all {
        let windows = s.windows.map_or("-".into(), |w| w.to_string());
        println!(
            "{:<32} {:<20} {:>10} {:>8} {:>9}{}",
            s.name,
            format::local_time(s.created_unix),
            format::bytes(s.bytes),
            s.display.as_deref().unwrap_or("-"),
            windows,
            s.damaged
                .as_ref()
                .map_or(String::new(), |d| format!("  DAMAGED: {d}"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn rm(names: &[String]) -> Result<ExitCode> {
    let dir = snapshots::default_dir();
    for name in names {
        let freed = snapshots::remove(&dir, name).with_context(|| format!("removing {name}"))?;
        println!(
            "removed {name}; {} freed in the store",
            format::bytes(freed.removed_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
