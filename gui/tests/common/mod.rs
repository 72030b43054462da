//! A test user's desktop for the app: an X server (Xvfb) and a session bus
//! of the user's own, a private system bus, and hiber-gtk run as the user.
//! The tests drive the app as a user would, through the accessibility
//! tree (atspi.py) and synthetic keys (xdotool), never through its code.
//!
//! The private system bus is the one piece hiberd's own tests also need;
//! [`SystemBus`] keeps its config in one place so it can move over to
//! hiberd's fixture (dbus/tests/common) and packaged policy once those are
//! on main.

#![allow(dead_code)]

#[path = "../../../session/tests/common/user.rs"]
pub mod user;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use user::UserSession;

/// Long enough for a loaded 2-core machine; a wait that runs out names
/// what it waited for.
pub const DEADLINE: Duration = Duration::from_secs(60);

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
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ppid(pid: i32) -> Option<i32> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

/// Every descendant of `pid` (not `pid` itself).
fn descendants(pid: i32) -> BTreeSet<i32> {
    let all: Vec<(i32, i32)> = fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter_map(|p| Some((p, ppid(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for &(c, parent) in &all {
            if parent == p && out.insert(c) {
                todo.push(c);
            }
        }
    }
    out
}

fn alive(pid: i32) -> bool {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = s.rfind(')').and_then(|i| s[i + 2..].chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

fn terminate(pid: i32) {
    // SAFETY: kill(2) on a pid this test started (or one of its children).
    unsafe { libc::kill(pid, libc::SIGTERM) };
}

/// A process the test started, ended (with what it spawned) when dropped.
#[derive(Debug)]
pub struct Started {
    pub name: &'static str,
    pub child: Child,
}

impl Started {
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self { name, child }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its exit status, once it has exited by itself.
    #[track_caller]
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let name = self.name;
        wait_until(&format!("{name} to exit"), deadline, || {
            self.child.try_wait().expect("waiting for a child")
        })
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let pid = self.pid();
        // What it started (bus-activated services, say) goes with it.
        let spawned = descendants(pid);
        if self.child.try_wait().ok().flatten().is_none() {
            terminate(pid);
            let until = Instant::now() + Duration::from_secs(10);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for p in &spawned {
            terminate(*p);
        }
        let until = Instant::now() + Duration::from_secs(10);
        while spawned.iter().any(|p| alive(*p)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A line of a file another process writes, once it is complete.
#[track_caller]
fn first_line(what: &str, path: &Path) -> String {
    wait_until(what, DEADLINE, || {
        let s = fs::read_to_string(path).ok()?;
        let (line, _) = s.split_once('\n')?;
        Some(line.trim().to_string())
    })
}

/// A private system bus (dbus-daemon as root) at a socket of its own. Its
/// policy lets anyone talk to anyone: these tests are about the app, and
/// hiberd checks callers itself. `services`: a directory of activation
/// files, when the test wants D-Bus activation.
#[derive(Debug)]
pub struct SystemBus {
    pub address: String,
    daemon: Started,
    dir: tempfile::TempDir,
}

impl SystemBus {
    pub fn start(services: Option<&Path>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hiber-gui-bus-")
            .tempdir()
            .expect("a directory for the bus");
        let socket = dir.path().join("system_bus_socket");
        let servicedir = services
            .map(|d| format!("<servicedir>{}</servicedir>", d.display()))
            .unwrap_or_default();
        let config = dir.path().join("system.conf");
        fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  {servicedir}
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("writing the bus config");
        let printed = dir.path().join("address");
        let out = fs::File::create(&printed).expect("the bus's address file");
        let daemon = Started::spawn(
            "the system bus",
            Command::new("dbus-daemon")
                .arg(format!("--config-file={}", config.display()))
                .args(["--nofork", "--print-address=1"])
                .stdin(Stdio::null())
                .stdout(out),
        );
        let address = first_line("the system bus's address", &printed);
        // The socket's directory must let the test user reach it.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod the bus directory");
        Self {
            address,
            daemon,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The test user's desktop: Xvfb and a session bus, both the user's.
#[derive(Debug)]
pub struct Desktop {
    pub display: u32,
    pub session_bus: String,
    // Dropped in this order: the bus (with the AT-SPI services it
    // activated), then the X server; the user's directories last.
    bus: Started,
    xvfb: Started,
    pub user: UserSession,
}

impl Desktop {
    pub fn start() -> Self {
        let user = UserSession::new();
        let log = user.dir().join("xvfb.log");
        let number = user.dir().join("display");
        let out = fs::File::create(&number).expect("the display number file");
        std::os::unix::fs::chown(&number, Some(user::USER_UID), Some(user::USER_UID))
            .expect("chown the display file");
        // -displayfd: Xvfb picks a free display and writes its number
        // once it accepts clients.
        let xvfb = Started::spawn(
            "Xvfb",
            user.command(
                &[
                    "Xvfb",
                    "-displayfd",
                    "1",
                    "-screen",
                    "0",
                    "1024x768x24",
                    "-nolisten",
                    "tcp",
                ],
                Some(&log),
            )
            .stdout(out),
        );
        let display: u32 = first_line("Xvfb's display number", &number)
            .parse()
            .expect("Xvfb printed a display number");
        let bus_file = user.dir().join("session-bus");
        let out = fs::File::create(&bus_file).expect("the session bus file");
        std::os::unix::fs::chown(&bus_file, Some(user::USER_UID), Some(user::USER_UID))
            .expect("chown the session bus file");
        let socket = user.runtime.join("bus");
        let bus = Started::spawn(
            "the session bus",
            user.command(
                &[
                    "dbus-daemon",
                    "--session",
                    "--nofork",
                    &format!("--address=unix:path={}", socket.display()),
                    "--print-address=1",
                ],
                Some(&user.dir().join("session-bus.log")),
            )
            .stdout(out),
        );
        let session_bus = first_line("the session bus's address", &bus_file);
        Self {
            display,
            session_bus,
            bus,
            xvfb,
            user,
        }
    }

    /// `program args` as the user, in this desktop (DISPLAY, session bus).
    pub fn command(&self, program_and_args: &[&str], log: Option<&Path>) -> Command {
        let mut cmd = self.user.command(program_and_args, log);
        cmd.env("DISPLAY", format!(":{}", self.display))
            .env("DBUS_SESSION_BUS_ADDRESS", &self.session_bus);
        cmd
    }

    /// atspi.py as the user, on this desktop's accessibility bus.
    pub fn atspi(&self, args: &[&str]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/atspi.py");
        let script = script.to_str().expect("a UTF-8 path");
        let mut full = vec!["/usr/bin/python3", script, "hiber-gtk"];
        full.extend_from_slice(args);
        let mut cmd = self.command(&full, None);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.output().expect("running atspi.py")
    }

    /// atspi.py, which must succeed; its output.
    #[track_caller]
    pub fn atspi_ok(&self, args: &[&str]) -> String {
        let out = self.atspi(args);
        assert!(
            out.status.success(),
            "atspi.py {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible top-level window of `pid`.
    #[track_caller]
    pub fn window_of(&self, pid: i32) -> String {
        wait_until(&format!("a window of pid {pid}"), DEADLINE, || {
            let out = self
                .xdotool(&["search", "--onlyvisible", "--pid", &pid.to_string()])
                .ok()?;
            out.lines().next().map(str::to_string)
        })
    }

    fn xdotool(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("xdotool")
            .args(args)
            .env("DISPLAY", format!(":{}", self.display))
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Keys typed into `pid`'s window, as from a keyboard (XTEST).
    #[track_caller]
    pub fn keys(&self, pid: i32, keys: &str) {
        let w = self.window_of(pid);
        self.xdotool(&["windowfocus", "--sync", &w])
            .unwrap_or_else(|e| panic!("focusing window {w}: {e}"));
        self.xdotool(&["key", "--clearmodifiers", keys])
            .unwrap_or_else(|e| panic!("typing {keys}: {e}"));
    }

    /// The screen as a PNG under target/gui-screenshots, for people to
    /// look at (the README and the metainfo take theirs from there).
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/gui-screenshots");
        fs::create_dir_all(&dir).expect("making target/gui-screenshots");
        let png = dir.join(format!("{name}.png"));
        let xwd = Command::new("xwd")
            .args([
                "-root",
                "-silent",
                "-display",
                &format!(":{}", self.display),
            ])
            .output()
            .expect("running xwd");
        assert!(
            xwd.status.success(),
            "xwd: {}",
            String::from_utf8_lossy(&xwd.stderr)
        );
        let mut convert = Command::new("convert")
            .args(["xwd:-", png.to_str().expect("a UTF-8 path")])
            .stdin(Stdio::piped())
            .spawn()
            .expect("running convert");
        use std::io::Write;
        convert
            .stdin
            .take()
            .expect("convert's stdin")
            .write_all(&xwd.stdout)
            .expect("feeding convert");
        assert!(
            convert.wait().expect("convert").success(),
            "convert to {png:?}"
        );
        png
    }
}

/// hiber-gtk as the desktop's user, with the given system bus.
pub fn start_app(desktop: &Desktop, system_bus: &str, log: &Path) -> Started {
    let mut cmd = desktop.command(&[env!("CARGO_BIN_EXE_hiber-gtk")], Some(log));
    cmd.env("DBUS_SYSTEM_BUS_ADDRESS", system_bus)
        .env("HIBER_GTK_LOG", "debug");
    Started::spawn("hiber-gtk", &mut cmd)
}

/// The app's log, for assertion messages.
pub fn log_text(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_default()
}
