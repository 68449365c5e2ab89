//! The media plane: RTP in and out, jitter buffers, codecs, the DTMF receiver
//! and keypad, and the conference mixer, run by one dedicated thread on a
//! 20 ms clock (see docs/architecture.md, "One 20 ms tick"). `core` does all of a
//! tick's work on in-memory datagrams at an explicit time; `engine` is the
//! thread that keeps the clock and the sockets and drives it.
//!
//! The signalling plane talks to it only through `MediaHandle`: bounded
//! lock-free `Command` and `Event` queues and atomic counters in `MediaStats`.

pub mod clip;
pub mod codec;
pub mod core;
pub mod demux;
pub mod dtmf;
pub mod engine;
pub mod jitter;
pub mod keypad;
pub mod latch;
pub mod local;
pub mod mixer;
pub mod quality;
pub mod resample;
pub mod rtp;
pub mod slot;
pub mod srtp;

pub use clip::{ClipEnd, ClipTarget};
pub use codec::Codec;
pub use dtmf::DigitSource;

use crate::net::wakeup;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// A member's identity in the media plane: slot index plus a generation so stale events are ignorable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemberKey {
    pub slot: u32,
    pub generation: u32,
}

/// muted = not heard; deaf = hears nothing; held = neither heard nor hears, and
/// no RTP is sent to it nor expected from it (no RTP timeout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberFlags {
    pub muted: bool,
    pub deaf: bool,
    pub held: bool,
}

/// Media plane settings; every buffer is sized from these at start.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// Member slots, and conference mixes, allocated at start.
    pub max_members: usize,
    /// No valid RTP, nor any other sign of life (RTCP, `Command::SignOfLife`), for
    /// this long (while not held) raises `Event::RtpTimeout`; `None`: never.
    pub rtp_timeout: Option<Duration>,
    /// Playout delay of the jitter buffer in 20 ms frames.
    pub jitter_frames: usize,
    /// Noise gate opening level; -50 dBFS is about -47 dBm0 for G.711.
    pub gate_threshold_dbfs: f32,
    /// Frames the gate stays open after speech falls below the opening
    /// level (`hangover_frames` of `media.gate_hangover_ms`).
    pub gate_hangover_frames: u32,
    /// Interval between RTCP reports per member (RFC 3550 suggests 5 s minimum).
    pub rtcp_interval: Duration,
    /// Slots in the command queue; what does not fit waits in
    /// `MediaHandle`'s backlog (see `MediaHandle::send`).
    pub command_queue_len: usize,
    /// Slots in the event queue; events that do not fit are counted and `Event::QueueFull` follows.
    pub event_queue_len: usize,
    /// Serve members added with `MemberSockets::Shared` on one RTP socket bound
    /// here and one RTCP socket on the port above (port 0: any free pair).
    pub shared_port: Option<SocketAddr>,
    /// Opus encoders' target bitrate (`media.opus_bitrate`).
    pub opus_bitrate_bps: u32,
    /// Opus encoders' complexity, 0..=10 (`media.opus_complexity`).
    pub opus_complexity: u8,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            max_members: 64,
            rtp_timeout: Some(Duration::from_secs(30)),
            jitter_frames: 1,
            gate_threshold_dbfs: -50.0,
            gate_hangover_frames: 10,
            rtcp_interval: Duration::from_secs(5),
            command_queue_len: 256,
            event_queue_len: 1024,
            shared_port: None,
            opus_bitrate_bps: 32_000,
            opus_complexity: 5,
        }
    }
}

/// A hangover in whole 20 ms frames, rounded up.
pub fn hangover_frames(hangover: Duration) -> u32 {
    let frame_ms = 1000 / mixer::TICKS_PER_SECOND as u128;
    hangover
        .as_millis()
        .div_ceil(frame_ms)
        .min(u128::from(u32::MAX)) as u32
}

