//! The conference mix kernel: sum the talkers once, give each talker the sum
//! minus itself, and give every other listener one shared encoded payload per
//! codec. Sans-IO and allocation-free after construction; cost grows with
//! talkers, not with listeners squared. Also the per-member noise gate that
//! decides who is a talker. It never sees a packet or a member's flags: the
//! core decides who talks and who hears.
//!
//! A mix runs at 8 kHz, or at 16 kHz while any of its members speaks a
//! wideband codec (`join`, `leave`). At 16 kHz the narrowband listeners'
//! shared payload is the limited mix decimated once (`Decimator2x`, state
//! kept here) and encoded once per codec.

use crate::media::codec::opus::OpusEncoder;
use crate::media::codec::{Codec, SharedEncoders};
use crate::media::resample::{Decimator2x, Kernel2x, NARROW_RATE_HZ, WIDE_RATE_HZ};

/// The mix runs on a 20 ms tick.
pub const TICKS_PER_SECOND: u32 = 50;
/// Highest conference sample rate the buffers are sized for (wideband).
pub const SAMPLE_RATE_MAX_HZ: u32 = 16_000;
/// Samples in one frame at `SAMPLE_RATE_MAX_HZ`.
pub const FRAME_SAMPLES_MAX: usize = (SAMPLE_RATE_MAX_HZ / TICKS_PER_SECOND) as usize;
/// Encoded bytes one frame can take at most (G.711 and G.722 both take at most one per sample).
pub const ENCODED_FRAME_BYTES_MAX: usize = FRAME_SAMPLES_MAX;

