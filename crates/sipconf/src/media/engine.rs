//! The media thread: a 20 ms tick on an absolute schedule that drains commands,
//! receives RTP from every member, listens for key presses, mixes each
//! conference, and sends one RTP packet per listener. It is the IO shell
//! around the sans-IO kernels in `slot`, `jitter`, `dtmf`, `keypad`, `mixer`
//! and `codec`: the only place that reads the clock or touches a socket.
//! Nothing on the tick allocates, locks, logs or blocks.
//!
//! A member has its own RTP/RTCP socket pair, or (`media.shared_port`) all
//! share one pair: the RTP socket is then drained in large batches before
//! the per-member work, each datagram is handed to its member by source
//! address (`demux`), and the tick's packets leave in `sendmmsg` batches, so
//! the system-call cost is spread over up to 64 packets.
//!
//! A member is heard on time until its digit receiver suspects a key's tone;
//! from then on it is heard one frame (20 ms) late, so the frame holding the
//! tone's start can still be kept from the others (DTMF.md, "Bleed"), until
//! its next frame of pause, which is dropped to catch up.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::media::clip::{ClipEnd, ClipTarget, Clips, ResolvedTarget};
use crate::media::demux::{Demux, Filed, Sender};
use crate::media::dtmf::DigitPress;
use crate::media::keypad::{MAX_STEPS, STEP_DB};
use crate::media::mixer::{
    frame_samples, GateLevels, Mix, NoiseGate, ENCODED_FRAME_BYTES_MAX, FRAME_SAMPLES_MAX,
};
use crate::media::rtp::{
    check_rtcp, write_rtcp_report, RtpSender, SenderInfo, RTCP_COMPOUND_MAX_BYTES, RTP_HEADER_BYTES,
};
use crate::media::slot::{Played, Received, Slot};
use crate::media::{AddMember, Command, Event, MediaConfig, MediaStats, MemberKey, MemberSockets};
use crate::net::udp::{receive_buffer_bytes, set_buffer_bytes, ReceiveBatch, SendBatch};
use crate::net::wakeup::Wakeup;

/// One tick of audio.
pub const TICK: Duration = Duration::from_millis(20);
/// Every codec we speak today is narrowband, so every conference mixes at 8 kHz.
pub const CONFERENCE_RATE_HZ: u32 = 8000;
/// Further behind than this, the schedule restarts from now instead of catching up.
const MAX_TICKS_BEHIND: u32 = 5;
/// A member alone in its conference with nothing to hear (no clip, no
/// confirmation tone) is sent one packet of silence every this many ticks
/// (1 s) instead of every tick: RFC 3551 silence suppression, with the marker
/// bit when full-rate audio resumes. One a second keeps NAT bindings and the
/// far end's RTP-inactivity timers alive; the other 49 would be silence
/// nobody needs, and sending is most of what an idle member costs.
pub const LONE_KEEPALIVE_TICKS: u32 = 50;
/// On the shared port, a member is latched to an unknown port at its SDP
/// address's IP only after waiting this long for RTP from the address it gave:
/// a phone sending from where it said is heard within a tick or two, while a
/// packet from an unknown port in the first moments is far more likely a
/// newer call from the same IP (a PBX relaying many) whose member is not
/// filed yet than this member behind a port-rewriting NAT.
const NAT_LATCH_AFTER: Duration = Duration::from_millis(500);
/// Commands handled per tick, so a burst cannot stretch one tick.
const COMMANDS_PER_TICK: usize = 64;
/// Datagrams read per socket per tick, so a flood on one member cannot starve the rest.
const DATAGRAMS_PER_TICK: usize = 16;
/// A member's RTCP socket is read every this many ticks (staggered across
/// members), not every tick: reports come every few seconds, and an empty
/// read is a system call (a quarter of the per-member cost at 1000 members).
const RTCP_POLL_TICKS: u64 = 10;
/// Datagrams per `recvmmsg` and per `sendmmsg` on the shared port.
const SHARED_BATCH: usize = 64;
/// Members whose RTCP is looked up by SSRC (a scan of every slot) per poll of
/// the shared RTCP socket, so a flood of unknown reports cannot stretch a tick.
const RTCP_SSRC_SCANS_PER_POLL: usize = 8;
/// Socket buffer asked for per member on the shared port: every member's
/// datagrams wait in one buffer between two ticks, and one 172-byte RTP
/// datagram takes about 1 KiB of it with the kernel's overhead (the kernel
/// caps the request at `net.core.rmem_max`).
const SHARED_BUFFER_BYTES_PER_MEMBER: usize = 2048;

/// The one RTP/RTCP socket pair every `MemberSockets::Shared` member uses,
/// with its batches and the table that finds a datagram's member.
struct SharedPort {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    demux: Demux,
    receive_batch: ReceiveBatch,
    send_batch: SendBatch,
}

impl SharedPort {
    /// Binds RTP at `address` and RTCP on the port above, nonblocking. Port 0
    /// takes any free pair (tests); a few tries find one whose upper port is free.
    fn bind(address: SocketAddr, max_members: usize) -> io::Result<SharedPort> {
        let context = |what: &str, at: SocketAddr, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot bind the shared {what} port {at} (media.shared_port): {e}"),
            )
        };
        let tries = if address.port() == 0 { 32 } else { 1 };
        let mut last_error = None;
        for _ in 0..tries {
            let rtp = UdpSocket::bind(address).map_err(|e| context("RTP", address, e))?;
            let rtp_port = rtp.local_addr()?.port();
            let Some(rtcp_port) = rtp_port.checked_add(1) else {
                continue;
            };
            let rtcp_address = SocketAddr::new(address.ip(), rtcp_port);
            match UdpSocket::bind(rtcp_address) {
                Ok(rtcp) => {
                    rtp.set_nonblocking(true)?;
                    rtcp.set_nonblocking(true)?;
                    let buffer = max_members.saturating_mul(SHARED_BUFFER_BYTES_PER_MEMBER);
                    set_buffer_bytes(rtp.as_raw_fd(), buffer)?;
                    // Start-up, not the tick: a warning here is allowed.
                    let granted = receive_buffer_bytes(rtp.as_raw_fd()).unwrap_or(0);
                    if granted < buffer {
                        tracing::warn!(
                            granted_bytes = granted,
                            wanted_bytes = buffer,
                            "the shared RTP socket's receive buffer is smaller than \
                             max_members needs; raise net.core.rmem_max or RTP may be dropped"
                        );
                    }
                    return Ok(SharedPort {
                        rtp,
                        rtcp,
                        demux: Demux::new(max_members),
                        receive_batch: ReceiveBatch::new(SHARED_BATCH),
                        send_batch: SendBatch::new(SHARED_BATCH),
                    });
                }
                Err(e) => last_error = Some(context("RTCP", rtcp_address, e)),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::AddrInUse, "no free shared RTP port pair")
        }))
    }

    /// Sends what is queued; counts it as sent or failed.
    fn flush(&mut self, stats: &MediaStats) {
        let queued = self.send_batch.len();
        if queued == 0 {
            return;
        }
        let sent = self.send_batch.send(self.rtp.as_raw_fd());
        add(&stats.packets_out, sent as u64);
        add(&stats.send_errors, queued.saturating_sub(sent) as u64);
    }
}

pub struct Engine {
    config: MediaConfig,
    slots: Vec<Slot>,
    /// Indices of the active slots, ascending: the tick walks these instead
    /// of every slot (each a cold cache line to check), so a box sized for
    /// 2000 members costs nothing extra while 80 are in call. Capacity
    /// `max_members`, reserved at start.
    active_slots: Vec<u32>,
    mixes: Vec<Mix>,
    /// Members per mix; a mix with none is skipped.
    mix_members: Vec<u32>,
    commands: rtrb::Consumer<Command>,
    events: rtrb::Producer<Event>,
    /// Events were dropped; `Event::QueueFull` is owed.
    events_overflowed: bool,
    /// Rung after a tick that queued events (`ring_on_events`).
    wakeup: Option<Arc<Wakeup>>,
    /// This tick queued (or tried to queue) an event.
    events_queued: bool,
    stats: Arc<MediaStats>,
    /// Where each socket's datagrams land; one batch serves every member in turn.
    receive_batch: ReceiveBatch,
    send_buffer: Box<[u8]>,
    payload_buffer: Box<[u8]>,
    /// A member's own rendering of its mix, when it cannot share the listeners' payload.
    render_buffer: Box<[i16]>,
    rtcp_buffer: [u8; RTCP_COMPOUND_MAX_BYTES],
    rng: SmallRng,
    /// Gate levels for keypad steps -4..=4 (keys 7, 8, 9), computed at start.
    gate_levels: [GateLevels; 9],
    /// Files, speech and tones playing into mixes and to single members.
    clips: Clips,
    /// Ticks run so far.
    tick_number: u64,
    /// `media.shared_port`: the pair every `MemberSockets::Shared` member uses.
    shared: Option<SharedPort>,
}

/// What one tick decided about the thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Continue {
    Running,
    ShutDown,
}

