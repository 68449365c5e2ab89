//! The tick's kernels on in-memory datagrams at explicit instants: phones are
//! addresses and byte vectors, the clock is `start + TICK * n`, nothing
//! sleeps and no socket is opened.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::media::codec::Codec;
use crate::media::dtmf::{event_code, key_tones_hz, TelephoneEvent};
use crate::media::latch::LEARN_RUN;
use crate::media::rtp::{check_rtcp, write_rtcp_report, write_rtp, RtpHeader, RtpPacket};
use crate::media::slot::LONE_KEEPALIVE_TICKS;
use crate::media::{DigitSource, MemberFlags};

const FRAME: usize = 160;
const EVENT_PT: u8 = 101;
/// A voice: a 300 Hz sine well above the gate (about -21 dBFS).
const VOICE_HZ: f64 = 300.0;
const VOICE_AMPLITUDE: f64 = 3000.0;
/// Each key tone at -6 dBm0.
const KEY_AMPLITUDE: f64 = 22_930.0 * 0.501;

/// What a phone puts in one 20 ms frame.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sound {
    Silence,
    Sine(f64),
    /// A key's two tones.
    Key(char),
}

/// A phone: an address, its RTP stream, and everything the bridge sent it.
struct Phone {
    key: MemberKey,
    address: SocketAddr,
    sequence: u16,
    timestamp: u32,
    /// Decoded audio of every RTP packet it was sent.
    heard: Vec<i16>,
    /// (marker, sequence, timestamp, destination) of every RTP packet.
    packets: Vec<(bool, u16, u32, SocketAddr)>,
    /// Every RTCP packet it was sent.
    rtcp: Vec<Vec<u8>>,
}

/// A bridge core and its phones, on a fake clock.
struct Room {
    core: MediaCore,
    stats: Arc<MediaStats>,
    start: Instant,
    ticks: u32,
    phones: Vec<Phone>,
    events: Vec<Event>,
}

fn phone_address(slot: u32) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10 + slot as u8], 4000))
}

impl Room {
    fn new(config: MediaConfig) -> Room {
        let stats = Arc::new(MediaStats::default());
        let mut core = MediaCore::new(config, Arc::clone(&stats));
        core.seed(14);
        Room {
            core,
            stats,
            start: Instant::now(),
            ticks: 0,
            phones: Vec::new(),
            events: Vec::new(),
        }
    }

    fn with_members(members: usize) -> Room {
        Room::new(MediaConfig {
            max_members: members.max(1),
            ..MediaConfig::default()
        })
    }

    fn now(&self) -> Instant {
        self.start + TICK * self.ticks
    }

    /// Adds a member on the shared port whose phone sends from where its SDP said.
    fn add(&mut self, flags: MemberFlags, keypad: bool) -> MemberKey {
        let slot = self.phones.len() as u32;
        self.add_at(slot, phone_address(slot), flags, keypad)
    }

    /// Adds a member whose SDP names `sdp_rtp`; its phone sends from
    /// `phone_address(slot)` all the same.
    fn add_at(
        &mut self,
        slot: u32,
        sdp_rtp: SocketAddr,
        flags: MemberFlags,
        keypad: bool,
    ) -> MemberKey {
        self.add_member(slot, sdp_rtp, flags, keypad, false)
    }

    /// Adds a cascade link (no keys, no gate) on the shared port.
    fn add_link(&mut self) -> MemberKey {
        let slot = self.phones.len() as u32;
        let address = phone_address(slot);
        self.add_member(slot, address, MemberFlags::default(), false, true)
    }

    fn add_member(
        &mut self,
        slot: u32,
        sdp_rtp: SocketAddr,
        flags: MemberFlags,
        keypad: bool,
        link: bool,
    ) -> MemberKey {
        let key = MemberKey {
            slot,
            generation: 1,
        };
        let add = AddMember {
            key,
            mix: 0,
            sockets: MemberSockets::Shared,
            remote_rtp: sdp_rtp,
            remote_rtcp: SocketAddr::new(sdp_rtp.ip(), sdp_rtp.port() + 1),
            signalling_ip: Some(sdp_rtp.ip()),
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event_pt: Some(EVENT_PT),
            telephone_event_rate_hz: 8000,
            flags,
            keypad,
            opus: None,
            srtp: None,
            link,
        };
        let applied = self.command(Command::AddMember(Box::new(add)));
        assert!(matches!(applied, Applied::Started { key: started, .. } if started == key));
        self.phones.push(Phone {
            key,
            address: phone_address(slot),
            sequence: 1000 * slot as u16,
            timestamp: 80_000 * slot,
            heard: Vec::new(),
            packets: Vec::new(),
            rtcp: Vec::new(),
        });
        key
    }

