//! Audio the bridge plays: files by URL (`fetch`), text to speech (`tts`,
//! `voices`) and synthesized tones, all decoded by the one reader of audio
//! files (`decode`), which also reads `sipconf dtmf` recordings (`wav`).
//! Everything here runs on the signalling plane (or in the `sipconf dtmf`
//! command) and ends in a [`Clip`], a read-only `Arc<[i16]>` at the
//! conference rate that the media thread only reads. Nothing here touches
//! the media thread, a call or a record: the switchboard asks for a clip and
//! plays it.

pub mod decode;
pub mod fetch;
pub mod soundcard;
pub mod tts;
pub mod voices;
pub mod wav;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use decode::DecodeError;
pub use fetch::{FetchError, FetchLimits, Fetcher};
pub use tts::{Speaker, SpeechError};
pub use voices::{espeak_voice, EspeakVoice, VoiceError};

/// Mono 16-bit samples at `CLIP_RATE_HZ`, shared read-only with the media thread.
pub type Clip = Arc<[i16]>;

/// Clips are made at 8 kHz (`media::engine::CONFERENCE_RATE_HZ`); the media
/// plane brings them up to a 16 kHz mix as they play.
pub const CLIP_RATE_HZ: u32 = crate::media::engine::CONFERENCE_RATE_HZ;

/// `[audio]` settings.
#[derive(Debug, Clone)]
pub struct AudioSettings {
    pub fetch: FetchLimits,
    /// The espeak-ng program: a path, or a name looked up on `PATH`.
    pub espeak: PathBuf,
    pub speech_timeout: Duration,
    /// Sentences remembered by the speech cache.
    pub speech_cache_entries: usize,
}

/// What to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File {
        url: String,
    },
    Speech {
        sentence: String,
        voice: EspeakVoice,
    },
}

impl Source {
    /// `playback` or `speak`: the word the events use for this kind of audio.
    pub fn event_kind(&self) -> &'static str {
        match self {
            Source::File { .. } => "playback",
            Source::Speech { .. } => "speak",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Speech(#[from] SpeechError),
}

/// The fetcher and the speaker, shared by the call driver's tasks.
pub struct Library {
    pub fetcher: Fetcher,
    pub speaker: Speaker,
}

impl Library {
    pub fn new(settings: &AudioSettings) -> Library {
        Library {
            fetcher: Fetcher::new(settings.fetch),
            speaker: Speaker::new(
                settings.espeak.clone(),
                settings.speech_timeout,
                settings.speech_cache_entries,
            ),
        }
    }

    pub async fn clip(&self, source: &Source) -> Result<Clip, AudioError> {
        match source {
            Source::File { url } => Ok(self.fetcher.fetch(url).await?),
            Source::Speech { sentence, voice } => Ok(self.speaker.speak(sentence, voice).await?),
        }
    }
}

/// A tone of one or more frequencies in sequence, each `step_ms` long, at
/// -12 dBFS with 5 ms ramps so it starts and ends without a click.
pub fn tone(frequencies_hz: &[f64], step_ms: u32) -> Clip {
    let rate = f64::from(CLIP_RATE_HZ);
    let step = (CLIP_RATE_HZ * step_ms / 1000) as usize;
    let ramp = (CLIP_RATE_HZ as usize * 5 / 1000).min(step / 2).max(1);
    let amplitude = 32767.0 * 10f64.powf(-12.0 / 20.0);
    frequencies_hz
        .iter()
        .flat_map(|&frequency| {
            (0..step).map(move |n| {
                let envelope = (n.min(step - 1 - n) as f64 / ramp as f64).min(1.0);
                let phase = 2.0 * std::f64::consts::PI * frequency * n as f64 / rate;
                (amplitude * envelope * phase.sin()).round() as i16
            })
        })
        .collect()
}

/// Played to the conference when a member with `joinTone` joins: rising.
pub fn join_tone() -> Clip {
    tone(&[660.0, 880.0], 120)
}

/// Played to the conference when a member with `leavingTone` leaves: falling.
pub fn leaving_tone() -> Clip {
    tone(&[880.0, 660.0], 120)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tones_are_short_and_start_and_end_quietly() {
        let join = join_tone();
        assert_eq!(join.len(), 2 * 960);
        assert!(join[0].abs() < 100 && join[join.len() - 1].abs() < 500);
        let peak = join.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!((8000..=8300).contains(&peak), "peak {peak}");
        assert_ne!(join, leaving_tone());
    }
}
