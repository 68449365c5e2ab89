//! A fixed workload for the media engine's tick, for instruction counts under
//! callgrind: `members` phones on loopback (the first `talkers` send a tone,
//! the rest silence, one RTP packet each per tick), the engine ticked on a
//! fake clock `ticks` times after a warm-up. Only `one_tick` is the engine's
//! work; the phones' sends and reads are outside it.
//!
//! ```text
//! cargo build --release --example engine_ticks
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='engine_ticks::one_tick' \
//!     target/release/examples/engine_ticks 200 3 500 own
//! ```
//! Instructions per member per tick: the total over `ticks * members`.
//! Mode `own`: every member has its own socket pair (connected to its phone);
//! `shared`: all share one port pair (`media.shared_port`). A fifth argument
//! picks the codecs: `pcmu` (the default: an 8 kHz room), `g722` (every
//! member G.722: a 16 kHz room), `mixed` (the first member G.722, the rest
//! PCMU: a 16 kHz room of narrowband listeners), `opus` (every member Opus
//! at 32 kbit/s, complexity 5: a 16 kHz room; needs libopus).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

use sipconf::media::codec::g722::G722Encoder;
use sipconf::media::codec::opus::OpusEncoder;
use sipconf::media::codec::OpusStates;
use sipconf::media::engine::{Continue, Engine, TICK};
use sipconf::media::rtp::{write_rtp, RtpHeader};
use sipconf::media::{
    AddMember, Codec, Command, MediaConfig, MediaStats, MemberFlags, MemberKey, MemberSockets,
};

const WARM_UP_TICKS: u32 = 50;

struct Phone {
    socket: UdpSocket,
    bridge: SocketAddr,
    tone_hz: Option<f64>,
    codec: Codec,
    g722: G722Encoder,
    opus: Option<OpusEncoder>,
}

/// The dynamic payload type the workload's Opus members use.
const OPUS_PT: u8 = 111;

