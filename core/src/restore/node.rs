//! Code that runs in the forked restore tree, before the address space is
//! swapped: each node forks its children with their pids, sets its session
//! and group, puts its fds at their numbers, sets cwd, root, umask, limits,
//! personality and name, maps the restore gadget, and waits to be seized.
//!
//! It runs in copies of the single-threaded restorer, so allocation is safe,
//! but it never returns: every path ends in `_exit` or in being taken over.
//! Progress and failures are reported through a shared page of counters.
//!
//! No node outlives the restorer before the release: each is born with a
//! parent-death SIGKILL (so the tree falls from the restore root down,
//! which itself watches the restorer through a pidfd), and every wait here
//! is a bounded futex wait that also checks the parent is still there.

use super::plan::{Node, NodeKind, Plan};
use crate::files::{FileKind, OpenFile};
use crate::snapshot::ProcessImage;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// Stages the restorer moves the tree through.
pub const STAGE_BORN: u32 = 0;
pub const STAGE_GROUPS: u32 = 1;
pub const STAGE_SETUP: u32 = 2;
/// Every task is swapped in; the restorer is detaching them. A restorer
/// that dies now leaves some already running: the restore root kills them.
pub const STAGE_RELEASE: u32 = 3;
/// Committed: the tree is the caller's.
pub const STAGE_DONE: u32 = 4;
pub const STAGE_ABORT: u32 = 5;

/// How long a node sleeps at most between checks that its parent lives.
const PARENT_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Pages of the restore gadget: one of code, then scratch.
pub const GADGET_PAGES: u64 = 5;
pub const GADGET_LEN: u64 = GADGET_PAGES * 4096;

/// Shared between the restorer and every node (a MAP_SHARED page).
#[repr(C)]
#[derive(Debug)]
pub struct SyncArea {
    pub stage: AtomicU32,
    pub born: AtomicU32,
    pub grouped: AtomicU32,
    pub ready: AtomicU32,
    pub failed: AtomicU32,
    pub fail_node: AtomicU32,
    pub fail_errno: AtomicI32,
    pub fail_step: AtomicU32,
    /// Outer pid of the restore root (pid namespace mode).
    pub root_pid: AtomicI32,
    _pad: u32,
    /// Per node: the pid it got (0 until born), then the gadget address.
    /// After them, per SysV segment of the image: its id + 1 once this
    /// restore made it (0: not made by us).
    pub slots: [NodeSlot; 0],
}

#[repr(C)]
#[derive(Debug)]
pub struct NodeSlot {
    pub pid: AtomicI32,
    _pad: u32,
    pub gadget: AtomicU64,
}

/// The mapping holding a [`SyncArea`] and its slots.
#[derive(Debug)]
pub struct Shared {
    ptr: *mut SyncArea,
    len: usize,
    nodes: usize,
    sysv: usize,
}

