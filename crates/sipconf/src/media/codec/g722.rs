//! ITU-T G.722 (09/2012) wideband audio at 64 kbit/s (mode 1): 16 kHz linear
//! PCM split by a 24-tap QMF into two 8 kHz sub-bands, the lower coded with
//! 6-bit and the higher with 2-bit ADPCM, one octet per pair of samples.
//! Encoder and decoder are plain `Copy` values on caller buffers: no heap, so a
//! state can be copied (a mix encoded once and forked) and nothing allocates.
//!
//! Written from the Recommendation's block descriptions (QUANTL, INVQAL,
//! LOGSCL, SCALEL, the adaptive predictor of block 4, and their higher-band
//! twins) with its fixed-point arithmetic: 16-bit saturating adds and
//! `(a * b) >> 15` products. Bit-exact against the Appendix II digital test
//! sequences, and with the QMFs against ffmpeg; see `tests/g722.rs` and
//! `tests/data/g722/README.md`.

/// The coefficients h0..h23 of the transmit and receive QMFs, scaled by 2^13;
/// the filter is symmetric (h_i = h_(23-i)) and each of its even and odd
/// halves sums to 4096.
const QMF: [i32; 24] = [
    3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876, 3876, 951, -805, -210, 362, 32,
    -156, 12, 53, -11, -11, 3,
];

/// Lower-band decision levels of the 6-bit quantiser (QUANTL), scaled
/// by 2^3 relative to DETL: level `m` lies at `Q6[m] * DETL >> 12`.
const Q6: [i32; 30] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
];

/// The 6-bit code for a negative difference in interval `m` (1..=30) of `Q6`.
const CODE_NEGATIVE: [u8; 31] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4,
];

/// The 6-bit code for a non-negative difference in interval `m` (1..=30) of `Q6`.
const CODE_POSITIVE: [u8; 31] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32,
];

/// Inverse quantiser outputs for the full 6-bit lower-band code (INVQBL in
/// mode 1), scaled so `QM6[code] * DETL >> 15` is the difference.
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];

/// Inverse quantiser outputs for the code truncated to 4 bits (INVQAL):
/// the predictor sees only these, so it runs the same in every mode.
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];

/// Higher-band inverse quantiser outputs for the 2-bit code (INVQAH).
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];

/// Lower-band log scale factor multipliers (LOGSCL), by magnitude class.
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];

/// The magnitude class of each 4-bit lower-band code, indexing `WL`.
const MAGNITUDE_CLASS_4: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];

/// Higher-band log scale factor multipliers (LOGSCH), by magnitude class.
const WH: [i32; 3] = [0, -214, 798];

/// The magnitude class of each 2-bit higher-band code, indexing `WH`.
const MAGNITUDE_CLASS_2: [usize; 4] = [2, 1, 2, 1];

/// The mantissa of the linear scale factor, 2^(i/32) scaled by 2^11 (SCALEL/SCALEH).
const SCALE_MANTISSA: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];

/// The higher-band decision level of the 2-bit quantiser (QUANTH), against DETH.
const HIGH_DECISION: i32 = 564;

/// Saturates to the 16-bit range, as the Recommendation's `add` and `sub` do.
#[inline]
fn saturate(value: i32) -> i16 {
    value.clamp(i16::MIN.into(), i16::MAX.into()) as i16
}

/// The reconstructed sub-band signal's range (LIMIT, block 6): 15 bits.
#[inline]
fn limit(value: i32) -> i16 {
    value.clamp(-16384, 16383) as i16
}

/// The Recommendation's `mult`: a Q15 product, floor-rounded.
#[inline]
fn mult(a: i16, b: i32) -> i32 {
    (i32::from(a) * b) >> 15
}

/// True when the sign bits differ (zero counts as positive, as `shr(x, 15)` has it).
#[inline]
fn signs_differ(a: i16, b: i16) -> bool {
    (a ^ b) < 0
}

/// The sub-band the state adapts to: they differ only in their scale factor law.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubBand {
    Lower,
    Higher,
}

