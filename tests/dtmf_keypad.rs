//! The keypad table end to end through the media core, driven by explicit
//! ticks: phones send RTP (voice, in-band keys, RFC 4733 events) as
//! in-memory datagrams to the shared port, and the test listens to what
//! each phone is sent back. No socket, no sleep.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use sipconf::media::core::{Datagram, MediaCore, Port, Stream, Transmit, TICK};
use sipconf::media::dtmf::{event_code, key_tones_hz, TelephoneEvent};
use sipconf::media::rtp::{write_rtp, RtpHeader, RtpPacket};
use sipconf::media::{
    AddMember, Codec, Command, DigitSource, Event, MediaConfig, MediaStats, MemberFlags, MemberKey,
    MemberSockets,
};
use sipconf_testkit::meter::tone_power;

const FRAME: usize = 160;
const EVENT_PT: u8 = 101;
/// A talker's voice: a 300 Hz sine well above the gate (about -21 dBFS).
const VOICE_HZ: f64 = 300.0;
const VOICE_AMPLITUDE: f64 = 3000.0;
/// Each key tone at -6 dBm0.
const KEY_AMPLITUDE: f64 = 22_930.0 * 0.501;

/// What a phone puts on the wire in one 20 ms slot.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Slot20 {
    Silence,
    Sine {
        frequency_hz: f64,
        amplitude: f64,
    },
    /// A key, its tone starting this many samples into the frame.
    Key(char, usize),
}

struct Phone {
    key: MemberKey,
    /// Where the phone sends from, and the bridge sends to.
    address: SocketAddr,
    /// Datagrams sent since the last tick, for the bridge's shared port.
    outbox: Vec<Vec<u8>>,
    sequence: u16,
    timestamp: u32,
    /// What the phone sends when the test says nothing else.
    idle: Slot20,
    /// Everything the bridge sent this phone, decoded.
    heard: Vec<i16>,
}

impl Phone {
    fn send(&mut self, payload_type: u8, marker: bool, timestamp: u32, payload: &[u8]) {
        let header = RtpHeader {
            payload_type,
            marker,
            sequence: self.sequence,
            timestamp,
            ssrc: 0xD7F0 + self.key.slot,
        };
        let mut datagram = [0u8; 300];
        let len = write_rtp(&header, payload, &mut datagram).expect("fits");
        self.outbox.push(datagram[..len].to_vec());
    }

    /// One 20 ms audio packet.
    fn send_audio(&mut self, what: Slot20) {
        let mut pcm = [0i16; FRAME];
        for (n, sample) in pcm.iter_mut().enumerate() {
            let t = f64::from(self.timestamp + n as u32) / 8000.0;
            let sine = |hz: f64| (2.0 * std::f64::consts::PI * hz * t).sin();
            *sample = match what {
                Slot20::Silence => 0.0,
                Slot20::Sine {
                    frequency_hz,
                    amplitude,
                } => amplitude * sine(frequency_hz),
                Slot20::Key(digit, onset) if n >= onset => {
                    let (low_hz, high_hz) = key_tones_hz(digit).expect("a key");
                    KEY_AMPLITUDE * (sine(low_hz) + sine(high_hz))
                }
                Slot20::Key(..) => 0.0,
            } as i16;
        }
        let mut payload = [0u8; FRAME];
        Codec::Pcmu.encode(&pcm, &mut payload);
        self.send(0, false, self.timestamp, &payload);
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(FRAME as u32);
    }

    /// One telephone-event packet in this 20 ms slot; `reuse_sequence` sends it
    /// under the sequence number of the audio packet just sent (a phone sending both).
    fn send_event(&mut self, digit: char, start: u32, duration: u16, end: bool, reuse: bool) {
        let mut payload = [0u8; 4];
        TelephoneEvent {
            event: event_code(digit).expect("a key"),
            end,
            volume: 10,
            duration,
        }
        .write(&mut payload);
        if reuse {
            self.sequence = self.sequence.wrapping_sub(1);
        }
        self.send(EVENT_PT, duration == 160, start, &payload);
        self.sequence = self.sequence.wrapping_add(1);
        if !reuse {
            self.timestamp = self.timestamp.wrapping_add(FRAME as u32);
        }
    }

