//! /proc/PID: the parsed views the engine reads a process through.
//!
//! Every reader maps ENOENT and ESRCH to [`ProcfsError::ProcessGone`], so a
//! process that exits while we look is told apart from a real failure.

use std::fs;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("process {pid} is gone")]
    ProcessGone { pid: i32 },
    #[error("parsing {path}: {what}")]
    Parse { path: PathBuf, what: String },
}

pub type Result<T> = std::result::Result<T, ProcfsError>;

/// The fields of /proc/PID/stat the engine uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    pub tty_nr: i32,
    /// The foreground process group of its controlling terminal (-1: none).
    pub tpgid: i32,
    /// `PF_*` flags of the task (`PF_KTHREAD` tells a kernel thread).
    pub flags: u32,
    pub num_threads: i64,
    pub start_time: u64,
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// Wait status, for a zombie.
    pub exit_code: i32,
}

impl Stat {
    /// A kernel thread: it has no memory or files of its own to save, and
    /// no process of a session is one.
    pub fn kernel_thread(&self) -> bool {
        const PF_KTHREAD: u32 = 0x0020_0000;
        self.flags & PF_KTHREAD != 0
    }
}

/// The fields of /proc/PID/status the engine uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub umask: Option<u32>,
    pub state: char,
    pub tgid: i32,
    /// Real, effective, saved, filesystem.
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
    /// The pid in each pid namespace, outermost first.
    pub ns_pid: Vec<i32>,
    pub threads: u32,
    pub sig_pnd: u64,
    pub shd_pnd: u64,
    pub sig_blk: u64,
    pub sig_ign: u64,
    pub sig_cgt: u64,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    pub seccomp: u32,
}

/// What a mapping maps, from the last column of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapsPath {
    Anonymous,
    Heap,
    Stack,
    Vdso,
    Vvar,
    VvarVclock,
    Vsyscall,
    File {
        path: PathBuf,
        deleted: bool,
    },
    /// Any other bracketed name (`[anon:NAME]`, `[uprobes]`...).
    Other(String),
}

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    pub path: MapsPath,
}

/// One mapping of /proc/PID/smaps: the maps line plus its VmFlags and sizes (kB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmapsEntry {
    pub map: MapsEntry,
    pub vm_flags: Vec<String>,
    pub rss_kb: u64,
    pub anonymous_kb: u64,
    pub swap_kb: u64,
}

impl SmapsEntry {
    /// An entry made from a maps line and flags known otherwise, without
    /// the sizes only smaps gives (they are 0).
    pub fn unsized_from(map: MapsEntry, vm_flags: Vec<String>) -> Self {
        SmapsEntry {
            map,
            vm_flags,
            rss_kb: 0,
            anonymous_kb: 0,
            swap_kb: 0,
        }
    }
}

/// The flags of each mapping as an earlier read of smaps gave them. A
/// mapping's flags that matter here (grows-down) do not change while it
/// exists, so the same range has the same flags; a stack that grew down
/// keeps its end.
#[derive(Debug, Clone, Default)]
pub struct FlagsHint {
    by_range: std::collections::HashMap<(u64, u64), Vec<String>>,
    grown_down_ends: std::collections::HashMap<u64, Vec<String>>,
}

impl FlagsHint {
    pub fn from_smaps(smaps: &[SmapsEntry]) -> Self {
        let mut hint = FlagsHint::default();
        for s in smaps {
            hint.by_range
                .insert((s.map.start, s.map.end), s.vm_flags.clone());
            if s.vm_flags.iter().any(|f| f == "gd") {
                hint.grown_down_ends.insert(s.map.end, s.vm_flags.clone());
            }
        }
        hint
    }

    fn flags_for(&self, m: &MapsEntry) -> Option<Vec<String>> {
        self.by_range
            .get(&(m.start, m.end))
            .or_else(|| self.grown_down_ends.get(&m.end))
            .cloned()
    }
}

/// /proc/PID/fdinfo/FD: the common lines plus everything else by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    pub pos: u64,
    pub flags: u32,
    pub mnt_id: u64,
    pub ino: u64,
    /// The kind-specific lines, `key: value`, in file order.
    pub extra: Vec<(String, String)>,
}

