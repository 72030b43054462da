//! A restorer killed at any instant (SIGKILL, nobody left to clean up)
//! leaves no process and no SysV segment behind, never lets a restored
//! program run, and leaves the image as it was: a normal restore of it
//! afterwards brings the program back with its memory and output intact.
//!
//! `packaging/crash-campaign.py restore` runs the same loop at random
//! instants, for the 200-kill figure.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Four processes (a parent and three children), each with two threads,
/// 6 MiB of private memory and a SysV segment they share. Each prints
/// "INDEX K OK" every 20 ms (one write), OK saying its memory, the segment
/// and its threads' counters are as they were.
const WORKLOAD: &str = include_str!("../../fixtures/crash-workload.py");

/// Everything a killed restore could leave: processes still alive that
/// are saved pids or our children (orphans of the restore come to us, a
/// child subreaper), and the workload's SysV segment.
fn leftovers(saved: &[i32], key: i32) -> Vec<String> {
    let mut out = processes_left(saved);
    // Reaped too (our zombies are reaped as they are seen): a saved pid
    // still held by a zombie would make the next restore wait for it.
    out.extend(
        saved
            .iter()
            .filter(|&&p| state(p) == Some('Z'))
            .map(|p| format!("pid {p} (a zombie not reaped yet)")),
    );
    if segment(key).is_some() {
        out.push(format!("SysV segment with key {key:#x}"));
    }
    out
}

/// Processes alive that are saved pids or our children; our zombies are
/// reaped on the way.
fn processes_left(saved: &[i32]) -> Vec<String> {
    processes_left_pids(saved)
        .into_iter()
        .map(|(pid, name)| format!("pid {pid} ({name})"))
        .collect()
}

fn processes_left_pids(saved: &[i32]) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let (state, ppid) = (fields[0], fields[1].parse::<i32>().unwrap_or(0));
        if ppid == me && state == "Z" {
            let mut st = 0;
            // SAFETY: reaping a zombie child of ours (an adopted orphan) by pid.
            unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
            continue;
        }
        if state != "Z" && state != "X" && (ppid == me || saved.contains(&pid)) {
            out.push((pid, stat[..close + 1].to_string()));
        }
    }
    out
}

fn segment(key: i32) -> Option<i32> {
    // SAFETY: shmget with integers only; size 0 and no flags only look up.
    let id = unsafe { libc::shmget(key, 0, 0) };
    (id >= 0).then_some(id)
}

