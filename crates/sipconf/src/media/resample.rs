//! The project's one resampler, two ways of running one kernel design (a
//! Blackman-windowed sinc low-pass, `windowed_sinc`):
//!
//! - `resample`: whole buffers at any ratio, the kernel evaluated at each
//!   output instant, cut off at 90 % of the lower Nyquist frequency. Fetched
//!   files and spoken sentences are brought to the conference rate with it,
//!   and `sipconf dtmf` recordings to the DTMF receiver's 8 kHz. It allocates
//!   its output and its kernel table: it runs once per clip or recording, off
//!   the media thread.
//! - `Interpolator2x` and `Decimator2x`: the same kernel as a fixed polyphase
//!   FIR between 8 and 16 kHz, streaming one 20 ms frame at a time with its
//!   state (a short history) kept per member or per mix. They allocate
//!   nothing: the media tick runs them, for narrowband members in a wideband
//!   conference (docs/architecture.md "Wideband conferences").
//!
//! Either way nothing above the new Nyquist frequency folds back into the
//! band (a DTMF tone or speech).
//! - `DriftingResampler` (`resample/drifting.rs`): the same kernel streaming
//!   a sound card's audio at a ratio corrected for its clock drift.

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
        .map(|step| windowed_sinc(step as f64 / TABLE_STEPS as f64, ZERO_CROSSINGS))
        .collect()
}

