//! What the simulated phones say and how a listener judges what it hears.
//!
//! Everything sent is encoded once at start (a few seconds of speech-like
//! signal per voice, the marker pip, low noise), so sending a packet is a copy.
//! A listener decodes through a 256-entry table, sums the energy, and looks for
//! the marker: a 2 kHz pip, which the voices (harmonics below 1.6 kHz) never
//! contain, with the test kit's Goertzel meter over 5 ms blocks.

use sipconf::media::Codec;
use sipconf_testkit::meter::Goertzel;

/// 8 kHz samples in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 160;
/// Frames of speech-like signal per voice before it repeats (4 s).
const VOICE_FRAMES: usize = 200;
/// Distinct voices; talker `n` uses voice `n % VOICES`, started at its own offset.
const VOICES: usize = 8;
/// Peak of a voice: three talkers sum well below the bridge's limiter knee.
const VOICE_PEAK: f64 = 2500.0;
/// The marker: a 2 kHz pip of two frames, starting at sample 0 of its first frame.
pub const PIP_FREQ_HZ: f64 = 2000.0;
pub const PIP_FRAMES: usize = 2;
const PIP_AMPLITUDE: f64 = 6000.0;
/// Samples per Goertzel block when looking for the pip: 5 ms resolution.
pub const PIP_BLOCK_SAMPLES: usize = 40;
/// A block whose 2 kHz amplitude passes this holds the pip.
const PIP_DETECT_AMPLITUDE: f64 = PIP_AMPLITUDE / 2.0;
/// Peak of the low noise non-talkers send: about -70 dBFS, far below the gate.
const NOISE_PEAK: i32 = 12;

/// The encoded frames every phone sends from.
pub struct Sounds {
    pub codec: Codec,
    voices: Vec<[u8; FRAME_SAMPLES]>,
    pip: [[u8; FRAME_SAMPLES]; PIP_FRAMES],
    noise: Vec<[u8; FRAME_SAMPLES]>,
    decode_table: [i16; 256],
}

impl Sounds {
    pub fn new(codec: Codec) -> Sounds {
        let mut voices = Vec::with_capacity(VOICES * VOICE_FRAMES);
        for voice in 0..VOICES {
            let pcm = voice_samples(voice);
            for frame in pcm.chunks_exact(FRAME_SAMPLES) {
                voices.push(encode_frame(codec, frame));
            }
        }
        let pip_pcm: Vec<i16> = (0..PIP_FRAMES * FRAME_SAMPLES)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * PIP_FREQ_HZ * n as f64 / 8000.0;
                // A sine at fs/4 starting at phase 0 would hit zero every other
                // sample; a quarter-period shift keeps the first sample at the peak.
                (PIP_AMPLITUDE * (phase + std::f64::consts::FRAC_PI_4).sin()).round() as i16
            })
            .collect();
        let pip = [
            encode_frame(codec, &pip_pcm[..FRAME_SAMPLES]),
            encode_frame(codec, &pip_pcm[FRAME_SAMPLES..]),
        ];
        let mut seed = 0x2545_f491_u32;
        let noise = (0..50)
            .map(|_| {
                let pcm: Vec<i16> = (0..FRAME_SAMPLES)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        ((seed % (2 * NOISE_PEAK as u32 + 1)) as i32 - NOISE_PEAK) as i16
                    })
                    .collect();
                encode_frame(codec, &pcm)
            })
            .collect();
        let mut decode_table = [0i16; 256];
        for (code, out) in decode_table.iter_mut().enumerate() {
            codec.decode(&[code as u8], std::slice::from_mut(out));
        }
        Sounds {
            codec,
            voices,
            pip,
            noise,
            decode_table,
        }
    }

    /// Frame `frame` of talker `talker`'s speech.
    pub fn voice_frame(&self, talker: usize, frame: u64) -> &[u8; FRAME_SAMPLES] {
        let voice = talker % VOICES;
        // Talkers sharing a voice start at different points of it.
        let offset = (talker / VOICES) * 37 + voice * 11;
        let index = (frame as usize + offset) % VOICE_FRAMES;
        &self.voices[voice * VOICE_FRAMES + index]
    }

    pub fn pip_frame(&self, part: usize) -> &[u8; FRAME_SAMPLES] {
        &self.pip[part.min(PIP_FRAMES - 1)]
    }

    pub fn noise_frame(&self, frame: u64) -> &[u8; FRAME_SAMPLES] {
        &self.noise[frame as usize % self.noise.len()]
    }

    /// Decodes one payload into `out` (up to `out.len()` samples); returns the count.
    pub fn decode(&self, payload: &[u8], out: &mut [i16]) -> usize {
        let count = payload.len().min(out.len());
        for (sample, &code) in out.iter_mut().zip(payload) {
            *sample = self.decode_table[code as usize];
        }
        count
    }
}

fn encode_frame(codec: Codec, pcm: &[i16]) -> [u8; FRAME_SAMPLES] {
    let mut out = [0u8; FRAME_SAMPLES];
    codec.encode(pcm, &mut out);
    out
}

