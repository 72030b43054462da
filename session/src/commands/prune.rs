//! `hiber prune STORE`: free the store space that deleted images left.

use anyhow::{Context, Result};
use hiber_session::format;
use std::path::Path;
use std::process::ExitCode;

pub fn run(store: &Path) -> Result<ExitCode> {
    let stats = hiber_core::image::prune_store(store)
        .with_context(|| format!("pruning the store {}", store.display()))?;
    println!(
        "removed {} packs ({}); {} still used by images",
        stats.removed_packs,
        format::bytes(stats.removed_bytes),
        stats.kept_packs
    );
    Ok(ExitCode::SUCCESS)
}