/// The kernel both resamplers use: sinc at `x` zero crossings from the
/// centre, under a Blackman window that is 1 at the centre and 0 at
/// `zero_crossings` (and beyond).
fn windowed_sinc(x: f64, zero_crossings: usize) -> f64 {
    let x = x.abs();
    if x >= zero_crossings as f64 {
        return 0.0;
    }
    let sinc = if x == 0.0 {
        1.0
    } else {
        (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
    };
    let t = std::f64::consts::PI * x / zero_crossings as f64;
    let window = 0.42 + 0.5 * t.cos() + 0.08 * (2.0 * t).cos();
    sinc * window
}

/// Zero crossings of the streaming 2x filter's sinc on each side: fewer than
/// `resample`'s, for a tick's budget; with the Blackman window the stop band
/// (below -58 dB) begins about 1.3 kHz above the cut-off.
const STREAM_ZERO_CROSSINGS: usize = 8;
/// The streaming filter's cut-off: 3.4 kHz, the top of the telephone band,
/// so its stop band begins below 4.7 kHz and a 6 kHz tone from a wideband
/// member is gone (below -58 dB) in what a narrowband member hears.
const STREAM_CUTOFF_HZ: f64 = 3400.0;
/// Half the streaming kernel's length in 16 kHz samples: its taps run
/// `-STREAM_HALF_TAPS..=STREAM_HALF_TAPS` (the last zero crossing, rounded
/// down to an even number so both polyphase branches line up).
pub const STREAM_HALF_TAPS: usize = 18;
const STREAM_TAPS: usize = 2 * STREAM_HALF_TAPS + 1;
/// The narrowband and wideband rates the streaming filter converts between.
pub const NARROW_RATE_HZ: u32 = 8000;
pub const WIDE_RATE_HZ: u32 = 16_000;
/// Longest frame either side of the streaming filter: 20 ms at 16 kHz.
const STREAM_FRAME_MAX: usize = (WIDE_RATE_HZ / 50) as usize;

/// The streaming 2x filter's taps at 16 kHz, computed once (at `MediaCore`
/// start) and lent to every `Interpolator2x` and `Decimator2x`, whose state
/// is only their history.
#[derive(Clone, Debug)]
pub struct Kernel2x {
    /// Taps at 16 kHz, centre at `STREAM_HALF_TAPS`, summing to one.
    taps: [f32; STREAM_TAPS],
    /// The interpolator's two branches, each scaled to sum to one (zero
    /// stuffing halved the level): `even[j]` from `taps[2j]`, `odd[j]` from
    /// `taps[2j + 1]`.
    even: [f32; STREAM_HALF_TAPS + 1],
    odd: [f32; STREAM_HALF_TAPS],
}

impl Default for Kernel2x {
    fn default() -> Self {
        Kernel2x::new()
    }
}

impl Kernel2x {
    pub fn new() -> Kernel2x {
        // Zero crossings of the sinc are 1 / (2 * cutoff) samples apart.
        let cutoff = STREAM_CUTOFF_HZ / f64::from(WIDE_RATE_HZ);
        let mut taps64 = [0f64; STREAM_TAPS];
        for (index, tap) in taps64.iter_mut().enumerate() {
            let n = index as f64 - STREAM_HALF_TAPS as f64;
            *tap = windowed_sinc(2.0 * cutoff * n, STREAM_ZERO_CROSSINGS);
        }
        let sum: f64 = taps64.iter().sum();
        let taps: [f32; STREAM_TAPS] = std::array::from_fn(|i| (taps64[i] / sum) as f32);
        // Each branch alone sums to one half, so a constant comes through
        // the interpolator at its level on even and odd samples alike.
        let even_sum: f64 = taps64.iter().step_by(2).sum();
        let odd_sum: f64 = taps64.iter().skip(1).step_by(2).sum();
        Kernel2x {
            taps,
            even: std::array::from_fn(|j| (taps64[2 * j] / even_sum) as f32),
            odd: std::array::from_fn(|j| (taps64[2 * j + 1] / odd_sum) as f32),
        }
    }
}

/// 8 kHz to 16 kHz, one frame at a time: zero stuffing and the 3.4 kHz
/// low-pass, in its two polyphase branches. Delays by `STREAM_HALF_TAPS`
/// samples at 16 kHz (1.1 ms).
#[derive(Clone, Debug, Default)]
pub struct Interpolator2x {
    /// The last `STREAM_HALF_TAPS` input samples.
    history: [f32; STREAM_HALF_TAPS],
}

impl Interpolator2x {
    /// Forgets the signal (a new member, a new rate).
    pub fn reset(&mut self) {
        self.history = [0.0; STREAM_HALF_TAPS];
    }

    /// Writes `2 * input.len()` samples at 16 kHz into `output` (at most 160
    /// input samples are taken, and no more than `output` holds).
    pub fn process(&mut self, kernel: &Kernel2x, input: &[i16], output: &mut [i16]) {
        let count = input.len().min(STREAM_FRAME_MAX / 2).min(output.len() / 2);
        let mut buffer = [0f32; STREAM_HALF_TAPS + STREAM_FRAME_MAX / 2];
        buffer[..STREAM_HALF_TAPS].copy_from_slice(&self.history);
        for (slot, &sample) in buffer[STREAM_HALF_TAPS..].iter_mut().zip(&input[..count]) {
            *slot = f32::from(sample);
        }
        // Output 2i and 2i+1 both read input i+H-j for branch tap j.
        for (i, pair) in output[..2 * count].chunks_exact_mut(2).enumerate() {
            let window = &buffer[i..i + STREAM_HALF_TAPS + 1];
            let mut even = 0f32;
            for (&tap, &sample) in kernel.even.iter().zip(window.iter().rev()) {
                even += tap * sample;
            }
            let mut odd = 0f32;
            for (&tap, &sample) in kernel.odd.iter().zip(window[1..].iter().rev()) {
                odd += tap * sample;
            }
            pair[0] = to_i16(even);
            pair[1] = to_i16(odd);
        }
        self.history
            .copy_from_slice(&buffer[count..count + STREAM_HALF_TAPS]);
    }
}

/// 16 kHz to 8 kHz, one frame at a time: the 3.4 kHz low-pass evaluated at
/// every other sample. Delays by `STREAM_HALF_TAPS` samples at 16 kHz.
#[derive(Clone, Debug)]
pub struct Decimator2x {
    /// The last `2 * STREAM_HALF_TAPS` input samples.
    history: [f32; 2 * STREAM_HALF_TAPS],
}

impl Default for Decimator2x {
    fn default() -> Self {
        Decimator2x {
            history: [0.0; 2 * STREAM_HALF_TAPS],
        }
    }
}

impl Decimator2x {
    /// Forgets the signal (a new member, a new rate, or a silent mix).
    pub fn reset(&mut self) {
        self.history = [0.0; 2 * STREAM_HALF_TAPS];
    }

    /// Writes `input.len() / 2` samples at 8 kHz into `output` (at most 320
    /// input samples are taken, and no more than `output` holds).
    pub fn process(&mut self, kernel: &Kernel2x, input: &[i16], output: &mut [i16]) {
        let count = (input.len().min(STREAM_FRAME_MAX) / 2).min(output.len());
        let mut buffer = [0f32; 2 * STREAM_HALF_TAPS + STREAM_FRAME_MAX];
        buffer[..2 * STREAM_HALF_TAPS].copy_from_slice(&self.history);
        for (slot, &sample) in buffer[2 * STREAM_HALF_TAPS..]
            .iter_mut()
            .zip(&input[..2 * count])
        {
            *slot = f32::from(sample);
        }
        for (m, sample) in output[..count].iter_mut().enumerate() {
            let window = &buffer[2 * m..2 * m + STREAM_TAPS];
            let mut total = 0f32;
            for (&tap, &x) in kernel.taps.iter().zip(window) {
                total += tap * x;
            }
            *sample = to_i16(total);
        }
        self.history
            .copy_from_slice(&buffer[2 * count..2 * count + 2 * STREAM_HALF_TAPS]);
    }
}

/// Rounded half away from zero and saturated. Not `f32::round`: without
/// SSE4.1 (the x86-64 baseline) that is a library call, most of the
/// filter's cost; a truncating conversion of `x ± 0.5` is one instruction.
#[inline(always)]
fn to_i16(sample: f32) -> i16 {
    let rounded = (sample + 0.5f32.copysign(sample)) as i32;
    rounded.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
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

    /// Runs `input` through `step` 20 ms at a time, as the tick does.
    fn in_frames(
        input: &[i16],
        frame: usize,
        ratio: (usize, usize),
        mut step: impl FnMut(&[i16], &mut [i16]),
    ) -> Vec<i16> {
        let mut output = Vec::new();
        for chunk in input.chunks(frame) {
            let mut out = vec![0i16; chunk.len() * ratio.0 / ratio.1];
            step(chunk, &mut out);
            output.extend(out);
        }
        output
    }

    fn tone_i16(frequency_hz: f64, rate_hz: u32, seconds: f64, amplitude: f64) -> Vec<i16> {
        sine(frequency_hz, rate_hz, seconds, amplitude)
            .into_iter()
            .map(|s| s.round() as i16)
            .collect()
    }

    /// Level of `frequency_hz` in `samples` (by projection) and of everything
    /// else, in dB relative to `reference_rms`, skipping the first 40 ms.
    fn tone_and_rest_db(
        samples: &[i16],
        rate_hz: u32,
        frequency_hz: f64,
        reference_rms: f64,
    ) -> (f64, f64) {
        let skip = rate_hz as usize / 25;
        let x: Vec<f64> = samples[skip..].iter().map(|&s| f64::from(s)).collect();
        let w = 2.0 * std::f64::consts::PI * frequency_hz / f64::from(rate_hz);
        let (mut c, mut s) = (0.0, 0.0);
        for (n, &v) in x.iter().enumerate() {
            let t = (n + skip) as f64 * w;
            c += v * t.cos();
            s += v * t.sin();
        }
        let (c, s) = (2.0 * c / x.len() as f64, 2.0 * s / x.len() as f64);
        let rest: f64 = x
            .iter()
            .enumerate()
            .map(|(n, &v)| {
                let t = (n + skip) as f64 * w;
                (v - c * t.cos() - s * t.sin()).powi(2)
            })
            .sum::<f64>()
            / x.len() as f64;
        let tone_rms = ((c * c + s * s) / 2.0).sqrt();
        (
            20.0 * (tone_rms / reference_rms).log10(),
            10.0 * (rest / (reference_rms * reference_rms)).log10(),
        )
    }

    #[test]
    fn streaming_1_khz_passes_up_and_down_within_a_fifth_of_a_db_and_nothing_else() {
        let kernel = Kernel2x::new();
        let rms = 8000.0 / 2f64.sqrt();
        let narrow = tone_i16(1000.0, 8000, 1.0, 8000.0);
        let mut up = Interpolator2x::default();
        let wide = in_frames(&narrow, 160, (2, 1), |i, o| up.process(&kernel, i, o));
        let (tone_db, rest_db) = tone_and_rest_db(&wide, 16_000, 1000.0, rms);
        assert!(tone_db.abs() < 0.2, "up: 1 kHz at {tone_db} dB");
        // The 7 kHz image, and any seam between frames, would show here.
        assert!(rest_db < -50.0, "up: the rest at {rest_db} dB");

        let wide = tone_i16(1000.0, 16_000, 1.0, 8000.0);
        let mut down = Decimator2x::default();
        let narrow = in_frames(&wide, 320, (1, 2), |i, o| down.process(&kernel, i, o));
        let (tone_db, rest_db) = tone_and_rest_db(&narrow, 8000, 1000.0, rms);
        assert!(tone_db.abs() < 0.2, "down: 1 kHz at {tone_db} dB");
        assert!(rest_db < -50.0, "down: the rest at {rest_db} dB");
    }

    #[test]
    fn streaming_decimation_keeps_6_khz_and_the_upper_band_out_of_8_khz() {
        let kernel = Kernel2x::new();
        for tone_hz in [4800.0, 6000.0, 7000.0] {
            let wide = tone_i16(tone_hz, 16_000, 1.0, 8000.0);
            let mut down = Decimator2x::default();
            let narrow = in_frames(&wide, 320, (1, 2), |i, o| down.process(&kernel, i, o));
            let skip = 320;
            let level: Vec<f32> = narrow[skip..].iter().map(|&s| f32::from(s)).collect();
            let level_db = 20.0 * (rms(&level) / (8000.0 / 2f64.sqrt())).log10();
            assert!(
                level_db < -50.0,
                "{tone_hz} Hz folded back at {level_db} dB"
            );
        }
    }

    #[test]
    fn the_same_rate_and_empty_input_come_back_unchanged() {
        let input = [0.25f32, -0.5, 1.0];
        assert_eq!(resample(&input, 8000, 8000), input);
        assert!(resample(&[], 44_100, 8000).is_empty());
        assert_eq!(resample(&input, 0, 8000), input);
    }
}
