//! One tick of the media core in memory, no sockets: 200 members on the
//! shared port, three of them talking, each sending one RTP packet a tick.
//! What a member costs the tick apart from its system calls (see
//! `examples/engine_ticks.rs` for the engine with its sockets).
//!
//! The same with every member on SRTP (`_srtp`): the tick unprotects 200
//! packets and protects what it sends; the phones' protecting is done
//! outside the timed part. The difference is SRTP's per-member cost.
//!
//! Run: `cargo bench --bench core`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sipconf::media::core::{Datagram, MediaCore, Port, Stream, Transmit, TICK};
use sipconf::media::rtp::{write_rtp, RtpHeader};
use sipconf::media::srtp::{Context, MasterKey, MemberSrtp, Suite};
use sipconf::media::{
    AddMember, Codec, Command, MediaConfig, MediaStats, MemberFlags, MemberKey, MemberSockets,
};
use std::cell::Cell;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

const MEMBERS: u32 = 200;
const TALKERS: u32 = 3;

fn address(slot: u32) -> SocketAddr {
    SocketAddr::from(([10, 0, (slot >> 8) as u8, slot as u8], 4000))
}

/// One RTP packet per member: a tone for talkers, u-law silence for the rest.
fn packet(slot: u32, frame: u32) -> Vec<u8> {
    let mut pcm = [0i16; 160];
    if slot < TALKERS {
        let hz = 300.0 + 400.0 * f64::from(slot);
        for (n, sample) in pcm.iter_mut().enumerate() {
            let t = f64::from(frame * 160 + n as u32) / 8000.0;
            *sample = (6000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
        }
    }
    let mut payload = [0u8; 160];
    Codec::Pcmu.encode(&pcm, &mut payload);
    let header = RtpHeader {
        payload_type: 0,
        marker: false,
        sequence: frame as u16,
        timestamp: frame * 160,
        ssrc: slot,
    };
    let mut datagram = vec![0u8; 172];
    write_rtp(&header, &payload, &mut datagram).expect("fits");
    datagram
}

/// The phones' key (what the bridge unprotects with) and the bridge's.
const PHONE_KEY: MasterKey = MasterKey {
    key: [0x2b; 16],
    salt: [0x5c; 14],
};
const BRIDGE_KEY: MasterKey = MasterKey {
    key: [0x71; 16],
    salt: [0x0e; 14],
};

/// A core with `MEMBERS` members on the shared port, SRTP or not.
fn core_with_members(srtp: bool, start: Instant) -> MediaCore {
    let mut core = MediaCore::new(
        MediaConfig {
            max_members: MEMBERS as usize,
            ..MediaConfig::default()
        },
        Arc::new(MediaStats::default()),
    );
    for slot in 0..MEMBERS {
        let add = AddMember {
            key: MemberKey {
                slot,
                generation: 1,
            },
            mix: 0,
            sockets: MemberSockets::Shared,
            remote_rtp: address(slot),
            remote_rtcp: address(slot),
            signalling_ip: Some(address(slot).ip()),
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event_pt: Some(101),
            telephone_event_rate_hz: 8000,
            flags: MemberFlags::default(),
            keypad: true,
            opus: None,
            srtp: srtp.then(|| {
                Box::new(MemberSrtp::new(
                    Suite::AesCm128HmacSha1_80,
                    &PHONE_KEY,
                    &BRIDGE_KEY,
                ))
            }),
            link: false,
        };
        core.command(
            Command::AddMember(Box::new(add)),
            start,
            0,
            &mut |_: Transmit<'_>| {},
        );
    }
    core
}

/// This tick's packet of every member, sequence and timestamp moved on.
fn round_of(frames: &mut [Vec<Vec<u8>>], tick: u32) -> &mut Vec<Vec<u8>> {
    let round = &mut frames[(tick % 50) as usize];
    for datagram in round.iter_mut() {
        // Sequence and timestamp go on from round to round.
        datagram[2..4].copy_from_slice(&(tick as u16).to_be_bytes());
        datagram[4..8].copy_from_slice(&(tick.wrapping_mul(160)).to_be_bytes());
    }
    round
}

fn receive_and_tick(core: &mut MediaCore, round: &[Vec<u8>], now: Instant, sent: &mut usize) {
    for (slot, datagram) in round.iter().enumerate() {
        core.receive(
            Datagram {
                port: Port::Shared,
                stream: Stream::Rtp,
                source: address(slot as u32),
                contents: datagram,
            },
            now,
        );
    }
    core.tick(now, 0, &mut |t: Transmit<'_>| {
        *sent += black_box(t.contents).len()
    });
}

