//! Processes: signals, our own children, the scheduler. `fork` is here
//! only inside functions whose child makes plain system calls and exits
//! (no allocation, no locks), as a fork of a threaded process must.

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

/// Wait for our child `pid` to exit and reap it (`waitpid(pid, 0)`, on
/// nix: complete, exact and safe).
fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
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
