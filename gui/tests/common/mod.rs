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

/// tests/atspi.py, run by the test user.
const ATSPI: &str = include_str!("../atspi.py");

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

/// The repository's packaging directory.
pub fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

/// The bus policy of a Debian system bus (system.conf: method calls
/// denied unless a service's own file allows them), then the installed
/// services' files (polkit's) and hiberd's packaged one.
fn packaged_policy() -> String {
    let hiberd = packaging().join("dbus/org.hiber.Hiber1.conf");
    assert!(
        hiberd.exists(),
        "{} is missing: hiberd's packaged bus policy",
        hiberd.display()
    );
    format!(
        r#"<policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow send_destination="*"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
  <include>{}</include>"#,
        hiberd.display()
    )
}

/// A private system bus (dbus-daemon as root) at a socket of its own.
/// `open`: a policy that lets anyone talk to anyone (the tests without
/// hiberd); else the packaged one. `services`: a directory of activation
/// files, when the test wants D-Bus activation.
#[derive(Debug)]
pub struct SystemBus {
    pub address: String,
    daemon: Started,
    dir: tempfile::TempDir,
}

impl SystemBus {
    pub fn start(services: Option<&Path>) -> Self {
        Self::start_with(services, true)
    }

    pub fn start_packaged(services: &Path) -> Self {
        Self::start_with(Some(services), false)
    }

    fn start_with(services: Option<&Path>, open: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hiber-gui-bus-")
            .tempdir()
            .expect("a directory for the bus");
        let socket = dir.path().join("system_bus_socket");
        let servicedir = services
            .map(|d| format!("<servicedir>{}</servicedir>", d.display()))
            .unwrap_or_default();
        let policy = if open {
            r#"<policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>"#
                .to_string()
        } else {
            packaged_policy()
        };
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
  {policy}
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

    /// Whether `name` has an owner on this bus.
    pub fn has_owner(&self, name: &str) -> bool {
        Command::new("gdbus")
            .args(["call", "--system", "--dest", "org.freedesktop.DBus"])
            .args(["--object-path", "/org/freedesktop/DBus"])
            .args(["--method", "org.freedesktop.DBus.NameHasOwner", name])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("true"))
    }
}

/// hiberd, next to this test's binary; built by the cargo running us
/// (cargo builds only this package's binaries for its tests).
pub fn hiberd_bin() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let p = PathBuf::from(env!("CARGO_BIN_EXE_hiber-gtk")).with_file_name("hiberd");
    BUILT.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "hiber-dbus", "--bin", "hiberd"]);
        if p.parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| n == "release")
        {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo to build hiberd");
        assert!(status.success(), "building hiberd failed");
    });
    assert!(p.exists(), "{} is missing after building it", p.display());
    p
}

/// The `hiber` CLI, next to this test's binary, built like [`hiberd_bin`].
pub fn hiber_bin() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let p = PathBuf::from(env!("CARGO_BIN_EXE_hiber-gtk")).with_file_name("hiber");
    BUILT.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "hiber-session", "--bin", "hiber"]);
        if p.parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| n == "release")
        {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo to build hiber");
        assert!(status.success(), "building hiber failed");
    });
    assert!(p.exists(), "{} is missing after building it", p.display());
    p
}

/// polkit's side of the tests, written into `dir`: hiberd's packaged
/// actions, and a rule that lets the test user (who has no logind session
/// here, so polkit's defaults would ask it to authenticate) save, restore
/// and delete its own sessions. polkitd reads them in a mount namespace of
/// its own (see [`Hiberd::start`]): nothing is written on the machine.
fn polkit_files(dir: &Path) -> (PathBuf, PathBuf) {
    let actions = packaging().join("dbus/org.hiber.Hiber1.policy");
    let rule = format!(
        "// Made by Hiber's tests: their desktop user has no logind session.\n\
         polkit.addRule(function(action, subject) {{\n\
         \x20   if (subject.user == \"{}\" && action.id.indexOf(\"org.hiber.Hiber1.\") == 0 &&\n\
         \x20       action.id != \"org.hiber.Hiber1.manage-other-users\") {{\n\
         \x20       return polkit.Result.YES;\n\
         \x20   }}\n\
         }});\n",
        user::USER_NAME
    );
    let rules = dir.join("50-hiber-tests.rules");
    fs::write(&rules, rule).unwrap_or_else(|e| panic!("{}: {e}", rules.display()));
    assert!(
        actions.exists(),
        "{}: hiberd's polkit actions",
        actions.display()
    );
    (rules, actions)
}

