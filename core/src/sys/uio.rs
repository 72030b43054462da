//! Another process's memory by address: `process_vm_readv` and
//! `process_vm_writev` (one range each, no flags). nix where the local
//! buffer is initialised; libc to read into a vector's spare capacity,
//! which nix's `IoSliceMut` cannot take.

use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;
use std::io::{self, IoSlice, IoSliceMut};

/// Copy `buf.len()` bytes at `addr` of `pid` into `buf`; the count copied
/// (short where a page cannot be read by the target itself).
pub fn read(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let remote = RemoteIoVec {
        base: addr as usize,
        len: buf.len(),
    };
    Ok(process_vm_readv(
        Pid::from_raw(pid),
        &mut [IoSliceMut::new(buf)],
        &[remote],
    )?)
}

/// Append up to `len` bytes at `addr` of `pid` to `buf`, without first
/// zeroing the space they land in; the count appended.
pub fn read_append(pid: i32, addr: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(len);
    let at = buf.len();
    let local = libc::iovec {
        iov_base: buf.spare_capacity_mut().as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` is the spare capacity reserved above, valid for len
    // bytes; the remote iovec is only interpreted in the target.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised exactly the first n (<= len) bytes
    // of that capacity.
    unsafe { buf.set_len(at + n as usize) };
    Ok(n as usize)
}

/// Copy `data` to `addr` of `pid`; the count copied (short where a page
/// is not writable by the target itself).
pub fn write(pid: i32, addr: u64, data: &[u8]) -> io::Result<usize> {
    let remote = RemoteIoVec {
        base: addr as usize,
        len: data.len(),
    };
    Ok(process_vm_writev(
        Pid::from_raw(pid),
        &[IoSlice::new(data)],
        &[remote],
    )?)
}