impl FdInfo {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The counter of an eventfd (`eventfd-count`, printed in hex).
    pub fn eventfd_count(&self) -> Option<u64> {
        self.get("eventfd-count")
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    }
}

/// One 64-bit /proc/PID/pagemap entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagemapEntry(pub u64);

impl PagemapEntry {
    pub fn present(self) -> bool {
        self.0 & (1 << 63) != 0
    }
    /// Page is in swap (or being migrated). A userfaultfd write-protect
    /// marker left in an empty entry (swap type 31, `SWP_PTE_MARKER`) is
    /// reported with the swap bit too, but holds no page.
    pub fn swapped(self) -> bool {
        const SWP_PTE_MARKER: u64 = 31;
        self.0 & (1 << 62) != 0 && self.0 & 0x1f != SWP_PTE_MARKER
    }
    /// Page is file-backed or shared anonymous (not a private COW copy).
    pub fn file_or_shared(self) -> bool {
        self.0 & (1 << 61) != 0
    }
    pub fn exclusive(self) -> bool {
        self.0 & (1 << 56) != 0
    }
    /// Page frame number; zero without CAP_SYS_ADMIN.
    pub fn pfn(self) -> u64 {
        self.0 & ((1 << 55) - 1)
    }
}

/// /proc/PID (or /proc/PID/task/TID through [`ProcDir::task`]).
#[derive(Debug, Clone)]
pub struct ProcDir {
    pid: i32,
    base: PathBuf,
}

impl ProcDir {
    pub fn new(pid: i32) -> Self {
        Self {
            pid,
            base: PathBuf::from(format!("/proc/{pid}")),
        }
    }

    /// A thread's directory under this process.
    pub fn task(&self, tid: i32) -> Self {
        Self {
            pid: self.pid,
            base: self.base.join("task").join(tid.to_string()),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn path(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    fn io_error(&self, path: PathBuf, source: io::Error) -> ProcfsError {
        match source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) if !self.base.exists() => {
                ProcfsError::ProcessGone { pid: self.pid }
            }
            Some(libc::ESRCH) => ProcfsError::ProcessGone { pid: self.pid },
            _ => ProcfsError::Io { path, source },
        }
    }

    fn read_string(&self, name: &str) -> Result<String> {
        let path = self.path(name);
        fs::read_to_string(&path).map_err(|e| self.io_error(path, e))
    }

    fn read_bytes(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.path(name);
        fs::read(&path).map_err(|e| self.io_error(path, e))
    }

    fn read_link(&self, name: &str) -> Result<PathBuf> {
        let path = self.path(name);
        fs::read_link(&path).map_err(|e| self.io_error(path, e))
    }

    fn parse_error(&self, name: &str, what: impl Into<String>) -> ProcfsError {
        ProcfsError::Parse {
            path: self.path(name),
            what: what.into(),
        }
    }

    pub fn stat(&self) -> Result<Stat> {
        let text = self.read_string("stat")?;
        parse_stat(&text).map_err(|what| self.parse_error("stat", what))
    }

    pub fn status(&self) -> Result<Status> {
        let text = self.read_string("status")?;
        parse_status(&text).map_err(|e| match e {
            ProcfsError::Parse { what, .. } => self.parse_error("status", what),
            e => e,
        })
    }

    /// Resident memory that is not shared with a file or another process
    /// (`statm`'s resident minus shared pages), in bytes: a cheap estimate
    /// of what a save must write.
    pub fn private_resident_bytes(&self) -> Result<u64> {
        let text = self.read_string("statm")?;
        let mut pages = text.split_ascii_whitespace().skip(1).map(str::parse::<u64>);
        match (pages.next(), pages.next()) {
            (Some(Ok(resident)), Some(Ok(shared))) => {
                Ok(resident.saturating_sub(shared) * rustix::param::page_size() as u64)
            }
            _ => Err(self.parse_error("statm", "not resident and shared page counts")),
        }
    }

    pub fn maps(&self) -> Result<Vec<MapsEntry>> {
        let text = self.read_string("maps")?;
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| parse_maps_line(l).map_err(|what| self.parse_error("maps", what)))
            .collect()
    }

