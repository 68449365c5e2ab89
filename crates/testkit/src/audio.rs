//! Shared by the audio tests: the test signal and its WAV files, a loopback
//! file server (slow answers, 404s, garbage, ETags), a daemon with phones in
//! room 1000, and measurements of what a phone heard. What a test expects to
//! hear is the test's, never here.

use crate::api::{start_with_api, Api, CallbackServer};
use crate::daemon::Daemon;
use crate::tempdir::TempDir;
use crate::testphone::{Phone, PhoneOptions, Recording, Signal};
use crate::wav::wav_g711;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sipconf::media::Codec;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const RATE: u32 = 8000;
/// Each of the two test tones peaks here (-18 dBFS), the sum at -12 dBFS.
pub const TONE_AMPLITUDE: f64 = 4000.0;
pub const LOW_HZ: f64 = 400.0;
pub const HIGH_HZ: f64 = 1000.0;

/// The test signal at `rate_hz`: 400 Hz plus 1000 Hz, `seconds` long, as f64 in 16-bit units.
pub fn signal(rate_hz: u32, seconds: f64) -> Vec<f64> {
    let n = (f64::from(rate_hz) * seconds).round() as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate_hz);
            TONE_AMPLITUDE
                * ((2.0 * std::f64::consts::PI * LOW_HZ * t).sin()
                    + (2.0 * std::f64::consts::PI * HIGH_HZ * t).sin())
        })
        .collect()
}

pub fn pcm16(samples: &[f64]) -> Vec<i16> {
    samples.iter().map(|&s| s.round() as i16).collect()
}

/// The test signal as G.711 in a WAV at 8 kHz (u-law: format 7, A-law: format 6).
pub fn signal_wav_g711(codec: Codec, seconds: f64) -> Vec<u8> {
    let pcm = pcm16(&signal(RATE, seconds));
    let mut data = vec![0u8; pcm.len()];
    codec.encode(&pcm, &mut data);
    wav_g711(codec, &data)
}

/// A file the server serves: its bytes, an optional ETag and a delay.
#[derive(Clone, Default)]
pub struct Served {
    pub body: Vec<u8>,
    pub etag: Option<String>,
    pub delay: Duration,
    pub status: u16,
}

#[derive(Clone, Default)]
struct Files {
    files: Arc<Mutex<HashMap<String, Served>>>,
    requests: Arc<Mutex<Vec<(String, bool)>>>,
}

