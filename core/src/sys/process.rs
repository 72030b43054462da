//! Processes: signals, our own children (forking them, with chosen pids
//! too, and reaping them), ending at once, sessions and groups, the
//! calling process's own settings (resource limits, personality, name,
//! parent-death signal, who may trace it), the scheduler. `fork` is here
//! only inside functions whose child makes plain system calls and exits
//! (no allocation, no locks), as a fork of a threaded process must;
//! [`clone3`] is the one exception, for a single-threaded caller.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Send `signal` to `pid`. libc: the signal may be any number (a
/// real-time one included), which nix's `Signal` cannot name.
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes two integers.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Run `f` with the pid of a child of ours that has already exited (a
/// zombie, not yet reaped); the child is reaped after `f` returns.
pub fn with_exited_child<T>(f: impl FnOnce(i32) -> T) -> io::Result<T> {
    // SAFETY: the child only calls _exit, which is async-signal-safe.
    let child = unsafe { libc::fork() };
    match child {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: ends the child at once.
        0 => unsafe { libc::_exit(0) },
        child => {
            let out = f(child);
            reap(child);
            Ok(out)
        }
    }
}

/// Fork this process (`fork`): 0 in the child, the child's pid in the
/// parent. libc: nix's `fork` is unsafe by signature too. Only for the
/// single-threaded restore root and keeper: the child inherits no lock
/// another thread held.
pub fn fork() -> io::Result<i32> {
    // SAFETY: the callers are single-threaded (see above).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// Reap any child of ours that ended (`waitpid(-1, &status, flags)`,
/// `flags` as given: `WNOHANG`, `__WALL`): its pid and raw wait status;
/// pid 0 under `WNOHANG` when none has ended yet. libc: the caller
/// decodes the raw status, which nix's `WaitStatus` does not keep.
pub fn wait_any(flags: i32) -> io::Result<(i32, i32)> {
    let mut status = 0;
    // SAFETY: waitpid writes one int into a local.
    let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((pid, status))
}

/// Have orphans of our descendants come to us rather than to init
/// (`PR_SET_CHILD_SUBREAPER`, on nix).
pub fn set_child_subreaper() -> io::Result<()> {
    Ok(nix::sys::prctl::set_child_subreaper(true)?)
}

/// Wait for our child `pid` to exit and reap it (`waitpid(pid, 0)`, on
/// nix: complete, exact and safe).
pub fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}

/// As [`reap`], whatever signal the child reports its end with
/// (`waitpid(pid, __WALL)`).
pub fn reap_any_kind(pid: i32) {
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::__WALL),
    );
}

/// `clone3` with no stack: as with `fork`, the child goes on from here on
/// a copy of this stack and address space, and 0 is returned in it.
/// `set_tid` holds the pids to take, the innermost pid namespace's first
/// (empty: any); `exit_signal` is what the parent gets at the child's end.
/// libc: neither nix nor rustix has clone3. The caller is single-threaded
/// (the restorer and its copies): no other thread's lock is copied held.
pub fn clone3(flags: u64, exit_signal: u64, set_tid: &[i32]) -> io::Result<i32> {
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
    let args = CloneArgs {
        flags,
        exit_signal,
        set_tid: if set_tid.is_empty() {
            0
        } else {
            set_tid.as_ptr() as u64
        },
        set_tid_size: set_tid.len() as u64,
        ..Default::default()
    };
    // SAFETY: clone3 with no stack behaves like fork: the child continues
    // on a copy of this stack. args and set_tid outlive the call.
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

/// End this process now with `code` (`_exit`): no destructors, no atexit
/// handlers, no flush, as a forked copy must end. libc: neither nix nor
/// rustix has it.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and does not return.
    unsafe { libc::_exit(code) }
}

/// This process's pid, in its own pid namespace (`getpid`, on nix).
pub fn pid() -> i32 {
    nix::unistd::getpid().as_raw()
}

/// Its parent's pid (`getppid`, on nix): 0 when the parent is outside
/// our pid namespace.
pub fn parent_pid() -> i32 {
    nix::unistd::getppid().as_raw()
}

/// Make a new session, led by us (`setsid`, on nix).
pub fn setsid() -> io::Result<()> {
    nix::unistd::setsid()?;
    Ok(())
}

/// Move `pid` (0: us) into process group `pgid` (0: its own) (`setpgid`,
/// on nix).
pub fn setpgid(pid: i32, pgid: i32) -> io::Result<()> {
    use nix::unistd::Pid;
    Ok(nix::unistd::setpgid(
        Pid::from_raw(pid),
        Pid::from_raw(pgid),
    )?)
}

