//! The Debian packages, installed on this machine for real: build them
//! (`packaging/build-deb.sh --dev`: the debug binaries the workspace build
//! made, packaged as a release would be), install them with apt, call
//! hiberd through the installed activation file and bus policy on the
//! system bus (the running one, or the distribution's `dbus-daemon
//! --system` started here and ended by pid), check the app's menu entry,
//! then remove (hiberd stopped by the prerm, snapshots kept) and purge
//! (the store gone) and check that no file the packages installed is left.
//!
//! A guard purges the packages (and ends the bus this test started) even
//! when the test fails, so the installed activation file, bus policy and
//! polkit actions never outlive it. While they are installed, the other
//! tests' private buses (tests/private-bus.sh) shadow them with their own
//! copies of the same names; `/etc/hiber/devices.toml` is only comments,
//! so the built-in device table holds for every other test all the same.
//! This is a test binary of its own: cargo runs test binaries one after
//! the other, so no other test of the suite runs while they are installed.

mod common;

use common::{repo, wait_until};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

const PACKAGES: [&str; 2] = ["hiber", "hiber-gtk"];
const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";
const STORE: &str = "/var/lib/hiber";
const HIBERD: &str = "/usr/libexec/hiberd";
const DESKTOP: &str = "/usr/share/applications/org.hiber.Hiber.desktop";
const PATH_UNIT: &str = "/lib/systemd/system/hiberd-sleep.path";
/// Where enabling the path unit links it (`WantedBy=paths.target`).
const PATH_UNIT_WANTED: &str = "/etc/systemd/system/paths.target.wants/hiberd-sleep.path";

#[track_caller]
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn apt(args: &[&str]) -> Command {
    let mut c = Command::new("apt-get");
    c.args(["-y", "-q", "-o", "DPkg::Lock::Timeout=120"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive");
    c
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", package])
        .output()
        .is_ok_and(|o| o.stdout != b"not-installed" && !o.stdout.is_empty())
}

/// The files (not directories) a .deb installs, as absolute paths.
fn files_of(deb: &Path) -> BTreeSet<PathBuf> {
    let out = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    let list: BTreeSet<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| PathBuf::from(p.trim_start_matches('.')))
        .collect();
    assert!(!list.is_empty(), "{} lists no files", deb.display());
    list
}

/// The one .deb of `package` in `dir`.
fn deb_in(dir: &Path, package: &str) -> PathBuf {
    let prefix = format!("{package}_");
    let debs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "one {package}_*.deb in {}: {debs:?}",
        dir.display()
    );
    debs.into_iter().next().expect("one deb")
}

/// The system bus: the machine's when one answers, else the
/// distribution's `dbus-daemon --system` (its own system.conf, its setuid
/// activation helper), started here and ended by pid on drop.
#[derive(Debug)]
struct SystemBus {
    started: Option<Child>,
}

impl SystemBus {
    fn get() -> SystemBus {
        if UnixStream::connect(SYSTEM_BUS).is_ok() {
            eprintln!("using the running system bus at {SYSTEM_BUS}");
            return SystemBus { started: None };
        }
        fs::create_dir_all("/run/dbus").expect("creating /run/dbus");
        let child = Command::new("dbus-daemon")
            .args(["--system", "--nofork", "--nopidfile"])
            .stdin(Stdio::null())
            .spawn()
            .expect("starting dbus-daemon --system");
        let bus = SystemBus {
            started: Some(child),
        };
        wait_until("the started system bus to accept connections", || {
            UnixStream::connect(SYSTEM_BUS).ok()
        });
        bus
    }
}

