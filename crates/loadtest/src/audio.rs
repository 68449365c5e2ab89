//! What the simulated phones say and how a listener judges what it hears.
//!
//! Everything sent is encoded once at start (a few seconds of speech-like
//! signal per voice, the marker pip, low noise), so sending a packet is a copy.
//! A G.711 listener decodes through a 256-entry table, a G.722 listener through
//! its own `G722Decoder` (a plain value, one per call); it sums the energy and
//! looks for the marker: a 2 kHz pip, which the voices (harmonics below
//! 1.6 kHz) never contain, with the test kit's Goertzel meter over 5 ms blocks.
//!
//! G.722 is stateful, so a phone's frames must continue its encoder's state
//! or the bridge's decoder, which carries the state of the frames before,
//! hears the first milliseconds of a new sound wrong (a talker's pip spliced
//! in from another encoder was found a 5 ms block late). So a G.722 talker
//! encodes as it sends, with its own `G722Encoder` (a plain value) over the
//! precomputed 16 kHz speech and pip: the generator's only per-packet coding,
//! for `--talkers` phones. The noise and the pip of a phone that does not
//! talk are precomputed by one continuous encoder run twice over the noise's
//! loop (the second pass kept, so the wrap continues its state) and then over
//! the pip: a quiet phone's decoder state is the noise's, whichever noise
//! frame it is at (tested below).

use sipconf::media::codec::g722::{G722Decoder, G722Encoder};
use sipconf::media::Codec;
use sipconf_testkit::meter::Goertzel;

/// Payload bytes of one 20 ms frame: 160 8 kHz samples of G.711, or 320
/// 16 kHz samples of G.722 at 64 kbit/s.
pub const FRAME_BYTES: usize = 160;
/// The most samples one frame decodes to (G.722's 16 kHz).
pub const MAX_FRAME_SAMPLES: usize = 320;
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
/// Blocks of this many milliseconds when looking for the pip.
const PIP_BLOCK_MS: u32 = 5;
/// A block whose 2 kHz amplitude passes this holds the pip. A quarter of
/// the pip: speech from three talkers reaches about 250 at 2 kHz, and the
/// first 5 ms of a pip that went through two G.722 coder pairs (phone to
/// bridge, bridge to phone) about 2500, as the ADPCM adapts to its onset
/// (half the pip put that onset a block, 5 ms, late).
const PIP_DETECT_AMPLITUDE: f64 = PIP_AMPLITUDE / 4.0;
/// Peak of the low noise non-talkers send: about -70 dBFS, far below the gate.
const NOISE_PEAK: i32 = 12;
/// Distinct frames of noise before it repeats.
const NOISE_FRAMES: usize = 50;

type Frame = [u8; FRAME_BYTES];

/// What a phone says in one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Say {
    /// Low noise: a phone that does not talk.
    Noise,
    /// Speech of talker `n`.
    Voice(usize),
    /// Part `n` of the marker pip.
    Pip(usize),
}

/// The frames every phone sends from.
pub struct Sounds {
    pub codec: Codec,
    /// G.711: every voice's frames, encoded.
    voices: Vec<Frame>,
    /// G.722: every voice's 16 kHz samples, which talkers encode as they go.
    voice_pcm: Vec<Vec<i16>>,
    pip: [Frame; PIP_FRAMES],
    pip_pcm: Vec<i16>,
    noise: Vec<Frame>,
    decode_table: [i16; 256],
}

/// Encodes one stream of frames: G.711 sample by sample, G.722 with one
/// encoder carried from frame to frame (and from call to call of `encode`).
struct FrameEncoder {
    codec: Codec,
    g722: G722Encoder,
}

impl FrameEncoder {
    fn new(codec: Codec) -> FrameEncoder {
        FrameEncoder {
            codec,
            g722: G722Encoder::new(),
        }
    }

    /// Encodes `pcm` (whole frames at the codec's rate) into frames.
    fn encode(&mut self, pcm: &[i16]) -> Vec<Frame> {
        pcm.chunks_exact(frame_samples(self.codec))
            .map(|samples| {
                let mut out = [0u8; FRAME_BYTES];
                encode_frame(self.codec, &mut self.g722, samples, &mut out);
                out
            })
            .collect()
    }

    /// Encodes a loop so that its wrap continues the encoder's state: the
    /// first pass only warms the encoder up.
    fn encode_loop(&mut self, pcm: &[i16]) -> Vec<Frame> {
        self.encode(pcm);
        self.encode(pcm)
    }
}

