//! `hiber check`: the checkpointability report.

use anyhow::{bail, Context, Result};
use hiber_core::devices::{DevicePolicies, SysRoots, SYSTEM_CONFIG};
use hiber_core::policy::{Finding, Policy, Report};
use std::path::PathBuf;
use std::process::ExitCode;

/// Environment variable naming the device policy file (for tests and
/// trial configurations), under `--device-policy-file`.
pub const DEVICE_POLICY_FILE_ENV: &str = "HIBER_DEVICE_POLICY_FILE";
/// Environment variable naming a sysfs tree read in place of `/sys` for
/// device identities and live DRM cards (tests, on machines without DRM).
pub const SYSFS_ROOT_ENV: &str = "HIBER_SYSFS_ROOT";

/// Where device identities are read: `/sys`, or `$HIBER_SYSFS_ROOT`.
pub fn sys_roots() -> SysRoots {
    let mut roots = SysRoots::default();
    if let Some(dir) = std::env::var_os(SYSFS_ROOT_ENV).filter(|v| !v.is_empty()) {
        roots.sysfs = PathBuf::from(dir);
    }
    roots
}

/// How char devices are classified: rules on the command line over those
/// of the policy file over the built-in table.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// A device rule, over the policy file's: CLASS=POLICY or
    /// MAJOR:MINOR=POLICY, POLICY one of reopen, detach, reattach, refuse
    /// (repeatable), e.g. `--device-policy sound=refuse`.
    #[arg(long = "device-policy", value_name = "RULE")]
    pub device_policy: Vec<String>,
    /// The device policy file [default: $HIBER_DEVICE_POLICY_FILE, else
    /// /etc/hiber/devices.toml when it exists].
    #[arg(long, value_name = "FILE")]
    pub device_policy_file: Option<PathBuf>,
}

impl DeviceArgs {
    pub fn load(&self) -> Result<DevicePolicies> {
        let named = self.device_policy_file.clone().or_else(|| {
            std::env::var_os(DEVICE_POLICY_FILE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        // A file asked for by name must be there; the system one may not.
        if let Some(path) = &named {
            if !path.exists() {
                bail!("device policy file {} does not exist", path.display());
            }
        }
        let file = named.unwrap_or_else(|| PathBuf::from(SYSTEM_CONFIG));
        let mut policies = DevicePolicies::load(Some(&file), &self.device_policy)
            .context("loading the device policy rules")?;
        policies.roots = sys_roots();
        Ok(policies)
    }
}

/// Exit status when something is refused.
pub const EXIT_REFUSED: u8 = 3;

/// Why a checkpoint saved nothing: every refusal, on stderr.
pub fn print_refused(report: &Report, still: &str) {
    eprintln!("hiber: nothing was saved; {still}. Refused:");
    for f in report.refused() {
        eprintln!("  pid {} {} ({}): {}", f.pid, f.subject, f.kind, f.reason);
    }
    if report.refused_only_for_now() {
        eprintln!(
            "hiber: only data in flight was in the way, on every try; saving again later may work"
        );
    }
}

pub fn print_report(report: &Report, brief: bool) {
    for p in &report.processes {
        let state = if p.zombie { " (zombie)" } else { "" };
        println!("pid {} {}{} (parent {})", p.pid, p.comm, state, p.ppid);
        let mine = report.findings.iter().filter(|f| f.pid == p.pid);
        for f in mine.filter(|f: &&Finding| !brief || f.policy != Policy::Restore) {
            println!(
                "  {:<28} {:<8} {}: {}{}",
                f.subject.to_string(),
                f.policy.to_string(),
                f.kind,
                f.reason,
                if f.transient {
                    " (data in flight: a checkpoint tries again)"
                } else {
                    ""
                }
            );
        }
    }
    let count = |p| report.findings.iter().filter(|f| f.policy == p).count();
    println!(
        "{} processes; {} restore, {} reopen, {} detach, {} reattach, {} reset, {} refuse",
        report.processes.len(),
        count(Policy::Restore),
        count(Policy::Reopen),
        count(Policy::Detach),
        count(Policy::Reattach),
        count(Policy::Reset),
        count(Policy::Refuse),
    );
}

/// How a report is made and shown: the flags `check` and `session check`
/// share.
#[derive(Debug, clap::Args)]
pub struct CheckFlags {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Show only what is not plainly restored.
    #[arg(long, short)]
    pub brief: bool,
    /// Count what would be restored broken (Reset) as refused.
    #[arg(long)]
    pub no_reset: bool,
    #[command(flatten)]
    pub devices: DeviceArgs,
}

/// The exit status for a report: 3 when anything is refused.
pub fn exit_status(report: &Report) -> ExitCode {
    if report.is_checkpointable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REFUSED)
    }
}

pub fn run(pids: &[i32], flags: &CheckFlags) -> Result<ExitCode> {
    let devices = flags.devices.load()?;
    let devices = hiber_session::xserver::reattaching_x_servers(&devices, pids, &[]);
    let mut report = hiber_core::check(pids, &devices)
        .with_context(|| format!("checking the trees under pids {pids:?}"))?;
    if flags.no_reset {
        report.refuse_resets();
    }
    if flags.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, flags.brief);
    }
    Ok(exit_status(&report))
}
