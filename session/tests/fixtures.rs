//! Each kind of process state the engine saves, set up by a fixture
//! program `hiber-fx-MODE`, checked by the fixture itself before the save and after restore.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// Ask the fixture at `pid` to check itself; its report's lines.
fn report(pid: i32, dir: &Path, round: u32) -> Vec<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut ctl = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dir.join("ctl"))
        .expect("the fixture's control FIFO");
    ctl.write_all(b"c").unwrap();
    let text = wait_until(
        &format!("report round {round} from pid {pid}"),
        DEADLINE,
        || {
            fs::read_to_string(dir.join("report"))
                .ok()
                .filter(|t| t.starts_with(&format!("round {round}\n")))
        },
    );
    text.lines().skip(1).map(str::to_string).collect()
}

#[track_caller]
fn assert_all_ok(lines: &[String], when: &str) {
    let failed: Vec<&String> = lines.iter().filter(|l| !l.starts_with("ok ")).collect();
    assert!(
        failed.is_empty() && !lines.is_empty(),
        "{when}: {failed:#?}"
    );
}

/// Start `hiber-fx-MODE` in `t/fx` and wait until it is ready; its
/// pid and directory.
fn start_fixture(r: &mut Reaper, mode: &str, t: &Path) -> (i32, std::path::PathBuf) {
    let dir = t.join("fx");
    fs::create_dir(&dir).unwrap();
    let pid = r.spawn(
        Command::new(fixture_bin(mode))
            .arg(path(&dir))
            .stdout(Stdio::null())
            .stderr(fs::File::create(t.join("stderr")).unwrap()),
    );
    wait_until(&format!("the {mode} fixture to be ready"), DEADLINE, || {
        dir.join("ready").exists().then_some(())
    });
    (pid, dir)
}

/// Start `hiber-fx-MODE`, check it, save it with --stop, restore it,
/// check it again; the checks must be the same and all pass.
fn round_trip(mode: &str, wrap: &[&str]) -> Vec<String> {
    round_trip_with(mode, wrap, true)
}

/// `check_before: false` for fixtures whose check consumes the state
/// (delivering pending signals): then only the restored copy is checked.
fn round_trip_with(mode: &str, wrap: &[&str], check_before: bool) -> Vec<String> {
    round_trip_full(mode, wrap, check_before, &[])
}

/// `may_fail_after`: checks whose failure after restore is by design.
fn round_trip_full(
    mode: &str,
    wrap: &[&str],
    check_before: bool,
    may_fail_after: &[&str],
) -> Vec<String> {
    round_trip_restoring(mode, wrap, check_before, may_fail_after, &[])
}

/// [`round_trip_full`], restoring with `restore_args` too (`--lazy`).
fn round_trip_restoring(
    mode: &str,
    wrap: &[&str],
    check_before: bool,
    may_fail_after: &[&str],
    restore_args: &[&str],
) -> Vec<String> {
    round_trip_saving(
        mode,
        wrap,
        check_before,
        may_fail_after,
        restore_args,
        false,
    )
}

