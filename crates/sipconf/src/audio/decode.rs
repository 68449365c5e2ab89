//! The one reader of audio files: symphonia, for WAV (PCM of any width,
//! float, u-law, A-law, IMA and Microsoft ADPCM) and MP3, to mono samples at
//! the file's own rate. Fetched files and spoken sentences go through it to
//! become clips at the conference rate (`decode_to_clip`); `sipconf dtmf`
//! reads recordings with it (`wav`). It says what a file holds before it
//! decodes it, so each caller keeps its own rules on what it accepts.
//!
//! Bytes in, samples out: no network, no files, no media thread. Malformed
//! input is an error, never a panic.

use super::{Clip, CLIP_RATE_HZ};
use crate::media::resample::resample;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{
    CodecType, Decoder, DecoderOptions, CODEC_TYPE_NULL, CODEC_TYPE_PCM_ALAW, CODEC_TYPE_PCM_MULAW,
    CODEC_TYPE_PCM_S16LE,
};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Instantiate;

/// Why bytes could not be decoded into audio.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a supported audio file (WAV in PCM, u-law, A-law or IMA ADPCM; MP3): {0}")]
    Unsupported(String),
    #[error("the file is cut short before its audio starts")]
    Truncated,
    #[error("the file has no audio track")]
    NoTrack,
    #[error("the file does not say its sample rate")]
    NoSampleRate,
    #[error("the audio is corrupt: {0}")]
    Corrupt(String),
    #[error("the file holds no audio")]
    Empty,
    #[error("the audio is longer than the limit of {limit_s} s")]
    TooLong { limit_s: u64 },
}

/// How a file's samples are coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// 16-bit linear PCM.
    Pcm16,
    /// G.711 u-law.
    Ulaw,
    /// G.711 A-law.
    Alaw,
    /// Anything else the reader decodes (other PCM widths, float, ADPCM,
    /// MP3), by the decoder's name for it.
    Other(&'static str),
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encoding::Pcm16 => f.write_str("16-bit PCM"),
            Encoding::Ulaw => f.write_str("u-law"),
            Encoding::Alaw => f.write_str("A-law"),
            Encoding::Other(name) => f.write_str(name),
        }
    }
}

/// What a file holds, as its header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    pub encoding: Encoding,
    /// Channels, when the header says (WAV always does).
    pub channels: Option<usize>,
    pub rate_hz: u32,
}

/// A file whose header has been read and whose decoder is ready.
pub struct AudioFile {
    reader: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
    format: Format,
}

