//! One conference mix tick (kernel and encode, no sockets) with 10, 100 and
//! 1000 members of whom three talk: the cost should track talkers, not members.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sipconf::media::mixer::{frame_samples, Mix, ENCODED_FRAME_BYTES_MAX};
use sipconf::media::resample::Kernel2x;
use sipconf::media::Codec;
use std::hint::black_box;

const RATE_HZ: u32 = 8000;
const TALKERS: usize = 3;

fn tone(frequency_hz: f64) -> Vec<i16> {
    (0..frame_samples(RATE_HZ))
        .map(|n| {
            let phase = 2.0 * std::f64::consts::PI * frequency_hz * n as f64 / f64::from(RATE_HZ);
            (6000.0 * phase.sin()) as i16
        })
        .collect()
}

fn mix_tick(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("mixer_tick_3_talkers");
    let talkers: Vec<Vec<i16>> = [300.0, 700.0, 1100.0].into_iter().map(tone).collect();
    for members in [10usize, 100, 1000] {
        // Half the listeners on each codec, as a mixed PBX population would be.
        let codecs: Vec<Codec> = (0..members)
            .map(|member| Codec::G711[member % Codec::G711.len()])
            .collect();
        let mut mix = Mix::new(RATE_HZ).expect("8 kHz");
        let kernel = Kernel2x::new();
        let mut outputs = vec![[0u8; ENCODED_FRAME_BYTES_MAX]; members];
        group.bench_with_input(
            BenchmarkId::from_parameter(members),
            &members,
            |bench, _| {
                bench.iter(|| {
                    mix.begin_tick();
                    for pcm in &talkers {
                        mix.add_talker(black_box(pcm));
                    }
                    for (member, out) in outputs.iter_mut().enumerate() {
                        let codec = codecs[member];
                        if member < TALKERS {
                            mix.encode_for_talker(&talkers[member], codec, out);
                        } else {
                            // What the engine does: copy the shared payload into the packet.
                            let shared = mix.encoded_for_listener(codec, &kernel);
                            out[..shared.len()].copy_from_slice(shared);
                        }
                    }
                    black_box(&outputs);
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, mix_tick);
criterion_main!(benches);