/// Samples in one 20 ms frame at `rate_hz`.
pub const fn frame_samples(rate_hz: u32) -> usize {
    (rate_hz / TICKS_PER_SECOND) as usize
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixError {
    /// Not a whole number of samples per 20 ms, or above `SAMPLE_RATE_MAX_HZ`.
    UnsupportedRate { rate_hz: u32 },
}

/// Below this level (-6 dBFS) the limiter is the identity.
const LIMITER_KNEE: i32 = 16_384;
const LIMITER_HEADROOM: i64 = (i16::MAX as i32 - LIMITER_KNEE) as i64;

/// Maps a sum of talkers to 16 bits: identity up to -6 dBFS, then a rational
/// curve `knee + h*d/(h+d)` whose slope is 1 at the knee and which approaches
/// full scale without reaching it. Monotonic, symmetric, no clipping clicks.
#[inline]
pub fn soft_limit(sample: i32) -> i16 {
    let magnitude = sample.unsigned_abs() as i64;
    if magnitude <= LIMITER_KNEE as i64 {
        return sample as i16;
    }
    let over = magnitude - LIMITER_KNEE as i64;
    let denominator = LIMITER_HEADROOM + over;
    // Rounded, so the curve leaves the knee with slope one rather than a flat step.
    let limited = LIMITER_KNEE as i64 + (LIMITER_HEADROOM * over + denominator / 2) / denominator;
    if sample < 0 {
        -(limited as i16)
    } else {
        limited as i16
    }
}

struct SharedPayload {
    ready: bool,
    len: usize,
    bytes: Box<[u8]>,
}

/// One conference's mix for the current tick.
pub struct Mix {
    rate_hz: u32,
    frame_samples: usize,
    sum: Box<[i32]>,
    talkers: u32,
    /// The sum holds samples from an earlier tick and must be cleared.
    sum_dirty: bool,
    shared: [SharedPayload; Codec::ALL.len()],
    limited: Box<[i16]>,
    /// `limited` holds this tick's whole mix.
    limited_ready: bool,
    /// Members per codec (`Codec::index`): the rate follows them.
    codec_members: [u32; Codec::ALL.len()],
    /// At 16 kHz: the whole mix at 8 kHz for narrowband listeners, and the
    /// decimator's state before and after this tick's frame.
    narrow: Box<[i16]>,
    narrow_ready: bool,
    decimator: Decimator2x,
    decimator_at_tick_start: Decimator2x,
    /// The stateful shared payloads' encoders (G.722), and their states
    /// before this tick's frame, for a listener that starts a mix of its own.
    encoders: SharedEncoders,
    encoders_at_tick_start: SharedEncoders,
    /// The shared Opus stream's encoder, brought by the mix's first Opus
    /// member (libopus allocates: never on the media thread) and kept for
    /// later ones. Not in `SharedEncoders`: a libopus state is not a value
    /// to copy each tick, and an Opus talker's own encoder needs no
    /// hand-over from it.
    opus: Option<Box<OpusEncoder>>,
}

impl Mix {
    /// Allocates every buffer for `FRAME_SAMPLES_MAX`, so the rate can change later without allocating.
    pub fn new(rate_hz: u32) -> Result<Self, MixError> {
        let shared = || SharedPayload {
            ready: false,
            len: 0,
            bytes: vec![0; ENCODED_FRAME_BYTES_MAX].into_boxed_slice(),
        };
        let mut mix = Mix {
            rate_hz,
            frame_samples: 0,
            sum: vec![0; FRAME_SAMPLES_MAX].into_boxed_slice(),
            talkers: 0,
            sum_dirty: false,
            shared: std::array::from_fn(|_| shared()),
            limited: vec![0; FRAME_SAMPLES_MAX].into_boxed_slice(),
            limited_ready: false,
            codec_members: [0; Codec::ALL.len()],
            narrow: vec![0; frame_samples(NARROW_RATE_HZ)].into_boxed_slice(),
            narrow_ready: false,
            decimator: Decimator2x::default(),
            decimator_at_tick_start: Decimator2x::default(),
            encoders: SharedEncoders::default(),
            encoders_at_tick_start: SharedEncoders::default(),
            opus: None,
        };
        mix.set_rate(rate_hz)?;
        Ok(mix)
    }

    /// A member speaking `codec` joined: the first wideband member takes the
    /// mix to 16 kHz. Returns whether the rate changed.
    pub fn join(&mut self, codec: Codec) -> bool {
        self.codec_members[codec.index()] += 1;
        if self.codec_members[codec.index()] == 1 {
            // Its first listener's decoder starts from the reset state too.
            self.encoders.reset(codec);
            if let (Codec::Opus, Some(encoder)) = (codec, self.opus.as_mut()) {
                // OPUS_RESET_STATE: no allocation.
                let _ = encoder.reset();
            }
        }
        self.follow_members()
    }

    /// A member speaking `codec` left (or changed codec): when the last
    /// wideband member is gone the mix goes back to 8 kHz. Returns whether
    /// the rate changed.
    pub fn leave(&mut self, codec: Codec) -> bool {
        let members = &mut self.codec_members[codec.index()];
        *members = members.saturating_sub(1);
        self.follow_members()
    }

    /// The rate its members need: 16 kHz while any speaks a wideband codec.
    fn follow_members(&mut self) -> bool {
        let wideband = Codec::ALL
            .iter()
            .any(|codec| codec.is_wideband() && self.codec_members[codec.index()] > 0);
        let rate_hz = if wideband {
            WIDE_RATE_HZ
        } else {
            NARROW_RATE_HZ
        };
        if rate_hz == self.rate_hz {
            return false;
        }
        // Both rates are supported: this cannot fail.
        let _ = self.set_rate(rate_hz);
        self.decimator.reset();
        true
    }

    /// An Opus member brings an encoder for the shared Opus stream: the mix
    /// keeps the first; a spare comes back for the caller to drop (in
    /// command handling, never in the tick).
    pub fn offer_opus_encoder(&mut self, encoder: Box<OpusEncoder>) -> Option<Box<OpusEncoder>> {
        if self.opus.is_some() {
            return Some(encoder);
        }
        self.opus = Some(encoder);
        None
    }

    /// The shared Opus encoder, given up when the mix empties.
    pub fn take_opus_encoder(&mut self) -> Option<Box<OpusEncoder>> {
        self.opus.take()
    }

    /// The mix's sample rate (8000 or 16000).
    pub fn rate_hz(&self) -> u32 {
        self.rate_hz
    }

    pub fn set_rate(&mut self, rate_hz: u32) -> Result<(), MixError> {
        if rate_hz == 0 || rate_hz > SAMPLE_RATE_MAX_HZ || !rate_hz.is_multiple_of(TICKS_PER_SECOND)
        {
            return Err(MixError::UnsupportedRate { rate_hz });
        }
        self.rate_hz = rate_hz;
        self.frame_samples = frame_samples(rate_hz);
        self.sum_dirty = true;
        Ok(())
    }

    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Talkers added this tick.
    pub fn talkers(&self) -> u32 {
        self.talkers
    }

    /// Starts a tick: no talkers yet, shared payloads stale.
    pub fn begin_tick(&mut self) {
        if self.sum_dirty {
            self.sum[..self.frame_samples].fill(0);
            self.sum_dirty = false;
        }
        self.talkers = 0;
        self.limited_ready = false;
        self.narrow_ready = false;
        for shared in self.shared.iter_mut() {
            shared.ready = false;
        }
    }

    /// Ends a tick: at 16 kHz with narrowband members, the listeners'
    /// decimator runs on every tick's mix, even one nobody listened to (all
    /// talked), so the shared stream stays continuous.
    pub fn end_tick(&mut self, kernel: &Kernel2x) {
        if self.rate_hz != NARROW_RATE_HZ {
            self.end_wideband_tick(kernel);
        }
    }

    /// The same for the stateful shared encoders (G.722): one that nobody
    /// listened to this tick still codes the tick's mix.
    #[cold]
    fn end_wideband_tick(&mut self, kernel: &Kernel2x) {
        if !self.narrow_ready && self.has_narrowband_members() {
            self.narrow_listeners(kernel);
        }
        let g722 = Codec::G722.index();
        if self.codec_members[g722] > 0 && !self.shared[g722].ready {
            self.encoded_for_listener(Codec::G722, kernel);
        }
    }

    /// The listeners' shared encoders as they were before this tick's frame
    /// (see `listeners_decimator`).
    pub fn listeners_encoders(&self) -> &SharedEncoders {
        if self.shared[Codec::G722.index()].ready {
            &self.encoders_at_tick_start
        } else {
            &self.encoders
        }
    }

    fn has_narrowband_members(&self) -> bool {
        Codec::ALL
            .iter()
            .any(|codec| !codec.is_wideband() && self.codec_members[codec.index()] > 0)
    }

    /// The whole mix limited to 16 bits, once a tick.
    fn limit_listeners(&mut self) {
        if !self.limited_ready {
            let frame = self.frame_samples;
            for (sample, &total) in self.limited[..frame].iter_mut().zip(&self.sum[..frame]) {
                *sample = soft_limit(total);
            }
            self.limited_ready = true;
        }
    }

    /// At 16 kHz: the whole mix at 8 kHz, decimated once a tick; a silent
    /// tick forgets the decimator's history (as a frame of zeros would).
    fn narrow_listeners(&mut self, kernel: &Kernel2x) -> &[i16] {
        let narrow_frame = frame_samples(NARROW_RATE_HZ);
        if !self.narrow_ready {
            self.decimator_at_tick_start.clone_from(&self.decimator);
            if self.talkers == 0 {
                self.decimator.reset();
                self.narrow.fill(0);
            } else {
                self.limit_listeners();
                let frame = self.frame_samples;
                self.decimator
                    .process(kernel, &self.limited[..frame], &mut self.narrow);
            }
            self.narrow_ready = true;
        }
        &self.narrow[..narrow_frame]
    }

    /// The listeners' decimator as it was before this tick's frame: a
    /// narrowband member that starts hearing a mix of its own (it talked)
    /// continues from it, so its stream has no seam.
    pub fn listeners_decimator(&self) -> &Decimator2x {
        if self.narrow_ready {
            &self.decimator_at_tick_start
        } else {
            &self.decimator
        }
    }

    /// Adds one talker's decoded frame; samples past the frame length are ignored.
    pub fn add_talker(&mut self, pcm: &[i16]) {
        for (total, &sample) in self.sum[..self.frame_samples].iter_mut().zip(pcm) {
            *total += i32::from(sample);
        }
        self.talkers += 1;
        self.sum_dirty = true;
    }

    /// Adds a conference clip's frame. It counts as a talker that nobody
    /// subtracts, so listeners' shared payload and every talker's mix carry it.
    pub fn add_clip(&mut self, pcm: &[i16]) {
        self.add_talker(pcm);
    }

    /// What a talker hears: everyone else, limited to 16 bits.
    pub fn render_for_talker(&self, own: &[i16], out: &mut [i16]) {
        let frame = self.frame_samples;
        limit_without_own(&self.sum[..frame], own, &mut out[..frame]);
    }

    /// What a member who did not talk hears: everyone, limited to 16 bits.
    pub fn render_for_listener(&self, out: &mut [i16]) {
        let frame = self.frame_samples;
        for (sample, &total) in out[..frame].iter_mut().zip(&self.sum[..frame]) {
            *sample = soft_limit(total);
        }
    }

    /// Encodes a talker's own mix into `out`; returns the payload length.
    pub fn encode_for_talker(&mut self, own: &[i16], codec: Codec, out: &mut [u8]) -> usize {
        let frame = self.frame_samples;
        limit_without_own(&self.sum[..frame], own, &mut self.limited[..frame]);
        codec.encode(&self.limited[..frame], out)
    }

    /// The payload every non-talking listener with `codec` receives, encoded
    /// on first request in a tick and shared by all later ones; in a 16 kHz
    /// mix, G.711 from the mix decimated once for both laws, G.722 by the
    /// mix's own encoder.
    #[inline]
    pub fn encoded_for_listener(&mut self, codec: Codec, kernel: &Kernel2x) -> &[u8] {
        let index = codec.index();
        if !self.shared[index].ready {
            let len = if self.rate_hz == NARROW_RATE_HZ && codec.is_g711() {
                // The 8 kHz room's path, as before wideband existed.
                let frame = self.frame_samples;
                if self.talkers == 0 {
                    self.shared[index].bytes[..frame].fill(codec.silence_byte());
                } else {
                    self.limit_listeners();
                    let bytes = &mut self.shared[index].bytes[..frame];
                    codec.encode(&self.limited[..frame], bytes);
                }
                frame
            } else {
                self.encode_wideband_listeners(codec, kernel)
            };
            self.shared[index].len = len;
            self.shared[index].ready = true;
        }
        let shared = &self.shared[index];
        &shared.bytes[..shared.len]
    }

    /// `encoded_for_listener` in a 16 kHz mix (or for a wideband codec).
    #[cold]
    #[inline(never)]
    fn encode_wideband_listeners(&mut self, codec: Codec, kernel: &Kernel2x) -> usize {
        let index = codec.index();
        let codec_rate = codec.sample_rate_hz();
        let frame = frame_samples(codec_rate);
        if self.talkers == 0 && codec.is_g711() {
            if codec_rate != self.rate_hz {
                self.narrow_listeners(kernel);
            }
            self.shared[index].bytes[..frame].fill(codec.silence_byte());
            frame
        } else if codec_rate == self.rate_hz {
            self.limit_listeners();
            let pcm = &self.limited[..frame];
            if codec.is_g711() {
                codec.encode(pcm, &mut self.shared[index].bytes)
            } else if codec == Codec::Opus {
                // An encoder refusing (or none handed in): an empty payload,
                // which the phone conceals.
                self.opus.as_mut().map_or(0, |encoder| {
                    encoder
                        .encode(pcm, &mut self.shared[index].bytes)
                        .unwrap_or(0)
                })
            } else {
                self.encoders_at_tick_start.clone_from(&self.encoders);
                self.encoders
                    .encode(codec, pcm, &mut self.shared[index].bytes)
            }
        } else {
            self.narrow_listeners(kernel);
            codec.encode(&self.narrow[..frame], &mut self.shared[index].bytes)
        }
    }
}

/// `out = soft_limit(sum - own)`; a missing tail of `own` counts as silence.
fn limit_without_own(sum: &[i32], own: &[i16], out: &mut [i16]) {
    let own = own.iter().copied().chain(std::iter::repeat(0));
    for ((sample, &total), own) in out.iter_mut().zip(sum).zip(own) {
        *sample = soft_limit(total - i32::from(own));
    }
}

/// Scales samples by a linear gain (a keypad step), saturating at 16 bits.
pub fn apply_gain(samples: &mut [i16], gain: f32) {
    for sample in samples.iter_mut() {
        *sample = (f32::from(*sample) * gain).clamp(-32768.0, 32767.0) as i16;
    }
}

/// A gate's opening and closing levels as mean squares, computed once (with
/// `powf`) so the tick can move a gate by table look-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateLevels {
    open_mean_square: u64,
    close_mean_square: u64,
}

