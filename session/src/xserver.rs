//! X servers among the processes to save: the one piece of knowledge of X
//! the Reattach rule needs, kept out of the engine. Core is told "reattach
//! the primary DRM card of these pids"
//! ([`DevicePolicies::reattach_primary_of`]); this module says which pids
//! are X servers.

use hiber_core::devices::DevicePolicies;
use hiber_core::procfs::ProcDir;
use std::collections::BTreeSet;
use std::path::Path;

/// Process names (`comm`, or the executable's file name) of X servers.
pub const X_SERVER_NAMES: &[&str] = &["Xorg", "X"];

/// Whether a process is an X server, by its `comm` or its executable's
/// file name (Debian's `/usr/lib/xorg/Xorg`).
pub fn is_x_server(comm: &str, exe: Option<&Path>) -> bool {
    let exe_name = exe.and_then(Path::file_name).and_then(|n| n.to_str());
    X_SERVER_NAMES.contains(&comm) || exe_name == Some("Xorg")
}

/// The X servers in the process trees under `roots`, leaving out the
/// trees under `prune` (the set a checkpoint of `roots` saves).
pub fn x_servers_under(roots: &[i32], prune: &[i32]) -> BTreeSet<i32> {
    let mut found = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<i32> = roots.to_vec();
    while let Some(pid) = todo.pop() {
        if prune.contains(&pid) || !seen.insert(pid) {
            continue;
        }
        let dir = ProcDir::new(pid);
        let Ok(stat) = dir.stat() else {
            continue;
        };
        if is_x_server(&stat.comm, dir.exe().ok().as_deref()) {
            found.insert(pid);
        }
        todo.extend(dir.children().unwrap_or_default());
    }
    found
}

/// `devices` with the automatic Reattach rule for the X servers a
/// checkpoint of `roots` (less `prune`) saves.
pub fn reattaching_x_servers(
    devices: &DevicePolicies,
    roots: &[i32],
    prune: &[i32],
) -> DevicePolicies {
    DevicePolicies {
        reattach_primary_of: x_servers_under(roots, prune),
        ..devices.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_servers_by_comm_or_exe() {
        assert!(is_x_server("Xorg", None));
        assert!(is_x_server("X", Some(Path::new("/usr/bin/python3.11"))));
        assert!(is_x_server(
            "Xorg.wrap",
            Some(Path::new("/usr/lib/xorg/Xorg"))
        ));
        assert!(!is_x_server("Xvfb", Some(Path::new("/usr/bin/Xvfb"))));
        assert!(!is_x_server(
            "python3",
            Some(Path::new("/usr/bin/python3.11"))
        ));
    }

    /// A child of this test named `Xorg` (a link to sleep: the kernel
    /// names a process after the file it executed) is found under this
    /// process, and not when its tree is pruned.
    #[test]
    fn found_in_the_tree_under_the_roots() {
        let t = tempfile::tempdir().unwrap();
        let xorg = t.path().join("Xorg");
        std::os::unix::fs::symlink("/bin/sleep", &xorg).unwrap();
        // spawn returns once the exec has happened.
        let mut child = std::process::Command::new(&xorg).arg("60").spawn().unwrap();
        let pid = child.id() as i32;
        let me = std::process::id() as i32;
        let found = x_servers_under(&[me], &[]);
        let pruned = x_servers_under(&[me], &[pid]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.contains(&pid), "{found:?} lacks {pid}");
        assert!(!pruned.contains(&pid), "{pruned:?}");
        assert!(!found.contains(&me), "the test itself is no X server");
    }
}