impl Phone {
    fn send(&mut self, frame: u32, datagram: &mut [u8]) {
        let rate_hz = self.codec.sample_rate_hz();
        let samples = rate_hz / 50;
        let mut pcm = [0i16; 320];
        let pcm = &mut pcm[..samples as usize];
        if let Some(hz) = self.tone_hz {
            for (n, sample) in pcm.iter_mut().enumerate() {
                let t = f64::from(frame * samples + n as u32) / f64::from(rate_hz);
                *sample = (6000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
            }
        }
        let mut payload = [0u8; 160];
        let len = match (self.codec, self.opus.as_mut()) {
            (Codec::G722, _) => self.g722.encode(pcm, &mut payload),
            (Codec::Opus, Some(opus)) => opus.encode(pcm, &mut payload).expect("encode"),
            (codec, _) => codec.encode(pcm, &mut payload),
        };
        let payload = &payload[..len];
        let header = RtpHeader {
            payload_type: self.codec.static_payload_type().unwrap_or(OPUS_PT),
            marker: frame == 0,
            sequence: frame as u16,
            timestamp: frame * self.codec.rtp_frame_ticks(),
            ssrc: 0x5EED,
        };
        let len = write_rtp(&header, payload, datagram).expect("fits");
        // A full buffer on the bridge side is the bridge's loss, not the workload's.
        let _ = self.socket.send_to(&datagram[..len], self.bridge);
    }

    fn drain(&self, buffer: &mut [u8]) {
        while self.socket.recv_from(buffer).is_ok() {}
    }
}

#[inline(never)]
fn one_tick(engine: &mut Engine, now: Instant) -> Continue {
    engine.tick(now, 0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut number = |default: u32| {
        args.next()
            .map(|a| a.parse().expect("a number"))
            .unwrap_or(default)
    };
    let members = number(200) as usize;
    let talkers = number(3) as usize;
    let ticks = number(500);
    let shared = std::env::args().nth(4).as_deref() == Some("shared");
    let codec_of = |slot: usize| match std::env::args().nth(5).as_deref() {
        Some("g722") => Codec::G722,
        Some("mixed") if slot == 0 => Codec::G722,
        Some("opus") => Codec::Opus,
        _ => Codec::Pcmu,
    };
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let (mut commands, commands_out) = rtrb::RingBuffer::new(members + 16);
    let (events_in, mut events) = rtrb::RingBuffer::new(4096);
    let stats = Arc::new(MediaStats::default());
    let config = MediaConfig {
        max_members: members,
        shared_port: shared.then(|| SocketAddr::new(loopback, 0)),
        ..MediaConfig::default()
    };
    let mut engine =
        Engine::new(config, commands_out, events_in, Arc::clone(&stats)).expect("engine");
    let shared_port = engine.shared_port();
    let tones = [300.0, 700.0, 1100.0, 1500.0, 1900.0];
    let mut phones: Vec<Phone> = (0..members)
        .map(|slot| {
            let phone = UdpSocket::bind((loopback, 0)).expect("bind phone");
            phone.set_nonblocking(true).expect("nonblocking");
            let phone_address = phone.local_addr().expect("bound");
            let (sockets, bridge) = match shared_port {
                Some(port) => (MemberSockets::Shared, SocketAddr::new(loopback, port)),
                None => {
                    let rtp = UdpSocket::bind((loopback, 0)).expect("bind member");
                    let rtcp = UdpSocket::bind((loopback, 0)).expect("bind member");
                    let bridge = rtp.local_addr().expect("bound");
                    let sockets = MemberSockets::Own {
                        rtp,
                        rtcp,
                        sdp_ip: Some(loopback),
                    };
                    (sockets, bridge)
                }
            };
            let add = AddMember {
                key: MemberKey {
                    slot: slot as u32,
                    generation: 1,
                },
                mix: 0,
                sockets,
                remote_rtp: phone_address,
                remote_rtcp: SocketAddr::new(loopback, phone_address.port().wrapping_add(1)),
                signalling_ip: Some(loopback),
                codec: codec_of(slot),
                payload_type: codec_of(slot).static_payload_type().unwrap_or(OPUS_PT),
                telephone_event_pt: Some(101),
                telephone_event_rate_hz: codec_of(slot).rtp_clock_hz(),
                flags: MemberFlags::default(),
                keypad: true,
                opus: (codec_of(slot) == Codec::Opus)
                    .then(|| OpusStates::new(32_000, 5).expect("libopus")),
                srtp: None,
                link: false,
            };
            commands
                .push(Command::AddMember(Box::new(add)))
                .expect("queue has room");
            Phone {
                socket: phone,
                bridge,
                tone_hz: (slot < talkers).then(|| tones[slot % tones.len()]),
                codec: codec_of(slot),
                g722: G722Encoder::new(),
                opus: (codec_of(slot) == Codec::Opus)
                    .then(|| OpusEncoder::new(16_000, 32_000, 5).expect("libopus")),
            }
        })
        .collect();
    let start = Instant::now();
    let mut datagram = [0u8; 1500];
    let mut buffer = [0u8; 1500];
    let mut run = |engine: &mut Engine, from: u32, to: u32| {
        for frame in from..to {
            for phone in phones.iter_mut() {
                phone.send(frame, &mut datagram);
            }
            let outcome = one_tick(engine, start + TICK * frame);
            assert_eq!(outcome, Continue::Running);
            for phone in &phones {
                phone.drain(&mut buffer);
            }
            while events.pop().is_ok() {}
        }
    };
    // Adding 200 members takes a few ticks (64 commands a tick).
    run(&mut engine, 0, WARM_UP_TICKS);
    let measured_from = std::time::Instant::now();
    run(&mut engine, WARM_UP_TICKS, WARM_UP_TICKS + ticks);
    let elapsed = measured_from.elapsed();
    use std::sync::atomic::Ordering::Relaxed;
    println!(
        "{members} members, {talkers} talkers, {ticks} ticks ({}): packets in {}, out {}, lost {}, send errors {}, {:?} per tick with the phones",
        if shared { "shared port" } else { "own sockets" },
        stats.packets_in.load(Relaxed),
        stats.packets_out.load(Relaxed),
        stats.packets_lost.load(Relaxed),
        stats.send_errors.load(Relaxed),
        elapsed / ticks.max(1),
    );
}
