//! The desktop record: what an X display showed at the instant of a
//! checkpoint, so that a restore can be checked against it and the snapshot
//! list can show a picture.
//!
//! [`record`] opens one connection to the display, grabs the server (no
//! other client runs while it looks, so the window list and the pictures
//! are one consistent instant), lists the windows of every screen and takes
//! a screenshot of every screen, ungrabs, and closes the connection. It
//! returns only once the server has taken our hang-up: the caller freezes
//! the server right after, and a server saved before it read the hang-up
//! would come back holding a dead client. (The server shuts the socket
//! down, which is what we wait for, and closes it in the same step, before
//! it serves any other client; a freeze landing between the two leaves it
//! to finish closing when it runs again.) Pixels are encoded as PNG after
//! the grab, which lasts about 60 ms for 11 million pixels in a release
//! build. While another client holds a server grab, `record` waits for it.
//!
//! What is recorded:
//!
//! - [`DesktopRecord`] (serialisable, stored in the image's metadata): the
//!   display name, the size of every screen ([`ScreenInfo`]) and the window
//!   list ([`WindowInfo`], rules in [`windows`]).
//! - [`Screenshot`]s, one per screen, holding PNG bytes that the caller
//!   stores apart from the metadata (rules in [`screenshot`]).
//!
//! After a restore, [`windows::diff`] says which windows went missing,
//! appeared or changed, and [`screenshot::compare`] counts the pixels that
//! differ between two screenshots outside given rectangles.
//!
//! This module owns the X protocol side of Hiber; it knows nothing of the
//! image format or of processes.

pub mod screenshot;
pub mod windows;

pub use screenshot::{compare, Comparison, Rect, Screenshot};
pub use windows::{diff, WindowChange, WindowInfo};

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tracing::{debug, info};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::cookie::{Cookie, VoidCookie};
use x11rb::errors::{ConnectError, ConnectionError, ReplyError};
use x11rb::protocol::xproto::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;
use x11rb::x11_utils::TryParse;

/// How long [`record`] waits for the server to close its end of our
/// connection once we have shut down ours.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// What went wrong talking to an X display or handling a screenshot.
#[derive(Debug, thiserror::Error)]
pub enum X11Error {
    #[error("connecting to X display {display}")]
    Connect {
        display: String,
        #[source]
        source: ConnectError,
    },
    #[error("{what} of window {window:#x} on X display {display}")]
    Request {
        display: String,
        what: &'static str,
        window: u32,
        #[source]
        source: ReplyError,
    },
    #[error("closing the connection to X display {display}")]
    Close {
        display: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "X display {display} screen {screen}: no pixmap format or visual for root visual {visual:#x}"
    )]
    NoVisual {
        display: String,
        screen: u32,
        visual: u32,
    },
    #[error(
        "X display {display} screen {screen}: depth {depth} at {bits_per_pixel} bits per pixel, \
         visual class {class}; only TrueColor at 24 or 32 bits per pixel can be captured"
    )]
    UnsupportedVisual {
        display: String,
        screen: u32,
        depth: u8,
        bits_per_pixel: u8,
        class: String,
    },
    #[error(
        "X display {display} screen {screen}: GetImage of rows {first_row}..{end_row} returned \
         {got} bytes, expected {expected}"
    )]
    ShortImage {
        display: String,
        screen: u32,
        first_row: u32,
        end_row: u32,
        got: usize,
        expected: usize,
    },
    #[error("encoding the screenshot of X display {display} screen {screen} as PNG")]
    PngEncode {
        display: String,
        screen: u32,
        #[source]
        source: png::EncodingError,
    },
    // No path: `compare` takes PNG bytes; `which` says which of the two.
    #[error("decoding the {which} PNG")]
    PngDecode {
        which: &'static str,
        #[source]
        source: png::DecodingError,
    },
    #[error(
        "the {which} PNG is {width}x{height}; at most {max_side} pixels a side and {max_pixels} \
         pixels in all are accepted"
    )]
    PngTooLarge {
        which: &'static str,
        width: u32,
        height: u32,
        max_side: u32,
        max_pixels: u64,
    },
    // No display: `compare` takes two PNGs in memory, from no display.
    #[error(
        "the screenshots differ in size: {before_width}x{before_height} before, \
         {after_width}x{after_height} after"
    )]
    SizeMismatch {
        before_width: u32,
        before_height: u32,
        after_width: u32,
        after_height: u32,
    },
}

/// The serialisable part of a desktop record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DesktopRecord {
    /// The display name given to [`record`], e.g. `":1"`.
    pub display: String,
    /// The listed windows (see [`windows`]), screen by screen, each
    /// screen's from the bottom of the stack up.
    pub windows: Vec<WindowInfo>,
    /// Every screen, in screen order.
    pub screens: Vec<ScreenInfo>,
}

/// One screen's size in pixels.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScreenInfo {
    pub screen: u32,
    pub width: u32,
    pub height: u32,
}

/// What [`record`] captured: the record and one screenshot per screen, in
/// screen order.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    pub record: DesktopRecord,
    pub screenshots: Vec<Screenshot>,
}