impl Shared {
    pub fn new(nodes: usize, sysv: usize) -> io::Result<Self> {
        let len = (std::mem::size_of::<SyncArea>()
            + nodes * std::mem::size_of::<NodeSlot>()
            + sysv * std::mem::size_of::<AtomicI32>())
        .next_multiple_of(4096);
        // SAFETY: anonymous shared mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: p.cast(),
            len,
            nodes,
            sysv,
        })
    }

    fn sysv_slot(&self, i: usize) -> &AtomicI32 {
        assert!(i < self.sysv);
        // SAFETY: the mapping holds `sysv` i32 slots after the node slots
        // (4-byte aligned: NodeSlot is 16 bytes); zero is a valid atomic.
        unsafe {
            &*((self.ptr as *mut u8)
                .add(std::mem::size_of::<SyncArea>() + self.nodes * std::mem::size_of::<NodeSlot>())
                as *const AtomicI32)
                .add(i)
        }
    }

    /// Record SysV segment `id` as made by this restore: if the restorer
    /// dies before the commit, the restore root removes it.
    pub fn publish_sysv(&self, id: i32) {
        for i in 0..self.sysv {
            if self
                .sysv_slot(i)
                .compare_exchange(0, id + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
    }

    /// The SysV segments published so far.
    pub fn made_sysv(&self) -> impl Iterator<Item = i32> + '_ {
        (0..self.sysv)
            .map(|i| self.sysv_slot(i).load(Ordering::Acquire))
            .filter(|&v| v > 0)
            .map(|v| v - 1)
    }

    pub fn area(&self) -> &SyncArea {
        // SAFETY: ptr is a live zero-initialised mapping of at least
        // size_of::<SyncArea>() bytes; all fields are atomics (valid at 0).
        unsafe { &*self.ptr }
    }

    pub fn slot(&self, i: usize) -> &NodeSlot {
        assert!(i < self.nodes);
        // SAFETY: the mapping holds `nodes` slots right after the header;
        // zeroed atomics are valid.
        unsafe {
            &*((self.ptr as *mut u8).add(std::mem::size_of::<SyncArea>()) as *const NodeSlot).add(i)
        }
    }

    /// Wait until `counter` reaches `target`, the stage is ABORT, or a
    /// node failed; false on timeout.
    pub fn wait_count(
        &self,
        counter: &AtomicU32,
        target: u32,
        deadline: std::time::Instant,
    ) -> bool {
        loop {
            let v = counter.load(Ordering::Acquire);
            if v >= target || self.area().failed.load(Ordering::Acquire) > 0 {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            futex_wait(
                counter,
                v,
                Some((deadline - now).min(std::time::Duration::from_millis(50))),
            );
        }
    }

    pub fn set_stage(&self, stage: u32) {
        self.area().stage.store(stage, Ordering::Release);
        futex_wake(&self.area().stage);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping, which nothing borrows any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<std::time::Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: d.subsec_nanos() as i64,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: word is a live u32 in shared memory; a non-private futex
    // works across the processes mapping it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            tsp,
        )
    };
}

pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: as above; wakes every waiter.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

fn bump(counter: &AtomicU32) {
    counter.fetch_add(1, Ordering::AcqRel);
    futex_wake(counter);
}

/// Block until the restorer reaches `stage`; exit on abort, or once the
/// parent that forked us is gone (the parent-death signal should have
/// ended us already: this is the bound on the wait if it did not).
fn await_stage(shared: &Shared, stage: u32, parent: i32) {
    loop {
        let s = shared.area().stage.load(Ordering::Acquire);
        if s == STAGE_ABORT || !parent_is(parent) {
            // SAFETY: _exit ends this forked copy without running destructors.
            unsafe { libc::_exit(1) };
        }
        if s >= stage {
            return;
        }
        futex_wait(&shared.area().stage, s, Some(PARENT_CHECK));
    }
}

fn parent_is(parent: i32) -> bool {
    // SAFETY: getppid has no arguments.
    unsafe { libc::getppid() == parent }
}

/// The pid the next child forked with `flags` gets as its parent, as that
/// child will see it (CLONE_PARENT: our own parent).
pub fn parent_for(flags: u64) -> i32 {
    if flags & libc::CLONE_PARENT as u64 != 0 {
        // SAFETY: getppid has no arguments.
        unsafe { libc::getppid() }
    } else {
        // SAFETY: getpid has no arguments.
        unsafe { libc::getpid() }
    }
}

/// First thing in a freshly forked child: die with `parent`. The parent
/// may have died between the fork and the prctl, when the signal was not
/// armed yet: then we were reparented already, and go now.
pub fn die_with_parent(parent: i32) {
    // SAFETY: prctl on ourselves with plain integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if !parent_is(parent) {
        // SAFETY: ends this forked copy.
        unsafe { libc::_exit(1) };
    }
}

/// Run `f` in a forked copy of the restorer: a panic there must end the
/// copy, never unwind into the restorer's code that the copy shares.
pub fn child_main(f: impl FnOnce()) -> ! {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    // SAFETY: ends this forked copy without running the restorer's
    // destructors (they would act on the restorer's objects).
    unsafe { libc::_exit(101) }
}

/// clone3 with one pid to take (in the caller's pid namespace).
pub fn clone_with_pid(pid: i32, flags: u64) -> io::Result<i32> {
    clone_with_pids(pid, &[], flags)
}

