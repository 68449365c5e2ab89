//! The load generator's one loop (see the crate's documentation): phones
//! placed at the ramp, each phone's frame sent on its own phase of the 20 ms
//! tick, what the bridge sent read with kernel timestamps, the pip timed, SIP
//! answered and retransmitted, and the figures of the measurement window.
//!
//! Everything runs on the calling thread over nonblocking sockets; the bridge
//! is reached only over SIP and RTP.

use crate::audio::{Hearing, Say, Sounds, FRAME_BYTES, MAX_FRAME_SAMPLES, PIP_FRAMES};
use crate::report::{self, Histogram, Reception, Report, Spread};
use crate::sip::{self, Dialog, T1_MS, TRANSACTION_TIMEOUT_MS};
use crate::system;
use crate::{LoadError, LoadtestArgs};
use sipconf::media::codec::g722::{G722Decoder, G722Encoder};
use sipconf::media::Codec;
use sipconf::net::poller::Poller;
use sipconf::net::udp::{self, RawAddr, ReceiveBatch, SendBatch};
use sipconf_testkit::testphone::{response_to, SipText};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// One RTP frame.
const TICK: Duration = Duration::from_millis(20);
/// After the last call is answered, this long passes before measuring, so jitter
/// buffers fill and noise gates settle.
const SETTLE: Duration = Duration::from_secs(1);
/// The marker pip repeats every this many ticks (1 s), halfway through each second.
const PIP_PERIOD_TICKS: u64 = 50;
/// How long to wait for answers to our BYEs at the end.
const HANGUP_WAIT: Duration = Duration::from_secs(10);
/// A listener quieter than this did not hear the talkers.
const HEARING_THRESHOLD_DBFS: f64 = -45.0;
/// epoll token of the SIP socket, the one socket in the epoll set.
const SIP_TOKEN: u64 = u64::MAX;
/// Send phases, 1 ms apart: phone `rank` in its room sends at `rank % PHASES` ms
/// into each tick.
pub(crate) const PHASES: usize = 20;
/// Which of a room's first `markers` phones (ranks, and so send phases, 0 to
/// `markers - 1`) sends the pip of period `period`. Every `markers`
/// consecutive periods give every one of them a turn, and the order strides
/// across the phases, so a short run is timed over phases spread through
/// the whole tick: with 20, a 10 s run hears phases 0, 11, 2, 13, ... 19,
/// one every 2 ms, not only 0-9 ms, which would time only the part of the
/// tick the bridge's tick happened to fall after.
fn pip_sender(period: usize, markers: usize) -> usize {
    if markers <= 1 {
        return 0;
    }
    let coprime = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a == 1
    };
    let stride = (markers / 2 + 1..)
        .find(|&stride| coprime(stride, markers))
        .unwrap_or(1);
    period * stride % markers
}

/// Frames one phone may send in one tick when the loop fell behind; further
/// behind, the schedule restarts.
const MAX_CATCH_UP_FRAMES: u64 = 5;
const RTP_HEADER_BYTES: usize = 12;
/// Datagrams a phone reads per tick: one is due, more after the loop (or the
/// bridge) fell behind; any beyond wait for the next tick.
const READ_PER_TICK: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallState {
    NotYet,
    Inviting { provisional: bool },
    Up,
    Failed,
    HangingUp,
    Ended,
}

struct Phone {
    room: usize,
    /// Place in the room: ranks below `--talkers` talk, ranks below `PHASES` send pips.
    rank: usize,
    /// Talker number (for its voice), if it talks.
    talker: Option<usize>,
    socket: UdpSocket,
    dialog: Dialog,
    state: CallState,
    invite_at: Instant,
    /// When the INVITE first left (realtime ns, as packet arrivals are
    /// stamped); `i64::MAX` before.
    invited_ns: i64,
    next_retransmit: Instant,
    retransmit_interval: Duration,
    /// The BYE, kept for retransmission.
    bye: String,
    bye_at: Instant,
    setup_ms: Option<f64>,
    hangup_ms: Option<f64>,
    remote_rtp: Option<RawAddr>,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    frames_sent: u64,
    reception: Reception,
    /// A G.722 talker's encoder (docs in `audio`); None otherwise.
    g722_out: Option<G722Encoder>,
    /// Decodes what the bridge sends a G.722 phone (unused for G.711).
    g722: G722Decoder,
    hearing: Hearing,
    hung_up_by_bridge: bool,
    hangup_failed: bool,
}

/// What happened during the measurement window.
struct Window {
    start: Instant,
    end: Instant,
    first_tick: u64,
    start_ns: i64,
    end_ns: i64,
    bridge_cpu_us: Option<u64>,
    own_cpu_us: u64,
}