fn remove_segment(key: i32) {
    if let Some(id) = segment(key) {
        // SAFETY: removing the test workload's own segment; no pointer passed.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// End a restored copy of the workload, reap it, and put back the log and
/// the segment as the checkpoint left them.
fn end_run(saved: &[i32], key: i32, log: &Path, log_saved: &[u8]) {
    kill_ours();
    remove_segment(key);
    wait_until("the restored workload to be gone", DEADLINE, || {
        leftovers(saved, key).is_empty().then_some(())
    });
    fs::write(log, log_saved).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Kill every process below this test: what restores made (orphans come
/// to us, a subreaper). Only those: a saved pid that is not ours may be
/// someone else's by now.
fn kill_ours() {
    let me = std::process::id() as i32;
    for p in tree(me) {
        if p != me {
            // SAFETY: kill by pid of a descendant of this test.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

/// Lines of the workload's log, per process index: (k, ok) in order.
fn by_index(log: &Path) -> BTreeMap<u32, Vec<(u64, String)>> {
    let mut out: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    for l in complete_lines(log) {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f.len(), 3, "workload line {l:?}");
        out.entry(f[0].parse().unwrap())
            .or_default()
            .push((f[1].parse().unwrap(), f[2].to_string()));
    }
    out
}

/// When to kill a restore.
#[derive(Debug, Clone, Copy)]
enum At {
    /// This long after it starts.
    After(Duration),
    /// As soon as it logs a line containing this.
    Logged(&'static str),
}

/// Start `hiber restore`, kill it at `at`; true if the kill landed before
/// it was done (false: it had finished, successfully).
fn kill_restore(img: &Path, at: At, extra: &[&str]) -> bool {
    let mut child: Child = Command::new(hiber_bin())
        .args(["--log", "debug", "restore", path(img), "--json"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting hiber restore");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    // Not joined: a process left behind may hold the pipe open.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut logged = Vec::new();
    match at {
        // The instant is what is tested, not a synchronisation.
        At::After(d) => std::thread::sleep(d),
        At::Logged(marker) => {
            let until = Instant::now() + DEADLINE;
            loop {
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(line) if line.contains(marker) => break,
                    Ok(line) => logged.push(line),
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        panic!("restore never logged {marker:?}")
                    }
                }
            }
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let until = Instant::now() + Duration::from_secs(1);
    while let Ok(line) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        logged.push(line);
    }
    let killed = status.signal() == Some(libc::SIGKILL);
    assert!(
        killed || status.success(),
        "restore failed by itself ({status}): {logged:?}"
    );
    killed
}

/// Ends what a failing test leaves (before the [`Reaper`], which cannot
/// reap orphans adopted by this test).
struct EndRuns<'a> {
    saved: &'a [i32],
    key: i32,
}

impl Drop for EndRuns<'_> {
    fn drop(&mut self) {
        kill_ours();
        remove_segment(self.key);
        let until = Instant::now() + DEADLINE;
        while !leftovers(self.saved, self.key).is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn restorer_killed_at_any_instant_leaves_nothing_and_the_image_restores_afterwards() {
    let t = tempdir();
    let log = t.path().join("workload.log");
    let img = t.path().join("img");
    let key = 0x4843_0000 | (std::process::id() as i32 & 0xffff);
    remove_segment(key);
    struct Segment(i32);
    impl Drop for Segment {
        fn drop(&mut self) {
            remove_segment(self.0);
        }
    }
    let _segment = Segment(key);
    let mut r = Reaper::new();
    let pid = r.spawn(
        Command::new("/usr/bin/python3")
            .args(["-c", WORKLOAD, &key.to_string()])
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::null()),
    );
    wait_until("every workload process to print", DEADLINE, || {
        let b = by_index(&log);
        (b.len() == 4 && b.values().all(|v| v.len() >= 3)).then_some(())
    });
    let saved: Vec<i32> = tree(pid).into_iter().collect();
    assert_eq!(saved.len(), 4, "{saved:?}");
    r.checkpoint_stop(pid, &img);
    let _end = EndRuns { saved: &saved, key };
    // From now on orphans of a killed restorer come to us: what is left is
    // visible as our children.
    // SAFETY: prctl on ourselves, plain integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "becoming a child subreaper");
    // The segment outlives its processes; remove it so that each restore
    // makes it (and a killed one must remove it again).
    assert!(segment(key).is_some(), "the workload's segment");
    remove_segment(key);
    let image = snapshot_files(&img);
    let log_saved = fs::read(&log).unwrap();
    let saved_lines = by_index(&log);
    for (i, lines) in &saved_lines {
        assert!(
            lines.iter().all(|(_, ok)| ok == "True"),
            "index {i}: {lines:?}"
        );
    }

    // Restores to time (the shorter of two: the first one reads a cold
    // image): the kills are spread over its length.
    let mut length = Duration::MAX;
    for _ in 0..2 {
        let t0 = Instant::now();
        let out = hiber(&[
            "--log",
            "hiber_core::memory::fill=debug",
            "restore",
            path(&img),
            "--json",
        ]);
        length = length.min(t0.elapsed());
        assert_ok(&out, "a whole restore");
        // So the kills below land in that path too.
        let copied_in = String::from_utf8_lossy(&out.stderr)
            .matches("pages copied in through a userfaultfd")
            .count();
        assert_eq!(
            copied_in, 4,
            "every process's memory copied in through a userfaultfd"
        );
        end_run(&saved, key, &log, &log_saved);
    }

    const MARKS: [&str; 3] = ["tree built", "every process swapped in", "pages filled"];
    let mut points: Vec<(At, &[&str])> = MARKS
        .into_iter()
        .map(|m| (At::Logged(m), &[][..]))
        .collect();
    // Its length varies with the load: go a little past it.
    const SLICES: u32 = 12;
    points.extend((0..SLICES).map(|i| (At::After(length * i * 11 / 10 / SLICES), &[][..])));
    // In a pid namespace the tree hangs below an init that is not the
    // restorer's child: it watches the restorer all the same.
    points.extend(
        MARKS[..2]
            .iter()
            .map(|&m| (At::Logged(m), &["--pidns"][..])),
    );
    let (mut landed, mut committed, mut released) = (0, 0, 0);
    for (at, extra) in points {
        let t1 = Instant::now();
        let during = kill_restore(&img, at, extra);
        eprintln!(
            "killed at {at:?} {extra:?} after {:?}: during the restore: {during}",
            t1.elapsed()
        );
        if during && settle(&saved, key, &log, &saved_lines, at) == Outcome::Committed {
            // Killed after its commit, before it could exit: a whole
            // restore, checked and ended like one.
            committed += 1;
            check_lines(&log);
            end_run(&saved, key, &log, &log_saved);
        } else if during {
            landed += 1;
            assert!(
                snapshot_files(&img) == image,
                "a restore killed at {at:?} changed the image"
            );
            if fs::read(&log).unwrap() != log_saved {
                // Killed among the detaches (see `release` in the
                // restorer): tasks already let go ran, whole, until the
                // restore root took them down. What they did must be right.
                released += 1;
                check_lines(&log);
                fs::write(&log, &log_saved).unwrap();
            }
        } else {
            // It finished first: a whole restore, ended like the first one.
            end_run(&saved, key, &log, &log_saved);
        }
    }
    eprintln!(
        "{landed} kills before the commit ({released} of them during the release), \
         {committed} after it"
    );
    assert!(
        landed >= 9,
        "only {landed} kills landed while the restore ran (it takes {length:?}; \
         {committed} after its commit)"
    );

    // A restore that fails late (a damaged chunk found while the pages go
    // in, every process of the tree there) leaves nothing either.
    let bad = t.path().join("bad");
    copy_dir(&img, &bad);
    let mut packs: Vec<_> = fs::read_dir(bad.join("packs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect();
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let victim = packs.last().expect("the image has packs");
    let mut bytes = fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(victim, &bytes).unwrap();
    let out = hiber(&["restore", path(&bad)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is corrupt"), "{}", stderr(&out));
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let left = leftovers(&saved, key);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "5 s after a failed restore: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(fs::read(&log).unwrap() == log_saved, "the program ran");

    // And the image restores: every process goes on from where it was,
    // no line lost or repeated, its memory and segment intact.
    let restored = r.restore(&img, &[]);
    assert_eq!(restored.pids.len(), 4);
    wait_until("every process to go on", DEADLINE, || {
        let b = by_index(&log);
        b.iter()
            .all(|(i, v)| v.len() >= saved_lines[i].len() + 5)
            .then_some(())
    });
    check_lines(&log);
    end_run(&saved, key, &log, &log_saved);
}

/// Every process's lines number 1, 2, 3... with no gap or repeat, each
/// saying its memory, segment and counters were right.
#[track_caller]
fn check_lines(log: &Path) {
    for (i, lines) in by_index(log) {
        for (n, (k, ok)) in lines.iter().enumerate() {
            assert_eq!(*k, n as u64 + 1, "index {i}: {lines:?}");
            assert_eq!(ok, "True", "index {i} line {k}");
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Nothing,
    Committed,
}

/// What a killed restore left, within 5 s: nothing, or (killed after the
/// commit, before it could exit) the whole program, untraced and going
/// on. Anything between fails the test.
#[track_caller]
fn settle(
    saved: &[i32],
    key: i32,
    log: &Path,
    saved_lines: &BTreeMap<u32, Vec<(u64, String)>>,
    at: At,
) -> Outcome {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let left = leftovers(saved, key);
        if left.is_empty() {
            return Outcome::Nothing;
        }
        // Below us: the restored tree (its root process, or the pid
        // namespace's init, came to us as orphans).
        let me = std::process::id() as i32;
        let ours: Vec<i32> = tree(me).into_iter().filter(|&p| p != me).collect();
        let whole = !ours.is_empty()
            && ours
                .iter()
                .all(|&p| status_field(p, "TracerPid").as_deref() == Some("0"))
            && segment(key).is_some();
        let going_on = by_index(log)
            .iter()
            .all(|(i, v)| v.len() >= saved_lines[i].len() + 2);
        if whole && going_on {
            return Outcome::Committed;
        }
        assert!(
            Instant::now() < until,
            "5 s after a restore killed at {at:?}: {left:?} left behind"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