/// Everything the media thread needs to start serving a member.
#[derive(Debug)]
pub struct AddMember {
    pub key: MemberKey,
    /// Conference mix index, < max_members, chosen by the caller.
    pub mix: u32,
    pub sockets: MemberSockets,
    /// From SDP: RTP from here is the member's at once; RTP is sent here
    /// until a stream is learned elsewhere (`media/latch.rs`).
    pub remote_rtp: SocketAddr,
    pub remote_rtcp: SocketAddr,
    /// Where the call's signalling came from: a stream from another port
    /// at this IP (a NAT that rewrote the port) may be learned, with evidence.
    /// None: only the SDP address's IP.
    pub signalling_ip: Option<IpAddr>,
    pub codec: Codec,
    /// The payload type SDP negotiated for `codec`: what the member's RTP
    /// must carry, and what ours carries.
    pub payload_type: u8,
    pub telephone_event_pt: Option<u8>,
    /// The telephone-event's RTP clock (8000, or 48000 beside Opus): RFC
    /// 4733 durations count its units.
    pub telephone_event_rate_hz: u32,
    pub flags: MemberFlags,
    /// Keys act on the member as the README's keypad table says (profile
    /// `interpret_digits`, the default); false for `passthru_digits`. Every
    /// press is reported as `Event::Digit` either way.
    pub keypad: bool,
    /// Some: the member's media is SRTP with these contexts (`sip/sdp.rs`
    /// negotiated the keys); boxed, and keyed, on the signalling side.
    pub srtp: Option<Box<srtp::MemberSrtp>>,
    /// Opus (`codec` is `Codec::Opus`): the member's libopus states and an
    /// encoder for its mix's shared stream, built on the signalling side
    /// (`OpusStates::new`); an Opus member without them is refused. None
    /// for every other codec.
    pub opus: Option<Box<codec::OpusStates>>,
    /// A cascade link to another bridge (docs/scaling.md "Cascading"): what
    /// it sends is other people's mix, so no key is listened for (a mix of
    /// two voices can look like a key's tone pair), nothing is held back,
    /// and the noise gate never closes on it.
    pub link: bool,
}

/// Where a member's RTP and RTCP come and go.
#[derive(Debug)]
pub enum MemberSockets {
    /// The call's own pair, already bound by the caller; the media thread
    /// sets them nonblocking.
    Own {
        rtp: UdpSocket,
        rtcp: UdpSocket,
        /// The address our SDP gave the phone for RTP. Some: while the
        /// phone's stream is latched, the media thread `connect()`s the RTP
        /// socket to it, so each send takes the cached route instead of a
        /// lookup, as long as the connected socket still receives at this
        /// address. The socket must then be bound to an explicit port, which
        /// dissolving the connection keeps. None: never connected.
        sdp_ip: Option<IpAddr>,
    },
    /// The media thread's shared port (`MediaConfig::shared_port`): datagrams
    /// are told apart by their source address.
    Shared,
    /// No socket: audio in and out through in-process rings (the room's
    /// sound card, `media/local.rs`). The engine wraps each captured frame
    /// as RTP from `remote_rtp` and unwraps what the core sends it.
    Local(local::LocalPort),
}

#[derive(Debug)]
pub enum Command {
    /// Boxed by the signalling side; dropping it on the media thread is acceptable.
    AddMember(Box<AddMember>),
    SetFlags {
        key: MemberKey,
        flags: MemberFlags,
    },
    SetRemote {
        key: MemberKey,
        remote_rtp: SocketAddr,
        remote_rtcp: SocketAddr,
    },
    /// The member's far end showed it is alive by other means than media (a SIP
    /// session refresh): its RTP timeout starts again.
    SignOfLife {
        key: MemberKey,
    },
    /// A re-INVITE changed the member's codec: its codec state and jitter
    /// buffer start over, and its conference's mix rate follows.
    SetCodec {
        key: MemberKey,
        codec: Codec,
        payload_type: u8,
        telephone_event_pt: Option<u8>,
        telephone_event_rate_hz: u32,
        /// As `AddMember::opus`: Some when `codec` is Opus.
        opus: Option<Box<codec::OpusStates>>,
    },
    /// Sends RTCP BYE and frees the slot.
    RemoveMember {
        key: MemberKey,
    },
    /// Plays a clip into a conference or to one member, replacing what played
    /// there; the sender keeps a clone of `clip` until `Event::ClipDone { id }`.
    PlayClip {
        target: ClipTarget,
        clip: Arc<[i16]>,
        looped: bool,
        id: u64,
    },
    /// Stops the target's clip (`ClipEnd::Stopped`); nothing playing is no error.
    StopClip {
        target: ClipTarget,
    },
    Shutdown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    RtpTimeout {
        key: MemberKey,
    },
    /// A key press, once it ended (in-band and RFC 4733 merged: counted once).
    Digit {
        key: MemberKey,
        digit: char,
        duration_ms: u32,
        source: DigitSource,
    },
    /// The member's own keys changed its mute or deaf flags (0 and *).
    FlagsChanged {
        key: MemberKey,
        flags: MemberFlags,
    },
    /// The member pressed # on a keypad conference: remove it and hang up with BYE.
    Leave {
        key: MemberKey,
    },
    Talking {
        key: MemberKey,
        talking: bool,
    },
    /// A clip stopped playing (`Command::PlayClip`'s `id`).
    ClipDone {
        id: u64,
        end: ClipEnd,
    },
    /// Events were dropped because the queue was full (counted in `MediaStats::events_dropped`).
    QueueFull,
}