impl SubBand {
    /// DETL/DETH after reset: the smallest scale factor.
    fn initial_scale(self) -> i16 {
        match self {
            SubBand::Lower => 32,
            SubBand::Higher => 8,
        }
    }

    /// The upper bound of NBL/NBH (LOGSCL: 18432, LOGSCH: 22528).
    fn log_scale_max(self) -> i32 {
        match self {
            SubBand::Lower => 18432,
            SubBand::Higher => 22528,
        }
    }

    /// The exponent offset of SCALEL (8) and SCALEH (10).
    fn scale_shift(self) -> i32 {
        match self {
            SubBand::Lower => 8,
            SubBand::Higher => 10,
        }
    }
}

/// One sub-band's adaptive state: the scale factor (blocks 3L/3H) and the
/// pole-zero predictor (block 4). Encoder and decoder keep identical copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BandState {
    band: SubBand,
    /// NBL/NBH: the log scale factor.
    log_scale: i16,
    /// DETL/DETH: the quantiser scale factor.
    scale: i16,
    /// SL/SH: the predicted signal.
    estimate: i16,
    /// SZL/SZH: the zero section's part of the prediction.
    zero_estimate: i16,
    /// AL1, AL2: pole coefficients.
    poles: [i16; 2],
    /// RLT1, RLT2: past reconstructed signal.
    reconstructed: [i16; 2],
    /// PLT1, PLT2: past partially reconstructed signal.
    partial: [i16; 2],
    /// BL1..BL6: zero coefficients.
    zeros: [i16; 6],
    /// DLT1..DLT6: past quantised differences.
    differences: [i16; 6],
}

impl BandState {
    fn new(band: SubBand) -> BandState {
        BandState {
            band,
            log_scale: 0,
            scale: band.initial_scale(),
            estimate: 0,
            zero_estimate: 0,
            poles: [0; 2],
            reconstructed: [0; 2],
            partial: [0; 2],
            zeros: [0; 6],
            differences: [0; 6],
        }
    }

    /// The quantised difference for an inverse quantiser output (INVQAL/INVQAH).
    #[inline]
    fn difference(&self, level: i32) -> i16 {
        mult(self.scale, level) as i16
    }

    /// Blocks 3L/3H: LOGSCL then SCALEL (or LOGSCH then SCALEH) for the
    /// magnitude class weight `weight` of the code just sent.
    #[inline]
    fn adapt_scale(&mut self, weight: i32) {
        let leaked = mult(self.log_scale, 32512); // NB * 127/128
        let log_scale = (leaked + weight).clamp(0, self.band.log_scale_max());
        self.log_scale = log_scale as i16;
        let mantissa = SCALE_MANTISSA[((log_scale >> 6) & 31) as usize];
        let shift = self.band.scale_shift() - (log_scale >> 11);
        let linear = if shift < 0 {
            mantissa << -shift
        } else {
            mantissa >> shift
        };
        self.scale = (linear << 2) as i16;
    }

