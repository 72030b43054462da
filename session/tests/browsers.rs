//! Sandboxed browsers, as a user starts them. firefox-esr (content
//! processes under seccomp, in network and IPC namespaces of their own,
//! chrooted into a gone /proc directory) run by a normal user on Xvfb,
//! a form half filled, saved with `--stop` and restored by root. After
//! the restore the typed text is there, the page answers input, the
//! browser navigates to a second page, and the content processes are
//! still sandboxed. chromium likewise (its zygote the first process of a
//! pid namespace, in user and network namespaces of its own; each renderer
//! the first of a pid namespace below it, under seccomp), and after the
//! restore a new tab gets a new sandboxed renderer from the restored
//! zygote; then the restored browser is saved and restored once more.

mod common;

use common::user::{UserSession, USER_UID};
use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Firefox starts slowly on 2 cores, the more so beside other tests.
const START: Duration = Duration::from_secs(120);

const FORM: &str = r#"<html><head><title>Form page</title></head><body>
<input id="t" autofocus oninput="document.title = 'T:' + this.value; if (this.value.endsWith('!')) location.href = 'second.html'">
<script>window.onfocus = () => document.getElementById('t').focus();</script>
</body></html>"#;
const SECOND: &str = "<html><head><title>Second page</title></head><body>second</body></html>";

/// Preferences that keep a fresh profile from opening first-run tabs.
const USER_JS: &str = r#"user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
user_pref("trailhead.firstrun.didSeeAboutWelcome", true);
user_pref("browser.aboutwelcome.enabled", false);
"#;

const SESSION: &str = r#"
D=$1; P=$2
Xvfb ":$D" -screen 0 1024x768x24 -nolisten tcp -noreset > "$HOME/xvfb.log" 2>&1 &
until xdpyinfo -display ":$D" > /dev/null 2>&1; do sleep 0.05; done
export DISPLAY=":$D"
firefox-esr -no-remote -profile "$HOME/profile" "file://$P" > "$HOME/firefox.log" 2>&1 &
wait
"#;

fn xdotool(display: u32, args: &[&str]) -> std::process::Output {
    Command::new("xdotool")
        .args(args)
        .env("DISPLAY", format!(":{display}"))
        .output()
        .expect("running xdotool")
}

/// Whether a window whose name matches `pattern` exists.
fn window(display: u32, pattern: &str) -> bool {
    xdotool(display, &["search", "--name", pattern])
        .status
        .success()
}

/// Give the window whose name matches `pattern` the keyboard.
fn focus(display: u32, pattern: &str) {
    let focus = xdotool(
        display,
        &["search", "--name", pattern, "windowfocus", "--sync"],
    );
    assert_ok(&focus, "focusing the browser's window");
}

fn type_into(display: u32, pattern: &str, text: &str) {
    focus(display, pattern);
    let typed = xdotool(display, &["type", "--delay", "30", text]);
    assert_ok(&typed, "typing into the browser");
}

/// Type the form's first text into a fresh browser until its title shows
/// it. A window titled "Form page" is up before the page takes keys (its
/// field's autofocus, the content process) and keys typed earlier are
/// lost; so, before anything is saved, each try selects what the field
/// holds and types over it, until the title says `text` or the deadline.
/// (Keys typed into a *restored* browser are typed once: a lost key there
/// is a failure.)
fn type_first(display: u32, text: &str) {
    const RETYPE: Duration = Duration::from_secs(5);
    let title = format!("^T:{text}");
    let mut typed: Option<std::time::Instant> = None;
    wait_until(
        &format!("{text:?} typed in the page's title"),
        START,
        || {
            if window(display, &title) {
                return Some(());
            }
            if typed.is_none_or(|t| t.elapsed() > RETYPE) {
                focus(display, "^(Form page|T:)");
                assert_ok(&xdotool(display, &["key", "ctrl+a"]), "selecting the field");
                let typed_now = xdotool(display, &["type", "--delay", "30", text]);
                assert_ok(&typed_now, "typing into the browser");
                typed = Some(std::time::Instant::now());
            }
            None
        },
    );
}

/// The content processes among `pids` that run sandboxed: seccomp
/// filter on, a network namespace of their own, root in a gone directory.
/// (Firefox clears their environment: they are known by their ancestry.)
fn sandboxed_content(pids: &std::collections::BTreeSet<i32>) -> Vec<i32> {
    let own_net = fs::metadata("/proc/self/ns/net").unwrap().ino();
    let mut found = Vec::new();
    for &pid in pids {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.contains("Content") {
            continue;
        }
        let seccomp = status_field(pid, "Seccomp").is_some_and(|s| s == "2");
        let net = fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino());
        let root = fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
        if seccomp && net.is_ok_and(|n| n != own_net) && root.ends_with("fdinfo") {
            found.push(pid);
        }
    }
    found
}