impl GateLevels {
    /// Open on every frame, digital silence included: a cascade link's.
    pub const ALWAYS_OPEN: GateLevels = GateLevels {
        open_mean_square: 0,
        close_mean_square: 0,
    };

    /// Opening at `threshold_dbfs`, closing `GATE_HYSTERESIS_DB` below.
    pub fn at(threshold_dbfs: f32) -> Self {
        GateLevels {
            open_mean_square: mean_square_at(threshold_dbfs),
            close_mean_square: mean_square_at(threshold_dbfs - GATE_HYSTERESIS_DB),
        }
    }
}

/// Who is talking: frame energy against a threshold, with a hangover so the
/// gate does not chatter between words. A closed gate keeps a member's line
/// noise out of the conference. It opens on the first frame at the opening
/// level and closes on the `hangover_frames + 1`th frame in a row below it.
#[derive(Clone, Debug)]
pub struct NoiseGate {
    open_mean_square: u64,
    close_mean_square: u64,
    hangover_frames: u32,
    hangover_left: u32,
    open: bool,
}

/// A frame this far below the opening level is a pause (`is_quiet`), where a
/// member heard a frame late catches up; the gate itself closes by hangover.
const GATE_HYSTERESIS_DB: f32 = 6.0;

impl NoiseGate {
    pub fn new(threshold_dbfs: f32, hangover_frames: u32) -> Self {
        let mut gate = NoiseGate {
            open_mean_square: 0,
            close_mean_square: 0,
            hangover_frames,
            hangover_left: 0,
            open: false,
        };
        gate.set_threshold(threshold_dbfs);
        gate
    }

