//! Opus through the real libopus: levels after a round trip, wideband,
//! loss concealment and FEC recovery, DTX, and hostile payloads.

use super::*;

const RATE_HZ: u32 = 16_000;
const FRAME: usize = 320;

/// Whether libopus is here. In CI (`CI` set) its absence fails the test;
/// elsewhere the test says why it skips.
fn opus_here(test: &str) -> bool {
    match available() {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: libopus is required in CI (.ci/run installs libopus0): {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// Amplitude of the `freq_hz` component of `samples` (a single-bin DFT).
fn tone_amplitude(samples: &[i16], freq_hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq_hz / RATE_HZ as f64;
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &s) in samples.iter().enumerate() {
        re += s as f64 * (w * n as f64).cos();
        im += s as f64 * (w * n as f64).sin();
    }
    2.0 * (re * re + im * im).sqrt() / samples.len() as f64
}

fn db(a: f64, b: f64) -> f64 {
    20.0 * (a / b).log10()
}

/// `frames` 20 ms frames of a sine, amplitude per frame from `amplitude(frame)`.
fn sine_frames(freq_hz: f64, frames: usize, amplitude: impl Fn(usize) -> f64) -> Vec<i16> {
    let w = 2.0 * std::f64::consts::PI * freq_hz / RATE_HZ as f64;
    (0..frames * FRAME)
        .map(|n| (amplitude(n / FRAME) * (w * n as f64).sin()).round() as i16)
        .collect()
}

/// Each frame's payload from a fresh encoder.
fn encode_all(encoder: &mut OpusEncoder, pcm: &[i16]) -> Vec<Vec<u8>> {
    pcm.chunks(FRAME)
        .map(|frame| {
            let mut out = [0u8; 1275];
            let n = encoder.encode(frame, &mut out).expect("encode");
            out[..n].to_vec()
        })
        .collect()
}

fn decode_all(packets: &[Vec<u8>]) -> Vec<i16> {
    let mut decoder = OpusDecoder::new(RATE_HZ).expect("decoder");
    let mut pcm = Vec::new();
    for packet in packets {
        let mut out = [0i16; FRAME];
        let n = decoder.decode(packet, &mut out).expect("decode");
        assert_eq!(n, FRAME);
        pcm.extend_from_slice(&out);
    }
    pcm
}

/// The level of a tone after encode and decode, in dB against the input,
/// measured on the last half second (well past the codec's delay).
fn round_trip_db(freq_hz: f64, complexity: u8) -> f64 {
    let input = sine_frames(freq_hz, 50, |_| 8000.0);
    let mut encoder = OpusEncoder::new(RATE_HZ, 32_000, complexity).expect("encoder");
    let output = decode_all(&encode_all(&mut encoder, &input));
    let tail = 25 * FRAME..;
    db(
        tone_amplitude(&output[tail.clone()], freq_hz),
        tone_amplitude(&input[tail], freq_hz),
    )
}

#[test]
fn a_1_khz_tone_comes_back_within_1_db() {
    if !opus_here("a_1_khz_tone_comes_back_within_1_db") {
        return;
    }
    for complexity in [5, 10] {
        let change = round_trip_db(1000.0, complexity);
        assert!(
            change.abs() < 1.0,
            "complexity {complexity}: {change:.2} dB"
        );
    }
}

#[test]
fn a_6_khz_tone_comes_back_within_1_db_at_16_khz() {
    if !opus_here("a_6_khz_tone_comes_back_within_1_db_at_16_khz") {
        return;
    }
    let change = round_trip_db(6000.0, 5);
    assert!(change.abs() < 1.0, "6 kHz: {change:.2} dB");
}

#[test]
fn a_lost_frame_is_concealed_and_recovered_by_fec_from_the_next_packet() {
    if !opus_here("a_lost_frame_is_concealed_and_recovered_by_fec_from_the_next_packet") {
        return;
    }
    // Quiet until frame 30, loud from there: concealment of a lost frame 30
    // can only continue the quiet tone, FEC in packet 31 carries the loud one.
    const LOST: usize = 30;
    let input = sine_frames(
        1000.0,
        40,
        |frame| if frame < LOST { 250.0 } else { 8000.0 },
    );
    let mut encoder = OpusEncoder::new(RATE_HZ, 32_000, 5).expect("encoder");
    let packets = encode_all(&mut encoder, &input);
    let reference = decode_all(&packets);
    let lost_level = tone_amplitude(&reference[LOST * FRAME..(LOST + 1) * FRAME], 1000.0);

    let mut concealing = OpusDecoder::new(RATE_HZ).expect("decoder");
    let mut recovering = OpusDecoder::new(RATE_HZ).expect("decoder");
    let mut out = [0i16; FRAME];
    for packet in &packets[..LOST] {
        concealing.decode(packet, &mut out).expect("decode");
        recovering.decode(packet, &mut out).expect("decode");
    }
    assert_eq!(concealing.conceal(&mut out), Ok(FRAME));
    let concealed_level = tone_amplitude(&out, 1000.0);
    assert_eq!(
        recovering.decode_fec(&packets[LOST + 1], &mut out),
        Ok(FRAME)
    );
    let recovered_level = tone_amplitude(&out, 1000.0);
    assert_eq!(recovering.decode(&packets[LOST + 1], &mut out), Ok(FRAME));

    let recovered_db = db(recovered_level, lost_level);
    assert!(
        recovered_db.abs() < 3.0,
        "FEC frame {recovered_db:.2} dB from the lost one"
    );
    let concealed_db = db(concealed_level, lost_level);
    assert!(
        concealed_db < -10.0,
        "concealment {concealed_db:.2} dB: FEC not proven"
    );
}

#[test]
fn without_fec_in_the_next_packet_decode_fec_still_gives_a_frame() {
    if !opus_here("without_fec_in_the_next_packet_decode_fec_still_gives_a_frame") {
        return;
    }
    let mut encoder = OpusEncoder::new(RATE_HZ, 32_000, 5).expect("encoder");
    encoder.set_expected_loss_percent(0).expect("loss");
    let packets = encode_all(&mut encoder, &sine_frames(1000.0, 10, |_| 8000.0));
    let mut decoder = OpusDecoder::new(RATE_HZ).expect("decoder");
    let mut out = [0i16; FRAME];
    decoder.decode(&packets[0], &mut out).expect("decode");
    assert_eq!(decoder.decode_fec(&packets[2], &mut out), Ok(FRAME));
}

#[test]
fn dtx_packets_decode_as_near_silence() {
    if !opus_here("dtx_packets_decode_as_near_silence") {
        return;
    }
    let mut encoder = OpusEncoder::new(RATE_HZ, 32_000, 5).expect("encoder");
    encoder.set_dtx(true).expect("dtx");
    let packets = encode_all(&mut encoder, &vec![0i16; 50 * FRAME]);
    let dtx = packets.iter().filter(|p| p.len() <= 2).count();
    assert!(dtx >= 30, "{dtx} of 50 silent frames were DTX packets");
    let mut decoder = OpusDecoder::new(RATE_HZ).expect("decoder");
    let mut out = [0i16; FRAME];
    for packet in &packets {
        assert_eq!(decoder.decode(packet, &mut out), Ok(FRAME));
        let peak = out.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!(peak < 100, "DTX frame peaks at {peak}");
    }
}

#[test]
fn hostile_payloads_are_errors_not_panics() {
    if !opus_here("hostile_payloads_are_errors_not_panics") {
        return;
    }
    let mut decoder = OpusDecoder::new(RATE_HZ).expect("decoder");
    let mut out = [0i16; FRAME];
    assert_eq!(decoder.decode(&[], &mut out), Err(OpusError::EmptyPayload));
    assert_eq!(
        decoder.decode_fec(&[], &mut out),
        Err(OpusError::EmptyPayload)
    );
    // Code 3 with no frames; code 3 claiming 63 frames of 20 ms; code 1 (two
    // equal frames) with an odd length (RFC 6716 3.2).
    for payload in [&[0x03, 0x00][..], &[0x1b, 0x3f, 0, 0], &[0x01, 0x00]] {
        let error = decoder.decode(payload, &mut out).unwrap_err();
        assert!(
            matches!(error, OpusError::Library { code: -4, .. }),
            "{payload:?}: {error}"
        );
        assert!(error.to_string().contains("corrupted"), "{error}");
    }
    // A 60 ms packet (code 3, three 20 ms SILK frames) does not fit 20 ms.
    let error = decoder
        .decode(&[0x0b, 0x03, 0, 0, 0], &mut out)
        .unwrap_err();
    assert!(
        matches!(error, OpusError::Library { code: -2, .. }),
        "{error}"
    );
    // Whatever random bytes decode to, it is a result within the buffer.
    let mut seed = 0x1234_5678_u32;
    for length in (1..400).cycle().take(2000) {
        let payload: Vec<u8> = (0..length)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 24) as u8
            })
            .collect();
        if let Ok(n) = decoder.decode(&payload, &mut out) {
            assert!(n <= FRAME);
        }
        if let Ok(n) = decoder.decode_fec(&payload, &mut out) {
            assert!(n <= FRAME);
        }
    }
    let mut short = [0i16; 100];
    assert_eq!(
        decoder.conceal(&mut short),
        Err(OpusError::OutputTooSmall {
            needed: FRAME,
            got: 100
        })
    );
}

