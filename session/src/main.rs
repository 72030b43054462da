//! `hiber`: save and restore Linux process trees and whole desktop
//! sessions to images.

mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "hiber",
    version,
    about = "Checkpoint and restore Linux process trees"
)]
struct Cli {
    /// Log level filter (also from HIBER_LOG), e.g. "debug" or "hiber_core=trace".
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report, for the process trees under PIDs, every process, fd and
    /// mapping with its policy and the reason. Exits 3 if anything is refused.
    Check {
        #[arg(required = true)]
        pids: Vec<i32>,
        #[command(flatten)]
        flags: commands::check::CheckFlags,
    },
    /// Save the process trees under PIDs into an image directory.
    Checkpoint(commands::checkpoint::Args),
    /// Bring the processes of an image back; returns once they run on their own.
    Restore {
        dir: PathBuf,
        /// Restore into a fresh pid namespace (when the saved pids are taken).
        #[arg(long)]
        pidns: bool,
        /// Parent the restored roots under a session keeper (a subreaper
        /// that outlives this command) instead of this command's caller.
        /// Implied when the image holds device event (uevent) sockets: the
        /// keeper runs their uevent proxy.
        #[arg(long)]
        keeper: bool,
        /// Restore on behalf of the user with this uid: the image's
        /// processes must have credentials that user could restore (their
        /// own), even when the restorer is root.
        #[arg(long, value_name = "UID")]
        for_user: Option<u32>,
        /// Lazy restore: return as soon as the processes run; their
        /// private anonymous memory is filled by a page server (userfaultfd)
        /// on first touch and in the background. Implies --keeper. If the
        /// pages cannot all come in (the server dies, a chunk is corrupt),
        /// every restored process is killed: none runs on a zero page.
        #[arg(long)]
        lazy: bool,
        /// Where the page server writes its status (JSON: state serving,
        /// done or failed, bytes, and what failed). Default:
        /// /run/hiber/lazy/PID.json.
        #[arg(long, value_name = "PATH", requires = "lazy")]
        lazy_status: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what an image holds: processes, fds, mappings, sizes.
    Inspect {
        dir: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Also read and verify every chunk's hash.
        #[arg(long)]
        verify: bool,
        /// Write a session image's screenshots (PNG) into this directory.
        #[arg(long)]
        screenshots: Option<PathBuf>,
    },
    /// Remove from a chunk store the packs no image uses any more.
    Prune {
        /// The store (by default images keep theirs in .hiber-store next to them).
        store: PathBuf,
    },
    /// A display's whole session: check, save, restore, list, remove.
    #[command(subcommand)]
    Session(commands::session::SessionCommand),
    /// Start a private X session, save it by its display, end it, restore
    /// it, and compare windows and screenshots.
    Demo {
        /// Where to keep the image and screenshots [default: a new directory in /tmp].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Measure checkpoint and restore against memcpy and write baselines.
    Bench {
        /// Memory sizes to measure, in MiB.
        #[arg(long, value_delimiter = ',', default_values_t = vec![1u64, 64, 1024])]
        sizes: Vec<u64>,
        /// Directory for images and baseline files [default: a temporary directory].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Processes of the tree saved with --stop and restored (0: none).
        #[arg(long, default_value_t = 50)]
        tree: u32,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
        /// Also run the same workloads through this CRIU (4 or newer)
        /// binary, interleaved with Hiber's runs.
        #[arg(long, value_name = "PATH")]
        compare_criu: Option<PathBuf>,
    },
    /// Internal: the benchmark's workload (dirty MiB of memory, then wait).
    #[command(hide = true)]
    BenchWorkload { mib: u64 },
    /// Internal: the benchmark's tree of processes.
    #[command(hide = true)]
    BenchTree { processes: u32 },
}

fn init_logging(filter: Option<&str>) {
    let filter = filter
        .map(str::to_string)
        .or_else(|| std::env::var("HIBER_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { pids, flags } => commands::check::run(&pids, &flags),
        Command::Checkpoint(args) => commands::checkpoint::run(args),
        Command::Restore {
            dir,
            pidns,
            keeper,
            for_user,
            lazy,
            lazy_status,
            json,
        } => commands::restore::run(
            &dir,
            commands::restore::How {
                pidns,
                keeper,
                for_user,
                lazy: lazy.then_some(lazy_status),
            },
            json,
        ),
        Command::Inspect {
            dir,
            json,
            verify,
            screenshots,
        } => commands::inspect::run(&dir, json, verify, screenshots.as_deref()),
        Command::Prune { store } => commands::prune::run(&store),
        Command::Session(cmd) => commands::session::run(cmd),
        Command::Demo { dir } => commands::demo::run(dir),
        Command::Bench {
            sizes,
            tree,
            dir,
            json,
            compare_criu,
        } => commands::bench::run(&sizes, tree, dir, json, compare_criu),
        Command::BenchTree { processes } => commands::bench::tree_workload(processes),
        Command::BenchWorkload { mib } => commands::bench::workload(mib),
    }
}

fn main() -> ExitCode {
    // Like other Unix tools: `hiber inspect DIR | head` ends quietly. The
    // engine only writes to pipes whose read end it holds itself.
    // SAFETY: resetting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    init_logging(cli.log.as_deref());
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hiber: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
