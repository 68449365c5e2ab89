//! Sample-rate conversion of whole buffers at any ratio: a Blackman-windowed
//! sinc low-pass at 90 % of the lower of the two Nyquist frequencies,
//! evaluated at each output instant. Fetched files and spoken sentences are
//! brought to the conference rate with it, and `sipconf dtmf` recordings to
//! the DTMF receiver's 8 kHz, so nothing above the new Nyquist frequency folds
//! back into the band (a DTMF tone or speech).
//!
//! It allocates its output and its kernel table: it runs once per clip or
//! recording, off the media thread, never on the 20 ms path. The same
//! kernel streams a sound card's audio at a ratio corrected for its clock
//! drift in `DriftingResampler` (`resample/drifting.rs`).

mod drifting;
pub use drifting::{DriftingResampler, MAX_CORRECTION_PPM};

/// Zero crossings of the sinc on each side of the centre. With the Blackman
/// window this puts the stop band (below -58 dB) within about 20 % of the
/// cut-off above it.
const ZERO_CROSSINGS: usize = 16;
/// Cut-off as a fraction of the lower Nyquist frequency: the transition band
/// ends near Nyquist, so nothing above it folds back audibly.
const CUTOFF_FRACTION: f64 = 0.9;
/// Kernel table points per zero crossing; values between are interpolated
/// linearly (error below -100 dB of the kernel's peak).
const TABLE_STEPS: usize = 256;

/// `input` at `from_hz`, resampled to `to_hz`: `round(len * to / from)` samples.
pub fn resample(input: &[f32], from_hz: u32, to_hz: u32) -> Vec<f32> {
    if from_hz == to_hz || from_hz == 0 || to_hz == 0 || input.is_empty() {
        return input.to_vec();
    }
    let ratio = f64::from(to_hz) / f64::from(from_hz);
    // The low-pass in cycles per input sample, times two: the kernel's zero
    // crossings are `1 / cutoff` input samples apart.
    let cutoff = ratio.min(1.0) * CUTOFF_FRACTION;
    let reach = ZERO_CROSSINGS as f64 / cutoff;
    let table = kernel_table();
    // Taps at or beyond the last zero crossing weigh nothing.
    let table_end = (ZERO_CROSSINGS * TABLE_STEPS) as f64;
    let steps_per_input_sample = cutoff * TABLE_STEPS as f64;
    let from = u64::from(from_hz);
    let output_len = ((input.len() as u64 * u64::from(to_hz) + from / 2) / from) as usize;
    let last_input = input.len() as i64 - 1;
    (0..output_len)
        .map(|n| {
            let centre = n as f64 / ratio;
            let first = ((centre - reach).ceil() as i64).max(0);
            let last = ((centre + reach).floor() as i64).min(last_input);
            let mut total = 0.0f64;
            // Table position of the first tap, moving one input sample's worth
            // of table each tap.
            let mut position = (centre - first as f64) * steps_per_input_sample;
            for &sample in &input[first as usize..=last as usize] {
                let at = position.abs();
                if at < table_end {
                    let index = at as usize;
                    let fraction = at - index as f64;
                    let kernel = table[index] + (table[index + 1] - table[index]) * fraction;
                    total += f64::from(sample) * kernel;
                }
                position -= steps_per_input_sample;
            }
            (total * cutoff) as f32
        })
        .collect()
}