impl AudioFile {
    /// Finds the container and the first audio track in `bytes` and readies
    /// its decoder.
    pub fn open(bytes: Vec<u8>) -> Result<AudioFile, DecodeError> {
        let source =
            MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), Default::default());
        let reader = open_container(source)?;
        let track = reader
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or(DecodeError::NoTrack)?;
        let params = &track.codec_params;
        let rate_hz = params
            .sample_rate
            .filter(|&r| r > 0)
            .ok_or(DecodeError::NoSampleRate)?;
        let codecs = symphonia::default::get_codecs();
        let decoder = codecs
            .make(params, &DecoderOptions::default())
            .map_err(|e| DecodeError::Unsupported(e.to_string()))?;
        let format = Format {
            encoding: encoding_of(params.codec),
            channels: params.channels.map(|c| c.count()),
            rate_hz,
        };
        Ok(AudioFile {
            track_id: track.id,
            reader,
            decoder,
            format,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Decodes the whole track, every channel summed and scaled to one, as
    /// samples in -1..1 at `format().rate_hz`. More than `max_seconds` of
    /// audio is an error.
    pub fn decode_mono(mut self, max_seconds: Option<u64>) -> Result<Vec<f32>, DecodeError> {
        let limit = max_seconds
            .map(|s| s.saturating_mul(u64::from(self.format.rate_hz)) as usize)
            .unwrap_or(usize::MAX);
        let mut mono: Vec<f32> = Vec::new();
        let mut interleaved: Option<SampleBuffer<f32>> = None;
        loop {
            let packet = match self.reader.next_packet() {
                Ok(packet) => packet,
                // The end of the stream, or a truncated last packet, ends the audio.
                Err(SymphoniaError::IoError(_)) | Err(SymphoniaError::ResetRequired) => break,
                Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            let decoded = match self.decoder.decode(&packet) {
                Ok(decoded) => decoded,
                // One damaged frame (common in MP3 streams) is skipped, not fatal.
                Err(SymphoniaError::DecodeError(_)) => continue,
                Err(SymphoniaError::IoError(_)) => break,
                Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
            };
            let spec = *decoded.spec();
            let channels = spec.channels.count().max(1);
            let needed = decoded.capacity() as u64;
            let buffer = match &mut interleaved {
                Some(buffer) if buffer.capacity() >= needed as usize * channels => buffer,
                slot => slot.insert(SampleBuffer::new(needed, spec)),
            };
            buffer.copy_interleaved_ref(decoded);
            let scale = 1.0 / channels as f32;
            mono.extend(
                buffer
                    .samples()
                    .chunks_exact(channels)
                    .map(|frame| frame.iter().sum::<f32>() * scale),
            );
            if mono.len() > limit {
                return Err(DecodeError::TooLong {
                    limit_s: max_seconds.unwrap_or(u64::MAX),
                });
            }
        }
        if mono.is_empty() {
            return Err(DecodeError::Empty);
        }
        Ok(mono)
    }
}

/// Scans for a container symphonia knows, reading any metadata (an ID3 tag
/// before MP3) on the way, and reads the container's header. Finding nothing
/// is `Unsupported`; a header that ends early is `Truncated`.
fn open_container(mut source: MediaSourceStream) -> Result<Box<dyn FormatReader>, DecodeError> {
    let header_error = |e: SymphoniaError| match e {
        SymphoniaError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Truncated
        }
        other => DecodeError::Unsupported(other.to_string()),
    };
    let probe = symphonia::default::get_probe();
    loop {
        let found = probe
            .next(&mut source)
            .map_err(|e| DecodeError::Unsupported(e.to_string()))?;
        match found {
            // The probe left the stream at the container's marker.
            Instantiate::Format(open) => {
                return open(source, &FormatOptions::default()).map_err(header_error)
            }
            Instantiate::Metadata(open) => {
                open(&MetadataOptions::default())
                    .read_all(&mut source)
                    .map_err(header_error)?;
            }
        }
    }
}

fn encoding_of(codec: CodecType) -> Encoding {
    match codec {
        CODEC_TYPE_PCM_S16LE => Encoding::Pcm16,
        CODEC_TYPE_PCM_MULAW => Encoding::Ulaw,
        CODEC_TYPE_PCM_ALAW => Encoding::Alaw,
        other => Encoding::Other(
            symphonia::default::get_codecs()
                .get_codec(other)
                .map_or("an unknown codec", |d| d.long_name),
        ),
    }
}

/// Samples in -1..1 as 16-bit linear, rounded and clipped.
pub fn to_pcm16(samples: &[f32]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// Decodes a whole file, downmixes it to mono and resamples it to
/// `CLIP_RATE_HZ`.
pub fn decode_to_clip(bytes: Vec<u8>, max_seconds: u64) -> Result<Clip, DecodeError> {
    let file = AudioFile::open(bytes)?;
    let rate_hz = file.format().rate_hz;
    let mono = file.decode_mono(Some(max_seconds))?;
    let resampled = resample(&mono, rate_hz, CLIP_RATE_HZ);
    if resampled.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(to_pcm16(&resampled).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_unsupported_file_not_a_panic() {
        let garbage: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(matches!(
            decode_to_clip(garbage, 60),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(decode_to_clip(Vec::new(), 60).is_err());
        assert!(matches!(
            AudioFile::open(b"this is not audio at all".to_vec()),
            Err(DecodeError::Unsupported(_))
        ));
    }

    #[test]
    fn a_wav_header_that_ends_early_is_truncated() {
        // RIFF, WAVE and the start of a fmt chunk that promises 16 bytes.
        let mut bytes = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00".to_vec();
        bytes.extend_from_slice(&[1, 0, 1, 0]);
        assert!(matches!(
            AudioFile::open(bytes),
            Err(DecodeError::Truncated)
        ));
    }

    #[test]
    fn encodings_are_named() {
        assert_eq!(encoding_of(CODEC_TYPE_PCM_MULAW), Encoding::Ulaw);
        assert_eq!(Encoding::Pcm16.to_string(), "16-bit PCM");
        let Encoding::Other(name) = encoding_of(symphonia::core::codecs::CODEC_TYPE_PCM_U8) else {
            panic!("8-bit PCM is not 16-bit");
        };
        assert!(name.contains("8-bit"), "{name}");
    }
}
