//! The keypad end to end: test phones in a room press keys (in-band, RFC 4733,
//! or both at once) and check, by decoding what they receive, that every key
//! does what the README's keypad table says, that only the presser hears the
//! confirmation, and that nobody else hears more than 20 ms of the key tone.

mod common;

use common::Daemon;
use sipconf::media::dtmf::key_tones_hz;
use sipconf::media::Codec;
use sipconf_testkit::meter::{db_ratio, tone_amplitude};
use sipconf_testkit::testphone::{KeyMode, KeyPress, Phone, PhoneOptions, Recording, Signal};
use std::time::Duration;

/// The presser's voice: a 600 Hz sine, quiet enough that +12 dB stays linear.
const VOICE_HZ: f64 = 600.0;
const VOICE_AMPLITUDE: f64 = 3000.0;
/// The up confirmation's second note and the at-limit pips (src/media/keypad.rs).
const UP_NOTE_HZ: f64 = 990.0;
const AT_LIMIT_HZ: f64 = 400.0;

fn voice() -> Signal {
    Signal::Sine {
        freq_hz: VOICE_HZ,
        amplitude: VOICE_AMPLITUDE,
    }
}

/// Samples of a recording between two times (ms from the start of the stream).
fn window(recording: &Recording, from_ms: usize, to_ms: usize) -> &[i16] {
    let s = &recording.samples;
    &s[(from_ms * 8).min(s.len())..(to_ms * 8).min(s.len())]
}

async fn room(daemon: &Daemon, n: usize) -> Vec<Phone> {
    let mut phones = Vec::new();
    for _ in 0..n {
        phones.push(
            Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
                .await
                .expect("joins room 1000"),
        );
    }
    phones
}

/// The presser streams `signal` pressing `keys`, the listener streams
/// `listener_signal`; both for `duration_ms`. Returns both recordings.
async fn press(
    presser: &mut Phone,
    listener: &mut Phone,
    signal: Signal,
    keys: Vec<KeyPress>,
    listener_signal: Signal,
    duration_ms: u64,
) -> (Recording, Recording) {
    let duration = Duration::from_millis(duration_ms);
    let (a, b) = tokio::join!(
        presser.stream_with_keys(&signal, duration, &keys),
        listener.stream(&listener_signal, duration)
    );
    (a.expect("presser media"), b.expect("listener media"))
}

/// Two phones in a room both talk (the presser at `VOICE_HZ`, the other at
/// 900 Hz) for `duration_ms` while the presser presses `keys`; returns what the
/// presser and the other heard. Both hang up.
async fn both_talk(keys: Vec<KeyPress>, duration_ms: u64) -> (Recording, Recording) {
    let daemon = Daemon::with_rooms();
    let mut phones = room(&daemon, 2).await;
    let mut other = phones.pop().unwrap();
    let mut presser = phones.pop().unwrap();
    let other_voice = Signal::Sine {
        freq_hz: 900.0,
        amplitude: VOICE_AMPLITUDE,
    };
    let heard = press(
        &mut presser,
        &mut other,
        voice(),
        keys,
        other_voice,
        duration_ms,
    )
    .await;
    presser.hangup().await.expect("bye");
    other.hangup().await.expect("bye");
    heard
}

/// 5 ms blocks of `recording` in which both tones of `digit` stand out.
fn key_tone_ms(recording: &Recording, digit: char) -> usize {
    let (low, high) = key_tones_hz(digit).expect("a key");
    recording
        .samples
        .chunks(40)
        .filter(|block| tone_amplitude(block, low) > 1500.0 && tone_amplitude(block, high) > 1500.0)
        .count()
        * 5
}

