//! `hiber demo`: start a real program, save it, end it, restore it and
//! show it going on from where it was.

use anyhow::{bail, Context, Result};
use hiber_core::{CheckpointOptions, RestoreOptions};
use hiber_session::format;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// A python3 program with real state: a counter and a 2-million-element
/// list it keeps mutating; each line shows both, so a restored copy that
/// lost or replayed anything would show it.
const PROGRAM: &str = r#"
import sys, time, zlib
data = list(range(2_000_000))
n = 0
while True:
    data[n % len(data)] += n
    n += 1
    if n % 50_000 == 0:
        print(f"step {n // 50_000} checksum {zlib.crc32(str(data[:5000]).encode()) ^ sum(data) & 0xffffffff:08x}", flush=True)
        time.sleep(0.05)
"#;

fn log_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait until `path` has more than `count` lines, or fail at the deadline.
fn wait_for_lines(path: &Path, count: usize, deadline: Duration) -> Result<Vec<String>> {
    let until = Instant::now() + deadline;
    loop {
        let lines = log_lines(path);
        if lines.len() > count {
            return Ok(lines);
        }
        if Instant::now() > until {
            bail!(
                "{} did not grow past {count} lines within {deadline:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn step_of(line: &str) -> Option<u64> {
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn run(dir: Option<PathBuf>) -> Result<ExitCode> {
    let tmp;
    let dir = match dir {
        Some(d) => {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("hiber-demo-")
                .tempdir()
                .context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let log = dir.join("demo.log");
    let image = dir.join(format!("image-{}", std::process::id()));
    let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    println!("1. starting python3: a counter and a 2-million-element list it keeps changing");
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PROGRAM])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: setsid is async-signal-safe; the program gets its own session
    // so it does not depend on this terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting python3 (is it installed?)")?;
    let pid = child.id() as i32;
    let before = wait_for_lines(&log, 3, Duration::from_secs(30));
    let before = match before {
        Ok(l) => l,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    println!(
        "   pid {pid}, its output so far ends with:\n     {}",
        before[before.len() - 1]
    );

    println!("2. saving it to {} and ending it", image.display());
    let opts = CheckpointOptions {
        roots: vec![pid],
        dir: image.clone(),
        store: None,
        stop: true,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        no_reset: false,
        precopy: false,
    };
    let stats = match hiber_core::checkpoint(&opts, &|_| {}) {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e).context("checkpointing the demo program");
        }
    };
    // It was our child: collect it so its pid is free for the restore.
    let _ = child.wait();
    let last_saved = log_lines(&log);
    let last_saved = last_saved.last().cloned().unwrap_or_default();
    println!(
        "   saved in {} (frozen {}), image {}; last line before the end:\n     {last_saved}",
        format::millis(stats.total),
        format::millis(stats.frozen),
        format::bytes(stats.image_bytes)
    );
    println!(
        "   pid {pid} is gone: {}",
        !Path::new(&format!("/proc/{pid}")).exists()
    );

    println!("3. restoring it");
    let restored = hiber_core::restore(&RestoreOptions {
        dir: image.clone(),
        pidns: false,
    })
    .with_context(|| format!("restoring {}", image.display()))?;
    let now = restored.pids.first().map_or(pid, |p| p.1);
    println!(
        "   restored pid {now} in {}",
        format::millis(restored.elapsed)
    );
    let saved_count = log_lines(&log).len();
    let after = wait_for_lines(&log, saved_count + 2, Duration::from_secs(30));
    // End what we restored, whatever the outcome.
    // SAFETY: kill takes plain integers; `now` is the pid restore reported.
    unsafe { libc::kill(now, libc::SIGKILL) };
    let after = after?;
    println!("4. it goes on from where it was:");
    for l in &after[saved_count.saturating_sub(1)..(saved_count + 2).min(after.len())] {
        println!("     {l}");
    }
    let steps: Vec<u64> = after.iter().filter_map(|l| step_of(l)).collect();
    let continuous = steps.windows(2).all(|w| w[1] == w[0] + 1);
    if !continuous {
        bail!("the counter did not continue without a gap: {steps:?}");
    }
    println!(
        "   the step counter went on with no gap and no repeat ({} steps in all)",
        steps.len()
    );
    Ok(ExitCode::SUCCESS)
}