/// The windowed sinc from the centre out to its last zero crossing, at
/// `TABLE_STEPS` points per zero crossing, then a zero to interpolate towards.
fn kernel_table() -> Vec<f64> {
    let steps = ZERO_CROSSINGS * TABLE_STEPS;
    (0..=steps)
        .map(|step| {
            if step >= steps {
                return 0.0;
            }
            let x = step as f64 / TABLE_STEPS as f64;
            let sinc = if step == 0 {
                1.0
            } else {
                (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
            };
            // Blackman, centred: 1 at the centre, 0 at the last zero crossing.
            let t = std::f64::consts::PI * x / ZERO_CROSSINGS as f64;
            let window = 0.42 + 0.5 * t.cos() + 0.08 * (2.0 * t).cos();
            sinc * window
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(frequency_hz: f64, rate_hz: u32, seconds: f64, amplitude: f64) -> Vec<f32> {
        let n = (f64::from(rate_hz) * seconds) as usize;
        (0..n)
            .map(|i| {
                (amplitude
                    * (2.0 * std::f64::consts::PI * frequency_hz * i as f64 / f64::from(rate_hz))
                        .sin()) as f32
            })
            .collect()
    }

    fn rms(samples: &[f32]) -> f64 {
        (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
    }

    /// The part of a one-second output away from its edges, where the kernel
    /// runs past the ends of the input.
    fn middle(samples: &[f32], rate_hz: u32) -> &[f32] {
        let margin = rate_hz as usize / 20;
        &samples[margin..samples.len() - margin]
    }

    #[test]
    fn a_1_khz_tone_comes_to_8_khz_at_its_level_and_phase_from_common_rates() {
        for from_hz in [44_100, 48_000, 22_050, 16_000, 11_025] {
            let output = resample(&sine(1000.0, from_hz, 1.0, 0.5), from_hz, 8000);
            assert_eq!(output.len(), 8000, "from {from_hz} Hz");
            let expected = sine(1000.0, 8000, 1.0, 0.5);
            let level_db =
                20.0 * (rms(middle(&output, 8000)) / rms(middle(&expected, 8000))).log10();
            assert!(level_db.abs() < 0.05, "from {from_hz} Hz: {level_db} dB");
            // Same samples, not only the same level: nothing else in the output.
            let residual: Vec<f32> = output.iter().zip(&expected).map(|(a, b)| a - b).collect();
            let residual_db =
                20.0 * (rms(middle(&residual, 8000)) / rms(middle(&expected, 8000))).log10();
            assert!(
                residual_db < -50.0,
                "from {from_hz} Hz: residual {residual_db} dB"
            );
        }
    }

    #[test]
    fn tones_above_4_khz_do_not_fold_back_when_decimating_to_8_khz() {
        for (from_hz, tone_hz) in [
            (44_100, 4500.0),
            (44_100, 6000.0),
            (44_100, 12_000.0),
            (48_000, 5000.0),
            (48_000, 15_000.0),
            (16_000, 4500.0),
            (16_000, 7000.0),
        ] {
            let input = sine(tone_hz, from_hz, 1.0, 0.5);
            let output = resample(&input, from_hz, 8000);
            let level_db = 20.0 * (rms(middle(&output, 8000)) / rms(&input)).log10();
            assert!(
                level_db < -50.0,
                "{tone_hz} Hz at {from_hz} Hz folded back at {level_db} dB"
            );
        }
    }

    #[test]
    fn upsampling_8_to_16_khz_keeps_the_tone_and_leaves_no_image() {
        // The image of 1 kHz would be at 7 kHz: any of it shows in the residual.
        let output = resample(&sine(1000.0, 8000, 1.0, 0.5), 8000, 16_000);
        assert_eq!(output.len(), 16_000);
        let expected = sine(1000.0, 16_000, 1.0, 0.5);
        let residual: Vec<f32> = output.iter().zip(&expected).map(|(a, b)| a - b).collect();
        let residual_db =
            20.0 * (rms(middle(&residual, 16_000)) / rms(middle(&expected, 16_000))).log10();
        assert!(residual_db < -50.0, "residual {residual_db} dB");
    }

    #[test]
    fn the_same_rate_and_empty_input_come_back_unchanged() {
        let input = [0.25f32, -0.5, 1.0];
        assert_eq!(resample(&input, 8000, 8000), input);
        assert!(resample(&[], 44_100, 8000).is_empty());
        assert_eq!(resample(&input, 0, 8000), input);
    }
}