/// clone3 taking `pid` in the caller's pid namespace and `nested` (the
/// child's pids in the namespaces below, outermost first; the last is 1
/// with `CLONE_NEWPID`).
pub fn clone_with_pids(pid: i32, nested: &[i32], flags: u64) -> io::Result<i32> {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    // set_tid: the innermost namespace's first.
    let tid: Vec<libc::pid_t> = nested
        .iter()
        .rev()
        .copied()
        .chain(std::iter::once(pid))
        .collect();
    let args = CloneArgs {
        flags,
        exit_signal: if flags & libc::CLONE_PARENT as u64 != 0 {
            0
        } else {
            libc::SIGCHLD as u64
        },
        set_tid: if pid > 0 { tid.as_ptr() as u64 } else { 0 },
        set_tid_size: if pid > 0 { tid.len() as u64 } else { 0 },
        ..Default::default()
    };
    // SAFETY: clone3 with no stack behaves like fork: the child continues
    // on a copy of this stack. args and tid outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as i32)
}

/// What the keeper of a lazy restore is given when it is forked.
#[derive(Debug)]
pub struct LazySpec<'a> {
    /// The image, with every pack open since validation: the page server
    /// it forks reads through these fds, so a pack deleted or renamed
    /// after the restore started cannot go missing mid-stream.
    pub reader: &'a crate::image::ImageReader,
    /// The server's status file.
    pub status: &'a std::path::Path,
    /// The keeper's end of the socket the restorer sends the uffds on.
    pub keeper_end: std::os::fd::RawFd,
    /// The restorer's end, which the keeper closes at once.
    pub restorer_end: std::os::fd::RawFd,
    /// When the restore started: the server's status counts from it.
    pub started: std::time::Instant,
}

/// Everything a node needs, prepared by the restorer before forking.
#[derive(Debug)]
pub struct TreeSpec<'a> {
    pub plan: &'a Plan,
    pub processes: &'a [ProcessImage],
    /// Raw fd in the restorer of each `Snapshot::files` entry.
    pub file_fds: &'a [RawFd],
    pub files: &'a [OpenFile],
    /// Lowest restorer fd holding a restored object.
    pub base_fd: RawFd,
    /// Per node: candidate gadget addresses (holes of the saved layout).
    pub gadget_candidates: &'a [Vec<u64>],
    pub restorer_pid: i32,
    /// Read end of a pipe whose only writer is the restorer: it hangs up
    /// when the restorer lets go of the tree, at the commit or by dying.
    pub release: RawFd,
    /// Its write end, which the restore root closes at once.
    pub release_writer: RawFd,
    /// For a lazy restore: what the keeper needs to start the page server.
    pub lazy: Option<LazySpec<'a>>,
}

/// Steps a node can fail at, reported in the shared page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Fork = 1,
    Setsid,
    Setpgid,
    Fds,
    Cwd,
    Root,
    Rlimit,
    Gadget,
    Personality,
    EpollWatches,
    Ctty,
    Locks,
    DevTty,
    Pidfd,
    PidNamespace,
}

impl Step {
    pub fn from_u32(v: u32) -> &'static str {
        match v {
            1 => "forking a child with its pid",
            2 => "creating its session",
            3 => "joining its process group",
            4 => "installing its fds",
            5 => "entering its working directory",
            6 => "entering its root directory",
            7 => "setting its resource limits",
            8 => "mapping the restore gadget",
            9 => "setting its personality",
            10 => "adding its epoll watches",
            11 => "taking its controlling terminal",
            12 => "taking its file locks again (held by someone else?)",
            13 => "opening /dev/tty on its controlling terminal",
            14 => "opening a pidfd of a restored process",
            15 => "entering the pid namespace made for its children",
            _ => "an unknown step",
        }
    }
}

fn fail(shared: &Shared, node: usize, step: Step, err: io::Error) -> ! {
    let a = shared.area();
    if a.failed.fetch_add(1, Ordering::AcqRel) == 0 {
        a.fail_node.store(node as u32, Ordering::Release);
        a.fail_errno
            .store(err.raw_os_error().unwrap_or(0), Ordering::Release);
        a.fail_step.store(step as u32, Ordering::Release);
    }
    for c in [&a.born, &a.grouped, &a.ready, &a.failed] {
        futex_wake(c);
    }
    // SAFETY: ends this forked copy.
    unsafe { libc::_exit(1) }
}

