//! The room's sound card (`[soundcard]`): a thread of its own that moves
//! audio every 20 ms between the device's rings (filled and emptied by the
//! device's callbacks, `soundcard/device.rs`, cargo feature `soundcard`)
//! and the local member's rings the media thread reads and writes
//! (`media/local.rs`), converting between the device's rate and the
//! member's with a `DriftingResampler`.
//!
//! Two clocks meet here: the device's crystal and the media thread's 20 ms
//! tick. Each direction's ring that a foreign clock empties is kept near a
//! target fill by correcting the resampling ratio in proportion to how far
//! its (smoothed) fill is from the target (`FillControl`): the capture ring
//! to the media thread, the playback ring to the device. Nothing here
//! blocks on the media thread or the callbacks; a ring found full or empty
//! is counted in `LocalStats`.
//!
//! This file is the part without a device (tested with simulated clocks);
//! `device.rs` opens the device, runs the thread, and retries a device
//! that is missing or lost.

#[cfg(feature = "soundcard")]
pub mod device;

use std::sync::atomic::Ordering;

use crate::config::SoundcardConfig;
use crate::media::local::{local_rate_hz, LocalPort, SampleRing};
use crate::media::resample::{DriftingResampler, MAX_CORRECTION_PPM};

/// How often the sound card's thread moves audio.
pub const PERIOD_MS: u32 = 20;
/// The device rate asked for first (USB speakerphones offer it; the
/// device's own default is taken when it refuses).
pub const PREFERRED_DEVICE_RATE_HZ: u32 = 48_000;
/// The capture ring to the media thread is kept this many 20 ms frames
/// full: the media thread takes one a tick, and the sound card's thread,
/// on its own 20 ms schedule, may run up to a frame out of phase with it.
pub const CAPTURE_TARGET_FRAMES: f64 = 2.0;
/// The device's playback ring is kept this many milliseconds full: enough
/// to ride out a late period of this thread.
pub const PLAYBACK_TARGET_MS: f64 = 60.0;
/// A ring this many periods above its target has fallen behind for good
/// (its reader stalled, or was not there yet): nothing more is written to
/// it until it is back at its target, rather than correcting over minutes.
const RESYNC_PERIODS: f64 = 4.0;
/// The time a fill error takes to be corrected, in seconds: slow enough
/// that the ratio moves by parts per million, not audibly.
const SETTLE_S: f64 = 5.0;
/// Weight of each new fill reading in the smoothed fill (about 1 s).
const SMOOTHING: f64 = 0.02;

/// Why a build without the cargo feature `soundcard` has no sound card.
pub const NO_FEATURE: &str = "this sipconf was built without the `soundcard` feature \
     (cargo build --release --features soundcard, with libasound2-dev installed)";

/// Starts the sound card's thread for `config`; the rings it returns are
/// the member's (`MemberSockets::Local`). A device that is missing now is
/// tried again in the background; Err only when this build has no sound card.
pub fn start(config: &SoundcardConfig) -> Result<LocalPort, String> {
    #[cfg(feature = "soundcard")]
    {
        let port = LocalPort::new();
        device::spawn(config.clone(), port.clone())
            .map_err(|e| format!("cannot start the sound card's thread: {e}"))?;
        Ok(port)
    }
    #[cfg(not(feature = "soundcard"))]
    {
        let _ = config;
        Err(NO_FEATURE.to_string())
    }
}

/// `sipconf soundcard --list`: one line per capture or playback device.
pub fn list_devices() -> Result<Vec<String>, String> {
    #[cfg(feature = "soundcard")]
    {
        device::list()
    }
    #[cfg(not(feature = "soundcard"))]
    {
        Err(NO_FEATURE.to_string())
    }
}

