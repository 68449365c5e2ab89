//! The media thread's doorbell: an eventfd it rings after a tick in which it
//! queued events, so the signalling side sleeps until there is something to
//! read instead of waking every 20 ms to find the queue empty (most ticks of
//! a quiet bridge queue nothing). One `write` per tick that queued events; a
//! tick that queued none costs nothing. It carries no data: what happened is
//! in the event queue, never here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An eventfd in counter mode, nonblocking on both sides.
#[derive(Debug)]
pub struct Wakeup {
    fd: OwnedFd,
}

impl Wakeup {
    pub fn new() -> io::Result<Wakeup> {
        // SAFETY: eventfd takes no pointers; a negative return is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened here and nothing else owns it.
        Ok(Wakeup {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Rings: the reader's `readable` completes. Never blocks; a counter
    /// that cannot grow (`EAGAIN`) is already ringing.
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: `one` is a live u64 and eventfd writes take exactly 8 bytes.
        let _ = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
    }

    /// Answers the ring before reading the queue, so a ring after this call
    /// is never missed. Never blocks.
    pub fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: `count` is a live u64 and eventfd reads take exactly 8 bytes.
        let _ = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut count as *mut u64 as *mut libc::c_void,
                8,
            )
        };
    }
}

impl AsRawFd for Wakeup {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_ringing(wakeup: &Wakeup) -> bool {
        let mut poll = libc::pollfd {
            fd: wakeup.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd; a zero timeout never blocks.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready == 1
    }

    #[test]
    fn rings_until_cleared_and_many_rings_are_one() {
        let wakeup = Wakeup::new().expect("eventfd");
        assert!(!is_ringing(&wakeup));
        wakeup.ring();
        wakeup.ring();
        assert!(is_ringing(&wakeup));
        wakeup.clear();
        assert!(!is_ringing(&wakeup));
        wakeup.clear();
        assert!(!is_ringing(&wakeup));
        wakeup.ring();
        assert!(is_ringing(&wakeup));
    }
}
