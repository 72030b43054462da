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
use crate::sys::{self, mm::SharedAtomics};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
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

/// Shared between the restorer and every node: the counters and stage of
/// the tree, in its [`Shared`] page.
#[derive(Debug, Clone, Copy)]
pub struct SyncArea<'a> {
    pub stage: &'a AtomicU32,
    pub born: &'a AtomicU32,
    pub grouped: &'a AtomicU32,
    pub ready: &'a AtomicU32,
    pub failed: &'a AtomicU32,
    pub fail_node: &'a AtomicU32,
    pub fail_errno: &'a AtomicI32,
    pub fail_step: &'a AtomicU32,
    /// Outer pid of the restore root (pid namespace mode).
    pub root_pid: &'a AtomicI32,
}

/// Per node: the pid it got (0 until born), then the gadget address.
#[derive(Debug, Clone, Copy)]
pub struct NodeSlot<'a> {
    pub pid: &'a AtomicI32,
    pub gadget: &'a AtomicU64,
}

/// The 32-bit words of [`SyncArea`], in its field order, then its i32s.
const U32_WORDS: usize = 7;
const I32_WORDS: usize = 2;

/// The page shared between the restorer and every node (MAP_SHARED): a
/// [`SyncArea`], a [`NodeSlot`] per node, and per SysV segment of the
/// image its id + 1 once this restore made it (0: not made by us).
#[derive(Debug)]
pub struct Shared {
    atomics: SharedAtomics,
    nodes: usize,
    sysv: usize,
}

impl Shared {
    pub fn new(nodes: usize, sysv: usize) -> io::Result<Self> {
        // 64-bit: the gadgets; 32-bit: the area's words; i32: the area's,
        // then the nodes' pids, then the SysV slots.
        let atomics = SharedAtomics::new(nodes, U32_WORDS, I32_WORDS + nodes + sysv)?;
        Ok(Self {
            atomics,
            nodes,
            sysv,
        })
    }

    fn sysv_slot(&self, i: usize) -> &AtomicI32 {
        assert!(i < self.sysv);
        &self.atomics.i32s()[I32_WORDS + self.nodes + i]
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

    pub fn area(&self) -> SyncArea<'_> {
        let w = self.atomics.u32s();
        let i = self.atomics.i32s();
        SyncArea {
            stage: &w[0],
            born: &w[1],
            grouped: &w[2],
            ready: &w[3],
            failed: &w[4],
            fail_node: &w[5],
            fail_step: &w[6],
            fail_errno: &i[0],
            root_pid: &i[1],
        }
    }

    pub fn slot(&self, i: usize) -> NodeSlot<'_> {
        assert!(i < self.nodes);
        NodeSlot {
            pid: &self.atomics.i32s()[I32_WORDS + i],
            gadget: &self.atomics.u64s()[i],
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
            // A wake, a changed word, a timeout: all lead back to the check.
            let _ = sys::futex::wait(
                counter,
                v,
                Some((deadline - now).min(std::time::Duration::from_millis(50))),
            );
        }
    }

    pub fn set_stage(&self, stage: u32) {
        self.area().stage.store(stage, Ordering::Release);
        futex_wake(self.area().stage);
    }
}

/// Wake every waiter on `word`.
pub fn futex_wake(word: &AtomicU32) {
    let _ = sys::futex::wake_all(word);
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
            // Ends this forked copy without running destructors.
            sys::process::exit_now(1);
        }
        if s >= stage {
            return;
        }
        let _ = sys::futex::wait(shared.area().stage, s, Some(PARENT_CHECK));
    }
}

fn parent_is(parent: i32) -> bool {
    sys::process::parent_pid() == parent
}

/// The pid the next child forked with `flags` gets as its parent, as that
/// child will see it (CLONE_PARENT: our own parent).
pub fn parent_for(flags: u64) -> i32 {
    if flags & libc::CLONE_PARENT as u64 != 0 {
        sys::process::parent_pid()
    } else {
        sys::process::pid()
    }
}

