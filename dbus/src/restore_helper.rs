//! A restore runs in a helper: hiberd started again as
//! `hiberd --restore-helper UID ID DISPLAY MEMORY`. The restored session's keeper is the
//! helper's child, and the helper exits once the session runs, so the
//! session is never hiberd's child nor tied to its lifetime; a restore
//! that crashes takes no service down with it. The helper reports on its
//! stdout, one line at a time: `progress DONE TOTAL STAGE`, then
//! `ok JSON` or `error NAME MESSAGE`; hiberd writes `cancel` on its stdin
//! when the job is cancelled (heard until the restored processes run).

use crate::error::{Error, Result};
use hiber_session::display_session::{DisplayChoice, MemoryLoading, RestoreHow};
use hiber_session::system_store::{JobControl, Progress, RestoreOutcome, Store};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// How often a running helper's job is asked whether it was cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Run the helper for `uid`'s snapshot `id` and relay its progress.
pub fn run_helper(
    base: &Path,
    uid: u32,
    id: &str,
    how: RestoreHow,
    job: &dyn JobControl,
) -> Result<RestoreOutcome> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Failed(format!("finding hiberd's own executable: {e}")))?;
    let mut child = Command::new(&exe)
        .arg("--restore-helper")
        .arg(uid.to_string())
        .arg(id)
        .arg(how.display.to_arg())
        .arg(how.memory.to_arg())
        .env("HIBER_STATE_DIR", base)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Failed(format!("starting {}: {e}", exe.display())))?;
    let out = child.stdout.take().expect("piped");
    let mut stdin = child.stdin.take();
    // Lines come through a channel so that the job's cancellation is heard
    // while the helper says nothing.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut result = None;
    loop {
        let line = match rx.recv_timeout(CANCEL_POLL) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if job.cancelled() {
                    if let Some(mut s) = stdin.take() {
                        // A helper past the point of no return has stopped
                        // listening: its answer says what became of it.
                        let _ = s.write_all(b"cancel\n");
                    }
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let (word, rest) = line.split_once(' ').unwrap_or((&line, ""));
        match word {
            "progress" => {
                let mut f = rest.splitn(3, ' ');
                let done = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let total = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let fraction = if total > 0 {
                    0.9 * done as f64 / total as f64
                } else {
                    0.0
                };
                job.progress(Progress {
                    stage: "restoring",
                    fraction,
                    bytes_done: done,
                    bytes_expected: total,
                });
            }
            "ok" => {
                result = Some(
                    serde_json::from_str::<RestoreOutcome>(rest)
                        .map_err(|e| Error::Failed(format!("the restore helper's answer: {e}"))),
                )
            }
            "error" => {
                let (name, message) = rest.split_once(' ').unwrap_or((rest, ""));
                result = Some(Err(Error::from_name(name, message.replace("\\n", "\n"))));
            }
            _ => {}
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::Failed(format!("waiting for the restore helper: {e}")))?;
    result.unwrap_or_else(|| {
        Err(Error::Failed(format!(
            "the restore helper ended without an answer ({status})"
        )))
    })
}

/// Prints progress for hiberd, at most once per percent, and hears its
/// `cancel`.
struct Stdout {
    last: std::sync::Mutex<u64>,
    cancel: Arc<AtomicBool>,
}

impl JobControl for Stdout {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    fn progress(&self, p: Progress) {
        let step = p.bytes_expected / 100 + 1;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if p.bytes_done / step != *last / step || p.bytes_done == p.bytes_expected {
            *last = p.bytes_done;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "progress {} {} {}",
                p.bytes_done, p.bytes_expected, p.stage
            );
            let _ = out.flush();
        }
    }
}

/// The helper's main: restore, answer, exit.
pub fn main(base: &Path, uid: &str, id: &str, display: &str, memory: &str) -> ExitCode {
    let Ok(uid) = uid.parse::<u32>() else {
        println!("error org.hiber.Hiber1.Error.Failed bad uid {uid:?}");
        return ExitCode::FAILURE;
    };
    let Some(display) = DisplayChoice::parse(display) else {
        println!("error org.hiber.Hiber1.Error.Failed bad display {display:?}");
        return ExitCode::FAILURE;
    };
    let Some(memory) = MemoryLoading::parse(memory) else {
        println!("error org.hiber.Hiber1.Error.Failed bad memory loading {memory:?}");
        return ExitCode::FAILURE;
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let heard = cancel.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l == "cancel" => heard.store(true, Ordering::Release),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let job = Stdout {
        last: std::sync::Mutex::new(u64::MAX),
        cancel,
    };
    match Store::new(base).restore(uid, id, RestoreHow { display, memory }, &job) {
        Ok(outcome) => {
            println!(
                "ok {}",
                serde_json::to_string(&outcome).expect("the outcome serialises")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let e = Error::from(e);
            println!(
                "error {} {}",
                e.dbus_name(),
                e.message().replace('\n', "\\n")
            );
            ExitCode::FAILURE
        }
    }
}