    /// Block 4: reconstructs the signal from the quantised difference, adapts
    /// the two poles and six zeros, and predicts the next sample.
    #[inline]
    fn adapt_predictor(&mut self, difference: i16) {
        let d = i32::from(difference);
        // RECONS, PARREC
        let reconstructed = saturate(i32::from(self.estimate) + d);
        let partial = saturate(i32::from(self.zero_estimate) + d);

        // UPPOL2: the second pole, kept within +-0.75.
        let [a1, a2] = self.poles;
        let a1_times_4 = i32::from(saturate(i32::from(a1) << 2));
        let gradient = if signs_differ(partial, self.partial[0]) {
            a1_times_4
        } else {
            (-a1_times_4).min(i32::from(i16::MAX))
        };
        let step = if signs_differ(partial, self.partial[1]) {
            -128
        } else {
            128
        };
        let a2 = saturate((gradient >> 7) + step + mult(a2, 32512)).clamp(-12288, 12288);

        // UPPOL1: the first pole, kept inside the stability triangle.
        let step = if signs_differ(partial, self.partial[0]) {
            -192
        } else {
            192
        };
        let bound = i32::from(saturate(15360 - i32::from(a2)));
        let a1 = i32::from(saturate(step + mult(a1, 32640))).clamp(-bound, bound) as i16;

        // UPZERO: sign-sign adaptation of the zeros against DLT1..DLT6.
        let step = if difference == 0 { 0 } else { 128 };
        for (zero, &past) in self.zeros.iter_mut().zip(&self.differences) {
            let sign_step = if signs_differ(difference, past) {
                -step
            } else {
                step
            };
            *zero = saturate(sign_step + mult(*zero, 32640));
        }

        // DELAYA
        self.differences.copy_within(0..5, 1);
        self.differences[0] = difference;
        self.reconstructed = [reconstructed, self.reconstructed[0]];
        self.partial = [partial, self.partial[0]];
        self.poles = [a1, a2];

        // FILTEP, FILTEZ, PREDIC
        let pole_part = |a: i16, r: i16| mult(a, i32::from(saturate(2 * i32::from(r))));
        let poles_estimate =
            saturate(pole_part(a1, self.reconstructed[0]) + pole_part(a2, self.reconstructed[1]));
        let mut zero_estimate = 0i16;
        for (&zero, &past) in self.zeros.iter().zip(&self.differences) {
            let term = mult(zero, i32::from(saturate(2 * i32::from(past))));
            zero_estimate = saturate(i32::from(zero_estimate) + term);
        }
        self.zero_estimate = zero_estimate;
        self.estimate = saturate(i32::from(poles_estimate) + i32::from(zero_estimate));
    }
}

/// The 4-bit code the predictor and scale factor see (the top four of six).
#[inline]
fn truncated_low_code(low_code: u8) -> usize {
    usize::from(low_code >> 2)
}

/// The G.722 encoder: 16 kHz linear PCM in, 64 kbit/s octets out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct G722Encoder {
    low: BandState,
    high: BandState,
    /// The transmit QMF's input, newest first: x_in(j), x_in(j-1), ... x_in(j-23).
    history: [i16; 24],
}

impl Default for G722Encoder {
    fn default() -> Self {
        G722Encoder::new()
    }
}

impl G722Encoder {
    /// An encoder in the reset state.
    pub fn new() -> G722Encoder {
        G722Encoder {
            low: BandState::new(SubBand::Lower),
            high: BandState::new(SubBand::Higher),
            history: [0; 24],
        }
    }

    /// Back to the reset state, as at the start of a call.
    pub fn reset(&mut self) {
        *self = G722Encoder::new();
    }

    /// Encodes pairs of 16 kHz samples, one octet per pair, as many as both
    /// buffers hold (an odd last sample is not consumed); returns the octets written.
    pub fn encode(&mut self, pcm_16k: &[i16], out: &mut [u8]) -> usize {
        let mut written = 0;
        for (pair, octet) in pcm_16k.chunks_exact(2).zip(out.iter_mut()) {
            let (low, high) = self.analyse(pair[0], pair[1]);
            *octet = self.encode_sub_bands(low, high);
            written += 1;
        }
        written
    }

    /// The transmit QMF: the lower and higher sub-band samples, in the
    /// codec's 15-bit range, for the next two input samples (`older` first).
    #[inline]
    fn analyse(&mut self, older: i16, newer: i16) -> (i16, i16) {
        self.history.copy_within(0..22, 2);
        self.history[0] = newer;
        self.history[1] = older;
        let (mut even, mut odd) = (0i32, 0i32);
        for (taps, samples) in QMF.chunks_exact(2).zip(self.history.chunks_exact(2)) {
            even += taps[0] * i32::from(samples[0]);
            odd += taps[1] * i32::from(samples[1]);
        }
        // The two halves each have a gain of 2^12; one more bit takes the
        // 16-bit input to the 15-bit range of the sub-band coders.
        (limit((even + odd) >> 14), limit((even - odd) >> 14))
    }

