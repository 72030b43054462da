//! Hostile images: a real image whose document is rewritten, with a valid
//! checksum, to say what no checkpoint writes (or what one writes, but
//! pointing elsewhere). Every case must end with a clear error naming the
//! field and exit code 1 (or, where a checkpoint could have written it,
//! with a restore that keeps to the image), within a deadline, with no
//! process left behind and nothing outside the image created or changed;
//! `hiber inspect` of every case must not panic either.

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A hiber run longer than this is a hang.
const HANG: Duration = Duration::from_secs(20);

/// Holds what the cases rewrite: a regular file, a pipe with queued
/// bytes, a file deleted while open, a shared writable mapping of the
/// canary file (64 pages), a listening unix socket, /dev/null on stdin.
const HOLDER: &str = "\
import os, mmap, socket, sys, time
d = sys.argv[1]
reg = os.open(d + '/reg', os.O_RDONLY)
r, w = os.pipe()
os.write(w, b'p' * 60000)
g = os.open(d + '/ghost', os.O_RDWR | os.O_CREAT, 0o600)
os.write(g, b'ghost contents')
os.unlink(d + '/ghost')
c = os.open(d + '/canary', os.O_RDWR)
m = mmap.mmap(c, 64 * 4096, mmap.MAP_SHARED)
os.close(c)
s = socket.socket(socket.AF_UNIX)
s.bind(d + '/sockets/sock')
s.listen()
print('ready', reg, r, w, g, s.fileno(), flush=True)
time.sleep(1000)
";

/// Run `cmd` to its end or fail the test at the hang deadline (killing it
/// by pid first, so no stuck run outlives the test).
fn run_with_deadline(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting hiber");
    let until = Instant::now() + HANG;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            // SAFETY: kill by pid of the child we just started.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            panic!("{what}: hiber hung (still running after {HANG:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn hiber_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(hiber_bin());
    c.args(args);
    c
}

/// Pids of running `hiber` processes (a restore child left behind).
fn hiber_processes() -> Vec<i32> {
    let me = hiber_bin();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == me))
        .collect()
}

/// Index into `files` of the fd `fd` of process 0.
fn file_of(v: &Value, fd: i64) -> usize {
    v["processes"][0]["fds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fd"] == fd)
        .unwrap_or_else(|| panic!("fd {fd} in the image"))["file"]
        .as_u64()
        .unwrap() as usize
}