/// Counters the media thread publishes; read them with `Ordering::Relaxed`.
#[derive(Debug, Default)]
pub struct MediaStats {
    pub ticks: AtomicU64,
    /// Ticks that started more than one tick late.
    pub late_ticks: AtomicU64,
    /// Times the clock fell so far behind that the schedule was restarted.
    pub clock_resyncs: AtomicU64,
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
    /// Frames missing at playout time and concealed.
    pub packets_lost: AtomicU64,
    /// Datagrams that were not valid RTP/RTCP, or carried a payload type not negotiated.
    pub malformed: AtomicU64,
    /// RTP datagrams (and RTCP reports) dropped for their source: neither
    /// the member's SDP address nor at its signalling or SDP IP, or on the
    /// shared port nobody's (`media/latch.rs`). A per-call socket connected
    /// to its phone has the kernel drop them uncounted.
    pub foreign: AtomicU64,
    /// RTP from a member's IP not (yet) proven its stream by a run of
    /// packets in sequence (a NAT's rewritten port while it is learned, a
    /// stale stream, or on the shared port a member younger than
    /// `NAT_LATCH_AFTER`).
    pub learning: AtomicU64,
    /// RTP from a member's IP: a second stream while the member's own is alive.
    pub contested: AtomicU64,
    /// Shared port: RTP from an unknown port at an IP where several members
    /// could be learning their stream.
    pub ambiguous: AtomicU64,
    /// SRTP or SRTCP from a member that failed authentication (a wrong key,
    /// or not its stream): dropped before it could latch anything.
    pub srtp_auth_failed: AtomicU64,
    /// SRTP or SRTCP replayed, or older than the replay window.
    pub srtp_replayed: AtomicU64,
    /// Commands that referred to a stale key or could not be carried out.
    pub commands_dropped: AtomicU64,
    pub events_dropped: AtomicU64,
    /// Sends that failed (socket buffer full, unreachable).
    pub send_errors: AtomicU64,
    pub last_tick_ns: AtomicU64,
    pub max_tick_ns: AtomicU64,
    /// Tick durations: `tick_histogram[i]` counts ticks that took at most
    /// `TICK_BUCKETS_NS[i]` (and more than the bucket before); the last
    /// counts the rest. Sum in `tick_ns_total`.
    pub tick_histogram: [AtomicU64; TICK_BUCKETS_NS.len() + 1],
    pub tick_ns_total: AtomicU64,
    /// Tick lateness (actual start minus scheduled start), in the same
    /// buckets; sum in `lateness_ns_total`.
    pub lateness_histogram: [AtomicU64; TICK_BUCKETS_NS.len() + 1],
    pub lateness_ns_total: AtomicU64,
    /// Each member's packets received and lost and jitter, published by
    /// the media thread about once a second.
    pub member_quality: quality::QualityTable,
}

/// Upper bounds of the tick-duration histogram buckets (50 us to the whole 20 ms tick).
pub const TICK_BUCKETS_NS: [u64; 9] = [
    50_000, 100_000, 250_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000,
];