    /// Codes one sample of each sub-band (15-bit range) into an octet: the
    /// higher band's 2 bits over the lower band's 6. With the QMF by-passed,
    /// this is the coder Appendix II's digital test sequences exercise.
    pub fn encode_sub_bands(&mut self, low: i16, high: i16) -> u8 {
        let low_code = self.encode_low(low);
        let high_code = self.encode_high(high);
        (high_code << 6) | low_code
    }

    /// Blocks 1L to 4L: SUBTRA, QUANTL, then the shared adaptation.
    #[inline]
    fn encode_low(&mut self, sample: i16) -> u8 {
        let band = &mut self.low;
        let error = saturate(i32::from(sample) - i32::from(band.estimate));
        // The quantiser works on the magnitude, with negatives one's-complemented.
        let magnitude = i32::from(if error >= 0 { error } else { !error });
        let scale = i32::from(band.scale);
        // The first interval m (1..=30) whose upper level lies above the
        // magnitude: the levels rise with m, so it is one past the count of
        // levels at or below it (counted without branches, which speech
        // would mispredict).
        let interval = 1 + Q6[1..]
            .iter()
            .filter(|&&level| magnitude >= (level * scale) >> 12)
            .count();
        let code = if error < 0 {
            CODE_NEGATIVE[interval]
        } else {
            CODE_POSITIVE[interval]
        };
        let truncated = truncated_low_code(code);
        let difference = band.difference(QM4[truncated]);
        band.adapt_scale(WL[MAGNITUDE_CLASS_4[truncated]]);
        band.adapt_predictor(difference);
        code
    }

    /// Blocks 1H to 4H: SUBTRA, QUANTH, then the shared adaptation.
    #[inline]
    fn encode_high(&mut self, sample: i16) -> u8 {
        let band = &mut self.high;
        let error = saturate(i32::from(sample) - i32::from(band.estimate));
        let magnitude = i32::from(if error >= 0 { error } else { !error });
        let outer = magnitude >= (HIGH_DECISION * i32::from(band.scale)) >> 12;
        let code: u8 = match (error < 0, outer) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        };
        let difference = band.difference(QM2[usize::from(code)]);
        band.adapt_scale(WH[MAGNITUDE_CLASS_2[usize::from(code)]]);
        band.adapt_predictor(difference);
        code
    }
}

/// The G.722 decoder: 64 kbit/s octets in, 16 kHz linear PCM out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct G722Decoder {
    low: BandState,
    high: BandState,
    /// The receive QMF's input, newest first: pairs of (difference, sum) of
    /// the reconstructed sub-bands.
    history: [i16; 24],
}

impl Default for G722Decoder {
    fn default() -> Self {
        G722Decoder::new()
    }
}

impl G722Decoder {
    /// A decoder in the reset state.
    pub fn new() -> G722Decoder {
        G722Decoder {
            low: BandState::new(SubBand::Lower),
            high: BandState::new(SubBand::Higher),
            history: [0; 24],
        }
    }

    /// Back to the reset state, as at the start of a call.
    pub fn reset(&mut self) {
        *self = G722Decoder::new();
    }

    /// Decodes octets into 16 kHz samples, two per octet, as many as both
    /// buffers hold; returns the samples written.
    pub fn decode(&mut self, payload: &[u8], out_16k: &mut [i16]) -> usize {
        let mut written = 0;
        for (&octet, pair) in payload.iter().zip(out_16k.chunks_exact_mut(2)) {
            let (low, high) = self.decode_sub_bands(octet);
            let (first, second) = self.synthesise(low, high);
            pair[0] = first;
            pair[1] = second;
            written += 2;
        }
        written
    }

