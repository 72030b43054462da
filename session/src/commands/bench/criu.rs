//! `hiber bench --compare-criu PATH`: the same workloads saved and
//! restored by a CRIU (4 or newer) binary, interleaved with Hiber's runs
//! so that both meet the machine and the disk in the same state.

use super::{
    end_restored, hiber, lazy_restore, median, start_tree, start_workload, sync_dir, wait_gone,
    CheckpointOut, RUNS,
};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one `criu` command may take before bench gives up on it.
const CRIU_DEADLINE: Duration = Duration::from_secs(180);

pub struct Criu {
    path: PathBuf,
    pub version: String,
}

/// Run `cmd` with its output captured, at most `limit`; `what` names it
/// in the errors.
fn run_bounded(mut cmd: Command, what: &str, limit: Duration) -> Result<(Output, Duration)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let child = cmd.spawn().with_context(|| format!("running {what}"))?;
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    // A thread waits so that this one can wait with a deadline and still
    // take the time the command returned.
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((out, Instant::now()));
    });
    match rx.recv_timeout(limit) {
        Ok((out, at)) => Ok((out.with_context(|| format!("waiting for {what}"))?, at - t)),
        Err(_) => {
            // SAFETY: kill of the child this function started, not yet reaped
            // (its waiting thread has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            bail!("{what} did not finish within {}s", limit.as_secs())
        }
    }
}

/// The last lines of a CRIU log, for an error.
fn log_tail(log: &Path) -> String {
    match fs::read_to_string(log) {
        Ok(s) => {
            let lines: Vec<&str> = s.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            format!("last lines of {}:\n{}", log.display(), tail.join("\n"))
        }
        Err(e) => format!("no log at {}: {e}", log.display()),
    }
}

/// "Version: 4.2" (or "Version: 4.2-dirty", "Version: 3.17.1") to its
/// major number.
fn major(version: &str) -> Option<u32> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
}

/// What one CRIU dump took.
struct Dump {
    /// Until `criu dump` returned (the tree killed, the image written but
    /// not durable).
    dump_ms: f64,
    /// That and a syncfs of the image's filesystem: the image durable, as
    /// Hiber's `--stop` image is when it returns.
    dump_sync_ms: f64,
    /// CRIU's own figure: how long the tree was frozen.
    frozen_ms: f64,
    image_bytes: u64,
}

impl Criu {
    /// Check that `path` runs and is CRIU 4 or newer.
    pub fn new(path: &Path) -> Result<Self> {
        let shown = path.display();
        let mut cmd = Command::new(path);
        cmd.arg("--version");
        let (out, _) = run_bounded(cmd, &format!("{shown} --version"), Duration::from_secs(30))
            .with_context(|| format!("--compare-criu {shown}: it does not run"))?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let said = said.trim();
        if !out.status.success() {
            bail!(
                "--compare-criu {shown}: `{shown} --version` failed ({}): {said:?}",
                out.status
            );
        }
        let Some(version) = said
            .lines()
            .find_map(|l| l.trim().strip_prefix("Version:"))
            .map(str::trim)
        else {
            bail!("--compare-criu {shown}: `{shown} --version` printed no \"Version:\" line: {said:?}");
        };
        match major(version) {
            Some(m) if m >= 4 => Ok(Self {
                path: path.to_path_buf(),
                version: version.to_string(),
            }),
            _ => bail!(
                "--compare-criu {shown}: it is CRIU version {version:?}; CRIU 4 or newer is needed"
            ),
        }
    }

    /// Run `criu ARGS` (logging with -v4 into `log`), failing with the
    /// command, `what` it worked on and the log's tail.
    fn run(&self, args: &[&str], log: &Path, what: &str) -> Result<(Output, Duration)> {
        let mut cmd = Command::new(&self.path);
        cmd.args(args).arg("-v4").arg("-o").arg(log);
        let line = format!(
            "{} {} -v4 -o {}",
            self.path.display(),
            args.join(" "),
            log.display()
        );
        let (out, took) = run_bounded(cmd, &format!("`{line}` ({what})"), CRIU_DEADLINE)
            .with_context(|| log_tail(log))?;
        if !out.status.success() {
            bail!(
                "`{line}` ({what}) failed ({}): {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                log_tail(log)
            );
        }
        Ok((out, took))
    }

