//! Shared test harness: run `hiber`, start real programs in their own
//! sessions, wait on conditions with deadlines, and end (by pid) every
//! process a test started or restored.

#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod user;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn hiber_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hiber"))
}

/// The fixture program `hiber-fx-MODE` of the hiber-fixtures crate, next
/// to `hiber`. Cargo does not build another package's binaries for this
/// package's tests, so build them all (once per test binary) with the
/// cargo running us.
pub fn fixture_bin(mode: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let p = hiber_bin().with_file_name(format!("hiber-fx-{mode}"));
    BUILT.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "hiber-fixtures", "--bins"]);
        if p.parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| n == "release")
        {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo to build the fixtures");
        assert!(status.success(), "building the fixtures failed");
    });
    assert!(p.exists(), "{} is missing after building it", p.display());
    p
}

pub fn hiber(args: &[&str]) -> Output {
    Command::new(hiber_bin())
        .args(args)
        .output()
        .expect("running hiber")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
pub fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Poll `f` until it gives a value, failing the test at the deadline.
#[track_caller]
pub fn wait_until<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The fields of /proc/PID/stat after the command name (state, ppid,
/// pgrp, session, ...), None when the pid is free.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        s[s.rfind(')')? + 2..]
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// State letter from /proc/PID/stat, None when the pid is free.
pub fn state(pid: i32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

pub fn alive(pid: i32) -> bool {
    matches!(state(pid), Some(c) if c != 'Z' && c != 'X')
}

#[track_caller]
pub fn wait_gone(pid: i32) {
    wait_until(&format!("pid {pid} to be gone"), DEADLINE, || {
        state(pid).is_none().then_some(())
    });
}

/// Processes, zombies included, that are not in `saved` but whose
/// process group or session is one of its pids.
pub fn holders_of(saved: &BTreeSet<i32>) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| !saved.contains(p))
        .filter(|&p| {
            // state ppid pgrp session
            stat_fields(p).is_some_and(|f| {
                f.iter()
                    .skip(2)
                    .take(2)
                    .filter_map(|w| w.parse::<i32>().ok())
                    .any(|id| saved.contains(&id))
            })
        })
        .collect()
}

/// Every descendant of `pid`, and `pid`.
pub fn tree(pid: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if !out.insert(p) {
            continue;
        }
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(c) = fs::read_to_string(t.path().join("children")) {
                    todo.extend(c.split_whitespace().filter_map(|w| w.parse::<i32>().ok()));
                }
            }
        }
    }
    out
}

/// Processes a test is responsible for: killed by pid when it ends.
#[derive(Debug, Default)]
pub struct Reaper {
    pids: BTreeSet<i32>,
    children: Vec<Child>,
}

impl Reaper {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn adopt(&mut self, pid: i32) {
        self.pids.insert(pid);
    }

    /// Start `sleep 1000` and wait until it runs sleep (not the forked
    /// test binary any more).
    pub fn spawn_sleep(&mut self) -> i32 {
        let pid = self.spawn(Command::new("sleep").arg("1000"));
        wait_until("sleep to run", DEADLINE, || {
            fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .filter(|c| c.starts_with(b"sleep"))
        });
        pid
    }

    /// Start `cmd` in its own session, stdin from /dev/null.
    pub fn spawn(&mut self, cmd: &mut Command) -> i32 {
        cmd.stdin(Stdio::null());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting a test program");
        let pid = child.id() as i32;
        self.pids.insert(pid);
        self.children.push(child);
        pid
    }

    /// Start python3 running `script` with `args`, its output into `log`.
    pub fn spawn_python(&mut self, script: &str, args: &[&str], log: &Path) -> i32 {
        self.spawn(
            Command::new("/usr/bin/python3")
                .arg("-c")
                .arg(script)
                .args(args)
                .stdout(fs::File::create(log).expect("creating the log")),
        )
    }

    pub fn children_mut(&mut self) -> &mut Vec<Child> {
        &mut self.children
    }

    /// Wait for those of our children among `pids` (ended by `--stop`).
    pub fn wait_children(&mut self, pids: &[i32]) {
        for c in &mut self.children {
            if pids.contains(&(c.id() as i32)) {
                let _ = c.wait();
            }
        }
    }

    /// Collect our own children that ended (after `checkpoint --stop`).
    pub fn reap(&mut self) {
        for c in &mut self.children {
            let _ = c.try_wait();
        }
    }

    /// `hiber checkpoint ROOT -o DIR --stop`, then wait until every process
    /// of the tree is gone so its pids are free for the restore.
    #[track_caller]
    pub fn checkpoint_stop(&mut self, root: i32, dir: &Path) -> Value {
        self.checkpoint_stop_with(root, dir, &[])
    }