pub(crate) struct Generator {
    target: SocketAddr,
    codec: Codec,
    room_names: Vec<String>,
    talkers_per_room: usize,
    ramp_per_s: f64,
    duration: Duration,
    pid: Option<u32>,
    sounds: Sounds,
    sip_socket: UdpSocket,
    phones: Vec<Phone>,
    poller: Poller,
    sip_in: ReceiveBatch,
    sip_out: SendBatch,
    rtp_in: ReceiveBatch,
    rtp_out: SendBatch,
    started: Instant,
    /// Phones by send phase (index into `phones`).
    phase_members: Vec<Vec<usize>>,
    /// The next tick each send phase sends.
    next_tick: [u64; PHASES],
    /// Members per room.
    room_sizes: Vec<usize>,
    next_call: usize,
    window: Option<Window>,
    /// Send time (CLOCK_REALTIME ns) and sender of the latest pip in each room.
    pip_sent: Vec<Option<(i64, usize)>>,
    /// Pips sent in each room.
    pips_sent: Vec<u64>,
    delays_ms: Vec<f64>,
    /// RTP packets from the bridge that arrived in the window: member-ticks it served.
    window_packets: u64,
    arrival_lateness: Histogram,
    tick_lateness: Histogram,
    late_ticks: u64,
    /// Late ticks of send phases in the measurement window.
    late_ticks_in_window: u64,
    send_refused: u64,
    failures: BTreeMap<String, u64>,
    /// Bridge CPU and RSS figures at the window's end.
    bridge_end: Option<(u64, u64)>,
    own_cpu_end_us: u64,
}

impl Generator {
    pub(crate) fn new(args: &LoadtestArgs) -> Result<Generator, LoadError> {
        let limit = system::raise_open_file_limit();
        let room_names: Vec<String> = match args.room.parse::<u64>() {
            Ok(first) if args.rooms > 1 => (0..args.rooms as u64)
                .map(|n| (first + n).to_string())
                .collect(),
            _ => vec![args.room.clone()],
        };
        let sip_socket = udp::bind_timestamped(SocketAddr::new(args.local_ip, 0), Some(8 << 20))?;
        let local_sip = sip_socket.local_addr()?;
        let poller = Poller::new(8)?;
        poller.add(sip_socket.as_raw_fd(), SIP_TOKEN)?;
        let started = Instant::now();
        let mut phones = Vec::with_capacity(args.members);
        let mut phase_members = vec![Vec::new(); PHASES];
        let mut room_sizes = vec![0; room_names.len()];
        let mut talkers = 0;
        for index in 0..args.members {
            let room = index % room_names.len();
            let rank = index / room_names.len();
            room_sizes[room] += 1;
            phase_members[rank % PHASES].push(index);
            let talker = (rank < args.talkers).then(|| {
                talkers += 1;
                talkers - 1
            });
            let socket = udp::bind_timestamped(SocketAddr::new(args.local_ip, 0), None).map_err(
                |error| LoadError::Sockets {
                    members: args.members,
                    limit,
                    error,
                },
            )?;
            let mut dialog = Dialog::new(index, &room_names[room], args.target, local_sip);
            dialog.build_invite(socket.local_addr()?, args.codec);
            use rand::Rng;
            let mut rng = rand::rng();
            phones.push(Phone {
                room,
                rank,
                talker,
                socket,
                dialog,
                state: CallState::NotYet,
                invite_at: started,
                invited_ns: i64::MAX,
                next_retransmit: started,
                retransmit_interval: Duration::from_millis(T1_MS),
                bye: String::new(),
                bye_at: started,
                setup_ms: None,
                hangup_ms: None,
                remote_rtp: None,
                ssrc: rng.random(),
                sequence: rng.random(),
                timestamp: rng.random(),
                frames_sent: 0,
                reception: Reception::default(),
                g722_out: (talker.is_some() && args.codec == Codec::G722).then(G722Encoder::new),
                g722: G722Decoder::new(),
                hearing: Hearing::new(args.codec.sample_rate_hz()),
                hung_up_by_bridge: false,
                hangup_failed: false,
            });
        }
        let listeners = args.members as f64;
        let expected_pips = (args.duration + 1.0) * listeners;
        Ok(Generator {
            target: args.target,
            codec: args.codec,
            talkers_per_room: args.talkers,
            ramp_per_s: args.ramp,
            duration: Duration::from_secs_f64(args.duration),
            pid: args.pid,
            sounds: Sounds::new(args.codec),
            sip_socket,
            phones,
            poller,
            sip_in: ReceiveBatch::new(64),
            sip_out: SendBatch::new(64),
            rtp_in: ReceiveBatch::new(READ_PER_TICK),
            rtp_out: SendBatch::new(MAX_CATCH_UP_FRAMES as usize),
            started,
            phase_members,
            next_tick: [0; PHASES],
            room_sizes,
            next_call: 0,
            window: None,
            pip_sent: vec![None; room_names.len()],
            pips_sent: vec![0; room_names.len()],
            delays_ms: Vec::with_capacity(expected_pips as usize + 16),
            window_packets: 0,
            arrival_lateness: Histogram::default(),
            tick_lateness: Histogram::default(),
            late_ticks: 0,
            late_ticks_in_window: 0,
            send_refused: 0,
            failures: BTreeMap::new(),
            bridge_end: None,
            own_cpu_end_us: 0,
            room_names,
        })
    }

