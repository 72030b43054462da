//! After a restore: the files restored programs held inside the FUSE
//! mounts of session services left out of the set (see [`crate::services`])
//! are opened again once their services are back.
//!
//! The restore leaves a dead stand-in at each such fd. Here, per mount,
//! the service is brought back the way the desktop brings it (D-Bus
//! activation of its name on the restored session bus, asked as the
//! holder's user), its mount is awaited in the holder's mount table, the
//! path is probed as the holder (a FUSE open cannot be interrupted once
//! the holder runs it), and the engine reopens the file inside the holder
//! at its offset. Every step has a deadline; a file that cannot come back
//! keeps its stand-in (reads fail with EBADF, as after a device unplug)
//! and is reported with the reason.

use hiber_core::files::service_file::{self, Pending};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long the bus has to start the service.
const ACTIVATION_TIMEOUT: Duration = Duration::from_secs(25);
/// How long the service has to mount once it is on the bus.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one path of the mount has to answer the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What became of one fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reopened {
    /// The holder, as the caller sees it.
    pub pid: i32,
    pub fd: i32,
    pub path: PathBuf,
    /// Why it keeps its stand-in; None when it was reopened.
    pub problem: Option<String>,
}

/// Bring back the services of `pending` and reopen their files; `live`
/// maps an image pid to the restored process's pid.
pub fn reopen_all(pending: &[Pending], live: &dyn Fn(i32) -> Option<i32>) -> Vec<Reopened> {
    let mut by_mount: BTreeMap<&Path, Vec<&Pending>> = BTreeMap::new();
    for p in pending {
        by_mount.entry(&p.file.mount.path).or_default().push(p);
    }
    let mut out = Vec::new();
    for (mount, files) in by_mount {
        let holders: Vec<(i32, &Pending)> = files
            .iter()
            .filter_map(|p| live(p.pid).map(|pid| (pid, *p)))
            .collect();
        let back = match holders.first() {
            Some(&(pid, p)) => bring_back(mount, p.file.mount.bus_name.as_deref(), pid),
            None => Err("no holder of its files runs".to_string()),
        };
        for p in &files {
            let pid = live(p.pid).unwrap_or(p.pid);
            let problem = match &back {
                Err(why) => Some(why.clone()),
                Ok(()) => reopen_one(pid, p).err(),
            };
            match &problem {
                None => {
                    info!(pid, fd = p.fd, path = %p.file.path.display(), "service file reopened")
                }
                Some(why) => {
                    warn!(pid, fd = p.fd, path = %p.file.path.display(), %why, "service file keeps its stand-in")
                }
            }
            out.push(Reopened {
                pid,
                fd: p.fd,
                path: p.file.path.clone(),
                problem,
            });
        }
    }
    out
}

/// The holder's identity and session environment.
struct Holder {
    uid: u32,
    gid: u32,
    env: Vec<(String, String)>,
}

impl Holder {
    fn of(pid: i32) -> Result<Self, String> {
        let status = hiber_core::procfs::ProcDir::new(pid)
            .status()
            .map_err(|e| format!("reading the holder's status: {e}"))?;
        let creds = hiber_core::creds::Creds::from_status(&status);
        let environ = std::fs::read(format!("/proc/{pid}/environ"))
            .map_err(|e| format!("reading pid {pid}'s environment: {e}"))?;
        let wanted = [
            "DBUS_SESSION_BUS_ADDRESS",
            "XDG_RUNTIME_DIR",
            "HOME",
            "PATH",
        ];
        let env = environ
            .split(|&b| b == 0)
            .filter_map(|kv| {
                let kv = std::str::from_utf8(kv).ok()?;
                let (k, v) = kv.split_once('=')?;
                wanted.contains(&k).then(|| (k.to_string(), v.to_string()))
            })
            .collect();
        Ok(Self {
            uid: creds.uid[1],
            gid: creds.gid[1],
            env,
        })
    }

    /// `program args` as the holder's user, with its session environment
    /// and nothing of ours.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(program);
        c.args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .uid(self.uid)
            .gid(self.gid)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn bus(&self) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == "DBUS_SESSION_BUS_ADDRESS")
            .map(|(_, v)| v.as_str())
    }
}

/// Run `c` to its end within `timeout` (killed past it); its error output
/// on failure.
fn run_within(mut c: Command, what: &str, timeout: Duration) -> Result<(), String> {
    let mut child = c.spawn().map_err(|e| format!("starting {what}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("{what} failed ({status}): {}", err.trim()));
            }
            Ok(None) if Instant::now() > deadline => {
                // Our own child, by its pid.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} did not end within {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    }
}

/// Whether a FUSE file system is mounted at `mount` in `pid`'s mount table.
fn mounted_for(pid: i32, mount: &Path) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .map(|t| {
            crate::services::parse_fuse_mounts(&t)
                .iter()
                .any(|m| m.mount_point == mount)
        })
        .unwrap_or(false)
}

/// The service of `mount` running and mounted again, as `holder` sees it.
fn bring_back(mount: &Path, bus_name: Option<&str>, holder: i32) -> Result<(), String> {
    if mounted_for(holder, mount) {
        return Ok(());
    }
    let Some(name) = bus_name else {
        return Err(format!(
            "nothing starts the server of {} again (no bus name)",
            mount.display()
        ));
    };
    let h = Holder::of(holder)?;
    let Some(bus) = h.bus() else {
        return Err(format!(
            "pid {holder} has no DBUS_SESSION_BUS_ADDRESS to activate {name} on"
        ));
    };
    info!(%name, bus, mount = %mount.display(), "activating a session service for its files");
    let timeout_ms = (ACTIVATION_TIMEOUT.as_millis() as u64).saturating_sub(1000);
    let activate = h.command(
        "dbus-send",
        &[
            &format!("--bus={bus}"),
            "--print-reply",
            &format!("--reply-timeout={timeout_ms}"),
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.StartServiceByName",
            &format!("string:{name}"),
            "uint32:0",
        ],
    );
    run_within(
        activate,
        &format!("activating {name} on the restored session bus"),
        ACTIVATION_TIMEOUT,
    )?;
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    while !mounted_for(holder, mount) {
        if Instant::now() > deadline {
            return Err(format!(
                "{name} was activated but {} was not mounted within {} s",
                mount.display(),
                MOUNT_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Probe the path as the holder, then reopen it inside the holder.
fn reopen_one(pid: i32, p: &Pending) -> Result<(), String> {
    let h = Holder::of(pid)?;
    let path = p.file.path.to_string_lossy();
    run_within(
        h.command("/usr/bin/test", &["-e", &path]),
        &format!("looking up {path} as pid {pid}'s user"),
        PROBE_TIMEOUT,
    )
    .map_err(|e| format!("{e} (the file is not there again)"))?;
    service_file::reopen(pid, p.fd, p.cloexec, p.flags, &p.file).map_err(|e| e.to_string())
}
