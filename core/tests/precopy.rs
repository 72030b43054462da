//! Write tracking of pre-copy on a real process: a window written after
//! tracking began must be read again, one left alone may be reused.

use hiber_core::freeze::Frozen;
use hiber_core::image::ImageWriter;
use hiber_core::memory::shmem::ShmemTable;
use hiber_core::memory::{self, Backing, WINDOW_BYTES};
use hiber_core::policy::Report;
use hiber_core::precopy;
use hiber_core::procfs::ProcDir;
use hiber_core::procmem::ProcMem;
use std::io::BufRead;
use std::process::{Command, Stdio};

/// Ends the child it holds, also when the test fails.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A python process holding 16 MiB of non-zero anonymous memory; prints
/// the buffer's address once it is filled.
fn holder() -> (Holder, u64) {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import ctypes, sys, time\n\
             b = (ctypes.c_ubyte * (16 << 20))()\n\
             ctypes.memset(b, 7, 16 << 20)\n\
             print(ctypes.addressof(b), flush=True)\n\
             time.sleep(1000)",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let holder = Holder(child);
    (holder, line.trim().parse().expect("an address"))
}

/// A python process running `script`, which prints an address first: the
/// process, its input, its output and that address.
fn talking_python(
    script: &str,
) -> (
    Holder,
    std::process::ChildStdin,
    std::io::BufReader<std::process::ChildStdout>,
    u64,
) {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let holder = Holder(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (holder, stdin, out, line.trim().parse().expect("an address"))
}

/// Freeze `pid` and read its mappings, as the checkpoint does.
fn frozen_mappings(pid: i32) -> (Frozen, Vec<memory::Vma>) {
    let frozen = Frozen::freeze(&[pid]).unwrap();
    let smaps = ProcDir::new(pid).smaps().unwrap();
    let vmas = memory::classify(
        pid,
        &smaps,
        &mut ShmemTable::default(),
        &hiber_core::devices::DevicePolicies::default(),
        &mut Report::default(),
    );
    (frozen, vmas)
}

#[test]
fn written_windows_are_read_again_and_others_reused() {
    let (child, buf) = holder();
    let pid = child.0.id() as i32;
    let t = tempfile::tempdir().unwrap();
    let writer = ImageWriter::create(&t.path().join("img"), None).unwrap();
    let mut sink = writer.sink(1, 4);
    let pre = precopy::run(&[pid], &mut sink).expect("pre-copy");

    // Two whole windows inside the buffer: one written now, one not.
    let first = (buf + WINDOW_BYTES - 1) & !(WINDOW_BYTES - 1);
    let (touched, untouched) = (first, first + 4 * WINDOW_BYTES);
    ProcMem::new(pid, true)
        .write(touched + 4096 * 3 + 5, &[9])
        .unwrap();

    let (frozen, vmas) = frozen_mappings(pid);
    let reuse = pre.reuse_for(pid, &vmas);
    let vma = vmas
        .iter()
        .find(|v| v.start <= touched && untouched + WINDOW_BYTES <= v.end)
        .expect("the buffer's mapping");
    assert!(matches!(vma.backing, Backing::Anon));
    let all = u64::MAX;
    assert!(
        reuse.window(vma, touched, all).is_none(),
        "a window written after tracking began was reused"
    );
    let kept = reuse
        .window(vma, untouched, all)
        .expect("an untouched window is reused");
    assert_eq!(kept.wanted, all);
    assert_eq!(reuse.reused_bytes(), WINDOW_BYTES);
    // Pages present before may not vanish unnoticed.
    assert!(reuse.window(vma, untouched, all >> 1).is_none());
    frozen.thaw();
    drop(sink);
}

/// A mapping whose pages all read as zero at pre-copy (nothing saved) is
/// not scanned again while frozen, unless it was written to since; an
/// untouched one (left unprotected: empty stretches are not
/// write-protected) is scanned again, and a write to it is seen.
#[test]
fn zero_mappings_are_skipped_only_while_nothing_writes_them() {
    use hiber_core::memory::Earlier;
    use std::io::Write;
    // Three private anonymous MiB; the middle one read-only, so that the
    // outer two stay separate mappings; the last one read (the zero page
    // mapped throughout), the first untouched.
    let (holder, mut stdin, mut out, base) = talking_python(
        "import ctypes, mmap, sys\n\
             m = mmap.mmap(-1, 3 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n\
             base = ctypes.addressof(ctypes.c_char.from_buffer(m))\n\
             libc = ctypes.CDLL(None)\n\
             assert libc.mprotect(ctypes.c_void_p(base + (1 << 20)), 1 << 20, 1) == 0\n\
             assert not any(m[2 << 20:3 << 20])\n\
             print(base, flush=True)\n\
             sys.stdin.readline()\n\
             m[5] = 7\n\
             print('written', flush=True)\n\
             sys.stdin.readline()",
    );
    let pid = holder.0.id() as i32;
    let mut line = String::new();

    let t = tempfile::tempdir().unwrap();
    let writer = ImageWriter::create(&t.path().join("img"), None).unwrap();
    let mut sink = writer.sink(1, 4);
    let pre = precopy::run(&[pid], &mut sink).expect("pre-copy");
    // The first MiB is written now, after pre-copy; the last never.
    stdin.write_all(b"w\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "written");

    let (frozen, vmas) = frozen_mappings(pid);
    let reuse = pre.reuse_for(pid, &vmas);
    let at = |addr: u64| {
        vmas.iter()
            .find(|v| v.start == addr)
            .unwrap_or_else(|| panic!("no mapping at {addr:#x}: {vmas:?}"))
    };
    let (written, zero) = (at(base), at(base + (2 << 20)));
    assert!(!reuse.still_empty(written), "a written mapping was skipped");
    assert!(
        reuse.still_empty(zero),
        "a mapping of zero pages nobody wrote was scanned: {zero:?}"
    );
    frozen.thaw();
    drop(sink);
    drop(stdin);
}

/// A sparse reservation (64 GiB read-write, one page touched per GiB, as
/// browsers reserve address space) is tracked without write-protecting
/// its empty stretches: the process gains no page tables for them (it
/// gained 128 MiB, and the freeze took seconds, when whole ranges were
/// protected), and its touched pages are still tracked and reused.
#[test]
fn sparse_reservations_are_tracked_without_filling_page_tables() {
    const GIB: u64 = 1 << 30;
    let (holder, stdin, _, base) = talking_python(
            "import ctypes, mmap, sys\n\
             size = 64 << 30\n\
             m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)  # MAP_NORESERVE\n\
             for at in range(0, size, 1 << 30): m[at] = 7\n\
             print(ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)\n\
             sys.stdin.readline()",
    );
    let pid = holder.0.id() as i32;
    let page_tables = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmPTE:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmPTE in status")
    };
    let before = page_tables();

    let t = tempfile::tempdir().unwrap();
    let writer = ImageWriter::create(&t.path().join("img"), None).unwrap();
    let mut sink = writer.sink(1, 4);
    let pre = precopy::run(&[pid], &mut sink).expect("pre-copy");
    let grown = page_tables().saturating_sub(before);
    assert!(
        grown < 1024,
        "tracking a 64 GiB reservation with 64 pages in it added {grown} kB of page tables"
    );

    let (frozen, vmas) = frozen_mappings(pid);
    let reuse = pre.reuse_for(pid, &vmas);
    let vma = vmas
        .iter()
        .find(|v| v.start <= base && base + 64 * GIB <= v.end)
        .expect("the reservation's mapping");
    let window = base + 5 * GIB;
    let wanted = 1 << ((window % WINDOW_BYTES) / 4096);
    let window = window & !(WINDOW_BYTES - 1);
    assert!(
        reuse.window(vma, window, wanted).is_some(),
        "a touched page of the reservation, not written since, was not reused"
    );
    frozen.thaw();
    drop(sink);
    drop(stdin);
}
