//! How loud one phone hears another's tone: the tests behind a proxy or a
//! registrar measure a call's audio this way.

use sipconf_testkit::meter::tone_amplitude;
use sipconf_testkit::testphone::{Phone, Signal};
use std::time::Duration;

/// `talker` sends a `freq_hz` sine at `amplitude` for 1.5 s while `listener`
/// listens; the listener's loudest half second of that tone, in dB against
/// what was sent.
pub async fn heard_db(
    listener: &mut Phone,
    talker: &mut Phone,
    freq_hz: f64,
    amplitude: f64,
) -> f64 {
    let tone = Signal::Sine { freq_hz, amplitude };
    let (heard, sent) = tokio::join!(
        listener.stream(&Signal::Silence, Duration::from_millis(1500)),
        talker.stream(&tone, Duration::from_millis(1500)),
    );
    sent.expect("talker media");
    let heard = heard.expect("listener media");
    let loudest = heard
        .samples
        .chunks(4000)
        .map(|window| tone_amplitude(window, freq_hz))
        .fold(0.0f64, f64::max);
    20.0 * (loudest.max(1e-9) / amplitude).log10()
}
