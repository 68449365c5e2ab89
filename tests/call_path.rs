//! End to end on loopback: test phones dial the real daemon, talk, hold, hang
//! up, and check by decoding what they receive.

mod common;

use common::room::{
    assert_each_hears_the_others_and_not_itself, sine, steady, stream_together, AMPLITUDE,
};
use common::Daemon;
use sipconf::media::Codec;
use sipconf_testkit::meter::{db_ratio, peak, tone_amplitude};
use sipconf_testkit::testphone::{CallError, Phone, PhoneOptions, Signal};
use std::time::Duration;

async fn three_phones_hear_the_others_and_not_themselves(codecs: [Codec; 3]) {
    let daemon = Daemon::with_rooms();
    let freqs = [500.0, 800.0, 1300.0];
    let mut phones = Vec::new();
    for codec in codecs {
        let phone = Phone::call(PhoneOptions::new(daemon.sip, "1000", codec))
            .await
            .expect("call answered");
        assert_eq!(
            phone.codec, codec,
            "the bridge answers with the offered codec"
        );
        phones.push(phone);
    }
    let signals: Vec<Signal> = freqs.iter().map(|&f| sine(f)).collect();
    let results = stream_together(phones, &signals, Duration::from_millis(2000)).await;
    assert_each_hears_the_others_and_not_itself(&results, &freqs);
    for (mut phone, _) in results {
        assert_eq!(phone.hangup().await.expect("bye"), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pcmu_phones_hear_each_other_and_not_themselves() {
    three_phones_hear_the_others_and_not_themselves([Codec::Pcmu; 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_and_pcma_phones_in_one_room_hear_each_other() {
    three_phones_hear_the_others_and_not_themselves([Codec::Pcmu, Codec::Pcma, Codec::Pcma]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_takes_the_first_of_media_codecs_that_the_offer_carries() {
    // The default order puts PCMU before PCMA, whatever the phone's order.
    let daemon = Daemon::with_rooms();
    let mut options = PhoneOptions::new(daemon.sip, "1000", Codec::Pcma);
    options.codecs = vec![Codec::Pcma, Codec::Pcmu];
    let mut phone = Phone::call(options.clone()).await.expect("answered");
    assert_eq!(phone.codec, Codec::Pcmu);
    phone.hangup().await.expect("bye");
    // With `media.codecs` turned round, the same offer gets PCMA.
    let daemon = Daemon::start("codecs = [\"pcma\", \"pcmu\"]\n", "");
    options.server = daemon.sip;
    let mut phone = Phone::call(options).await.expect("answered");
    assert_eq!(phone.codec, Codec::Pcma);
    assert_eq!(
        phone.telephone_event,
        Some(101),
        "telephone-event keeps the offered payload type"
    );
    assert!(
        phone.answer_sdp.contains("a=ptime:20"),
        "{}",
        phone.answer_sdp
    );
    phone.hangup().await.expect("bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_on_hold_is_not_heard_and_hears_silence_then_resumes() {
    let daemon = Daemon::with_rooms();
    let a = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("a");
    let mut b = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("b");

    let answer = b.reinvite("sendonly").await.expect("hold accepted");
    assert!(answer.contains("a=recvonly"), "hold answer: {answer}");

    let signals = [sine(600.0), sine(900.0)];
    let mut results = stream_together(vec![a, b], &signals, Duration::from_millis(1500)).await;
    let (mut b, rec_b) = results.pop().expect("b");
    let (a, rec_a) = results.pop().expect("a");
    let heard_b = tone_amplitude(steady(&rec_a.samples), 900.0);
    assert!(
        db_ratio(heard_b, AMPLITUDE) < -40.0,
        "a still hears the held phone at {:.1} dB",
        db_ratio(heard_b, AMPLITUDE)
    );
    assert!(
        peak(&rec_b.samples) < 100,
        "the held phone receives more than silence (peak {})",
        peak(&rec_b.samples)
    );

    let answer = b.reinvite("sendrecv").await.expect("resume accepted");
    assert!(answer.contains("a=sendrecv"), "resume answer: {answer}");
    let mut results = stream_together(vec![a, b], &signals, Duration::from_millis(1500)).await;
    let (mut b, rec_b) = results.pop().expect("b");
    let (mut a, rec_a) = results.pop().expect("a");
    assert!(
        db_ratio(tone_amplitude(steady(&rec_a.samples), 900.0), AMPLITUDE).abs() <= 1.0,
        "after resume a hears b"
    );
    assert!(
        db_ratio(tone_amplitude(steady(&rec_b.samples), 600.0), AMPLITUDE).abs() <= 1.0,
        "after resume b hears a"
    );
    a.hangup().await.expect("a bye");
    b.hangup().await.expect("b bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_with_inactive_and_with_zero_address_is_recognised() {
    let daemon = Daemon::with_rooms();
    let mut a = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("a");
    let answer = a.reinvite("inactive").await.expect("inactive");
    assert!(answer.contains("a=inactive"), "{answer}");
    let answer = a.reinvite("hold-c0").await.expect("c=0.0.0.0");
    assert!(
        answer.contains("a=inactive") || answer.contains("a=recvonly"),
        "c=0.0.0.0 is hold: {answer}"
    );
    a.hangup().await.expect("bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_answer_gives_487() {
    let daemon = Daemon::start("", "[[room]]\nnumber = \"3000\"\nanswer_delay_ms = 1500\n");
    let (invite, cancel) =
        Phone::call_and_cancel(PhoneOptions::new(daemon.sip, "3000", Codec::Pcmu))
            .await
            .expect("cancel flow");
    assert_eq!(cancel, 200);
    assert_eq!(invite, 487);
    // The ringing call was never answered: no member joined.
    std::thread::sleep(Duration::from_millis(1800));
    assert!(!daemon.logged("member joined"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_completes_the_member_and_the_last_one_out_completes_the_conference() {
    let daemon = Daemon::with_rooms();
    let mut a = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("a");
    let mut b = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("b");
    assert_eq!(a.hangup().await.expect("a bye"), 200);
    assert!(daemon.wait_for_log("call ended: caller hung up", Duration::from_secs(2)));
    assert!(!daemon.logged("conference completed"), "b is still there");
    assert_eq!(b.hangup().await.expect("b bye"), 200);
    assert!(daemon.wait_for_log("conference completed", Duration::from_secs(2)));
    // The next caller starts a new conference.
    let created_before = count(&daemon, "conference created");
    let mut c = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("c");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while count(&daemon, "conference created") == created_before
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&daemon, "conference created"), created_before + 1);
    c.hangup().await.expect("c bye");
}

fn count(daemon: &Daemon, needle: &str) -> usize {
    daemon
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

async fn expect_rejected(options: PhoneOptions, code: u16) {
    match Phone::call(options).await {
        Err(CallError::Rejected(status, _)) => assert_eq!(status, code),
        Err(e) => panic!("expected {code}, got {e}"),
        Ok(_) => panic!("expected {code}, the call was answered"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_number_gets_404() {
    let daemon = Daemon::with_rooms();
    expect_rejected(PhoneOptions::new(daemon.sip, "9999", Codec::Pcmu), 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_common_codec_gets_488() {
    let daemon = Daemon::with_rooms();
    let mut options = PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu);
    options.codecs = vec![];
    options.other_payloads = vec![(18, "G729/8000".into()), (3, "GSM/8000".into())];
    expect_rejected(options, 488).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_gets_486() {
    let daemon = Daemon::with_rooms();
    let mut a = Phone::call(PhoneOptions::new(daemon.sip, "2000", Codec::Pcmu))
        .await
        .expect("a");
    let mut b = Phone::call(PhoneOptions::new(daemon.sip, "2000", Codec::Pcmu))
        .await
        .expect("b");
    expect_rejected(PhoneOptions::new(daemon.sip, "2000", Codec::Pcmu), 486).await;
    a.hangup().await.expect("a");
    // A place is free again.
    let mut c = Phone::call(PhoneOptions::new(daemon.sip, "2000", Codec::Pcmu))
        .await
        .expect("c");
    b.hangup().await.expect("b");
    c.hangup().await.expect("c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mixer_gets_486() {
    let daemon = Daemon::start("max_members = 2", "[[room]]\nnumber = \"1000\"\n");
    let mut a = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("a");
    let mut b = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("b");
    expect_rejected(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu), 486).await;
    a.hangup().await.expect("a");
    b.hangup().await.expect("b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_datagrams_do_not_stop_the_next_call() {
    let mut daemon = Daemon::with_rooms();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let truncated = b"INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nCall-ID: x\r\nCSeq: 1 INV";
    let no_call_id = format!(
        "OPTIONS sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKgarbage1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        socket.local_addr().unwrap()
    );
    let inputs: Vec<&[u8]> = vec![
        b"",
        b"\x00\x01\x02\xff\xfe garbage",
        truncated,
        b"SIP/2.0 200 OK\r\n\r\n",
        no_call_id.as_bytes(),
    ];
    for input in &inputs {
        socket.send_to(input, daemon.sip).await.expect("send");
    }
    // The request with a Via but no Call-ID is answered 400 with the reason.
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .expect("an answer to the request without Call-ID")
        .expect("recv");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("SIP/2.0 400 "), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("call-id"),
        "the reason names the header: {text}"
    );

    let mut phone = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("a call right after garbage works");
    phone.hangup().await.expect("bye");
    assert!(daemon.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_silence_past_the_timeout_hangs_the_call_up() {
    let daemon = Daemon::start("rtp_timeout = 1", "[[room]]\nnumber = \"1000\"\n");
    let mut phone = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("call");
    // The phone sends no RTP at all.
    assert!(
        phone.wait_for_bye(Duration::from_secs(4)).await,
        "the bridge hangs up"
    );
    assert!(daemon.wait_for_log("call ended: RTP timeout", Duration::from_secs(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_is_not_timed_out() {
    let daemon = Daemon::start("rtp_timeout = 1", "[[room]]\nnumber = \"1000\"\n");
    let mut phone = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("call");
    phone.reinvite("inactive").await.expect("hold");
    assert!(
        !phone.wait_for_bye(Duration::from_millis(2500)).await,
        "no BYE while on hold"
    );
    phone.hangup().await.expect("bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_bye_to_every_call_and_exits_cleanly() {
    let mut daemon = Daemon::with_rooms();
    let mut a = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("a");
    let mut b = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcma))
        .await
        .expect("b");
    let bye_a = tokio::spawn(async move { a.wait_for_bye(Duration::from_secs(5)).await });
    let bye_b = tokio::spawn(async move { b.wait_for_bye(Duration::from_secs(5)).await });
    let status = tokio::task::spawn_blocking(move || daemon.stop())
        .await
        .expect("stop");
    assert!(bye_a.await.expect("a"), "phone a got BYE");
    assert!(bye_b.await.expect("b"), "phone b got BYE");
    assert!(status.expect("exited").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_is_answered_over_udp_and_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = Daemon::with_rooms();
    let options = |via: &str| {
        format!(
            "OPTIONS sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bKopt{}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: opt-{}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            via.len(),
            via.len()
        )
    };
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let request = options(&format!("UDP {}", udp.local_addr().unwrap()));
    udp.send_to(request.as_bytes(), daemon.sip)
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), udp.recv_from(&mut buf))
        .await
        .expect("udp answer")
        .expect("recv");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(text.starts_with("SIP/2.0 200"), "{text}");
    assert!(text.contains("Allow:") && text.contains("INVITE"), "{text}");

    let mut tcp = tokio::net::TcpStream::connect(daemon.sip)
        .await
        .expect("tcp");
    let request = options(&format!("TCP {}", tcp.local_addr().unwrap()));
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("SIP/2.0 200"), "tcp: {text}");
}
