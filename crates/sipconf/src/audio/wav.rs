//! `sipconf dtmf FILE`'s input: a recording read through the one audio reader
//! (`decode`), held to what the command promises (16-bit PCM, u-law or A-law
//! WAV, mono, any sample rate), brought to the DTMF receiver's 8 kHz by the
//! one resampler, and handed to `media::dtmf::decode_digits`.
//!
//! Errors say exactly what the file is or lacks; nothing here panics on input.
//! Never here: the receiver itself, or anything of a running bridge.

use std::path::Path;

use super::decode::{to_pcm16, AudioFile, DecodeError, Encoding};
use crate::media::dtmf::goertzel::SAMPLE_RATE_HZ;
use crate::media::dtmf::{decode_digits, DigitReport};
use crate::media::resample::resample;

/// Sample rates a recording may have.
const RATES_HZ: std::ops::RangeInclusive<u32> = 1000..=384_000;

/// Why a recording could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a WAV file of 16-bit PCM, u-law or A-law ({0})")]
    NotWav(String),
    #[error(transparent)]
    Decode(DecodeError),
    #[error("{0} audio is not supported (16-bit PCM, u-law and A-law WAV are)")]
    UnsupportedEncoding(Encoding),
    #[error("{0} channels: only mono WAV files are supported")]
    UnsupportedChannels(usize),
    #[error("sample rate {0} Hz is not supported")]
    UnsupportedRate(u32),
}

impl From<DecodeError> for WavError {
    fn from(error: DecodeError) -> WavError {
        match error {
            DecodeError::Unsupported(reason) => WavError::NotWav(reason),
            other => WavError::Decode(other),
        }
    }
}

/// Reads `path` and returns its audio at 8 kHz.
pub fn read_wav_8k(path: &Path) -> Result<Vec<i16>, WavError> {
    let bytes = std::fs::read(path).map_err(|source| WavError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_wav_8k(bytes)
}

/// A whole recording held in memory, at 8 kHz.
pub fn parse_wav_8k(bytes: Vec<u8>) -> Result<Vec<i16>, WavError> {
    let file = AudioFile::open(bytes)?;
    let format = file.format();
    if !matches!(
        format.encoding,
        Encoding::Pcm16 | Encoding::Ulaw | Encoding::Alaw
    ) {
        return Err(WavError::UnsupportedEncoding(format.encoding));
    }
    if let Some(channels) = format.channels.filter(|&c| c != 1) {
        return Err(WavError::UnsupportedChannels(channels));
    }
    if !RATES_HZ.contains(&format.rate_hz) {
        return Err(WavError::UnsupportedRate(format.rate_hz));
    }
    let samples = match file.decode_mono(None) {
        Ok(samples) => samples,
        // A recording of nothing has no keys in it.
        Err(DecodeError::Empty) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(to_pcm16(&resample(
        &samples,
        format.rate_hz,
        SAMPLE_RATE_HZ,
    )))
}

/// The presses in a recording (see `read_wav_8k` for what it may hold).
pub fn decode_wav_digits(path: impl AsRef<Path>) -> Result<Vec<DigitReport>, WavError> {
    Ok(decode_digits(&read_wav_8k(path.as_ref())?))
}
