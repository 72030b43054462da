//! `hiber restore --lazy`: a python3 process holding 256 MiB of pages that
//! each say which page they are, saved with --stop and restored lazily.
//! Its memory comes back byte for byte (also in a child it forks before
//! every page is in, in a range it discards, which must read zero, and in
//! one it moves away and back); a page server that dies, or a chunk that fails its
//! hash, kills the restored processes before any of them reads a page it
//! should not; the image is left as it was and nothing of the restore
//! is left behind.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Pages of the python process's buffer: 256 MiB, enough that the page
/// server of a debug build is still at work when the test acts.
const PAGES: usize = 65536;

/// The workload: page i of its buffer holds i (8 bytes) then the byte
/// i % 251. Commands on DIR/ctl: `c` checks every page, `d` discards 300
/// pages in the middle (MADV_DONTNEED: from then on they must read zero,
/// not be filled again), `m` moves 64 pages away and back (mremap: they
/// must be filled where they are), `f` forks a child
/// that first counts how many of the buffer's pages it has (mincore), then
/// checks every page; results go to DIR/report, one line each.
const WORKLOAD: &str = r#"
import ctypes, os, sys
d, n = sys.argv[1], int(sys.argv[2])
P = 4096
fill = [bytes([k]) * (P - 8) for k in range(251)]
buf = bytearray(b"".join(i.to_bytes(8, "little") + fill[i % 251] for i in range(n)))
mv = memoryview(buf)
libc = ctypes.CDLL(None, use_errno=True)
addr = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
start, end = (addr + P - 1) & ~(P - 1), (addr + len(buf)) & ~(P - 1)

# Pages (of the mapping, from start) discarded: not counted as missing.
dlo = dhi = 0

