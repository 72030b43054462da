//! A checkpointer that dies at any instant leaves the processes it was
//! saving as they were: running (not stopped, traced or frozen), their
//! registers, flags, signal masks and timers intact. `HIBER_FAULT_KILL_AT`
//! kills it at every fault point in turn (around each change ptrace makes
//! to a task, the cgroup freezer, the commit); kills at random instants
//! cover the moments between points.

mod common;

use common::*;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a killed checkpointer's processes get to show they run on.
const RECOVERY: Duration = Duration::from_secs(10);

/// The `hiber-crunch` workload: three threads checking their sums, a
/// POSIX timer, SIGUSR1 answered with a line.
struct Crunch {
    pid: i32,
    log: PathBuf,
    cgroup: Option<PathBuf>,
}

impl Crunch {
    fn start(r: &mut Reaper, dir: &Path, cgroup: Option<&Path>) -> Self {
        let log = dir.join(format!("crunch-{}.log", r.children_mut().len()));
        let bin = fixture_program("hiber-crunch");
        let out = fs::File::create(&log).unwrap();
        let pid = match cgroup {
            None => r.spawn(Command::new(&bin).stdout(out)),
            // The shell moves itself into the cgroup, then becomes crunch.
            Some(cg) => r.spawn(
                Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "echo $$ > {}/cgroup.procs && exec {}",
                        cg.display(),
                        bin.display()
                    ))
                    .stdout(out),
            ),
        };
        // Running, each thread past its start (a thread being created
        // has its signals blocked for a moment: no baseline then).
        wait_until("hiber-crunch to run its three threads", DEADLINE, || {
            let lines = complete_lines(&log);
            (1..=3)
                .all(|t| lines.iter().any(|l| l.starts_with(&format!("ok {t} "))))
                .then_some(())
        });
        Crunch {
            pid,
            log,
            cgroup: cgroup.map(Path::to_path_buf),
        }
    }

    /// Each thread's blocked signals, as /proc shows them.
    fn blocked(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = fs::read_dir(format!("/proc/{}/task", self.pid))
            .unwrap()
            .flatten()
            .map(|e| {
                let status = fs::read_to_string(e.path().join("status")).unwrap_or_default();
                let blk = status
                    .lines()
                    .find_map(|l| l.strip_prefix("SigBlk:"))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                (e.file_name().to_string_lossy().into_owned(), blk)
            })
            .collect();
        out.sort();
        out
    }

    fn alarms_seen(lines: &[String]) -> u64 {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("ok "))
            .filter_map(|l| l.split(' ').nth(2)?.parse().ok())
            .max()
            .unwrap_or(0)
    }

    /// The program runs on as it was: untraced, not stopped or frozen,
    /// the same signals blocked; every thread counts on correctly, the
    /// timer ticks, SIGUSR1 is answered.
    fn assert_unharmed(&self, blocked: &[(String, String)], what: &str) {
        let pid = self.pid;
        wait_until(&format!("{what}: pid {pid} untraced"), RECOVERY, || {
            (status_field(pid, "TracerPid").as_deref() == Some("0")).then_some(())
        });
        if let Some(cg) = &self.cgroup {
            wait_until(
                &format!("{what}: {} thawed", cg.display()),
                RECOVERY,
                || {
                    let events = fs::read_to_string(cg.join("cgroup.events")).ok()?;
                    events.lines().any(|l| l == "frozen 0").then_some(())
                },
            );
        }
        let st = state(pid);
        assert!(
            matches!(st, Some('R' | 'S' | 'D')),
            "{what}: pid {pid} is in state {st:?}"
        );
        // A task sent home by its lifeline unblocks its signals as it
        // runs that code, a moment after the checkpointer's death.
        wait_until(
            &format!("{what}: the signals blocked before blocked again, and only those"),
            RECOVERY,
            || (self.blocked() == blocked).then_some(()),
        );
        let before = complete_lines(&self.log);
        let usr1_before = before.iter().filter(|l| l.starts_with("usr1")).count();
        // SAFETY: kill of the workload this test started.
        unsafe { libc::kill(pid, libc::SIGUSR1) };
        wait_until(
            &format!("{what}: every thread counting on, the timer ticking, SIGUSR1 answered"),
            RECOVERY,
            || {
                let lines = complete_lines(&self.log);
                if let Some(bad) = lines.iter().find(|l| l.starts_with("BAD")) {
                    panic!("{what}: {bad}");
                }
                assert!(alive(pid), "{what}: pid {pid} died");
                let new = &lines[before.len()..];
                let counting =
                    (1..=3).all(|t| new.iter().any(|l| l.starts_with(&format!("ok {t} "))));
                let answered = lines.iter().filter(|l| l.starts_with("usr1")).count() > usr1_before;
                let ticking = Self::alarms_seen(new) > Self::alarms_seen(&before);
                (counting && answered && ticking).then_some(())
            },
        );
    }
}

