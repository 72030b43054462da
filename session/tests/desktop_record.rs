//! The desktop record against real X servers (Xvfb) and real clients: the
//! window list (checked against xwininfo), screenshots (checked against
//! xwd and xsetroot), comparing screenshots, the difference between two
//! window lists, and that recording leaves no grab and no connection
//! behind.

mod common;

use common::*;
use hiber_session::desktop::{
    self, compare, diff, Rect, ScreenInfo, WindowChange, WindowInfo, X11Error,
};
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Cursor};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ConnectionExt as _, CreateWindowAux, PropMode, Window, WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

/// An Xvfb of the test's own; dropping it ends it and the clients started
/// on it (by pid) and removes the files a killed server would leave.
struct Xvfb {
    number: u32,
    pid: i32,
    reaper: Reaper,
}

impl Xvfb {
    fn start(screens: &[&str]) -> Self {
        let mut reaper = Reaper::new();
        let mut cmd = Command::new("Xvfb");
        // -displayfd: the server takes a free display number itself (no race
        // with other tests choosing one) and writes it once it accepts
        // connections.
        cmd.args(["-displayfd", "1", "-nolisten", "tcp"]);
        for (i, s) in screens.iter().enumerate() {
            cmd.args(["-screen", &i.to_string(), s]);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let pid = reaper.spawn(&mut cmd);
        let stdout = reaper
            .children_mut()
            .last_mut()
            .and_then(|c| c.stdout.take())
            .expect("Xvfb's stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("Xvfb to print its display number");
        let number = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("Xvfb printed {line:?}, not a display number"));
        let x = Self {
            number,
            pid,
            reaper,
        };
        assert!(Path::new(&format!("/tmp/.X11-unix/X{number}")).exists());
        x
    }

    fn display(&self) -> String {
        format!(":{}", self.number)
    }

    fn command(&self, prog: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(prog);
        cmd.env("DISPLAY", self.display()).args(args);
        cmd
    }

    /// Run an X tool to its end; it must succeed.
    #[track_caller]
    fn run(&self, prog: &str, args: &[&str]) -> Output {
        let out = self
            .command(prog, args)
            .output()
            .unwrap_or_else(|e| panic!("running {prog}: {e}"));
        assert_ok(&out, &format!("{prog} {args:?}"));
        out
    }

    fn spawn(&mut self, prog: &str, args: &[&str]) -> i32 {
        let mut cmd = self.command(prog, args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        self.reaper.spawn(&mut cmd)
    }

    /// The root's children as `xwininfo -root -children` lists them, top
    /// first: (id, line).
    fn children(&self) -> Vec<(u32, String)> {
        stdout(&self.run("xwininfo", &["-root", "-children"]))
            .lines()
            .filter_map(|l| {
                let id = l.split_whitespace().next()?.strip_prefix("0x")?;
                Some((u32::from_str_radix(id, 16).ok()?, l.trim().to_string()))
            })
            .collect()
    }

    /// The id of the top-level whose xwininfo line names `class`.
    fn window_of(&self, class: &str) -> Option<u32> {
        let quoted = format!(" \"{class}\")");
        self.children()
            .into_iter()
            .find(|(_, l)| l.contains(&quoted))
            .map(|(id, _)| id)
    }

    fn viewable(&self, id: u32) -> bool {
        stdout(&self.run("xwininfo", &["-id", &id.to_string()])).contains("Map State: IsViewable")
    }

    fn xwd(&self, screen: u32) -> Rgb {
        let display = format!("{}.{screen}", self.display());
        let out = Command::new("xwd")
            .args(["-root", "-silent", "-display", &display])
            .output()
            .expect("running xwd");
        assert_ok(&out, "xwd");
        Rgb::from_xwd(&out.stdout)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // Ended with SIGTERM, the server removes its socket and lock file
        // itself, the lock last: only then can another test's server take
        // the number. Files are removed here only when it had to be killed,
        // and only while its lock file still names it.
        // SAFETY: a signal to the X server this test started, by pid.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let until = Instant::now() + DEADLINE;
        while alive(self.pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.reaper.kill_all();
        let lock = format!("/tmp/.X{}-lock", self.number);
        if fs::read_to_string(&lock).is_ok_and(|l| l.trim() == self.pid.to_string()) {
            let _ = fs::remove_file(format!("/tmp/.X11-unix/X{}", self.number));
            let _ = fs::remove_file(&lock);
        }
    }
}

/// An image as 8-bit RGB triplets, decoded by the test itself.
#[derive(Debug, PartialEq)]
struct Rgb {
    width: u32,
    height: u32,
    pixels: Vec<[u8; 3]>,
}

impl Rgb {
    fn from_png(png: &[u8]) -> Self {
        let mut reader = png::Decoder::new(Cursor::new(png))
            .read_info()
            .expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("a sane size")];
        let frame = reader.next_frame(&mut buf).expect("PNG pixels");
        assert_eq!(
            (frame.color_type, frame.bit_depth),
            (png::ColorType::Rgb, png::BitDepth::Eight)
        );
        Self {
            width: frame.width,
            height: frame.height,
            pixels: buf.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect(),
        }
    }

    /// An `xwd` dump (ZPixmap, 24 or 32 bits per pixel, TrueColor).
    fn from_xwd(xwd: &[u8]) -> Self {
        let be = |at: usize| u32::from_be_bytes(xwd[at..at + 4].try_into().unwrap());
        let (header, width, height, lsb_first) = (be(0), be(16), be(20), be(28) == 0);
        let (bpp, stride, ncolors) = (be(44), be(48), be(76));
        let masks = [be(56), be(60), be(64)];
        assert!(bpp == 24 || bpp == 32, "{bpp} bits per pixel");
        let bytes = (bpp / 8) as usize;
        let data = &xwd[(header + ncolors * 12) as usize..];
        let mut pixels = Vec::new();
        for y in 0..height as usize {
            for x in 0..width as usize {
                let at = y * stride as usize + x * bytes;
                let p = &data[at..at + bytes];
                let v = if lsb_first {
                    p.iter().rev().fold(0u32, |v, &b| v << 8 | b as u32)
                } else {
                    p.iter().fold(0u32, |v, &b| v << 8 | b as u32)
                };
                pixels.push(masks.map(|m| ((v & m) >> m.trailing_zeros()) as u8));
            }
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        self.pixels[(y * self.width + x) as usize]
    }

    /// Pixels that differ from `other` outside `exclude`, as (x, y).
    fn differences(&self, other: &Rgb, exclude: &Rect) -> Vec<(u32, u32)> {
        assert_eq!((self.width, self.height), (other.width, other.height));
        let inside = |x: u32, y: u32| {
            (x as i32) >= exclude.x
                && (x as i32) < exclude.x + exclude.width as i32
                && (y as i32) >= exclude.y
                && (y as i32) < exclude.y + exclude.height as i32
        };
        (0..self.height)
            .flat_map(|y| (0..self.width).map(move |x| (x, y)))
            .filter(|&(x, y)| !inside(x, y) && self.at(x, y) != other.at(x, y))
            .collect()
    }
}

/// The server's sockets (listeners and client connections), by inode.
fn sockets(pid: i32) -> BTreeSet<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the X server's fds")
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("socket:"))
        .collect()
}

/// Run `f` (a record()), and check that it left no grab and no
/// connection behind: a round trip on our own connection completes (no
/// grab), and after it the server holds no socket it did not hold before.
/// record() returns once the server has shut our connection down; the
/// server finishes closing a client before it serves another, so after our
/// round trip the socket must be gone.
#[track_caller]
fn leaves_nothing_behind<T>(x: &Xvfb, conn: &RustConnection, f: impl FnOnce() -> T) -> T {
    let before = sockets(x.pid);
    let out = f();
    conn.get_input_focus()
        .expect("GetInputFocus")
        .reply()
        .expect("an answer from a server that is not grabbed");
    let after = sockets(x.pid);
    assert!(
        after.is_subset(&before),
        "the server still holds a connection record() opened: {before:?} -> {after:?}"
    );
    out
}

#[track_caller]
fn record_cleanly(x: &Xvfb, conn: &RustConnection) -> desktop::Capture {
    leaves_nothing_behind(x, conn, || desktop::record(&x.display())).expect("recording the desktop")
}

fn find(windows: &[WindowInfo], id: u32) -> &WindowInfo {
    windows
        .iter()
        .find(|w| w.id == id)
        .unwrap_or_else(|| panic!("window {id:#x} in {windows:#?}"))
}

/// The xclock's window with its border: it ticks, so comparisons skip it.
const CLOCK: Rect = Rect {
    x: 0,
    y: 0,
    width: 102,
    height: 102,
};

#[test]
fn records_windows_and_screenshots_of_real_clients() {
    let mut x = Xvfb::start(&["1024x768x24"]);
    let (conn, _) = RustConnection::connect(Some(&x.display())).expect("connecting");
    let dir = tempdir();
    let ready = dir.path().join("xterm-ready");
    x.run("xsetroot", &["-solid", "#123456"]);
    let clock = x.spawn("xclock", &["-geometry", "100x100+0+0"]);
    x.spawn("xeyes", &["-geometry", "100x100+200+0"]);
    let term_script = format!("echo hiber-ready; touch {}; exec cat", ready.display());
    let term = x.spawn(
        "xterm",
        &[
            "-T",
            "hiber-term",
            "-geometry",
            "60x10+0+200",
            "-e",
            "sh",
            "-c",
            &term_script,
        ],
    );
    x.spawn("xlogo", &["-geometry", "80x80+600+500"]);
    let ids = wait_until("four mapped client windows", DEADLINE, || {
        let ids: Vec<u32> = ["XClock", "XEyes", "XTerm", "XLogo"]
            .iter()
            .map(|c| x.window_of(c))
            .collect::<Option<_>>()?;
        ids.iter().all(|&id| x.viewable(id)).then_some(ids)
    });
    let [clock_id, eyes_id, term_id, logo_id] = ids[..] else {
        unreachable!()
    };
    x.run("xdotool", &["windowunmap", "--sync", &logo_id.to_string()]);
    wait_until("the terminal's shell to start", DEADLINE, || {
        ready.exists().then_some(())
    });
    // The screen has settled once two dumps by another tool agree.
    wait_until("the screen to settle", DEADLINE, || {
        let a = x.xwd(0);
        (x.xwd(0).differences(&a, &CLOCK).is_empty()).then_some(())
    });

    let first = record_cleanly(&x, &conn);
    let second = record_cleanly(&x, &conn);
    let record = &first.record;

    // The window list, against xwininfo's.
    let listed = x.children();
    assert_eq!(record.display, x.display());
    assert_eq!(
        record.windows.iter().map(|w| w.id).collect::<Vec<_>>(),
        listed.iter().rev().map(|(id, _)| *id).collect::<Vec<_>>(),
        "bottom-first order, against xwininfo's top-first list: {listed:#?}"
    );
    for (stacking, w) in record.windows.iter().enumerate() {
        assert_eq!(w.stacking, stacking as u32);
        assert_eq!(w.screen, 0);
        assert_eq!(w.frame, None);
        let line = &listed.iter().find(|(id, _)| *id == w.id).unwrap().1;
        let names = format!(
            "\"{}\": (\"{}\" \"{}\")",
            w.title.as_deref().unwrap(),
            w.instance.as_deref().unwrap(),
            w.class.as_deref().unwrap()
        );
        let geometry = format!(" {}x{}{:+}{:+} ", w.width, w.height, w.x, w.y);
        assert!(line.contains(&names), "{w:?} against {line}");
        assert!(line.contains(&geometry), "{w:?} against {line}");
        assert_eq!(w.mapped, w.id != logo_id, "{w:?}");
    }
    let expect = |id: u32, title: &str, class: &str, x: i32, y: i32| {
        let w = find(&record.windows, id);
        assert_eq!(
            (w.title.as_deref(), w.class.as_deref(), w.x, w.y),
            (Some(title), Some(class), x, y),
            "{w:?}"
        );
        w
    };
    let clock_w = expect(clock_id, "xclock", "XClock", 0, 0);
    assert_eq!((clock_w.width, clock_w.height), (100, 100));
    assert_eq!(clock_w.pid, Some(clock as u32));
    let eyes_w = expect(eyes_id, "xeyes", "XEyes", 200, 0).clone();
    assert_eq!((eyes_w.width, eyes_w.height), (100, 100));
    let term_w = expect(term_id, "hiber-term", "XTerm", 0, 200);
    assert_eq!(term_w.pid, Some(term as u32));
    let logo_w = expect(logo_id, "xlogo", "XLogo", 600, 500);
    assert_eq!(
        (logo_w.width, logo_w.height, logo_w.mapped),
        (80, 80, false)
    );
    assert_eq!(diff(&record.windows, &second.record.windows), vec![]);

    // The screenshot: size, the root's colour where no window is (also
    // where the unmapped xlogo would be), a terminal's white background,
    // and every pixel as xwd sees it.
    assert_eq!(
        record.screens,
        vec![ScreenInfo {
            screen: 0,
            width: 1024,
            height: 768
        }]
    );
    assert_eq!(first.screenshots.len(), 1);
    let shot = &first.screenshots[0];
    assert_eq!((shot.screen, shot.width, shot.height), (0, 1024, 768));
    let rgb = Rgb::from_png(&shot.png);
    assert_eq!((rgb.width, rgb.height), (1024, 768));
    assert_eq!(rgb.at(900, 700), [0x12, 0x34, 0x56]);
    assert_eq!(rgb.at(640, 540), [0x12, 0x34, 0x56]);
    let term_corner = (
        (term_w.x + term_w.width as i32 - 3) as u32,
        (term_w.y + term_w.height as i32 - 3) as u32,
    );
    assert_eq!(rgb.at(term_corner.0, term_corner.1), [255, 255, 255]);
    assert_eq!(rgb.differences(&x.xwd(0), &CLOCK), vec![]);

    // Two screenshots in a row are the same outside the clock.
    let same = compare(&shot.png, &second.screenshots[0].png, &[CLOCK]).unwrap();
    assert_eq!(
        (
            same.width,
            same.height,
            same.differing,
            same.first_difference
        ),
        (1024, 768, 0, None)
    );

    // Move xeyes: the pictures differ where it was or is, and the window
    // list says how it moved.
    x.run(
        "xdotool",
        &["windowmove", "--sync", &eyes_id.to_string(), "400", "100"],
    );
    let moved = record_cleanly(&x, &conn);
    let c = compare(&shot.png, &moved.screenshots[0].png, &[CLOCK]).unwrap();
    assert!(c.differing > 0, "{c:?}");
    let (fx, fy) = c.first_difference.expect("a first difference");
    let old = Rect {
        x: 200,
        y: 0,
        width: 102,
        height: 102,
    };
    let new = Rect {
        x: 400,
        y: 100,
        width: 102,
        height: 102,
    };
    let within = |r: &Rect| {
        (fx as i32) >= r.x
            && (fx as i32) < r.x + r.width as i32
            && (fy as i32) >= r.y
            && (fy as i32) < r.y + r.height as i32
    };
    assert!(
        within(&old) || within(&new),
        "first difference at {fx},{fy}"
    );
    let changes = diff(&record.windows, &moved.record.windows);
    assert_eq!(
        changes,
        vec![WindowChange::Changed {
            window: eyes_w.clone(),
            field: "geometry",
            before: "100x100+200+0".into(),
            after: "100x100+400+100".into(),
        }]
    );
    assert_eq!(
        changes[0].to_string(),
        format!("window {eyes_id:#x} \"xeyes\" (XEyes): geometry 100x100+200+0 -> 100x100+400+100")
    );

    // Raise the bottom window: one stacking change. Then end the
    // terminal: it is missing.
    let bottom = moved.record.windows[0].id;
    x.run("xdotool", &["windowraise", &bottom.to_string()]);
    let raised = wait_until("the bottom window to be on top", DEADLINE, || {
        let c = record_cleanly(&x, &conn);
        (c.record.windows.last().map(|w| w.id) == Some(bottom)).then_some(c)
    });
    let changes = diff(&moved.record.windows, &raised.record.windows);
    assert!(
        matches!(
            &changes[..],
            [WindowChange::Changed { window, field: "stacking order", .. }] if window.id == bottom
        ),
        "{changes:#?}"
    );
    // SAFETY: kill by pid of a process this test started.
    unsafe { libc::kill(term, libc::SIGKILL) };
    let ended = wait_until("the terminal's window to go", DEADLINE, || {
        let c = record_cleanly(&x, &conn);
        c.record
            .windows
            .iter()
            .all(|w| w.id != term_id)
            .then_some(c)
    });
    let term_before = find(&raised.record.windows, term_id).clone();
    assert_eq!(
        diff(&raised.record.windows, &ended.record.windows),
        vec![WindowChange::Missing(term_before)]
    );
}

/// What a reparenting window manager builds, made by hand: a frame holding
/// a decoration and a wrapper holding the client (with `WM_STATE`); plus
/// the windows the listing leaves out or keeps unmapped.
#[test]
fn follows_wm_state_below_frames_and_skips_helpers() {
    let x = Xvfb::start(&["800x600x24"]);
    let (conn, screen) = RustConnection::connect(Some(&x.display())).expect("connecting");
    let root = conn.setup().roots[screen].root;
    let atom = |name: &str| {
        conn.intern_atom(false, name.as_bytes())
            .unwrap()
            .reply()
            .unwrap()
            .atom
    };
    let (wm_state, net_wm_name, utf8, net_wm_pid) = (
        atom("WM_STATE"),
        atom("_NET_WM_NAME"),
        atom("UTF8_STRING"),
        atom("_NET_WM_PID"),
    );
    let window = |parent: Window, geometry: (i16, i16, u16, u16), class, border, aux| {
        let id = conn.generate_id().unwrap();
        let (x, y, w, h) = geometry;
        // An InputOnly window has no depth of its own.
        let depth = if class == WindowClass::INPUT_ONLY {
            0
        } else {
            x11rb::COPY_DEPTH_FROM_PARENT
        };
        conn.create_window(
            depth,
            id,
            parent,
            x,
            y,
            w,
            h,
            border,
            class,
            x11rb::COPY_FROM_PARENT,
            &aux,
        )
        .unwrap()
        .check()
        .expect("CreateWindow");
        id
    };
    let (output, input_only) = (WindowClass::INPUT_OUTPUT, WindowClass::INPUT_ONLY);
    let plain = CreateWindowAux::new;
    let override_redirect = || CreateWindowAux::new().override_redirect(1);
    let class = |w: Window, v: &[u8]| {
        conn.change_property8(
            PropMode::REPLACE,
            w,
            AtomEnum::WM_CLASS,
            AtomEnum::STRING,
            v,
        )
        .unwrap();
    };

    // Bottom to top.
    let _helper = window(root, (-10, -10, 1, 1), output, 0, override_redirect());
    let menu = window(root, (50, 60, 70, 80), output, 1, override_redirect());
    class(menu, b"menu\0Menu\0");
    // Latin-1: "menü".
    conn.change_property8(
        PropMode::REPLACE,
        menu,
        AtomEnum::WM_NAME,
        AtomEnum::STRING,
        b"men\xfc",
    )
    .unwrap();
    let input = window(root, (0, 0, 50, 50), input_only, 0, plain());
    let frame = window(root, (300, 300, 200, 150), output, 0, plain());
    let decoration = window(frame, (0, 0, 200, 20), output, 0, plain());
    let wrapper = window(frame, (3, 18, 190, 128), output, 0, plain());
    let client = window(wrapper, (2, 2, 180, 120), output, 2, plain());
    conn.change_property32(PropMode::REPLACE, client, wm_state, wm_state, &[1, 0])
        .unwrap();
    class(client, b"framed\0Framed\0");
    conn.change_property8(
        PropMode::REPLACE,
        client,
        AtomEnum::WM_NAME,
        AtomEnum::STRING,
        b"not this one",
    )
    .unwrap();
    conn.change_property8(
        PropMode::REPLACE,
        client,
        net_wm_name,
        utf8,
        "framed ✓".as_bytes(),
    )
    .unwrap();
    conn.change_property32(
        PropMode::REPLACE,
        client,
        net_wm_pid,
        AtomEnum::CARDINAL,
        &[4242],
    )
    .unwrap();
    let top = window(root, (10, 10, 30, 30), output, 0, plain());
    class(top, b"plain\0Plain\0");
    for w in [input, decoration, client, wrapper, frame, top] {
        conn.map_window(w).unwrap();
    }
    conn.get_input_focus().unwrap().reply().unwrap();

    let first = record_cleanly(&x, &conn);
    let expected = vec![
        WindowInfo {
            id: menu,
            screen: 0,
            title: Some("menü".into()),
            instance: Some("menu".into()),
            class: Some("Menu".into()),
            pid: None,
            x: 50,
            y: 60,
            width: 70,
            height: 80,
            mapped: false,
            stacking: 0,
            frame: None,
        },
        WindowInfo {
            id: client,
            screen: 0,
            title: Some("framed ✓".into()),
            instance: Some("framed".into()),
            class: Some("Framed".into()),
            pid: Some(4242),
            // The outer corner: frame + wrapper + client offsets.
            x: 305,
            y: 320,
            width: 180,
            height: 120,
            mapped: true,
            stacking: 1,
            frame: Some(frame),
        },
        WindowInfo {
            id: top,
            screen: 0,
            title: None,
            instance: Some("plain".into()),
            class: Some("Plain".into()),
            pid: None,
            x: 10,
            y: 10,
            width: 30,
            height: 30,
            mapped: true,
            stacking: 2,
            frame: None,
        },
    ];
    assert_eq!(first.record.windows, expected);

    // Iconified the way a window manager does it: the frame unmapped.
    conn.unmap_window(frame).unwrap().check().unwrap();
    let second = record_cleanly(&x, &conn);
    let changes: Vec<String> = diff(&first.record.windows, &second.record.windows)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        changes,
        [format!(
            "window {client:#x} \"framed ✓\" (Framed): mapped true -> false"
        )]
    );
}

