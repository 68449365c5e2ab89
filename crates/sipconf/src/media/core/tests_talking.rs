//! Who is talking, and how well a member's stream arrives (issue 17, part
//! 6): the timing `Event::Talking` keeps against speech and silence, with
//! the shipped gate settings, and the reception figures published for the API.

use super::*;

/// `media.gate_threshold_dbfs` and `media.gate_hangover_ms` as shipped.
fn shipped_gate() -> MediaConfig {
    MediaConfig {
        max_members: 2,
        gate_threshold_dbfs: -55.0,
        gate_hangover_frames: crate::media::hangover_frames(Duration::from_millis(200)),
        jitter_frames: 1,
        ..MediaConfig::default()
    }
}

/// A sound of a phone, frame by frame: `frame(n)` is its `n`th 20 ms.
type Source = dyn Fn(u32) -> [i16; FRAME];

/// White noise at an RMS of `rms` (xorshift, so a run repeats).
fn noise(rms: f64, seed: u32) -> impl Fn(u32) -> [i16; FRAME] {
    move |n| {
        let mut state = seed ^ n.wrapping_mul(0x9E37_79B9) | 1;
        let mut pcm = [0i16; FRAME];
        for sample in pcm.iter_mut() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            // Uniform in [-1, 1) has an RMS of 1/sqrt(3).
            let uniform = f64::from(state) / f64::from(u32::MAX) * 2.0 - 1.0;
            *sample = (uniform * rms * 3f64.sqrt()) as i16;
        }
        pcm
    }
}

/// Syllables: 300 Hz bursts of 180 ms at about -21 dBFS with 60 ms between
/// them (shorter than the hangover: one talk spurt).
fn syllables(n: u32) -> [i16; FRAME] {
    if n % 12 >= 9 {
        return [0; FRAME];
    }
    frame_of(Sound::Sine(VOICE_HZ), n * FRAME as u32)
}

fn rms_at(dbfs: f64) -> f64 {
    32767.0 * 10f64.powf(dbfs / 20.0)
}

/// Phone 0 sends `speech` for `speech_frames`, then `after` for 40 frames;
/// returns the frame (counted from speech's first) of each talking change.
fn talking_changes(speech: &Source, speech_frames: u32, after: &Source) -> Vec<(u32, bool)> {
    let mut room = Room::new(shipped_gate());
    room.add(MemberFlags::default(), true);
    let mut changes = Vec::new();
    for frame in 0..speech_frames + 40 {
        let pcm = if frame < speech_frames {
            speech(frame)
        } else {
            after(frame - speech_frames)
        };
        send_pcm(&mut room, 0, &pcm);
        room.tick();
        for event in room.events.drain(..) {
            if let Event::Talking { talking, .. } = event {
                changes.push((frame, talking));
            }
        }
    }
    changes
}

/// Phone `who` sends one frame of `pcm`, as `Room::send` does for a `Sound`.
fn send_pcm(room: &mut Room, who: usize, pcm: &[i16; FRAME]) {
    let phone = &mut room.phones[who];
    let mut payload = [0u8; FRAME];
    Codec::Pcmu.encode(pcm, &mut payload);
    let datagram = rtp(0, phone.sequence, phone.timestamp, &payload);
    phone.sequence = phone.sequence.wrapping_add(1);
    phone.timestamp = phone.timestamp.wrapping_add(FRAME as u32);
    let source = phone.address;
    room.receive_from(source, &datagram);
}

#[test]
fn speech_starts_talking_within_two_frames_and_silence_ends_it_within_twelve() {
    let silence = |_| [0i16; FRAME];
    let speech_noise = noise(rms_at(-26.0), 7);
    for (name, speech) in [
        ("noise at -26 dBFS", &speech_noise as &Source),
        ("syllables", &syllables as &Source),
    ] {
        // 57 frames of speech (the last a loud frame for both), then silence.
        let changes = talking_changes(speech, 57, &silence);
        let [(start, true), (stop, false)] = changes[..] else {
            panic!("{name}: {changes:?}");
        };
        // The jitter buffer plays a frame one tick after it came (1 frame),
        // and the gate opens on the first loud frame: under 100 ms.
        assert!(start <= 1, "{name}: talking at frame {start}");
        // Silence from frame 57 (played at 58): the 200 ms hangover holds
        // 10 frames, the 11th closes: under 300 ms.
        let after_end = stop - 57;
        assert!(
            after_end <= 12,
            "{name}: still talking {after_end} frames on"
        );
        assert!(after_end >= 10, "{name}: the hangover was cut short");
    }
}

#[test]
fn line_noise_under_the_threshold_never_starts_talking() {
    let silence = |_| [0i16; FRAME];
    // -65 dBFS: well under the gate; -58 dBFS: 3 dB under it.
    for dbfs in [-65.0, -58.0] {
        let line = noise(rms_at(dbfs), 3);
        assert_eq!(talking_changes(&line, 200, &silence), [], "{dbfs} dBFS");
    }
}

#[test]
fn line_noise_just_under_the_threshold_after_speech_does_not_hold_talking() {
    // What follows the words is not digital silence but line noise 3 dB
    // under the opening level: it must end the talk spurt like silence.
    let speech = noise(rms_at(-26.0), 11);
    let line = noise(rms_at(-58.0), 5);
    let changes = talking_changes(&speech, 30, &line);
    let [(0, true), (stop, false)] = changes[..] else {
        panic!("{changes:?}");
    };
    assert!(stop - 30 <= 12, "still talking {} frames on", stop - 30);
}

#[test]
fn a_member_whose_phone_skips_packets_is_published_with_those_lost() {
    let mut room = Room::new(shipped_gate());
    let key = room.add(MemberFlags::default(), true);
    let tone = frame_of(Sound::Sine(VOICE_HZ), 0);
    let mut skipped = 0;
    for frame in 0..120u32 {
        if frame % 10 == 5 {
            // Lost on the way: the phone's sequence and clock move on.
            let phone = &mut room.phones[0];
            phone.sequence = phone.sequence.wrapping_add(1);
            phone.timestamp = phone.timestamp.wrapping_add(FRAME as u32);
            skipped += 1;
        } else {
            send_pcm(&mut room, 0, &tone);
        }
        room.tick();
    }
    let quality = room
        .stats
        .member_quality
        .read(key)
        .expect("published within a second");
    // Published at most a second ago: the losses until then.
    assert!(quality.packets_lost >= skipped - 6 && quality.packets_lost <= skipped);
    assert!(quality.packets_received >= 60);
    // One packet a tick, read at the tick: no jitter.
    assert_eq!(quality.jitter_us, 0);
}
