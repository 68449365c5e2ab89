//! The media plane without its thread: every member slot, conference mix and
//! clip player, the shared port's demultiplexer, the event queue's writing
//! end and the counters, and everything a 20 ms tick does to them. Datagrams
//! come in as bytes with their source and `now`; the tick runs at an explicit
//! `now` and hands each datagram it sends to a caller's sink. The core never
//! touches a socket, never reads the clock, and allocates, locks, logs or
//! blocks nothing after `new`. `engine.rs` is the IO shell that drives it on
//! the real clock and real sockets; a test drives it in memory.
//!
//! Owns: `Slot`s (`slot.rs`), `Mix`es, `Clips`, the `Demux` of the shared
//! port, the events, the RTP and RTCP it writes. Never touches: sockets
//! (a member's own sockets stay with the shell; `Applied::Started` hands them
//! back), the clock, the command queue, the thread.
//!
//! One tick, in order: the commands (`command`), the datagrams that arrived
//! since the last tick (`receive`), then `tick`: per member play a frame from
//! the jitter buffer, decode, listen for keys and carry out presses, hold back
//! a key's tone, gate, talk gain, add to the mix; clips into the mixes; per
//! member render what it hears (one shared payload per codec for listeners
//! who did not talk), receive gain, encode, send RTP and any due RTCP report;
//! `TransmitSink::flush`; report clip ends. RTP timeouts and talking changes
//! are reported as the members are played.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::sync::Arc;
//! use std::time::Instant;
//! use sipconf::media::core::{Datagram, MediaCore, Port, Stream, Transmit, TICK};
//! use sipconf::media::{
//!     AddMember, Codec, Command, Event, MediaConfig, MediaStats, MemberFlags, MemberKey,
//!     MemberSockets,
//! };
//!
//! let mut core = MediaCore::new(MediaConfig::default(), Arc::new(MediaStats::default()));
//! let phone = SocketAddr::from(([192, 0, 2, 10], 4000));
//! let key = MemberKey { slot: 0, generation: 1 };
//! let add = AddMember {
//!     key,
//!     mix: 0,
//!     // No socket needed: on the shared port a member is found by source.
//!     sockets: MemberSockets::Shared,
//!     remote_rtp: phone,
//!     remote_rtcp: SocketAddr::from(([192, 0, 2, 10], 4001)),
//!     signalling_ip: Some(phone.ip()),
//!     codec: Codec::Pcmu,
//!     payload_type: 0,
//!     telephone_event_pt: Some(101),
//!     telephone_event_rate_hz: 8000,
//!     flags: MemberFlags::default(),
//!     keypad: true,
//!     opus: None,
//!     srtp: None,
//!     link: false,
//! };
//! let mut sent = Vec::new();
//! let mut sink = |t: Transmit<'_>| sent.push((t.destination, t.contents.to_vec()));
//! let start = Instant::now();
//! core.command(Command::AddMember(Box::new(add)), start, 0, &mut sink);
//! for tick in 0..100u8 {
//!     let now = start + TICK * u32::from(tick);
//!     // What the phone sent since the last tick: one RTP packet of
//!     // u-law silence (payload type 0, sequence and timestamp moving on).
//!     let mut rtp = vec![0x80, 0, 0, tick, 0, 0, 0, 0, 0, 0, 0, 7];
//!     rtp[4..8].copy_from_slice(&(160 * u32::from(tick)).to_be_bytes());
//!     rtp.extend([0xFF; 160]);
//!     let datagram = Datagram { port: Port::Shared, stream: Stream::Rtp, source: phone, contents: &rtp };
//!     core.receive(datagram, now);
//!     core.tick(now, 0, &mut sink);
//! }
//! // Alone in its conference, the member is sent a keepalive once a second.
//! assert_eq!(sent.len(), 2);
//! assert!(sent.iter().all(|(to, _)| *to == phone));
//! // Never silent for `rtp_timeout`: no events.
//! assert_eq!(core.poll_event(), None::<Event>);
//! ```

mod quality;
mod receive;
mod tick;