/// Have the kernel send us `signal` when our parent ends
/// (`PR_SET_PDEATHSIG`, on nix).
pub fn set_parent_death_signal(signal: i32) -> io::Result<()> {
    let signal = nix::sys::signal::Signal::try_from(signal)?;
    Ok(nix::sys::prctl::set_pdeathsig(signal)?)
}

/// Set the calling thread's name (`PR_SET_NAME`, on nix): its first 15
/// bytes.
pub fn set_name(name: &CStr) -> io::Result<()> {
    Ok(nix::sys::prctl::set_name(name)?)
}

/// Let `pid` trace us as if it were our ancestor (Yama's
/// `PR_SET_PTRACER`, on rustix; nix lacks it).
pub fn set_ptracer(pid: i32) -> io::Result<()> {
    use rustix::process::{PTracer, Pid};
    let tracer = Pid::from_raw(pid).map_or(PTracer::None, PTracer::ProcessID);
    Ok(rustix::process::set_ptracer(tracer)?)
}

/// Our limit of `resource` (soft, hard), by its raw number as saved
/// (`prlimit64(0, resource, NULL, &old)`, as glibc's `getrlimit` is too).
/// libc: rustix's `Resource` names only the limits it knows.
pub fn limit(resource: u32) -> io::Result<(u64, u64)> {
    let mut cur = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 on ourselves writing one struct into `cur`.
    if unsafe { libc::prlimit64(0, resource as _, std::ptr::null(), &mut cur) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cur.rlim_cur, cur.rlim_max))
}

/// Set our limit of `resource` (`prlimit64(0, resource, &new, NULL)`).
pub fn set_limit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let new = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: prlimit64 on ourselves reading one struct from `new`.
    if unsafe { libc::prlimit64(0, resource as _, &new, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set our execution domain to `persona` as saved (`personality`). libc:
/// nix's `Persona` may not know every bit.
pub fn set_personality(persona: u32) -> io::Result<()> {
    // SAFETY: personality takes an integer.
    if unsafe { libc::personality(persona as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lower the calling thread's scheduling priority to `nice`.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // who 0: the calling thread.
    Ok(rustix::process::setpriority_process(None, nice)?)
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A child process that writes `byte` to the file `path` if this process
/// dies before dropping the guard: it waits on a pipe whose write end
/// only we hold, and end of file without a byte means we are gone. It
/// lives in a process group of its own, so a ^C or a kill of our group
/// does not take it along.
#[derive(Debug)]
pub struct WriteIfOrphaned {
    pid: i32,
    done: OwnedFd,
}

impl WriteIfOrphaned {
    /// Start the child. `path` is made before the fork (the child does
    /// not allocate).
    pub fn spawn(path: &CStr, byte: u8) -> io::Result<Self> {
        let (wait_end, done) = super::pipe::pipe()?;
        // SAFETY: fork; the child only makes plain system calls (no
        // allocation, no locks) before it exits, as a fork of a threaded
        // process must.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => orphan_watch(wait_end.as_raw_fd(), path, byte),
            pid => Ok(Self { pid, done }),
        }
    }
}

/// The child's life: only system calls from here to its exit.
fn orphan_watch(wait_end: i32, path: &CStr, byte: u8) -> ! {
    // SAFETY: setpgid on ourselves.
    unsafe { libc::setpgid(0, 0) };
    // Hold nothing of the parent's: above all not the write end of our
    // own pipe, nor its output (a reader waits for its end).
    // SAFETY: dup2 of an fd this process holds.
    unsafe { libc::dup2(wait_end, 0) };
    // SAFETY: closing our own fds from 1 up.
    unsafe { libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32) };
    let mut got = 0u8;
    let n = loop {
        // SAFETY: a one-byte read into a local.
        let n = unsafe { libc::read(0, (&mut got as *mut u8).cast(), 1) };
        if n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break n;
        }
    };
    if n != 1 {
        // SAFETY: open of a NUL-terminated path made before the fork.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: a one-byte write from a local.
            unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
        }
    }
    // SAFETY: ends the child without running the parent's destructors.
    unsafe { libc::_exit(0) }
}

impl Drop for WriteIfOrphaned {
    fn drop(&mut self) {
        // A byte: we are alive and done; the child exits without writing.
        let _ = super::fd::write(self.done.as_raw_fd(), b"d");
        reap(self.pid);
    }
}
