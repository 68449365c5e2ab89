//! SIP over TLS and SRTP with SDES keys (RFC 4568) against a real third-party
//! phone: baresip (Debian `baresip-core`), set to mandatory SRTP
//! (`mediaenc=srtp-mand`: an RTP/SAVP offer with `a=crypto`), calls a room,
//! over UDP and over TLS, and sends a 700 Hz tone; a plain RTP phone of the
//! test kit in the same room must hear it, decoded and measured. The TLS
//! certificates are made at test time with the `openssl` program, and
//! baresip checks the bridge's against the test CA. With `media.srtp =
//! "require"` a plain offer gets 488.

mod common;

use common::{free_port, require_tool, tempdir::TempDir, Daemon};
use sipconf::media::Codec;
use sipconf_testkit::meter::tone_amplitude;
use sipconf_testkit::testphone::{CallError, Phone, PhoneOptions, Signal};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TONE_HZ: f64 = 700.0;
const ROOM: &str = "[[room]]\nnumber = \"1000\"\n";

/// A baresip configuration: SIP on `sip_port` (and TLS on the port above,
/// trusting `ca`), a 700 Hz sine as its microphone, what it hears dropped,
/// and one account with `mediaenc`.
fn write_baresip_config(dir: &Path, sip_port: u16, mediaenc: &str, ca: Option<&Path>) {
    let low = free_port();
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\n\
         audio_player aubridge,sink\naudio_alert aubridge,alert\n\
         audio_source ausine,{TONE_HZ}\n\
         ausrc_srate 48000\nausrc_channels 2\n\
         rtp_ports {low}-{}\n\
         module_path /usr/lib/baresip/modules\n\
         module g711.so\nmodule ausine.so\nmodule aubridge.so\nmodule srtp.so\n\
         module_app account.so\nmodule_app menu.so\n{}",
        u32::from(low) + 20,
        ca.map(|ca| format!("sip_cafile {}\n", ca.display()))
            .unwrap_or_default()
    );
    std::fs::write(dir.join("config"), config).expect("baresip config");
    let account = format!(
        "<sip:caller@127.0.0.1:{sip_port}>;regint=0;mediaenc={mediaenc};\
         audio_codecs=PCMU/8000/1;answermode=manual\n"
    );
    std::fs::write(dir.join("accounts"), account).expect("baresip accounts");
}

/// A test CA and a certificate for 127.0.0.1 it signed, made with the
/// `openssl` program in `dir`: (CA, certificate, key) PEM files.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec_key = "ec_paramgen_curve:prime256v1";
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        ec_key,
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=sipconf test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        ec_key,
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "bridge.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("bridge.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("extensions");
    run(&[
        "x509",
        "-req",
        "-in",
        "bridge.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "bridge.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

/// baresip (mandatory SRTP) calls room 1000 at `uri` with a 700 Hz tone while
/// a plain phone listens; returns baresip's output with its SIP trace, after
/// asserting the listener heard the tone.
async fn baresip_is_heard(daemon: &Daemon, uri: &str, ca: Option<&Path>) -> String {
    let mut listener = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("the plain phone calls the room");
    let dir = TempDir::new("sipconf-baresip");
    write_baresip_config(dir.path(), free_port(), "srtp-mand", ca);
    let baresip = common::baresip::run(dir.path(), uri, 5);
    // The call is set up within a second or two; then the tone plays.
    let heard = listener
        .stream(&Signal::Silence, Duration::from_millis(4000))
        .await
        .expect("the listener's media");
    let (log, answer) = common::baresip::established_call(baresip).await;
    let answer = &answer;
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
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_on_srtp_over_udp_is_heard_by_a_plain_phone_in_the_room() {
    let test = "baresip_on_srtp_over_udp_is_heard_by_a_plain_phone_in_the_room";
    if !require_tool("baresip", test) {
        return;
    }
    let daemon = Daemon::start("", ROOM);
    baresip_is_heard(&daemon, &format!("sip:1000@{}", daemon.sip), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_over_tls_with_srtp_is_heard_by_a_plain_phone_in_the_room() {
    let test = "baresip_over_tls_with_srtp_is_heard_by_a_plain_phone_in_the_room";
    if !require_tool("baresip", test) || !require_tool("openssl", test) {
        return;
    }
    let certificates = TempDir::new("sipconf-certificates");
    let (ca, certificate, key) = make_certificates(certificates.path());
    let tls_port = free_port();
    let tls = format!(
        "{ROOM}\n[sip.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncertificate = \"{}\"\n\
         key = \"{}\"\n",
        certificate.display(),
        key.display()
    );
    let daemon = Daemon::start("", &tls);
    assert!(daemon.logged("SIP over TLS"), "TLS is not listening");
    let log = baresip_is_heard(
        &daemon,
        &format!("sip:1000@127.0.0.1:{tls_port};transport=tls"),
        Some(&ca),
    )
    .await;
    // Signalling went over TLS, and the bridge's Contact asks for TLS again.
    assert!(
        log.contains(&format!("TLS 127.0.0.1:{tls_port} -> ")),
        "no SIP over TLS in baresip's trace:\n{log}"
    );
    let answer = &log[log.find("SIP/2.0 200 OK").expect("a 200")..];
    assert!(
        answer.contains(&format!(
            "Contact: <sip:1000@127.0.0.1:{tls_port};transport=tls>"
        )),
        "the 200's Contact is not our TLS address:\n{answer}"
    );
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
