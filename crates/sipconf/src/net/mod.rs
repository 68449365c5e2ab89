//! Socket helpers over libc that the SIP transport, the media engine and the
//! load generator share: batched UDP (`recvmmsg`/`sendmmsg`, kernel arrival
//! timestamps, buffer sizes), the media thread's eventfd doorbell, and an
//! epoll set. Each is a thin, allocation-free wrapper of a system call or
//! two; what to read, send or wait for is always the caller's business.
//!
//! Never here: protocol (SIP, RTP), clocks other than the kernel's
//! timestamps, threads or tokio.

pub mod connections; // caps on accepted TCP connections per IP and in all, idle timeouts
pub mod poller; // an epoll set: which of many sockets have datagrams waiting
pub mod udp; // batched UDP, socket addresses in kernel form, buffer sizes, timestamps
pub mod wakeup; // the eventfd the media thread rings when it queued events

#[cfg(test)]
mod tests {
    use super::poller::Poller;
    use super::udp::{bind_timestamped, realtime_ns, RawAddr, ReceiveBatch, SendBatch};
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_sent_with_sendmmsg_arrives_with_sources_and_kernel_timestamps() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let receiver = bind_timestamped(loopback, None).expect("bind");
        let sender = bind_timestamped(loopback, None).expect("bind");
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
