//! The one Goertzel level meter of the tests and the load generator: the
//! level of one frequency in a stretch of audio, fed sample by sample or
//! measured over a whole slice, and the dB and peak figures tests compare.
//!
//! Measurement only: it never decides what a level means.

/// The rate of the audio G.711 phones send and hear; G.722 phones use
/// 16000 (the `_at` functions and [`Goertzel::at_rate`]).
const RATE_HZ: u32 = 8000;

/// One Goertzel filter (a single DFT bin at an exact frequency), fed one
/// sample at a time; `reset` starts a new block.
#[derive(Clone, Copy, Debug)]
pub struct Goertzel {
    coefficient: f64,
    s1: f64,
    s2: f64,
    samples: usize,
}

impl Goertzel {
    /// A filter at `freq_hz` for 8 kHz audio.
    pub fn new(freq_hz: f64) -> Goertzel {
        Goertzel::at_rate(freq_hz, RATE_HZ)
    }

    /// A filter at `freq_hz` for audio at `rate_hz` (16000 for G.722 calls).
    pub fn at_rate(freq_hz: f64, rate_hz: u32) -> Goertzel {
        let normalised = freq_hz / f64::from(rate_hz);
        Goertzel {
            coefficient: 2.0 * (2.0 * std::f64::consts::PI * normalised).cos(),
            s1: 0.0,
            s2: 0.0,
            samples: 0,
        }
    }

    #[inline]
    pub fn push(&mut self, sample: f64) {
        let s0 = sample + self.coefficient * self.s1 - self.s2;
        self.s2 = self.s1;
        self.s1 = s0;
        self.samples += 1;
    }

    /// Samples fed since the last reset.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The squared magnitude of the bin over the samples fed since the last
    /// reset: `(amplitude * n / 2)^2` for a sine at the filter's frequency.
    pub fn power(&self) -> f64 {
        (self.s1 * self.s1 + self.s2 * self.s2 - self.coefficient * self.s1 * self.s2).max(0.0)
    }

    /// The peak amplitude of the filter's frequency in the samples fed since
    /// the last reset (0 before any).
    pub fn amplitude(&self) -> f64 {
        if self.samples == 0 {
            return 0.0;
        }
        2.0 * self.power().sqrt() / self.samples as f64
    }

    pub fn reset(&mut self) {
        self.s1 = 0.0;
        self.s2 = 0.0;
        self.samples = 0;
    }
}

/// The filter at `freq_hz` run over all of `samples` at `rate_hz`.
fn over(samples: &[i16], freq_hz: f64, rate_hz: u32) -> Goertzel {
    let mut filter = Goertzel::at_rate(freq_hz, rate_hz);
    for &x in samples {
        filter.push(f64::from(x));
    }
    filter
}

/// The amplitude (peak, 16-bit linear) of the `freq_hz` component of
/// `samples` at 8 kHz, over the whole slice.
pub fn tone_amplitude(samples: &[i16], freq_hz: f64) -> f64 {
    tone_amplitude_at(samples, freq_hz, RATE_HZ)
}

/// As [`tone_amplitude`], for audio at `rate_hz` (16000 on a G.722 call,
/// where tones up to 7 kHz pass).
pub fn tone_amplitude_at(samples: &[i16], freq_hz: f64, rate_hz: u32) -> f64 {
    over(samples, freq_hz, rate_hz).amplitude()
}

/// The Goertzel power at `freq_hz` over the whole slice (see
/// [`Goertzel::power`]): comparable only between slices of one length.
pub fn tone_power(samples: &[i16], freq_hz: f64) -> f64 {
    over(samples, freq_hz, RATE_HZ).power()
}

/// `20 log10(a / b)`, with a floor so silence compares as very quiet.
pub fn db_ratio(a: f64, b: f64) -> f64 {
    20.0 * (a.max(1e-3) / b.max(1e-3)).log10()
}

/// Peak absolute sample value.
pub fn peak(samples: &[i16]) -> i32 {
    samples.iter().map(|&s| (s as i32).abs()).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq_hz: f64, amplitude: f64, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                (amplitude * (2.0 * std::f64::consts::PI * freq_hz * n as f64 / 8000.0).sin())
                    as i16
            })
            .collect()
    }

    #[test]
    fn goertzel_measures_a_sine_amplitude() {
        let s = sine(697.0, 8000.0, 8000);
        let a = tone_amplitude(&s, 697.0);
        assert!((a - 8000.0).abs() < 20.0, "{a}");
        assert!(tone_amplitude(&s, 1209.0) < 50.0);
        assert_eq!(tone_amplitude(&[], 697.0), 0.0);
    }

    #[test]
    fn power_and_amplitude_are_one_measurement() {
        let s = sine(1000.0, 3000.0, 800);
        let power = tone_power(&s, 1000.0);
        let amplitude = tone_amplitude(&s, 1000.0);
        let from_power = 2.0 * power.sqrt() / 800.0;
        assert!(
            (from_power - amplitude).abs() < 1e-9,
            "{from_power} {amplitude}"
        );
    }

    #[test]
    fn the_meter_measures_a_6_khz_tone_in_16_khz_audio() {
        let s: Vec<i16> = (0..16_000)
            .map(|n| {
                (5000.0 * (2.0 * std::f64::consts::PI * 6000.0 * n as f64 / 16_000.0).sin()) as i16
            })
            .collect();
        let a = tone_amplitude_at(&s, 6000.0, 16_000);
        assert!((a - 5000.0).abs() < 20.0, "{a}");
        assert!(tone_amplitude_at(&s, 2000.0, 16_000) < 50.0);
    }

    #[test]
    fn a_block_meter_restarts_after_reset() {
        let mut meter = Goertzel::new(2000.0);
        for x in sine(2000.0, 6000.0, 40) {
            meter.push(f64::from(x));
        }
        assert_eq!(meter.samples(), 40);
        assert!(
            (meter.amplitude() - 6000.0).abs() < 300.0,
            "{}",
            meter.amplitude()
        );
        meter.reset();
        for _ in 0..40 {
            meter.push(0.0);
        }
        assert_eq!(meter.amplitude(), 0.0);
    }
}