/// First thing in a freshly forked child: die with `parent`. The parent
/// may have died between the fork and the prctl, when the signal was not
/// armed yet: then we were reparented already, and go now.
pub fn die_with_parent(parent: i32) {
    let _ = sys::process::set_parent_death_signal(libc::SIGKILL);
    if !parent_is(parent) {
        sys::process::exit_now(1);
    }
}

/// Run `f` in a forked copy of the restorer: a panic there must end the
/// copy, never unwind into the restorer's code that the copy shares.
pub fn child_main(f: impl FnOnce()) -> ! {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    // Without running the restorer's destructors (they would act on the
    // restorer's objects).
    sys::process::exit_now(101)
}

/// clone3 with one pid to take (in the caller's pid namespace).
pub fn clone_with_pid(pid: i32, flags: u64) -> io::Result<i32> {
    clone_with_pids(pid, &[], flags)
}

/// clone3 taking `pid` in the caller's pid namespace and `nested` (the
/// child's pids in the namespaces below, outermost first; the last is 1
/// with `CLONE_NEWPID`).
pub fn clone_with_pids(pid: i32, nested: &[i32], flags: u64) -> io::Result<i32> {
    // set_tid: the innermost namespace's first.
    let tid: Vec<libc::pid_t> = nested
        .iter()
        .rev()
        .copied()
        .chain(std::iter::once(pid))
        .collect();
    let exit_signal = if flags & libc::CLONE_PARENT as u64 != 0 {
        0
    } else {
        libc::SIGCHLD as u64
    };
    sys::process::clone3(flags, exit_signal, if pid > 0 { &tid } else { &[] })
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
    /// Remove it once the server finished (`LazyOptions::remove_when_done`).
    pub remove_when_done: bool,
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
    for c in [a.born, a.grouped, a.ready, a.failed] {
        futex_wake(c);
    }
    sys::process::exit_now(1)
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
        sys::process::pid()
    } else {
        node.pid
    };
    shared.slot(me).pid.store(pid, Ordering::Release);
    // Zombies must stay for their parents to reap; never auto-reap here.
    let _ = sys::signal::set_default(libc::SIGCHLD);
    if node.setsid {
        if let Err(e) = sys::process::setsid() {
            fail(shared, me, Step::Setsid, e);
        }
        // Before forking: children inherit the controlling terminal.
        if let NodeKind::Process(i) = node.kind {
            if let Some(fd) = ctty_fd(spec, &spec.processes[i]) {
                // A pty slave the restorer opened.
                if let Err(e) = sys::term::take_ctty(fd) {
                    fail(shared, me, Step::Ctty, e);
                }
                if let Err(e) = reopen_dev_tty(spec, &spec.processes[i]) {
                    fail(shared, me, Step::DevTty, e);
                }
            }
        }
    }
    if node.make_group {
        if let Err(e) = sys::process::setpgid(0, 0) {
            fail(shared, me, Step::Setpgid, e);
        }
    }
    if node.ns_flags & libc::CLONE_NEWPID as u64 != 0 {
        if let Err(e) = place_nested_pid_counter(spec) {
            fail(shared, me, Step::PidNamespace, e);
        }
    }
    let forked = fork_children(spec, shared, Some(me));
    if let NodeKind::Process(i) = node.kind {
        if let Err(e) = enter_children_pid_namespace(spec, me, &spec.processes[i]) {
            fail(shared, me, Step::PidNamespace, e);
        }
    }
    bump(shared.area().born);
    await_stage(shared, STAGE_GROUPS, parent);
    if let Some(g) = node.join_group {
        // An existing group.
        if let Err(e) = sys::process::setpgid(0, g) {
            fail(shared, me, Step::Setpgid, e);
        }
    }
    bump(shared.area().grouped);
    await_stage(shared, STAGE_SETUP, parent);
    // Reap the helpers we forked (real children are left alone: zombies
    // among them must stay zombies).
    for &(child, cpid) in &forked {
        if !matches!(spec.plan.nodes[child].kind, NodeKind::Process(_)) {
            sys::process::reap(cpid);
        }
    }
    match node.kind {
        NodeKind::SessionHelper | NodeKind::GroupHelper => {
            // The helper's work is done.
            sys::process::exit_now(0)
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
            bump(shared.area().ready);
            // The restorer seizes us here and replaces this whole address space.
            loop {
                await_stage(shared, STAGE_ABORT + 1, parent);
            }
        }
    }
}