/// polkitd, in a mount namespace of its own where its rules and actions
/// directories hold only the tests' (tmpfs over each), so the machine's
/// polkit is not touched; the namespace ends with it.
const POLKITD: &str = r#"set -e
mount --make-rprivate /
for d in /etc/polkit-1/rules.d /usr/share/polkit-1/actions; do
    mount -t tmpfs -o mode=0755 hiber-test-polkit "$d"
done
install -m 0644 "$1" /etc/polkit-1/rules.d/50-hiber-tests.rules
install -m 0644 "$2" /usr/share/polkit-1/actions/org.hiber.Hiber1.policy
exec /usr/lib/polkit-1/polkitd --no-debug
"#;

/// hiberd as root on a private system bus with its packaged policy,
/// started by the bus when first called (as on a real system: when it
/// leaves the bus, idle or broken, the next call starts it again), with
/// polkitd beside it and a store of its own.
#[derive(Debug)]
pub struct Hiberd {
    // Dropped in this order: polkitd, then the bus with what it started
    // (hiberd), then the store.
    polkitd: Started,
    pub bus: SystemBus,
    pub state: tempfile::TempDir,
}

impl Hiberd {
    pub fn start() -> Self {
        let state = tempfile::Builder::new()
            .prefix("hiber-gui-store-")
            .tempdir()
            .expect("a store for hiberd");
        let (rules, actions) = polkit_files(state.path());
        // The packaged activation file, run from here: this hiberd, this
        // store, its log beside it.
        let packaged = packaging().join("dbus/org.hiber.Hiber1.service");
        let text = fs::read_to_string(&packaged)
            .unwrap_or_else(|e| panic!("{}: {e} (hiberd's activation file)", packaged.display()));
        assert!(text.contains("Name=org.hiber.Hiber1"), "{text}");
        let services = state.path().join("services");
        fs::create_dir(&services).expect("the activation directory");
        let exec = format!(
            "Exec=/bin/sh -c \"exec {} --state-dir {} 2>>{}\"",
            hiberd_bin().display(),
            state.path().join("store").display(),
            state.path().join("hiberd.log").display()
        );
        let activation: String = text
            .lines()
            .filter(|l| !l.starts_with("SystemdService="))
            .map(|l| {
                if l.starts_with("Exec=") {
                    exec.as_str()
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(services.join("org.hiber.Hiber1.service"), activation + "\n")
            .expect("writing the activation file");
        let bus = SystemBus::start_packaged(&services);
        let polkitd = Started::spawn(
            "polkitd",
            Command::new("unshare")
                .args(["--mount", "/bin/sh", "-c", POLKITD, "polkitd"])
                .arg(&rules)
                .arg(&actions)
                .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        // polkitd owns its name once its actions and rules are loaded; a
        // call before that would fail at once.
        wait_until("polkitd on the bus", DEADLINE, || {
            bus.has_owner("org.freedesktop.PolicyKit1").then_some(())
        });
        Self {
            polkitd,
            bus,
            state,
        }
    }

    /// hiberd's store (`--state-dir`).
    pub fn store(&self) -> PathBuf {
        self.state.path().join("store")
    }

    /// The snapshots in the test user's store.
    pub fn stored(&self) -> Vec<String> {
        let dir = self
            .state
            .path()
            .join("store")
            .join(user::USER_UID.to_string());
        let mut ids: Vec<String> = fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.state.path().join("hiberd.log")).unwrap_or_default()
    }
}

/// The test user's desktop: Xvfb and a session bus, both the user's, and
/// what the test starts in it.
#[derive(Debug)]
pub struct Desktop {
    pub display: u32,
    pub session_bus: String,
    /// Ended in reverse order: the test's programs, the bus (with the
    /// AT-SPI services it activated), then the X server.
    procs: Vec<Started>,
    /// The app's log, shown when a step fails.
    app_log: Option<PathBuf>,
    pub user: UserSession,
}

impl Drop for Desktop {
    fn drop(&mut self) {
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
        self.end_all();
        // A killed X server (a restored one is never our child: it is
        // killed, not asked to end) leaves its socket and lock file; they
        // go unless the lock names a living server (the number taken again).
        let lock = format!("/tmp/.X{}-lock", self.display);
        let holder: Option<i32> = fs::read_to_string(&lock)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if !holder.is_some_and(alive) {
            let _ = fs::remove_file(format!("/tmp/.X11-unix/X{}", self.display));
            let _ = fs::remove_file(&lock);
        }
    }
}

impl Desktop {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A desktop whose X server takes display `display` (a new login's,
    /// on the display a suspended session was saved from).
    pub fn start_on(display: u32) -> Self {
        Self::start_with(Some(display))
    }

    fn start_with(fixed: Option<u32>) -> Self {
        let user = UserSession::new();
        let log = user.dir().join("xvfb.log");
        let number = user.dir().join("display");
        let out = fs::File::create(&number).expect("the display number file");
        std::os::unix::fs::chown(&number, Some(user::USER_UID), Some(user::USER_UID))
            .expect("chown the display file");
        // -displayfd: Xvfb writes the display's number once it accepts
        // clients (picking a free one when none is given).
        let mut args = vec![
            "Xvfb",
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1024x768x24",
            "-nolisten",
            "tcp",
        ];
        let name = fixed.map(|d| format!(":{d}"));
        if let Some(name) = &name {
            args.insert(1, name);
        }
        let xvfb = Started::spawn("Xvfb", user.command(&args, Some(&log)).stdout(out));
        let display: u32 = first_line("Xvfb's display number", &number)
            .parse()
            .expect("Xvfb printed a display number");
        if let Some(d) = fixed {
            assert_eq!(display, d, "Xvfb took the display it was given");
        }
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
            procs: vec![xvfb, bus],
            app_log: None,
            user,
        }
    }

    /// `program args` started in this desktop, ended with it.
    pub fn spawn(
        &mut self,
        name: &'static str,
        program_and_args: &[&str],
        log: Option<&Path>,
    ) -> i32 {
        let started = Started::spawn(name, &mut self.command(program_and_args, log));
        let pid = started.pid();
        self.procs.push(started);
        pid
    }

    /// hiber-gtk started in this desktop with the given system bus,
    /// ended with it.
    pub fn spawn_app(&mut self, system_bus: &str, log: &Path) -> i32 {
        let started = start_app(self, system_bus, log);
        self.app_log = Some(log.to_path_buf());
        let pid = started.pid();
        self.procs.push(started);
        pid
    }

    /// Reap what this test started and has ended (a session ended by a
    /// suspend): a zombie would still hold its pid, which the restore
    /// needs.
    pub fn reap(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.try_wait();
        }
    }

    /// The session ends: every process of it, and those this test started
    /// reaped (a zombie would still hold its pid).
    pub fn end_session(&mut self) {
        self.end_all();
        for p in &mut self.procs {
            let _ = p.child.wait();
        }
    }

    /// End every process of this desktop's session, wherever it came from
    /// (started here, activated by its bus, or restored by hiberd): they
    /// all carry this session's own XDG_RUNTIME_DIR.
    /// The live processes of this desktop's session, wherever they came
    /// from: they all carry its own XDG_RUNTIME_DIR.
    pub fn running(&self) -> Vec<i32> {
        let mark = format!("XDG_RUNTIME_DIR={}", self.user.runtime.display());
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == mark.as_bytes()))
                    && alive(*pid)
            })
            .collect()
    }

    pub fn end_all(&self) {
        let members = || self.running();
        for pid in members() {
            terminate(pid);
        }
        let until = Instant::now() + Duration::from_secs(10);
        while !members().is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in members() {
            // SAFETY: kill(2) on a process of this test's session.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// `program args` as the user, in this desktop (DISPLAY, session bus).
    pub fn command(&self, program_and_args: &[&str], log: Option<&Path>) -> Command {
        let mut cmd = self.user.command(program_and_args, log);
        cmd.env("DISPLAY", format!(":{}", self.display))
            .env("DBUS_SESSION_BUS_ADDRESS", &self.session_bus);
        cmd
    }

    /// The app's binary where the user may run it: a copy in the user's
    /// directory (the checkout may be root's only, as a CI clone is), kept
    /// as long as this desktop (a restored app maps it from there).
    pub fn app_binary(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let copy = self.user.dir().join("hiber-gtk");
        if !copy.exists() {
            fs::copy(env!("CARGO_BIN_EXE_hiber-gtk"), &copy)
                .unwrap_or_else(|e| panic!("copying hiber-gtk to {}: {e}", copy.display()));
            fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))
                .expect("making the app's copy executable");
        }
        copy
    }

    /// atspi.py as the user, on this desktop's accessibility bus.
    pub fn atspi(&self, args: &[&str]) -> Output {
        // Given as text: the checkout may be root's only (a CI clone), and
        // the user could not read the file there.
        let mut full = vec!["/usr/bin/python3", "-c", ATSPI, "hiber-gtk"];
        full.extend_from_slice(args);
        // Its output goes to files, not pipes: the driver is in the session
        // hiberd checks, and pipes to this test would be findings of the
        // check ("the pipe's read end is outside the saved set"); a file
        // comes back as it was.
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = self.user.dir().join(format!("atspi-{n}.out"));
        let err = self.user.dir().join(format!("atspi-{n}.err"));
        // The user's own files: a restore reopens them as the user.
        let file = |p: &Path| {
            let f = fs::File::create(p).expect("the driver's output file");
            std::os::unix::fs::chown(p, Some(user::USER_UID), Some(user::USER_UID))
                .expect("giving the driver's output file to the user");
            f
        };
        let mut cmd = self.command(&full, None);
        cmd.stdout(file(&out)).stderr(file(&err));
        let status = cmd.status().expect("running atspi.py");
        // The files stay as long as the desktop: a snapshot taken while
        // the driver ran reopens them when it is restored.
        Output {
            status,
            stdout: fs::read(&out).unwrap_or_default(),
            stderr: fs::read(&err).unwrap_or_default(),
        }
    }

    /// atspi.py, which must succeed; its output.
    #[track_caller]
    pub fn atspi_ok(&self, args: &[&str]) -> String {
        let out = self.atspi(args);
        if !out.status.success() {
            let log = self.app_log.as_deref().map(log_text).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "atspi.py {args:?}: {}{}\nthe app's log ends:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail.join("\n")
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A window titled `title` is on this desktop.
    #[track_caller]
    pub fn window_by_title(&self, title: &str) -> String {
        wait_until(&format!("a window titled {title:?}"), DEADLINE, || {
            let out = self.xdotool(&["search", "--name", title]).ok()?;
            out.lines().next().map(str::to_string)
        })
    }

    /// The window titled `title` of the program `pid` started in this
    /// desktop with its output in `log`: a program that exits before its
    /// window shows fails the wait at once, with what it printed.
    #[track_caller]
    pub fn window_by_title_of(&mut self, title: &str, pid: i32, log: &Path) -> String {
        let started = self
            .procs
            .iter_mut()
            .find(|p| p.pid() == pid)
            .expect("a program started in this desktop");
        let display = self.display;
        let xvfb_log = self.user.dir().join("xvfb.log");
        let xdotool = |args: &[&str]| {
            Command::new("xdotool")
                .args(args)
                .env("DISPLAY", format!(":{}", self.display))
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        wait_until(
            &format!("a window titled {title:?} of pid {pid}"),
            DEADLINE,
            || {
                if let Some(status) = started.child.try_wait().ok().flatten() {
                    // Who listens on this display's sockets, and what its
                    // server said: the display may have been another's.
                    let listeners = Command::new("ss")
                        .args(["-xlpn"])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    let mine = format!("X11-unix/X{display} ");
                    panic!(
                        "pid {pid} ({}) exited with {status} before its window {title:?} showed:\n{}\nlisteners of :{display}:\n{}\nXvfb's log:\n{}",
                        started.name,
                        fs::read_to_string(log).unwrap_or_default(),
                        listeners.lines().filter(|l| l.contains(&mine)).collect::<Vec<_>>().join("\n"),
                        fs::read_to_string(&xvfb_log).unwrap_or_default()
                    );
                }
                xdotool(&["search", "--name", title])?
                    .lines()
                    .next()
                    .map(str::to_string)
            },
        )
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

    /// Keys typed into the window whose title starts so.
    #[track_caller]
    pub fn keys_to_window(&self, title: &str, keys: &str) {
        let w = self.window_by_title(title);
        self.xdotool(&["windowfocus", "--sync", &w])
            .unwrap_or_else(|e| panic!("focusing window {w}: {e}"));
        self.xdotool(&["key", "--clearmodifiers", keys])
            .unwrap_or_else(|e| panic!("typing {keys}: {e}"));
    }

    /// Text typed into the window whose title starts so.
    #[track_caller]
    pub fn type_to_window(&self, title: &str, text: &str) {
        let w = self.window_by_title(title);
        self.xdotool(&["windowfocus", "--sync", &w])
            .unwrap_or_else(|e| panic!("focusing window {w}: {e}"));
        self.xdotool(&["type", "--delay", "20", text])
            .unwrap_or_else(|e| panic!("typing {text:?}: {e}"));
    }

    /// The screen as a PNG under target/gui-screenshots, for people to
    /// look at (the README and the metainfo take theirs from there).
    pub fn screenshot(&self, name: &str) -> PathBuf {
        screenshot(self.display, None, name)
    }

    /// `pid`'s window alone, without the rest of the screen.
    pub fn screenshot_of(&self, pid: i32, name: &str) -> PathBuf {
        let id = self.window_of(pid);
        screenshot(self.display, Some(&id), name)
    }

    /// One window, by its title: dialogs have an alpha channel, which a
    /// screenshot of the whole screen (no compositor) leaves out.
    pub fn screenshot_window(&self, title: &str, name: &str) -> PathBuf {
        let id = wait_until(&format!("a window titled {title:?}"), DEADLINE, || {
            let out = self
                .xdotool(&["search", "--onlyvisible", "--name", title])
                .ok()?;
            out.lines().next().map(str::to_string)
        });
        screenshot(self.display, Some(&id), name)
    }
}

/// Display `display` (or one window of it) as target/gui-screenshots/NAME.png.
pub fn screenshot(display: u32, window: Option<&str>, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/gui-screenshots");
    fs::create_dir_all(&dir).expect("making target/gui-screenshots");
    let png = dir.join(format!("{name}.png"));
    let target = match window {
        Some(id) => ["-id", id],
        None => ["-root", "-silent"],
    };
    let xwd = Command::new("xwd")
        .args(target)
        .args(["-display", &format!(":{display}")])
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

/// How bright a PNG is at (x, y), from 0 (black) to 1 (white).
pub fn brightness(png: &Path, x: u32, y: u32) -> f64 {
    let out = Command::new("convert")
        .arg(png)
        .args(["-colorspace", "Gray", "-format"])
        .arg(format!("%[fx:p{{{x},{y}}}]"))
        .arg("info:")
        .output()
        .expect("running convert");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("convert said {text:?} for the pixel at {x},{y} of {png:?}"))
}

/// hiber-gtk as the desktop's user, with the given system bus.
pub fn start_app(desktop: &Desktop, system_bus: &str, log: &Path) -> Started {
    let app = desktop.app_binary();
    let mut cmd = desktop.command(&[app.to_str().expect("a UTF-8 path")], Some(log));
    cmd.env("DBUS_SYSTEM_BUS_ADDRESS", system_bus)
        .env("HIBER_GTK_LOG", "debug");
    Started::spawn("hiber-gtk", &mut cmd)
}

/// The app's log, for assertion messages.
pub fn log_text(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_default()
}

/// Memory that does not compress or elide (random bytes, every page
/// touched), held by a process of the session until it ends. SIGUSR1 makes
/// it write the SHA-256 of its memory beside its ready file.
const HOG: &str = r#"
import hashlib, os, signal, sys
n = int(sys.argv[2]) << 20
hog = bytearray(n)
view = memoryview(hog)
step = 16 << 20
for i in range(0, n, step):
    view[i:i + step] = os.urandom(min(step, n - i))
def digest(*_):
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(hashlib.sha256(hog).hexdigest() + "\n")
    os.rename(sys.argv[1] + ".tmp", sys.argv[1] + ".sum")
signal.signal(signal.SIGUSR1, digest)
open(sys.argv[1], "w").write("ready\n")
while True:
    signal.pause()
"#;

/// A memory hog in a desktop's session.
#[derive(Debug)]
pub struct Hog {
    pub pid: i32,
    pub mib: u64,
    ready: PathBuf,
}

impl Hog {
    /// `mib` MiB held by a new process of `desktop`'s session, once filled.
    pub fn start(desktop: &mut Desktop, mib: u64) -> Self {
        let ready = desktop
            .user
            .dir()
            .join(format!("hog-{mib}-{}", desktop.procs.len()));
        let ready_arg = ready.to_str().expect("a UTF-8 path").to_string();
        let pid = desktop.spawn(
            "a memory hog",
            &["/usr/bin/python3", "-c", HOG, &ready_arg, &mib.to_string()],
            None,
        );
        wait_until(&format!("the hog's {mib} MiB"), DEADLINE, || {
            fs::read_to_string(&ready)
                .ok()?
                .contains("ready")
                .then_some(())
        });
        Self { pid, mib, ready }
    }

    /// The SHA-256 of its memory, as it computes it now.
    pub fn digest(&self) -> String {
        let sum = self.ready.with_extension("sum");
        let _ = fs::remove_file(&sum);
        // SAFETY: kill(2) on a process this test started.
        let sent = unsafe { libc::kill(self.pid, libc::SIGUSR1) };
        assert_eq!(sent, 0, "signalling the hog (pid {})", self.pid);
        wait_until(
            &format!("the digest of the hog's {} MiB", self.mib),
            DEADLINE,
            || {
                let s = fs::read_to_string(&sum).ok()?;
                s.ends_with('\n').then(|| s.trim().to_string())
            },
        )
    }

    /// Running, neither stopped nor frozen nor gone.
    pub fn running(&self) -> bool {
        process_state(self.pid).is_some_and(|s| !matches!(s, 'T' | 't' | 'Z' | 'X'))
    }
}

/// A process's state letter from /proc/PID/stat.
pub fn process_state(pid: i32) -> Option<char> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rfind(')').and_then(|i| s[i + 2..].chars().next())
}

/// The snapshots hiberd lists to root (everyone's), as gdbus prints them.
pub fn listed(bus: &SystemBus) -> String {
    let out = Command::new("gdbus")
        .args(["call", "--system", "--dest", "org.hiber.Hiber1"])
        .args(["--object-path", "/org/hiber/Hiber1"])
        .args(["--method", "org.hiber.Hiber1.Manager.ListSnapshots"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .expect("running gdbus");
    assert!(
        out.status.success(),
        "ListSnapshots: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