impl Engine {
    /// Allocates every slot, mix and buffer for `config.max_members`, and binds
    /// the shared port if one is configured.
    pub fn new(
        config: MediaConfig,
        commands: rtrb::Consumer<Command>,
        events: rtrb::Producer<Event>,
        stats: Arc<MediaStats>,
    ) -> io::Result<Self> {
        let shared = config
            .shared_port
            .map(|address| SharedPort::bind(address, config.max_members))
            .transpose()?;
        let now = Instant::now();
        let gate = NoiseGate::new(config.gate_threshold_dbfs, config.gate_hangover_frames);
        let slots = (0..config.max_members)
            .map(|_| Slot::new(now, config.jitter_frames, gate.clone()))
            .collect();
        let mixes = (0..config.max_members)
            .map(|_| Mix::new(CONFERENCE_RATE_HZ).expect("8 kHz is a supported mix rate"))
            .collect();
        Ok(Engine {
            slots,
            active_slots: Vec::with_capacity(config.max_members),
            mixes,
            mix_members: vec![0; config.max_members],
            commands,
            events,
            events_overflowed: false,
            wakeup: None,
            events_queued: false,
            stats,
            receive_batch: ReceiveBatch::new(DATAGRAMS_PER_TICK),
            send_buffer: vec![0; RTP_HEADER_BYTES + ENCODED_FRAME_BYTES_MAX].into_boxed_slice(),
            payload_buffer: vec![0; ENCODED_FRAME_BYTES_MAX].into_boxed_slice(),
            render_buffer: vec![0; FRAME_SAMPLES_MAX].into_boxed_slice(),
            rtcp_buffer: [0; RTCP_COMPOUND_MAX_BYTES],
            rng: SmallRng::from_rng(&mut rand::rng()),
            clips: Clips::new(config.max_members),
            tick_number: 0,
            gate_levels: std::array::from_fn(|index| {
                let step = index as f32 - f32::from(MAX_STEPS);
                GateLevels::at(config.gate_threshold_dbfs + STEP_DB * step)
            }),
            shared,
            config,
        })
    }

    /// The shared RTP port, when `MediaConfig::shared_port` is set.
    pub fn shared_port(&self) -> Option<u16> {
        let shared = self.shared.as_ref()?;
        shared.rtp.local_addr().ok().map(|a| a.port())
    }

    /// Rings `wakeup` after each tick that queued events, so the reader can
    /// sleep until then.
    pub fn ring_on_events(&mut self, wakeup: Arc<Wakeup>) {
        self.wakeup = Some(wakeup);
    }

    /// The thread body: tick every 20 ms on an absolute schedule until shut down.
    pub fn run(mut self) {
        tracing::info!(
            max_members = self.config.max_members,
            "media thread started"
        );
        let mut next_tick_at = Instant::now();
        loop {
            let now = Instant::now();
            if next_tick_at > now {
                std::thread::sleep(next_tick_at - now);
            }
            let started_at = Instant::now();
            let behind = started_at.saturating_duration_since(next_tick_at);
            if behind > TICK {
                self.stats.late_ticks.fetch_add(1, Ordering::Relaxed);
            }
            if behind > TICK * MAX_TICKS_BEHIND {
                // Catching up would burst many packets at every phone; start afresh.
                self.stats.clock_resyncs.fetch_add(1, Ordering::Relaxed);
                next_tick_at = started_at;
            }
            let outcome = self.tick(started_at, ntp_now());
            if std::mem::take(&mut self.events_queued) {
                if let Some(wakeup) = self.wakeup.as_ref() {
                    wakeup.ring();
                }
            }
            let tick_ns = started_at.elapsed().as_nanos() as u64;
            self.stats.last_tick_ns.store(tick_ns, Ordering::Relaxed);
            self.stats.max_tick_ns.fetch_max(tick_ns, Ordering::Relaxed);
            self.stats.record_tick(tick_ns, behind.as_nanos() as u64);
            self.stats.ticks.fetch_add(1, Ordering::Relaxed);
            if outcome == Continue::ShutDown {
                break;
            }
            next_tick_at += TICK;
        }
        tracing::info!(
            ticks = self.stats.ticks.load(Ordering::Relaxed),
            late_ticks = self.stats.late_ticks.load(Ordering::Relaxed),
            "media thread stopped"
        );
    }

    /// One 20 ms tick at `now`; `ntp_timestamp` is wall time for RTCP sender reports.
    pub fn tick(&mut self, now: Instant, ntp_timestamp: u64) -> Continue {
        if self.drain_commands(now, ntp_timestamp) == Continue::ShutDown {
            return Continue::ShutDown;
        }
        for (mix, &members) in self.mixes.iter_mut().zip(&self.mix_members) {
            if members > 0 {
                mix.begin_tick();
            }
        }
        self.tick_number = self.tick_number.wrapping_add(1);
        self.receive_shared_rtp(now);
        if self.tick_number.is_multiple_of(RTCP_POLL_TICKS) {
            self.receive_shared_rtcp();
        }
        for position in 0..self.active_slots.len() {
            self.receive_and_mix(self.active_slots[position] as usize, now);
        }
        for (index, mix) in self.mixes.iter_mut().enumerate() {
            if self.mix_members[index] > 0 {
                self.clips.add_to_mix(index, mix);
            }
        }
        for position in 0..self.active_slots.len() {
            let index = self.active_slots[position] as usize;
            self.send_rtp(index);
            if now >= self.slots[index].next_rtcp_at {
                self.send_rtcp(index, ntp_timestamp, false);
                self.slots[index].next_rtcp_at = now + self.rtcp_interval();
            }
        }
        if let Some(shared) = self.shared.as_mut() {
            shared.flush(&self.stats);
        }
        self.emit_clip_ends();
        Continue::Running
    }

    fn drain_commands(&mut self, now: Instant, ntp_timestamp: u64) -> Continue {
        if self.commands.is_abandoned() && self.commands.is_empty() {
            self.remove_all(ntp_timestamp);
            return Continue::ShutDown;
        }
        for _ in 0..COMMANDS_PER_TICK {
            let Ok(command) = self.commands.pop() else {
                break;
            };
            match command {
                Command::AddMember(add) => self.add_member(*add, now),
                Command::SetFlags { key, flags } => match self.slot_of(key) {
                    Some(index) => self.slots[index].set_flags(flags, now),
                    None => self.count_dropped_command(),
                },
                Command::SetRemote {
                    key,
                    remote_rtp,
                    remote_rtcp,
                } => match self.slot_of(key) {
                    Some(index) => {
                        self.slots[index].set_remote(remote_rtp, remote_rtcp);
                        self.refile(index);
                    }
                    None => self.count_dropped_command(),
                },
                Command::RemoveMember { key } => match self.slot_of(key) {
                    Some(index) => self.remove_member(index, ntp_timestamp),
                    None => self.count_dropped_command(),
                },
                Command::PlayClip {
                    target,
                    clip,
                    looped,
                    id,
                } => {
                    let resolved = self.resolve_clip_target(target);
                    self.clips.play(resolved, clip, looped, id);
                }
                Command::StopClip { target } => match self.resolve_clip_target(target) {
                    Some(resolved) => self.clips.stop(resolved, ClipEnd::Stopped),
                    None => self.count_dropped_command(),
                },
                Command::Shutdown => {
                    self.remove_all(ntp_timestamp);
                    return Continue::ShutDown;
                }
            }
        }
        Continue::Running
    }