def resident():
    vec = (ctypes.c_ubyte * ((end - start) // P))()
    if libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(end - start), vec) != 0:
        return -1
    return sum(v & 1 for k, v in enumerate(vec) if not dlo <= k < dhi)

# Bytes (offsets in buf) discarded with MADV_DONTNEED: they read zero.
zs = ze = 0

def expect(i):
    e = i.to_bytes(8, "little") + fill[i % 251]
    a, b = max(i * P, zs) - i * P, min(i * P + P, ze) - i * P
    return e[:a] + bytes(b - a) + e[b:] if a < b else e

def check():
    for i in range(n):
        o = i * P
        if zs < o + P and o < ze:
            if mv[o:o + P] != expect(i):
                return "bad page %d" % i
        elif mv[o:o + 8] != i.to_bytes(8, "little") or mv[o + 8:o + P] != fill[i % 251]:
            return "bad page %d" % i
    return "ok"

def report(line):
    with open(os.path.join(d, "report"), "a") as f:
        f.write(line + "\n")

ctl = os.open(os.path.join(d, "ctl"), os.O_RDWR)
report("ready " + check())
with open(os.path.join(d, "ready"), "w") as f:
    f.write(str(os.getpid()))
while True:
    cmd = os.read(ctl, 1)
    if cmd == b"c":
        report("parent " + check())
    elif cmd == b"d":
        # 300 pages from the middle, not on a chunk's boundary.
        lo = (end - start) // P // 2 + 3
        if libc.madvise(ctypes.c_void_p(start + lo * P), ctypes.c_size_t(300 * P), 4) != 0:
            report("discard failed %d" % ctypes.get_errno())
        else:
            zs, ze = start + lo * P - addr, start + (lo + 300) * P - addr
            dlo, dhi = lo, lo + 300
            report("discarded")
    elif cmd == b"m":
        # 64 pages a quarter in moved away (mremap) and back, untouched.
        lo = (end - start) // P // 4 + 5
        src, ln = start + lo * P, 64 * P
        libc.mmap.restype = libc.mremap.restype = ctypes.c_void_p
        dst = libc.mmap(None, ctypes.c_size_t(ln), 3, 0x22, -1, ctypes.c_long(0))
        there = libc.mremap(ctypes.c_void_p(src), ctypes.c_size_t(ln), ctypes.c_size_t(ln), 3, ctypes.c_void_p(dst))
        back = libc.mremap(ctypes.c_void_p(dst), ctypes.c_size_t(ln), ctypes.c_size_t(ln), 3, ctypes.c_void_p(src))
        report("moved" if (there, back) == (dst, src) else "move failed %d" % ctypes.get_errno())
    elif cmd == b"f":
        pid = os.fork()
        if pid == 0:
            r = resident()
            report("child resident %d/%d %s" % (r, (end - start) // P - (dhi - dlo), check()))
            os._exit(0)
        os.waitpid(pid, 0)
        report("parent after fork " + check())
"#;

/// Fields in drop order: the processes first, then the control FIFO's
/// writer, then the directory.
struct Workload {
    r: Reaper,
    /// Kept open: a reader that faults inside read() holds the FIFO's
    /// lock until its page comes in, so a close would wait on the server.
    ctl: Option<fs::File>,
    pid: i32,
    t: tempfile::TempDir,
}

impl Workload {
    fn dir(&self) -> PathBuf {
        self.t.path().join("w")
    }
    fn img(&self) -> PathBuf {
        self.t.path().join("img")
    }
    fn status(&self) -> PathBuf {
        self.t.path().join("lazy-status.json")
    }

    /// Start the workload, wait until it checked its buffer once, save it
    /// with --stop.
    fn saved() -> Self {
        let t = tempdir();
        let dir = t.path().join("w");
        fs::create_dir(&dir).unwrap();
        let ctl = dir.join("ctl");
        nix::unistd::mkfifo(&ctl, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut r = Reaper::new();
        let pid = r.spawn(
            Command::new("/usr/bin/python3")
                .arg("-c")
                .arg(WORKLOAD)
                .arg(path(&dir))
                .arg(PAGES.to_string())
                .stdout(Stdio::null())
                .stderr(fs::File::create(t.path().join("stderr")).unwrap()),
        );
        wait_until("the workload to be ready", DEADLINE, || {
            dir.join("ready").exists().then_some(())
        });
        assert_eq!(lines(&dir.join("report")), ["ready ok"]);
        r.checkpoint_stop(pid, &t.path().join("img"));
        Workload {
            r,
            ctl: None,
            pid,
            t,
        }
    }

    /// `hiber restore --lazy`; the keeper's pid.
    fn restore_lazily(&mut self) -> i32 {
        self.restore_with(&[])
    }

    /// `hiber restore --lazy EXTRA...`; the keeper's pid. The workload's
    /// pid is the restored one from then on.
    fn restore_with(&mut self, extra: &[&str]) -> i32 {
        let status = self.status();
        let mut args = vec!["--lazy", "--lazy-status", path(&status)];
        args.extend_from_slice(extra);
        let restored = self.r.restore(&self.img(), &args);
        assert_eq!(restored.pids.len(), 1, "{:?}", restored.pids);
        self.pid = restored.pids[0].1;
        restored.keeper.expect("a lazy restore has a keeper")
    }

    fn command(&mut self, c: &[u8]) {
        use std::io::Write;
        let fifo = self.dir().join("ctl");
        let f = self.ctl.get_or_insert_with(|| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(fifo)
                .unwrap()
        });
        f.write_all(c).unwrap();
    }

    fn report(&self) -> Vec<String> {
        lines(&self.dir().join("report"))
    }

    /// The status file, once the server has written one.
    fn status_now(&self) -> Value {
        let p = self.status();
        wait_until("the page server's status file", DEADLINE, || {
            fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        })
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.t.path().join("stderr")).unwrap_or_default()
    }
}

/// The page server (`hiber-pages`), a child of the keeper.
fn server_of(keeper: i32) -> Option<i32> {
    tree(keeper).into_iter().find(|&p| {
        fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "hiber-pages")
    })
}

/// Nothing of the restore is left: keeper, server and restored process
/// gone.
#[track_caller]
fn all_gone(pids: &[i32]) {
    for &p in pids {
        wait_until(&format!("pid {p} to be gone or a zombie"), DEADLINE, || {
            (!alive(p)).then_some(())
        });
    }
}

#[test]
fn lazily_restored_memory_is_identical_also_in_a_child_forked_before_all_pages_are_in() {
    let mut w = Workload::saved();
    let image = snapshot_files(&w.img());
    fs::remove_file(w.dir().join("report")).unwrap();
    let keeper = w.restore_lazily();
    let server = wait_until("the page server to start", DEADLINE, || server_of(keeper));
    // At once, the server still at its first pages: a range discarded now
    // is not filled again, and reads zero; a range moved away and back is
    // filled where it is (the checks below).
    w.command(b"d");
    wait_until("the discard", DEADLINE, || {
        (!w.report().is_empty()).then_some(())
    });
    assert_eq!(w.report(), ["discarded"], "stderr: {}", w.stderr());
    w.command(b"m");
    wait_until("the move", DEADLINE, || {
        (w.report().len() >= 2).then_some(())
    });
    assert_eq!(w.report()[1], "moved", "stderr: {}", w.stderr());
    w.command(b"f");
    let report = wait_until("the child's and the parent's checks", DEADLINE, || {
        let l = w.report();
        (l.len() >= 4).then_some(l[2..].to_vec())
    });
    let child = &report[0];
    let (count, rest) = child
        .strip_prefix("child resident ")
        .and_then(|r| r.split_once(' '))
        .unwrap_or_else(|| panic!("unexpected report {report:?} (stderr: {})", w.stderr()));
    let (had, of) = count.split_once('/').unwrap();
    let (had, of): (usize, usize) = (had.parse().unwrap(), of.parse().unwrap());
    assert!(
        had < of,
        "the child was forked after every page was in ({had}/{of}): the test proves nothing"
    );
    assert_eq!(rest, "ok", "the child's memory: {report:?}");
    assert_eq!(report[1], "parent after fork ok", "{report:?}");
    let status = wait_until("the page server to finish", DEADLINE, || {
        let s = w.status_now();
        (s["state"] != "serving").then_some(s)
    });
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["server_pid"], server);
    all_gone(&[server]);
    w.command(b"c");
    wait_until("the check after every page is in", DEADLINE, || {
        (w.report().len() >= 5).then_some(())
    });
    assert_eq!(w.report()[4], "parent ok");
    assert_eq!(snapshot_files(&w.img()), image, "the image is unchanged");
    w.r.kill_all();
    all_gone(&[keeper, w.pid]);
}