    /// An RTP packet the bridge sent this phone.
    fn hear(&mut self, datagram: &[u8]) {
        let packet = RtpPacket::new_checked(datagram).expect("valid RTP");
        let mut pcm = vec![0i16; packet.payload().len()];
        Codec::Pcmu.decode(packet.payload(), &mut pcm);
        self.heard.extend(pcm);
    }

    /// The last `frames` frames this phone heard.
    fn last_heard(&self, frames: usize) -> &[i16] {
        &self.heard[self.heard.len() - frames * FRAME..]
    }
}

/// How a phone presses a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    InBand,
    Rfc4733,
    /// In-band tones and RFC 4733 events for the same press.
    Both,
}

/// Which phone presses in a slot, and what it sends instead of its idle sound.
type Presser<'a> = Option<(usize, &'a dyn Fn(&mut Phone))>;

struct Room {
    core: MediaCore,
    start: Instant,
    ticks: u32,
    phones: Vec<Phone>,
    seen: Vec<Event>,
}

impl Room {
    fn new(members: usize, keypad: bool, gate_hangover_frames: u32) -> Self {
        let config = MediaConfig {
            max_members: members,
            gate_hangover_frames,
            event_queue_len: 256,
            ..MediaConfig::default()
        };
        let mut core = MediaCore::new(config, Arc::new(MediaStats::default()));
        let start = Instant::now();
        let mut phones = Vec::new();
        for slot in 0..members as u32 {
            let key = MemberKey {
                slot,
                generation: 1,
            };
            let address = SocketAddr::from(([192, 0, 2, 10 + slot as u8], 4000));
            let add = AddMember {
                key,
                mix: 0,
                remote_rtp: address,
                remote_rtcp: SocketAddr::from(([192, 0, 2, 10 + slot as u8], 4001)),
                signalling_ip: None,
                sockets: MemberSockets::Shared,
                codec: Codec::Pcmu,
                payload_type: 0,
                telephone_event_pt: Some(EVENT_PT),
                telephone_event_rate_hz: 8000,
                flags: MemberFlags::default(),
                keypad,
                opus: None,
                srtp: None,
                link: false,
            };
            core.command(
                Command::AddMember(Box::new(add)),
                start,
                0,
                &mut |_: Transmit<'_>| {},
            );
            phones.push(Phone {
                key,
                address,
                outbox: Vec::new(),
                sequence: 1000 * slot as u16,
                timestamp: 80_000 * slot,
                idle: Slot20::Silence,
                heard: Vec::new(),
            });
        }
        Room {
            core,
            start,
            ticks: 0,
            phones,
            seen: Vec::new(),
        }
    }

    /// One 20 ms slot: every phone sends (the presser as told, the rest their
    /// idle sound), then the core ticks and the phones hear what it sent.
    fn slot(&mut self, presser: Presser) {
        for index in 0..self.phones.len() {
            match presser {
                Some((who, send)) if who == index => send(&mut self.phones[index]),
                _ => {
                    let idle = self.phones[index].idle;
                    self.phones[index].send_audio(idle);
                }
            }
        }
        let now = self.start + TICK * self.ticks;
        for phone in &mut self.phones {
            for datagram in phone.outbox.drain(..) {
                let datagram = Datagram {
                    port: Port::Shared,
                    stream: Stream::Rtp,
                    source: phone.address,
                    contents: &datagram,
                };
                self.core.receive(datagram, now);
            }
        }
        let phones = &mut self.phones;
        self.core.tick(now, 0, &mut |t: Transmit<'_>| {
            if t.stream == Stream::Rtp {
                assert_eq!(t.destination, phones[t.member.slot as usize].address);
                phones[t.member.slot as usize].hear(t.contents);
            }
        });
        self.ticks += 1;
        while let Some(event) = self.core.poll_event() {
            self.seen.push(event);
        }
    }

    fn idle(&mut self, slots: usize) {
        for _ in 0..slots {
            self.slot(None);
        }
    }

    /// Presses `digit` on phone `who` for 100 ms, then 60 ms of silence
    /// (phones mute the microphone around a key), then waits out the merge.
    fn press(&mut self, who: usize, digit: char, way: Way) {
        self.press_from(who, digit, way, 0);
    }

    /// `press`, with the key's tone starting `onset` samples into its first frame.
    fn press_from(&mut self, who: usize, digit: char, way: Way, onset: usize) {
        let start = self.phones[who].timestamp;
        let on_slots = 5u16;
        for slot in 0..on_slots {
            let duration = (slot + 1) * FRAME as u16;
            let tone = Slot20::Key(digit, if slot == 0 { onset } else { 0 });
            self.slot(Some((who, &|phone: &mut Phone| match way {
                Way::InBand => phone.send_audio(tone),
                Way::Rfc4733 => phone.send_event(digit, start, duration, false, false),
                Way::Both => {
                    phone.send_audio(tone);
                    phone.send_event(digit, start, duration, false, true);
                }
            })));
        }
        // RFC 4733 §2.5.1.4: the end packet three times.
        for _ in 0..3 {
            let duration = on_slots * FRAME as u16;
            self.slot(Some((who, &|phone: &mut Phone| match way {
                Way::InBand => phone.send_audio(Slot20::Silence),
                Way::Rfc4733 => phone.send_event(digit, start, duration, true, false),
                Way::Both => {
                    phone.send_audio(Slot20::Silence);
                    phone.send_event(digit, start, duration, true, true);
                }
            })));
        }
        // In-band presses on a phone that offered RFC 4733 wait 200 ms for a twin.
        self.idle(14);
    }

    fn digits(&self) -> Vec<(MemberKey, char, DigitSource)> {
        self.seen
            .iter()
            .filter_map(|event| match *event {
                Event::Digit {
                    key, digit, source, ..
                } => Some((key, digit, source)),
                _ => None,
            })
            .collect()
    }
}

