//! The RFC 4733 rules of docs/dtmf.md, and the merge with in-band detection, driven
//! packet by packet on the receiver's sample clock.

use sipconf::media::dtmf::{
    key_tones_hz, DigitSource, DtmfReceiver, Rfc4733Receiver, TelephoneEvent, ToneEvent,
};

const SSRC: u32 = 0x1234_5678;

fn payload(event: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
    let mut out = [0; 4];
    TelephoneEvent {
        event,
        end,
        volume,
        duration,
    }
    .write(&mut out);
    out
}

fn drain(receiver: &mut Rfc4733Receiver) -> Vec<ToneEvent> {
    std::iter::from_fn(|| receiver.poll_event()).collect()
}

fn ends(events: &[ToneEvent]) -> Vec<(char, u64, u64)> {
    events
        .iter()
        .filter_map(|event| match *event {
            ToneEvent::End { digit, start, end } => Some((digit, start, end)),
            ToneEvent::Start { .. } => None,
        })
        .collect()
}

#[test]
fn one_press_per_ssrc_timestamp_and_event_whatever_the_sequence_numbers() {
    let mut receiver = Rfc4733Receiver::new();
    // Updates arrive out of order and duplicated; the sequence number is not even looked at.
    let packets = [
        (160u16, false),
        (480, false),
        (320, false),
        (480, false),
        (640, true),
    ];
    for (index, &(duration, end)) in packets.iter().enumerate() {
        let now = 100 + 160 * index as u64;
        receiver
            .on_packet(now, SSRC, 8000, &payload(9, end, 10, duration))
            .expect("valid");
    }
    let events = drain(&mut receiver);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(ends(&events), [('9', 100, 740)]);
    // The same key under another SSRC is another press.
    receiver
        .on_packet(2000, SSRC + 1, 8000, &payload(9, true, 10, 400))
        .expect("valid");
    assert_eq!(ends(&drain(&mut receiver)), [('9', 2000, 2400)]);
}

#[test]
fn the_three_end_packets_report_the_press_once() {
    let mut receiver = Rfc4733Receiver::new();
    receiver
        .on_packet(0, SSRC, 1000, &payload(11, false, 10, 400))
        .expect("valid");
    for repeat in 0..3 {
        receiver
            .on_packet(400 + repeat * 20, SSRC, 1000, &payload(11, true, 10, 800))
            .expect("valid");
    }
    receiver.poll_timeout(10_000);
    assert_eq!(ends(&drain(&mut receiver)), [('#', 0, 800)]);
}

#[test]
fn a_long_press_split_into_segments_is_one_press() {
    let mut receiver = Rfc4733Receiver::new();
    let first_timestamp = 50_000u32;
    let mut now = 0;
    let mut duration = 0u32;
    // First segment: updates every 400 units up to the 16-bit limit (about 8.2 s).
    while duration < 0xFFFF {
        duration = (duration + 400).min(0xFFFF);
        receiver
            .on_packet(
                now,
                SSRC,
                first_timestamp,
                &payload(0, false, 10, duration as u16),
            )
            .expect("valid");
        now += 400;
    }
    // RFC 4733 §2.5.1.3: the next segment starts at the old timestamp plus 0xFFFF.
    let second_timestamp = first_timestamp + 0xFFFF;
    for duration in [400u16, 800, 1200] {
        receiver
            .on_packet(
                now,
                SSRC,
                second_timestamp,
                &payload(0, false, 10, duration),
            )
            .expect("valid");
        now += 400;
    }
    for _ in 0..3 {
        receiver
            .on_packet(now, SSRC, second_timestamp, &payload(0, true, 10, 1600))
            .expect("valid");
    }
    let events = drain(&mut receiver);
    let starts = events
        .iter()
        .filter(|event| matches!(event, ToneEvent::Start { .. }))
        .count();
    assert_eq!(starts, 1, "{events:?}");
    assert_eq!(ends(&events), [('0', 0, 0xFFFF + 1600)]);
}

#[test]
fn lost_end_packets_end_the_press_after_three_update_intervals() {
    let mut receiver = Rfc4733Receiver::new();
    // Updates every 50 ms (400 units), then nothing: the end packets are lost.
    for (index, duration) in [400u16, 800, 1200].into_iter().enumerate() {
        receiver
            .on_packet(
                400 * index as u64,
                SSRC,
                7000,
                &payload(3, false, 10, duration),
            )
            .expect("valid");
    }
    let last_packet_at = 800;
    receiver.poll_timeout(last_packet_at + 3 * 400 - 1);
    assert!(ends(&drain(&mut receiver)).is_empty(), "ended too early");
    receiver.poll_timeout(last_packet_at + 3 * 400);
    assert_eq!(ends(&drain(&mut receiver)), [('3', 0, 1200)]);
    // A late end packet of the same press is not a new press.
    receiver
        .on_packet(3000, SSRC, 7000, &payload(3, true, 10, 1600))
        .expect("valid");
    assert!(drain(&mut receiver).is_empty());
}

