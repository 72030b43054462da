//! `hiber demo`: start a private X session, save it by its display, end
//! it, restore it and show that it came back: the same windows, the same
//! screen outside the clock, a shell that goes on counting and answers
//! typing. Exits 0 only if all of that holds.

use anyhow::{bail, ensure, Context, Result};
use hiber_session::desktop::{self, Rect};
use hiber_session::discover;
use hiber_session::display_session::{self, SaveOptions};
use hiber_session::format;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const SESSION: &str = include_str!("../../../packaging/demo-session.sh");
/// A cold GTK start (font and icon caches) can take a while on 2 cores.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const TIMEOUT: Duration = Duration::from_secs(20);

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > until {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A display number no X server uses: no socket file, no lock file, and
/// nobody listening on its abstract name either (a server whose files
/// were removed still holds that, and a new one on it fails).
fn free_display() -> Result<u32> {
    for d in 20..200 {
        let files_free = !Path::new(&format!("/tmp/.X11-unix/X{d}")).exists()
            && !Path::new(&format!("/tmp/.X{d}-lock")).exists();
        if files_free && discover::x_server_of(d)?.is_none() {
            return Ok(d);
        }
    }
    bail!("no free X display number between :20 and :199")
}

/// The last lines of the session's logs, for an error message.
fn log_tails(dir: &Path) -> String {
    ["session.log", "xvfb.log", "gtk.log"]
        .iter()
        .map(|name| {
            let text = fs::read_to_string(dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
            format!("{} ({}):\n  {tail}", name, dir.join(name).display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn read_count(dir: &Path) -> Option<u64> {
    fs::read_to_string(dir.join("count"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Everything the demo started or restored, ended by pid when it drops.
struct Cleanup {
    display: u32,
    launcher: Option<Child>,
    restored: Vec<i32>,
    keeper: Option<i32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for &pid in &self.restored {
            // SAFETY: kill takes plain integers; these are the pids the
            // restore reported for this demo's session.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(k) = self.keeper {
            // The keeper is our child: it ends once it has reaped them.
            let mut st = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(k, &mut st, 0) };
        }
        if let Some(mut l) = self.launcher.take() {
            // The session still runs (the demo failed before the save):
            // end the launcher's whole tree, children first found.
            let mut todo = vec![l.id() as i32];
            let mut all = Vec::new();
            while let Some(p) = todo.pop() {
                all.push(p);
                todo.extend(
                    hiber_core::procfs::ProcDir::new(p)
                        .children()
                        .unwrap_or_default(),
                );
            }
            for &p in all.iter().skip(1) {
                // SAFETY: kill takes plain integers; these descend from
                // the launcher this demo started.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            let _ = l.kill();
            let _ = l.wait();
        }
        // A killed X server leaves its socket and lock file behind.
        let _ = fs::remove_file(format!("/tmp/.X11-unix/X{}", self.display));
        let _ = fs::remove_file(format!("/tmp/.X{}-lock", self.display));
    }
}

fn xdotool(display: u32, args: &[&str]) -> Result<String> {
    let out = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", format!(":{display}"))
        .stderr(Stdio::null())
        .output()
        .context("running xdotool (is it installed?)")?;
    ensure!(out.status.success(), "xdotool {args:?} failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run(dir: Option<PathBuf>) -> Result<ExitCode> {
    // Kept afterwards: it holds the screenshots the demo points to.
    let dir = match dir {
        Some(d) => {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => tempfile::Builder::new()
            .prefix("hiber-demo-")
            .tempdir()
            .context("creating a directory for the demo")?
            .keep(),
    };
    let display = free_display()?;
    let image = dir.join("session-image");
    let mut cleanup = Cleanup {
        display,
        launcher: None,
        restored: Vec::new(),
        keeper: None,
    };

    println!("1. starting an X session on display :{display}: Xvfb, a session bus, gtk4-demo, xclock, xeyes, and an xterm whose shell counts");
    let launcher = Command::new("bash")
        .args(["-c", SESSION, "demo-session", &display.to_string()])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            fs::File::create(dir.join("session.log"))
                .with_context(|| format!("creating {}", dir.join("session.log").display()))?,
        )
        .spawn()
        .context("starting the session (bash)")?;
    let launcher_pid = launcher.id() as i32;
    cleanup.launcher = Some(launcher);
    let started = wait_for("every window of the session", START_TIMEOUT, || {
        if dir.join("ready").exists() {
            return Some(Ok(()));
        }
        // The launcher exits when a program it waits for died.
        let ended = cleanup.launcher.as_mut()?.try_wait().ok()??;
        Some(Err(anyhow::anyhow!(
            "the session's launcher gave up ({ended})"
        )))
    })
    .and_then(|r| r);
    if let Err(e) = started {
        bail!(
            "starting the session failed ({e:#}); is the README's set-up done (Xvfb, gtk-4-examples, xterm, x11-apps)?\n{}",
            log_tails(&dir)
        );
    }
    // Let the shell count a little first, so going on from there shows.
    wait_for("the shell to count to 5", TIMEOUT, || {
        read_count(&dir).filter(|&n| n >= 5)
    })?;

    println!("2. saving the session of display :{display} (found from the display) and ending it");
    let saved = display_session::save(
        &SaveOptions {
            verify_before_stop: false,
            display,
            // SAFETY: getuid cannot fail.
            user: unsafe { libc::getuid() },
            exclude: Vec::new(),
            services: Default::default(),
            dir: image.clone(),
            store: None,
            stop: true,
            no_reset: false,
            precopy: hiber_core::PrecopyMode::Never,
            devices: hiber_core::devices::DevicePolicies::default(),
        },
        &|_| {},
    )
    .with_context(|| format!("saving the session on display :{display}"))?;
    let count_at_save = read_count(&dir).unwrap_or(0);
    println!(
        "   {} processes, {} windows; frozen {}, total {}, image {}",
        saved.stats.processes,
        saved.record.windows.len(),
        format::millis(saved.stats.frozen),
        format::millis(saved.stats.total),
        format::bytes(saved.stats.image_bytes)
    );
    // The session was the launcher's children: it ends with them.
    if let Some(mut l) = cleanup.launcher.take() {
        let _ = l.wait();
    }
    // Ended; whoever adopted them reaps them.
    wait_for("the saved session to end", TIMEOUT, || {
        saved
            .session
            .processes
            .iter()
            .all(|&p| {
                hiber_core::procfs::ProcDir::new(p)
                    .stat()
                    .map_or(true, |s| matches!(s.state, 'Z' | 'X'))
            })
            .then_some(())
    })?;
    println!("   the session is gone (launcher {launcher_pid} ended; the shell had counted to {count_at_save})");

    println!("3. restoring it");
    let r = display_session::restore(&image)
        .with_context(|| format!("restoring the session from {}", image.display()))?;
    cleanup.restored = r.restored.pids.iter().map(|p| p.1).collect();
    cleanup.keeper = r.restored.keeper;
    println!(
        "   {} processes back in {}, under keeper pid {}",
        r.restored.pids.len(),
        format::millis(r.restored.elapsed),
        r.restored.keeper.unwrap_or(0)
    );

    println!("4. comparing with what was recorded at the save");
    let mut matched = true;
    if r.changes.is_empty() {
        println!(
            "   window list: the same {} windows, titles, geometry and stacking",
            r.now.windows.len()
        );
    } else {
        matched = false;
        println!("   window list DIFFERS:");
        for c in &r.changes {
            println!("     {c}");
        }
    }
    // The clock moves on; everything else must be pixel for pixel the same.
    let clock: Vec<Rect> = r
        .recorded
        .record
        .windows
        .iter()
        .filter(|w| w.class.as_deref() == Some("XClock"))
        .map(|w| Rect {
            x: w.x - 2,
            y: w.y - 2,
            width: w.width + 4,
            height: w.height + 4,
        })
        .collect();
    ensure!(!clock.is_empty(), "the recorded windows have no xclock");
    for (name, before) in &r.recorded.screenshots {
        let screen: u32 = name
            .trim_start_matches("screen-")
            .trim_end_matches(".png")
            .parse()
            .unwrap_or(0);
        let Some(after) = r.now_screens.iter().find(|s| s.screen == screen) else {
            matched = false;
            println!("   screen {screen}: missing after the restore");
            continue;
        };
        let before_path = dir.join(format!("before-{name}"));
        let after_path = dir.join(format!("after-{name}"));
        fs::write(&before_path, before)
            .with_context(|| format!("writing {}", before_path.display()))?;
        fs::write(&after_path, &after.png)
            .with_context(|| format!("writing {}", after_path.display()))?;
        let cmp = desktop::compare(before, &after.png, &clock)?;
        if cmp.differing == 0 {
            println!(
                "   screen {screen} ({}x{}): identical outside the clock",
                cmp.width, cmp.height
            );
        } else {
            matched = false;
            println!(
                "   screen {screen}: {} pixels differ outside the clock (first at {:?})",
                cmp.differing, cmp.first_difference
            );
        }
        println!(
            "   screenshots: {} and {}",
            before_path.display(),
            after_path.display()
        );
    }

    println!("5. the restored session goes on");
    let counted = wait_for("the shell to go on counting", TIMEOUT, || {
        read_count(&dir).filter(|&n| n > count_at_save + 2)
    })?;
    println!("   the shell counted on from {count_at_save} to {counted} without starting over");
    let term = xdotool(display, &["search", "--class", "xterm"])?
        .lines()
        .next()
        .context("no xterm window after the restore")?
        .to_string();
    let typed = dir.join("typed");
    // Focused, so xdotool types through XTEST (xterm ignores sent events).
    xdotool(display, &["windowfocus", "--sync", &term])?;
    xdotool(
        display,
        &[
            "type",
            "--window",
            &term,
            &format!("echo typed after the restore > {}", typed.display()),
        ],
    )?;
    xdotool(display, &["key", "--window", &term, "Return"])?;
    wait_for("bash to run the typed command", TIMEOUT, || {
        (fs::read_to_string(&typed).ok()? == "typed after the restore\n").then_some(())
    })?;
    println!("   a command typed into the xterm reached bash and ran");

    drop(cleanup);
    if matched {
        println!("the restored session matched the saved one");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("the restored session did NOT match the saved one");
        Ok(ExitCode::FAILURE)
    }
}
