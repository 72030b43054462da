//! hiberd's test world: a private mount namespace per test in which the
//! packaged bus files are installed where the real system looks for them
//! (`packaging/dbus/*` over overlays of /usr/share/dbus-1/system-services
//! and system.d, /usr/share/polkit-1/actions, /usr/libexec and /var/lib, by
//! tests/private-bus.sh, which packaging/bench-dbus.py uses too), a real
//! system `dbus-daemon --system` on /run/dbus/system_bus_socket (the
//! distribution's system.conf, its setuid launch helper), polkitd and
//! hiberd started by bus activation only, and desktop sessions (Xvfb,
//! xclock, xeyes, an xterm whose shell counts) run by the test users.
//! Everything is torn down with the namespace: every process in it is
//! killed by pid, the overlays go with it.
//!
//! Why polkitd "did not answer at once" when started by hand on a private
//! bus: it owns `org.freedesktop.PolicyKit1` only after loading its
//! actions and rules, and a call made before that fails at once with
//! `ServiceUnknown` (nothing queues it). Started by bus activation the bus
//! holds the first call until the name is owned, and it answers within
//! milliseconds. Without logind no subject is in an active local
//! session, so `allow_active` never applies: a rules file grants the test
//! users their actions (and is rewritten to take the grant away).

#![allow(dead_code)]

pub mod users;

use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use users::TestUser;

/// tests/client.py, run by the test users.
pub const CLIENT: &str = include_str!("../client.py");

pub const DEADLINE: Duration = Duration::from_secs(60);
pub const BUS_NAME: &str = "org.hiber.Hiber1";
/// Where the packaged activation file says hiberd is.
const HIBERD_PATH: &str = "/usr/libexec/hiberd";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

pub fn hiberd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hiberd"))
}

/// Poll `f` until it gives a value, failing the test at the deadline with
/// what was waited for.
#[track_caller]
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// polkit rules granting `users` every hiberd action for their own things.
pub fn grant_rules(users: &[&TestUser]) -> String {
    let names: Vec<String> = users.iter().map(|u| format!("\"{}\"", u.name)).collect();
    format!(
        "// hiberd tests: no logind, so no subject is ever active; grant the\n\
         // test users their own actions.\n\
         polkit.addRule(function(action, subject) {{\n\
         \x20 if (action.id.indexOf(\"org.hiber.Hiber1.\") == 0 &&\n\
         \x20     action.id != \"org.hiber.Hiber1.manage-other-users\" &&\n\
         \x20     [{}].indexOf(subject.user) >= 0) {{\n\
         \x20   return polkit.Result.YES;\n\
         \x20 }}\n\
         }});\n",
        names.join(", ")
    )
}

/// One test's namespace and its system bus (at the standard address
/// there, so every program finds it as it would on a real system).
#[derive(Debug)]
pub struct Env {
    holder: Child,
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
    displays: Vec<u32>,
}

