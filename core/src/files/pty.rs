//! Pseudo-terminals: master (`/dev/ptmx`) and slave (`/dev/pts/N`) ends,
//! with their termios, window size, packet mode and lock, and the session
//! and foreground process group of the terminal.
//!
//! A tty's queues cannot be read without consuming them, and output cannot
//! be put back, so a pty with unread bytes in either direction is refused;
//! an idle terminal (a shell at its prompt, a program waiting for a key) has
//! none. At restore the pair is a fresh pty (its number may differ); the
//! session leader takes it as controlling terminal before forking, so every
//! process of the session has it, and sets the foreground group once every
//! group exists (`restore::node`).

use super::{queued_bytes, FileError, FileKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The unix98 pty slave majors (136..=143).
pub fn is_slave_major(major: u32) -> bool {
    (136..=143).contains(&major)
}

/// The pty number of a terminal device as /proc/PID/stat's `tty_nr`
/// encodes it (major in bits 8..20, minor in bits 0..8 and 20..32).
pub fn pty_of_tty_nr(tty_nr: i32) -> Option<u32> {
    let major = ((tty_nr >> 8) & 0xfff) as u32;
    let minor = ((tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00)) as u32;
    is_slave_major(major).then(|| (major - 136) * 256 + minor)
}

pub fn is_master(major: u32, minor: u32) -> bool {
    major == 5 && minor == 2
}

const TIOCGPTN: libc::c_ulong = 0x8004_5430;
const TIOCSPTLCK: libc::c_ulong = 0x4004_5431;
const TIOCGPKT: libc::c_ulong = 0x8004_5438;
const TIOCGPTLCK: libc::c_ulong = 0x8004_5439;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtyEnd {
    /// The pty's number at checkpoint (`/dev/pts/N`); pairs ends.
    pub index: u32,
    pub master: bool,
    /// `struct termios` of this end, raw.
    #[serde(with = "hex::serde")]
    pub termios: Vec<u8>,
    /// rows, columns, x pixels, y pixels.
    pub winsize: [u16; 4],
    pub packet_mode: bool,
    pub locked: bool,
    /// The terminal's session (its leader's pid) and foreground group; 0: none.
    pub session: i32,
    pub foreground: i32,
    /// A slave whose master is outside the set: the terminal the programs
    /// were started from. Restored as the terminal `hiber restore` runs in.
    #[serde(default)]
    pub external: bool,
}

fn ioctl_int(fd: RawFd, req: libc::c_ulong) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: these requests write one int to a valid pointer.
    if unsafe { libc::ioctl(fd, req, &mut v) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

fn termios_of(fd: RawFd) -> io::Result<Vec<u8>> {
    // SAFETY: termios is plain data; TCGETS fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: TCGETS writes a struct termios to a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TCGETS, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: reading the bytes of a plain-data struct.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&t as *const libc::termios).cast::<u8>(),
            std::mem::size_of::<libc::termios>(),
        )
    };
    Ok(bytes.to_vec())
}

fn winsize_of(fd: RawFd) -> io::Result<[u16; 4]> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a struct winsize to a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok([w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel])
}

/// Classify one pty end (`held` is our copy of the program's fd).
pub(super) fn checkpoint(
    held: &OwnedFd,
    master: bool,
    slave_index: Option<u32>,
) -> Result<FileKind, String> {
    let fd = held.as_raw_fd();
    let e = |what: &'static str| move |err: io::Error| format!("{what}: {err}");
    let index = match slave_index {
        Some(i) => i,
        None => ioctl_int(fd, TIOCGPTN).map_err(e("reading the pty number"))? as u32,
    };
    let queued = queued_bytes(fd).map_err(e("reading the pty queue"))?;
    if queued > 0 {
        return Err(format!(
            "pty {index} {} has {queued} unread bytes (tty queues cannot be saved yet)",
            if master { "master" } else { "slave" }
        ));
    }
    let (session, foreground) = if master {
        (0, 0)
    } else {
        (
            ioctl_int(fd, libc::TIOCGSID).unwrap_or(0),
            ioctl_int(fd, libc::TIOCGPGRP).unwrap_or(0),
        )
    };
    Ok(FileKind::Pty(PtyEnd {
        index,
        master,
        termios: termios_of(fd).map_err(e("reading termios"))?,
        winsize: winsize_of(fd).map_err(e("reading the window size"))?,
        packet_mode: master && ioctl_int(fd, TIOCGPKT).unwrap_or(0) != 0,
        locked: master && ioctl_int(fd, TIOCGPTLCK).unwrap_or(0) != 0,
        session,
        foreground,
        external: false,
    }))
}

impl PtyEnd {
    pub fn describe(&self) -> String {
        format!(
            "pty {} {}",
            self.index,
            if self.master { "master" } else { "slave" }
        )
    }
}

