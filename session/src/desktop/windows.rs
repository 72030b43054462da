//! The window list of a desktop record, and the difference between two.
//!
//! Which windows are listed, per screen:
//!
//! - the top-level windows: the children of the screen's root window, in
//!   stacking order ([`WindowInfo::stacking`] 0 is the bottom one);
//! - InputOnly windows never (they show nothing);
//! - unmapped override-redirect windows without a title and a class never
//!   (toolkits keep such helper windows around: tooltips and menus not
//!   shown, selection owners, leader windows); every other unmapped window
//!   is listed with `mapped: false`, so an iconified or withdrawn
//!   application window is not lost;
//! - a window destroyed while the list is read never (the server grab
//!   holds other clients' requests, but a client that dies meanwhile is
//!   still closed down, its windows with it).
//!
//! Without a window manager a top-level is the client window itself. Under
//! a reparenting window manager a top-level is the manager's frame, and the
//! client window is the first window at or below it (breadth first) that
//! carries `WM_STATE` (ICCCM 4.1.3.1; what `xprop` and `xwininfo` pick too).
//! The listed id, title, class and pid are the client's; the stacking and
//! `mapped` are the top-level's (the frame's), and `frame` names the frame.
//!
//! Geometry is the client window's: `x`, `y` its outer corner (outside its
//! border) in root coordinates, `width`, `height` its inside size — the
//! numbers of an X geometry `WIDTHxHEIGHT+X+Y` and of `xwininfo`'s
//! "Absolute upper-left".
//!
//! Texts: the title is `_NET_WM_NAME` (UTF-8), else `WM_NAME` (`STRING` is
//! Latin-1; other encodings are read as UTF-8, lossily); the instance and
//! class are the two strings of `WM_CLASS`; the pid is `_NET_WM_PID`. Each
//! property is read up to 4 KiB.

use super::{Server, X11Error};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use tracing::debug;
use x11rb::errors::ReplyError;
use x11rb::protocol::xproto::{
    Atom, AtomEnum, ConnectionExt as _, GetPropertyReply, GetWindowAttributesReply, MapState,
    Window, WindowClass,
};
use x11rb::protocol::ErrorKind;

/// Properties are read up to this many 32-bit units.
const PROPERTY_LONGS: u32 = 1024;

/// One listed window (see the module doc for which, and which numbers).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WindowInfo {
    /// The client window's id.
    pub id: u32,
    pub screen: u32,
    pub title: Option<String>,
    pub instance: Option<String>,
    pub class: Option<String>,
    pub pid: Option<u32>,
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
    /// Whether the top-level (the frame, under a window manager) is mapped.
    pub mapped: bool,
    /// Position among the listed windows of its screen, 0 = bottom.
    pub stacking: u32,
    /// The window manager's frame holding the client window, when there is
    /// one.
    pub frame: Option<u32>,
}

impl WindowInfo {
    fn geometry(&self) -> String {
        format!("{}x{}{:+}{:+}", self.width, self.height, self.x, self.y)
    }
}

