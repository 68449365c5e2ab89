//! Helpers for the API tests: a daemon with the API on, a small HTTP client
//! that speaks to it with Basic auth, and a callback server that records what
//! the bridge sends and answers as told. They check transport, never what
//! the answers mean: that is each test's business.

use crate::daemon::{free_port, Daemon};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const USER: &str = "u-test0000000000000000000";
pub const TOKEN: &str = "t-token";
pub const SECRET: &str = "s3cr3t";

/// The `[api]` and `[store]` sections (plus `extra`) for a daemon whose API
/// listens on `api_port` and keeps records at `store`.
pub fn api_sections(api_port: u16, store: &Path, extra: &str) -> String {
    format!(
        "[api]\nlisten = \"127.0.0.1:{api_port}\"\nuser_id = \"{USER}\"\ntoken = \"{TOKEN}\"\nsecret = \"{SECRET}\"\n\n[store]\npath = \"{}\"\n\n{extra}\n",
        store.display()
    )
}

/// `program` with the API, its records in `store`; `extra` adds sections and rooms.
pub fn start_with_api(program: &Path, store: &Path, extra: &str) -> (Daemon, Api) {
    let port = free_port();
    let daemon = Daemon::start(program, "", &api_sections(port, store, extra));
    (daemon, Api::new(port))
}

/// Same as [`start_with_api`] on a port chosen by the caller (restarts).
pub fn start_with_api_on(program: &Path, port: u16, store: &Path, extra: &str) -> Daemon {
    Daemon::start(program, "", &api_sections(port, store, extra))
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub fn location(&self) -> String {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("Location header")
            .to_string()
    }

    /// The Catapult error code of an error answer.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(port: u16) -> Api {
        Api {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    /// `/v1/users/{USER}` + `path`.
    pub fn user_url(&self, path: &str) -> String {
        format!("{}/v1/users/{USER}{path}", self.base)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request");
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.expect("body"),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(
            self.client
                .get(self.user_url(path))
                .basic_auth(TOKEN, Some(SECRET)),
        )
        .await
    }

    pub async fn get_url(&self, url: &str) -> Answer {
        self.send(self.client.get(url).basic_auth(TOKEN, Some(SECRET)))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(
            self.client
                .post(self.user_url(path))
                .basic_auth(TOKEN, Some(SECRET))
                .header("Content-Type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// Creates a conference; returns its id (the Location's last segment).
    pub async fn create_conference(&self, body: Value) -> String {
        let answer = self.post("/conferences", body).await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        last_segment(&answer.location())
    }

    /// Waits (bounded) until the API answers `/health` (the daemon is up).
    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = self
                .client
                .get(format!("{}/health", self.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the API never became healthy");
    }
}

pub fn last_segment(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_string()
}

/// One request the callback server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body: String,
    pub at: Instant,
}

impl Received {
    /// The event: the JSON body, or the query parameters as strings (GET mode).
    pub fn event(&self) -> Value {
        if self.method == "GET" {
            let map: serde_json::Map<String, Value> = url_pairs(&self.query)
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            Value::Object(map)
        } else {
            serde_json::from_str(&self.body).unwrap_or(Value::Null)
        }
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

type Decide = dyn Fn(&Received, usize) -> u16 + Send + Sync;

#[derive(Clone)]
struct Recorder {
    received: Arc<Mutex<Vec<Received>>>,
    /// The status to answer, given the request and how many came before it.
    decide: Arc<Decide>,
}

/// A loopback HTTP server that records callbacks.
pub struct CallbackServer {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CallbackServer {
    /// Answers 200 to everything.
    pub async fn start() -> CallbackServer {
        CallbackServer::answering(|_, _| 200).await
    }

    /// Answers with `decide(request, earlier requests)`.
    pub async fn answering(
        decide: impl Fn(&Received, usize) -> u16 + Send + Sync + 'static,
    ) -> CallbackServer {
        CallbackServer::answering_on("127.0.0.1:0".parse().expect("addr"), decide).await
    }

    pub async fn answering_on(
        addr: SocketAddr,
        decide: impl Fn(&Received, usize) -> u16 + Send + Sync + 'static,
    ) -> CallbackServer {
        let recorder = Recorder {
            received: Arc::new(Mutex::new(Vec::new())),
            decide: Arc::new(decide),
        };
        let received = recorder.received.clone();
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().fallback(record).with_state(recorder);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CallbackServer {
            addr,
            received,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Requests to `path` whose event has `eventType` (any when `None`).
    pub fn events_at(&self, path: &str) -> Vec<Value> {
        self.received()
            .iter()
            .filter(|r| r.path == path)
            .map(Received::event)
            .collect()
    }

    /// Waits (bounded) until `count` requests reached `path`; returns them.
    pub async fn wait_for(&self, path: &str, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got: Vec<Received> = self
                .received()
                .into_iter()
                .filter(|r| r.path == path)
                .collect();
            if got.len() >= count || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for CallbackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(recorder): State<Recorder>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let received = Received {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        content_type: header("content-type"),
        authorization: header("authorization"),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    };
    let status = {
        let mut all = recorder.received.lock().expect("lock");
        let earlier = all.iter().filter(|r| r.path == received.path).count();
        let status = (recorder.decide)(&received, earlier);
        all.push(received);
        status
    };
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The sorted key set of a JSON object.
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

/// Sorted names, for comparing with [`keys`].
pub fn names(list: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    names.sort();
    names
}

/// Places a call to `number` (one no room matches) at the bridge's `sip`
/// address, waits for its `incomingcall` at `app`'s `/incoming` (the
/// daemon's `application.incoming_call_url`) and answers it through the
/// API; returns the phone and the call id.
pub async fn answered_call(
    sip: SocketAddr,
    number: &str,
    api: &Api,
    app: &CallbackServer,
) -> (crate::testphone::Phone, String) {
    use crate::testphone::{Phone, PhoneOptions};
    const WAIT: Duration = Duration::from_secs(5);
    let before = app.wait_for("/incoming", 0, Duration::ZERO).await.len();
    let task = tokio::spawn(Phone::call(PhoneOptions::new(
        sip,
        number,
        sipconf::media::Codec::Pcmu,
    )));
    let got = app.wait_for("/incoming", before + 1, WAIT).await;
    let call_id = got[before].event()["callId"]
        .as_str()
        .expect("callId")
        .to_string();
    let answer = api
        .post(
            &format!("/calls/{call_id}"),
            serde_json::json!({"state": "active"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    (task.await.expect("task").expect("answered"), call_id)
}
