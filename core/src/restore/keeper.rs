//! The restore root: the process that forks the tree's roots, watches the
//! restorer through the release pipe until the commit, and then exits or
//! stays as the session's keeper (a child subreaper running the uevent
//! proxy) or as the init of a new pid namespace.

use super::error::{RestoreError, Result};
use super::node::{self, Shared, TreeSpec};
use super::plan::NodeKind;
use crate::uevent::proxy::Proxy;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

/// What the restore root does once the tree runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RootRole {
    /// Exit: the roots become the caller's children.
    Exit,
    /// Stay as a child subreaper until the session's last process ends.
    Keeper,
    /// Stay as the new pid namespace's init.
    NamespaceInit,
}

/// Fork the restore root (in pid-namespace mode through an intermediate
/// that exits, so the keeper is not our child).
pub(super) fn spawn_root(
    spec: &TreeSpec<'_>,
    shared: &Shared,
    pidns: bool,
    keeper: bool,
    proxy: Option<&Proxy>,
) -> Result<i32> {
    let err = |source| RestoreError::Os {
        what: "forking the restore root",
        source,
    };
    own_session_keyring()?;
    if !pidns {
        let role = if keeper {
            RootRole::Keeper
        } else {
            RootRole::Exit
        };
        // No parent-death signal for the root: it watches the restorer
        // through the release pipe instead, so that it can still take the
        // tree down when the restorer dies among the detaches.
        return match node::clone_with_pid(0, 0).map_err(err)? {
            0 => node::child_main(|| root_main(spec, shared, role, proxy)),
            pid => Ok(pid),
        };
    }
    let restorer = node::parent_for(0);
    match node::clone_with_pid(0, 0).map_err(err)? {
        0 => node::child_main(|| {
            node::die_with_parent(restorer);
            match node::clone_with_pid(0, libc::CLONE_NEWPID as u64) {
                // The namespace's init: its parent (this intermediate) ends
                // on purpose, so it cannot die with it; it watches the
                // release pipe like any restore root.
                Ok(0) => root_main(spec, shared, RootRole::NamespaceInit, proxy),
                Ok(pid) => {
                    shared.area().root_pid.store(pid, Ordering::Release);
                    // SAFETY: ends the intermediate.
                    unsafe { libc::_exit(0) }
                }
                Err(_) => {
                    shared.area().failed.fetch_add(1, Ordering::AcqRel);
                    // SAFETY: ends the intermediate.
                    unsafe { libc::_exit(1) }
                }
            }
        }),
        mid => {
            let mut st = 0;
            // SAFETY: reaping our own intermediate child.
            unsafe { libc::waitpid(mid, &mut st, 0) };
            match shared.area().root_pid.load(Ordering::Acquire) {
                0 => Err(RestoreError::Os {
                    what: "creating a pid namespace",
                    source: std::io::Error::from_raw_os_error(libc::EPERM),
                }),
                pid => Ok(pid),
            }
        }
    }
}

/// Give this thread, and so the tree it forks, a new empty session
/// keyring: the restorer's own (root's login keyring, or hiberd's shared
/// by every session it restores) must not be possessed by a user's
/// restored processes. The saved processes' keyrings are not saved; they
/// come back with an empty one.
pub(super) fn own_session_keyring() -> Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with an operation number and a null name (anonymous).
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // A kernel without keyrings has none to share.
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(RestoreError::Os {
                what: "making the restored tree a session keyring of its own",
                source: e,
            });
        }
    }
    Ok(())
}

/// The restore root: forks the roots of the tree, then waits; as a
/// keeper it stays, reaping orphans until the last process of the session
/// is gone, and runs the session's uevent proxy meanwhile.
pub(super) fn root_main(
    spec: &TreeSpec<'_>,
    shared: &Shared,
    role: RootRole,
    proxy: Option<&Proxy>,
) -> ! {
    // Only the restorer may hold the writer: its hang-up is the signal.
    // SAFETY: closing our copy of the restorer's fd.
    unsafe { libc::close(spec.release_writer) };
    let keeper = role != RootRole::Exit;
    if keeper {
        // SAFETY: prctl on ourselves.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"hiber-keeper".as_ptr()) };
    }
    if role == RootRole::Keeper {
        // Orphans of the session come to us rather than to init.
        // SAFETY: prctl on ourselves, plain integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let forked = node::fork_children(spec, shared, None);
    if !await_done(spec, shared) {
        abandon(spec, shared);
    }
    for &(child, pid) in &forked {
        if !matches!(spec.plan.nodes[child].kind, NodeKind::Process(_)) {
            let mut st = 0;
            // SAFETY: reaping our own helper child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
        }
    }
    if keeper {
        // Close everything: the keeper holds nothing of the session, only
        // the proxy's sockets.
        close_all_but(&proxy.map(Proxy::fds).unwrap_or_default());
        if role == RootRole::Keeper {
            // Leave the caller's session, so its terminal's hang-up or ^C
            // does not end the keeper. Every node is forked by now, so
            // none joins this session by mistake.
            // SAFETY: setsid on ourselves; we are not a group leader.
            unsafe { libc::setsid() };
        }
        match proxy {
            Some(proxy) => keep_with_proxy(proxy),
            None => reap_until_none(),
        }
    }
    // SAFETY: ends the restore root.
    unsafe { libc::_exit(0) }
}

/// Close every fd of this process but `keep`.
pub(super) fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep.iter().map(|&f| f as u32).collect();
    keep.sort_unstable();
    let mut lo = 0u32;
    for k in keep {
        if k > lo {
            // SAFETY: closing our own fds in [lo, k).
            unsafe { libc::syscall(libc::SYS_close_range, lo, k - 1, 0) };
        }
        lo = k + 1;
    }
    // SAFETY: as above, from lo up.
    unsafe { libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0) };
}

