//! WAV files made at test time: any format tag, channel count, rate and
//! sample width, so tests can hand the bridge both what it must read and
//! what it must refuse. Writing only; the bridge's reader is under test.

use sipconf::media::Codec;

/// WAVE format tags (RFC 2361).
const FORMAT_PCM: u16 = 1;
const FORMAT_ALAW: u16 = 6;
const FORMAT_ULAW: u16 = 7;

/// A WAV file of `data`: `format` 1 (PCM), 3 (float), 6 (A-law), 7 (u-law)
/// or any other tag. Formats other than PCM carry the 18-byte fmt chunk
/// (with `cbSize`) the WAVE spec asks of them.
pub fn wav(format: u16, channels: u16, rate_hz: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let block_align = channels * bits / 8;
    let fmt_len: u32 = if format == FORMAT_PCM { 16 } else { 18 };
    let mut out = Vec::with_capacity(28 + fmt_len as usize + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(20 + fmt_len + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&fmt_len.to_le_bytes());
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate_hz.to_le_bytes());
    out.extend_from_slice(&(rate_hz * u32::from(block_align)).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    if fmt_len == 18 {
        out.extend_from_slice(&0u16.to_le_bytes());
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// 16-bit PCM samples (interleaved when `channels` > 1) as a WAV file.
pub fn wav_pcm16(samples: &[i16], channels: u16, rate_hz: u32) -> Vec<u8> {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    wav(FORMAT_PCM, channels, rate_hz, 16, &data)
}

/// G.711 bytes as a mono 8 kHz WAV file (u-law: format 7, A-law: format 6).
/// Panics on another codec: WAV has no format code for its bytes here.
pub fn wav_g711(codec: Codec, encoded: &[u8]) -> Vec<u8> {
    let format = match codec {
        Codec::Pcmu => FORMAT_ULAW,
        Codec::Pcma => FORMAT_ALAW,
        Codec::G722 | Codec::Opus => panic!("wav_g711 takes G.711, not {}", codec.encoding_name()),
    };
    wav(format, 1, 8000, 8, encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mono_pcm_file_has_the_canonical_44_byte_header() {
        let bytes = wav_pcm16(&[1, -1], 1, 8000);
        assert_eq!(bytes.len(), 44 + 4);
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            40
        );
        assert_eq!(&bytes[20..24], &[1, 0, 1, 0], "PCM, one channel");
        assert_eq!(&bytes[36..40], b"data");
        assert_eq!(&bytes[44..], &[1, 0, 0xff, 0xff]);
    }

    #[test]
    fn g711_files_carry_cb_size() {
        let bytes = wav_g711(Codec::Pcma, &[0xd5; 3]);
        assert_eq!(&bytes[16..20], &18u32.to_le_bytes(), "fmt chunk length");
        assert_eq!(&bytes[20..22], &6u16.to_le_bytes(), "A-law");
        assert_eq!(&bytes[38..42], b"data");
    }
}
