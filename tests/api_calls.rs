//! Calls through the API: a number that matches no room rings and goes to the
//! application (`incomingcall`), which answers, rejects or lets it time out,
//! adds it to conferences, and hangs it up. Test phones check what is heard.

mod common;

use common::api::{keys, last_segment, names, start_with_api, Api, CallbackServer};
use common::tempdir::TempDir;
use common::Daemon;
use serde_json::{json, Value};
use sipconf::media::Codec;
use sipconf_testkit::meter::{db_ratio, tone_amplitude};
use sipconf_testkit::testphone::{CallError, Phone, PhoneOptions, Signal};
use std::time::Duration;

const AMPLITUDE: f64 = 5000.0;
const WAIT: Duration = Duration::from_secs(5);

fn steady(samples: &[i16]) -> &[i16] {
    let start = 4000.min(samples.len());
    let end = (start + 8000).min(samples.len());
    &samples[start..end]
}

/// A daemon whose unmatched numbers go to `app` at `/incoming`, with room 1000.
fn daemon_with_app(dir: &TempDir, app: &CallbackServer, answer_timeout_s: u32) -> (Daemon, Api) {
    start_with_api(
        &dir.path().join("sipconf.db"),
        &format!(
            "[application]\nincoming_call_url = \"{}\"\nanswer_timeout = {answer_timeout_s}\n\n[[room]]\nnumber = \"1000\"\n",
            app.url("/incoming")
        ),
    )
}

/// Dials `number` in the background; returns the task and the `incomingcall` event.
async fn ring(
    daemon: &Daemon,
    app: &CallbackServer,
    number: &str,
    nth: usize,
) -> (tokio::task::JoinHandle<Result<Phone, CallError>>, Value) {
    let options = PhoneOptions::new(daemon.sip, number, Codec::Pcmu);
    let task = tokio::spawn(Phone::call(options));
    let got = app.wait_for("/incoming", nth, WAIT).await;
    assert_eq!(got.len(), nth, "no incomingcall event");
    (task, got[nth - 1].event())
}

/// The room conference of number `from` (through the API's list).
async fn conference_from(api: &Api, from: &str) -> Value {
    let list = api.get("/conferences").await.json();
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["from"] == from && c["state"] != "completed")
        .cloned()
        .unwrap_or_else(|| panic!("no conference from {from}: {list}"))
}

