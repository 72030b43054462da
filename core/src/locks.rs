//! File locks held by a process: `flock` locks, POSIX record locks
//! (`fcntl(F_SETLK)`) and open file description locks (`F_OFD_SETLK`),
//! from the fdinfo of the process's fds. Each is tied to one of the process's fds and taken
//! again by the restored process itself, on that fd.

use crate::policy::{Policy, Report, Subject};
use serde::{Deserialize, Serialize};
use std::io;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    Flock,
    Posix,
    Ofd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLock {
    pub kind: LockKind,
    /// The fd (of this process) the lock is taken again through.
    pub fd: i32,
    pub write: bool,
    /// Byte range; `end` None: to the end of the file (and beyond).
    pub start: u64,
    pub end: Option<u64>,
}

/// One lock line (the format of /proc/locks and of fdinfo's `lock:`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    kind: LockKind,
    write: bool,
    pid: i32,
    dev: (u32, u32),
    ino: u64,
    start: u64,
    end: Option<u64>,
}

fn parse(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        // "N: TYPE MODE RW PID MAJ:MIN:INO START END"; "N: -> ..." waits.
        if w.len() < 8 || w[1] == "->" {
            continue;
        }
        let kind = match w[1] {
            "FLOCK" => LockKind::Flock,
            "POSIX" => LockKind::Posix,
            "OFDLCK" => LockKind::Ofd,
            _ => continue,
        };
        let id: Vec<&str> = w[5].split(':').collect();
        let (Some(maj), Some(min), Some(ino)) = (
            id.first().and_then(|v| u32::from_str_radix(v, 16).ok()),
            id.get(1).and_then(|v| u32::from_str_radix(v, 16).ok()),
            id.get(2).and_then(|v| v.parse().ok()),
        ) else {
            continue;
        };
        out.push(Line {
            kind,
            write: w[3] == "WRITE",
            pid: w[4].parse().unwrap_or(-1),
            dev: (maj, min),
            ino,
            start: w[6].parse().unwrap_or(0),
            end: w[7].parse().ok(),
        });
    }
    out
}

/// The locks of `pid` from the `lock:` lines of its fds' fdinfo: `(fd,
/// open file index, line)`. A flock or OFD lock shows on the fds of the
/// open file that holds it, a POSIX lock on every fd of its file: each is
/// kept once, on the first fd that shows it. (fdinfo, not /proc/locks: the
/// first read of /proc/locks costs a process about 10 ms here, and fdinfo
/// says which open file holds a flock.)
pub fn checkpoint(pid: i32, lines: &[(i32, usize, String)], report: &mut Report) -> Vec<FileLock> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (fd, file, text) in lines {
        for l in parse(text) {
            // A flock taken by another process on an inherited open file
            // is that process's to take again.
            if l.kind == LockKind::Flock && l.pid != pid {
                continue;
            }
            let holder = match l.kind {
                LockKind::Posix => usize::MAX,
                LockKind::Flock | LockKind::Ofd => *file,
            };
            if !seen.insert((holder, l.kind, l.dev, l.ino, l.start, l.end)) {
                continue;
            }
            report.add(
                pid,
                Subject::Fd { fd: *fd },
                format!(
                    "{:?} {} lock",
                    l.kind,
                    if l.write { "write" } else { "read" }
                ),
                Policy::Restore,
                "taken again by the restored process",
            );
            out.push(FileLock {
                kind: l.kind,
                fd: *fd,
                write: l.write,
                start: l.start,
                end: l.end,
            });
        }
    }
    out
}

/// Take `lock` again; runs in the restored process before its swap.
pub fn restore(lock: &FileLock) -> io::Result<()> {
    match lock.kind {
        LockKind::Flock => {
            let op = if lock.write {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            };
            crate::sys::lock::flock(lock.fd, op | libc::LOCK_NB)
        }
        LockKind::Posix | LockKind::Ofd => {
            let kind = if lock.write {
                libc::F_WRLCK
            } else {
                libc::F_RDLCK
            };
            let len = lock.end.map_or(0, |e| (e - lock.start + 1) as i64);
            let cmd = if lock.kind == LockKind::Posix {
                libc::F_SETLK
            } else {
                libc::F_OFD_SETLK
            };
            crate::sys::lock::set_record_lock(lock.fd, cmd, kind, lock.start as i64, len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_locks() {
        let text = "1: POSIX  ADVISORY  WRITE 24110 fe:00:10010781 5 14\n\
                    2: FLOCK  ADVISORY  READ 24110 fe:00:10010780 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 99 fe:00:10010780 0 EOF\n\
                    3: OFDLCK ADVISORY  WRITE -1 08:01:77 0 EOF\n";
        let l = parse(text);
        assert_eq!(l.len(), 3);
        assert_eq!(
            (l[0].kind, l[0].write, l[0].start, l[0].end),
            (LockKind::Posix, true, 5, Some(14))
        );
        assert_eq!(
            (l[1].kind, l[1].write, l[1].end, l[1].dev),
            (LockKind::Flock, false, None, (0xfe, 0))
        );
        assert_eq!((l[2].kind, l[2].pid, l[2].ino), (LockKind::Ofd, -1, 77));
    }
}