    /// Moves the opening threshold; the closing one follows `GATE_HYSTERESIS_DB` below.
    pub fn set_threshold(&mut self, threshold_dbfs: f32) {
        self.set_levels(GateLevels::at(threshold_dbfs));
    }

    /// Moves both levels at once, without computing anything.
    pub fn set_levels(&mut self, levels: GateLevels) {
        self.open_mean_square = levels.open_mean_square;
        self.close_mean_square = levels.close_mean_square;
    }

    pub fn levels(&self) -> GateLevels {
        GateLevels {
            open_mean_square: self.open_mean_square,
            close_mean_square: self.close_mean_square,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Closes at once (muted, held, or the stream stopped).
    pub fn close(&mut self) {
        self.open = false;
        self.hangover_left = 0;
    }

    /// Below the closing level: a frame of pause, whether or not the gate is
    /// still open in its hangover.
    pub fn is_quiet(&self, pcm: &[i16]) -> bool {
        pcm.is_empty() || mean_square(pcm) < self.close_mean_square
    }

    /// Feeds one frame; returns whether the gate is open for it.
    pub fn update(&mut self, pcm: &[i16]) -> bool {
        if pcm.is_empty() {
            return self.open;
        }
        let mean_square = mean_square(pcm);
        if mean_square >= self.open_mean_square {
            self.open = true;
            self.hangover_left = self.hangover_frames;
        } else if self.open {
            // Every frame under the opening level spends the hangover, those
            // in the hysteresis band too: line noise just under the threshold
            // after a word must not keep the member talking for good
            // (docs/api.md, "Who is talking": stops within 300 ms).
            if self.hangover_left == 0 {
                self.open = false;
            } else {
                self.hangover_left -= 1;
            }
        }
        self.open
    }
}

fn mean_square(pcm: &[i16]) -> u64 {
    // Squares summed in pairs in 32 bits (two full-scale squares make 2^31,
    // which fits unsigned), a shape the compiler vectorises as a
    // multiply-add of 16-bit pairs: the gate's cost halves.
    let pairs = pcm.chunks_exact(2);
    let odd = pairs
        .remainder()
        .first()
        .map_or(0, |&sample| (i32::from(sample) * i32::from(sample)) as u64);
    let energy: u64 = pairs
        .map(|pair| {
            let (a, b) = (i32::from(pair[0]), i32::from(pair[1]));
            u64::from((a * a).wrapping_add(b * b) as u32)
        })
        .sum();
    (energy + odd) / pcm.len() as u64
}

/// Mean square of a full-scale-relative level, e.g. -50 dBFS.
fn mean_square_at(level_dbfs: f32) -> u64 {
    let amplitude = f64::from(i16::MAX) * 10f64.powf(f64::from(level_dbfs) / 20.0);
    (amplitude * amplitude) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(frequency_hz: f64, amplitude: f64, rate_hz: u32) -> Vec<i16> {
        (0..frame_samples(rate_hz))
            .map(|n| {
                let phase =
                    2.0 * std::f64::consts::PI * frequency_hz * n as f64 / f64::from(rate_hz);
                (amplitude * phase.sin()).round() as i16
            })
            .collect()
    }

    #[test]
    fn each_talker_hears_the_other_two_and_not_itself() {
        let mut mix = Mix::new(8000).expect("rate");
        let talkers = [
            sine(300.0, 4000.0, 8000),
            sine(700.0, 4000.0, 8000),
            sine(1100.0, 4000.0, 8000),
        ];
        mix.begin_tick();
        for pcm in &talkers {
            mix.add_talker(pcm);
        }
        for (me, own) in talkers.iter().enumerate() {
            let mut heard = [0i16; FRAME_SAMPLES_MAX];
            mix.render_for_talker(own, &mut heard);
            for n in 0..160 {
                let others: i32 = (0..3)
                    .filter(|&other| other != me)
                    .map(|other| i32::from(talkers[other][n]))
                    .sum();
                assert_eq!(i32::from(heard[n]), others, "talker {me} sample {n}");
            }
        }
    }

    #[test]
    fn listeners_share_one_payload_per_codec_holding_everyone() {
        let mut mix = Mix::new(8000).expect("rate");
        let a = sine(300.0, 3000.0, 8000);
        let b = sine(500.0, 3000.0, 8000);
        mix.begin_tick();
        mix.add_talker(&a);
        mix.add_talker(&b);
        let kernel = Kernel2x::new();
        let first = mix.encoded_for_listener(Codec::Pcmu, &kernel).as_ptr();
        let second = mix.encoded_for_listener(Codec::Pcmu, &kernel);
        assert_eq!(first, second.as_ptr(), "encoded once, shared");
        let expected: Vec<i16> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let mut encoded = [0u8; 160];
        Codec::Pcmu.encode(&expected, &mut encoded);
        assert_eq!(second, &encoded[..]);
        assert_eq!(mix.encoded_for_listener(Codec::Pcma, &kernel).len(), 160);
    }

    #[test]
    fn a_talker_encoding_matches_its_rendered_mix() {
        let mut mix = Mix::new(8000).expect("rate");
        let a = sine(300.0, 3000.0, 8000);
        let b = sine(500.0, 3000.0, 8000);
        mix.begin_tick();
        mix.add_talker(&a);
        mix.add_talker(&b);
        let mut out = [0u8; ENCODED_FRAME_BYTES_MAX];
        assert_eq!(mix.encode_for_talker(&a, Codec::Pcma, &mut out), 160);
        let mut expected = [0u8; 160];
        Codec::Pcma.encode(&b, &mut expected);
        assert_eq!(&out[..160], &expected[..]);
    }

    #[test]
    fn a_mix_without_talkers_is_encoded_silence_and_forgets_the_last_tick() {
        let mut mix = Mix::new(8000).expect("rate");
        mix.begin_tick();
        mix.add_talker(&sine(300.0, 3000.0, 8000));
        mix.begin_tick();
        assert!(mix
            .encoded_for_listener(Codec::Pcmu, &Kernel2x::new())
            .iter()
            .all(|&byte| byte == 0xFF));
        let mut heard = [1i16; FRAME_SAMPLES_MAX];
        mix.render_for_listener(&mut heard);
        assert!(heard[..160].iter().all(|&sample| sample == 0));
    }

    #[test]
    fn wideband_frames_are_320_samples() {
        let mut mix = Mix::new(16_000).expect("rate");
        assert_eq!(mix.frame_samples(), 320);
        let tone = sine(1000.0, 2000.0, 16_000);
        mix.begin_tick();
        mix.add_talker(&tone);
        let mut heard = [0i16; FRAME_SAMPLES_MAX];
        mix.render_for_listener(&mut heard);
        assert_eq!(&heard[..], &tone[..]);
        // Narrowband listeners get the mix decimated to 8 kHz.
        assert_eq!(
            mix.encoded_for_listener(Codec::Pcmu, &Kernel2x::new())
                .len(),
            160
        );
        assert_eq!(
            Mix::new(44_100).err(),
            Some(MixError::UnsupportedRate { rate_hz: 44_100 })
        );
        assert!(mix.set_rate(8000).is_ok());
        assert_eq!(mix.frame_samples(), 160);
    }

    #[test]
    fn the_first_wideband_member_takes_the_mix_to_16_khz_and_the_last_takes_it_back() {
        let mut mix = Mix::new(8000).expect("rate");
        assert!(!mix.join(Codec::Pcmu));
        assert_eq!(mix.rate_hz(), 8000);
        assert!(mix.join(Codec::G722));
        assert!(!mix.join(Codec::Opus));
        assert_eq!((mix.rate_hz(), mix.frame_samples()), (16_000, 320));
        assert!(!mix.leave(Codec::G722));
        assert!(mix.leave(Codec::Opus));
        assert_eq!((mix.rate_hz(), mix.frame_samples()), (8000, 160));
        // A narrowband room's payload is the same bytes as before wideband existed.
        let tone = sine(1000.0, 3000.0, 8000);
        mix.begin_tick();
        mix.add_talker(&tone);
        let mut expected = [0u8; 160];
        Codec::Pcmu.encode(&tone, &mut expected);
        assert_eq!(
            mix.encoded_for_listener(Codec::Pcmu, &Kernel2x::new()),
            &expected[..]
        );
    }

    #[test]
    fn soft_limit_is_identity_below_the_knee() {
        for sample in -LIMITER_KNEE..=LIMITER_KNEE {
            assert_eq!(i32::from(soft_limit(sample)), sample);
        }
    }

    #[test]
    fn soft_limit_is_monotonic_and_never_clips() {
        let mut previous = soft_limit(-40 * 32768);
        for sample in (-40 * 32768..=40 * 32768).step_by(7) {
            let limited = soft_limit(sample);
            assert!(limited >= previous, "{sample}");
            assert!(limited > i16::MIN);
            previous = limited;
        }
        assert!(soft_limit(i32::MAX) > 32_000);
        assert_eq!(soft_limit(i32::MIN), -soft_limit(i32::MAX));
        // Slope one at the knee: the first step above it is still one.
        assert_eq!(soft_limit(LIMITER_KNEE + 1), LIMITER_KNEE as i16 + 1);
    }

    #[test]
    fn gate_opens_on_speech_and_stays_shut_on_line_noise() {
        let mut gate = NoiseGate::new(-50.0, 3);
        assert!(!gate.update(&sine(300.0, 20.0, 8000)), "-64 dBFS noise");
        assert!(gate.update(&sine(300.0, 3000.0, 8000)), "speech level");
    }

    #[test]
    fn mean_square_holds_full_scale_and_odd_lengths() {
        assert_eq!(mean_square(&[i16::MIN; 160]), 1 << 30);
        assert_eq!(
            mean_square(&[i16::MIN, i16::MAX, -3]),
            (2 * (1 << 30) - 65_535 + 9) / 3
        );
        assert_eq!(mean_square(&[3, -4]), 12);
    }

    #[test]
    fn gate_holds_open_for_the_hangover_then_closes() {
        let mut gate = NoiseGate::new(-30.0, 2);
        gate.update(&sine(300.0, 3000.0, 8000));
        let quiet = [0i16; 160];
        assert!(gate.update(&quiet));
        assert!(gate.update(&quiet));
        assert!(!gate.update(&quiet));
    }

    #[test]
    fn line_noise_just_below_the_threshold_after_a_word_closes_after_the_hangover() {
        // Threshold -30 dBFS is an RMS of about 1036; a sine of peak 1000 has
        // RMS 707 (-33 dBFS): under the opening level, above the closing one.
        let mut gate = NoiseGate::new(-30.0, 3);
        let just_below = sine(400.0, 1000.0, 8000);
        assert!(!gate.update(&just_below));
        assert!(gate.update(&sine(400.0, 3000.0, 8000)));
        let open: Vec<bool> = (0..6).map(|_| gate.update(&just_below)).collect();
        assert_eq!(open, [true, true, true, false, false, false]);
    }
}