/// Index of the shared mapping of the canary file.
fn canary_vma(v: &Value) -> usize {
    v["processes"][0]["mm"]["vmas"]
        .as_array()
        .unwrap()
        .iter()
        .position(|m| {
            m["shared"] == true
                && m["backing"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/canary"))
        })
        .expect("the canary mapping")
}

type Edit = Box<dyn Fn(&mut Value)>;

/// Bytes as the document writes them (hex).
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A case restored by nobody: what, uids, gids, groups, a further edit,
/// the error.
type NobodyCase = (&'static str, [u32; 4], [u32; 4], Vec<u32>, Edit, String);

/// One hostile document: what it does, the edit, the text the error
/// must hold, and whether the document alone shows it (so `inspect`
/// refuses it too).
struct Case {
    what: &'static str,
    edit: Edit,
    needle: String,
    document: bool,
}

fn case(what: &'static str, needle: impl Into<String>, document: bool, edit: Edit) -> Case {
    Case {
        what,
        edit,
        needle: needle.into(),
        document,
    }
}

#[test]
fn hostile_images_are_refused_and_touch_nothing_outside() {
    let t = tempdir();
    // Readable by nobody, for the unprivileged cases.
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let dir = t.path();
    let canary_bytes: Vec<u8> = b"canary!\n"
        .iter()
        .copied()
        .cycle()
        .take(64 * 4096)
        .collect();
    fs::write(dir.join("canary"), &canary_bytes).unwrap();
    fs::write(dir.join("reg"), b"a regular file").unwrap();
    fs::create_dir(dir.join("sockets")).unwrap();
    fs::set_permissions(dir.join("sockets"), fs::Permissions::from_mode(0o777)).unwrap();
    let log = dir.join("log");
    let img = dir.join("img");

    let mut r = Reaper::new();
    let pid = r.spawn_python(HOLDER, &[path(dir)], &log);
    let ready = wait_lines(&log, 1);
    let w: Vec<i64> = ready[0]
        .split(' ')
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    let (reg_fd, pipe_fd, ghost_fd, sock_fd) = (w[0], w[1], w[3], w[4]);
    r.checkpoint_stop(pid, &img);

    // Planted after the save: a FIFO and a symlink where files were.
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(path(&fifo)).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    std::os::unix::fs::symlink("/etc/shadow", dir.join("link")).unwrap();
    // A root daemon's FIFO, held open (non-blocking) to see what reaches it.
    let daemon = dir.join("daemon.fifo");
    let c = std::ffi::CString::new(path(&daemon)).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let daemon_end = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&daemon)
        .unwrap();
    let daemon_s = path(&daemon).to_string();
    let cron = PathBuf::from("/etc/cron.d/hiber-hostile-ghost");
    let original = fs::read(img.join("snapshot")).unwrap();
    let outside_before: Vec<String> = {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    let image_before = snapshot_files(&img);

    let fifo_s = path(&fifo).to_string();
    let link_s = path(&dir.join("link")).to_string();
    let reg = move |v: &Value| file_of(v, reg_fd);
    let ghost = move |v: &Value| file_of(v, ghost_fd);
    let pipe_file = move |v: &Value| file_of(v, pipe_fd);
    let pipe = move |v: &Value| v["files"][pipe_file(v)]["kind"]["pipe"].as_u64().unwrap() as usize;
    let stdin = |v: &Value| file_of(v, 0);
    let sock = move |v: &Value| file_of(v, sock_fd);
    let p0 = "/processes/0";

    let mut cases: Vec<Case> = vec![
        // Paths.
        case(
            "a deleted file whose path climbs out with ..",
            "path \"/tmp/../etc/cron.d/hiber-hostile-ghost\" is not canonical",
            true,
            Box::new(move |v| {
                let i = ghost(v);
                v["files"][i]["kind"]["path"] = json!("/tmp/../etc/cron.d/hiber-hostile-ghost");
            }),
        ),
        case(
            "a regular file whose path is now a FIFO",
            format!("(it is not the kind of file the image saved) {fifo_s}"),
            false,
            Box::new({
                let fifo_s = fifo_s.clone();
                move |v| {
                    let i = reg(v);
                    v["files"][i]["kind"]["path"] = json!(fifo_s);
                }
            }),
        ),
        case(
            "a regular file whose path is now a symlink to /etc/shadow",
            format!("(it is not the kind of file the image saved) {link_s}"),
            false,
            Box::new(move |v| {
                let i = reg(v);
                v["files"][i]["kind"]["path"] = json!(link_s);
            }),
        ),
        case(
            "a relative cwd",
            "cwd \"etc\" is not absolute",
            true,
            Box::new(move |v| v.pointer_mut(p0).unwrap()["cwd"] = json!("etc")),
        ),
        case(
            "a cgroup climbing out with ..",
            "cgroup \"/user.slice/../..\" is not canonical",
            true,
            Box::new(move |v| v.pointer_mut(p0).unwrap()["cgroup"] = json!("/user.slice/../..")),
        ),
        case(
            "a FIFO path climbing out with ..",
            "FIFO \"/tmp/../etc/x\" is not canonical",
            true,
            Box::new(move |v| {
                let p = pipe(v);
                v["pipes"][p]["fifo"] = json!("/tmp/../etc/x");
            }),
        ),
        // Sizes.
        case(
            "4096 supplementary groups",
            "4096 supplementary groups (at most 1024",
            true,
            Box::new(move |v| v.pointer_mut(p0).unwrap()["creds"]["groups"] = json!(vec![0; 4096])),
        ),
        case(
            "a 1 MiB auxv",
            "auxv of 1048576 bytes",
            true,
            Box::new(move |v| {
                v.pointer_mut(p0).unwrap()["mm"]["auxv"] = json!("00".repeat(1 << 20));
            }),
        ),
        case(
            "a 1 MiB comm",
            "comm of 1048576 bytes",
            true,
            Box::new(move |v| v.pointer_mut(p0).unwrap()["comm"] = json!("c".repeat(1 << 20))),
        ),
        case(
            "a 100 KiB thread name",
            "name of 102400 bytes",
            true,
            Box::new(move |v| {
                v.pointer_mut(p0).unwrap()["threads"][0]["name"] = json!("n".repeat(100 << 10));
            }),
        ),
        case(
            "pipe data above the pipe's capacity",
            "data_len 60000 is more than its capacity of 4096 bytes",
            true,
            Box::new(move |v| {
                let p = pipe(v);
                v["pipes"][p]["size"] = json!(4096);
            }),
        ),
        case(
            "a data_len of 2^40",
            "data_len 1099511627776 is more than its capacity",
            true,
            Box::new(move |v| {
                let p = pipe(v);
                v["pipes"][p]["data_len"] = json!(1u64 << 40);
            }),
        ),
        case(
            "a data_len that disagrees with the data",
            "data_len says 59999 bytes but its 1 chunks hold 60000",
            true,
            Box::new(move |v| {
                let p = pipe(v);
                v["pipes"][p]["data_len"] = json!(59999);
            }),
        ),
        // Counts and ids.
        case(
            "65 signal actions",
            "65 signal actions",
            true,
            Box::new(move |v| {
                let a = v.pointer(p0).unwrap()["sigactions"][0].clone();
                v.pointer_mut(p0).unwrap()["sigactions"] = json!(vec![a; 65]);
            }),
        ),
        case(
            "one fd number given twice",
            "fd 0: refers to file",
            true,
            Box::new(move |v| {
                let f = v.pointer(p0).unwrap()["fds"][0].clone();
                v.pointer_mut(p0).unwrap()["fds"]
                    .as_array_mut()
                    .unwrap()
                    .push(f);
            }),
        ),
        case(
            "an fd referring to no file",
            "refers to file 99999",
            true,
            Box::new(move |v| v.pointer_mut(p0).unwrap()["fds"][0]["file"] = json!(99_999)),
        ),
        case(
            "a pipe end referring to no pipe",
            "pipe 999 does not exist",
            true,
            Box::new(move |v| {
                let i = pipe_file(v);
                v["files"][i]["kind"]["pipe"] = json!(999);
            }),
        ),
        case(
            "a pid above the kernel's",
            "process with pid 5000000",
            true,
            Box::new(move |v| v.pointer_mut(p0).unwrap()["pid"] = json!(5_000_000)),
        ),
        // Credentials.
        case(
            "uid -1 (setresuid's \"unchanged\": the task would stay root)",
            "id 4294967295 (-1) in its credentials",
            true,
            Box::new(move |v| {
                v.pointer_mut(p0).unwrap()["creds"]["uid"] = json!(vec![u32::MAX; 4]);
            }),
        ),
        case(
            "capabilities beyond the kernel's",
            "capabilities 0x",
            true,
            Box::new(move |v| {
                v.pointer_mut(p0).unwrap()["creds"]["cap_prm"] = json!(u64::MAX);
            }),
        ),
        case(
            "open flags O_CREAT|O_TRUNC",
            "open flags",
            true,
            Box::new(move |v| {
                let i = reg(v);
                v["files"][i]["flags"] = json!(libc::O_CREAT | libc::O_TRUNC);
            }),
        ),
        case(
            "a pidfd said to be of a saved process, of pid 1",
            "pidfd of pid 1, said to be saved, which the image does not contain",
            true,
            Box::new(move |v| {
                let i = stdin(v);
                v["files"][i]["kind"] =
                    json!({"type": "pidfd", "pid": 1, "thread": false, "inside": true});
            }),
        ),
        case(
            "an inotify watch climbing out with ..",
            "inotify watch \"/tmp/../root\" is not canonical",
            true,
            Box::new(move |v| {
                let i = stdin(v);
                v["files"][i]["kind"] = json!({
                    "type": "inotify", "watches": [{"wd": 1, "mask": 0xfff, "path": "/tmp/../root"}]
                });
            }),
        ),
        case(
            "a report holding a refusal",
            "report: pid",
            true,
            Box::new(move |v| {
                let mut f = v["report"]["findings"][0].clone();
                f["policy"] = json!("Refuse");
                v["report"]["findings"].as_array_mut().unwrap().push(f);
            }),
        ),
        case(
            "a unix socket path climbing out with ..",
            "unix socket path \"/tmp/../etc/hiber-hostile-sock\" holds `..`",
            true,
            Box::new(move |v| {
                let i = sock(v);
                v["files"][i]["kind"]["name"] = json!(hex(b"/tmp/../etc/hiber-hostile-sock"));
            }),
        ),
        case(
            "a socket in /etc for a process of uid 65534",
            "socket path /etc/hiber-hostile-sock is in /etc, which its holders (uids [65534]) may not write to",
            false,
            Box::new(move |v| {
                let i = sock(v);
                v["files"][i]["kind"]["name"] = json!(hex(b"/etc/hiber-hostile-sock"));
                let c = &mut v.pointer_mut(p0).unwrap()["creds"];
                c["uid"] = json!(vec![65534; 4]);
                c["gid"] = json!(vec![65534; 4]);
                c["groups"] = json!([]);
            }),
        ),
        case(
            "a root-only FIFO of someone else's, fed the pipe's bytes, for uid 65534",
            format!("FIFO {daemon_s} may not be opened by pid {pid} (uid 65534) for the end it holds"),
            false,
            Box::new({
                let daemon_s = daemon_s.clone();
                move |v| {
                    let p = pipe(v);
                    v["pipes"][p]["fifo"] = json!(daemon_s);
                    let c = &mut v.pointer_mut(p0).unwrap()["creds"];
                    c["uid"] = json!(vec![65534; 4]);
                    c["gid"] = json!(vec![65534; 4]);
                    c["groups"] = json!([]);
                }
            }),
        ),
        // Devices.
        case(
            "a /dev/kmsg fd",
            "char device /dev/kmsg (1:11), class mem is Refuse here (device 1:11 (built-in))",
            false,
            Box::new(move |v| {
                let i = stdin(v);
                v["files"][i]["kind"] = json!({
                    "type": "char_device", "path": "/dev/kmsg", "major": 1, "minor": 11, "class": "mem"
                });
            }),
        ),
        case(
            "/dev/null saved as /dev/zero's device number",
            "/dev/null is device char 1:3, the image expects char 1:5",
            false,
            Box::new(move |v| {
                let i = stdin(v);
                v["files"][i]["kind"]["minor"] = json!(5);
            }),
        ),
        case(
            "a device mapping carrying page data",
            "mapping with saved pages or a bad number",
            true,
            Box::new(move |v| {
                let vmas = v.pointer(p0).unwrap()["mm"]["vmas"].as_array().unwrap();
                let i = vmas
                    .iter()
                    .position(|m| !m["pages"].as_array().unwrap().is_empty())
                    .unwrap();
                v.pointer_mut(p0).unwrap()["mm"]["vmas"][i]["backing"] = json!({
                    "type": "device", "path": "/dev/zero", "major": 1, "minor": 5, "class": "mem"
                });
            }),
        ),
        case(
            "a mapped file that is now a FIFO (its size and mtime copied)",
            format!("mapped file {fifo_s} changed since the checkpoint (no longer a regular file)"),
            false,
            Box::new({
                let fifo_s = fifo_s.clone();
                move |v| {
                    use std::os::unix::fs::MetadataExt;
                    let md = fs::metadata(&fifo_s).unwrap();
                    let i = canary_vma(v);
                    let b = &mut v.pointer_mut(p0).unwrap()["mm"]["vmas"][i]["backing"];
                    b["path"] = json!(fifo_s);
                    b["size"] = json!(0);
                    b["mtime_ns"] = json!(md.mtime() * 1_000_000_000 + md.mtime_nsec());
                }
            }),
        ),
        // Mappings.
        case(
            "page data on the shared mapping of the canary file",
            "carries saved pages, which a checkpoint never writes for it",
            true,
            Box::new(move |v| {
                let vmas = v.pointer(p0).unwrap()["mm"]["vmas"].as_array().unwrap();
                let donor = vmas
                    .iter()
                    .flat_map(|m| m["pages"].as_array().unwrap())
                    .next()
                    .expect("some saved page")
                    .clone();
                let i = canary_vma(v);
                let vma = &mut v.pointer_mut(p0).unwrap()["mm"]["vmas"][i];
                let start = vma["start"].clone();
                let mut page = donor;
                page["addr"] = start;
                vma["pages"] = json!([page]);
            }),
        ),
    ];
    let mut failures = Vec::new();
    for c in cases.drain(..) {
        fs::write(img.join("snapshot"), &original).unwrap();
        rewrite_document(&img, &c.edit);
        let out = run_with_deadline(hiber_cmd(&["restore", path(&img)]), c.what);
        let err = stderr(&out);
        if out.status.code() != Some(1) || !err.contains(&c.needle) {
            failures.push(format!(
                "{}: exit {:?}, stderr {err:?} lacks {:?}",
                c.what,
                out.status.code(),
                c.needle
            ));
        }
        let inspect = run_with_deadline(hiber_cmd(&["inspect", path(&img)]), c.what);
        let ierr = stderr(&inspect);
        assert!(
            !ierr.contains("panicked"),
            "{}: inspect panicked: {ierr}",
            c.what
        );
        if c.document && (inspect.status.code() != Some(1) || !ierr.contains(&c.needle)) {
            failures.push(format!(
                "{}: inspect exit {:?}, stderr {ierr:?} lacks {:?}",
                c.what,
                inspect.status.code(),
                c.needle
            ));
        }
        if !c.document {
            assert!(
                matches!(inspect.status.code(), Some(0 | 1)),
                "{}: inspect {:?}",
                c.what,
                inspect.status
            );
        }
        assert_nothing_outside(c.what, pid, dir, &outside_before, &canary_bytes, &cron);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    unsafe { libc::ioctl(daemon_end.as_raw_fd(), libc::FIONREAD, &mut queued) };
    assert_eq!(queued, 0, "bytes reached the daemon's FIFO");

    // Credentials above the caller's, restored by nobody.
    let nobody = |img: &Path| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(hiber_bin())
            .args(["restore", path(img)]);
        cmd
    };
    let readable = Command::new("chmod")
        .args(["-R", "a+rX", path(&img)])
        .status()
        .unwrap();
    assert!(readable.success());
    // A pipe of 4 MiB, above what an unprivileged caller may make one
    // (fs.pipe-max-size), holding more than the 64 KiB it gets: the refill
    // would block on a full pipe.
    let big_pipe: Edit = Box::new(move |v| {
        let chunks: Vec<Value> = v.pointer(p0).unwrap()["mm"]["vmas"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["pages"].as_array().unwrap())
            .map(|p| p["chunk"].clone())
            .scan(0u64, |sum, c| {
                (*sum <= 1 << 20).then(|| {
                    *sum += c["raw_len"].as_u64().unwrap();
                    c
                })
            })
            .collect();
        let len: u64 = chunks.iter().map(|c| c["raw_len"].as_u64().unwrap()).sum();
        assert!(len > 64 << 10, "{len} bytes of saved pages");
        let p = pipe(v);
        v["pipes"][p]["size"] = json!(4 << 20);
        v["pipes"][p]["data_len"] = json!(len);
        v["pipes"][p]["data"] = json!(chunks);
    });
    let no_edit: Edit = Box::new(|_| {});
    let nobody_cases: Vec<NobodyCase> = vec![
        (
            "a 4 MiB pipe restored by its own, unprivileged, owner",
            [65534; 4],
            [65534; 4],
            vec![],
            big_pipe,
            "its saved data does not fit its capacity".to_string(),
        ),
        (
            "a saved set-user-id of root",
            [65534, 65534, 0, 65534],
            [65534; 4],
            vec![],
            Box::new(|_| {}),
            format!("pid {pid}: the caller may not restore its credentials: uids [65534, 65534, 0, 65534] are not the caller's uid 65534"),
        ),
        (
            "a supplementary group the caller lacks",
            [65534; 4],
            [65534; 4],
            vec![0],
            no_edit,
            format!("pid {pid}: the caller may not restore its credentials: gid 0 is not one of the caller's groups"),
        ),
    ];
    for (what, uid, gid, groups, edit, needle) in nobody_cases {
        fs::write(img.join("snapshot"), &original).unwrap();
        rewrite_document(&img, |v| {
            edit(v);
            let c = &mut v.pointer_mut(p0).unwrap()["creds"];
            c["uid"] = json!(uid);
            c["gid"] = json!(gid);
            c["groups"] = json!(groups);
            c["cap_prm"] = json!(0);
            c["cap_eff"] = json!(0);
            c["cap_inh"] = json!(0);
            c["cap_amb"] = json!(0);
        });
        let out = run_with_deadline(nobody(&img), what);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(&needle), "{what}: {err:?} lacks {needle:?}");
        assert_nothing_outside(what, pid, dir, &outside_before, &canary_bytes, &cron);
    }

    // A deleted file at /etc/cron.d, setuid: a checkpoint could write that
    // (a setuid file deleted while open there), so it restores, but as a
    // memfd without the setuid bit, never at that path.
    fs::write(img.join("snapshot"), &original).unwrap();
    rewrite_document(&img, |v| {
        let i = ghost(v);
        v["files"][i]["kind"]["path"] = json!(path(&cron));
        v["files"][i]["kind"]["ghost"]["mode"] = json!(0o4755);
    });
    let inspect = run_with_deadline(hiber_cmd(&["inspect", path(&img)]), "setuid ghost");
    assert_ok(&inspect, "inspect of the setuid ghost");
    let restored = r.restore(&img, &[]);
    let now = restored.pids[0].1;
    let link = fs::read_link(format!("/proc/{now}/fd/{ghost_fd}")).unwrap();
    assert!(
        link.to_string_lossy()
            .starts_with("/memfd:hiber-hostile-ghost"),
        "{link:?}"
    );
    let mode = fs::metadata(format!("/proc/{now}/fd/{ghost_fd}"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "{mode:o}");
    assert_eq!(
        fs::read(format!("/proc/{now}/fd/{ghost_fd}")).unwrap(),
        b"ghost contents"
    );
    r.kill_all();
    assert_nothing_outside(
        "setuid ghost",
        pid,
        dir,
        &outside_before,
        &canary_bytes,
        &cron,
    );

    // The image itself is as it was, but for the document, which restores.
    fs::write(img.join("snapshot"), &original).unwrap();
    assert_eq!(snapshot_files(&img), image_before, "the image changed");
    r.restore(&img, &[]);
    assert!(alive(pid));
}

/// After a case: the saved process and every hiber are gone, the canary
/// file is byte-identical, nothing appeared at the ghost's path or in the
/// test directory.
#[track_caller]
fn assert_nothing_outside(
    what: &str,
    pid: i32,
    dir: &Path,
    before: &[String],
    canary: &[u8],
    cron: &Path,
) {
    assert!(
        fs::read(dir.join("canary")).unwrap() == canary,
        "{what}: the canary file changed"
    );
    wait_until(&format!("{what}: no hiber left"), DEADLINE, || {
        hiber_processes().is_empty().then_some(())
    });
    assert!(state(pid).is_none(), "{what}: pid {pid} was left behind");
    assert!(!cron.exists(), "{what}: {} was created", cron.display());
    let sock = Path::new("/etc/hiber-hostile-sock");
    assert!(!sock.exists(), "{what}: {} was created", sock.display());
    let mut now: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    now.sort();
    assert_eq!(now, before, "{what}: the test directory changed");
}
