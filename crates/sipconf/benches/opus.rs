//! Opus encode and decode of one 20 ms mono frame at 16 kHz (the wideband
//! mix's rate), 32 kbit/s, at complexity 5 (the default) and 10, on one
//! second of a voice-like signal played in a loop so the encoder sees a
//! changing spectrum; and concealment of one lost frame. Needs libopus at run time (Debian `libopus0`).
//!
//! Run: `cargo bench -p sipconf --bench opus`.

use criterion::{criterion_group, criterion_main, Criterion};
use sipconf::media::codec::opus::{self, OpusDecoder, OpusEncoder};
use std::hint::black_box;

const RATE_HZ: u32 = 16_000;
const FRAME_SAMPLES: usize = 320;
const FRAMES: usize = 50;
const BITRATE_BPS: u32 = 32_000;

/// One second of a vowel-like sound: harmonics of a pitch gliding from 110 to
/// 220 Hz, falling off at 6 dB per octave, with a syllable-rate envelope.
fn voice_like() -> Vec<i16> {
    let mut phase = 0.0f64;
    (0..FRAMES * FRAME_SAMPLES)
        .map(|n| {
            let t = n as f64 / RATE_HZ as f64;
            let pitch_hz = 110.0 + 110.0 * t;
            phase += 2.0 * std::f64::consts::PI * pitch_hz / RATE_HZ as f64;
            let envelope = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
            let voiced: f64 = (1..30).map(|h| (phase * h as f64).sin() / h as f64).sum();
            (4000.0 * envelope * voiced) as i16
        })
        .collect()
}

fn opus_frames(criterion: &mut Criterion) {
    if let Err(why) = opus::available() {
        eprintln!("SKIPPED the Opus benches: {why}");
        return;
    }
    let pcm = voice_like();
    let mut packets_at_complexity_5 = Vec::new();
    for complexity in [5u8, 10] {
        let mut encoder = OpusEncoder::new(RATE_HZ, BITRATE_BPS, complexity).expect("encoder");
        let mut packet = [0u8; 1275];
        let mut frames = pcm.chunks_exact(FRAME_SAMPLES).cycle();
        criterion.bench_function(
            &format!("opus_encode_20ms_16k_32kbps/complexity_{complexity}"),
            |bench| {
                bench.iter(|| {
                    let frame = frames.next().unwrap_or(&pcm[..FRAME_SAMPLES]);
                    encoder.encode(black_box(frame), &mut packet)
                })
            },
        );

        let mut encoder = OpusEncoder::new(RATE_HZ, BITRATE_BPS, complexity).expect("encoder");
        let packets: Vec<Vec<u8>> = pcm
            .chunks_exact(FRAME_SAMPLES)
            .map(|frame| {
                let written = encoder.encode(frame, &mut packet).expect("encode");
                packet[..written].to_vec()
            })
            .collect();
        let mut decoder = OpusDecoder::new(RATE_HZ).expect("decoder");
        let mut out = [0i16; FRAME_SAMPLES];
        let mut stream = packets.iter().cycle();
        if complexity == 5 {
            packets_at_complexity_5 = packets.clone();
        }
        criterion.bench_function(
            &format!("opus_decode_20ms_16k_32kbps/complexity_{complexity}"),
            |bench| {
                bench.iter(|| {
                    let payload = stream.next().unwrap_or(&packets[0]);
                    decoder.decode(black_box(payload), &mut out)
                })
            },
        );
    }
    // Concealment right after a decoded packet, as for a single loss (a run
    // of concealments fades to silence and gets cheaper): subtract the
    // decode bench to get the concealment alone.
    let mut decoder = OpusDecoder::new(RATE_HZ).expect("decoder");
    let mut out = [0i16; FRAME_SAMPLES];
    let mut stream = packets_at_complexity_5.iter().cycle();
    criterion.bench_function("opus_decode_then_conceal_20ms_16k", |bench| {
        bench.iter(|| {
            let payload = stream.next().unwrap_or(&packets_at_complexity_5[0]);
            decoder.decode(black_box(payload), &mut out)?;
            decoder.conceal(&mut out)
        })
    });
}

criterion_group!(benches, opus_frames);
criterion_main!(benches);