/// Reap every child until none is left.
pub(super) fn reap_until_none() {
    loop {
        let mut st = 0;
        // SAFETY: reaping any child; ECHILD ends the loop.
        if unsafe { libc::waitpid(-1, &mut st, libc::__WALL) } < 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
        {
            return;
        }
    }
}

/// Reap children without blocking; false once none is left.
pub(super) fn reap_ready() -> bool {
    loop {
        let mut st = 0;
        // SAFETY: non-blocking reap of any child.
        match unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG | libc::__WALL) } {
            0 => return true,
            r if r > 0 => continue,
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            _ => return false,
        }
    }
}

/// The keeper's life with a uevent proxy: replay the synthetic sequence,
/// then wait on both the host's events and SIGCHLD (through a signalfd)
/// until the session's last process is gone.
pub(super) fn keep_with_proxy(proxy: &Proxy) {
    use tracing::warn;
    if let Err(e) = proxy.enter_namespace() {
        warn!(error = %e, "the keeper stays in the host's network namespace");
    }
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain signal-mask calls on a local set and on ourselves;
    // SIGCHLD back to default so children stay to be reaped.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // SAFETY: signalfd with a valid set; returns a new fd or -1.
    let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if let Err(e) = proxy.replay() {
        warn!(error = %e, "replaying the synthetic uevent sequence");
    }
    if sfd < 0 {
        warn!(error = %std::io::Error::last_os_error(), "no signalfd: real uevents are not forwarded");
        // SAFETY: unblocking SIGCHLD again for the plain reaping loop.
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
        return reap_until_none();
    }
    let mut host = proxy.host_fd();
    // A SIGCHLD of a child reaped here stays pending: the signalfd wakes
    // the poll and the reaping finds nothing, which is fine.
    while reap_ready() {
        let mut fds = [
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: host,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on two valid pollfds (a negative fd is ignored).
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            let mut info = [0u8; 128];
            // SAFETY: reading signalfd_siginfo records into a local buffer.
            while unsafe { libc::read(sfd, info.as_mut_ptr().cast(), info.len()) } > 0 {}
        }
        if fds[1].revents != 0 {
            if let Err(e) = proxy.forward_pending() {
                // A socket that keeps failing would spin: stop listening.
                warn!(error = %e, "the uevent proxy stops forwarding");
                host = -1;
            }
        }
    }
}

/// The restore root's wait for the commit: true once the restorer has
/// committed the tree, false when it let go of it without committing (an
/// abort, or its death). Bounded by the restorer's life: the release pipe
/// hangs up when it ends, whatever ends it.
pub(super) fn await_done(spec: &TreeSpec<'_>, shared: &Shared) -> bool {
    loop {
        match shared.area().stage.load(Ordering::Acquire) {
            node::STAGE_DONE => return true,
            node::STAGE_ABORT => return false,
            _ => {}
        }
        // Helpers exit at SETUP; reap them as they go so none lingers.
        let mut st = 0;
        // SAFETY: non-blocking reap of our own children.
        unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG | libc::__WALL) };
        let mut pfd = libc::pollfd {
            fd: spec.release,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } > 0 && pfd.revents != 0 {
            // The restorer stores DONE before it lets go: what it left is
            // final.
            return shared.area().stage.load(Ordering::Acquire) == node::STAGE_DONE;
        }
    }
}

/// The restorer let go of the tree without committing it (it died, or
/// aborted): take down what it built and end. The nodes die with us (their
/// parent-death signal), the seized tasks died with the restorer
/// (EXITKILL); only tasks it had already detached run on their own, so
/// during the release every process of the tree is killed by pid.
pub(super) fn abandon(spec: &TreeSpec<'_>, shared: &Shared) -> ! {
    let stage = shared.area().stage.load(Ordering::Acquire);
    shared.set_stage(node::STAGE_ABORT);
    if stage == node::STAGE_RELEASE {
        for (i, n) in spec.plan.nodes.iter().enumerate() {
            let pid = shared.slot(i).pid.load(Ordering::Acquire);
            if matches!(n.kind, NodeKind::Process(_)) && pid > 0 {
                // SAFETY: kill of a process of this tree, which recorded
                // its pid itself; none of them has been reaped yet.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    for id in shared.made_sysv() {
        // SAFETY: removing a segment this restore made; no pointer passed.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    }
    tracing::debug!(
        stage,
        "the restorer let go before the commit: tree taken down"
    );
    // SAFETY: ends the restore root; the tree below dies with it.
    unsafe { libc::_exit(1) }
}
