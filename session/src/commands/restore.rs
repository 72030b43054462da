//! `hiber restore`: bring an image's processes back.

use anyhow::{Context, Result};
use hiber_core::RestoreOptions;
use hiber_session::format;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Serialize)]
struct Output {
    /// [pid in the image, pid now]
    pids: Vec<(i32, i32)>,
    roots: Vec<i32>,
    keeper: Option<i32>,
    elapsed_ms: f64,
}

pub fn run(
    dir: &Path,
    pidns: bool,
    keeper: bool,
    for_user: Option<u32>,
    json: bool,
) -> Result<ExitCode> {
    let on_behalf_of = for_user
        .map(|uid| {
            hiber_core::creds::Creds::of_user(uid)
                .with_context(|| format!("looking up the user with uid {uid}"))
        })
        .transpose()?;
    let opts = RestoreOptions {
        dir: dir.to_path_buf(),
        pidns,
        keeper,
        sys_roots: crate::commands::check::sys_roots(),
        on_behalf_of,
        listener_renames: Vec::new(),
    };
    let bar = (std::io::stderr().is_terminal() && !json).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("restoring [{bar:30}] {bytes}/{total_bytes}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar
    });
    let progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let result = hiber_core::restore_with_progress(&opts, &progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let restored = result.with_context(|| format!("restoring {}", dir.display()))?;
    for (pid, what) in &restored.foreign {
        eprintln!("hiber: note: pid {pid} joined this shell's {what}");
    }
    if json {
        let out = Output {
            pids: restored.pids.clone(),
            roots: restored.roots.clone(),
            keeper: restored.keeper,
            elapsed_ms: restored.elapsed.as_secs_f64() * 1e3,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let pids: Vec<String> = restored
            .pids
            .iter()
            .map(|(img, now)| {
                if img == now {
                    img.to_string()
                } else {
                    format!("{img} (now {now})")
                }
            })
            .collect();
        println!(
            "restored {} processes in {}: {}",
            restored.pids.len(),
            format::millis(restored.elapsed),
            pids.join(" ")
        );
        if let Some(k) = restored.keeper {
            println!("keeper: {k}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
