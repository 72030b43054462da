//! `hiber checkpoint`: save process trees into an image.

use super::check::{print_refused, EXIT_REFUSED};
use anyhow::{Context, Result};
use hiber_core::{CheckpointError, CheckpointOptions, CheckpointStats, PrecopyMode, Stage};
use hiber_session::{format, xserver};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What `--json` prints of a checkpoint (`session checkpoint` adds to it).
#[derive(Debug, Serialize)]
pub struct Output {
    pub dir: PathBuf,
    pub processes: usize,
    pub frozen_ms: f64,
    pub total_ms: f64,
    pub image_bytes: u64,
    pub memory_bytes: u64,
    pub written_bytes: u64,
    pub precopied_bytes: u64,
    /// The cgroup frozen first (the set was exactly its processes).
    pub frozen_cgroup: Option<PathBuf>,
    /// Tries it took: more than one when data in flight refused the first.
    pub attempts: u32,
}

impl From<&CheckpointStats> for Output {
    fn from(stats: &CheckpointStats) -> Self {
        Output {
            dir: stats.dir.clone(),
            processes: stats.processes,
            frozen_ms: stats.frozen.as_secs_f64() * 1e3,
            total_ms: stats.total.as_secs_f64() * 1e3,
            image_bytes: stats.image_bytes,
            memory_bytes: stats.bytes_raw,
            written_bytes: stats.bytes_written,
            precopied_bytes: stats.precopied_bytes,
            frozen_cgroup: stats.frozen_cgroup.clone(),
            attempts: stats.attempts,
        }
    }
}

/// The store an image shares with its siblings unless told otherwise.
pub fn default_store(output: &Path) -> PathBuf {
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join(".hiber-store")
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(required = true)]
    pids: Vec<i32>,
    /// Image directory to create.
    #[arg(short, long)]
    output: PathBuf,
    /// Chunk store shared with earlier images [default: OUTPUT/../.hiber-store].
    #[arg(long)]
    store: Option<PathBuf>,
    /// Keep chunks inside the image only (no shared store).
    #[arg(long, conflicts_with = "store")]
    no_store: bool,
    #[command(flatten)]
    save: SaveFlags,
}

/// How a save runs: the flags `checkpoint` and `session checkpoint` share.
#[derive(Debug, clap::Args)]
pub struct SaveFlags {
    /// End the processes once the image is committed (suspend to image).
    #[arg(long)]
    pub stop: bool,
    /// With --stop: read the committed image back (every chunk against its
    /// hash) before ending the processes; if it is not whole, remove it
    /// and let them run on.
    #[arg(long, requires = "stop")]
    pub verify: bool,
    /// Refuse rather than restore a connection broken (Reset policy).
    #[arg(long)]
    pub no_reset: bool,
    /// When most memory is saved beforehand, while the processes run, the
    /// freeze then saving only what changed: `auto` (always, but with
    /// --stop only from 256 MiB of private memory, where it shortens the
    /// freeze more than it costs), `always` or `never`.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = parse_precopy_arg)]
    pub precopy: PrecopyMode,
    /// The same as `--precopy never`.
    #[arg(long, conflicts_with = "precopy")]
    pub no_precopy: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub devices: super::check::DeviceArgs,
}

fn parse_precopy_arg(s: &str) -> std::result::Result<PrecopyMode, String> {
    PrecopyMode::parse(s).ok_or_else(|| format!("{s:?} is not one of auto, always, never"))
}

impl SaveFlags {
    /// `--precopy`, or never with `--no-precopy`.
    pub fn precopy_mode(&self) -> PrecopyMode {
        if self.no_precopy {
            PrecopyMode::Never
        } else {
            self.precopy
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let precopy = args.save.precopy_mode();
    let Args {
        pids,
        output,
        store,
        no_store,
        save:
            SaveFlags {
                stop,
                verify,
                no_reset,
                json,
                devices,
                ..
            },
    } = args;
    let devices = devices.load()?;
    let output = output.as_path();
    let store = if no_store {
        None
    } else {
        Some(store.unwrap_or_else(|| default_store(output)))
    };
    let opts = CheckpointOptions {
        verify_before_stop: verify,
        roots: pids.to_vec(),
        dir: output.to_path_buf(),
        store,
        stop,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        no_reset,
        precopy,
        devices: xserver::reattaching_x_servers(&devices, &pids, &[]),
        left_out: Default::default(),
    };
    let bar = (std::io::stderr().is_terminal() && !json).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg:12} [{bar:30}] {bytes}/{total_bytes}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar
    });
    let progress = |stage: Stage| {
        if let Some(bar) = &bar {
            match stage {
                Stage::WaitingForMemory => bar.set_message("waiting for restored memory"),
                Stage::Precopying { .. } => bar.set_message("pre-copy"),
                Stage::Freezing => bar.set_message("freezing"),
                Stage::Inspecting => bar.set_message("inspecting"),
                Stage::DumpingMemory { done, total } => {
                    bar.set_message("memory");
                    bar.set_length(total);
                    bar.set_position(done);
                }
                Stage::Committing => bar.set_message("committing"),
            }
        }
    };
    let result = hiber_core::checkpoint(&opts, &progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let stats = match result {
        Ok(stats) => stats,
        Err(CheckpointError::Refused(report)) => {
            print_refused(&report, "the processes keep running");
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("checkpointing pids {pids:?} into {}", output.display()));
        }
    };
    let out = Output::from(&stats);
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "saved {} processes to {}: frozen {}, total {}, image {} ({} of data, {} newly written{}){}",
            out.processes,
            out.dir.display(),
            format::millis(stats.frozen),
            format::millis(stats.total),
            format::bytes(out.image_bytes),
            format::bytes(out.memory_bytes),
            format::bytes(out.written_bytes),
            if out.precopied_bytes > 0 {
                format!(", {} saved before the freeze", format::bytes(out.precopied_bytes))
            } else {
                String::new()
            },
            if stop { "; processes ended" } else { "" },
        );
        if stats.attempts > 1 {
            println!(
                "  (on try {}: data in flight refused the earlier ones)",
                stats.attempts
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