async fn one_press_of_3_raises_what_others_hear_by_3_db(mode: KeyMode) {
    let daemon = Daemon::with_rooms();
    let mut phones = room(&daemon, 2).await;
    let mut listener = phones.pop().unwrap();
    let mut presser = phones.pop().unwrap();
    let (heard_by_presser, heard_by_listener) = press(
        &mut presser,
        &mut listener,
        voice(),
        vec![KeyPress::new(1000, '3', mode)],
        Signal::Silence,
        2400,
    )
    .await;
    let before = tone_amplitude(window(&heard_by_listener, 300, 900), VOICE_HZ);
    let after = tone_amplitude(window(&heard_by_listener, 1500, 2300), VOICE_HZ);
    let gain_db = db_ratio(after, before);
    assert!(
        (gain_db - 3.0).abs() <= 0.5,
        "{mode:?}: one press of 3 changed the level by {gain_db:.2} dB (before {before:.0}, after {after:.0})"
    );
    let confirmation = tone_amplitude(window(&heard_by_presser, 1000, 1500), UP_NOTE_HZ);
    assert!(
        confirmation > 300.0,
        "{mode:?}: the presser hears the up confirmation ({confirmation:.0})"
    );
    let leaked = tone_amplitude(window(&heard_by_listener, 1000, 1500), UP_NOTE_HZ);
    assert!(
        leaked < 30.0,
        "{mode:?}: the listener hears the presser's confirmation ({leaked:.0})"
    );
    let bleed_ms = key_tone_ms(&heard_by_listener, '3');
    assert!(
        bleed_ms <= 20,
        "{mode:?}: the listener heard {bleed_ms} ms of the key tone"
    );
    presser.hangup().await.expect("bye");
    listener.hangup().await.expect("bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_three_in_band_raises_talk_gain_by_3_db() {
    one_press_of_3_raises_what_others_hear_by_3_db(KeyMode::InBand).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_three_by_rfc4733_raises_talk_gain_by_3_db() {
    one_press_of_3_raises_what_others_hear_by_3_db(KeyMode::Rfc4733).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_three_sent_both_ways_at_once_counts_once() {
    one_press_of_3_raises_what_others_hear_by_3_db(KeyMode::Both).await;
}

/// Presses `digit` five times 300 ms apart from 600 ms; returns the level
/// change the listener hears (talk keys) or the presser hears (receive keys),
/// and the at-limit pips' level after the fifth press.
async fn five_presses(digit: char, receive: bool) -> (f64, f64) {
    let daemon = Daemon::with_rooms();
    let mut phones = room(&daemon, 2).await;
    let mut other = phones.pop().unwrap();
    let mut presser = phones.pop().unwrap();
    let keys: Vec<KeyPress> = (0..5)
        .map(|i| KeyPress::new(600 + 300 * i, digit, KeyMode::Rfc4733))
        .collect();
    let (presser_signal, other_signal) = if receive {
        (Signal::Silence, voice())
    } else {
        (voice(), Signal::Silence)
    };
    let (heard_by_presser, heard_by_other) = press(
        &mut presser,
        &mut other,
        presser_signal,
        keys,
        other_signal,
        3000,
    )
    .await;
    let measured = if receive {
        &heard_by_presser
    } else {
        &heard_by_other
    };
    let before = tone_amplitude(window(measured, 200, 580), VOICE_HZ);
    let after = tone_amplitude(window(measured, 2300, 2950), VOICE_HZ);
    let pips = tone_amplitude(window(&heard_by_presser, 1800, 2250), AT_LIMIT_HZ);
    presser.hangup().await.expect("bye");
    other.hangup().await.expect("bye");
    (db_ratio(after, before), pips)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_presses_of_3_stop_at_plus_12_db_and_the_fifth_sounds_the_limit() {
    let (change_db, pips) = five_presses('3', false).await;
    assert!(
        (change_db - 12.0).abs() <= 0.5,
        "talk gain after five 3s: {change_db:.2} dB"
    );
    assert!(
        pips > 300.0,
        "the fifth press gives the at-limit tone ({pips:.0})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_presses_of_1_stop_at_minus_12_db() {
    let (change_db, pips) = five_presses('1', false).await;
    assert!(
        (change_db + 12.0).abs() <= 0.5,
        "talk gain after five 1s: {change_db:.2} dB"
    );
    assert!(
        pips > 300.0,
        "the fifth press gives the at-limit tone ({pips:.0})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_presses_of_6_raise_what_the_presser_hears_by_12_db() {
    let (change_db, pips) = five_presses('6', true).await;
    assert!(
        (change_db - 12.0).abs() <= 0.5,
        "receive gain after five 6s: {change_db:.2} dB"
    );
    assert!(
        pips > 300.0,
        "the fifth press gives the at-limit tone ({pips:.0})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_presses_of_4_lower_what_the_presser_hears_by_12_db() {
    let (change_db, _) = five_presses('4', true).await;
    assert!(
        (change_db + 12.0).abs() <= 0.5,
        "receive gain after five 4s: {change_db:.2} dB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_2_and_5_reset_talk_and_receive_gain() {
    // Both talk; the presser raises both gains twice, then resets both.
    let keys = vec![
        KeyPress::new(600, '3', KeyMode::Rfc4733),
        KeyPress::new(800, '6', KeyMode::Rfc4733),
        KeyPress::new(1000, '3', KeyMode::Rfc4733),
        KeyPress::new(1200, '6', KeyMode::Rfc4733),
        KeyPress::new(1800, '2', KeyMode::Rfc4733),
        KeyPress::new(2000, '5', KeyMode::Rfc4733),
    ];
    let (heard_by_presser, heard_by_other) = both_talk(keys, 3000).await;
    let talk = |from, to| tone_amplitude(window(&heard_by_other, from, to), VOICE_HZ);
    let receive = |from, to| tone_amplitude(window(&heard_by_presser, from, to), 900.0);
    let raised_talk = db_ratio(talk(1400, 1780), talk(200, 580));
    let raised_receive = db_ratio(receive(1400, 1780), receive(200, 580));
    let reset_talk = db_ratio(talk(2400, 2950), talk(200, 580));
    let reset_receive = db_ratio(receive(2400, 2950), receive(200, 580));
    assert!(
        (raised_talk - 6.0).abs() <= 0.5,
        "two 3s: {raised_talk:.2} dB"
    );
    assert!(
        (raised_receive - 6.0).abs() <= 0.5,
        "two 6s: {raised_receive:.2} dB"
    );
    assert!(
        reset_talk.abs() <= 0.5,
        "2 resets talk gain: {reset_talk:.2} dB"
    );
    assert!(
        reset_receive.abs() <= 0.5,
        "5 resets receive gain: {reset_receive:.2} dB"
    );
}

/// A talker at `level_dbfs` (RMS) pressing `keys` by RFC 4733; returns its
/// level as heard by the other phone before the keys and after them.
async fn quiet_talker(level_dbfs: f64, keys: &[char]) -> (f64, f64) {
    // A gate at -40 dBFS keeps G.711's quantisation far from the thresholds.
    let daemon = Daemon::start(
        "gate_threshold_dbfs = -40.0",
        "[[room]]\nnumber = \"1000\"\n",
    );
    let mut phones = room(&daemon, 2).await;
    let mut other = phones.pop().unwrap();
    let mut talker = phones.pop().unwrap();
    let amplitude = 32767.0 * 10f64.powf(level_dbfs / 20.0) * 2f64.sqrt();
    let signal = Signal::Sine {
        freq_hz: VOICE_HZ,
        amplitude,
    };
    let presses: Vec<KeyPress> = keys
        .iter()
        .enumerate()
        .map(|(i, &k)| KeyPress::new(800 + 200 * i as u64, k, KeyMode::Rfc4733))
        .collect();
    let (_, heard) = press(
        &mut talker,
        &mut other,
        signal,
        presses,
        Signal::Silence,
        3000,
    )
    .await;
    let before = tone_amplitude(window(&heard, 200, 780), VOICE_HZ) / amplitude;
    let after = tone_amplitude(window(&heard, 2200, 2950), VOICE_HZ) / amplitude;
    talker.hangup().await.expect("bye");
    other.hangup().await.expect("bye");
    (before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_7_lets_a_quiet_talker_through_the_gate() {
    // 1.5 dB under the -40 dBFS gate: cut; one press of 7 lowers the gate to -43.
    let (before, after) = quiet_talker(-41.5, &['7']).await;
    assert!(
        before < 0.05,
        "cut before 7 (heard at {before:.2} of its level)"
    );
    assert!(after > 0.8, "heard after 7 (at {after:.2} of its level)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_9_cuts_a_talker_and_8_restores_the_gate() {
    // 1.5 dB over the gate: heard; three 9s raise the gate to -31 (closing at
    // -37), so it is cut; 8 puts the gate back at -40 and it is heard again.
    let (before, after) = quiet_talker(-38.5, &['9', '9', '9']).await;
    assert!(before > 0.8, "heard before 9 ({before:.2})");
    assert!(after < 0.05, "cut after three 9s ({after:.2})");
    let (_, restored) = quiet_talker(-38.5, &['9', '9', '9', '8']).await;
    assert!(restored > 0.8, "heard again after 8 ({restored:.2})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_0_toggles_mute_and_star_toggles_deaf_and_mute() {
    let keys = vec![
        KeyPress::new(600, '0', KeyMode::InBand),
        KeyPress::new(1400, '0', KeyMode::InBand),
        KeyPress::new(2200, '*', KeyMode::Rfc4733),
        KeyPress::new(3000, '*', KeyMode::Rfc4733),
    ];
    let (heard_by_presser, heard_by_other) = both_talk(keys, 3800).await;
    let talk = |from, to| tone_amplitude(window(&heard_by_other, from, to), VOICE_HZ);
    let hears = |from, to| tone_amplitude(window(&heard_by_presser, from, to), 900.0);
    let normal = talk(200, 580);
    assert!(normal > 2000.0, "heard at first ({normal:.0})");
    assert!(
        talk(900, 1380) < 20.0,
        "muted after 0 ({:.0})",
        talk(900, 1380)
    );
    assert!(talk(1700, 2180) > 2000.0, "heard after the second 0");
    assert!(
        talk(2500, 2980) < 20.0,
        "muted after * ({:.0})",
        talk(2500, 2980)
    );
    assert!(
        hears(2500, 2980) < 20.0,
        "deaf after * ({:.0})",
        hears(2500, 2980)
    );
    assert!(talk(3300, 3780) > 2000.0, "heard after the second *");
    assert!(hears(3300, 3780) > 2000.0, "hears after the second *");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_hash_ends_the_call_with_a_bye() {
    for mode in [KeyMode::InBand, KeyMode::Rfc4733] {
        let daemon = Daemon::with_rooms();
        let mut phones = room(&daemon, 2).await;
        let mut other = phones.pop().unwrap();
        let mut presser = phones.pop().unwrap();
        press(
            &mut presser,
            &mut other,
            voice(),
            vec![KeyPress::new(400, '#', mode)],
            Signal::Silence,
            1000,
        )
        .await;
        assert!(
            presser.wait_for_bye(Duration::from_secs(3)).await,
            "{mode:?}: # gets a BYE"
        );
        assert!(
            !other.wait_for_bye(Duration::from_millis(300)).await,
            "the others stay"
        );
        other.hangup().await.expect("bye");
    }
}
