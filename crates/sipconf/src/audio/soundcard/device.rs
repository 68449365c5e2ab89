//! The sound card itself, through cpal on ALSA (cargo feature `soundcard`):
//! opens the capture and playback devices `[soundcard]` names, runs the
//! thread that pumps audio every 20 ms (`Pump`), and when a device is
//! missing, fails or goes quiet, logs it and tries again every
//! `RETRY_AFTER`, feeding the member silence meanwhile. The bridge never
//! waits for any of it.
//!
//! The callbacks only copy between the device's buffers and preallocated
//! rings (`SampleRing`, atomics only): they never block, lock or allocate.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig};

use super::{period_samples, Pump, PERIOD_MS, PREFERRED_DEVICE_RATE_HZ};
use crate::config::SoundcardConfig;
use crate::media::local::{LocalPort, LocalStats, SampleRing};

/// A missing or lost device is tried again after this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// A microphone that delivers nothing for this long is taken as lost.
const SILENT_DEVICE: Duration = Duration::from_secs(2);
/// The device's rings hold this long of audio at the device's rate.
const DEVICE_RING_MS: u32 = 400;

/// Starts the sound card's thread ("sipconf-card"); it runs until the
/// process ends.
pub fn spawn(config: SoundcardConfig, port: LocalPort) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sipconf-card".into())
        .spawn(move || run(&config, &port))
}

/// Every capture and playback device the host's ALSA offers, one a line:
/// its name (as `[soundcard]` takes it), what it does, and its description.
pub fn list() -> Result<Vec<String>, String> {
    let host = cpal::default_host();
    let devices = host
        .devices()
        .map_err(|e| format!("cannot list ALSA devices: {e}"))?;
    let mut lines = Vec::new();
    for device in devices {
        let Ok(id) = device.id() else {
            continue;
        };
        let (what, description) = match device.description() {
            Ok(description) => {
                let what = match description.direction() {
                    cpal::DeviceDirection::Input => "capture",
                    cpal::DeviceDirection::Output => "playback",
                    cpal::DeviceDirection::Duplex => "capture, playback",
                    _ => "capture?, playback?",
                };
                (what, description.to_string().replace('\n', " - "))
            }
            Err(_) => ("capture?, playback?", String::new()),
        };
        lines.push(format!("{}\t{what}\t{description}", id.id()));
    }
    Ok(lines)
}

fn run(config: &SoundcardConfig, port: &LocalPort) {
    let mut last_failure = String::new();
    loop {
        match Card::open(config, &port.stats) {
            Ok(card) => {
                last_failure.clear();
                port.stats.device_opens.fetch_add(1, Ordering::Relaxed);
                port.stats.device_up.store(true, Ordering::Relaxed);
                tracing::info!(
                    capture = %config.capture,
                    playback = %config.playback,
                    capture_hz = card.capture_hz,
                    playback_hz = card.playback_hz,
                    "sound card open"
                );
                let why = card.serve(config, port);
                port.stats.device_up.store(false, Ordering::Relaxed);
                port.stats.device_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    retry_s = RETRY_AFTER.as_secs(),
                    "sound card lost ({why}); the room is silent until it is back"
                );
            }
            Err(why) => {
                port.stats.device_errors.fetch_add(1, Ordering::Relaxed);
                // Said once, not every 5 s, until something changes.
                if why != last_failure {
                    tracing::warn!(
                        retry_s = RETRY_AFTER.as_secs(),
                        "cannot open the sound card: {why}"
                    );
                    last_failure = why;
                }
            }
        }
        let until = Instant::now() + RETRY_AFTER;
        while Instant::now() < until {
            Pump::idle_period(port);
            std::thread::sleep(Duration::from_millis(u64::from(PERIOD_MS)));
        }
    }
}

/// The open device: its two streams and the rings their callbacks use.
struct Card {
    _capture: cpal::Stream,
    _playback: cpal::Stream,
    microphone: Arc<SampleRing>,
    loudspeaker: Arc<SampleRing>,
    capture_hz: u32,
    playback_hz: u32,
    /// A stream reported an error.
    failed: Arc<AtomicBool>,
}

