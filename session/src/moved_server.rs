//! An X server restored onto another display number keeps, in its memory,
//! the names of the files it made for the number it was saved on: its
//! lock file (`/tmp/.X<n>-lock`, in a static `PATH_MAX` buffer) and its
//! socket's path (`/tmp/.X11-unix/X<n>`, in the listener's `sockaddr_un`).
//! At exit it unlinks both, and by then they are another server's: the
//! login that took the number would lose its socket and lock. So, once
//! restored, those names are rewritten to the new number's, in the
//! server's own writable memory, the way the restore already renamed its
//! listening socket.

use hiber_core::procfs::{MapsPath, ProcDir};
use hiber_core::procmem::ProcMem;
use tracing::{debug, warn};

/// Bytes read from the server at a time.
const WINDOW: usize = 1 << 20;

/// The names a server of `display` unlinks at exit, each with its NUL:
/// matched whole, so `X1` is never found inside `X11`.
fn names(display: u32) -> [Vec<u8>; 2] {
    [
        format!("/tmp/.X11-unix/X{display}\0").into_bytes(),
        format!("/tmp/.X{display}-lock\0").into_bytes(),
    ]
}

/// Rewrite the X server `pid`'s names of display `saved` to `now`'s in its
/// private writable memory; returns how many were rewritten. A longer new
/// name (`:9` to `:10`) is written only where the bytes it takes past the
/// old name's end are zero, as in the server's own buffers: a copy that
/// fills its allocation exactly is left alone rather than overrun.
pub fn rename_display(pid: i32, saved: u32, now: u32) -> usize {
    let maps = match ProcDir::new(pid).maps() {
        Ok(m) => m,
        Err(e) => {
            warn!(pid, error = %e, "could not read the moved X server's mappings");
            return 0;
        }
    };
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = names(saved).into_iter().zip(names(now)).collect();
    let longest = pairs
        .iter()
        .map(|(o, n)| o.len().max(n.len()))
        .max()
        .unwrap_or(0);
    let mut mem = ProcMem::new(pid, true);
    let mut rewritten = 0;
    let mut buf = Vec::new();
    for m in maps.iter().filter(|m| {
        m.read && m.write && !m.shared && !matches!(m.path, MapsPath::Vvar | MapsPath::VvarVclock)
    }) {
        let mut at = m.start;
        while at < m.end {
            // Windows overlap by a name's length, so none is cut in two.
            let end = (at + WINDOW as u64).min(m.end);
            let len = ((end - at) as usize + longest).min((m.end - at) as usize);
            buf.clear();
            if let Err(e) = mem.read_append(at, len, &mut buf) {
                debug!(pid, addr = at, error = %e, "skipping an unreadable range");
                break;
            }
            for (old, new) in &pairs {
                let mut from = 0;
                while let Some(i) = memchr::memmem::find(&buf[from..], old) {
                    let hit = from + i;
                    from = hit + old.len();
                    // Only hits starting in this window: the overlap is
                    // the next one's.
                    if at + hit as u64 >= end {
                        break;
                    }
                    let grows = new.len().saturating_sub(old.len());
                    let room = buf
                        .get(hit + old.len()..hit + old.len() + grows)
                        .is_some_and(|tail| tail.iter().all(|&b| b == 0));
                    if grows > 0 && !room {
                        debug!(
                            pid,
                            addr = at + hit as u64,
                            "a copy without room for the longer name left alone"
                        );
                        continue;
                    }
                    match mem.write(at + hit as u64, new) {
                        Ok(()) => rewritten += 1,
                        Err(e) => {
                            warn!(pid, addr = at + hit as u64, error = %e, "could not rewrite a display name")
                        }
                    }
                }
            }
            at = end;
        }
    }
    rewritten
}
