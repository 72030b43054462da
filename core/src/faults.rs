//! Fault points for the crash tests. With `HIBER_FAULT_KILL_AT=N` in its
//! environment the process kills itself with SIGKILL at the Nth point it
//! passes, so a test can end a checkpointer or a restorer at every place
//! where dying leaves something different behind (around each change
//! ptrace makes to a task, the cgroup freezer, the commit), not only where
//! a timer happens to land. Without the variable a point is one atomic
//! increment.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static PASSED: AtomicU64 = AtomicU64::new(0);

fn kill_at() -> Option<u64> {
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    *AT.get_or_init(|| {
        std::env::var("HIBER_FAULT_KILL_AT")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// Pass a fault point; `what` names it in the log line written just before
/// the kill.
pub fn point(what: &'static str) {
    let n = PASSED.fetch_add(1, Ordering::Relaxed) + 1;
    if kill_at() == Some(n) {
        tracing::info!(point = what, n, "fault injection: killing this process");
        // SIGKILL takes no handler.
        let _ = crate::sys::process::kill(std::process::id() as i32, libc::SIGKILL);
    }
}

/// How many points this process passed: a test raises N until a run
/// passes them all.
pub fn passed() -> u64 {
    PASSED.load(Ordering::Relaxed)
}