pub use receive::{NAT_LATCH_AFTER, RTCP_SSRC_SCANS_PER_TICK};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::media::clip::{ClipEnd, ClipTarget, Clips, ResolvedTarget};
use crate::media::codec::{Codec, CodecState, OpusStates};
use crate::media::demux::Demux;
use crate::media::keypad::{MAX_STEPS, STEP_DB};
use crate::media::mixer::{GateLevels, Mix, NoiseGate, ENCODED_FRAME_BYTES_MAX, FRAME_SAMPLES_MAX};
use crate::media::resample::Kernel2x;
use crate::media::rtp::{RtpSender, RTCP_COMPOUND_MAX_BYTES, RTP_HEADER_BYTES};
use crate::media::slot::{GateSteps, Slot};
use crate::media::srtp::{MAX_TAG_BYTES, SRTCP_OVERHEAD_BYTES};
use crate::media::{
    AddMember, Command, Event, MediaConfig, MediaStats, MemberFlags, MemberKey, MemberSockets,
};

/// One tick of audio: the core's frames are 20 ms, whoever keeps the clock.
pub const TICK: Duration = Duration::from_millis(20);
/// A conference mixes at this rate until a wideband member joins (then at
/// `WIDEBAND_RATE_HZ`); clips are made at this rate and brought up to a
/// wideband mix's as they play.
pub const CONFERENCE_RATE_HZ: u32 = 8000;
/// The rate of a conference with a wideband member (G.722, Opus).
pub const WIDEBAND_RATE_HZ: u32 = crate::media::resample::WIDE_RATE_HZ;
/// The longest datagram the engine reads (an Ethernet MTU's worth).
pub const DATAGRAM_MAX_BYTES: usize = 1500;

/// Where a datagram arrived, or from where it leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// The member's own socket pair (`MemberSockets::Own`).
    Member(MemberKey),
    /// The shared pair (`MemberSockets::Shared`, `media.shared_port`): an
    /// arriving datagram's member is found by its source address.
    Shared,
}

/// Which of a member's two streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Rtp,
    Rtcp,
}

/// A datagram that arrived: on which port and stream, from where, and its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    pub port: Port,
    pub stream: Stream,
    pub source: SocketAddr,
    pub contents: &'a [u8],
}

/// A datagram the core wants sent, valid for the duration of the sink's call.
#[derive(Clone, Copy, Debug)]
pub struct Transmit<'a> {
    /// The member it is for.
    pub member: MemberKey,
    /// Its own pair, or the shared pair.
    pub port: Port,
    pub stream: Stream,
    pub destination: SocketAddr,
    pub contents: &'a [u8],
}

/// Where the core's datagrams go: the engine's sockets, or a test's phones.
/// Any `FnMut(Transmit<'_>)` is one.
pub trait TransmitSink {
    fn transmit(&mut self, transmit: Transmit<'_>);

    /// Every RTP packet of this tick was handed over (clip ends are reported
    /// after this): a sink that batches sends the batch now.
    fn flush(&mut self) {}
}

impl<F: FnMut(Transmit<'_>)> TransmitSink for F {
    fn transmit(&mut self, transmit: Transmit<'_>) {
        self(transmit)
    }
}

/// What a command did that the IO shell has to follow up on.
#[derive(Debug)]
pub enum Applied {
    /// Nothing for the shell.
    Nothing,
    /// A member started (after whoever held its slot was stopped): a pair
    /// in `sockets` is the shell's to serve from now on.
    Started {
        key: MemberKey,
        sockets: MemberSockets,
    },
    /// An `AddMember` named a slot or mix beyond `max_members` and was
    /// dropped (counted); its sockets are the shell's to close.
    Refused { sockets: MemberSockets },
    /// The member's remote addresses changed: a connection of its own RTP
    /// socket to the old address must be dissolved.
    RemoteChanged { key: MemberKey },
    /// The member left (its RTCP BYE was sent): its own pair is done with.
    Stopped { key: MemberKey },
    /// Every member was removed, each with a BYE: the thread stops.
    ShutDown,
}

/// A member as the core sees it, for tests and diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub mix: u32,
    pub flags: MemberFlags,
    /// Its SDP address, or where RTP latched it.
    pub remote_rtp: SocketAddr,
    pub remote_rtcp: SocketAddr,
    pub talking: bool,
}

