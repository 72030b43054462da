//! A normal user's desktop session for the tests: users run Hiber on their
//! own sessions, with hiber (or hiberd) as root. Root-only tests hid
//! ownership bugs (sockets, files and directories a restore made for root).
//!
//! One account, `hiber-desk` (uid 1500), is made on first use and kept (an
//! account is part of the machine the tests need, like the packages). Each
//! [`UserSession`] has its own home and `XDG_RUNTIME_DIR`, owned by the user,
//! mode 0700, removed when it is dropped: tests running in parallel share no
//! socket (tmux, the bus, the portals) and leave nothing behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const USER_NAME: &str = "hiber-desk";
pub const USER_UID: u32 = 1500;

/// The test user's account, made once (under a lock: test binaries run in
/// parallel).
pub fn ensure_user() {
    static MADE: std::sync::Once = std::sync::Once::new();
    MADE.call_once(|| {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/lock/hiber-test-user.lock")
            .expect("opening the test user's lock");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&lock);
        // SAFETY: flock on a file we hold open; released when it closes.
        let locked = unsafe { libc::flock(fd, libc::LOCK_EX) };
        assert_eq!(locked, 0, "locking the test user's lock");
        if uid_of(USER_NAME) == Some(USER_UID) {
            return;
        }
        let uid = USER_UID.to_string();
        let out = Command::new("useradd")
            .args(["--uid", &uid, "--user-group", "--no-create-home"])
            .args(["--home-dir", "/nonexistent", "--shell", "/bin/bash"])
            .arg(USER_NAME)
            .output()
            .expect("running useradd");
        assert!(
            out.status.success(),
            "useradd {USER_NAME}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

fn uid_of(name: &str) -> Option<u32> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
    })
}

/// One session's private directories, owned by the test user.
#[derive(Debug)]
pub struct UserSession {
    dir: tempfile::TempDir,
    pub home: PathBuf,
    pub runtime: PathBuf,
}

impl Default for UserSession {
    fn default() -> Self {
        Self::new()
    }
}

impl UserSession {
    pub fn new() -> Self {
        ensure_user();
        let dir = tempfile::Builder::new()
            .prefix("hiber-user-")
            .tempdir_in("/tmp")
            .expect("temporary directory");
        let home = dir.path().join("home");
        let runtime = dir.path().join("run");
        for d in [dir.path(), &home, &runtime] {
            fs::create_dir_all(d).expect("making the user's directories");
            std::os::unix::fs::chown(d, Some(USER_UID), Some(USER_UID))
                .expect("giving the directory to the test user");
            fs::set_permissions(d, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
        }
        // The top directory must let the user through to its own two.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        Self { dir, home, runtime }
    }

    /// `args` run as the user on X display `display`, to completion, its
    /// output captured.
    pub fn run_on(&self, display: u32, args: &[&str]) -> Output {
        self.command(args, None)
            .env("DISPLAY", format!(":{display}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
    }

    /// Whether a window named `name` shows on `display`, asked by a new
    /// client of the user's.
    pub fn shows_window(&self, display: u32, name: &str) -> bool {
        let out = self.run_on(display, &["xwininfo", "-root", "-tree"]);
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains(&format!("\"{name}\""))
    }

    /// A directory for logs and files the test reads, writable by the user.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `program args...` run as the test user (its own uid, gid and groups),
    /// with the environment a login gives (HOME, USER, XDG_RUNTIME_DIR, a
    /// plain PATH), holding no fd of the test's; output to `out` (appended;
    /// nowhere when None). Add DISPLAY and the bus address with `.env`.
    pub fn command(&self, program_and_args: &[&str], out: Option<&Path>) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={USER_UID}"))
            .arg(format!("--regid={USER_UID}"))
            .arg("--init-groups")
            .args(program_and_args)
            .env_clear()
            .env("HOME", &self.home)
            .env("USER", USER_NAME)
            .env("LOGNAME", USER_NAME)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .current_dir(&self.home)
            .stdin(Stdio::null());
        match out {
            Some(log) => {
                let file = || {
                    fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(log)
                        .expect("opening the log")
                };
                let f = file();
                std::os::unix::fs::chown(log, Some(USER_UID), Some(USER_UID)).ok();
                cmd.stdout(f).stderr(file());
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        // SAFETY: close_range is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        cmd
    }
}

/// `program args...` run as the test user in a user namespace of its own
/// that maps only the user's ids (as a browser's sandbox makes one), with
/// the namespaces `unshare` options in `namespaces` add; from `/`, with a
/// bare environment and no input or output.
pub fn in_user_namespace(namespaces: &[&str], program_and_args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={USER_UID}"))
        .arg(format!("--regid={USER_UID}"))
        .arg("--init-groups")
        .args(["unshare", "--user"])
        .arg(format!("--map-user={USER_UID}"))
        .arg(format!("--map-group={USER_UID}"))
        .args(namespaces)
        .args(program_and_args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}