    /// Decodes one octet (mode 1) into the reconstructed lower and higher
    /// sub-band samples (15-bit range), the QMF by-passed as in Appendix II.
    pub fn decode_sub_bands(&mut self, octet: u8) -> (i16, i16) {
        let low_code = octet & 0x3F;
        let high_code = usize::from(octet >> 6);

        // Blocks 5L and 6L: the output uses all six bits (INVQBL, RECONS, LIMIT);
        // the predictor, as the encoder's, only the top four.
        let low = &mut self.low;
        let low_out = limit(i32::from(low.estimate) + mult(low.scale, QM6[usize::from(low_code)]));
        let truncated = truncated_low_code(low_code);
        let difference = low.difference(QM4[truncated]);
        low.adapt_scale(WL[MAGNITUDE_CLASS_4[truncated]]);
        low.adapt_predictor(difference);

        // Blocks 2H to 6H.
        let high = &mut self.high;
        let difference = high.difference(QM2[high_code]);
        let high_out = limit(i32::from(high.estimate) + i32::from(difference));
        high.adapt_scale(WH[MAGNITUDE_CLASS_2[high_code]]);
        high.adapt_predictor(difference);

        (low_out, high_out)
    }

    /// The receive QMF: two 16 kHz output samples, earlier first.
    #[inline]
    fn synthesise(&mut self, low: i16, high: i16) -> (i16, i16) {
        let (low, high) = (i32::from(low), i32::from(high));
        self.history.copy_within(0..22, 2);
        self.history[0] = saturate(low - high);
        self.history[1] = saturate(low + high);
        let (mut even, mut odd) = (0i32, 0i32);
        for (taps, samples) in QMF.chunks_exact(2).zip(self.history.chunks_exact(2)) {
            even += taps[0] * i32::from(samples[0]);
            odd += taps[1] * i32::from(samples[1]);
        }
        // Gain 2^12 per half, less one bit back to the 16-bit range.
        (saturate(even >> 11), saturate(odd >> 11))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE_HZ: f64 = 16_000.0;

    fn sine(freq_hz: f64, amplitude: f64, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * freq_hz * n as f64 / RATE_HZ;
                (amplitude * phase.sin()).round() as i16
            })
            .collect()
    }

    /// The amplitude of `freq_hz` in `samples` (one DFT bin, Goertzel).
    fn amplitude_at(samples: &[i16], freq_hz: f64) -> f64 {
        let coefficient = 2.0 * (2.0 * std::f64::consts::PI * freq_hz / RATE_HZ).cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in samples {
            let s0 = f64::from(x) + coefficient * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = (s1 * s1 + s2 * s2 - coefficient * s1 * s2).max(0.0);
        2.0 * power.sqrt() / samples.len() as f64
    }

    /// Encodes and decodes `pcm` in 20 ms frames; returns what the far end hears.
    fn round_trip(pcm: &[i16]) -> Vec<i16> {
        let mut encoder = G722Encoder::new();
        let mut decoder = G722Decoder::new();
        let mut heard = vec![0i16; pcm.len()];
        for (frame, out) in pcm.chunks(320).zip(heard.chunks_mut(320)) {
            let mut octets = [0u8; 160];
            let written = encoder.encode(frame, &mut octets);
            assert_eq!(written, frame.len() / 2);
            assert_eq!(decoder.decode(&octets[..written], out), frame.len());
        }
        heard
    }

    fn level_change_db(freq_hz: f64, amplitude: f64) -> f64 {
        let pcm = sine(freq_hz, amplitude, 16_000);
        let heard = round_trip(&pcm);
        // Past the codec's start-up (a few ms of adaptation and the QMF delay).
        let sent = amplitude_at(&pcm[1600..], freq_hz);
        let received = amplitude_at(&heard[1600..], freq_hz);
        20.0 * (received / sent).log10()
    }

    #[test]
    fn a_1_khz_tone_round_trips_within_half_a_db() {
        for amplitude in [1000.0, 8000.0, 20_000.0] {
            let change = level_change_db(1000.0, amplitude);
            assert!(change.abs() < 0.5, "{amplitude}: {change:.2} dB");
        }
    }

    #[test]
    fn a_6_khz_tone_survives_in_the_higher_band() {
        let change = level_change_db(6000.0, 8000.0);
        assert!(change.abs() < 1.0, "{change:.2} dB");
    }

    #[test]
    fn the_round_trip_delays_by_the_two_qmfs_and_keeps_the_waveform() {
        let pcm = sine(1000.0, 8000.0, 16_000);
        let heard = round_trip(&pcm);
        // The transmit and receive QMFs (24 taps each) together delay by 22 samples.
        let delay = 22;
        let (mut signal, mut noise) = (0.0f64, 0.0f64);
        for (sent, got) in pcm[1600..15_000].iter().zip(&heard[1600 + delay..]) {
            signal += f64::from(*sent).powi(2);
            noise += (f64::from(*got) - f64::from(*sent)).powi(2);
        }
        let snr_db = 10.0 * (signal / noise).log10();
        assert!(snr_db > 25.0, "SNR {snr_db:.1} dB at a delay of {delay}");
    }

    #[test]
    fn silence_stays_silent() {
        let heard = round_trip(&[0i16; 3200]);
        assert!(heard.iter().all(|&s| s.abs() <= 4), "{:?}", &heard[..32]);
    }

    #[test]
    fn a_copied_state_codes_exactly_as_the_original() {
        let pcm = sine(440.0, 12_000.0, 6400);
        let mut encoder = G722Encoder::new();
        let mut decoder = G722Decoder::new();
        let mut octets = [0u8; 1600];
        encoder.encode(&pcm[..3200], &mut octets);
        let mut samples = [0i16; 3200];
        decoder.decode(&octets, &mut samples);
        let (mut encoder_copy, mut decoder_copy) = (encoder, decoder);
        let (mut a, mut b) = ([0u8; 1600], [0u8; 1600]);
        encoder.encode(&pcm[3200..], &mut a);
        encoder_copy.encode(&pcm[3200..], &mut b);
        assert_eq!(a, b);
        let (mut x, mut y) = ([0i16; 3200], [0i16; 3200]);
        decoder.decode(&a, &mut x);
        decoder_copy.decode(&b, &mut y);
        assert_eq!(x, y);
        assert_eq!(encoder, encoder_copy);
        assert_eq!(decoder, decoder_copy);
    }

    #[test]
    fn reset_returns_to_the_new_state() {
        let mut encoder = G722Encoder::new();
        let mut decoder = G722Decoder::new();
        let mut octets = [0u8; 160];
        encoder.encode(&sine(1000.0, 9000.0, 320), &mut octets);
        decoder.decode(&octets, &mut [0i16; 320]);
        assert_ne!(encoder, G722Encoder::new());
        encoder.reset();
        decoder.reset();
        assert_eq!(encoder, G722Encoder::new());
        assert_eq!(decoder, G722Decoder::new());
    }

    #[test]
    fn encode_and_decode_stop_at_the_shorter_buffer() {
        let mut encoder = G722Encoder::new();
        let mut out = [0u8; 4];
        assert_eq!(encoder.encode(&[0i16; 20], &mut out), 4);
        assert_eq!(encoder.encode(&[0i16; 5], &mut [0u8; 10]), 2);
        let mut decoder = G722Decoder::new();
        assert_eq!(decoder.decode(&[0u8; 10], &mut [0i16; 7]), 6);
        assert_eq!(decoder.decode(&[0u8; 2], &mut [0i16; 320]), 4);
    }

    #[test]
    fn full_scale_input_neither_panics_nor_wraps() {
        let square: Vec<i16> = (0..3200)
            .map(|n| {
                if (n / 16) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let heard = round_trip(&square);
        // The square's fundamental (500 Hz) comes back at the sent polarity.
        let correlation: f64 = square[1600..3000]
            .iter()
            .zip(&heard[1622..])
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        assert!(correlation > 0.0);
        let mut decoder = G722Decoder::new();
        let mut out = [0i16; 512];
        let every_octet: Vec<u8> = (0..=255).collect();
        decoder.decode(&every_octet, &mut out);
    }
}