/// A loopback HTTP server for audio files.
pub struct FileServer {
    pub addr: SocketAddr,
    files: Files,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    pub async fn start() -> FileServer {
        let files = Files::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .fallback(serve_file)
            .with_state(files.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FileServer { addr, files, task }
    }

    pub fn put(&self, path: &str, served: Served) {
        let served = Served {
            status: if served.status == 0 {
                200
            } else {
                served.status
            },
            ..served
        };
        self.files
            .files
            .lock()
            .expect("lock")
            .insert(path.to_string(), served);
    }

    pub fn put_body(&self, path: &str, body: Vec<u8>) {
        self.put(
            path,
            Served {
                body,
                ..Served::default()
            },
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// (path, answered 304) for every request so far.
    pub fn requests(&self) -> Vec<(String, bool)> {
        self.files.requests.lock().expect("lock").clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_file(State(files): State<Files>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let served = files.files.lock().expect("lock").get(&path).cloned();
    let Some(served) = served else {
        files.requests.lock().expect("lock").push((path, false));
        return StatusCode::NOT_FOUND.into_response();
    };
    tokio::time::sleep(served.delay).await;
    let not_modified = served.etag.as_deref().is_some_and(|etag| {
        headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == etag)
    });
    files
        .requests
        .lock()
        .expect("lock")
        .push((path, not_modified));
    if not_modified {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let status = StatusCode::from_u16(served.status).unwrap_or(StatusCode::OK);
    let mut response = (status, served.body).into_response();
    if let Some(etag) = served.etag {
        response
            .headers_mut()
            .insert("etag", etag.parse().expect("etag header"));
    }
    response
}

/// `program` with the API and room 1000, `extra` appended to its configuration.
pub fn daemon(program: &std::path::Path, dir: &TempDir, extra: &str) -> (Daemon, Api) {
    start_with_api(
        program,
        &dir.path().join("sipconf.db"),
        &format!("[audio]\nfetch_timeout_ms = 700\n{extra}\n\n[[room]]\nnumber = \"1000\"\n"),
    )
}

/// A phone in room 1000 and its member resource (`id`, call id).
pub struct Member {
    pub phone: Phone,
    pub member_id: String,
    pub call_id: String,
}

/// Dials room 1000; returns the phone with its member and call ids.
pub async fn join(daemon: &Daemon, api: &Api) -> Member {
    let phone = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("call room 1000");
    let conference = conference_id(api).await;
    let members = api
        .get(&format!("/conferences/{conference}/members"))
        .await
        .json();
    let newest = members
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .expect("a member");
    Member {
        phone,
        member_id: newest["id"].as_str().expect("id").to_string(),
        call_id: newest["call"]
            .as_str()
            .and_then(|c| c.rsplit('/').next())
            .expect("call")
            .to_string(),
    }
}

/// The active conference of room 1000.
pub async fn conference_id(api: &Api) -> String {
    let list = api.get("/conferences").await.json();
    list.as_array()
        .and_then(|all| {
            all.iter()
                .find(|c| c["from"] == "1000" && c["state"] != "completed")
        })
        .and_then(|c| c["id"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no conference of room 1000: {list}"))
}

/// Sends the conference's events to `callbacks` at `/conference`.
pub async fn watch_conference(api: &Api, conference: &str, callbacks: &CallbackServer) {
    let answer = api
        .post(
            &format!("/conferences/{conference}"),
            json!({"callbackUrl": callbacks.url("/conference")}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

/// Sends the call's events to `callbacks` at `path`.
pub async fn watch_call(api: &Api, call: &str, callbacks: &CallbackServer, path: &str) {
    let answer = api
        .post(
            &format!("/calls/{call}"),
            json!({"callbackUrl": callbacks.url(path)}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

/// Records silence-sending phones for `duration`, all at once.
pub async fn listen_all(phones: Vec<Phone>, duration: Duration) -> Vec<(Phone, Recording)> {
    let tasks: Vec<_> = phones
        .into_iter()
        .map(|mut phone| {
            tokio::spawn(async move {
                let recording = phone
                    .stream(&Signal::Silence, duration)
                    .await
                    .expect("media");
                (phone, recording)
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("phone task"));
    }
    out
}

/// Where audio starts: the first sample louder than `threshold`.
pub fn onset(samples: &[i16], threshold: i16) -> Option<usize> {
    samples.iter().position(|s| s.abs() > threshold)
}

/// The best normalized correlation of `heard` (from `start`) with `source`,
/// over lags of +-`search` samples.
pub fn best_correlation(heard: &[i16], start: usize, source: &[i16], search: usize) -> f64 {
    let mut best = 0.0f64;
    for lag in 0..=2 * search {
        let Some(begin) = (start + lag).checked_sub(search) else {
            continue;
        };
        let len = source.len().min(heard.len().saturating_sub(begin));
        if len < 800 {
            continue;
        }
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for i in 0..len {
            let x = f64::from(heard[begin + i]);
            let y = f64::from(source[i]);
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        if xx > 0.0 && yy > 0.0 {
            best = best.max(xy / (xx * yy).sqrt());
        }
    }
    best
}

/// Frames (20 ms) whose RMS is above `threshold`.
pub fn loud_frames(samples: &[i16], threshold: f64) -> usize {
    samples
        .chunks(160)
        .filter(|frame| {
            let energy: f64 = frame.iter().map(|&s| f64::from(s).powi(2)).sum();
            (energy / frame.len() as f64).sqrt() > threshold
        })
        .count()
}

/// The statuses of the audio events at `path` with `eventType`, in arrival order.
pub fn statuses(callbacks: &CallbackServer, path: &str, event_type: &str) -> Vec<Value> {
    callbacks
        .events_at(path)
        .into_iter()
        .filter(|e| e["eventType"] == event_type)
        .collect()
}

/// Waits (bounded) until `count` events of `event_type` arrived at `path`.
pub async fn wait_events(
    callbacks: &CallbackServer,
    path: &str,
    event_type: &str,
    count: usize,
    within: Duration,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let got = statuses(callbacks, path, event_type);
        if got.len() >= count || std::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A counter for unique file names.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("/{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}
