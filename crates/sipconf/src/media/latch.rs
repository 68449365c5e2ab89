//! Where one member's RTP is taken from and sent to: strict source learning
//! (docs/security.md, "RTP from the right source only").
//!
//! A member's stream is accepted at once from the address its SDP named. A
//! phone behind a NAT that rewrote its port sends from somewhere else; its
//! stream is learned only with evidence: a run of `LEARN_RUN` packets in
//! sequence (one SSRC, consecutive sequence numbers) from one address at the
//! IP its signalling came from, or at its SDP address's IP. A third address
//! is never taken, however early it sends or however long the phone pauses.
//! Once locked, a stream that moves (its NAT gave it another port) is
//! followed on the same evidence, carrying the locked stream's SSRC; another
//! stream at those IPs takes over only once the locked one has been silent
//! for `RELATCH_AFTER`, and still only on the evidence. The SDP address
//! always wins back a stream learned elsewhere.
//!
//! Owns: the member's SDP and signalling addresses, the RTP source it is
//! locked to (where its RTP goes), its RTCP destination, and the run being
//! learned. Never touches: sockets, the clock, counters (it says what a
//! packet was; the core counts), the payload.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Packets in sequence from one address that prove it is the member's
/// stream. A single stray, spoofed or replayed packet is never enough, and
/// a phone whose NAT rewrote its port loses only the first three of its
/// packets (60 ms) before it is heard.
pub const LEARN_RUN: u8 = 4;

/// A locked stream silent this long may be replaced by another stream at the
/// member's IPs, proven by a run (never by the pause alone). Also how long
/// the engine keeps a member's own RTP socket connected to a silent phone.
pub const RELATCH_AFTER: Duration = Duration::from_secs(1);

/// What the latch made of one valid RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// The member's stream: play it.
    Accept,
    /// From the member's IP, not (yet) proven by a run in sequence.
    Learning,
    /// A second stream from the member's IP while its own is alive.
    Contested,
    /// From an address that is neither the member's SDP address nor at its
    /// signalling or SDP IP.
    Foreign,
}

/// Packets in sequence from one address, being counted toward `LEARN_RUN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    source: SocketAddr,
    ssrc: u32,
    next_sequence: u16,
    /// 0: no run.
    length: u8,
}

#[derive(Clone, Debug)]
pub struct Latch {
    /// The RTP address the member's SDP named.
    sdp_rtp: SocketAddr,
    /// The IP the call's signalling came from.
    signalling_ip: Option<IpAddr>,
    /// Where the member's RTP is sent: its SDP address until a stream is
    /// locked, then that stream's source.
    source: SocketAddr,
    /// The locked stream's source; `NOWHERE` (which no datagram comes
    /// from) while none is, so the tick's test is one comparison.
    locked_source: SocketAddr,
    /// A stream is locked at the SDP address (kept, not compared, on the tick).
    locked_at_sdp: bool,
    /// When the locked stream last sent RTP.
    last_at: Option<Instant>,
    rtcp: SocketAddr,
    /// RTCP came from `rtcp` (else it is the port above `source`).
    rtcp_latched: bool,
    run: Run,
    /// What the member is filed under changed (the shared port's demultiplexer).
    moved: bool,
}

/// No datagram comes from port 0.
const NOWHERE: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Two addresses are one when they differ only in how an IPv4 address is
/// written (`::ffff:a.b.c.d` on a dual-stack socket).
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

impl Latch {
    pub fn new(sdp_rtp: SocketAddr, sdp_rtcp: SocketAddr, signalling_ip: Option<IpAddr>) -> Latch {
        let sdp_rtp = canonical(sdp_rtp);
        Latch {
            sdp_rtp,
            signalling_ip: signalling_ip.map(|ip| ip.to_canonical()),
            source: sdp_rtp,
            locked_source: NOWHERE,
            locked_at_sdp: false,
            last_at: None,
            rtcp: canonical(sdp_rtcp),
            rtcp_latched: false,
            run: Run {
                source: sdp_rtp,
                ssrc: 0,
                next_sequence: 0,
                length: 0,
            },
            moved: false,
        }
    }

    /// New addresses from a re-INVITE. The same SDP address again (a
    /// session refresh) keeps what was learned; another starts over.
    pub fn set_remote(&mut self, sdp_rtp: SocketAddr, sdp_rtcp: SocketAddr) {
        if canonical(sdp_rtp) == self.sdp_rtp {
            if !self.rtcp_latched && !self.is_locked() {
                self.rtcp = canonical(sdp_rtcp);
            }
            return;
        }
        *self = Latch::new(sdp_rtp, sdp_rtcp, self.signalling_ip);
    }