fn core_tick(criterion: &mut Criterion) {
    let start = Instant::now();
    let mut core = core_with_members(false, start);
    let mut sent_bytes = 0usize;
    // A second of packets, replayed with timestamps moving on.
    let mut frames: Vec<Vec<Vec<u8>>> = (0..50)
        .map(|frame| (0..MEMBERS).map(|slot| packet(slot, frame)).collect())
        .collect();
    let mut tick = 0u32;
    criterion.bench_function("media_core_tick_200_members_3_talkers", |bench| {
        bench.iter(|| {
            let now = start + TICK * tick;
            let round = round_of(&mut frames, tick);
            receive_and_tick(&mut core, round, now, &mut sent_bytes);
            tick += 1;
        })
    });
    black_box(sent_bytes);
}

fn core_tick_srtp(criterion: &mut Criterion) {
    let start = Instant::now();
    let mut core = core_with_members(true, start);
    let mut sent_bytes = 0usize;
    let mut frames: Vec<Vec<Vec<u8>>> = (0..50)
        .map(|frame| (0..MEMBERS).map(|slot| packet(slot, frame)).collect())
        .collect();
    let mut phones: Vec<Context> = (0..MEMBERS)
        .map(|_| Context::new(Suite::AesCm128HmacSha1_80, &PHONE_KEY))
        .collect();
    let tick = Cell::new(0u32);
    criterion.bench_function("media_core_tick_200_members_3_talkers_srtp", |bench| {
        bench.iter_batched(
            || {
                // The phones protect this tick's packets (not timed).
                let round = round_of(&mut frames, tick.get());
                round
                    .iter()
                    .zip(phones.iter_mut())
                    .map(|(datagram, phone)| {
                        let mut protected = datagram.clone();
                        protected.resize(datagram.len() + 10, 0);
                        let len = phone
                            .protect_rtp(&mut protected, datagram.len())
                            .expect("room for the tag");
                        protected.truncate(len);
                        protected
                    })
                    .collect::<Vec<Vec<u8>>>()
            },
            |round| {
                let now = start + TICK * tick.get();
                receive_and_tick(&mut core, &round, now, &mut sent_bytes);
                tick.set(tick.get() + 1);
                round
            },
            BatchSize::PerIteration,
        )
    });
    black_box(sent_bytes);
}

/// One 172-byte G.711 packet (20 ms) protected, and unprotected, by one context.
fn srtp_packet(criterion: &mut Criterion) {
    let plain = packet(0, 0);
    for suite in [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32] {
        let mut sender = Context::new(suite, &PHONE_KEY);
        let mut buffer = vec![0u8; plain.len() + 10];
        let mut sequence = 0u16;
        criterion.bench_function(
            &format!("srtp_protect_rtp_172_bytes_{}", suite.name()),
            |bench| {
                bench.iter(|| {
                    sequence = sequence.wrapping_add(1);
                    buffer[..plain.len()].copy_from_slice(&plain);
                    buffer[2..4].copy_from_slice(&sequence.to_be_bytes());
                    black_box(sender.protect_rtp(&mut buffer, plain.len()).expect("fits"))
                })
            },
        );
        // Protected packets made beforehand; each unprotected once, in order.
        let mut sender = Context::new(suite, &PHONE_KEY);
        let protected: Vec<Vec<u8>> = (0..=u16::MAX)
            .map(|sequence| {
                let mut buffer = vec![0u8; plain.len() + 10];
                buffer[..plain.len()].copy_from_slice(&plain);
                buffer[2..4].copy_from_slice(&sequence.to_be_bytes());
                let len = sender.protect_rtp(&mut buffer, plain.len()).expect("fits");
                buffer.truncate(len);
                buffer
            })
            .collect();
        let mut receiver = Context::new(suite, &PHONE_KEY);
        let mut next = 0usize;
        let mut scratch = vec![0u8; plain.len() + 10];
        criterion.bench_function(
            &format!("srtp_unprotect_rtp_172_bytes_{}", suite.name()),
            |bench| {
                bench.iter(|| {
                    if next == protected.len() {
                        // A new stream, or every packet would now be a replay
                        // (refused before its tag is checked).
                        receiver = Context::new(suite, &PHONE_KEY);
                        next = 0;
                    }
                    let packet = &protected[next];
                    next += 1;
                    let scratch = &mut scratch[..packet.len()];
                    scratch.copy_from_slice(packet);
                    black_box(receiver.unprotect_rtp(scratch).expect("authentic"))
                })
            },
        );
    }
}

criterion_group!(benches, core_tick, core_tick_srtp, srtp_packet);
criterion_main!(benches);