/// Speech-like signal: a glottal-ish harmonic series (1/k roll-off, a soft
/// formant bump near 500 Hz, nothing above 1.6 kHz) on a gliding pitch, shaped
/// into 4-5 syllables a second with a pause every fourth syllable.
fn voice_samples(voice: usize) -> Vec<i16> {
    let samples = VOICE_FRAMES * FRAME_SAMPLES;
    let f0_hz = 100.0 + 23.0 * voice as f64;
    let syllable_hz = 4.0 + 0.2 * voice as f64;
    let mut phase = 0.0f64;
    let mut raw = Vec::with_capacity(samples);
    for n in 0..samples {
        let t = n as f64 / 8000.0;
        let pitch = f0_hz * (1.0 + 0.06 * (2.0 * std::f64::consts::PI * 0.7 * t).sin());
        phase += 2.0 * std::f64::consts::PI * pitch / 8000.0;
        let mut value = 0.0;
        let mut k = 1.0;
        while k * pitch < 1600.0 {
            let formant = 1.0 + 1.5 * (-((k * pitch - 500.0) / 250.0).powi(2)).exp();
            value += formant / k * (k * phase).sin();
            k += 1.0;
        }
        let syllable = t * syllable_hz;
        let envelope = if syllable as u64 % 4 == 3 {
            0.0
        } else {
            (std::f64::consts::PI * syllable.fract()).sin().powi(2)
        };
        raw.push(value * envelope);
    }
    let peak = raw.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-9);
    raw.iter()
        .map(|v| (v / peak * VOICE_PEAK).round() as i16)
        .collect()
}

/// What one listener has heard in the measurement window.
#[derive(Clone, Debug)]
pub struct Hearing {
    energy: f64,
    samples: u64,
    /// The 2 kHz level of the block in progress.
    pip_meter: Goertzel,
    /// Arrival time of the last detected pip onset; further blocks within the
    /// pip's length (plus margin) are the same pip.
    last_onset_ns: Option<i64>,
}

impl Default for Hearing {
    fn default() -> Hearing {
        Hearing {
            energy: 0.0,
            samples: 0,
            pip_meter: Goertzel::new(PIP_FREQ_HZ),
            last_onset_ns: None,
        }
    }
}

impl Hearing {
    /// Adds one decoded frame that arrived at `arrival_ns`; returns the onset time
    /// of the pip if this frame starts one: the arrival time plus the offset of
    /// the first block holding it.
    pub fn hear(&mut self, pcm: &[i16], arrival_ns: i64) -> Option<i64> {
        let mut onset = None;
        for (n, &sample) in pcm.iter().enumerate() {
            let x = sample as f64;
            self.energy += x * x;
            self.pip_meter.push(x);
            if self.pip_meter.samples() == PIP_BLOCK_SAMPLES {
                let amplitude = self.pip_meter.amplitude();
                self.pip_meter.reset();
                if amplitude >= PIP_DETECT_AMPLITUDE && onset.is_none() {
                    let block_start = (n + 1 - PIP_BLOCK_SAMPLES) as i64;
                    let at = arrival_ns + block_start * 125_000;
                    let refractory_ns = 200_000_000;
                    if self
                        .last_onset_ns
                        .is_none_or(|last| at - last > refractory_ns)
                    {
                        self.last_onset_ns = Some(at);
                        onset = Some(at);
                    }
                }
            }
        }
        self.samples += pcm.len() as u64;
        onset
    }

    /// RMS level of everything heard, in dB relative to full scale (-inf for nothing).
    pub fn level_dbfs(&self) -> f64 {
        if self.samples == 0 || self.energy <= 0.0 {
            return f64::NEG_INFINITY;
        }
        let rms = (self.energy / self.samples as f64).sqrt();
        20.0 * (rms / 32768.0).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(sounds: &Sounds, frame: &[u8; FRAME_SAMPLES]) -> [i16; FRAME_SAMPLES] {
        let mut pcm = [0i16; FRAME_SAMPLES];
        sounds.decode(frame, &mut pcm);
        pcm
    }

    #[test]
    fn the_pip_is_found_at_its_first_sample_and_only_once() {
        let sounds = Sounds::new(Codec::Pcmu);
        let mut hearing = Hearing::default();
        assert_eq!(
            hearing.hear(&decoded(&sounds, sounds.noise_frame(0)), 0),
            None
        );
        let onset = hearing.hear(&decoded(&sounds, sounds.pip_frame(0)), 1_000_000);
        assert_eq!(onset, Some(1_000_000));
        assert_eq!(
            hearing.hear(&decoded(&sounds, sounds.pip_frame(1)), 21_000_000),
            None
        );
    }

    #[test]
    fn speech_from_several_talkers_never_looks_like_the_pip() {
        let sounds = Sounds::new(Codec::Pcma);
        let mut hearing = Hearing::default();
        for frame in 0..VOICE_FRAMES as u64 {
            let mut sum = [0i16; FRAME_SAMPLES];
            for talker in 0..3 {
                let pcm = decoded(&sounds, sounds.voice_frame(talker, frame));
                for (s, p) in sum.iter_mut().zip(pcm) {
                    *s = s.saturating_add(p);
                }
            }
            assert_eq!(hearing.hear(&sum, frame as i64 * 20_000_000), None);
        }
        let level = hearing.level_dbfs();
        assert!(
            level > -35.0 && level < -15.0,
            "three talkers at {level:.1} dBFS"
        );
    }

    #[test]
    fn low_noise_is_far_below_the_bridge_noise_gate() {
        let sounds = Sounds::new(Codec::Pcmu);
        let mut hearing = Hearing::default();
        for frame in 0..50 {
            hearing.hear(&decoded(&sounds, sounds.noise_frame(frame)), 0);
        }
        assert!(hearing.level_dbfs() < -65.0, "{}", hearing.level_dbfs());
    }
}