impl Card {
    fn open(config: &SoundcardConfig, stats: &Arc<LocalStats>) -> Result<Card, String> {
        let host = cpal::default_host();
        let input = find(&host, &config.capture, true)?;
        let output = find(&host, &config.playback, false)?;
        let failed = Arc::new(AtomicBool::new(false));
        let (capture, microphone, capture_hz) =
            open_stream(&input, &config.capture, true, &failed, stats)?;
        let (playback, loudspeaker, playback_hz) =
            open_stream(&output, &config.playback, false, &failed, stats)?;
        capture
            .play()
            .map_err(|e| format!("cannot start capture on `{}`: {e}", config.capture))?;
        playback
            .play()
            .map_err(|e| format!("cannot start playback on `{}`: {e}", config.playback))?;
        Ok(Card {
            _capture: capture,
            _playback: playback,
            microphone,
            loudspeaker,
            capture_hz,
            playback_hz,
            failed,
        })
    }

    /// Pumps audio every `PERIOD_MS` on an absolute schedule until the
    /// device fails or goes quiet; returns why.
    fn serve(self, config: &SoundcardConfig, port: &LocalPort) -> String {
        let mut pump = Pump::new(
            self.capture_hz,
            self.playback_hz,
            config.talk_gain_db,
            config.listen_gain_db,
        );
        let silence = vec![0i16; pump.playback_prefill().max(pump.capture_prefill())];
        port.playback.skip(usize::MAX);
        self.loudspeaker.push(&silence[..pump.playback_prefill()]);
        if port.capture.len() < pump.capture_prefill() {
            port.capture
                .push(&silence[..pump.capture_prefill() - port.capture.len()]);
        }
        let period = Duration::from_millis(u64::from(PERIOD_MS));
        let mut next = Instant::now();
        let mut heard_at = Instant::now();
        let mut heard_total = self.microphone.total_written();
        let mut window_start = Instant::now();
        let mut window_total = heard_total;
        loop {
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else if now - next > 5 * period {
                next = now;
            }
            if self.failed.load(Ordering::Relaxed) {
                return "the device reported an error".to_string();
            }
            let total = self.microphone.total_written();
            if total != heard_total {
                heard_total = total;
                heard_at = Instant::now();
            } else if heard_at.elapsed() >= SILENT_DEVICE {
                return format!("no audio from the microphone for {SILENT_DEVICE:?}");
            }
            // A device delivering far faster than its rate is not a clock
            // (a broken plugin spinning): as good as lost.
            if window_start.elapsed() >= Duration::from_secs(1) {
                let delivered = total.wrapping_sub(window_total);
                if delivered > 4 * self.capture_hz as usize {
                    return format!("the microphone delivered {delivered} samples in a second");
                }
                window_start = Instant::now();
                window_total = total;
            }
            pump.run_period(&self.microphone, &self.loudspeaker, port);
        }
    }
}

/// The device `name` names: "default", or one `list` shows (with or
/// without the `alsa:` prefix).
fn find(host: &cpal::Host, name: &str, capture: bool) -> Result<cpal::Device, String> {
    let what = if capture { "capture" } else { "playback" };
    if name == "default" {
        let device = if capture {
            host.default_input_device()
        } else {
            host.default_output_device()
        };
        return device.ok_or_else(|| format!("no default {what} device"));
    }
    let wanted = name.strip_prefix("alsa:").unwrap_or(name);
    host.devices()
        .map_err(|e| format!("cannot list ALSA devices: {e}"))?
        .find(|device| device.id().is_ok_and(|id| id.id() == wanted))
        .ok_or_else(|| format!("no {what} device `{name}` (see `sipconf soundcard --list`)"))
}

/// The stream settings tried first: mono 16-bit at 48 kHz.
fn preferred() -> (StreamConfig, SampleFormat) {
    let config = StreamConfig {
        channels: 1,
        sample_rate: PREFERRED_DEVICE_RATE_HZ,
        buffer_size: cpal::BufferSize::Default,
    };
    (config, SampleFormat::I16)
}

/// The device's own default settings, tried when it refuses `preferred`
/// (asked only then: asking opens the device).
fn device_default(device: &cpal::Device, capture: bool) -> Option<(StreamConfig, SampleFormat)> {
    let default = if capture {
        device.default_input_config()
    } else {
        device.default_output_config()
    };
    default
        .ok()
        .map(|default| (default.config(), default.sample_format()))
}

fn ring_for(rate_hz: u32) -> Arc<SampleRing> {
    Arc::new(SampleRing::new(
        (rate_hz * DEVICE_RING_MS / 1000) as usize + period_samples(rate_hz),
    ))
}