fn check(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Fork the children of `forker` (None: the restore root) per the plan.
pub fn fork_children(
    spec: &TreeSpec<'_>,
    shared: &Shared,
    forker: Option<usize>,
) -> Vec<(usize, i32)> {
    let mut forked = Vec::new();
    for child in spec.plan.children(forker) {
        let node = &spec.plan.nodes[child];
        let flags = if node.clone_parent {
            libc::CLONE_PARENT as u64
        } else {
            0
        };
        // The first process of a new pid namespace sees its parent, which
        // is outside it, as pid 0.
        let parent = if node.ns_flags & libc::CLONE_NEWPID as u64 != 0 {
            0
        } else {
            parent_for(flags)
        };
        match clone_with_pids(node.pid, &node.ns_pids, flags | node.ns_flags) {
            Ok(0) => child_main(|| {
                die_with_parent(parent);
                run(spec, shared, child, parent)
            }),
            Ok(pid) => forked.push((child, pid)),
            Err(e) => fail(shared, child, Step::Fork, e),
        }
    }
    forked
}

/// The life of one node in the tree. Never returns.
fn run(spec: &TreeSpec<'_>, shared: &Shared, me: usize, parent: i32) -> ! {
    let node: &Node = &spec.plan.nodes[me];
    // The pid the restorer knows it by: in a nested pid namespace getpid
    // tells the innermost one; set_tid made it `node.pid` outside.
    let pid = if node.ns_pids.is_empty() {
        // SAFETY: getpid has no arguments.
        unsafe { libc::getpid() }
    } else {
        node.pid
    };
    shared.slot(me).pid.store(pid, Ordering::Release);
    // Zombies must stay for their parents to reap; never auto-reap here.
    // SAFETY: resetting a disposition to default; no handler involved.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    if node.setsid {
        // SAFETY: setsid takes no arguments.
        if let Err(e) = check(unsafe { libc::setsid() } as libc::c_long) {
            fail(shared, me, Step::Setsid, e);
        }
        // Before forking: children inherit the controlling terminal.
        if let NodeKind::Process(i) = node.kind {
            if let Some(fd) = ctty_fd(spec, &spec.processes[i]) {
                // SAFETY: TIOCSCTTY on a pty slave the restorer opened.
                let rc = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
                if let Err(e) = check(rc as libc::c_long) {
                    fail(shared, me, Step::Ctty, e);
                }
                if let Err(e) = reopen_dev_tty(spec, &spec.processes[i]) {
                    fail(shared, me, Step::DevTty, e);
                }
            }
        }
    }
    if node.make_group {
        // SAFETY: setpgid on ourselves.
        if let Err(e) = check(unsafe { libc::setpgid(0, 0) } as libc::c_long) {
            fail(shared, me, Step::Setpgid, e);
        }
    }
    let forked = fork_children(spec, shared, Some(me));
    if let NodeKind::Process(i) = node.kind {
        if let Err(e) = enter_children_pid_namespace(spec, me, &spec.processes[i]) {
            fail(shared, me, Step::PidNamespace, e);
        }
    }
    bump(&shared.area().born);
    await_stage(shared, STAGE_GROUPS, parent);
    if let Some(g) = node.join_group {
        // SAFETY: setpgid on ourselves to an existing group.
        if let Err(e) = check(unsafe { libc::setpgid(0, g) } as libc::c_long) {
            fail(shared, me, Step::Setpgid, e);
        }
    }
    bump(&shared.area().grouped);
    await_stage(shared, STAGE_SETUP, parent);
    // Reap the helpers we forked (real children are left alone: zombies
    // among them must stay zombies).
    for &(child, cpid) in &forked {
        if !matches!(spec.plan.nodes[child].kind, NodeKind::Process(_)) {
            let mut status = 0;
            // SAFETY: waiting for our own child by pid.
            unsafe { libc::waitpid(cpid, &mut status, 0) };
        }
    }
    match node.kind {
        NodeKind::SessionHelper | NodeKind::GroupHelper => {
            // SAFETY: ends the helper.
            unsafe { libc::_exit(0) }
        }
        NodeKind::Process(i) => {
            let p = &spec.processes[i];
            if let Some(status) = p.zombie_status {
                become_zombie(status);
            }
            if let Err((step, e)) = setup(spec, p, me) {
                fail(shared, me, step, e);
            }
            let gadget = match map_gadget(&spec.gadget_candidates[me]) {
                Ok(g) => g,
                Err(e) => fail(shared, me, Step::Gadget, e),
            };
            shared.slot(me).gadget.store(gadget, Ordering::Release);
            bump(&shared.area().ready);
            // The restorer seizes us here and replaces this whole address space.
            loop {
                await_stage(shared, STAGE_ABORT + 1, parent);
            }
        }
    }
}