    fn command(&mut self, command: Command) -> Applied {
        let now = self.now();
        let Room { core, phones, .. } = self;
        core.command(command, now, 0, &mut |t: Transmit<'_>| deliver(phones, t))
    }

    /// A datagram to the shared RTP port from `source`.
    fn receive_from(&mut self, source: SocketAddr, datagram: &[u8]) {
        let datagram = Datagram {
            port: Port::Shared,
            stream: Stream::Rtp,
            source,
            contents: datagram,
        };
        self.core.receive(datagram, self.now());
    }

    /// Phone `who` sends one 20 ms frame of `sound`.
    fn send(&mut self, who: usize, sound: Sound) {
        let phone = &mut self.phones[who];
        let pcm = frame_of(sound, phone.timestamp);
        let mut payload = [0u8; FRAME];
        Codec::Pcmu.encode(&pcm, &mut payload);
        let datagram = rtp(0, phone.sequence, phone.timestamp, &payload);
        phone.sequence = phone.sequence.wrapping_add(1);
        phone.timestamp = phone.timestamp.wrapping_add(FRAME as u32);
        let source = phone.address;
        self.receive_from(source, &datagram);
    }

    /// Phone `who` sends one RFC 4733 packet of a press that began at `start`.
    fn send_event(&mut self, who: usize, digit: char, start: u32, duration: u16, end: bool) {
        let phone = &mut self.phones[who];
        let mut payload = [0u8; 4];
        TelephoneEvent {
            event: event_code(digit).expect("a key"),
            end,
            volume: 10,
            duration,
        }
        .write(&mut payload);
        let datagram = rtp(EVENT_PT, phone.sequence, start, &payload);
        phone.sequence = phone.sequence.wrapping_add(1);
        phone.timestamp = phone.timestamp.wrapping_add(FRAME as u32);
        let source = phone.address;
        self.receive_from(source, &datagram);
    }

    /// One tick at the room's clock; what the core sends reaches the phones.
    fn tick(&mut self) {
        let now = self.now();
        let Room {
            core,
            phones,
            events,
            ..
        } = self;
        core.tick(now, 0, &mut |t: Transmit<'_>| deliver(phones, t));
        while let Some(event) = core.poll_event() {
            events.push(event);
        }
        self.ticks += 1;
    }

    /// `ticks` ticks, each with every phone sending what `sounds` says first.
    fn run(&mut self, sounds: &[Sound], ticks: u32) {
        for _ in 0..ticks {
            for (who, &sound) in sounds.iter().enumerate() {
                self.send(who, sound);
            }
            self.tick();
        }
    }

    /// Phone `who` presses `digit` in-band for 100 ms, then 60 ms of silence,
    /// then `after` ticks of silence; the others keep sending `others`.
    fn press_in_band(&mut self, who: usize, digit: char, others: Sound, after: u32) {
        let mut sounds = vec![others; self.phones.len()];
        sounds[who] = Sound::Key(digit);
        self.run(&sounds, 5);
        sounds[who] = Sound::Silence;
        self.run(&sounds, 3 + after);
    }

    /// Phone `who` presses `digit` as RFC 4733 events for 100 ms (three end
    /// packets), then waits `after` ticks; the others keep sending `others`.
    fn press_rfc4733(&mut self, who: usize, digit: char, others: Sound, after: u32) {
        let start = self.phones[who].timestamp;
        for frame in 1..=8u16 {
            let duration = frame.min(5) * FRAME as u16;
            self.send_event(who, digit, start, duration, frame > 5);
            for other in (0..self.phones.len()).filter(|&other| other != who) {
                self.send(other, others);
            }
            self.tick();
        }
        let mut sounds = vec![others; self.phones.len()];
        sounds[who] = Sound::Silence;
        self.run(&sounds, after);
    }

    fn counter(&self, counter: impl Fn(&MediaStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        counter(&self.stats).load(Ordering::Relaxed)
    }
}

/// Hands a datagram from the core to the phone it is for.
fn deliver(phones: &mut [Phone], t: Transmit<'_>) {
    let Some(phone) = phones.iter_mut().find(|phone| phone.key == t.member) else {
        return;
    };
    match t.stream {
        Stream::Rtp => {
            let packet = RtpPacket::new_checked(t.contents).expect("the core sends valid RTP");
            let mut pcm = vec![0i16; packet.payload().len()];
            Codec::Pcmu.decode(packet.payload(), &mut pcm);
            phone.heard.extend(pcm);
            phone.packets.push((
                packet.marker(),
                packet.sequence(),
                packet.timestamp(),
                t.destination,
            ));
        }
        Stream::Rtcp => phone.rtcp.push(t.contents.to_vec()),
    }
}

fn rtp(payload_type: u8, sequence: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
    let header = RtpHeader {
        payload_type,
        marker: false,
        sequence,
        timestamp,
        ssrc: 0xD7F0 + u32::from(sequence / 1000),
    };
    let mut datagram = vec![0u8; 12 + payload.len()];
    write_rtp(&header, payload, &mut datagram).expect("fits");
    datagram
}

/// One frame of `sound` starting at RTP timestamp `timestamp`.
fn frame_of(sound: Sound, timestamp: u32) -> [i16; FRAME] {
    let mut pcm = [0i16; FRAME];
    for (n, sample) in pcm.iter_mut().enumerate() {
        let t = f64::from(timestamp + n as u32) / 8000.0;
        let sine = |hz: f64| (2.0 * std::f64::consts::PI * hz * t).sin();
        *sample = match sound {
            Sound::Silence => 0.0,
            Sound::Sine(hz) => VOICE_AMPLITUDE * sine(hz),
            Sound::Key(digit) => {
                let (low_hz, high_hz) = key_tones_hz(digit).expect("a key");
                KEY_AMPLITUDE * (sine(low_hz) + sine(high_hz))
            }
        } as i16;
    }
    pcm
}

/// Power at `frequency_hz` over the whole slice (Goertzel); the media
/// tests' one meter.
pub(crate) fn tone_power(samples: &[i16], frequency_hz: f64) -> f64 {
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * frequency_hz / 8000.0).cos();
    let (mut last, mut before_last) = (0.0, 0.0);
    for &sample in samples {
        let next = f64::from(sample) + coefficient * last - before_last;
        before_last = last;
        last = next;
    }
    last * last + before_last * before_last - coefficient * last * before_last
}

fn db(ratio: f64) -> f64 {
    10.0 * ratio.log10()
}

fn last_frames(phone: &Phone, frames: usize) -> &[i16] {
    &phone.heard[phone.heard.len() - frames * FRAME..]
}

#[test]
fn others_hear_at_most_20_ms_of_a_key_tone_held_back() {
    let mut room = Room::with_members(3);
    for _ in 0..3 {
        room.add(MemberFlags::default(), false);
    }
    let voice = Sound::Sine(VOICE_HZ);
    room.run(&[voice, Sound::Silence, Sound::Silence], 10);
    let before: Vec<usize> = room.phones.iter().map(|phone| phone.heard.len()).collect();
    room.press_in_band(0, '5', Sound::Silence, 14);
    let (low_hz, high_hz) = key_tones_hz('5').expect("a key");
    for (listener, &before) in before.iter().enumerate().skip(1) {
        // Samples of the key in each 20 ms frame: a tone of peak A over k
        // samples has Goertzel power (k*A/2)^2 per frequency.
        let key_samples: f64 = room.phones[listener].heard[before..]
            .chunks(FRAME)
            .map(|frame| {
                let power = (tone_power(frame, low_hz) + tone_power(frame, high_hz)) / 2.0;
                2.0 * power.sqrt() / KEY_AMPLITUDE
            })
            .sum();
        let bleed_ms = key_samples / 8.0;
        assert!(
            bleed_ms <= 20.0,
            "listener {listener} heard {bleed_ms:.1} ms"
        );
    }
    let digits: Vec<(MemberKey, char, DigitSource)> = room
        .events
        .iter()
        .filter_map(|event| match *event {
            Event::Digit {
                key, digit, source, ..
            } => Some((key, digit, source)),
            _ => None,
        })
        .collect();
    assert_eq!(digits, [(room.phones[0].key, '5', DigitSource::InBand)]);
}

#[test]
fn a_key_tone_pair_from_a_link_is_no_key_and_is_heard_whole() {
    let mut room = Room::with_members(2);
    room.add_link();
    room.add(MemberFlags::default(), true);
    room.run(&[Sound::Sine(VOICE_HZ), Sound::Silence], 10);
    let before = room.phones[1].heard.len();
    room.press_in_band(0, '8', Sound::Silence, 4);
    let (low_hz, high_hz) = key_tones_hz('8').expect("a key");
    // The 100 ms of the pair, every frame of it (a person's would be held back).
    let key_samples: f64 = room.phones[1].heard[before..]
        .chunks(FRAME)
        .map(|frame| {
            let power = (tone_power(frame, low_hz) + tone_power(frame, high_hz)) / 2.0;
            2.0 * power.sqrt() / KEY_AMPLITUDE
        })
        .sum();
    let heard_ms = key_samples / 8.0;
    assert!(
        (90.0..=110.0).contains(&heard_ms),
        "the listener heard {heard_ms:.1} ms of 100"
    );
    assert!(
        !room
            .events
            .iter()
            .any(|event| matches!(event, Event::Digit { .. })),
        "a link's audio is taken for a key"
    );
}

#[test]
fn key_three_raises_the_talk_gain_a_listener_decodes_by_3_db() {
    let mut room = Room::with_members(2);
    room.add(MemberFlags::default(), true);
    room.add(MemberFlags::default(), true);
    let voice = Sound::Sine(VOICE_HZ);
    let level = |room: &mut Room| {
        room.run(&[voice, Sound::Silence], 20);
        tone_power(last_frames(&room.phones[1], 10), VOICE_HZ)
    };
    let before = level(&mut room);
    room.press_rfc4733(0, '3', Sound::Silence, 14);
    let change = db(level(&mut room) / before);
    assert!((change - 3.0).abs() <= 0.5, "{change:+.2} dB");
    // The presser alone heard the confirmation ("up": 660 then 990 Hz).
    assert!(tone_power(&room.phones[0].heard, 990.0) > 1e10);
    assert!(tone_power(&room.phones[1].heard, 990.0) < 1e6);
}

#[test]
fn muted_is_not_heard_deaf_hears_silence_and_held_gets_nothing() {
    let mut room = Room::with_members(5);
    let flag = |muted, deaf, held| MemberFlags { muted, deaf, held };
    for flags in [
        flag(false, false, false),
        flag(true, false, false),
        flag(false, true, false),
        flag(false, false, true),
        flag(false, false, false),
    ] {
        room.add(flags, true);
    }
    let sounds = [
        Sound::Sine(1000.0),
        Sound::Sine(400.0),
        Sound::Silence,
        Sound::Silence,
        Sound::Silence,
    ];
    room.run(&sounds, 20);
    let listener = &room.phones[4].heard;
    assert!(tone_power(listener, 1000.0) > 1000.0 * tone_power(listener, 400.0));
    let deaf = &room.phones[2];
    assert_eq!(deaf.packets.len(), 20);
    assert!(deaf.heard.iter().all(|&sample| sample == 0));
    assert!(room.phones[3].packets.is_empty(), "held: nothing sent");
    let talking: Vec<(MemberKey, bool)> = room
        .events
        .iter()
        .filter_map(|event| match *event {
            Event::Talking { key, talking } => Some((key, talking)),
            _ => None,
        })
        .collect();
    assert_eq!(talking, [(room.phones[0].key, true)]);

    // Taken off hold it is sent the mix again, and unmuted it is heard.
    room.command(Command::SetFlags {
        key: room.phones[3].key,
        flags: MemberFlags::default(),
    });
    room.command(Command::SetFlags {
        key: room.phones[1].key,
        flags: MemberFlags::default(),
    });
    room.run(&sounds, 10);
    assert_eq!(room.phones[3].packets.len(), 10);
    assert!(
        room.phones[3].packets[0].0,
        "the marker bit starts the talkspurt"
    );
    let listener = last_frames(&room.phones[4], 5);
    assert!(tone_power(listener, 400.0) > 1e10, "unmuted is heard");
}

#[test]
fn a_silent_member_raises_one_rtp_timeout_and_a_held_one_none() {
    let mut room = Room::new(MediaConfig {
        max_members: 3,
        rtp_timeout: Some(Duration::from_millis(300)),
        ..MediaConfig::default()
    });
    let silent = room.add(MemberFlags::default(), true);
    room.add(MemberFlags::default(), true);
    room.add(
        MemberFlags {
            held: true,
            ..MemberFlags::default()
        },
        true,
    );
    let mut timeouts = Vec::new();
    for _ in 0..50 {
        room.send(1, Sound::Silence);
        room.tick();
        for event in room.events.drain(..) {
            if let Event::RtpTimeout { key } = event {
                timeouts.push((key, room.ticks - 1));
            }
        }
    }
    // 300 ms after it was added, at the tick that starts 300 ms in.
    assert_eq!(timeouts, [(silent, 15)]);
}

/// Phone `who` sends an RTCP report from its RTCP address (its RTP port + 1).
fn send_rtcp(room: &mut Room, who: usize) {
    let address = room.phones[who].address;
    let source = SocketAddr::new(address.ip(), address.port() + 1);
    let mut report = [0u8; 128];
    let len = write_rtcp_report(0x5EED + who as u32, None, None, false, &mut report).expect("fits");
    let now = room.now();
    room.core.receive(
        Datagram {
            port: Port::Shared,
            stream: Stream::Rtcp,
            source,
            contents: &report[..len],
        },
        now,
    );
}

/// Ticks of `room` in which member keys timed out.
fn timeouts_in(
    room: &mut Room,
    ticks: u32,
    mut each_tick: impl FnMut(&mut Room),
) -> Vec<(MemberKey, u32)> {
    let mut timeouts = Vec::new();
    for _ in 0..ticks {
        each_tick(room);
        room.tick();
        for event in room.events.drain(..) {
            if let Event::RtpTimeout { key } = event {
                timeouts.push((key, room.ticks - 1));
            }
        }
    }
    timeouts
}

#[test]
fn rtcp_or_a_session_refresh_keeps_a_member_that_sends_no_rtp() {
    let mut room = Room::new(MediaConfig {
        max_members: 3,
        rtp_timeout: Some(Duration::from_millis(300)),
        ..MediaConfig::default()
    });
    let reports = room.add(MemberFlags::default(), true);
    let refreshed = room.add(MemberFlags::default(), true);
    let silent = room.add(MemberFlags::default(), true);
    // Every 200 ms: an RTCP report from the first, a refresh of the second's call.
    let timeouts = timeouts_in(&mut room, 100, |room| {
        if room.ticks % 10 == 0 {
            send_rtcp(room, 0);
            room.command(Command::SignOfLife { key: refreshed });
        }
    });
    assert_eq!(
        timeouts,
        [(silent, 15)],
        "only the one with no sign of life"
    );
    // Signs of life stop after the report and refresh at tick 100: 300 ms later
    // both are timed out.
    send_rtcp(&mut room, 0);
    room.command(Command::SignOfLife { key: refreshed });
    let timeouts = timeouts_in(&mut room, 20, |_| {});
    assert_eq!(timeouts, [(reports, 115), (refreshed, 115)]);
}

#[test]
fn without_an_rtp_timeout_a_silent_member_is_never_timed_out() {
    let mut room = Room::new(MediaConfig {
        max_members: 2,
        rtp_timeout: None,
        ..MediaConfig::default()
    });
    room.add(MemberFlags::default(), true);
    // Ten minutes of fake time without a packet.
    let timeouts = timeouts_in(&mut room, 30_000, |_| {});
    assert!(timeouts.is_empty(), "{timeouts:?}");
}

#[test]
fn a_member_alone_is_sent_a_keepalive_once_a_second_then_full_rate_with_company() {
    let mut room = Room::with_members(2);
    room.add(MemberFlags::default(), true);
    // Alone (talking, even): two seconds bring a packet at once and one a second.
    room.run(&[Sound::Sine(1000.0)], 2 * LONE_KEEPALIVE_TICKS);
    let lone = room.phones[0].packets.clone();
    assert_eq!(lone.len(), 2, "{lone:?}");
    assert_eq!(
        lone[1].1,
        lone[0].1.wrapping_add(1),
        "sequence stays contiguous"
    );
    assert_eq!(
        lone[1].2.wrapping_sub(lone[0].2),
        FRAME as u32 * LONE_KEEPALIVE_TICKS,
        "the timestamp keeps real time"
    );
    room.add(MemberFlags::default(), true);
    room.run(&[Sound::Sine(1000.0), Sound::Sine(400.0)], 10);
    let together = &room.phones[0].packets[2..];
    assert_eq!(together.len(), 10);
    assert!(together[0].0, "the marker bit starts the talkspurt");
    assert!(together[1..].iter().all(|packet| !packet.0));
}

#[test]
fn a_lost_frame_is_concealed_at_half_level_and_counted() {
    let mut room = Room::with_members(2);
    room.add(MemberFlags::default(), true);
    room.add(MemberFlags::default(), true);
    let tone = Sound::Sine(VOICE_HZ);
    room.run(&[tone, Sound::Silence], 10);
    // The frame after this tick's goes missing, and the one after it arrives
    // early, with this tick's: the gap is a loss, not a pause.
    room.send(0, tone);
    let lost_at = room.phones[0].timestamp;
    room.phones[0].timestamp += FRAME as u32;
    room.phones[0].sequence += 1;
    room.send(0, tone);
    room.send(1, Sound::Silence);
    room.tick();
    room.send(1, Sound::Silence);
    room.tick();
    assert_eq!(room.counter(|s| &s.packets_lost), 1, "frame at {lost_at}");
    room.run(&[tone, Sound::Silence], 2);
    let heard = last_frames(&room.phones[1], 4);
    let level = |frame: usize| tone_power(&heard[frame * FRAME..(frame + 1) * FRAME], VOICE_HZ);
    // The concealed frame repeats the last one at half amplitude: -6 dB.
    let change = db(level(1) / level(0));
    assert!((change + 6.0).abs() <= 0.5, "{change:+.2} dB");
    assert!(db(level(2) / level(0)).abs() <= 0.5);
}

#[test]
fn shared_port_members_are_found_by_source_and_hear_each_other() {
    let mut room = Room::with_members(3);
    room.add(MemberFlags::default(), true);
    room.add(MemberFlags::default(), true);
    room.run(&[Sound::Sine(1000.0), Sound::Sine(400.0)], 20);
    for (listener, other_hz, own_hz) in [(0, 400.0, 1000.0), (1, 1000.0, 400.0)] {
        let heard = &room.phones[listener].heard;
        assert_eq!(heard.len(), 20 * FRAME);
        assert!(tone_power(heard, other_hz) > 1000.0 * tone_power(heard, own_hz));
        let address = room.phones[listener].address;
        assert!(room.phones[listener]
            .packets
            .iter()
            .all(|packet| packet.3 == address));
    }
    assert_eq!(room.counter(|s| &s.packets_in), 40);
    // RTP from an address nobody has is foreign.
    let stranger = SocketAddr::from(([198, 51, 100, 7], 5000));
    room.receive_from(stranger, &rtp(0, 1, 0, &[0xFF; FRAME]));
    room.tick();
    assert_eq!(room.counter(|s| &s.foreign), 1);
    assert_eq!(room.counter(|s| &s.packets_in), 40);
}

#[test]
fn shared_port_learns_a_rewritten_port_at_the_members_ip_after_a_run_within_300_ms() {
    let mut room = Room::with_members(3);
    // The SDP names a port nobody sends from (a NAT rewrote it).
    let sdp = SocketAddr::from(([192, 0, 2, 10], 9));
    let key = room.add_at(0, sdp, MemberFlags::default(), true);
    room.add(MemberFlags::default(), true);
    let sounds = [Sound::Sine(1000.0), Sound::Sine(400.0)];
    // Its first moments, an unknown port is as likely a newer call from the
    // same IP whose member is not filed yet: not counted toward learning.
    let guard_ticks = (NAT_LATCH_AFTER.as_millis() / TICK.as_millis()) as u32;
    room.run(&sounds, guard_ticks);
    assert_eq!(room.core.member(key).expect("member").remote_rtp, sdp);
    // Then a run in sequence: heard at its fourth packet.
    room.run(&sounds, u32::from(LEARN_RUN) - 1);
    assert_eq!(room.core.member(key).expect("member").remote_rtp, sdp);
    assert_eq!(
        room.counter(|s| &s.learning),
        u64::from(guard_ticks) + u64::from(LEARN_RUN) - 1
    );
    room.run(&sounds, 1);
    assert!(TICK * room.ticks <= Duration::from_millis(300));
    let latched = room.core.member(key).expect("member");
    assert_eq!(latched.remote_rtp, phone_address(0));
    assert_eq!(latched.remote_rtcp, SocketAddr::new(sdp.ip(), 4001));
    room.run(&sounds, 2);
    assert_eq!(
        room.phones[0].packets.last().map(|p| p.3),
        Some(phone_address(0))
    );
    assert!(tone_power(last_frames(&room.phones[1], 2), 1000.0) > 1e10);
    // Locked and alive, a second stream at the same IP is never taken,
    // however long its run.
    let intruder = SocketAddr::from(([192, 0, 2, 10], 31_337));
    for n in 0..20 {
        room.receive_from(intruder, &rtp(0, 5000 + n, 0, &[0xFF; FRAME]));
        room.run(&sounds, 1);
    }
    assert_eq!(
        room.counter(|s| &s.contested),
        20 - u64::from(LEARN_RUN) + 1
    );
    assert_eq!(
        room.core.member(key).expect("member").remote_rtp,
        phone_address(0)
    );
    assert_eq!(room.counter(|s| &s.foreign), 0);
}

#[test]
fn a_stranger_is_never_heard_nor_sent_audio_before_during_or_after_a_pause() {
    for shared in [false, true] {
        let mut room = Room::with_members(2);
        let stranger = SocketAddr::from(([198, 51, 100, 7], 5000));
        // The stranger's stream carries a 2 kHz tone, in sequence, one SSRC.
        let mut sequence = 7000u16;
        let mut stranger_sends = |room: &mut Room, ticks: u32, phones: &[Sound]| {
            for _ in 0..ticks {
                let pcm = frame_of(Sound::Sine(2000.0), u32::from(sequence) * 160);
                let mut payload = [0u8; FRAME];
                Codec::Pcmu.encode(&pcm, &mut payload);
                let datagram = rtp(0, sequence, u32::from(sequence) * 160, &payload);
                sequence = sequence.wrapping_add(1);
                let port = if shared {
                    Port::Shared
                } else {
                    Port::Member(room.phones[0].key)
                };
                let now = room.now();
                room.core.receive(
                    Datagram {
                        port,
                        stream: Stream::Rtp,
                        source: stranger,
                        contents: &datagram,
                    },
                    now,
                );
                room.run(phones, 1);
            }
        };
        let caller = room.add(MemberFlags::default(), true);
        room.add(MemberFlags::default(), true);
        // Before the caller's first packet, while it talks, and after it
        // paused for two seconds.
        stranger_sends(&mut room, 25, &[]);
        stranger_sends(&mut room, 25, &[Sound::Sine(700.0), Sound::Silence]);
        stranger_sends(&mut room, 100, &[]);
        stranger_sends(&mut room, 25, &[Sound::Sine(700.0), Sound::Silence]);
        let listener = &room.phones[1].heard;
        assert!(
            tone_power(listener, 700.0) > 1e4 * tone_power(listener, 2000.0).max(1.0),
            "shared {shared}: the caller is heard, the stranger not"
        );
        let member = room.core.member(caller).expect("member");
        assert_eq!(member.remote_rtp, phone_address(0), "shared {shared}");
        for phone in &room.phones {
            assert!(phone.packets.iter().all(|p| p.3 != stranger));
        }
        assert_eq!(room.counter(|s| &s.foreign), 175, "shared {shared}");
    }
}

#[test]
fn a_shared_port_report_is_matched_by_ssrc_and_removal_says_bye() {
    let mut room = Room::with_members(2);
    let key = room.add(MemberFlags::default(), true);
    room.run(&[Sound::Silence], 2);
    // From another port at the phone's IP; one from elsewhere is refused.
    let stranger = SocketAddr::from(([198, 51, 100, 7], 7000));
    let reporter = SocketAddr::from(([192, 0, 2, 10], 7000));
    let mut report = [0u8; 128];
    let len = write_rtcp_report(0xD7F0, None, None, false, &mut report).expect("fits");
    room.core.receive(
        Datagram {
            port: Port::Shared,
            stream: Stream::Rtcp,
            source: stranger,
            contents: &report[..len],
        },
        room.now(),
    );
    assert_eq!(
        room.core.member(key).expect("member").remote_rtcp,
        SocketAddr::from(([192, 0, 2, 10], 4001))
    );
    room.core.receive(
        Datagram {
            port: Port::Shared,
            stream: Stream::Rtcp,
            source: reporter,
            contents: &report[..len],
        },
        room.now(),
    );
    assert_eq!(room.core.member(key).expect("member").remote_rtcp, reporter);
    let applied = room.command(Command::RemoveMember { key });
    assert!(matches!(applied, Applied::Stopped { key: stopped } if stopped == key));
    let bye = room.phones[0].rtcp.last().expect("an RTCP packet");
    assert!(check_rtcp(bye).expect("valid RTCP").has_bye);
    assert_eq!(room.core.active_members(), 0);
    // The key is stale now: its commands are counted, not carried out.
    room.command(Command::SetFlags {
        key,
        flags: MemberFlags::default(),
    });
    assert_eq!(room.counter(|s| &s.commands_dropped), 1);
}

#[test]
fn a_member_with_its_own_sockets_is_fed_by_key_and_its_sockets_handed_back() {
    let mut core = MediaCore::new(
        MediaConfig {
            max_members: 1,
            ..MediaConfig::default()
        },
        Arc::new(MediaStats::default()),
    );
    let key = MemberKey {
        slot: 0,
        generation: 1,
    };
    let bind = || std::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    let phone = SocketAddr::from(([192, 0, 2, 10], 4000));
    let add = AddMember {
        key,
        mix: 0,
        sockets: MemberSockets::Own {
            rtp: bind(),
            rtcp: bind(),
            sdp_ip: None,
        },
        remote_rtp: phone,
        remote_rtcp: SocketAddr::from(([192, 0, 2, 10], 4001)),
        signalling_ip: Some(phone.ip()),
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event_pt: None,
        telephone_event_rate_hz: 8000,
        flags: MemberFlags::default(),
        keypad: true,
        opus: None,
        srtp: None,
        link: false,
    };
    let start = Instant::now();
    let mut sent = Vec::new();
    let mut sink = |t: Transmit<'_>| sent.push((t.port, t.stream, t.destination));
    let applied = core.command(Command::AddMember(Box::new(add)), start, 0, &mut sink);
    assert!(matches!(
        applied,
        Applied::Started {
            sockets: MemberSockets::Own { .. },
            ..
        }
    ));
    let receive = |core: &mut MediaCore, source: SocketAddr, sequence: u16| {
        let datagram = rtp(0, sequence, 160 * u32::from(sequence), &[0xFF; FRAME]);
        let datagram = Datagram {
            port: Port::Member(key),
            stream: Stream::Rtp,
            source,
            contents: &datagram,
        };
        core.receive(datagram, start);
    };
    // From its SDP address: its socket may be connected there while alive.
    receive(&mut core, phone, 1);
    assert_eq!(core.live_rtp_source(key, start), Some(phone));
    assert_eq!(
        core.live_rtp_source(key, start + Duration::from_secs(2)),
        None
    );
    // Its stream moves to another port at its IP: followed after a run,
    // and a learned address is never connected to.
    let moved = SocketAddr::from(([192, 0, 2, 10], 5000));
    for sequence in 2..2 + u16::from(LEARN_RUN) {
        receive(&mut core, moved, sequence);
    }
    assert_eq!(core.live_rtp_source(key, start), None);
    core.tick(start, 0, &mut sink);
    assert_eq!(sent, [(Port::Member(key), Stream::Rtp, moved)]);
}

#[path = "tests_srtp.rs"]
mod srtp;

#[path = "tests_talking.rs"]
mod talking;

#[path = "tests_wideband.rs"]
mod wideband;
