//! Reads a WAV file (16-bit PCM, u-law or A-law, mono, any sample rate) and
//! brings it to the receiver's 8 kHz with `media::resample`, for `sipconf
//! dtmf FILE` and the tests.
//! Errors say exactly what the file is or lacks; nothing here panics on input.

use std::path::Path;

use crate::media::codec::Codec;
use crate::media::resample::resample;

use super::goertzel::SAMPLE_RATE_HZ;

const FORMAT_PCM: u16 = 1;
const FORMAT_ALAW: u16 = 6;
const FORMAT_ULAW: u16 = 7;
/// WAVE_FORMAT_EXTENSIBLE: the real format is the first two bytes of the sub-format GUID.
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// Why a WAV file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a WAV file: it does not start with RIFF....WAVE")]
    NotWav,
    #[error("the WAV file has no {0} chunk")]
    MissingChunk(&'static str),
    #[error("the WAV file's {0} chunk is cut short")]
    Truncated(&'static str),
    #[error("WAV format tag {0:#06x} is not supported (16-bit PCM, u-law and A-law are)")]
    UnsupportedFormat(u16),
    #[error(
        "{bits}-bit samples are not supported for this format (PCM must be 16-bit, G.711 8-bit)"
    )]
    UnsupportedBits { bits: u16 },
    #[error("{0} channels: only mono WAV files are supported")]
    UnsupportedChannels(u16),
    #[error("sample rate {0} Hz is not supported")]
    UnsupportedRate(u32),
}

/// Sample encodings we decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Pcm16,
    Ulaw,
    Alaw,
}

/// Reads `path` and returns its audio at 8 kHz.
pub fn read_wav_8k(path: &Path) -> Result<Vec<i16>, WavError> {
    let bytes = std::fs::read(path).map_err(|source| WavError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_wav_8k(&bytes)
}

/// Parses a whole WAV file held in memory and returns its audio at 8 kHz.
pub fn parse_wav_8k(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    let (rate_hz, samples) = parse_wav(bytes)?;
    let linear: Vec<f32> = samples.iter().map(|&s| f32::from(s) / 32768.0).collect();
    Ok(resample(&linear, rate_hz, SAMPLE_RATE_HZ)
        .iter()
        .map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect())
}

/// Parses a WAV file into its sample rate and linear samples.
pub fn parse_wav(bytes: &[u8]) -> Result<(u32, Vec<i16>), WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWav);
    }
    let mut format: Option<(Encoding, u32)> = None;
    let mut rest = &bytes[12..];
    while rest.len() >= 8 {
        let id = &rest[0..4];
        let size = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let body = &rest[8..];
        if id == b"fmt " {
            let fmt = body.get(..size).ok_or(WavError::Truncated("fmt"))?;
            format = Some(parse_fmt(fmt)?);
        } else if id == b"data" {
            let (encoding, rate_hz) = format.ok_or(WavError::MissingChunk("fmt"))?;
            // Streaming writers leave the size at its maximum: take what is there.
            let data = &body[..size.min(body.len())];
            return Ok((rate_hz, decode(encoding, data)));
        }
        let padded = size.saturating_add(size & 1);
        rest = body.get(padded..).unwrap_or(&[]);
    }
    Err(WavError::MissingChunk(if format.is_some() {
        "data"
    } else {
        "fmt"
    }))
}

fn parse_fmt(fmt: &[u8]) -> Result<(Encoding, u32), WavError> {
    let field = |at: usize| -> Result<u16, WavError> {
        fmt.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(WavError::Truncated("fmt"))
    };
    let mut tag = field(0)?;
    let channels = field(2)?;
    let rate_hz = u32::from(field(4)?) | (u32::from(field(6)?) << 16);
    let bits = field(14)?;
    if tag == FORMAT_EXTENSIBLE {
        tag = field(24)?;
    }
    let encoding = match (tag, bits) {
        (FORMAT_PCM, 16) => Encoding::Pcm16,
        (FORMAT_ULAW, 8) => Encoding::Ulaw,
        (FORMAT_ALAW, 8) => Encoding::Alaw,
        (FORMAT_PCM | FORMAT_ULAW | FORMAT_ALAW, bits) => {
            return Err(WavError::UnsupportedBits { bits })
        }
        (tag, _) => return Err(WavError::UnsupportedFormat(tag)),
    };
    if channels != 1 {
        return Err(WavError::UnsupportedChannels(channels));
    }
    if !(1000..=384_000).contains(&rate_hz) {
        return Err(WavError::UnsupportedRate(rate_hz));
    }
    Ok((encoding, rate_hz))
}

fn decode(encoding: Encoding, data: &[u8]) -> Vec<i16> {
    match encoding {
        Encoding::Pcm16 => data
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect(),
        Encoding::Ulaw | Encoding::Alaw => {
            let codec = if encoding == Encoding::Ulaw {
                Codec::Pcmu
            } else {
                Codec::Pcma
            };
            let mut out = vec![0i16; data.len()];
            codec.decode(data, &mut out);
            out
        }
    }
}

/// Writes 16-bit PCM mono samples as a WAV file image, for tests and tools.
pub fn pcm16_wav_bytes(samples: &[i16], rate_hz: u32) -> Vec<u8> {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    wav_bytes(FORMAT_PCM, 16, rate_hz, &data)
}

/// Writes G.711 mono bytes as a WAV file image, for tests and tools.
pub fn g711_wav_bytes(codec: Codec, encoded: &[u8]) -> Vec<u8> {
    let tag = match codec {
        Codec::Pcmu => FORMAT_ULAW,
        Codec::Pcma => FORMAT_ALAW,
    };
    wav_bytes(tag, 8, SAMPLE_RATE_HZ, encoded)
}

fn wav_bytes(tag: u16, bits: u16, rate_hz: u32, data: &[u8]) -> Vec<u8> {
    let block_align = bits / 8;
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate_hz.to_le_bytes());
    out.extend_from_slice(&(rate_hz * u32::from(block_align)).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_at_8k_round_trips() {
        let samples = [0i16, 1, -1, 32767, -32768, 1234];
        let (rate, back) = parse_wav(&pcm16_wav_bytes(&samples, 8000)).expect("valid");
        assert_eq!((rate, back.as_slice()), (8000, &samples[..]));
    }

    #[test]
    fn bad_files_get_precise_errors() {
        assert!(matches!(parse_wav(b"hello"), Err(WavError::NotWav)));
        let mut stereo = pcm16_wav_bytes(&[0; 4], 8000);
        stereo[22] = 2;
        assert!(matches!(
            parse_wav(&stereo),
            Err(WavError::UnsupportedChannels(2))
        ));
        let mut float = pcm16_wav_bytes(&[0; 4], 8000);
        float[20] = 3;
        assert!(matches!(
            parse_wav(&float),
            Err(WavError::UnsupportedFormat(3))
        ));
        let mut eight_bit = pcm16_wav_bytes(&[0; 4], 8000);
        eight_bit[34] = 8;
        assert!(matches!(
            parse_wav(&eight_bit),
            Err(WavError::UnsupportedBits { bits: 8 })
        ));
        let no_data = &pcm16_wav_bytes(&[], 8000)[..36];
        assert!(matches!(
            parse_wav(no_data),
            Err(WavError::MissingChunk("data"))
        ));
    }
}
