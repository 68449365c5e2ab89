//! Wideband end to end on loopback: G.722 and Opus test phones and G.711
//! ones in one room of the real daemon, each decoding what it receives with
//! its own codec.

mod common;

use common::room::{sine, stream_together, AMPLITUDE};
use common::Daemon;
use sipconf::media::Codec;
use sipconf_testkit::meter::{db_ratio, tone_amplitude_at};
use sipconf_testkit::testphone::{AnsweredCodec, G722Offer, Phone, PhoneOptions, Recording};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g722_phone_and_a_pcmu_phone_hear_each_other_within_1_db() {
    let daemon = Daemon::with_rooms();
    let phones = vec![g722_phone(&daemon).await, pcmu_phone(&daemon).await];
    let results = stream_together(
        phones,
        &[sine(1000.0), sine(600.0)],
        Duration::from_millis(1500),
    )
    .await;
    let (wide, narrow) = (&results[0].1, &results[1].1);
    assert_eq!(wide.sample_rate_hz, 16_000);
    let (from_narrow, from_wide) = (heard_db(wide, 600.0), heard_db(narrow, 1000.0));
    assert!(
        from_narrow.abs() <= 1.0,
        "G.722 heard PCMU at {from_narrow:.2} dB"
    );
    assert!(
        from_wide.abs() <= 1.0,
        "PCMU heard G.722 at {from_wide:.2} dB"
    );
    for (mut phone, _) in results {
        assert_eq!(phone.hangup().await.expect("bye"), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_khz_from_a_g722_phone_reaches_g722_and_not_pcmu() {
    let daemon = Daemon::with_rooms();
    let phones = vec![
        g722_phone(&daemon).await,
        g722_phone(&daemon).await,
        pcmu_phone(&daemon).await,
    ];
    let silence = sipconf_testkit::testphone::Signal::Silence;
    let results = stream_together(
        phones,
        &[sine(6000.0), silence.clone(), silence],
        Duration::from_millis(1500),
    )
    .await;
    let wide_db = heard_db(&results[1].1, 6000.0);
    assert!(wide_db.abs() <= 1.0, "G.722 heard 6 kHz at {wide_db:.2} dB");
    // Folded back it would be 2 kHz; measure everything the PCMU phone got.
    let narrow = &results[2].1.samples;
    let steady = &narrow[4000..narrow.len().min(8000)];
    let rms =
        (steady.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / steady.len() as f64).sqrt();
    let narrow_db = db_ratio(rms * 2f64.sqrt(), AMPLITUDE);
    assert!(
        narrow_db < -40.0,
        "PCMU heard {narrow_db:.1} dB of the 6 kHz tone"
    );
    for (mut phone, _) in results {
        assert_eq!(phone.hangup().await.expect("bye"), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_phone_and_a_pcmu_phone_hear_each_other_within_1_db() {
    if !opus_here("an_opus_phone_and_a_pcmu_phone_hear_each_other_within_1_db") {
        return;
    }
    let daemon = Daemon::with_rooms();
    let phones = vec![opus_phone(&daemon).await, pcmu_phone(&daemon).await];
    let results = stream_together(
        phones,
        &[sine(1000.0), sine(600.0)],
        Duration::from_millis(1500),
    )
    .await;
    let (wide, narrow) = (&results[0].1, &results[1].1);
    assert_eq!(wide.sample_rate_hz, 16_000);
    let (from_narrow, from_wide) = (heard_db(wide, 600.0), heard_db(narrow, 1000.0));
    assert!(
        from_narrow.abs() <= 1.0,
        "Opus heard PCMU at {from_narrow:.2} dB"
    );
    assert!(
        from_wide.abs() <= 1.0,
        "PCMU heard Opus at {from_wide:.2} dB"
    );
    for (mut phone, _) in results {
        assert_eq!(phone.hangup().await.expect("bye"), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_khz_from_an_opus_phone_reaches_opus_and_not_pcmu() {
    if !opus_here("six_khz_from_an_opus_phone_reaches_opus_and_not_pcmu") {
        return;
    }
    let daemon = Daemon::with_rooms();
    let phones = vec![
        opus_phone(&daemon).await,
        opus_phone(&daemon).await,
        pcmu_phone(&daemon).await,
    ];
    let silence = sipconf_testkit::testphone::Signal::Silence;
    let results = stream_together(
        phones,
        &[sine(6000.0), silence.clone(), silence],
        Duration::from_millis(1500),
    )
    .await;
    let wide_db = heard_db(&results[1].1, 6000.0);
    assert!(wide_db.abs() <= 1.0, "Opus heard 6 kHz at {wide_db:.2} dB");
    let narrow = &results[2].1.samples;
    let steady = &narrow[4000..narrow.len().min(8000)];
    let rms =
        (steady.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / steady.len() as f64).sqrt();
    let narrow_db = db_ratio(rms * 2f64.sqrt(), AMPLITUDE);
    assert!(
        narrow_db < -40.0,
        "PCMU heard {narrow_db:.1} dB of the 6 kHz tone"
    );
    for (mut phone, _) in results {
        assert_eq!(phone.hangup().await.expect("bye"), 200);
    }
}
