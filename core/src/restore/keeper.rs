//! The restore root: the process that forks the tree's roots, watches the
//! restorer through the release pipe until the commit, and then exits or
//! stays as the session's keeper (a child subreaper running the uevent
//! proxy) or as the init of a new pid namespace.

use super::error::{RestoreError, Result};
use super::node::{self, LazySpec, Shared, TreeSpec};
use super::plan::NodeKind;
use crate::memory::lazy::{self, LazyProcess, LazyStatus};
use crate::sys::fd::{close_of, close_range_of};
use crate::sys::process::{self, exit_now};
use crate::sys::wrap::WrapIoResult;
use crate::uevent::proxy::Proxy;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
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
        return match node::clone_with_pid(0, 0).doing("forking the restore root")? {
            0 => node::child_main(|| root_main(spec, shared, role, proxy)),
            pid => Ok(pid),
        };
    }
    let restorer = node::parent_for(0);
    match node::clone_with_pid(0, 0).doing("forking the restore root")? {
        0 => node::child_main(|| {
            node::die_with_parent(restorer);
            match node::clone_with_pid(0, libc::CLONE_NEWPID as u64) {
                // The namespace's init: its parent (this intermediate) ends
                // on purpose, so it cannot die with it; it watches the
                // release pipe like any restore root.
                Ok(0) => root_main(spec, shared, RootRole::NamespaceInit, proxy),
                Ok(pid) => {
                    shared.area().root_pid.store(pid, Ordering::Release);
                    exit_now(0)
                }
                Err(_) => {
                    shared.area().failed.fetch_add(1, Ordering::AcqRel);
                    exit_now(1)
                }
            }
        }),
        mid => {
            // Our own intermediate child.
            process::reap(mid);
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
    if let Err(e) = crate::sys::keyring::join_new_session_keyring() {
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
    // Our copy of the restorer's fd.
    let _ = close_of(spec.release_writer);
    if let Some(l) = &spec.lazy {
        // Our copy of the restorer's end.
        let _ = close_of(l.restorer_end);
    }
    let keeper = role != RootRole::Exit;
    if keeper {
        let _ = process::set_name(c"hiber-keeper");
    }
    if role == RootRole::Keeper {
        // Orphans of the session come to us rather than to init.
        let _ = process::set_child_subreaper();
    }
    let forked = node::fork_children(spec, shared, None);
    if !await_done(spec, shared) {
        abandon(spec, shared);
    }
    for &(child, pid) in &forked {
        if !matches!(spec.plan.nodes[child].kind, NodeKind::Process(_)) {
            // Our own helper child.
            process::reap(pid);
        }
    }
    let mut lazy = spec.lazy.as_ref().and_then(|l| start_lazy(spec, l, role));
    if keeper {
        // Close everything: the keeper holds nothing of the session, only
        // the proxy's sockets and its references to the uffds.
        let mut keep: Vec<RawFd> = proxy.map(|p| p.fds().to_vec()).unwrap_or_default();
        keep.extend(
            lazy.iter()
                .flat_map(|l| l.uffds.iter().map(|u| u.as_raw_fd())),
        );
        close_all_but(&keep);
        if role == RootRole::Keeper {
            // Leave the caller's session, so its terminal's hang-up or ^C
            // does not end the keeper. Every node is forked by now, so
            // none joins this session by mistake.
            // We are not a group leader.
            let _ = process::setsid();
        }
        match proxy {
            Some(proxy) => keep_with_proxy(proxy, &mut lazy),
            None => reap_until_none(&mut lazy),
        }
    }
    exit_now(0)
}

/// Close every fd of this process but `keep`.
pub(super) fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep.iter().map(|&f| f as u32).collect();
    keep.sort_unstable();
    let mut lo = 0u32;
    for k in keep {
        if k > lo {
            let _ = close_range_of(lo, k - 1);
        }
        lo = k + 1;
    }
    let _ = close_range_of(lo, u32::MAX);
}

/// Reap every child until none is left (the page server of a lazy
/// restore is one of them).
pub(super) fn reap_until_none(lazy: &mut Option<LazyWatch>) {
    loop {
        // ECHILD ends the loop.
        match process::wait_any(libc::__WALL) {
            Ok((pid, st)) if pid > 0 => reaped(lazy, pid, st),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            _ => return,
        }
    }
}

/// Reap children without blocking; false once none is left.
pub(super) fn reap_ready(lazy: &mut Option<LazyWatch>) -> bool {
    loop {
        match process::wait_any(libc::WNOHANG | libc::__WALL) {
            Ok((0, _)) => return true,
            Ok((pid, st)) => reaped(lazy, pid, st),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// The keeper's life with a uevent proxy: replay the synthetic sequence,
/// then wait on both the host's events and SIGCHLD (through a signalfd)
/// until the session's last process is gone.
pub(super) fn keep_with_proxy(proxy: &Proxy, lazy: &mut Option<LazyWatch>) {
    use tracing::warn;
    if let Err(e) = proxy.enter_namespace() {
        warn!(error = %e, "the keeper stays in the host's network namespace");
    }
    // SIGCHLD back to default so children stay to be reaped.
    let _ = crate::sys::signal::set_default(libc::SIGCHLD);
    let _ = crate::sys::signal::block(libc::SIGCHLD);
    // The kernel's sigset: bit n-1 for signal n.
    let sigchld = 1u64 << (libc::SIGCHLD - 1);
    let sfd = crate::sys::event::signalfd(sigchld, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
    if let Err(e) = proxy.replay() {
        warn!(error = %e, "replaying the synthetic uevent sequence");
    }
    let sfd = match sfd {
        Ok(sfd) => sfd,
        Err(e) => {
            warn!(error = %e, "no signalfd: real uevents are not forwarded");
            // The plain reaping loop needs SIGCHLD unblocked again.
            let _ = crate::sys::signal::unblock(libc::SIGCHLD);
            return reap_until_none(lazy);
        }
    };
    let mut host = proxy.host_fd();
    // A SIGCHLD of a child reaped here stays pending: the signalfd wakes
    // the poll and the reaping finds nothing, which is fine.
    while reap_ready(lazy) {
        let mut fds = [
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: host,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // A negative fd is ignored.
        if crate::sys::event::poll(&mut fds, -1).is_err() {
            continue;
        }
        if fds[0].revents != 0 {
            // signalfd_siginfo records, read to empty it.
            let mut info = [0u8; 128];
            while matches!(crate::sys::fd::read(sfd.as_raw_fd(), &mut info), Ok(n) if n > 0) {}
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
        // Our own children, without blocking.
        let _ = process::wait_any(libc::WNOHANG | libc::__WALL);
        if crate::sys::event::poll_one(spec.release, libc::POLLIN, 50).is_ok_and(|r| r != 0) {
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
                // A process of this tree, which recorded its pid itself;
                // none of them has been reaped yet.
                let _ = process::kill(pid, libc::SIGKILL);
            }
        }
    }
    for id in shared.made_sysv() {
        // A segment this restore made.
        let _ = crate::sys::shm::remove(id);
    }
    tracing::debug!(
        stage,
        "the restorer let go before the commit: tree taken down"
    );
    // The tree below dies with the restore root.
    exit_now(1)
}

/// A lazy restore's watch in the keeper: its own reference to every uffd
/// (so the kernel never unregisters a range while the server runs) and
/// the page server, its child.
pub(super) struct LazyWatch {
    server: i32,
    uffds: Vec<OwnedFd>,
    status: PathBuf,
    pidns: bool,
}

/// Each lazy process's uffd, with the index of its saved process and its pid.
pub(super) type Uffds = Vec<(usize, i32, OwnedFd)>;

/// Most uffds in one message (SCM_MAX_FD is 253).
const UFFDS_PER_MESSAGE: usize = 128;

/// The restorer's half: send the keeper each lazy process's uffd with the
/// index of its saved process and its pid, before the commit.
pub(super) fn send_uffds(sock: RawFd, uffds: &[(usize, i32, OwnedFd)]) -> std::io::Result<()> {
    for batch in uffds.chunks(UFFDS_PER_MESSAGE) {
        let mut payload = Vec::with_capacity(batch.len() * 8);
        for (index, pid, _) in batch {
            payload.extend_from_slice(&(*index as u32).to_ne_bytes());
            payload.extend_from_slice(&pid.to_ne_bytes());
        }
        let fds: Vec<RawFd> = batch.iter().map(|(_, _, fd)| fd.as_raw_fd()).collect();
        crate::sys::socket::send_with_fds(sock, &payload, &fds, libc::MSG_NOSIGNAL)?;
    }
    Ok(())
}

/// The keeper's half: every uffd the restorer sent, with its saved
/// process's index and pid. The restorer sent them before the commit, so
/// they are all queued by now: never waits.
fn receive_uffds(sock: RawFd) -> Uffds {
    let mut out = Vec::new();
    loop {
        let mut payload = [0u8; UFFDS_PER_MESSAGE * 8];
        let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
        let (n, fds) =
            match crate::sys::socket::recv_with_fds(sock, &mut payload, UFFDS_PER_MESSAGE, flags) {
                Ok((n, fds)) if n > 0 => (n, fds),
                _ => return out,
            };
        for (entry, fd) in payload[..n].chunks_exact(8).zip(fds) {
            let index = u32::from_ne_bytes(entry[..4].try_into().expect("4 bytes")) as usize;
            let pid = i32::from_ne_bytes(entry[4..].try_into().expect("4 bytes"));
            out.push((index, pid, fd));
        }
    }
}

/// After the commit of a lazy restore: take the uffds, fork the page
/// server, keep a reference to each uffd. None when no process has lazy
/// memory. A server that cannot start is a server that died: the lazy
/// tree is killed.
fn start_lazy(spec: &TreeSpec<'_>, l: &LazySpec<'_>, role: RootRole) -> Option<LazyWatch> {
    let received = receive_uffds(l.keeper_end);
    // Our end: the restorer sent everything before the commit.
    let _ = close_of(l.keeper_end);
    if received.is_empty() {
        return None;
    }
    let pidns = role == RootRole::NamespaceInit;
    let status = l.status.to_path_buf();
    // This keeper is single-threaded.
    match process::fork() {
        Ok(0) => server_main(spec, l, received),
        Err(e) => {
            fail_lazy(
                &status,
                pidns,
                &format!("the page server could not start: {e}"),
            );
            None
        }
        Ok(server) => Some(LazyWatch {
            server,
            uffds: received.into_iter().map(|(_, _, fd)| fd).collect(),
            status,
            pidns,
        }),
    }
}

/// The page server: its own session, nothing of the session's files
/// (its stdio goes to /dev/null: the restorer's caller waits for its
/// output pipes to close), the uffds and the image's packs only.
fn server_main(spec: &TreeSpec<'_>, l: &LazySpec<'_>, received: Uffds) -> ! {
    let _ = process::set_name(c"hiber-pages");
    let _ = process::setsid();
    let mut keep: Vec<RawFd> = received.iter().map(|(_, _, fd)| fd.as_raw_fd()).collect();
    keep.extend(l.reader.held_fds());
    close_all_but(&keep);
    // /dev/null onto the lowest free fds, 0 to 2 (all closed above, as
    // nothing we keep is below 3: the caller's stdio), kept for good.
    for _ in 0..3 {
        let _ = crate::sys::fs::open(c"/dev/null", libc::O_RDWR, 0).map(IntoRawFd::into_raw_fd);
    }
    let procs: Vec<LazyProcess<'_>> = received
        .into_iter()
        .filter_map(|(index, pid, uffd)| {
            let vmas = &spec.processes.get(index)?.mm.as_ref()?.vmas;
            Some(LazyProcess {
                uffd,
                pid,
                vmas: vmas.as_slice(),
            })
        })
        .collect();
    let code = match lazy::serve(l.reader, procs, l.status, l.started).1 {
        Ok(()) => {
            if l.remove_when_done {
                let _ = std::fs::remove_file(l.status);
            }
            0
        }
        Err(lazy::ServeError::Image { .. }) => lazy::EXIT_IMAGE,
        Err(_) => lazy::EXIT_FAILED,
    };
    // Its uffds close with it.
    exit_now(code)
}

/// A child of the keeper was reaped: if it is the page server, either
/// let go of the uffds (it finished) or kill the lazy tree (it did not).
fn reaped(lazy: &mut Option<LazyWatch>, pid: i32, st: i32) {
    if lazy.as_ref().is_none_or(|l| l.server != pid) {
        return;
    }
    let l = lazy.take().expect("checked above");
    let finished = libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0;
    if !finished {
        let why = match libc::WIFSIGNALED(st) {
            true => format!(
                "the page server was killed by signal {}",
                libc::WTERMSIG(st)
            ),
            false => format!(
                "the page server failed (exit status {})",
                libc::WEXITSTATUS(st)
            ),
        };
        fail_lazy(&l.status, l.pidns, &why);
    }
    // Only now: the tree is gone (a failure) or every page is in.
    drop(l.uffds);
}

/// The defined end of a lazy restore whose pages cannot all come in:
/// every process of the restored tree is killed (none may read a zero
/// page where a saved one belongs), and the status file says why.
fn fail_lazy(status: &Path, pidns: bool, why: &str) {
    kill_tree(pidns);
    let mut s = LazyStatus::read(status).unwrap_or_default();
    if s.state != "failed" {
        s.state = "failed".into();
        s.error = Some(why.to_string());
    }
    s.error = s
        .error
        .map(|e| format!("{e}; every process of the lazy restore was killed"));
    let _ = s.write(status);
}

/// Kill every descendant of the keeper, until none is left (they may be
/// forking meanwhile). In a pid namespace of our own, `kill(-1)` reaches
/// exactly them.
fn kill_tree(pidns: bool) {
    if pidns {
        // Every process of our own pid namespace but us.
        let _ = process::kill(-1, libc::SIGKILL);
        return;
    }
    for _ in 0..1000 {
        let mut found = Vec::new();
        let mut todo = vec!["self".to_string()];
        while let Some(p) = todo.pop() {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                    for pid in c.split_whitespace().filter_map(|w| w.parse::<i32>().ok()) {
                        found.push(pid);
                        todo.push(pid.to_string());
                    }
                }
            }
        }
        if found.is_empty() {
            return;
        }
        for pid in found {
            // A descendant of this keeper (it stays ours until we reap it).
            let _ = process::kill(pid, libc::SIGKILL);
        }
        // Our own children that ended, without blocking.
        while matches!(process::wait_any(libc::WNOHANG | libc::__WALL), Ok((pid, _)) if pid > 0) {}
    }
}
