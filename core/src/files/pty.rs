//! Pseudo-terminals: master (`/dev/ptmx`) and slave (`/dev/pts/N`) ends,
//! with their termios, window size, packet mode and lock, the session and
//! foreground process group of the terminal, the bytes queued each way;
//! and open files of `/dev/tty` (a process's controlling terminal).
//!
//! Queues. A pty holds two: the output queue (what the slave side wrote,
//! for the master's reader) and the input queue (what the master side
//! wrote, for the slave's reader). A tty queue cannot be peeked, so the
//! dump (after the refusal check: a refused checkpoint never touches them)
//! reads both out: the output through the program's own open file of the
//! master, non-blocking only while the set is frozen; the input through a
//! new open file of the slave. [`Taken`] keeps what was read and puts it
//! back while the set is still frozen: right after the dump (before the
//! commit, so a failed commit or a killed checkpointer leaves the queues as
//! they were; processes to be ended lose nothing by it), or by `Drop` when
//! the dump itself fails.
//! Putting back, and filling a fresh pty at restore, writes the input into
//! the master and the output into the slave in a put-back mode (no echo,
//! no signal characters, no input translation, no output processing), and
//! sets the saved termios again once the line discipline holds every byte
//! (it takes input asynchronously). A packet-mode master's reads start with
//! a control byte, stripped; a status notification waiting to be read
//! (flow control, flush) cannot be put back and is refused.
//!
//! Canonical mode: a read of the slave returns one complete line, and
//! FIONREAD counts complete lines only; the line being typed (no line end
//! yet) is invisible to both. The dump reads the complete lines one by
//! one, keeping their boundaries (a line ended by VEOF comes without its
//! end; an empty one is a bare VEOF), then turns canonical mode off for a
//! moment to read the line being typed: with no complete line left, that
//! switch loses nothing. Put back, each line gets its end again (a spare
//! character stands in for VEOF), then the partial line follows. What is
//! not kept: a half-typed escape (VLNEXT with nothing after it yet) and
//! the echo column the line discipline erases tabs with. A terminal in
//! EXTPROC mode is read as non-canonical. In non-canonical mode, input
//! beyond the line discipline's 4 KiB buffer is processed with the
//! program's own modes when it flows in.
//!
//! Only a pty whose master is in the set has its queues saved. A slave
//! whose master is outside is the terminal the programs were started from:
//! what was typed ahead stays in that terminal, which `hiber restore`
//! replaces by its own. A master whose slave no saved process holds keeps
//! its output (restored: readable, then the hang-up); what it wrote for the
//! outside slave is left there. Processes outside the set that use a saved
//! pty during the checkpoint may see their bytes interleaved.
//!
//! At restore the pair is a fresh pty (its number may differ); the session
//! leader takes it as controlling terminal before forking, so every
//! process of the session has it, and sets the foreground group once every
//! group exists (`restore::node`). A `/dev/tty` open file is opened again
//! by that session leader right after it takes the terminal and before it
//! forks, so the processes that shared it share it again; one whose
//! session is led from outside the set is the terminal `hiber restore`
//! runs in, opened by the restorer.

use super::error::{FileError, Refusal, Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::image::{ChunkRef, ImageReader, ImageWriter};
use crate::policy::Policy;
use crate::sys::fd::{queued_bytes, set_status_flags_of, status_flags_of};
use crate::sys::term::{
    ioctl_get_int as ioctl_int, ioctl_set_int as set_int, set_winsize, tcgets, tcsets,
    termios_bytes, termios_from, winsize as winsize_of,
};
use crate::sys::wrap::WrapIoResult;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

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

/// `/dev/tty`: whoever opens it gets their controlling terminal.
pub fn is_dev_tty(major: u32, minor: u32) -> bool {
    major == 5 && minor == 0
}

const TIOCGPTN: libc::c_ulong = 0x8004_5430;
const TIOCSPTLCK: libc::c_ulong = 0x4004_5431;
const TIOCGPKT: libc::c_ulong = 0x8004_5438;
const TIOCGPTLCK: libc::c_ulong = 0x8004_5439;

/// Bound on the bytes a checkpoint takes from one tty queue (the line
/// discipline holds 4 KiB, the buffers feeding it 64 KiB more).
pub const MAX_QUEUED_BYTES: usize = 1 << 20;
/// The line discipline's buffer: what FIONREAD can count at most.
const N_TTY_BUF: usize = 4095;
/// How long putting bytes back may wait for the line discipline.
const REFILL_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Master: what the slave side wrote and the master has not read yet
    /// (after output processing), in chunks of up to 1 MiB.
    #[serde(default)]
    pub output: Vec<ChunkRef>,
    /// Slave (the first saved open file of it): what the master side wrote
    /// and the slave has not read yet (after input processing): the
    /// complete lines of `input_lines`, then the rest.
    #[serde(default)]
    pub input: Vec<ChunkRef>,
    /// Canonical mode: the length of each complete line at the head of
    /// `input` as a read returns it (one not ending in a line end was ended
    /// by VEOF; 0 is a bare VEOF).
    #[serde(default)]
    pub input_lines: Vec<u32>,
}

