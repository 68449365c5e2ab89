//! An epoll set: which of the registered sockets have something to read, for
//! a thread that serves thousands of sockets without a runtime (the load
//! generator). Registration and waiting only; reading is the caller's.
//!
//! Each unsafe block is one system call on memory this module owns, and says
//! why it is sound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An epoll set: which registered sockets have datagrams waiting.
pub struct Poller {
    epoll: OwnedFd,
    events: Box<[libc::epoll_event]>,
}

impl Poller {
    /// A set that reports up to `capacity` ready sockets per `wait`.
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

    /// The token of ready socket `i` of the last `wait`.
    pub fn token(&self, i: usize) -> u64 {
        self.events[i].u64
    }
}
