//! `hiber bench`: checkpoint and restore of processes with 1 MiB, 64 MiB
//! and 1 GiB of dirtied anonymous memory, next to baselines measured in
//! the same run on the same machine and filesystem: a memcpy of the same
//! bytes, and writing them to a file (with fsync) in the image directory.

use anyhow::{bail, Context, Result};
use hiber_session::format;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod criu;

const MIB: u64 = 1 << 20;

#[derive(Debug, Serialize)]
struct Row {
    mib: u64,
    memcpy_ms: f64,
    write_ms: f64,
    /// Reading the written bytes back (from the page cache, as a restore
    /// right after its save reads its image).
    read_ms: f64,
    /// memcpy + write: what any save of these bytes must at least cost.
    baseline_ms: f64,
    checkpoint_ms: f64,
    frozen_ms: f64,
    checkpoint_ratio: f64,
    checkpoint_peak_rss_kib: u64,
    image_bytes: u64,
    /// A second checkpoint of the same process into the same store.
    incremental_ms: f64,
    incremental_written_bytes: u64,
    /// A full checkpoint with `--stop` (no store): the suspend case, whose
    /// image must be durable before the process ends.
    stop_ms: f64,
    stop_frozen_ms: f64,
    restore_ms: f64,
    /// The restore over memcpy + read: what bringing these bytes back into
    /// memory must at least cost.
    restore_ratio: f64,
    restore_peak_rss_kib: u64,
    /// `restore --lazy`: time until the process runs (its pages still
    /// coming in), and until the page server has put in the last one.
    lazy_running_ms: f64,
    lazy_total_ms: f64,
    /// The lazy restore's total over memcpy + read.
    lazy_ratio: f64,
    /// With `--compare-criu`: CRIU's figures, and Hiber's from runs
    /// interleaved with them.
    #[serde(skip_serializing_if = "Option::is_none")]
    criu: Option<criu::MemoryVsCriu>,
}

#[derive(Debug, Deserialize)]
struct CheckpointOut {
    frozen_ms: f64,
    total_ms: f64,
    image_bytes: u64,
    written_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct RestoreOut {
    pids: Vec<(i32, i32)>,
    elapsed_ms: f64,
}

/// splitmix64: memory that does not compress, the worst case for the image.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed;
    for word in buf.chunks_exact_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        word.copy_from_slice(&(z ^ (z >> 31)).to_ne_bytes());
    }
}

static REPORT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    REPORT.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The workload: dirty `mib` MiB, print "ready HASH", then wait; on
/// SIGUSR1 print "sum HASH" of the memory again (tests use it to prove
/// the memory unchanged).
pub fn workload(mib: u64) -> Result<ExitCode> {
    let mut mem = vec![0u8; (mib * MIB) as usize];
    fill(&mut mem, mib);
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    println!("ready {}", blake3::hash(&mem).to_hex());
    std::io::stdout().flush()?;
    loop {
        // SAFETY: pause has no arguments; it returns on a signal.
        unsafe { libc::pause() };
        if REPORT.swap(false, std::sync::atomic::Ordering::SeqCst) {
            println!("sum {}", blake3::hash(&mem).to_hex());
            std::io::stdout().flush()?;
        }
    }
}

/// Memory each process of the tree workload dirties.
const TREE_PROCESS_BYTES: usize = 64 << 10;

/// The tree workload: this process and `processes - 1` children, each
/// with 64 KiB of dirtied memory. Prints "ready MS PID..." (MS: the time
/// to fork them all and hear from each, the tree's own baseline; then the
/// children's pids), then waits.
pub fn tree_workload(processes: u32) -> Result<ExitCode> {
    let (ready_r, ready_w) = nix::unistd::pipe().context("making the readiness pipe")?;
    let t = Instant::now();
    let mut children = Vec::new();
    for _ in 1..processes {
        // SAFETY: this process is single-threaded; the child only touches
        // its own memory, writes to a pipe and pauses.
        match unsafe { nix::unistd::fork() }.context("forking the tree")? {
            nix::unistd::ForkResult::Child => {
                let mut mem = vec![0u8; TREE_PROCESS_BYTES];
                fill(&mut mem, u64::from(std::process::id()));
                std::hint::black_box(&mem);
                let _ = nix::unistd::write(&ready_w, b"r");
                loop {
                    // SAFETY: pause has no arguments; it returns on a signal.
                    unsafe { libc::pause() };
                }
            }
            nix::unistd::ForkResult::Parent { child } => children.push(child.as_raw()),
        }
    }
    drop(ready_w);
    let mut mem = vec![0u8; TREE_PROCESS_BYTES];
    fill(&mut mem, 0);
    std::hint::black_box(&mem);
    let mut heard = 0;
    let mut buf = [0u8; 64];
    while heard < children.len() {
        match nix::unistd::read(&ready_r, &mut buf) {
            Ok(0) => bail!("a child of the tree ended before it was ready"),
            Ok(n) => heard += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => bail!("reading the readiness pipe: {e}"),
        }
    }
    let pids: Vec<String> = children.iter().map(i32::to_string).collect();
    println!(
        "ready {:.3} {}",
        t.elapsed().as_secs_f64() * 1e3,
        pids.join(" ")
    );
    std::io::stdout().flush()?;
    loop {
        // SAFETY: pause has no arguments; it returns on a signal.
        unsafe { libc::pause() };
    }
}

