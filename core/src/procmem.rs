//! Reading and writing another process's memory from the outside.
//!
//! `process_vm_readv`/`writev` are the fast path; they refuse pages the
//! target cannot access itself (PROT_NONE, exec-only, read-only for writes),
//! so those go through `/proc/PID/mem`, which the kernel lets a tracer use.

use crate::sys;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;

#[derive(Debug, thiserror::Error)]
pub enum ProcMemError {
    #[error("reading {len} bytes at {addr:#x} of pid {pid}")]
    Read {
        pid: i32,
        addr: u64,
        len: usize,
        source: io::Error,
    },
    #[error("writing {len} bytes at {addr:#x} of pid {pid}")]
    Write {
        pid: i32,
        addr: u64,
        len: usize,
        source: io::Error,
    },
    #[error("opening /proc/{pid}/mem")]
    Open { pid: i32, source: io::Error },
}

type Result<T> = std::result::Result<T, ProcMemError>;

/// Access to one process's address space.
#[derive(Debug)]
pub struct ProcMem {
    pid: i32,
    mem: Option<File>,
    writable: bool,
}

impl ProcMem {
    pub fn new(pid: i32, writable: bool) -> Self {
        Self {
            pid,
            mem: None,
            writable,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn mem_file(&mut self) -> Result<&File> {
        if self.mem.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(self.writable)
                .open(format!("/proc/{}/mem", self.pid))
                .map_err(|source| ProcMemError::Open {
                    pid: self.pid,
                    source,
                })?;
            self.mem = Some(f);
        }
        Ok(self.mem.as_ref().expect("opened above"))
    }

    /// Fill `buf` from `addr`.
    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<()> {
        if sys::uio::read(self.pid, addr, buf).is_ok_and(|n| n == buf.len()) {
            return Ok(());
        }
        let pid = self.pid;
        let len = buf.len();
        self.mem_file()?
            .read_exact_at(buf, addr)
            .map_err(|source| ProcMemError::Read {
                pid,
                addr,
                len,
                source,
            })
    }

    /// Append `len` bytes from `addr` to `buf`, without first zeroing the
    /// space they land in.
    pub fn read_append(&mut self, addr: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        let at = buf.len();
        if sys::uio::read_append(self.pid, addr, len, buf).is_ok_and(|n| n == len) {
            return Ok(());
        }
        // A short read: from /proc/PID/mem, from the start.
        buf.truncate(at);
        buf.resize(at + len, 0);
        self.read(addr, &mut buf[at..])
    }

    /// Write `data` at `addr`, through read-only private pages if need be.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        if sys::uio::write(self.pid, addr, data).is_ok_and(|n| n == data.len()) {
            return Ok(());
        }
        let pid = self.pid;
        let len = data.len();
        self.mem_file()?
            .write_all_at(data, addr)
            .map_err(|source| ProcMemError::Write {
                pid,
                addr,
                len,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_own_memory() {
        let mut data = vec![7u8; 8192];
        let addr = data.as_mut_ptr() as u64;
        let mut mem = ProcMem::new(std::process::id() as i32, true);
        let mut out = vec![0u8; 8192];
        mem.read(addr, &mut out).unwrap();
        assert_eq!(out, data);
        mem.write(addr + 10, &[1, 2, 3]).unwrap();
        assert_eq!(&std::hint::black_box(&data)[10..13], &[1, 2, 3]);
    }
}