/// [`round_trip_restoring`]; with `saved_running_first`, a checkpoint that
/// leaves the fixture running (pre-copy: a freeze and a thaw, then the
/// freeze of the save proper) comes before the saving `--stop`.
fn round_trip_saving(
    mode: &str,
    wrap: &[&str],
    check_before: bool,
    may_fail_after: &[&str],
    restore_args: &[&str],
    saved_running_first: bool,
) -> Vec<String> {
    let t = tempdir();
    let dir = t.path().join("fx");
    fs::create_dir(&dir).unwrap();
    // Non-root fixtures must reach their directory.
    fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let img = t.path().join("img");
    let mut r = Reaper::new();
    // Run as another user, the fixture is run from a copy that user can
    // read: its restore maps the executable as the saved process would,
    // and the build tree may be in a directory only root can enter.
    let fixture = if wrap.is_empty() {
        fixture_bin(mode)
    } else {
        let copy = t.path().join(format!("hiber-fx-{mode}"));
        fs::copy(fixture_bin(mode), &copy).unwrap();
        fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        copy
    };
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&fixture);
            c
        }
        None => Command::new(&fixture),
    };
    // A restore reopens the fixture's stderr as the fixture's own user,
    // who must be able to open it for writing (as any file it holds).
    let stderr_file = t.path().join("stderr");
    let stderr_out = fs::File::create(&stderr_file).unwrap();
    fs::set_permissions(
        &stderr_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    cmd.arg(path(&dir)).stdout(Stdio::null()).stderr(stderr_out);
    let root = r.spawn(&mut cmd);
    wait_until(&format!("the {mode} fixture to be ready"), DEADLINE, || {
        dir.join("ready").exists().then_some(())
    });
    let pid: i32 = fs::read_to_string(dir.join("ready"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pid, root, "the fixture runs as the spawned process");
    let before = if check_before {
        let lines = report(pid, &dir, 1);
        assert_all_ok(&lines, &format!("{mode} before the save"));
        Some(lines)
    } else {
        None
    };

    let check = hiber(&["check", &pid.to_string()]);
    assert_eq!(check.status.code(), Some(0), "check: {}", stdout(&check));
    if saved_running_first {
        let running = t.path().join("img-running");
        assert_ok(
            &hiber(&["checkpoint", &pid.to_string(), "-o", path(&running)]),
            "checkpoint leaving it running",
        );
    }
    r.checkpoint_stop(pid, &img);
    // The fixture's own report file would otherwise satisfy the next wait.
    let _ = fs::remove_file(dir.join("report"));
    let status = t.path().join("lazy-status.json");
    let mut args = restore_args.to_vec();
    if args.contains(&"--lazy") {
        args.extend(["--lazy-status", path(&status)]);
    }
    let restored = r.restore(&img, &args);
    assert!(restored.pids.iter().all(|(a, b)| a == b));
    let round = if check_before { 2 } else { 1 };
    let mut after = report(pid, &dir, round);
    after.retain(|l| {
        !may_fail_after
            .iter()
            .any(|m| l.starts_with(&format!("FAIL {m}:")))
    });
    assert_all_ok(
        &after,
        &format!(
            "{mode} after restore (stderr: {})",
            fs::read_to_string(t.path().join("stderr")).unwrap_or_default()
        ),
    );
    let names = |l: &[String]| {
        l.iter()
            .map(|s| s.split(':').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    if let Some(mut before) = before {
        before.retain(|l| {
            !may_fail_after
                .iter()
                .any(|m| l.starts_with(&format!("ok {m}")))
        });
        after.retain(|l| {
            !may_fail_after
                .iter()
                .any(|m| l.starts_with(&format!("ok {m}")))
        });
        assert_eq!(names(&after), names(&before), "{mode}: the same checks ran");
    }
    after
}

#[test]
fn memory_registers_and_address_space() {
    let lines = round_trip("memory", &[]);
    assert!(lines.iter().any(|l| l.contains("registers kept")));
}

/// A process with more private anonymous memory than
/// `memory::fill::UFFD_FROM_BYTES` (the fixture has 6 MiB in one mapping, a
/// page in four never touched) gets those pages copied in through a
/// userfaultfd; its checks hold, the untouched pages included, and no
/// mapping stays registered once it runs.
#[test]
fn large_anonymous_memory_is_copied_in_through_a_userfaultfd() {
    let t = tempdir();
    let mut r = Reaper::new();
    let (pid, dir) = start_fixture(&mut r, "memory", t.path());
    assert_all_ok(&report(pid, &dir, 1), "memory before the save");
    let img = t.path().join("img");
    r.checkpoint_stop(pid, &img);
    let _ = fs::remove_file(dir.join("report"));
    let (_, log) = r.restore_logged(&img, &["--log", "hiber_core::memory::fill=debug"]);
    assert!(
        log.lines()
            .any(|l| l.contains("pages copied in through a userfaultfd")
                && l.contains(&pid.to_string())),
        "{log}"
    );
    assert_all_ok(&report(pid, &dir, 2), "memory after restore");
    assert!(
        !hiber_core::memory::filled_by_userfaultfd(pid),
        "a mapping of pid {pid} still registered for missing pages (um in smaps)"
    );
}

/// The same checks, its private anonymous memory (the spinning child's
/// too) filled by the page server of a lazy restore.
#[test]
fn memory_restored_lazily() {
    let lines = round_trip_restoring("memory", &[], true, &[], &["--lazy"]);
    assert!(lines.iter().any(|l| l.contains("private anonymous pages")));
}

#[test]
fn signal_actions_mask_pending_and_altstack() {
    let lines = round_trip_with("signals", &[], false);
    assert!(lines.iter().any(|l| l.contains("queued RT signals")));
}

#[test]
fn files_pipes_devices_eventfd_and_process_attributes() {
    let lines = round_trip("files", &[]);
    assert!(lines.iter().any(|l| l.contains("deleted file contents")));
}

#[test]
fn process_tree_groups_sessions_and_zombies() {
    let lines = round_trip("tree", &[]);
    // Root, two children, a grandchild, the zombie, and the orphaned session's two.
    assert!(
        lines.iter().filter(|l| l.starts_with("ok pid ")).count() >= 7,
        "{lines:#?}"
    );
}

#[test]
fn credentials_of_an_unprivileged_process() {
    round_trip(
        "creds",
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--groups=100,65534",
            "--no-new-privs",
        ],
    );
}

#[test]
fn credentials_of_a_root_process_with_fewer_capabilities() {
    round_trip(
        "creds",
        &[
            "setpriv",
            "--bounding-set=-sys_module,-sys_rawio",
            "--inh-caps=-all",
        ],
    );
}

#[test]
fn unprivileged_caller_may_not_restore_root_processes() {
    let t = tempdir();
    fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let pid = r.spawn_sleep();
    r.checkpoint_stop(pid, &img);
    let restore_as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(hiber_bin())
            .args(["restore", path(&img)])
            .output()
            .unwrap()
    };
    // The image is root's alone: nobody cannot even open it.
    let out = restore_as_nobody();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(path(&img)) && err.contains("Permission denied"),
        "{err}"
    );
    // Made readable, it is still refused: its process is root's.
    let readable = Command::new("chmod")
        .args(["-R", "a+rX", path(t.path())])
        .status()
        .unwrap();
    assert!(readable.success());
    let out = restore_as_nobody();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("pid {pid}")) && err.contains("uid"),
        "{err}"
    );
    assert!(state(pid).is_none());
}

