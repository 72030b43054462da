//! Which virtual terminal an X display is shown on: what the offer at
//! login tells the user to press (Ctrl+Alt+F<n>) to reach a restored
//! session. Read from /proc as the user, who owns the X servers of its
//! sessions: the display's listening socket in /proc/net/unix, the process
//! holding it, then the VT it holds open (/dev/ttyN) or was started on
//! (`vtN` on its command line). None when any of it cannot be known, as
//! for a virtual X server (Xvfb) on no VT.

use std::fs;

/// The inodes of the sockets listening for display `display`, from the
/// text of /proc/net/unix (its path socket and its abstract name).
fn listener_inodes(net_unix: &str, display: u32) -> Vec<u64> {
    let path = format!("/tmp/.X11-unix/X{display}");
    let abstract_name = format!("@{path}");
    net_unix
        .lines()
        .skip(1)
        .filter_map(|l| {
            // Num RefCount Protocol Flags Type St Inode [Path]
            let f: Vec<&str> = l.split_whitespace().collect();
            let listening = f.get(3) == Some(&"00010000");
            let named = f.get(7).is_some_and(|p| *p == path || *p == abstract_name);
            if listening && named {
                f.get(6)?.parse().ok()
            } else {
                None
            }
        })
        .collect()
}

/// The VT a tty device path names: `/dev/tty7` is 7; `/dev/tty` and
/// `/dev/tty0` (the current one) name none.
fn vt_of_tty(path: &str) -> Option<u32> {
    let n: u32 = path.strip_prefix("/dev/tty")?.parse().ok()?;
    (n > 0).then_some(n)
}

/// `vtN` among an X server's arguments (/proc/PID/cmdline, NUL-separated).
fn vt_of_args(cmdline: &[u8]) -> Option<u32> {
    cmdline
        .split(|b| *b == 0)
        .filter_map(|a| {
            std::str::from_utf8(a)
                .ok()?
                .strip_prefix("vt")?
                .parse()
                .ok()
        })
        .find(|n: &u32| *n > 0)
}

/// The process holding one of `inodes` among those this user may look at.
fn holder(inodes: &[u64]) -> Option<u32> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for proc_entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                if wanted.iter().any(|w| target.as_os_str() == w.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// The VT display `display` (":N") is shown on, when it can be known.
pub fn vt_of_display(display: &str) -> Option<u32> {
    let n: u32 = display.strip_prefix(':')?.split('.').next()?.parse().ok()?;
    let inodes = listener_inodes(&fs::read_to_string("/proc/net/unix").ok()?, n);
    if inodes.is_empty() {
        return None;
    }
    let pid = holder(&inodes)?;
    let from_fds = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| vt_of_tty(fs::read_link(fd.path()).ok()?.to_str()?))
        .next();
    from_fds.or_else(|| vt_of_args(&fs::read(format!("/proc/{pid}/cmdline")).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /proc/net/unix of a machine with Xorg on :0 and Xvfb on :1.
    const NET_UNIX: &str = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 23456 @/tmp/.X11-unix/X0
0000000000000000: 00000002 00000000 00010000 0001 01 23457 /tmp/.X11-unix/X0
0000000000000000: 00000003 00000000 00000000 0001 03 23460 /tmp/.X11-unix/X0
0000000000000000: 00000002 00000000 00010000 0001 01 30001 @/tmp/.X11-unix/X1
0000000000000000: 00000002 00000000 00010000 0001 01 30002 /tmp/.X11-unix/X10
0000000000000000: 00000003 00000000 00000000 0001 03 30005
";

    #[test]
    fn listeners_of_one_display_only() {
        assert_eq!(listener_inodes(NET_UNIX, 0), [23456, 23457]);
        assert_eq!(listener_inodes(NET_UNIX, 1), [30001]);
        assert_eq!(listener_inodes(NET_UNIX, 10), [30002]);
        assert!(listener_inodes(NET_UNIX, 2).is_empty());
    }

    #[test]
    fn vts_from_ttys_and_arguments() {
        assert_eq!(vt_of_tty("/dev/tty7"), Some(7));
        assert_eq!(vt_of_tty("/dev/tty0"), None);
        assert_eq!(vt_of_tty("/dev/tty"), None);
        assert_eq!(vt_of_tty("/dev/ttyS0"), None);
        assert_eq!(vt_of_tty("/dev/pts/3"), None);
        assert_eq!(
            vt_of_args(b"/usr/lib/xorg/Xorg\0:1\0-nolisten\0tcp\0vt2\0-novtswitch\0"),
            Some(2)
        );
        assert_eq!(vt_of_args(b"Xvfb\0:5\0-screen\0"), None);
    }
}