#[test]
fn the_encoder_takes_exactly_one_20_ms_frame() {
    if !opus_here("the_encoder_takes_exactly_one_20_ms_frame") {
        return;
    }
    let mut encoder = OpusEncoder::new(RATE_HZ, 32_000, 5).expect("encoder");
    let mut out = [0u8; 1275];
    assert_eq!(
        encoder.encode(&[0; 160], &mut out),
        Err(OpusError::FrameSize {
            expected: FRAME,
            got: 160
        })
    );
    let error = encoder.encode(&[0; FRAME], &mut []).unwrap_err();
    assert!(
        matches!(error, OpusError::Library { code: -1, .. }),
        "{error}"
    );
    assert!(version().expect("version").starts_with("libopus"));
}

#[test]
fn settings_out_of_range_are_refused_by_name() {
    let refused = |result: Result<OpusEncoder, OpusError>| result.err().map(|e| e.to_string());
    assert_eq!(
        refused(OpusEncoder::new(44_100, 32_000, 5)).as_deref(),
        Some("Opus does not run at 44100 Hz (it runs at 8000, 12000, 16000, 24000 or 48000)")
    );
    assert!(
        refused(OpusEncoder::new(16_000, 32_000, 11)).is_some_and(|e| e.contains("complexity 11"))
    );
    assert!(refused(OpusEncoder::new(16_000, 1_000, 5)).is_some_and(|e| e.contains("1000 bit/s")));
    assert!(OpusDecoder::new(22_050).is_err());
}

#[test]
fn encoder_and_decoder_move_between_threads() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<OpusEncoder>();
    send_and_sync::<OpusDecoder>();
}