impl MediaStats {
    /// Counts one tick that took `tick_ns` and started `late_ns` after its
    /// scheduled time (lock-free, no allocation).
    pub fn record_tick(&self, tick_ns: u64, late_ns: u64) {
        count_in(&self.tick_histogram, &self.tick_ns_total, tick_ns);
        count_in(&self.lateness_histogram, &self.lateness_ns_total, late_ns);
    }
}

fn count_in(histogram: &[AtomicU64], total: &AtomicU64, ns: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let bucket = TICK_BUCKETS_NS
        .iter()
        .position(|&bound| ns <= bound)
        .unwrap_or(TICK_BUCKETS_NS.len());
    histogram[bucket].fetch_add(1, Relaxed);
    total.fetch_add(ns, Relaxed);
}

/// Commands a member's life takes at most in a burst (add, flags, remote,
/// remove), for sizing the backlog.
const BACKLOG_COMMANDS_PER_MEMBER: usize = 4;

/// Hands out member keys on the signalling side: a free slot of the
/// `max_members` the media thread allocated, with a new generation, so a
/// command or event naming a member that has since left is told apart.
#[derive(Debug)]
pub struct MemberKeys {
    /// Free slot indices, lowest on top.
    free_slots: Vec<u32>,
    generations: Vec<u32>,
    in_use: Vec<bool>,
}

impl MemberKeys {
    /// Keys for `capacity` slots (`MediaConfig::max_members`).
    pub fn new(capacity: usize) -> MemberKeys {
        MemberKeys {
            free_slots: (0..capacity as u32).rev().collect(),
            generations: vec![0; capacity],
            in_use: vec![false; capacity],
        }
    }

    /// A fresh key, or None when all `max_members` slots are taken (the caller answers 486).
    pub fn allocate(&mut self) -> Option<MemberKey> {
        let slot = self.free_slots.pop()?;
        let index = slot as usize;
        self.generations[index] = self.generations[index].wrapping_add(1);
        self.in_use[index] = true;
        Some(MemberKey {
            slot,
            generation: self.generations[index],
        })
    }

    /// Returns the key's slot to the pool. Call after sending `RemoveMember`: the
    /// queue is FIFO, so the media thread frees the slot before any reuse arrives.
    pub fn release(&mut self, key: MemberKey) {
        let index = key.slot as usize;
        let current = self.generations.get(index) == Some(&key.generation);
        if current && self.in_use[index] {
            self.in_use[index] = false;
            self.free_slots.push(key.slot);
        }
    }

    /// `max_members`.
    pub fn capacity(&self) -> usize {
        self.generations.len()
    }

    /// Keys handed out and not released.
    pub fn in_use(&self) -> usize {
        self.capacity() - self.free_slots.len()
    }
}

/// Signalling-side handle: the command queue (with its backlog) and the
/// event queue. One task owns it.
pub struct MediaHandle {
    commands: rtrb::Producer<Command>,
    /// Commands that did not fit in the queue, oldest first: they go before
    /// any newer one, as the media thread makes room (`flush_backlog`).
    backlog: VecDeque<Command>,
    backlog_max: usize,
    events: rtrb::Consumer<Event>,
    stats: Arc<MediaStats>,
    shared_port: Option<u16>,
    wakeup: Arc<wakeup::Wakeup>,
}

impl MediaHandle {
    /// Queues `command` behind every earlier one. What does not fit in the
    /// queue to the media thread (which takes `COMMANDS_PER_TICK` a tick)
    /// waits in a backlog on this side, sent in order by later calls and by
    /// `flush_backlog`, which the owner calls every few milliseconds while
    /// `has_backlog`: a burst, such as a full room hanging up at once, then
    /// takes a few ticks longer, instead of losing a `RemoveMember` and
    /// leaving a slot sending to a phone that is gone. Err gives the command
    /// back only when the backlog is full too (the media thread stopped
    /// taking commands).
    pub fn send(&mut self, command: Command) -> Result<(), Command> {
        if self.flush_backlog() {
            return self.hold(command);
        }
        match self.commands.push(command) {
            Ok(()) => Ok(()),
            Err(rtrb::PushError::Full(command)) => self.hold(command),
        }
    }