/// An open file of `/dev/tty`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevTty {
    /// The pty number of the controlling terminal at checkpoint.
    pub index: u32,
    /// The session that terminal belongs to (its leader's pid).
    pub session: i32,
    /// The session is led from outside the set: opened at restore as the
    /// controlling terminal of `hiber restore`.
    #[serde(default)]
    pub external: bool,
}

/// The bytes queued for a slave's reader, as read out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Input {
    /// Canonical mode: the complete lines, each as one read returned it.
    pub lines: Vec<Vec<u8>>,
    /// The line being typed (canonical mode), or every byte (otherwise).
    pub rest: Vec<u8>,
}

impl Input {
    fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.rest.is_empty()
    }
}

fn termios_of(fd: RawFd) -> io::Result<Vec<u8>> {
    tcgets(fd).map(|t| termios_bytes(&t))
}

/// Whether `fd` is ready for `events` (`timeout` in milliseconds).
fn poll_one(fd: RawFd, events: libc::c_short, timeout: i32) -> io::Result<libc::c_short> {
    match crate::sys::event::poll_one(fd, events, timeout) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        r => r,
    }
}

/// Line discipline reads are line-based (canonical mode, not EXTPROC).
fn canonical(t: &libc::termios) -> bool {
    t.c_lflag & libc::ICANON != 0 && t.c_lflag & libc::EXTPROC == 0
}

/// Classify one pty end (`held` is our copy of the program's fd).
fn checkpoint(held: &OwnedFd, master: bool, slave_index: Option<u32>) -> Result<PtyEnd, Refusal> {
    let fd = held.as_raw_fd();
    let e = |what: &'static str| move |err: io::Error| format!("{what}: {err}");
    let index = match slave_index {
        Some(i) => i,
        None => ioctl_int(fd, TIOCGPTN).map_err(e("reading the pty number"))? as u32,
    };
    let packet_mode = master && ioctl_int(fd, TIOCGPKT).unwrap_or(0) != 0;
    // A waiting status shows as POLLPRI; reading it would consume it.
    if packet_mode
        && poll_one(fd, libc::POLLPRI, 0).map_err(e("polling the pty master"))? & libc::POLLPRI != 0
    {
        return Err(Refusal::for_now(format!(
            "pty {index} master (packet mode) has a status notification waiting to be read (flow control or flush): it cannot be put back"
        )));
    }
    let (session, foreground) = if master {
        (0, 0)
    } else {
        (
            ioctl_int(fd, libc::TIOCGSID).unwrap_or(0),
            ioctl_int(fd, libc::TIOCGPGRP).unwrap_or(0),
        )
    };
    Ok(PtyEnd {
        index,
        master,
        termios: termios_of(fd).map_err(e("reading termios"))?,
        winsize: winsize_of(fd).map_err(e("reading the window size"))?,
        packet_mode,
        locked: master && ioctl_int(fd, TIOCGPTLCK).unwrap_or(0) != 0,
        session,
        foreground,
        external: false,
        output: Vec::new(),
        input: Vec::new(),
        input_lines: Vec::new(),
    })
}

/// Classify an open file of `/dev/tty` from its holder's `tty_nr` and
/// session (`/proc/PID/stat`); whether it can be restored is decided once
/// every process is seen.
fn checkpoint_dev_tty(tty_nr: i32, session: i32) -> Result<DevTty, String> {
    if tty_nr == 0 {
        return Err("/dev/tty is open but the process has no controlling terminal any more".into());
    }
    let index = pty_of_tty_nr(tty_nr).ok_or_else(|| {
        format!("/dev/tty is open on a controlling terminal that is not a pseudo-terminal (tty_nr {tty_nr:#x})")
    })?;
    Ok(DevTty {
        index,
        session,
        external: false,
    })
}