/// The first process of a new pid namespace, before anything else is
/// made there, places that namespace's pid counter above every id the
/// image holds in any nested namespace. Saved tasks get their ids with
/// set_tid; an id handed out without a choice (a gone directory's helper
/// thread) would otherwise be the lowest free one, which a saved thread
/// of another process, swapped at the same time on another tracer, may
/// still be waiting for: its clone3 fails with EEXIST (chromium's
/// renderers, each in a gone root). `lock::keep_pids_clear_of` does the
/// same in the restorer's namespace. The write acts on the writer's own
/// pid namespace, and root (the node still is) may make it.
fn place_nested_pid_counter(spec: &TreeSpec<'_>) -> io::Result<()> {
    use std::io::Write;
    let highest = spec
        .processes
        .iter()
        .flat_map(|p| {
            p.ns_pids
                .iter()
                .chain(p.threads.iter().flat_map(|t| t.ns_tids.iter()))
        })
        .copied()
        .max()
        .unwrap_or(1);
    let fd = sys::fs::open(
        c"/proc/sys/kernel/ns_last_pid",
        libc::O_WRONLY | libc::O_CLOEXEC,
        0,
    )?;
    std::fs::File::from(fd).write_all(highest.to_string().as_bytes())
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
    let ns = sys::fs::open(&path, libc::O_RDONLY | libc::O_CLOEXEC, 0)?;
    sys::ns::setns(ns, libc::CLONE_NEWPID)
}

