//! RTP port pairs from `media.rtp_ports`: an even port for RTP and the odd one
//! above it for RTCP (RFC 3550 §11), bound here and handed to the media plane;
//! or, with `media.shared_port`, the media thread's one pair for every call.
//! Also the address our SDP names for them.
//!
//! This is the only IO the switchboard has done for it synchronously, through
//! the [`RtpPorts`] trait: binding a pair and asking the kernel for a route.
//! It never sends or receives on the sockets (the media plane does).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::Range;

use crate::media::MemberSockets;

/// RTP ports and media addresses for the switchboard's calls.
pub trait RtpPorts: Send {
    /// A pair for a new call; `None` when every pair is in use.
    fn bind_pair(&mut self) -> Option<CallPorts>;
    /// Gives a call's pair back.
    fn release(&mut self, ports: &CallPorts);
    /// The address our SDP names for media exchanged with a peer at `remote`.
    fn media_address_towards(&self, remote: IpAddr) -> IpAddr;
}

/// A call's RTP port (RTCP is the one above) and, unless the port is shared,
/// the sockets bound to it.
#[derive(Debug)]
pub struct CallPorts {
    pub rtp_port: u16,
    /// Kept here while the media plane has clones, so the ports stay bound when
    /// the call leaves the mixer and can join again.
    own: Option<(UdpSocket, UdpSocket)>,
}

impl CallPorts {
    /// A port with no sockets of its own: the media thread's shared pair
    /// serves it (`MemberSockets::Shared`).
    pub fn shared(rtp_port: u16) -> CallPorts {
        CallPorts {
            rtp_port,
            own: None,
        }
    }

    /// What the media plane is given for a member of this call: clones of the
    /// call's own sockets (bound to explicit ports, so the media thread may
    /// connect them to the phone at `sdp_ip`, the address our SDP gave it),
    /// or the shared port.
    pub fn member_sockets(&self, sdp_ip: IpAddr) -> std::io::Result<MemberSockets> {
        match &self.own {
            Some((rtp, rtcp)) => Ok(MemberSockets::Own {
                rtp: rtp.try_clone()?,
                rtcp: rtcp.try_clone()?,
                sdp_ip: Some(sdp_ip),
            }),
            None => Ok(MemberSockets::Shared),
        }
    }
}

/// Hands out bound RTP/RTCP socket pairs, round-robin through the range so a
/// port just released is not reused at once (late packets of the old call
/// would reach the new one).
#[derive(Debug)]
pub struct PortPool {
    /// `media.address`: named in every SDP; `None`: the address that routes to the peer.
    advertised: Option<IpAddr>,
    bind_address: IpAddr,
    first_even: u16,
    pairs: u16,
    cursor: u16,
    in_use: HashSet<u16>,
    /// `media.shared_port`: every call gets this RTP port and no sockets.
    shared: Option<u16>,
}

impl PortPool {
    pub fn new(bind_address: IpAddr, range: Range<u16>) -> PortPool {
        let first_even = range.start.next_multiple_of(2);
        // A pair needs both ports inside the range.
        let pairs = range.end.saturating_sub(first_even) / 2;
        PortPool {
            advertised: None,
            bind_address,
            first_even,
            pairs,
            cursor: 0,
            in_use: HashSet::new(),
            shared: None,
        }
    }

    /// A pool that gives every call the media thread's shared RTP port.
    pub fn shared(rtp_port: u16) -> PortPool {
        PortPool {
            advertised: None,
            bind_address: IpAddr::from([0, 0, 0, 0]),
            first_even: rtp_port,
            pairs: 0,
            cursor: 0,
            in_use: HashSet::new(),
            shared: Some(rtp_port),
        }
    }

    /// Names `address` in every SDP (`media.address`) instead of the
    /// address that routes to each peer.
    pub fn advertising(mut self, address: Option<IpAddr>) -> PortPool {
        self.advertised = address;
        self
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

impl RtpPorts for PortPool {
    /// Binds the next free pair (or gives the shared port); `None` when every
    /// pair is in use or taken by another program.
    fn bind_pair(&mut self) -> Option<CallPorts> {
        if let Some(rtp_port) = self.shared {
            return Some(CallPorts::shared(rtp_port));
        }
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
            return Some(CallPorts {
                rtp_port: port,
                own: Some((rtp, rtcp)),
            });
        }
        None
    }

    /// Returns a call's pair to the pool (its sockets close when the call's
    /// `CallPorts` and the media plane's clones are dropped).
    fn release(&mut self, ports: &CallPorts) {
        if ports.own.is_some() {
            self.in_use.remove(&ports.rtp_port);
        }
    }

    fn media_address_towards(&self, remote: IpAddr) -> IpAddr {
        self.advertised
            .unwrap_or_else(|| local_address_towards(remote))
    }
}

/// The local address the kernel would use to reach `remote` (no packet is sent:
/// connecting a UDP socket only looks up the route).
pub fn local_address_towards(remote: IpAddr) -> IpAddr {
    // ::ffff:a.b.c.d is an IPv4 peer: answer with the IPv4 address it reaches.
    let remote = remote.to_canonical();
    let unspecified: IpAddr = if remote.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u16; 8])
    };
    UdpSocket::bind((unspecified, 0))
        .and_then(|s| {
            s.connect((remote, 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(unspecified)
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
        let first = pool.bind_pair().expect("first pair");
        let a = first.rtp_port;
        assert_eq!(a % 2, 0);
        let (rtp, rtcp) = first.own.as_ref().expect("own sockets");
        assert_eq!(rtp.local_addr().unwrap().port(), a);
        assert_eq!(rtcp.local_addr().unwrap().port(), a + 1);
        let second = pool.bind_pair().expect("second pair");
        assert_ne!(a, second.rtp_port);
        assert!(pool.bind_pair().is_none(), "only two pairs fit");
        pool.release(&first);
        drop(first);
        assert_eq!(pool.bind_pair().map(|p| p.rtp_port), Some(a));
    }

    #[test]
    fn an_ipv4_peer_seen_through_a_dual_stack_socket_is_answered_in_ipv4() {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(local_address_towards(loopback), loopback);
        let mapped = IpAddr::from(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert_eq!(local_address_towards(mapped), loopback);
    }

    #[test]
    fn an_advertised_media_address_is_named_whatever_the_peer() {
        let advertised = IpAddr::from([192, 0, 2, 1]);
        let pool = PortPool::shared(30_000).advertising(Some(advertised));
        assert_eq!(
            pool.media_address_towards(IpAddr::from([127, 0, 0, 1])),
            advertised
        );
    }

    #[test]
    fn a_shared_pool_gives_every_call_the_shared_port_and_no_sockets() {
        let mut pool = PortPool::shared(30_000);
        let calls: Vec<CallPorts> = (0..3).map(|_| pool.bind_pair().expect("port")).collect();
        for call in &calls {
            assert_eq!(call.rtp_port, 30_000);
            assert!(matches!(
                call.member_sockets(IpAddr::from([127, 0, 0, 1])),
                Ok(MemberSockets::Shared)
            ));
            pool.release(call);
        }
        assert_eq!(pool.in_use(), 0);
    }
}
