//! Streaming sample-rate conversion at a ratio that may move a little while
//! it runs: the room's sound card (`audio/soundcard.rs`) runs on its own
//! crystal, which drifts against the media thread's 20 ms clock, and this
//! is how the difference is taken up without a click. The same windowed
//! sinc as `resample` (its kernel table), evaluated at each output instant
//! of a stream instead of a whole buffer.
//!
//! Allocates its table and history at `new`; `process` allocates nothing,
//! so it may run every 20 ms for as long as the device is open.

use super::{kernel_table, CUTOFF_FRACTION, TABLE_STEPS, ZERO_CROSSINGS};

/// A ratio correction is kept within this, in parts per million: sound
/// card crystals are within about ±100 ppm, so ±2000 also absorbs a
/// controller's overshoot, and is still a pitch change nobody hears.
pub const MAX_CORRECTION_PPM: f64 = 2000.0;

/// Converts a stream of samples from one rate to another, the ratio
/// adjustable by a few parts per thousand on the way (`set_correction_ppm`).
pub struct DriftingResampler {
    /// Output samples per input sample, before correction.
    nominal_ratio: f64,
    /// Input samples per output sample, with the correction.
    step: f64,
    /// The low-pass in cycles per input sample, times two.
    cutoff: f64,
    /// Input samples either side of an output instant that weigh anything.
    reach: f64,
    table: Box<[f64]>,
    /// Input not yet consumed, oldest first: `history[..len]`.
    history: Box<[f32]>,
    len: usize,
    /// The next output instant, in input samples from `history[0]`.
    position: f64,
    correction_ppm: f64,
}

impl DriftingResampler {
    /// A resampler from `from_hz` to `to_hz` taking at most `block` input
    /// samples a call before it has produced output for them.
    pub fn new(from_hz: u32, to_hz: u32, block: usize) -> DriftingResampler {
        let nominal_ratio = f64::from(to_hz.max(1)) / f64::from(from_hz.max(1));
        let cutoff = nominal_ratio.min(1.0) * CUTOFF_FRACTION;
        let reach = ZERO_CROSSINGS as f64 / cutoff;
        let margin = reach.ceil() as usize + 1;
        let mut resampler = DriftingResampler {
            nominal_ratio,
            step: 1.0 / nominal_ratio,
            cutoff,
            reach,
            table: kernel_table().into_boxed_slice(),
            history: vec![0.0; 2 * margin + block.max(1)].into_boxed_slice(),
            len: 0,
            position: 0.0,
            correction_ppm: 0.0,
        };
        resampler.reset();
        resampler
    }

    /// Forgets the stream: the next input starts afresh after silence.
    pub fn reset(&mut self) {
        // Silence before the first sample, so its first output lines up with it.
        let lead = self.reach.ceil() as usize;
        self.history[..lead].fill(0.0);
        self.len = lead;
        self.position = lead as f64;
    }

    /// Makes `ppm` parts per million more output than the nominal ratio
    /// (fewer when negative), within `MAX_CORRECTION_PPM`.
    pub fn set_correction_ppm(&mut self, ppm: f64) {
        self.correction_ppm = ppm.clamp(-MAX_CORRECTION_PPM, MAX_CORRECTION_PPM);
        self.step = 1.0 / (self.nominal_ratio * (1.0 + self.correction_ppm * 1e-6));
    }

    pub fn correction_ppm(&self) -> f64 {
        self.correction_ppm
    }

    /// Output samples per input sample, before correction.
    pub fn nominal_ratio(&self) -> f64 {
        self.nominal_ratio
    }

    /// Takes `input` and writes what output it completes into `out`;
    /// returns (input samples taken, output samples written). Input that
    /// does not fit waits for the caller (`out` full or the history full).
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> (usize, usize) {
        let (mut taken, mut written) = (0, 0);
        loop {
            let room = self.history.len() - self.len;
            let take = room.min(input.len() - taken);
            for (slot, &sample) in self.history[self.len..self.len + take]
                .iter_mut()
                .zip(&input[taken..taken + take])
            {
                *slot = f32::from(sample);
            }
            self.len += take;
            taken += take;
            written += self.produce(&mut out[written..]);
            self.discard_consumed();
            let stuck = take == 0 || written == out.len();
            if taken == input.len() || stuck {
                return (taken, written);
            }
        }
    }