#[test]
fn killing_the_page_server_kills_the_lazy_processes() {
    kill_the_server(&[]);
}

/// In a pid namespace of its own, the keeper is its init: the whole
/// namespace goes.
#[test]
fn killing_the_page_server_kills_a_lazy_pid_namespace() {
    kill_the_server(&["--pidns"]);
}

fn kill_the_server(restore_args: &[&str]) {
    let mut w = Workload::saved();
    let image = snapshot_files(&w.img());
    fs::remove_file(w.dir().join("report")).unwrap();
    let keeper = w.restore_with(restore_args);
    let server = wait_until("the page server to start", DEADLINE, || server_of(keeper));
    // Its first report written: it serves.
    w.status_now();
    // Stopped first, so that it is surely mid-stream when it dies.
    // SAFETY: kill of the server of the restore this test made.
    unsafe { libc::kill(server, libc::SIGSTOP) };
    wait_until("the page server to stop", DEADLINE, || {
        (state(server) == Some('T')).then_some(())
    });
    let status = w.status_now();
    assert_eq!(status["state"], "serving", "{status}");
    // The command line came in before the process ran: others read it
    // (`ps`) through the kernel, which does not wait for a server, while
    // the stack around it is still missing (the workload waits in read()
    // on its FIFO, and the server fills in address order, the stack last).
    let cmdline = fs::read(format!("/proc/{}/cmdline", w.pid)).unwrap();
    assert!(
        cmdline.starts_with(b"/usr/bin/python3\0-c\0"),
        "the command line of pid {} while its server is stopped: {:?}",
        w.pid,
        String::from_utf8_lossy(&cmdline)
    );
    // The check meets a missing page and waits for the stopped server.
    w.command(b"c");
    wait_until("the workload to wait on a page", DEADLINE, || {
        fs::read_to_string(format!("/proc/{}/wchan", w.pid))
            .ok()
            .filter(|c| c == "handle_userfault")
    });
    // SAFETY: as above.
    unsafe { libc::kill(server, libc::SIGKILL) };
    all_gone(&[w.pid, keeper, server]);
    assert!(
        w.report().is_empty(),
        "the workload ran on after its server died: {:?}",
        w.report()
    );
    let status: Value = serde_json::from_slice(&fs::read(w.status()).unwrap()).unwrap();
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("killed by signal 9"), "{error}");
    assert!(
        error.contains("every process of the lazy restore was killed"),
        "{error}"
    );
    assert_eq!(snapshot_files(&w.img()), image, "the image is unchanged");
}

/// The chunk of the workload's buffer in the middle of it: (hash, pack,
/// offset, stored length).
fn buffer_chunk(img: &Path) -> (String, String, u64, u64) {
    let bytes = fs::read(img.join("snapshot")).unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let doc: Value = serde_json::from_slice(&bytes[nl + 1..]).unwrap();
    let vmas = doc["processes"][0]["mm"]["vmas"].as_array().unwrap();
    let largest = vmas
        .iter()
        .max_by_key(|v| v["pages"].as_array().map_or(0, Vec::len))
        .unwrap();
    let pages = largest["pages"].as_array().unwrap();
    let c = &pages[pages.len() / 2]["chunk"];
    (
        c["hash"].as_str().unwrap().to_string(),
        c["pack"].as_str().unwrap().to_string(),
        c["offset"].as_u64().unwrap(),
        c["stored_len"].as_u64().unwrap(),
    )
}

