//! The HTTP control API: Bandwidth Catapult v1 Conferences and the slice of
//! Calls they need (docs/api.md), plus `/health` and `/metrics`.
//!
//! Handlers read records from the registry and ask the switchboard (through its driver) for
//! everything that touches SIP or the mixer; they never wait for callbacks.
//! Records go out as the views of `conference::wire`, never built by hand;
//! every failure goes out through the Catapult table of `error.rs`.

mod error;
mod input;
mod listener;
mod metrics;

use error::ApiError;
pub use std::borrow::Cow;

use crate::audio::Source;
use crate::calls::{
    AudioRequest, AudioTarget, ConferenceChange, MemberChange, OutgoingRequest, Shared,
    SwitchboardHandle,
};
use crate::conference::wire::{self, CallView, ConferenceView, MemberView, Uris};
use crate::conference::{
    CallState, CallbackMethod, Conference, ConferenceState, Member, MemberOptions, MemberState,
    Profile, RecordError, MAX_CALLBACK_TIMEOUT_MS,
};
use crate::config::Config;
use crate::media::MediaStats;
use crate::net::connections::ConnectionGate;
use crate::store::Store;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use input::Input;
use serde::Serialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long `/health` watches the media clock for a tick.
const HEALTH_WINDOW: Duration = Duration::from_millis(100);

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    config: Arc<Config>,
    shared: Arc<Shared>,
    switchboard: SwitchboardHandle,
    media_stats: Arc<MediaStats>,
    store: Arc<Store>,
    uris: Uris,
}

impl ApiState {
    pub fn new(
        config: Arc<Config>,
        shared: Arc<Shared>,
        switchboard: SwitchboardHandle,
        media_stats: Arc<MediaStats>,
        store: Arc<Store>,
    ) -> ApiState {
        let uris = Uris::new(format!(
            "{}/v1/users/{}",
            config.api.public_base_url, config.api.user_id
        ));
        ApiState {
            config,
            shared,
            switchboard,
            media_stats,
            store,
            uris,
        }
    }
}

/// Binds `api.listen`; the server runs until `shutdown` resolves.
pub async fn serve(
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = listener::GatedListener {
        listener: tokio::net::TcpListener::bind(state.config.api.listen).await?,
        gate: ConnectionGate::new(
            state.config.api.connections,
            Arc::clone(&state.shared.api_connections),
        ),
    };
    let bound = listener.listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("the API server stopped: {e}");
        }
    });
    Ok((bound, task))
}

pub fn router(state: ApiState) -> Router {
    let users = Router::new()
        .route(
            "/v1/users/{user}/conferences",
            get(list_conferences).post(create_conference),
        )
        .route(
            "/v1/users/{user}/conferences/{id}",
            get(get_conference).post(update_conference),
        )
        .route(
            "/v1/users/{user}/conferences/{id}/members",
            get(list_members).post(add_member),
        )
        .route(
            "/v1/users/{user}/conferences/{id}/members/{member}",
            get(get_member).post(update_member),
        )
        .route(
            "/v1/users/{user}/conferences/{id}/audio",
            axum::routing::post(conference_audio),
        )
        .route(
            "/v1/users/{user}/conferences/{id}/members/{member}/audio",
            axum::routing::post(member_audio),
        )
        .route(
            "/v1/users/{user}/calls/{id}/audio",
            axum::routing::post(call_audio),
        )
        .route("/v1/users/{user}/calls", axum::routing::post(create_call))
        .route(
            "/v1/users/{user}/calls/{id}",
            get(get_call).post(update_call),
        )
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(users)
        .route("/health", get(health))
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(error::with_details))
        .with_state(state)
}

/// Equal without an early exit, so the time taken says nothing about where
/// the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

fn credentials_ok(config: &Config, headers: &HeaderMap) -> bool {
    use base64::Engine;
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    let (token, secret) = (&decoded[..colon], &decoded[colon + 1..]);
    // Both compared every time: no early exit on a wrong token.
    let token_ok = constant_time_eq(token, config.api.token.as_bytes());
    let secret_ok = constant_time_eq(secret, config.api.secret.as_bytes());
    token_ok & secret_ok
}

/// Basic auth on every route but `/health`, and the path's `userId` must be ours.
async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if !credentials_ok(&state.config, request.headers()) {
        return ApiError::Unauthorized.into_response();
    }
    let mut segments = request.uri().path().trim_start_matches('/').split('/');
    if let (Some("v1"), Some("users"), Some(user)) =
        (segments.next(), segments.next(), segments.next())
    {
        if user != state.config.api.user_id {
            return ApiError::UserAccessDenied(user.to_string()).into_response();
        }
    }
    next.run(request).await
}