fn db(ratio: f64) -> f64 {
    10.0 * ratio.log10()
}

/// The power of the 300 Hz voice in what phone `listener` hears, once any
/// confirmation tone is over.
fn voice_level(room: &mut Room, listener: usize) -> f64 {
    room.idle(20);
    tone_power(room.phones[listener].last_heard(10), VOICE_HZ)
}

fn voice() -> Slot20 {
    Slot20::Sine {
        frequency_hz: VOICE_HZ,
        amplitude: VOICE_AMPLITUDE,
    }
}

/// Presses `digit` on phone 0 `times` times and checks, after each, the
/// change in dB of what `measure` returns against its value before.
fn steps_of(
    room: &mut Room,
    digit: char,
    way: Way,
    measure: &dyn Fn(&mut Room) -> f64,
    expected_db: &[f64],
) {
    let before = measure(room);
    for (press, &expected) in expected_db.iter().enumerate() {
        room.press(0, digit, way);
        let change = db(measure(room) / before);
        println!("key {digit} press {}: {change:+.2} dB", press + 1);
        assert!(
            (change - expected).abs() <= 0.5,
            "key {digit} press {}: {change:+.2} dB, expected {expected:+} dB",
            press + 1
        );
    }
}

#[test]
fn key_three_raises_the_level_others_hear_by_3_db_up_to_plus_12() {
    for way in [Way::InBand, Way::Rfc4733] {
        let mut room = Room::new(2, true, 10);
        room.phones[0].idle = voice();
        room.idle(10);
        steps_of(
            &mut room,
            '3',
            way,
            &|room| voice_level(room, 1),
            &[3.0, 6.0, 9.0, 12.0, 12.0],
        );
    }
}

#[test]
fn key_one_lowers_the_level_others_hear_by_3_db_down_to_minus_12_and_two_resets() {
    let mut room = Room::new(2, true, 10);
    room.phones[0].idle = voice();
    room.idle(10);
    let measure = |room: &mut Room| voice_level(room, 1);
    steps_of(
        &mut room,
        '1',
        Way::Rfc4733,
        &measure,
        &[-3.0, -6.0, -9.0, -12.0, -12.0],
    );
    let before = measure(&mut room);
    room.press(0, '2', Way::InBand);
    assert!((db(measure(&mut room) / before) - 12.0).abs() <= 0.5);
}

