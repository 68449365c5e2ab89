//! Outbound calls: `POST /calls` sends an INVITE to sipp acting as a UAS
//! (echoing RTP), the answered call joins the conference named in
//! `conferenceId`, and a room phone hears its own voice come back through the
//! outbound leg: proof that the callee hears the room and is heard in it.

mod common;

use common::api::{api_sections, last_segment, start_with_api, Api, CallbackServer};
use common::tempdir::TempDir;
use common::{free_port, require_tool, Addresses, Daemon};
use serde_json::json;
use sipconf::media::Codec;
use sipconf_testkit::meter::{db_ratio, tone_amplitude};
use sipconf_testkit::testphone::{Phone, PhoneOptions, Signal};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AMPLITUDE: f64 = 5000.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_call_rings_sipp_joins_the_room_on_answer_and_hangs_up() {
    outbound_call_through_sipp(
        "an_outbound_call_rings_sipp_joins_the_room_on_answer_and_hangs_up",
        IpAddr::from(Ipv4Addr::LOCALHOST),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_call_over_ipv6_rings_sipp_joins_the_room_and_hangs_up() {
    outbound_call_through_sipp(
        "an_outbound_call_over_ipv6_rings_sipp_joins_the_room_and_hangs_up",
        IpAddr::from(Ipv6Addr::LOCALHOST),
    )
    .await;
}

/// The bridge, its room phone and sipp all on `host`: the bridge calls sipp,
/// which answers and echoes RTP, and the room phone hears itself come back.
/// `test` names the test when sipp is missing.
async fn outbound_call_through_sipp(test: &str, host: IpAddr) {
    if !require_tool("sipp", test) {
        return;
    }
    let dir = TempDir::new("api-outbound");
    let app = CallbackServer::start().await;
    let api_port = free_port();
    let daemon = Daemon::start_with_addresses(
        Addresses::on(host),
        "",
        &api_sections(
            api_port,
            &dir.path().join("sipconf.db"),
            "[[room]]\nnumber = \"1000\"\n",
        ),
    );
    let api = Api::new(api_port);
    let host_text = host.to_string();
    // sipp's and SIP's way of writing the host in a URI.
    let uri_host = match host {
        IpAddr::V4(_) => host_text.clone(),
        IpAddr::V6(_) => format!("[{host}]"),
    };
    let sipp_port = free_port();
    let sipp_media = free_port();
    let mut sipp = Command::new("sipp")
        .current_dir(dir.path())
        .args(["-sn", "uas", "-i", &host_text, "-mi", &host_text])
        .args(["-p", &sipp_port.to_string(), "-mp", &sipp_media.to_string()])
        .args(["-rtp_echo", "-m", "1", "-timeout", "30", "-nostdin"])
        .args(["-trace_err", "-error_file", "errors.log"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp");
    // sipp binds its port after start-up.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut options = PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu);
    options.local_ip = host;
    let mut phone = Phone::call(options).await.expect("room call");
    let list = api.get("/conferences").await.json();
    let room = list[0]["id"].as_str().expect("room conference").to_string();

    let placed = api
        .post(
            "/calls",
            json!({
                "from": "+1000",
                "to": format!("sip:echo@{uri_host}:{sipp_port}"),
                "conferenceId": room,
                "callbackUrl": app.url("/call"),
                "callTimeout": "10",
                "tag": "out",
            }),
        )
        .await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let call_id = last_segment(&placed.location());
    let call = api.get_url(&placed.location()).await.json();
    assert_eq!(call["direction"], "out");
    assert_eq!(
        call["to"],
        format!("sip:echo@{uri_host}:{sipp_port}").as_str()
    );

    let answered = app.wait_for("/call", 1, Duration::from_secs(10)).await;
    assert_eq!(answered.len(), 1, "no answer event");
    let event = answered[0].event();
    assert_eq!(event["eventType"], "answer");
    assert_eq!(event["tag"], "out");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = api.get(&format!("/conferences/{room}")).await.json();
        if c["activeMembers"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outbound call never joined: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        api.get(&format!("/calls/{call_id}")).await.json()["conferenceId"],
        room.as_str()
    );

    let signal = Signal::Sine {
        freq_hz: 700.0,
        amplitude: AMPLITUDE,
    };
    let recording = phone
        .stream(&signal, Duration::from_millis(2000))
        .await
        .expect("media");
    let tail = &recording.samples[recording.samples.len().saturating_sub(8000)..];
    let level = db_ratio(tone_amplitude(tail, 700.0), AMPLITUDE);
    eprintln!("the room phone hears itself through the outbound leg at {level:+.2} dB");
    assert!(
        level > -6.0,
        "the echo through the outbound call came back at {level:.1} dB"
    );

    let hangup = api
        .post(&format!("/calls/{call_id}"), json!({"state": "completed"}))
        .await;
    assert_eq!(hangup.status, 200);
    let events = app.wait_for("/call", 2, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event()["eventType"], "hangup");
    assert_eq!(events[1].event()["cause"], "NORMAL_CLEARING");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(status)) = sipp.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = sipp.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let errors = std::fs::read_to_string(dir.path().join("errors.log")).unwrap_or_default();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "sipp did not finish its call cleanly: {errors}"
    );
    assert_eq!(phone.hangup().await.expect("bye"), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_requests_are_checked_before_anything_is_sent() {
    let dir = TempDir::new("api-outbound-bad");
    let (_daemon, api) = start_with_api(&dir.path().join("sipconf.db"), "");
    let no_proxy = api
        .post("/calls", json!({"from": "+1", "to": "+15551234"}))
        .await;
    assert_eq!(no_proxy.status, 400);
    assert_eq!(no_proxy.code(), "invalid-to");
    let no_conference = api
        .post(
            "/calls",
            json!({"from": "+1", "to": "sip:a@127.0.0.1:9", "conferenceId": "conf-nope"}),
        )
        .await;
    assert_eq!(no_conference.status, 404);
    assert_eq!(no_conference.code(), "conference-not-found");
    let missing = api.post("/calls", json!({"to": "sip:a@127.0.0.1:9"})).await;
    assert_eq!(missing.code(), "missing-property");
}