#[test]
fn a_corrupt_chunk_kills_the_lazy_processes_and_is_named() {
    use std::os::unix::fs::FileExt;
    let mut w = Workload::saved();
    let (hash, pack, offset, len) = buffer_chunk(&w.img());
    let pack_file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(w.img().join("packs").join(format!("{pack}.pack")))
        .unwrap();
    let mut b = [0u8; 16];
    let at = offset + len / 2;
    pack_file.read_exact_at(&mut b, at).unwrap();
    b.iter_mut().for_each(|x| *x ^= 0x5a);
    pack_file.write_all_at(&b, at).unwrap();
    drop(pack_file);
    let image = snapshot_files(&w.img());
    fs::remove_file(w.dir().join("report")).unwrap();
    let keeper = w.restore_lazily();
    let server = wait_until("the page server to start", DEADLINE, || server_of(keeper));
    w.command(b"c");
    all_gone(&[w.pid, keeper, server]);
    assert!(
        w.report().is_empty(),
        "the workload checked its memory though a chunk was corrupt: {:?}",
        w.report()
    );
    let status: Value = serde_json::from_slice(&fs::read(w.status()).unwrap()).unwrap();
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(status["chunk"], hash.as_str(), "{status}");
    assert_eq!(status["pack"], pack.as_str(), "{status}");
    assert_eq!(status["pid"], w.pid, "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(error.contains(&hash) && error.contains(&pack), "{error}");
    assert!(
        error.contains("exit status 3") || error.contains("every process"),
        "{error}"
    );
    assert_eq!(
        snapshot_files(&w.img()),
        image,
        "the restore left the image as it was"
    );
}

/// A save of a process whose pages are still coming in would find the
/// missing ones not present and store zeros: it waits for them, the
/// process running on and nothing frozen (the server stopped meanwhile),
/// then takes once every page is in, and that image restores byte for
/// byte. (Past `LAZY_FILL_WAIT`, 30 s, it would go on and be refused
/// naming the mapping: not waited for here.)
#[test]
fn a_save_while_pages_still_come_in_waits_for_them() {
    let mut w = Workload::saved();
    fs::remove_file(w.dir().join("report")).unwrap();
    let keeper = w.restore_lazily();
    let server = wait_until("the page server to start", DEADLINE, || server_of(keeper));
    w.status_now();
    // Stopped mid-stream, so that pages are surely still missing.
    // SAFETY: kill of the server of the restore this test made.
    unsafe { libc::kill(server, libc::SIGSTOP) };
    wait_until("the page server to stop", DEADLINE, || {
        (state(server) == Some('T')).then_some(())
    });
    assert_eq!(w.status_now()["state"], "serving");
    let again = w.t.path().join("again");
    let log = w.t.path().join("save.log");
    let save = w.r.spawn(
        Command::new(hiber_bin())
            .args([
                "checkpoint",
                &w.pid.to_string(),
                "-o",
                path(&again),
                "--stop",
            ])
            .env("HIBER_LOG", "hiber_core=info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap()),
    );
    let ended = |r: &mut Reaper| {
        r.children_mut()
            .iter_mut()
            .find(|c| c.id() as i32 == save)
            .and_then(|c| c.try_wait().unwrap())
    };
    // It waits for the pages, the process running on, nothing frozen or
    // written yet.
    wait_until("the save to wait for the pages", DEADLINE, || {
        let said = fs::read_to_string(&log).unwrap_or_default();
        if let Some(status) = ended(&mut w.r) {
            panic!("the save ended ({status}) while pages were missing: {said}");
        }
        said.contains("waiting for the pages a lazy restore still brings in")
            .then_some(())
    });
    assert!(
        !matches!(state(w.pid), Some('t' | 'T')),
        "the process is not frozen while the save waits"
    );
    // SAFETY: as above.
    unsafe { libc::kill(server, libc::SIGCONT) };
    let status = wait_until("the save to end once every page is in", DEADLINE, || {
        ended(&mut w.r)
    });
    assert!(
        status.success(),
        "the save after the pages came in: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(w.status_now()["state"], "done");
    all_gone(&[w.pid]);
    let restored = w.r.restore(&again, &[]);
    w.pid = restored.pids[0].1;
    w.command(b"c");
    wait_until("the check of the second image's memory", DEADLINE, || {
        (!w.report().is_empty()).then_some(())
    });
    assert_eq!(w.report(), ["parent ok"], "stderr: {}", w.stderr());
    w.r.kill_all();
}