/// A process that made a pid namespace for its children with `unshare`
/// (`unshare --pid --fork`) forked that namespace's pid 1 with
/// CLONE_NEWPID above: it enters that namespace now, so children it makes
/// later go there, as they would have.
fn enter_children_pid_namespace(
    spec: &TreeSpec<'_>,
    me: usize,
    p: &ProcessImage,
) -> io::Result<()> {
    let Some(made) = p
        .namespaces
        .as_ref()
        .map(|n| n.pid_for_children)
        .filter(|&m| m != 0)
    else {
        return Ok(());
    };
    let first = spec.plan.children(Some(me)).find(|&c| {
        let n = &spec.plan.nodes[c];
        n.ns_flags & libc::CLONE_NEWPID as u64 != 0
            && matches!(n.kind, NodeKind::Process(k)
                if spec.processes[k].namespaces.as_ref().is_some_and(|ns| ns.pid == made))
    });
    let Some(first) = first else {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    };
    // The restorer's /proc: the child by its pid there.
    let path = cstr(std::path::Path::new(&format!(
        "/proc/{}/ns/pid",
        spec.plan.nodes[first].pid
    )));
    // SAFETY: open of a NUL-terminated path; setns with the fd we own,
    // closed right after.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let rc = libc::setns(fd, libc::CLONE_NEWPID);
        let e = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(e);
        }
    }
    Ok(())
}

fn become_zombie(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls on ourselves: limit core dumps, default the
        // signal, unblock everything, then die of it.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
    }
    // SAFETY: ends this process with the saved exit code.
    unsafe { libc::_exit(libc::WEXITSTATUS(status)) }
}