fn encode_frame(codec: Codec, g722: &mut G722Encoder, pcm: &[i16], out: &mut Frame) {
    let written = match codec {
        Codec::G722 => g722.encode(pcm, out),
        codec => codec.encode(pcm, out),
    };
    debug_assert_eq!(written, FRAME_BYTES);
}

/// Samples of one 20 ms frame of `codec`'s audio.
pub fn frame_samples(codec: Codec) -> usize {
    codec.sample_rate_hz() as usize / 50
}

impl Sounds {
    /// The sounds for `codec`: PCMU, PCMA or G.722 (`parse_codec`).
    pub fn new(codec: Codec) -> Sounds {
        let rate_hz = codec.sample_rate_hz();
        let samples = frame_samples(codec);
        let voice_pcm: Vec<Vec<i16>> = (0..VOICES).map(|v| voice_samples(v, rate_hz)).collect();
        let (voices, voice_pcm) = if codec == Codec::G722 {
            (Vec::new(), voice_pcm)
        } else {
            let frames = voice_pcm
                .iter()
                .flat_map(|pcm| FrameEncoder::new(codec).encode(pcm))
                .collect();
            (frames, Vec::new())
        };
        let mut seed = 0x2545_f491_u32;
        let noise_pcm: Vec<i16> = (0..NOISE_FRAMES * samples)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                ((seed % (2 * NOISE_PEAK as u32 + 1)) as i32 - NOISE_PEAK) as i16
            })
            .collect();
        let mut noise_encoder = FrameEncoder::new(codec);
        let noise = noise_encoder.encode_loop(&noise_pcm);
        let pip_pcm: Vec<i16> = (0..PIP_FRAMES * samples)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * PIP_FREQ_HZ * n as f64 / rate_hz as f64;
                // A sine at fs/4 starting at phase 0 would hit zero every other
                // sample; a quarter-period shift keeps the first sample at the peak.
                (PIP_AMPLITUDE * (phase + std::f64::consts::FRAC_PI_4).sin()).round() as i16
            })
            .collect();
        let pip_frames = noise_encoder.encode(&pip_pcm);
        let pip = [pip_frames[0], pip_frames[1]];
        let mut decode_table = [0i16; 256];
        if codec.is_g711() {
            for (code, out) in decode_table.iter_mut().enumerate() {
                codec.decode(&[code as u8], std::slice::from_mut(out));
            }
        }
        Sounds {
            codec,
            voices,
            voice_pcm,
            pip,
            pip_pcm,
            noise,
            decode_table,
        }
    }

    /// Writes frame number `frame` of what a phone says into `out`. `talking`
    /// is the phone's G.722 encoder if it talks (None otherwise, and for
    /// G.711); only talkers say `Voice`.
    pub fn frame(&self, talking: Option<&mut G722Encoder>, say: Say, frame: u64, out: &mut Frame) {
        let samples = frame_samples(self.codec);
        match (say, talking) {
            (Say::Noise, _) => *out = self.noise[frame as usize % self.noise.len()],
            (Say::Voice(talker), Some(encoder)) => {
                let (voice, index) = voice_position(talker, frame);
                let start = index * samples;
                let pcm = &self.voice_pcm[voice][start..start + samples];
                encode_frame(self.codec, encoder, pcm, out);
            }
            (Say::Voice(talker), None) => {
                let (voice, index) = voice_position(talker, frame);
                *out = self.voices[voice * VOICE_FRAMES + index];
            }
            (Say::Pip(part), Some(encoder)) => {
                let start = part.min(PIP_FRAMES - 1) * samples;
                encode_frame(
                    self.codec,
                    encoder,
                    &self.pip_pcm[start..start + samples],
                    out,
                );
            }
            (Say::Pip(part), None) => *out = self.pip[part.min(PIP_FRAMES - 1)],
        }
    }

    /// Decodes one payload into `out`; returns the count of samples. G.722
    /// goes through the listener's own `g722` decoder (unused for G.711).
    pub fn decode(&self, g722: &mut G722Decoder, payload: &[u8], out: &mut [i16]) -> usize {
        if self.codec == Codec::G722 {
            return g722.decode(payload, out);
        }
        let count = payload.len().min(out.len());
        for (sample, &code) in out.iter_mut().zip(payload) {
            *sample = self.decode_table[code as usize];
        }
        count
    }
}

/// The voice and the frame within it of frame `frame` of talker `talker`.
fn voice_position(talker: usize, frame: u64) -> (usize, usize) {
    let voice = talker % VOICES;
    // Talkers sharing a voice start at different points of it.
    let offset = (talker / VOICES) * 37 + voice * 11;
    (voice, (frame as usize + offset) % VOICE_FRAMES)
}

