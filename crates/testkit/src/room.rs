//! Phones talking in one room: the test tones, the part of a recording worth
//! measuring, streaming several phones at once, and the check that each
//! hears the others at the level sent and not itself. Phones only: the
//! bridge they call is the caller's.

use crate::meter::{db_ratio, tone_amplitude};
use crate::testphone::{Phone, Recording, Signal};
use std::time::Duration;

/// Peak amplitude of each test sine: three of them sum below the limiter knee.
pub const AMPLITUDE: f64 = 5000.0;
/// Audio before this many samples is the jitter buffer filling; not measured.
pub const SETTLE_SAMPLES: usize = 8000 / 2;

pub fn sine(freq_hz: f64) -> Signal {
    Signal::Sine {
        freq_hz,
        amplitude: AMPLITUDE,
    }
}

/// The part of a recording after the start-up transient, at most one second.
pub fn steady(samples: &[i16]) -> &[i16] {
    let start = SETTLE_SAMPLES.min(samples.len());
    let end = (start + 8000).min(samples.len());
    &samples[start..end]
}

/// Every phone streams its signal at the same time for `duration`; returns the
/// phones with what each received, in order.
pub async fn stream_together(
    phones: Vec<Phone>,
    signals: &[Signal],
    duration: Duration,
) -> Vec<(Phone, Recording)> {
    let tasks: Vec<_> = phones
        .into_iter()
        .zip(signals.iter().cloned())
        .map(|(mut phone, signal)| {
            tokio::spawn(async move {
                let recording = phone.stream(&signal, duration).await;
                (phone, recording)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        let (phone, recording) = task.await.expect("phone task");
        results.push((phone, recording.expect("phone media")));
    }
    results
}

/// Phone `i` sent a sine at `freqs[i]`: each hears every other within 1 dB of
/// what was sent, and its own tone at least 40 dB below.
pub fn assert_each_hears_the_others_and_not_itself(results: &[(Phone, Recording)], freqs: &[f64]) {
    for (i, (_, rec)) in results.iter().enumerate() {
        assert!(
            rec.packets > 80,
            "phone {i} received {} packets",
            rec.packets
        );
        let audio = steady(&rec.samples);
        let own = tone_amplitude(audio, freqs[i]);
        for (j, f) in freqs.iter().enumerate() {
            if i == j {
                continue;
            }
            let heard = tone_amplitude(audio, *f);
            let level_db = db_ratio(heard, AMPLITUDE);
            eprintln!(
                "phone {i} hears phone {j} at {level_db:+.2} dB; its own tone {:.1} dB below",
                db_ratio(heard, own)
            );
            assert!(
                level_db.abs() <= 1.0,
                "phone {i} hears phone {j} at {level_db:.2} dB relative to what was sent"
            );
            assert!(
                db_ratio(heard, own) >= 40.0,
                "phone {i} hears itself only {:.1} dB below phone {j}",
                db_ratio(heard, own)
            );
        }
    }
}