    /// Output at every instant whose taps are all in the history.
    fn produce(&mut self, out: &mut [i16]) -> usize {
        let table_end = (ZERO_CROSSINGS * TABLE_STEPS) as f64;
        let steps_per_input_sample = self.cutoff * TABLE_STEPS as f64;
        let mut written = 0;
        while written < out.len() {
            let centre = self.position;
            let last = (centre + self.reach).floor();
            if last >= self.len as f64 {
                break;
            }
            let first = (centre - self.reach).ceil().max(0.0) as usize;
            let mut total = 0.0f64;
            let mut at = (centre - first as f64) * steps_per_input_sample;
            for &sample in &self.history[first..=last as usize] {
                let distance = at.abs();
                if distance < table_end {
                    let index = distance as usize;
                    let fraction = distance - index as f64;
                    let kernel =
                        self.table[index] + (self.table[index + 1] - self.table[index]) * fraction;
                    total += f64::from(sample) * kernel;
                }
                at -= steps_per_input_sample;
            }
            out[written] = (total * self.cutoff)
                .round()
                .clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
            written += 1;
            self.position += self.step;
        }
        written
    }

    /// Drops the input no future output reaches back to.
    fn discard_consumed(&mut self) {
        let keep_from = ((self.position - self.reach).floor().max(0.0) as usize).min(self.len);
        if keep_from > 0 {
            self.history.copy_within(keep_from..self.len, 0);
            self.len -= keep_from;
            self.position -= keep_from as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, rate_hz: u32, count: usize, amplitude: f64) -> Vec<i16> {
        (0..count)
            .map(|n| {
                (amplitude
                    * (2.0 * std::f64::consts::PI * hz * n as f64 / f64::from(rate_hz)).sin())
                    as i16
            })
            .collect()
    }

    fn power_at(samples: &[i16], hz: f64, rate_hz: u32) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for (n, &s) in samples.iter().enumerate() {
            let phase = 2.0 * std::f64::consts::PI * hz * n as f64 / f64::from(rate_hz);
            re += f64::from(s) * phase.cos();
            im += f64::from(s) * phase.sin();
        }
        (re * re + im * im).sqrt() * 2.0 / samples.len() as f64
    }

    /// Runs `input` through in blocks of 20 ms, as the sound card's thread does.
    fn stream(resampler: &mut DriftingResampler, input: &[i16], from_hz: u32) -> Vec<i16> {
        let mut output = Vec::new();
        let mut out = vec![0i16; 4096];
        for block in input.chunks(from_hz as usize / 50) {
            let mut rest = block;
            while !rest.is_empty() {
                let (taken, written) = resampler.process(rest, &mut out);
                output.extend_from_slice(&out[..written]);
                rest = &rest[taken..];
            }
        }
        output
    }

    #[test]
    fn a_1_khz_tone_streams_between_48_and_8_khz_at_its_level() {
        for (from_hz, to_hz) in [
            (48_000, 8000),
            (8000, 48_000),
            (44_100, 8000),
            (16_000, 48_000),
        ] {
            let mut resampler = DriftingResampler::new(from_hz, to_hz, from_hz as usize / 50);
            let output = stream(
                &mut resampler,
                &sine(1000.0, from_hz, from_hz as usize, 8000.0),
                from_hz,
            );
            let expected = to_hz as usize;
            assert!(
                output.len().abs_diff(expected) <= 200,
                "{from_hz}->{to_hz}: {}",
                output.len()
            );
            let middle = &output[output.len() / 4..output.len() * 3 / 4];
            let level = power_at(middle, 1000.0, to_hz);
            assert!(
                (level / 8000.0 - 1.0).abs() < 0.01,
                "{from_hz}->{to_hz}: {level}"
            );
        }
    }

    #[test]
    fn a_tone_above_the_new_nyquist_frequency_does_not_fold_back() {
        let mut resampler = DriftingResampler::new(48_000, 8000, 960);
        let output = stream(
            &mut resampler,
            &sine(6000.0, 48_000, 48_000, 8000.0),
            48_000,
        );
        let middle = &output[2000..6000];
        // 6 kHz would fold to 2 kHz.
        let rms = (middle.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / middle.len() as f64)
            .sqrt();
        assert!(20.0 * (rms / 5657.0).log10() < -50.0, "rms {rms}");
    }

    #[test]
    fn a_correction_makes_that_many_more_or_fewer_samples() {
        for ppm in [1000.0, -1000.0, 5000.0] {
            let mut resampler = DriftingResampler::new(48_000, 8000, 960);
            resampler.set_correction_ppm(ppm);
            let input = sine(500.0, 48_000, 48_000 * 10, 8000.0);
            let output = stream(&mut resampler, &input, 48_000);
            let applied = ppm.clamp(-MAX_CORRECTION_PPM, MAX_CORRECTION_PPM);
            let expected = 80_000.0 * (1.0 + applied * 1e-6);
            // Less the filter's delay (about 18 output samples).
            assert!(
                (output.len() as f64 - expected).abs() < 30.0,
                "{ppm}: {}",
                output.len()
            );
        }
    }
}
