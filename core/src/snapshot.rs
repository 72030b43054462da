//! The image's metadata document: everything saved about a task set,
//! except page and file data, which the document references by chunk.

use crate::attachment::StoredAttachment;
use crate::creds::Creds;
use crate::files::pipe::PipeImage;
use crate::files::service_file::Pending;
use crate::files::{FdImage, FileKind, OpenFile};
use crate::image::ChunkRef;
use crate::memory::shmem::ShmemObject;
use crate::memory::MmImage;
use crate::policy::Report;
use crate::ptrace::QueuedSignal;
use crate::signals::SigAction;
use crate::thread::ThreadImage;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: u32,
    pub cur: u64,
    pub max: u64,
}

/// One process of the saved set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessImage {
    pub pid: i32,
    /// Parent pid; a parent outside the set makes this a root.
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// Wait status of a zombie; such a process has no other state.
    pub zombie_status: Option<i32>,
    pub creds: Creds,
    pub cwd: PathBuf,
    pub root: PathBuf,
    /// The working directory was the `/proc` directory of a task that has
    /// exited (see `gone_dir`); `cwd` is what its path read then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cwd_gone: bool,
    /// The same of its root directory (a sandbox's empty root).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub root_gone: bool,
    pub umask: u32,
    pub personality: u32,
    pub rlimits: Vec<Rlimit>,
    pub mm: Option<MmImage>,
    pub threads: Vec<ThreadImage>,
    pub sigactions: Vec<SigAction>,
    pub shared_pending: Vec<QueuedSignal>,
    pub fds: Vec<FdImage>,
    /// For a session leader: the number of the pty (saved too) that is the
    /// session's controlling terminal.
    #[serde(default)]
    pub ctty: Option<u32>,
    /// Interval and POSIX timers.
    #[serde(default)]
    pub timers: crate::timers::Timers,
    /// File locks it holds, taken again on its fds.
    #[serde(default)]
    pub locks: Vec<crate::locks::FileLock>,
    /// Its cgroup v2 path, joined again at restore when it exists there.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// The signal that stopped it (job control: `SIGTSTP`, `SIGSTOP`,
    /// `SIGTTIN`, `SIGTTOU`), when it was stopped at checkpoint time; it
    /// is stopped again by the same signal before it is let go.
    #[serde(default)]
    pub job_stop: Option<i32>,
    /// Its namespaces that differ from the checkpointer's (see
    /// `namespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<crate::namespaces::Namespaces>,
    /// The distinct seccomp filters of its threads (see `seccomp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seccomp_filters: Vec<crate::seccomp::Filter>,
    /// Its pids in the pid namespaces nested below the checkpointer's,
    /// outermost first (`NSpid` after `pid`); empty: none (see
    /// `namespaces`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ns_pids: Vec<i32>,
}

impl ProcessImage {
    pub fn is_zombie(&self) -> bool {
        self.zombie_status.is_some()
    }

    /// The id of its thread `tid` (a tid of the checkpointer's pid
    /// namespace) as the process itself sees it, in its own pid namespace:
    /// what calls made from inside it must name.
    pub fn own_tid(&self, tid: i32) -> i32 {
        if tid == self.pid {
            return self.ns_pids.last().copied().unwrap_or(tid);
        }
        self.threads
            .iter()
            .find(|t| t.tid == tid)
            .and_then(|t| t.ns_tids.last().copied())
            .unwrap_or(tid)
    }
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub hiber_version: String,
    pub created_unix: u64,
    pub hostname: String,
    pub kernel: String,
    pub roots: Vec<i32>,
    pub processes: Vec<ProcessImage>,
    pub files: Vec<OpenFile>,
    pub pipes: Vec<PipeImage>,
    pub shmem: Vec<ShmemObject>,
    /// What `check` said at checkpoint time.
    pub report: Report,
    /// Blobs the caller stored with the image (window list, screenshots).
    #[serde(default)]
    pub attachments: Vec<StoredAttachment>,
    /// Devices detached from the saved processes: their synthetic
    /// `remove` events (identity and properties included), which the
    /// restored session's uevent proxy replays.
    #[serde(default)]
    pub detached: Vec<crate::uevent::Uevent>,
}