impl PtyEnd {
    /// Store `output` (master) or `input` (slave) in the image.
    pub(super) fn dump_queue(
        &mut self,
        writer: &ImageWriter,
        output: &[u8],
        input: &Input,
    ) -> Result<(), FileError> {
        let put = |data: &[u8]| -> Result<Vec<ChunkRef>, FileError> {
            data.chunks(1 << 20)
                .map(|c| writer.put_chunk(c).map_err(FileError::from))
                .collect()
        };
        if self.master {
            self.output = put(output)?;
        } else {
            let mut all = input.lines.concat();
            all.extend_from_slice(&input.rest);
            self.input = put(&all)?;
            self.input_lines = input.lines.iter().map(|l| l.len() as u32).collect();
        }
        Ok(())
    }

    fn load(chunks: &[ChunkRef], image: &ImageReader) -> Result<Vec<u8>, FileError> {
        let mut all = Vec::new();
        let mut buf = Vec::new();
        for c in chunks {
            image.read_chunk(c, &mut buf)?;
            all.extend_from_slice(&buf);
        }
        Ok(all)
    }

    fn saved_input(&self, image: &ImageReader) -> Result<Input, FileError> {
        let all = Self::load(&self.input, image)?;
        let lines_len: u64 = self.input_lines.iter().map(|&l| u64::from(l)).sum();
        if lines_len > all.len() as u64 {
            return Err(FileError::Create {
                what: "refilling a pty: the saved input is shorter than its lines",
                source: io::Error::from(io::ErrorKind::InvalidData),
            });
        }
        let mut at = 0;
        let lines = self
            .input_lines
            .iter()
            .map(|&l| {
                let line = all[at..at + l as usize].to_vec();
                at += l as usize;
                line
            })
            .collect();
        Ok(Input {
            lines,
            rest: all[at..].to_vec(),
        })
    }
}

/// `O_NONBLOCK` on an open file while this lives, then its flags as they
/// were (the open file may be the program's own: it is frozen meanwhile).
struct NonBlocking {
    fd: RawFd,
    old: Option<libc::c_int>,
}

impl NonBlocking {
    fn set(fd: RawFd) -> io::Result<Self> {
        let flags = status_flags_of(fd)?;
        if flags & libc::O_NONBLOCK != 0 {
            return Ok(Self { fd, old: None });
        }
        set_status_flags_of(fd, flags | libc::O_NONBLOCK)?;
        Ok(Self {
            fd,
            old: Some(flags),
        })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        if let Some(flags) = self.old {
            let _ = set_status_flags_of(self.fd, flags);
        }
    }
}

/// One read of a non-blocking fd: None when nothing is there.
fn read_once(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        let e = match crate::sys::fd::read(fd, buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) => e,
        };
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

/// Append to `out` what the non-blocking `fd` has, until it has nothing
/// (or reads 0: non-canonical with VMIN 0). A packet-mode master's reads
/// start with a control byte: 0 before data, stripped; anything else is a
/// status, which cannot be put back (refused at inspection; one that
/// arrives meanwhile is an error). What was read stays in `out` on errors.
fn read_all(fd: RawFd, packet: bool, out: &mut Vec<u8>) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    while let Some(n) = read_once(fd, &mut buf)?.filter(|&n| n > 0) {
        let data = match (packet, buf[0]) {
            (false, _) => &buf[..n],
            (true, 0) => &buf[1..n],
            (true, status) => {
                return Err(io::Error::other(format!(
                    "a packet-mode status ({status:#x}) arrived during the checkpoint"
                )))
            }
        };
        if out.len() + data.len() > MAX_QUEUED_BYTES {
            return Err(io::Error::other(format!(
                "more than {MAX_QUEUED_BYTES} bytes queued"
            )));
        }
        out.extend_from_slice(data);
    }
    Ok(())
}

/// Read the output queue through the program's open file of the master.
fn read_output(master: RawFd, packet: bool, out: &mut Vec<u8>) -> io::Result<()> {
    let _nb = NonBlocking::set(master)?;
    read_all(master, packet, out)
}