    fn hold(&mut self, command: Command) -> Result<(), Command> {
        if self.backlog.len() >= self.backlog_max {
            return Err(command);
        }
        self.backlog.push_back(command);
        Ok(())
    }

    /// Moves what waits in the backlog into the queue, as far as there is
    /// room; true while some still waits.
    pub fn flush_backlog(&mut self) -> bool {
        while let Some(command) = self.backlog.pop_front() {
            if let Err(rtrb::PushError::Full(command)) = self.commands.push(command) {
                self.backlog.push_front(command);
                return true;
            }
        }
        false
    }

    /// Commands wait in the backlog: call `flush_backlog` again soon.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop().ok()
    }

    /// Rung by the media thread after a tick in which it queued events: wait
    /// for it, `clear` it, then `poll_event` until None.
    pub fn wakeup(&self) -> Arc<wakeup::Wakeup> {
        Arc::clone(&self.wakeup)
    }

    pub fn stats(&self) -> Arc<MediaStats> {
        Arc::clone(&self.stats)
    }

    /// The shared RTP port every member added with `MemberSockets::Shared`
    /// uses (RTCP on the port above), when `MediaConfig::shared_port` is set.
    pub fn shared_port(&self) -> Option<u16> {
        self.shared_port
    }
}

/// Starts the media thread (named "sipconf-media"). Returns the handle and the
/// thread's JoinHandle; fails if the shared port (when configured) cannot be bound.
pub fn spawn(config: MediaConfig) -> std::io::Result<(MediaHandle, std::thread::JoinHandle<()>)> {
    if config.max_members == 0 || u32::try_from(config.max_members).is_err() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "media.max_members must be between 1 and 2^32-1",
        ));
    }
    let (command_producer, command_consumer) =
        rtrb::RingBuffer::new(config.command_queue_len.max(1));
    let (event_producer, event_consumer) = rtrb::RingBuffer::new(config.event_queue_len.max(1));
    let stats = Arc::new(MediaStats::default());
    let capacity = config.max_members;
    let wakeup = Arc::new(wakeup::Wakeup::new()?);
    let mut engine =
        engine::Engine::new(config, command_consumer, event_producer, Arc::clone(&stats))?;
    engine.ring_on_events(Arc::clone(&wakeup));
    let shared_port = engine.shared_port();
    let thread = std::thread::Builder::new()
        .name("sipconf-media".into())
        .spawn(move || engine.run())?;
    let handle = MediaHandle {
        commands: command_producer,
        backlog: VecDeque::new(),
        backlog_max: capacity.saturating_mul(BACKLOG_COMMANDS_PER_MEMBER),
        events: event_consumer,
        stats,
        shared_port,
        wakeup,
    };
    Ok((handle, thread))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle_with(max_members: usize) -> (MediaHandle, std::thread::JoinHandle<()>) {
        spawn(MediaConfig {
            max_members,
            ..MediaConfig::default()
        })
        .expect("spawn")
    }

    #[test]
    fn allocate_refuses_beyond_capacity_and_release_makes_room() {
        let mut keys = MemberKeys::new(2);
        assert_eq!(keys.capacity(), 2);
        let first = keys.allocate().expect("slot");
        let second = keys.allocate().expect("slot");
        assert_ne!(first.slot, second.slot);
        assert_eq!(keys.allocate(), None);
        assert_eq!(keys.in_use(), 2);
        keys.release(first);
        let reused = keys.allocate().expect("slot");
        assert_eq!(reused.slot, first.slot);
        assert_ne!(reused.generation, first.generation);
        // A stale key does not free the slot twice.
        keys.release(first);
        assert_eq!(keys.allocate(), None);
    }

    #[test]
    fn a_shutdown_command_stops_the_thread() {
        let (mut media, thread) = handle_with(2);
        media.send(Command::Shutdown).expect("queue has room");
        thread.join().expect("media thread");
    }

    #[test]
    fn spawn_rejects_zero_members() {
        assert!(spawn(MediaConfig {
            max_members: 0,
            ..MediaConfig::default()
        })
        .is_err());
    }

    #[test]
    fn dropping_the_handle_stops_the_thread() {
        let (media, thread) = handle_with(1);
        drop(media);
        thread.join().expect("media thread");
    }
}
