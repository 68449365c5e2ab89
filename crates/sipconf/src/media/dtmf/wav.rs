//! Reads a WAV file (16-bit PCM, u-law or A-law, mono, any sample rate) and
//! brings it to the receiver's 8 kHz, for `sipconf dtmf FILE` and the tests.
//! Errors say exactly what the file is or lacks; nothing here panics on input.

use std::path::Path;

use crate::media::codec::Codec;

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
    Ok(resample_to_8k(&samples, rate_hz))
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

/// Zero crossings of the interpolation kernel on each side.
const KERNEL_ZERO_CROSSINGS: f64 = 8.0;
/// Kernel table points per input sample; values between are interpolated linearly.
const KERNEL_STEPS_PER_SAMPLE: f64 = 64.0;
/// Pass band edge as a share of the lower of the two Nyquist frequencies.
const PASS_BAND: f64 = 0.9;

/// Resamples to 8 kHz with a Hann-windowed sinc low-pass at 90 % of the lower
/// Nyquist frequency (3.6 kHz when decimating), so nothing aliases onto the
/// DTMF band.
pub fn resample_to_8k(input: &[i16], rate_hz: u32) -> Vec<i16> {
    let target = SAMPLE_RATE_HZ;
    if rate_hz == target || input.is_empty() || rate_hz == 0 {
        return input.to_vec();
    }
    // Cut-off in cycles per input sample.
    let cutoff = PASS_BAND * 0.5 * f64::from(rate_hz.min(target)) / f64::from(rate_hz);
    let half_width = KERNEL_ZERO_CROSSINGS / (2.0 * cutoff);
    let table_len = (half_width * KERNEL_STEPS_PER_SAMPLE).ceil() as usize + 2;
    let table: Vec<f64> = (0..table_len)
        .map(|step| {
            let u = step as f64 / KERNEL_STEPS_PER_SAMPLE;
            if u >= half_width {
                return 0.0;
            }
            let x = 2.0 * cutoff * u;
            let sinc = if x == 0.0 {
                1.0
            } else {
                (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
            };
            let window = 0.5 * (1.0 + (std::f64::consts::PI * u / half_width).cos());
            2.0 * cutoff * sinc * window
        })
        .collect();
    let kernel = |distance: f64| {
        let position = distance.abs() * KERNEL_STEPS_PER_SAMPLE;
        let index = position as usize;
        if index + 1 >= table.len() {
            return 0.0;
        }
        let fraction = position - index as f64;
        table[index] + (table[index + 1] - table[index]) * fraction
    };
    let out_len = (input.len() as u64 * u64::from(target) / u64::from(rate_hz)) as usize;
    let reach = half_width.ceil() as i64;
    (0..out_len)
        .map(|n| {
            let center = n as f64 * f64::from(rate_hz) / f64::from(target);
            let first = (center.floor() as i64 - reach).max(0);
            let last = (center.floor() as i64 + reach).min(input.len() as i64 - 1);
            let mut sum = 0.0;
            for k in first..=last {
                sum += f64::from(input[k as usize]) * kernel(center - k as f64);
            }
            sum.round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
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

    #[test]
    fn resampling_keeps_a_tone_in_band_and_removes_one_above_4_khz() {
        let rate = 44_100;
        let tone = |hz: f64| -> Vec<i16> {
            (0..rate as usize / 10)
                .map(|n| {
                    (10_000.0
                        * (2.0 * std::f64::consts::PI * hz * n as f64 / f64::from(rate)).sin())
                        as i16
                })
                .collect()
        };
        let rms = |s: &[i16]| {
            let middle = &s[100..s.len() - 100];
            (middle.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / middle.len() as f64).sqrt()
        };
        let kept = resample_to_8k(&tone(1000.0), rate);
        assert_eq!(kept.len(), 800);
        assert!((rms(&kept) - 7071.0).abs() < 150.0, "{}", rms(&kept));
        let removed = resample_to_8k(&tone(6000.0), rate);
        assert!(rms(&removed) < 100.0, "{}", rms(&removed));
    }
}
