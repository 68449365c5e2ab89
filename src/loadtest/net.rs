//! The load generator's socket layer over libc: `recvmmsg` with kernel receive
//! timestamps, `sendmmsg`, and an epoll set that says which of thousands of
//! phone sockets have something to read. Every buffer is allocated once; a
//! datagram in or out allocates nothing.
//!
//! This is the only unsafe code in the load generator: each block is one
//! system call on buffers this module owns, and says why it is sound.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Large enough for any SIP message the bridge sends us over UDP.
pub const DATAGRAM_BYTES: usize = 4096;
/// `SO_TIMESTAMPNS` from asm-generic/socket.h (x86, Arm, RISC-V); the libc
/// crate exports it only for some targets.
const SO_TIMESTAMPNS: libc::c_int = 35;
/// Room for one `SCM_TIMESTAMPNS` control message, as `u64`s for alignment.
const CONTROL_WORDS: usize = 8;

/// A socket address in the form the kernel reads, computed once per peer.
#[derive(Clone, Copy)]
pub struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    pub fn new(addr: SocketAddr) -> RawAddr {
        // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*v4.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        RawAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }

    fn to_socket_addr(self) -> Option<SocketAddr> {
        match self.storage.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in when the family is AF_INET.
                let sin = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 when the family is AF_INET6.
                let sin6 = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in6) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// Wall-clock time in nanoseconds: the clock `SO_TIMESTAMPNS` stamps arrivals
/// with, so send and arrival times compare directly.
// time_t and rlim_t are 32 bits wide on 32-bit Raspberry Pi OS.
#[allow(clippy::unnecessary_cast)]
pub fn realtime_ns() -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    now.tv_sec as i64 * 1_000_000_000 + now.tv_nsec as i64
}

/// Binds a nonblocking UDP socket whose datagrams carry their kernel arrival time.
pub fn bind_udp(addr: SocketAddr, receive_buffer_bytes: Option<usize>) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, SO_TIMESTAMPNS, 1)?;
    if let Some(bytes) = receive_buffer_bytes {
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = set_int_option(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            bytes as libc::c_int,
        );
    }
    Ok(socket)
}

fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises the open-file limit to its hard maximum (a phone is one socket);
/// returns the limit now in force.
#[allow(clippy::unnecessary_cast)]
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to read into and then pass back.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            }
        }
    }
    limit.rlim_cur as u64
}

/// CPU time (user + system) this process has used, in microseconds.
pub fn own_cpu_us() -> u64 {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage to write into.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// The kernel's clock ticks per second, the unit of /proc/PID/stat times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Buffers for reading up to `capacity` datagrams from one socket in one call.
pub struct ReceiveBatch {
    buffers: Box<[[u8; DATAGRAM_BYTES]]>,
    sources: Box<[RawAddr]>,
    controls: Box<[[u64; CONTROL_WORDS]]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
}

impl ReceiveBatch {
    pub fn new(capacity: usize) -> ReceiveBatch {
        let empty = RawAddr::new(SocketAddr::from(([0, 0, 0, 0], 0)));
        ReceiveBatch {
            buffers: vec![[0u8; DATAGRAM_BYTES]; capacity].into_boxed_slice(),
            sources: vec![empty; capacity].into_boxed_slice(),
            controls: vec![[0u64; CONTROL_WORDS]; capacity].into_boxed_slice(),
            iovecs: (0..capacity)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            // SAFETY: mmsghdr is plain old data (pointers and lengths); zero is valid.
            headers: (0..capacity)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect(),
        }
    }

    /// Reads up to `max` waiting datagrams without blocking; Ok(0) when none wait.
    pub fn receive(&mut self, fd: RawFd, max: usize) -> io::Result<usize> {
        let count = max.min(self.headers.len());
        for i in 0..count {
            self.iovecs[i] = libc::iovec {
                iov_base: self.buffers[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: DATAGRAM_BYTES,
            };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = &mut self.sources[i].storage as *mut _ as *mut libc::c_void;
            header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = self.controls[i].as_mut_ptr() as *mut libc::c_void;
            header.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>() as _;
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: every header points into buffers owned by `self` that outlive the
        // call, with their true lengths; `count` is within the header array.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        let received = received as usize;
        for i in 0..received {
            self.sources[i].len = self.headers[i].msg_hdr.msg_namelen;
        }
        Ok(received)
    }

    /// The payload of datagram `i` of the last `receive`.
    pub fn datagram(&self, i: usize) -> &[u8] {
        let len = (self.headers[i].msg_len as usize).min(DATAGRAM_BYTES);
        &self.buffers[i][..len]
    }

    /// Where datagram `i` came from.
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        self.sources[i].to_socket_addr()
    }

    /// The kernel's arrival time of datagram `i` (CLOCK_REALTIME ns), if stamped.
    #[allow(clippy::unnecessary_cast)]
    pub fn arrival_ns(&self, i: usize) -> Option<i64> {
        let header = &self.headers[i].msg_hdr;
        // SAFETY: the control buffer was filled by recvmmsg for this header and the
        // CMSG_* helpers stay within `msg_controllen`; the timespec is read unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(header);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == SO_TIMESTAMPNS {
                    let stamp: libc::timespec =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                    return Some(stamp.tv_sec as i64 * 1_000_000_000 + stamp.tv_nsec as i64);
                }
                cmsg = libc::CMSG_NXTHDR(header, cmsg);
            }
        }
        None
    }
}