    /// Where the member's RTP goes.
    pub fn rtp_destination(&self) -> SocketAddr {
        self.source
    }

    pub fn rtcp_destination(&self) -> SocketAddr {
        self.rtcp
    }

    /// The address its SDP named.
    pub fn sdp_rtp(&self) -> SocketAddr {
        self.sdp_rtp
    }

    /// The IPs a stream of the member may be learned at: its signalling
    /// source's and its SDP address's (one when they are the same).
    pub fn learnable_ips(&self) -> [Option<IpAddr>; 2] {
        let sdp_ip = self.sdp_rtp.ip();
        let unspecified = sdp_ip.is_unspecified();
        let signalling = self.signalling_ip.filter(|ip| *ip != sdp_ip);
        [(!unspecified).then_some(sdp_ip), signalling]
    }

    /// A stream is locked (the member is no longer learning).
    pub fn is_locked(&self) -> bool {
        self.locked_source != NOWHERE
    }

    /// Takes the `moved` flag: what the member is filed under may differ.
    #[inline(always)]
    pub fn take_moved(&mut self) -> bool {
        // Read first: the flag is rarely set, and a store per packet is not free.
        if !self.moved {
            return false;
        }
        self.moved = false;
        true
    }

    /// Takes a valid RTP packet from the locked source at `now`; false when
    /// it comes from anywhere else (then ask `admit_other`). The tick's
    /// packets come this way: one comparison.
    #[inline(always)]
    pub fn takes(&mut self, source: SocketAddr, now: Instant) -> bool {
        if source != self.locked_source {
            return false;
        }
        self.last_at = Some(now);
        true
    }

    /// Decides about a valid RTP packet `takes` did not take: from `source`
    /// at `now`, carrying `ssrc` and `sequence`; `stream_ssrc` is the SSRC
    /// of the stream the member last took (it may change at the locked
    /// source). The SDP address, a run at the member's IPs, or nothing.
    #[inline(never)]
    pub fn admit_other(
        &mut self,
        source: SocketAddr,
        ssrc: u32,
        sequence: u16,
        stream_ssrc: Option<u32>,
        now: Instant,
    ) -> Admit {
        if source == self.sdp_rtp {
            self.lock(source, now);
            return Admit::Accept;
        }
        if !self.is_learnable(source.ip()) {
            return Admit::Foreign;
        }
        let run = &mut self.run;
        if run.length > 0
            && run.source == source
            && run.ssrc == ssrc
            && run.next_sequence == sequence
        {
            run.length = run.length.saturating_add(1);
        } else {
            *run = Run {
                source,
                ssrc,
                next_sequence: sequence,
                length: 1,
            };
        }
        run.next_sequence = sequence.wrapping_add(1);
        if run.length < LEARN_RUN {
            return Admit::Learning;
        }
        if self.is_locked() && Some(ssrc) != stream_ssrc && self.is_alive(now) {
            return Admit::Contested;
        }
        self.lock(source, now);
        Admit::Accept
    }

    fn is_learnable(&self, ip: IpAddr) -> bool {
        same_ip(ip, self.sdp_rtp.ip()) || self.signalling_ip.is_some_and(|s| same_ip(ip, s))
    }

    fn lock(&mut self, source: SocketAddr, now: Instant) {
        if self.locked_source != source {
            self.moved = true;
        }
        // Symmetric RTP (RFC 4961): answer where the media comes from.
        self.source = source;
        self.locked_source = source;
        self.locked_at_sdp = source == self.sdp_rtp;
        self.last_at = Some(now);
        self.run.length = 0;
        if !self.rtcp_latched {
            self.rtcp = SocketAddr::new(source.ip(), source.port().wrapping_add(1));
        }
    }

    /// The locked stream sent RTP within `RELATCH_AFTER`.
    fn is_alive(&self, now: Instant) -> bool {
        // RTP that came this very tick needs no clock arithmetic.
        self.last_at
            .is_some_and(|at| at == now || now.saturating_duration_since(at) < RELATCH_AFTER)
    }

    /// Where the member's own RTP socket may be connected: its SDP address,
    /// while the stream is locked there and alive. A stream learned elsewhere
    /// is never connected to, so the SDP address can still win it back (a
    /// connected socket hears its peer alone).
    pub fn connectable(&self, now: Instant) -> Option<SocketAddr> {
        (self.locked_at_sdp && self.is_alive(now)).then_some(self.source)
    }

