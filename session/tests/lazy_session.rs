//! A user's session with 300 MiB of memory comes back lazily by default
//! (`hiber session restore`, no option): its windows answer and its shell
//! counts on while pages still come in; every page reads back as saved;
//! the page server's status file goes once every page is in. The same
//! session restored with `--memory eager` comes back whole before it runs.

mod common;

use common::user::{UserSession, USER_UID};
use common::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// Pages of the probe's buffer: 300 MiB, above the 256 MiB from which a
/// session restore goes lazy.
const PAGES: usize = 300 * 256;

/// Fills a private anonymous buffer with each page's index in its first 8
/// bytes (every page dirty, each different), says "ready", then answers
/// each `go-N` file with `result-N`: "ok PAGES" when every page still
/// holds its index, else the first page that does not.
const PROBE: &str = r#"
import os, sys, time
d, pages = sys.argv[1], int(sys.argv[2])
buf = bytearray(pages * 4096)
for i in range(pages):
    buf[i * 4096:i * 4096 + 8] = i.to_bytes(8, "little")
open(os.path.join(d, "ready"), "w").close()
n = 1
while True:
    go = os.path.join(d, f"go-{n}")
    if not os.path.exists(go):
        time.sleep(0.05)
        continue
    bad = next((i for i in range(pages)
                if int.from_bytes(buf[i * 4096:i * 4096 + 8], "little") != i), None)
    with open(os.path.join(d, f"result-{n}.tmp"), "w") as f:
        f.write(f"ok {pages}" if bad is None else f"page {bad} differs")
    os.rename(os.path.join(d, f"result-{n}.tmp"), os.path.join(d, f"result-{n}"))
    n += 1
"#;

/// The xterm's shell: the probe in the background, a counter into
/// `$0/count` five times a second, then an interactive bash.
const SHELL: &str = r#"python3 -c "$PROBE" "$0" "$1" & (n=0; while :; do n=$((n+1)); echo $n > "$0/count"; sleep 0.2; done) & exec bash --norc --noprofile -i"#;

fn count(dir: &Path) -> u64 {
    fs::read_to_string(dir.join("count"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Ask the probe to check its buffer (round `n`) and return its answer.
fn probe(dir: &Path, n: u32) -> String {
    let go = dir.join(format!("go-{n}"));
    fs::write(&go, "").unwrap();
    std::os::unix::fs::chown(&go, Some(USER_UID), Some(USER_UID)).unwrap();
    let result = dir.join(format!("result-{n}"));
    wait_until(
        &format!("the probe's answer {}", result.display()),
        DEADLINE,
        || fs::read_to_string(&result).ok(),
    )
}

/// Restore `img` with `extra` options, adopt what came back, check the
/// windows and the shell, and return the JSON answer.
fn restore(r: &mut Reaper, u: &UserSession, img: &Path, extra: &[&str]) -> Value {
    let stopped_at = count(u.dir());
    let v = r.session_restore(img, extra);
    assert_eq!(v["changes"].as_array().unwrap().len(), 0, "{v}");
    let display = v["display"].as_u64().unwrap() as u32;
    assert!(
        u.shows_window(display, "xterm"),
        "a new client finds the xterm"
    );
    wait_until("the restored shell to count on", DEADLINE, || {
        (count(u.dir()) > stopped_at + 2).then_some(())
    });
    v
}

/// Removes a page server's status file the test failed to see go.
struct StatusFile(PathBuf);

impl Drop for StatusFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The restored pid of the saved `pid`.
fn now_pid(v: &Value, pid: i32) -> i32 {
    v["pids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == pid)
        .map(|p| p[1].as_i64().unwrap() as i32)
        .unwrap_or_else(|| panic!("pid {pid} among the restored: {v}"))
}

#[test]
fn a_large_session_comes_back_lazily_and_whole() {
    let mut r = Reaper::new();
    let u = UserSession::new();
    let display = free_display();
    let _x = XFiles(display);
    let log = u.dir().join("log");
    let xvfb = r.spawn(&mut u.command(
        &[
            "Xvfb",
            &format!(":{display}"),
            "-nolisten",
            "tcp",
            "-noreset",
        ],
        Some(&log),
    ));
    wait_until(&format!("Xvfb :{display} to answer"), DEADLINE, || {
        u.run_on(display, &["xwininfo", "-root"])
            .status
            .success()
            .then_some(())
    });
    let pages = PAGES.to_string();
    let xterm = r.spawn(
        u.command(
            &[
                "xterm",
                "-e",
                "bash",
                "--norc",
                "--noprofile",
                "-c",
                SHELL,
                u.dir().to_str().unwrap(),
                &pages,
            ],
            Some(&log),
        )
        .env("DISPLAY", format!(":{display}"))
        .env("PROBE", PROBE),
    );
    wait_until("the probe to fill its buffer", DEADLINE, || {
        u.dir().join("ready").exists().then_some(())
    });
    wait_until("the xterm's window", DEADLINE, || {
        u.shows_window(display, "xterm").then_some(())
    });
    assert_eq!(probe(u.dir(), 1), format!("ok {PAGES}"));

    // Lazy by default: 300 MiB is above the threshold.
    let img = u.dir().join("img");
    r.session_stop(&format!(":{display}"), &img, &[xvfb, xterm]);
    let v = restore(&mut r, &u, &img, &[]);
    assert_eq!(v["memory"], "lazy", "{v}");
    let status = PathBuf::from(v["lazy_status"].as_str().expect("a status file"));
    let _status_file = StatusFile(status.clone());
    assert!(
        status.starts_with("/run/hiber/lazy"),
        "{}",
        status.display()
    );
    // Every page reads back as saved, whether the server streamed it in
    // already or the probe's touch faulted it in.
    assert_eq!(probe(u.dir(), 2), format!("ok {PAGES}"));
    wait_until(
        &format!("the page server to finish and remove {}", status.display()),
        DEADLINE,
        || (!status.exists()).then_some(()),
    );
    // The session runs on after the server is gone.
    assert!(alive(now_pid(&v, xvfb)));
    let xvfb = now_pid(&v, xvfb);
    let xterm = now_pid(&v, xterm);

    // Asked eager, the same session comes back with every page in.
    let img2 = u.dir().join("img2");
    r.session_stop(&format!(":{display}"), &img2, &[]);
    for pid in [xvfb, xterm] {
        wait_gone(pid);
    }
    let v = restore(&mut r, &u, &img2, &["--memory", "eager"]);
    assert_eq!(v["memory"], "eager", "{v}");
    assert!(v["lazy_status"].is_null(), "{v}");
    assert_eq!(probe(u.dir(), 3), format!("ok {PAGES}"));
    drop(r);
}
