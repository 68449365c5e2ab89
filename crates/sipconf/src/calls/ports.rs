//! RTP port pairs from `media.rtp_ports`: an even port for RTP and the odd one
//! above it for RTCP (RFC 3550 §11), bound here and handed to the media plane;
//! or, with `media.shared_port`, the media thread's one pair for every call.
//! Also the address our SDP names for them.
//!
//! Pairs are drawn at random from the range, and a pair a call gave back is
//! not handed out again for `PORT_QUARANTINE` while another is free, so late
//! or stale RTP of an old call (a phone that never got its BYE, a bridge
//! restarted after a crash) does not reach the next caller on that port,
//! and a restart does not start again from the bottom of the range.
//!
//! This is the only IO the switchboard has done for it synchronously, through
//! the [`RtpPorts`] trait: binding a pair and asking the kernel for a route.
//! It never sends or receives on the sockets (the media plane does).

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::media::local::LocalPort;
use crate::media::MemberSockets;

/// RTP ports and media addresses for the switchboard's calls.
pub trait RtpPorts: Send {
    /// A pair for a new call at `now`; `None` when every pair is in use.
    fn bind_pair(&mut self, now: Instant) -> Option<CallPorts>;
    /// Gives a call's pair back at `now`.
    fn release(&mut self, ports: &CallPorts, now: Instant);
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
    /// No port at all: the room's sound card, whose audio stays in the
    /// process (`MemberSockets::Local`).
    local: Option<LocalPort>,
}

impl CallPorts {
    /// A port with no sockets of its own: the media thread's shared pair
    /// serves it (`MemberSockets::Shared`).
    pub fn shared(rtp_port: u16) -> CallPorts {
        CallPorts {
            rtp_port,
            own: None,
            local: None,
        }
    }

    /// The sound card's rings in place of a port (`rtp_port` 0).
    pub fn local(port: LocalPort) -> CallPorts {
        CallPorts {
            rtp_port: 0,
            own: None,
            local: Some(port),
        }
    }

    /// What the media plane is given for a member of this call: clones of the
    /// call's own sockets (bound to explicit ports, so the media thread may
    /// connect them to the phone at `sdp_ip`, the address our SDP gave it),
    /// or the shared port.
    pub fn member_sockets(&self, sdp_ip: IpAddr) -> std::io::Result<MemberSockets> {
        if let Some(port) = &self.local {
            return Ok(MemberSockets::Local(port.clone()));
        }
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

/// A pair given back is not handed out again for this long while another
/// pair is free: a phone that missed its BYE, or streams on after the bridge
/// restarted, keeps sending to its old port for a while (until its own RTP
/// timeout, often 30 to 60 s).
pub const PORT_QUARANTINE: Duration = Duration::from_secs(60);

/// Random pairs tried before the range is searched in order.
const RANDOM_TRIES: usize = 32;

/// Hands out bound RTP/RTCP socket pairs, drawn at random from the range,
/// keeping pairs given back in quarantine (`PORT_QUARANTINE`).
#[derive(Debug)]
pub struct PortPool {
    /// `media.address`: named in every SDP; `None`: the address that routes to the peer.
    advertised: Option<IpAddr>,
    bind_address: IpAddr,
    first_even: u16,
    pairs: u16,
    in_use: HashSet<u16>,
    /// Pairs given back, oldest first, with when.
    quarantine: VecDeque<(u16, Instant)>,
    quarantined: HashSet<u16>,
    rng: SmallRng,
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
            in_use: HashSet::new(),
            quarantine: VecDeque::new(),
            quarantined: HashSet::new(),
            rng: SmallRng::from_rng(&mut rand::rng()),
            shared: None,
        }
    }