    /// [`Reaper::checkpoint_stop`] with more options.
    #[track_caller]
    pub fn checkpoint_stop_with(&mut self, root: i32, dir: &Path, extra: &[&str]) -> Value {
        let pids = tree(root);
        self.pids.extend(pids.iter().copied());
        let root_s = root.to_string();
        let mut args = vec!["checkpoint", &root_s, "-o", path(dir), "--stop", "--json"];
        args.extend_from_slice(extra);
        let out = hiber(&args);
        assert_ok(&out, "checkpoint --stop");
        for c in &mut self.children {
            if pids.contains(&(c.id() as i32)) {
                let _ = c.wait();
            }
        }
        for &p in &pids {
            wait_gone(p);
        }
        serde_json::from_slice(&out.stdout).expect("checkpoint --json output")
    }

    /// `hiber session checkpoint --display DISPLAY --user UID -o DIR --stop`
    /// of the test user's session, then wait until every saved process is
    /// gone (our own `children` among them collected) so that their pids
    /// are free for the restore. The checkpoint's answer and the saved
    /// processes as `hiber inspect --json` lists them.
    #[track_caller]
    pub fn session_stop(&mut self, display: &str, dir: &Path, children: &[i32]) -> SessionSaved {
        let user = user::USER_UID.to_string();
        let out = hiber(&[
            "session",
            "checkpoint",
            "--display",
            display,
            "--user",
            &user,
            "-o",
            path(dir),
            "--stop",
            "--json",
        ]);
        assert_ok(&out, "session checkpoint --stop");
        let answer: Value = serde_json::from_slice(&out.stdout).expect("checkpoint --json output");
        let inspected = hiber(&["inspect", path(dir), "--json"]);
        assert_ok(&inspected, "hiber inspect");
        let inspected: Value = serde_json::from_slice(&inspected.stdout).expect("inspect --json");
        let processes = inspected["snapshot"]["processes"]
            .as_array()
            .expect("the image's processes")
            .clone();
        self.wait_children(children);
        let mut saved = BTreeSet::new();
        for p in &processes {
            let pid = p["pid"].as_i64().expect("a saved pid") as i32;
            self.pids.insert(pid);
            saved.insert(pid);
            wait_gone(pid);
        }
        // A service the stop ended (a portal, left out of the image) can
        // sit as a zombie in a saved process group until init reaps it
        // (here about once a second), and the restore then finds that pid
        // taken.
        wait_until(
            "no process outside the image to hold a saved pid as its process group or session",
            DEADLINE,
            || holders_of(&saved).is_empty().then_some(()),
        );
        SessionSaved { answer, processes }
    }

    /// `hiber session restore DIR --json` with `extra` options; the
    /// restored processes and the keeper are ours to end. Its answer.
    #[track_caller]
    pub fn session_restore(&mut self, dir: &Path, extra: &[&str]) -> Value {
        let mut args = vec!["session", "restore", path(dir), "--json"];
        args.extend_from_slice(extra);
        let out = hiber(&args);
        assert_ok(&out, "session restore");
        let v: Value = serde_json::from_slice(&out.stdout).expect("session restore --json");
        for p in v["pids"].as_array().expect("restored pids") {
            self.pids
                .insert(p[1].as_i64().expect("a restored pid") as i32);
        }
        self.pids.extend(v["keeper"].as_i64().map(|k| k as i32));
        v
    }

    /// `hiber restore DIR --json`; the restored pids are ours to end.
    #[track_caller]
    pub fn restore(&mut self, dir: &Path, extra: &[&str]) -> Restored {
        self.restore_logged(dir, extra).0
    }

    /// [`Reaper::restore`], with what the restorer wrote to stderr (its log).
    pub fn restore_logged(&mut self, dir: &Path, extra: &[&str]) -> (Restored, String) {
        let mut args = vec!["restore", path(dir), "--json"];
        args.extend_from_slice(extra);
        let out = hiber(&args);
        assert_ok(&out, "restore");
        let v: Value = serde_json::from_slice(&out.stdout).expect("restore --json output");
        let pids: Vec<(i32, i32)> = serde_json::from_value(v["pids"].clone()).expect("pids");
        let keeper = v["keeper"].as_i64().map(|k| k as i32);
        self.pids.extend(pids.iter().map(|p| p.1));
        self.pids.extend(keeper);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        (Restored { pids, keeper }, log)
    }

    /// End every process we know of, with their descendants, and wait
    /// until they are gone.
    pub fn kill_all(&mut self) {
        let known: Vec<i32> = self.pids.iter().copied().collect();
        for p in known {
            self.pids.extend(tree(p));
        }
        for &p in &self.pids {
            // SAFETY: kill by pid of a process this test started or restored.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        for &p in &std::mem::take(&mut self.pids) {
            let until = Instant::now() + DEADLINE;
            while state(p).is_some() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// What [`Reaper::session_stop`] saved.
#[derive(Debug)]
pub struct SessionSaved {
    /// `session checkpoint --json`'s answer.
    pub answer: Value,
    /// The saved processes, as `hiber inspect --json` lists them.
    pub processes: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct Restored {
    /// (pid in the image, pid now)
    pub pids: Vec<(i32, i32)>,
    pub keeper: Option<i32>,
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

pub fn lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Complete lines of a file another process appends to (a last line
/// without its newline may still be being written).
pub fn complete_lines(p: &Path) -> Vec<String> {
    let text = fs::read_to_string(p).unwrap_or_default();
    let end = text.rfind('\n').map_or(0, |i| i + 1);
    text[..end].lines().map(str::to_string).collect()
}

#[track_caller]
pub fn wait_lines(p: &Path, n: usize) -> Vec<String> {
    wait_until(
        &format!("{} to reach {n} lines", p.display()),
        DEADLINE,
        || {
            let l = complete_lines(p);
            (l.len() >= n).then_some(l)
        },
    )
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hiber-test-")
        .tempdir_in("/var/tmp")
        .expect("temporary directory")
}

/// blake3-free digest of every file under `dir`: (relative path, bytes).
pub fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("listing image").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).expect("under dir").to_path_buf(),
                    fs::read(&p).expect("reading"),
                ));
            }
        }
    }
    out.sort();
    out
}

