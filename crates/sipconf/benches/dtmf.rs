//! docs/dtmf.md row 11: the receiver's cost for one member's 20 ms frame (160
//! samples at 8 kHz), on speech-like noise, on a key and on silence. spandsp
//! 0.0.6 takes 0.78 us; the target is at most 1.0 us.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sipconf::media::dtmf::{key_tones_hz, DtmfReceiver};
use std::hint::black_box;

const FRAME: usize = 160;
const FRAMES: usize = 50;

fn signals() -> Vec<(&'static str, Vec<i16>)> {
    let mut rng = StdRng::seed_from_u64(7);
    let noise: Vec<i16> = (0..FRAME * FRAMES)
        .map(|_| rng.random_range(-3000..=3000))
        .collect();
    let (low_hz, high_hz) = key_tones_hz('5').expect("a key");
    let key: Vec<i16> = (0..FRAME * FRAMES)
        .map(|n| {
            let phase = 2.0 * std::f64::consts::PI * n as f64 / 8000.0;
            (8000.0 * ((phase * low_hz).sin() + (phase * high_hz).sin())) as i16
        })
        .collect();
    vec![
        ("noise", noise),
        ("key", key),
        ("silence", vec![0; FRAME * FRAMES]),
    ]
}

fn receiver_per_frame(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("dtmf_receiver_20ms_frame");
    for (name, samples) in signals() {
        let mut receiver = DtmfReceiver::new(true);
        let mut frame = 0;
        group.bench_with_input(
            BenchmarkId::from_parameter(name),
            &samples,
            |bench, samples| {
                bench.iter(|| {
                    let at = (frame % FRAMES) * FRAME;
                    frame += 1;
                    receiver.on_audio(black_box(&samples[at..at + FRAME]));
                    while let Some(press) = receiver.poll_press() {
                        black_box(press);
                    }
                    black_box(receiver.tone_present())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, receiver_per_frame);
criterion_main!(benches);
