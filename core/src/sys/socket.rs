//! Sockets: creating one or a pair, options, addresses (unix, netlink,
//! saved bytes), sending, receiving and peeking, and its network namespace.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An int socket option of `fd`.
pub fn getsockopt_int(fd: RawFd, level: i32, opt: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one int to a valid pointer.
    if unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Set an int socket option of `fd`.
pub fn setsockopt_int(fd: RawFd, level: i32, opt: i32, v: i32) -> io::Result<()> {
    // SAFETY: setsockopt reads one int from a valid pointer.
    if unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new close-on-exec socket; `kind` may carry `SOCK_NONBLOCK`.
pub fn new_socket(domain: i32, kind: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket() takes integers and returns a new fd or -1.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An fd of the network namespace `socket` belongs to (`SIOCGSKNS`).
pub fn netns_of(socket: &OwnedFd) -> io::Result<OwnedFd> {
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: the ioctl takes no argument and returns a new fd or -1.
    let raw = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGSKNS) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

// The calls below are on libc: the fds are often numbers (the program's
// own sockets while frozen), the addresses come as saved bytes, and a
// few calls (SO_ATTACH_FILTER's read-back, peeking with SCM_RIGHTS
// cleanup) have no complete wrapper in nix or rustix.

/// A new close-on-exec socket pair of `domain` and `kind` (protocol 0).
/// rustix: complete and exact for raw domain and type numbers.
pub fn socketpair(domain: i32, kind: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        rustix::net::AddressFamily::from_raw(domain as _),
        rustix::net::SocketType::from_raw(kind as _),
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A socket option of `fd` into `buf`: the length the kernel gave.
pub fn getsockopt_bytes(fd: RawFd, level: i32, opt: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a valid buffer.
    if unsafe { libc::getsockopt(fd, level, opt, buf.as_mut_ptr().cast(), &mut len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}

/// Set a socket option of `fd` from the bytes `value`.
pub fn setsockopt_bytes(fd: RawFd, level: i32, opt: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: setsockopt reads value.len() bytes from a valid buffer.
    if unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The classic BPF filter attached to `fd` (`SO_GET_FILTER`, which
/// counts in instructions), at most `max` instructions.
pub fn get_filter(fd: RawFd, max: usize) -> io::Result<Vec<libc::sock_filter>> {
    let mut buf = vec![
        libc::sock_filter {
            code: 0,
            jt: 0,
            jf: 0,
            k: 0
        };
        max
    ];
    let mut len = max as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` instructions into `buf`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate((len as usize).min(max));
    Ok(buf)
}

/// Attach the classic BPF program `filter` to `fd` (`SO_ATTACH_FILTER`).
pub fn set_filter(fd: RawFd, filter: &mut [libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: setsockopt reads a sock_fprog pointing at `filter`, alive
    // here; the kernel checks the program.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fd`'s own address (`getsockname`) or its peer's (`getpeername`), as
/// the bytes of the sockaddr the kernel wrote.
pub fn address(fd: RawFd, peer: bool) -> io::Result<Vec<u8>> {
    // SAFETY: sockaddr_storage is plain data; the calls fill it.
    let mut a: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut a as *mut libc::sockaddr_storage).cast();
    // SAFETY: getsockname/getpeername into a valid sockaddr_storage.
    let rc = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote `len` bytes of the struct.
    Ok(unsafe {
        std::slice::from_raw_parts(
            (&a as *const libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        )
    }
    .to_vec())
}

/// Bind `fd` to the sockaddr whose bytes are `addr`.
pub fn bind_bytes(fd: impl AsFd, addr: &[u8]) -> io::Result<()> {
    // SAFETY: bind reads addr.len() bytes of address from a valid buffer.
    if unsafe {
        libc::bind(
            fd.as_fd().as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connect `fd` to the sockaddr whose bytes are `addr`.
pub fn connect_bytes(fd: impl AsFd, addr: &[u8]) -> io::Result<()> {
    // SAFETY: connect reads addr.len() bytes of address from a valid buffer.
    if unsafe {
        libc::connect(
            fd.as_fd().as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A unix socket address: a path (`name` may end with its NUL, as
/// sock_diag gives it) or an abstract name (starting with NUL).
#[derive(Clone, Copy)]
pub struct UnixAddr {
    addr: libc::sockaddr_un,
    len: libc::socklen_t,
}

impl std::fmt::Debug for UnixAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixAddr").field("len", &self.len).finish()
    }
}

impl UnixAddr {
    /// The address of `name`; `InvalidInput` when it is too long.
    pub fn new(name: &[u8]) -> io::Result<Self> {
        // SAFETY: sockaddr_un is plain data; zeroed is valid.
        let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        a.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = if name.first() != Some(&0) {
            name.strip_suffix(&[0]).unwrap_or(name)
        } else {
            name
        };
        if bytes.len() >= a.sun_path.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        for (d, s) in a.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sa_family_t>()
            + bytes.len()
            + usize::from(name.first() != Some(&0));
        Ok(Self {
            addr: a,
            len: len as libc::socklen_t,
        })
    }

    /// Bind `fd` to this address.
    pub fn bind(&self, fd: impl AsFd) -> io::Result<()> {
        // SAFETY: bind with a valid sockaddr_un of `len` bytes.
        if unsafe {
            libc::bind(
                fd.as_fd().as_raw_fd(),
                (&self.addr as *const libc::sockaddr_un).cast(),
                self.len,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Connect `fd` to this address.
    pub fn connect(&self, fd: impl AsFd) -> io::Result<()> {
        // SAFETY: connect with a valid sockaddr_un of `len` bytes.
        if unsafe {
            libc::connect(
                fd.as_fd().as_raw_fd(),
                (&self.addr as *const libc::sockaddr_un).cast(),
                self.len,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn netlink_addr(groups: u32) -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all zeroes is valid.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a.nl_groups = groups;
    a
}

/// Bind netlink socket `fd` to the multicast `groups` (port id left to
/// the kernel).
pub fn bind_netlink(fd: impl AsFd, groups: u32) -> io::Result<()> {
    let a = netlink_addr(groups);
    // SAFETY: bind with a valid sockaddr_nl and its size.
    let rc = unsafe {
        libc::bind(
            fd.as_fd().as_raw_fd(),
            (&a as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A netlink socket's own address: its port id and multicast groups.
pub fn netlink_name(fd: RawFd) -> io::Result<(u32, u32)> {
    let mut a = netlink_addr(0);
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: getsockname into a valid sockaddr_nl.
    if unsafe { libc::getsockname(fd, (&mut a as *mut libc::sockaddr_nl).cast(), &mut len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((a.nl_pid, a.nl_groups))
}

/// Send `msg` from netlink socket `fd` to the multicast `group`.
pub fn send_to_group(fd: impl AsFd, msg: &[u8], group: u32) -> io::Result<usize> {
    let a = netlink_addr(group);
    // SAFETY: sendto with a valid buffer and sockaddr_nl.
    let rc = unsafe {
        libc::sendto(
            fd.as_fd().as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&a as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// One message from netlink socket `fd` into `buf`, with `flags`
/// (`MSG_TRUNC` gives the real length of a longer one): its length and
/// the sender's port id.
pub fn recv_netlink(fd: impl AsFd, buf: &mut [u8], flags: i32) -> io::Result<(usize, u32)> {
    let mut from = netlink_addr(0);
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: recvfrom into our buffer and a valid sockaddr_nl.
    let n = unsafe {
        libc::recvfrom(
            fd.as_fd().as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
            (&mut from as *mut libc::sockaddr_nl).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, from.nl_pid))
}

/// `send(2)` of `buf` on `fd` with `flags`: the count sent.
pub fn send(fd: impl AsFd, buf: &[u8], flags: i32) -> io::Result<usize> {
    // SAFETY: sending from our buffer of buf.len() bytes.
    let n = unsafe {
        libc::send(
            fd.as_fd().as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            flags,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `recv(2)` on `fd` into `buf` with `flags`: the count received.
pub fn recv(fd: impl AsFd, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    // SAFETY: receiving into our buffer of buf.len() bytes.
    let n = unsafe {
        libc::recv(
            fd.as_fd().as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// What one peek at a socket's queue saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peeked {
    /// Bytes of the message copied (0: end of stream or an empty message).
    pub len: usize,
    /// The message was longer than the buffer (`MSG_TRUNC`).
    pub truncated: bool,
    /// It carried file descriptors (`SCM_RIGHTS`); those the peek
    /// installed here are closed.
    pub rights: bool,
}

/// Peek at the next message queued on fd number `fd` without consuming
/// it and without blocking (`recvmsg(MSG_PEEK | MSG_DONTWAIT |
/// MSG_CMSG_CLOEXEC)`), its data into `buf`.
pub fn peek_message(fd: RawFd, buf: &mut [u8]) -> io::Result<Peeked> {
    let mut cbuf = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.len();
    // SAFETY: recvmsg into our buffers, peeking, never blocking.
    let n = unsafe {
        libc::recvmsg(
            fd,
            &mut msg,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peeked {
        len: n as usize,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        rights: rights_in(&msg),
    })
}

/// Whether a received message carried fds; any it installed here are closed.
fn rights_in(msg: &libc::msghdr) -> bool {
    let mut found = false;
    // SAFETY: walking the control buffer the kernel just filled, with the
    // CMSG macros over the same msghdr.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                found = true;
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let n = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..n {
                    libc::close(*data.add(i));
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    found
}

/// Send `data` and the fds `fds` (one `SCM_RIGHTS` message, at most
/// SCM_MAX_FD of them) in one `sendmsg` on fd number `fd` with `flags`:
/// the bytes sent.
pub fn send_with_fds(fd: RawFd, data: &[u8], fds: &[RawFd], flags: i32) -> io::Result<usize> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is pure arithmetic.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        // sendmsg only reads the data.
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer has room for one header and the fds
    // (CMSG_SPACE above); the pointers stay inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
    }
    // SAFETY: sendmsg with the message built above.
    let n = unsafe { libc::sendmsg(fd, &msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One `recvmsg` on fd number `fd` with `flags`, its data into `buf` and
/// room for `max_fds` fds (`SCM_RIGHTS`): the bytes received and the fds,
/// ours now.
pub fn recv_with_fds(
    fd: RawFd,
    buf: &mut [u8],
    max_fds: usize,
    flags: i32,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    // SAFETY: CMSG_SPACE is pure arithmetic.
    let space = unsafe { libc::CMSG_SPACE((max_fds * std::mem::size_of::<RawFd>()) as u32) };
    let mut control = vec![0u8; space as usize];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    // SAFETY: recvmsg into the buffers above.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into our
    // buffer with the CMSG macros; SCM_RIGHTS data is an array of fds,
    // installed in our table for us.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count =
                    ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(c) as *const RawFd;
                for k in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(k).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, fds))
}

/// Let `fd` accept connections, with `backlog` (rustix).
pub fn listen(fd: impl AsFd, backlog: i32) -> io::Result<()> {
    Ok(rustix::net::listen(fd, backlog)?)
}

/// Shut down `SHUT_RD`, `SHUT_WR` or `SHUT_RDWR` of `fd` (rustix).
pub fn shutdown(fd: impl AsFd, how: i32) -> io::Result<()> {
    let how = match how {
        libc::SHUT_RD => rustix::net::Shutdown::Read,
        libc::SHUT_WR => rustix::net::Shutdown::Write,
        libc::SHUT_RDWR => rustix::net::Shutdown::Both,
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    Ok(rustix::net::shutdown(fd, how)?)
}

/// The flags (`IFF_UP`…) of network interface `name` in the calling
/// thread's network namespace (`SIOCGIFFLAGS` on a UDP socket of ours).
pub fn interface_flags(name: &[u8]) -> io::Result<i32> {
    let s = new_socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    // SAFETY: ifreq is plain data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (d, b) in req.ifr_name.iter_mut().zip(name) {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags to a
    // valid ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the union's flags member.
    Ok(unsafe { req.ifr_ifru.ifru_flags } as libc::c_int)
}