async fn stream_both(mut a: Phone, mut b: Phone, b_freq: f64) -> (Phone, Phone, Vec<i16>) {
    let ta = tokio::spawn(async move {
        let rec = a
            .stream(&Signal::Silence, Duration::from_millis(1500))
            .await;
        (a, rec)
    });
    let tb = tokio::spawn(async move {
        let signal = Signal::Sine {
            freq_hz: b_freq,
            amplitude: AMPLITUDE,
        };
        let rec = b.stream(&signal, Duration::from_millis(1500)).await;
        (b, rec)
    });
    let (a, rec_a) = ta.await.expect("a");
    let (b, _) = tb.await.expect("b");
    (a, b, rec_a.expect("a media").samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_incoming_call_joins_a_room_hears_it_and_is_controlled_through_the_api() {
    let dir = TempDir::new("api-calls");
    let app = CallbackServer::start().await;
    let (daemon, api) = daemon_with_app(&dir, &app, 10);

    let (task, incoming) = ring(&daemon, &app, "5555", 1).await;
    assert_eq!(
        keys(&incoming),
        names(&[
            "eventType",
            "callId",
            "callUri",
            "from",
            "to",
            "callState",
            "applicationId",
            "time"
        ]),
        "{incoming}"
    );
    assert_eq!(incoming["eventType"], "incomingcall");
    assert_eq!(incoming["callState"], "started");
    let call_id = incoming["callId"].as_str().unwrap().to_string();
    assert_eq!(
        incoming["callUri"],
        api.user_url(&format!("/calls/{call_id}")).as_str()
    );
    assert!(incoming["to"].as_str().unwrap().contains("5555"));
    assert!(
        incoming["time"].as_str().unwrap().contains('.'),
        "events carry millis"
    );

    let ringing = api.get(&format!("/calls/{call_id}")).await.json();
    assert_eq!(ringing["state"], "started");
    assert_eq!(ringing["direction"], "in");
    assert!(ringing.get("activeTime").is_none());

    let answer = api
        .post(
            &format!("/calls/{call_id}"),
            json!({"state": "active", "callbackUrl": app.url("/call"), "tag": "t1"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let a = task.await.expect("task").expect("the phone is answered");
    let answered = app.wait_for("/call", 1, WAIT).await;
    let event = answered[0].event();
    assert_eq!(event["eventType"], "answer");
    assert_eq!(event["callId"], call_id.as_str());
    assert_eq!(event["callState"], "active");
    assert_eq!(event["tag"], "t1");
    let call = api.get(&format!("/calls/{call_id}")).await.json();
    assert_eq!(call["state"], "active");
    assert!(call["activeTime"].is_string());
    assert_eq!(call["tag"], "t1");

    // A desk phone in room 1000: its conference is an API conference too.
    let b = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("room call");
    let room = conference_from(&api, "1000").await;
    assert_eq!(room["state"], "active");
    assert_eq!(room["tag"], "Room 1000");
    let room_id = room["id"].as_str().unwrap().to_string();

    let added = api
        .post(
            &format!("/conferences/{room_id}/members"),
            json!({"callId": call_id, "joinTone": "false", "mute": null}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    let member_url = added.location();
    let member_id = last_segment(&member_url);
    let member = api.get_url(&member_url).await.json();
    assert_eq!(member["state"], "active");
    assert_eq!(
        member["call"],
        api.user_url(&format!("/calls/{call_id}")).as_str()
    );
    assert!(member.get("removedTime").is_none());
    assert_eq!(
        api.get(&format!("/conferences/{room_id}")).await.json()["activeMembers"],
        2
    );
    assert_eq!(
        api.get(&format!("/calls/{call_id}")).await.json()["conferenceId"],
        room_id.as_str()
    );

    let (a, b, heard) = stream_both(a, b, 700.0).await;
    let level = db_ratio(tone_amplitude(steady(&heard), 700.0), AMPLITUDE);
    eprintln!("the API-answered call hears the room phone at {level:+.2} dB");
    assert!(level.abs() < 1.5, "heard at {level:.2} dB");

    // Mute the room phone through the API: the mixer applies it at once.
    let members = api
        .get(&format!("/conferences/{room_id}/members"))
        .await
        .json();
    let list = members.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["id"], member_id.as_str(), "oldest first");
    let b_member = list[0]["id"].as_str().unwrap().to_string();
    let muted = api
        .post(
            &format!("/conferences/{room_id}/members/{b_member}"),
            json!({"mute": "true"}),
        )
        .await;
    assert_eq!(muted.status, 200);
    let (a, b, heard) = stream_both(a, b, 700.0).await;
    let level = db_ratio(tone_amplitude(steady(&heard), 700.0), AMPLITUDE);
    assert!(
        level < -40.0,
        "a muted member is still heard at {level:.1} dB"
    );

    // Unmuted, but the whole conference on hold: nobody hears anybody.
    let unmuted = api
        .post(
            &format!("/conferences/{room_id}/members/{b_member}"),
            json!({"mute": false}),
        )
        .await;
    assert_eq!(unmuted.status, 200);
    let held = api
        .post(&format!("/conferences/{room_id}"), json!({"hold": true}))
        .await;
    assert_eq!(held.status, 200);
    let (a, b, heard) = stream_both(a, b, 700.0).await;
    let level = db_ratio(tone_amplitude(steady(&heard), 700.0), AMPLITUDE);
    assert!(
        level < -40.0,
        "a held conference is still heard at {level:.1} dB"
    );
    let resumed = api
        .post(&format!("/conferences/{room_id}"), json!({"hold": "false"}))
        .await;
    assert_eq!(resumed.status, 200);
    let (a, b, heard) = stream_both(a, b, 700.0).await;
    let level = db_ratio(tone_amplitude(steady(&heard), 700.0), AMPLITUDE);
    assert!(
        level.abs() < 1.5,
        "after the hold it is heard at {level:.1} dB"
    );

    // The call is in the room; it cannot be in another conference too.
    let other = api.create_conference(json!({"from": "2"})).await;
    let twice = api
        .post(
            &format!("/conferences/{other}/members"),
            json!({"callId": call_id}),
        )
        .await;
    assert_eq!(twice.status, 403);
    assert_eq!(twice.code(), "call-invalid-state");

    // Removal leaves the call up.
    let removed = api
        .post(
            &format!("/conferences/{room_id}/members/{member_id}"),
            json!({"state": "completed"}),
        )
        .await;
    assert_eq!(removed.status, 200);
    let member = api.get_url(&member_url).await.json();
    assert_eq!(member["state"], "completed");
    assert!(member["removedTime"].is_string());
    assert_eq!(
        api.get(&format!("/calls/{call_id}")).await.json()["state"],
        "active"
    );
    let again = api
        .post(
            &format!("/conferences/{room_id}/members/{member_id}"),
            json!({"state": "completed"}),
        )
        .await;
    assert_eq!(again.status, 200, "removing twice does nothing");
    let late = api
        .post(
            &format!("/conferences/{room_id}/members/{member_id}"),
            json!({"mute": true}),
        )
        .await;
    assert_eq!(late.status, 403);
    assert_eq!(late.code(), "conference-error");

    // Now it may join the other conference.
    let joined = api
        .post(
            &format!("/conferences/{other}/members"),
            json!({"callId": call_id}),
        )
        .await;
    assert_eq!(joined.status, 201, "{}", joined.text);

    // Hang up through the API: the phone gets a BYE, the app a hangup event.
    let mut a = a;
    let hangup = api
        .post(&format!("/calls/{call_id}"), json!({"state": "completed"}))
        .await;
    assert_eq!(hangup.status, 200);
    assert!(a.wait_for_bye(WAIT).await, "no BYE after state completed");
    let events = app.wait_for("/call", 2, WAIT).await;
    let event = events[1].event();
    assert_eq!(event["eventType"], "hangup");
    assert_eq!(event["cause"], "NORMAL_CLEARING");
    assert_eq!(event["callState"], "completed");
    let call = api.get(&format!("/calls/{call_id}")).await.json();
    assert_eq!(call["state"], "completed");
    assert!(call["endTime"].is_string());
    assert!(call["chargeableDuration"].is_number());
    assert_eq!(
        api.get(&format!("/conferences/{other}")).await.json()["state"],
        "completed",
        "its last member hung up"
    );
    let mut b = b;
    assert_eq!(b.hangup().await.expect("bye"), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ringing_call_cannot_join_and_can_be_rejected_with_603() {
    let dir = TempDir::new("api-reject");
    let app = CallbackServer::start().await;
    let (daemon, api) = daemon_with_app(&dir, &app, 10);
    let (task, incoming) = ring(&daemon, &app, "6666", 1).await;
    let call_id = incoming["callId"].as_str().unwrap().to_string();
    let conf = api.create_conference(json!({"from": "1"})).await;
    let early = api
        .post(
            &format!("/conferences/{conf}/members"),
            json!({"callId": call_id}),
        )
        .await;
    assert_eq!(early.status, 503);
    assert_eq!(early.code(), "call-unavailable");
    let reject = api
        .post(&format!("/calls/{call_id}"), json!({"state": "REJECTED"}))
        .await;
    assert_eq!(reject.status, 200, "{}", reject.text);
    match task.await.expect("task") {
        Err(CallError::Rejected(603, _)) => {}
        other => panic!("expected 603, got {:?}", other.map(|_| "answered")),
    }
    let call = api.get(&format!("/calls/{call_id}")).await.json();
    assert_eq!(call["state"], "rejected");
    let bad = api
        .post(&format!("/calls/{call_id}"), json!({"state": "sideways"}))
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_answering_within_answer_timeout_gets_480() {
    let dir = TempDir::new("api-timeout");
    let app = CallbackServer::start().await;
    let (daemon, api) = daemon_with_app(&dir, &app, 1);
    let (task, incoming) = ring(&daemon, &app, "7777", 1).await;
    match task.await.expect("task") {
        Err(CallError::Rejected(480, _)) => {}
        other => panic!("expected 480, got {:?}", other.map(|_| "answered")),
    }
    let call_id = incoming["callId"].as_str().unwrap();
    let call = api.get(&format!("/calls/{call_id}")).await.json();
    assert_eq!(call["state"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_without_a_room_or_application_get_404() {
    let dir = TempDir::new("api-404");
    let (daemon, api) = start_with_api(&dir.path().join("sipconf.db"), "");
    match Phone::call(PhoneOptions::new(daemon.sip, "5555", Codec::Pcmu)).await {
        Err(CallError::Rejected(404, _)) => {}
        other => panic!("expected 404, got {:?}", other.map(|_| "answered")),
    }
    assert!(api.get("/calls/c-none").await.status == 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_caller_removed_or_completed_through_the_api_is_hung_up() {
    let dir = TempDir::new("sipconf-api");
    let app = CallbackServer::start().await;
    let (daemon, api) = daemon_with_app(&dir, &app, 10);
    let mut a = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("a joins the room");
    let mut b = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("b joins the room");
    let conference = conference_from(&api, "1000").await;
    let id = conference["id"].as_str().unwrap().to_string();
    let members = api.get(&format!("/conferences/{id}/members")).await.json();
    let first = members[0]["id"].as_str().unwrap().to_string();

    // Removing a room caller: nobody controls its call, so it gets a BYE.
    let removed = api
        .post(
            &format!("/conferences/{id}/members/{first}"),
            json!({"state": "completed"}),
        )
        .await;
    assert_eq!(removed.status, 200);
    assert!(
        a.wait_for_bye(WAIT).await,
        "the removed room caller is hung up"
    );

    // Completing the room's conference hangs up the rest.
    let done = api
        .post(&format!("/conferences/{id}"), json!({"state": "completed"}))
        .await;
    assert_eq!(done.status, 200);
    assert!(
        b.wait_for_bye(WAIT).await,
        "completing the room hangs up its callers"
    );
    let call = api
        .get_url(members[1]["call"].as_str().unwrap())
        .await
        .json();
    assert_eq!(call["state"], "completed", "{call}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_by_key_shows_in_the_member_record_and_its_event() {
    use sipconf_testkit::testphone::{KeyMode, KeyPress};
    let dir = TempDir::new("sipconf-api");
    let app = CallbackServer::start().await;
    let (daemon, api) = daemon_with_app(&dir, &app, 10);
    let mut presser = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("joins the room");
    let conference = conference_from(&api, "1000").await;
    let id = conference["id"].as_str().unwrap().to_string();
    let members = api.get(&format!("/conferences/{id}/members")).await.json();
    let member_url = format!(
        "/conferences/{id}/members/{}",
        members[0]["id"].as_str().unwrap()
    );
    assert_eq!(api.get(&member_url).await.json()["mute"], false);
    presser
        .stream_with_keys(
            &Signal::Silence,
            Duration::from_millis(600),
            &[KeyPress::new(100, '0', KeyMode::Rfc4733)],
        )
        .await
        .expect("media");
    let member = api.get(&member_url).await.json();
    assert_eq!(
        member["mute"], true,
        "0 mutes, and the record says so: {member}"
    );
    presser
        .stream_with_keys(
            &Signal::Silence,
            Duration::from_millis(600),
            &[KeyPress::new(100, '*', KeyMode::InBand)],
        )
        .await
        .expect("media");
    let member = api.get(&member_url).await.json();
    assert_eq!(member["mute"], true, "{member}");
    assert_eq!(member["deaf"], true, "* deafens: {member}");
    presser.hangup().await.expect("bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthru_conference_sends_keys_as_dtmf_events_and_they_change_nothing() {
    use sipconf_testkit::testphone::{KeyMode, KeyPress};
    let dir = TempDir::new("sipconf-api");
    let app = CallbackServer::start().await;
    let (daemon, api) = daemon_with_app(&dir, &app, 10);
    let conference = api
        .create_conference(json!({
            "from": "+15550001",
            "profile": "passthru_digits",
            "callbackUrl": app.url("/conference"),
        }))
        .await;
    let (task, incoming) = ring(&daemon, &app, "5555", 1).await;
    let call_id = incoming["callId"].as_str().unwrap().to_string();
    let answered = api
        .post(
            &format!("/calls/{call_id}"),
            json!({"state": "active", "callbackUrl": app.url("/call")}),
        )
        .await;
    assert_eq!(answered.status, 200, "{}", answered.text);
    let mut phone = task.await.expect("task").expect("answered");
    let added = api
        .post(
            &format!("/conferences/{conference}/members"),
            json!({"callId": call_id}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    let member_url = format!(
        "/conferences/{conference}/members/{}",
        last_segment(&added.location())
    );
    phone
        .stream_with_keys(
            &Signal::Silence,
            Duration::from_millis(1400),
            &[
                KeyPress::new(100, '0', KeyMode::Rfc4733),
                KeyPress::new(500, '#', KeyMode::InBand),
                KeyPress::new(900, '7', KeyMode::Both),
            ],
        )
        .await
        .expect("media");
    let events: Vec<Value> = app
        .wait_for("/call", 4, WAIT)
        .await
        .iter()
        .map(|r| r.event())
        .filter(|e| e["eventType"] == "dtmf")
        .collect();
    let digits: Vec<&str> = events
        .iter()
        .map(|e| e["dtmfDigit"].as_str().unwrap())
        .collect();
    assert_eq!(digits, ["0", "#", "7"], "{events:?}");
    for event in &events {
        assert_eq!(event["callId"], call_id.as_str());
        assert!(event["dtmfDuration"].as_u64().unwrap() >= 60, "{event}");
    }
    // The keys did nothing: not muted, and # did not hang up.
    assert_eq!(api.get(&member_url).await.json()["mute"], false);
    assert!(!phone.wait_for_bye(Duration::from_millis(300)).await);
    phone.hangup().await.expect("bye");
}