    pub fn smaps(&self) -> Result<Vec<SmapsEntry>> {
        let text = self.read_string("smaps")?;
        parse_smaps(&text).map_err(|what| self.parse_error("smaps", what))
    }

    /// The mappings with their flags: from `maps` and an earlier read of
    /// smaps when that knows every mapping, else from smaps. Reading smaps
    /// walks every page table (6 ms for a GTK program here); maps does not.
    /// The sizes (`rss_kb`…) of entries made from the hint are 0.
    pub fn smaps_hinted(&self, hint: Option<&FlagsHint>) -> Result<Vec<SmapsEntry>> {
        let Some(hint) = hint else {
            return self.smaps();
        };
        let maps = self.maps()?;
        let known: Option<Vec<SmapsEntry>> = maps
            .into_iter()
            .map(|map| {
                hint.flags_for(&map)
                    .map(|vm_flags| SmapsEntry::unsized_from(map, vm_flags))
            })
            .collect();
        match known {
            Some(entries) => Ok(entries),
            None => self.smaps(),
        }
    }

    pub fn fdinfo(&self, fd: i32) -> Result<FdInfo> {
        let name = format!("fdinfo/{fd}");
        let text = self.read_string(&name)?;
        parse_fdinfo(&text).map_err(|what| self.parse_error(&name, what))
    }

    /// Open fds, ascending.
    pub fn fds(&self) -> Result<Vec<i32>> {
        self.numeric_entries("fd")
    }

    pub fn fd_target(&self, fd: i32) -> Result<PathBuf> {
        self.read_link(&format!("fd/{fd}"))
    }

    /// Thread ids, ascending.
    pub fn tasks(&self) -> Result<Vec<i32>> {
        self.numeric_entries("task")
    }