fn become_zombie(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // No core dump, the signal's default action, nothing blocked: then
        // die of it.
        let _ = sys::process::set_limit(libc::RLIMIT_CORE, 0, 0);
        let _ = sys::signal::set_default(sig);
        let _ = sys::signal::unblock_all();
        let _ = sys::process::kill(sys::process::pid(), sig);
    }
    // Ends this process with the saved exit code.
    sys::process::exit_now(libc::WEXITSTATUS(status))
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
        let fd = sys::fs::open(c"/dev/tty", flags, 0)?;
        // Over the placeholder the restorer left for this file.
        sys::fd::dup3_of(fd.as_raw_fd(), spec.file_fds[i], libc::O_CLOEXEC)?;
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
        // src is open in this copy of the restorer.
        sys::fd::dup3_of(src, f.fd, flags).map_err(e(Step::Fds))?;
        targets.push(f.fd);
        // Every process of the tree exists now: a pidfd of one of them is
        // opened again, over the restorer's placeholder.
        if let FileKind::Pidfd(pfd) = &spec.files[f.file].kind {
            if pfd.inside {
                let fd = pfd
                    .open_in_holder(spec.files[f.file].flags)
                    .map_err(e(Step::Pidfd))?;
                sys::fd::dup3_of(fd.as_raw_fd(), f.fd, flags).map_err(e(Step::Pidfd))?;
            }
        }
        // A saved process's own /proc file (its status...): every process
        // exists now, with its saved pid; opened over the placeholder.
        if let FileKind::Regular(r) = &spec.files[f.file].kind {
            if crate::files::regular::proc_pid_file(&r.path).is_some() {
                let path = cstr(&r.path);
                let access = spec.files[f.file].flags as i32 & libc::O_ACCMODE;
                let fd = sys::fs::open(&path, access | libc::O_CLOEXEC, 0).map_err(e(Step::Fds))?;
                let installed = sys::fd::dup3_of(fd.as_raw_fd(), f.fd, flags);
                drop(fd);
                installed.map_err(e(Step::Fds))?;
                let _ = sys::fd::seek_to_of(f.fd, r.pos as i64);
            }
        }
        // Still the restorer's placeholder: this process is not below the
        // session leader that opens /dev/tty.
        let dev_tty = matches!(&spec.files[f.file].kind, FileKind::DevTty(t) if !t.external);
        if dev_tty && !sys::term::is_tty(f.fd) {
            return Err((Step::DevTty, io::Error::from_raw_os_error(libc::ENOTTY)));
        }
    }
    // The terminal's foreground group, now that every group exists. From
    // the background that raises SIGTTOU: blocked meanwhile.
    if let (Some(fd), Some(fg)) = (ctty_fd(spec, p), foreground(spec, p)) {
        sys::signal::with_blocked(libc::SIGTTOU, || sys::term::set_foreground(fd, fg))
            .map_err(e(Step::Ctty))?;
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
            // fds of this process copy, which never returns to their owners.
            let _ = sys::fd::close_range_of(lo, t as u32 - 1);
        }
        lo = t as u32 + 1;
    }
    // As above: every restorer object from base_fd up.
    let _ = sys::fd::close_range_of(spec.base_fd as u32, u32::MAX);
    // Locks last among the fds: closing any fd of a file drops this
    // process's POSIX locks on it, and the restorer's copies just closed.
    for lock in &p.locks {
        crate::locks::restore(lock).map_err(e(Step::Locks))?;
    }

    // A gone directory is entered by the swap, last.
    if !p.cwd_gone {
        sys::fs::chdir(&cstr(&p.cwd)).map_err(e(Step::Cwd))?;
    }
    if p.root != std::path::Path::new("/") && !p.root_gone {
        sys::fs::chroot(&cstr(&p.root)).map_err(e(Step::Root))?;
    }
    sys::fs::set_umask(p.umask);
    for r in &p.rlimits {
        // Unread (0) if it fails, as the clamp below then keeps it.
        let hard = sys::process::limit(r.resource).map_or(0, |(_, hard)| hard);
        // A hard limit can only be raised with CAP_SYS_RESOURCE: clamp.
        let max = r.max.min(hard);
        sys::process::set_limit(r.resource, r.cur.min(max), max).map_err(e(Step::Rlimit))?;
    }
    sys::process::set_personality(p.personality).map_err(e(Step::Personality))?;
    let mut comm = [0u8; 16];
    let n = p.comm.len().min(15);
    comm[..n].copy_from_slice(&p.comm.as_bytes()[..n]);
    // The name up to its first NUL, at most 15 bytes.
    if let Ok(name) = std::ffi::CStr::from_bytes_until_nul(&comm) {
        let _ = sys::process::set_name(name);
    }
    // Yama: the restorer may seize us.
    let _ = sys::process::set_ptracer(spec.restorer_pid);
    // Every handler back to default; the saved ones are set from outside.
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let _ = sys::signal::reset_raw(sig);
    }
    Ok(())
}

/// Map the gadget (a `syscall; int3` page and scratch pages) at the first
/// candidate address that is free both here and in the saved layout.
/// Whether fd `fd` of this process is an `O_PATH` handle.
fn is_o_path(fd: RawFd) -> bool {
    // A closed fd is none.
    sys::fd::status_flags_of(fd).is_ok_and(|flags| flags & libc::O_PATH != 0)
}

fn map_gadget(candidates: &[u64]) -> io::Result<u64> {
    for &addr in candidates {
        let Ok(mut page) = sys::mm::Mapping::anonymous_at(addr, GADGET_LEN as usize) else {
            continue;
        };
        if page.addr() as u64 != addr {
            // A kernel that took the address as a hint: left as it is.
            page.keep();
            continue;
        }
        // syscall; int3, and the batch code where the injection expects it.
        page.write_bytes(0, &[0x0f, 0x05, 0xcc]);
        page.write_bytes(
            crate::remote::BATCH_OFFSET as usize,
            &crate::remote::BATCH_CODE,
        );
        // Kept for the swap.
        let _ = page.keep_as_code(4096);
        return Ok(addr);
    }
    Err(io::Error::from_raw_os_error(libc::ENOMEM))
}
