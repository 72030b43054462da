//! Write tracking of pre-copy on a real process: a window written after
//! tracking began must be read again, one left alone may be reused.

use hiber_core::freeze::Frozen;
use hiber_core::image::ImageWriter;
use hiber_core::memory::{self, Backing, WINDOW_BYTES};
use hiber_core::policy::Report;
use hiber_core::precopy;
use hiber_core::procfs::ProcDir;
use hiber_core::procmem::ProcMem;
use hiber_core::shmem::ShmemTable;
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

    let frozen = Frozen::freeze(&[pid]).unwrap();
    let smaps = ProcDir::new(pid).smaps().unwrap();
    let vmas = memory::classify(
        pid,
        &smaps,
        &mut ShmemTable::default(),
        &hiber_core::devices::DevicePolicies::default(),
        &mut Report::default(),
    );
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
