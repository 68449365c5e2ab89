//! One member's media state in the engine: sockets, addresses, jitter buffer,
//! RTP sender, noise gate, digit receiver and keypad settings, and this
//! tick's decoded frame. Everything is
//! allocated when the engine starts; a slot is reused for member after member.
//!
//! The per-packet and per-frame logic here takes time as input and does no IO;
//! `engine.rs` owns the clock and performs the socket calls.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::media::codec::Codec;
use crate::media::dtmf::DtmfReceiver;
use crate::media::jitter::{JitterBuffer, Pop, Push};
use crate::media::keypad::{ConfirmationPlayer, Keypad};
use crate::media::mixer::{GateLevels, NoiseGate, FRAME_SAMPLES_MAX};
use crate::media::rtp::{ReceptionStats, RtpPacket, RtpSender};
use crate::media::{AddMember, MemberFlags, MemberKey, MemberSockets};
use crate::net::udp::{disconnect, RawAddr};

/// Telephone-event end packets this soon after a member starts are not its
/// keypad's: the three end packets of the key that admitted it (a PIN's `#`)
/// arrive then, after the lobby already took the key.
const JOIN_GUARD: Duration = Duration::from_millis(200);

/// A new source address only takes over the stream after the latched one has
/// been silent this long, so a stray or spoofed packet cannot steal the media.
pub const RELATCH_AFTER: Duration = Duration::from_secs(1);

/// Lost frames are filled by repeating the last one, halved each time, this
/// many times; then silence.
const CONCEAL_REPEAT_FRAMES: u32 = 3;

/// What became of one datagram received on the RTP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Audio, handed to the jitter buffer (which may still drop it as late or duplicate).
    Audio(Push),
    /// An RFC 4733 event packet: proves the stream is alive; handed to the digit receiver.
    TelephoneEvent,
    /// Not RTP.
    Malformed,
    /// A payload type that was not negotiated.
    UnexpectedPayloadType(u8),
    /// Valid RTP from an address other than the latched one, while that one is alive.
    ForeignSource,
}

/// Where this tick's frame came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Played {
    Frame,
    /// A missing frame, concealed.
    Lost,
    /// Nothing buffered; concealed or silent.
    Empty,
}

pub struct Slot {
    pub key: MemberKey,
    pub active: bool,
    pub mix: u32,
    pub codec: Codec,
    pub telephone_event_pt: Option<u8>,
    pub flags: MemberFlags,
    pub rtp_socket: Option<UdpSocket>,
    pub rtcp_socket: Option<UdpSocket>,
    /// Read it here; change it only through `set_remote`, so `remote_rtp_raw` follows.
    pub remote_rtp: SocketAddr,
    /// `remote_rtp` as the kernel reads it, for the shared port's `sendmmsg`;
    /// computed when the address is set or latched, not per packet.
    pub remote_rtp_raw: RawAddr,
    pub remote_rtcp: SocketAddr,
    /// Some once RTP arrived: when the latched address last sent valid RTP.
    last_from_remote_at: Option<Instant>,
    /// `MemberSockets::Own::sdp_ip`: Some while the RTP socket may be connected.
    sdp_ip: Option<IpAddr>,
    /// The peer the RTP socket is connected to (see `keep_rtp_connection`).
    pub rtp_connected_to: Option<SocketAddr>,
    rtcp_latched: bool,
    pub jitter: JitterBuffer,
    pub reception: ReceptionStats,
    pub sender: RtpSender,
    pub gate: NoiseGate,
    /// The gate's levels before any key moved them.
    default_gate: GateLevels,
    /// This tick's decoded or concealed frame.
    pub pcm: Box<[i16]>,
    concealed_frames: u32,
    /// Last tick's frame, while the member is heard one frame late (`lagging`),
    /// so a key's tone found in it can still be kept out of the mix (DTMF.md, "Bleed").
    pub delayed: Box<[i16]>,
    /// The receiver suspected a key's tone while `delayed` was the current frame.
    pub delayed_is_tone: bool,
    /// Ticks since the last packet sent while the member is alone and hears
    /// nothing (see `engine::LONE_KEEPALIVE_TICKS`).
    pub quiet_ticks: u32,
    /// Heard one frame late (`delayed` goes into the mix) since a key's tone
    /// may have started; back to on time at its next frame of pause.
    pub lagging: bool,
    /// What went into the mix this tick (this or the delayed frame, at the talk gain).
    pub contribution: Box<[i16]>,
    /// The member's frame went into its mix this tick.
    pub contributed: bool,
    /// In-band and RFC 4733 digit receiver.
    pub dtmf: DtmfReceiver,
    /// Keys act on the member (profile interpret_digits).
    pub keypad_enabled: bool,
    pub keypad: Keypad,
    /// A confirmation tone for the member's own ears.
    pub confirmation: ConfirmationPlayer,
    /// Last talking state reported in an event.
    pub talking_reported: bool,
    /// When valid RTP last arrived, or the member was added or taken off hold.
    pub last_valid_rtp_at: Instant,
    /// When this member started: telephone-events in the first moments belong
    /// to a press made before it joined (the `#` that ended a room PIN).
    started_at: Instant,
    pub timeout_reported: bool,
    pub next_rtcp_at: Instant,
}