/// Counts of the current tick, published to `MediaStats` once at its end,
/// so a datagram costs no atomic operation.
#[derive(Default)]
struct TickCounts {
    packets_in: u64,
    malformed: u64,
    foreign: u64,
    learning: u64,
    contested: u64,
    ambiguous: u64,
    packets_lost: u64,
    srtp_auth_failed: u64,
    srtp_replayed: u64,
}

/// A member's own rendering of its mix: at the mix's rate, and at its
/// codec's when that differs.
struct RenderBuffers {
    mix_rate: Box<[i16]>,
    codec_rate: Box<[i16]>,
}

pub struct MediaCore {
    config: MediaConfig,
    /// `config.rtp_timeout`, with "never" as a silence no clock reaches, so
    /// the tick's check is the same compare either way.
    rtp_timeout: Duration,
    slots: Vec<Slot>,
    /// Indices of the active slots, ascending: the tick walks these instead
    /// of every slot (each a cold cache line to check), so a box sized for
    /// 2000 members costs nothing extra while 80 are in call. Capacity
    /// `max_members`, reserved at start.
    active_slots: Vec<u32>,
    mixes: Vec<Mix>,
    /// Members per mix.
    mix_members: Vec<u32>,
    /// Indices of the mixes with members, ascending: the tick walks these,
    /// as it walks `active_slots`. Capacity `max_members`, reserved at start.
    active_mixes: Vec<u32>,
    /// Finds a shared-port datagram's member by its source.
    demux: Demux,
    /// Shared-port RTCP reports matched by SSRC (a scan of every slot) this
    /// tick; see `RTCP_SSRC_SCANS_PER_TICK`.
    rtcp_ssrc_scans: usize,
    events: rtrb::Producer<Event>,
    /// The reading end, when the core was made without an outside reader (`new`).
    events_out: Option<rtrb::Consumer<Event>>,
    /// Events were dropped; `Event::QueueFull` is owed.
    events_overflowed: bool,
    /// An event was queued (or tried to be) since `take_events_queued`.
    events_queued: bool,
    stats: Arc<MediaStats>,
    counts: TickCounts,
    /// One member's RTP packet on its way out: written, protected when the
    /// member speaks SRTP, sent.
    send_buffer: Box<[u8]>,
    /// An SRTP or SRTCP datagram copied here to be unprotected in place.
    unprotect_buffer: Box<[u8]>,
    payload_buffer: Box<[u8]>,
    /// A member's own rendering of its mix, when it cannot share the listeners' payload.
    render: RenderBuffers,
    /// The 8 <-> 16 kHz filter's taps, lent to every member's and mix's resampler.
    kernel: Kernel2x,
    rtcp_buffer: [u8; RTCP_COMPOUND_MAX_BYTES + SRTCP_OVERHEAD_BYTES],
    rng: SmallRng,
    /// Gate levels for keypad steps -4..=4 (keys 7, 8, 9), computed at start.
    gate_steps: GateSteps,
    /// Files, speech and tones playing into mixes and to single members.
    clips: Clips,
    /// Which share of the members `publish_quality` publishes this tick.
    quality_phase: usize,
}

impl MediaCore {
    /// A core whose events are read with `poll_event` (tests, simulations),
    /// from a queue of `config.event_queue_len`. Allocates every slot, mix
    /// and buffer for `config.max_members` now; nothing later.
    pub fn new(config: MediaConfig, stats: Arc<MediaStats>) -> MediaCore {
        let (events, events_out) = rtrb::RingBuffer::new(config.event_queue_len.max(1));
        let mut core = MediaCore::with_event_queue(config, stats, events);
        core.events_out = Some(events_out);
        core
    }