/// `window 0x400001 "xterm" (XTerm)`
impl fmt::Display for WindowInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "window {:#x}", self.id)?;
        if let Some(t) = &self.title {
            write!(f, " {t:?}")?;
        }
        if let Some(c) = &self.class {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

/// The atoms the window list reads; `x11rb::NONE` when the server has
/// never heard of one (then no window carries it). Looked up without
/// creating them: recording must not change the server.
#[derive(Debug)]
pub(super) struct Atoms {
    net_wm_name: Atom,
    utf8_string: Atom,
    net_wm_pid: Atom,
    wm_state: Atom,
}

impl Atoms {
    pub(super) fn intern(server: &Server<'_>) -> Result<Self, X11Error> {
        let names: [&[u8]; 4] = [b"_NET_WM_NAME", b"UTF8_STRING", b"_NET_WM_PID", b"WM_STATE"];
        let cookies: Vec<_> = names
            .iter()
            .map(|n| server.conn.intern_atom(true, n))
            .collect();
        let mut atoms = cookies
            .into_iter()
            .map(|c| server.reply("InternAtom", 0, c).map(|r| r.atom));
        let mut next = || atoms.next().expect("one cookie per name");
        Ok(Self {
            net_wm_name: next()?,
            utf8_string: next()?,
            net_wm_pid: next()?,
            wm_state: next()?,
        })
    }
}

/// The listed windows of one screen, bottom first.
pub(super) fn list(
    server: &Server<'_>,
    atoms: &Atoms,
    screen: u32,
    root: Window,
) -> Result<Vec<WindowInfo>, X11Error> {
    let conn = server.conn;
    let tops = server
        .reply("QueryTree", root, conn.query_tree(root))?
        .children;
    // One batch of requests for all top-levels, then the replies.
    let cookies: Vec<_> = tops
        .iter()
        .map(|&w| conn.get_window_attributes(w))
        .collect();
    let mut out = Vec::new();
    for (&top, cookie) in tops.iter().zip(cookies) {
        let listed = server
            .reply("GetWindowAttributes", top, cookie)
            .and_then(|attrs| top_level(server, atoms, screen, root, top, &attrs));
        match listed {
            Ok(Some(mut info)) => {
                info.stacking = out.len() as u32;
                out.push(info);
            }
            Ok(None) => {}
            Err(e) if gone(&e) => debug!(screen, window = top, "window destroyed while listing"),
            Err(e) => return Err(e),
        }
    }
    debug!(screen, windows = out.len(), "listed windows");
    Ok(out)
}

/// Whether an error says the window no longer exists. The grab does not
/// stop the server from closing down a client that died, destroying its
/// windows, so a window listed a moment ago can be gone.
fn gone(e: &X11Error) -> bool {
    matches!(
        e,
        X11Error::Request {
            source: ReplyError::X11Error(x),
            ..
        } if matches!(x.error_kind, ErrorKind::Window | ErrorKind::Drawable)
    )
}

/// The entry for top-level `top`, or None when the listing leaves it out.
fn top_level(
    server: &Server<'_>,
    atoms: &Atoms,
    screen: u32,
    root: Window,
    top: Window,
    attrs: &GetWindowAttributesReply,
) -> Result<Option<WindowInfo>, X11Error> {
    if attrs.class == WindowClass::INPUT_ONLY {
        return Ok(None);
    }
    let client = client_window(server, atoms, top)?;
    let mut info = describe(server, atoms, screen, root, client)?;
    info.mapped = attrs.map_state != MapState::UNMAPPED;
    info.frame = (client != top).then_some(top);
    if attrs.override_redirect && !info.mapped && info.title.is_none() && info.class.is_none() {
        debug!(screen, window = top, "skipping an unmapped helper window");
        return Ok(None);
    }
    Ok(Some(info))
}

/// The client window of a top-level: the first window at or below it,
/// breadth first, that has `WM_STATE`; the top-level itself when none has.
fn client_window(server: &Server<'_>, atoms: &Atoms, top: Window) -> Result<Window, X11Error> {
    if atoms.wm_state == x11rb::NONE {
        return Ok(top);
    }
    let mut queue = VecDeque::from([top]);
    while let Some(w) = queue.pop_front() {
        let state = server
            .conn
            .get_property(false, w, atoms.wm_state, AtomEnum::ANY, 0, 0);
        let tree = server.conn.query_tree(w);
        let found = server
            .reply("GetProperty WM_STATE", w, state)
            .map(|r| r.type_ != x11rb::NONE)
            .and_then(|found| Ok((found, server.reply("QueryTree", w, tree)?)));
        match found {
            Ok((true, _)) => return Ok(w),
            Ok((false, tree)) => queue.extend(tree.children),
            // A descendant destroyed meanwhile holds no client.
            Err(e) if w != top && gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(top)
}

/// Everything about `client` but `mapped`, `stacking` and `frame`.
fn describe(
    server: &Server<'_>,
    atoms: &Atoms,
    screen: u32,
    root: Window,
    client: Window,
) -> Result<WindowInfo, X11Error> {
    let conn = server.conn;
    let get = |atom: Atom| conn.get_property(false, client, atom, AtomEnum::ANY, 0, PROPERTY_LONGS);
    let net_name = (atoms.net_wm_name != x11rb::NONE).then(|| get(atoms.net_wm_name));
    let name = get(AtomEnum::WM_NAME.into());
    let class = get(AtomEnum::WM_CLASS.into());
    let pid = (atoms.net_wm_pid != x11rb::NONE).then(|| get(atoms.net_wm_pid));
    let geometry = conn.get_geometry(client);

    let net_name = net_name
        .map(|c| server.reply("GetProperty _NET_WM_NAME", client, c))
        .transpose()?
        .filter(|r| r.type_ == atoms.utf8_string && r.format == 8)
        .map(|r| String::from_utf8_lossy(&r.value).into_owned());
    let name = server.reply("GetProperty WM_NAME", client, name)?;
    let title = net_name.or_else(|| text(&name));
    let class = server.reply("GetProperty WM_CLASS", client, class)?;
    let (instance, class) = match text(&class) {
        Some(t) => {
            let mut parts = t.split('\0');
            let instance = parts.next().map(str::to_string);
            (instance, parts.next().map(str::to_string))
        }
        None => (None, None),
    };
    let pid = pid
        .map(|c| server.reply("GetProperty _NET_WM_PID", client, c))
        .transpose()?
        .filter(|r| r.type_ == u32::from(AtomEnum::CARDINAL))
        .and_then(|r| r.value32().and_then(|mut v| v.next()));
    let geometry = server.reply("GetGeometry", client, geometry)?;
    let border = geometry.border_width as i16;
    // Translate the outer corner: (0, 0) is inside the border.
    let at = server.reply(
        "TranslateCoordinates",
        client,
        conn.translate_coordinates(client, root, -border, -border),
    )?;
    Ok(WindowInfo {
        id: client,
        screen,
        title,
        instance,
        class,
        pid,
        x: at.dst_x.into(),
        y: at.dst_y.into(),
        width: geometry.width.into(),
        height: geometry.height.into(),
        mapped: false,
        stacking: 0,
        frame: None,
    })
}

/// A text property: `STRING` is Latin-1, anything else is taken as UTF-8.
fn text(r: &GetPropertyReply) -> Option<String> {
    if r.type_ == x11rb::NONE || r.format != 8 {
        return None;
    }
    if r.type_ == u32::from(AtomEnum::STRING) {
        Some(r.value.iter().map(|&b| char::from(b)).collect())
    } else {
        Some(String::from_utf8_lossy(&r.value).into_owned())
    }
}

/// One difference between a recorded window list and the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowChange {
    /// Recorded, not there now.
    Missing(WindowInfo),
    /// There now, not recorded.
    Extra(WindowInfo),
    /// The same window (same id) with a field that changed. `window` is the
    /// recorded one.
    Changed {
        window: WindowInfo,
        field: &'static str,
        before: String,
        after: String,
    },
}

/// One readable line, e.g.
/// `window 0x400001 "xterm" (XTerm): geometry 484x316+0+200 -> 484x316+0+210`.
impl fmt::Display for WindowChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(w) => write!(f, "{w}: missing"),
            Self::Extra(w) => write!(f, "{w}: not in the record"),
            Self::Changed {
                window,
                field,
                before,
                after,
            } => write!(f, "{window}: {field} {before} -> {after}"),
        }
    }
}