/// A process of the test user started with this session's HOME.
fn of_session(pid: i32, home: &Path) -> bool {
    let owner = fs::metadata(format!("/proc/{pid}")).map(|m| m.uid());
    if owner.ok() != Some(USER_UID) {
        return false;
    }
    let want = format!("HOME={}", home.display());
    fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == want.as_bytes()))
}

/// Ends, by pid, every process of this session still there (firefox's
/// crash helper leaves the tree), whatever the test's outcome.
struct EndSession<'a>(&'a Path);

impl Drop for EndSession<'_> {
    fn drop(&mut self) {
        for e in fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
                if of_session(pid, self.0) {
                    // SAFETY: kill by pid of a process of this test's session.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

/// One browser at a time: each makes hundreds of threads, and one of them
/// can take a pid the other's saved session needs back (pids wrap at
/// 32768 here), which makes that restore fail, as it must ("pid N is
/// taken").
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn firefox_with_a_half_filled_form_is_restored_sandboxed_and_goes_on() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let desk = UserSession::new();
    let _end = EndSession(&desk.home);
    let pages = desk.home.join("pages");
    fs::create_dir(&pages).unwrap();
    fs::write(pages.join("form.html"), FORM).unwrap();
    fs::write(pages.join("second.html"), SECOND).unwrap();
    let profile = desk.home.join("profile");
    fs::create_dir(&profile).unwrap();
    fs::write(profile.join("user.js"), USER_JS).unwrap();
    for p in [&pages, &profile] {
        std::os::unix::fs::chown(p, Some(USER_UID), Some(USER_UID)).unwrap();
    }
    let display = free_display();
    // Dropped after the Reaper ends the X server (a killed one leaves them).
    let _x = XFiles(display);
    let mut r = Reaper::new();
    let form = pages.join("form.html");
    let launcher = r.spawn(&mut desk.command(
        &[
            "bash",
            "-c",
            SESSION,
            "session",
            &display.to_string(),
            path(&form),
        ],
        None,
    ));
    wait_until("firefox's window with the form", START, || {
        window(display, "^Form page").then_some(())
    });
    wait_until("a sandboxed content process", START, || {
        (!sandboxed_content(&tree(launcher)).is_empty()).then_some(())
    });
    type_first(display, "hello hiber");

    let img = desk.dir().join("image");
    let d = format!(":{display}");
    let resumed = suspend_and_resume(&mut r, &d, &img, Some(launcher));
    assert!(
        resumed
            .saved
            .iter()
            .any(|p| !p["seccomp_filters"].is_null()),
        "the image holds seccomp filters"
    );
    let now = resumed.pids;
    assert!(
        window(display, "^T:hello hiber"),
        "the restored page holds the typed text"
    );
    assert!(
        !sandboxed_content(&now).is_empty(),
        "the restored content processes are sandboxed"
    );
    type_into(display, "^T:hello hiber", " again");
    wait_until("the restored page answering input", DEADLINE, || {
        window(display, "^T:hello hiber again").then_some(())
    });
    type_into(display, "^T:hello hiber again", "!");
    wait_until("the second page", DEADLINE, || {
        window(display, "^Second page").then_some(())
    });
}

const CHROMIUM_SESSION: &str = r#"
D=$1; P=$2
Xvfb ":$D" -screen 0 1024x768x24 -nolisten tcp -noreset > "$HOME/xvfb.log" 2>&1 &
until xdpyinfo -display ":$D" > /dev/null 2>&1; do sleep 0.05; done
export DISPLAY=":$D"
chromium --no-first-run --no-default-browser-check --user-data-dir="$HOME/chromium" "file://$P" > "$HOME/chromium.log" 2>&1 &
wait
"#;

/// Chromium's renderers among `pids` that run sandboxed: seccomp filter
/// on, each the first process of a pid namespace of its own below the
/// zygote's, in a network namespace that is not the host's.
fn sandboxed_renderers(pids: &std::collections::BTreeSet<i32>) -> Vec<i32> {
    let own_net = fs::metadata("/proc/self/ns/net").unwrap().ino();
    pids.iter()
        .copied()
        .filter(|&pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // Chromium writes its arguments over as one string.
            let renderer = cmdline
                .windows(b"--type=renderer".len())
                .any(|w| w == b"--type=renderer");
            let ns_pid: Vec<String> = status_field(pid, "NSpid")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let seccomp = status_field(pid, "Seccomp").is_some_and(|s| s == "2");
            let net = fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino());
            renderer
                && ns_pid.len() == 3
                && ns_pid[2] == "1"
                && seccomp
                && net.is_ok_and(|n| n != own_net)
        })
        .collect()
}

