//! Who is talking, end to end (docs/api.md "Who is talking"): a phone's
//! tone then silence is seen in its member resource and, for a conference
//! created with `talkingEvents`, told to the application as
//! `conference-member` events with `talking` true then false; a conference
//! that did not ask is told nothing new. A phone that loses packets on the
//! way shows them in its member's `packetsLost`.

mod common;

use common::api::{answered_call, start_with_api, Api, CallbackServer};
use common::tempdir::TempDir;
use common::Daemon;
use serde_json::{json, Value};
use sipconf_testkit::testphone::{Phone, Signal};
use std::time::Duration;

const TONE: Signal = Signal::Sine {
    freq_hz: 400.0,
    amplitude: 3000.0,
};

/// A daemon whose unmatched calls go to `app` (at `/incoming`).
fn bridge(dir: &TempDir, app: &CallbackServer) -> (Daemon, Api) {
    let store = dir.path().join("sipconf.db");
    let section = format!(
        "[application]\nincoming_call_url = \"{}\"\n",
        app.url("/incoming")
    );
    start_with_api(&store, &section)
}

/// An answered call added to a new conference created with `body` (plus
/// `from`); returns the phone, the conference id and the member id.
async fn member_of_new_conference(
    daemon: &Daemon,
    api: &Api,
    app: &CallbackServer,
    body: Value,
) -> (Phone, String, String) {
    let mut create = json!({"from": "+1555"});
    create
        .as_object_mut()
        .expect("object")
        .extend(body.as_object().expect("object").clone());
    let conference = api.create_conference(create).await;
    let (phone, call_id) = answered_call(daemon.sip, "5555", api, app).await;
    let added = api
        .post(
            &format!("/conferences/{conference}/members"),
            json!({"callId": call_id}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    let member = common::api::last_segment(&added.location());
    // The media thread takes the member within a tick or two.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (phone, conference, member)
}

/// `conference-member` events at `path` about `member`: their `talking`
/// (`None` where the event has none).
fn talking_told(app: &CallbackServer, path: &str, member: &str) -> Vec<Option<bool>> {
    app.events_at(path)
        .iter()
        .filter(|e| e["eventType"] == "conference-member" && e["memberId"] == member)
        .map(|e| e.get("talking").and_then(Value::as_bool))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conference_with_talking_events_is_told_talking_true_then_false() {
    let dir = TempDir::new("talking");
    let app = CallbackServer::start().await;
    let (daemon, api) = bridge(&dir, &app);
    let bad = api
        .post(
            "/conferences",
            json!({"from": "+1555", "talkingEvents": "often"}),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (400, "validation-error".into()));
    let (mut asking, conference, member) = member_of_new_conference(
        &daemon,
        &api,
        &app,
        json!({"callbackUrl": app.url("/asked"), "talkingEvents": true}),
    )
    .await;
    let (mut plain, _, plain_member) = member_of_new_conference(
        &daemon,
        &api,
        &app,
        json!({"callbackUrl": app.url("/plain")}),
    )
    .await;
    let member_path = format!("/conferences/{conference}/members/{member}");
    assert_eq!(api.get(&member_path).await.json()["talking"], false);

    // Both phones talk for a second, at once; the resource reads talking
    // while it lasts.
    let plain_talks = tokio::spawn(async move {
        plain
            .stream(&TONE, Duration::from_secs(1))
            .await
            .expect("stream");
        plain
            .stream(&Signal::Silence, Duration::from_secs(1))
            .await
            .expect("stream");
        plain
    });
    asking
        .stream(&TONE, Duration::from_millis(600))
        .await
        .expect("stream");
    assert_eq!(api.get(&member_path).await.json()["talking"], true);
    asking
        .stream(&TONE, Duration::from_millis(400))
        .await
        .expect("stream");
    asking
        .stream(&Signal::Silence, Duration::from_secs(1))
        .await
        .expect("stream");
    let _plain = plain_talks.await.expect("task");
    assert_eq!(api.get(&member_path).await.json()["talking"], false);

    // Joined (talking false), talking, not talking: in that order.
    let mut told = Vec::new();
    for _ in 0..50 {
        told = talking_told(&app, "/asked", &member);
        if told.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(told, [Some(false), Some(true), Some(false)]);
    // The other conference heard of its member's joining, as v1 tells it,
    // and of nothing else.
    assert_eq!(talking_told(&app, "/plain", &plain_member), [None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_a_phone_loses_on_the_way_show_in_its_members_packets_lost() {
    let dir = TempDir::new("quality");
    let app = CallbackServer::start().await;
    let (daemon, api) = bridge(&dir, &app);
    let (mut phone, conference, member) =
        member_of_new_conference(&daemon, &api, &app, json!({})).await;
    phone.lose_every(Some(10));
    phone
        .stream(&TONE, Duration::from_secs(2))
        .await
        .expect("stream");
    phone.lose_every(None);
    // More than a second more, so the figures are published after the last loss.
    phone
        .stream(&TONE, Duration::from_millis(1300))
        .await
        .expect("stream");
    assert_eq!(phone.packets_lost, 10);
    let resource = api
        .get(&format!("/conferences/{conference}/members/{member}"))
        .await
        .json();
    assert_eq!(resource["packetsLost"], 10, "{resource}");
    let received = resource["packetsReceived"]
        .as_u64()
        .expect("packetsReceived");
    // 165 frames sent, less the lost; those of the last second may not be published yet.
    assert!((100..=155).contains(&received), "{resource}");
    assert!(resource["jitterMs"].as_f64().is_some(), "{resource}");
}
