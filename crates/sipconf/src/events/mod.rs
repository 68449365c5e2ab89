//! Callback events (docs/api.md "Callback events"): rendered from records by
//! [`crate::conference::wire`], queued in the SQLite outbox, and delivered by
//! one sender task, in order per conference (or per call), with a timeout, a
//! fallback URL and retries with backoff. Queuing is one short insert, so
//! neither the API nor the call core ever waits for an application's web
//! server. This module decides where an event goes, never what it says, and
//! never changes a record.

mod callback;

pub use callback::CallbackEvent;

use crate::conference::wire::{
    self, CallAudioEvent, CallEvent, ConferenceAudioEvent, ConferenceEvent, DtmfEvent,
    IncomingCallEvent, MemberEvent, Uris,
};
use crate::conference::{
    CallRecord, Callback, CallbackMethod, Conference, Member, MAX_CALLBACK_TIMEOUT_MS,
};
use crate::store::{OutboxEntry, Store};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

/// How often the sender looks at the outbox even when nothing woke it.
const RESCAN: Duration = Duration::from_secs(1);
/// First retry delay; each later one doubles.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Events accepted by the application (a 2xx).
    pub delivered: AtomicU64,
    /// Tries that failed (connect error, timeout, non-2xx), fallback tries included.
    pub failed_tries: AtomicU64,
    /// Events dropped after `events.max_attempts` tries.
    pub given_up: AtomicU64,
    /// Events that could not be queued: the store could not write.
    pub not_queued: AtomicU64,
}

/// Renders events from records (through [`wire`]) and queues them.
pub struct Events {
    store: Arc<Store>,
    wake: Arc<Notify>,
    /// The prefix of every URI in an event.
    uris: Uris,
    pub stats: Arc<DeliveryStats>,
}

/// Where a call's own events go: its `callbackUrl`, with the default settings.
fn call_callback(call: &CallRecord) -> Option<Callback> {
    call.callback_url.as_deref().map(to_url)
}

fn to_url(url: &str) -> Callback {
    Callback {
        url: Some(url.to_string()),
        ..Callback::default()
    }
}

impl Events {
    /// `user_base` is `{public_base_url}/v1/users/{userId}`.
    pub fn new(store: Arc<Store>, user_base: String) -> Events {
        Events {
            store,
            wake: Arc::new(Notify::new()),
            uris: Uris::new(user_base),
            stats: Arc::new(DeliveryStats::default()),
        }
    }

    /// `conference` with `status` `created` or `completed` (its state now).
    pub fn conference(&self, c: &Conference) {
        let event = ConferenceEvent::new(&self.uris, c);
        self.enqueue(&c.id, &c.callback, &event);
    }

    /// `conference-member`: joined, left or removed, mute or hold changed.
    pub fn member(&self, c: &Conference, m: &Member) {
        let event = MemberEvent::new(&self.uris, c, m, SystemTime::now());
        self.enqueue(&c.id, &c.callback, &event);
    }

    /// A call event (`answer`, `hangup` with its cause) to the call's `callbackUrl`.
    pub fn call(&self, call: &CallRecord, event_type: &str) {
        let Some(callback) = call_callback(call) else {
            return;
        };
        let event = CallEvent::new(&self.uris, call, event_type, SystemTime::now());
        self.enqueue(&call.id, &callback, &event);
    }

    /// `dtmf` (a key pressed in a `passthru_digits` conference) to the call's
    /// `callbackUrl`, or, when the call has none, to its conference's.
    pub fn dtmf(&self, call: &CallRecord, conference: &Conference, digit: char, duration_ms: u32) {
        let callback = call_callback(call).unwrap_or_else(|| conference.callback.clone());
        let event = DtmfEvent::new(
            &self.uris,
            call,
            conference,
            digit,
            duration_ms,
            SystemTime::now(),
        );
        self.enqueue(&call.id, &callback, &event);
    }