#[test]
fn chromium_with_a_half_filled_form_is_restored_sandboxed_and_goes_on() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let desk = UserSession::new();
    let _end = EndSession(&desk.home);
    let pages = desk.home.join("pages");
    fs::create_dir(&pages).unwrap();
    fs::write(pages.join("form.html"), FORM).unwrap();
    fs::write(pages.join("second.html"), SECOND).unwrap();
    std::os::unix::fs::chown(&pages, Some(USER_UID), Some(USER_UID)).unwrap();
    let display = free_display();
    // Dropped after the Reaper ends the X server (a killed one leaves them).
    let _x = XFiles(display);
    let mut r = Reaper::new();
    let form = pages.join("form.html");
    let launcher = r.spawn(&mut desk.command(
        &[
            "bash",
            "-c",
            CHROMIUM_SESSION,
            "session",
            &display.to_string(),
            path(&form),
        ],
        None,
    ));
    wait_until("chromium's window with the form", START, || {
        window(display, "^Form page").then_some(())
    });
    wait_until("a sandboxed renderer", START, || {
        (!sandboxed_renderers(&tree(launcher)).is_empty()).then_some(())
    });
    // Into the page's field (its autofocus does not give the window the
    // keyboard when no window manager runs), clicked as a user would.
    let click = xdotool(
        display,
        &[
            "search",
            "--name",
            "^Form page",
            "mousemove",
            "--window",
            "%1",
            "100",
            "105",
            "click",
            "1",
        ],
    );
    assert_ok(&click, "clicking the form's field");
    type_first(display, "hello hiber");

    let d = format!(":{display}");
    let check = hiber(&["session", "check", "--display", &d, "--user", "1500"]);
    assert_ok(&check, "session check of chromium");
    let img = desk.dir().join("image");
    let resumed = suspend_and_resume(&mut r, &d, &img, Some(launcher));
    assert!(
        resumed
            .saved
            .iter()
            .any(|p| p["ns_pids"].as_array().is_some_and(|v| v.len() == 2)),
        "the image holds processes of nested pid namespaces"
    );
    let (now, keeper) = (resumed.pids, resumed.keeper);
    assert!(
        window(display, "^T:hello hiber"),
        "the restored page holds the typed text"
    );
    let renderers = sandboxed_renderers(&now);
    assert!(
        !renderers.is_empty(),
        "the restored renderers are sandboxed"
    );
    type_into(display, "^T:hello hiber", " again");
    wait_until("the restored page answering input", DEADLINE, || {
        window(display, "^T:hello hiber again").then_some(())
    });
    type_into(display, "^T:hello hiber again", "!");
    wait_until("the second page", DEADLINE, || {
        window(display, "^Second page").then_some(())
    });
    // A new tab: the restored zygote makes a new renderer in a pid
    // namespace of its own (with the capability it holds in its user
    // namespace, made again at restore).
    let all_now = || -> std::collections::BTreeSet<i32> {
        now.iter()
            .chain(keeper.iter())
            .flat_map(|&p| tree(p))
            .collect()
    };
    let second = pages.join("second.html");
    let tab = xdotool(display, &["key", "ctrl+t"]);
    assert_ok(&tab, "opening a new tab");
    wait_until("a new tab", DEADLINE, || {
        window(display, "^New Tab").then_some(())
    });
    type_into(
        display,
        "^New Tab",
        &format!("file://{}\n", second.display()),
    );
    wait_until("a new sandboxed renderer for the new tab", START, || {
        sandboxed_renderers(&all_now())
            .iter()
            .any(|p| !renderers.contains(p))
            .then_some(())
    });

    // The restored browser saved and restored once more (its user
    // namespaces, nested pid namespaces and gone roots as a restore left
    // them): both tabs back, the first one's page shown on request.
    let again = desk.dir().join("image-again");
    let now = suspend_and_resume(&mut r, &d, &again, None).pids;
    assert!(
        !sandboxed_renderers(&now).is_empty(),
        "the renderers restored a second time are sandboxed"
    );
    let first_tab = xdotool(display, &["key", "ctrl+1"]);
    assert_ok(&first_tab, "switching to the first tab");
    wait_until(
        "the first tab's page after the second restore",
        DEADLINE,
        || window(display, "^Second page").then_some(()),
    );
}

/// A browser's session after [`suspend_and_resume`].
struct Resumed {
    /// The saved processes, as `hiber inspect --json` lists them.
    saved: Vec<Value>,
    /// The restored session's pids.
    pids: std::collections::BTreeSet<i32>,
    keeper: Option<i32>,
}

/// Save the browser's session on display `d` with `--stop` into `img`,
/// wait until every saved process is gone (and `launcher`, the test's
/// child, is collected), restore it, and hand the restored processes to
/// `r`.
fn suspend_and_resume(r: &mut Reaper, d: &str, img: &Path, launcher: Option<i32>) -> Resumed {
    let saved = r.session_stop(d, img, &launcher.into_iter().collect::<Vec<_>>());
    let restored = r.session_restore(img, &[]);
    Resumed {
        saved: saved.processes,
        pids: restored["pids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_i64().unwrap() as i32)
            .collect(),
        keeper: restored["keeper"].as_i64().map(|k| k as i32),
    }
}