/// A display number no X server uses, different for each call in this
/// test binary (tests run in parallel and would race for the same one).
pub fn free_display() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(90);
    loop {
        let d = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(d < 400, "no free X display number");
        // A server whose files were removed still holds the abstract name.
        if !Path::new(&format!("/tmp/.X11-unix/X{d}")).exists()
            && !Path::new(&format!("/tmp/.X{d}-lock")).exists()
            && hiber_session::discover::x_server_of(d)
                .expect("listing X servers")
                .is_none()
        {
            return d;
        }
    }
}

/// Removes a display's socket and lock file, which a killed X server
/// leaves behind.
pub struct XFiles(pub u32);

impl Drop for XFiles {
    fn drop(&mut self) {
        let _ = fs::remove_file(format!("/tmp/.X11-unix/X{}", self.0));
        let _ = fs::remove_file(format!("/tmp/.X{}-lock", self.0));
    }
}

/// Pixels of an `xwd` dump (24 or 32 bits per pixel), as rows of u32.
pub fn pixels(xwd: &[u8]) -> Vec<Vec<u32>> {
    let be = |at: usize| u32::from_be_bytes(xwd[at..at + 4].try_into().unwrap()) as usize;
    let (header, width, height, bpp, stride, ncolors) =
        (be(0), be(16), be(20), be(44), be(48), be(76));
    assert!(bpp == 24 || bpp == 32, "{bpp} bits per pixel");
    let bytes = bpp / 8;
    let data = &xwd[header + ncolors * 12..];
    (0..height)
        .map(|y| {
            (0..width)
                .map(|x| {
                    let at = y * stride + x * bytes;
                    data[at..at + bytes]
                        .iter()
                        .fold(0u32, |p, &b| p << 8 | b as u32)
                })
                .collect()
        })
        .collect()
}

/// Where cgroup v2 is mounted (hybrid systems mount it beside v1).
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| std::path::PathBuf::from(left.split_whitespace().nth(4).unwrap()))
        })
}

/// A cgroup a test made, removed once the processes in it are gone.
pub struct TestCgroup(pub PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let procs = self.0.join("cgroup.procs");
        let until = Instant::now() + DEADLINE;
        while fs::read_to_string(&procs).is_ok_and(|t| !t.trim().is_empty())
            && Instant::now() < until
        {
            std::thread::yield_now();
        }
        let _ = fs::remove_dir(&self.0);
    }
}

/// Another program of the hiber-fixtures crate (`hiber-crunch`, ...),
/// built on first use as [`fixture_bin`] is.
pub fn fixture_program(name: &str) -> PathBuf {
    let p = hiber_bin().with_file_name(name);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "hiber-fixtures", "--bin", name]);
    if p.parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "release")
    {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("running cargo to build a fixture");
    assert!(status.success(), "building {name} failed");
    p
}

/// Rewrite an image's document through `edit` and seal it again with a
/// valid checksum: what a hostile image looks like.
pub fn rewrite_document(img: &Path, edit: impl FnOnce(&mut Value)) {
    let doc = img.join("snapshot");
    let bytes = fs::read(&doc).unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let header = String::from_utf8(bytes[..nl].to_vec()).unwrap();
    let version = header.split(' ').nth(1).unwrap().to_string();
    let mut v: Value = serde_json::from_slice(&bytes[nl + 1..]).unwrap();
    edit(&mut v);
    let json = serde_json::to_vec(&v).unwrap();
    let mut out = format!(
        "hiber-image {version} {} {}\n",
        blake3::hash(&json).to_hex(),
        json.len()
    )
    .into_bytes();
    out.extend_from_slice(&json);
    fs::write(&doc, out).unwrap();
}

/// `program args...` to be run as nobody (uid and gid 65534, no
/// supplementary groups), holding nothing of the test's: its output goes
/// to `out` (appended; nowhere when None) and it inherits no other fd
/// (cargo's jobserver, the test's own output: root's, which nobody could
/// not open again at a restore).
pub fn as_nobody(program_and_args: &[&str], out: Option<&Path>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(program_and_args);
    match out {
        Some(log) => {
            let file = || {
                fs::OpenOptions::new()
                    .append(true)
                    .open(log)
                    .expect("opening the log")
            };
            cmd.stdout(file()).stderr(file());
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    // SAFETY: close_range is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    cmd
}
