//! RTP port pairs from `media.rtp_ports`: an even port for RTP and the odd one
//! above it for RTCP (RFC 3550 §11), bound here and handed to the media plane.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::Range;

/// Hands out bound RTP/RTCP socket pairs, round-robin through the range so a
/// port just released is not reused at once (late packets of the old call
/// would reach the new one).
#[derive(Debug)]
pub struct PortPool {
    bind_address: IpAddr,
    first_even: u16,
    pairs: u16,
    cursor: u16,
    in_use: HashSet<u16>,
}

impl PortPool {
    pub fn new(bind_address: IpAddr, range: Range<u16>) -> PortPool {
        let first_even = range.start.next_multiple_of(2);
        // A pair needs both ports inside the range.
        let pairs = range.end.saturating_sub(first_even) / 2;
        PortPool {
            bind_address,
            first_even,
            pairs,
            cursor: 0,
            in_use: HashSet::new(),
        }
    }

    /// Binds the next free pair; `None` when every pair is in use or taken by
    /// another program.
    pub fn bind_pair(&mut self) -> Option<(u16, UdpSocket, UdpSocket)> {
        for _ in 0..self.pairs {
            let port = self.first_even + 2 * self.cursor;
            self.cursor = (self.cursor + 1) % self.pairs.max(1);
            if self.in_use.contains(&port) {
                continue;
            }
            let Ok(rtp) = UdpSocket::bind(SocketAddr::new(self.bind_address, port)) else {
                continue;
            };
            let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(self.bind_address, port + 1)) else {
                continue;
            };
            self.in_use.insert(port);
            return Some((port, rtp, rtcp));
        }
        None
    }

    /// Returns a pair to the pool (its sockets are closed by their owner).
    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A base port (even) with the six ports from it free on loopback right now;
    /// other programs on a shared machine hold ports, so none is assumed free.
    fn free_block_of_six() -> u16 {
        for candidate in (40_000u16..60_000)
            .step_by(64)
            .skip((std::process::id() % 300) as usize)
        {
            let held: Vec<_> = (candidate..candidate + 6)
                .map_while(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).ok())
                .collect();
            if held.len() == 6 {
                return candidate;
            }
        }
        panic!("no six free consecutive UDP ports on 127.0.0.1 between 40000 and 60000");
    }

    #[test]
    fn hands_out_even_rtp_ports_with_rtcp_above_and_runs_out_cleanly() {
        let base = free_block_of_six();
        let mut pool = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), base + 1..base + 6);
        let (a, rtp, rtcp) = pool.bind_pair().expect("first pair");
        assert_eq!(a % 2, 0);
        assert_eq!(rtp.local_addr().unwrap().port(), a);
        assert_eq!(rtcp.local_addr().unwrap().port(), a + 1);
        let (b, _r, _c) = pool.bind_pair().expect("second pair");
        assert_ne!(a, b);
        assert!(pool.bind_pair().is_none(), "only two pairs fit");
        drop((rtp, rtcp));
        pool.release(a);
        assert_eq!(pool.bind_pair().map(|p| p.0), Some(a));
    }
}
