//! A bank of eight Goertzel filters, one per DTMF frequency, with exact
//! coefficients `2cos(2*pi*f/fs)` (no rounding to DFT bins). It runs over short
//! sub-blocks and hands back each tone's complex DFT value per sub-block, so
//! the detector can sum sub-blocks coherently into a long, selective window
//! and also measure each tone's frequency from the phase advance between them.
//!
//! Allocation-free; the per-sample loop runs the eight filters in lock-step so
//! the compiler can vectorise it. It measures only: deciding what is a digit
//! is the detector's.

use std::f64::consts::PI;

/// The DTMF frequencies: four rows (low group), then four columns (high group).
pub const TONE_HZ: [f64; 8] = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0];
/// The receiver's sample rate; wideband audio is decimated to it first.
pub const SAMPLE_RATE_HZ: u32 = 8000;
/// Samples per sub-block (6.25 ms): the detector's time step.
pub const SUB_BLOCK_SAMPLES: usize = 50;

/// A complex number, only as much of one as the detector needs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Complex {
    pub re: f32,
    pub im: f32,
}

impl Complex {
    pub const ZERO: Complex = Complex { re: 0.0, im: 0.0 };

    /// `e^{j*angle}`.
    pub fn from_angle(angle: f64) -> Self {
        Complex {
            re: angle.cos() as f32,
            im: angle.sin() as f32,
        }
    }

    #[inline]
    pub fn conj(self) -> Complex {
        Complex {
            re: self.re,
            im: -self.im,
        }
    }

    #[inline]
    pub fn norm_sqr(self) -> f32 {
        self.re * self.re + self.im * self.im
    }
}

impl std::ops::Mul for Complex {
    type Output = Complex;

    #[inline]
    fn mul(self, other: Complex) -> Complex {
        Complex {
            re: self.re * other.re - self.im * other.im,
            im: self.re * other.im + self.im * other.re,
        }
    }
}

impl std::ops::Add for Complex {
    type Output = Complex;

    #[inline]
    fn add(self, other: Complex) -> Complex {
        Complex {
            re: self.re + other.re,
            im: self.im + other.im,
        }
    }
}

/// What one finished sub-block holds: each tone's DFT value (time origin at the
/// sub-block's first sample), the sub-block's energy, and its energy in the
/// DTMF band (after `BandFilter`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SubBlock {
    pub tones: [Complex; 8],
    pub energy: f32,
    pub band_energy: f32,
}

/// Corner of the high-pass in front of the band energy: below the lowest row
/// tone is where voiced speech keeps most of its energy.
const BAND_LOW_HZ: f64 = 600.0;
/// The band filter runs on sums of sample pairs, at half the rate.
const BAND_RATE_HZ: f64 = SAMPLE_RATE_HZ as f64 / 2.0;

/// One second-order section (RBJ cookbook, Q = 1/sqrt 2: Butterworth).
#[derive(Clone, Copy, Debug)]
struct Biquad {
    b: [f32; 3],
    a: [f32; 2],
    x: [f32; 2],
    y: [f32; 2],
}