    /// Children of every thread of the process.
    pub fn children(&self) -> Result<Vec<i32>> {
        let mut out = Vec::new();
        for tid in self.tasks()? {
            let name = format!("task/{tid}/children");
            let text = match self.read_string(&name) {
                Ok(t) => t,
                // A thread that exited between the two reads has no children to give.
                Err(ProcfsError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            for word in text.split_whitespace() {
                out.push(
                    word.parse()
                        .map_err(|_| self.parse_error(&name, format!("bad pid {word:?}")))?,
                );
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    pub fn cwd(&self) -> Result<PathBuf> {
        self.read_link("cwd")
    }

    pub fn root(&self) -> Result<PathBuf> {
        self.read_link("root")
    }

    pub fn exe(&self) -> Result<PathBuf> {
        self.read_link("exe")
    }

    /// The raw auxiliary vector (pairs of u64, ending in AT_NULL).
    pub fn auxv(&self) -> Result<Vec<u8>> {
        let mut raw = self.read_bytes("auxv")?;
        // Keep up to and including the AT_NULL pair.
        let mut end = raw.len() - raw.len() % 16;
        for (i, pair) in raw.chunks_exact(16).enumerate() {
            if pair[..8].iter().all(|&b| b == 0) {
                end = (i + 1) * 16;
                break;
            }
        }
        raw.truncate(end);
        Ok(raw)
    }

    /// Resource limits (soft, hard) in resource-number order, from
    /// /proc/PID/limits: readable where prlimit on another user's process
    /// would need CAP_SYS_RESOURCE.
    pub fn limits(&self) -> Result<Vec<(u64, u64)>> {
        let text = self.read_string("limits")?;
        parse_limits(&text).map_err(|what| self.parse_error("limits", what))
    }

    pub fn personality(&self) -> Result<u32> {
        let text = self.read_string("personality")?;
        u32::from_str_radix(text.trim(), 16)
            .map_err(|_| self.parse_error("personality", format!("bad value {:?}", text.trim())))
    }

    fn numeric_entries(&self, name: &str) -> Result<Vec<i32>> {
        let path = self.path(name);
        let dir = fs::read_dir(&path).map_err(|e| self.io_error(path.clone(), e))?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| self.io_error(path.clone(), e))?;
            if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}

fn parse_stat(text: &str) -> std::result::Result<Stat, String> {
    // comm may hold spaces and parentheses: it ends at the last ')'.
    let open = text.find('(').ok_or("no '('")?;
    let close = text.rfind(')').ok_or("no ')'")?;
    let pid = text[..open].trim().parse().map_err(|_| "bad pid")?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state).
    let field = |n: usize| -> std::result::Result<&str, String> {
        rest.get(n - 3)
            .copied()
            .ok_or_else(|| format!("no field {n}"))
    };
    let num = |n: usize| -> std::result::Result<u64, String> {
        field(n)?.parse().map_err(|_| format!("bad field {n}"))
    };
    let int = |n: usize| -> std::result::Result<i64, String> {
        field(n)?.parse().map_err(|_| format!("bad field {n}"))
    };
    Ok(Stat {
        pid,
        comm,
        state: field(3)?.chars().next().ok_or("empty state")?,
        ppid: int(4)? as i32,
        pgrp: int(5)? as i32,
        session: int(6)? as i32,
        tty_nr: int(7)? as i32,
        tpgid: int(8)? as i32,
        flags: num(9)? as u32,
        num_threads: int(20)?,
        start_time: num(22)?,
        start_code: num(26)?,
        end_code: num(27)?,
        start_stack: num(28)?,
        start_data: num(45)?,
        end_data: num(46)?,
        start_brk: num(47)?,
        arg_start: num(48)?,
        arg_end: num(49)?,
        env_start: num(50)?,
        env_end: num(51)?,
        exit_code: int(52)? as i32,
    })
}

/// Parse the text of a /proc/PID/status file.
pub fn parse_status(text: &str) -> Result<Status> {
    let bad = |what: String| ProcfsError::Parse {
        path: PathBuf::from("status"),
        what,
    };
    let mut s = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let hex = |v: &str| u64::from_str_radix(v, 16).map_err(|_| bad(format!("bad {key} {v:?}")));
        let ids = |v: &str| -> Result<[u32; 4]> {
            let n: Vec<u32> = v
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            n.try_into().map_err(|_| bad(format!("bad {key} {v:?}")))
        };
        match key {
            "Name" => s.name = value.to_string(),
            "Umask" => {
                s.umask = Some(
                    u32::from_str_radix(value, 8)
                        .map_err(|_| bad(format!("bad Umask {value:?}")))?,
                )
            }
            "State" => s.state = value.chars().next().unwrap_or('?'),
            "Tgid" => {
                s.tgid = value
                    .parse()
                    .map_err(|_| bad(format!("bad Tgid {value:?}")))?
            }
            "Uid" => s.uid = ids(value)?,
            "Gid" => s.gid = ids(value)?,
            "Groups" => {
                s.groups = value
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            }
            "NSpid" => {
                s.ns_pid = value
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            }
            "Threads" => s.threads = value.parse().unwrap_or(0),
            "SigPnd" => s.sig_pnd = hex(value)?,
            "ShdPnd" => s.shd_pnd = hex(value)?,
            "SigBlk" => s.sig_blk = hex(value)?,
            "SigIgn" => s.sig_ign = hex(value)?,
            "SigCgt" => s.sig_cgt = hex(value)?,
            "CapInh" => s.cap_inh = hex(value)?,
            "CapPrm" => s.cap_prm = hex(value)?,
            "CapEff" => s.cap_eff = hex(value)?,
            "CapBnd" => s.cap_bnd = hex(value)?,
            "CapAmb" => s.cap_amb = hex(value)?,
            "NoNewPrivs" => s.no_new_privs = value == "1",
            "Seccomp" => s.seccomp = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    Ok(s)
}

fn parse_maps_line(line: &str) -> std::result::Result<MapsEntry, String> {
    let bad = || format!("bad maps line {line:?}");
    let mut it = line.splitn(6, ' ');
    let range = it.next().ok_or_else(bad)?;
    let perms = it.next().ok_or_else(bad)?.as_bytes();
    let offset = it.next().ok_or_else(bad)?;
    let dev = it.next().ok_or_else(bad)?;
    let inode = it.next().ok_or_else(bad)?;
    let name = it.next().unwrap_or("").trim_start();
    let (start, end) = range.split_once('-').ok_or_else(bad)?;
    let (major, minor) = dev.split_once(':').ok_or_else(bad)?;
    if perms.len() != 4 {
        return Err(bad());
    }
    let path = match name {
        "" => MapsPath::Anonymous,
        "[heap]" => MapsPath::Heap,
        "[stack]" => MapsPath::Stack,
        "[vdso]" => MapsPath::Vdso,
        "[vvar]" => MapsPath::Vvar,
        "[vvar_vclock]" => MapsPath::VvarVclock,
        "[vsyscall]" => MapsPath::Vsyscall,
        n if n.starts_with('[') => MapsPath::Other(n.to_string()),
        n => match n.strip_suffix(" (deleted)") {
            Some(p) => MapsPath::File {
                path: PathBuf::from(p),
                deleted: true,
            },
            None => MapsPath::File {
                path: PathBuf::from(n),
                deleted: false,
            },
        },
    };
    Ok(MapsEntry {
        start: u64::from_str_radix(start, 16).map_err(|_| bad())?,
        end: u64::from_str_radix(end, 16).map_err(|_| bad())?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        offset: u64::from_str_radix(offset, 16).map_err(|_| bad())?,
        dev_major: u32::from_str_radix(major, 16).map_err(|_| bad())?,
        dev_minor: u32::from_str_radix(minor, 16).map_err(|_| bad())?,
        inode: inode.parse().map_err(|_| bad())?,
        path,
    })
}

fn parse_limits(text: &str) -> std::result::Result<Vec<(u64, u64)>, String> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("empty")?;
    // Columns are aligned under the header: "Limit  Soft Limit  Hard Limit  Units".
    let soft_at = header.find("Soft Limit").ok_or("no Soft Limit column")?;
    let hard_at = header.find("Hard Limit").ok_or("no Hard Limit column")?;
    let value = |v: &str| -> std::result::Result<u64, String> {
        match v {
            "unlimited" => Ok(u64::MAX),
            v => v.parse().map_err(|_| format!("bad limit {v:?}")),
        }
    };
    lines
        .filter(|l| l.len() > hard_at)
        .map(|l| {
            let soft = l[soft_at..hard_at]
                .split_whitespace()
                .next()
                .ok_or("no soft limit")?;
            let hard = l[hard_at..]
                .split_whitespace()
                .next()
                .ok_or("no hard limit")?;
            Ok((value(soft)?, value(hard)?))
        })
        .collect()
}

fn parse_smaps(text: &str) -> std::result::Result<Vec<SmapsEntry>, String> {
    let mut out: Vec<SmapsEntry> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        // A mapping header starts with "start-end"; attribute lines with "Key:".
        if !first.ends_with(':') && first.contains('-') {
            out.push(SmapsEntry {
                map: parse_maps_line(line)?,
                vm_flags: Vec::new(),
                rss_kb: 0,
                anonymous_kb: 0,
                swap_kb: 0,
            });
            continue;
        }
        let Some(cur) = out.last_mut() else {
            return Err("attribute before any mapping".into());
        };
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let kb = || {
            value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        match key {
            "VmFlags" => cur.vm_flags = value.split_whitespace().map(str::to_string).collect(),
            "Rss" => cur.rss_kb = kb(),
            "Anonymous" => cur.anonymous_kb = kb(),
            "Swap" => cur.swap_kb = kb(),
            _ => {}
        }
    }
    Ok(out)
}

fn parse_fdinfo(text: &str) -> std::result::Result<FdInfo, String> {
    let mut info = FdInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "pos" => info.pos = value.parse().map_err(|_| format!("bad pos {value:?}"))?,
            "flags" => {
                info.flags =
                    u32::from_str_radix(value, 8).map_err(|_| format!("bad flags {value:?}"))?
            }
            "mnt_id" => info.mnt_id = value.parse().map_err(|_| format!("bad mnt_id {value:?}"))?,
            "ino" => info.ino = value.parse().map_err(|_| format!("bad ino {value:?}"))?,
            _ => info.extra.push((key.to_string(), value.to_string())),
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm() {
        let line = "42 (a) b (c) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0 18446744073709551615 10 20 30 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 40 50 60 70 80 90 100 256\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "a) b (c");
        assert_eq!(
            (s.pid, s.state, s.ppid, s.pgrp, s.session),
            (42, 'S', 1, 42, 42)
        );
        assert_eq!((s.start_code, s.end_code, s.start_stack), (10, 20, 30));
        assert_eq!((s.start_data, s.env_end, s.exit_code), (40, 100, 256));
        assert!(!s.kernel_thread());
    }

    #[test]
    fn stat_of_a_kernel_thread() {
        // /proc/2/stat (kthreadd) on Linux 6.x.
        let line = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 1 0 0 20 0 1 0 25 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert!(s.kernel_thread());
        assert_eq!((s.comm.as_str(), s.ppid), ("kthreadd", 0));
    }

    #[test]
    fn maps_lines() {
        let m =
            parse_maps_line("7f00-7f10 rw-s 00001000 00:05 1234   /dev/zero (deleted)").unwrap();
        assert!(m.read && m.write && !m.exec && m.shared);
        assert_eq!(
            (m.start, m.end, m.offset, m.dev_minor, m.inode),
            (0x7f00, 0x7f10, 0x1000, 5, 1234)
        );
        assert_eq!(
            m.path,
            MapsPath::File {
                path: "/dev/zero".into(),
                deleted: true
            }
        );
        let v = parse_maps_line(
            "7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]",
        )
        .unwrap();
        assert_eq!(v.path, MapsPath::Vdso);
        let a = parse_maps_line("1000-2000 ---p 00000000 00:00 0 ").unwrap();
        assert_eq!(a.path, MapsPath::Anonymous);
        let spaced = parse_maps_line("1000-2000 r--p 00000000 08:01 7 /tmp/a b").unwrap();
        assert_eq!(
            spaced.path,
            MapsPath::File {
                path: "/tmp/a b".into(),
                deleted: false
            }
        );
    }

    #[test]
    fn own_process_reads() {
        let me = ProcDir::new(std::process::id() as i32);
        let stat = me.stat().unwrap();
        assert_eq!(stat.pid, std::process::id() as i32);
        let status = me.status().unwrap();
        assert!(status.umask.is_some());
        assert_eq!(*status.ns_pid.last().unwrap(), stat.pid);
        let smaps = me.smaps().unwrap();
        assert!(smaps.iter().any(|s| s.map.path == MapsPath::Vdso));
        assert!(smaps.iter().all(|s| !s.vm_flags.is_empty()));
        assert!(me.fds().unwrap().contains(&0));
        let auxv = me.auxv().unwrap();
        assert_eq!(auxv.len() % 16, 0);
        assert!(auxv[auxv.len() - 16..].iter().all(|&b| b == 0));
        assert!(me.tasks().unwrap().contains(&stat.pid));
    }

    #[test]
    fn limits_match_getrlimit() {
        let limits = ProcDir::new(std::process::id() as i32).limits().unwrap();
        assert_eq!(limits.len(), 16);
        let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let or_infinity = |v: Option<u64>| v.unwrap_or(libc::RLIM_INFINITY);
        assert_eq!(
            limits[libc::RLIMIT_NOFILE as usize],
            (or_infinity(l.current), or_infinity(l.maximum))
        );
    }

    #[test]
    fn gone_process() {
        // pid_max is below 2^22, so this pid cannot exist.
        let gone = ProcDir::new(1 << 23);
        assert!(matches!(gone.stat(), Err(ProcfsError::ProcessGone { pid }) if pid == 1 << 23));
    }

    #[test]
    fn eventfd_fdinfo() {
        let info = parse_fdinfo("pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\neventfd-count:  2a\neventfd-id: 7\n").unwrap();
        assert_eq!(info.flags, 0o2000002);
        assert_eq!(info.eventfd_count(), Some(42));
        assert_eq!(info.get("eventfd-id"), Some("7"));
    }
}