    /// `conference-playback` or `conference-speak` (`kind` `playback` / `speak`)
    /// with `status` `started` or `done`; `tag` is the audio request's, else the conference's.
    pub fn conference_audio(&self, c: &Conference, kind: &str, status: &str, tag: Option<&str>) {
        let event = ConferenceAudioEvent::new(&self.uris, c, kind, status, tag, SystemTime::now());
        self.enqueue(&c.id, &c.callback, &event);
    }

    /// The call's `playback` or `speak` event with `status` `started` or `done`;
    /// `tag` is the audio request's, else the call's.
    pub fn call_audio(&self, call: &CallRecord, kind: &str, status: &str, tag: Option<&str>) {
        let Some(callback) = call_callback(call) else {
            return;
        };
        let event = CallAudioEvent::new(&self.uris, call, kind, status, tag, SystemTime::now());
        self.enqueue(&call.id, &callback, &event);
    }

    /// `incomingcall` to the application's URL.
    pub fn incoming_call(&self, url: &str, call: &CallRecord) {
        let event = IncomingCallEvent::new(&self.uris, call, SystemTime::now());
        self.enqueue(&call.id, &to_url(url), &event);
    }

    /// Queues `event` on `stream` (a conference's or a call's id, delivered
    /// in order) for `callback`'s URL; nothing when it has none.
    fn enqueue(&self, stream: &str, callback: &Callback, event: &impl Serialize) {
        let Some(url) = &callback.url else {
            return;
        };
        let body = wire::to_json(event);
        let timeout_ms = callback.timeout_ms.clamp(1, MAX_CALLBACK_TIMEOUT_MS);
        match self.store.enqueue(
            stream,
            url,
            callback.fallback_url.as_deref(),
            callback.method,
            timeout_ms,
            &body,
        ) {
            Ok(_) => self.wake.notify_one(),
            Err(e) => {
                // The store logs the first failure of each kind.
                self.stats.not_queued.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%stream, "callback not queued: {e}");
            }
        }
    }

    /// Starts the sender task; it runs until the runtime stops.
    pub fn spawn_sender(&self, max_attempts: u32) -> tokio::task::JoinHandle<()> {
        let sender = Sender {
            store: self.store.clone(),
            wake: self.wake.clone(),
            stats: self.stats.clone(),
            max_attempts: max_attempts.max(1),
            busy: Arc::new(Mutex::new(HashSet::new())),
            client: reqwest::Client::builder()
                .user_agent(concat!("sipconf/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
        };
        tokio::spawn(sender.run())
    }
}

#[derive(Clone)]
struct Sender {
    store: Arc<Store>,
    wake: Arc<Notify>,
    stats: Arc<DeliveryStats>,
    max_attempts: u32,
    /// Streams with a worker delivering them; one worker per stream keeps order.
    busy: Arc<Mutex<HashSet<String>>>,
    client: reqwest::Client,
}

impl Sender {
    async fn run(self) {
        loop {
            let busy: Vec<String> = self.busy_streams().iter().cloned().collect();
            match self.store.outbox_heads(&busy) {
                Ok(heads) => {
                    for head in heads {
                        if self.busy_streams().insert(head.stream.clone()) {
                            tokio::spawn(self.clone().deliver_stream(head.stream));
                        }
                    }
                }
                Err(e) => tracing::error!("cannot read the callback outbox: {e}"),
            }
            let _ = tokio::time::timeout(RESCAN, self.wake.notified()).await;
        }
    }

    fn busy_streams(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.busy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Delivers one stream's events, oldest first, until none is left.
    async fn deliver_stream(self, stream: String) {
        loop {
            let head = match self.store.outbox_head(&stream) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(%stream, "cannot read the callback outbox: {e}");
                    break;
                }
            };
            self.deliver(&head).await;
            if let Err(e) = self.store.outbox_remove(head.seq) {
                tracing::error!(%stream, "cannot remove a sent callback: {e}");
                break;
            }
        }
        self.busy_streams().remove(&stream);
        self.wake.notify_one();
    }

    /// Tries the URL, then the fallback once, with backoff between tries, up
    /// to `max_attempts`. Returns when delivered or given up.
    async fn deliver(&self, entry: &OutboxEntry) {
        let mut attempts = entry.attempts;
        loop {
            attempts += 1;
            let delivered = match self.try_once(entry, &entry.url).await {
                Ok(()) => true,
                Err(e) => {
                    self.stats.failed_tries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %redact(&entry.url), attempt = attempts, "callback failed: {e}");
                    match &entry.fallback_url {
                        Some(fallback) => match self.try_once(entry, fallback).await {
                            Ok(()) => true,
                            Err(e) => {
                                self.stats.failed_tries.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(url = %redact(fallback), "fallback failed: {e}");
                                false
                            }
                        },
                        None => false,
                    }
                }
            };
            if delivered {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if attempts >= self.max_attempts {
                self.stats.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::error!(url = %redact(&entry.url), attempts, body = %entry.body, "callback given up");
                return;
            }
            if let Err(e) = self.store.outbox_attempted(entry.seq, attempts) {
                tracing::error!("cannot count a callback try: {e}");
            }
            let backoff = FIRST_BACKOFF * 2u32.saturating_pow(attempts - 1).min(1 << 10);
            tokio::time::sleep(backoff).await;
        }
    }

    async fn try_once(&self, entry: &OutboxEntry, url: &str) -> Result<(), String> {
        let mut url = reqwest::Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
        // Credentials in the URL are sent as Basic auth (docs/api.md "Callback events").
        let user = percent_decode(url.username());
        let password = url.password().map(percent_decode);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let timeout = Duration::from_millis(u64::from(entry.timeout_ms));
        let event: Map<String, Value> =
            serde_json::from_str(&entry.body).map_err(|e| format!("unreadable event: {e}"))?;
        let request = match entry.method {
            CallbackMethod::Post => self
                .client
                .post(url)
                .header("Content-Type", "application/json; charset=utf-8")
                .body(entry.body.clone()),
            CallbackMethod::Get => {
                let query: Vec<(String, String)> = event
                    .iter()
                    .map(|(k, v)| {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), text)
                    })
                    .collect();
                self.client.get(url).query(&query)
            }
        };
        let request = if user.is_empty() && password.is_none() {
            request
        } else {
            request.basic_auth(user, password)
        };
        let response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", response.status()))
        }
    }
}