/// Read the input queue through `slave`, our own non-blocking open file.
fn read_input(slave: RawFd, into: &mut Input) -> io::Result<()> {
    let saved = tcgets(slave)?;
    if !canonical(&saved) {
        return read_all(slave, false, &mut into.rest);
    }
    // One complete line per read; an empty read is a bare VEOF.
    let mut buf = vec![0u8; 64 << 10];
    while let Some(n) = read_once(slave, &mut buf)? {
        if into.lines.len() > MAX_QUEUED_BYTES {
            return Err(io::Error::other("too many queued lines"));
        }
        into.lines.push(buf[..n].to_vec());
    }
    // The line being typed is readable only outside canonical mode. With
    // no complete line left, the switch loses nothing (the kernel resets
    // only line boundaries), and switching back leaves the queue empty.
    let mut raw = saved;
    raw.c_lflag &= !libc::ICANON;
    tcsets(slave, &raw)?;
    let read = read_all(slave, false, &mut into.rest);
    let back = tcsets(slave, &saved);
    read.and(back)
}

/// A new open file of `master`'s slave, non-blocking. A master locked
/// again after its slave was opened is unlocked for the open.
fn open_peer(master: RawFd) -> io::Result<OwnedFd> {
    let open = || {
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC;
        crate::sys::term::open_peer(master, flags)
    };
    match open() {
        Err(e) if e.raw_os_error() == Some(libc::EIO) && ioctl_int(master, TIOCGPTLCK)? != 0 => {
            set_int(master, TIOCSPTLCK, 0)?;
            let peer = open();
            set_int(master, TIOCSPTLCK, 1)?;
            peer
        }
        r => r,
    }
}

fn wait_ready(fd: RawFd, events: libc::c_short, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the terminal did not take or give back the queued bytes in time",
        ));
    }
    poll_one(
        fd,
        events,
        left.as_millis().min(i32::MAX as u128 - 1) as i32 + 1,
    )?;
    Ok(())
}

fn write_all(fd: RawFd, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        let e = match crate::sys::fd::write(fd, data) {
            Ok(n) if n > 0 => {
                data = &data[n..];
                continue;
            }
            Ok(_) => None,
            Err(e) => Some(e),
        };
        match e {
            Some(e) if e.kind() == io::ErrorKind::Interrupted => {}
            None => wait_ready(fd, libc::POLLOUT, deadline)?,
            Some(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_ready(fd, libc::POLLOUT, deadline)?
            }
            Some(e) => return Err(e),
        }
    }
    Ok(())
}

