//! Wideband end to end on loopback: G.722 and Opus test phones and G.711
//! ones in one room of the real daemon, each decoding what it receives with
//! its own codec; in-band keys from a G.722 phone; and a real third-party
//! phone, baresip (Debian `baresip-core`, whose G.722 is spandsp's),
//! offering G.722 first.

mod common;

use common::room::{sine, stream_together, AMPLITUDE};
use common::{free_port, require_tool, tempdir::TempDir, Daemon};
use sipconf::media::Codec;
use sipconf_testkit::meter::{db_ratio, tone_amplitude_at};
use sipconf_testkit::testphone::{
    AnsweredCodec, G722Offer, KeyMode, KeyPress, Phone, PhoneOptions, Recording, Signal,
};
use std::path::Path;
use std::time::Duration;

async fn g722_phone(daemon: &Daemon) -> Phone {
    let mut options = PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu);
    options.g722 = Some(G722Offer::First);
    let phone = Phone::call(options).await.expect("G.722 phone answered");
    assert_eq!(phone.answered_codec(), AnsweredCodec::G722);
    phone
}

/// Whether libopus loads here: in CI (`CI` set) its absence fails the
/// test; elsewhere the test says why it skipped.
fn opus_here(test: &str) -> bool {
    match sipconf::media::codec::opus::available() {
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

async fn opus_phone(daemon: &Daemon) -> Phone {
    let phone = Phone::call(PhoneOptions::opus(daemon.sip, "1000"))
        .await
        .expect("Opus phone answered");
    assert!(
        matches!(phone.answered_codec(), AnsweredCodec::Opus { .. }),
        "{:?}",
        phone.answered_codec()
    );
    phone
}

async fn pcmu_phone(daemon: &Daemon) -> Phone {
    let phone = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("PCMU phone answered");
    assert_eq!(phone.answered_codec(), AnsweredCodec::G711(Codec::Pcmu));
    phone
}

/// The level of `freq_hz` in the second half second of a recording, in dB
/// relative to what the other phone sent.
fn heard_db(recording: &Recording, freq_hz: f64) -> f64 {
    let rate = recording.sample_rate_hz as usize;
    let steady = &recording.samples[rate / 2..(rate / 2 + rate / 2).min(recording.samples.len())];
    db_ratio(
        tone_amplitude_at(steady, freq_hz, recording.sample_rate_hz),
        AMPLITUDE,
    )
}

/// A wideband kind of phone: how it is called and what its messages say.
#[derive(Clone, Copy)]
enum Wideband {
    G722,
    Opus,
}

impl Wideband {
    async fn phone(self, daemon: &Daemon) -> Phone {
        match self {
            Wideband::G722 => g722_phone(daemon).await,
            Wideband::Opus => opus_phone(daemon).await,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Wideband::G722 => "G.722",
            Wideband::Opus => "Opus",
        }
    }
}

/// A `wide` phone and a PCMU phone hear each other's tones within 1 dB.
async fn wide_and_pcmu_phones_hear_each_other_within_1_db(wide: Wideband) {
    let daemon = Daemon::with_rooms();
    let phones = vec![wide.phone(&daemon).await, pcmu_phone(&daemon).await];
    let results = stream_together(
        phones,
        &[sine(1000.0), sine(600.0)],
        Duration::from_millis(1500),
    )
    .await;
    let (wide_rec, narrow) = (&results[0].1, &results[1].1);
    assert_eq!(wide_rec.sample_rate_hz, 16_000);
    let (from_narrow, from_wide) = (heard_db(wide_rec, 600.0), heard_db(narrow, 1000.0));
    let name = wide.name();
    assert!(
        from_narrow.abs() <= 1.0,
        "{name} heard PCMU at {from_narrow:.2} dB"
    );
    assert!(
        from_wide.abs() <= 1.0,
        "PCMU heard {name} at {from_wide:.2} dB"
    );
    for (mut phone, _) in results {
        assert_eq!(phone.hangup().await.expect("bye"), 200);
    }
}

/// 6 kHz from a `wide` phone reaches another within 1 dB, and a PCMU phone
/// not at all (folded back it would be 2 kHz: everything it got is measured).
async fn six_khz_reaches_wide_phones_and_not_pcmu(wide: Wideband) {
    let daemon = Daemon::with_rooms();
    let phones = vec![
        wide.phone(&daemon).await,
        wide.phone(&daemon).await,
        pcmu_phone(&daemon).await,
    ];
    let results = stream_together(
        phones,
        &[sine(6000.0), Signal::Silence, Signal::Silence],
        Duration::from_millis(1500),
    )
    .await;
    let name = wide.name();
    let wide_db = heard_db(&results[1].1, 6000.0);
    assert!(
        wide_db.abs() <= 1.0,
        "{name} heard 6 kHz at {wide_db:.2} dB"
    );
    let narrow = &results[2].1.samples;
    let steady = &narrow[4000..narrow.len().min(8000)];
    let rms =
        (steady.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / steady.len() as f64).sqrt();
    let narrow_db = db_ratio(rms * 2f64.sqrt(), AMPLITUDE);
    assert!(
        narrow_db < -40.0,
        "PCMU heard {narrow_db:.1} dB of {name}'s 6 kHz tone"
    );
    for (mut phone, _) in results {
        assert_eq!(phone.hangup().await.expect("bye"), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g722_phone_and_a_pcmu_phone_hear_each_other_within_1_db() {
    wide_and_pcmu_phones_hear_each_other_within_1_db(Wideband::G722).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_khz_from_a_g722_phone_reaches_g722_and_not_pcmu() {
    six_khz_reaches_wide_phones_and_not_pcmu(Wideband::G722).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_phone_and_a_pcmu_phone_hear_each_other_within_1_db() {
    if opus_here("an_opus_phone_and_a_pcmu_phone_hear_each_other_within_1_db") {
        wide_and_pcmu_phones_hear_each_other_within_1_db(Wideband::Opus).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_khz_from_an_opus_phone_reaches_opus_and_not_pcmu() {
    if opus_here("six_khz_from_an_opus_phone_reaches_opus_and_not_pcmu") {
        six_khz_reaches_wide_phones_and_not_pcmu(Wideband::Opus).await;
    }
}

/// The level of `freq_hz` between two times of a recording (ms from its start).
fn level_between(recording: &Recording, freq_hz: f64, from_ms: usize, to_ms: usize) -> f64 {
    let per_ms = recording.sample_rate_hz as usize / 1000;
    let samples = &recording.samples;
    let window =
        &samples[(from_ms * per_ms).min(samples.len())..(to_ms * per_ms).min(samples.len())];
    tone_amplitude_at(window, freq_hz, recording.sample_rate_hz)
}

/// The keypad reads a G.722 phone's keys from its decimated audio: an
/// in-band 0 (mute, the README's keypad table) from a G.722 phone takes its
/// voice out of what a PCMU phone hears, and a second 0 brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_band_keys_from_a_g722_phone_drive_the_keypad() {
    let daemon = Daemon::with_rooms();
    let mut presser = g722_phone(&daemon).await;
    let mut listener = pcmu_phone(&daemon).await;
    let voice = Signal::Sine {
        freq_hz: 600.0,
        amplitude: 3000.0,
    };
    let keys = [
        KeyPress::new(1000, '0', KeyMode::InBand),
        KeyPress::new(2500, '0', KeyMode::InBand),
    ];
    let duration = Duration::from_millis(3800);
    let (_, heard) = tokio::join!(
        presser.stream_with_keys(&voice, duration, &keys),
        listener.stream(&Signal::Silence, duration)
    );
    let heard = heard.expect("listener media");
    let before = level_between(&heard, 600.0, 300, 900);
    let muted = level_between(&heard, 600.0, 1500, 2300);
    let after = level_between(&heard, 600.0, 3000, 3700);
    assert!(
        before > 1500.0,
        "the listener heard the G.722 voice at {before:.0}"
    );
    assert!(
        db_ratio(muted, before) < -40.0,
        "muted by its in-band 0, the G.722 phone is still heard at {:.1} dB",
        db_ratio(muted, before)
    );
    assert!(
        db_ratio(after, before).abs() < 1.0,
        "unmuted by a second 0, it is heard at {:.1} dB",
        db_ratio(after, before)
    );
    presser.hangup().await.expect("bye");
    listener.hangup().await.expect("bye");
}

/// baresip with G.722 first, then PCMU, sending a 5 kHz sine (a tone only
/// wideband carries), for `seconds`, dialling `uri`.
fn run_baresip_g722(dir: &Path, uri: &str, seconds: u32) -> std::process::Child {
    let (sip_port, low) = (free_port(), free_port());
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\n\
         audio_player aubridge,sink\naudio_alert aubridge,alert\n\
         audio_source ausine,5000\n\
         ausrc_srate 48000\nausrc_channels 2\n\
         rtp_ports {low}-{}\n\
         module_path /usr/lib/baresip/modules\n\
         module g722.so\nmodule g711.so\nmodule ausine.so\nmodule aubridge.so\n\
         module_app account.so\nmodule_app menu.so\n",
        u32::from(low) + 20,
    );
    std::fs::write(dir.join("config"), config).expect("baresip config");
    std::fs::write(
        dir.join("accounts"),
        format!(
            "<sip:caller@127.0.0.1:{sip_port}>;regint=0;\
             audio_codecs=G722/16000/1,PCMU/8000/1;answermode=manual\n"
        ),
    )
    .expect("baresip accounts");
    common::baresip::run(dir, uri, seconds)
}

/// A real phone offering G.722 first gets G.722, and its 5 kHz tone, coded
/// by another G.722 implementation, reaches a G.722 test phone in the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_offering_g722_first_is_answered_with_g722_and_heard_wideband() {
    if !require_tool(
        "baresip",
        "baresip_offering_g722_first_is_answered_with_g722_and_heard_wideband",
    ) {
        return;
    }
    let daemon = Daemon::with_rooms();
    let mut listener = g722_phone(&daemon).await;
    let dir = TempDir::new("sipconf-baresip-g722");
    let baresip = run_baresip_g722(dir.path(), &format!("sip:1000@{}", daemon.sip), 5);
    let heard = listener
        .stream(&Signal::Silence, Duration::from_millis(4000))
        .await
        .expect("the listener's media");
    let (_, answer) = common::baresip::established_call(baresip).await;
    assert!(
        answer.contains("RTP/AVP 9") && answer.contains("a=rtpmap:9 G722/8000"),
        "the answer is not G.722:\n{answer}"
    );
    // The loudest half second of 5 kHz the G.722 phone heard.
    let loudest = heard
        .samples
        .chunks(8000)
        .map(|half| tone_amplitude_at(half, 5000.0, heard.sample_rate_hz))
        .fold(0.0f64, f64::max);
    let off_tone = heard
        .samples
        .chunks(8000)
        .map(|half| tone_amplitude_at(half, 3000.0, heard.sample_rate_hz))
        .fold(0.0f64, f64::max);
    assert!(
        loudest > 1000.0 && loudest > 30.0 * off_tone,
        "the G.722 phone heard baresip's 5 kHz at amplitude {loudest:.0} (3 kHz: {off_tone:.0})"
    );
    listener.hangup().await.expect("bye");
}