/// Speech-like signal: a glottal-ish harmonic series (1/k roll-off, a soft
/// formant bump near 500 Hz, nothing above 1.6 kHz) on a gliding pitch, shaped
/// into 4-5 syllables a second with a pause every fourth syllable.
fn voice_samples(voice: usize, rate_hz: u32) -> Vec<i16> {
    let rate = rate_hz as f64;
    let samples = VOICE_FRAMES * rate_hz as usize / 50;
    let f0_hz = 100.0 + 23.0 * voice as f64;
    let syllable_hz = 4.0 + 0.2 * voice as f64;
    let mut phase = 0.0f64;
    let mut raw = Vec::with_capacity(samples);
    for n in 0..samples {
        let t = n as f64 / rate;
        let pitch = f0_hz * (1.0 + 0.06 * (2.0 * std::f64::consts::PI * 0.7 * t).sin());
        phase += 2.0 * std::f64::consts::PI * pitch / rate;
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
    /// Samples per pip block (5 ms) and nanoseconds per sample, at the call's rate.
    block_samples: usize,
    sample_ns: i64,
    /// The 2 kHz level of the block in progress.
    pip_meter: Goertzel,
    /// Arrival time of the last detected pip onset; further blocks within the
    /// pip's length (plus margin) are the same pip.
    last_onset_ns: Option<i64>,
}

impl Hearing {
    /// A listener hearing audio at `rate_hz` (8000, or 16000 for G.722).
    pub fn new(rate_hz: u32) -> Hearing {
        Hearing {
            energy: 0.0,
            samples: 0,
            block_samples: (rate_hz * PIP_BLOCK_MS / 1000) as usize,
            sample_ns: 1_000_000_000 / i64::from(rate_hz),
            pip_meter: Goertzel::at_rate(PIP_FREQ_HZ, rate_hz),
            last_onset_ns: None,
        }
    }

    /// Adds one decoded frame that arrived at `arrival_ns`; returns the onset time
    /// of the pip if this frame starts one: the arrival time plus the offset of
    /// the first block holding it.
    pub fn hear(&mut self, pcm: &[i16], arrival_ns: i64) -> Option<i64> {
        let mut onset = None;
        for (n, &sample) in pcm.iter().enumerate() {
            let x = sample as f64;
            self.energy += x * x;
            self.pip_meter.push(x);
            if self.pip_meter.samples() == self.block_samples {
                let amplitude = self.pip_meter.amplitude();
                self.pip_meter.reset();
                if amplitude >= PIP_DETECT_AMPLITUDE && onset.is_none() {
                    let block_start = (n + 1 - self.block_samples) as i64;
                    let at = arrival_ns + block_start * self.sample_ns;
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

    const CODECS: [Codec; 3] = [Codec::Pcmu, Codec::Pcma, Codec::G722];

    /// One phone's stream as the bridge decodes it: the phone's encoder
    /// (if it talks) and the decoder listening, both carried across frames.
    struct Stream<'a> {
        sounds: &'a Sounds,
        encoder: Option<G722Encoder>,
        g722: G722Decoder,
        frame: u64,
    }

    impl Stream<'_> {
        fn new(sounds: &Sounds, talks: bool) -> Stream<'_> {
            Stream {
                sounds,
                encoder: (talks && sounds.codec == Codec::G722).then(G722Encoder::new),
                g722: G722Decoder::new(),
                frame: 0,
            }
        }

        fn hear(&mut self, say: Say) -> Vec<i16> {
            let mut payload = [0u8; FRAME_BYTES];
            self.sounds
                .frame(self.encoder.as_mut(), say, self.frame, &mut payload);
            self.frame += 1;
            let mut pcm = [0i16; MAX_FRAME_SAMPLES];
            let samples = self.sounds.decode(&mut self.g722, &payload, &mut pcm);
            pcm[..samples].to_vec()
        }
    }

    #[test]
    fn every_frame_is_20_ms_of_audio_at_the_codecs_rate() {
        for (codec, samples) in [(Codec::Pcmu, 160), (Codec::G722, 320)] {
            let sounds = Sounds::new(codec);
            assert_eq!(frame_samples(codec), samples);
            for (talks, says) in [
                (false, [Say::Noise, Say::Pip(0)]),
                (true, [Say::Voice(0), Say::Pip(0)]),
            ] {
                let mut stream = Stream::new(&sounds, talks);
                for say in says {
                    assert_eq!(stream.hear(say).len(), samples, "{codec:?} {say:?}");
                }
            }
        }
    }

    #[test]
    fn the_pip_is_found_at_its_first_sample_and_only_once() {
        for codec in CODECS {
            let sounds = Sounds::new(codec);
            // A quiet phone, at some noise frame, and a talker mid-speech.
            for (talks, lead_in) in [(false, 10), (false, 77), (true, 30), (true, 157)] {
                let mut stream = Stream::new(&sounds, talks);
                let mut hearing = Hearing::new(codec.sample_rate_hz());
                let say = if talks { Say::Voice(1) } else { Say::Noise };
                for frame in 0..lead_in {
                    assert_eq!(hearing.hear(&stream.hear(say), frame * 20_000_000), None);
                }
                let at = lead_in * 20_000_000;
                let onset = hearing.hear(&stream.hear(Say::Pip(0)), at);
                assert_eq!(
                    onset,
                    Some(at),
                    "{codec:?} after {lead_in} frames of {say:?}"
                );
                let rest = hearing.hear(&stream.hear(Say::Pip(1)), at + 20_000_000);
                assert_eq!(rest, None, "{codec:?}");
            }
        }
    }

    /// The bridge decodes a G.722 phone and encodes the room's mix for each
    /// listener with an encoder of its own: two coder pairs on the way.
    #[test]
    fn a_g722_pip_through_the_bridges_coders_is_found_at_its_first_block() {
        let sounds = Sounds::new(Codec::G722);
        for talks in [false, true] {
            let mut phone = Stream::new(&sounds, talks);
            let mut bridge_encoder = G722Encoder::new();
            let mut listener = G722Decoder::new();
            let mut hearing = Hearing::new(16_000);
            let say = if talks { Say::Voice(0) } else { Say::Noise };
            let says = std::iter::repeat_n(say, 30).chain([Say::Pip(0), Say::Pip(1)]);
            let mut onsets = Vec::new();
            for (frame, say) in says.enumerate() {
                let mix = phone.hear(say);
                let mut payload = [0u8; FRAME_BYTES];
                bridge_encoder.encode(&mix, &mut payload);
                let mut pcm = [0i16; MAX_FRAME_SAMPLES];
                let samples = listener.decode(&payload, &mut pcm);
                let at = frame as i64 * 20_000_000;
                onsets.extend(hearing.hear(&pcm[..samples], at));
            }
            assert_eq!(onsets, [600_000_000], "talks: {talks}");
        }
    }

    #[test]
    fn speech_from_several_talkers_never_looks_like_the_pip() {
        for codec in CODECS {
            let sounds = Sounds::new(codec);
            let mut streams: Vec<Stream> = (0..3).map(|_| Stream::new(&sounds, true)).collect();
            let mut hearing = Hearing::new(codec.sample_rate_hz());
            // Twice round the loop: the wrap is heard too.
            for frame in 0..2 * VOICE_FRAMES as i64 {
                let mut sum = vec![0i16; frame_samples(codec)];
                for (talker, stream) in streams.iter_mut().enumerate() {
                    for (s, p) in sum.iter_mut().zip(stream.hear(Say::Voice(talker))) {
                        *s = s.saturating_add(p);
                    }
                }
                assert_eq!(hearing.hear(&sum, frame * 20_000_000), None);
            }
            let level = hearing.level_dbfs();
            assert!(
                level > -35.0 && level < -15.0,
                "three talkers at {level:.1} dBFS in {codec:?}"
            );
        }
    }

    #[test]
    fn g722_voices_are_as_loud_as_g711_ones() {
        let level = |codec| {
            let sounds = Sounds::new(codec);
            let mut stream = Stream::new(&sounds, true);
            let mut hearing = Hearing::new(codec.sample_rate_hz());
            for _ in 0..VOICE_FRAMES {
                hearing.hear(&stream.hear(Say::Voice(2)), 0);
            }
            hearing.level_dbfs()
        };
        let (narrow, wide) = (level(Codec::Pcmu), level(Codec::G722));
        assert!(
            (narrow - wide).abs() < 1.0,
            "PCMU {narrow:.1}, G.722 {wide:.1} dBFS"
        );
    }

    #[test]
    fn low_noise_is_far_below_the_bridge_noise_gate() {
        for codec in CODECS {
            let sounds = Sounds::new(codec);
            let mut stream = Stream::new(&sounds, false);
            let mut hearing = Hearing::new(codec.sample_rate_hz());
            for _ in 0..2 * NOISE_FRAMES {
                hearing.hear(&stream.hear(Say::Noise), 0);
            }
            let level = hearing.level_dbfs();
            assert!(level < -65.0, "{codec:?}: {level}");
        }
    }
}
