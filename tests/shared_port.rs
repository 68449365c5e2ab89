//! `media.shared_port` end to end: every call is answered with the one shared
//! RTP port, the bridge tells the phones apart by source address, a phone
//! whose RTP comes from another port than its SDP named (a NAT) is latched,
//! and calls come and go without disturbing the others.

mod common;

use common::room::{assert_each_hears_the_others_and_not_itself, sine, stream_together};
use common::{Addresses, Daemon};
use sipconf::media::Codec;
use sipconf_testkit::testphone::{Phone, PhoneOptions, Signal};
use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

const ROOM: &str = "[[room]]\nnumber = \"1000\"\n";
const TALK: Duration = Duration::from_millis(2000);

fn shared_port_daemon() -> Daemon {
    Daemon::start("shared_port = true", ROOM)
}

async fn call(daemon: &Daemon, options: PhoneOptions) -> Phone {
    let phone = Phone::call(options).await.expect("call answered");
    assert_eq!(
        phone.remote_rtp.ip(),
        daemon.sip.ip(),
        "media on the daemon's address"
    );
    phone
}

/// The phones talk at once, `freqs[i]` each, and each must hear the others.
async fn talk(phones: Vec<Phone>, freqs: &[f64]) -> Vec<Phone> {
    let signals: Vec<Signal> = freqs.iter().map(|&f| sine(f)).collect();
    let results = stream_together(phones, &signals, TALK).await;
    assert_each_hears_the_others_and_not_itself(&results, freqs);
    results.into_iter().map(|(phone, _)| phone).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_phones_share_one_port_hear_each_other_and_calls_come_and_go() {
    let daemon = shared_port_daemon();
    let mut phones = Vec::new();
    for _ in 0..3 {
        let options = PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu);
        phones.push(call(&daemon, options).await);
    }
    let port = phones[0].remote_rtp;
    for phone in &phones {
        assert_eq!(phone.remote_rtp, port, "every SDP answer names one port");
    }
    let mut phones = talk(phones, &[500.0, 800.0, 1300.0]).await;

    let mut gone = phones.remove(0);
    assert_eq!(gone.hangup().await.expect("bye"), 200);
    let mut phones = talk(phones, &[800.0, 1300.0]).await;

    let newcomer = call(&daemon, PhoneOptions::new(daemon.sip, "1000", Codec::Pcma)).await;
    assert_eq!(
        newcomer.remote_rtp, port,
        "the next call shares the port too"
    );
    phones.push(newcomer);
    let phones = talk(phones, &[800.0, 1300.0, 2100.0]).await;
    for mut phone in phones {
        assert_eq!(phone.hangup().await.expect("bye"), 200);
    }
}

/// A shared port bound to `::` carries IPv4 phones too, which the kernel
/// reports as ::ffff:a.b.c.d; the IPv4-mapped loopback is the same socket
/// kind on loopback alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_phones_on_a_dual_stack_shared_port_hear_each_other() {
    // SIP stays on IPv4 here; tests/loadtest.rs runs SIP dual-stack too.
    let addresses = Addresses {
        bind: Addresses::dual_stack_loopback().bind,
        ..Addresses::on(IpAddr::from([127, 0, 0, 1]))
    };
    let daemon = Daemon::start_with_addresses(addresses, "shared_port = true", ROOM);
    let mut phones = Vec::new();
    for _ in 0..2 {
        let options = PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu);
        phones.push(call(&daemon, options).await);
    }
    for mut phone in talk(phones, &[500.0, 1300.0]).await {
        assert_eq!(phone.hangup().await.expect("bye"), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_whose_rtp_comes_from_another_port_than_its_sdp_is_latched_and_heard() {
    let daemon = shared_port_daemon();
    // The port the phone's SDP names: open, so what the bridge sends there
    // before it latches lands somewhere, but nobody listens to it.
    let nat_outside = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut options = PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu);
    options.advertised_rtp_port = Some(nat_outside.local_addr().expect("bound").port());
    let behind_nat = call(&daemon, options).await;
    let other = call(&daemon, PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu)).await;
    // The bridge takes the NAT's port only from a member 200 ms old (a newer
    // call from the same IP could be sending before its member is filed),
    // after four packets in sequence; then the phone is heard.
    let signals = [sine(700.0), sine(1100.0)];
    let latching = stream_together(
        vec![behind_nat, other],
        &signals,
        Duration::from_millis(700),
    )
    .await;
    let phones = latching.into_iter().map(|(phone, _)| phone).collect();
    let phones = talk(phones, &[700.0, 1100.0]).await;
    for mut phone in phones {
        assert_eq!(phone.hangup().await.expect("bye"), 200);
    }
}

#[test]
fn start_up_fails_clearly_when_the_shared_port_is_taken() {
    // An even port held by someone else: the first even port of the range.
    let taken = (0..100)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .find(|s| s.local_addr().expect("bound").port() % 2 == 0)
        .expect("an even ephemeral port in 100 tries");
    let port = taken.local_addr().expect("bound").port();
    let dir = common::tempdir::TempDir::new("sipconf-shared");
    let config = dir.path().join("sipconf.toml");
    let config_text = format!(
        "[sip]\nlisten = \"127.0.0.1:{}\"\n\n[media]\nbind_address = \"127.0.0.1\"\nrtp_ports = \"{port}-{}\"\nshared_port = true\n\n[store]\npath = \"{}\"\n",
        common::free_port(),
        port + 9,
        dir.path().join("sipconf.db").display()
    );
    std::fs::write(&config, config_text).expect("write config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sipconf"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sipconf");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("sipconf started although its shared port was taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("cannot bind the shared RTP port 127.0.0.1:{port}")),
        "{stderr}"
    );
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_in_a_pin_lobby_on_the_shared_port_join_and_hear_each_other() {
    use sipconf_testkit::testphone::{KeyMode, KeyPress};
    let daemon = Daemon::start(
        "shared_port = true",
        "[[room]]\nnumber = \"1000\"\npin = \"42\"\npin_prompt = \"PIN.\"\n",
    );
    let mut phones = Vec::new();
    for _ in 0..2 {
        let mut phone = call(&daemon, PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu)).await;
        // The prompt plays first; keys pressed during it still count.
        let keys: Vec<KeyPress> = "42#"
            .chars()
            .enumerate()
            .map(|(i, digit)| KeyPress::new(200 + 200 * i as u64, digit, KeyMode::Rfc4733))
            .collect();
        phone
            .stream_with_keys(&Signal::Silence, Duration::from_millis(1200), &keys)
            .await
            .expect("media");
        phones.push(phone);
    }
    let joined = || {
        let log = daemon.log.lock().expect("log lock");
        log.iter().filter(|l| l.contains("member joined")).count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while joined() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(joined(), 2, "the PIN let both callers in");
    assert_eq!(
        phones[0].remote_rtp, phones[1].remote_rtp,
        "one shared port"
    );
    let phones = talk(phones, &[600.0, 1000.0]).await;
    for mut phone in phones {
        assert_eq!(phone.hangup().await.expect("bye"), 200);
    }
}