impl Snapshot {
    /// Bytes of saved pages a lazy restore would load on first touch and
    /// in the background (see [`crate::memory::lazy::is_lazy`]): what
    /// decides whether a session restore goes lazy by default.
    pub fn lazy_bytes(&self) -> u64 {
        crate::memory::lazy::lazy_bytes(
            self.processes
                .iter()
                .filter_map(|p| p.mm.as_ref())
                .flat_map(|mm| &mm.vmas),
        )
    }

    /// The fds that [`crate::files::service_file::reopen`] has to put back once their
    /// services are.
    pub fn pending_service_files(&self) -> Vec<Pending> {
        self.processes
            .iter()
            .flat_map(|p| p.fds.iter().map(move |f| (p.pid, f)))
            .filter_map(|(pid, f)| match &self.files.get(f.file)?.kind {
                FileKind::ServiceFile(sf) => Some(Pending {
                    pid,
                    fd: f.fd,
                    cloexec: f.cloexec,
                    flags: self.files[f.file].flags,
                    file: sf.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Every chunk the image references.
    pub fn chunks(&self) -> Vec<&ChunkRef> {
        let mut out: Vec<&ChunkRef> = Vec::new();
        for p in &self.processes {
            if let Some(mm) = &p.mm {
                out.extend(mm.page_chunks());
            }
        }
        for s in &self.shmem {
            out.extend(s.pages.iter().map(|p| &p.chunk));
        }
        for f in &self.files {
            out.extend(f.kind.chunks());
        }
        for p in &self.pipes {
            out.extend(p.data.iter());
        }
        for a in &self.attachments {
            out.extend(a.chunks.iter());
        }
        out
    }

    /// Bytes of page and file data (uncompressed) the image holds.
    pub fn memory_bytes(&self) -> u64 {
        let attached: u64 = self
            .attachments
            .iter()
            .flat_map(|a| &a.chunks)
            .map(|c| c.raw_len as u64)
            .sum();
        let all: u64 = self.chunks().iter().map(|c| c.raw_len as u64).sum();
        all - attached
    }

    pub fn attachment(&self, name: &str) -> Option<&StoredAttachment> {
        self.attachments.iter().find(|a| a.name == name)
    }

    /// Whether any saved process holds a device event socket (the
    /// restore then needs a keeper to run the uevent proxy).
    pub fn has_uevent_sockets(&self) -> bool {
        self.files
            .iter()
            .any(|f| matches!(&f.kind, crate::files::FileKind::Netlink(n) if n.is_uevent()))
    }

    pub fn process(&self, pid: i32) -> Option<&ProcessImage> {
        self.processes.iter().find(|p| p.pid == pid)
    }

    /// The checks restore makes of an untrusted document that need no
    /// filesystem and no process: every chunk reference's shape, every
    /// attachment's, every mapping of a memory image without files, every
    /// detached device event's encoding. Their verdicts are dropped: this
    /// is for the fuzz targets and tests, which run them on hostile
    /// documents to show they never panic; restore makes them itself.
    pub fn check_offline(&self) {
        for c in self.chunks() {
            let _ = c.check_shape();
        }
        for a in &self.attachments {
            let _ = crate::attachment::validate(a);
        }
        for p in &self.processes {
            let Some(mm) = &p.mm else { continue };
            // A file-backed mapping is checked against the file: not offline.
            let files = mm
                .vmas
                .iter()
                .any(|v| matches!(v.backing, crate::memory::Backing::File { .. }));
            if !files {
                let _ = crate::memory::validate(p.pid, mm);
            }
        }
        for ev in &self.detached {
            if crate::uevent::sysfs::valid_subsystem(&ev.subsystem) {
                let _ = crate::uevent::libudev::encode(ev, 0);
            }
        }
    }
}