/// Record the windows and a screenshot of every screen of `display`, in
/// one server grab, then close the connection (see the module doc).
pub fn record(display: &str) -> Result<Capture, X11Error> {
    let started = Instant::now();
    let (conn, _) = RustConnection::connect(Some(display)).map_err(|source| X11Error::Connect {
        display: display.to_string(),
        source,
    })?;
    let server = Server {
        conn: &conn,
        display,
    };
    let root = conn.setup().roots.first().map_or(0, |s| s.root);
    // check() waits for the reply: the grab holds before we look.
    let grab_started = Instant::now();
    let captured = server
        .check("GrabServer", root, conn.grab_server())
        .and_then(|()| capture(&server));
    // Always ungrab; when the connection itself failed the server has
    // already dropped the grab with it, and the capture's error is the one
    // to report.
    let ungrabbed = server.check("UngrabServer", root, conn.ungrab_server());
    let grabbed_ms = grab_started.elapsed().as_millis() as u64;
    let closed = close(conn, display);
    let (record, pixels) = captured?;
    ungrabbed?;
    closed?;
    let screenshots = pixels
        .into_iter()
        .map(|p| p.encode(display))
        .collect::<Result<Vec<_>, _>>()?;
    // tracing's macros shadow a variable named `display`.
    let name = display;
    info!(
        display = name,
        windows = record.windows.len(),
        screens = screenshots.len(),
        grabbed_ms,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recorded the desktop"
    );
    Ok(Capture {
        record,
        screenshots,
    })
}

/// The window list and every screen's pixels, read while the server is
/// grabbed.
fn capture(server: &Server<'_>) -> Result<(DesktopRecord, Vec<screenshot::Pixels>), X11Error> {
    let atoms = windows::Atoms::intern(server)?;
    let mut record = DesktopRecord {
        display: server.display.to_string(),
        windows: Vec::new(),
        screens: Vec::new(),
    };
    let mut pixels = Vec::new();
    for (index, screen) in server.conn.setup().roots.iter().enumerate() {
        let index = index as u32;
        record
            .windows
            .extend(windows::list(server, &atoms, index, screen.root)?);
        let shot = screenshot::capture(server, index, screen)?;
        let (width, height) = shot.size();
        record.screens.push(ScreenInfo {
            screen: index,
            width,
            height,
        });
        pixels.push(shot);
    }
    Ok((record, pixels))
}

/// Close the connection and wait until the server has taken the hang-up.
///
/// Dropping our end alone is not enough: the server notices the hang-up
/// only when it next reads the socket, which may be after the caller froze
/// it. So shut down our writing side and read until end-of-file: the server
/// reads ours, then shuts down and closes its end of the socket.
fn close(conn: RustConnection, name: &str) -> Result<(), X11Error> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::io::Errno;

    let err = |e: Errno| X11Error::Close {
        display: name.to_string(),
        source: e.into(),
    };
    let stream = conn.stream();
    rustix::net::shutdown(stream, rustix::net::Shutdown::Write).map_err(err)?;
    let until = Instant::now() + CLOSE_DEADLINE;
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(err(Errno::TIMEDOUT));
        }
        let timeout = Timespec::try_from(left).map_err(|_| err(Errno::INVAL))?;
        let mut fds = [PollFd::new(stream, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(err(e)),
        }
        // The socket is non-blocking (x11rb makes it so).
        match rustix::io::read(stream, &mut buf) {
            Ok(0) | Err(Errno::CONNRESET) => break,
            // Events or errors the server sent before closing: not ours to read.
            Ok(n) => debug!(display = name, bytes = n, "discarding data while closing"),
            Err(Errno::AGAIN) | Err(Errno::INTR) => {}
            Err(e) => return Err(err(e)),
        }
    }
    drop(conn);
    Ok(())
}

/// The connection [`record`] holds, with the display name its errors carry.
struct Server<'a> {
    conn: &'a RustConnection,
    display: &'a str,
}

impl Server<'_> {
    fn error(&self, what: &'static str, window: u32, source: ReplyError) -> X11Error {
        X11Error::Request {
            display: self.display.to_string(),
            what,
            window,
            source,
        }
    }

    /// The reply to a request sent earlier (requests go out in batches, so
    /// one round trip serves many windows).
    fn reply<R: TryParse>(
        &self,
        what: &'static str,
        window: u32,
        cookie: Result<Cookie<'_, RustConnection, R>, ConnectionError>,
    ) -> Result<R, X11Error> {
        cookie
            .map_err(ReplyError::from)
            .and_then(Cookie::reply)
            .map_err(|source| self.error(what, window, source))
    }

    /// Send a request that has no reply and wait until the server did it.
    fn check(
        &self,
        what: &'static str,
        window: u32,
        cookie: Result<VoidCookie<'_, RustConnection>, ConnectionError>,
    ) -> Result<(), X11Error> {
        cookie
            .map_err(ReplyError::from)
            .and_then(VoidCookie::check)
            .map_err(|source| self.error(what, window, source))
    }

    /// The largest request the server takes, in bytes (BigRequests is
    /// enabled when the server has it).
    fn maximum_request_bytes(&self) -> usize {
        self.conn.maximum_request_bytes()
    }
}
