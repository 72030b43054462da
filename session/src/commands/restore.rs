//! `hiber restore`: bring an image's processes back.

use anyhow::{Context, Result};
use hiber_core::RestoreOptions;
use hiber_session::format;
use serde::Serialize;
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

pub fn run(dir: &Path, pidns: bool, json: bool) -> Result<ExitCode> {
    let opts = RestoreOptions {
        dir: dir.to_path_buf(),
        pidns,
    };
    let restored =
        hiber_core::restore(&opts).with_context(|| format!("restoring {}", dir.display()))?;
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
            println!("pid namespace keeper: {k}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
