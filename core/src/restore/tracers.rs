//! Tracer threads: the swap and the release run on a few threads at once,
//! each driving the tasks it seized itself.
//!
//! ptrace belongs to a thread, not to a process: only the thread that
//! seized a task may drive it and let it go, and a tracer thread that
//! ends takes its tasks with it (they are seized with EXITKILL). So a
//! tracer here is a thread that runs the jobs it is given, in order, and
//! lives until its queue closes: after the release detached its tasks, or
//! once the restore gave up (and killed them).
//!
//! A task's ptrace round trip waits for the scheduler twice (to run it,
//! then to run us again): one tracer leaves the CPUs idle meanwhile, a
//! few keep them busy.

use super::error::{RestoreError, Result};
use std::sync::mpsc;
use std::thread::Scope;
use std::time::{Duration, Instant};

type Job<'s> = Box<dyn FnOnce() + Send + 's>;

/// How many tracers a restore of `tasks` processes uses: a few per CPU
/// (their time is mostly spent waiting for a tracee), never more than
/// there are processes.
pub(super) fn count(tasks: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cpus).min(8).min(tasks).max(1)
}

/// The tracer threads of one restore, started in a scope that outlives
/// every task they hold.
pub(super) struct Tracers<'s> {
    queues: Vec<mpsc::Sender<Job<'s>>>,
}

impl<'s> Tracers<'s> {
    /// Start `n` tracers (at least one) in `scope`.
    pub fn start<'env>(scope: &'s Scope<'s, 'env>, n: usize) -> Self {
        let queues = (0..n.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel::<Job<'s>>();
                scope.spawn(move || {
                    for job in rx {
                        job();
                    }
                });
                tx
            })
            .collect();
        Self { queues }
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Run `job` on tracer `k`, after the jobs it was given before; its
    /// result goes to `answers`, tagged with `k`. A job that panics
    /// answers with the panic, which the waiter raises again.
    pub fn give<T: Send + 's>(
        &self,
        k: usize,
        answers: &Answers<T>,
        job: impl FnOnce() -> T + Send + 's,
    ) {
        let to = answers.tx.clone();
        let job: Job<'s> = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            // The waiter gone, nobody needs the answer.
            let _ = to.send((k, result));
        });
        // A tracer's thread ends only once its queue is closed, and a job
        // never unwinds out of it: the send finds it.
        let _ = self.queues[k].send(job);
    }
}

/// Where the jobs given to tracers answer.
pub(super) struct Answers<T> {
    tx: mpsc::Sender<(usize, std::thread::Result<T>)>,
    rx: mpsc::Receiver<(usize, std::thread::Result<T>)>,
}

impl<T> Answers<T> {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Self { tx, rx }
    }

    /// The next answer (the tracer and the job's result), waiting at most
    /// `limit` for it; `what` names the job in the error.
    pub fn next(&self, limit: Duration, what: impl FnOnce() -> String) -> Result<(usize, T)> {
        let deadline = Instant::now() + limit;
        match self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok((k, Ok(value))) => Ok((k, value)),
            Ok((_, Err(panic))) => std::panic::resume_unwind(panic),
            // We hold a sender ourselves: only the time can run out.
            Err(_) => Err(RestoreError::Waited {
                what: what(),
                secs: limit.as_secs(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_job_runs_on_the_tracer_it_was_given_to() {
        std::thread::scope(|s| {
            let tracers = Tracers::start(s, 3);
            let answers = Answers::new();
            for k in [0, 1, 2, 1, 0] {
                tracers.give(k, &answers, move || std::thread::current().id());
            }
            let mut seen: Vec<Vec<std::thread::ThreadId>> = vec![Vec::new(); 3];
            for _ in 0..5 {
                let (k, id) = answers
                    .next(Duration::from_secs(10), || "a job".into())
                    .unwrap();
                seen[k].push(id);
            }
            assert_eq!(seen.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
            // Each tracer is one thread, and no two share one.
            for ids in &seen {
                assert!(ids.windows(2).all(|w| w[0] == w[1]));
            }
            assert_ne!(seen[0][0], seen[1][0]);
            assert_ne!(seen[1][0], seen[2][0]);
            assert_ne!(seen[0][0], std::thread::current().id());
        });
    }

    #[test]
    fn an_answer_not_given_in_time_is_an_error_naming_the_job() {
        std::thread::scope(|s| {
            let tracers = Tracers::start(s, 1);
            let answers = Answers::<()>::new();
            let (release, wait) = mpsc::channel::<()>();
            tracers.give(0, &answers, move || {
                let _ = wait.recv();
            });
            let err = answers
                .next(Duration::from_millis(50), || "swapping pid 42".into())
                .unwrap_err();
            assert!(err.to_string().contains("swapping pid 42"), "{err}");
            drop(release);
            assert!(answers.next(Duration::from_secs(10), String::new).is_ok());
        });
    }

    #[test]
    fn a_job_that_panics_panics_its_waiter() {
        std::thread::scope(|s| {
            let tracers = Tracers::start(s, 1);
            let answers = Answers::<()>::new();
            tracers.give(0, &answers, || panic!("the job's own panic"));
            let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                answers.next(Duration::from_secs(10), String::new)
            }));
            let panic = waited.unwrap_err();
            assert_eq!(panic.downcast_ref::<&str>(), Some(&"the job's own panic"));
            // The tracer lives on for the next job.
            tracers.give(0, &answers, || ());
            assert!(answers.next(Duration::from_secs(10), String::new).is_ok());
        });
    }
}