#[test]
fn tasks_in_sigsuspend_and_nanosleep_go_on_unchanged_after_a_checkpoint() {
    let t = tempdir();
    let dir = t.path().join("fx");
    fs::create_dir(&dir).unwrap();
    let mut r = Reaper::new();
    let pid = r.spawn(
        Command::new(fixture_bin("waiting"))
            .arg(path(&dir))
            .stdout(Stdio::null()),
    );
    wait_until("the waiting fixture", DEADLINE, || {
        dir.join("ready").exists().then_some(())
    });
    let children: Vec<i32> = fs::read_to_string(dir.join("ready"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.parse().unwrap())
        .collect();
    r.adopt(children[0]);
    r.adopt(children[1]);
    assert_all_ok(&report(pid, &dir, 1), "before");
    // Both children must be asleep in their syscalls when frozen.
    for c in &children {
        wait_until("the child to block", DEADLINE, || {
            (state(*c) == Some('S')).then_some(())
        });
    }
    let out = hiber(&[
        "checkpoint",
        &pid.to_string(),
        "-o",
        path(&t.path().join("img")),
    ]);
    assert_ok(&out, "checkpoint");
    assert_all_ok(
        &report(pid, &dir, 2),
        "after a checkpoint that left them running",
    );
}

#[test]
fn tasks_in_sigsuspend_keep_their_own_mask_after_restore() {
    // The restored nanosleep sleeps on for the time left, which the kernel
    // wrote to its `rem` when the freeze interrupted it.
    round_trip_full("waiting", &[], true, &[]);
}

#[test]
fn threads_contending_polling_and_sleeping() {
    // The sleeper's relative clock_nanosleep sleeps on, as above.
    round_trip_full("threads", &[], true, &[]);
}

/// A save that left the threads running thawed the sleeper: the next
/// freeze must find it in its clock_nanosleep again (issued anew for the
/// time left), not in `restart_syscall`, which a restore could only end
/// with EINTR.
#[test]
fn threads_sleep_on_after_a_save_that_left_them_running() {
    round_trip_saving("threads", &[], true, &[], &[], true);
}

/// Threads of one process share its uffd; each thread's rseq area is
/// filled before the restore registers it.
#[test]
fn threads_restored_lazily() {
    round_trip_restoring("threads", &[], true, &[], &["--lazy"]);
}

/// A tree: one uffd per process, all handed to the keeper at once.
#[test]
fn process_tree_restored_lazily() {
    let lines = round_trip_restoring("tree", &[], true, &[], &["--lazy"]);
    assert!(lines.iter().filter(|l| l.starts_with("ok pid ")).count() >= 7);
}

#[test]
fn epoll_timerfd_signalfd_and_inotify() {
    round_trip("events", &[]);
}

#[test]
fn unix_socket_pairs_queues_shutdown_and_listeners() {
    // The half-closed stream's data is consumed by the check: check once.
    round_trip_with("sockets", &[], false);
}

#[test]
fn interval_and_posix_timers() {
    round_trip("timers", &[]);
}

#[test]
fn flock_posix_and_ofd_locks() {
    round_trip("locks", &[]);
}

/// Removes SysV segments by id when dropped (they outlive processes).
struct SysvIds(Vec<i32>);

impl Drop for SysvIds {
    fn drop(&mut self) {
        for &id in &self.0 {
            // SAFETY: removing a segment this test's fixture created.
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
}

fn sysv_exists(id: i32) -> bool {
    fs::read_to_string("/proc/sysvipc/shm")
        .unwrap()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(&id.to_string()))
}

/// memfds with seals and SysV segments with their ids: restored fresh
/// (ids free), restored over the saved segments' own leftovers, and
/// refused without trace when another segment holds an id.
#[test]
fn memfds_and_sysv_segments() {
    let t = tempdir();
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let (root, dir) = start_fixture(&mut r, "shm", t.path());
    let ready = fs::read_to_string(dir.join("ready")).unwrap();
    let ids: Vec<i32> = ready
        .lines()
        .find_map(|l| l.strip_prefix("sysv "))
        .expect("segment ids")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let mut cleanup = SysvIds(ids.clone());
    let before = report(root, &dir, 1);
    assert_all_ok(&before, "shm before the save");

    let check = hiber(&["check", &root.to_string()]);
    assert_eq!(check.status.code(), Some(0), "check: {}", stdout(&check));
    assert!(
        stdout(&check).contains("memfd hiber-fx-sealed"),
        "{}",
        stdout(&check)
    );
    r.checkpoint_stop(root, &img);
    // The segments outlive their processes; free the ids so the restore
    // makes them anew under the same ids.
    for &id in &ids {
        // SAFETY: removing the fixture's segments, now unattached.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        assert!(!sysv_exists(id));
    }
    let _ = fs::remove_file(dir.join("report"));
    r.restore(&img, &[]);
    let after = report(root, &dir, 2);
    assert_all_ok(&after, "shm after a restore that made the segments");
    assert_eq!(after.len(), before.len());

    // End it: its segments stay, unattached; a second restore takes them over.
    r.kill_all();
    assert!(ids.iter().all(|&id| sysv_exists(id)));
    let _ = fs::remove_file(dir.join("report"));
    r.restore(&img, &[]);
    // The image was saved after round 1: this copy answers round 2 too.
    let again = report(root, &dir, 2);
    assert_all_ok(&again, "shm restored over its own leftovers");
    r.kill_all();

    // Another segment under the keyed segment's id: refused, nothing left.
    let keyed = ids[0];
    // SAFETY: removing the leftover, then making a squatter at its id.
    let squatter = unsafe {
        libc::shmctl(keyed, libc::IPC_RMID, std::ptr::null_mut());
        fs::write("/proc/sys/kernel/shm_next_id", format!("{keyed}\n")).unwrap();
        libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600)
    };
    assert_eq!(squatter, keyed, "made a segment at the id");
    let files_before = snapshot_files(&img);
    let out = hiber(&["restore", path(&img)]);
    assert!(
        !out.status.success(),
        "restore over a taken SysV id succeeded"
    );
    assert!(
        stderr(&out).contains(&format!("SysV shared memory id {keyed} is taken")),
        "{}",
        stderr(&out)
    );
    assert!(
        !alive(root) || state(root) == Some('Z'),
        "no half-restored process"
    );
    assert_eq!(snapshot_files(&img), files_before, "image unchanged");
    // The other segment, made by the failed restore, is gone again.
    assert!(sysv_exists(squatter));
    cleanup.0.push(squatter);
}

#[test]
fn pty_queues_termios_packet_mode_and_dev_tty() {
    let lines = round_trip("ptys", &[]);
    assert!(lines.iter().any(|l| l.contains("line being typed")));
}

/// A checkpoint that lets the processes go on puts back the bytes it read
/// out of their ptys: the program finds every queue as it was (no second
/// echo, no translation twice, its modes and flags unchanged). The image
/// restores the same once the original is gone.
#[test]
fn pty_queues_stay_in_place_after_a_checkpoint_without_stop() {
    let t = tempdir();
    let img = t.path().join("img");
    let mut r = Reaper::new();
    let (pid, dir) = start_fixture(&mut r, "ptys", t.path());
    assert_all_ok(&report(pid, &dir, 1), "before the checkpoint");
    let out = hiber(&["checkpoint", &pid.to_string(), "-o", path(&img)]);
    assert_ok(&out, "checkpoint");
    assert_all_ok(
        &report(pid, &dir, 2),
        "after a checkpoint that left it running",
    );
    // SAFETY: kill by pid of the fixture this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    r.wait_children(&[pid]);
    wait_gone(pid);
    let _ = fs::remove_file(dir.join("report"));
    let restored = r.restore(&img, &[]);
    assert!(restored.pids.iter().all(|(a, b)| a == b));
    // The image was taken after round 1: the restored copy's next is 2.
    assert_all_ok(
        &report(pid, &dir, 2),
        &format!(
            "restored from that image (stderr: {})",
            fs::read_to_string(t.path().join("stderr")).unwrap_or_default()
        ),
    );
}

/// A checkpoint that leaves the processes running saves most memory
/// beforehand (pre-copy, `auto`) while a worker rewrites 64 MiB page by
/// page: the image must still hold one instant, which the restored copy
/// checks. Without pre-copy (`--precopy never`) the same must hold.
#[test]
fn memory_written_during_a_running_checkpoint_is_saved_consistently() {
    let bad = hiber(&[
        "checkpoint",
        "1",
        "-o",
        "/nonexistent/img",
        "--precopy",
        "sometimes",
    ]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a bad --precopy is a usage error"
    );
    assert!(
        stderr(&bad).contains("\"sometimes\" is not one of auto, always, never"),
        "{}",
        stderr(&bad)
    );
    for precopy in [true, false] {
        let t = tempdir();
        let img = t.path().join("img");
        let mut r = Reaper::new();
        let (root, dir) = start_fixture(&mut r, "churn", t.path());
        assert_all_ok(&report(root, &dir, 1), "before the checkpoint");
        let mut args = vec!["checkpoint", "-o", path(&img), "--json"];
        let pid = root.to_string();
        args.insert(1, &pid);
        if !precopy {
            args.extend(["--precopy", "never"]);
        }
        let out = hiber(&args);
        assert_ok(&out, "checkpoint");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if precopy {
            assert!(
                v["precopied_bytes"].as_u64().unwrap() > 8 << 20,
                "most memory saved before the freeze: {v}"
            );
        } else {
            assert_eq!(v["precopied_bytes"].as_u64(), Some(0), "{v}");
        }
        // The original went on: it is still consistent, and still churning.
        assert_all_ok(&report(root, &dir, 2), "the original after the checkpoint");
        r.kill_all();
        // The copy must agree with itself and churn on, twice over: memory
        // from another moment than its registers stalls or breaks it.
        for round in [2, 3] {
            let _ = fs::remove_file(dir.join("report"));
            if round == 2 {
                r.restore(&img, &[]);
            }
            assert_all_ok(
                &report(root, &dir, round),
                &format!("restored (pre-copy {precopy}), round {round}"),
            );
        }
    }
}

/// `--stop` with `--precopy auto` pre-copies a process holding much memory
/// (a single process of 48 MiB, far under the 256 MiB from which any set
/// pre-copies), but not a tree whose processes each hold little, even when
/// they hold more than that in all: there a second freeze of every
/// process costs more than it takes out of the first.
#[test]
fn stop_precopies_by_memory_per_process() {
    // (bytes pre-copied, private resident bytes before, processes)
    let precopied = |cmd: &mut Command, what: &str| -> (u64, u64, usize) {
        let t = tempdir();
        let log = t.path().join("log");
        let mut r = Reaper::new();
        let root = r.spawn(
            cmd.stdout(fs::File::create(&log).unwrap())
                .stderr(Stdio::null()),
        );
        wait_until(&format!("{what} to be ready"), DEADLINE, || {
            complete_lines(&log)
                .iter()
                .any(|l| l.starts_with("ready"))
                .then_some(())
        });
        let pids = tree(root);
        let private: u64 = pids
            .iter()
            .map(|&p| {
                hiber_core::procfs::ProcDir::new(p)
                    .private_resident_bytes()
                    .unwrap()
            })
            .sum();
        let v = r.checkpoint_stop_with(root, &t.path().join("img"), &["--no-store"]);
        eprintln!(
            "{what}: {} processes, {} MiB private: {v}",
            pids.len(),
            private >> 20
        );
        (v["precopied_bytes"].as_u64().unwrap(), private, pids.len())
    };
    let (one, _, _) = precopied(
        Command::new(hiber_bin()).args(["bench-workload", "48"]),
        "one process of 48 MiB",
    );
    assert!(one > 40 << 20, "most of it saved before the freeze: {one}");
    // Four pythons: each holds a few MiB of its own heap (more than 16
    // MiB in all), none holds 16.
    let (tree_of_small, private, processes) = precopied(
        Command::new("python3").args([
            "-c",
            "import os, time\n\
             for _ in range(3):\n\
             \x20   if os.fork() == 0:\n\
             \x20       time.sleep(1000)\n\
             b = bytearray(b'x' * (8 << 20))\n\
             print('ready', flush=True)\n\
             time.sleep(1000)",
        ]),
        "a tree of four small pythons",
    );
    assert_eq!(processes, 4);
    assert!(
        private > 16 << 20 && private < (16 << 20) * 4,
        "the tree holds more than 16 MiB in all, under 16 MiB each: {private}"
    );
    assert_eq!(tree_of_small, 0, "one freeze for small processes");
}