impl Slot {
    /// An idle slot with all buffers allocated.
    pub fn new(now: Instant, jitter_frames: usize, gate: NoiseGate) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Slot {
            key: MemberKey {
                slot: 0,
                generation: 0,
            },
            active: false,
            mix: 0,
            codec: Codec::Pcmu,
            telephone_event_pt: None,
            flags: MemberFlags::default(),
            rtp_socket: None,
            rtcp_socket: None,
            remote_rtp: unspecified,
            remote_rtp_raw: RawAddr::new(unspecified),
            remote_rtcp: unspecified,
            last_from_remote_at: None,
            sdp_ip: None,
            rtp_connected_to: None,
            rtcp_latched: false,
            jitter: JitterBuffer::new(jitter_frames, 160),
            reception: ReceptionStats::default(),
            sender: RtpSender::new(0, 0, 0),
            default_gate: gate.levels(),
            gate,
            pcm: vec![0; FRAME_SAMPLES_MAX].into_boxed_slice(),
            concealed_frames: 0,
            delayed: vec![0; FRAME_SAMPLES_MAX].into_boxed_slice(),
            delayed_is_tone: false,
            lagging: false,
            quiet_ticks: 0,
            contribution: vec![0; FRAME_SAMPLES_MAX].into_boxed_slice(),
            contributed: false,
            dtmf: DtmfReceiver::new(false),
            keypad_enabled: true,
            keypad: Keypad::default(),
            confirmation: ConfirmationPlayer::default(),
            talking_reported: false,
            last_valid_rtp_at: now,
            started_at: now,
            timeout_reported: false,
            next_rtcp_at: now,
        }
    }

    /// Sets the slot up for a new member, taking its sockets (if it has its own).
    pub fn start(
        &mut self,
        add: AddMember,
        sender: RtpSender,
        frame_samples: u32,
        now: Instant,
        first_rtcp_at: Instant,
    ) {
        self.key = add.key;
        self.active = true;
        self.started_at = now;
        self.mix = add.mix;
        self.codec = add.codec;
        self.telephone_event_pt = add.telephone_event_pt;
        self.flags = add.flags;
        (self.rtp_socket, self.rtcp_socket) = match add.sockets {
            MemberSockets::Own { rtp, rtcp, sdp_ip } => {
                self.sdp_ip = sdp_ip;
                (Some(rtp), Some(rtcp))
            }
            MemberSockets::Shared => {
                self.sdp_ip = None;
                (None, None)
            }
        };
        self.rtp_connected_to = None;
        self.set_remote(add.remote_rtp, add.remote_rtcp);
        self.jitter.reset(frame_samples, add.codec.silence_byte());
        self.reception = ReceptionStats::default();
        self.sender = sender;
        self.gate.close();
        self.gate.set_levels(self.default_gate);
        self.pcm.fill(0);
        self.concealed_frames = 0;
        self.delayed.fill(0);
        self.delayed_is_tone = false;
        self.lagging = false;
        self.quiet_ticks = 0;
        self.contribution.fill(0);
        self.contributed = false;
        self.dtmf.reset(add.telephone_event_pt.is_some());
        self.keypad_enabled = add.keypad;
        self.keypad = Keypad::default();
        self.confirmation.stop();
        self.talking_reported = false;
        self.last_valid_rtp_at = now;
        self.timeout_reported = false;
        self.next_rtcp_at = first_rtcp_at;
    }

    /// Frees the slot; dropping the sockets closes them. The call keeps its
    /// own sockets for its next time in a conference, so a connection is
    /// dissolved first.
    pub fn stop(&mut self) {
        self.disconnect_rtp();
        self.active = false;
        self.rtp_socket = None;
        self.rtcp_socket = None;
    }

    /// New addresses from a re-INVITE: latching starts over.
    pub fn set_remote(&mut self, remote_rtp: SocketAddr, remote_rtcp: SocketAddr) {
        self.disconnect_rtp();
        self.remote_rtp = remote_rtp;
        self.remote_rtp_raw = RawAddr::new(remote_rtp);
        self.remote_rtcp = remote_rtcp;
        self.last_from_remote_at = None;
        self.rtcp_latched = false;
    }

    /// New flags; coming off hold restarts the RTP timeout.
    pub fn set_flags(&mut self, flags: MemberFlags, now: Instant) {
        if self.flags.held && !flags.held {
            self.last_valid_rtp_at = now;
            self.timeout_reported = false;
        }
        self.flags = flags;
    }

    /// Takes one datagram from the RTP socket.
    pub fn receive_rtp(&mut self, datagram: &[u8], source: SocketAddr, now: Instant) -> Received {
        let Ok(packet) = RtpPacket::new_checked(datagram) else {
            return Received::Malformed;
        };
        let payload_type = packet.payload_type();
        let is_event = Some(payload_type) == self.telephone_event_pt;
        if payload_type != self.codec.payload_type() && !is_event {
            return Received::UnexpectedPayloadType(payload_type);
        }
        if source != self.remote_rtp {
            if self.latched_is_alive(now) {
                return Received::ForeignSource;
            }
            // Symmetric RTP (RFC 4961): answer where the media comes from.
            self.remote_rtp = source;
            self.remote_rtp_raw = RawAddr::new(source);
            if !self.rtcp_latched {
                self.remote_rtcp = SocketAddr::new(source.ip(), source.port().wrapping_add(1));
            }
        }
        self.last_from_remote_at = Some(now);
        self.last_valid_rtp_at = now;
        self.timeout_reported = false;
        self.reception.on_packet(packet.ssrc(), packet.sequence());
        let event_end = packet
            .payload()
            .get(1)
            .is_some_and(|flags| flags & 0x80 != 0);
        if is_event && event_end && now.saturating_duration_since(self.started_at) < JOIN_GUARD {
            // The end packets of a press made before this member existed; a
            // press that starts now still counts (it ends by timeout if need be).
            return Received::TelephoneEvent;
        }
        if is_event {
            // No audio: the jitter buffer follows the audio clock, so an event
            // takes no place in it (a pause while the key is held is no loss).
            // A payload too short to read is no press; the packet still kept the stream alive.
            let _ =
                self.dtmf
                    .on_telephone_event(packet.ssrc(), packet.timestamp(), packet.payload());
            return Received::TelephoneEvent;
        }
        let pushed = self
            .jitter
            .push(packet.timestamp(), packet.ssrc(), packet.payload());
        Received::Audio(pushed)
    }

    /// The latched address sent valid RTP within `RELATCH_AFTER`, so RTP
    /// from any other source is not this member's.
    fn latched_is_alive(&self, now: Instant) -> bool {
        self.last_from_remote_at
            .is_some_and(|at| now.saturating_duration_since(at) < RELATCH_AFTER)
    }

    /// Keeps the member's own RTP socket connected to the phone while its
    /// stream is latched and alive, so each send takes the connection's
    /// cached route instead of a route lookup; dissolves the connection once
    /// the stream has been silent for `RELATCH_AFTER`, because a connected
    /// socket takes datagrams from its peer only and a new source (a phone
    /// behind a NAT that moved) could never be latched. Two system calls per
    /// change, none per tick.
    ///
    /// The connection is kept only if the socket still receives at the
    /// address our SDP gave the phone: connecting a socket bound to every
    /// address narrows it to the one the route to the phone leaves from, and
    /// on a box with several addresses that may not be the one the phone
    /// sends to. Then this member is never connected.
    pub fn keep_rtp_connection(&mut self, now: Instant) {
        let Some(sdp_ip) = self.sdp_ip.filter(|_| self.rtp_socket.is_some()) else {
            return;
        };
        let wanted = self.latched_is_alive(now).then_some(self.remote_rtp);
        if wanted == self.rtp_connected_to {
            return;
        }
        self.disconnect_rtp();
        let Some(remote) = wanted else {
            return;
        };
        let Some(socket) = self.rtp_socket.as_ref() else {
            return;
        };
        if socket.connect(remote).is_err() {
            return;
        }
        match socket.local_addr() {
            // On a dual-stack socket an IPv4 connection's local address is
            // ::ffff:a.b.c.d, the IPv4 address our SDP named.
            Ok(local) if local.ip().to_canonical() == sdp_ip.to_canonical() => {
                self.rtp_connected_to = Some(remote)
            }
            _ => {
                let _ = disconnect(socket.as_raw_fd());
                self.sdp_ip = None;
            }
        }
    }

    /// The socket turned out not to be connected (a send said so): believe
    /// it, so `keep_rtp_connection` connects it again.
    pub fn forget_rtp_connection(&mut self) {
        self.rtp_connected_to = None;
    }

    fn disconnect_rtp(&mut self) {
        if self.rtp_connected_to.take().is_some() {
            if let Some(socket) = self.rtp_socket.as_ref() {
                // Dissolving a UDP connection does not fail on a live socket.
                let _ = disconnect(socket.as_raw_fd());
            }
        }
    }

    /// How long ago the member started.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started_at)
    }

    /// Whether valid RTP has arrived since the member started or its remote
    /// address was last set (until then its stream may be latched elsewhere).
    pub fn rtp_arrived(&self) -> bool {
        self.last_from_remote_at.is_some()
    }

    /// A valid RTCP packet arrived from `source`: send our reports there.
    pub fn latch_rtcp(&mut self, source: SocketAddr) {
        self.remote_rtcp = source;
        self.rtcp_latched = true;
    }

    /// Fills `pcm` with this tick's frame: decoded, concealed, or silence.
    pub fn play_frame(&mut self, frame_samples: usize) -> Played {
        let pcm = &mut self.pcm[..frame_samples];
        let played = match self.jitter.pop() {
            Pop::Frame(payload) => {
                let decoded = self.codec.decode(payload, pcm);
                pcm[decoded..].fill(0);
                self.concealed_frames = 0;
                return Played::Frame;
            }
            Pop::Lost => Played::Lost,
            Pop::Empty => Played::Empty,
        };
        if self.concealed_frames < CONCEAL_REPEAT_FRAMES {
            for sample in pcm.iter_mut() {
                *sample /= 2;
            }
        } else {
            pcm.fill(0);
        }
        self.concealed_frames = self.concealed_frames.saturating_add(1);
        played
    }

    /// True once per silence longer than `rtp_timeout` while not held.
    pub fn check_rtp_timeout(&mut self, now: Instant, rtp_timeout: Duration) -> bool {
        if self.flags.held || self.timeout_reported {
            return false;
        }
        if now.saturating_duration_since(self.last_valid_rtp_at) >= rtp_timeout {
            self.timeout_reported = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{write_rtp, RtpHeader};

    const PHONE: ([u8; 4], u16) = ([192, 0, 2, 10], 4000);

    fn member(now: Instant) -> Slot {
        let socket = || UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let add = AddMember {
            key: MemberKey {
                slot: 0,
                generation: 1,
            },
            mix: 0,
            sockets: MemberSockets::Own {
                rtp: socket(),
                rtcp: socket(),
                sdp_ip: None,
            },
            remote_rtp: SocketAddr::from(PHONE),
            remote_rtcp: SocketAddr::from(([192, 0, 2, 10], 4001)),
            codec: Codec::Pcmu,
            telephone_event_pt: Some(101),
            flags: MemberFlags::default(),
            keypad: true,
        };
        let mut slot = Slot::new(now, 1, NoiseGate::new(-50.0, 0));
        slot.start(add, RtpSender::new(1, 0, 0), 160, now, now);
        slot
    }

    fn rtp(payload_type: u8, sequence: u16, payload: &[u8]) -> Vec<u8> {
        rtp_at(payload_type, sequence, u32::from(sequence) * 160, payload)
    }

    fn rtp_at(payload_type: u8, sequence: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        let header = RtpHeader {
            payload_type,
            marker: false,
            sequence,
            timestamp,
            ssrc: 77,
        };
        let mut out = vec![0u8; 12 + payload.len()];
        write_rtp(&header, payload, &mut out).expect("fits");
        out
    }

    #[test]
    fn rtp_from_a_new_address_latches_when_nothing_came_before() {
        let now = Instant::now();
        let mut slot = member(now);
        let behind_nat = SocketAddr::from(([203, 0, 113, 5], 30_000));
        let pushed = slot.receive_rtp(&rtp(0, 1, &[0xFF; 160]), behind_nat, now);
        assert_eq!(pushed, Received::Audio(Push::Resynced));
        assert_eq!(slot.remote_rtp, behind_nat);
        assert_eq!(
            slot.remote_rtcp,
            SocketAddr::from(([203, 0, 113, 5], 30_001))
        );
    }

    #[test]
    fn a_second_source_cannot_steal_a_live_stream_but_takes_over_a_dead_one() {
        let now = Instant::now();
        let mut slot = member(now);
        slot.receive_rtp(&rtp(0, 1, &[0xFF; 160]), SocketAddr::from(PHONE), now);
        let intruder = SocketAddr::from(([198, 51, 100, 1], 5000));
        let soon = now + Duration::from_millis(100);
        assert_eq!(
            slot.receive_rtp(&rtp(0, 2, &[0xFF; 160]), intruder, soon),
            Received::ForeignSource
        );
        let later = now + RELATCH_AFTER + Duration::from_millis(1);
        assert!(matches!(
            slot.receive_rtp(&rtp(0, 3, &[0xFF; 160]), intruder, later),
            Received::Audio(_)
        ));
        assert_eq!(slot.remote_rtp, intruder);
    }

    #[test]
    fn unnegotiated_payload_types_and_garbage_are_refused() {
        let now = Instant::now();
        let mut slot = member(now);
        let from = SocketAddr::from(PHONE);
        assert_eq!(
            slot.receive_rtp(&rtp(8, 1, &[0xD5; 160]), from, now),
            Received::UnexpectedPayloadType(8)
        );
        assert_eq!(slot.receive_rtp(&[1, 2, 3], from, now), Received::Malformed);
        assert_eq!(
            slot.receive_rtp(&rtp(101, 1, &[1, 0, 0, 160]), from, now),
            Received::TelephoneEvent
        );
    }

    #[test]
    fn end_packets_of_a_press_made_before_the_member_joined_are_not_a_press() {
        let now = Instant::now();
        let mut slot = member(now);
        let from = SocketAddr::from(PHONE);
        // The three end packets of '#' (event 11) that admitted the caller.
        for sequence in 1..=3 {
            let end = rtp_at(101, sequence, 8000, &[11, 0x80 | 10, 0x03, 0x20]);
            slot.receive_rtp(&end, from, now + Duration::from_millis(10));
        }
        let later = now + Duration::from_secs(1);
        slot.dtmf.on_audio(&[0; 160]);
        assert_eq!(slot.dtmf.poll_press(), None);
        // A press after the guard counts.
        let start = rtp_at(101, 4, 16_000, &[5, 10, 0, 160]);
        let end = rtp_at(101, 5, 16_000, &[5, 0x80 | 10, 0x01, 0x40]);
        slot.receive_rtp(&start, from, later);
        slot.receive_rtp(&end, from, later);
        slot.dtmf.on_audio(&[0; 160]);
        assert_eq!(slot.dtmf.poll_press().map(|p| p.digit), Some('5'));
    }

    #[test]
    fn telephone_event_packets_take_no_place_in_the_audio() {
        // Audio at timestamps 160 and 320 with an event packet between them
        // (its own sequence number): two frames play back to back, no loss.
        let now = Instant::now();
        let mut slot = member(now);
        let from = SocketAddr::from(PHONE);
        slot.receive_rtp(&rtp_at(0, 1, 160, &[0x80; 160]), from, now);
        assert_eq!(
            slot.receive_rtp(&rtp_at(101, 2, 320, &[1, 0, 0, 160]), from, now),
            Received::TelephoneEvent
        );
        slot.receive_rtp(&rtp_at(0, 3, 320, &[0xFF; 160]), from, now);
        assert_eq!(slot.play_frame(160), Played::Frame);
        assert_eq!(slot.play_frame(160), Played::Frame);
        assert!(slot.pcm[..160].iter().all(|&sample| sample == 0));
        assert_eq!(slot.jitter.stats.lost, 0);
    }

    #[test]
    fn a_lost_frame_repeats_the_last_one_quieter_then_fades_to_silence() {
        let now = Instant::now();
        let mut slot = member(now);
        let from = SocketAddr::from(PHONE);
        slot.receive_rtp(&rtp(0, 1, &[0x80; 160]), from, now); // u-law 0x80 = 32124
        slot.receive_rtp(&rtp(0, 6, &[0x80; 160]), from, now);
        assert_eq!(slot.play_frame(160), Played::Frame);
        assert_eq!(slot.pcm[0], 32124);
        let mut levels = Vec::new();
        for _ in 0..4 {
            assert_eq!(slot.play_frame(160), Played::Lost);
            levels.push(slot.pcm[0]);
        }
        assert_eq!(levels, [16062, 8031, 4015, 0]);
    }

    #[test]
    fn rtp_timeout_fires_once_and_not_while_held() {
        let now = Instant::now();
        let mut slot = member(now);
        let timeout = Duration::from_millis(300);
        assert!(!slot.check_rtp_timeout(now + Duration::from_millis(299), timeout));
        assert!(slot.check_rtp_timeout(now + Duration::from_millis(300), timeout));
        assert!(!slot.check_rtp_timeout(now + Duration::from_millis(900), timeout));

        let mut held = member(now);
        held.set_flags(
            MemberFlags {
                held: true,
                ..MemberFlags::default()
            },
            now,
        );
        assert!(!held.check_rtp_timeout(now + Duration::from_secs(5), timeout));
        held.set_flags(MemberFlags::default(), now + Duration::from_secs(5));
        assert!(!held.check_rtp_timeout(now + Duration::from_millis(5200), timeout));
        assert!(held.check_rtp_timeout(now + Duration::from_millis(5300), timeout));
    }
}