/// Several screens, one 4096 pixels wide: each is read in strips and
/// matches xwd pixel for pixel (a plaid on the big one shows any misplaced
/// row, strip or channel).
#[test]
fn screenshots_every_screen_of_large_sizes() {
    let x = Xvfb::start(&["1920x1200x24", "4096x2160x24"]);
    let (conn, _) = RustConnection::connect(Some(&x.display())).expect("connecting");
    let screen = |n: u32| format!("{}.{n}", x.display());
    x.run("xsetroot", &["-display", &screen(0), "-solid", "#abcdef"]);
    x.run(
        "xsetroot",
        &[
            "-display",
            &screen(1),
            "-mod",
            "7",
            "5",
            "-fg",
            "#ff8000",
            "-bg",
            "#0040c0",
        ],
    );
    let capture = record_cleanly(&x, &conn);
    assert_eq!(
        capture.record.screens,
        vec![
            ScreenInfo {
                screen: 0,
                width: 1920,
                height: 1200
            },
            ScreenInfo {
                screen: 1,
                width: 4096,
                height: 2160
            },
        ]
    );
    assert_eq!(capture.record.windows, vec![]);
    for (i, shot) in capture.screenshots.iter().enumerate() {
        assert_eq!(shot.screen, i as u32);
        let rgb = Rgb::from_png(&shot.png);
        assert_eq!((rgb.width, rgb.height), (shot.width, shot.height));
        assert!(rgb == x.xwd(i as u32), "screen {i} differs from xwd's");
    }
    let solid = Rgb::from_png(&capture.screenshots[0].png);
    assert_eq!(solid.at(1919, 1199), [0xab, 0xcd, 0xef]);
    let plaid = Rgb::from_png(&capture.screenshots[1].png);
    let colours: BTreeSet<[u8; 3]> = plaid.pixels.iter().copied().collect();
    assert_eq!(
        colours,
        BTreeSet::from([[0xff, 0x80, 0x00], [0x00, 0x40, 0xc0]]),
        "the plaid's two colours"
    );
}

#[test]
fn refuses_a_16_bit_screen_naming_its_depth() {
    let x = Xvfb::start(&["640x480x16"]);
    let (conn, _) = RustConnection::connect(Some(&x.display())).expect("connecting");
    // Even when it fails, it ungrabs and closes.
    let e = leaves_nothing_behind(&x, &conn, || desktop::record(&x.display())).unwrap_err();
    assert!(
        matches!(
            e,
            X11Error::UnsupportedVisual {
                depth: 16,
                bits_per_pixel: 16,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("depth 16"), "{e}");
}

#[test]
fn connecting_to_no_server_names_the_display() {
    let e = desktop::record(":4095").unwrap_err();
    assert!(matches!(&e, X11Error::Connect { display, .. } if display == ":4095"));
    assert_eq!(e.to_string(), "connecting to X display :4095");
}
