//! Gone directories: a working or root directory that is the `/proc`
//! directory of a task that has exited. Sandboxes make them on purpose:
//! firefox's content processes chroot into `/proc/<helper>/fdinfo` of a
//! helper that then exits, the emptiest root there is (nothing can be
//! looked up or made in it, and it belongs to no filesystem one can write).
//!
//! Its path names nothing any more, so it is saved as what it is and made
//! again at restore the way the sandbox made it, from inside the task,
//! last (a root entered earlier would hide every file the swap maps).

use crate::procmem::ProcMem;
use crate::remote::{RemoteError, RemoteTask, Scratch};
use crate::snapshot::ProcessImage;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Where the swap writes the paths it enters.
const PATH_OFF: usize = 12288 + 2048;

/// Whether `link` (`cwd` or `root` of `pid`, which reads as `target`) is
/// the `/proc` directory of a task that is gone: the path no longer leads
/// to the directory the link holds.
pub fn is_gone(pid: i32, link: &str, target: &Path) -> bool {
    if !target.starts_with("/proc/") {
        return false;
    }
    let Ok(held) = std::fs::metadata(format!("/proc/{pid}/{link}")) else {
        return false;
    };
    match std::fs::metadata(target) {
        Ok(now) => (now.dev(), now.ino()) != (held.dev(), held.ino()),
        Err(_) => true,
    }
}

/// Whether `p` needs a gone directory at restore.
pub fn needed(p: &ProcessImage) -> bool {
    p.cwd_gone || p.root_gone
}

/// From inside `p`'s task, last (after its threads exist; before its
/// filters and credentials): enter a gone directory as working directory,
/// and as root when it was, the way the sandbox did. A gone directory
/// can only be entered while its task lives (its permission check asks
/// for the task), so a helper thread, sharing the file system context,
/// enters its own `/proc/thread-self/fdinfo` and exits.
pub fn enter(
    task: &RemoteTask,
    mem: &mut ProcMem,
    scratch: &Scratch,
    gadget: u64,
    p: &ProcessImage,
) -> Result<(), RemoteError> {
    if !needed(p) {
        return Ok(());
    }
    crate::ptrace::set_options(
        task.tid(),
        libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_EXITKILL,
    )?;
    let tid = crate::thread::create_helper(task, mem, scratch)?;
    let helper = RemoteTask::new(tid, gadget)?;
    let path = scratch.write(mem, PATH_OFF, b"/proc/thread-self/fdinfo\0")?;
    helper.syscall("chdir", libc::SYS_chdir, [path, 0, 0, 0, 0, 0])?;
    if p.root_gone {
        let dot = scratch.write(mem, PATH_OFF, b".\0")?;
        helper.syscall("chroot", libc::SYS_chroot, [dot, 0, 0, 0, 0, 0])?;
        let slash = scratch.write(mem, PATH_OFF, b"/\0")?;
        helper.syscall("chdir", libc::SYS_chdir, [slash, 0, 0, 0, 0, 0])?;
    }
    helper.exit_thread()
}
