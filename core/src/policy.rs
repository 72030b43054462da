//! Policies: what happens to each process, fd and mapping at checkpoint and
//! restore, and why. Decided once, at checkpoint time, and reported by
//! `hiber check` before anything is written.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What the engine does with one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Policy {
    /// Recreated faithfully.
    Restore,
    /// Reopened by path at restore; its identity (major:minor) is checked.
    Reopen,
    /// Simulated hot-unplug: a dead stand-in at restore.
    Detach,
    /// The X server's primary DRM card (experimental): the live card
    /// reopened and the server's VT re-enter path driven.
    Reattach,
    /// Restored broken, the way the program already handles (a peer gone).
    Reset,
    /// The checkpoint stops here, with the reason.
    Refuse,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Restore => "Restore",
            Policy::Reopen => "Reopen",
            Policy::Detach => "Detach",
            Policy::Reattach => "Reattach",
            Policy::Reset => "Reset",
            Policy::Refuse => "Refuse",
        })
    }
}

/// The object a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Subject {
    Process,
    Thread { tid: i32 },
    Fd { fd: i32 },
    Mapping { start: u64, end: u64 },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Process => f.write_str("process"),
            Subject::Thread { tid } => write!(f, "thread {tid}"),
            Subject::Fd { fd } => write!(f, "fd {fd}"),
            Subject::Mapping { start, end } => write!(f, "mapping {start:x}-{end:x}"),
        }
    }
}

/// One resource of one process, with its policy and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub pid: i32,
    pub subject: Subject,
    /// What the resource is: "regular file /var/log/x", "pipe", "anon memory".
    pub kind: String,
    pub policy: Policy,
    pub reason: String,
    /// A refusal for data in flight that the processes consume by
    /// themselves once they run (a message carrying fds, unread events):
    /// the checkpoint tries again a moment later.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transient: bool,
}

/// A process of the checked set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSummary {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    pub threads: usize,
    pub zombie: bool,
}

/// The checkpointability report of a task set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub processes: Vec<ProcessSummary>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn add(
        &mut self,
        pid: i32,
        subject: Subject,
        kind: impl Into<String>,
        policy: Policy,
        reason: impl Into<String>,
    ) {
        self.findings.push(Finding {
            pid,
            subject,
            kind: kind.into(),
            policy,
            reason: reason.into(),
            transient: false,
        });
    }

    /// A refusal the processes clear by themselves once they run (see
    /// [`Finding::transient`]).
    pub fn refuse_for_now(
        &mut self,
        pid: i32,
        subject: Subject,
        kind: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.add(pid, subject, kind, Policy::Refuse, reason);
        if let Some(f) = self.findings.last_mut() {
            f.transient = true;
        }
    }

    /// Refused, and only for data in flight: trying again soon may work.
    pub fn refused_only_for_now(&self) -> bool {
        let mut refused = self.refused().peekable();
        refused.peek().is_some() && refused.all(|f| f.transient)
    }

    pub fn refused(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.policy == Policy::Refuse)
    }

    /// Turn every Reset into a Refuse: for callers that would rather not
    /// save than have a connection restored broken.
    pub fn refuse_resets(&mut self) {
        for f in self
            .findings
            .iter_mut()
            .filter(|f| f.policy == Policy::Reset)
        {
            f.policy = Policy::Refuse;
            f.reason = format!("would be Reset, which was not allowed: {}", f.reason);
        }
    }

    pub fn is_checkpointable(&self) -> bool {
        self.refused().next().is_none()
    }

    /// One line per refusal, for error messages.
    pub fn refusals_text(&self) -> String {
        self.refused()
            .map(|f| format!("pid {} {} ({}): {}", f.pid, f.subject, f.kind, f.reason))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_listed_with_their_subject() {
        let mut r = Report::default();
        r.add(
            4,
            Subject::Fd { fd: 3 },
            "pipe",
            Policy::Restore,
            "both ends in the set",
        );
        assert!(r.is_checkpointable());
        r.add(
            4,
            Subject::Fd { fd: 5 },
            "socket",
            Policy::Refuse,
            "not yet supported",
        );
        assert!(!r.is_checkpointable());
        assert_eq!(r.refusals_text(), "pid 4 fd 5 (socket): not yet supported");
    }

    #[test]
    fn only_refusals_for_data_in_flight_are_worth_a_retry() {
        let mut r = Report::default();
        assert!(!r.refused_only_for_now(), "nothing refused");
        r.refuse_for_now(4, Subject::Fd { fd: 6 }, "socket", "fds in flight");
        assert!(r.refused_only_for_now());
        r.add(4, Subject::Process, "process", Policy::Refuse, "stopped");
        assert!(!r.refused_only_for_now(), "a lasting refusal stays");
        let json = serde_json::to_string(&r.findings[1]).unwrap();
        assert!(!json.contains("transient"), "{json}");
    }
}
