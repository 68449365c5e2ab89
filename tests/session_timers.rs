//! RFC 4028 session timers against a real peer: sipp (Debian `sip-tester`)
//! calls the bridge with `Session-Expires`, `Require: timer` and too short an
//! interval, refreshes or leaves the refreshing to the bridge, or never
//! refreshes; and the bridge calls sipp, asking for a timer it then refreshes.
//! The scenarios (tests/sipp/timer_*.xml, uas_timer.xml) check the headers of
//! every answer and fail on any message they do not expect.
//!
//! The long ones wait out real intervals (RFC 4028's shortest is 90 s, so the
//! first refresh comes at 45 s and a missing one is noticed at 60 s); they run
//! side by side.

mod common;

use common::api::{api_sections, last_segment, Api, CallbackServer};
use common::sipp::{run_uac, scenario};
use common::tempdir::TempDir;
use common::{free_port, require_tool, Addresses, Daemon};
use serde_json::json;
use sipconf::media::Codec;
use sipconf_testkit::testphone::{Phone, PhoneOptions};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROOM: &str = "[[room]]\nnumber = \"1000\"\n";

/// Runs `scenario_file` against `daemon` on a blocking thread.
async fn sipp_uac(
    daemon: &Daemon,
    name: &'static str,
    timeout_s: u32,
) -> tokio::task::JoinHandle<(bool, String)> {
    let bridge = daemon.sip;
    tokio::task::spawn_blocking(move || {
        let dir = TempDir::new("sipconf-timer");
        run_uac(bridge, &dir, &scenario(name), "1000", timeout_s)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_by_update_and_reinvite_keep_a_call_without_rtp_up() {
    if !require_tool(
        "sipp",
        "refreshes_by_update_and_reinvite_keep_a_call_without_rtp_up",
    ) {
        return;
    }
    // sipp sends no RTP: without the refreshes counting as signs of life the
    // call would be hung up 3 s in, and sipp's next refresh would get 481.
    let daemon = Daemon::start("rtp_timeout = 3", ROOM);
    let (ok, log) = sipp_uac(&daemon, "timer_caller_refreshes.xml", 30)
        .await
        .await
        .expect("sipp task");
    assert!(ok, "sipp failed:\n{log}");
    assert!(!daemon.logged("RTP timeout"), "the call was timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_refreshes_when_it_may_and_byes_a_session_never_refreshed() {
    if !require_tool(
        "sipp",
        "the_bridge_refreshes_when_it_may_and_byes_a_session_never_refreshed",
    ) {
        return;
    }
    // No RTP timeout: these calls send no RTP for a minute.
    let daemon = Daemon::start("rtp_timeout = 0", ROOM);
    let refreshed = sipp_uac(&daemon, "timer_bridge_refreshes.xml", 90).await;
    let expired = sipp_uac(&daemon, "timer_expires.xml", 90).await;
    let (ok, log) = refreshed.await.expect("sipp task");
    assert!(ok, "the bridge's UPDATE refresh:\n{log}");
    let (ok, log) = expired.await.expect("sipp task");
    assert!(ok, "the BYE of a session never refreshed:\n{log}");
    assert!(daemon.wait_for_log("session expired", Duration::from_secs(2)));
    assert!(!daemon.logged("RTP timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_timer_is_answered_and_a_short_interval_gets_422() {
    if !require_tool(
        "sipp",
        "require_timer_is_answered_and_a_short_interval_gets_422",
    ) {
        return;
    }
    let daemon = Daemon::start("", ROOM);
    let (ok, log) = sipp_uac(&daemon, "timer_require.xml", 20)
        .await
        .await
        .expect("sipp task");
    assert!(ok, "Require: timer:\n{log}");
    let (ok, log) = sipp_uac(&daemon, "timer_422.xml", 20)
        .await
        .await
        .expect("sipp task");
    assert!(ok, "422 and the retry:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_call_asks_for_a_timer_and_refreshes_it() {
    if !require_tool("sipp", "an_outbound_call_asks_for_a_timer_and_refreshes_it") {
        return;
    }
    let dir = TempDir::new("sipconf-timer-uac");
    let app = CallbackServer::start().await;
    let api_port = free_port();
    let host = IpAddr::from(Ipv4Addr::LOCALHOST);
    // No RTP timeout: sipp answers but sends no RTP for the 45 s to the refresh.
    let daemon = Daemon::start_with_addresses(
        Addresses::on(host),
        "rtp_timeout = 0",
        &api_sections(api_port, &dir.path().join("sipconf.db"), ROOM),
    );
    let api = Api::new(api_port);
    let sipp_port = free_port();
    let sipp_media = free_port();
    let mut sipp = Command::new("sipp")
        .current_dir(dir.path())
        .arg("-sf")
        .arg(scenario("uas_timer.xml"))
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-p", &sipp_port.to_string(), "-mp", &sipp_media.to_string()])
        .args(["-m", "1", "-timeout", "90", "-timeout_error", "-nostdin"])
        .args(["-trace_err", "-error_file", "errors.log"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp");
    // sipp binds its port after start-up.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut phone = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("room call");
    let list = api.get("/conferences").await.json();
    let room = list[0]["id"].as_str().expect("room conference").to_string();
    let placed = api
        .post(
            "/calls",
            json!({
                "from": "+1000",
                "to": format!("sip:callee@127.0.0.1:{sipp_port}"),
                "conferenceId": room,
                "callbackUrl": app.url("/call"),
            }),
        )
        .await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let call_id = last_segment(&placed.location());
    let answered = app.wait_for("/call", 1, Duration::from_secs(10)).await;
    assert_eq!(answered[0].event()["eventType"], "answer");

    // The refresh is due 45 s after the answer; the log says when it succeeded.
    assert!(
        daemon.wait_for_log("session refreshed", Duration::from_secs(60)),
        "the bridge did not refresh the session"
    );
    let hangup = api
        .post(&format!("/calls/{call_id}"), json!({"state": "completed"}))
        .await;
    assert_eq!(hangup.status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Ok(Some(status)) = sipp.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = sipp.kill();
            let _ = sipp.wait();
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