/// A URL for logs, without its password.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<bad url>".into(),
    }
}

/// `%XX` decoding of URL user info (RFC 3986 §2.1).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conference::fixtures::{self, *};

    /// Every queued event, oldest first, as `stream method url fallback
    /// timeout body`, with the `time` of the event (the instant it was
    /// queued) masked: its format is pinned in `time.rs`.
    fn drain(store: &Store) -> Vec<String> {
        let mut queued = Vec::new();
        while let Some(head) = store.outbox_heads(&[]).unwrap().into_iter().next() {
            store.outbox_remove(head.seq).unwrap();
            let body = match head.body.split_once("\"time\":\"") {
                Some((before, after)) => {
                    let (time, rest) = after.split_at(24);
                    let shape = |i: usize, c: u8| match i {
                        4 | 7 => c == b'-',
                        10 => c == b'T',
                        13 | 16 => c == b':',
                        19 => c == b'.',
                        23 => c == b'Z',
                        _ => c.is_ascii_digit(),
                    };
                    assert!(time.bytes().enumerate().all(|(i, c)| shape(i, c)), "{time}");
                    format!("{before}\"time\":\"<now>{rest}")
                }
                None => head.body,
            };
            queued.push(format!(
                "{} {} {} {:?} {} {body}",
                head.stream,
                head.method.as_str(),
                head.url,
                head.fallback_url,
                head.timeout_ms
            ));
        }
        queued
    }

    /// The exact bytes of every callback event, every optional field present
    /// and absent, as applications have accepted them: keys in alphabetical
    /// order, unset optional fields omitted; and where each goes.
    #[test]
    fn events_render_byte_for_byte() {
        let store = Arc::new(Store::in_memory().unwrap());
        let events = Events::new(store.clone(), fixtures::USER_BASE.into());
        let (full, active, bare) = (full_conference(), active_conference(), bare_conference());
        let (full_member, active_member) = (full_member(), active_member());
        let (full_call, active_call, bare_call) = (full_call(), active_call(), bare_call());

        events.conference(&full);
        events.conference(&active);
        events.conference(&bare);
        events.member(&full, &full_member);
        events.member(&active, &active_member);
        events.conference_audio(&full, "playback", "started", Some("intro"));
        events.conference_audio(&full, "speak", "done", None);
        events.conference_audio(&active, "playback", "done", None);
        events.call(&full_call, "hangup");
        events.call(&full_call, "answer");
        events.call(&active_call, "hangup");
        events.call(&bare_call, "answer");
        events.dtmf(&full_call, &active, '5', 120);
        events.dtmf(&active_call, &full, '#', 80);
        events.dtmf(&active_call, &active, '*', 60);
        events.call_audio(&full_call, "speak", "started", Some("greeting"));
        events.call_audio(&full_call, "playback", "done", None);
        events.call_audio(&active_call, "playback", "started", None);
        events.call_audio(&bare_call, "playback", "started", Some("x"));
        events.incoming_call("http://app.example/incoming", &full_call);

        let want = [
            r##"conf-full GET http://app.example/cb Some("http://backup.example/cb") 2500 {"completedTime":"2026-11-27T02:15:01.999Z","conferenceId":"conf-full","conferenceUri":"http://bridge.example:8088/v1/users/u-test/conferences/conf-full","createdTime":"2026-11-27T01:14:00.250Z","eventType":"conference","status":"completed","tag":"board"}"##,
            r##"conf-active POST http://app.example/cb None 10000 {"conferenceId":"conf-active","conferenceUri":"http://bridge.example:8088/v1/users/u-test/conferences/conf-active","createdTime":"2026-11-27T01:15:00.000Z","eventType":"conference","status":"created"}"##,
            r##"conf-full GET http://app.example/cb Some("http://backup.example/cb") 2500 {"activeMembers":0,"callId":"c-full","conferenceId":"conf-full","eventType":"conference-member","hold":true,"memberId":"member-full","memberUri":"http://bridge.example:8088/v1/users/u-test/conferences/conf-full/members/member-full","mute":true,"state":"completed","tag":"board","time":"<now>"}"##,
            r##"conf-active POST http://app.example/cb None 10000 {"activeMembers":1,"callId":"c-active","conferenceId":"conf-active","eventType":"conference-member","hold":true,"memberId":"member-active","memberUri":"http://bridge.example:8088/v1/users/u-test/conferences/conf-active/members/member-active","mute":true,"state":"active","time":"<now>"}"##,
            r##"conf-full GET http://app.example/cb Some("http://backup.example/cb") 2500 {"conferenceId":"conf-full","conferenceUri":"http://bridge.example:8088/v1/users/u-test/conferences/conf-full","eventType":"conference-playback","status":"started","tag":"intro","time":"<now>"}"##,
            r##"conf-full GET http://app.example/cb Some("http://backup.example/cb") 2500 {"conferenceId":"conf-full","conferenceUri":"http://bridge.example:8088/v1/users/u-test/conferences/conf-full","eventType":"conference-speak","status":"done","tag":"board","time":"<now>"}"##,
            r##"conf-active POST http://app.example/cb None 10000 {"conferenceId":"conf-active","conferenceUri":"http://bridge.example:8088/v1/users/u-test/conferences/conf-active","eventType":"conference-playback","status":"done","time":"<now>"}"##,
            r##"c-full POST http://app.example/calls None 10000 {"callId":"c-full","callState":"completed","callUri":"http://bridge.example:8088/v1/users/u-test/calls/c-full","cause":"NORMAL_CLEARING","eventType":"hangup","from":"sip:bridge@example","tag":"vip","time":"<now>","to":"sip:alice@example"}"##,
            r##"c-full POST http://app.example/calls None 10000 {"callId":"c-full","callState":"completed","callUri":"http://bridge.example:8088/v1/users/u-test/calls/c-full","eventType":"answer","from":"sip:bridge@example","tag":"vip","time":"<now>","to":"sip:alice@example"}"##,
            r##"c-active POST http://app.example/calls None 10000 {"callId":"c-active","callState":"active","callUri":"http://bridge.example:8088/v1/users/u-test/calls/c-active","eventType":"hangup","from":"sip:bob@example","time":"<now>","to":"sip:1000@bridge"}"##,
            r##"c-full POST http://app.example/calls None 10000 {"callId":"c-full","callState":"completed","callUri":"http://bridge.example:8088/v1/users/u-test/calls/c-full","conferenceId":"conf-active","dtmfDigit":"5","dtmfDuration":120,"eventType":"dtmf","from":"sip:bridge@example","tag":"vip","time":"<now>","to":"sip:alice@example"}"##,
            r##"c-active POST http://app.example/calls None 10000 {"callId":"c-active","callState":"active","callUri":"http://bridge.example:8088/v1/users/u-test/calls/c-active","conferenceId":"conf-full","dtmfDigit":"#","dtmfDuration":80,"eventType":"dtmf","from":"sip:bob@example","tag":"board","time":"<now>","to":"sip:1000@bridge"}"##,
            r##"c-active POST http://app.example/calls None 10000 {"callId":"c-active","callState":"active","callUri":"http://bridge.example:8088/v1/users/u-test/calls/c-active","conferenceId":"conf-active","dtmfDigit":"*","dtmfDuration":60,"eventType":"dtmf","from":"sip:bob@example","time":"<now>","to":"sip:1000@bridge"}"##,
            r##"c-full POST http://app.example/calls None 10000 {"callId":"c-full","callState":"completed","callUri":"http://bridge.example:8088/v1/users/u-test/calls/c-full","eventType":"speak","from":"sip:bridge@example","status":"started","tag":"greeting","time":"<now>","to":"sip:alice@example"}"##,
            r##"c-full POST http://app.example/calls None 10000 {"callId":"c-full","callState":"completed","callUri":"http://bridge.example:8088/v1/users/u-test/calls/c-full","eventType":"playback","from":"sip:bridge@example","status":"done","tag":"vip","time":"<now>","to":"sip:alice@example"}"##,
            r##"c-active POST http://app.example/calls None 10000 {"callId":"c-active","callState":"active","callUri":"http://bridge.example:8088/v1/users/u-test/calls/c-active","eventType":"playback","from":"sip:bob@example","status":"started","time":"<now>","to":"sip:1000@bridge"}"##,
            r##"c-full POST http://app.example/incoming None 10000 {"applicationId":"a-sipconf","callId":"c-full","callState":"completed","callUri":"http://bridge.example:8088/v1/users/u-test/calls/c-full","eventType":"incomingcall","from":"sip:bridge@example","time":"<now>","to":"sip:alice@example"}"##,
        ];
        assert_eq!(drain(&store), want);
    }

    #[test]
    fn user_info_is_percent_decoded() {
        assert_eq!(percent_decode("a%40b%3Ac"), "a@b:c");
        assert_eq!(percent_decode("plain%"), "plain%");
        assert_eq!(percent_decode("x%2"), "x%2");
    }

    #[test]
    fn logs_never_show_a_password() {
        assert_eq!(redact("http://u:secret@h/x"), "http://u:***@h/x");
    }
}
