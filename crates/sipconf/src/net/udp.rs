//! Batched UDP over libc: `recvmmsg` (with kernel receive timestamps when the
//! socket asks for them) and `sendmmsg`, socket addresses in the form the
//! kernel reads, and socket buffer sizes. The media thread reads each
//! member's socket with one `recvmmsg` a tick, which returns what waits
//! without the extra empty read `recv_from` needs to learn the socket is
//! drained; the SIP transport sizes its buffers here; the load generator uses
//! all of it. Every buffer is allocated once; a datagram in or out allocates
//! nothing.
//!
//! Never here: what a datagram means, or when to read or send one.
//!
//! Each unsafe block is one system call on buffers this module owns, and says
//! why it is sound.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

/// Large enough for any SIP message the bridge sends us over UDP.
pub const DATAGRAM_BYTES: usize = 4096;
/// `SO_TIMESTAMPNS` from asm-generic/socket.h (x86, Arm, RISC-V); the libc
/// crate exports it only for some targets.
pub const SO_TIMESTAMPNS: libc::c_int = 35;
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

    pub fn to_socket_addr(self) -> Option<SocketAddr> {
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
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                let port = u16::from_be(sin6.sin6_port);
                // An IPv4 peer of a dual-stack socket (bound to `::`) shows up
                // as ::ffff:a.b.c.d; it is the IPv4 address its SDP named, and
                // must compare equal to it.
                Some(match ip.to_ipv4_mapped() {
                    Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                    None => SocketAddr::V6(SocketAddrV6::new(
                        ip,
                        port,
                        sin6.sin6_flowinfo,
                        sin6.sin6_scope_id,
                    )),
                })
            }
            _ => None,
        }
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

// SAFETY: the raw pointers in the headers and iovecs only ever point into
// buffers this batch owns, are rewritten before every call, and are not
// shared: moving the batch to another thread moves everything they point at.
unsafe impl Send for ReceiveBatch {}

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

/// Asks the kernel for `bytes` of receive and of send buffer on `fd`; it
/// caps them at `net.core.rmem_max` and `wmem_max` without an error.
pub fn set_buffer_bytes(fd: RawFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, value)?;
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, value)
}

/// Binds a nonblocking UDP socket whose datagrams carry their kernel arrival
/// time (`ReceiveBatch::arrival_ns`), with `receive_buffer_bytes` of receive
/// buffer if given (best effort: the kernel caps it at `net.core.rmem_max`).
pub fn bind_timestamped(
    addr: SocketAddr,
    receive_buffer_bytes: Option<usize>,
) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, SO_TIMESTAMPNS, 1)?;
    if let Some(bytes) = receive_buffer_bytes {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        let _ = set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, value);
    }
    Ok(socket)
}

/// Wall-clock time in nanoseconds: the clock `SO_TIMESTAMPNS` stamps arrivals
/// with, so send and arrival times compare directly.
// time_t is 32 bits wide on 32-bit Raspberry Pi OS.
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

/// Dissolves a UDP socket's `connect()`, so it again takes datagrams from any
/// source and sends only where `sendto` says. The socket keeps its port only
/// if it was bound to an explicit one (the kernel drops an automatic port).
pub fn disconnect(fd: RawFd) -> io::Result<()> {
    // SAFETY: sockaddr is plain old data; all zeroes is a valid value.
    let mut unspecified: libc::sockaddr = unsafe { std::mem::zeroed() };
    unspecified.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: `unspecified` is a live sockaddr and the length passed is its size.
    let rc = unsafe {
        libc::connect(
            fd,
            &unspecified,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The receive buffer the kernel granted `fd`, in bytes (as `SO_RCVBUF`
/// reports it: twice what was asked, for its bookkeeping).
pub fn receive_buffer_bytes(fd: RawFd) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and `len` is the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(value).unwrap_or(0))
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

// SAFETY: as for ReceiveBatch: the pointers only reach buffers owned here.
unsafe impl Send for SendBatch {}

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

    /// Datagrams queued and not yet sent.
    pub fn len(&self) -> usize {
        self.queued
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_peer_of_a_dual_stack_socket_reads_as_its_ipv4_address() {
        // A socket bound to the IPv4-mapped loopback is an IPv6 socket that
        // carries IPv4, as one bound to `::` does for IPv4 peers.
        let receiver = UdpSocket::bind("[::ffff:127.0.0.1]:0").expect("bind mapped loopback");
        let port = receiver.local_addr().expect("bound").port();
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        sender.send_to(b"hi", ("127.0.0.1", port)).expect("send");
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let mut first = [0u8; 2];
        let (_, from) = receiver.peek_from(&mut first).expect("arrived");
        assert!(from.is_ipv6(), "the kernel reports {from}");
        let mut batch = ReceiveBatch::new(4);
        assert_eq!(batch.receive(receiver.as_raw_fd(), 4).expect("recv"), 1);
        assert_eq!(batch.source(0), sender.local_addr().ok());
        // A real IPv6 address stays one.
        let v6 = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 5004));
        assert_eq!(RawAddr::new(v6).to_socket_addr(), Some(v6));
    }
}