impl Biquad {
    fn high_pass(corner_hz: f64, rate_hz: f64) -> Self {
        let omega = 2.0 * PI * corner_hz / rate_hz;
        let alpha = omega.sin() / (2.0 * std::f64::consts::FRAC_1_SQRT_2);
        let cos = omega.cos();
        let a0 = 1.0 + alpha;
        let b = [(1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0];
        Biquad {
            b: b.map(|coefficient| (coefficient / a0) as f32),
            a: [(-2.0 * cos / a0) as f32, ((1.0 - alpha) / a0) as f32],
            x: [0.0; 2],
            y: [0.0; 2],
        }
    }

    #[inline]
    fn run(&mut self, x: f32) -> f32 {
        // The previous output's term last: the loop-carried chain is one multiply and one add.
        let feed_forward =
            self.b[0] * x + self.b[1] * self.x[0] + self.b[2] * self.x[1] - self.a[1] * self.y[1];
        let y = feed_forward - self.a[0] * self.y[0];
        self.x = [x, self.x[0]];
        self.y = [y, self.y[0]];
        y
    }

    /// Power gain at `frequency_hz` when run at `rate_hz`.
    fn power_gain(&self, frequency_hz: f64, rate_hz: f64) -> f64 {
        let omega = 2.0 * PI * frequency_hz / rate_hz;
        let response = |c: [f64; 3]| {
            let re = c[0] + c[1] * omega.cos() + c[2] * (2.0 * omega).cos();
            let im = -c[1] * omega.sin() - c[2] * (2.0 * omega).sin();
            re * re + im * im
        };
        let b = self.b.map(f64::from);
        let a = [1.0, f64::from(self.a[0]), f64::from(self.a[1])];
        response(b) / response(a)
    }
}

/// The filter in front of the energy the tones are compared with, so the low
/// vowels of speech under a key do not count against it: pairs of samples
/// are summed (a zero at 4 kHz, -8 dB at 3 kHz, and half the rate), then a
/// 600 Hz Butterworth high-pass runs at 4 kHz (-19 dB at 200 Hz). Half-rate
/// keeps its cost to one multiply-add chain every other sample.
#[derive(Clone, Copy, Debug)]
pub struct BandFilter {
    high_pass: Biquad,
}

impl Default for BandFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl BandFilter {
    pub fn new() -> Self {
        BandFilter {
            high_pass: Biquad::high_pass(BAND_LOW_HZ, BAND_RATE_HZ),
        }
    }

    /// Takes the sum of one pair of 8 kHz samples; returns the filtered half-rate sample.
    #[inline]
    pub fn run_pair(&mut self, pair_sum: f32) -> f32 {
        self.high_pass.run(pair_sum)
    }

    /// Power gain at `frequency_hz` of the filtered energy against the input
    /// energy (half as many output samples, each a pair sum).
    pub fn power_gain(&self, frequency_hz: f64) -> f64 {
        let omega = 2.0 * PI * frequency_hz / f64::from(SAMPLE_RATE_HZ);
        let pair_sum = 2.0 + 2.0 * omega.cos();
        0.5 * pair_sum * self.high_pass.power_gain(frequency_hz, BAND_RATE_HZ)
    }

    pub fn reset(&mut self) {
        *self = Self::new();
    }
}

/// Eight Goertzel filters fed two samples at a time, emptied every `SUB_BLOCK_SAMPLES`.
#[derive(Clone, Debug)]
pub struct ToneBank {
    coefficient: [f32; 8],
    /// `c^2 - 1`, for taking two steps at once.
    coefficient_square_less_one: [f32; 8],
    /// `e^{-j*w*(M-1)}` and `e^{-j*w*M}`: turn the filter's last two states into the DFT value.
    last_rotation: [Complex; 8],
    before_last_rotation: [Complex; 8],
    state_last: [f32; 8],
    state_before_last: [f32; 8],
    energy: f32,
    band: BandFilter,
    band_energy: f32,
    filled: usize,
}

impl Default for ToneBank {
    fn default() -> Self {
        Self::new()
    }
}

impl ToneBank {
    pub fn new() -> Self {
        let mut coefficient = [0.0; 8];
        let mut last_rotation = [Complex::ZERO; 8];
        let mut before_last_rotation = [Complex::ZERO; 8];
        for (tone, &frequency_hz) in TONE_HZ.iter().enumerate() {
            let omega = 2.0 * PI * frequency_hz / f64::from(SAMPLE_RATE_HZ);
            coefficient[tone] = (2.0 * omega.cos()) as f32;
            let m = SUB_BLOCK_SAMPLES as f64;
            last_rotation[tone] = Complex::from_angle(-omega * (m - 1.0));
            before_last_rotation[tone] = Complex::from_angle(-omega * m);
        }
        ToneBank {
            coefficient_square_less_one: coefficient.map(|c| c * c - 1.0),
            coefficient,
            last_rotation,
            before_last_rotation,
            state_last: [0.0; 8],
            state_before_last: [0.0; 8],
            energy: 0.0,
            band: BandFilter::new(),
            band_energy: 0.0,
            filled: 0,
        }
    }

