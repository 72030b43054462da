//! Real programs saved with `checkpoint --stop` and restored: each must go
//! on exactly where it was.

mod common;

use common::*;
use std::fs;
use std::process::{Command, Stdio};

#[test]
fn sleep_comes_back_with_its_pid_and_twice_from_one_image() {
    let t = tempdir();
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let pid = r.spawn_sleep();
    let out = r.checkpoint_stop(pid, &img);
    assert_eq!(out["processes"], 1);
    for round in 0..2 {
        let restored = r.restore(&img, &[]);
        assert_eq!(restored.pids, vec![(pid, pid)], "round {round}");
        assert_eq!(
            fs::read(format!("/proc/{pid}/cmdline")).unwrap(),
            b"sleep\x001000\x00"
        );
        assert!(alive(pid));
        // Not a child of the CLI, and not traced any more.
        assert_ne!(
            status_field(pid, "PPid").unwrap(),
            std::process::id().to_string()
        );
        assert_eq!(status_field(pid, "TracerPid").unwrap(), "0");
        // The image outlives the copy: end it and restore again.
        r.kill_all();
        wait_gone(pid);
    }
}

#[test]
fn bash_counter_through_a_pipe_into_cat_continues_without_gap_or_repeat() {
    let t = tempdir();
    let out_file = t.path().join("counter.txt");
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let script = format!(
        "i=0; while :; do i=$((i+1)); echo $i; sleep 0.002; done | cat >> '{}'",
        out_file.display()
    );
    let pid = r.spawn(
        Command::new("bash")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_lines(&out_file, 20);
    r.checkpoint_stop(pid, &img);
    let saved = complete_lines(&out_file).len();
    let restored = r.restore(&img, &[]);
    assert!(
        restored.pids.iter().any(|p| p.0 == pid),
        "the bash root is back"
    );
    let all = wait_lines(&out_file, saved + 100);
    for (i, l) in all.iter().enumerate() {
        assert_eq!(
            l,
            &(i + 1).to_string(),
            "line {} of the counter (saved at {saved} lines)",
            i + 1
        );
    }
}

/// Python: a list of a million ints, changed step by step; each line holds
/// the step and the list's sum, which the test recomputes.
const PYTHON: &str = r#"
import sys, time
N = 1_000_000
data = list(range(N))
k = 0
while True:
    k += 1
    data[k % N] += k
    print(k, sum(data), flush=True)
    time.sleep(0.005)
"#;

/// python3 running `script` with its output into `log` (its errors in the
/// test's output), ended by `r`.
fn python_logging(r: &mut Reaper, script: &str, log: &std::path::Path) -> i32 {
    r.spawn(
        Command::new("/usr/bin/python3")
            .args(["-c", script])
            .stdout(fs::File::create(log).unwrap()),
    )
}

#[test]
fn python_list_checksums_continue_after_restore() {
    let t = tempdir();
    let log = t.path().join("py.log");
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let pid = python_logging(&mut r, PYTHON, &log);
    wait_lines(&log, 10);
    r.checkpoint_stop(pid, &img);
    let saved = complete_lines(&log).len();
    r.restore(&img, &[]);
    let all = wait_lines(&log, saved + 20);
    let n: u64 = 1_000_000;
    for (i, l) in all.iter().enumerate() {
        let k = i as u64 + 1;
        let expected = n * (n - 1) / 2 + k * (k + 1) / 2;
        assert_eq!(l, &format!("{k} {expected}"), "line {k} (saved at {saved})");
    }
}

#[test]
fn taken_pid_is_named_and_pidns_restores_anyway() {
    let t = tempdir();
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let pid = r.spawn_sleep();
    let out = hiber(&["checkpoint", &pid.to_string(), "-o", path(&img), "--json"]);
    assert_ok(&out, "checkpoint");
    assert!(
        alive(pid),
        "checkpoint without --stop leaves the process running"
    );

    let out = hiber(&["restore", path(&img)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("pid {pid} is taken")) && err.contains("--pidns"),
        "{err}"
    );

    let restored = r.restore(&img, &["--pidns"]);
    let keeper = restored.keeper.expect("a pid namespace keeper");
    assert_eq!(restored.pids.len(), 1);
    let (inner, outer) = restored.pids[0];
    assert_eq!(inner, pid);
    assert_ne!(outer, pid);
    assert!(alive(outer) && alive(keeper));
    let nspid = status_field(outer, "NSpid").unwrap();
    assert_eq!(
        nspid.split_whitespace().last().unwrap(),
        pid.to_string(),
        "NSpid {nspid}"
    );
    assert_eq!(
        fs::read(format!("/proc/{outer}/cmdline")).unwrap(),
        b"sleep\x001000\x00"
    );
}

#[test]
fn keeper_parents_the_roots_adopts_orphans_and_ends_with_the_session() {
    let t = tempdir();
    let img = t.path().join("img");
    let mut r = Reaper::new();
    // Two unrelated roots; the first also has a child that will be orphaned.
    let a = r.spawn(Command::new("bash").args(["-c", "sleep 1000 & wait"]));
    let child = wait_until("bash to start its child", DEADLINE, || {
        fs::read_to_string(format!("/proc/{a}/task/{a}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse::<i32>()
            .ok()
    });
    let b = r.spawn_sleep();
    let out = hiber(&[
        "checkpoint",
        &a.to_string(),
        &b.to_string(),
        "-o",
        path(&img),
        "--stop",
        "--json",
    ]);
    assert_ok(&out, "checkpoint --stop");
    r.wait_children(&[a, b]);
    for p in [a, b, child] {
        wait_gone(p);
    }
    let restored = r.restore(&img, &["--keeper"]);
    let keeper = restored.keeper.expect("a session keeper");
    assert_eq!(
        fs::read_to_string(format!("/proc/{keeper}/comm")).unwrap(),
        "hiber-keeper\n"
    );
    for p in [a, b] {
        assert_eq!(
            status_field(p, "PPid").unwrap(),
            keeper.to_string(),
            "pid {p}"
        );
    }
    // Out of the caller's session, so a hang-up there does not end it.
    let sid = |p: i32| {
        fs::read_to_string(format!("/proc/{p}/stat"))
            .unwrap()
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .to_string()
    };
    assert_eq!(sid(keeper), keeper.to_string());
    // An orphan of the session comes to the keeper, not to init.
    // SAFETY: kill of the restored bash by pid.
    unsafe { libc::kill(a, libc::SIGKILL) };
    wait_until("the orphan to be adopted by the keeper", DEADLINE, || {
        (status_field(child, "PPid")? == keeper.to_string()).then_some(())
    });
    for p in [b, child] {
        // SAFETY: kill of a restored process by pid.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    // Whoever adopted the keeper reaps it; it has ended either way.
    wait_until("the keeper to end with its session", DEADLINE, || {
        (!alive(keeper)).then_some(())
    });
}

#[test]
fn second_save_into_the_store_writes_only_what_changed_and_prune_frees_the_rest() {
    let t = tempdir();
    let log = t.path().join("py.log");
    let mut r = Reaper::new();
    // 40 MB of list that stays the same between the two saves.
    let pid = python_logging(
        &mut r,
        "import time\ndata = list(range(5_000_000))\nprint('ready', flush=True)\ntime.sleep(1000)",
        &log,
    );
    wait_lines(&log, 1);
    let save = |name: &str| -> serde_json::Value {
        let out = hiber(&[
            "checkpoint",
            &pid.to_string(),
            "-o",
            path(&t.path().join(name)),
            "--json",
        ]);
        assert_ok(&out, "checkpoint");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = save("first");
    let second = save("second");
    let (w1, w2) = (
        first["written_bytes"].as_u64().unwrap(),
        second["written_bytes"].as_u64().unwrap(),
    );
    assert!(w1 > 5 << 20, "first save wrote {w1} bytes");
    assert!(w2 < w1 / 20, "second save wrote {w2} bytes, first {w1}");
    let store = t.path().join(".hiber-store");
    assert!(store.join("packs").is_dir());

    // Both images are whole on their own.
    for img in ["first", "second"] {
        assert_ok(
            &hiber(&["inspect", path(&t.path().join(img)), "--verify"]),
            "inspect --verify",
        );
    }
    // Nothing to prune while both exist; once both are gone, everything.
    let out = hiber(&["prune", path(&store)]);
    assert_ok(&out, "prune");
    assert!(
        stdout(&out).starts_with("removed 0 packs"),
        "{}",
        stdout(&out)
    );
    fs::remove_dir_all(t.path().join("first")).unwrap();
    fs::remove_dir_all(t.path().join("second")).unwrap();
    assert_ok(&hiber(&["prune", path(&store)]), "prune");
    assert_eq!(fs::read_dir(store.join("packs")).unwrap().count(), 0);
    assert!(alive(pid));
}

/// Python with worker threads sharing a lock-protected counter: after the
/// restore every thread goes on and the counter stays exact.
const PYTHON_THREADS: &str = r#"
import threading, time
lock = threading.Lock()
counts = [0] * 4
total = 0
def work(i):
    global total
    while True:
        with lock:
            counts[i] += 1
            total += 1
        time.sleep(0.001)
for i in range(4):
    threading.Thread(target=work, args=(i,), daemon=True).start()
n = 0
while True:
    n += 1
    with lock:
        print(n, total == sum(counts), *counts, flush=True)
    time.sleep(0.02)
"#;

#[test]
fn python_threads_go_on_after_restore() {
    let t = tempdir();
    let log = t.path().join("py.log");
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let pid = python_logging(&mut r, PYTHON_THREADS, &log);
    wait_lines(&log, 5);
    assert_eq!(
        fs::read_dir(format!("/proc/{pid}/task")).unwrap().count(),
        5
    );
    r.checkpoint_stop(pid, &img);
    let saved = complete_lines(&log);
    let restored = r.restore(&img, &[]);
    assert_eq!(restored.pids, vec![(pid, pid)]);
    assert_eq!(
        fs::read_dir(format!("/proc/{pid}/task")).unwrap().count(),
        5
    );
    let all = wait_lines(&log, saved.len() + 20);
    let last_saved: Vec<u64> = saved
        .last()
        .unwrap()
        .split(' ')
        .skip(2)
        .map(|c| c.parse().unwrap())
        .collect();
    for (i, l) in all.iter().enumerate() {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f[0], (i + 1).to_string(), "line numbers continue: {l}");
        assert_eq!(f[1], "True", "counter exact: {l}");
    }
    let last: Vec<u64> = all
        .last()
        .unwrap()
        .split(' ')
        .skip(2)
        .map(|c| c.parse().unwrap())
        .collect();
    for (now, then) in last.iter().zip(&last_saved) {
        assert!(
            now > then,
            "every thread went on: {last:?} after {last_saved:?}"
        );
    }
}

#[test]
fn unix_socket_to_a_peer_outside_is_reset_and_the_program_sees_the_hangup() {
    use std::io::Write;
    use std::os::unix::net::UnixListener;
    let t = tempdir();
    let sock = t.path().join("outside.sock");
    let log = t.path().join("py.log");
    let img = t.path().join("img");
    // The peer: this test, outside the saved set.
    let listener = UnixListener::bind(&sock).unwrap();
    let mut r = Reaper::new();
    let go = t.path().join("go");
    let script = format!(
        "import socket,os,time\ns = socket.socket(socket.AF_UNIX)\ns.connect({:?})\nprint('connected', flush=True)\n\
         while not os.path.exists({:?}): time.sleep(0.01)\n\
         data = b''\nwhile True:\n    d = s.recv(100)\n    if not d: break\n    data += d\n\
         print('got', data.decode(), flush=True)\nprint('EOF', flush=True)\ntime.sleep(1000)",
        sock.to_str().unwrap(),
        go.to_str().unwrap()
    );
    let pid = python_logging(&mut r, &script, &log);
    let (mut conn, _) = listener.accept().unwrap();
    wait_lines(&log, 1);
    // Queued in the program's socket while it is saved.
    conn.write_all(b"hello, ").unwrap();
    conn.write_all(b"queued").unwrap();
    let check = hiber(&["check", &pid.to_string()]);
    assert_eq!(check.status.code(), Some(0));
    assert!(stdout(&check).contains("Reset"), "{}", stdout(&check));
    // With --no-reset the same set is refused, and nothing is saved.
    let strict = hiber(&["check", "--no-reset", &pid.to_string()]);
    assert_eq!(strict.status.code(), Some(3), "{}", stdout(&strict));
    let refused = hiber(&[
        "checkpoint",
        "--no-reset",
        &pid.to_string(),
        "-o",
        path(&img),
    ]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(
        stderr(&refused).contains("would be Reset"),
        "{}",
        stderr(&refused)
    );
    assert!(!img.exists());
    r.checkpoint_stop(pid, &img);
    drop(conn);
    r.restore(&img, &[]);
    fs::write(&go, b"").unwrap();
    let all = wait_lines(&log, 3);
    assert_eq!(all, ["connected", "got hello, queued", "EOF"]);
}

/// Holds three pidfds: of its child (saved too), of a reaped child, and of
/// a process outside the set; prints which are readable (exited) until its
/// child exits, then reaps the child through the pidfd.
const PIDFDS: &str = r#"
import os, sys, select, time
def readable(fd):
    return bool(select.select([fd], [], [], 0)[0])
child = os.fork()
if child == 0:
    while True:
        time.sleep(1)
gone = os.fork()
if gone == 0:
    os._exit(7)
fd_gone = os.pidfd_open(gone)
os.waitpid(gone, 0)
fd_child = os.pidfd_open(child)
fd_out = os.pidfd_open(int(sys.argv[1]))
print("child", child, flush=True)
while True:
    line = f"{readable(fd_child)} {readable(fd_gone)} {readable(fd_out)}"
    if readable(fd_child):
        info = os.waitid(os.P_PIDFD, fd_child, os.WEXITED)
        print(line, "reaped", info.si_pid, info.si_status, flush=True)
        break
    print(line, flush=True)
    time.sleep(0.05)
time.sleep(1000)
"#;

#[test]
fn pidfds_come_back_open_on_their_restored_process() {
    let t = tempdir();
    let log = t.path().join("py.log");
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let outside = r.spawn_sleep();
    let pid = r.spawn_python(PIDFDS, &[&outside.to_string()], &log);
    let first = wait_lines(&log, 2);
    let child: i32 = first[0].strip_prefix("child ").unwrap().parse().unwrap();
    assert_eq!(first[1], "False True False");
    let check = stdout(&hiber(&["check", &pid.to_string()]));
    assert!(
        check.contains(&format!("pidfd of pid {outside}, outside the saved set"))
            && check.contains("Reset"),
        "{check}"
    );
    assert!(check.contains(&format!("pidfd of pid {child}")), "{check}");
    r.checkpoint_stop(pid, &img);
    let saved = complete_lines(&log).len();
    r.restore(&img, &[]);
    // The outside process now reads as exited; the child does not.
    let after = wait_lines(&log, saved + 2);
    assert_eq!(after[saved + 1], "False True True");
    // SAFETY: kill of the restored child, by pid.
    unsafe { libc::kill(child, libc::SIGKILL) };
    let reaped = wait_until(
        "the program to reap its child through the pidfd",
        DEADLINE,
        || {
            complete_lines(&log)
                .into_iter()
                .find(|l| l.contains("reaped"))
        },
    );
    assert_eq!(
        reaped,
        format!("True True True reaped {child} {}", libc::SIGKILL)
    );
}

/// Two threads with different credentials: one dropped to uid 65534 with
/// a raw `setresuid`, which changes only the calling thread. Each line is
/// one write, so the threads' lines cannot interleave.
const THREAD_CREDS: &str = r#"
import ctypes, os, threading, time
libc = ctypes.CDLL(None, use_errno=True)
SYS_setresuid = 117
def worker():
    assert libc.syscall(SYS_setresuid, 65534, 65534, 65534) == 0
    while True:
        os.write(1, f"worker {os.getuid()} {os.geteuid()}\n".encode())
        time.sleep(0.05)
threading.Thread(target=worker, daemon=True).start()
while True:
    os.write(1, f"main {os.getuid()} {os.geteuid()}\n".encode())
    time.sleep(0.05)
"#;

#[test]
fn threads_keep_their_own_credentials() {
    let t = tempdir();
    let log = t.path().join("py.log");
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let pid = r.spawn_python(THREAD_CREDS, &[], &log);
    let seen = |from: usize| {
        let l = complete_lines(&log);
        (l[from..].iter().any(|l| l == "worker 65534 65534")
            && l[from..].iter().any(|l| l == "main 0 0"))
        .then_some(())
    };
    wait_until("both threads to print", DEADLINE, || seen(0));
    r.checkpoint_stop(pid, &img);
    let saved = complete_lines(&log).len();
    r.restore(&img, &[]);
    wait_until(
        "both threads to print after restore with their own uids",
        DEADLINE,
        || seen(saved),
    );
    let after = complete_lines(&log);
    assert!(
        after[saved..]
            .iter()
            .all(|l| l == "worker 65534 65534" || l == "main 0 0"),
        "{:?}",
        &after[saved..]
    );
}

/// A terminal emulator in miniature: python holds a pty master, runs an
/// interactive bash on the slave, logs what bash prints and types what the
/// test asks for.
const TERMINAL: &str = r#"
import os, pty, select, sys, time
log, inbox = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.environ['PS1'] = 'PROMPT$ '
    os.execvp('bash', ['bash', '--norc', '--noprofile', '-i'])
n = 0
while True:
    r, _, _ = select.select([fd], [], [], 0.02)
    if r:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        with open(log, 'ab') as f:
            f.write(data)
    nxt = f"{inbox}.{n}"
    if os.path.exists(nxt):
        os.write(fd, open(nxt, 'rb').read())
        n += 1
"#;

/// An interactive bash on a pty held by `TERMINAL`, driven by a test.
struct Terminal {
    pid: i32,
    log: std::path::PathBuf,
    inbox: std::path::PathBuf,
    typed: std::cell::Cell<usize>,
}

impl Terminal {
    fn start(r: &mut Reaper, dir: &std::path::Path) -> Self {
        let (log, inbox) = (dir.join("term.log"), dir.join("type"));
        let pid = r.spawn(
            Command::new("/usr/bin/python3")
                .args(["-c", TERMINAL, path(&log), path(&inbox)])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        Terminal {
            pid,
            log,
            inbox,
            typed: std::cell::Cell::new(0),
        }
    }

    /// Everything bash printed so far.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Type `text`. The file appears whole (written aside, then renamed):
    /// the terminal types a file as soon as it exists, and would type an
    /// empty one caught between creation and write.
    fn type_text(&self, text: &str) {
        let n = self.typed.get();
        let aside = self.inbox.with_extension(format!("{n}.part"));
        fs::write(&aside, text).unwrap();
        fs::rename(&aside, self.inbox.with_extension(n.to_string())).unwrap();
        self.typed.set(n + 1);
    }

    /// Wait until `what` is on the screen past its first `from` bytes.
    #[track_caller]
    fn wait_for(&self, what: &str, from: usize) {
        wait_until(&format!("{what:?} on the terminal"), DEADLINE, || {
            self.screen()[from..].contains(what).then_some(())
        })
    }

    fn wait_idle(&self) {
        wait_until("bash idle at its prompt", DEADLINE, || {
            self.screen().trim_end().ends_with("PROMPT$").then_some(())
        });
    }
}

#[test]
fn interactive_bash_on_a_pty_keeps_its_terminal_and_jobs() {
    let t = tempdir();
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let term = Terminal::start(&mut r, t.path());
    let (pid, screen) = (term.pid, || term.screen());
    let type_line = |line: &str| term.type_text(&format!("{line}\n"));
    let wait_for = |what: &str| term.wait_for(what, 0);
    wait_for("PROMPT$ ");
    type_line("sleep 1000 &");
    wait_for("[1] ");
    type_line("echo tty=$(tty | cut -c1-9) fg=$(ps -o tpgid= -p $$ | tr -d ' ') me=$$");
    wait_for("tty=/dev/pts/");
    // Idle at the prompt: nothing unread in the terminal.
    term.wait_idle();
    let check = hiber(&["check", &pid.to_string()]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    r.checkpoint_stop(pid, &img);
    r.restore(&img, &[]);

    let before = screen().len();
    type_line("echo answer=$((6*7)); jobs; echo fg=$(ps -o tpgid= -p $$ | tr -d ' ') me=$$");
    wait_for("answer=42");
    wait_until(
        "jobs and the foreground group after restore",
        DEADLINE,
        || {
            let s = screen()[before..].to_string();
            (s.contains("sleep 1000 &") && s.lines().any(|l| l.starts_with("fg="))).then_some(())
        },
    );
    let after = screen()[before..].to_string();
    let line = after
        .lines()
        .find(|l| l.starts_with("fg="))
        .unwrap_or_else(|| panic!("no fg= line in {after:?}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        f[0].trim_start_matches("fg="),
        f[1].trim_start_matches("me="),
        "bash is its terminal's foreground group: {line}"
    );
}

/// A job stopped with ^Z in an interactive bash: a checkpoint that leaves
/// the session running leaves it stopped; after `--stop` and restore it is
/// stopped again (by the same signal), `jobs` lists it, and `fg` brings it
/// back reading the terminal.
#[test]
fn a_job_stopped_with_ctrl_z_comes_back_stopped_and_fg_resumes_it() {
    let t = tempdir();
    let mut r = Reaper::new();
    let term = Terminal::start(&mut r, t.path());
    let (pid, screen) = (term.pid, || term.screen());
    let type_raw = |text: &str| term.type_text(text);
    let wait_for = |what: &str, from: usize| term.wait_for(what, from);
    let cat_state = || {
        tree(pid)
            .into_iter()
            .find(|&p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "cat\n"))
            .and_then(state)
    };
    wait_for("PROMPT$ ", 0);
    type_raw("cat\n");
    // Typed before cat reads, the line would find readline's raw mode
    // (no echo): wait until cat sleeps in its read.
    wait_until("cat reading the terminal", DEADLINE, || {
        (cat_state() == Some('S')).then_some(())
    });
    type_raw("meow\n");
    wait_for("meow\r\nmeow\r\n", 0);
    type_raw("\x1a");
    wait_for("Stopped", 0);
    term.wait_idle();
    assert_eq!(cat_state(), Some('T'));
    let check = hiber(&["check", &pid.to_string()]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    assert!(
        stdout(&check).contains("stopped by SIGTSTP (job control)"),
        "{}",
        stdout(&check)
    );
    // Saved while running on: still stopped, no longer traced.
    let kept = t.path().join("kept");
    assert_ok(
        &hiber(&["checkpoint", &pid.to_string(), "-o", path(&kept)]),
        "checkpoint of a session with a stopped job",
    );
    assert_eq!(cat_state(), Some('T'));
    let img = t.path().join("img");
    r.checkpoint_stop(pid, &img);
    r.restore(&img, &[]);
    wait_until("the restored cat stopped again", DEADLINE, || {
        (cat_state() == Some('T')).then_some(())
    });
    let before = screen().len();
    type_raw("jobs\n");
    wait_for("Stopped", before);
    wait_for("cat", before);
    let before = screen().len();
    type_raw("fg\n");
    wait_until("cat reading in the foreground", DEADLINE, || {
        (cat_state() == Some('S')).then_some(())
    });
    type_raw("purr\n");
    wait_for("purr\r\npurr\r\n", before);
    type_raw("\x04");
    wait_until("cat to end", DEADLINE, || {
        cat_state().is_none().then_some(())
    });
    let before = screen().len();
    type_raw("echo done=$((1+1))\n");
    wait_for("done=2", before);
}

/// `sleep` in the foreground of an interactive bash: after `--stop` and
/// restore the terminal's foreground group is still sleep's, so ^C ends
/// it and bash takes the terminal back (the group was lost when the
/// checkpointer, not on that terminal, asked the slave for it).
#[test]
fn a_foreground_job_keeps_the_terminal_and_ctrl_c_ends_it() {
    let t = tempdir();
    let mut r = Reaper::new();
    let term = Terminal::start(&mut r, t.path());
    let pid = term.pid;
    let sleep_pid = || {
        tree(pid)
            .into_iter()
            .find(|&p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "sleep\n"))
    };
    term.wait_for("PROMPT$ ", 0);
    term.type_text("sleep 1000\n");
    let sleeping = wait_until("sleep in the foreground", DEADLINE, || {
        sleep_pid().filter(|&p| state(p) == Some('S'))
    });
    let tpgid = |p: i32| {
        fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(") ")
                    .next()?
                    .split(' ')
                    .nth(5)?
                    .parse::<i32>()
                    .ok()
            })
    };
    assert_eq!(tpgid(sleeping), Some(sleeping));
    let img = t.path().join("img");
    r.checkpoint_stop(pid, &img);
    r.restore(&img, &[]);
    wait_until("the restored sleep, in the foreground", DEADLINE, || {
        sleep_pid().filter(|&p| tpgid(p) == Some(p))
    });
    let before = term.screen().len();
    term.type_text("\x03");
    wait_until("^C to end sleep", DEADLINE, || {
        sleep_pid().is_none().then_some(())
    });
    term.type_text("echo back=$((40+2))\n");
    term.wait_for("back=42", before);
}

#[test]
fn tmux_server_with_two_shells_comes_back_with_its_panes() {
    let t = tempdir();
    let sock = t.path().join("tmux.sock");
    let img = t.path().join("img");
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&sock)
            .args(args)
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut r = Reaper::new();
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "80",
        "-y",
        "24",
        "bash --norc --noprofile",
    ]);
    let server: i32 = tmux(&["display", "-p", "#{pid}"]).trim().parse().unwrap();
    r.adopt(server);
    // "t:" is session t's next free index; a bare "t" may be taken for
    // a window of the current session (seen: "index 0 in use").
    tmux(&["new-window", "-t", "t:", "bash --norc --noprofile"]);
    for w in ["0", "1"] {
        tmux(&[
            "send-keys",
            "-t",
            &format!("t:{w}"),
            &format!("echo marker-of-window-{w}"),
            "Enter",
        ]);
    }
    let pane = |w: &str| tmux(&["capture-pane", "-p", "-t", &format!("t:{w}")]);
    for w in ["0", "1"] {
        wait_until("the marker in the pane", DEADLINE, || {
            pane(w)
                .lines()
                .any(|l| l == format!("marker-of-window-{w}"))
                .then_some(())
        });
    }
    let before: Vec<String> = ["0", "1"].iter().map(|w| pane(w)).collect();
    r.checkpoint_stop(server, &img);
    r.restore(&img, &[]);
    let after: Vec<String> = ["0", "1"].iter().map(|w| pane(w)).collect();
    assert_eq!(after, before, "the panes show what they showed");
    tmux(&["send-keys", "-t", "t:1", "echo answer-$((6*7))", "Enter"]);
    wait_until("a new command to run in window 1", DEADLINE, || {
        pane("1").lines().any(|l| l == "answer-42").then_some(())
    });
    tmux(&["kill-server"]);
}

#[test]
fn session_bus_and_a_monitor_come_back_connected() {
    let t = tempdir();
    let bus = t.path().join("bus");
    let address = format!("unix:path={}", bus.display());
    let mon_log = t.path().join("monitor.log");
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let daemon = r.spawn(
        Command::new("dbus-daemon")
            .args([
                "--session",
                "--nofork",
                "--nopidfile",
                &format!("--address={address}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let send = |args: &[&str]| {
        Command::new("dbus-send")
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .args(["--session", "--print-reply"])
            .args(args)
            .output()
            .expect("running dbus-send")
    };
    let get_id = || {
        let out = send(&[
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetId",
        ]);
        // The reply's body: the bus id.
        out.status
            .success()
            .then(|| stdout(&out).lines().last().unwrap_or_default().to_string())
    };
    let id = wait_until("the bus to answer", DEADLINE, get_id);
    let monitor = r.spawn(
        Command::new("dbus-monitor")
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .args(["--session", "type='signal',interface='org.hiber.Test'"])
            .stdout(fs::File::create(&mon_log).unwrap())
            .stderr(Stdio::null()),
    );
    let ping = |word: &str| {
        let out = Command::new("dbus-send")
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .args([
                "--session",
                "--type=signal",
                "/org/hiber/Test",
                "org.hiber.Test.Ping",
                &format!("string:{word}"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    // The monitor is subscribed once a ping reaches it.
    wait_until("the monitor to see a signal", DEADLINE, || {
        ping("before");
        fs::read_to_string(&mon_log)
            .unwrap_or_default()
            .contains("\"before\"")
            .then_some(())
    });
    let out = hiber(&[
        "checkpoint",
        &daemon.to_string(),
        &monitor.to_string(),
        "-o",
        path(&img),
        "--stop",
        "--json",
    ]);
    assert_ok(&out, "checkpoint of the bus and the monitor");
    r.wait_children(&[daemon, monitor]);
    wait_gone(daemon);
    wait_gone(monitor);
    r.restore(&img, &[]);
    assert_eq!(
        wait_until("the restored bus to answer", DEADLINE, get_id),
        id,
        "the same bus"
    );
    ping("after-restore");
    wait_until("the restored monitor to get a new signal", DEADLINE, || {
        fs::read_to_string(&mon_log)
            .unwrap_or_default()
            .contains("\"after-restore\"")
            .then_some(())
    });
}

#[test]
fn program_from_an_outside_terminal_comes_back_on_the_restorer_terminal() {
    use std::os::fd::FromRawFd;
    let t = tempdir();
    let img = t.path().join("img");
    // This test is the terminal: it holds the pty master.
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname on a fresh master.
    let (master, slave_path) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let name = std::ffi::CStr::from_ptr(libc::ptsname(m))
            .to_string_lossy()
            .into_owned();
        (std::fs::File::from_raw_fd(m), name)
    };
    let slave = || {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&slave_path)
            .unwrap()
    };
    let mut r = Reaper::new();
    let pid = r.spawn(
        Command::new("bash")
            .args(["-c", "trap '' HUP; while :; do echo tick; sleep 0.1; done"])
            .stdout(slave())
            .stderr(slave()),
    );
    wait_until("the program to write to its terminal", DEADLINE, || {
        fs::read_link(format!("/proc/{pid}/fd/1"))
            .ok()
            .filter(|l| l.to_string_lossy() == slave_path)
    });
    let check = hiber(&["check", &pid.to_string()]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    assert!(
        stdout(&check).contains("restored as the terminal `hiber restore` runs in"),
        "{}",
        stdout(&check)
    );
    r.checkpoint_stop(pid, &img);
    drop(master);
    // Restore from a terminal: `script` runs hiber on a pty of its own.
    let restore = format!("{} restore {}", hiber_bin().display(), img.display());
    let out = Command::new("script")
        .args(["-qec", &restore, path(&t.path().join("typescript"))])
        .stdin(Stdio::null())
        .output()
        .expect("running script");
    r.adopt(pid);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(alive(pid));
    let now = fs::read_link(format!("/proc/{pid}/fd/1")).unwrap();
    assert!(now.to_string_lossy().starts_with("/dev/pts/"), "{now:?}");
}

#[test]
fn tcp_listener_and_udp_come_back_and_a_tcp_connection_is_reset() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};
    let t = tempdir();
    let log = t.path().join("net.log");
    let go = t.path().join("go");
    let img = t.path().join("img");
    // The outside peer of the program's TCP connection: this test.
    let outside = TcpListener::bind("127.0.0.1:0").unwrap();
    let script = format!(
        "import socket, os, time\n\
         srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         srv.bind(('127.0.0.1', 0)); srv.listen(4)\n\
         udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(('127.0.0.1', 0))\n\
         cli = socket.create_connection(('127.0.0.1', {}))\n\
         print(srv.getsockname()[1], udp.getsockname()[1], flush=True)\n\
         while not os.path.exists({:?}): time.sleep(0.01)\n\
         try:\n    d = cli.recv(10); print('client', 'eof' if not d else d, flush=True)\n\
         except OSError as e:\n    print('client', 'error', e.errno, flush=True)\n\
         c, _ = srv.accept(); c.sendall(b'pong'); c.close()\n\
         d, a = udp.recvfrom(100); udp.sendto(d.upper(), a)\n\
         print('served', flush=True)\n\
         time.sleep(1000)",
        outside.local_addr().unwrap().port(),
        go.to_str().unwrap()
    );
    let mut r = Reaper::new();
    let pid = python_logging(&mut r, &script, &log);
    let (conn, _) = outside.accept().unwrap();
    let ports: Vec<u16> = wait_lines(&log, 1)[0]
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    let check = hiber(&["check", &pid.to_string()]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    assert!(
        stdout(&check)
            .lines()
            .any(|l| l.contains("Reset") && l.contains("IPv4 TCP socket, connection")),
        "{}",
        stdout(&check)
    );
    r.checkpoint_stop(pid, &img);
    drop(conn);
    r.restore(&img, &[]);
    fs::write(&go, b"").unwrap();
    let line = wait_lines(&log, 2)[1].clone();
    assert!(
        line.starts_with("client eof") || line.starts_with("client error"),
        "{line}"
    );
    // The listener and the UDP socket serve on their old ports.
    let mut s = TcpStream::connect(("127.0.0.1", ports[0])).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "pong");
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.send_to(b"ping", ("127.0.0.1", ports[1])).unwrap();
    let mut buf = [0u8; 16];
    let n = u.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"PING");
    let _ = s.write_all(b"");
    wait_lines(&log, 3);
}

/// The options a program set on its sockets come back: an IPv6 wildcard
/// listener with `IPV6_V6ONLY` beside an IPv4 one on the same port
/// (without the option the second bind fails), keepalive and timeouts, linger, a UDP
/// socket's broadcast flag, TOS and buffer, a unix socket's peek offset
/// into its refilled queue, a netlink socket's `NETLINK_NO_ENOBUFS`.
#[test]
fn socket_options_come_back_with_their_sockets() {
    let t = tempdir();
    let log = t.path().join("opts.log");
    let go = t.path().join("go");
    let img = t.path().join("img");
    let script = format!(
        "import socket as S, os, time\n\
         v6 = S.socket(S.AF_INET6); v6.setsockopt(S.IPPROTO_IPV6, S.IPV6_V6ONLY, 1); v6.bind(('::', 0))\n\
         port = v6.getsockname()[1]; v6.listen(4)\n\
         v4 = S.socket(); v4.bind(('0.0.0.0', port)); v4.listen(4)\n\
         v4.setsockopt(S.SOL_SOCKET, S.SO_KEEPALIVE, 1); v4.setsockopt(S.IPPROTO_TCP, S.TCP_KEEPIDLE, 77)\n\
         v4.setsockopt(S.IPPROTO_TCP, S.TCP_NODELAY, 1)\n\
         v4.setsockopt(S.SOL_SOCKET, S.SO_RCVTIMEO, (1).to_bytes(8, 'little') + (500000).to_bytes(8, 'little'))\n\
         v4.setsockopt(S.SOL_SOCKET, S.SO_LINGER, (1).to_bytes(4, 'little') + (9).to_bytes(4, 'little'))\n\
         u = S.socket(S.AF_INET, S.SOCK_DGRAM); u.bind(('127.0.0.1', 0))\n\
         u.setsockopt(S.SOL_SOCKET, S.SO_BROADCAST, 1); u.setsockopt(S.IPPROTO_IP, S.IP_TOS, 0x10)\n\
         u.setsockopt(S.SOL_SOCKET, S.SO_RCVBUF, 100000)\n\
         a, b = S.socketpair(); a.sendall(b'0123456789'); b.setsockopt(S.SOL_SOCKET, 42, 4)\n\
         n = S.socket(S.AF_NETLINK, S.SOCK_RAW, 0); n.bind((0, 0)); n.setsockopt(270, 5, 1)\n\
         def state():\n\
         \x20   return [v6.getsockopt(S.IPPROTO_IPV6, S.IPV6_V6ONLY), v4.getsockopt(S.SOL_SOCKET, S.SO_KEEPALIVE),\n\
         \x20     v4.getsockopt(S.IPPROTO_TCP, S.TCP_KEEPIDLE), v4.getsockopt(S.IPPROTO_TCP, S.TCP_NODELAY),\n\
         \x20     v4.getsockopt(S.SOL_SOCKET, S.SO_RCVTIMEO, 16).hex(), v4.getsockopt(S.SOL_SOCKET, S.SO_LINGER, 8).hex(),\n\
         \x20     u.getsockopt(S.SOL_SOCKET, S.SO_BROADCAST), u.getsockopt(S.IPPROTO_IP, S.IP_TOS),\n\
         \x20     u.getsockopt(S.SOL_SOCKET, S.SO_RCVBUF), b.getsockopt(S.SOL_SOCKET, 42), n.getsockopt(270, 5)]\n\
         print(port, *state(), flush=True)\n\
         while not os.path.exists({:?}): time.sleep(0.01)\n\
         print(port, *state(), flush=True)\n\
         print('peeked', b.recv(3, S.MSG_PEEK).decode(), flush=True)\n\
         time.sleep(1000)",
        go.to_str().unwrap()
    );
    let mut r = Reaper::new();
    let pid = r.spawn_python(&script, &[], &log);
    let before = wait_lines(&log, 1)[0].clone();
    let fields: Vec<&str> = before.split(' ').collect();
    // V6ONLY, keepalive, idle 77, nodelay, 1.5 s, linger 9 s, broadcast,
    // TOS, doubled buffer, peek offset 4, no ENOBUFS: all as set.
    assert_eq!(
        fields[1..],
        [
            "1",
            "1",
            "77",
            "1",
            "010000000000000020a1070000000000",
            "0100000009000000",
            "1",
            "16",
            "200000",
            "4",
            "1"
        ],
        "{before}"
    );
    r.checkpoint_stop(pid, &img);
    r.restore(&img, &[]);
    fs::write(&go, b"").unwrap();
    let lines = wait_lines(&log, 3);
    assert_eq!(lines[1], before, "options after restore");
    // The peek offset counts into the refilled queue.
    assert_eq!(lines[2], "peeked 456");
    // Both listeners serve their port again.
    let port: u16 = fields[0].parse().unwrap();
    std::net::TcpStream::connect(("::1", port)).unwrap();
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
}

/// A message carrying fds in flight refuses a checkpoint only for now:
/// `check` says so, a checkpoint lets the processes run and tries again
/// (four tries in all), and succeeds once the program has read it. The
/// program reads it only when the test says, which it says once the log
/// shows the first refusal.
#[test]
fn data_in_flight_is_waited_for_and_the_checkpoint_tried_again() {
    use std::io::BufRead;
    let t = tempdir();
    let log = t.path().join("inflight.log");
    let go = t.path().join("go");
    let script = format!(
        "import socket as S, os, time, array\n\
         a, b = S.socketpair()\n\
         r, w = os.pipe()\n\
         a.sendmsg([b'x'], [(S.SOL_SOCKET, S.SCM_RIGHTS, array.array('i', [w]))])\n\
         print('sent', flush=True)\n\
         while not os.path.exists({:?}): time.sleep(0.002)\n\
         msg, anc, _, _ = b.recvmsg(1, S.CMSG_SPACE(4))\n\
         got = array.array('i', anc[0][2])[0]\n\
         os.write(got, b'!'); print('received', os.read(r, 1).decode(), flush=True)\n\
         n = 0\n\
         while True:\n\
         \x20   n += 1; time.sleep(0.01)",
        go.to_str().unwrap()
    );
    let mut r = Reaper::new();
    let pid = r.spawn_python(&script, &[], &log);
    wait_lines(&log, 1);
    let check = hiber(&["check", &pid.to_string()]);
    assert_eq!(check.status.code(), Some(3), "{}", stdout(&check));
    assert!(
        stdout(&check).contains("SCM_RIGHTS")
            && stdout(&check).contains("(data in flight: a checkpoint tries again)"),
        "{}",
        stdout(&check)
    );
    // Never read: every try is refused, and the error says why.
    let img = t.path().join("img");
    let out = hiber(&["checkpoint", &pid.to_string(), "-o", path(&img)]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("only data in flight was in the way"),
        "{}",
        stderr(&out)
    );
    assert!(!img.exists());
    // Read after the first refusal: a later try saves it.
    let mut child = Command::new(hiber_bin())
        .args(["checkpoint", &pid.to_string(), "-o", path(&img), "--json"])
        .args(["--log", "hiber_core::checkpoint=info"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut errors = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("trying again") {
        let mut line = String::new();
        assert!(errors.read_line(&mut line).unwrap() > 0, "no retry: {seen}");
        seen.push_str(&line);
    }
    fs::write(&go, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{seen}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["attempts"].as_u64().unwrap() >= 2, "{v}");
    // The program read its fd and runs on, unharmed by the tries.
    assert_eq!(wait_lines(&log, 2)[1], "received !");
    assert_eq!(state(pid).map(|s| s != 'Z' && s != 'X'), Some(true));
}

/// Files deleted while mapped (a library replaced by an upgrade, an
/// unlinked temporary file) and a memfd mapped privately come back with
/// their contents: the library still runs, the deleted file is still shared
/// between the two processes that map it, the private copy keeps its
/// modified page.
#[test]
fn mappings_of_deleted_files_and_private_memfds_come_back() {
    let t = tempdir();
    let log = t.path().join("deleted.log");
    let go = t.path().join("go");
    let img = t.path().join("img");
    let script = format!(
        "import ctypes, mmap, os, shutil, time\n\
         d = {dir:?}\n\
         lib = os.path.join(d, 'libz-old.so.1')\n\
         shutil.copy('/usr/lib/x86_64-linux-gnu/libz.so.1', lib)\n\
         z = ctypes.CDLL(lib); z.crc32.restype = ctypes.c_ulong\n\
         z.crc32.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_uint]\n\
         os.unlink(lib)\n\
         p = os.path.join(d, 'scratch')\n\
         with open(p, 'wb') as f: f.write(b'\\0' * 8192)\n\
         fd = os.open(p, os.O_RDWR); m = mmap.mmap(fd, 8192); os.close(fd); os.unlink(p)\n\
         m[:5] = b'hello'\n\
         mf = os.memfd_create('private-one'); os.write(mf, b'A' * 4096)\n\
         pm = mmap.mmap(mf, 4096, flags=mmap.MAP_PRIVATE); os.close(mf); pm[:3] = b'xyz'\n\
         if os.fork() == 0:\n\
         \x20   i = 0\n\
         \x20   while True:\n\
         \x20       i += 1; m[100:108] = i.to_bytes(8, 'little'); time.sleep(0.005)\n\
         print('before', z.crc32(0, b'abc', 3), flush=True)\n\
         while not os.path.exists({go:?}): time.sleep(0.01)\n\
         seen = m[100:108]; end = time.time() + 10\n\
         while m[100:108] == seen and time.time() < end: time.sleep(0.005)\n\
         print('after', z.crc32(0, b'abc', 3), bytes(m[:5]).decode(), bytes(pm[:4]).decode(),\n\
         \x20     'shared' if m[100:108] != seen else 'not-shared', flush=True)\n\
         time.sleep(1000)",
        dir = t.path().to_str().unwrap(),
        go = go.to_str().unwrap()
    );
    let mut r = Reaper::new();
    let pid = r.spawn_python(&script, &[], &log);
    assert_eq!(wait_lines(&log, 1)[0], "before 891568578");
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps.contains("libz-old.so.1 (deleted)"), "{maps}");
    let check = hiber(&["check", &pid.to_string()]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    assert!(
        stdout(&check).contains("deleted file") && stdout(&check).contains("recreated as a memfd"),
        "{}",
        stdout(&check)
    );
    r.checkpoint_stop(pid, &img);
    r.restore(&img, &[]);
    fs::write(&go, b"").unwrap();
    assert_eq!(wait_lines(&log, 2)[1], "after 891568578 hello xyzA shared");
    // The library is mapped where it was, now from a memfd named after it.
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps.contains("/memfd:libz-old.so.1"), "{maps}");
}

/// A tree that is exactly the processes of a cgroup is frozen through the
/// cgroup v2 freezer first (no fork can race with the seizing); the cgroup
/// is thawed again and the processes run on. A tree that is not a whole
/// cgroup is frozen with ptrace alone.
#[test]
fn a_tree_alone_in_its_cgroup_is_frozen_through_the_cgroup() {
    let mount = cgroup2_mount().expect("a cgroup v2 hierarchy (cgroup2 in /proc/self/mountinfo)");
    let t = tempdir();
    // Dropped after the reaper has ended the processes inside it.
    let cg = TestCgroup(mount.join(format!("hiber-test-{}", std::process::id())));
    fs::create_dir(&cg.0).unwrap();
    let mut r = Reaper::new();
    let count = t.path().join("count");
    // The shell moves itself into the cgroup before it forks anything.
    let root = r.spawn(Command::new("sh").arg("-c").arg(format!(
        "echo $$ > {}/cgroup.procs && exec bash -c 'n=0; while :; do n=$((n+1)); echo $n > {}; sleep 0.01; done & sleep 1000'",
        cg.0.display(),
        count.display()
    )));
    wait_until("the tree to fill its cgroup", DEADLINE, || {
        let procs = fs::read_to_string(cg.0.join("cgroup.procs")).unwrap_or_default();
        let ours = tree(root);
        (ours.len() >= 3
            && procs.lines().filter(|l| !l.is_empty()).count() == ours.len()
            && fs::read_to_string(&count).is_ok())
        .then_some(())
    });
    let img = t.path().join("img");
    let out = hiber(&["checkpoint", &root.to_string(), "-o", path(&img), "--json"]);
    assert_ok(&out, "checkpoint of a tree alone in its cgroup");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["frozen_cgroup"].as_str(),
        Some(cg.0.to_str().unwrap()),
        "{v}"
    );
    // Thawed: not frozen, not traced, still counting.
    assert_eq!(
        fs::read_to_string(cg.0.join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "0"
    );
    assert!(fs::read_to_string(cg.0.join("cgroup.events"))
        .unwrap()
        .lines()
        .any(|l| l == "frozen 0"));
    // The loop's short-lived sleeps may end between the listing and the
    // look: those that are gone are not traced either.
    for p in tree(root) {
        if let Some(tracer) = status_field(p, "TracerPid") {
            assert_eq!(tracer, "0", "pid {p}");
        }
    }
    let seen: u64 = fs::read_to_string(&count)
        .unwrap()
        .trim()
        .parse()
        .unwrap_or(0);
    wait_until("the loop to count on", DEADLINE, || {
        fs::read_to_string(&count)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|&n| n > seen)
    });

    // A plain sleep shares the test's cgroup with others: ptrace alone.
    let sleeper = r.spawn_sleep();
    let out = hiber(&[
        "checkpoint",
        &sleeper.to_string(),
        "-o",
        path(&t.path().join("img2")),
        "--json",
    ]);
    assert_ok(&out, "checkpoint of a process in a shared cgroup");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["frozen_cgroup"].is_null(), "{v}");
    r.kill_all();

    // hiber alone in a cgroup, asked to save itself: refused before the
    // cgroup is frozen (which would freeze hiber too).
    let own = TestCgroup(mount.join(format!("hiber-test-self-{}", std::process::id())));
    fs::create_dir(&own.0).unwrap();
    let mut me = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec {} checkpoint $$ -o {}",
            own.0.display(),
            hiber_bin().display(),
            t.path().join("img-self").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_until("hiber to refuse saving itself", DEADLINE, || {
        me.try_wait().unwrap()
    });
    let mut err = String::new();
    std::io::Read::read_to_string(&mut me.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("is this checkpointer or one of its ancestors"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(own.0.join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "0"
    );
}

/// Inside a pid namespace whose init was started from outside (a
/// container entered with `docker exec`, or `unshare --pid` as here), the
/// session and process group are led by a process the namespace cannot
/// see, and /proc reads their ids as 0. Such a tree is saved and restored
/// from inside the namespace: it joins the restorer's session and group,
/// led from outside too, and goes on counting without a gap.
#[test]
fn tree_whose_session_is_led_from_outside_the_pid_namespace() {
    const COUNTER: &str = r#"
import sys, time
n = 0
while True:
    n += 1
    with open(sys.argv[1], "a") as f:
        f.write(f"{n}\n")
    time.sleep(0.05)
"#;
    const SCRIPT: &str = r#"
hiber=$1; dir=$2; counter=$3
python3 -c "$counter" "$dir/count" &
p=$!
for i in $(seq 1000); do [ -s "$dir/count" ] && break; sleep 0.01; done
cut -d' ' -f5,6 /proc/$p/stat > "$dir/ids-before"
"$hiber" checkpoint $p -o "$dir/img" --stop --json > "$dir/checkpoint.json" 2>&1 || exit 1
wait $p
"$hiber" restore "$dir/img" --json > "$dir/restore.json" 2>&1 || exit 2
cut -d' ' -f5,6 /proc/$p/stat > "$dir/ids-after"
touch "$dir/restored"
exec sleep 1000
"#;
    let t = tempdir();
    let dir = t.path();
    let mut r = Reaper::new();
    let init = r.spawn(
        Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "bash",
                "-c",
                SCRIPT,
                "ns",
            ])
            .arg(hiber_bin())
            .arg(dir)
            .arg(COUNTER)
            .stderr(fs::File::create(dir.join("script.log")).unwrap()),
    );
    wait_until("the restore inside the namespace", DEADLINE, || {
        if dir.join("restored").exists() {
            return Some(());
        }
        let ended = r
            .children_mut()
            .iter_mut()
            .find(|c| c.id() as i32 == init)?
            .try_wait()
            .ok()??;
        panic!(
            "the script inside the namespace ended ({ended}): {} checkpoint: {} restore: {}",
            fs::read_to_string(dir.join("script.log")).unwrap_or_default(),
            fs::read_to_string(dir.join("checkpoint.json")).unwrap_or_default(),
            fs::read_to_string(dir.join("restore.json")).unwrap_or_default()
        );
    });
    let ids = |name: &str| fs::read_to_string(dir.join(name)).unwrap();
    assert_eq!(ids("ids-before").trim(), "0 0", "pgid and sid before");
    assert_eq!(ids("ids-after").trim(), "0 0", "pgid and sid after");
    let count = dir.join("count");
    let before = complete_lines(&count).len();
    let lines = wait_until("the restored counter to go on", DEADLINE, || {
        let l = complete_lines(&count);
        (l.len() >= before + 5).then_some(l)
    });
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l, &(i + 1).to_string(), "count without gap or repeat");
    }
}

/// A process with 40 inotify watches (descriptors past 9, which fdinfo
/// prints in hex): after a restore, an event on each watched file arrives
/// with the descriptor the program was given for that file.
#[test]
fn forty_inotify_watches_keep_their_descriptors() {
    let t = tempdir();
    let dir = t.path().join("watched");
    fs::create_dir(&dir).unwrap();
    let log = t.path().join("log");
    let script = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
files = {}
for i in range(40):
    p = os.path.join(sys.argv[1], "f%d" % i)
    open(p, "w").close()
    files[libc.inotify_add_watch(fd, p.encode(), 2)] = i  # IN_MODIFY
print("ready", sorted(files), flush=True)
while True:
    buf = os.read(fd, 4096)
    off = 0
    while off < len(buf):
        wd, mask, cookie, n = struct.unpack_from("iIII", buf, off)
        print("event", wd, files.get(wd), flush=True)
        off += 16 + n
"#;
    let mut r = Reaper::new();
    let pid = r.spawn_python(script, &[path(&dir)], &log);
    let ready = wait_until("forty watches", DEADLINE, || {
        complete_lines(&log)
            .into_iter()
            .find(|l| l.starts_with("ready"))
    });
    assert!(ready.contains("16, 17"), "{ready}");
    let img = t.path().join("img");
    r.checkpoint_stop(pid, &img);
    r.restore(&img, &[]);
    for i in [3, 15, 16, 31, 39] {
        fs::write(dir.join(format!("f{i}")), "x").unwrap();
        wait_until(
            &format!("the event of f{i}, for its own watch"),
            DEADLINE,
            || {
                complete_lines(&log)
                    .into_iter()
                    .find(|l| l.starts_with("event ") && l.ends_with(&format!(" {i}")))
            },
        );
    }
    assert!(
        !complete_lines(&log).iter().any(|l| l.ends_with(" None")),
        "an event came for a descriptor the program was not given: {:?}",
        complete_lines(&log)
    );
}

/// A seqpacket socket whose peer has closed, with a message still queued:
/// `check` ends (the queue walk stopped on the end of stream instead of
/// peeking at it forever), and the message and the end of stream come
/// back after a restore.
#[test]
fn seqpacket_queue_of_a_closed_peer() {
    let t = tempdir();
    let log = t.path().join("log");
    let script = r#"
import signal, socket, time
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
b.send(b"hello")
b.close()
def read(*_):
    print("got", a.recv(100), a.recv(100), flush=True)
signal.signal(signal.SIGUSR1, read)
print("ready", flush=True)
while True:
    time.sleep(1000)
"#;
    let mut r = Reaper::new();
    let pid = r.spawn_python(script, &[], &log);
    wait_until("the socket pair", DEADLINE, || {
        complete_lines(&log).into_iter().find(|l| l == "ready")
    });
    let out = Command::new("timeout")
        .args(["30", path(&hiber_bin()), "check", &pid.to_string()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let img = t.path().join("img");
    r.checkpoint_stop(pid, &img);
    r.restore(&img, &[]);
    // SAFETY: kill of the process this test restored.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    wait_until("the queued message and the end of stream", DEADLINE, || {
        complete_lines(&log)
            .into_iter()
            .find(|l| l == "got b'hello' b''")
    });
}

/// A program watching the directory the image is written to (GTK programs
/// watch the home directory) is saved: the unfinished image's directory is
/// made once for all tries, so the program's event for it is read while it
/// runs between tries instead of waiting, unread, in a frozen process.
#[test]
fn a_program_watching_the_images_directory_is_saved() {
    const WATCH: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_CLOEXEC)
wd = libc.inotify_add_watch(fd, sys.argv[1].encode(), 0x100 | 0x200)
print("watching", wd, flush=True)
while True:
    data = os.read(fd, 4096)
    while data:
        w, mask, cookie, n = struct.unpack_from("iIII", data)
        name = data[16:16 + n].rstrip(b"\0").decode()
        print("event", hex(mask), name, flush=True)
        data = data[16 + n:]
"#;
    let t = tempdir();
    let watched = t.path().join("watched");
    fs::create_dir(&watched).unwrap();
    let log = t.path().join("watch.log");
    let mut r = Reaper::new();
    let pid = r.spawn_python(WATCH, &[path(&watched)], &log);
    wait_lines(&log, 1);
    let img = watched.join("img");
    let saved = r.checkpoint_stop(pid, &img);
    assert!(saved["attempts"].as_u64().unwrap() <= 4, "{saved}");
    // It saw the unfinished directory made, and read the event: nothing
    // was left queued, or the save would have been refused.
    let seen = lines(&log);
    assert!(
        seen.iter()
            .any(|l| l.starts_with("event 0x40000100 img.tmp-")),
        "{seen:?}"
    );
    r.restore(&img, &[]);
    // Restored, it watches on: a file made now is seen.
    fs::write(watched.join("after"), "").unwrap();
    wait_until("the restored watcher to see a new file", DEADLINE, || {
        lines(&log)
            .iter()
            .any(|l| l == "event 0x100 after")
            .then_some(())
    });
}

/// A sandbox's namespaces shared along its forks (chromium's zygote and
/// its children share one network namespace): a normal user's program in
/// a user namespace mapping only its own ids, with a network and an IPC
/// namespace of its own, and two children in them. Restored, the four
/// share one new empty network namespace and one new IPC namespace again,
/// not the host's, with no capability.
#[test]
fn namespaces_shared_along_forks_are_made_once_and_shared_again() {
    common::user::ensure_user();
    let t = tempdir();
    let mut r = Reaper::new();
    let root = r.spawn(&mut common::user::in_user_namespace(
        &["--net", "--ipc"],
        &["bash", "-c", "sleep 1000 & (sleep 1000; true) & wait"],
    ));
    let ns = |p: i32, kind: &str| fs::read_link(format!("/proc/{p}/ns/{kind}")).ok();
    let pids = wait_until(
        "the sandbox's two children and a grandchild",
        DEADLINE,
        || {
            let all = tree(root);
            (all.len() == 4 && all.iter().all(|&p| ns(p, "net") == ns(root, "net"))).then_some(all)
        },
    );
    let host_net = ns(std::process::id() as i32, "net");
    assert_ne!(ns(root, "net"), host_net);
    let img = t.path().join("img");
    r.checkpoint_stop(root, &img);
    r.restore(&img, &[]);
    let net = ns(root, "net");
    let ipc = ns(root, "ipc");
    assert_ne!(net, host_net, "a network namespace of its own again");
    assert_ne!(ipc, ns(std::process::id() as i32, "ipc"));
    for &p in &pids {
        assert_eq!(ns(p, "net"), net, "pid {p} shares the sandbox's network");
        assert_eq!(ns(p, "ipc"), ipc, "pid {p} shares the sandbox's IPC");
        assert_eq!(
            status_field(p, "CapEff").as_deref(),
            Some("0000000000000000")
        );
    }
    let devices = fs::read_to_string(format!("/proc/{root}/net/dev")).unwrap();
    let names: Vec<&str> = devices
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .collect();
    assert_eq!(names, ["lo"], "an empty network namespace");
}

/// A sandbox in a pid namespace of its own, made by a normal user with
/// `unshare --pid` (the namespace's pid 1 is the sandboxed shell, its
/// maker runs on beside it): saved with --stop and restored twice, every
/// process gets its pid at both levels again, the maker's children still
/// go to the sandbox's namespace, and the sandbox is one namespace apart
/// from the host's, with its network.
#[test]
fn a_nested_pid_namespace_comes_back_with_its_pids_at_every_level() {
    common::user::ensure_user();
    let t = tempdir();
    let mut r = Reaper::new();
    let maker = r.spawn(&mut common::user::in_user_namespace(
        &["--net", "--pid"],
        &[
            "bash",
            "-c",
            "(sleep 1000 & sleep 1000 & wait) & exec sleep 1000",
        ],
    ));
    let ns_pid = |p: i32| -> Vec<i32> {
        status_field(p, "NSpid")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect()
    };
    let ns = |p: i32, kind: &str| fs::read_link(format!("/proc/{p}/ns/{kind}")).ok();
    let saved = wait_until("the sandbox's shell and its two sleeps", DEADLINE, || {
        let all = tree(maker);
        let inner: Vec<Vec<i32>> = all.iter().map(|&p| ns_pid(p)).collect();
        (all.len() == 4 && inner.iter().filter(|v| v.len() == 2).count() == 3).then_some(inner)
    });
    assert!(saved.iter().any(|v| v.len() == 2 && v[1] == 1), "{saved:?}");
    for round in 1..=2 {
        let img = t.path().join(format!("img{round}"));
        r.checkpoint_stop(maker, &img);
        r.restore(&img, &[]);
        let now: Vec<Vec<i32>> = tree(maker).iter().map(|&p| ns_pid(p)).collect();
        assert_eq!(now, saved, "pids at every level after restore {round}");
        let shell = saved.iter().find(|v| v.len() == 2 && v[1] == 1).unwrap()[0];
        assert_ne!(ns(shell, "pid"), ns(maker, "pid"), "a pid namespace apart");
        assert_eq!(
            ns(maker, "pid_for_children"),
            ns(shell, "pid"),
            "the maker's children go to the sandbox"
        );
        assert_ne!(ns(shell, "net"), ns(std::process::id() as i32, "net"));
    }
}

/// Sandboxed processes of one pid namespace, each with threads and a
/// working directory in a gone `/proc/<tid>/fdinfo` (as chromium's
/// renderers hold their root): their swaps run at once on the restore's
/// tracers, and each gone directory's helper thread takes an id in the
/// namespace that none of the others' threads wants (left to the
/// kernel, it took the lowest free one, and another's clone3 failed with
/// EEXIST). Saved and restored three times: every id at both levels
/// again, every thread and gone directory back. The maker (`unshare`,
/// which keeps its capabilities in the user namespace it made) gets that
/// namespace again owned by the user, not by the restoring root: else
/// the next save is refused (an owner that is none of its ids).
#[test]
fn sandboxed_processes_in_gone_directories_share_a_pid_namespace_again() {
    const SANDBOX: &str = r#"
import os, threading
def sandboxed():
    # Threads first, interleaving their ids with the next process's.
    for _ in range(3):
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    t = threading.Thread(target=os.chdir, args=("/proc/thread-self/fdinfo",))
    t.start()
    t.join()
    threading.Event().wait()
for _ in range(10):
    if os.fork() == 0:
        sandboxed()
os.wait()
"#;
    common::user::ensure_user();
    let t = tempdir();
    let mut r = Reaper::new();
    let maker = r.spawn(&mut common::user::in_user_namespace(
        &["--pid", "--fork"],
        &["python3", "-c", SANDBOX],
    ));
    let threads = |p: i32| status_field(p, "Threads").and_then(|v| v.parse::<usize>().ok());
    let in_gone_dir = |p: i32| {
        fs::read_link(format!("/proc/{p}/cwd"))
            .is_ok_and(|c| c.starts_with("/proc/") && !c.exists())
    };
    // Each sandboxed process with its 3 threads, in its gone directory;
    // their ids at every level, in the tree's order.
    let ready = |all: &std::collections::BTreeSet<i32>| -> Option<Vec<String>> {
        let sandboxed: Vec<i32> = all
            .iter()
            .copied()
            .filter(|&p| in_gone_dir(p) && threads(p) == Some(4))
            .collect();
        (sandboxed.len() == 10).then(|| {
            let mut ids: Vec<String> = all
                .iter()
                .flat_map(|&p| {
                    fs::read_dir(format!("/proc/{p}/task"))
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                        .map(|tid| {
                            fs::read_to_string(format!("/proc/{p}/task/{tid}/status"))
                                .unwrap_or_default()
                                .lines()
                                .find_map(|l| l.strip_prefix("NSpid:"))
                                .unwrap_or("")
                                .trim()
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            ids.sort();
            ids
        })
    };
    let saved = wait_until(
        "ten sandboxed processes in gone directories",
        DEADLINE,
        || ready(&tree(maker)),
    );
    assert!(
        saved
            .iter()
            .filter(|v| v.split_whitespace().count() == 2)
            .count()
            >= 10 * 4,
        "threads of a nested pid namespace: {saved:?}"
    );
    for round in 1..=3 {
        let img = t.path().join(format!("img{round}"));
        r.checkpoint_stop(maker, &img);
        r.restore(&img, &[]);
        let now = ready(&tree(maker)).unwrap_or_else(|| {
            panic!("restore {round}: the sandboxed processes, threads or gone directories are not back")
        });
        assert_eq!(now, saved, "ids at every level after restore {round}");
    }
}

/// A root named for the save that ends before the freeze (a short-lived
/// client of a session's bus) is no longer part of the set: the others
/// are saved. Only a set whose every root is gone is an error.
#[test]
fn a_root_that_ended_before_the_freeze_is_left_out() {
    let mut r = Reaper::new();
    let sleeper = r.spawn_sleep();
    let mut gone = Command::new("true").spawn().expect("starting true");
    let gone_pid = gone.id() as i32;
    gone.wait().expect("waiting for true");
    let img = tempdir();
    let opts = |roots: Vec<i32>, dir: &str| hiber_core::CheckpointOptions {
        verify_before_stop: false,
        roots,
        dir: img.path().join(dir),
        store: None,
        stop: false,
        threads: 1,
        no_reset: false,
        precopy: hiber_core::PrecopyMode::Never,
        devices: Default::default(),
        left_out: Default::default(),
    };
    let stats = hiber_core::checkpoint(&opts(vec![gone_pid, sleeper], "img"), &|_| {})
        .expect("saving the root still there");
    assert_eq!(stats.processes, 1);
    let err = hiber_core::checkpoint(&opts(vec![gone_pid], "img2"), &|_| {})
        .expect_err("a set that is gone");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(alive(sleeper), "the saved process runs on");
}

/// Prints the description's name of its session keyring at start and on
/// SIGUSR1.
const KEYRING_REPORTER: &str = r#"
import ctypes, signal
libc = ctypes.CDLL(None, use_errno=True)
def name():
    buf = ctypes.create_string_buffer(256)
    # keyctl(KEYCTL_DESCRIBE, KEY_SPEC_SESSION_KEYRING, buf, len)
    n = libc.syscall(250, 6, -3, buf, 256)
    return buf.value.decode().rsplit(";", 1)[-1] if n > 0 else "errno %d" % ctypes.get_errno()
print("before", name(), flush=True)
signal.signal(signal.SIGUSR1, lambda *a: print("after", name(), flush=True))
while True:
    signal.pause()
"#;

/// `cmd` starts in a new session keyring called `name`.
fn in_keyring<'a>(cmd: &'a mut Command, name: &'static std::ffi::CStr) -> &'a mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: keyctl is a plain syscall, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::syscall(libc::SYS_keyctl, 1 as libc::c_long, name.as_ptr()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A restored process possesses neither the restorer's session keyring
/// (root's, or hiberd's shared by every session it restores) nor,
/// wrongly, a keyring named like its saved one: it gets a new empty one.
#[test]
fn restored_processes_get_a_session_keyring_of_their_own() {
    let t = tempdir();
    let log = t.path().join("log");
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let pid = r.spawn(
        in_keyring(
            Command::new("python3").args(["-c", KEYRING_REPORTER]),
            c"hiber-test-saved",
        )
        .stdout(fs::File::create(&log).unwrap()),
    );
    assert_eq!(wait_lines(&log, 1)[0], "before hiber-test-saved");
    r.checkpoint_stop(pid, &img);
    let out = in_keyring(
        Command::new(hiber_bin()).args(["restore", path(&img), "--json"]),
        c"hiber-test-restorer",
    )
    .output()
    .unwrap();
    assert_ok(&out, "restore");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for p in v["pids"].as_array().unwrap() {
        r.adopt(p[1].as_i64().unwrap() as i32);
    }
    // SAFETY: kill by pid of the process this test restored.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let after = wait_lines(&log, 2)[1].clone();
    assert_eq!(after, "after _ses", "{after}");
}