/// What changed from `recorded` to `now`. Windows match by id (a restored
/// X server keeps its window ids). Order: missing windows, then changes
/// window by window in recorded order, then stacking, then extra windows.
///
/// Stacking compares the relative order of the windows both lists have on
/// the same screen: the windows outside a longest common ordering are the
/// ones that moved, each reported as a change of "stacking order" with its
/// position among those windows (0 = bottom).
pub fn diff(recorded: &[WindowInfo], now: &[WindowInfo]) -> Vec<WindowChange> {
    let now_by_id: HashMap<u32, &WindowInfo> = now.iter().map(|w| (w.id, w)).collect();
    let recorded_ids: HashMap<u32, &WindowInfo> = recorded.iter().map(|w| (w.id, w)).collect();
    let mut out: Vec<WindowChange> = recorded
        .iter()
        .filter(|w| !now_by_id.contains_key(&w.id))
        .map(|w| WindowChange::Missing(w.clone()))
        .collect();

    for before in recorded {
        let Some(after) = now_by_id.get(&before.id) else {
            continue;
        };
        let opt = |v: &Option<String>| v.as_deref().map_or("none".into(), |s| format!("{s:?}"));
        let fields: [(&'static str, String, String); 7] = [
            (
                "screen",
                before.screen.to_string(),
                after.screen.to_string(),
            ),
            ("title", opt(&before.title), opt(&after.title)),
            ("instance", opt(&before.instance), opt(&after.instance)),
            ("class", opt(&before.class), opt(&after.class)),
            (
                "pid",
                before.pid.map_or("none".into(), |p| p.to_string()),
                after.pid.map_or("none".into(), |p| p.to_string()),
            ),
            ("geometry", before.geometry(), after.geometry()),
            (
                "mapped",
                before.mapped.to_string(),
                after.mapped.to_string(),
            ),
        ];
        out.extend(fields.into_iter().filter(|(_, b, a)| b != a).map(
            |(field, before_text, after_text)| WindowChange::Changed {
                window: before.clone(),
                field,
                before: before_text,
                after: after_text,
            },
        ));
        if before.frame != after.frame {
            let frame = |f: Option<u32>| f.map_or("none".into(), |f| format!("{f:#x}"));
            out.push(WindowChange::Changed {
                window: before.clone(),
                field: "frame",
                before: frame(before.frame),
                after: frame(after.frame),
            });
        }
    }

    out.extend(stacking_changes(recorded, &now_by_id));
    out.extend(
        now.iter()
            .filter(|w| !recorded_ids.contains_key(&w.id))
            .map(|w| WindowChange::Extra(w.clone())),
    );
    out
}

/// The "stacking order" changes of [`diff`].
fn stacking_changes(
    recorded: &[WindowInfo],
    now_by_id: &HashMap<u32, &WindowInfo>,
) -> Vec<WindowChange> {
    let mut out = Vec::new();
    let mut screens: Vec<u32> = recorded.iter().map(|w| w.screen).collect();
    screens.sort_unstable();
    screens.dedup();
    for screen in screens {
        // The windows both lists have on this screen, in recorded order and
        // in current order.
        let mut before: Vec<&WindowInfo> = recorded
            .iter()
            .filter(|w| w.screen == screen)
            .filter(|w| now_by_id.get(&w.id).is_some_and(|n| n.screen == screen))
            .collect();
        before.sort_by_key(|w| w.stacking);
        let mut after: Vec<u32> = before.iter().map(|w| w.id).collect();
        after.sort_by_key(|id| now_by_id[id].stacking);
        let after_rank: HashMap<u32, usize> =
            after.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let ranks: Vec<usize> = before.iter().map(|w| after_rank[&w.id]).collect();
        let stayed = longest_increasing(&ranks);
        let n = before.len();
        for (i, w) in before.iter().enumerate() {
            if !stayed[i] {
                out.push(WindowChange::Changed {
                    window: (*w).clone(),
                    field: "stacking order",
                    before: format!("{i} of {n}"),
                    after: format!("{} of {n}", ranks[i]),
                });
            }
        }
    }
    out
}

/// Marks one longest strictly increasing subsequence of `v` (distinct
/// values); O(n²), window lists are short.
fn longest_increasing(v: &[usize]) -> Vec<bool> {
    let mut len = vec![1usize; v.len()];
    let mut prev = vec![usize::MAX; v.len()];
    for i in 0..v.len() {
        for j in 0..i {
            if v[j] < v[i] && len[j] + 1 > len[i] {
                len[i] = len[j] + 1;
                prev[i] = j;
            }
        }
    }
    let mut keep = vec![false; v.len()];
    let mut at = (0..v.len()).max_by_key(|&i| (len[i], std::cmp::Reverse(i)));
    while let Some(i) = at {
        keep[i] = true;
        at = (prev[i] != usize::MAX).then_some(prev[i]);
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(id: u32, title: &str, class: &str, stacking: u32) -> WindowInfo {
        WindowInfo {
            id,
            screen: 0,
            title: Some(title.into()),
            instance: Some(title.into()),
            class: Some(class.into()),
            pid: Some(100 + id),
            x: 0,
            y: 200,
            width: 484,
            height: 316,
            mapped: true,
            stacking,
            frame: None,
        }
    }

    #[test]
    fn same_lists_have_no_difference() {
        let l = vec![win(1, "a", "A", 0), win(2, "b", "B", 1)];
        assert_eq!(diff(&l, &l), vec![]);
    }

    #[test]
    fn reports_missing_extra_changed_and_stacking() {
        let recorded = vec![
            win(0x400001, "xterm", "XTerm", 0),
            win(0x200001, "xeyes", "XEyes", 1),
            win(0x600001, "xclock", "XClock", 2),
            win(0x800001, "xlogo", "XLogo", 3),
        ];
        let mut now = recorded.clone();
        now.retain(|w| w.id != 0x600001);
        now[0].y = 210;
        now[0].mapped = false;
        // xterm raised to the top: it alone moved, the others kept their
        // relative order even though their raw indexes changed.
        now[0].stacking = 9;
        now[1].stacking = 0;
        now[2].stacking = 1;
        let extra = WindowInfo {
            title: None,
            ..win(0x900001, "", "Extra", 5)
        };
        now.push(extra.clone());

        let changes = diff(&recorded, &now);
        let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "window 0x600001 \"xclock\" (XClock): missing",
                "window 0x400001 \"xterm\" (XTerm): geometry 484x316+0+200 -> 484x316+0+210",
                "window 0x400001 \"xterm\" (XTerm): mapped true -> false",
                "window 0x400001 \"xterm\" (XTerm): stacking order 0 of 3 -> 2 of 3",
                "window 0x900001 (Extra): not in the record",
            ]
        );
        assert_eq!(changes[0], WindowChange::Missing(recorded[2].clone()));
        assert_eq!(changes[4], WindowChange::Extra(extra));
        assert!(matches!(
            &changes[1],
            WindowChange::Changed { window, field: "geometry", .. } if window.id == 0x400001
        ));
    }

    #[test]
    fn a_window_lowered_to_the_bottom_is_the_only_one_moved() {
        let recorded = vec![
            win(0x400001, "xterm", "XTerm", 0),
            win(0x200001, "xeyes", "XEyes", 1),
            win(0x600001, "xclock", "XClock", 2),
            win(0x800001, "xlogo", "XLogo", 3),
        ];
        let mut now = recorded.clone();
        now.retain(|w| w.id != 0x600001);
        now[0].y = 210;
        // xlogo lowered to the bottom: only it moved, although every raw
        // index changed.
        now[2].stacking = 0;
        now[0].stacking = 4;
        now[1].stacking = 7;
        now.push(WindowInfo {
            title: None,
            ..win(0x900001, "", "Extra", 9)
        });
        let lines: Vec<String> = diff(&recorded, &now)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            lines,
            [
                "window 0x600001 \"xclock\" (XClock): missing",
                "window 0x400001 \"xterm\" (XTerm): geometry 484x316+0+200 -> 484x316+0+210",
                "window 0x800001 \"xlogo\" (XLogo): stacking order 2 of 3 -> 0 of 3",
                "window 0x900001 (Extra): not in the record",
            ]
        );
    }

    #[test]
    fn texts_and_pids_are_compared() {
        let recorded = vec![win(1, "a", "A", 0)];
        let mut now = recorded.clone();
        now[0].title = None;
        now[0].pid = Some(7);
        now[0].frame = Some(0x1000);
        let lines: Vec<String> = diff(&recorded, &now)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            lines,
            [
                "window 0x1 \"a\" (A): title \"a\" -> none",
                "window 0x1 \"a\" (A): pid 101 -> 7",
                "window 0x1 \"a\" (A): frame none -> 0x1000",
            ]
        );
    }

    #[test]
    fn longest_increasing_keeps_the_unmoved() {
        assert_eq!(longest_increasing(&[2, 0, 1]), [false, true, true]);
        assert_eq!(longest_increasing(&[0, 1, 2]), [true, true, true]);
        assert_eq!(longest_increasing(&[]), Vec::<bool>::new());
    }
}