#[test]
fn keys_four_five_six_move_what_the_presser_hears() {
    let mut room = Room::new(2, true, 10);
    room.phones[1].idle = voice();
    room.idle(10);
    let measure = |room: &mut Room| voice_level(room, 0);
    steps_of(
        &mut room,
        '6',
        Way::InBand,
        &measure,
        &[3.0, 6.0, 9.0, 12.0, 12.0],
    );
    let at_plus_12 = measure(&mut room);
    room.press(0, '5', Way::Rfc4733);
    assert!((db(measure(&mut room) / at_plus_12) + 12.0).abs() <= 0.5);
    steps_of(
        &mut room,
        '4',
        Way::Rfc4733,
        &measure,
        &[-3.0, -6.0, -9.0, -12.0, -12.0],
    );
}

#[test]
fn the_fifth_press_past_a_limit_answers_with_the_at_limit_tone() {
    let mut room = Room::new(2, true, 10);
    for _ in 0..4 {
        room.press(0, '3', Way::Rfc4733);
    }
    let heard_before = room.phones[0].heard.len();
    room.press(0, '3', Way::Rfc4733);
    let answer = &room.phones[0].heard[heard_before..];
    // At-limit is three 400 Hz pips; "up" would rise 660 -> 990 Hz.
    assert!(tone_power(answer, 400.0) > 100.0 * tone_power(answer, 660.0));
    assert!(tone_power(answer, 400.0) > 100.0 * tone_power(answer, 990.0));
}

/// Whether phone 1 hears phone 0's voice (its level well above silence).
fn heard_by_listener(room: &mut Room) -> bool {
    room.idle(10);
    tone_power(room.phones[1].last_heard(5), 1000.0) > 1e8
}

#[test]
fn keys_seven_eight_nine_move_the_gate_for_a_quiet_talker() {
    // The gate opens at -50 dBFS (MediaConfig default); no hangover, so it follows the level.
    let mut room = Room::new(2, true, 0);
    let at_dbfs = |level: f64| Slot20::Sine {
        frequency_hz: 1000.0,
        amplitude: 32767.0 * 10f64.powf(level / 20.0) * std::f64::consts::SQRT_2,
    };
    // A talker 1.5 dB under the threshold is cut until 7 lowers it by 3 dB.
    room.phones[0].idle = at_dbfs(-51.5);
    assert!(!heard_by_listener(&mut room), "cut at the default gate");
    room.press(0, '7', Way::Rfc4733);
    room.phones[0].idle = at_dbfs(-51.5);
    assert!(
        heard_by_listener(&mut room),
        "let through one step more sensitive"
    );
    room.phones[0].idle = Slot20::Silence;
    room.press(0, '8', Way::Rfc4733);
    room.phones[0].idle = at_dbfs(-51.5);
    assert!(!heard_by_listener(&mut room), "cut again after reset");
    // A talker 1.5 dB over the threshold is heard until 9 raises it by 3 dB.
    room.phones[0].idle = at_dbfs(-48.5);
    assert!(heard_by_listener(&mut room), "heard at the default gate");
    room.phones[0].idle = Slot20::Silence;
    room.press(0, '9', Way::InBand);
    room.phones[0].idle = at_dbfs(-48.5);
    assert!(!heard_by_listener(&mut room), "cut one step less sensitive");
    // Four steps each way, then the limit.
    room.phones[0].idle = Slot20::Silence;
    for _ in 0..3 {
        room.press(0, '9', Way::Rfc4733);
    }
    let heard_before = room.phones[0].heard.len();
    room.press(0, '9', Way::Rfc4733);
    let answer = &room.phones[0].heard[heard_before..];
    assert!(tone_power(answer, 400.0) > 100.0 * tone_power(answer, 660.0));
}

fn flags_changes(room: &Room) -> Vec<MemberFlags> {
    room.seen
        .iter()
        .filter_map(|event| match *event {
            Event::FlagsChanged { flags, .. } => Some(flags),
            _ => None,
        })
        .collect()
}

#[test]
fn key_zero_toggles_mute_and_reports_it() {
    let mut room = Room::new(2, true, 10);
    room.phones[0].idle = voice();
    let speaking = voice_level(&mut room, 1);
    room.press(0, '0', Way::InBand);
    assert!(
        voice_level(&mut room, 1) < speaking / 1e4,
        "muted is not heard"
    );
    room.press(0, '0', Way::Rfc4733);
    assert!(db(voice_level(&mut room, 1) / speaking).abs() < 0.5);
    let muted = MemberFlags {
        muted: true,
        ..MemberFlags::default()
    };
    assert_eq!(flags_changes(&room), [muted, MemberFlags::default()]);
}