    /// Starts over from an empty sub-block.
    pub fn reset(&mut self) {
        self.state_last = [0.0; 8];
        self.state_before_last = [0.0; 8];
        self.energy = 0.0;
        self.band_energy = 0.0;
        self.filled = 0;
    }

    /// Starts over, forgetting the band filter's history too.
    pub fn clear(&mut self) {
        self.reset();
        self.band.reset();
    }

    /// The band filter's power gain at `frequency_hz`.
    pub fn band_gain(&self, frequency_hz: f64) -> f64 {
        self.band.power_gain(frequency_hz)
    }

    /// No sample of the current sub-block has been fed yet.
    pub fn between_blocks(&self) -> bool {
        self.filled == 0
    }

    /// Takes one whole sub-block known to be too quiet to hold a key, given
    /// its energy: the tone filters are skipped and report nothing, and the
    /// band filter starts from rest (where so quiet an input leaves it
    /// anyway), its energy counted as the whole block's. For members who are
    /// silent or listening, this is the receiver's whole cost.
    pub fn take_quiet(&mut self, energy: f32) -> SubBlock {
        debug_assert!(self.between_blocks());
        self.band.reset();
        SubBlock {
            tones: [Complex::ZERO; 8],
            energy,
            band_energy: energy,
        }
    }