type ApiResult = Result<Response, ApiError>;

fn body_input(body: Result<Bytes, BytesRejection>) -> Result<Input, ApiError> {
    match body {
        Ok(bytes) => Input::parse(&bytes),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::TooLarge)
        }
        Err(rejection) => Err(ApiError::Validation(rejection.body_text())),
    }
}

/// A view of a record (or a list of them) as a JSON body.
fn json_response(view: &impl Serialize) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        wire::to_json(view),
    )
        .into_response()
}

/// `200 OK` with no body (docs/api.md "Conventions": never 204).
fn ok() -> Response {
    StatusCode::OK.into_response()
}

fn created(location: String) -> ApiResult {
    let location = HeaderValue::from_str(&location)
        .map_err(|_| ApiError::Validation("unrepresentable Location".into()))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// The callback settings a request sets; `None` leaves one unchanged.
struct CallbackInput {
    url: Option<Option<String>>,
    method: Option<CallbackMethod>,
    timeout_ms: Option<u32>,
    fallback_url: Option<Option<String>>,
    tag: Option<String>,
}

fn callback_input(input: &Input) -> Result<CallbackInput, ApiError> {
    let timeout_ms = match input.number("callbackTimeout")? {
        None => None,
        Some(ms) if ms >= 1 && ms <= u64::from(MAX_CALLBACK_TIMEOUT_MS) => Some(ms as u32),
        Some(_) => {
            return Err(ApiError::Validation(format!(
                "The property callbackTimeout must be between 1 and {MAX_CALLBACK_TIMEOUT_MS}"
            )))
        }
    };
    Ok(CallbackInput {
        url: input.url("callbackUrl")?,
        method: input.choice("callbackHttpMethod", "GET, POST", CallbackMethod::parse)?,
        timeout_ms,
        fallback_url: input.url("fallbackUrl")?,
        tag: input.string("tag")?,
    })
}

impl CallbackInput {
    /// The request sets none of them.
    fn is_empty(&self) -> bool {
        self.url.is_none()
            && self.method.is_none()
            && self.timeout_ms.is_none()
            && self.fallback_url.is_none()
            && self.tag.is_none()
    }

    fn apply(self, c: &mut Conference) {
        if let Some(url) = self.url {
            c.callback.url = url;
        }
        if let Some(method) = self.method {
            c.callback.method = method;
        }
        if let Some(timeout_ms) = self.timeout_ms {
            c.callback.timeout_ms = timeout_ms;
        }
        if let Some(url) = self.fallback_url {
            c.callback.fallback_url = url;
        }
        if let Some(tag) = self.tag {
            c.tag = (!tag.is_empty()).then_some(tag);
        }
    }
}

async fn list_conferences(State(state): State<ApiState>) -> ApiResult {
    let registry = state.shared.registry();
    let conferences = registry.conferences_newest_first();
    let list: Vec<ConferenceView> = conferences.iter().map(|c| ConferenceView::new(c)).collect();
    Ok(json_response(&list))
}

async fn create_conference(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let input = body_input(body)?;
    let from = input.required_string("from")?;
    let profile = input
        .choice(
            "profile",
            "interpret_digits, passthru_digits",
            Profile::parse,
        )?
        .unwrap_or_default();
    let callback = callback_input(&input)?;
    let id = {
        let mut registry = state.shared.registry();
        let now = crate::store::truncate_to_ms(SystemTime::now());
        let id = registry
            .create_conference_stored(&from, profile, now, |c| callback.apply(c))?
            .id
            .clone();
        state.shared.conference_event(&registry, &id);
        id
    };
    tracing::info!(conference = %id, %from, "conference created through the API");
    created(state.uris.conference(&id))
}

async fn get_conference(
    State(state): State<ApiState>,
    Path((_user, id)): Path<(String, String)>,
) -> ApiResult {
    let registry = state.shared.registry();
    let c = registry
        .conference(&id)
        .ok_or(RecordError::ConferenceNotFound(id.clone()))?;
    Ok(json_response(&ConferenceView::new(&c)))
}

async fn update_conference(
    State(state): State<ApiState>,
    Path((_user, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let input = body_input(body)?;
    let complete = match input.string("state")? {
        None => false,
        Some(s) if s.trim().eq_ignore_ascii_case("completed") => true,
        Some(_) => {
            return Err(ApiError::Validation(
                "The property state can only be completed".into(),
            ))
        }
    };
    let change = ConferenceChange {
        complete,
        mute: input.boolean("mute")?,
        hold: input.boolean("hold")?,
    };
    let callback = callback_input(&input)?;
    {
        let mut registry = state.shared.registry();
        let c = registry
            .conference(&id)
            .ok_or(RecordError::ConferenceNotFound(id.clone()))?;
        if c.state == ConferenceState::Completed {
            return Err(RecordError::ConferenceCompleted.into());
        }
        if !callback.is_empty() {
            registry.update_conference_stored(&id, |c| callback.apply(c))?;
        }
    }
    if change != ConferenceChange::default() {
        state.switchboard.update_conference(id, change).await?;
    }
    Ok(ok())
}

async fn list_members(
    State(state): State<ApiState>,
    Path((_user, id)): Path<(String, String)>,
) -> ApiResult {
    let registry = state.shared.registry();
    if registry.conference(&id).is_none() {
        return Err(RecordError::ConferenceNotFound(id).into());
    }
    let members = registry.members_of(&id);
    let list: Vec<MemberView> = members
        .iter()
        .map(|m| MemberView::new(&state.uris, m))
        .collect();
    Ok(json_response(&list))
}

async fn add_member(
    State(state): State<ApiState>,
    Path((_user, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let input = body_input(body)?;
    let call_id = input.required_string("callId")?;
    let options = MemberOptions {
        join_tone: input.boolean("joinTone")?.unwrap_or(false),
        leaving_tone: input.boolean("leavingTone")?.unwrap_or(false),
        mute: input.boolean("mute")?.unwrap_or(false),
        hold: input.boolean("hold")?.unwrap_or(false),
    };
    let member = state
        .switchboard
        .add_member(id.clone(), call_id, options)
        .await?;
    created(state.uris.member(&id, &member))
}

/// The member, if it belongs to the conference.
fn member_in<'r>(
    registry: &'r crate::conference::Registry,
    conference_id: &str,
    member_id: &str,
) -> Result<Cow<'r, Member>, ApiError> {
    if registry.conference(conference_id).is_none() {
        return Err(RecordError::ConferenceNotFound(conference_id.to_string()).into());
    }
    registry
        .member(member_id)
        .filter(|m| m.conference_id == conference_id)
        .ok_or_else(|| RecordError::MemberNotFound(member_id.to_string()).into())
}

async fn get_member(
    State(state): State<ApiState>,
    Path((_user, id, member)): Path<(String, String, String)>,
) -> ApiResult {
    let registry = state.shared.registry();
    let m = member_in(&registry, &id, &member)?;
    Ok(json_response(&MemberView::new(&state.uris, &m)))
}

async fn update_member(
    State(state): State<ApiState>,
    Path((_user, id, member)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let input = body_input(body)?;
    let remove = match input.string("state")? {
        None => false,
        Some(s) if s.trim().eq_ignore_ascii_case("completed") => true,
        Some(s) if s.trim().eq_ignore_ascii_case("active") => false,
        Some(_) => {
            return Err(ApiError::Validation(
                "The property state must be active or completed".into(),
            ))
        }
    };
    let change = MemberChange {
        remove,
        mute: input.boolean("mute")?,
        hold: input.boolean("hold")?,
        join_tone: input.boolean("joinTone")?,
        leaving_tone: input.boolean("leavingTone")?,
    };
    {
        let registry = state.shared.registry();
        let m = member_in(&registry, &id, &member)?;
        if m.state == MemberState::Completed && !remove && change != MemberChange::default() {
            return Err(RecordError::ConferenceCompleted.into());
        }
    }
    if change != MemberChange::default() {
        state.switchboard.update_member(member, change).await?;
    }
    Ok(ok())
}

async fn get_call(
    State(state): State<ApiState>,
    Path((_user, id)): Path<(String, String)>,
) -> ApiResult {
    let registry = state.shared.registry();
    let c = registry
        .call(&id)
        .ok_or(RecordError::CallNotFound(id.clone()))?;
    Ok(json_response(&CallView::new(&c)))
}

async fn update_call(
    State(state): State<ApiState>,
    Path((_user, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let input = body_input(body)?;
    let target = input.choice(
        "state",
        "active, rejected, completed",
        |s| match CallState::parse(s) {
            Some(CallState::Started) | None => None,
            other => other,
        },
    )?;
    let callback_url = input.url("callbackUrl")?;
    let tag = input.string("tag")?;
    {
        let mut registry = state.shared.registry();
        if registry.call(&id).is_none() {
            return Err(RecordError::CallNotFound(id).into());
        }
        if callback_url.is_some() || tag.is_some() {
            registry.update_call_stored(&id, |c| {
                if let Some(url) = callback_url {
                    c.callback_url = url;
                }
                if let Some(tag) = tag {
                    c.tag = (!tag.is_empty()).then_some(tag);
                }
            })?;
        }
    }
    if let Some(target) = target {
        state.switchboard.set_call_state(id, target).await?;
    }
    Ok(ok())
}

async fn create_call(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let input = body_input(body)?;
    let call_timeout = match input.number("callTimeout")? {
        None => crate::calls::DEFAULT_CALL_TIMEOUT,
        Some(s) if (1..=300).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            return Err(ApiError::Validation(
                "The property callTimeout must be between 1 and 300 seconds".into(),
            ))
        }
    };
    let request = OutgoingRequest {
        from: input.required_string("from")?,
        to: input.required_string("to")?,
        callback_url: input.url("callbackUrl")?.flatten(),
        conference_id: input.string("conferenceId")?.filter(|c| !c.is_empty()),
        call_timeout,
        tag: input.string("tag")?.filter(|t| !t.is_empty()),
    };
    let id = state.switchboard.create_call(request).await?;
    created(state.uris.call(&id))
}

/// The audio request of docs/api.md: exactly one of `fileUrl` and `sentence`; an
/// empty one stops what plays.
fn audio_request(input: &Input) -> Result<AudioRequest, ApiError> {
    let file_url = input.string("fileUrl")?;
    let sentence = input.string("sentence")?;
    let source = match (file_url, sentence) {
        (Some(_), Some(_)) => {
            return Err(ApiError::Validation(
                "Give exactly one of the properties fileUrl and sentence".into(),
            ))
        }
        (None, None) => return Err(ApiError::MissingProperty("fileUrl")),
        (Some(url), None) if url.trim().is_empty() => None,
        (None, Some(text)) if text.trim().is_empty() => None,
        (Some(url), None) => {
            let url = url.trim().to_string();
            let valid = reqwest::Url::parse(&url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !valid {
                return Err(ApiError::Validation(format!(
                    "The property fileUrl must be an http or https URL, not {url}"
                )));
            }
            Some(Source::File { url })
        }
        (None, Some(sentence)) => {
            if sentence.chars().count() > crate::audio::tts::MAX_SENTENCE_CHARS {
                return Err(ApiError::Validation(format!(
                    "The property sentence must be at most {} characters",
                    crate::audio::tts::MAX_SENTENCE_CHARS
                )));
            }
            let voice = crate::audio::espeak_voice(
                input.string("gender")?.as_deref(),
                input.string("locale")?.as_deref(),
                input.string("voice")?.as_deref(),
            )
            .map_err(|e| ApiError::Validation(e.to_string()))?;
            Some(Source::Speech { sentence, voice })
        }
    };
    Ok(AudioRequest {
        source,
        looped: input.boolean("loopEnabled")?.unwrap_or(false),
        tag: input.string("tag")?.filter(|t| !t.is_empty()),
    })
}

async fn conference_audio(
    State(state): State<ApiState>,
    Path((_user, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request = audio_request(&body_input(body)?)?;
    state
        .switchboard
        .audio(AudioTarget::Conference(id), request)
        .await?;
    Ok(ok())
}

async fn member_audio(
    State(state): State<ApiState>,
    Path((_user, id, member)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request = audio_request(&body_input(body)?)?;
    member_in(&state.shared.registry(), &id, &member)?;
    state
        .switchboard
        .audio(AudioTarget::Member(member), request)
        .await?;
    Ok(ok())
}

async fn call_audio(
    State(state): State<ApiState>,
    Path((_user, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request = audio_request(&body_input(body)?)?;
    state
        .switchboard
        .audio(AudioTarget::Call(id), request)
        .await?;
    Ok(ok())
}

/// 200 while the media clock ticks (`status` `degraded` while the store
/// cannot write: calls go on, new records are refused); 503 when the clock
/// has stopped.
async fn health(State(state): State<ApiState>) -> Response {
    let before = state.media_stats.ticks.load(Ordering::Relaxed);
    tokio::time::sleep(HEALTH_WINDOW).await;
    let after = state.media_stats.ticks.load(Ordering::Relaxed);
    let store = state.store.health().failure();
    let store_status = match store {
        None => "ok".to_string(),
        Some(kind) => format!("degraded: {}", kind.as_str()),
    };
    if after > before {
        let status = if store.is_none() { "ok" } else { "degraded" };
        json_response(&json!({"status": status, "mediaTicks": after, "store": store_status}))
    } else {
        let mut response = json_response(
            &json!({"status": "media clock stopped", "mediaTicks": after, "store": store_status}),
        );
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