/// dB to a linear gain.
pub fn gain_of(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

/// Keeps one ring near its target fill by a ratio correction in ppm.
#[derive(Debug, Clone)]
pub struct FillControl {
    target: f64,
    smoothed: f64,
    /// The ring was found too full: written again once back at its target.
    draining: bool,
    /// Correction per sample of error: the error is taken up in `SETTLE_S`.
    ppm_per_sample: f64,
}

impl FillControl {
    /// A ring filled at `rate_hz` whose fill should stay at `target` samples.
    pub fn new(target: f64, rate_hz: u32) -> FillControl {
        FillControl {
            target,
            smoothed: target,
            draining: false,
            ppm_per_sample: 1e6 / (f64::from(rate_hz) * SETTLE_S),
        }
    }

    /// Takes this period's fill; returns the correction to apply (fewer
    /// samples made when the ring is too full).
    pub fn correction_ppm(&mut self, fill: usize) -> f64 {
        self.smoothed += (fill as f64 - self.smoothed) * SMOOTHING;
        let error = self.smoothed - self.target;
        (-error * self.ppm_per_sample).clamp(-MAX_CORRECTION_PPM, MAX_CORRECTION_PPM)
    }

    /// Whether to write to the ring now, its fill being `fill`: not from
    /// `RESYNC_PERIODS` above the target until it is back at the target
    /// (and the smoothed fill with it, so the ratio is not bent for it).
    fn may_write(&mut self, fill: usize, period_samples: f64) -> bool {
        let fill = fill as f64;
        if fill > self.target + RESYNC_PERIODS * period_samples {
            self.draining = true;
        } else if self.draining && fill <= self.target {
            self.draining = false;
            self.smoothed = self.target;
        }
        !self.draining
    }
}

/// What one period of the thread moves, both ways, with its buffers.
pub struct Pump {
    capture: DriftingResampler,
    playback: DriftingResampler,
    capture_control: FillControl,
    playback_control: FillControl,
    talk_gain: f32,
    listen_gain: f32,
    playback_rate_hz: u32,
    /// Device-rate and member-rate scratch buffers, a few periods long.
    device_buffer: Box<[i16]>,
    member_buffer: Box<[i16]>,
}

/// Scratch room in periods: the thread may run this late without losing audio.
const SCRATCH_PERIODS: usize = 8;

impl Pump {
    /// A pump for a microphone at `capture_rate_hz` and a loudspeaker at
    /// `playback_rate_hz` (gains in dB).
    pub fn new(
        capture_rate_hz: u32,
        playback_rate_hz: u32,
        talk_gain_db: f32,
        listen_gain_db: f32,
    ) -> Pump {
        let member_rate = local_rate_hz();
        let device_period = period_samples(capture_rate_hz.max(playback_rate_hz));
        let member_period = period_samples(member_rate);
        Pump {
            capture: DriftingResampler::new(
                capture_rate_hz,
                member_rate,
                SCRATCH_PERIODS * device_period,
            ),
            playback: DriftingResampler::new(
                member_rate,
                playback_rate_hz,
                SCRATCH_PERIODS * device_period,
            ),
            capture_control: FillControl::new(
                CAPTURE_TARGET_FRAMES * member_period as f64,
                member_rate,
            ),
            playback_control: FillControl::new(
                PLAYBACK_TARGET_MS * f64::from(playback_rate_hz) / 1000.0,
                playback_rate_hz,
            ),
            talk_gain: gain_of(talk_gain_db),
            listen_gain: gain_of(listen_gain_db),
            playback_rate_hz,
            device_buffer: vec![0; SCRATCH_PERIODS * device_period].into_boxed_slice(),
            member_buffer: vec![0; SCRATCH_PERIODS * device_period].into_boxed_slice(),
        }
    }

    /// Samples of silence the device's playback ring starts with (its target).
    pub fn playback_prefill(&self) -> usize {
        self.playback_control.target as usize
    }

    /// Samples of silence the member's capture ring starts with (its target).
    pub fn capture_prefill(&self) -> usize {
        self.capture_control.target as usize
    }

    /// One period: what the microphone's ring holds goes, resampled and at
    /// the talk gain, to the member's capture ring; what the member's
    /// playback ring holds goes, resampled and at the listen gain, to the
    /// loudspeaker's ring. Ratios are corrected by each ring's fill.
    pub fn run_period(
        &mut self,
        microphone: &SampleRing,
        loudspeaker: &SampleRing,
        port: &LocalPort,
    ) {
        self.capture_period(microphone, port);
        self.playback_period(loudspeaker, port);
    }

    fn capture_period(&mut self, microphone: &SampleRing, port: &LocalPort) {
        let member_period = period_samples(local_rate_hz()) as f64;
        let ppm = self.capture_control.correction_ppm(port.capture.len());
        self.capture.set_correction_ppm(ppm);
        port.stats
            .capture_correction_ppm
            .store(ppm.round() as i64, Ordering::Relaxed);
        // What is there now, no more: a device delivering faster than the
        // thread converts (a broken one spinning) cannot hold it here.
        let mut budget = microphone.len();
        while budget > 0 {
            let want = budget.min(self.device_buffer.len());
            let got = microphone.pop(&mut self.device_buffer[..want]);
            if got == 0 {
                return;
            }
            budget -= got;
            apply(&mut self.device_buffer[..got], self.talk_gain);
            let mut offset = 0;
            while offset < got {
                let (taken, made) = self
                    .capture
                    .process(&self.device_buffer[offset..got], &mut self.member_buffer);
                let pushed = if self
                    .capture_control
                    .may_write(port.capture.len(), member_period)
                {
                    port.capture.push(&self.member_buffer[..made])
                } else {
                    0
                };
                let lost = (made - pushed) as u64;
                if lost > 0 {
                    port.stats
                        .capture_overruns
                        .fetch_add(lost, Ordering::Relaxed);
                }
                offset += taken;
                if taken == 0 && made == 0 {
                    break;
                }
            }
        }
    }

    fn playback_period(&mut self, loudspeaker: &SampleRing, port: &LocalPort) {
        let device_period = period_samples(self.playback_rate_hz) as f64;
        let ppm = self.playback_control.correction_ppm(loudspeaker.len());
        self.playback.set_correction_ppm(ppm);
        port.stats
            .playback_correction_ppm
            .store(ppm.round() as i64, Ordering::Relaxed);
        let mut budget = port.playback.len();
        while budget > 0 {
            let want = budget.min(self.member_buffer.len());
            let got = port.playback.pop(&mut self.member_buffer[..want]);
            if got == 0 {
                return;
            }
            budget -= got;
            apply(&mut self.member_buffer[..got], self.listen_gain);
            let mut offset = 0;
            while offset < got {
                let (taken, made) = self
                    .playback
                    .process(&self.member_buffer[offset..got], &mut self.device_buffer);
                let pushed = if self
                    .playback_control
                    .may_write(loudspeaker.len(), device_period)
                {
                    loudspeaker.push(&self.device_buffer[..made])
                } else {
                    0
                };
                if pushed < made {
                    port.stats.playback_overruns.fetch_add(1, Ordering::Relaxed);
                }
                offset += taken;
                if taken == 0 && made == 0 {
                    break;
                }
            }
        }
    }

    /// A period while the device is gone: what the media thread sends the
    /// room is dropped, and the room says nothing (a frame of silence, so the
    /// media thread counts no underrun for a device known to be down).
    pub fn idle_period(port: &LocalPort) {
        let frame = period_samples(local_rate_hz());
        port.playback.skip(usize::MAX);
        if port.capture.len() < 2 * frame {
            let silence = [0i16; 2 * crate::media::mixer::FRAME_SAMPLES_MAX];
            port.capture.push(&silence[..frame]);
        }
    }
}

/// Samples in one period at `rate_hz`.
pub fn period_samples(rate_hz: u32) -> usize {
    (rate_hz * PERIOD_MS / 1000) as usize
}

fn apply(samples: &mut [i16], gain: f32) {
    if gain == 1.0 {
        return;
    }
    for sample in samples {
        *sample = (f32::from(*sample) * gain).clamp(-32768.0, 32767.0) as i16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device whose clock runs `ppm` fast against the media thread's,
    /// driven for `seconds` in 1 ms steps: it captures a 1 kHz tone and
    /// plays what it is given; the media thread takes and gives a frame
    /// every 20 ms, the pump runs every 20 ms a few ms out of phase.
    /// Returns the largest distance of each ring from its target over the
    /// last half, the mean corrections over it, and what the media thread got.
    fn run(ppm: f64, seconds: u32) -> (usize, usize, f64, f64, Vec<i16>) {
        let device_rate = 48_000;
        let port = LocalPort::new();
        let microphone = SampleRing::new(48_000 / 5);
        let loudspeaker = SampleRing::new(48_000 / 5);
        let mut pump = Pump::new(device_rate, device_rate, 0.0, 0.0);
        loudspeaker.push(&vec![0; pump.playback_prefill()]);
        port.capture.push(&vec![0; pump.capture_prefill()]);
        let device_per_ms = f64::from(device_rate) * (1.0 + ppm * 1e-6) / 1000.0;
        let (mut device_clock, mut captured, mut played) = (0.0f64, 0usize, 0usize);
        let (mut capture_worst, mut playback_worst) = (0usize, 0usize);
        let (mut capture_ppm, mut playback_ppm, mut periods) = (0.0, 0.0, 0.0);
        let mut heard = Vec::new();
        let mut frame = [0i16; 160];
        let mut sink = vec![0i16; 4800];
        for ms in 0..seconds * 1000 {
            // The device: its callbacks move 480-sample periods on its own clock.
            device_clock += device_per_ms;
            while device_clock as usize >= captured + 480 {
                let tone = |i: usize| {
                    let t = (captured + i) as f64 / 48_000.0;
                    (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
                };
                microphone.push_with(480, tone);
                captured += 480;
            }
            while device_clock as usize >= played + 480 {
                loudspeaker.pop(&mut sink[..480]);
                played += 480;
            }
            if ms % 20 == 0 {
                // The media thread: a frame each way.
                if port.capture.len() >= 160 {
                    port.capture.pop(&mut frame);
                    heard.extend_from_slice(&frame);
                }
                port.playback.push(&[0; 160]);
            }
            if ms % 20 == 7 {
                pump.run_period(&microphone, &loudspeaker, &port);
                if ms > seconds * 500 {
                    let capture_target = pump.capture_prefill();
                    let playback_target = pump.playback_prefill();
                    capture_worst = capture_worst.max(port.capture.len().abs_diff(capture_target));
                    playback_worst =
                        playback_worst.max(loudspeaker.len().abs_diff(playback_target));
                    let stats = &port.stats;
                    capture_ppm += stats.capture_correction_ppm.load(Ordering::Relaxed) as f64;
                    playback_ppm += stats.playback_correction_ppm.load(Ordering::Relaxed) as f64;
                    periods += 1.0;
                }
            }
        }
        (
            capture_worst,
            playback_worst,
            capture_ppm / periods,
            playback_ppm / periods,
            heard,
        )
    }

    #[test]
    fn a_card_running_fast_or_slow_keeps_both_rings_near_their_targets() {
        // At 1000 ppm the card's 10 ms periods slip a whole period against
        // the 20 ms grid every 10 s: 40 s hold two slips in the last half.
        for ppm in [0.0, 1000.0, -1000.0] {
            let (capture, playback, capture_ppm, playback_ppm, heard) = run(ppm, 40);
            // Within a frame of the media thread's 20 ms (the phase of the
            // reading), plus a slipped period on its way out.
            assert!(
                capture <= 320,
                "{ppm} ppm: capture ring {capture} from target"
            );
            assert!(
                playback <= 2 * 960,
                "{ppm} ppm: playback ring {playback} from target"
            );
            // On average the correction is the drift: a fast card's samples
            // are made fewer (capture), and more are made for it (playback).
            assert!(
                (capture_ppm + ppm).abs() < 250.0,
                "{ppm}: capture {capture_ppm}"
            );
            assert!(
                (playback_ppm - ppm).abs() < 250.0,
                "{ppm}: playback {playback_ppm}"
            );
            // The media thread had its frame every tick.
            assert!(heard.len() >= 160 * 50 * 39, "{ppm}: {}", heard.len());
            // Its level, in 100 ms windows, by RMS: a ratio being corrected
            // moves the tone by a Hz or two, which a narrow filter would
            // count as a loss.
            let windows: Vec<f64> = heard[heard.len() / 2..]
                .chunks_exact(800)
                .map(|w| {
                    let power = w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / 800.0;
                    (2.0 * power).sqrt()
                })
                .collect();
            let level = windows.iter().copied().fold(f64::MAX, f64::min);
            assert!(
                (level / 8000.0 - 1.0).abs() < 0.05,
                "{ppm}: 1 kHz at {level} at worst"
            );
        }
    }
}
