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
pub mod requests;

pub use error::{ApiError, CatapultError};
pub use std::borrow::Cow;

use crate::calls::{AudioTarget, ConferenceChange, MemberChange, Shared, SwitchboardHandle};
use crate::conference::wire::{self, CallView, ConferenceView, MemberView, Uris};
use crate::conference::{ConferenceState, Member, MemberState, RecordError};
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
use requests::{CallUpdate, ConferenceCreate, ConferenceUpdate, MemberAdd};
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

impl ApiState {
    /// An active member's reception figures, as the media thread last
    /// published them (no wait on it).
    fn quality_of(&self, m: &Member) -> Option<crate::media::quality::Quality> {
        self.media_stats.member_quality.read(m.media?)
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

/// The body, or the error for one axum could not read (too large: 413).
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    match body {
        Ok(bytes) => Ok(bytes),
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
    let ConferenceCreate {
        from,
        profile,
        callback,
        talking_events,
    } = ConferenceCreate::parse(&body_bytes(body)?)?;
    let id = {
        let mut registry = state.shared.registry();
        let now = crate::store::truncate_to_ms(SystemTime::now());
        let id = registry
            .create_conference_stored(&from, profile, now, |c| {
                callback.apply(c);
                c.talking_events = talking_events;
            })?
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
    let ConferenceUpdate {
        change,
        callback,
        talking_events,
    } = ConferenceUpdate::parse(&body_bytes(body)?)?;
    {
        let mut registry = state.shared.registry();
        let c = registry
            .conference(&id)
            .ok_or(RecordError::ConferenceNotFound(id.clone()))?;
        if c.state == ConferenceState::Completed {
            return Err(RecordError::ConferenceCompleted.into());
        }
        if !callback.is_empty() || talking_events.is_some() {
            registry.update_conference_stored(&id, |c| {
                callback.apply(c);
                if let Some(on) = talking_events {
                    c.talking_events = on;
                }
            })?;
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
        .map(|m| MemberView::new(&state.uris, m).with_quality(state.quality_of(m)))
        .collect();
    Ok(json_response(&list))
}

async fn add_member(
    State(state): State<ApiState>,
    Path((_user, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let MemberAdd { call_id, options } = MemberAdd::parse(&body_bytes(body)?)?;
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
    let view = MemberView::new(&state.uris, &m).with_quality(state.quality_of(&m));
    Ok(json_response(&view))
}

async fn update_member(
    State(state): State<ApiState>,
    Path((_user, id, member)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let change = requests::member_update(&body_bytes(body)?)?;
    let remove = change.remove;
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
    let CallUpdate {
        target,
        callback_url,
        tag,
    } = CallUpdate::parse(&body_bytes(body)?)?;
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
    let request = requests::call_create(&body_bytes(body)?)?;
    let id = state.switchboard.create_call(request).await?;
    created(state.uris.call(&id))
}

async fn conference_audio(
    State(state): State<ApiState>,
    Path((_user, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request = requests::audio(&body_bytes(body)?)?;
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
    let request = requests::audio(&body_bytes(body)?)?;
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
    let request = requests::audio(&body_bytes(body)?)?;
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