    /// Feeds pairs of samples until the current sub-block is full or `samples`
    /// runs out; returns how many samples were taken and the finished
    /// sub-block, if one finished. `samples` must hold whole pairs.
    #[inline]
    pub fn feed(&mut self, samples: &[i16]) -> (usize, Option<SubBlock>) {
        debug_assert!(samples.len().is_multiple_of(2), "whole pairs only");
        let take = (samples.len() & !1).min(SUB_BLOCK_SAMPLES - self.filled);
        let mut last = self.state_last;
        let mut before_last = self.state_before_last;
        let mut energy = self.energy;
        let mut band_energy = self.band_energy;
        let coefficient = self.coefficient;
        let square_less_one = self.coefficient_square_less_one;
        for pair in samples[..take].chunks_exact(2) {
            let (x0, x1) = (f32::from(pair[0]), f32::from(pair[1]));
            energy += x0 * x0 + x1 * x1;
            let in_band = self.band.run_pair(x0 + x1);
            band_energy += in_band * in_band;
            for tone in 0..8 {
                // Two steps at once, s[n] and s[n+1] both from s[n-1] and s[n-2],
                // so the loop-carried chain is one multiply-add per two samples.
                let c = coefficient[tone];
                let waiting = x0 - before_last[tone];
                let first = waiting + c * last[tone];
                let second = (x1 + c * waiting) + square_less_one[tone] * last[tone];
                before_last[tone] = first;
                last[tone] = second;
            }
        }
        self.state_last = last;
        self.state_before_last = before_last;
        self.energy = energy;
        self.band_energy = band_energy;
        self.filled += take;
        if self.filled < SUB_BLOCK_SAMPLES {
            return (take, None);
        }
        let mut block = SubBlock {
            tones: [Complex::ZERO; 8],
            energy,
            band_energy,
        };
        for tone in 0..8 {
            // y[M-1] = s[M-1] - e^{-jw} s[M-2] = e^{jw(M-1)} X(w).
            let a = self.last_rotation[tone];
            let b = self.before_last_rotation[tone];
            block.tones[tone] = Complex {
                re: a.re * last[tone] - b.re * before_last[tone],
                im: a.im * last[tone] - b.im * before_last[tone],
            };
        }
        self.reset();
        (take, Some(block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct_dft(samples: &[i16], frequency_hz: f64) -> (f64, f64) {
        let omega = 2.0 * PI * frequency_hz / f64::from(SAMPLE_RATE_HZ);
        samples
            .iter()
            .enumerate()
            .fold((0.0, 0.0), |(re, im), (n, &x)| {
                let phase = omega * n as f64;
                (
                    re + f64::from(x) * phase.cos(),
                    im - f64::from(x) * phase.sin(),
                )
            })
    }

    #[test]
    fn sub_block_values_equal_the_dft_at_each_exact_frequency() {
        let samples: Vec<i16> = (0..SUB_BLOCK_SAMPLES)
            .map(|n| {
                let t = n as f64 / 8000.0;
                (6000.0 * (2.0 * PI * 700.0 * t + 0.3).sin()
                    + 3000.0 * (2.0 * PI * 1400.0 * t).cos()) as i16
            })
            .collect();
        let mut bank = ToneBank::new();
        // Split feeding must give the same result as one call.
        let (taken, none) = bank.feed(&samples[..18]);
        assert_eq!((taken, none.is_none()), (18, true));
        let (taken, block) = bank.feed(&samples[18..]);
        assert_eq!(taken, SUB_BLOCK_SAMPLES - 18);
        let block = block.expect("a full sub-block");
        for (tone, &frequency_hz) in TONE_HZ.iter().enumerate() {
            let (re, im) = direct_dft(&samples, frequency_hz);
            let got = block.tones[tone];
            let scale = (re * re + im * im).sqrt().max(1000.0);
            assert!(
                (f64::from(got.re) - re).abs() < scale * 1e-3,
                "{frequency_hz} re"
            );
            assert!(
                (f64::from(got.im) - im).abs() < scale * 1e-3,
                "{frequency_hz} im"
            );
        }
        let energy: f64 = samples.iter().map(|&x| f64::from(x).powi(2)).sum();
        assert!((f64::from(block.energy) - energy).abs() < energy * 1e-4);
    }

    #[test]
    fn band_filter_passes_the_keypad_and_cuts_low_speech() {
        let filter = BandFilter::new();
        for frequency_hz in TONE_HZ {
            let gain_db = 10.0 * filter.power_gain(frequency_hz).log10();
            assert!(gain_db > -3.5, "{frequency_hz} Hz: {gain_db:.1} dB");
        }
        let quietest_tone = TONE_HZ
            .map(|f| filter.power_gain(f))
            .into_iter()
            .fold(f64::MAX, f64::min);
        assert!(10.0 * (filter.power_gain(200.0) / quietest_tone).log10() < -15.0);
        // The measured gain of a running filter matches the computed one.
        for frequency_hz in [300.0, 941.0, 1633.0, 3000.0] {
            let mut running = BandFilter::new();
            let (mut input, mut output) = (0.0, 0.0);
            for n in (0..8000).step_by(2) {
                let x = |n: i32| (2.0 * PI * frequency_hz * f64::from(n) / 8000.0).sin() * 1000.0;
                let (x0, x1) = (x(n), x(n + 1));
                let y = running.run_pair((x0 + x1) as f32);
                if n >= 800 {
                    input += x0 * x0 + x1 * x1;
                    output += f64::from(y * y);
                }
            }
            let measured = output / input;
            let computed = filter.power_gain(frequency_hz);
            assert!(
                (measured / computed - 1.0).abs() < 0.03,
                "{frequency_hz} Hz: measured {measured}, computed {computed}"
            );
        }
    }

    #[test]
    fn feeding_stops_at_the_sub_block_boundary() {
        let mut bank = ToneBank::new();
        let samples = [100i16; 80];
        let (taken, block) = bank.feed(&samples);
        assert_eq!(taken, SUB_BLOCK_SAMPLES);
        assert!(block.is_some());
        let (taken, block) = bank.feed(&samples[taken..]);
        assert_eq!(taken, 30);
        assert!(block.is_none());
    }
}