impl SystemBus {
    /// The pids of every connection to the bus but ours: the services it
    /// activated (hiberd; polkitd and packagekitd, which apt's PackageKit
    /// hook wakes), and clients.
    fn peers() -> Vec<i32> {
        let me = std::process::id() as i32;
        let Ok(out) = gdbus_call(&[
            "--dest",
            "org.freedesktop.DBus",
            "--object-path",
            "/org/freedesktop/DBus",
            "--method",
            "org.freedesktop.DBus.ListNames",
        ])
        .output() else {
            return Vec::new();
        };
        let names = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut pids: Vec<i32> = names
            .split('\'')
            .filter(|n| n.starts_with(':'))
            .filter_map(pid_of)
            .filter(|&p| p != me && p > 1)
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

impl Drop for SystemBus {
    fn drop(&mut self) {
        let Some(child) = self.started.as_mut() else {
            return;
        };
        // What our bus started goes with it: SIGTERM to each service it
        // activated (their parent is gone: pid 1 reaps them), then the bus.
        let peers = SystemBus::peers();
        for &p in &peers {
            // SAFETY: kill on a pid the bus named as its peer just now.
            unsafe { libc::kill(p, libc::SIGTERM) };
        }
        // SAFETY: kill on the pid of our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
        // dbus-daemon leaves its socket file; nothing listens on it now.
        let _ = fs::remove_file(SYSTEM_BUS);
        for p in peers {
            wait_until(&format!("bus peer {p} to end"), || {
                matches!(common::state(p), None | Some('Z')).then_some(())
            });
        }
    }
}

/// Purges the packages on drop, whatever happened, and ends a hiberd the
/// test saw that is still running then.
#[derive(Debug, Default)]
struct Purge {
    hiberd: Option<i32>,
}

impl Drop for Purge {
    fn drop(&mut self) {
        let out = Command::new("dpkg")
            .args(["--purge", "hiber-gtk", "hiber"])
            .output();
        if let Ok(o) = &out {
            if !o.status.success() {
                eprintln!("cleanup: dpkg --purge: {}", text(o));
            }
        }
        if let Some(pid) = self.hiberd.filter(|&p| is_hiberd(p)) {
            // SAFETY: kill on a pid checked just now to run our hiberd.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn is_hiberd(pid: i32) -> bool {
    fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == Path::new(HIBERD))
}

fn gdbus_call(dest_method: &[&str]) -> Command {
    let mut c = Command::new("gdbus");
    c.args(["call", "--system", "--timeout", "60"])
        .args(dest_method);
    c
}

/// The pid owning org.hiber.Hiber1 on the bus.
fn owner_pid() -> Option<i32> {
    pid_of("org.hiber.Hiber1")
}

/// The pid of the connection owning `name` on the bus.
fn pid_of(name: &str) -> Option<i32> {
    let out = gdbus_call(&[
        "--dest",
        "org.freedesktop.DBus",
        "--object-path",
        "/org/freedesktop/DBus",
        "--method",
        "org.freedesktop.DBus.GetConnectionUnixProcessID",
        name,
    ])
    .output()
    .ok()?;
    // "(uint32 1234,)"
    let s = String::from_utf8_lossy(&out.stdout);
    s.trim()
        .trim_start_matches("(uint32 ")
        .trim_end_matches(",)")
        .parse()
        .ok()
}

fn list_snapshots_as(user: Option<&str>) -> Output {
    let call = [
        "--dest",
        "org.hiber.Hiber1",
        "--object-path",
        "/org/hiber/Hiber1",
        "--method",
        "org.hiber.Hiber1.Manager.ListSnapshots",
    ];
    match user {
        None => gdbus_call(&call).output().expect("running gdbus"),
        Some(id) => Command::new("setpriv")
            .args(["--reuid", id, "--regid", id, "--clear-groups", "gdbus"])
            .args(["call", "--system", "--timeout", "60"])
            .args(call)
            .output()
            .expect("running setpriv gdbus"),
    }
}

fn left_over(files: &BTreeSet<PathBuf>) -> Vec<&PathBuf> {
    files
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .collect()
}

#[test]
fn packages_install_activate_remove_and_purge() {
    // SAFETY: geteuid has no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "installing packages needs root");
    for p in PACKAGES {
        assert!(
            !installed(p),
            "{p} is installed on this machine: this test installs and purges it, remove it first"
        );
    }
    assert!(
        !Path::new(STORE).exists(),
        "{STORE} exists: this test purges the hiber package, which deletes it"
    );

    let t = Instant::now();
    run(Command::new("bash")
        .arg(repo().join("packaging/build-deb.sh"))
        .arg("--dev"));
    eprintln!("build-deb.sh --dev: {:.1} s", t.elapsed().as_secs_f64());
    let dir = repo().join("target/debian/dev");
    let debs = PACKAGES.map(|p| deb_in(&dir, p));
    let files: BTreeSet<PathBuf> = debs.iter().flat_map(|d| files_of(d)).collect();
    for f in [
        "/usr/bin/hiber",
        HIBERD,
        "/usr/bin/hiber-gtk",
        "/lib/systemd/system/hiberd.service",
        PATH_UNIT,
        "/usr/share/dbus-1/system-services/org.hiber.Hiber1.service",
        "/usr/share/dbus-1/system.d/org.hiber.Hiber1.conf",
        "/usr/share/polkit-1/actions/org.hiber.Hiber1.policy",
        "/etc/hiber/devices.toml",
        DESKTOP,
        "/etc/xdg/autostart/org.hiber.Hiber-offer.desktop",
        "/usr/share/metainfo/org.hiber.Hiber.metainfo.xml",
        "/usr/share/icons/hicolor/scalable/apps/org.hiber.Hiber.svg",
        "/usr/share/icons/hicolor/symbolic/apps/org.hiber.Hiber-symbolic.svg",
    ] {
        assert!(files.contains(Path::new(f)), "the packages hold {f}");
    }

    // Declared first, dropped last: the purge runs while the bus lives.
    let bus = SystemBus::get();
    let mut guard = Purge::default();

    let t = Instant::now();
    let out = run(apt(&["install", "--no-install-recommends"]).args(&debs));
    eprintln!("apt-get install: {:.1} s", t.elapsed().as_secs_f64());
    for p in PACKAGES {
        assert!(installed(p), "{p} installed:\n{}", text(&out));
    }
    let missing: Vec<_> = files.iter().filter(|p| !p.exists()).collect();
    assert!(missing.is_empty(), "installed files missing: {missing:?}");
    let conffiles = fs::read_to_string("/var/lib/dpkg/info/hiber.conffiles")
        .expect("reading hiber's conffiles");
    assert_eq!(conffiles.trim(), "/etc/hiber/devices.toml");
    let conffiles = fs::read_to_string("/var/lib/dpkg/info/hiber-gtk.conffiles")
        .expect("reading hiber-gtk's conffiles");
    assert_eq!(
        conffiles.trim(),
        "/etc/xdg/autostart/org.hiber.Hiber-offer.desktop"
    );

    // The units as systemd reads them (systemd-analyze works without
    // systemd as pid 1), and hiberd-sleep.path enabled: it starts hiberd at
    // boot while someone saves before sleep.
    run(Command::new("systemd-analyze").args([
        "verify",
        "--man=no",
        "/lib/systemd/system/hiberd.service",
        PATH_UNIT,
    ]));
    assert_eq!(
        fs::read_link(PATH_UNIT_WANTED).ok(),
        Some(PathBuf::from(PATH_UNIT)),
        "{PATH_UNIT_WANTED} after install"
    );

    // The app in the menu: a valid entry that GIO lists and would show.
    run(Command::new("desktop-file-validate").arg(DESKTOP));
    // Debian's python3, with python3-gi (not one first on PATH).
    let shown = run(Command::new("/usr/bin/python3").args([
        "-c",
        "import gi; gi.require_version('Gio', '2.0'); from gi.repository import Gio\n\
         a = [a for a in Gio.AppInfo.get_all() if a.get_id() == 'org.hiber.Hiber.desktop']\n\
         print(len(a), a[0].should_show() if a else None, a[0].get_executable() if a else None)",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout).trim(),
        "1 True hiber-gtk",
        "the menu lists org.hiber.Hiber.desktop, shown, running hiber-gtk"
    );

    // hiberd through the installed activation file: root, then a user
    // the installed bus policy must let through. The bus reloads its
    // policy and activation files when it sees them change (inotify, or
    // the dbus package's trigger), some time after apt returns: until then
    // the call is refused (AccessDenied) or finds no such name.
    let t = Instant::now();
    let out = wait_until(
        "the bus to load the installed policy and activation file",
        || {
            let out = gdbus_call(&[
                "--dest",
                "org.hiber.Hiber1",
                "--object-path",
                "/org/hiber/Hiber1",
                "--method",
                "org.freedesktop.DBus.Properties.Get",
                "org.hiber.Hiber1.Manager",
                "Version",
            ])
            .output()
            .expect("running gdbus");
            let said = text(&out);
            let early = said.contains("AccessDenied") || said.contains("ServiceUnknown");
            (out.status.success() || !early).then_some(out)
        },
    );
    assert!(out.status.success(), "Manager.Version: {}", text(&out));
    eprintln!(
        "first call (activation): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("(<'{}'>,)", env!("CARGO_PKG_VERSION"))
    );
    let pid = owner_pid().expect("the owner of org.hiber.Hiber1");
    guard.hiberd = Some(pid);
    assert!(is_hiberd(pid), "pid {pid} owning the name runs {HIBERD}");
    let out = list_snapshots_as(None);
    assert_eq!(text(&out).trim(), "(@ao [],)", "root's ListSnapshots");
    let out = list_snapshots_as(Some("65534"));
    assert_eq!(text(&out).trim(), "(@ao [],)", "nobody's ListSnapshots");
    let store = fs::metadata(STORE).expect("hiberd made its store");
    assert_eq!(store.permissions().mode() & 0o7777, 0o700, "{STORE} mode");

    // remove: hiberd stopped, by the pid the bus gave; snapshots kept.
    let kept = Path::new(STORE).join("0");
    fs::create_dir_all(&kept).expect("a stand-in for root's snapshots");
    let out = run(&mut apt(&["remove", "hiber-gtk", "hiber"]));
    let said = text(&out);
    assert!(
        said.contains(&format!("hiber: stopping hiberd (pid {pid})")),
        "the prerm stopped hiberd {pid}:\n{said}"
    );
    assert!(!is_hiberd(pid), "hiberd {pid} ended by the prerm");
    assert!(kept.is_dir(), "apt remove left {STORE} alone");
    assert!(
        said.contains("snapshots in /var/lib/hiber are kept"),
        "the postrm said so:\n{said}"
    );
    let left = left_over(&files);
    assert_eq!(
        left,
        [
            Path::new("/etc/hiber/devices.toml"),
            Path::new("/etc/xdg/autostart/org.hiber.Hiber-offer.desktop")
        ],
        "after remove only the conffiles are left (the autostart entry's: an administrator may have disabled it there)"
    );
    // Until the bus has seen the activation file go, a call fails another
    // way (the launch helper finds no file).
    wait_until("org.hiber.Hiber1 to be unknown to the bus", || {
        let out = list_snapshots_as(None);
        assert!(
            !out.status.success(),
            "hiberd answered after remove: {}",
            text(&out)
        );
        text(&out).contains("ServiceUnknown").then_some(())
    });

    // purge: the store and the conffiles go, with a word about the store.
    let out = run(&mut apt(&["purge", "hiber-gtk", "hiber"]));
    let said = text(&out);
    assert!(
        said.contains("hiber: deleting /var/lib/hiber: the snapshots of 1 user(s)"),
        "the postrm said what it deletes:\n{said}"
    );
    assert!(!Path::new(STORE).exists(), "{STORE} gone after purge");
    assert!(
        !Path::new("/etc/hiber").exists(),
        "/etc/hiber gone after purge"
    );
    assert!(
        !Path::new("/etc/xdg/autostart/org.hiber.Hiber-offer.desktop").exists(),
        "the autostart entry gone after purge"
    );
    let left = left_over(&files);
    assert!(left.is_empty(), "files left after purge: {left:?}");
    let unit_name = Path::new(PATH_UNIT).file_name().expect("a unit name");
    let enablement: Vec<PathBuf> = [
        Path::new(PATH_UNIT_WANTED).to_path_buf(),
        Path::new("/etc/systemd/system").join(unit_name),
        Path::new("/var/lib/systemd/deb-systemd-helper-enabled").join(unit_name),
        Path::new("/var/lib/systemd/deb-systemd-helper-masked").join(unit_name),
    ]
    .into_iter()
    .filter(|p| p.symlink_metadata().is_ok())
    .collect();
    assert!(
        enablement.is_empty(),
        "the path unit's enablement left after purge: {enablement:?}"
    );
    for p in PACKAGES {
        assert!(!installed(p), "{p} purged");
    }
    drop(guard);
    drop(bus);
}
