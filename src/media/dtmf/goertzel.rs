//! A bank of eight Goertzel filters, one per DTMF frequency, with exact
//! coefficients `2cos(2*pi*f/fs)` (no rounding to DFT bins). It runs over short
//! sub-blocks and hands back each tone's complex DFT value per sub-block, so
//! the detector can sum sub-blocks coherently into a long, selective window
//! and also measure each tone's frequency from the phase advance between them.
//!
//! Allocation-free; the per-sample loop runs the eight filters in lock-step so
//! the compiler can vectorise it.

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
/// sub-block's first sample) and the sub-block's energy.
#[derive(Clone, Copy, Debug, Default)]
pub struct SubBlock {
    pub tones: [Complex; 8],
    pub energy: f32,
}

/// Eight Goertzel filters fed sample by sample, emptied every `SUB_BLOCK_SAMPLES`.
#[derive(Clone, Debug)]
pub struct ToneBank {
    coefficient: [f32; 8],
    /// `e^{-j*w*(M-1)}` and `e^{-j*w*M}`: turn the filter's last two states into the DFT value.
    last_rotation: [Complex; 8],
    before_last_rotation: [Complex; 8],
    state_last: [f32; 8],
    state_before_last: [f32; 8],
    energy: f32,
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
            coefficient,
            last_rotation,
            before_last_rotation,
            state_last: [0.0; 8],
            state_before_last: [0.0; 8],
            energy: 0.0,
            filled: 0,
        }
    }

    /// Starts over from an empty sub-block.
    pub fn reset(&mut self) {
        self.state_last = [0.0; 8];
        self.state_before_last = [0.0; 8];
        self.energy = 0.0;
        self.filled = 0;
    }

    /// Feeds samples until the current sub-block is full or `samples` runs out;
    /// returns how many were taken and the finished sub-block, if one finished.
    #[inline]
    pub fn feed(&mut self, samples: &[i16]) -> (usize, Option<SubBlock>) {
        let take = samples.len().min(SUB_BLOCK_SAMPLES - self.filled);
        let mut last = self.state_last;
        let mut before_last = self.state_before_last;
        let mut energy = self.energy;
        for &sample in &samples[..take] {
            let x = f32::from(sample);
            energy += x * x;
            for tone in 0..8 {
                let next = x + self.coefficient[tone] * last[tone] - before_last[tone];
                before_last[tone] = last[tone];
                last[tone] = next;
            }
        }
        self.state_last = last;
        self.state_before_last = before_last;
        self.energy = energy;
        self.filled += take;
        if self.filled < SUB_BLOCK_SAMPLES {
            return (take, None);
        }
        let mut block = SubBlock {
            tones: [Complex::ZERO; 8],
            energy,
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
        let (taken, none) = bank.feed(&samples[..17]);
        assert_eq!((taken, none.is_none()), (17, true));
        let (taken, block) = bank.feed(&samples[17..]);
        assert_eq!(taken, SUB_BLOCK_SAMPLES - 17);
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
