//! The restored session's private network namespace and its uevent proxy.
//!
//! A netlink socket belongs to the network namespace it was created in,
//! and uevent broadcasts from userspace stay in the sender's namespace.
//! So the session's `NETLINK_KOBJECT_UEVENT` sockets are created in a
//! namespace of their own ([`SessionNet`]; the processes themselves and
//! their other sockets stay in the host's), and the [`Proxy`], run by the
//! session keeper, speaks there:
//!
//! - first the synthetic sequence: a cold-plug `add` for every device
//!   present now in the subsystems of the detached devices, then the
//!   stored `remove`s, then an `add` again for each removed device that is
//!   present now (so the session's last word on it matches the machine);
//!   each event on group 1 in the kernel's format and on group 2 in
//!   libudev's;
//! - then real events: the kernel's own (group 1) reach a namespace owned
//!   by the initial user namespace directly, so they are not repeated on
//!   group 1; with no udevd on the host, the proxy translates each into
//!   libudev's format on group 2, standing in for udevd's rebroadcast; with
//!   a udevd (`/run/udev/control` exists) it forwards udevd's group-2
//!   messages as they are instead.

use super::NETLINK_KOBJECT_UEVENT;
use super::{kernel, libudev, sysfs, Uevent, UeventError, GROUP_KERNEL, GROUP_UDEV, MAX_MESSAGE};
use crate::sys::ns;
use crate::sys::socket::{self, new_socket, setsockopt_int};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use tracing::{debug, info, warn};

type Result<T> = std::result::Result<T, UeventError>;

/// Most events one synthetic sequence may hold (detached events from the
/// image plus the devices present).
pub const MAX_SEQUENCE: usize = 16384;

/// A network namespace made for one restored session, held by an fd.
#[derive(Debug)]
pub struct SessionNet {
    ns: OwnedFd,
}

fn ns_err(op: &'static str) -> impl FnOnce(io::Error) -> UeventError {
    move |source| UeventError::Namespace { op, source }
}

impl SessionNet {
    /// Create the namespace. `unshare(CLONE_NEWNET)` moves only the
    /// calling thread, so a helper thread does it and hands back an fd.
    pub fn create() -> Result<Self> {
        let ns = std::thread::scope(|s| {
            s.spawn(|| -> Result<OwnedFd> {
                // It changes only this helper thread, which ends right after.
                ns::unshare(libc::CLONE_NEWNET).map_err(ns_err("unshare(CLONE_NEWNET)"))?;
                let f = std::fs::File::open("/proc/thread-self/ns/net")
                    .map_err(ns_err("opening /proc/thread-self/ns/net"))?;
                Ok(OwnedFd::from(f))
            })
            .join()
            .map_err(|_| ns_err("helper thread")(io::Error::other("panicked")))?
        })?;
        debug!(
            fd = ns.as_raw_fd(),
            "created the session's network namespace"
        );
        Ok(Self { ns })
    }

    /// Run `f` on a helper thread inside the namespace (sockets it creates
    /// belong there for good).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let ns = &self.ns;
        std::thread::scope(|s| {
            s.spawn(|| -> Result<T> {
                // Changes only this helper thread.
                ns::setns(ns, libc::CLONE_NEWNET).map_err(ns_err("setns"))?;
                Ok(f())
            })
            .join()
            .map_err(|_| ns_err("helper thread")(io::Error::other("panicked")))?
        })
    }
}

/// The synthetic sequence, pure: cold-plug adds of the detached devices'
/// subsystems (`present` lists a subsystem's devices), the stored events,
/// then adds again for stored removes of devices present now. Events
/// without a SEQNUM get `seqnum` (libudev drops an event numbered 0).
pub fn synthetic_sequence(
    detached: &[Uevent],
    present: &mut dyn FnMut(&str) -> Vec<Uevent>,
    seqnum: u64,
) -> Vec<Uevent> {
    let mut subsystems: Vec<&str> = Vec::new();
    for ev in detached {
        if !subsystems.contains(&ev.subsystem.as_str()) {
            subsystems.push(&ev.subsystem);
        }
    }
    let adds: Vec<Uevent> = subsystems.iter().flat_map(|s| present(s)).collect();
    let readds: Vec<Uevent> = detached
        .iter()
        .filter(|ev| ev.action == "remove")
        .filter_map(|ev| adds.iter().find(|a| a.devpath == ev.devpath).cloned())
        .collect();
    let mut seq: Vec<Uevent> = adds
        .iter()
        .cloned()
        .chain(detached.iter().cloned())
        .chain(readds)
        .take(MAX_SEQUENCE)
        .collect();
    for ev in &mut seq {
        if ev.seqnum == 0 {
            ev.seqnum = seqnum.max(1);
        }
    }
    seq
}

