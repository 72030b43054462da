//! The restore root: the process that forks the tree's roots, watches the
//! restorer through the release pipe until the commit, and then exits or
//! stays as the session's keeper (a child subreaper running the uevent
//! proxy) or as the init of a new pid namespace.

use super::error::{RestoreError, Result};
use super::node::{self, LazySpec, Shared, TreeSpec};
use super::plan::NodeKind;
use crate::memory::lazy::{self, LazyProcess, LazyStatus};
use crate::uevent::proxy::Proxy;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    if let Some(l) = &spec.lazy {
        // SAFETY: closing our copy of the restorer's end.
        unsafe { libc::close(l.restorer_end) };
    }
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
            // SAFETY: setsid on ourselves; we are not a group leader.
            unsafe { libc::setsid() };
        }
        match proxy {
            Some(proxy) => keep_with_proxy(proxy, &mut lazy),
            None => reap_until_none(&mut lazy),
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

/// Reap every child until none is left (the page server of a lazy
/// restore is one of them).
pub(super) fn reap_until_none(lazy: &mut Option<LazyWatch>) {
    loop {
        let mut st = 0;
        // SAFETY: reaping any child; ECHILD ends the loop.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
        if r > 0 {
            reaped(lazy, r, st);
        } else if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Reap children without blocking; false once none is left.
pub(super) fn reap_ready(lazy: &mut Option<LazyWatch>) -> bool {
    loop {
        let mut st = 0;
        // SAFETY: non-blocking reap of any child.
        match unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG | libc::__WALL) } {
            0 => return true,
            r if r > 0 => reaped(lazy, r, st),
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            _ => return false,
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
        return reap_until_none(lazy);
    }
    let mut host = proxy.host_fd();
    // A SIGCHLD of a child reaped here stays pending: the signalfd wakes
    // the poll and the reaping finds nothing, which is fine.
    while reap_ready(lazy) {
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
        let fd_bytes = std::mem::size_of_val(fds.as_slice());
        // SAFETY: CMSG_SPACE is pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
        let mut control = vec![0u8; space];
        let mut iov = libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        };
        // SAFETY: msghdr is plain data; the fields are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer has room for one header and the fds
        // (CMSG_SPACE above); the pointers stay inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
        }
        // SAFETY: sendmsg with the message built above.
        if unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
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
        // SAFETY: CMSG_SPACE is pure arithmetic.
        let space =
            unsafe { libc::CMSG_SPACE((UFFDS_PER_MESSAGE * size_of::<RawFd>()) as u32) } as usize;
        let mut control = vec![0u8; space];
        let mut iov = libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        };
        // SAFETY: msghdr is plain data; the fields are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: recvmsg into the buffers above, never blocking.
        let n =
            unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
        if n <= 0 {
            return out;
        }
        let mut fds = Vec::new();
        // SAFETY: walking the control messages the kernel wrote into our
        // buffer with the CMSG macros; SCM_RIGHTS data is an array of fds.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let count = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                    let data = libc::CMSG_DATA(c) as *const RawFd;
                    for k in 0..count {
                        fds.push(OwnedFd::from_raw_fd(data.add(k).read_unaligned()));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        for (entry, fd) in payload[..n as usize].chunks_exact(8).zip(fds) {
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
    // SAFETY: closing our end; the restorer sent everything before the commit.
    unsafe { libc::close(l.keeper_end) };
    if received.is_empty() {
        return None;
    }
    let pidns = role == RootRole::NamespaceInit;
    let status = l.status.to_path_buf();
    // SAFETY: fork of this single-threaded keeper.
    match unsafe { libc::fork() } {
        0 => server_main(spec, l, received),
        -1 => {
            let e = std::io::Error::last_os_error();
            fail_lazy(
                &status,
                pidns,
                &format!("the page server could not start: {e}"),
            );
            None
        }
        server => Some(LazyWatch {
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
    // SAFETY: prctl and setsid on ourselves.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"hiber-pages".as_ptr());
        libc::setsid();
    }
    let mut keep: Vec<RawFd> = received.iter().map(|(_, _, fd)| fd.as_raw_fd()).collect();
    keep.extend(l.reader.held_fds());
    close_all_but(&keep);
    // SAFETY: opening /dev/null onto the lowest free fds, 0 to 2 (all
    // closed above, as nothing we keep is below 3: the caller's stdio).
    unsafe {
        for _ in 0..3 {
            libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        }
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
        Ok(()) => 0,
        Err(lazy::ServeError::Image { .. }) => lazy::EXIT_IMAGE,
        Err(_) => lazy::EXIT_FAILED,
    };
    // SAFETY: ends the server; its uffds close with it.
    unsafe { libc::_exit(code) }
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
        // SAFETY: kill of every process of our own pid namespace but us.
        unsafe { libc::kill(-1, libc::SIGKILL) };
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
            // SAFETY: kill of a descendant of this keeper (it stays ours
            // until we reap it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let mut st = 0;
        // SAFETY: reaping our own children that ended, without blocking.
        while unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG | libc::__WALL) } > 0 {}
    }
}