impl Env {
    /// A private system bus with the packaged files and `rules`.
    pub fn start(rules: &str) -> Env {
        users::DESK.ensure();
        users::OTHER.ensure();
        assert!(hiberd_bin().exists(), "{} is built", hiberd_bin().display());
        let dir = tempfile::Builder::new()
            .prefix("hiberd-test-")
            .tempdir_in("/tmp")
            .expect("a temporary directory");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).expect("the namespace's tmpfs");
        let rules_file = dir.path().join("rules");
        fs::write(&rules_file, rules).expect("writing the polkit rules");
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "bash"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/private-bus.sh"))
            .arg(&mnt)
            .arg(repo())
            .arg(hiberd_bin())
            .arg(&rules_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.path().join("bus.log")).expect("the bus's log"))
            .spawn()
            .expect("starting unshare");
        let out = holder.stdout.take().expect("piped");
        let mut line = String::new();
        // The address is printed once the bus listens.
        let read = BufReader::new(out).read_line(&mut line);
        let env = Env {
            holder,
            dir,
            children: Vec::new(),
            displays: Vec::new(),
        };
        assert!(
            read.is_ok() && line.starts_with("unix:path=/run/dbus/system_bus_socket"),
            "the system bus did not start: {line:?}; its log: {}",
            env.log("bus.log")
        );
        env
    }

    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn ns(&self) -> String {
        format!("--mount=/proc/{}/ns/mnt", self.holder.id())
    }

    /// A path inside the namespace, as the test (outside it) reaches it.
    pub fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root{}",
            self.holder.id(),
            path.trim_end_matches('/')
        ))
    }

    /// The namespace's mount namespace inode, to tell its processes.
    fn ns_ino(&self) -> Option<u64> {
        fs::metadata(format!("/proc/{}/ns/mnt", self.holder.id()))
            .ok()
            .map(|m| m.ino())
    }

    /// Every process in the test's namespace but the bus itself.
    pub fn processes(&self) -> Vec<i32> {
        let Some(ino) = self.ns_ino() else {
            return Vec::new();
        };
        let me = self.holder.id() as i32;
        let mut pids: Vec<i32> = fs::read_dir("/proc")
            .expect("listing /proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|&pid: &i32| pid != me)
            .filter(|pid| fs::metadata(format!("/proc/{pid}/ns/mnt")).is_ok_and(|m| m.ino() == ino))
            .collect();
        pids.sort_unstable();
        pids
    }

    /// `args` run as root inside the namespace.
    pub fn root(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(self.ns()).arg("--").args(args).stdin(Stdio::null());
        cmd
    }

    /// `args` run as `user` inside the namespace, with a login's
    /// environment and none of the test's fds.
    pub fn user(&self, user: &TestUser, home: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(self.ns())
            .arg("--")
            .arg("setpriv")
            .arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.uid))
            .arg("--init-groups")
            .args(args)
            .env_clear()
            .env("HOME", home)
            .env("USER", user.name)
            .env("LOGNAME", user.name)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .current_dir(home)
            .stdin(Stdio::null());
        // SAFETY: close_range is async-signal-safe; it closes the test's
        // fds in the child before the exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        cmd
    }

    /// A directory for `user`'s files, owned by it.
    pub fn user_dir(&self, user: &TestUser, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        fs::create_dir_all(&d).expect("the user's directory");
        std::os::unix::fs::chown(&d, Some(user.uid), Some(user.uid)).expect("chown");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
        d
    }

    /// tests/client.py run as `user`: its JSON answer.
    #[track_caller]
    pub fn client(&self, user: &TestUser, args: &[&str]) -> Value {
        let home = self.user_dir(user, &format!("home-{}", user.uid));
        // Given as text: the checkout may be root's only (a CI clone), and
        // the user could not read the file there.
        let mut argv = vec!["/usr/bin/python3", "-c", CLIENT];
        argv.extend_from_slice(args);
        let out = self
            .user(user, &home, &argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("running client.py");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "client.py {args:?} as uid {} gave no JSON ({e}, {}):\n{}\n{}\nbus log:\n{}",
                user.uid,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log("bus.log")
            )
        })
    }

    /// The client's `ok` value, failing on an error answer.
    #[track_caller]
    pub fn ok(&self, user: &TestUser, args: &[&str]) -> Value {
        let v = self.client(user, args);
        match v.get("ok") {
            Some(ok) => ok.clone(),
            None => panic!(
                "client.py {args:?} as uid {} failed: {v}\nbus log:\n{}",
                user.uid,
                self.log("bus.log")
            ),
        }
    }

    /// hiberd's pid, when it runs (not its restore helpers).
    pub fn hiberd(&self) -> Option<i32> {
        self.processes().into_iter().find(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mut args = cmdline.split(|&b| b == 0);
            args.next() == Some(HIBERD_PATH.as_bytes())
                && !cmdline.windows(17).any(|w| w == b"--restore-helper\0")
        })
    }

    /// polkitd's answer for `action` and the process `pid`, asked as root.
    pub fn pkcheck(&self, action: &str, pid: i32) -> bool {
        self.root(&[
            "pkcheck",
            "--action-id",
            action,
            "--process",
            &pid.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running pkcheck")
        .success()
    }

    /// Replace the polkit rules; polkitd reloads them on its own.
    pub fn set_rules(&self, rules: &str) {
        fs::write(
            self.inside("/etc/polkit-1/rules.d/50-hiber-tests.rules"),
            rules,
        )
        .expect("rewriting the polkit rules");
    }

    /// `user`'s store in the namespace's /var/lib/hiber: its bytes.
    pub fn store_bytes(&self, uid: u32) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = fs::read_dir(p) else { return 0 };
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
                    _ => 0,
                })
                .sum()
        }
        walk(&self.inside(&format!("/var/lib/hiber/{uid}")))
    }

    /// Start a desktop session of `user`: Xvfb, xclock, xeyes and an xterm
    /// whose shell counts into DIR/count.
    pub fn desktop(&mut self, user: &TestUser) -> Desktop {
        self.desktop_with(user, "")
    }

    /// A desktop whose xterm's shell also runs `extra` (a bash command).
    pub fn desktop_with(&mut self, user: &TestUser, extra: &str) -> Desktop {
        let display = free_display();
        self.displays.push(display);
        let dir = self.user_dir(user, &format!("desktop-{display}"));
        let mut cmd = self.user(
            user,
            &dir,
            &[
                "bash",
                "-c",
                SESSION,
                "session",
                &display.to_string(),
                dir.to_str().expect("utf-8 path"),
                extra,
            ],
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().expect("starting the session");
        let launcher = child.id() as i32;
        self.children.push(child);
        let desktop = Desktop {
            display,
            dir,
            launcher,
        };
        desktop.wait_windows(self, &["xclock", "xeyes", "xterm"]);
        desktop.wait_counting();
        desktop
    }

    pub fn reap_children(&mut self) {
        for c in &mut self.children {
            let _ = c.try_wait();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Everything in the namespace, by pid, then the bus.
        let until = Instant::now() + DEADLINE;
        loop {
            let left: Vec<i32> = self
                .processes()
                .into_iter()
                .filter(|&p| !zombie(p))
                .collect();
            if left.is_empty() || Instant::now() > until {
                break;
            }
            for pid in left {
                // SAFETY: kill by pid of a process in this test's own
                // namespace (all of them are the test's).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            for c in &mut self.children {
                let _ = c.try_wait();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        for d in &self.displays {
            let _ = fs::remove_file(format!("/tmp/.X11-unix/X{d}"));
            let _ = fs::remove_file(format!("/tmp/.X{d}-lock"));
        }
    }
}

fn zombie(pid: i32) -> bool {
    state(pid).is_none_or(|s| s == 'Z' || s == 'X')
}

/// State letter from /proc/PID/stat, None when the pid is free.
pub fn state(pid: i32) -> Option<char> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].chars().next()
}

/// Parent pid from /proc/PID/stat, None when the pid is free.
pub fn status_ppid(pid: i32) -> Option<i32> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A display number no X server uses, different for each call in this
/// test binary.
pub fn free_display() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(400);
    loop {
        let d = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(d < 700, "no free X display number");
        if !Path::new(&format!("/tmp/.X11-unix/X{d}")).exists()
            && !Path::new(&format!("/tmp/.X{d}-lock")).exists()
            && hiber_session::discover::x_server_of(d)
                .expect("listing X servers")
                .is_none()
        {
            return d;
        }
    }
}