    /// A valid RTCP packet from `source`: reports go there from now on, if it
    /// is at one of the member's IPs (or its stream's).
    pub fn latch_rtcp(&mut self, source: SocketAddr) -> bool {
        let at_member = self.is_learnable(source.ip()) || same_ip(source.ip(), self.source.ip());
        if !at_member {
            return false;
        }
        if self.rtcp != source {
            self.moved = true;
        }
        self.rtcp = source;
        self.rtcp_latched = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: ([u8; 4], u16) = ([192, 0, 2, 10], 4000);
    const SIGNALLING: [u8; 4] = [203, 0, 113, 5];

    fn member() -> Member {
        Member {
            latch: Latch::new(
                SocketAddr::from(SDP),
                SocketAddr::from(([192, 0, 2, 10], 4001)),
                Some(IpAddr::from(SIGNALLING)),
            ),
            stream_ssrc: None,
        }
    }

    /// A latch and the SSRC of the stream it last took, as the slot keeps it.
    struct Member {
        latch: Latch,
        stream_ssrc: Option<u32>,
    }

    impl Member {
        fn admit(&mut self, source: SocketAddr, ssrc: u32, sequence: u16, at: Instant) -> Admit {
            let admitted = if self.latch.takes(source, at) {
                Admit::Accept
            } else {
                self.latch
                    .admit_other(source, ssrc, sequence, self.stream_ssrc, at)
            };
            if admitted == Admit::Accept {
                self.stream_ssrc = Some(ssrc);
            }
            admitted
        }
    }

    /// Feeds `count` packets in sequence from `source`, 20 ms apart from
    /// `start`; returns what the latch made of each.
    fn feed(
        member: &mut Member,
        source: SocketAddr,
        ssrc: u32,
        first_sequence: u16,
        count: u16,
        start: Instant,
    ) -> Vec<Admit> {
        (0..count)
            .map(|n| {
                let at = start + Duration::from_millis(20 * u64::from(n));
                member.admit(source, ssrc, first_sequence.wrapping_add(n), at)
            })
            .collect()
    }

    #[test]
    fn the_sdp_address_is_accepted_at_once_and_answered() {
        let now = Instant::now();
        let mut member = member();
        let sdp = SocketAddr::from(SDP);
        assert_eq!(member.admit(sdp, 7, 100, now), Admit::Accept);
        assert!(member.latch.is_locked());
        assert_eq!(member.latch.rtp_destination(), sdp);
        assert_eq!(member.latch.connectable(now), Some(sdp));
    }

    #[test]
    fn a_third_address_is_never_taken_early_late_or_after_a_pause() {
        let now = Instant::now();
        let mut member = member();
        let stranger = SocketAddr::from(([198, 51, 100, 1], 5000));
        let before = feed(&mut member, stranger, 9, 1, 50, now);
        assert!(before.iter().all(|a| *a == Admit::Foreign));
        assert_eq!(member.latch.rtp_destination(), SocketAddr::from(SDP));
        // The phone talks, then pauses for ten seconds.
        feed(&mut member, SocketAddr::from(SDP), 7, 1, 10, now);
        let later = now + Duration::from_secs(10);
        let after = feed(&mut member, stranger, 9, 60, 50, later);
        assert!(after.iter().all(|a| *a == Admit::Foreign));
        assert_eq!(member.latch.rtp_destination(), SocketAddr::from(SDP));
    }

    #[test]
    fn a_rewritten_port_at_the_signalling_ip_is_learned_after_a_run_in_sequence() {
        let now = Instant::now();
        let mut member = member();
        let nat = SocketAddr::from((SIGNALLING, 31_000));
        let admitted = feed(&mut member, nat, 7, 65_534, 5, now);
        assert_eq!(
            admitted,
            [
                Admit::Learning,
                Admit::Learning,
                Admit::Learning,
                Admit::Accept,
                Admit::Accept
            ],
            "a run across the sequence wrap"
        );
        assert_eq!(member.latch.rtp_destination(), nat);
        assert_eq!(
            member.latch.rtcp_destination(),
            SocketAddr::from((SIGNALLING, 31_001))
        );
        assert_eq!(
            member.latch.connectable(now),
            None,
            "learned: never connected"
        );
    }

    #[test]
    fn a_broken_run_starts_over() {
        let now = Instant::now();
        let mut member = member();
        let nat = SocketAddr::from((SIGNALLING, 31_000));
        assert_eq!(member.admit(nat, 7, 1, now), Admit::Learning);
        assert_eq!(member.admit(nat, 7, 2, now), Admit::Learning);
        // A gap, another SSRC, another port: each starts a new run.
        assert_eq!(member.admit(nat, 7, 4, now), Admit::Learning);
        assert_eq!(member.admit(nat, 8, 5, now), Admit::Learning);
        let other = SocketAddr::from((SIGNALLING, 31_002));
        assert_eq!(member.admit(other, 8, 6, now), Admit::Learning);
        assert_eq!(member.admit(nat, 8, 7, now), Admit::Learning);
        assert_eq!(member.admit(nat, 8, 8, now), Admit::Learning);
        assert_eq!(member.admit(nat, 8, 9, now), Admit::Learning);
        assert_eq!(member.admit(nat, 8, 10, now), Admit::Accept);
    }

    #[test]
    fn a_second_stream_at_the_ip_cannot_take_a_live_one_even_with_a_run() {
        let now = Instant::now();
        let mut member = member();
        let sdp = SocketAddr::from(SDP);
        let stale = SocketAddr::from(([192, 0, 2, 10], 4100));
        for n in 0..50u16 {
            let at = now + Duration::from_millis(20 * u64::from(n));
            assert_eq!(member.admit(sdp, 7, n, at), Admit::Accept);
            let admitted = member.admit(stale, 99, 1000 + n, at);
            assert!(matches!(admitted, Admit::Learning | Admit::Contested));
        }
        assert_eq!(member.latch.rtp_destination(), sdp);
    }

    #[test]
    fn a_locked_stream_that_moves_port_is_followed_on_the_same_evidence() {
        let now = Instant::now();
        let mut member = member();
        let first = SocketAddr::from((SIGNALLING, 31_000));
        feed(&mut member, first, 7, 1, 10, now);
        assert_eq!(member.latch.rtp_destination(), first);
        // The NAT's binding changes: the same stream, from another port, at once.
        let moved = SocketAddr::from((SIGNALLING, 42_000));
        let at = now + Duration::from_millis(200);
        let admitted = feed(&mut member, moved, 7, 11, 4, at);
        assert_eq!(admitted.last(), Some(&Admit::Accept));
        assert_eq!(member.latch.rtp_destination(), moved);
    }

    #[test]
    fn another_stream_takes_over_only_after_the_locked_one_paused_and_on_evidence() {
        let now = Instant::now();
        let mut member = member();
        let sdp = SocketAddr::from(SDP);
        feed(&mut member, sdp, 7, 1, 10, now);
        let other = SocketAddr::from((SIGNALLING, 31_000));
        let paused = now + RELATCH_AFTER + Duration::from_millis(200);
        // A pause alone gives nothing away: one packet is still no run.
        assert_eq!(member.admit(other, 8, 500, paused), Admit::Learning);
        assert_eq!(member.latch.rtp_destination(), sdp);
        let admitted = feed(&mut member, other, 8, 501, 3, paused);
        assert_eq!(admitted.last(), Some(&Admit::Accept));
        assert_eq!(member.latch.rtp_destination(), other);
        // The SDP address wins it back with one packet.
        assert_eq!(member.admit(sdp, 7, 11, paused), Admit::Accept);
        assert_eq!(member.latch.rtp_destination(), sdp);
    }

    #[test]
    fn a_session_refresh_keeps_what_was_learned_and_a_new_address_starts_over() {
        let now = Instant::now();
        let mut member = member();
        let nat = SocketAddr::from((SIGNALLING, 31_000));
        feed(&mut member, nat, 7, 1, 4, now);
        member.latch.set_remote(
            SocketAddr::from(SDP),
            SocketAddr::from(([192, 0, 2, 10], 4001)),
        );
        assert_eq!(member.latch.rtp_destination(), nat);
        let new_sdp = SocketAddr::from(([192, 0, 2, 10], 6000));
        member
            .latch
            .set_remote(new_sdp, SocketAddr::from(([192, 0, 2, 10], 6001)));
        assert_eq!(member.latch.rtp_destination(), new_sdp);
        assert!(!member.latch.is_locked());
        assert_eq!(member.admit(nat, 7, 5, now), Admit::Learning);
    }

    #[test]
    fn rtcp_is_latched_only_from_the_members_ips() {
        let mut member = member();
        assert!(!member
            .latch
            .latch_rtcp(SocketAddr::from(([198, 51, 100, 1], 5001))));
        assert_eq!(
            member.latch.rtcp_destination(),
            SocketAddr::from(([192, 0, 2, 10], 4001))
        );
        let nat_rtcp = SocketAddr::from((SIGNALLING, 31_001));
        assert!(member.latch.latch_rtcp(nat_rtcp));
        assert_eq!(member.latch.rtcp_destination(), nat_rtcp);
    }

    #[test]
    fn an_ipv4_source_written_as_ipv6_is_the_same_ip() {
        let now = Instant::now();
        let mut member = member();
        let mapped_ip = IpAddr::from(std::net::Ipv4Addr::from(SIGNALLING).to_ipv6_mapped());
        let nat = SocketAddr::new(mapped_ip, 31_000);
        let admitted = feed(&mut member, nat, 7, 1, 4, now);
        assert_eq!(admitted.last(), Some(&Admit::Accept));
    }
}