fn err(what: &'static str) -> impl FnOnce(io::Error) -> FileError {
    move |source| FileError::Create { what, source }
}

fn open_flags(path: &str, flags: i32) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path).expect("no NUL in a device path");
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The device path of this process's controlling terminal.
fn restorer_terminal() -> String {
    let tty_nr = crate::procfs::ProcDir::new(std::process::id() as i32)
        .stat()
        .map_or(0, |s| s.tty_nr);
    match pty_of_tty_nr(tty_nr) {
        Some(index) => format!("/dev/pts/{index}"),
        None => "/dev/tty".into(),
    }
}

fn apply(fd: &OwnedFd, end: &PtyEnd) -> Result<(), FileError> {
    if end.termios.len() == std::mem::size_of::<libc::termios>() {
        // SAFETY: TCSETS reads a struct termios of exactly its size.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCSETS, end.termios.as_ptr()) } != 0 {
            return Err(err("setting a pty's termios")(io::Error::last_os_error()));
        }
    }
    let w = libc::winsize {
        ws_row: end.winsize[0],
        ws_col: end.winsize[1],
        ws_xpixel: end.winsize[2],
        ws_ypixel: end.winsize[3],
    };
    // SAFETY: TIOCSWINSZ reads a struct winsize.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &w) };
    Ok(())
}

/// Ptys being restored: both ends of a pair are made at the first one met.
#[derive(Debug, Default)]
pub(super) struct PtyPairs {
    /// By saved index: the master and the slave (None: its holder is
    /// outside the image, so it is closed and the other end sees a hang-up).
    open: HashMap<u32, (Option<OwnedFd>, Option<OwnedFd>)>,
}

impl PtyPairs {
    /// An open file for `end`; `other(index, master)` finds the saved state
    /// of the pair's other end when it is in the image too.
    pub fn open(
        &mut self,
        end: &PtyEnd,
        flags: u32,
        other: &dyn Fn(u32, bool) -> Option<PtyEnd>,
    ) -> Result<OwnedFd, FileError> {
        if end.external {
            // The restorer's own terminal, by its real name (a file opened
            // as /dev/tty keeps that name), one open file per saved one.
            let keep = libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_APPEND;
            return open_flags(&restorer_terminal(), flags as i32 & keep).map_err(|source| FileError::Create {
                what: "opening the terminal hiber restore runs in (the image's programs ran in an outside terminal: restore from a terminal)",
                source,
            });
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = self.open.entry(end.index) {
            let master = open_flags("/dev/ptmx", libc::O_RDWR).map_err(err("opening /dev/ptmx"))?;
            let zero: libc::c_int = 0;
            // SAFETY: TIOCSPTLCK reads one int.
            unsafe { libc::ioctl(master.as_raw_fd(), TIOCSPTLCK, &zero) };
            let n = ioctl_int(master.as_raw_fd(), TIOCGPTN)
                .map_err(err("reading a new pty's number"))?;
            let slave = open_flags(&format!("/dev/pts/{n}"), libc::O_RDWR)
                .map_err(err("opening a new pty's slave"))?;
            let (m_state, s_state) = if end.master {
                (Some(end.clone()), other(end.index, false))
            } else {
                (other(end.index, true), Some(end.clone()))
            };
            if let Some(s) = &s_state {
                apply(&slave, s)?;
            }
            if let Some(m) = &m_state {
                apply(&master, m)?;
                let one: libc::c_int = 1;
                if m.packet_mode {
                    // SAFETY: TIOCPKT reads one int.
                    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCPKT, &one) };
                }
                if m.locked {
                    // SAFETY: TIOCSPTLCK reads one int.
                    unsafe { libc::ioctl(master.as_raw_fd(), TIOCSPTLCK, &one) };
                }
            }
            slot.insert((m_state.map(|_| master), s_state.map(|_| slave)));
        }
        let slot = self.open.get(&end.index).expect("just made");
        let missing = || FileError::BadReference {
            what: "pty end",
            index: end.index as usize,
        };
        if end.master {
            // A second open of /dev/ptmx would be another pty: holders of
            // the master share one open file.
            let m = slot.0.as_ref().ok_or_else(missing)?;
            let dup = m.try_clone().map_err(err("duplicating a pty master"))?;
            // SAFETY: F_SETFL with the saved non-blocking flag on our fd.
            unsafe {
                libc::fcntl(
                    dup.as_raw_fd(),
                    libc::F_SETFL,
                    flags as i32 & libc::O_NONBLOCK,
                )
            };
            return Ok(dup);
        }
        // Each saved open file of the slave gets its own, with its flags.
        let s = slot.1.as_ref().ok_or_else(missing)?;
        let keep = libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_APPEND;
        open_flags(
            &format!("/proc/self/fd/{}", s.as_raw_fd()),
            flags as i32 & keep,
        )
        .map_err(err("reopening a pty slave"))
    }
}
