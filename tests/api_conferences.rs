//! The Conferences API against the running daemon over real HTTP: every
//! endpoint and error row of docs/api.md, lenient input, strict output.

mod common;

use common::api::{keys, last_segment, names, start_with_api, Api, SECRET, TOKEN, USER};
use common::tempdir::TempDir;
use serde_json::json;

fn store(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("sipconf.db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_required_and_checked() {
    let dir = TempDir::new("api-auth");
    let (_daemon, api) = start_with_api(&store(&dir), "");
    let url = api.user_url("/conferences/conf-x");

    let none = api.send(api.client.get(&url)).await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.headers["www-authenticate"].to_str().unwrap(),
        "Basic realm=\"sipconf\""
    );
    let body = none.json();
    assert_eq!(body["category"], "authentication");
    assert_eq!(body["code"], "unauthorized");

    let wrong = api
        .send(api.client.get(&url).basic_auth(TOKEN, Some("nope")))
        .await;
    assert_eq!(wrong.status, 401);
    let wrong_user = api
        .send(api.client.get(&url).basic_auth("other", Some(SECRET)))
        .await;
    assert_eq!(wrong_user.status, 401);

    let foreign = api
        .get_url(&format!("{}/v1/users/u-someoneelse/conferences", api.base))
        .await;
    assert_eq!(foreign.status, 401);
    assert_eq!(foreign.code(), "user-access-denied");

    let metrics = api
        .send(api.client.get(format!("{}/metrics", api.base)))
        .await;
    assert_eq!(metrics.status, 401, "metrics need credentials");
    let health = api
        .send(api.client.get(format!("{}/health", api.base)))
        .await;
    assert_eq!(health.status, 200, "health needs none: {}", health.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_answers_201_with_an_absolute_location_readable_at_once() {
    let dir = TempDir::new("api-create");
    let (_daemon, api) = start_with_api(&store(&dir), "");
    let answer = api.post("/conferences", json!({"from": "+15551234"})).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert!(answer.text.is_empty(), "create has an empty body");
    let location = answer.location();
    assert!(
        location.starts_with(&format!("{}/v1/users/{USER}/conferences/conf-", api.base)),
        "{location}"
    );
    let id = last_segment(&location);
    assert_eq!(id.len(), "conf-".len() + 22);

    let read = api.get_url(&location).await;
    assert_eq!(read.status, 200);
    assert_eq!(
        read.headers["content-type"].to_str().unwrap(),
        "application/json"
    );
    let c = read.json();
    assert_eq!(
        keys(&c),
        names(&[
            "id",
            "state",
            "from",
            "createdTime",
            "activeMembers",
            "hold",
            "mute",
            "profile",
            "callbackHttpMethod",
            "callbackTimeout"
        ]),
        "unset fields are omitted, never null: {c}"
    );
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["state"], "created");
    assert_eq!(c["from"], "+15551234");
    assert_eq!(c["activeMembers"], 0);
    assert_eq!(c["hold"], false);
    assert_eq!(c["mute"], false);
    assert_eq!(c["profile"], "interpret_digits");
    assert_eq!(c["callbackHttpMethod"], "POST");
    assert_eq!(c["callbackTimeout"], 10000);
    let created = c["createdTime"].as_str().unwrap();
    assert_eq!(created.len(), "2026-01-01T00:00:00Z".len(), "{created}");
    assert!(created.ends_with('Z') && !created.contains('.'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_is_lenient_and_output_strict() {
    let dir = TempDir::new("api-lenient");
    let (_daemon, api) = start_with_api(&store(&dir), "");
    let id = api
        .create_conference(json!({
            "from": "+1555",
            "callbackUrl": "http://127.0.0.1:9/cb",
            "callbackHttpMethod": "get",
            "callbackTimeout": "2000",
            "fallbackUrl": null,
            "profile": "PASSTHRU_DIGITS",
            "tag": "my tag",
            "somethingNew": {"nested": true},
        }))
        .await;
    let c = api.get(&format!("/conferences/{id}")).await.json();
    assert_eq!(c["callbackUrl"], "http://127.0.0.1:9/cb");
    assert_eq!(c["callbackHttpMethod"], "GET");
    assert_eq!(c["callbackTimeout"], 2000, "a real number: {c}");
    assert_eq!(c["profile"], "passthru_digits");
    assert_eq!(c["tag"], "my tag");
    assert!(c.get("fallbackUrl").is_none(), "null is absent: {c}");
    assert!(c.get("somethingNew").is_none());

    let update = api
        .post(
            &format!("/conferences/{id}"),
            json!({"mute": "TRUE", "hold": "false", "tag": null, "unknown": 1}),
        )
        .await;
    assert_eq!(update.status, 200, "200, never 204: {}", update.text);
    let c = api.get(&format!("/conferences/{id}")).await.json();
    assert_eq!(c["mute"], true);
    assert_eq!(c["hold"], false);
    assert_eq!(c["tag"], "my tag", "null leaves the tag alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_catapult_errors() {
    let dir = TempDir::new("api-errors");
    let (_daemon, api) = start_with_api(&store(&dir), "");

    let missing = api.post("/conferences", json!({"tag": "x"})).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.code(), "missing-property");
    let body = missing.json();
    assert_eq!(body["category"], "bad-request");
    assert!(body["message"].as_str().unwrap().contains("from"));
    assert_eq!(
        body["details"],
        json!([
            {"name": "requestPath", "value": format!("users/{USER}/conferences")},
            {"name": "requestMethod", "value": "POST"},
        ])
    );

    let malformed = api
        .send(
            api.client
                .post(api.user_url("/conferences"))
                .basic_auth(TOKEN, Some(SECRET))
                .header("Content-Type", "application/json")
                .body("{\"from\": "),
        )
        .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.code(), "validation-error");

    let bad_bool = api
        .post(
            "/conferences",
            json!({"from": "1", "callbackTimeout": "soon"}),
        )
        .await;
    assert_eq!(bad_bool.status, 400);
    assert_eq!(bad_bool.code(), "validation-error");
    assert!(bad_bool.json()["message"]
        .as_str()
        .unwrap()
        .contains("callbackTimeout"));

    let bad_url = api
        .post(
            "/conferences",
            json!({"from": "1", "callbackUrl": "not a url"}),
        )
        .await;
    assert_eq!(bad_url.status, 400);
    assert_eq!(bad_url.code(), "callback-invalid-url");

    let huge = "x".repeat(70 * 1024);
    let too_big = api
        .post("/conferences", json!({"from": "1", "tag": huge}))
        .await;
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.json()["category"], "limit");

    let unknown = api.get("/conferences/conf-doesnotexist").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.code(), "conference-not-found");
    assert_eq!(
        unknown.json()["message"],
        "The conference conf-doesnotexist could not be found"
    );
    assert_eq!(
        api.post("/conferences/conf-nope", json!({"mute": true}))
            .await
            .code(),
        "conference-not-found"
    );
    assert_eq!(
        api.get("/conferences/conf-nope/members").await.code(),
        "conference-not-found"
    );

    let id = api.create_conference(json!({"from": "1"})).await;
    let no_member = api
        .get(&format!("/conferences/{id}/members/member-nope"))
        .await;
    assert_eq!(no_member.status, 404);
    assert_eq!(no_member.code(), "conference-member-not-found");
    let no_call = api
        .post(
            &format!("/conferences/{id}/members"),
            json!({"callId": "c-nope"}),
        )
        .await;
    assert_eq!(no_call.status, 404);
    assert_eq!(no_call.code(), "call-not-found");
    let no_call_id = api
        .post(&format!("/conferences/{id}/members"), json!({}))
        .await;
    assert_eq!(no_call_id.code(), "missing-property");
    assert_eq!(
        api.get("/calls/c-nope").await.code(),
        "call-not-found",
        "calls have their own 404"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_conference_stays_readable_and_refuses_changes() {
    let dir = TempDir::new("api-complete");
    let (_daemon, api) = start_with_api(&store(&dir), "");
    completed_conference_is_readable_and_refuses_changes(&api).await;
}

/// With no completed record kept in memory, each is read back from the
/// SQLite file, and the API answers as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_conference_read_back_from_the_file_answers_the_same() {
    let dir = TempDir::new("api-complete-file");
    // `extra` follows the [store] section's path: this key is the store's.
    let (_daemon, api) = start_with_api(&store(&dir), "completed_in_memory = 0\n");
    let first = api.create_conference(json!({"from": "0"})).await;
    let done = api
        .post(
            &format!("/conferences/{first}"),
            json!({"state": "completed"}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text);
    let id = completed_conference_is_readable_and_refuses_changes(&api).await;
    let open = api.create_conference(json!({"from": "2"})).await;
    let list = api.get("/conferences").await.json();
    let listed: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            (open.as_str(), "created"),
            (id.as_str(), "completed"),
            (first.as_str(), "completed")
        ]
    );
    let metrics = api
        .send(
            api.client
                .get(format!("{}/metrics", api.base))
                .basic_auth(TOKEN, Some(SECRET)),
        )
        .await
        .text;
    assert!(
        metrics.contains("sipconf_conferences{state=\"completed\"} 2"),
        "{metrics}"
    );
}

/// Completes a new conference through the API and checks what it answers
/// afterwards; returns its id.
async fn completed_conference_is_readable_and_refuses_changes(api: &Api) -> String {
    let id = api.create_conference(json!({"from": "1"})).await;
    assert_eq!(
        api.get(&format!("/conferences/{id}/members")).await.json(),
        json!([]),
        "no members yet"
    );
    let bad_state = api
        .post(&format!("/conferences/{id}"), json!({"state": "active"}))
        .await;
    assert_eq!(bad_state.status, 400);
    let done = api
        .post(&format!("/conferences/{id}"), json!({"state": "completed"}))
        .await;
    assert_eq!(done.status, 200, "{}", done.text);
    let c = api.get(&format!("/conferences/{id}")).await.json();
    assert_eq!(c["state"], "completed");
    assert!(c["completedTime"].is_string());

    for body in [
        json!({"state": "completed"}),
        json!({"mute": true}),
        json!({"tag": "late"}),
    ] {
        let refused = api.post(&format!("/conferences/{id}"), body).await;
        assert_eq!(refused.status, 403, "{}", refused.text);
        assert_eq!(refused.code(), "conference-error");
        assert_eq!(
            refused.json()["message"],
            "Invalid conference state completed"
        );
    }
    let add = api
        .post(
            &format!("/conferences/{id}/members"),
            json!({"callId": "c-whatever"}),
        )
        .await;
    assert_eq!(add.status, 404, "the unknown call is found out first");
    assert_eq!(
        api.get(&format!("/conferences/{id}/members")).await.json(),
        json!([]),
        "still no members"
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_newest_first_and_unknown_routes_are_404() {
    let dir = TempDir::new("api-list");
    let (_daemon, api) = start_with_api(&store(&dir), "");
    let first = api.create_conference(json!({"from": "1"})).await;
    let second = api.create_conference(json!({"from": "2"})).await;
    let list = api.get("/conferences").await.json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![second.as_str(), first.as_str()]);
    let unknown = api.get("/nothing-here").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["category"], "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text() {
    let dir = TempDir::new("api-metrics");
    let (_daemon, api) = start_with_api(&store(&dir), "");
    api.create_conference(json!({"from": "1"})).await;
    let answer = api
        .send(
            api.client
                .get(format!("{}/metrics", api.base))
                .basic_auth(TOKEN, Some(SECRET)),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert!(answer.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for name in [
        "sipconf_calls{state=\"active\"} 0",
        "sipconf_members_active 0",
        "sipconf_conferences{state=\"created\"} 1",
        "sipconf_media_ticks_total ",
        "sipconf_media_tick_seconds{tick=\"max\"} 0.",
        "# TYPE sipconf_media_tick_duration_seconds histogram",
        "sipconf_media_tick_duration_seconds_bucket{le=\"0.00005\"} ",
        "sipconf_media_tick_duration_seconds_bucket{le=\"+Inf\"} ",
        "sipconf_media_tick_duration_seconds_count ",
        "# TYPE sipconf_media_tick_lateness_seconds histogram",
        "sipconf_media_tick_lateness_seconds_bucket{le=\"0.002\"} ",
        "sipconf_rtp_packets_in_total ",
        "sipconf_rtp_packets_out_total ",
        "sipconf_rtp_packets_lost_total ",
        "sipconf_rtp_datagrams_dropped_total{reason=\"malformed\"} ",
        "sipconf_rtp_datagrams_dropped_total{reason=\"foreign\"} ",
        "sipconf_rtp_send_errors_total ",
        "sipconf_callbacks_delivered_total ",
        "sipconf_callback_failures_total ",
    ] {
        assert!(
            answer.text.contains(name),
            "{name} missing:\n{}",
            answer.text
        );
    }
    // The histogram counts every tick: +Inf equals the count, and is non-zero.
    let value = |prefix: &str| -> f64 {
        answer
            .text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    let all = value("sipconf_media_tick_duration_seconds_bucket{le=\"+Inf\"}");
    assert!(all > 0.0, "{}", answer.text);
    assert_eq!(all, value("sipconf_media_tick_duration_seconds_count"));
    // Every tick also has a lateness, counted in the other histogram.
    let late_all = value("sipconf_media_tick_lateness_seconds_bucket{le=\"+Inf\"}");
    assert!(late_all > 0.0, "{}", answer.text);
    assert_eq!(late_all, value("sipconf_media_tick_lateness_seconds_count"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_without_credentials_serves_no_api() {
    let port = common::free_port();
    let dir = TempDir::new("api-off");
    let daemon = common::Daemon::start(
        "",
        &format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\n[store]\npath = \"{}\"\n",
            store(&dir).display()
        ),
    );
    assert!(daemon.logged("API off"));
    let api = Api::new(port);
    assert!(api
        .client
        .get(format!("{}/health", api.base))
        .send()
        .await
        .is_err());
}