/// Wait until the line discipline of `slave` counts `want` bytes: it takes
/// input from a kernel worker, and must have it all before the program's
/// own modes come back.
fn wait_queued(slave: RawFd, want: usize, deadline: Instant) -> io::Result<()> {
    let want = want.min(N_TTY_BUF);
    while (queued_bytes(slave)?.max(0) as usize) < want {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the line discipline did not take the queued input back in time",
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Read exactly `n` bytes from the non-blocking `fd`, waiting for them.
fn read_exactly(fd: RawFd, n: usize, packet: bool, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        read_all(fd, packet, &mut got)?;
        if got.len() >= n {
            return Ok(got);
        }
        wait_ready(fd, libc::POLLIN, deadline)?;
    }
}

/// Whether a canonical line as read ends with its line end (else VEOF
/// ended it). A control character of 0 is disabled.
fn ends_line(line: &[u8], t: &libc::termios) -> bool {
    match line.last() {
        Some(b'\n') => true,
        Some(&c) => {
            c != 0
                && (c == t.c_cc[libc::VEOL]
                    || (t.c_lflag & libc::IEXTEN != 0 && c == t.c_cc[libc::VEOL2]))
        }
        None => false,
    }
}

/// The mode bytes are put back in: no echo, no signal characters, no input
/// translation, no output processing. Flow control stays as it is (a
/// change would post a packet-mode status). In canonical mode the editing
/// characters and VEOF become bytes the input does not contain, so only
/// line ends act, and VEOF's stand-in ends the lines VEOF ended.
fn put_back_mode(saved: &libc::termios, input: &Input) -> io::Result<libc::termios> {
    let mut t = *saved;
    t.c_iflag &= libc::IXON | libc::IXANY | libc::IXOFF | libc::IUTF8;
    t.c_oflag &= !libc::OPOST;
    t.c_lflag &= libc::ICANON | libc::IEXTEN | libc::EXTPROC | libc::TOSTOP | libc::NOFLSH;
    if canonical(saved) {
        let mut used = [false; 256];
        for &b in input.lines.iter().flatten().chain(&input.rest) {
            used[b as usize] = true;
        }
        for i in [libc::VEOL, libc::VEOL2, libc::VSTART, libc::VSTOP] {
            used[saved.c_cc[i] as usize] = true;
        }
        used[0] = true;
        used[b'\n' as usize] = true;
        let mut spare = (1..=255u8).filter(|&b| !used[b as usize]);
        for i in [
            libc::VEOF,
            libc::VERASE,
            libc::VKILL,
            libc::VWERASE,
            libc::VLNEXT,
            libc::VREPRINT,
        ] {
            t.c_cc[i] = spare.next().ok_or_else(|| {
                io::Error::other("the queued input uses nearly every byte value: no spare control character to put it back with")
            })?;
        }
    }
    Ok(t)
}

/// Write `input` for the slave's reader and `output` for the master's
/// reader into a pty, so that both read exactly these bytes, then set
/// `termios` (the slave's saved termios; empty: the current one) again.
fn refill(
    master: RawFd,
    slave: RawFd,
    termios: &[u8],
    input: &Input,
    output: &[u8],
    packet: bool,
) -> io::Result<()> {
    if input.is_empty() && output.is_empty() {
        return Ok(());
    }
    let saved = match termios_from(termios) {
        Some(t) => t,
        None => tcgets(slave)?,
    };
    let mode = put_back_mode(&saved, input)?;
    let deadline = Instant::now() + REFILL_TIMEOUT;
    let _nb_master = NonBlocking::set(master)?;
    let _nb_slave = NonBlocking::set(slave)?;
    tcsets(slave, &mode)?;
    let written = (|| {
        let mut lines_len = 0;
        for line in &input.lines {
            write_all(master, line, deadline)?;
            if !ends_line(line, &saved) {
                write_all(master, &[mode.c_cc[libc::VEOF]], deadline)?;
            }
            lines_len += line.len();
        }
        if canonical(&saved) {
            wait_queued(slave, lines_len, deadline)?;
            if !input.rest.is_empty() {
                // FIONREAD does not count a partial line: echo it, raw, to
                // the master (whose queue is empty until the output goes
                // back below) and wait for the echo instead.
                let mut echo = mode;
                echo.c_lflag |= libc::ECHO;
                tcsets(slave, &echo)?;
                write_all(master, &input.rest, deadline)?;
                let echoed = read_exactly(master, input.rest.len(), packet, deadline);
                tcsets(slave, &mode)?;
                if echoed? != input.rest {
                    return Err(io::Error::other(
                        "the terminal echoed the line being typed differently",
                    ));
                }
            }
        } else if !input.rest.is_empty() {
            write_all(master, &input.rest, deadline)?;
            wait_queued(slave, input.rest.len(), deadline)?;
        }
        // Output is processed as it is written: OPOST is off now.
        write_all(slave, output, deadline)
    })();
    let back = tcsets(slave, &saved);
    written.and(back)
}

/// Bytes the dump read out of live ptys, kept to be put back while the set
/// is still frozen: explicitly right after the dump, by `Drop` when the
/// dump fails part way.
#[derive(Debug, Default)]
pub(super) struct Taken {
    pairs: Vec<TakenPair>,
}

#[derive(Debug)]
struct TakenPair {
    index: u32,
    /// A duplicate of the program's master fd (the same open file).
    master: OwnedFd,
    termios: Vec<u8>,
    packet: bool,
    input: Input,
    output: Vec<u8>,
}

impl Taken {
    /// Read out the queues of pty `index`: the output through the program's
    /// `master`, and when the slave is saved too, the input through a new
    /// open file of it. What was read is recorded here (and put back) even
    /// when reading fails part way.
    pub fn take(
        &mut self,
        index: u32,
        master: &OwnedFd,
        slave_saved: bool,
        packet: bool,
        termios: &[u8],
    ) -> io::Result<(&Input, &[u8])> {
        self.pairs.push(TakenPair {
            index,
            master: master.try_clone()?,
            termios: termios.to_vec(),
            packet,
            input: Input::default(),
            output: Vec::new(),
        });
        let p = self.pairs.last_mut().expect("just pushed");
        read_output(p.master.as_raw_fd(), packet, &mut p.output)?;
        if slave_saved {
            let slave = open_peer(p.master.as_raw_fd())?;
            read_input(slave.as_raw_fd(), &mut p.input)?;
        }
        debug!(
            index,
            output = p.output.len(),
            lines = p.input.lines.len(),
            input = p.input.lines.iter().map(Vec::len).sum::<usize>() + p.input.rest.len(),
            "read the queues of a pty"
        );
        Ok((&p.input, &p.output))
    }

    /// Put every queue back in its live pty, in the put-back mode.
    pub fn put_back(&mut self) {
        for p in self.pairs.drain(..) {
            if p.input.is_empty() && p.output.is_empty() {
                continue;
            }
            let master = p.master.as_raw_fd();
            let done = open_peer(master).and_then(|slave| {
                refill(
                    master,
                    slave.as_raw_fd(),
                    &p.termios,
                    &p.input,
                    &p.output,
                    p.packet,
                )
            });
            match done {
                Ok(()) => debug!(index = p.index, "put the queued bytes back in a pty"),
                Err(error) => warn!(
                    index = p.index,
                    %error,
                    "could not put the queued bytes back in a pty; the program may miss them"
                ),
            }
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.put_back();
    }
}

fn open_flags(path: &str, flags: i32) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path).expect("no NUL in a device path");
    crate::sys::fs::open(&c, flags | libc::O_NOCTTY | libc::O_CLOEXEC, 0)
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

/// Status flags a reopened terminal keeps from the saved ones.
const KEPT_FLAGS: i32 = libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_APPEND;

impl DevTty {
    /// An open file for the restorer to hand on. The session's own
    /// terminal is opened by its leader once it has it (`restore::node`):
    /// meanwhile `/dev/null` holds its place. An outside session's is the
    /// restorer's own controlling terminal.
    fn open(&self, flags: u32) -> Result<OwnedFd, FileError> {
        if !self.external {
            return Ok(open_flags("/dev/null", libc::O_RDWR)
                .doing("opening /dev/null to hold the place of a /dev/tty file")?);
        }
        Ok(open_flags("/dev/tty", flags as i32 & KEPT_FLAGS).doing("opening /dev/tty (the image's programs had a controlling terminal outside the set: restore from a terminal)")?)
    }
}

fn apply(fd: &OwnedFd, end: &PtyEnd) -> Result<(), FileError> {
    if let Some(t) = termios_from(&end.termios) {
        tcsets(fd.as_raw_fd(), &t).doing("setting a pty's termios")?;
    }
    let _ = set_winsize(fd.as_raw_fd(), end.winsize);
    Ok(())
}

/// Ptys being restored: both ends of a pair are made at the first one met.
#[derive(Debug, Default)]
struct PtyPairs {
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
        image: &ImageReader,
    ) -> Result<OwnedFd, FileError> {
        if end.external {
            // The restorer's own terminal, by its real name (a file opened
            // as /dev/tty keeps that name), one open file per saved one.
            return Ok(open_flags(&restorer_terminal(), flags as i32 & KEPT_FLAGS).doing("opening the terminal hiber restore runs in (the image's programs ran in an outside terminal: restore from a terminal)")?);
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = self.open.entry(end.index) {
            slot.insert(make_pair(end, other, image)?);
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
            let dup = m.try_clone().doing("duplicating a pty master")?;
            let _ = set_status_flags_of(dup.as_raw_fd(), flags as i32 & libc::O_NONBLOCK);
            return Ok(dup);
        }
        // Each saved open file of the slave gets its own, with its flags.
        let s = slot.1.as_ref().ok_or_else(missing)?;
        Ok(open_flags(
            &format!("/proc/self/fd/{}", s.as_raw_fd()),
            flags as i32 & KEPT_FLAGS,
        )
        .doing("reopening a pty slave")?)
    }
}

/// A new pty for the pair of `end` (the other end found by `other`, as
/// in [`PtyPairs::open`]), with the saved queues and states: the master
/// and the slave, each None when the image holds no state of it.
fn make_pair(
    end: &PtyEnd,
    other: &dyn Fn(u32, bool) -> Option<PtyEnd>,
    image: &ImageReader,
) -> Result<(Option<OwnedFd>, Option<OwnedFd>), FileError> {
    let master = open_flags("/dev/ptmx", libc::O_RDWR).doing("opening /dev/ptmx")?;
    set_int(master.as_raw_fd(), TIOCSPTLCK, 0).doing("unlocking a new pty")?;
    let n = ioctl_int(master.as_raw_fd(), TIOCGPTN).doing("reading a new pty's number")?;
    let slave =
        open_flags(&format!("/dev/pts/{n}"), libc::O_RDWR).doing("opening a new pty's slave")?;
    let (m_state, s_state) = if end.master {
        (Some(end.clone()), other(end.index, false))
    } else {
        (other(end.index, true), Some(end.clone()))
    };
    // The queues first, in the put-back mode, before packet mode
    // (whose status notifications a termios change would post).
    let input = match &s_state {
        Some(s) => s.saved_input(image)?,
        None => Input::default(),
    };
    let output = match &m_state {
        Some(m) => PtyEnd::load(&m.output, image)?,
        None => Vec::new(),
    };
    let termios = s_state
        .as_ref()
        .or(m_state.as_ref())
        .map_or(&[][..], |e| &e.termios[..]);
    refill(
        master.as_raw_fd(),
        slave.as_raw_fd(),
        termios,
        &input,
        &output,
        false,
    )
    .map_err(|source| FileError::Pty {
        index: end.index,
        op: "writing the queued bytes into the new pty",
        source,
    })?;
    if let Some(s) = &s_state {
        apply(&slave, s)?;
    }
    if let Some(m) = &m_state {
        apply(&master, m)?;
        if m.packet_mode {
            set_int(master.as_raw_fd(), libc::TIOCPKT as libc::c_ulong, 1)
                .doing("setting a pty's packet mode")?;
        }
        if m.locked {
            set_int(master.as_raw_fd(), TIOCSPTLCK, 1).doing("locking a pty")?;
        }
    }
    Ok((m_state.map(|_| master), s_state.map(|_| slave)))
}

impl FdKind for PtyEnd {
    type Seen = ();
    type Opening = PtyOpening;

    fn describe(&self) -> String {
        format!(
            "pty {} {}",
            self.index,
            if self.master { "master" } else { "slave" }
        )
    }

    fn reason(&self, _: &Probe<'_>, _: &()) -> String {
        "a fresh pty with the saved termios, window size, modes and the bytes queued each way (its number may change)".into()
    }

    fn chunks(&self) -> Vec<&ChunkRef> {
        self.output.iter().chain(&self.input).collect()
    }

    fn claims(fd: &Probe<'_>) -> bool {
        let (major, minor) = fd.rdev();
        fd.file_type() == libc::S_IFCHR && (is_master(major, minor) || is_slave_major(major))
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), _: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        let (major, minor) = fd.rdev();
        Ok(if is_master(major, minor) {
            checkpoint(fd.file, true, None)?
        } else {
            checkpoint(fd.file, false, Some((major - 136) * 256 + minor))?
        })
    }

    fn opening(all: &[&Self], _: &Restoring<'_>) -> FileResult<PtyOpening> {
        Ok(PtyOpening {
            pairs: PtyPairs::default(),
            ends: all.iter().map(|p| (*p).clone()).collect(),
        })
    }

    fn restore(
        &self,
        flags: u32,
        opening: &mut PtyOpening,
        cx: &Restoring<'_>,
    ) -> FileResult<Opened> {
        let PtyOpening { pairs, ends } = opening;
        let other = |index: u32, master: bool| {
            ends.iter()
                .find(|p| p.index == index && p.master == master)
                .cloned()
        };
        pairs.open(self, flags, &other, cx.image).map(Opened::from)
    }
}