#[test]
fn update_interval_is_learned_from_the_sender() {
    let mut receiver = Rfc4733Receiver::new();
    // A sender updating every 20 ms (160 units) is declared gone after 60 ms.
    for (index, duration) in [160u16, 320, 480].into_iter().enumerate() {
        receiver
            .on_packet(
                160 * index as u64,
                SSRC,
                100,
                &payload(7, false, 10, duration),
            )
            .expect("valid");
    }
    receiver.poll_timeout(320 + 479);
    assert!(ends(&drain(&mut receiver)).is_empty());
    receiver.poll_timeout(320 + 480);
    assert_eq!(ends(&drain(&mut receiver)), [('7', 0, 480)]);
}

#[test]
fn events_quieter_than_minus_55_dbm0_are_ignored() {
    let mut receiver = Rfc4733Receiver::new();
    receiver
        .on_packet(0, SSRC, 100, &payload(1, true, 56, 800))
        .expect("valid");
    receiver
        .on_packet(1000, SSRC, 2000, &payload(2, true, 55, 800))
        .expect("valid");
    assert_eq!(ends(&drain(&mut receiver)), [('2', 1000, 1800)]);
}

#[test]
fn a_short_payload_is_an_error_not_a_press() {
    let mut receiver = Rfc4733Receiver::new();
    assert!(receiver.on_packet(0, SSRC, 0, &[1, 2, 3]).is_err());
    assert!(drain(&mut receiver).is_empty());
}

/// 20 ms frames of a key's tones at -4 dBm0 (or silence for None).
fn frame(digit: Option<char>, frame_index: u64) -> [i16; 160] {
    let mut pcm = [0i16; 160];
    if let Some((low_hz, high_hz)) = digit.and_then(key_tones_hz) {
        let amplitude = 22_930.0 * 10f64.powf(-4.0 / 20.0);
        for (n, sample) in pcm.iter_mut().enumerate() {
            let t = (frame_index * 160 + n as u64) as f64 / 8000.0;
            let phase = 2.0 * std::f64::consts::PI * t;
            *sample = (amplitude * ((phase * low_hz).sin() + (phase * high_hz).sin())) as i16;
        }
    }
    pcm
}

/// Plays `frames` of audio with the key held during `key_frames`, and, if
/// `rfc4733`, the matching telephone-events; returns the presses that count.
fn play(inband: bool, rfc4733: bool, key_frames: std::ops::Range<u64>) -> Vec<(char, DigitSource)> {
    let mut receiver = DtmfReceiver::new(true);
    let mut presses = Vec::new();
    let timestamp = (key_frames.start * 160) as u32;
    for frame_index in 0..60u64 {
        let held = key_frames.contains(&frame_index);
        let audio = if inband && held { Some('5') } else { None };
        if rfc4733 && held {
            let duration = ((frame_index - key_frames.start + 1) * 160) as u16;
            let last = frame_index + 1 == key_frames.end;
            let repeats = if last { 3 } else { 1 };
            for _ in 0..repeats {
                receiver
                    .on_telephone_event(SSRC, timestamp, &payload(5, last, 10, duration))
                    .expect("valid");
            }
        }
        receiver.on_audio(&frame(audio, frame_index));
        while let Some(press) = receiver.poll_press() {
            presses.push((press.digit, press.source));
        }
    }
    presses
}

#[test]
fn a_press_sent_both_ways_counts_once_and_as_rfc4733() {
    assert_eq!(play(true, true, 5..15), [('5', DigitSource::Rfc4733)]);
}

#[test]
fn a_press_sent_one_way_counts_once_from_that_way() {
    assert_eq!(play(false, true, 5..15), [('5', DigitSource::Rfc4733)]);
    assert_eq!(play(true, false, 5..15), [('5', DigitSource::InBand)]);
}

#[test]
fn two_presses_of_one_key_far_apart_count_twice_even_when_sent_both_ways() {
    let mut receiver = DtmfReceiver::new(true);
    let mut presses = Vec::new();
    for (start, timestamp) in [(5u64, 800u32), (40, 6400)] {
        for frame_index in start..start + 8 {
            let duration = ((frame_index - start + 1) * 160) as u16;
            let last = frame_index == start + 7;
            receiver
                .on_telephone_event(SSRC, timestamp, &payload(5, last, 10, duration))
                .expect("valid");
            receiver.on_audio(&frame(Some('5'), frame_index));
            presses.extend(std::iter::from_fn(|| receiver.poll_press()));
        }
        for frame_index in start + 8..start + 35 {
            receiver.on_audio(&frame(None, frame_index));
            presses.extend(std::iter::from_fn(|| receiver.poll_press()));
        }
    }
    let digits: Vec<_> = presses
        .iter()
        .map(|press| (press.digit, press.source))
        .collect();
    assert_eq!(
        digits,
        [('5', DigitSource::Rfc4733), ('5', DigitSource::Rfc4733)]
    );
}