    fn tick_at(&self, tick: u64) -> Instant {
        self.started + TICK * tick as u32
    }

    /// When send phase `phase` sends its next tick.
    fn send_at(&self, phase: usize) -> Instant {
        self.tick_at(self.next_tick[phase]) + Duration::from_millis(phase as u64)
    }

    /// The next send of any phase.
    fn next_send_at(&self) -> Instant {
        (0..PHASES)
            .map(|phase| self.send_at(phase))
            .min()
            .unwrap_or(self.started)
    }

    fn call_at(&self, call: usize) -> Instant {
        self.started + Duration::from_secs_f64(call as f64 / self.ramp_per_s)
    }

    pub(crate) fn run(&mut self, progress: &mut dyn Write) -> Result<(), LoadError> {
        // Binding every phone's socket and encoding the sounds took time: the
        // schedule starts now, or every send phase would start out late.
        self.started = Instant::now();
        let mut next_progress = self.started + Duration::from_secs(1);
        let mut next_scan = self.started;
        let mut hangup_started: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.place_due_calls(now);
            if now >= next_scan {
                self.retransmit_and_time_out(now);
                next_scan = now + Duration::from_millis(50);
            }
            for phase in 0..PHASES {
                if hangup_started.is_none() && now >= self.send_at(phase) {
                    self.send_due_frames(now, phase)?;
                }
            }
            if self.window.is_none() && self.every_call_resolved() {
                self.open_window(now + SETTLE);
            }
            if let Some(end) = self.window.as_ref().map(|w| w.end) {
                if hangup_started.is_none() && now >= end {
                    // What arrived since each phone's last tick still counts.
                    for index in 0..self.phones.len() {
                        if self.phones[index].state == CallState::Up {
                            self.receive_rtp(index)?;
                        }
                    }
                    self.close_window();
                    self.hang_up_all(now);
                    hangup_started = Some(now);
                }
            }
            if let Some(since) = hangup_started {
                let waiting = self.phones.iter().any(|p| p.state == CallState::HangingUp);
                if !waiting || now.duration_since(since) > HANGUP_WAIT {
                    self.flush_sip();
                    break;
                }
            }
            if now >= next_progress {
                self.print_progress(progress, now);
                next_progress += Duration::from_secs(1);
            }
            self.flush_sip();

            let mut wake = next_progress.min(next_scan);
            if hangup_started.is_none() {
                wake = wake.min(self.next_send_at());
            }
            if self.next_call < self.phones.len() {
                wake = wake.min(self.call_at(self.next_call));
            }
            let now = Instant::now();
            let wait = wake.saturating_duration_since(now);
            let ready = if wait > Duration::ZERO && wait < Duration::from_millis(1) {
                // epoll counts in milliseconds; arrivals meanwhile keep their kernel stamps.
                std::thread::sleep(wait);
                self.poller.wait(0)?
            } else {
                self.poller.wait(wait.as_millis() as i32)?
            };
            self.handle_ready(ready)?;
        }
        Ok(())
    }

    fn every_call_resolved(&self) -> bool {
        self.next_call == self.phones.len()
            && self
                .phones
                .iter()
                .all(|p| !matches!(p.state, CallState::NotYet | CallState::Inviting { .. }))
    }

    fn open_window(&mut self, start: Instant) {
        let now_ns = udp::realtime_ns();
        let to_start = start.saturating_duration_since(Instant::now());
        let start_ns = now_ns + to_start.as_nanos() as i64;
        let first_tick = (start.duration_since(self.started).as_nanos() / TICK.as_nanos()) as u64;
        self.window = Some(Window {
            start,
            end: start + self.duration,
            first_tick,
            start_ns,
            end_ns: start_ns + self.duration.as_nanos() as i64,
            bridge_cpu_us: None,
            own_cpu_us: 0,
        });
    }

    fn close_window(&mut self) {
        if let Some(pid) = self.pid {
            if let (Some(cpu), Some(rss)) = (bridge_cpu_us(pid), bridge_rss_kb(pid)) {
                self.bridge_end = Some((cpu, rss));
            }
        }
        self.own_cpu_end_us = system::own_cpu_us();
    }

    /// Samples CPU counters when the window opens (called from the tick).
    fn mark_window_start(&mut self) {
        let pid = self.pid;
        if let Some(window) = self.window.as_mut() {
            window.bridge_cpu_us = pid.and_then(bridge_cpu_us);
            window.own_cpu_us = system::own_cpu_us();
        }
    }

    fn place_due_calls(&mut self, now: Instant) {
        let mut placed = 0;
        while self.next_call < self.phones.len() && now >= self.call_at(self.next_call) {
            let index = self.next_call;
            self.next_call += 1;
            let phone = &mut self.phones[index];
            phone.state = CallState::Inviting { provisional: false };
            phone.invite_at = now;
            phone.invited_ns = udp::realtime_ns();
            phone.retransmit_interval = Duration::from_millis(T1_MS);
            phone.next_retransmit = now + phone.retransmit_interval;
            let invite = std::mem::take(&mut phone.dialog.invite);
            self.send_sip(invite.as_bytes(), self.target);
            self.phones[index].dialog.invite = invite;
            placed += 1;
            if placed == 64 {
                // Let answers in before placing more.
                break;
            }
        }
    }

    fn retransmit_and_time_out(&mut self, now: Instant) {
        for index in 0..self.phones.len() {
            let phone = &mut self.phones[index];
            match phone.state {
                CallState::Inviting { provisional } => {
                    if now.duration_since(phone.invite_at)
                        > Duration::from_millis(TRANSACTION_TIMEOUT_MS)
                    {
                        phone.state = CallState::Failed;
                        *self.failures.entry("timeout".into()).or_default() += 1;
                    } else if !provisional && now >= phone.next_retransmit {
                        phone.retransmit_interval =
                            (phone.retransmit_interval * 2).min(Duration::from_millis(8 * T1_MS));
                        phone.next_retransmit = now + phone.retransmit_interval;
                        let invite = std::mem::take(&mut phone.dialog.invite);
                        self.send_sip(invite.as_bytes(), self.target);
                        self.phones[index].dialog.invite = invite;
                    }
                }
                CallState::HangingUp => {
                    if now.duration_since(phone.bye_at) > HANGUP_WAIT {
                        phone.state = CallState::Ended;
                        phone.hangup_failed = true;
                    } else if now >= phone.next_retransmit {
                        phone.retransmit_interval =
                            (phone.retransmit_interval * 2).min(Duration::from_millis(8 * T1_MS));
                        phone.next_retransmit = now + phone.retransmit_interval;
                        let bye = std::mem::take(&mut phone.bye);
                        self.send_sip(bye.as_bytes(), self.target);
                        self.phones[index].bye = bye;
                    }
                }
                _ => {}
            }
        }
    }

    fn hang_up_all(&mut self, now: Instant) {
        for index in 0..self.phones.len() {
            let phone = &mut self.phones[index];
            if phone.state != CallState::Up {
                continue;
            }
            phone.bye = phone.dialog.bye();
            phone.state = CallState::HangingUp;
            phone.bye_at = now;
            phone.retransmit_interval = Duration::from_millis(T1_MS);
            phone.next_retransmit = now + phone.retransmit_interval;
            let bye = std::mem::take(&mut phone.bye);
            self.send_sip(bye.as_bytes(), self.target);
            self.phones[index].bye = bye;
        }
    }

    fn send_sip(&mut self, bytes: &[u8], to: SocketAddr) {
        if self.sip_out.is_full() {
            self.flush_sip();
        }
        let to = RawAddr::new(to);
        self.sip_out.push(&to, |buf| {
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            n
        });
    }

    fn flush_sip(&mut self) {
        if !self.sip_out.is_empty() {
            self.sip_out.send(self.sip_socket.as_raw_fd());
        }
    }

    /// Every up phone of send phase `phase` reads what arrived since its last
    /// tick and sends the frames due since then, in one `sendmmsg` per phone.
    fn send_due_frames(&mut self, now: Instant, phase: usize) -> Result<(), LoadError> {
        let scheduled = self.send_at(phase);
        let lateness = now.saturating_duration_since(scheduled);
        self.tick_lateness.record(lateness.as_nanos() as i64);
        if lateness > Duration::from_millis(5) {
            self.late_ticks += 1;
        }
        let behind = (lateness.as_nanos() / TICK.as_nanos()) as u64 + 1;
        let frames = behind.min(MAX_CATCH_UP_FRAMES);
        let first_tick = if behind > MAX_CATCH_UP_FRAMES {
            // Too far behind: restart the schedule rather than burst.
            let elapsed = now.duration_since(self.started);
            (elapsed.as_nanos() / TICK.as_nanos()) as u64 + 1 - frames
        } else {
            self.next_tick[phase]
        };
        self.next_tick[phase] = first_tick + frames;
        let window_first_tick = self.window.as_ref().map(|w| w.first_tick);
        let window_opens =
            window_first_tick.is_some_and(|t| (first_tick..first_tick + frames).contains(&t));
        if phase == 0 && window_opens {
            self.mark_window_start();
        }
        let measuring_from = window_first_tick.unwrap_or(u64::MAX);
        let window_end_tick = window_first_tick
            .map(|t| t + (self.duration.as_nanos() / TICK.as_nanos()) as u64)
            .unwrap_or(0);
        if lateness > Duration::from_millis(5)
            && (measuring_from..window_end_tick).contains(&first_tick)
        {
            self.late_ticks_in_window += 1;
        }
        let frame_ticks = self.codec.rtp_frame_ticks();
        for member in 0..self.phase_members[phase].len() {
            let index = self.phase_members[phase][member];
            let phone = &mut self.phones[index];
            let Some(remote) = phone.remote_rtp else {
                continue;
            };
            if phone.state != CallState::Up {
                continue;
            }
            self.receive_rtp(index)?;
            let phone = &mut self.phones[index];
            let markers = self.room_sizes[phone.room].min(PHASES);
            // A phone alone in its room has nobody to time its pip: it stays
            // idle, so the idle-rooms figure measures idle members.
            let timed = self.room_sizes[phone.room] >= 2;
            let mut pip_sent = false;
            for tick in first_tick..first_tick + frames {
                // Pip period p (1 s) belongs to the room's phone of rank pip_sender(p).
                let pip_part = (timed && tick >= measuring_from && tick < window_end_tick)
                    .then(|| {
                        let since = tick - measuring_from;
                        let period = (since / PIP_PERIOD_TICKS) as usize;
                        let part = (since % PIP_PERIOD_TICKS).checked_sub(PIP_PERIOD_TICKS / 2)?;
                        (pip_sender(period, markers) == phone.rank && part < PIP_FRAMES as u64)
                            .then_some(part as usize)
                    })
                    .flatten();
                let say = match (pip_part, phone.talker) {
                    (Some(part), _) => {
                        pip_sent |= part == 0;
                        Say::Pip(part)
                    }
                    (None, Some(talker)) => Say::Voice(talker),
                    (None, None) => Say::Noise,
                };
                let mut payload = [0u8; FRAME_BYTES];
                self.sounds.frame(
                    phone.g722_out.as_mut(),
                    say,
                    phone.frames_sent,
                    &mut payload,
                );
                let (pt, seq, ts, ssrc) = (
                    payload_type(self.codec),
                    phone.sequence,
                    phone.timestamp,
                    phone.ssrc,
                );
                self.rtp_out.push(&remote, |buf| {
                    buf[0] = 0x80;
                    buf[1] = pt;
                    buf[2..4].copy_from_slice(&seq.to_be_bytes());
                    buf[4..8].copy_from_slice(&ts.to_be_bytes());
                    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
                    buf[RTP_HEADER_BYTES..RTP_HEADER_BYTES + FRAME_BYTES].copy_from_slice(&payload);
                    RTP_HEADER_BYTES + FRAME_BYTES
                });
                phone.sequence = phone.sequence.wrapping_add(1);
                phone.timestamp = phone.timestamp.wrapping_add(frame_ticks);
                phone.frames_sent += 1;
            }
            let accepted = self.rtp_out.send(phone.socket.as_raw_fd());
            if pip_sent {
                self.pip_sent[phone.room] = Some((udp::realtime_ns(), index));
                self.pips_sent[phone.room] += 1;
            }
            self.send_refused += frames - accepted as u64;
        }
        Ok(())
    }

    fn handle_ready(&mut self, ready: usize) -> Result<(), LoadError> {
        for i in 0..ready {
            let token = self.poller.token(i);
            if token == SIP_TOKEN {
                self.receive_sip()?;
            }
        }
        Ok(())
    }

    fn receive_rtp(&mut self, index: usize) -> Result<(), LoadError> {
        let Generator {
            phones,
            rtp_in,
            sounds,
            window,
            pip_sent,
            delays_ms,
            window_packets,
            arrival_lateness,
            codec,
            ..
        } = self;
        let phone = &mut phones[index];
        let count = rtp_in.receive(phone.socket.as_raw_fd(), READ_PER_TICK)?;
        let mut pcm = [0i16; MAX_FRAME_SAMPLES];
        for i in 0..count {
            let arrival_ns = rtp_in.arrival_ns(i).unwrap_or_else(udp::realtime_ns);
            let Some((ssrc, sequence, timestamp, payload)) =
                rtp_fields(rtp_in.datagram(i), payload_type(*codec))
            else {
                continue;
            };
            if !phone.reception.is_ours(ssrc, arrival_ns, phone.invited_ns) {
                continue;
            }
            let lateness = phone.reception.on_packet(sequence, timestamp, arrival_ns);
            let Some(window) = window.as_ref() else {
                continue;
            };
            if arrival_ns < window.start_ns || arrival_ns >= window.end_ns {
                continue;
            }
            *window_packets += 1;
            if let Some(late) = lateness {
                arrival_lateness.record(late);
            }
            let samples = sounds.decode(&mut phone.g722, payload, &mut pcm);
            let onset = phone.hearing.hear(&pcm[..samples], arrival_ns);
            if let (Some(onset), Some((sent_ns, sender))) = (onset, pip_sent[phone.room]) {
                let delay_ns = onset - sent_ns;
                if sender != index
                    && (0..1_000_000_000).contains(&delay_ns)
                    && delays_ms.len() < delays_ms.capacity()
                {
                    delays_ms.push(delay_ns as f64 / 1e6);
                }
            }
        }
        Ok(())
    }

    fn receive_sip(&mut self) -> Result<(), LoadError> {
        loop {
            let count = self.sip_in.receive(self.sip_socket.as_raw_fd(), 64)?;
            if count == 0 {
                return Ok(());
            }
            for i in 0..count {
                let Some(from) = self.sip_in.source(i) else {
                    continue;
                };
                let Some(message) = SipText::parse(self.sip_in.datagram(i)) else {
                    continue;
                };
                if message.method.is_some() {
                    let datagram = self.sip_in.datagram(i).to_vec();
                    self.on_sip_request(&message, &datagram, from);
                } else {
                    self.on_sip_response(&message);
                }
            }
        }
    }

    fn on_sip_request(&mut self, request: &SipText, bytes: &[u8], from: SocketAddr) {
        let method = request.method.as_deref().unwrap_or_default();
        if method == "ACK" {
            return;
        }
        let ok = response_to(bytes, 200, "OK");
        self.send_sip(ok.as_bytes(), from);
        if method != "BYE" {
            return;
        }
        let index = request.header("Call-ID").and_then(sip::phone_index);
        if let Some(phone) = index.and_then(|i| self.phones.get_mut(i)) {
            if phone.state == CallState::Up {
                phone.hung_up_by_bridge = true;
            }
            phone.state = CallState::Ended;
        }
    }

    fn on_sip_response(&mut self, response: &SipText) {
        let Some(index) = response.header("Call-ID").and_then(sip::phone_index) else {
            return;
        };
        let Some(status) = response.status else {
            return;
        };
        let Some((_, method)) = sip::cseq_of(response) else {
            return;
        };
        let now = Instant::now();
        let Some(phone) = self.phones.get_mut(index) else {
            return;
        };
        match (method, phone.state) {
            ("INVITE", CallState::Inviting { .. }) if status < 200 => {
                phone.state = CallState::Inviting { provisional: true };
            }
            ("INVITE", CallState::Inviting { .. }) if status < 300 => {
                phone.dialog.on_invite_answer(response);
                let ack = phone.dialog.ack();
                match sip::answer_rtp_address(&response.body, self.codec) {
                    Ok(rtp) => {
                        phone.remote_rtp = Some(RawAddr::new(rtp));
                        phone.state = CallState::Up;
                        phone.setup_ms =
                            Some(now.duration_since(phone.invite_at).as_secs_f64() * 1e3);
                        self.send_sip(ack.as_bytes(), self.target);
                    }
                    Err(why) => {
                        phone.state = CallState::Failed;
                        phone.bye = phone.dialog.bye();
                        let bye = phone.bye.clone();
                        *self.failures.entry(why.to_string()).or_default() += 1;
                        self.send_sip(ack.as_bytes(), self.target);
                        self.send_sip(bye.as_bytes(), self.target);
                    }
                }
            }
            ("INVITE", CallState::Inviting { .. }) => {
                phone.dialog.on_invite_answer(response);
                let ack = phone.dialog.ack_failure();
                phone.state = CallState::Failed;
                let reason = format!("{status} {}", response.reason);
                *self.failures.entry(reason).or_default() += 1;
                self.send_sip(ack.as_bytes(), self.target);
            }
            ("INVITE", CallState::Up | CallState::HangingUp) if (200..300).contains(&status) => {
                // Our ACK was lost and the bridge retransmits its 200.
                let ack = phone.dialog.ack();
                self.send_sip(ack.as_bytes(), self.target);
            }
            ("BYE", CallState::HangingUp) if status >= 200 => {
                phone.hangup_failed = status >= 300;
                phone.hangup_ms = Some(now.duration_since(phone.bye_at).as_secs_f64() * 1e3);
                phone.state = CallState::Ended;
            }
            _ => {}
        }
    }

    fn print_progress(&self, out: &mut dyn Write, now: Instant) {
        let count =
            |want: fn(CallState) -> bool| self.phones.iter().filter(|p| want(p.state)).count();
        let up = count(|s| s == CallState::Up);
        let failed = count(|s| s == CallState::Failed);
        let (sent, received, lost) = self.phones.iter().fold((0, 0, 0), |(s, r, l), p| {
            (
                s + p.frames_sent,
                r + p.reception.packets,
                l + p.reception.lost(),
            )
        });
        let phase = match &self.window {
            None => "setting up".to_string(),
            Some(w) if now < w.start => "settling".to_string(),
            Some(w) if now < w.end => format!(
                "measuring {:.0}/{:.0} s",
                now.duration_since(w.start).as_secs_f64(),
                self.duration.as_secs_f64()
            ),
            Some(_) => "hanging up".to_string(),
        };
        let bridge = self
            .pid
            .and_then(bridge_rss_kb)
            .map(|kb| format!(", bridge RSS {:.1} MB", kb as f64 / 1024.0))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "loadtest {:5.1} s  {phase}: up {up}/{}, failed {failed}, rtp out {sent} in {received} lost {lost}{bridge}",
            now.duration_since(self.started).as_secs_f64(),
            self.phones.len()
        );
    }

    pub(crate) fn report(&self) -> Report {
        let answered: Vec<&Phone> = self
            .phones
            .iter()
            .filter(|p| p.setup_ms.is_some())
            .collect();
        let mut setup: Vec<f64> = answered.iter().filter_map(|p| p.setup_ms).collect();
        setup.sort_by(|a, b| a.total_cmp(b));
        let mut hangup: Vec<f64> = self.phones.iter().filter_map(|p| p.hangup_ms).collect();
        hangup.sort_by(|a, b| a.total_cmp(b));
        let failed = self.phones.iter().filter(|p| p.setup_ms.is_none()).count() as u64;
        let spread_of = |f: &dyn Fn(&Phone) -> f64| {
            let mut values: Vec<f64> = answered.iter().map(|p| f(p)).collect();
            Spread::of(&mut values)
        };
        let rooms_with_talkers = self.talkers_per_room > 0;
        let listeners: Vec<&&Phone> = answered
            .iter()
            .filter(|p| p.talker.is_none() && rooms_with_talkers)
            .collect();
        let mut levels: Vec<f64> = listeners
            .iter()
            .map(|p| p.hearing.level_dbfs().max(-150.0))
            .collect();
        let silent = levels
            .iter()
            .filter(|&&l| l < HEARING_THRESHOLD_DBFS)
            .count() as u64;
        let window_s = self.duration.as_secs_f64();
        let delay = if self.delays_ms.is_empty() {
            None
        } else {
            let mut delays = self.delays_ms.clone();
            delays.sort_by(|a, b| a.total_cmp(b));
            let mut up_per_room = vec![0u64; self.room_names.len()];
            for phone in &answered {
                up_per_room[phone.room] += 1;
            }
            let expected: u64 = self
                .pips_sent
                .iter()
                .zip(&up_per_room)
                .map(|(pips, up)| pips * up.saturating_sub(1))
                .sum();
            Some(report::Delay {
                samples: delays.len() as u64,
                expected,
                min_ms: delays[0],
                p50_ms: report::percentile_sorted(&delays, 0.5),
                p99_ms: report::percentile_sorted(&delays, 0.99),
                max_ms: delays[delays.len() - 1],
            })
        };
        let window = self.window.as_ref();
        let bridge = match (
            self.pid,
            window.and_then(|w| w.bridge_cpu_us),
            self.bridge_end,
        ) {
            (Some(pid), Some(start_cpu), Some((end_cpu, rss_kb))) => {
                let cpu_us = end_cpu.saturating_sub(start_cpu) as f64;
                let ticks = window_s * 50.0;
                let members = answered.len().max(1) as f64;
                Some(report::Bridge {
                    pid,
                    cpu_us_per_member_tick: cpu_us / (members * ticks),
                    cpu_us_per_packet_delivered: cpu_us / self.window_packets.max(1) as f64,
                    member_ticks_delivered_percent: self.window_packets as f64 / (members * ticks)
                        * 100.0,
                    cpu_percent_of_core: cpu_us / (window_s * 1e6) * 100.0,
                    rss_mb: rss_kb as f64 / 1024.0,
                })
            }
            _ => None,
        };
        let own_cpu_us = window
            .map(|w| self.own_cpu_end_us.saturating_sub(w.own_cpu_us))
            .unwrap_or(0);
        Report {
            target: self.target.to_string(),
            codec: self.codec.encoding_name().to_string(),
            members: self.phones.len() as u64,
            rooms: self.room_names.len() as u64,
            talkers_per_room: self.talkers_per_room as u64,
            window_s,
            calls: report::Calls {
                attempted: self.next_call as u64,
                set_up: answered.len() as u64,
                failed,
                failures: self.failures.clone(),
                hung_up_by_bridge: self.phones.iter().filter(|p| p.hung_up_by_bridge).count()
                    as u64,
                hangups_failed: self.phones.iter().filter(|p| p.hangup_failed).count() as u64,
                setup_ms_p50: report::percentile_sorted(&setup, 0.5),
                setup_ms_max: setup.last().copied().unwrap_or(0.0),
                hangup_ms_p50: report::percentile_sorted(&hangup, 0.5),
                hangup_ms_max: hangup.last().copied().unwrap_or(0.0),
            },
            rtp: report::Rtp {
                sent_per_member: spread_of(&|p| p.frames_sent as f64),
                received_per_member: spread_of(&|p| p.reception.packets as f64),
                lost_per_member: spread_of(&|p| p.reception.lost() as f64),
                lost_total: answered.iter().map(|p| p.reception.lost()).sum(),
                stray_packets: self.phones.iter().map(|p| p.reception.strays).sum(),
                send_refused: self.send_refused,
                jitter_ms: spread_of(&|p| p.reception.jitter_ms()),
                arrival_lateness_ms_p50: self.arrival_lateness.quantile_ms(0.5).unwrap_or(0.0),
                arrival_lateness_ms_p99: self.arrival_lateness.quantile_ms(0.99).unwrap_or(0.0),
                arrival_lateness_ms_max: self.arrival_lateness.max_ms(),
                member_ticks_delivered_percent: self.window_packets as f64
                    / (answered.len().max(1) as f64 * window_s * 50.0)
                    * 100.0,
            },
            listeners: report::Listeners {
                count: listeners.len() as u64,
                levels_dbfs: levels.iter().map(|l| (l * 10.0).round() / 10.0).collect(),
                level_dbfs: Spread::of(&mut levels),
                silent,
                hearing_threshold_dbfs: HEARING_THRESHOLD_DBFS,
            },
            delay_ms: delay,
            bridge,
            generator: report::Generator {
                cpu_percent_of_core: own_cpu_us as f64 / (window_s * 1e6) * 100.0,
                late_ticks: self.late_ticks,
                late_ticks_in_window: self.late_ticks_in_window,
                tick_lateness_ms_p99: self.tick_lateness.quantile_ms(0.99).unwrap_or(0.0),
            },
            flood: None,
        }
    }
}

