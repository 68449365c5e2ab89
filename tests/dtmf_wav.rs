//! `decode_wav_digits` and `format_report`, the library side of `sipconf dtmf
//! FILE`: WAV files of every supported kind, and the precise error for each
//! kind of file it cannot read.

use std::path::PathBuf;

use sipconf::audio::decode::DecodeError;
use sipconf::audio::wav::{decode_wav_digits, parse_wav_8k, WavError};
use sipconf::media::dtmf::{format_report, key_tones_hz};
use sipconf::media::Codec;
use sipconf_testkit::wav::{wav, wav_g711, wav_pcm16};

/// "1234#": 80 ms keys at -6 dBm0 per tone, the first at 200 ms, one every 200 ms.
fn keys_at(rate_hz: u32) -> Vec<i16> {
    let rate = f64::from(rate_hz);
    let mut samples = vec![0i16; (1.2 * rate) as usize];
    let amplitude = 22_930.0 * 10f64.powf(-6.0 / 20.0);
    for (index, digit) in "1234#".chars().enumerate() {
        let (low_hz, high_hz) = key_tones_hz(digit).expect("a key");
        let start = ((0.2 + 0.2 * index as f64) * rate) as usize;
        for n in 0..(0.08 * rate) as usize {
            let t = n as f64 / rate;
            let phase = 2.0 * std::f64::consts::PI * t;
            samples[start + n] =
                (amplitude * ((phase * low_hz).sin() + (phase * high_hz).sin())) as i16;
        }
    }
    samples
}

struct TempFile(PathBuf);

impl TempFile {
    fn with(name: &str, bytes: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("sipconf-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("write temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn check_keys(name: &str, bytes: &[u8]) {
    let file = TempFile::with(name, bytes);
    let reports = decode_wav_digits(&file.0).expect("readable");
    let text = format_report(&reports);
    println!("{name}:\n{text}");
    assert!(text.ends_with("digits: 1234#\n"), "{name}: {text}");
    for (index, report) in reports.iter().enumerate() {
        let start_ms = 200 + 200 * index as u64;
        assert!(
            report.start_ms.abs_diff(start_ms) <= 5,
            "{name}: {report:?}"
        );
        assert!(
            report.end_ms.abs_diff(start_ms + 80) <= 8,
            "{name}: {report:?}"
        );
    }
}

#[test]
fn pcm_at_any_rate_and_g711_files_give_the_keys_and_their_times() {
    for rate_hz in [8000, 11_025, 16_000, 22_050, 44_100, 48_000] {
        check_keys(
            &format!("pcm{rate_hz}.wav"),
            &wav_pcm16(&keys_at(rate_hz), 1, rate_hz),
        );
    }
    for codec in Codec::G711 {
        let pcm = keys_at(8000);
        let mut encoded = vec![0u8; pcm.len()];
        codec.encode(&pcm, &mut encoded);
        check_keys(
            &format!("{}.wav", codec.encoding_name()),
            &wav_g711(codec, &encoded),
        );
    }
}

#[test]
fn unreadable_files_give_a_precise_error() {
    let missing = std::env::temp_dir().join("sipconf-no-such-file.wav");
    let error = decode_wav_digits(&missing).expect_err("missing");
    assert!(matches!(error, WavError::Io { .. }));
    assert!(
        error.to_string().contains("sipconf-no-such-file.wav"),
        "{error}"
    );

    let text = TempFile::with("text.wav", b"this is not audio at all");
    assert!(matches!(
        decode_wav_digits(&text.0),
        Err(WavError::NotWav(_))
    ));

    let mut stereo = wav_pcm16(&[0; 100], 1, 8000);
    stereo[22] = 2;
    let stereo = TempFile::with("stereo.wav", &stereo);
    let error = decode_wav_digits(&stereo.0).expect_err("stereo");
    assert_eq!(
        error.to_string(),
        "2 channels: only mono WAV files are supported"
    );

    let truncated = TempFile::with("truncated.wav", &wav_pcm16(&[0; 100], 1, 8000)[..30]);
    assert!(matches!(
        decode_wav_digits(&truncated.0),
        Err(WavError::Decode(DecodeError::Truncated))
    ));
}

#[test]
fn pcm_at_8k_comes_back_sample_for_sample() {
    let samples = [0i16, 1, -1, 32767, -32768, 1234];
    let back = parse_wav_8k(wav_pcm16(&samples, 1, 8000)).expect("valid");
    assert_eq!(back, samples);
    // A recording of nothing reads as no samples (and so no digits).
    let empty = parse_wav_8k(wav_pcm16(&[], 1, 8000)).expect("an empty recording");
    assert!(empty.is_empty());
}

#[test]
fn files_the_command_does_not_take_get_precise_errors() {
    assert!(matches!(
        parse_wav_8k(b"hello".to_vec()),
        Err(WavError::NotWav(_))
    ));
    let mut stereo = wav_pcm16(&[0; 4], 1, 8000);
    stereo[22] = 2;
    assert!(matches!(
        parse_wav_8k(stereo),
        Err(WavError::UnsupportedChannels(2))
    ));
    let float = wav(3, 1, 8000, 32, &0.5f32.to_le_bytes().repeat(4));
    let error = parse_wav_8k(float).expect_err("32-bit float");
    assert!(
        matches!(error, WavError::UnsupportedEncoding(_)),
        "{error:?}"
    );
    let eight_bit = wav(1, 1, 8000, 8, &[128; 4]);
    let error = parse_wav_8k(eight_bit).expect_err("8-bit PCM");
    assert!(
        matches!(error, WavError::UnsupportedEncoding(_)) && error.to_string().contains("8-bit"),
        "{error}"
    );
    let no_data = wav_pcm16(&[], 1, 8000)[..36].to_vec();
    assert!(matches!(
        parse_wav_8k(no_data),
        Err(WavError::Decode(DecodeError::Truncated))
    ));
    let mp3_in_wav = wav(0x55, 1, 8000, 0, &[0; 4]);
    assert!(matches!(parse_wav_8k(mp3_in_wav), Err(WavError::NotWav(_))));
}

#[test]
fn a_recording_without_keys_reports_no_digits() {
    let silence = TempFile::with("silence.wav", &wav_pcm16(&[0; 8000], 1, 8000));
    let reports = decode_wav_digits(&silence.0).expect("readable");
    assert_eq!(format_report(&reports), "digits: \n");
}