/// Ptys being restored: the pairs made, and every saved end (to find the
/// other end of a pair).
#[derive(Debug)]
pub struct PtyOpening {
    pairs: PtyPairs,
    ends: Vec<PtyEnd>,
}

impl FdKind for DevTty {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        format!("/dev/tty (controlling terminal pty {})", self.index)
    }

    fn policy(&self) -> Policy {
        if self.external {
            Policy::Reopen
        } else {
            Policy::Restore
        }
    }

    fn reason(&self, _: &Probe<'_>, _: &()) -> String {
        "opened again as /dev/tty on the restored controlling terminal".into()
    }

    fn claims(fd: &Probe<'_>) -> bool {
        let (major, minor) = fd.rdev();
        fd.file_type() == libc::S_IFCHR && is_dev_tty(major, minor)
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), _: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        Ok(checkpoint_dev_tty(fd.tty_nr, fd.session)?)
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, flags: u32, _: &mut (), _: &Restoring<'_>) -> FileResult<Opened> {
        self.open(flags).map(Opened::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        let m = open_flags("/dev/ptmx", libc::O_RDWR).unwrap();
        set_int(m.as_raw_fd(), TIOCSPTLCK, 0).unwrap();
        let s = open_peer(m.as_raw_fd()).unwrap();
        (m, s)
    }

    #[test]
    fn tty_nr_decodes_pty_numbers() {
        assert_eq!(pty_of_tty_nr(136 << 8 | 3), Some(3));
        assert_eq!(pty_of_tty_nr((137 << 8) | 1), Some(257));
        assert_eq!(pty_of_tty_nr(4 << 8 | 1), None);
        assert_eq!(pty_of_tty_nr(0), None);
    }

    #[test]
    fn line_ends_follow_the_termios() {
        let mut t = crate::sys::term::zeroed_termios();
        t.c_cc[libc::VEOL] = b';';
        assert!(ends_line(b"a\n", &t));
        assert!(ends_line(b"a;", &t));
        assert!(!ends_line(b"a", &t));
        assert!(!ends_line(b"", &t));
        // VEOL2 counts with IEXTEN only; a 0 control character is disabled.
        t.c_cc[libc::VEOL2] = b'|';
        assert!(!ends_line(b"a|", &t));
        t.c_lflag |= libc::IEXTEN;
        assert!(ends_line(b"a|", &t));
        assert!(!ends_line(b"a\0", &t));
    }

    #[test]
    fn put_back_mode_picks_control_characters_the_input_lacks() {
        let mut t = crate::sys::term::zeroed_termios();
        t.c_iflag = libc::ICRNL | libc::IXON;
        t.c_oflag = libc::OPOST | libc::ONLCR;
        t.c_lflag = libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN;
        t.c_cc[libc::VEOF] = 4;
        let input = Input {
            lines: vec![(1..=9u8).collect(), b"x\n".to_vec()],
            rest: vec![10, 11],
        };
        let m = put_back_mode(&t, &input).unwrap();
        assert_eq!(m.c_iflag, libc::IXON);
        assert_eq!(m.c_oflag, libc::ONLCR);
        assert_eq!(m.c_lflag, libc::ICANON | libc::IEXTEN);
        let cc: Vec<u8> = [libc::VEOF, libc::VERASE, libc::VKILL]
            .iter()
            .map(|&i| m.c_cc[i])
            .collect();
        assert_eq!(cc, vec![12, 13, 14]);
    }

    /// A pty with a queue each way, a canonical line, a VEOF-ended line
    /// and a line being typed: read out and put back, it reads the same,
    /// with nothing echoed or translated twice.
    #[test]
    fn queues_read_out_and_put_back_unchanged() {
        let (m, s) = pair();
        let deadline = Instant::now() + REFILL_TIMEOUT;
        let (mf, sf) = (m.as_raw_fd(), s.as_raw_fd());
        // Cooked with echo: the echo is part of the output queue.
        write_all(sf, b"out\n", deadline).unwrap();
        write_all(mf, b"one\n\x04two\x04par", deadline).unwrap();
        let echo_len = b"out\r\none\r\ntwopar".len();
        while queued_bytes(mf).unwrap() < echo_len as i32 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut taken = Taken::default();
        let (input, output) = taken
            .take(0, &m, true, false, &termios_of(sf).unwrap())
            .unwrap();
        let want_lines = vec![b"one\n".to_vec(), Vec::new(), b"two".to_vec()];
        assert_eq!(input.lines, want_lines);
        assert_eq!(input.rest, b"par");
        assert_eq!(output, b"out\r\none\r\ntwopar");
        taken.put_back();
        let mut got = Vec::new();
        let _nb = NonBlocking::set(mf).unwrap();
        read_all(mf, false, &mut got).unwrap();
        assert_eq!(got, b"out\r\none\r\ntwopar");
        let peer = open_peer(mf).unwrap();
        let mut again = Input::default();
        read_input(peer.as_raw_fd(), &mut again).unwrap();
        assert_eq!(again.lines, want_lines);
        assert_eq!(again.rest, b"par");
        assert_eq!(tcgets(sf).unwrap().c_lflag & libc::ECHO, libc::ECHO);
    }
}