    /// A core whose events go into `events`, read elsewhere (the engine's
    /// queue to the signalling plane); `poll_event` then finds none.
    pub fn with_event_queue(
        config: MediaConfig,
        stats: Arc<MediaStats>,
        events: rtrb::Producer<Event>,
    ) -> MediaCore {
        let now = Instant::now();
        stats.member_quality.size_for(config.max_members);
        let gate = NoiseGate::new(config.gate_threshold_dbfs, config.gate_hangover_frames);
        let slots = (0..config.max_members)
            .map(|_| Slot::new(now, config.jitter_frames, gate.clone()))
            .collect();
        let mixes = (0..config.max_members)
            .map(|_| Mix::new(CONFERENCE_RATE_HZ).expect("8 kHz is a supported mix rate"))
            .collect();
        MediaCore {
            slots,
            active_slots: Vec::with_capacity(config.max_members),
            mixes,
            mix_members: vec![0; config.max_members],
            active_mixes: Vec::with_capacity(config.max_members),
            demux: Demux::new(config.max_members),
            rtcp_ssrc_scans: 0,
            events,
            events_out: None,
            events_overflowed: false,
            events_queued: false,
            stats,
            counts: TickCounts::default(),
            send_buffer: vec![0; RTP_HEADER_BYTES + ENCODED_FRAME_BYTES_MAX + MAX_TAG_BYTES]
                .into_boxed_slice(),
            unprotect_buffer: vec![0; DATAGRAM_MAX_BYTES].into_boxed_slice(),
            payload_buffer: vec![0; ENCODED_FRAME_BYTES_MAX].into_boxed_slice(),
            render: RenderBuffers {
                mix_rate: vec![0; FRAME_SAMPLES_MAX].into_boxed_slice(),
                codec_rate: vec![0; FRAME_SAMPLES_MAX].into_boxed_slice(),
            },
            kernel: Kernel2x::new(),
            rtcp_buffer: [0; RTCP_COMPOUND_MAX_BYTES + SRTCP_OVERHEAD_BYTES],
            rng: SmallRng::from_rng(&mut rand::rng()),
            clips: Clips::new(config.max_members),
            gate_steps: std::array::from_fn(|index| {
                let step = index as f32 - f32::from(MAX_STEPS);
                GateLevels::at(config.gate_threshold_dbfs + STEP_DB * step)
            }),
            rtp_timeout: config.rtp_timeout.unwrap_or(Duration::MAX),
            quality_phase: 0,
            config,
        }
    }

    /// Draws SSRCs, initial sequence numbers and timestamps, and first RTCP
    /// times from `seed` from now on, so a simulation repeats exactly.
    pub fn seed(&mut self, seed: u64) {
        self.rng = SmallRng::seed_from_u64(seed);
    }

    /// `max_members`.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Members in call.
    pub fn active_members(&self) -> usize {
        self.active_slots.len()
    }

    /// The member `key` names, if it is still there.
    pub fn member(&self, key: MemberKey) -> Option<MemberState> {
        let slot = &self.slots[self.slot_of(key)?];
        Some(MemberState {
            mix: slot.mix_index() as u32,
            flags: slot.flags(),
            remote_rtp: slot.remote_rtp(),
            remote_rtcp: slot.remote_rtcp(),
            talking: slot.is_talking(),
        })
    }

    /// The rate mix `mix` runs at (8000, or 16000 with a wideband member),
    /// while it has members.
    pub fn mix_rate_hz(&self, mix: u32) -> Option<u32> {
        let index = usize::try_from(mix).ok()?;
        (self.mix_members.get(index).copied().unwrap_or(0) > 0).then(|| self.mixes[index].rate_hz())
    }

    /// Where the member's own RTP socket may be connected (see
    /// `Slot::live_rtp_source`): the engine keeps it connected there, and
    /// unconnected while None.
    pub fn live_rtp_source(&self, key: MemberKey, now: Instant) -> Option<SocketAddr> {
        let index = self.slot_of(key)?;
        self.slots[index].live_rtp_source(now)
    }