/// CLOCK_MONOTONIC in µs: udev's clock for USEC_INITIALIZED.
fn usec_now() -> u64 {
    let ts = crate::sys::time::monotonic();
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

fn sock_err(op: &'static str) -> impl FnOnce(io::Error) -> UeventError {
    move |source| UeventError::Socket { op, source }
}

/// A uevent socket, bound to `groups` when there are any.
fn uevent_socket(groups: u32) -> io::Result<OwnedFd> {
    let fd = new_socket(
        libc::AF_NETLINK,
        libc::SOCK_RAW | libc::SOCK_NONBLOCK,
        NETLINK_KOBJECT_UEVENT,
    )?;
    if groups != 0 {
        socket::bind_netlink(&fd, groups)?;
    }
    Ok(fd)
}

/// One session's proxy: built by the restorer, run by the keeper.
#[derive(Debug)]
pub struct Proxy {
    /// Listens in the host namespace (group 1, or 2 with a udevd).
    host: OwnedFd,
    /// Sends inside the session's namespace.
    session: OwnedFd,
    /// The session's namespace, which the keeper joins.
    ns: OwnedFd,
    /// A udevd broadcasts on the host: forward its messages as they are.
    host_udevd: bool,
    detached: Vec<Uevent>,
}

impl Proxy {
    /// Open the proxy's sockets now, so that real events from this moment
    /// on wait in the host socket until the keeper forwards them.
    pub fn new(net: &SessionNet, detached: Vec<Uevent>) -> Result<Self> {
        let host_udevd = Path::new("/run/udev/control").exists();
        let group = if host_udevd { GROUP_UDEV } else { GROUP_KERNEL };
        let host = uevent_socket(group).map_err(sock_err("listening on the host"))?;
        // Bursts (a dock plugged in) must not overflow while the keeper is
        // busy; FORCE needs CAP_NET_ADMIN, the plain option is the fallback.
        let fd = host.as_raw_fd();
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
        }
        let session = net
            .run(|| uevent_socket(0))?
            .map_err(sock_err("creating the sender in the session's namespace"))?;
        let ns = net
            .ns
            .try_clone()
            .map_err(ns_err("duplicating the namespace fd"))?;
        info!(host_udevd, detached = detached.len(), "uevent proxy ready");
        Ok(Self {
            host,
            session,
            ns,
            host_udevd,
            detached,
        })
    }

    /// Every fd the proxy needs: the keeper keeps these when it closes
    /// the rest.
    pub fn fds(&self) -> [RawFd; 3] {
        [
            self.host.as_raw_fd(),
            self.session.as_raw_fd(),
            self.ns.as_raw_fd(),
        ]
    }

    /// The fd to poll for real events.
    pub fn host_fd(&self) -> RawFd {
        self.host.as_raw_fd()
    }

    /// Move the calling process (the single-threaded keeper) into the
    /// session's namespace: it holds it, and `nsenter --net=/proc/KEEPER/ns/net`
    /// reaches it.
    pub fn enter_namespace(&self) -> Result<()> {
        ns::setns(&self.ns, libc::CLONE_NEWNET).map_err(ns_err("joining it"))
    }

    fn send(&self, msg: &[u8], group: u32) -> Result<()> {
        match socket::send_to_group(&self.session, msg, group) {
            // A multicast send reports ECONNREFUSED as libudev's does: delivered.
            Err(err) if err.raw_os_error() != Some(libc::ECONNREFUSED) => {
                Err(sock_err("sending into the session")(err))
            }
            _ => Ok(()),
        }
    }

    /// Send `ev` in the kernel's format on group 1 (synthetic events only:
    /// the kernel's own reach the session directly) and in libudev's on
    /// group 2.
    fn send_event(&self, ev: &Uevent, group1: bool) -> Result<()> {
        if group1 {
            self.send(&kernel::encode(ev)?, GROUP_KERNEL)?;
        }
        self.send(&libudev::encode(ev, usec_now())?, GROUP_UDEV)
    }

    /// Send the synthetic sequence into the session.
    pub fn replay(&self) -> Result<()> {
        let seqnum = std::fs::read_to_string("/sys/kernel/uevent_seqnum")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        let mut present = |subsystem: &str| {
            sysfs::present(Path::new("/sys"), subsystem).unwrap_or_else(|e| {
                warn!(subsystem, error = %e, "listing the devices present");
                Vec::new()
            })
        };
        let seq = synthetic_sequence(&self.detached, &mut present, seqnum);
        for ev in &seq {
            debug!(action = %ev.action, devpath = %ev.devpath, "replaying");
            self.send_event(ev, true)?;
        }
        info!(events = seq.len(), "synthetic uevent sequence sent");
        Ok(())
    }

    /// Forward every real event waiting on the host socket; returns when
    /// none is left. Malformed messages are dropped.
    pub fn forward_pending(&self) -> Result<()> {
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        loop {
            // MSG_TRUNC makes it return the real length of a longer message.
            let got =
                socket::recv_netlink(&self.host, &mut buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC);
            let (n, from) = match got {
                Ok(got) => got,
                Err(err) => match err.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(()),
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        warn!("host uevents overflowed the proxy's buffer; some were lost");
                        continue;
                    }
                    _ => return Err(sock_err("receiving on the host")(err)),
                },
            };
            if n > MAX_MESSAGE {
                debug!(len = n, "dropping an oversized uevent");
                continue;
            }
            if let Err(e) = self.forward(&buf[..n], from) {
                debug!(error = %e, "not forwarded");
            }
        }
    }

    /// `from`: the sender's port id (0: the kernel).
    fn forward(&self, msg: &[u8], from: u32) -> Result<()> {
        if self.host_udevd {
            // udevd's message: checked, then passed on untouched.
            let ev = libudev::decode(msg)?;
            debug!(action = %ev.action, devpath = %ev.devpath, "forwarding udevd's event");
            return self.send(msg, GROUP_UDEV);
        }
        if from != 0 {
            // Group 1 from a process, not the kernel: libudev ignores those too.
            return Ok(());
        }
        let ev = kernel::decode(msg)?;
        debug!(action = %ev.action, devpath = %ev.devpath, "translating a kernel event");
        self.send_event(&ev, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(action: &str, name: &str) -> Uevent {
        Uevent {
            action: action.into(),
            devpath: format!("/devices/virtual/mem/{name}"),
            subsystem: "mem".into(),
            ..Default::default()
        }
    }

    #[test]
    fn sequence_is_cold_plug_then_removes_then_present_again() {
        let detached = vec![dev("remove", "zero"), dev("remove", "gone")];
        let mut asked = Vec::new();
        let mut present = |s: &str| {
            asked.push(s.to_string());
            vec![dev("add", "null"), dev("add", "zero")]
        };
        let seq = synthetic_sequence(&detached, &mut present, 42);
        let got: Vec<(String, String)> = seq
            .iter()
            .map(|e| {
                (
                    e.action.clone(),
                    e.devpath.rsplit('/').next().unwrap().into(),
                )
            })
            .collect();
        let want = [
            ("add", "null"),
            ("add", "zero"),
            ("remove", "zero"),
            ("remove", "gone"),
            ("add", "zero"),
        ];
        assert_eq!(
            got,
            want.map(|(a, d)| (a.to_string(), d.to_string())).to_vec()
        );
        // One listing per subsystem; synthetic events numbered.
        assert_eq!(asked, ["mem"]);
        assert!(seq.iter().all(|e| e.seqnum == 42));
    }

    #[test]
    fn no_detached_devices_no_sequence() {
        let mut present = |_: &str| -> Vec<Uevent> { panic!("nothing to list") };
        assert!(synthetic_sequence(&[], &mut present, 1).is_empty());
    }
}
