//! One member's media state: its addresses and latching, jitter buffer, RTP
//! sender and reception counts, noise gate, digit receiver, keypad settings
//! and confirmation tone, and this tick's frame on its way into the mix.
//! Everything is allocated when the core starts; a slot is reused for member
//! after member. Its state is private: the core reaches it only through the
//! methods below, each of which says what it does to the member.
//!
//! Owns: the per-member kernels of a tick (receive a datagram, play a frame,
//! listen for keys, hold back a key's tone, gate, talk gain). Never touches:
//! a socket, the clock (time comes in as `now`), another member, the event
//! queue or the counters (it returns what happened; the core reports it).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::media::codec::{Codec, CodecState};
use crate::media::demux::Filed;
use crate::media::dtmf::{DigitPress, DtmfReceiver};
use crate::media::jitter::{JitterBuffer, Pop, Push};
use crate::media::keypad::{ConfirmationPlayer, Keypad, MAX_STEPS};
use crate::media::latch::{Admit, Latch};
use crate::media::mixer::{
    apply_gain, frame_samples, GateLevels, Mix, NoiseGate, FRAME_SAMPLES_MAX,
};
use crate::media::quality::Quality;
use crate::media::resample::{Decimator2x, Interpolator2x, Kernel2x, NARROW_RATE_HZ};
use crate::media::rtp::{
    write_rtcp_report, BuildError, ReceptionStats, RtpPacket, RtpSender, SenderInfo,
};
use crate::media::srtp::MemberSrtp;
use crate::media::{AddMember, MemberFlags, MemberKey, MemberSockets};

/// Telephone-event end packets this soon after a member starts are not its
/// keypad's: the three end packets of the key that admitted it (a PIN's `#`)
/// arrive then, after the lobby already took the key.
const JOIN_GUARD: Duration = Duration::from_millis(200);

/// Lost frames are filled by repeating the last one, halved each time, this
/// many times; then silence.
const CONCEAL_REPEAT_FRAMES: u32 = 3;

/// A member alone in its conference with nothing to hear (no clip, no
/// confirmation tone) is sent one packet of silence every this many ticks
/// (1 s) instead of every tick: RFC 3551 silence suppression, with the marker
/// bit when full-rate audio resumes. One a second keeps NAT bindings and the
/// far end's RTP-inactivity timers alive; the other 49 would be silence
/// nobody needs, and sending is most of what an idle member costs.
pub const LONE_KEEPALIVE_TICKS: u32 = 50;

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
    /// Valid RTP from an address that is neither the member's SDP address
    /// nor at its signalling or SDP IP (`latch.rs`).
    ForeignSource,
    /// Valid RTP from the member's IP, not (yet) proven its stream by a run in sequence.
    Learning,
    /// Valid RTP from the member's IP, a second stream while its own is alive.
    Contested,
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

/// What a key press did to a member on a keypad conference, for the core to report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressed {
    /// The press changed the member's mute or deaf flags (keys 0 and *).
    pub flags_changed: Option<MemberFlags>,
    /// `#`: the member asks to leave.
    pub leave: bool,
}

/// Gate levels for keypad steps -4..=4 (keys 7, 8, 9), computed once at start.
pub type GateSteps = [GateLevels; 2 * MAX_STEPS as usize + 1];