    /// Carries out one command at `now`; a member removed sends its RTCP BYE
    /// (at wall time `ntp_timestamp`) through `out`. Clips it ends are
    /// reported at the end of the next tick.
    pub fn command<S: TransmitSink>(
        &mut self,
        command: Command,
        now: Instant,
        ntp_timestamp: u64,
        out: &mut S,
    ) -> Applied {
        match command {
            Command::AddMember(add) => self.add_member(*add, now),
            Command::SetFlags { key, flags } => {
                match self.slot_of(key) {
                    Some(index) => self.slots[index].set_flags(flags, now),
                    None => self.count_dropped_command(),
                }
                Applied::Nothing
            }
            Command::SetRemote {
                key,
                remote_rtp,
                remote_rtcp,
            } => match self.slot_of(key) {
                Some(index) => {
                    self.slots[index].set_remote(remote_rtp, remote_rtcp);
                    self.refile(index);
                    Applied::RemoteChanged { key }
                }
                None => {
                    self.count_dropped_command();
                    Applied::Nothing
                }
            },
            Command::SetCodec {
                key,
                codec,
                payload_type,
                telephone_event_pt,
                telephone_event_rate_hz,
                opus,
            } => {
                let index = self.slot_of(key);
                let state = match index {
                    Some(index) => self.codec_state(codec, opus, self.slots[index].mix_index()),
                    None => None,
                };
                match (index, state) {
                    (Some(index), Some(state)) => self.set_codec(
                        index,
                        state,
                        payload_type,
                        telephone_event_pt,
                        telephone_event_rate_hz,
                    ),
                    _ => self.count_dropped_command(),
                }
                Applied::Nothing
            }
            Command::SignOfLife { key } => {
                match self.slot_of(key) {
                    Some(index) => self.slots[index].heard_from(now),
                    None => self.count_dropped_command(),
                }
                Applied::Nothing
            }
            Command::RemoveMember { key } => match self.slot_of(key) {
                Some(index) => {
                    self.remove_member(index, ntp_timestamp, out);
                    Applied::Stopped { key }
                }
                None => {
                    self.count_dropped_command();
                    Applied::Nothing
                }
            },
            Command::PlayClip {
                target,
                clip,
                looped,
                id,
            } => {
                let resolved = self.resolve_clip_target(target);
                self.clips.play(resolved, clip, looped, id);
                Applied::Nothing
            }
            Command::StopClip { target } => {
                match self.resolve_clip_target(target) {
                    Some(resolved) => self.clips.stop(resolved, ClipEnd::Stopped),
                    None => self.count_dropped_command(),
                }
                Applied::Nothing
            }
            Command::Shutdown => {
                self.shut_down(ntp_timestamp, out);
                Applied::ShutDown
            }
        }
    }

    /// Removes every member, each with an RTCP BYE (the command queue was
    /// abandoned, or `Command::Shutdown`).
    pub fn shut_down<S: TransmitSink>(&mut self, ntp_timestamp: u64, out: &mut S) {
        while let Some(&index) = self.active_slots.last() {
            self.remove_member(index as usize, ntp_timestamp, out);
        }
    }