/// Opens `device` for capture or playback: mono 16-bit at 48 kHz if it
/// takes that, else its own default settings. Returns the stream, the ring
/// its callback fills or empties, and its rate.
fn open_stream(
    device: &cpal::Device,
    name: &str,
    capture: bool,
    failed: &Arc<AtomicBool>,
    stats: &Arc<LocalStats>,
) -> Result<(cpal::Stream, Arc<SampleRing>, u32), String> {
    let what = if capture { "capture" } else { "playback" };
    let mut last = String::from("no configuration to try");
    let mut tries = vec![preferred()];
    for attempt in 0..2 {
        if attempt == 1 {
            tries.extend(device_default(device, capture));
        }
        let Some(&(config, format)) = tries.get(attempt) else {
            break;
        };
        let ring = ring_for(config.sample_rate);
        let streams = Streams {
            ring: Arc::clone(&ring),
            failed: Arc::clone(failed),
            stats: Arc::clone(stats),
        };
        match streams.build(device, config, format, capture) {
            Ok(stream) => return Ok((stream, ring, config.sample_rate)),
            Err(why) => last = why,
        }
    }
    Err(format!("cannot open {what} on `{name}`: {last}"))
}

/// What a stream's callbacks share with the sound card's thread.
struct Streams {
    ring: Arc<SampleRing>,
    failed: Arc<AtomicBool>,
    stats: Arc<LocalStats>,
}

impl Streams {
    fn build(
        self,
        device: &cpal::Device,
        config: StreamConfig,
        format: SampleFormat,
        capture: bool,
    ) -> Result<cpal::Stream, String> {
        let Streams {
            ring,
            failed,
            stats,
        } = self;
        let on_error = move |_| failed.store(true, Ordering::Relaxed);
        let channels = usize::from(config.channels.max(1));
        let built = match (capture, format) {
            (true, SampleFormat::I16) => device.build_input_stream(
                config,
                capture_callback::<i16>(ring, channels, stats),
                on_error,
                None,
            ),
            (true, SampleFormat::F32) => device.build_input_stream(
                config,
                capture_callback::<f32>(ring, channels, stats),
                on_error,
                None,
            ),
            (true, SampleFormat::I32) => device.build_input_stream(
                config,
                capture_callback::<i32>(ring, channels, stats),
                on_error,
                None,
            ),
            (false, SampleFormat::I16) => device.build_output_stream(
                config,
                playback_callback::<i16>(ring, channels, stats),
                on_error,
                None,
            ),
            (false, SampleFormat::F32) => device.build_output_stream(
                config,
                playback_callback::<f32>(ring, channels, stats),
                on_error,
                None,
            ),
            (false, SampleFormat::I32) => device.build_output_stream(
                config,
                playback_callback::<i32>(ring, channels, stats),
                on_error,
                None,
            ),
            (_, other) => return Err(format!("sample format {other:?} is not supported")),
        };
        built.map_err(|e| e.to_string())
    }
}

/// The microphone's callback: the first channel of each frame into the
/// ring, converted to 16 bits; what does not fit is counted.
fn capture_callback<T>(
    ring: Arc<SampleRing>,
    channels: usize,
    stats: Arc<LocalStats>,
) -> impl FnMut(&[T], &cpal::InputCallbackInfo) + Send + 'static
where
    T: SizedSample,
    i16: FromSample<T>,
{
    move |data: &[T], _| {
        let frames = data.len() / channels;
        let pushed = ring.push_with(frames, |i| i16::from_sample(data[i * channels]));
        if pushed < frames {
            stats
                .capture_overruns
                .fetch_add((frames - pushed) as u64, Ordering::Relaxed);
        }
    }
}

/// The loudspeaker's callback: each sample of the ring to every channel;
/// silence, counted, when the ring runs short.
fn playback_callback<T>(
    ring: Arc<SampleRing>,
    channels: usize,
    stats: Arc<LocalStats>,
) -> impl FnMut(&mut [T], &cpal::OutputCallbackInfo) + Send + 'static
where
    T: SizedSample + FromSample<i16>,
{
    move |data: &mut [T], _| {
        let mut chunk = [0i16; 256];
        let frames = data.len() / channels;
        let mut done = 0;
        while done < frames {
            let want = (frames - done).min(chunk.len());
            let got = ring.pop(&mut chunk[..want]);
            for (offset, &sample) in chunk[..got].iter().enumerate() {
                let at = (done + offset) * channels;
                data[at..at + channels].fill(T::from_sample(sample));
            }
            done += got;
            if got < want {
                data[done * channels..].fill(T::EQUILIBRIUM);
                stats.playback_underruns.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}