pub struct Slot {
    key: MemberKey,
    active: bool,
    mix: u32,
    codec: Codec,
    /// The member's decoder and own-mix encoder (`codec/mod.rs`).
    codec_state: CodecState,
    /// `codec`'s audio rate, RTP units per frame, and whether it is G.711,
    /// kept at hand: the tick asks every member every frame.
    codec_rate_hz: u32,
    rtp_frame_ticks: u32,
    g711: bool,
    /// A cascade link (`AddMember::link`).
    link: bool,
    /// The negotiated payload type of `codec`, both ways.
    payload_type: u8,
    telephone_event_pt: Option<u8>,
    flags: MemberFlags,
    /// The member brought its own socket pair or local rings (the engine
    /// keeps them); without, it is on the shared port and filed in its
    /// demultiplexer.
    own_sockets: bool,
    /// Its addresses: where RTP is taken from and sent to (its SDP
    /// address, or a stream learned with evidence), and RTCP's.
    latch: Latch,
    jitter: JitterBuffer,
    reception: ReceptionStats,
    /// Ticks played since the member started, in its RTP clock's units:
    /// when a packet arrived, for its interarrival jitter.
    arrival_units: u32,
    /// One frame in its RTP clock's units.
    frame_units: u32,
    sender: RtpSender,
    gate: NoiseGate,
    /// The gate's levels before any key moved them.
    default_gate: GateLevels,
    /// This tick's decoded or concealed frame, at the mix's rate.
    pcm: Box<[i16]>,
    /// The frame at the codec's rate, when that is not the mix's (`resampled`).
    decoded: Box<[i16]>,
    /// The rate of the member's mix (`follow_mix_rate`).
    mix_rate_hz: u32,
    /// The codec's rate is not the mix's: frames go through `up` (or `down`)
    /// from `decoded` into `pcm`.
    resampled: bool,
    /// G.711 in an 8 kHz mix: the narrowband path.
    narrowband: bool,
    /// A narrowband member's frame into a 16 kHz mix.
    up: Interpolator2x,
    /// A narrowband member's own mix from 16 kHz (it talked, or has a gain,
    /// a tone or a clip of its own); continues the mix's listeners'
    /// decimator when it starts (`own_rendering_since`).
    down: Decimator2x,
    /// The member was sent a rendering of its own last tick.
    rendered_own: bool,
    /// A wideband member's frame at 8 kHz for the digit receiver.
    keys_down: Decimator2x,
    keys_frame: Box<[i16]>,
    concealed_frames: u32,
    /// Last tick's frame, while the member is heard one frame late (`lagging`),
    /// so a key's tone found in it can still be kept out of the mix (docs/dtmf.md, "Bleed").
    delayed: Box<[i16]>,
    /// The receiver suspected a key's tone while `delayed` was the current frame.
    delayed_is_tone: bool,
    /// Ticks since the last packet sent while the member is alone and hears
    /// nothing (see `LONE_KEEPALIVE_TICKS`).
    quiet_ticks: u32,
    /// Heard one frame late (`delayed` goes into the mix) since a key's tone
    /// may have started; back to on time at its next frame of pause.
    lagging: bool,
    /// What went into the mix this tick (this or the delayed frame, at the talk gain).
    contribution: Box<[i16]>,
    /// The member's frame went into its mix this tick.
    contributed: bool,
    /// In-band and RFC 4733 digit receiver.
    dtmf: DtmfReceiver,
    /// Keys act on the member (profile interpret_digits).
    keypad_enabled: bool,
    keypad: Keypad,
    /// A confirmation tone for the member's own ears.
    confirmation: ConfirmationPlayer,
    /// Last talking state reported in an event.
    talking_reported: bool,
    /// When the far end last showed it is alive: valid RTP, valid RTCP or a SIP
    /// session refresh; or when the member was added or taken off hold.
    last_heard_at: Instant,
    /// When this member started: telephone-events in the first moments belong
    /// to a press made before it joined (the `#` that ended a room PIN).
    started_at: Instant,
    timeout_reported: bool,
    next_rtcp_at: Instant,
    /// Some: the member speaks SRTP (`AddMember::srtp`).
    srtp: Option<Box<MemberSrtp>>,
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
            codec_state: CodecState::G711(Codec::Pcmu),
            codec_rate_hz: 8000,
            rtp_frame_ticks: 160,
            g711: true,
            link: false,
            payload_type: 0,
            telephone_event_pt: None,
            flags: MemberFlags::default(),
            own_sockets: false,
            latch: Latch::new(unspecified, unspecified, None),
            jitter: JitterBuffer::new(jitter_frames, 160),
            reception: ReceptionStats::default(),
            arrival_units: 0,
            frame_units: 160,
            sender: RtpSender::new(0, 0, 0),
            default_gate: gate.levels(),
            gate,
            pcm: vec![0; FRAME_SAMPLES_MAX].into_boxed_slice(),
            decoded: vec![0; FRAME_SAMPLES_MAX].into_boxed_slice(),
            mix_rate_hz: NARROW_RATE_HZ,
            resampled: false,
            narrowband: true,
            up: Interpolator2x::default(),
            down: Decimator2x::default(),
            rendered_own: false,
            keys_down: Decimator2x::default(),
            keys_frame: vec![0; frame_samples(NARROW_RATE_HZ)].into_boxed_slice(),
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
            last_heard_at: now,
            started_at: now,
            timeout_reported: false,
            next_rtcp_at: now,
            srtp: None,
        }
    }

    /// Sets the slot up for a new member (its sockets, if it brought any,
    /// stay with the caller) speaking through `codec_state`.
    pub fn start(
        &mut self,
        add: &AddMember,
        codec_state: CodecState,
        sender: RtpSender,
        now: Instant,
        first_rtcp_at: Instant,
    ) {
        self.key = add.key;
        self.active = true;
        self.started_at = now;
        self.mix = add.mix;
        self.flags = add.flags;
        self.link = add.link;
        self.own_sockets = !matches!(add.sockets, MemberSockets::Shared);
        self.latch = Latch::new(add.remote_rtp, add.remote_rtcp, add.signalling_ip);
        self.reception = ReceptionStats::default();
        self.arrival_units = 0;
        self.sender = sender;
        self.gate.close();
        // A link carries other bridges' talkers, gated there already.
        self.gate.set_levels(if add.link {
            GateLevels::ALWAYS_OPEN
        } else {
            self.default_gate
        });
        self.pcm.fill(0);
        self.delayed.fill(0);
        self.delayed_is_tone = false;
        self.lagging = false;
        self.quiet_ticks = 0;
        self.contribution.fill(0);
        self.contributed = false;
        self.keypad_enabled = add.keypad;
        self.keypad = Keypad::default();
        self.confirmation.stop();
        self.talking_reported = false;
        self.last_heard_at = now;
        self.timeout_reported = false;
        self.next_rtcp_at = first_rtcp_at;
        self.use_codec(
            codec_state,
            add.payload_type,
            add.telephone_event_pt,
            add.telephone_event_rate_hz,
        );
    }

    /// The member speaks through `codec_state` from now on (it joined, or a
    /// re-INVITE changed its codec): the jitter buffer, the resamplers and
    /// the digit receiver start over in the new codec's clocks. Returns the
    /// codec it spoke before.
    pub fn use_codec(
        &mut self,
        codec_state: CodecState,
        payload_type: u8,
        telephone_event_pt: Option<u8>,
        telephone_event_rate_hz: u32,
    ) -> Codec {
        let previous = self.codec;
        self.codec = codec_state.codec();
        self.codec_state = codec_state;
        self.codec_rate_hz = self.codec.sample_rate_hz();
        self.rtp_frame_ticks = self.codec.rtp_frame_ticks();
        self.g711 = self.codec.is_g711();
        self.frame_units = self.rtp_frame_ticks;
        self.follow_mix_rate(self.mix_rate_hz);
        self.payload_type = payload_type;
        self.telephone_event_pt = telephone_event_pt;
        if self.codec == Codec::Opus {
            self.jitter.reset_packets(self.codec.rtp_frame_ticks());
        } else {
            self.jitter
                .reset(self.codec.rtp_frame_ticks(), self.codec.silence_byte());
        }
        self.concealed_frames = 0;
        self.decoded.fill(0);
        self.up.reset();
        self.down.reset();
        self.rendered_own = false;
        self.keys_down.reset();
        // A cascade link's audio is other people's mix: no keys, so nothing
        // held back, and no gate (docs/scaling.md "Cascading").
        self.dtmf.reset_at(
            telephone_event_pt.is_some(),
            telephone_event_rate_hz,
            !self.link,
        );
        previous
    }

    /// The member's SRTP contexts from its `AddMember` (None: plain RTP).
    /// Call after `start`; the previous member's are dropped.
    pub fn use_srtp(&mut self, srtp: Option<Box<MemberSrtp>>) {
        self.srtp = srtp;
    }

    /// The member speaks SRTP.
    #[inline(always)]
    pub fn speaks_srtp(&self) -> bool {
        self.srtp.is_some()
    }

    /// The member's SRTP contexts, if it speaks SRTP.
    #[inline(always)]
    pub fn srtp_mut(&mut self) -> Option<&mut MemberSrtp> {
        self.srtp.as_deref_mut()
    }

    /// Frees the slot for the next member.
    pub fn stop(&mut self) {
        self.active = false;
        if matches!(self.codec_state, CodecState::Opus(_)) {
            // libopus's states freed here, in command handling.
            self.codec_state = CodecState::G711(Codec::Pcmu);
        }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The slot serves the member `key` names (not an earlier or later one).
    pub fn serves(&self, key: MemberKey) -> bool {
        self.active && self.key == key
    }

    pub fn key(&self) -> MemberKey {
        self.key
    }

    /// The index of the conference mix the member is in.
    pub fn mix_index(&self) -> usize {
        self.mix as usize
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// RTP timestamp units in one 20 ms frame of the member's codec.
    #[inline(always)]
    pub fn rtp_frame_ticks(&self) -> u32 {
        self.rtp_frame_ticks
    }

    /// G.711 in a mix at 8 kHz: the narrowband path (shared payloads and
    /// talkers' mixes encoded straight from the sum).
    #[inline(always)]
    pub fn narrowband(&self) -> bool {
        self.narrowband
    }

    /// The member's mix runs at `mix_rate_hz` from now on (it joined, or
    /// the mix changed rate): its resamplers start over.
    pub fn follow_mix_rate(&mut self, mix_rate_hz: u32) {
        self.mix_rate_hz = mix_rate_hz;
        self.resampled = self.codec_rate_hz != mix_rate_hz;
        self.narrowband = self.g711 && mix_rate_hz == NARROW_RATE_HZ;
        self.up.reset();
        self.down.reset();
        self.rendered_own = false;
    }

    pub fn flags(&self) -> MemberFlags {
        self.flags
    }

    /// The member brought its own socket pair (`MemberSockets::Own`).
    pub fn has_own_sockets(&self) -> bool {
        self.own_sockets
    }

    /// Where the member's RTP goes: its SDP address until a stream is
    /// learned elsewhere.
    pub fn remote_rtp(&self) -> SocketAddr {
        self.latch.rtp_destination()
    }

    /// Where the member's RTCP goes.
    pub fn remote_rtcp(&self) -> SocketAddr {
        self.latch.rtcp_destination()
    }

    /// The SSRC of the member's incoming stream, once RTP arrived.
    pub fn stream_ssrc(&self) -> Option<u32> {
        self.reception.ssrc
    }

    /// How the member's stream arrives (`media/quality.rs`).
    pub fn quality(&self) -> Quality {
        Quality {
            packets_received: u64::from(self.reception.packets_received),
            packets_lost: self.reception.cumulative_lost(),
            jitter_us: self
                .reception
                .interarrival
                .jitter_us(self.codec.rtp_clock_hz()),
        }
    }

    /// The member's talking state as last reported.
    pub fn is_talking(&self) -> bool {
        self.talking_reported
    }

    /// New addresses from a re-INVITE: learning starts over, unless the SDP
    /// address is the one it was (a session refresh).
    pub fn set_remote(&mut self, remote_rtp: SocketAddr, remote_rtcp: SocketAddr) {
        self.latch.set_remote(remote_rtp, remote_rtcp);
    }

    /// New flags; coming off hold restarts the RTP timeout.
    pub fn set_flags(&mut self, flags: MemberFlags, now: Instant) {
        if self.flags.held && !flags.held {
            self.last_heard_at = now;
            self.timeout_reported = false;
        }
        self.flags = flags;
    }

    /// Takes one datagram from the member's RTP stream.
    pub fn receive_rtp(&mut self, datagram: &[u8], source: SocketAddr, now: Instant) -> Received {
        let Ok(packet) = RtpPacket::new_checked(datagram) else {
            return Received::Malformed;
        };
        let payload_type = packet.payload_type();
        let is_event = Some(payload_type) == self.telephone_event_pt;
        if payload_type != self.payload_type && !is_event {
            return Received::UnexpectedPayloadType(payload_type);
        }
        let (ssrc, sequence) = (packet.ssrc(), packet.sequence());
        if !self.latch.takes(source, now) {
            let stream_ssrc = self.reception.ssrc;
            match self
                .latch
                .admit_other(source, ssrc, sequence, stream_ssrc, now)
            {
                Admit::Accept => {}
                Admit::Learning => return Received::Learning,
                Admit::Contested => return Received::Contested,
                Admit::Foreign => return Received::ForeignSource,
            }
        }
        self.last_heard_at = now;
        self.timeout_reported = false;
        self.reception.on_packet(ssrc, sequence);
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
            let _ = self
                .dtmf
                .on_telephone_event(ssrc, packet.timestamp(), packet.payload());
            return Received::TelephoneEvent;
        }
        let timestamp = packet.timestamp();
        let pushed = self.jitter.push(timestamp, ssrc, packet.payload());
        self.reception
            .interarrival
            .on_packet(self.arrival_units, timestamp);
        Received::Audio(pushed)
    }

    /// Where the engine may keep the member's own RTP socket connected: its
    /// SDP address while the stream is locked there and alive (see
    /// `Latch::connectable`); None otherwise, when another source may still
    /// have to be heard.
    pub fn live_rtp_source(&self, now: Instant) -> Option<SocketAddr> {
        self.latch.connectable(now)
    }

    /// How long ago the member started.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started_at)
    }

    /// A valid RTCP packet arrived from `source`: send our reports there, if
    /// it is at one of the member's IPs. Returns whether it was taken.
    pub fn latch_rtcp(&mut self, source: SocketAddr) -> bool {
        self.latch.latch_rtcp(source)
    }

    /// What the member is filed under may have changed since the last call
    /// (a stream was locked or moved, RTCP latched).
    pub fn take_moved(&mut self) -> bool {
        self.latch.take_moved()
    }

    /// What the member is filed under in the shared port's demultiplexer: its
    /// SDP address and the address its stream was learned at, its RTCP
    /// address, and the IPs a stream of its may be learned at; nothing if it
    /// is free or has its own sockets.
    pub fn filed_as(&self) -> Filed {
        if !self.active || self.own_sockets {
            return Filed::default();
        }
        let usable = |address: SocketAddr| {
            (!address.ip().is_unspecified() && address.port() != 0).then_some(address)
        };
        let sdp = usable(self.latch.sdp_rtp());
        let learned = usable(self.latch.rtp_destination()).filter(|&a| Some(a) != sdp);
        Filed {
            rtp: [sdp, learned],
            rtcp: usable(self.latch.rtcp_destination()),
            ips: self.latch.learnable_ips(),
            learning: !self.latch.is_locked(),
        }
    }

    /// Fills the member's frame for this tick from its jitter buffer
    /// (decoded, concealed, or silence) at the codec's rate, and brings it
    /// to the mix's rate when that differs.
    pub fn play_frame(&mut self, kernel: &Kernel2x) -> Played {
        self.arrival_units = self.arrival_units.wrapping_add(self.frame_units);
        let codec_frame = frame_samples(self.codec_rate_hz);
        let pcm = if self.resampled {
            &mut self.decoded[..codec_frame]
        } else {
            &mut self.pcm[..codec_frame]
        };
        let played = match self.jitter.pop() {
            Pop::Frame(payload) => {
                let decoded = if self.g711 {
                    // Stateless: no need to reach the codec state.
                    self.codec.decode(payload, pcm)
                } else {
                    self.codec_state.decode(payload, pcm)
                };
                pcm[decoded..].fill(0);
                self.concealed_frames = 0;
                Played::Frame
            }
            Pop::Lost => Played::Lost,
            Pop::Empty => Played::Empty,
        };
        if played != Played::Frame && self.codec == Codec::Opus {
            // Out of line: a lost frame from the in-band FEC of the next
            // packet when it is here (a playout delay of two frames or
            // more), else libopus's concealment, which fades by itself; an
            // underrun (the lost packet was the only one due) is concealed
            // as long as G.711's repeat would be, then silence.
            let next = match played {
                Played::Lost => self.jitter.peek_next(),
                _ => None,
            };
            let recovered =
                if played == Played::Lost || self.concealed_frames < CONCEAL_REPEAT_FRAMES {
                    self.codec_state.recover(next, pcm)
                } else {
                    0
                };
            pcm[recovered..].fill(0);
            self.concealed_frames = self.concealed_frames.saturating_add(1);
        } else if played != Played::Frame {
            if self.concealed_frames < CONCEAL_REPEAT_FRAMES {
                for sample in pcm.iter_mut() {
                    *sample /= 2;
                }
            } else {
                pcm.fill(0);
            }
            self.concealed_frames = self.concealed_frames.saturating_add(1);
        }
        if self.resampled {
            self.resample_to_mix(self.mix_rate_hz, kernel);
        }
        played
    }

    /// `decoded` (the codec's rate) into `pcm` (the mix's). A wideband
    /// member is never in an 8 kHz mix; were it, it is decimated.
    #[cold]
    fn resample_to_mix(&mut self, mix_rate_hz: u32, kernel: &Kernel2x) {
        let codec_frame = frame_samples(self.codec.sample_rate_hz());
        let mix_frame = frame_samples(mix_rate_hz);
        let (decoded, pcm) = (&self.decoded[..codec_frame], &mut self.pcm[..mix_frame]);
        if codec_frame < mix_frame {
            self.up.process(kernel, decoded, pcm);
        } else {
            self.keys_down.process(kernel, decoded, pcm);
        }
    }

    /// Runs this tick's frame through the digit receiver (at 8 kHz: a
    /// wideband member's decimated for it); true while it suspects a key's
    /// tone (the frame may hold the start of one).
    pub fn listen_for_keys(&mut self, kernel: &Kernel2x) -> bool {
        let frame = frame_samples(NARROW_RATE_HZ);
        let wideband = self.codec_rate_hz > NARROW_RATE_HZ;
        if wideband {
            self.decimate_for_keys(kernel);
        }
        // A narrowband member's own frame before it went up into a 16 kHz
        // mix, or a wideband member's decimated.
        let pcm: &[i16] = if !self.resampled && !wideband {
            &self.pcm[..frame]
        } else if wideband {
            &self.keys_frame
        } else {
            &self.decoded[..frame]
        };
        self.dtmf.on_audio(pcm);
        self.dtmf.tone_suspected()
    }

    #[cold]
    #[inline(never)]
    fn decimate_for_keys(&mut self, kernel: &Kernel2x) {
        let wide = frame_samples(self.codec.sample_rate_hz());
        let frame: &[i16] = if self.resampled {
            &self.decoded[..wide]
        } else {
            &self.pcm[..wide]
        };
        self.keys_down.process(kernel, frame, &mut self.keys_frame);
    }

    /// The next key press the receiver counted, once it ended.
    pub fn poll_press(&mut self) -> Option<DigitPress> {
        self.dtmf.poll_press()
    }

    /// Carries out a press on a keypad conference (the README's keypad table):
    /// gains, gate and flags change, and a confirmation tone starts for this
    /// member alone. None on a `passthru_digits` conference, where keys do nothing.
    pub fn press(&mut self, digit: char, gate_steps: &GateSteps, now: Instant) -> Option<Pressed> {
        if !self.keypad_enabled {
            return None;
        }
        let outcome = self.keypad.press(digit, self.flags);
        if outcome.gate_changed {
            let step = (self.keypad.gate_step + MAX_STEPS) as usize;
            self.gate.set_levels(gate_steps[step]);
        }
        if let Some(confirmation) = outcome.confirmation {
            // Added to what the member hears at its codec's rate.
            self.confirmation
                .start(confirmation, self.codec.sample_rate_hz());
        }
        let flags_changed = outcome.flags.filter(|&flags| flags != self.flags);
        if let Some(flags) = flags_changed {
            self.set_flags(flags, now);
        }
        Some(Pressed {
            flags_changed,
            leave: outcome.leave,
        })
    }

    /// Decides what of the member goes into `mix` this tick and adds it:
    /// nothing while muted or held; a key's tone held back (docs/dtmf.md,
    /// "Bleed"); the gate's verdict; the talk gain. `suspected_now` is
    /// `listen_for_keys`' answer for this frame. Returns whether the member
    /// talks (the gate is open), which a held-back tone does not change.
    pub fn contribute(&mut self, mix: &mut Mix, suspected_now: bool) -> bool {
        let frame = mix.frame_samples();
        let may_talk = !self.flags.muted && !self.flags.held;
        // Once the receiver suspects a key's tone, the member is heard one
        // frame late, so the frame holding the tone's start is still kept from
        // the others; until then, and again from its next frame of pause
        // (dropped), it is heard on time.
        let held_back = if !may_talk {
            self.lagging = false;
            false
        } else if self.lagging {
            // Last tick's frame goes in unless a key's tone was suspected in it or is now.
            let held_back = self.delayed_is_tone || suspected_now;
            self.contribution[..frame].copy_from_slice(&self.delayed[..frame]);
            self.delayed[..frame].copy_from_slice(&self.pcm[..frame]);
            self.delayed_is_tone = suspected_now;
            if !held_back && self.gate.is_quiet(&self.contribution[..frame]) {
                // A frame of pause: drop it and catch up.
                self.lagging = false;
                self.contribution[..frame].copy_from_slice(&self.pcm[..frame]);
            }
            held_back
        } else if suspected_now {
            // A key may be starting: keep this frame back and fall a frame behind.
            self.lagging = true;
            self.delayed[..frame].copy_from_slice(&self.pcm[..frame]);
            self.delayed_is_tone = true;
            true
        } else {
            self.contribution[..frame].copy_from_slice(&self.pcm[..frame]);
            false
        };
        let talking = if !may_talk {
            self.gate.close();
            false
        } else if held_back {
            // A key, not speech: keep it out, and leave the gate as it was.
            self.gate.is_open()
        } else {
            self.gate.update(&self.contribution[..frame])
        };
        self.contributed = talking && !held_back;
        if self.contributed {
            if self.keypad.talk_step != 0 {
                apply_gain(&mut self.contribution[..frame], self.keypad.talk_gain());
            }
            mix.add_talker(&self.contribution[..frame]);
        }
        talking
    }

    /// Notes the talking state; true when it differs from the one last reported.
    pub fn report_talking(&mut self, talking: bool) -> bool {
        let changed = talking != self.talking_reported;
        self.talking_reported = talking;
        changed
    }

    /// The far end showed it is alive by other means than RTP (RTCP, a session
    /// refresh): a phone that sends no RTP while silent is not timed out.
    pub fn heard_from(&mut self, now: Instant) {
        self.last_heard_at = now;
    }

    /// True once per silence longer than `rtp_timeout` while not held: no RTP and
    /// no other sign of life (`heard_from`) for that long.
    pub fn check_rtp_timeout(&mut self, now: Instant, rtp_timeout: Duration) -> bool {
        if self.flags.held || self.timeout_reported {
            return false;
        }
        // RTP that came this very tick is no silence (unless the timeout is
        // zero), and needs no clock arithmetic to tell.
        if self.last_heard_at == now && !rtp_timeout.is_zero() {
            return false;
        }
        if now.saturating_duration_since(self.last_heard_at) >= rtp_timeout {
            self.timeout_reported = true;
            return true;
        }
        false
    }

    /// The timeout could not be reported (the event queue was full): raise it again next tick.
    pub fn rearm_rtp_timeout(&mut self) {
        self.timeout_reported = false;
    }

    /// What went into the mix from this member this tick, if anything did
    /// (a talker hears the mix without itself).
    pub fn contribution(&self, frame_samples: usize) -> Option<&[i16]> {
        self.contributed
            .then(|| &self.contribution[..frame_samples])
    }

    /// A confirmation tone is playing to the member.
    pub fn hears_confirmation(&self) -> bool {
        self.confirmation.is_playing()
    }

    /// Adds the confirmation tone's frame to what the member hears.
    pub fn mix_confirmation_into(&mut self, heard: &mut [i16]) {
        self.confirmation.mix_into(heard);
    }

    /// The member is sent a rendering of its own this tick, `heard` at the
    /// mix's rate: brought to the codec's rate into `out` (a narrowband
    /// member in a 16 kHz mix decimated, continuing the listeners'
    /// decimator if it heard the shared stream last tick). Returns the
    /// samples at the codec's rate.
    pub fn own_rendering_at_codec_rate(
        &mut self,
        mix: &Mix,
        heard: &[i16],
        out: &mut [i16],
        kernel: &Kernel2x,
    ) -> usize {
        let codec_frame = frame_samples(self.codec.sample_rate_hz());
        if !self.rendered_own {
            self.down.clone_from(mix.listeners_decimator());
            self.codec_state
                .continue_from_shared(mix.listeners_encoders());
            self.rendered_own = true;
        }
        if codec_frame == heard.len() {
            out[..codec_frame].copy_from_slice(heard);
        } else {
            self.down.process(kernel, heard, &mut out[..codec_frame]);
        }
        codec_frame
    }

    /// The member was sent the listeners' shared payload this tick.
    pub fn heard_shared(&mut self) {
        self.rendered_own = false;
    }

    /// Encodes the member's own rendering (at its codec's rate).
    pub fn encode_own(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        self.codec_state.encode_own(pcm, out)
    }

    /// The member's receive gain (keys 4, 5, 6), when it is not 0 dB.
    pub fn receive_gain(&self) -> Option<f32> {
        (self.keypad.receive_step != 0).then(|| self.keypad.receive_gain())
    }

    /// A tick in which the member is alone and hears nothing: true on the
    /// ticks its keepalive is due (every `LONE_KEEPALIVE_TICKS`).
    pub fn lone_keepalive_due(&mut self) -> bool {
        let due = self.quiet_ticks.is_multiple_of(LONE_KEEPALIVE_TICKS);
        self.quiet_ticks = self.quiet_ticks.wrapping_add(1);
        due
    }

    /// A tick in which the member has something to hear: the next lone tick
    /// sends at once.
    pub fn hears_something(&mut self) {
        self.quiet_ticks = 0;
    }

    /// A tick without a packet to the member: its RTP clock moves on, and
    /// the next packet carries the marker bit.
    pub fn skip_frame(&mut self, frame_samples: u32) {
        self.sender.skip(frame_samples);
    }

    /// Writes the member's next RTP packet carrying `payload` into `out`.
    pub fn write_rtp(
        &mut self,
        payload: &[u8],
        frame_samples: u32,
        out: &mut [u8],
    ) -> Result<usize, BuildError> {
        self.sender
            .write_next(self.payload_type, payload, frame_samples, out)
    }

    /// An RTCP report is due (`schedule_rtcp` set when).
    pub fn rtcp_due(&self, now: Instant) -> bool {
        now >= self.next_rtcp_at
    }

    pub fn schedule_rtcp(&mut self, at: Instant) {
        self.next_rtcp_at = at;
    }

    /// Writes an SR (or RR if we never sent), SDES CNAME, and BYE when `bye`.
    pub fn write_rtcp(
        &mut self,
        ntp_timestamp: u64,
        bye: bool,
        out: &mut [u8],
    ) -> Result<usize, BuildError> {
        let sender = &self.sender;
        let info = SenderInfo {
            ntp_timestamp,
            rtp_timestamp: sender.timestamp(),
            packets_sent: sender.packets_sent,
            octets_sent: sender.octets_sent,
        };
        let sender_info = (sender.packets_sent > 0).then_some(&info);
        let block = self.reception.report_block();
        write_rtcp_report(sender.ssrc, sender_info, block.as_ref(), bye, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{write_rtp, RtpHeader};

    const PHONE: ([u8; 4], u16) = ([192, 0, 2, 10], 4000);

    fn member(now: Instant) -> Slot {
        let add = AddMember {
            key: MemberKey {
                slot: 0,
                generation: 1,
            },
            mix: 0,
            sockets: MemberSockets::Shared,
            remote_rtp: SocketAddr::from(PHONE),
            remote_rtcp: SocketAddr::from(([192, 0, 2, 10], 4001)),
            signalling_ip: Some(SocketAddr::from(PHONE).ip()),
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event_pt: Some(101),
            telephone_event_rate_hz: 8000,
            flags: MemberFlags::default(),
            keypad: true,
            opus: None,
            srtp: None,
            link: false,
        };
        let mut slot = Slot::new(now, 1, NoiseGate::new(-50.0, 0));
        let state = CodecState::new(add.codec).expect("G.711");
        slot.start(&add, state, RtpSender::new(1, 0, 0), now, now);
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
    fn a_rewritten_port_is_heard_after_a_run_and_a_stranger_never() {
        let now = Instant::now();
        let mut slot = member(now);
        let stranger = SocketAddr::from(([198, 51, 100, 1], 5000));
        for sequence in 1..=10 {
            assert_eq!(
                slot.receive_rtp(&rtp(0, sequence, &[0xFF; 160]), stranger, now),
                Received::ForeignSource
            );
        }
        let behind_nat = SocketAddr::from(([192, 0, 2, 10], 30_000));
        let received: Vec<Received> = (1..=4)
            .map(|sequence| slot.receive_rtp(&rtp(0, sequence, &[0xFF; 160]), behind_nat, now))
            .collect();
        assert_eq!(received[..3], [Received::Learning; 3]);
        assert!(matches!(received[3], Received::Audio(_)));
        assert_eq!(slot.remote_rtp(), behind_nat);
        assert_eq!(
            slot.remote_rtcp(),
            SocketAddr::from(([192, 0, 2, 10], 30_001))
        );
        assert!(slot.take_moved(), "filed anew");
        // Only accepted RTP keeps the stream alive for the RTP timeout.
        assert!(!slot.check_rtp_timeout(now, Duration::from_millis(300)));
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
        assert_eq!(slot.play_frame(&Kernel2x::new()), Played::Frame);
        assert_eq!(slot.play_frame(&Kernel2x::new()), Played::Frame);
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
        assert_eq!(slot.play_frame(&Kernel2x::new()), Played::Frame);
        assert_eq!(slot.pcm[0], 32124);
        let mut levels = Vec::new();
        for _ in 0..4 {
            assert_eq!(slot.play_frame(&Kernel2x::new()), Played::Lost);
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
