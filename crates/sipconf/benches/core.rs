//! One tick of the media core in memory, no sockets: 200 members on the
//! shared port, three of them talking, each sending one RTP packet a tick.
//! What a member costs the tick apart from its system calls (see
//! `examples/engine_ticks.rs` for the engine with its sockets).
//!
//! Run: `cargo bench --bench core`.

use criterion::{criterion_group, criterion_main, Criterion};
use sipconf::media::core::{Datagram, MediaCore, Port, Stream, Transmit, TICK};
use sipconf::media::rtp::{write_rtp, RtpHeader};
use sipconf::media::{
    AddMember, Codec, Command, MediaConfig, MediaStats, MemberFlags, MemberKey, MemberSockets,
};
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

fn core_tick(criterion: &mut Criterion) {
    let mut core = MediaCore::new(
        MediaConfig {
            max_members: MEMBERS as usize,
            ..MediaConfig::default()
        },
        Arc::new(MediaStats::default()),
    );
    let start = Instant::now();
    let mut sent_bytes = 0usize;
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
            telephone_event_pt: Some(101),
            flags: MemberFlags::default(),
            keypad: true,
            link: false,
        };
        core.command(
            Command::AddMember(Box::new(add)),
            start,
            0,
            &mut |_: Transmit<'_>| {},
        );
    }
    // A second of packets, replayed with timestamps moving on.
    let mut frames: Vec<Vec<Vec<u8>>> = (0..50)
        .map(|frame| (0..MEMBERS).map(|slot| packet(slot, frame)).collect())
        .collect();
    let mut tick = 0u32;
    criterion.bench_function("media_core_tick_200_members_3_talkers", |bench| {
        bench.iter(|| {
            let now = start + TICK * tick;
            let round = &mut frames[(tick % 50) as usize];
            for (slot, datagram) in round.iter_mut().enumerate() {
                // Sequence and timestamp go on from round to round.
                datagram[2..4].copy_from_slice(&(tick as u16).to_be_bytes());
                datagram[4..8].copy_from_slice(&(tick.wrapping_mul(160)).to_be_bytes());
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
                sent_bytes += black_box(t.contents).len()
            });
            tick += 1;
        })
    });
    black_box(sent_bytes);
}

criterion_group!(benches, core_tick);
criterion_main!(benches);