/// A small session: Xvfb, xclock, xeyes, and an xterm whose shell counts
/// into DIR/count and runs EXTRA. The launching bash stays outside the
/// session.
const SESSION: &str = r#"
D=$1; DIR=$2; export EXTRA=$3
Xvfb ":$D" -screen 0 640x480x24 -nolisten tcp -noreset > "$DIR/xvfb.log" 2>&1 &
# Not the socket file: it appears before Xvfb listens.
until xwininfo -root -display ":$D" > /dev/null 2>&1; do sleep 0.05; done
export DISPLAY=":$D" COUNT="$DIR/count"
xclock -update 1 -geometry 100x100+0+0 &
xeyes -geometry 100x100+200+0 &
xterm -geometry 60x10+0+200 -e bash --norc --noprofile -c '
    (n=0; while :; do n=$((n+1)); echo $n > "$COUNT"; sleep 0.2; done) &
    eval "$EXTRA"
    exec bash --norc --noprofile -i' &
wait
"#;

#[derive(Debug)]
pub struct Desktop {
    pub display: u32,
    pub dir: PathBuf,
    pub launcher: i32,
}

impl Desktop {
    pub fn name(&self) -> String {
        format!(":{}", self.display)
    }

    /// The named windows of the display, as xwininfo (run by root in the
    /// namespace) sees them.
    pub fn windows(&self, env: &Env) -> Vec<String> {
        let out = env
            .root(&["xwininfo", "-root", "-tree", "-display", &self.name()])
            .stderr(Stdio::null())
            .output()
            .expect("running xwininfo");
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains('"') && !l.contains("has no name"))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .collect();
        v.sort();
        v
    }

    #[track_caller]
    pub fn wait_windows(&self, env: &Env, names: &[&str]) -> Vec<String> {
        wait_until(&format!("windows {names:?} on {}", self.name()), || {
            let w = self.windows(env);
            names
                .iter()
                .all(|n| w.iter().any(|l| l.contains(&format!("\"{n}\""))))
                .then_some(w)
        })
    }

    pub fn count(&self) -> u64 {
        fs::read_to_string(self.dir.join("count"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The shell counts on past what it had counted when asked.
    #[track_caller]
    pub fn wait_counting(&self) {
        let from = self.count();
        wait_until(
            &format!("the shell of {} to count past {from}", self.name()),
            || (self.count() > from + 1).then_some(()),
        );
    }
}