    /// `criu dump` of the tree at `pid` into `dir` (which ends the tree),
    /// then a sync of `dir`'s filesystem.
    fn dump(&self, pid: i32, dir: &Path, what: &str) -> Result<Dump> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let d = dir.to_str().context("non-UTF-8 directory")?;
        let (out, took) = self.run(
            &["dump", "-t", &pid.to_string(), "-D", d, "--display-stats"],
            &dir.join("dump.log"),
            what,
        )?;
        let t = Instant::now();
        sync_dir(dir)?;
        let synced = t.elapsed();
        let stats = String::from_utf8_lossy(&out.stdout);
        let frozen_us: f64 = stats
            .lines()
            .find_map(|l| l.strip_prefix("Frozen time:"))
            .and_then(|v| v.trim().trim_end_matches("us").trim().parse().ok())
            .with_context(|| {
                format!("`criu dump --display-stats` ({what}) printed no frozen time: {stats:?}")
            })?;
        let mut image_bytes = 0;
        for e in fs::read_dir(dir)?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".img") {
                image_bytes += e.metadata()?.len();
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ok(Dump {
            dump_ms: ms(took),
            dump_sync_ms: ms(took + synced),
            frozen_ms: frozen_us / 1e3,
            image_bytes,
        })
    }

    /// `criu restore --restore-detached` of `dir`: the time until it
    /// returned, the restored tree running. Then ends `pids` (CRIU restores
    /// the tree with its old pids) and waits until they are free.
    fn restore(&self, dir: &Path, pids: &[i32], what: &str) -> Result<f64> {
        let d = dir.to_str().context("non-UTF-8 directory")?;
        let pidfile = dir.join("restore.pid");
        let pidfile_s = pidfile.to_str().context("non-UTF-8 directory")?;
        let restored = self.run(
            &[
                "restore",
                "-D",
                d,
                "--restore-detached",
                "--pidfile",
                pidfile_s,
            ],
            &dir.join("restore.log"),
            what,
        );
        // A failed restore ends what it had restored itself: only a tree
        // that came back is ended here.
        let (_, took) = restored?;
        let root: Option<i32> = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        end(pids, root)?;
        if root != pids.first().copied() {
            bail!(
                "`criu restore` ({what}) restored root pid {root:?}, not {:?}",
                pids.first()
            );
        }
        Ok(took.as_secs_f64() * 1e3)
    }
}