/// Datagrams queued for one socket, sent with one `sendmmsg`.
pub struct SendBatch {
    buffers: Box<[[u8; DATAGRAM_BYTES]]>,
    lengths: Box<[usize]>,
    destinations: Box<[RawAddr]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    queued: usize,
}

impl SendBatch {
    pub fn new(capacity: usize) -> SendBatch {
        let empty = RawAddr::new(SocketAddr::from(([0, 0, 0, 0], 0)));
        SendBatch {
            buffers: vec![[0u8; DATAGRAM_BYTES]; capacity].into_boxed_slice(),
            lengths: vec![0; capacity].into_boxed_slice(),
            destinations: vec![empty; capacity].into_boxed_slice(),
            iovecs: (0..capacity)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            // SAFETY: mmsghdr is plain old data (pointers and lengths); zero is valid.
            headers: (0..capacity)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect(),
            queued: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.queued == self.headers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Queues one datagram that `write` fills (returning its length); false when
    /// the batch is full (send it first).
    pub fn push(&mut self, to: &RawAddr, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        if self.is_full() {
            return false;
        }
        let i = self.queued;
        self.lengths[i] = write(&mut self.buffers[i]).min(DATAGRAM_BYTES);
        self.destinations[i] = *to;
        self.queued += 1;
        true
    }

    /// Sends everything queued on `fd`; returns how many datagrams the kernel
    /// took. One it refuses (full socket buffer) is dropped, and the caller
    /// counts `queued - sent`.
    pub fn send(&mut self, fd: RawFd) -> usize {
        let count = self.queued;
        self.queued = 0;
        for i in 0..count {
            self.iovecs[i] = libc::iovec {
                iov_base: self.buffers[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: self.lengths[i],
            };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = &mut self.destinations[i].storage as *mut _ as *mut libc::c_void;
            header.msg_namelen = self.destinations[i].len;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
        }
        let (mut next, mut accepted) = (0, 0);
        while next < count {
            // SAFETY: headers next..count point into buffers owned by `self` with
            // their true lengths; the range is within the header array.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    self.headers[next..].as_mut_ptr(),
                    (count - next) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                next += rc as usize;
                accepted += rc as usize;
            } else if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            } else {
                next += 1;
            }
        }
        accepted
    }
}

/// An epoll set: which registered sockets have datagrams waiting.
pub struct Poller {
    epoll: OwnedFd,
    events: Box<[libc::epoll_event]>,
}

impl Poller {
    pub fn new(capacity: usize) -> io::Result<Poller> {
        // SAFETY: plain system call; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)]
                .into_boxed_slice(),
        })
    }

    /// Watches `fd` for readability; `token` comes back from `wait`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event; epoll copies it.
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits up to `timeout_ms` (0: just look) for readable sockets; returns how
    /// many, whose tokens `token(i)` gives.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: the events buffer is owned by `self` and its length is passed.
        let rc = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        if rc < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(error);
        }
        Ok(rc as usize)
    }

    pub fn token(&self, i: usize) -> u64 {
        self.events[i].u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_sent_with_sendmmsg_arrives_with_sources_and_kernel_timestamps() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let receiver = bind_udp(loopback, None).expect("bind");
        let sender = bind_udp(loopback, None).expect("bind");
        let to = RawAddr::new(receiver.local_addr().expect("addr"));
        let mut out = SendBatch::new(4);
        for n in 0..3u8 {
            assert!(out.push(&to, |buf| {
                buf[..2].copy_from_slice(&[n, n]);
                2
            }));
        }
        let before = realtime_ns();
        assert_eq!(out.send(sender.as_raw_fd()), 3);
        let mut poller = Poller::new(8).expect("epoll");
        poller.add(receiver.as_raw_fd(), 7).expect("add");
        assert_eq!(poller.wait(1000).expect("wait"), 1);
        assert_eq!(poller.token(0), 7);
        let mut batch = ReceiveBatch::new(8);
        assert_eq!(batch.receive(receiver.as_raw_fd(), 8).expect("recv"), 3);
        for n in 0..3 {
            assert_eq!(batch.datagram(n), &[n as u8, n as u8]);
            assert_eq!(batch.source(n), sender.local_addr().ok());
            let arrival = batch.arrival_ns(n).expect("stamped");
            assert!(arrival >= before - 1_000_000 && arrival - before < 1_000_000_000);
        }
        assert_eq!(batch.receive(receiver.as_raw_fd(), 8).expect("recv"), 0);
    }
}
