//! The test users: `hiber-desk` (uid 1500, the one session/tests use) and
//! `hiber-desk2` (uid 1501, the other user of the authorization tests).
//! Accounts are made on first use and kept, like session/tests' user (an
//! account is part of the machine the tests need, like the packages).

use std::fs;
use std::process::Command;

#[derive(Debug)]
pub struct TestUser {
    pub name: &'static str,
    pub uid: u32,
}

pub const DESK: TestUser = TestUser {
    name: "hiber-desk",
    uid: 1500,
};
pub const OTHER: TestUser = TestUser {
    name: "hiber-desk2",
    uid: 1501,
};

impl TestUser {
    /// Make the account if it is missing, under the lock session/tests
    /// take too (test binaries run in parallel).
    pub fn ensure(&self) {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/lock/hiber-test-user.lock")
            .expect("opening the test users' lock");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&lock);
        // SAFETY: flock on a file we hold open; released when it closes.
        let locked = unsafe { libc::flock(fd, libc::LOCK_EX) };
        assert_eq!(locked, 0, "locking the test users' lock");
        if uid_of(self.name) == Some(self.uid) {
            return;
        }
        let uid = self.uid.to_string();
        let out = Command::new("useradd")
            .args(["--uid", &uid, "--user-group", "--no-create-home"])
            .args(["--home-dir", "/nonexistent", "--shell", "/bin/bash"])
            .arg(self.name)
            .output()
            .expect("running useradd");
        assert!(
            out.status.success(),
            "useradd {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn uid_of(name: &str) -> Option<u32> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
    })
}