#[test]
fn star_deafens_and_mutes_and_a_second_star_restores_both() {
    let mut room = Room::new(2, true, 10);
    room.phones[0].idle = voice();
    room.phones[1].idle = Slot20::Sine {
        frequency_hz: 1400.0,
        amplitude: VOICE_AMPLITUDE,
    };
    room.idle(10);
    let hears_other = |room: &mut Room| {
        room.idle(20);
        tone_power(room.phones[0].last_heard(5), 1400.0)
    };
    let normally = hears_other(&mut room);
    let speaking = voice_level(&mut room, 1);
    room.press(0, '*', Way::Rfc4733);
    assert!(
        hears_other(&mut room) < normally / 1e4,
        "deaf hears nothing"
    );
    assert!(
        voice_level(&mut room, 1) < speaking / 1e4,
        "muted is not heard"
    );
    room.press(0, '*', Way::InBand);
    assert!(db(hears_other(&mut room) / normally).abs() < 0.5);
    assert!(db(voice_level(&mut room, 1) / speaking).abs() < 0.5);
    let both = MemberFlags {
        muted: true,
        deaf: true,
        held: false,
    };
    assert_eq!(flags_changes(&room), [both, MemberFlags::default()]);
}

#[test]
fn hash_asks_the_app_to_hang_up() {
    let mut room = Room::new(2, true, 10);
    room.press(0, '#', Way::InBand);
    let key = room.phones[0].key;
    assert!(room.seen.contains(&Event::Leave { key }), "{:?}", room.seen);
}

#[test]
fn a_press_counts_once_in_band_as_rfc4733_and_sent_both_ways() {
    let mut room = Room::new(2, true, 10);
    room.press(0, '6', Way::InBand);
    room.press(0, '6', Way::Rfc4733);
    room.press(0, '6', Way::Both);
    let key = room.phones[0].key;
    assert_eq!(
        room.digits(),
        [
            (key, '6', DigitSource::InBand),
            (key, '6', DigitSource::Rfc4733),
            (key, '6', DigitSource::Rfc4733)
        ]
    );
    // Three receive-gain steps, one per press.
    let mut reference = Room::new(2, true, 10);
    reference.phones[1].idle = voice();
    room.phones[1].idle = voice();
    let normal = voice_level(&mut reference, 0);
    assert!((db(voice_level(&mut room, 0) / normal) - 9.0).abs() <= 0.5);
}

#[test]
fn only_the_presser_hears_the_confirmation_and_others_at_most_20_ms_of_the_key() {
    // The key may start anywhere in a frame; the receiver's windows fall anywhere too.
    for (way, onset) in [
        (Way::InBand, 0),
        (Way::InBand, 40),
        (Way::InBand, 80),
        (Way::InBand, 120),
        (Way::InBand, 150),
        (Way::Both, 100),
    ] {
        let mut room = Room::new(3, true, 10);
        room.phones[0].idle = voice();
        room.idle(10);
        let heard_before: Vec<usize> = room.phones.iter().map(|phone| phone.heard.len()).collect();
        room.press_from(0, '3', way, onset);
        room.idle(10);
        let (low_hz, high_hz) = key_tones_hz('3').expect("a key");
        // The confirmation ("up": 660 then 990 Hz). The presser never hears
        // its own key; listeners are looked at from the tenth frame on, past
        // the key and any bleed of it, whose edges spread into every band.
        let presser = &room.phones[0].heard[heard_before[0]..];
        let confirmation = tone_power(presser, 990.0);
        assert!(confirmation > 1e10, "{way:?}: the presser hears it");
        for (listener, &before) in heard_before.iter().enumerate().skip(1) {
            let after_key = &room.phones[listener].heard[before + 10 * FRAME..];
            assert!(
                tone_power(after_key, 990.0) < confirmation / 1e3,
                "{way:?} from {onset}: listener {listener} hears the confirmation"
            );
            let heard = &room.phones[listener].heard[before..];
            // Samples of the key in each 20 ms frame: a tone of peak A over k
            // samples has Goertzel power (k*A/2)^2 per frequency.
            let key_samples: f64 = heard
                .chunks(FRAME)
                .map(|frame| {
                    let power = (tone_power(frame, low_hz) + tone_power(frame, high_hz)) / 2.0;
                    2.0 * power.sqrt() / KEY_AMPLITUDE
                })
                .sum();
            let bleed_ms = key_samples / 8.0;
            println!("{way:?} from sample {onset}: listener {listener} heard {bleed_ms:.1} ms of the key");
            assert!(
                bleed_ms <= 20.0,
                "{way:?} from {onset}: listener {listener}: {bleed_ms:.1} ms"
            );
        }
    }
}

