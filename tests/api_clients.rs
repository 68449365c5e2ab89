//! The published Catapult v1 clients against the daemon: npm `node-bandwidth`
//! 4.0.0 and PyPI `bandwidth-sdk` 3.1.0 run the scripts in `tests/clients/`
//! with only their base URL changed. `.ci/run` installs both under
//! `$SIPCONF_CLIENTS` (default `/tmp/sipconf-clients`); without them the test
//! skips locally and fails in CI.

mod common;

use common::api::{start_with_api, Api, CallbackServer, SECRET, TOKEN, USER};
use common::tempdir::TempDir;
use common::Daemon;
use serde_json::json;
use sipconf::media::Codec;
use sipconf_testkit::testphone::{Phone, PhoneOptions};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn clients_dir() -> PathBuf {
    std::env::var_os("SIPCONF_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/sipconf-clients"))
}

/// Whether `path` exists; in CI a missing client is a failure, locally a skip.
fn require_client(path: &std::path::Path, what: &str, test: &str) -> bool {
    if path.exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: {what} is required in CI but {} is missing (.ci/run installs it)",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: {what} is not installed at {} (run the client install lines of .ci/run)",
        path.display()
    );
    false
}

/// Two calls answered through the API, each held up by a test phone.
async fn two_answered_calls(
    daemon: &Daemon,
    api: &Api,
    app: &CallbackServer,
) -> (Vec<Phone>, Vec<String>) {
    let mut phones = Vec::new();
    let mut ids = Vec::new();
    for n in 1..=2 {
        let task = tokio::spawn(Phone::call(PhoneOptions::new(
            daemon.sip,
            "5555",
            Codec::Pcmu,
        )));
        let got = app.wait_for("/incoming", n, Duration::from_secs(5)).await;
        let id = got[n - 1].event()["callId"]
            .as_str()
            .expect("callId")
            .to_string();
        let answer = api
            .post(&format!("/calls/{id}"), json!({"state": "active"}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        phones.push(task.await.expect("task").expect("answered"));
        ids.push(id);
    }
    (phones, ids)
}

async fn run_client(program: &str, script: &str, env: &[(&str, PathBuf)]) {
    let dir = TempDir::new("api-client");
    let app = CallbackServer::start().await;
    let (daemon, api) = start_with_api(
        &dir.path().join("sipconf.db"),
        &format!(
            "[application]\nincoming_call_url = \"{}\"\n",
            app.url("/incoming")
        ),
    );
    let (phones, ids) = two_answered_calls(&daemon, &api, &app).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let mut command = Command::new(program);
    command
        .arg(&script)
        .args([api.base.as_str(), USER, TOKEN, SECRET, &ids[0], &ids[1]]);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "{} failed:\n{stdout}\n{stderr}",
        script.display()
    );
    assert!(stdout.contains("every step passed"), "{stdout}");
    drop(phones);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_bandwidth_4_drives_conferences_and_members() {
    let test = "node_bandwidth_4_drives_conferences_and_members";
    let modules = clients_dir().join("node/node_modules");
    if !require_client(
        &modules.join("node-bandwidth"),
        "npm node-bandwidth 4.0.0",
        test,
    ) {
        return;
    }
    run_client("node", "node_bandwidth.js", &[("NODE_PATH", modules)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_sdk_3_drives_conferences_and_members() {
    let test = "bandwidth_sdk_3_drives_conferences_and_members";
    let python = clients_dir().join("venv/bin/python");
    if !require_client(&python, "PyPI bandwidth-sdk 3.1.0 (in a venv)", test) {
        return;
    }
    let python = python.display().to_string();
    run_client(&python, "bandwidth_sdk.py", &[]).await;
}