fn cstr(p: &std::path::Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

/// The restorer's fd of the slave of `p`'s controlling terminal.
fn ctty_fd(spec: &TreeSpec<'_>, p: &ProcessImage) -> Option<RawFd> {
    let index = p.ctty?;
    spec.files
        .iter()
        // Not an outside terminal: that one belongs to the restorer's session.
        .position(
            |f| matches!(&f.kind, FileKind::Pty(e) if !e.master && !e.external && e.index == index),
        )
        .map(|i| spec.file_fds[i])
}

/// Open `/dev/tty` over the placeholders of the session's `/dev/tty` files,
/// now that `p`, their session leader, has its terminal: every process it
/// forks after this shares them, as they did.
fn reopen_dev_tty(spec: &TreeSpec<'_>, p: &ProcessImage) -> io::Result<()> {
    let Some(index) = p.ctty else {
        return Ok(());
    };
    for (i, f) in spec.files.iter().enumerate() {
        let FileKind::DevTty(t) = &f.kind else {
            continue;
        };
        if t.external || t.index != index || t.session != p.pid {
            continue;
        }
        let keep = libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_APPEND;
        let flags = (f.flags as i32 & keep) | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: open with a NUL-terminated path.
        let fd = unsafe { libc::open(c"/dev/tty".as_ptr(), flags) };
        check(fd as libc::c_long)?;
        // SAFETY: dup3 over the placeholder the restorer left for this
        // file, then closing our temporary fd.
        let rc = unsafe {
            let rc = libc::dup3(fd, spec.file_fds[i], libc::O_CLOEXEC);
            libc::close(fd);
            rc
        };
        check(rc as libc::c_long)?;
    }
    Ok(())
}

/// The foreground group saved for `p`'s controlling terminal.
fn foreground(spec: &TreeSpec<'_>, p: &ProcessImage) -> Option<i32> {
    let index = p.ctty?;
    spec.files
        .iter()
        .find_map(|f| match &f.kind {
            FileKind::Pty(e) if !e.master && e.index == index && e.foreground > 0 => {
                Some(e.foreground)
            }
            _ => None,
        })
        // Only a group of this session that the image recreates.
        .filter(|&fg| {
            spec.processes
                .iter()
                .any(|q| q.pgid == fg && q.sid == p.pid)
        })
}

/// Per-process state set from inside, before the swap.
fn setup(spec: &TreeSpec<'_>, p: &ProcessImage, _me: usize) -> Result<(), (Step, io::Error)> {
    let e = |step| move |err| (step, err);
    // fds: objects sit at or above base_fd; targets below it.
    let mut targets: Vec<i32> = Vec::with_capacity(p.fds.len());
    for f in &p.fds {
        let src = spec.file_fds[f.file];
        let flags = if f.cloexec { libc::O_CLOEXEC } else { 0 };
        // SAFETY: dup3 between fds; src is open in this copy of the restorer.
        check(unsafe { libc::dup3(src, f.fd, flags) } as libc::c_long).map_err(e(Step::Fds))?;
        targets.push(f.fd);
        // Every process of the tree exists now: a pidfd of one of them is
        // opened again, over the restorer's placeholder.
        if let FileKind::Pidfd(pfd) = &spec.files[f.file].kind {
            if pfd.inside {
                let fd = pfd
                    .open_in_holder(spec.files[f.file].flags)
                    .map_err(e(Step::Pidfd))?;
                let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                // SAFETY: dup3 of the fresh pidfd over the target fd.
                let rc = unsafe { libc::dup3(raw, f.fd, flags) };
                check(rc as libc::c_long).map_err(e(Step::Pidfd))?;
            }
        }
        // A saved process's own /proc file (its status...): every process
        // exists now, with its saved pid; opened over the placeholder.
        if let FileKind::Regular(r) = &spec.files[f.file].kind {
            if crate::files::regular::proc_pid_file(&r.path).is_some() {
                let path = cstr(&r.path);
                let access = spec.files[f.file].flags as i32 & libc::O_ACCMODE;
                // SAFETY: open of a NUL-terminated path; dup3 of the new fd
                // over the target, then close; lseek on the target.
                unsafe {
                    let fd = libc::open(path.as_ptr(), access | libc::O_CLOEXEC);
                    check(fd as libc::c_long).map_err(e(Step::Fds))?;
                    let rc = libc::dup3(fd, f.fd, flags);
                    libc::close(fd);
                    check(rc as libc::c_long).map_err(e(Step::Fds))?;
                    libc::lseek(f.fd, r.pos as i64, libc::SEEK_SET);
                }
            }
        }
        // Still the restorer's placeholder: this process is not below the
        // session leader that opens /dev/tty.
        let dev_tty = matches!(&spec.files[f.file].kind, FileKind::DevTty(t) if !t.external);
        // SAFETY: isatty on the fd just installed.
        if dev_tty && unsafe { libc::isatty(f.fd) } != 1 {
            return Err((Step::DevTty, io::Error::from_raw_os_error(libc::ENOTTY)));
        }
    }
    // The terminal's foreground group, now that every group exists. From
    // the background that raises SIGTTOU: blocked meanwhile.
    if let (Some(fd), Some(fg)) = (ctty_fd(spec, p), foreground(spec, p)) {
        let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigset operations on local sets; tcsetpgrp on our tty fd.
        let rc = unsafe {
            let mut ttou = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(ttou.as_mut_ptr());
            libc::sigaddset(ttou.as_mut_ptr(), libc::SIGTTOU);
            libc::sigprocmask(libc::SIG_BLOCK, ttou.as_ptr(), old.as_mut_ptr());
            let rc = libc::tcsetpgrp(fd, fg);
            libc::sigprocmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut());
            rc
        };
        check(rc as libc::c_long).map_err(e(Step::Ctty))?;
    }
    // Epoll watches, keyed by fd number, once every fd has its number; by
    // the process they were read from, through its first fd of the epoll.
    for (i, f) in p.fds.iter().enumerate() {
        if let FileKind::Epoll(ep) = &spec.files[f.file].kind {
            let first = p.fds[..i].iter().all(|g| g.file != f.file);
            if ep.owner == p.pid && first {
                // Stand-ins (of detached devices, and of reattached cards
                // with no live match) are O_PATH handles: no epoll takes them.
                let detached = |fd: i32| {
                    p.fds.iter().any(|g| {
                        g.fd == fd
                            && matches!(
                                spec.files[g.file].kind,
                                FileKind::Detached(_)
                                    | FileKind::Reattached(_)
                                    | FileKind::ServiceFile(_)
                            )
                    }) && is_o_path(fd)
                };
                ep.add_watches(f.fd, &detached)
                    .map_err(|(_, err)| (Step::EpollWatches, err))?;
            }
        }
    }
    targets.sort_unstable();
    let mut lo = 0u32;
    for &t in targets.iter().chain(std::iter::once(&spec.base_fd)) {
        if (t as u32) > lo {
            // SAFETY: close_range closes fds we own in this process copy.
            unsafe { libc::syscall(libc::SYS_close_range, lo, t as u32 - 1, 0) };
        }
        lo = t as u32 + 1;
    }
    // SAFETY: as above: every restorer object from base_fd up.
    unsafe { libc::syscall(libc::SYS_close_range, spec.base_fd as u32, u32::MAX, 0) };
    // Locks last among the fds: closing any fd of a file drops this
    // process's POSIX locks on it, and the restorer's copies just closed.
    for lock in &p.locks {
        crate::locks::restore(lock).map_err(e(Step::Locks))?;
    }

    // A gone directory is entered by the swap, last.
    if !p.cwd_gone {
        // SAFETY: chdir with a NUL-terminated path.
        check(unsafe { libc::chdir(cstr(&p.cwd).as_ptr()) } as libc::c_long)
            .map_err(e(Step::Cwd))?;
    }
    if p.root != std::path::Path::new("/") && !p.root_gone {
        // SAFETY: as above.
        check(unsafe { libc::chroot(cstr(&p.root).as_ptr()) } as libc::c_long)
            .map_err(e(Step::Root))?;
    }
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(p.umask as libc::mode_t) };
    for r in &p.rlimits {
        let mut cur = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit64 on ourselves reading into `cur`.
        unsafe { libc::prlimit64(0, r.resource as _, std::ptr::null(), &mut cur) };
        // A hard limit can only be raised with CAP_SYS_RESOURCE: clamp.
        let max = r.max.min(cur.rlim_max);
        let new = libc::rlimit64 {
            rlim_cur: r.cur.min(max),
            rlim_max: max,
        };
        // SAFETY: prlimit64 on ourselves with a valid new limit.
        let rc = unsafe { libc::prlimit64(0, r.resource as _, &new, std::ptr::null_mut()) };
        check(rc as libc::c_long).map_err(e(Step::Rlimit))?;
    }
    // SAFETY: personality takes an integer.
    check(unsafe { libc::personality(p.personality as libc::c_ulong) } as libc::c_long)
        .map_err(e(Step::Personality))?;
    let mut comm = [0u8; 16];
    let n = p.comm.len().min(15);
    comm[..n].copy_from_slice(&p.comm.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a 16-byte NUL-terminated buffer.
    unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr()) };
    // SAFETY: PR_SET_PTRACER with the restorer's pid (Yama).
    unsafe { libc::prctl(libc::PR_SET_PTRACER, spec.restorer_pid as libc::c_ulong) };
    // Every handler back to default; the saved ones are set from outside.
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let act = [0u64; 4];
        // SAFETY: raw rt_sigaction with a zeroed (SIG_DFL) kernel sigaction.
        unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, act.as_ptr(), 0usize, 8usize) };
    }
    Ok(())
}

/// Map the gadget (a `syscall; int3` page and scratch pages) at the first
/// candidate address that is free both here and in the saved layout.
/// Whether fd `fd` of this process is an `O_PATH` handle.
fn is_o_path(fd: RawFd) -> bool {
    // SAFETY: F_GETFL takes no pointer; a closed fd gives -1.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_PATH != 0
}

fn map_gadget(candidates: &[u64]) -> io::Result<u64> {
    for &addr in candidates {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                GADGET_LEN as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED || p as u64 != addr {
            continue;
        }
        // SAFETY: p is our fresh writable mapping of GADGET_LEN bytes.
        unsafe {
            let code = p as *mut u8;
            code.write(0x0f);
            code.add(1).write(0x05);
            code.add(2).write(0xcc);
            let batch = crate::remote::BATCH_CODE;
            std::ptr::copy_nonoverlapping(
                batch.as_ptr(),
                code.add(crate::remote::BATCH_OFFSET as usize),
                batch.len(),
            );
            libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC);
        }
        return Ok(addr);
    }
    Err(io::Error::from_raw_os_error(libc::ENOMEM))
}
