//! The packaged program, smoke-tested: the `sipconf` unpacked from a .deb
//! (in CI the arm64 one, run under qemu-user) takes real calls into a room
//! from test phones on this machine, which decode and measure what they hear.
//!
//! Ignored unless asked for, since it needs a built package (`.ci/packages`):
//!
//! ```sh
//! SIPCONF_PACKAGED_BIN=unpacked/usr/bin/sipconf SIPCONF_PACKAGED_RUNNER="qemu-aarch64 -L /" \
//!     cargo test --test package -- --ignored --nocapture
//! ```

use sipconf::media::Codec;
use sipconf_testkit::daemon::Daemon;
use sipconf_testkit::meter::{db_ratio, tone_amplitude};
use sipconf_testkit::room::{
    assert_each_hears_the_others_and_not_itself, sine, steady, stream_together, AMPLITUDE,
};
use sipconf_testkit::tempdir::TempDir;
use sipconf_testkit::testphone::{Phone, PhoneOptions, Signal};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The packaged binary, wrapped in a script that runs it under
/// `SIPCONF_PACKAGED_RUNNER` (an emulator and its arguments) when that is set:
/// the daemon harness starts one program and signals it, and `exec` makes
/// the emulator that program.
fn packaged_program(dir: &Path) -> PathBuf {
    let bin = std::env::var("SIPCONF_PACKAGED_BIN").expect(
        "SIPCONF_PACKAGED_BIN must name the sipconf unpacked from a .deb (see .ci/packages)",
    );
    assert!(Path::new(&bin).is_file(), "no program at {bin}");
    let runner = std::env::var("SIPCONF_PACKAGED_RUNNER").unwrap_or_default();
    let wrapper = dir.join("sipconf");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec {runner} {bin} \"$@\"\n"))
        .expect("write wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .expect("chmod wrapper");
    eprintln!("packaged bridge: {runner} {bin}");
    wrapper
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a built package: SIPCONF_PACKAGED_BIN (see .ci/packages)"]
async fn the_packaged_bridge_carries_a_call_into_a_room_with_audio() {
    let dir = TempDir::new("sipconf-package");
    let mut daemon = Daemon::with_rooms(&packaged_program(dir.path()));
    let freqs = [500.0, 1300.0];
    let mut phones = Vec::new();
    for codec in [Codec::Pcmu, Codec::Pcma] {
        let phone = Phone::call(PhoneOptions::new(daemon.sip, "1000", codec))
            .await
            .expect("the packaged bridge answers the call");
        assert_eq!(phone.codec, codec);
        phones.push(phone);
    }
    let signals: Vec<Signal> = freqs.iter().map(|&f| sine(f)).collect();
    let results = stream_together(phones, &signals, Duration::from_millis(3000)).await;
    for (i, (_, recording)) in results.iter().enumerate() {
        let other = freqs[1 - i];
        let heard = tone_amplitude(steady(&recording.samples), other);
        eprintln!(
            "packaged bridge: phone {i} received {} packets; the other phone's {other} Hz \
             tone at amplitude {heard:.0} of {AMPLITUDE:.0} sent ({:+.2} dB, {:.1} dBFS)",
            recording.packets,
            db_ratio(heard, AMPLITUDE),
            db_ratio(heard, 32768.0),
        );
    }
    assert_each_hears_the_others_and_not_itself(&results, &freqs);
    for (mut phone, _) in results {
        assert_eq!(phone.hangup().await.expect("BYE answered"), 200);
    }
    assert!(
        daemon
            .stop()
            .expect("the bridge exits on SIGTERM")
            .success(),
        "the packaged bridge exits cleanly"
    );
}