fn baseline_memcpy(bytes: usize) -> Duration {
    let mut src = vec![0u8; bytes];
    fill(&mut src, 1);
    let mut dst = vec![1u8; bytes];
    let t = Instant::now();
    dst.copy_from_slice(&src);
    std::hint::black_box(&dst);
    t.elapsed()
}

/// Writing `bytes` durably, then reading them back: (write, read).
fn baseline_write_read(dir: &Path, bytes: usize) -> Result<(Duration, Duration)> {
    let mut src = vec![0u8; bytes];
    fill(&mut src, 2);
    let path = dir.join("baseline-write");
    let t = Instant::now();
    let mut f = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    for c in src.chunks(256 << 10) {
        f.write_all(c)?;
    }
    f.sync_all()?;
    let wrote = t.elapsed();
    drop(f);
    let t = Instant::now();
    let back = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let read = t.elapsed();
    std::hint::black_box(&back);
    fs::remove_file(&path)?;
    Ok((wrote, read))
}

/// Run `hiber ARGS`, returning its stdout.
fn hiber(args: &[&str]) -> Result<(String, u64)> {
    let exe = std::env::current_exe().context("finding the hiber binary")?;
    let out = Command::new(exe).args(args).output()?;
    if !out.status.success() {
        bail!(
            "hiber {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((String::from_utf8(out.stdout)?, 0))
}

/// Run `hiber ARGS` and measure its own peak RSS with wait4.
fn hiber_measured(args: &[&str]) -> Result<(String, u64)> {
    let exe = std::env::current_exe().context("finding the hiber binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    // A pre_exec hook makes std fork instead of vfork: a vforked child
    // shares, and its exec inherits, this process's peak RSS.
    // SAFETY: the hook does nothing.
    unsafe { cmd.pre_exec(|| Ok(())) };
    let mut child = cmd.spawn()?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)?;
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)?;
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid out-pointers.
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    if r < 0 {
        bail!("waiting for hiber: {}", std::io::Error::last_os_error());
    }
    let status = std::process::ExitStatus::from_raw(status);
    if !status.success() {
        bail!(
            "hiber {} failed ({status}): {}",
            args.join(" "),
            stderr.trim()
        );
    }
    Ok((stdout, usage.ru_maxrss as u64))
}

struct Workload {
    child: Child,
    pid: i32,
    ready: String,
}

/// Start a workload, for CRIU (`for_criu`) in a session of its own and
/// without bench's stderr: CRIU dumps neither a session it does not hold
/// nor a terminal.
fn start_workload(mib: u64, for_criu: bool) -> Result<Workload> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["bench-workload", &mib.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if for_criu {
        own_session(&mut cmd);
    }
    let mut child = cmd.spawn().context("starting the workload")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    if !line.starts_with("ready") {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the workload did not start: {line:?}");
    }
    let pid = child.id() as i32;
    Ok(Workload {
        child,
        pid,
        ready: line,
    })
}

/// For a CRIU workload: a session of its own, no stderr, and none of the
/// other fds bench inherited (a lock held by whoever runs bench, say,
/// which CRIU refuses to dump).
fn own_session(cmd: &mut Command) {
    cmd.stderr(Stdio::null());
    // SAFETY: setsid and close_range are async-signal-safe; fds 0-2 are
    // the ones set up for the workload.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// syncfs of `dir`'s filesystem.
fn sync_dir(dir: &Path) -> Result<()> {
    let d = fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    // SAFETY: syncfs on an open directory fd.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) } != 0 {
        bail!(
            "syncing the filesystem of {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Runs per measurement; the table shows the median.
const RUNS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Wait (bounded) until `pid` is gone, so the next restore can take it.
fn wait_gone(pid: i32) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > until {
            bail!("pid {pid} did not go away");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// End what `hiber restore --json` printed it restored, and wait until
/// its pids are free for the next restore; the restore's own time.
fn end_restored(restore_json: &str) -> Result<f64> {
    let restored: RestoreOut = serde_json::from_str(restore_json)?;
    for (_, now) in &restored.pids {
        // SAFETY: kill with the pid restore just reported.
        unsafe { libc::kill(*now, libc::SIGKILL) };
    }
    for (_, now) in &restored.pids {
        wait_gone(*now)?;
    }
    Ok(restored.elapsed_ms)
}

#[derive(Debug, Serialize)]
struct TreeRow {
    processes: u32,
    /// Forking the tree and hearing from every process: the baseline.
    spawn_ms: f64,
    /// `checkpoint --stop` of the whole tree (no store).
    stop_ms: f64,
    stop_frozen_ms: f64,
    image_bytes: u64,
    restore_ms: f64,
    /// restore / spawn.
    restore_ratio: f64,
    /// With `--compare-criu`: CRIU's figures, from runs interleaved with
    /// these.
    #[serde(skip_serializing_if = "Option::is_none")]
    criu: Option<criu::Versus>,
}

/// Start the tree workload: its child, the time it took to fork, and its
/// pids, the root's first.
fn start_tree(processes: u32, for_criu: bool) -> Result<(Child, f64, Vec<i32>)> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(&exe);
    cmd.args(["bench-tree", &processes.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if for_criu {
        own_session(&mut cmd);
    }
    let mut child = cmd.spawn().context("starting the tree workload")?;
    let root = child.id() as i32;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let mut words = line.split_whitespace();
    if words.next() != Some("ready") {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the tree workload did not start: {line:?}");
    }
    let spawn: f64 = words.next().unwrap_or_default().parse()?;
    let mut pids = vec![root];
    for w in words {
        pids.push(w.parse()?);
    }
    Ok((child, spawn, pids))
}

/// Save (`--stop`) and restore a tree of `processes`, `RUNS` times, each
/// on a fresh tree.
fn measure_tree(dir: &Path, processes: u32, criu: Option<&criu::Criu>) -> Result<TreeRow> {
    let mut spawns = Vec::new();
    let mut stops: Vec<CheckpointOut> = Vec::new();
    let mut restores = Vec::new();
    let mut criu_runs = criu::TreeRuns::default();
    for i in 0..RUNS {
        let (mut child, spawn, pids) = start_tree(processes, false)?;
        let root = pids[0];
        if criu.is_some() {
            // As before each CRIU dump: both start from a clean filesystem.
            sync_dir(dir)?;
        }
        let image = dir.join(format!("tree-{processes}-{i}"));
        let image = image.to_str().context("non-UTF-8 directory")?;
        let saved = hiber(&[
            "checkpoint",
            &root.to_string(),
            "-o",
            image,
            "--no-store",
            "--stop",
            "--json",
        ]);
        if saved.is_err() {
            for &p in &pids {
                // SAFETY: kill with the pids of the tree this run started.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        let _ = child.wait();
        for &p in &pids {
            wait_gone(p)?;
        }
        spawns.push(spawn);
        stops.push(serde_json::from_str(&saved?.0)?);
        let (out, _) = hiber(&["restore", image, "--json"])?;
        restores.push(end_restored(&out)?);
        fs::remove_dir_all(image)?;
        if let Some(c) = criu {
            criu_runs.run(c, dir, processes, i)?;
        }
    }
    let spawn = median(spawns);
    let restore = median(restores);
    let stop = median(stops.iter().map(|o| o.total_ms).collect());
    let stop_frozen = median(stops.iter().map(|o| o.frozen_ms).collect());
    Ok(TreeRow {
        processes,
        spawn_ms: spawn,
        stop_ms: stop,
        stop_frozen_ms: stop_frozen,
        image_bytes: stops[0].image_bytes,
        restore_ms: restore,
        restore_ratio: restore / spawn,
        criu: criu.map(|_| criu_runs.finish(stop, stop_frozen, restore)),
    })
}

fn measure(dir: &Path, mib: u64) -> Result<Row> {
    let bytes = (mib * MIB) as usize;
    let store = dir.join(format!("store-{mib}"));
    let store_s = store.to_str().context("non-UTF-8 directory")?.to_string();
    let image = |name: String| -> Result<String> {
        Ok(dir
            .join(name)
            .to_str()
            .context("non-UTF-8 directory")?
            .to_string())
    };
    let mut w = start_workload(mib, false)?;
    let pid = w.pid.to_string();
    let mut fulls = Vec::new();
    let mut baselines = Vec::new();
    let run = (|| -> Result<(Vec<CheckpointOut>, u64, CheckpointOut, CheckpointOut)> {
        let mut outs = Vec::new();
        let mut rss = 0;
        for i in 0..RUNS {
            // Each run right after its own baseline, so both meet the disk
            // in the same state (writeback of the previous run included).
            baselines.push((baseline_memcpy(bytes), baseline_write_read(dir, bytes)?));
            let img = image(format!("full-{mib}-{i}"))?;
            let (out, r) =
                hiber_measured(&["checkpoint", &pid, "-o", &img, "--no-store", "--json"])?;
            outs.push(serde_json::from_str(&out)?);
            rss = rss.max(r);
            fulls.push(img);
        }
        // Incremental: fill the store, then save again into it.
        hiber(&[
            "checkpoint",
            &pid,
            "-o",
            &image(format!("base-{mib}"))?,
            "--store",
            &store_s,
            "--json",
        ])?;
        let (incremental, _) = hiber(&[
            "checkpoint",
            &pid,
            "-o",
            &image(format!("incr-{mib}"))?,
            "--store",
            &store_s,
            "--json",
        ])?;
        // Last: it ends the workload. After its own baselines, as the full
        // checkpoints.
        baselines.push((baseline_memcpy(bytes), baseline_write_read(dir, bytes)?));
        let (stop, _) = hiber(&[
            "checkpoint",
            &pid,
            "-o",
            &image(format!("stop-{mib}"))?,
            "--no-store",
            "--stop",
            "--json",
        ])?;
        Ok((
            outs,
            rss,
            serde_json::from_str(&incremental)?,
            serde_json::from_str(&stop)?,
        ))
    })();
    if run.is_err() {
        let _ = w.child.kill();
    }
    let _ = w.child.wait();
    let (fulls_out, ck_rss, incremental, stop) = run?;
    wait_gone(w.pid)?;

    let mut restores = Vec::new();
    let mut rs_rss = 0;
    for _ in 0..RUNS {
        let (out, r) = hiber_measured(&["restore", &fulls[0], "--json"])?;
        restores.push(end_restored(&out)?);
        rs_rss = rs_rss.max(r);
    }
    let mut lazy_running = Vec::new();
    let mut lazy_total = Vec::new();
    for i in 0..RUNS {
        let status = dir.join(format!("lazy-status-{mib}-{i}.json"));
        let (running, all) = lazy_restore(&fulls[0], &status)?;
        lazy_running.push(running);
        lazy_total.push(all);
    }
    let _ = &w.ready;
    for e in fs::read_dir(dir)?.flatten() {
        let _ = fs::remove_dir_all(e.path());
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let memcpy = median(baselines.iter().map(|b| ms(b.0)).collect());
    let write = median(baselines.iter().map(|b| ms(b.1 .0)).collect());
    // The fastest read, not the median: its buffer is fresh memory, and a
    // virtual machine's host backs guest memory at its first touch (again
    // after the guest hands freed memory back), at a cost that varies
    // run to run (the same 1 GiB read took 0.45 to 3.2 s here). The
    // fastest is closest to the read itself, and makes the ratios below
    // the least flattering.
    let read = baselines
        .iter()
        .map(|b| ms(b.1 .1))
        .fold(f64::INFINITY, f64::min);
    let baseline = memcpy + write;
    let checkpoint = median(fulls_out.iter().map(|o| o.total_ms).collect());
    let restore = median(restores);
    Ok(Row {
        mib,
        memcpy_ms: memcpy,
        write_ms: write,
        read_ms: read,
        baseline_ms: baseline,
        checkpoint_ms: checkpoint,
        frozen_ms: median(fulls_out.iter().map(|o| o.frozen_ms).collect()),
        checkpoint_ratio: median(
            fulls_out
                .iter()
                .zip(&baselines)
                .map(|(o, b)| o.total_ms / (ms(b.0) + ms(b.1 .0)))
                .collect(),
        ),
        checkpoint_peak_rss_kib: ck_rss,
        image_bytes: fulls_out[0].image_bytes,
        incremental_ms: incremental.total_ms,
        incremental_written_bytes: incremental.written_bytes,
        stop_ms: stop.total_ms,
        stop_frozen_ms: stop.frozen_ms,
        restore_ms: restore,
        restore_ratio: restore / (memcpy + read),
        restore_peak_rss_kib: rs_rss,
        lazy_running_ms: median(lazy_running),
        lazy_ratio: median(lazy_total.clone()) / (memcpy + read),
        lazy_total_ms: median(lazy_total),
        criu: None,
    })
}

/// `hiber restore IMAGE --lazy` with its status file at `status`: the
/// time until the restored process ran, and until its page server had put
/// the last page in (the process then ended).
fn lazy_restore(image: &str, status: &Path) -> Result<(f64, f64)> {
    let status_s = status.to_str().context("non-UTF-8 directory")?;
    let (out, _) = hiber(&[
        "restore",
        image,
        "--lazy",
        "--lazy-status",
        status_s,
        "--json",
    ])?;
    let done = lazy_done(status);
    let _ = fs::remove_file(status);
    Ok((end_restored(&out)?, done?))
}

/// Wait (bounded) for a lazy restore's page server to finish; the time
/// from the restore's start until its last page was in.
fn lazy_done(status: &Path) -> Result<f64> {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(s) = hiber_core::memory::lazy::LazyStatus::read(status) {
            match s.state.as_str() {
                "done" => return Ok(s.elapsed_ms),
                "failed" => bail!(
                    "the lazy restore's page server failed: {}",
                    s.error.unwrap_or_default()
                ),
                _ => {}
            }
        }
        if Instant::now() > until {
            bail!(
                "the lazy restore's page server did not finish ({})",
                status.display()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[derive(Debug, Serialize)]
struct Report {
    /// With `--compare-criu`: the CRIU version compared with.
    #[serde(skip_serializing_if = "Option::is_none")]
    criu_version: Option<String>,
    memory: Vec<Row>,
    tree: Option<TreeRow>,
}

pub fn run(
    sizes: &[u64],
    tree: u32,
    dir: Option<PathBuf>,
    json: bool,
    compare_criu: Option<PathBuf>,
) -> Result<ExitCode> {
    // Before anything is measured: a bad CRIU fails at once.
    let criu = compare_criu.as_deref().map(criu::Criu::new).transpose()?;
    let tmp;
    let dir = match dir {
        Some(d) => {
            fs::create_dir_all(&d)?;
            d
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("hiber-bench-")
                .tempdir_in("/var/tmp")?;
            tmp.path().to_path_buf()
        }
    };
    // Start from a clean filesystem: dirty data of whatever ran before (a
    // build, say) would otherwise be flushed by the first measured commit.
    sync_dir(&dir)?;
    let mut rows = Vec::new();
    for &mib in sizes {
        if !json {
            eprintln!("measuring {mib} MiB...");
        }
        let mut row = measure(&dir, mib).with_context(|| format!("benchmarking {mib} MiB"))?;
        if let Some(c) = &criu {
            if !json {
                eprintln!("measuring {mib} MiB against CRIU {}...", c.version);
            }
            row.criu = Some(
                criu::compare_memory(&dir, mib, c)
                    .with_context(|| format!("comparing {mib} MiB with CRIU"))?,
            );
        }
        rows.push(row);
    }
    let tree = match tree {
        0 => None,
        n => {
            if !json {
                eprintln!("measuring a tree of {n} processes...");
            }
            Some(
                measure_tree(&dir, n, criu.as_ref())
                    .with_context(|| format!("benchmarking a tree of {n} processes"))?,
            )
        }
    };
    if json {
        let report = Report {
            criu_version: criu.map(|c| c.version),
            memory: rows,
            tree,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "filesystem of {}; times in ms; ckpt ratio = time / (memcpy + write); restore and lazy ratio = restore, lazy all / (memcpy + read)",
        dir.display()
    );
    println!(
        "{:>6} {:>8} {:>8} {:>7} | {:>8} {:>7} {:>6} {:>9} {:>10} | {:>8} {:>10} | {:>8} {:>7} | {:>8} {:>6} {:>9} | {:>8} {:>8} {:>6}",
        "MiB",
        "memcpy",
        "write",
        "read",
        "ckpt",
        "frozen",
        "ratio",
        "ckpt RSS",
        "image",
        "incr",
        "incr new",
        "stop",
        "frozen",
        "restore",
        "ratio",
        "rst RSS",
        "lazy run",
        "lazy all",
        "ratio"
    );
    for r in &rows {
        println!(
            "{:>6} {:>8.1} {:>8.1} {:>7.1} | {:>8.1} {:>7.1} {:>6.2} {:>9} {:>10} | {:>8.1} {:>10} | {:>8.1} {:>7.1} | {:>8.1} {:>6.2} {:>9} | {:>8.1} {:>8.1} {:>6.2}",
            r.mib,
            r.memcpy_ms,
            r.write_ms,
            r.read_ms,
            r.checkpoint_ms,
            r.frozen_ms,
            r.checkpoint_ratio,
            format::bytes(r.checkpoint_peak_rss_kib * 1024),
            format::bytes(r.image_bytes),
            r.incremental_ms,
            format::bytes(r.incremental_written_bytes),
            r.stop_ms,
            r.stop_frozen_ms,
            r.restore_ms,
            r.restore_ratio,
            format::bytes(r.restore_peak_rss_kib * 1024),
            r.lazy_running_ms,
            r.lazy_total_ms,
            r.lazy_ratio,
        );
    }
    if let Some(t) = &tree {
        println!(
            "tree of {} processes: spawn {:.1} | ckpt --stop {:.1}, frozen {:.1}, image {} | restore {:.1} ({:.2}x spawn)",
            t.processes,
            t.spawn_ms,
            t.stop_ms,
            t.stop_frozen_ms,
            format::bytes(t.image_bytes),
            t.restore_ms,
            t.restore_ratio
        );
    }
    if let Some(c) = &criu {
        print_criu(c, &rows, tree.as_ref());
    }
    Ok(ExitCode::SUCCESS)
}

/// The comparison with CRIU: Hiber's and CRIU's figures from the same
/// interleaved runs, and Hiber / CRIU.
fn print_criu(c: &criu::Criu, rows: &[Row], tree: Option<&TreeRow>) {
    println!(
        "vs CRIU {}: medians of {RUNS} interleaved runs, each on a fresh workload; ratio = Hiber / CRIU (stop: / CRIU dump + sync)",
        c.version
    );
    println!(
        "{:>6} | {:>8} {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6} | {:>10} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6}",
        "MiB",
        "h stop",
        "c dump",
        "c +sync",
        "ratio",
        "h frozen",
        "c frozen",
        "ratio",
        "h rst",
        "c rst",
        "ratio",
        "c image",
        "h lz run",
        "c lz run",
        "ratio",
        "h lz all",
        "c lz all",
        "ratio"
    );
    for r in rows {
        let Some(m) = &r.criu else { continue };
        let v = &m.criu;
        println!(
            "{:>6} | {:>8.1} {:>8.1} {:>8.1} {:>6.2} | {:>8.1} {:>8.1} {:>6.2} | {:>8.1} {:>8.1} {:>6.2} | {:>10} | {:>8.1} {:>8.1} {:>6.2} | {:>8.1} {:>8.1} {:>6.2}",
            r.mib,
            m.hiber_stop_ms,
            v.dump_ms,
            v.dump_sync_ms,
            v.stop_ratio,
            m.hiber_stop_frozen_ms,
            v.frozen_ms,
            v.frozen_ratio,
            m.hiber_restore_ms,
            v.restore_ms,
            v.restore_ratio,
            format::bytes(v.image_bytes),
            m.hiber_lazy_running_ms,
            m.lazy_running_ms,
            m.lazy_running_ratio,
            m.hiber_lazy_total_ms,
            m.lazy_total_ms,
            m.lazy_total_ratio,
        );
    }
    if let Some(t) = tree {
        if let Some(v) = &t.criu {
            println!(
                "{:>6} | {:>8.1} {:>8.1} {:>8.1} {:>6.2} | {:>8.1} {:>8.1} {:>6.2} | {:>8.1} {:>8.1} {:>6.2} | {:>10}",
                format!("tree{}", t.processes),
                t.stop_ms,
                v.dump_ms,
                v.dump_sync_ms,
                v.stop_ratio,
                t.stop_frozen_ms,
                v.frozen_ms,
                v.frozen_ratio,
                t.restore_ms,
                v.restore_ms,
                v.restore_ratio,
                format::bytes(v.image_bytes),
            );
        }
    }
}