/// SSRC, sequence number, timestamp and payload of an RTP packet of payload type `pt`.
fn rtp_fields(datagram: &[u8], pt: u8) -> Option<(u32, u16, u32, &[u8])> {
    if datagram.len() < RTP_HEADER_BYTES || datagram[0] >> 6 != 2 || datagram[1] & 0x7f != pt {
        return None;
    }
    let csrc_count = (datagram[0] & 0x0f) as usize;
    let mut header = RTP_HEADER_BYTES + 4 * csrc_count;
    if datagram[0] & 0x10 != 0 {
        let words = datagram.get(header + 2..header + 4)?;
        header += 4 + 4 * u16::from_be_bytes([words[0], words[1]]) as usize;
    }
    let mut end = datagram.len();
    if datagram[0] & 0x20 != 0 {
        end = end.checked_sub(*datagram.last()? as usize)?;
    }
    let payload = datagram.get(header..end)?;
    let sequence = u16::from_be_bytes([datagram[2], datagram[3]]);
    let timestamp = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
    let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
    Some((ssrc, sequence, timestamp, payload))
}

/// The bridge's CPU time (user + system, all threads) from /proc/PID/stat, in µs.
fn bridge_cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks_per_s = system::clock_ticks_per_second();
    Some((utime + stime) * 1_000_000 / ticks_per_s)
}

