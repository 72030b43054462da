//! The restore gadget's syscall batch loop, run in a real process: every
//! call's result comes back, and the first failing call stops the batch
//! and is named with its errno.

use hiber_core::freeze::Frozen;
use hiber_core::procfs::{MapsPath, ProcDir};
use hiber_core::procmem::ProcMem;
use hiber_core::remote::{self, RemoteError, RemoteTask, Scratch, BATCH_CODE};
use std::process::{Command, Stdio};

/// Ends the child it holds, also when the test fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_batch_runs_in_order_and_stops_at_the_first_error() {
    let child = Child(
        Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep"),
    );
    let pid = child.0.id() as i32;
    // Wait until it runs sleep itself (it has a vdso then).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |c| !c.starts_with(b"sleep")) {
        assert!(std::time::Instant::now() < deadline, "sleep did not start");
        std::thread::yield_now();
    }
    let frozen = Frozen::freeze(&[pid]).unwrap();
    let vdso = ProcDir::new(pid)
        .maps()
        .unwrap()
        .into_iter()
        .find(|m| matches!(m.path, MapsPath::Vdso))
        .expect("a vdso");
    let mut mem = ProcMem::new(pid, true);
    let ip = remote::find_syscall_insn(&mut mem, vdso.start, vdso.end).unwrap();
    let task = RemoteTask::new(pid, ip).unwrap();
    let scratch = Scratch::map(&task, &mut mem, 4096).unwrap();
    let code = task
        .syscall(
            "mmap",
            libc::SYS_mmap,
            [
                0,
                4096,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
        .unwrap();
    mem.write(code, &BATCH_CODE).unwrap();
    task.syscall(
        "mprotect",
        libc::SYS_mprotect,
        [
            code,
            4096,
            (libc::PROT_READ | libc::PROT_EXEC) as u64,
            0,
            0,
            0,
        ],
    )
    .unwrap();

    let ok = task
        .syscall_batch(
            &mut mem,
            &scratch,
            0,
            code,
            &[
                ("getpid", libc::SYS_getpid, [0; 6]),
                ("getppid", libc::SYS_getppid, [0; 6]),
            ],
        )
        .unwrap();
    assert_eq!(ok, vec![pid as u64, std::process::id() as u64]);

    let err = task
        .syscall_batch(
            &mut mem,
            &scratch,
            0,
            code,
            &[
                ("getpid", libc::SYS_getpid, [0; 6]),
                ("close", libc::SYS_close, [9999, 0, 0, 0, 0, 0]),
                ("kill", libc::SYS_kill, [pid as u64, 9, 0, 0, 0, 0]),
            ],
        )
        .unwrap_err();
    match err {
        RemoteError::Syscall {
            pid: p,
            name,
            errno,
        } => {
            assert_eq!((p, name, errno), (pid, "close", libc::EBADF));
        }
        other => panic!("unexpected error {other}"),
    }
    // The call after the failed one never ran: the process is alive.
    task.syscall("munmap", libc::SYS_munmap, [code, 4096, 0, 0, 0, 0])
        .unwrap();
    scratch.unmap(&task, &mut mem).unwrap();
    task.restore().unwrap();
    frozen.thaw();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
    assert!(!matches!(state, Some("Z" | "X")), "{stat}");
}