/// Run `hiber checkpoint` on `pid` into `img`, killed at fault point
/// `kill_at` if given; its exit status, within a deadline. Its standard
/// error is left beside the image, in `IMG.err`.
fn checkpoint(pid: i32, img: &Path, extra: &[&str], kill_at: Option<u64>) -> ExitStatus {
    let err = img.with_extension("err");
    let mut cmd = Command::new(hiber_bin());
    cmd.args(["checkpoint", &pid.to_string(), "-o", path(img)])
        .args(extra)
        .env("HIBER_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err).unwrap());
    if let Some(n) = kill_at {
        cmd.env("HIBER_FAULT_KILL_AT", n.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the checkpointer (fault point {kill_at:?}) did not end within {DEADLINE:?}: {}",
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kill the checkpointer at fault point 1, 2, 3... until a run passes them
/// all; after each kill the workload must run on unharmed.
fn killed_at_every_fault_point(extra: &[&str], in_cgroup: bool) {
    let t = tempdir();
    let cg = in_cgroup.then(|| {
        let mount =
            cgroup2_mount().expect("a cgroup v2 hierarchy (cgroup2 in /proc/self/mountinfo)");
        let cg = TestCgroup(mount.join(format!(
            "hiber-crash-{}-{}",
            std::process::id(),
            extra.len()
        )));
        fs::create_dir(&cg.0).unwrap();
        cg
    });
    let mut r = Reaper::new();
    let crunch = Crunch::start(&mut r, t.path(), cg.as_ref().map(|c| c.0.as_path()));
    let blocked = crunch.blocked();
    let mut point = 1;
    loop {
        let img = t.path().join(format!("img-{point}"));
        let status = checkpoint(crunch.pid, &img, extra, Some(point));
        if status.success() {
            break;
        }
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the checkpointer failed at fault point {point} other than by the kill: {status}: {}",
            fs::read_to_string(img.with_extension("err")).unwrap_or_default()
        );
        crunch.assert_unharmed(
            &blocked,
            &format!("checkpoint {extra:?} killed at fault point {point}"),
        );
        assert!(point < 5000, "no end to the fault points");
        point += 1;
    }
    // Points sit around every remote call of every thread: a checkpoint of
    // four threads passes dozens. Few would mean they were not reached.
    assert!(
        point > 40,
        "a whole checkpoint passed only {} fault points",
        point - 1
    );
    // The unfinished images the killed runs left were removed by the next.
    let left: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "unfinished images left behind: {left:?}");
    if extra.contains(&"--stop") {
        r.wait_children(&[crunch.pid]);
    } else {
        crunch.assert_unharmed(&blocked, "after a whole checkpoint");
    }
}

#[test]
fn checkpointer_killed_at_every_fault_point_leaves_the_process_unharmed() {
    killed_at_every_fault_point(&[], false);
}

#[test]
fn checkpointer_killed_at_every_fault_point_of_a_cgroup_freeze_and_stop_leaves_the_process_unharmed(
) {
    killed_at_every_fault_point(&["--stop", "--no-store"], true);
}

/// Kills at instants spread over a whole checkpoint's run (and a little
/// past it), in the ptrace and the cgroup freezer paths, leaving running
/// and with `--stop`. `HIBER_CRASH_KILLS` sets how many (24 by default).
#[test]
fn checkpointer_killed_at_random_instants_leaves_the_process_unharmed() {
    let t = tempdir();
    let mount = cgroup2_mount().expect("a cgroup v2 hierarchy (cgroup2 in /proc/self/mountinfo)");
    let cg = TestCgroup(mount.join(format!("hiber-crash-random-{}", std::process::id())));
    fs::create_dir(&cg.0).unwrap();
    let mut r = Reaper::new();
    let plain = Crunch::start(&mut r, t.path(), None);
    let mut alone = Crunch::start(&mut r, t.path(), Some(&cg.0));
    // How long a whole checkpoint takes here, to spread the kills over.
    let t0 = Instant::now();
    assert!(checkpoint(plain.pid, &t.path().join("whole"), &[], None).success());
    let whole = t0.elapsed();
    // A fixed sequence of pseudo-random fractions (an LCG), reproducible.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    // HIBER_CRASH_KILLS=200 for the full campaign (docs/security.md).
    let kills: u32 = std::env::var("HIBER_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    for i in 0..kills {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let frac = (i as f64 + (seed >> 11) as f64 / (1u64 << 53) as f64) / kills as f64;
        let at = whole.mul_f64(frac * 1.2);
        let (extra, crunch): (&[&str], &Crunch) = match i % 3 {
            0 => (&[], &plain),
            1 => (&["--no-precopy"], &plain),
            _ => {
                if !alive(alone.pid) {
                    alone = Crunch::start(&mut r, t.path(), Some(&cg.0));
                }
                (&["--stop", "--no-store"], &alone)
            }
        };
        let blocked_now = crunch.blocked();
        let img = t.path().join(format!("img-{i}"));
        let mut child = Command::new(hiber_bin())
            .args(["checkpoint", &crunch.pid.to_string(), "-o", path(&img)])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The instant of the kill is the point of the test, not a wait
        // for something to happen.
        std::thread::sleep(at);
        let _ = child.kill();
        let what = format!("checkpoint {extra:?} killed after {at:?} of {whole:?}");
        wait_until("the killed checkpointer to end", DEADLINE, || {
            child.try_wait().unwrap()
        });

        if extra.contains(&"--stop") && img.exists() {
            // The image was committed before the kill: the save is done,
            // and the processes were ended (or were being ended, or run on
            // when the kill came first). Either way the session is safe:
            // in the image, which must be whole.
            let verify = hiber(&["inspect", path(&img), "--verify"]);
            assert_ok(&verify, &format!("{what}: the committed image"));
            if !matches!(state(crunch.pid), Some('R' | 'S' | 'D')) {
                // SAFETY: kill of the workload this test started (it may
                // be dying already).
                unsafe { libc::kill(crunch.pid, libc::SIGKILL) };
                r.wait_children(&[crunch.pid]);
                continue;
            }
        }
        crunch.assert_unharmed(&blocked_now, &what);
    }
}

/// A process in a job-control stop goes back to its stop when the
/// checkpointer dies, still on its way home; a later checkpoint must not
/// take that way from it. Saved again (twice), then continued, it runs on
/// unharmed.
#[test]
fn a_stopped_process_on_its_way_home_keeps_it_through_another_checkpoint() {
    let t = tempdir();
    let mut r = Reaper::new();
    let crunch = Crunch::start(&mut r, t.path(), None);
    let blocked = crunch.blocked();
    // SAFETY: stopping the workload this test started.
    unsafe { libc::kill(crunch.pid, libc::SIGSTOP) };
    wait_until("crunch stopped", DEADLINE, || {
        (state(crunch.pid) == Some('T')).then_some(())
    });
    // Kill points from the 10th on fall among the remote calls; a few in
    // a row cover the call's stages (registers set, entry, exit).
    for point in [12, 13, 14] {
        let status = checkpoint(
            crunch.pid,
            &t.path().join(format!("killed-{point}")),
            &["--no-precopy"],
            Some(point),
        );
        assert_eq!(status.signal(), Some(libc::SIGKILL), "fault point {point}");
        wait_until("crunch stopped again, untraced", DEADLINE, || {
            (state(crunch.pid) == Some('T')
                && status_field(crunch.pid, "TracerPid").as_deref() == Some("0"))
            .then_some(())
        });
        for again in 0..2 {
            let img = t.path().join(format!("again-{point}-{again}"));
            assert!(
                checkpoint(crunch.pid, &img, &[], None).success(),
                "{}",
                fs::read_to_string(img.with_extension("err")).unwrap_or_default()
            );
            assert_eq!(state(crunch.pid), Some('T'));
        }
    }
    // SAFETY: continuing the workload this test stopped.
    unsafe { libc::kill(crunch.pid, libc::SIGCONT) };
    crunch.assert_unharmed(&blocked, "continued after the checkpoints");
}