    /// A pool that gives every call the media thread's shared RTP port.
    pub fn shared(rtp_port: u16) -> PortPool {
        PortPool {
            shared: Some(rtp_port),
            ..PortPool::new(IpAddr::from([0, 0, 0, 0]), rtp_port..rtp_port)
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

    /// Binds the pair at `port`, unless it is in use here or taken by
    /// another program.
    fn try_bind(&mut self, port: u16) -> Option<CallPorts> {
        if self.in_use.contains(&port) {
            return None;
        }
        let rtp = UdpSocket::bind(SocketAddr::new(self.bind_address, port)).ok()?;
        let rtcp = UdpSocket::bind(SocketAddr::new(self.bind_address, port + 1)).ok()?;
        self.in_use.insert(port);
        Some(CallPorts {
            rtp_port: port,
            own: Some((rtp, rtcp)),
            local: None,
        })
    }

    /// A free pair out of quarantine: random tries, then the range in order
    /// from a random place.
    fn bind_free(&mut self) -> Option<CallPorts> {
        let eligible = |pool: &PortPool, port: u16| {
            !pool.in_use.contains(&port) && !pool.quarantined.contains(&port)
        };
        for _ in 0..RANDOM_TRIES {
            let port = self.first_even + 2 * self.rng.random_range(0..self.pairs);
            if eligible(self, port) {
                if let Some(ports) = self.try_bind(port) {
                    return Some(ports);
                }
            }
        }
        let start = self.rng.random_range(0..self.pairs);
        for step in 0..self.pairs {
            let port = self.first_even + 2 * ((start + step) % self.pairs);
            if eligible(self, port) {
                if let Some(ports) = self.try_bind(port) {
                    return Some(ports);
                }
            }
        }
        None
    }

    /// Every other pair is in use: the one longest in quarantine.
    fn bind_quarantined(&mut self) -> Option<CallPorts> {
        for position in 0..self.quarantine.len() {
            let (port, _) = self.quarantine[position];
            if let Some(ports) = self.try_bind(port) {
                self.quarantine.remove(position);
                self.quarantined.remove(&port);
                return Some(ports);
            }
        }
        None
    }
}

impl RtpPorts for PortPool {
    /// Binds a random free pair out of quarantine (or gives the shared
    /// port); when every free pair is in quarantine, the one given back
    /// longest ago; `None` when every pair is in use or taken by another
    /// program.
    fn bind_pair(&mut self, now: Instant) -> Option<CallPorts> {
        if let Some(rtp_port) = self.shared {
            return Some(CallPorts::shared(rtp_port));
        }
        if self.pairs == 0 {
            return None;
        }
        while let Some(&(port, at)) = self.quarantine.front() {
            if now.saturating_duration_since(at) < PORT_QUARANTINE {
                break;
            }
            self.quarantine.pop_front();
            self.quarantined.remove(&port);
        }
        self.bind_free().or_else(|| self.bind_quarantined())
    }

    /// Returns a call's pair to the pool, in quarantine (its sockets close
    /// when the call's `CallPorts` and the media plane's clones are dropped).
    fn release(&mut self, ports: &CallPorts, now: Instant) {
        let given_back = ports.own.is_some() && self.in_use.remove(&ports.rtp_port);
        if given_back && self.quarantined.insert(ports.rtp_port) {
            self.quarantine.push_back((ports.rtp_port, now));
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
    /// The block comes from 10000-11499, below the kernel's ephemeral range
    /// (32768 up) and the test kit's ports (12000 up): a port there that is
    /// free now stays free until the pool binds it, where one in the
    /// ephemeral range can be taken meanwhile by any parallel test's client.
    fn free_block_of_six() -> u16 {
        for candidate in (10_000u16..11_500)
            .step_by(8)
            .skip((std::process::id() % 180) as usize)
            .chain((10_000u16..11_500).step_by(8))
        {
            let held: Vec<_> = (candidate..candidate + 6)
                .map_while(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).ok())
                .collect();
            if held.len() == 6 {
                return candidate;
            }
        }
        panic!("no six free consecutive UDP ports on 127.0.0.1 between 10000 and 11500");
    }

    #[test]
    fn hands_out_even_rtp_ports_with_rtcp_above_and_runs_out_cleanly() {
        let base = free_block_of_six();
        let now = Instant::now();
        let mut pool = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), base + 1..base + 6);
        let first = pool.bind_pair(now).expect("first pair");
        let a = first.rtp_port;
        assert_eq!(a % 2, 0);
        let (rtp, rtcp) = first.own.as_ref().expect("own sockets");
        assert_eq!(rtp.local_addr().unwrap().port(), a);
        assert_eq!(rtcp.local_addr().unwrap().port(), a + 1);
        let second = pool.bind_pair(now).expect("second pair");
        assert_ne!(a, second.rtp_port);
        assert!(pool.bind_pair(now).is_none(), "only two pairs fit");
        pool.release(&first, now);
        drop(first);
        // In quarantine, but the only pair free: handed out all the same.
        assert_eq!(pool.bind_pair(now).map(|p| p.rtp_port), Some(a));
    }

    #[test]
    fn a_pair_given_back_waits_in_quarantine_while_others_are_free() {
        let base = free_block_of_six();
        let start = Instant::now();
        let mut pool = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), base..base + 6);
        let first = pool.bind_pair(start).expect("a pair");
        let used = first.rtp_port;
        pool.release(&first, start);
        drop(first);
        // Three pairs, one in quarantine: the two others come out first.
        let a = pool.bind_pair(start).expect("a pair");
        let b = pool.bind_pair(start).expect("a pair");
        assert!(a.rtp_port != used && b.rtp_port != used);
        // Only the quarantined one is free: better it than no call.
        let c = pool.bind_pair(start).expect("a pair");
        assert_eq!(c.rtp_port, used);
        let given_back = start + Duration::from_secs(1);
        for ports in [a, b, c] {
            pool.release(&ports, given_back);
        }
        // After the quarantine every pair is free again.
        let later = given_back + PORT_QUARANTINE;
        let all: HashSet<u16> = (0..3)
            .map(|_| pool.bind_pair(later).expect("a pair"))
            .map(|p| p.rtp_port)
            .collect();
        assert_eq!(all.len(), 3);
        assert!(pool.quarantine.is_empty());
    }

    #[test]
    fn a_fresh_pool_does_not_start_at_the_bottom_of_the_range() {
        // Twenty restarts, each binding its first pair of 100.
        let now = Instant::now();
        let firsts: HashSet<u16> = (0..20)
            .filter_map(|_| {
                let mut pool = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 11_600..11_800);
                pool.bind_pair(now).map(|ports| ports.rtp_port)
            })
            .collect();
        // All on one pair by chance: about once in 10^38.
        assert!(firsts.len() > 5, "{firsts:?}");
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
        let now = Instant::now();
        let calls: Vec<CallPorts> = (0..3).map(|_| pool.bind_pair(now).expect("port")).collect();
        for call in &calls {
            assert_eq!(call.rtp_port, 30_000);
            assert!(matches!(
                call.member_sockets(IpAddr::from([127, 0, 0, 1])),
                Ok(MemberSockets::Shared)
            ));
            pool.release(call, Instant::now());
        }
        assert_eq!(pool.in_use(), 0);
    }
}