#[test]
fn passthru_reports_the_digit_and_changes_nothing() {
    let mut room = Room::new(2, false, 10);
    room.phones[0].idle = voice();
    let before = voice_level(&mut room, 1);
    let heard_before = room.phones[0].heard.len();
    room.press(0, '3', Way::InBand);
    room.press(0, '0', Way::Rfc4733);
    room.press(0, '#', Way::Rfc4733);
    assert!(db(voice_level(&mut room, 1) / before).abs() < 0.5);
    let key = room.phones[0].key;
    assert_eq!(
        room.digits(),
        [
            (key, '3', DigitSource::InBand),
            (key, '0', DigitSource::Rfc4733),
            (key, '#', DigitSource::Rfc4733)
        ]
    );
    assert!(flags_changes(&room).is_empty());
    assert!(!room.seen.contains(&Event::Leave { key }));
    let after = &room.phones[0].heard[heard_before..];
    assert!(tone_power(after, 990.0) < 1e6, "no confirmation tone");
}

/// Ticks after the one a talker's first voiced frame arrived in until
/// `listener` hears it (the voice's first frame above a -40 dB floor).
fn voice_arrival_ticks(room: &mut Room, talker: usize, listener: usize) -> usize {
    room.phones[talker].idle = Slot20::Silence;
    room.idle(10);
    let before = room.phones[listener].heard.len();
    room.phones[talker].idle = voice();
    room.idle(6);
    room.phones[talker].idle = Slot20::Silence;
    let heard = &room.phones[listener].heard[before..];
    let floor = tone_power(&vec![VOICE_AMPLITUDE as i16; FRAME], 0.0) * 1e-4;
    heard
        .chunks(FRAME)
        .position(|frame| tone_power(frame, VOICE_HZ) > floor)
        .expect("the voice is heard")
}

/// docs/dtmf.md's bleed rule costs a frame of delay only from a suspected key to
/// the next pause: before and after, a talker is heard in the very tick its
/// frame arrives.
#[test]
fn a_talker_is_heard_on_time_before_and_after_a_key() {
    let mut room = Room::new(3, true, 10);
    assert_eq!(voice_arrival_ticks(&mut room, 0, 1), 0, "before any key");
    room.phones[0].idle = voice();
    room.idle(5);
    room.press_from(0, '5', Way::InBand, 0);
    assert_eq!(
        voice_arrival_ticks(&mut room, 0, 1),
        0,
        "after the key's pause"
    );
    assert_eq!(voice_arrival_ticks(&mut room, 0, 2), 0, "for everyone");
}

#[test]
fn others_hear_at_most_20_ms_of_any_key_wherever_it_starts() {
    for digit in ['1', '5', '9', '0', '*', '#'] {
        for onset in [0, 60, 110, 159] {
            let mut room = Room::new(2, false, 10);
            room.phones[0].idle = voice();
            room.idle(10);
            let before = room.phones[1].heard.len();
            room.press_from(0, digit, Way::InBand, onset);
            let (low_hz, high_hz) = key_tones_hz(digit).expect("a key");
            let key_samples: f64 = room.phones[1].heard[before..]
                .chunks(FRAME)
                .map(|frame| {
                    let power = (tone_power(frame, low_hz) + tone_power(frame, high_hz)) / 2.0;
                    2.0 * power.sqrt() / KEY_AMPLITUDE
                })
                .sum();
            let bleed_ms = key_samples / 8.0;
            assert!(
                bleed_ms <= 20.0,
                "{digit} from sample {onset}: {bleed_ms:.1} ms heard"
            );
            assert!(
                room.digits().iter().any(|&(_, d, _)| d == digit),
                "{digit} from {onset} counted"
            );
        }
    }
}
