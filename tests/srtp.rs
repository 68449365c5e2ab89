//! SRTP with SDES keys (RFC 4568) against a real third-party phone: baresip
//! (Debian `baresip`), set to mandatory SRTP (`mediaenc=srtp-mand`: an
//! RTP/SAVP offer with `a=crypto`), calls a room and sends a 700 Hz tone; a
//! plain RTP phone of the test kit in the same room must hear it, decoded
//! and measured. With `media.srtp = "require"` a plain offer gets 488.

mod common;

use common::{free_port, require_tool, tempdir::TempDir, Daemon};
use sipconf::media::Codec;
use sipconf_testkit::meter::tone_amplitude;
use sipconf_testkit::testphone::{CallError, Phone, PhoneOptions, Signal};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const TONE_HZ: f64 = 700.0;
const ROOM: &str = "[[room]]\nnumber = \"1000\"\n";

/// A baresip configuration: SIP on `sip_port`, a 700 Hz sine as its
/// microphone, what it hears dropped, and one account with `mediaenc`.
fn write_baresip_config(dir: &Path, sip_port: u16, mediaenc: &str) {
    let low = free_port();
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\n\
         audio_player aubridge,sink\naudio_alert aubridge,alert\n\
         audio_source ausine,{TONE_HZ}\n\
         ausrc_srate 48000\nausrc_channels 2\n\
         rtp_ports {low}-{}\n\
         module_path /usr/lib/baresip/modules\n\
         module g711.so\nmodule ausine.so\nmodule aubridge.so\nmodule srtp.so\n\
         module_app account.so\nmodule_app menu.so\n",
        u32::from(low) + 20
    );
    std::fs::write(dir.join("config"), config).expect("baresip config");
    let account = format!(
        "<sip:caller@127.0.0.1:{sip_port}>;regint=0;mediaenc={mediaenc};\
         audio_codecs=PCMU/8000/1;answermode=manual\n"
    );
    std::fs::write(dir.join("accounts"), account).expect("baresip accounts");
}

/// Starts baresip for `seconds`, dialling `uri` at once, its SIP traced to stdout.
fn run_baresip(dir: &Path, uri: &str, seconds: u32) -> std::process::Child {
    Command::new("baresip")
        .arg("-s")
        .arg("-f")
        .arg(dir)
        .arg("-e")
        .arg(format!("/dial {uri}"))
        .arg("-t")
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start baresip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_on_srtp_is_heard_by_a_plain_phone_in_the_room() {
    let test = "baresip_on_srtp_is_heard_by_a_plain_phone_in_the_room";
    if !require_tool("baresip", test) {
        return;
    }
    let daemon = Daemon::start("", ROOM);
    let mut listener = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("the plain phone calls the room");
    let dir = TempDir::new("sipconf-baresip");
    write_baresip_config(dir.path(), free_port(), "srtp-mand");
    let baresip = run_baresip(dir.path(), &format!("sip:1000@{}", daemon.sip), 5);
    // The call is set up within a second or two; then the tone plays.
    let heard = listener
        .stream(&Signal::Silence, Duration::from_millis(4000))
        .await
        .expect("the listener's media");
    let output = tokio::task::spawn_blocking(move || baresip.wait_with_output())
        .await
        .expect("join")
        .expect("baresip ran");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        log.contains("Call established"),
        "baresip's call was not established:\n{log}"
    );
    // The bridge answered SRTP: RTP/SAVP with its own a=crypto.
    let answer_at = log
        .find("SIP/2.0 200 OK")
        .expect("a 200 in baresip's trace");
    let answer = &log[answer_at..];
    assert!(
        answer.contains("RTP/SAVP"),
        "answer not on RTP/SAVP:\n{answer}"
    );
    assert!(
        answer.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "answer without a=crypto:\n{answer}"
    );
    // The loudest second of the tone the plain phone heard, and what it
    // heard at a frequency baresip never sent.
    let loudest = |hz: f64| {
        heard
            .samples
            .chunks(8000)
            .map(|second| tone_amplitude(second, hz))
            .fold(0.0f64, f64::max)
    };
    let (tone, off_tone) = (loudest(TONE_HZ), loudest(1300.0));
    assert!(
        tone > 2000.0 && tone > 30.0 * off_tone,
        "the plain phone heard the SRTP caller's tone at amplitude {tone:.0} \
         (1300 Hz: {off_tone:.0}); the daemon's log:\n{}",
        daemon.log.lock().expect("log").join("\n")
    );
    listener.hangup().await.expect("listener bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_srtp_required_a_plain_offer_gets_488() {
    let daemon = Daemon::start("srtp = \"require\"\n", ROOM);
    match Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu)).await {
        Err(CallError::Rejected(488, reason)) => assert!(
            reason.contains("SRTP is required here"),
            "488 without saying why: {reason}"
        ),
        Err(other) => panic!("expected 488, got {other}"),
        Ok(_) => panic!("a plain call was answered although SRTP is required"),
    }
}
