//! Callback events as an application's web server receives them: exact field
//! sets, order, tag, GET mode, URL credentials, fallback, retry, and delivery
//! (and records) across a daemon restart.

mod common;

use common::api::{
    keys, last_segment, names, start_with_api, start_with_api_on, Api, CallbackServer,
};
use common::tempdir::TempDir;
use common::{free_port, Daemon};
use serde_json::{json, Value};
use sipconf_testkit::testphone::Phone;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

fn app_section(app: &CallbackServer) -> String {
    format!(
        "[application]\nincoming_call_url = \"{}\"\n",
        app.url("/incoming")
    )
}

/// Places a call to an unmatched number and answers it through the API;
/// returns the phone and the call id.
async fn answered_call(daemon: &Daemon, api: &Api, app: &CallbackServer) -> (Phone, String) {
    common::api::answered_call(daemon.sip, "5555", api, app).await
}

fn store(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("sipconf.db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conference_and_member_events_carry_every_field_in_order_with_the_tag() {
    let dir = TempDir::new("cb-fields");
    let app = CallbackServer::start().await;
    let (daemon, api) = start_with_api(&store(&dir), &app_section(&app));
    let conf = api
        .create_conference(json!({"from": "+1555", "callbackUrl": app.url("/conf"), "tag": "team"}))
        .await;
    let (_phone, call_id) = answered_call(&daemon, &api, &app).await;
    let added = api
        .post(
            &format!("/conferences/{conf}/members"),
            json!({"callId": call_id}),
        )
        .await;
    assert_eq!(added.status, 201);
    let member = last_segment(&added.location());
    let muted = api
        .post(
            &format!("/conferences/{conf}/members/{member}"),
            json!({"mute": true}),
        )
        .await;
    assert_eq!(muted.status, 200);
    let done = api
        .post(
            &format!("/conferences/{conf}"),
            json!({"state": "completed"}),
        )
        .await;
    assert_eq!(done.status, 200);

    let got = app.wait_for("/conf", 5, WAIT).await;
    assert_eq!(got.len(), 5, "{got:#?}");
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/json; charset=utf-8")
        );
    }
    let events: Vec<Value> = got.iter().map(|r| r.event()).collect();
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["eventType"].as_str().unwrap_or_default(),
                e.get("status")
                    .or(e.get("state"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            "conference created",
            "conference-member active",
            "conference-member active",
            "conference-member completed",
            "conference completed"
        ]
    );
    let conference_uri = api.user_url(&format!("/conferences/{conf}"));
    assert_eq!(
        keys(&events[0]),
        names(&[
            "eventType",
            "conferenceId",
            "conferenceUri",
            "status",
            "createdTime",
            "tag"
        ])
    );
    assert_eq!(events[0]["conferenceUri"], conference_uri.as_str());
    assert_eq!(events[0]["tag"], "team");
    let created = events[0]["createdTime"].as_str().unwrap();
    assert_eq!(created.len(), "2026-01-01T00:00:00.000Z".len(), "{created}");
    let member_fields = names(&[
        "eventType",
        "conferenceId",
        "callId",
        "memberId",
        "memberUri",
        "activeMembers",
        "state",
        "hold",
        "mute",
        "time",
        "tag",
    ]);
    for e in &events[1..4] {
        assert_eq!(keys(e), member_fields, "{e}");
        assert_eq!(e["callId"], call_id.as_str());
        assert_eq!(e["memberId"], member.as_str());
        assert_eq!(
            e["memberUri"],
            format!("{conference_uri}/members/{member}").as_str()
        );
    }
    assert_eq!(events[1]["activeMembers"], 1);
    assert_eq!(events[1]["mute"], false);
    assert_eq!(events[2]["mute"], true, "the mute change");
    assert_eq!(events[3]["activeMembers"], 0);
    assert_eq!(
        keys(&events[4]),
        names(&[
            "eventType",
            "conferenceId",
            "conferenceUri",
            "status",
            "createdTime",
            "completedTime",
            "tag"
        ])
    );
    assert_eq!(
        api.get(&format!("/calls/{call_id}")).await.json()["state"],
        "active",
        "completing the conference leaves its calls up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_mode_sends_query_parameters_and_url_credentials_as_basic_auth() {
    let dir = TempDir::new("cb-get");
    let app = CallbackServer::start().await;
    let (_daemon, api) = start_with_api(&store(&dir), "");
    let with_credentials = format!("http://bob:pa%40ss@{}/get", app.addr);
    let conf = api
        .create_conference(json!({
            "from": "1",
            "callbackUrl": with_credentials,
            "callbackHttpMethod": "GET",
        }))
        .await;
    let got = app.wait_for("/get", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "GET");
    assert!(got[0].body.is_empty());
    let event = got[0].event();
    assert_eq!(event["eventType"], "conference");
    assert_eq!(event["conferenceId"], conf.as_str());
    assert_eq!(event["status"], "created");
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode("bob:pa@ss");
    assert_eq!(
        got[0].authorization.as_deref(),
        Some(format!("Basic {expected}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_url_falls_back_once_and_a_flaky_one_is_retried_after_a_second() {
    let dir = TempDir::new("cb-retry");
    let app = CallbackServer::answering(|r, earlier| match r.path.as_str() {
        "/broken" => 500,
        "/flaky" if earlier == 0 => 503,
        _ => 200,
    })
    .await;
    let (_daemon, api) = start_with_api(&store(&dir), "");
    api.create_conference(json!({
        "from": "1",
        "callbackUrl": app.url("/broken"),
        "fallbackUrl": app.url("/fallback"),
    }))
    .await;
    let fallback = app.wait_for("/fallback", 1, WAIT).await;
    assert_eq!(fallback.len(), 1);
    assert_eq!(fallback[0].event()["status"], "created");
    assert_eq!(app.wait_for("/broken", 1, WAIT).await.len(), 1);

    api.create_conference(json!({"from": "2", "callbackUrl": app.url("/flaky")}))
        .await;
    let tries = app.wait_for("/flaky", 2, WAIT).await;
    assert_eq!(tries.len(), 2, "retried after the failure");
    let gap = tries[1].at - tries[0].at;
    assert!(
        gap >= Duration::from_millis(900),
        "the retry came after {gap:?}, not after the 1 s backoff"
    );
    assert_eq!(tries[0].body, tries[1].body, "the same event again");
    // Delivered: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.wait_for("/flaky", 3, Duration::ZERO).await.len(), 2);
    assert_eq!(app.wait_for("/broken", 2, Duration::ZERO).await.len(), 1);
}

/// Records before a SIGKILL read back unchanged; what was active is completed
/// on start; events that could not be delivered before are delivered after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_undelivered_events_survive_a_kill_and_restart() {
    let dir = TempDir::new("cb-restart");
    let app = CallbackServer::start().await;
    // The conference's callback server is not up yet: its events wait.
    let late_port = free_port();
    let late_url = format!("http://127.0.0.1:{late_port}/late");
    let api_port = free_port();
    let extra = app_section(&app);
    let daemon = start_with_api_on(api_port, &store(&dir), &extra);
    let api = Api::new(api_port);
    let quiet = api
        .create_conference(json!({"from": "+1666", "tag": "kept", "callbackTimeout": 500}))
        .await;
    let busy = api
        .create_conference(json!({"from": "+1777", "callbackUrl": late_url}))
        .await;
    let (_phone, call_id) = answered_call(&daemon, &api, &app).await;
    let added = api
        .post(
            &format!("/conferences/{busy}/members"),
            json!({"callId": call_id, "mute": true}),
        )
        .await;
    assert_eq!(added.status, 201);
    let member = last_segment(&added.location());
    let quiet_before = api.get(&format!("/conferences/{quiet}")).await.json();
    let member_before = api
        .get(&format!("/conferences/{busy}/members/{member}"))
        .await
        .json();
    assert_eq!(member_before["state"], "active");
    drop(daemon); // SIGKILL: nothing is completed on the way out

    let late = CallbackServer::answering_on(
        format!("127.0.0.1:{late_port}").parse().expect("addr"),
        |_, _| 200,
    )
    .await;
    let _daemon = restart(api_port, &store(&dir), &extra);
    api.wait_healthy().await;
    let quiet_after = api.get(&format!("/conferences/{quiet}")).await.json();
    assert_eq!(quiet_before, quiet_after, "read back unchanged");
    let member_after = api
        .get(&format!("/conferences/{busy}/members/{member}"))
        .await
        .json();
    assert_eq!(member_after["state"], "completed");
    assert!(member_after["removedTime"].is_string());
    assert_eq!(member_after["mute"], true);
    assert_eq!(member_after["addedTime"], member_before["addedTime"]);
    let busy_after = api.get(&format!("/conferences/{busy}")).await.json();
    assert_eq!(busy_after["state"], "completed");
    assert_eq!(busy_after["activeMembers"], 0);
    assert_eq!(
        api.get(&format!("/calls/{call_id}")).await.json()["state"],
        "completed"
    );

    let got = late.wait_for("/late", 4, Duration::from_secs(8)).await;
    let summary: Vec<String> = got
        .iter()
        .map(|r| {
            let e = r.event();
            format!(
                "{} {}",
                e["eventType"].as_str().unwrap_or_default(),
                e.get("status")
                    .or(e.get("state"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            "conference created",
            "conference-member active",
            "conference-member completed",
            "conference completed"
        ],
        "queued before the kill, then the completions on start, in order"
    );
}

fn restart(api_port: u16, store: &Path, extra: &str) -> Daemon {
    start_with_api_on(api_port, store, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_given_up_after_max_attempts_and_counted() {
    let dir = TempDir::new("cb-give-up");
    let app = CallbackServer::answering(|_, _| 500).await;
    let (_daemon, api) = start_with_api(&store(&dir), "[events]\nmax_attempts = 2\n");
    api.create_conference(json!({"from": "1", "callbackUrl": app.url("/down")}))
        .await;
    let tries = app.wait_for("/down", 2, WAIT).await;
    assert_eq!(tries.len(), 2);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        app.wait_for("/down", 3, Duration::ZERO).await.len(),
        2,
        "no third try with events.max_attempts = 2"
    );
    let metrics = api
        .send(
            api.client
                .get(format!("{}/metrics", api.base))
                .basic_auth(common::api::TOKEN, Some(common::api::SECRET)),
        )
        .await;
    assert!(
        metrics
            .text
            .contains("sipconf_callbacks_given_up_total 1\n"),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("sipconf_callback_failures_total 2\n"));
    assert!(metrics.text.contains("sipconf_callbacks_queued 0\n"));
}
