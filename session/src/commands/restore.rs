//! `hiber restore`: bring an image's processes back.

use anyhow::{Context, Result};
use hiber_core::RestoreOptions;
use hiber_session::format;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Serialize)]
struct Output {
    /// [pid in the image, pid now]
    pids: Vec<(i32, i32)>,
    roots: Vec<i32>,
    keeper: Option<i32>,
    elapsed_ms: f64,
    /// A lazy restore's page server status file (while pages come in).
    lazy_status: Option<PathBuf>,
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct How {
    pub pidns: bool,
    pub keeper: bool,
    pub for_user: Option<u32>,
    /// Lazy, with the status file given (or the default one).
    pub lazy: Option<Option<PathBuf>>,
}

/// The default status file of a lazy restore: under /run/hiber/lazy
/// (root's, 0700), named for this restorer.
fn default_lazy_status() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = Path::new("/run/hiber/lazy");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("{}.json", std::process::id())))
}

pub fn run(dir: &Path, how: How, json: bool) -> Result<ExitCode> {
    let How {
        pidns,
        keeper,
        for_user,
        lazy,
    } = how;
    let lazy = match lazy {
        // A file asked for by name stays for its asker; the default one
        // goes once every page is in.
        Some(Some(status)) => Some(hiber_core::LazyOptions {
            status,
            remove_when_done: false,
        }),
        Some(None) => Some(hiber_core::LazyOptions {
            status: default_lazy_status()?,
            remove_when_done: true,
        }),
        None => None,
    };
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
        lazy,
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
            lazy_status: restored.lazy_status.clone(),
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
        if let Some(s) = &restored.lazy_status {
            println!("pages coming in lazily; status: {}", s.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
