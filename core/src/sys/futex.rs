//! Futexes on words that several processes map (never
//! `FUTEX_PRIVATE_FLAG`): waiting while a word holds a value, and waking
//! its waiters. On rustix: it has `futex(FUTEX_WAIT)` and
//! `futex(FUTEX_WAKE)` complete and exact, safe on an `&AtomicU32`.

use rustix::thread::futex;
use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleep while `word` holds `expected`, at most `timeout` (None: until
/// woken). Ok on a wake; EAGAIN when the word had changed already,
/// ETIMEDOUT, EINTR.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> io::Result<()> {
    let ts = timeout.map(|d| futex::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: d.subsec_nanos().into(),
    });
    Ok(futex::wait(
        word,
        futex::Flags::empty(),
        expected,
        ts.as_ref(),
    )?)
}

/// Wake every waiter on `word`; how many there were.
pub fn wake_all(word: &AtomicU32) -> io::Result<usize> {
    Ok(futex::wake(word, futex::Flags::empty(), i32::MAX as u32)?)
}
