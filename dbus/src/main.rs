//! hiberd: Hiber's system D-Bus service, `org.hiber.Hiber1`. Saves,
//! lists, restores and deletes users' desktop sessions on their behalf,
//! with jobs, progress, cancel and polkit. It owns the bus API and the
//! authorization of callers; the work is hiber-session's `system_store`.
//!
//! `hiberd [--state-dir DIR] [--idle-timeout SECS]`: the service (it
//! connects to the system bus, or to `DBUS_SYSTEM_BUS_ADDRESS`).
//! `hiberd --restore-helper UID ID`: internal, see `restore_helper`.

mod auth;
mod daemon;
mod error;
mod job;
mod manager;
mod objects;
mod restore_helper;
mod scope;
mod sleep;
mod snapshot;

use anyhow::{bail, Context, Result};
use daemon::{Daemon, BUS_NAME, ROOT};
use hiber_session::system_store::{Store, DEFAULT_BASE};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{info, warn};

/// How long SIGTERM waits for jobs that cannot be cancelled any more.
const STOP_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Args {
    state_dir: PathBuf,
    /// Exit after this long without calls or jobs; zero: never.
    idle: Duration,
    linger: Duration,
}

fn env_secs(key: &str) -> Result<Option<f64>> {
    match std::env::var(key) {
        Ok(v) => Ok(Some(v.parse().with_context(|| {
            format!("{key}={v:?} is not a number of seconds")
        })?)),
        Err(_) => Ok(None),
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let mut out = Args {
        state_dir: std::env::var_os("HIBER_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_BASE.into()),
        idle: Duration::from_secs_f64(env_secs("HIBERD_IDLE_TIMEOUT")?.unwrap_or(60.0)),
        linger: Duration::from_secs_f64(env_secs("HIBERD_JOB_LINGER")?.unwrap_or(5.0)),
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--state-dir" => out.state_dir = value()?.into(),
            "--idle-timeout" => {
                let v = value()?;
                out.idle = Duration::from_secs_f64(
                    v.parse().with_context(|| format!("--idle-timeout {v:?}"))?,
                );
            }
            _ => bail!("unknown argument {a:?} (hiberd [--state-dir DIR] [--idle-timeout SECS])"),
        }
    }
    Ok(out)
}

fn init_logging() {
    let filter = std::env::var("HIBERD_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(args: Args) -> Result<()> {
    let store = Store::new(&args.state_dir);
    hiber_core::image::create_private_dir_all(store.base())
        .with_context(|| format!("creating the store {}", store.base().display()))?;
    store.recover();
    let daemon = Daemon::new(store, args.linger);
    // Objects first, the name last: a client that sees the name finds
    // everything served.
    let conn = zbus::connection::Builder::system()
        .context("connecting to the system bus")?
        .serve_at(
            ROOT,
            manager::Manager {
                daemon: daemon.clone(),
            },
        )?
        .serve_at(
            ROOT,
            objects::Objects {
                daemon: daemon.clone(),
            },
        )?
        .build()
        .await
        .context("connecting to the system bus")?;
    daemon.set_connection(conn.clone());
    daemon
        .load_snapshots()
        .await
        .context("serving the stored snapshots")?;
    conn.request_name(BUS_NAME)
        .await
        .with_context(|| format!("owning {BUS_NAME}"))?;
    info!(store = %args.state_dir.display(), idle = ?args.idle, "hiberd serving");
    tokio::spawn(sleep::watch(daemon.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("catching SIGTERM")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("catching SIGINT")?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                if args.idle.is_zero() {
                    continue;
                }
                if daemon.idle_for().is_some_and(|t| t >= args.idle) {
                    info!("idle: exiting (the bus starts hiberd again when called)");
                    let _ = conn.release_name(BUS_NAME).await;
                    // A call that raced the release is answered before leaving.
                    if daemon.idle_for().is_some_and(|t| t >= args.idle) {
                        return Ok(());
                    }
                    conn.request_name(BUS_NAME).await?;
                }
            }
        }
    }
    info!(
        running = daemon.running_jobs(),
        "stopping: cancelling what can be cancelled, finishing the rest"
    );
    daemon.stopping.store(true, Ordering::Release);
    let _ = conn.release_name(BUS_NAME).await;
    daemon.cancel_all();
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while daemon.running_jobs() > 0 {
        let ended = daemon.job_ended.notified();
        if daemon.running_jobs() == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, ended).await.is_err() {
            warn!(
                running = daemon.running_jobs(),
                "jobs still running at the deadline"
            );
            break;
        }
    }
    info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("--restore-helper") {
        let rest: Vec<String> = argv.skip(1).collect();
        let (uid, id, display, memory) = match rest.as_slice() {
            [uid, id] => (uid, id, "", ""),
            [uid, id, display] => (uid, id, display.as_str(), ""),
            [uid, id, display, memory] => (uid, id, display.as_str(), memory.as_str()),
            _ => {
                eprintln!("hiberd: --restore-helper UID ID [DISPLAY [MEMORY]]");
                return ExitCode::FAILURE;
            }
        };
        init_logging();
        let base = std::env::var_os("HIBER_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_BASE.into());
        return restore_helper::main(&base, uid, id, display, memory);
    }
    init_logging();
    let args = match parse_args(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hiberd: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hiberd: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hiberd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