    fn count_dropped_command(&self) {
        self.stats.commands_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The slot a key names, if that member is still there.
    fn slot_of(&self, key: MemberKey) -> Option<usize> {
        let index = usize::try_from(key.slot).ok()?;
        let slot = self.slots.get(index)?;
        (slot.active && slot.key == key).then_some(index)
    }

    fn add_member(&mut self, add: AddMember, now: Instant) {
        let index = add.key.slot as usize;
        let mix = add.mix as usize;
        if index >= self.slots.len() || mix >= self.mixes.len() {
            self.count_dropped_command();
            return;
        }
        let usable = match &add.sockets {
            MemberSockets::Own { rtp, rtcp, .. } => rtp
                .set_nonblocking(true)
                .and_then(|()| rtcp.set_nonblocking(true))
                .is_ok(),
            MemberSockets::Shared => self.shared.is_some(),
        };
        if !usable {
            self.count_dropped_command();
            return;
        }
        if self.slots[index].active {
            // The caller reused a slot without removing its member first.
            self.count_dropped_command();
            self.stop_slot(index);
        }
        let sender = RtpSender::new(self.rng.random(), self.rng.random(), self.rng.random());
        // RFC 3550 §6.2: randomise the first report over half to one and a half intervals.
        let first_rtcp_at = now
            + self
                .rtcp_interval()
                .mul_f64(self.rng.random_range(0.5..1.5));
        let frame_samples = frame_samples(add.codec.sample_rate_hz()) as u32;
        self.slots[index].start(add, sender, frame_samples, now, first_rtcp_at);
        if let Err(position) = self.active_slots.binary_search(&(index as u32)) {
            // Within the capacity reserved at start: there are no more slots than that.
            self.active_slots.insert(position, index as u32);
        }
        self.mix_members[mix] += 1;
        self.refile(index);
    }

    /// Files the slot in the shared port's demultiplexer under its current
    /// addresses (or nowhere, when it is free or has its own sockets).
    fn refile(&mut self, index: usize) {
        let Some(shared) = self.shared.as_mut() else {
            return;
        };
        let slot = &self.slots[index];
        shared.demux.file(index, filed_as(slot));
    }

    fn remove_member(&mut self, index: usize, ntp_timestamp: u64) {
        self.send_rtcp(index, ntp_timestamp, true);
        self.stop_slot(index);
    }

    fn remove_all(&mut self, ntp_timestamp: u64) {
        while let Some(&index) = self.active_slots.last() {
            self.remove_member(index as usize, ntp_timestamp);
        }
    }

    fn stop_slot(&mut self, index: usize) {
        let mix = self.slots[index].mix as usize;
        self.mix_members[mix] = self.mix_members[mix].saturating_sub(1);
        self.slots[index].stop();
        if let Ok(position) = self.active_slots.binary_search(&(index as u32)) {
            self.active_slots.remove(position);
        }
        self.refile(index);
        self.clips.stop(ResolvedTarget::Slot(index), ClipEnd::Gone);
        if self.mix_members[mix] == 0 {
            // The mix index may serve another conference next.
            self.clips.stop(ResolvedTarget::Mix(mix), ClipEnd::Gone);
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

    fn rtcp_interval(&self) -> Duration {
        self.config.rtcp_interval
    }

    /// Drains the shared RTP socket (bounded, so a flood cannot stretch the
    /// tick) and hands each datagram to the member that sent it.
    fn receive_shared_rtp(&mut self, now: Instant) {
        let Engine {
            slots,
            stats,
            shared,
            active_slots,
            ..
        } = self;
        let Some(shared) = shared.as_mut() else {
            return;
        };
        let budget = 2 * active_slots.len() + SHARED_BATCH;
        let (mut read, mut packets_in, mut malformed, mut foreign) = (0, 0, 0, 0);
        while read < budget {
            let want = SHARED_BATCH.min(budget - read);
            // An error (an ICMP port unreachable surfacing) is not ours to
            // handle: what waits is read next tick.
            let got = shared
                .receive_batch
                .receive(shared.rtp.as_raw_fd(), want)
                .unwrap_or(0);
            for i in 0..got {
                let Some(source) = shared.receive_batch.source(i) else {
                    continue;
                };
                let (index, nat_latch) = match shared.demux.rtp_sender(source) {
                    Sender::Member(index) => (index, false),
                    Sender::OnlyWaitingAtIp(index) => (index, true),
                    Sender::Foreign => {
                        foreign += 1;
                        continue;
                    }
                };
                let Some(slot) = slots.get_mut(index).filter(|slot| slot.active) else {
                    continue;
                };
                if nat_latch && slot.age(now) < NAT_LATCH_AFTER {
                    // Most likely a member whose AddMember is still queued,
                    // sending from the same IP (a PBX): not this one's to take.
                    foreign += 1;
                    continue;
                }
                match slot.receive_rtp(shared.receive_batch.datagram(i), source, now) {
                    Received::Audio(_) | Received::TelephoneEvent => packets_in += 1,
                    Received::Malformed | Received::UnexpectedPayloadType(_) => malformed += 1,
                    Received::ForeignSource => foreign += 1,
                }
                let filed = filed_as(slot);
                if filed != shared.demux.filed(index) {
                    // Latched to a new address, or its first RTP: refile.
                    shared.demux.file(index, filed);
                }
            }
            read += got;
            if got < want {
                break;
            }
        }
        add(&stats.packets_in, packets_in);
        add(&stats.malformed, malformed);
        add(&stats.foreign, foreign);
    }

    /// Reads the shared RTCP socket: a report from a member's RTCP address,
    /// or failing that with its RTP stream's SSRC, latches its RTCP there.
    fn receive_shared_rtcp(&mut self) {
        let Engine {
            slots,
            stats,
            shared,
            active_slots,
            ..
        } = self;
        let Some(shared) = shared.as_mut() else {
            return;
        };
        let budget = active_slots.len() + SHARED_BATCH;
        let (mut read, mut malformed, mut ssrc_scans) = (0, 0, 0);
        while read < budget {
            let want = SHARED_BATCH.min(budget - read);
            let got = shared
                .receive_batch
                .receive(shared.rtcp.as_raw_fd(), want)
                .unwrap_or(0);
            for i in 0..got {
                let Some(source) = shared.receive_batch.source(i) else {
                    continue;
                };
                let Ok(summary) = check_rtcp(shared.receive_batch.datagram(i)) else {
                    malformed += 1;
                    continue;
                };
                let index = match shared.demux.rtcp_sender(source) {
                    Some(index) => Some(index),
                    None if ssrc_scans < RTCP_SSRC_SCANS_PER_POLL => {
                        ssrc_scans += 1;
                        slots.iter().position(|slot| {
                            slot.active
                                && slot.rtp_socket.is_none()
                                && slot.reception.ssrc == Some(summary.sender_ssrc)
                        })
                    }
                    None => None,
                };
                let Some(index) = index else {
                    continue;
                };
                slots[index].latch_rtcp(source);
                shared.demux.file(index, filed_as(&slots[index]));
            }
            read += got;
            if got < want {
                break;
            }
        }
        add(&stats.malformed, malformed);
    }

    /// Receives the member's datagrams, plays one frame and adds it to the mix if it talks.
    fn receive_and_mix(&mut self, index: usize, now: Instant) {
        let poll_rtcp = (self.tick_number + index as u64).is_multiple_of(RTCP_POLL_TICKS);
        let Engine {
            slots,
            mixes,
            stats,
            receive_batch: batch,
            ..
        } = self;
        let slot = &mut slots[index];
        let mut packets_in = 0;
        let mut malformed = 0;
        let mut foreign = 0;
        // One recvmmsg takes what waits (up to the per-tick cap) and stops at an
        // empty socket without a second call. An error (an ICMP port unreachable
        // surfacing, say) is not ours to handle: what waits is read next tick.
        let waiting = slot
            .rtp_socket
            .as_ref()
            .and_then(|socket| batch.receive(socket.as_raw_fd(), DATAGRAMS_PER_TICK).ok())
            .unwrap_or(0);
        for i in 0..waiting {
            let Some(source) = batch.source(i) else {
                continue;
            };
            match slot.receive_rtp(batch.datagram(i), source, now) {
                Received::Audio(_) | Received::TelephoneEvent => packets_in += 1,
                Received::Malformed | Received::UnexpectedPayloadType(_) => malformed += 1,
                Received::ForeignSource => foreign += 1,
            }
        }
        let waiting = slot
            .rtcp_socket
            .as_ref()
            .filter(|_| poll_rtcp)
            .and_then(|socket| batch.receive(socket.as_raw_fd(), DATAGRAMS_PER_TICK).ok())
            .unwrap_or(0);
        for i in 0..waiting {
            let Some(source) = batch.source(i) else {
                continue;
            };
            if check_rtcp(batch.datagram(i)).is_ok() {
                slot.latch_rtcp(source);
            } else {
                malformed += 1;
            }
        }
        add(&stats.packets_in, packets_in);
        add(&stats.malformed, malformed);
        add(&stats.foreign, foreign);
        slot.keep_rtp_connection(now);

        let frame = mixes[slot.mix as usize].frame_samples();
        if slot.play_frame(frame) == Played::Lost {
            add(&stats.packets_lost, 1);
        }
        // Every codec today is narrowband, so the frame is already at the receiver's 8 kHz.
        slot.dtmf.on_audio(&slot.pcm[..frame]);
        let suspected_now = slot.dtmf.tone_suspected();
        // Presses act before this tick's contribution, so a key takes effect at once.
        while let Some(press) = self.slots[index].dtmf.poll_press() {
            self.on_press(index, press, now);
        }

        let Engine { slots, mixes, .. } = self;
        let slot = &mut slots[index];
        let mix = &mut mixes[slot.mix as usize];
        let may_talk = !slot.flags.muted && !slot.flags.held;
        // DTMF.md, "Bleed": once the receiver suspects a key's tone, the member
        // is heard one frame late, so the frame holding the tone's start is
        // still kept from the others; until then, and again from its next
        // frame of pause (dropped), it is heard on time.
        let held_back = if !may_talk {
            slot.lagging = false;
            false
        } else if slot.lagging {
            // Last tick's frame goes in unless a key's tone was suspected in it or is now.
            let held_back = slot.delayed_is_tone || suspected_now;
            slot.contribution[..frame].copy_from_slice(&slot.delayed[..frame]);
            slot.delayed[..frame].copy_from_slice(&slot.pcm[..frame]);
            slot.delayed_is_tone = suspected_now;
            if !held_back && slot.gate.is_quiet(&slot.contribution[..frame]) {
                // A frame of pause: drop it and catch up.
                slot.lagging = false;
                slot.contribution[..frame].copy_from_slice(&slot.pcm[..frame]);
            }
            held_back
        } else if suspected_now {
            // A key may be starting: keep this frame back and fall a frame behind.
            slot.lagging = true;
            slot.delayed[..frame].copy_from_slice(&slot.pcm[..frame]);
            slot.delayed_is_tone = true;
            true
        } else {
            slot.contribution[..frame].copy_from_slice(&slot.pcm[..frame]);
            false
        };
        let talking = if !may_talk {
            slot.gate.close();
            false
        } else if held_back {
            // A key, not speech: keep it out, and leave the gate as it was.
            slot.gate.is_open()
        } else {
            slot.gate.update(&slot.contribution[..frame])
        };
        slot.contributed = talking && !held_back;
        if slot.contributed {
            if slot.keypad.talk_step != 0 {
                apply_gain(&mut slot.contribution[..frame], slot.keypad.talk_gain());
            }
            mix.add_talker(&slot.contribution[..frame]);
        }
        let key = slot.key;
        let talking_changed = talking != slot.talking_reported;
        slot.talking_reported = talking;
        let timed_out = slot.check_rtp_timeout(now, self.config.rtp_timeout);
        if talking_changed {
            self.emit(Event::Talking { key, talking });
        }
        // A lost timeout would leave the call up, and the slot sending, for
        // good: one that does not fit in the queue is raised again next tick.
        if timed_out && !self.emit(Event::RtpTimeout { key }) {
            self.slots[index].timeout_reported = false;
        }
    }

    /// A press the member's receiver counted: always reported, and on a keypad
    /// conference carried out (DESIGN.md's keypad table) with a confirmation
    /// tone for the member alone.
    fn on_press(&mut self, index: usize, press: DigitPress, now: Instant) {
        let slot = &mut self.slots[index];
        let key = slot.key;
        let digit = Event::Digit {
            key,
            digit: press.digit,
            duration_ms: press.duration_ms(),
            source: press.source,
        };
        if !slot.keypad_enabled {
            self.emit(digit);
            return;
        }
        let outcome = slot.keypad.press(press.digit, slot.flags);
        if outcome.gate_changed {
            let step = (slot.keypad.gate_step + MAX_STEPS) as usize;
            slot.gate.set_levels(self.gate_levels[step]);
        }
        if let Some(confirmation) = outcome.confirmation {
            slot.confirmation.start(confirmation, CONFERENCE_RATE_HZ);
        }
        let changed_flags = outcome.flags.filter(|&flags| flags != slot.flags);
        if let Some(flags) = changed_flags {
            slot.set_flags(flags, now);
        }
        self.emit(digit);
        if let Some(flags) = changed_flags {
            self.emit(Event::FlagsChanged { key, flags });
        }
        if outcome.leave {
            self.emit(Event::Leave { key });
        }
    }

    /// Sends this tick's packet: the member's own mix if it talked, the shared
    /// mix if it did not, silence if deaf (to keep NAT bindings open), nothing if held.
    fn send_rtp(&mut self, index: usize) {
        let Engine {
            slots,
            mixes,
            stats,
            send_buffer,
            payload_buffer,
            render_buffer,
            clips,
            shared,
            mix_members,
            ..
        } = self;
        let slot = &mut slots[index];
        let mix = &mut mixes[slot.mix as usize];
        let frame = mix.frame_samples();
        let frame_samples = frame as u32;
        if slot.flags.held {
            slot.sender.skip(frame_samples);
            return;
        }
        let mix_index = slot.mix as usize;
        let hears_nothing = mix_members[mix_index] == 1
            && !slot.confirmation.is_playing()
            && !clips.member_is_playing(index)
            && !clips.mix_is_playing(mix_index);
        if hears_nothing {
            let keepalive = slot.quiet_ticks.is_multiple_of(LONE_KEEPALIVE_TICKS);
            slot.quiet_ticks = slot.quiet_ticks.wrapping_add(1);
            if !keepalive {
                slot.sender.skip(frame_samples);
                return;
            }
        } else {
            slot.quiet_ticks = 0;
        }
        let codec = slot.codec;
        let receive_gain = slot.keypad.receive_step != 0;
        let own_rendering =
            receive_gain || slot.confirmation.is_playing() || clips.member_is_playing(index);
        let payload: &[u8] = if own_rendering {
            // A confirmation tone or a receive gain: this member gets a mix of its own.
            let heard = &mut render_buffer[..frame];
            if slot.flags.deaf {
                heard.fill(0);
            } else {
                if slot.contributed {
                    mix.render_for_talker(&slot.contribution[..frame], heard);
                } else {
                    mix.render_for_listener(heard);
                }
                if receive_gain {
                    apply_gain(heard, slot.keypad.receive_gain());
                }
            }
            // A deaf member still hears its own keys answered.
            slot.confirmation.mix_into(heard);
            // So does a clip played to this member alone.
            clips.add_to_member(index, heard);
            let len = codec.encode(heard, payload_buffer);
            &payload_buffer[..len]
        } else if slot.flags.deaf {
            payload_buffer[..frame].fill(codec.silence_byte());
            &payload_buffer[..frame]
        } else if slot.contributed {
            let len = mix.encode_for_talker(&slot.contribution[..frame], codec, payload_buffer);
            &payload_buffer[..len]
        } else {
            mix.encoded_for_listener(codec)
        };
        let Ok(len) =
            slot.sender
                .write_next(codec.payload_type(), payload, frame_samples, send_buffer)
        else {
            add(&stats.send_errors, 1);
            return;
        };
        let Some(socket) = slot.rtp_socket.as_ref() else {
            if let Some(shared) = shared.as_mut() {
                if shared.send_batch.is_full() {
                    shared.flush(stats);
                }
                shared.send_batch.push(&slot.remote_rtp_raw, |datagram| {
                    datagram[..len].copy_from_slice(&send_buffer[..len]);
                    len
                });
            }
            return;
        };
        let sent = if slot.rtp_connected_to == Some(slot.remote_rtp) {
            socket.send(&send_buffer[..len])
        } else {
            socket.send_to(&send_buffer[..len], slot.remote_rtp)
        };
        match sent {
            Ok(_) => add(&stats.packets_out, 1),
            Err(error) => {
                add(&stats.send_errors, 1);
                let not_connected = matches!(
                    error.raw_os_error(),
                    Some(libc::ENOTCONN | libc::EDESTADDRREQ)
                );
                if not_connected {
                    // Dissolved behind the slot's back (another holder of the
                    // call's socket): connect again on the next receive.
                    slot.forget_rtp_connection();
                }
            }
        }
    }

    /// Sends an SR (or RR if we never sent), SDES CNAME, and BYE when `bye`.
    fn send_rtcp(&mut self, index: usize, ntp_timestamp: u64, bye: bool) {
        let slot = &mut self.slots[index];
        let sender = &slot.sender;
        let info = SenderInfo {
            ntp_timestamp,
            rtp_timestamp: sender.timestamp(),
            packets_sent: sender.packets_sent,
            octets_sent: sender.octets_sent,
        };
        let sender_info = (sender.packets_sent > 0).then_some(&info);
        let block = slot.reception.report_block();
        let Ok(len) = write_rtcp_report(
            sender.ssrc,
            sender_info,
            block.as_ref(),
            bye,
            &mut self.rtcp_buffer,
        ) else {
            add(&self.stats.send_errors, 1);
            return;
        };
        let socket = match (slot.rtcp_socket.as_ref(), self.shared.as_ref()) {
            (Some(own), _) => own,
            (None, Some(shared)) => &shared.rtcp,
            (None, None) => return,
        };
        if socket
            .send_to(&self.rtcp_buffer[..len], slot.remote_rtcp)
            .is_err()
        {
            add(&self.stats.send_errors, 1);
        }
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
}

/// What a slot is filed under in the shared port's demultiplexer: its RTP and
/// RTCP addresses, and while no RTP has come its SDP address's IP (for the
/// NAT latch); nothing if it is free or has its own sockets.
fn filed_as(slot: &Slot) -> Filed {
    if !slot.active || slot.rtp_socket.is_some() {
        return Filed::default();
    }
    let usable = |address: SocketAddr| {
        (!address.ip().is_unspecified() && address.port() != 0).then_some(address)
    };
    let rtp = usable(slot.remote_rtp);
    Filed {
        rtp,
        rtcp: usable(slot.remote_rtcp),
        waiting: rtp
            .filter(|_| !slot.rtp_arrived())
            .map(|address| address.ip()),
    }
}

/// Scales samples by a linear gain from the keypad table, saturating at 16 bits.
fn apply_gain(samples: &mut [i16], gain: f32) {
    for sample in samples.iter_mut() {
        *sample = (f32::from(*sample) * gain).clamp(-32768.0, 32767.0) as i16;
    }
}

fn add(counter: &AtomicU64, amount: u64) {
    if amount > 0 {
        counter.fetch_add(amount, Ordering::Relaxed);
    }
}

/// Seconds from 1900 (NTP era 0) to 1970 (Unix epoch).
const NTP_UNIX_OFFSET_SECONDS: u64 = 2_208_988_800;

/// Wall time as a 64-bit NTP timestamp, for RTCP sender reports.
fn ntp_now() -> u64 {
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let seconds = since_unix.as_secs() + NTP_UNIX_OFFSET_SECONDS;
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::Codec;
    use crate::media::rtp::{write_rtp, RtpHeader, RtpPacket};
    use crate::media::{spawn, MediaHandle, MemberFlags, MemberKeys};
    use crate::net::udp::disconnect;
    use std::net::{IpAddr, SocketAddr, UdpSocket};

    fn loopback_socket() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").expect("bind loopback")
    }

    /// A socket on `ip` bound to a port named in the bind, as `PortPool`
    /// binds them (a port the kernel picked is let go when a connection is
    /// dissolved; a named one is kept).
    fn explicit_port_socket(ip: IpAddr) -> UdpSocket {
        for _ in 0..32 {
            let port = address(&loopback_socket()).port();
            if let Ok(socket) = UdpSocket::bind((ip, port)) {
                return socket;
            }
        }
        panic!("no free port on {ip} in 32 tries");
    }

    fn address(socket: &UdpSocket) -> SocketAddr {
        socket.local_addr().expect("bound")
    }

    /// A phone on loopback: its RTP socket and the engine socket it talks to.
    struct Phone {
        rtp: UdpSocket,
        rtcp: UdpSocket,
        bridge: SocketAddr,
        tone_hz: f64,
    }

    /// A member's bridge-side sockets and the phone facing them.
    fn member_with_phone(key: MemberKey, flags: MemberFlags, tone_hz: f64) -> (AddMember, Phone) {
        let sockets = (loopback_socket(), loopback_socket());
        member_on(sockets, None, key, flags, tone_hz)
    }

    /// A member on the given bridge-side RTP/RTCP pair, our SDP naming
    /// `sdp_ip` (`MemberSockets::Own`), and a phone facing it.
    fn member_on(
        (member_rtp, member_rtcp): (UdpSocket, UdpSocket),
        sdp_ip: Option<IpAddr>,
        key: MemberKey,
        flags: MemberFlags,
        tone_hz: f64,
    ) -> (AddMember, Phone) {
        let phone = Phone {
            rtp: loopback_socket(),
            rtcp: loopback_socket(),
            bridge: address(&member_rtp),
            tone_hz,
        };
        let add = AddMember {
            key,
            mix: 0,
            sockets: MemberSockets::Own {
                rtp: member_rtp,
                rtcp: member_rtcp,
                sdp_ip,
            },
            remote_rtp: address(&phone.rtp),
            remote_rtcp: address(&phone.rtcp),
            codec: Codec::Pcmu,
            telephone_event_pt: Some(101),
            flags,
            keypad: true,
        };
        (add, phone)
    }

    /// Adds a member to a running engine; returns its key and phone.
    fn add_member(
        media: &mut MediaHandle,
        keys: &mut MemberKeys,
        tone_hz: f64,
    ) -> (MemberKey, Phone) {
        let key = keys.allocate().expect("slot");
        let (add, phone) = member_with_phone(key, MemberFlags::default(), tone_hz);
        media
            .send(Command::AddMember(Box::new(add)))
            .expect("queue has room");
        (key, phone)
    }

    /// One frame of the phone's tone as an RTP packet.
    fn tone_packet(phone: &Phone, frame: u32, datagram: &mut [u8]) -> usize {
        let mut pcm = [0i16; 160];
        for (n, sample) in pcm.iter_mut().enumerate() {
            let t = f64::from(frame * 160 + n as u32) / 8000.0;
            *sample = (8000.0 * (2.0 * std::f64::consts::PI * phone.tone_hz * t).sin()) as i16;
        }
        let mut payload = [0u8; 160];
        Codec::Pcmu.encode(&pcm, &mut payload);
        let header = RtpHeader {
            payload_type: 0,
            marker: frame == 0,
            sequence: frame as u16,
            timestamp: frame * 160,
            ssrc: 0x5EED,
        };
        write_rtp(&header, &payload, datagram).expect("fits")
    }

    /// Every RTP payload waiting on the phone's socket.
    fn received_payloads(phone: &Phone) -> Vec<Vec<u8>> {
        phone.rtp.set_nonblocking(true).expect("nonblocking");
        let mut datagram = [0u8; 1500];
        let mut payloads = Vec::new();
        while let Ok((len, _)) = phone.rtp.recv_from(&mut datagram) {
            let packet = RtpPacket::new_checked(&datagram[..len]).expect("bridge sends valid RTP");
            payloads.push(packet.payload().to_vec());
        }
        payloads
    }

    fn decoded(payloads: &[Vec<u8>]) -> Vec<i16> {
        let mut pcm = vec![0i16; payloads.iter().map(Vec::len).sum()];
        let mut at = 0;
        for payload in payloads {
            at += Codec::Pcmu.decode(payload, &mut pcm[at..]);
        }
        pcm
    }

    /// Sends `frames` 20 ms frames of the phone's tone at real-time pace; returns
    /// the audio it received, decoded.
    fn talk_and_listen(phone: &Phone, frames: u32) -> Vec<i16> {
        let mut heard = Vec::new();
        let mut datagram = [0u8; 1500];
        let started = Instant::now();
        for frame in 0..frames {
            let len = tone_packet(phone, frame, &mut datagram);
            phone
                .rtp
                .send_to(&datagram[..len], phone.bridge)
                .expect("send");
            heard.extend(decoded(&received_payloads(phone)));
            let next_frame_at = started + TICK * (frame + 1);
            std::thread::sleep(next_frame_at.saturating_duration_since(Instant::now()));
        }
        heard
    }

    /// Power of `frequency_hz` in `samples` (Goertzel).
    fn tone_power(samples: &[i16], frequency_hz: f64) -> f64 {
        let coefficient = 2.0 * (2.0 * std::f64::consts::PI * frequency_hz / 8000.0).cos();
        let (mut previous, mut before_previous) = (0.0, 0.0);
        for &sample in samples {
            let current = f64::from(sample) + coefficient * previous - before_previous;
            before_previous = previous;
            previous = current;
        }
        previous * previous + before_previous * before_previous
            - coefficient * previous * before_previous
    }

    #[test]
    fn two_phones_each_hear_the_other_and_not_themselves() {
        let (mut media, thread) = spawn(MediaConfig {
            max_members: 4,
            ..MediaConfig::default()
        })
        .expect("spawn");
        let mut keys = MemberKeys::new(4);
        let (_, high) = add_member(&mut media, &mut keys, 1000.0);
        let (_, low) = add_member(&mut media, &mut keys, 400.0);
        let (heard_by_high, heard_by_low) = std::thread::scope(|scope| {
            let high = scope.spawn(|| talk_and_listen(&high, 50));
            let low = scope.spawn(|| talk_and_listen(&low, 50));
            (high.join().expect("phone"), low.join().expect("phone"))
        });
        media.send(Command::Shutdown).expect("queue has room");
        thread.join().expect("media thread");

        for (heard, own_hz, other_hz) in [
            (&heard_by_high, 1000.0, 400.0),
            (&heard_by_low, 400.0, 1000.0),
        ] {
            assert!(
                heard.len() >= 160 * 20,
                "only {} samples arrived",
                heard.len()
            );
            let other = tone_power(heard, other_hz);
            let own = tone_power(heard, own_hz);
            assert!(
                other > 1000.0 * own,
                "{own_hz} Hz phone: other {other:e}, own {own:e}"
            );
        }
        let stats = media.stats();
        assert!(stats.packets_in.load(Ordering::Relaxed) >= 80);
        assert!(stats.packets_out.load(Ordering::Relaxed) >= 80);
        assert_eq!(stats.malformed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_silent_member_raises_one_rtp_timeout() {
        let (mut media, thread) = spawn(MediaConfig {
            max_members: 2,
            rtp_timeout: Duration::from_millis(300),
            ..MediaConfig::default()
        })
        .expect("spawn");
        let mut keys = MemberKeys::new(2);
        let (key, _phone) = add_member(&mut media, &mut keys, 1000.0);
        let started = Instant::now();
        let mut timeouts = Vec::new();
        while started.elapsed() < Duration::from_millis(1000) {
            while let Some(event) = media.poll_event() {
                if let Event::RtpTimeout { key } = event {
                    timeouts.push((key, started.elapsed()));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        media
            .send(Command::RemoveMember { key })
            .expect("queue has room");
        keys.release(key);
        media.send(Command::Shutdown).expect("queue has room");
        thread.join().expect("media thread");
        assert_eq!(timeouts.len(), 1, "{timeouts:?}");
        assert_eq!(timeouts[0].0, key);
        assert!(timeouts[0].1 >= Duration::from_millis(280));
    }

    /// A room of 20 joining and then hanging up at once, through a queue of
    /// 4: what does not fit waits in `MediaHandle`'s backlog, and in the end
    /// every slot is freed, so nothing is sent to the phones any more.
    /// (Before the backlog, 16 of the removals failed and their slots kept
    /// sending.)
    #[test]
    fn a_burst_bigger_than_the_queue_waits_and_every_member_is_removed() {
        let (mut media, thread) = spawn(MediaConfig {
            max_members: 32,
            command_queue_len: 4,
            ..MediaConfig::default()
        })
        .expect("spawn");
        let mut keys = MemberKeys::new(32);
        let members: Vec<(MemberKey, Phone)> = (0..20)
            .map(|_| {
                let key = keys.allocate().expect("slot");
                let (add, phone) = member_with_phone(key, MemberFlags::default(), 1000.0);
                assert!(media.send(Command::AddMember(Box::new(add))).is_ok());
                phone
                    .rtp
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("timeout");
                (key, phone)
            })
            .collect();
        assert!(media.has_backlog(), "20 adds do not fit in a queue of 4");
        let flush_all = |media: &mut MediaHandle| {
            // The media thread takes what fits in the queue each 20 ms tick.
            for _ in 0..400 {
                if !media.flush_backlog() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("the backlog did not empty within 2 s");
        };
        flush_all(&mut media);
        // Every member is in the mix: each is sent a frame every tick.
        let mut buf = [0u8; 512];
        for (_, phone) in &members {
            assert!(phone.rtp.recv_from(&mut buf).is_ok(), "every member sends");
        }

        for (key, _) in &members {
            assert!(media.send(Command::RemoveMember { key: *key }).is_ok());
            keys.release(*key);
        }
        assert!(
            media.has_backlog(),
            "20 removals do not fit in a queue of 4"
        );
        flush_all(&mut media);
        // What was sent before the last removal was taken, then silence (a
        // member left behind would keep the reads below from timing out).
        std::thread::sleep(Duration::from_millis(60));
        for (_, phone) in &members {
            for _ in 0..100 {
                if phone.rtp.recv_from(&mut buf).is_err() {
                    break;
                }
            }
            assert!(
                phone.rtp.recv_from(&mut buf).is_err(),
                "a removed member still sends"
            );
        }
        media.send(Command::Shutdown).expect("queue has room");
        thread.join().expect("media thread");
    }

    /// Three members go silent at once into an event queue of two slots,
    /// read only now and then: every timeout still arrives, once each.
    #[test]
    fn rtp_timeouts_that_find_the_event_queue_full_are_raised_again() {
        let (mut media, thread) = spawn(MediaConfig {
            max_members: 3,
            rtp_timeout: Duration::from_millis(200),
            event_queue_len: 2,
            ..MediaConfig::default()
        })
        .expect("spawn");
        let mut keys = MemberKeys::new(3);
        let members: Vec<(MemberKey, Phone)> = (0..3)
            .map(|_| add_member(&mut media, &mut keys, 1000.0))
            .collect();
        let started = Instant::now();
        let mut timeouts = Vec::new();
        while started.elapsed() < Duration::from_millis(1500) && timeouts.len() < 3 {
            std::thread::sleep(Duration::from_millis(100));
            while let Some(event) = media.poll_event() {
                if let Event::RtpTimeout { key } = event {
                    timeouts.push(key);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        while let Some(event) = media.poll_event() {
            if let Event::RtpTimeout { key } = event {
                timeouts.push(key);
            }
        }
        for (key, _) in &members {
            media
                .send(Command::RemoveMember { key: *key })
                .expect("queue has room");
            keys.release(*key);
        }
        media.send(Command::Shutdown).expect("queue has room");
        thread.join().expect("media thread");
        timeouts.sort_by_key(|key| key.slot);
        let mut expected: Vec<MemberKey> = members.iter().map(|(key, _)| *key).collect();
        expected.sort_by_key(|key| key.slot);
        assert_eq!(timeouts, expected);
    }

    #[test]
    fn removing_a_member_sends_rtcp_bye() {
        let (mut media, thread) = spawn(MediaConfig {
            max_members: 1,
            ..MediaConfig::default()
        })
        .expect("spawn");
        let mut keys = MemberKeys::new(1);
        let (key, phone) = add_member(&mut media, &mut keys, 1000.0);
        media
            .send(Command::RemoveMember { key })
            .expect("queue has room");
        keys.release(key);
        phone
            .rtcp
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut datagram = [0u8; 256];
        let (len, _) = phone.rtcp.recv_from(&mut datagram).expect("an RTCP packet");
        let summary = check_rtcp(&datagram[..len]).expect("valid RTCP");
        assert!(summary.has_bye);
        media.send(Command::Shutdown).expect("queue has room");
        thread.join().expect("media thread");
        assert_eq!(media.stats().commands_dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_member_alone_is_sent_silence_once_a_second_and_full_rate_once_someone_joins() {
        let (_commands_in, commands) = rtrb::RingBuffer::new(16);
        let (events, _events_out) = rtrb::RingBuffer::new(64);
        let config = MediaConfig {
            max_members: 2,
            ..MediaConfig::default()
        };
        let stats = Arc::new(MediaStats::default());
        let mut engine = Engine::new(config, commands, events, stats).expect("engine");
        let start = Instant::now();
        let key = |slot| MemberKey {
            slot,
            generation: 1,
        };
        let (add, alone) = member_with_phone(key(0), MemberFlags::default(), 1000.0);
        engine.add_member(add, start);
        let mut datagram = [0u8; 1500];
        let mut tick = 0u32;
        let mut run = |engine: &mut Engine, tick: &mut u32, ticks: u32, phones: &[&Phone]| {
            for _ in 0..ticks {
                for phone in phones {
                    let len = tone_packet(phone, *tick, &mut datagram);
                    phone
                        .rtp
                        .send_to(&datagram[..len], phone.bridge)
                        .expect("send");
                }
                std::thread::sleep(Duration::from_millis(1));
                assert_eq!(engine.tick(start + TICK * *tick, 0), Continue::Running);
                *tick += 1;
            }
        };
        let packets = |phone: &Phone| {
            phone.rtp.set_nonblocking(true).expect("nonblocking");
            let mut datagram = [0u8; 1500];
            let mut headers = Vec::new();
            while let Ok((len, _)) = phone.rtp.recv_from(&mut datagram) {
                let packet = RtpPacket::new_checked(&datagram[..len]).expect("valid RTP");
                headers.push((packet.marker(), packet.sequence(), packet.timestamp()));
            }
            headers
        };
        // Alone (talking, even): 2 s bring a packet at once and one a second.
        run(&mut engine, &mut tick, 2 * LONE_KEEPALIVE_TICKS, &[&alone]);
        let lone = packets(&alone);
        assert_eq!(lone.len(), 2, "{lone:?}");
        assert_eq!(
            lone[1].1,
            lone[0].1.wrapping_add(1),
            "sequence numbers stay contiguous"
        );
        assert_eq!(
            lone[1].2.wrapping_sub(lone[0].2),
            160 * LONE_KEEPALIVE_TICKS,
            "the timestamp keeps real time"
        );
        // Someone joins: every tick again, the first packet marked.
        let (add, other) = member_with_phone(key(1), MemberFlags::default(), 400.0);
        engine.add_member(add, start + TICK * tick);
        run(&mut engine, &mut tick, 10, &[&alone, &other]);
        let together = packets(&alone);
        assert_eq!(together.len(), 10);
        assert!(together[0].0, "the marker bit starts the talkspurt");
        assert!(together[1..].iter().all(|packet| !packet.0));
    }

    #[test]
    fn muted_is_not_heard_deaf_hears_silence_and_held_gets_nothing() {
        let (_commands_in, commands) = rtrb::RingBuffer::new(16);
        let (events, mut events_out) = rtrb::RingBuffer::new(16);
        let stats = Arc::new(MediaStats::default());
        let config = MediaConfig {
            max_members: 5,
            ..MediaConfig::default()
        };
        let mut engine = Engine::new(config, commands, events, Arc::clone(&stats)).expect("engine");
        let flags = [
            MemberFlags::default(),
            MemberFlags {
                muted: true,
                ..MemberFlags::default()
            },
            MemberFlags {
                deaf: true,
                ..MemberFlags::default()
            },
            MemberFlags {
                held: true,
                ..MemberFlags::default()
            },
            MemberFlags::default(),
        ];
        let tones = [1000.0, 400.0, 0.0, 0.0, 0.0];
        let start = Instant::now();
        let phones: Vec<(MemberKey, Phone)> = (0..5)
            .map(|slot| {
                let key = MemberKey {
                    slot,
                    generation: 1,
                };
                let (add, phone) =
                    member_with_phone(key, flags[slot as usize], tones[slot as usize]);
                engine.add_member(add, start);
                (key, phone)
            })
            .collect();
        let mut datagram = [0u8; 1500];
        for frame in 0..20u32 {
            for (_, phone) in &phones[..2] {
                let len = tone_packet(phone, frame, &mut datagram);
                phone
                    .rtp
                    .send_to(&datagram[..len], phone.bridge)
                    .expect("send");
            }
            // Faster than real time: the engine takes the time it is given.
            std::thread::sleep(Duration::from_millis(1));
            assert_eq!(engine.tick(start + TICK * frame, 0), Continue::Running);
        }

        let listener = decoded(&received_payloads(&phones[4].1));
        assert!(tone_power(&listener, 1000.0) > 1000.0 * tone_power(&listener, 400.0));
        let deaf = received_payloads(&phones[2].1);
        assert_eq!(deaf.len(), 20);
        assert!(deaf
            .iter()
            .flatten()
            .all(|&byte| byte == Codec::Pcmu.silence_byte()));
        assert!(received_payloads(&phones[3].1).is_empty());

        let talker = phones[0].0;
        let mut talking = Vec::new();
        while let Ok(event) = events_out.pop() {
            if let Event::Talking { key, talking: on } = event {
                talking.push((key, on));
            }
        }
        assert_eq!(talking, [(talker, true)]);
    }

    /// An engine on loopback (with a shared port unless made `per_call`),
    /// driven tick by tick.
    struct TickedBridge {
        engine: Engine,
        commands: rtrb::Producer<Command>,
        stats: Arc<MediaStats>,
        port: SocketAddr,
        start: Instant,
        ticks: u32,
    }

    impl TickedBridge {
        fn new(max_members: usize) -> TickedBridge {
            TickedBridge::with_shared_port(max_members, Some(SocketAddr::from(([127, 0, 0, 1], 0))))
        }

        /// Members bring their own sockets (`add_own`).
        fn per_call(max_members: usize) -> TickedBridge {
            TickedBridge::with_shared_port(max_members, None)
        }

        fn with_shared_port(max_members: usize, shared_port: Option<SocketAddr>) -> TickedBridge {
            let (commands, commands_out) = rtrb::RingBuffer::new(16);
            let (events, _events_out) = rtrb::RingBuffer::new(1024);
            let stats = Arc::new(MediaStats::default());
            let config = MediaConfig {
                max_members,
                shared_port,
                ..MediaConfig::default()
            };
            let engine = Engine::new(config, commands_out, events, Arc::clone(&stats))
                .expect("bind a shared pair on loopback");
            let port = engine.shared_port().unwrap_or(0);
            TickedBridge {
                engine,
                commands,
                stats,
                port: SocketAddr::from(([127, 0, 0, 1], port)),
                start: Instant::now(),
                ticks: 0,
            }
        }

        /// A member with its own RTP/RTCP pair, bound to explicit ports as the
        /// call's port pool binds them, and our SDP naming `sdp_ip`; returns
        /// a clone of its RTP socket too, kept as the call keeps it.
        fn add_own(
            &mut self,
            slot: u32,
            sdp_ip: IpAddr,
            tone_hz: f64,
        ) -> (MemberKey, Phone, UdpSocket) {
            self.add_own_bound(slot, IpAddr::from([127, 0, 0, 1]), sdp_ip, tone_hz)
        }

        /// As `add_own`, the member's sockets bound on `bind`; an IPv4
        /// phone talks to an IPv4-mapped `bind` at the IPv4 address.
        fn add_own_bound(
            &mut self,
            slot: u32,
            bind: IpAddr,
            sdp_ip: IpAddr,
            tone_hz: f64,
        ) -> (MemberKey, Phone, UdpSocket) {
            let key = MemberKey {
                slot,
                generation: 1,
            };
            let sockets = (explicit_port_socket(bind), explicit_port_socket(bind));
            let kept = sockets.0.try_clone().expect("clone");
            let (add, mut phone) =
                member_on(sockets, Some(sdp_ip), key, MemberFlags::default(), tone_hz);
            phone.bridge = SocketAddr::new(bind.to_canonical(), phone.bridge.port());
            self.command(Command::AddMember(Box::new(add)));
            (key, phone, kept)
        }

        /// Adds a member on the shared port whose SDP names `sdp_rtp`; the
        /// phone sends from `phone.rtp`, whatever the SDP said.
        fn add(&mut self, slot: u32, sdp_rtp: SocketAddr, tone_hz: f64) -> (MemberKey, Phone) {
            let key = MemberKey {
                slot,
                generation: 1,
            };
            let phone = Phone {
                rtp: loopback_socket(),
                rtcp: loopback_socket(),
                bridge: self.port,
                tone_hz,
            };
            let add = AddMember {
                key,
                mix: 0,
                sockets: MemberSockets::Shared,
                remote_rtp: sdp_rtp,
                remote_rtcp: SocketAddr::new(sdp_rtp.ip(), sdp_rtp.port() + 1),
                codec: Codec::Pcmu,
                telephone_event_pt: Some(101),
                flags: MemberFlags::default(),
                keypad: true,
            };
            self.command(Command::AddMember(Box::new(add)));
            (key, phone)
        }

        /// A member whose phone sends from exactly the address its SDP named.
        fn add_phone(&mut self, slot: u32, tone_hz: f64) -> (MemberKey, Phone) {
            let socket = loopback_socket();
            let (key, mut phone) = self.add(slot, address(&socket), tone_hz);
            phone.rtp = socket;
            (key, phone)
        }

        fn command(&mut self, command: Command) {
            self.commands.push(command).expect("queue has room");
        }

        /// `frames` ticks faster than real time, each `talkers` sending one frame first.
        fn run(&mut self, talkers: &[&Phone], frames: u32) {
            let mut datagram = [0u8; 1500];
            for _ in 0..frames {
                for phone in talkers {
                    let len = tone_packet(phone, self.ticks, &mut datagram);
                    phone
                        .rtp
                        .send_to(&datagram[..len], phone.bridge)
                        .expect("send");
                }
                // Loopback delivery is immediate, but give the kernel a moment.
                std::thread::sleep(Duration::from_millis(1));
                let now = self.start + TICK * self.ticks;
                assert_eq!(self.engine.tick(now, 0), Continue::Running);
                self.ticks += 1;
            }
        }

        fn packets_in(&self) -> u64 {
            self.stats.packets_in.load(Ordering::Relaxed)
        }
    }

    /// The phone hears the `heard_hz` tone and not its own.
    fn hears_only(phone: &Phone, heard_hz: f64) {
        let heard = decoded(&received_payloads(phone));
        assert!(heard.len() >= 160 * 10, "only {} samples", heard.len());
        let other = tone_power(&heard, heard_hz);
        let own = tone_power(&heard, phone.tone_hz);
        assert!(other > 1000.0 * own, "other {other:e}, own {own:e}");
    }

    #[test]
    fn an_own_socket_is_connected_to_its_phone_and_freed_for_a_phone_that_moved() {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let mut bridge = TickedBridge::per_call(4);
        let (key, phone, kept) = bridge.add_own(0, loopback, 1000.0);
        let (_, listener, _) = bridge.add_own(1, loopback, 400.0);
        let index = key.slot as usize;
        let port = address(&kept).port();
        bridge.run(&[&phone, &listener], 10);
        assert_eq!(kept.peer_addr().ok(), Some(address(&phone.rtp)));
        assert_eq!(
            bridge.engine.slots[index].rtp_connected_to,
            Some(address(&phone.rtp))
        );
        hears_only(&listener, 1000.0);
        hears_only(&phone, 400.0);

        // The phone moves (a NAT rebinding): nothing from the new port is
        // taken while the old stream is alive, as without a connection.
        let moved = Phone {
            rtp: loopback_socket(),
            ..phone
        };
        let before = bridge.packets_in();
        bridge.run(&[&moved], 5);
        assert_eq!(bridge.packets_in(), before);
        // Dropped by the kernel for the connection, so not counted.
        assert_eq!(bridge.stats.foreign.load(Ordering::Relaxed), 0);
        // Silent for over a second: the connection is dissolved, the socket
        // keeps its port, and the new source is latched and connected.
        bridge.run(&[&listener], 60);
        assert!(kept.peer_addr().is_err(), "still connected");
        assert_eq!(address(&kept).port(), port);
        let _ = received_payloads(&listener);
        bridge.run(&[&moved, &listener], 15);
        hears_only(&listener, 1000.0);
        hears_only(&moved, 400.0);
        assert_eq!(kept.peer_addr().ok(), Some(address(&moved.rtp)));

        // A connection dissolved behind the member's back (by another holder
        // of the call's socket) costs one packet and is made again.
        disconnect(kept.as_raw_fd()).expect("disconnect");
        let _ = received_payloads(&moved);
        bridge.run(&[&moved, &listener], 15);
        assert_eq!(kept.peer_addr().ok(), Some(address(&moved.rtp)));
        let heard = received_payloads(&moved).len();
        assert!(heard >= 13, "the phone got {heard} of 15 packets");

        // Leaving dissolves it, so the call's socket takes any source again.
        bridge.command(Command::RemoveMember { key });
        bridge.run(&[], 1);
        assert!(kept.peer_addr().is_err(), "still connected after leaving");
        assert_eq!(address(&kept).port(), port);
    }

    #[test]
    fn an_own_socket_is_not_connected_when_our_sdp_named_another_address() {
        // The route to the phone leaves from 127.0.0.1, but the SDP told it
        // to send to 127.0.0.2: connected, the socket would take datagrams
        // at 127.0.0.1 only.
        let mut bridge = TickedBridge::per_call(4);
        let (key, phone, kept) = bridge.add_own(0, IpAddr::from([127, 0, 0, 2]), 1000.0);
        let (_, listener, _) = bridge.add_own(1, IpAddr::from([127, 0, 0, 1]), 400.0);
        bridge.run(&[&phone, &listener], 15);
        assert!(kept.peer_addr().is_err());
        assert_eq!(
            bridge.engine.slots[key.slot as usize].rtp_connected_to,
            None
        );
        hears_only(&listener, 1000.0);
        hears_only(&phone, 400.0);
    }

    #[test]
    fn an_own_dual_stack_socket_is_connected_to_an_ipv4_phone() {
        // An IPv6 socket carrying IPv4, as one bound to `::` does, on loopback.
        let mapped = IpAddr::from(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let mut bridge = TickedBridge::per_call(4);
        let (key, talker, kept) = bridge.add_own_bound(0, mapped, loopback, 1000.0);
        let (_, listener, _) = bridge.add_own_bound(1, mapped, loopback, 400.0);
        bridge.run(&[&talker, &listener], 10);
        assert_eq!(
            bridge.engine.slots[key.slot as usize].rtp_connected_to,
            Some(address(&talker.rtp))
        );
        assert!(kept.peer_addr().is_ok(), "not connected");
        assert_eq!(bridge.stats.foreign.load(Ordering::Relaxed), 0);
        hears_only(&listener, 1000.0);
        hears_only(&talker, 400.0);
    }

    #[test]
    fn a_dual_stack_shared_port_tells_ipv4_phones_apart_and_they_hear_each_other() {
        let mapped_loopback = "[::ffff:127.0.0.1]:0".parse().expect("address");
        let mut bridge = TickedBridge::with_shared_port(4, Some(mapped_loopback));
        let (_, high) = bridge.add_phone(0, 1000.0);
        let (_, low) = bridge.add_phone(1, 400.0);
        bridge.run(&[&high, &low], 10);
        assert_eq!(bridge.stats.foreign.load(Ordering::Relaxed), 0);
        hears_only(&low, 1000.0);
        hears_only(&high, 400.0);
    }

    #[test]
    fn shared_port_members_are_told_apart_by_source_and_hear_each_other() {
        let mut bridge = TickedBridge::new(4);
        let (_, high) = bridge.add_phone(0, 1000.0);
        let (_, low) = bridge.add_phone(1, 400.0);
        bridge.run(&[&high, &low], 20);
        hears_only(&high, 400.0);
        hears_only(&low, 1000.0);
        assert_eq!(bridge.packets_in(), 40);
        assert_eq!(bridge.stats.packets_out.load(Ordering::Relaxed), 40);
        assert_eq!(bridge.stats.send_errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn shared_port_latches_a_rewritten_port_for_the_only_member_waiting_at_that_ip() {
        let mut bridge = TickedBridge::new(4);
        // The SDP names a port nobody sends from (a NAT rewrote it).
        let (key, behind_nat) = bridge.add(0, SocketAddr::from(([127, 0, 0, 1], 9)), 1000.0);
        let (_, listener) = bridge.add_phone(1, 400.0);
        let index = key.slot as usize;
        // In its first half second an unknown port is more likely a newer
        // call from the same IP whose member is not filed yet: not taken.
        bridge.run(&[&behind_nat, &listener], 20);
        assert_eq!(
            bridge.engine.slots[index].remote_rtp,
            SocketAddr::from(([127, 0, 0, 1], 9))
        );
        assert_eq!(bridge.stats.foreign.load(Ordering::Relaxed), 20);
        let _ = received_payloads(&listener);
        let _ = received_payloads(&behind_nat);
        // Still nothing from where it said: the NAT's port is its.
        bridge.run(&[&behind_nat, &listener], 20);
        hears_only(&listener, 1000.0);
        hears_only(&behind_nat, 400.0);
        assert_eq!(
            bridge.engine.slots[index].remote_rtp,
            address(&behind_nat.rtp)
        );

        // Latched and alive: a second source at the same IP is foreign.
        let intruder = Phone {
            rtp: loopback_socket(),
            ..behind_nat
        };
        let before = bridge.packets_in();
        bridge.run(&[&intruder], 5);
        assert_eq!(
            bridge.packets_in(),
            before,
            "nobody takes the intruder's RTP"
        );
        assert_eq!(
            bridge.engine.slots[index].remote_rtp,
            address(&behind_nat.rtp)
        );
    }

    #[test]
    fn shared_port_rtp_from_an_unknown_port_is_dropped_when_two_members_wait_at_that_ip() {
        let mut bridge = TickedBridge::new(4);
        let nowhere = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (_, first) = bridge.add(0, nowhere(9), 1000.0);
        let (_, _second) = bridge.add(1, nowhere(11), 400.0);
        bridge.run(&[&first], 5);
        assert_eq!(bridge.packets_in(), 0);
        assert_eq!(bridge.stats.foreign.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn shared_port_follows_a_new_remote_address_and_forgets_a_removed_member() {
        let mut bridge = TickedBridge::new(4);
        let (key, talker) = bridge.add_phone(0, 1000.0);
        let (_, listener) = bridge.add_phone(1, 400.0);
        bridge.run(&[&talker, &listener], 10);
        assert_eq!(bridge.packets_in(), 20);

        // A re-INVITE moves the talker to a new socket: the old one is foreign.
        let moved = Phone {
            rtp: loopback_socket(),
            ..talker
        };
        bridge.command(Command::SetRemote {
            key,
            remote_rtp: address(&moved.rtp),
            remote_rtcp: address(&moved.rtcp),
        });
        received_payloads(&listener);
        bridge.run(&[&moved, &listener], 10);
        assert_eq!(bridge.packets_in(), 40);
        hears_only(&listener, 1000.0);
        let old = Phone {
            rtp: talker.rtp,
            rtcp: loopback_socket(),
            ..moved
        };
        bridge.run(&[&old], 5);
        assert_eq!(bridge.packets_in(), 40, "the old address is nobody's");

        // Removed: its RTP is dropped and nothing more is sent to it.
        bridge.command(Command::RemoveMember { key });
        bridge.run(&[], 1);
        received_payloads(&moved);
        bridge.run(&[&moved], 5);
        assert_eq!(bridge.packets_in(), 40);
        assert!(received_payloads(&moved).is_empty());
        assert_eq!(bridge.engine.active_slots.len(), 1);
    }

    #[test]
    fn shared_port_hold_and_resume_keep_the_member_found() {
        let mut bridge = TickedBridge::new(4);
        let (key, talker) = bridge.add_phone(0, 1000.0);
        let (_, listener) = bridge.add_phone(1, 400.0);
        bridge.run(&[&talker, &listener], 5);
        let held = MemberFlags {
            held: true,
            ..MemberFlags::default()
        };
        bridge.command(Command::SetFlags { key, flags: held });
        bridge.run(&[&listener], 5);
        received_payloads(&talker);
        bridge.run(&[&listener], 5);
        assert!(received_payloads(&talker).is_empty(), "held: nothing sent");
        bridge.command(Command::SetFlags {
            key,
            flags: MemberFlags::default(),
        });
        received_payloads(&listener);
        let before = bridge.packets_in();
        bridge.run(&[&talker, &listener], 20);
        assert_eq!(bridge.packets_in(), before + 40);
        hears_only(&listener, 1000.0);
        hears_only(&talker, 400.0);
    }

    #[test]
    fn a_report_to_a_members_own_rtcp_socket_is_latched_within_a_poll_period() {
        let mut bridge = TickedBridge::per_call(1);
        let (_, phone, _) = bridge.add_own(0, IpAddr::from([127, 0, 0, 1]), 1000.0);
        bridge.run(&[&phone], 1);
        let member_rtcp = address(bridge.engine.slots[0].rtcp_socket.as_ref().expect("own"));
        let reporter = loopback_socket();
        assert_ne!(bridge.engine.slots[0].remote_rtcp, address(&reporter));
        let mut report = [0u8; RTCP_COMPOUND_MAX_BYTES];
        let len = write_rtcp_report(0x5EED, None, None, false, &mut report).expect("fits");
        reporter.send_to(&report[..len], member_rtcp).expect("send");
        bridge.run(&[&phone], RTCP_POLL_TICKS as u32);
        assert_eq!(bridge.engine.slots[0].remote_rtcp, address(&reporter));
    }

    #[test]
    fn shared_port_rtcp_is_matched_by_ssrc_and_reports_leave_the_shared_pair() {
        let mut bridge = TickedBridge::new(2);
        let (key, phone) = bridge.add_phone(0, 1000.0);
        bridge.run(&[&phone], 2);
        // A receiver report from a port nobody named, about the stream's SSRC.
        let reporter = loopback_socket();
        let mut report = [0u8; RTCP_COMPOUND_MAX_BYTES];
        let len = write_rtcp_report(0x5EED, None, None, false, &mut report).expect("fits");
        let shared_rtcp = SocketAddr::new(bridge.port.ip(), bridge.port.port() + 1);
        reporter.send_to(&report[..len], shared_rtcp).expect("send");
        bridge.run(&[&phone], RTCP_POLL_TICKS as u32);
        assert_eq!(bridge.engine.slots[0].remote_rtcp, address(&reporter));

        bridge.command(Command::RemoveMember { key });
        bridge.run(&[], 1);
        reporter
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut datagram = [0u8; 256];
        let (len, from) = reporter.recv_from(&mut datagram).expect("an RTCP BYE");
        assert!(check_rtcp(&datagram[..len]).expect("valid RTCP").has_bye);
        assert_eq!(from, shared_rtcp);
    }
}
