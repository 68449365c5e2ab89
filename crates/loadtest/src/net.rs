//! The load generator's socket layer over libc: the batched `recvmmsg` and
//! `sendmmsg` of `sipconf::media::udp`, kernel receive timestamps, and an epoll set
//! that says which of thousands of phone sockets have something to read.
//!
//! This is the only unsafe code in the load generator: each block is one
//! system call on buffers this module owns, and says why it is sound.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub use sipconf::media::udp::{RawAddr, ReceiveBatch, SendBatch, SO_TIMESTAMPNS};

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