/// End a tree CRIU restored (with its old `pids`, and the `root` it
/// reported), and wait until the pids are free.
fn end(pids: &[i32], root: Option<i32>) -> Result<()> {
    let restored: Vec<i32> = pids
        .iter()
        .copied()
        .chain(root.filter(|r| !pids.contains(r)))
        .collect();
    for &p in &restored {
        // SAFETY: kill with the pids of the tree this run dumped, which
        // CRIU has just restored (and the root it reported).
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    for &p in &restored {
        wait_gone(p)?;
    }
    Ok(())
}

impl Criu {
    /// `criu lazy-pages` serving `dir`, and `criu restore --lazy-pages
    /// --restore-detached` from it: the time until the restore returned
    /// (the process running, its pages still coming in), and until the
    /// lazy-pages daemon ended, every page put in (both from the
    /// restore's start). Then ends `pids`.
    fn lazy_restore(&self, dir: &Path, pids: &[i32], what: &str) -> Result<(f64, f64)> {
        // Left by the plain restore of the same images.
        for f in ["restore.pid", "lazy-pages.socket"] {
            let _ = fs::remove_file(dir.join(f));
        }
        let d = dir.to_str().context("non-UTF-8 directory")?;
        let log = dir.join("lazy-pages.log");
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two fds.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!(
                "making the lazy-pages status pipe: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: both fds were just made and are owned here only.
        let (ready_r, ready_w) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let w = ready_w.as_raw_fd();
        let line = format!(
            "{} lazy-pages -D {d} --status-fd 3 -v4 -o {}",
            self.path.display(),
            log.display()
        );
        let mut cmd = Command::new(&self.path);
        cmd.args(["lazy-pages", "-D", d, "--status-fd", "3", "-v4", "-o"])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // The daemon writes a byte to its status fd once it listens.
        // SAFETY: dup2 and fcntl are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let r = if w == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(w, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let mut daemon = cmd
            .spawn()
            .with_context(|| format!("running `{line}` ({what})"))?;
        drop(ready_w);
        let mut pfd = libc::pollfd {
            fd: ready_r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let polled = unsafe { libc::poll(&mut pfd, 1, 30_000) };
        let mut byte = [1u8];
        // SAFETY: read into a one-byte buffer from the pipe's read end.
        let got = polled > 0
            && unsafe { libc::read(ready_r.as_raw_fd(), byte.as_mut_ptr().cast(), 1) } == 1
            && byte[0] == 0;
        if !got {
            let _ = daemon.kill();
            let _ = daemon.wait();
            bail!(
                "`{line}` ({what}) was not ready within 30s\n{}",
                log_tail(&log)
            );
        }
        let dpid = daemon.id() as libc::pid_t;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let st = daemon.wait();
            let _ = tx.send((st, Instant::now()));
        });
        let pidfile = dir.join("restore.pid");
        let pidfile_s = pidfile.to_str().context("non-UTF-8 directory")?;
        let t = Instant::now();
        let restored = self.run(
            &[
                "restore",
                "-D",
                d,
                "--restore-detached",
                "--lazy-pages",
                "--pidfile",
                pidfile_s,
            ],
            &dir.join("restore-lazy.log"),
            what,
        );
        let running = t.elapsed();
        let done = match &restored {
            Ok(_) => rx.recv_timeout(CRIU_DEADLINE).ok(),
            Err(_) => None,
        };
        if done.is_none() {
            // SAFETY: kill of the daemon this function started, not yet
            // reaped (its waiting thread has not returned).
            unsafe { libc::kill(dpid, libc::SIGKILL) };
        }
        if restored.is_ok() {
            let root = fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            end(pids, root)?;
        }
        restored?;
        let Some((status, at)) = done else {
            bail!(
                "`{line}` ({what}) did not end within {}s of the lazy restore\n{}",
                CRIU_DEADLINE.as_secs(),
                log_tail(&log)
            );
        };
        let status = status.with_context(|| format!("waiting for `{line}`"))?;
        if !status.success() {
            bail!("`{line}` ({what}) failed ({status})\n{}", log_tail(&log));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ok((ms(running), ms(at - t)))
    }
}

/// CRIU's figures next to Hiber's, per memory size: Hiber's from runs
/// interleaved with CRIU's (a Hiber run, a CRIU run, ...).
#[derive(Debug, Serialize)]
pub struct MemoryVsCriu {
    /// Hiber's `checkpoint --stop --no-store` (durable when it returns).
    pub hiber_stop_ms: f64,
    pub hiber_stop_frozen_ms: f64,
    /// Hiber's restore of that image.
    pub hiber_restore_ms: f64,
    #[serde(flatten)]
    pub criu: Versus,
    /// Hiber's `restore --lazy` of its image: until the process runs, and
    /// until its last page is in.
    pub hiber_lazy_running_ms: f64,
    pub hiber_lazy_total_ms: f64,
    /// `criu restore --lazy-pages` with `criu lazy-pages`: until the
    /// restore returned, and until the daemon ended.
    pub lazy_running_ms: f64,
    pub lazy_total_ms: f64,
    /// Hiber / CRIU, each.
    pub lazy_running_ratio: f64,
    pub lazy_total_ratio: f64,
}

/// For `mib`: `RUNS` rounds of a Hiber `--stop` save and restore, then a
/// CRIU dump and restore, each on a fresh workload.
pub fn compare_memory(dir: &Path, mib: u64, criu: &Criu) -> Result<MemoryVsCriu> {
    let what = format!("the {mib} MiB workload");
    let mut hs: Vec<CheckpointOut> = Vec::new();
    let mut hr = Vec::new();
    let mut dumps = Vec::new();
    let mut cr = Vec::new();
    let (mut hl_run, mut hl_all, mut cl_run, mut cl_all) = (vec![], vec![], vec![], vec![]);
    for i in 0..RUNS {
        let image = dir.join(format!("hiber-stop-{mib}-{i}"));
        let image_s = image.to_str().context("non-UTF-8 directory")?;
        let mut w = start_workload(mib, false)?;
        sync_dir(dir)?;
        let saved = hiber(&[
            "checkpoint",
            &w.pid.to_string(),
            "-o",
            image_s,
            "--no-store",
            "--stop",
            "--json",
        ]);
        if saved.is_err() {
            let _ = w.child.kill();
        }
        let _ = w.child.wait();
        wait_gone(w.pid)?;
        hs.push(serde_json::from_str(&saved?.0)?);
        let (out, _) = hiber(&["restore", image_s, "--json"])?;
        hr.push(end_restored(&out)?);
        let status = dir.join(format!("hiber-lazy-status-{mib}-{i}.json"));
        let (running, all) = lazy_restore(image_s, &status)?;
        hl_run.push(running);
        hl_all.push(all);
        fs::remove_dir_all(&image)?;

        let image = dir.join(format!("criu-{mib}-{i}"));
        let mut w = start_workload(mib, true)?;
        sync_dir(dir)?;
        let dumped = criu.dump(w.pid, &image, &what);
        if dumped.is_err() {
            let _ = w.child.kill();
        }
        let _ = w.child.wait();
        wait_gone(w.pid)?;
        dumps.push(dumped?);
        cr.push(criu.restore(&image, &[w.pid], &what)?);
        let (run, all) = criu.lazy_restore(&image, &[w.pid], &what)?;
        cl_run.push(run);
        cl_all.push(all);
        fs::remove_dir_all(&image)?;
    }
    let hiber_stop = median(hs.iter().map(|o| o.total_ms).collect());
    let hiber_frozen = median(hs.iter().map(|o| o.frozen_ms).collect());
    let hiber_restore = median(hr);
    let (hl_run, hl_all) = (median(hl_run), median(hl_all));
    let (cl_run, cl_all) = (median(cl_run), median(cl_all));
    Ok(MemoryVsCriu {
        hiber_lazy_running_ms: hl_run,
        hiber_lazy_total_ms: hl_all,
        lazy_running_ms: cl_run,
        lazy_total_ms: cl_all,
        lazy_running_ratio: hl_run / cl_run,
        lazy_total_ratio: hl_all / cl_all,
        hiber_stop_ms: hiber_stop,
        hiber_stop_frozen_ms: hiber_frozen,
        hiber_restore_ms: hiber_restore,
        criu: Versus::of(&dumps, cr, hiber_stop, hiber_frozen, hiber_restore),
    })
}

/// CRIU's dump and restore figures (medians of its runs) and Hiber's over
/// them, for a memory size or the tree.
#[derive(Debug, Serialize)]
pub struct Versus {
    /// `criu dump` until it returned, and with the sync after it.
    pub dump_ms: f64,
    pub dump_sync_ms: f64,
    /// CRIU's frozen time (its `--display-stats`).
    pub frozen_ms: f64,
    pub image_bytes: u64,
    /// `criu restore --restore-detached` until it returned.
    pub restore_ms: f64,
    /// hiber stop / (dump + sync).
    pub stop_ratio: f64,
    /// hiber frozen / CRIU frozen.
    pub frozen_ratio: f64,
    /// hiber restore / CRIU restore.
    pub restore_ratio: f64,
}

impl Versus {
    /// From CRIU's `dumps` and `restores`, against Hiber's medians.
    fn of(
        dumps: &[Dump],
        restores: Vec<f64>,
        hiber_stop_ms: f64,
        hiber_frozen_ms: f64,
        hiber_restore_ms: f64,
    ) -> Self {
        let dump_sync = median(dumps.iter().map(|d| d.dump_sync_ms).collect());
        let frozen = median(dumps.iter().map(|d| d.frozen_ms).collect());
        let restore = median(restores);
        Versus {
            dump_ms: median(dumps.iter().map(|d| d.dump_ms).collect()),
            dump_sync_ms: dump_sync,
            frozen_ms: frozen,
            image_bytes: dumps[0].image_bytes,
            restore_ms: restore,
            stop_ratio: hiber_stop_ms / dump_sync,
            frozen_ratio: hiber_frozen_ms / frozen,
            restore_ratio: hiber_restore_ms / restore,
        }
    }
}

/// Collects one CRIU run of the tree at a time, between Hiber's.
#[derive(Default)]
pub struct TreeRuns {
    dumps: Vec<Dump>,
    restores: Vec<f64>,
}

impl TreeRuns {
    /// One CRIU round: a fresh tree of `processes`, dumped into
    /// `dir/criu-tree-I`, and restored.
    pub fn run(&mut self, criu: &Criu, dir: &Path, processes: u32, i: usize) -> Result<()> {
        let what = format!("the tree of {processes} processes");
        let image = dir.join(format!("criu-tree-{processes}-{i}"));
        let (mut child, _, pids) = start_tree(processes, true)?;
        sync_dir(dir)?;
        let dumped = criu.dump(pids[0], &image, &what);
        if dumped.is_err() {
            for &p in &pids {
                // SAFETY: kill with the pids of the tree this run started.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        let _ = child.wait();
        for &p in &pids {
            wait_gone(p)?;
        }
        self.dumps.push(dumped?);
        self.restores.push(criu.restore(&image, &pids, &what)?);
        fs::remove_dir_all(&image)?;
        Ok(())
    }

    pub fn finish(self, hiber_stop_ms: f64, hiber_frozen_ms: f64, hiber_restore_ms: f64) -> Versus {
        Versus::of(
            &self.dumps,
            self.restores,
            hiber_stop_ms,
            hiber_frozen_ms,
            hiber_restore_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::major;

    #[test]
    fn the_major_version_is_read_from_what_criu_prints() {
        assert_eq!(major("4.2"), Some(4));
        assert_eq!(major("3.17.1"), Some(3));
        assert_eq!(major("4.1-dirty"), Some(4));
        assert_eq!(major("unknown"), None);
    }
}