    /// The next event, oldest first, on a core made with `new`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events_out.as_mut()?.pop().ok()
    }

    /// Whether events were queued since the last call: the engine rings the
    /// signalling plane's doorbell after such a tick.
    pub fn take_events_queued(&mut self) -> bool {
        std::mem::take(&mut self.events_queued)
    }

    fn count_dropped_command(&self) {
        self.stats.commands_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The slot a key names, if that member is still there.
    fn slot_of(&self, key: MemberKey) -> Option<usize> {
        let index = usize::try_from(key.slot).ok()?;
        self.slots
            .get(index)
            .is_some_and(|slot| slot.serves(key))
            .then_some(index)
    }

    fn add_member(&mut self, mut add: AddMember, now: Instant) -> Applied {
        let index = add.key.slot as usize;
        let mix = add.mix as usize;
        let codec_state = if index < self.slots.len() && mix < self.mixes.len() {
            self.codec_state(add.codec, add.opus.take(), mix)
        } else {
            None
        };
        let Some(codec_state) = codec_state else {
            // Beyond `max_members`, or a codec this build cannot serve.
            self.count_dropped_command();
            return Applied::Refused {
                sockets: add.sockets,
            };
        };
        if self.slots[index].is_active() {
            // The caller reused a slot without removing its member first.
            self.count_dropped_command();
            self.stop_slot(index);
        }
        let sender = RtpSender::new(self.rng.random(), self.rng.random(), self.rng.random());
        // RFC 3550 §6.2: randomise the first report over half to one and a half intervals.
        let first_rtcp_at = now
            + self
                .config
                .rtcp_interval
                .mul_f64(self.rng.random_range(0.5..1.5));
        self.slots[index].start(&add, codec_state, sender, now, first_rtcp_at);
        self.join_mix(index, mix, add.codec);
        self.slots[index].use_srtp(add.srtp.take());
        if let Err(position) = self.active_slots.binary_search(&(index as u32)) {
            // Within the capacity reserved at start: there are no more slots than that.
            self.active_slots.insert(position, index as u32);
        }
        self.mix_members[mix] += 1;
        if self.mix_members[mix] == 1 {
            if let Err(position) = self.active_mixes.binary_search(&(mix as u32)) {
                // Within the capacity reserved at start, as for `active_slots`.
                self.active_mixes.insert(position, mix as u32);
            }
        }
        self.refile(index);
        Applied::Started {
            key: add.key,
            sockets: add.sockets,
        }
    }

    /// Files the slot in the shared port's demultiplexer under its current
    /// addresses (or nowhere, when it is free or has its own sockets).
    fn refile(&mut self, index: usize) {
        self.demux.file(index, self.slots[index].filed_as());
    }

    /// The state a member joining (or moving to) `codec` in mix `mix`
    /// speaks through: Opus's came built in `opus` (the mix keeps its
    /// shared encoder if it has none; what is left over is freed here, in
    /// command handling, not in the tick). None: a codec this build cannot
    /// serve, or Opus without its states.
    fn codec_state(
        &mut self,
        codec: Codec,
        opus: Option<Box<OpusStates>>,
        mix: usize,
    ) -> Option<CodecState> {
        if codec != Codec::Opus {
            return CodecState::new(codec).ok();
        }
        let OpusStates {
            member,
            mix_encoder,
        } = *opus?;
        drop(self.mixes[mix].offer_opus_encoder(mix_encoder));
        Some(member)
    }

    fn remove_member<S: TransmitSink>(&mut self, index: usize, ntp_timestamp: u64, out: &mut S) {
        self.send_rtcp(index, ntp_timestamp, true, out);
        self.stop_slot(index);
    }

    /// A re-INVITE changed member `index`'s codec: it starts over in the new
    /// one, and its mix follows (to 16 kHz or back).
    fn set_codec(
        &mut self,
        index: usize,
        state: CodecState,
        payload_type: u8,
        telephone_event_pt: Option<u8>,
        telephone_event_rate_hz: u32,
    ) {
        let codec = state.codec();
        let slot = &mut self.slots[index];
        let mix = slot.mix_index();
        let previous: Codec = slot.use_codec(
            state,
            payload_type,
            telephone_event_pt,
            telephone_event_rate_hz,
        );
        let rate_before = self.mixes[mix].rate_hz();
        self.mixes[mix].join(codec);
        self.mixes[mix].leave(previous);
        if self.mixes[mix].rate_hz() != rate_before {
            self.mix_rate_changed(mix);
        }
        let rate_hz = self.mixes[mix].rate_hz();
        self.slots[index].follow_mix_rate(rate_hz);
    }

    /// Member `index` joins mix `mix` speaking `codec` and follows its
    /// rate; when that changed, so does every member of the mix.
    fn join_mix(&mut self, index: usize, mix: usize, codec: Codec) {
        if self.mixes[mix].join(codec) {
            self.mix_rate_changed(mix);
        }
        let rate_hz = self.mixes[mix].rate_hz();
        self.slots[index].follow_mix_rate(rate_hz);
    }

    /// Mix `mix` changed rate: its members follow (a command, not the tick:
    /// a walk of the active members is fine here).
    fn mix_rate_changed(&mut self, mix: usize) {
        let rate_hz = self.mixes[mix].rate_hz();
        for &slot in &self.active_slots {
            let slot = &mut self.slots[slot as usize];
            if slot.mix_index() == mix {
                slot.follow_mix_rate(rate_hz);
            }
        }
    }

    fn stop_slot(&mut self, index: usize) {
        let mix = self.slots[index].mix_index();
        if self.mixes[mix].leave(self.slots[index].codec()) {
            self.mix_rate_changed(mix);
        }
        self.mix_members[mix] = self.mix_members[mix].saturating_sub(1);
        self.slots[index].stop();
        if let Ok(position) = self.active_slots.binary_search(&(index as u32)) {
            self.active_slots.remove(position);
        }
        self.refile(index);
        self.clips.stop(ResolvedTarget::Slot(index), ClipEnd::Gone);
        if self.mix_members[mix] == 0 {
            if let Ok(position) = self.active_mixes.binary_search(&(mix as u32)) {
                self.active_mixes.remove(position);
            }
            // The mix index may serve another conference next.
            self.clips.stop(ResolvedTarget::Mix(mix), ClipEnd::Gone);
            // Freed here, in command handling; the next Opus member brings one.
            drop(self.mixes[mix].take_opus_encoder());
        }
    }

    /// A clip target that still exists: a mix with members, or a current member.
    fn resolve_clip_target(&self, target: ClipTarget) -> Option<ResolvedTarget> {
        match target {
            ClipTarget::Mix(mix) => {
                let mix = usize::try_from(mix).ok()?;
                (self.mix_members.get(mix).copied().unwrap_or(0) > 0)
                    .then_some(ResolvedTarget::Mix(mix))
            }
            ClipTarget::Member(key) => self.slot_of(key).map(ResolvedTarget::Slot),
        }
    }

    /// Reports this tick's clip ends as `Event::ClipDone`, in the order they happened.
    fn emit_clip_ends(&mut self) {
        for index in 0..self.clips.ended().len() {
            let (id, end) = self.clips.ended()[index];
            self.emit(Event::ClipDone { id, end });
        }
        self.clips.clear_ended();
    }

    /// Queues an event; if the queue is full, counts it, owes an
    /// `Event::QueueFull` and returns false.
    fn emit(&mut self, event: Event) -> bool {
        self.events_queued = true;
        if self.events_overflowed {
            if self.events.push(Event::QueueFull).is_err() {
                add(&self.stats.events_dropped, 1);
                return false;
            }
            self.events_overflowed = false;
        }
        if self.events.push(event).is_err() {
            add(&self.stats.events_dropped, 1);
            self.events_overflowed = true;
            return false;
        }
        true
    }

    /// Adds this tick's counts to `MediaStats`.
    fn publish_counts(&mut self) {
        let counts = std::mem::take(&mut self.counts);
        add(&self.stats.packets_in, counts.packets_in);
        add(&self.stats.malformed, counts.malformed);
        add(&self.stats.foreign, counts.foreign);
        add(&self.stats.learning, counts.learning);
        add(&self.stats.contested, counts.contested);
        add(&self.stats.ambiguous, counts.ambiguous);
        add(&self.stats.packets_lost, counts.packets_lost);
        add(&self.stats.srtp_auth_failed, counts.srtp_auth_failed);
        add(&self.stats.srtp_replayed, counts.srtp_replayed);
    }

    /// The port a member's datagrams use.
    fn port_of(slot: &Slot) -> Port {
        if slot.has_own_sockets() {
            Port::Member(slot.key())
        } else {
            Port::Shared
        }
    }
}

/// Adds to a counter of `MediaStats`; nothing to add costs no atomic operation.
pub(crate) fn add(counter: &AtomicU64, amount: u64) {
    if amount > 0 {
        counter.fetch_add(amount, Ordering::Relaxed);
    }
}

#[cfg(test)]
pub(crate) mod tests;