/// The bridge's resident set from /proc/PID/status, in kB.
fn bridge_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The load test speaks PCMU, PCMA or G.722 (`parse_codec`): its static payload type.
fn payload_type(codec: Codec) -> u8 {
    codec.static_payload_type().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_fields_skip_csrcs_and_extension_and_refuse_other_payload_types() {
        let mut packet = vec![0x91, 0, 0, 7, 0, 0, 1, 0, 1, 2, 3, 4];
        packet.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        packet.extend_from_slice(&[0xbe, 0xde, 0, 1, 5, 5, 5, 5]); // one-word extension
        packet.extend_from_slice(&[0xff; 160]);
        let (ssrc, seq, ts, payload) = rtp_fields(&packet, 0).expect("valid");
        assert_eq!((ssrc, seq, ts, payload.len()), (0x0102_0304, 7, 256, 160));
        assert!(rtp_fields(&packet, 8).is_none());
        assert!(rtp_fields(&packet[..10], 0).is_none());
    }

    #[test]
    fn every_marker_phone_gets_a_turn_and_short_runs_span_the_tick() {
        for markers in 1..=PHASES {
            for start in [0, 3, 17] {
                let mut turns: Vec<usize> = (start..start + markers)
                    .map(|period| pip_sender(period, markers))
                    .collect();
                turns.sort_unstable();
                let all: Vec<usize> = (0..markers).collect();
                assert_eq!(turns, all, "{markers} markers from period {start}");
            }
        }
        // A 10 s run of a big room: one phase every 2 ms across the tick.
        let mut first_ten: Vec<usize> = (0..10).map(|p| pip_sender(p, PHASES)).collect();
        first_ten.sort_unstable();
        assert_eq!(first_ten, [0, 2, 4, 6, 8, 11, 13, 15, 17, 19]);
    }
}
