//! `hiber check`: the checkpointability report.

use anyhow::{Context, Result};
use hiber_core::policy::{Finding, Policy, Report};
use std::process::ExitCode;

/// Exit status when something is refused.
pub const EXIT_REFUSED: u8 = 3;

pub fn print_report(report: &Report, brief: bool) {
    for p in &report.processes {
        let state = if p.zombie { " (zombie)" } else { "" };
        println!("pid {} {}{} (parent {})", p.pid, p.comm, state, p.ppid);
        let mine = report.findings.iter().filter(|f| f.pid == p.pid);
        for f in mine.filter(|f: &&Finding| !brief || f.policy != Policy::Restore) {
            println!(
                "  {:<28} {:<8} {}: {}",
                f.subject.to_string(),
                f.policy.to_string(),
                f.kind,
                f.reason
            );
        }
    }
    let count = |p| report.findings.iter().filter(|f| f.policy == p).count();
    println!(
        "{} processes; {} restore, {} reopen, {} detach, {} reset, {} refuse",
        report.processes.len(),
        count(Policy::Restore),
        count(Policy::Reopen),
        count(Policy::Detach),
        count(Policy::Reset),
        count(Policy::Refuse),
    );
}

pub fn run(pids: &[i32], json: bool, brief: bool, no_reset: bool) -> Result<ExitCode> {
    let mut report = hiber_core::check(pids)
        .with_context(|| format!("checking the trees under pids {pids:?}"))?;
    if no_reset {
        report.refuse_resets();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, brief);
    }
    Ok(if report.is_checkpointable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REFUSED)
    })
}
