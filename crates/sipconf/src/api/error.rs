//! Every API failure as a Catapult error: the HTTP status, `category`, `code`
//! and `message`, in this one place (docs/api.md "Conventions", "Errors"). The
//! `details` (request path and method) are added by the layer that knows the
//! request, see [`with_details`]. The layers below say what went wrong as
//! data (`RecordError`, `CallError`); only this file words it for clients.

use crate::calls::{Busy, CallError};
use crate::conference::RecordError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Missing or wrong credentials.
    Unauthorized,
    /// A `userId` in the path that is not the configured user.
    UserAccessDenied(String),
    /// A field that is present but malformed (or a body that is not JSON).
    Validation(String),
    MissingProperty(&'static str),
    InvalidUrl(&'static str, String),
    TooLarge,
    NotFound,
    MethodNotAllowed,
    Record(RecordError),
    Call(CallError),
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> ApiError {
        ApiError::Record(e)
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> ApiError {
        match e {
            CallError::Record(e) => ApiError::Record(e),
            other => ApiError::Call(other),
        }
    }
}

/// The error as the client sees it, before the request details are added.
#[derive(Debug, Clone)]
pub struct CatapultError {
    pub status: StatusCode,
    pub category: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// The Catapult code table.
    pub fn catapult(&self) -> CatapultError {
        use StatusCode as S;
        let (status, category, code, message) = match self {
            ApiError::Unauthorized => (
                S::UNAUTHORIZED,
                "authentication",
                "unauthorized",
                "Valid credentials are required: HTTP Basic with the API token and secret".into(),
            ),
            ApiError::UserAccessDenied(user) => (
                S::UNAUTHORIZED,
                "authentication",
                "user-access-denied",
                format!("These credentials cannot access the user {user}"),
            ),
            ApiError::Validation(what) => (
                S::BAD_REQUEST,
                "bad-request",
                "validation-error",
                what.clone(),
            ),
            ApiError::MissingProperty(name) => (
                S::BAD_REQUEST,
                "bad-request",
                "missing-property",
                format!("The property {name} is required"),
            ),
            ApiError::InvalidUrl(name, url) => (
                S::BAD_REQUEST,
                "bad-request",
                "callback-invalid-url",
                format!("The {name} {url} is not a valid http or https URL"),
            ),
            ApiError::TooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "limit",
                "request-too-large",
                format!(
                    "The request body is larger than {} bytes",
                    super::MAX_BODY_BYTES
                ),
            ),
            ApiError::NotFound => (
                S::NOT_FOUND,
                "not-found",
                "resource-not-found",
                "There is no such resource".into(),
            ),
            ApiError::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "bad-request",
                "method-not-allowed",
                "This resource does not support this method".into(),
            ),
            ApiError::Record(e) => record_error(e),
            ApiError::Call(e) => call_error(e),
        };
        CatapultError {
            status,
            category,
            code,
            message,
        }
    }
}

/// A refusal of the records layer as the client reads it: status, category,
/// code and the English message.
fn record_error(e: &RecordError) -> (StatusCode, &'static str, &'static str, String) {
    use StatusCode as S;
    match e {
        RecordError::ConferenceNotFound(id) => (
            S::NOT_FOUND,
            "not-found",
            "conference-not-found",
            format!("The conference {id} could not be found"),
        ),
        RecordError::MemberNotFound(id) => (
            S::NOT_FOUND,
            "not-found",
            "conference-member-not-found",
            format!("The conference member {id} could not be found"),
        ),
        RecordError::CallNotFound(id) => (
            S::NOT_FOUND,
            "not-found",
            "call-not-found",
            format!("The call {id} could not be found"),
        ),
        RecordError::ConferenceCompleted => (
            S::FORBIDDEN,
            "authorization",
            "conference-error",
            "Invalid conference state completed".into(),
        ),
        RecordError::ConferenceFull(max) => (
            S::FORBIDDEN,
            "limit",
            "conference-max-members",
            format!("The conference is full ({max} members)"),
        ),
        RecordError::NotStored(why) => (
            S::SERVICE_UNAVAILABLE,
            "unavailable",
            "store-unavailable",
            format!("The record could not be stored ({why}); nothing was made or changed"),
        ),
    }
}

/// A refusal of the call layer as the client reads it.
fn call_error(e: &CallError) -> (StatusCode, &'static str, &'static str, String) {
    use StatusCode as S;
    match e {
        CallError::CallInConference(call, conference) => (
            S::FORBIDDEN,
            "authorization",
            "call-invalid-state",
            format!("The call {call} is already a member of conference {conference}"),
        ),
        CallError::CallInvalidState(call, state) => (
            S::FORBIDDEN,
            "authorization",
            "call-invalid-state",
            format!("The call {call} is in state {}", state.as_str()),
        ),
        CallError::CallUnavailable(call) => (
            S::SERVICE_UNAVAILABLE,
            "unavailable",
            "call-unavailable",
            format!("The call {call} is not answered"),
        ),
        CallError::BadTarget(why) => (
            S::BAD_REQUEST,
            "bad-request",
            "invalid-to",
            format!("Cannot call {why}"),
        ),
        CallError::SpeechUnavailable(why) => (
            S::SERVICE_UNAVAILABLE,
            "unavailable",
            "text-to-speech-unavailable",
            format!("Text to speech is unavailable: {why}"),
        ),
        CallError::Busy(why) => (
            S::SERVICE_UNAVAILABLE,
            "unavailable",
            "service-unavailable",
            format!("The bridge is busy: {}", busy_reason(*why)),
        ),
        CallError::Record(e) => record_error(e),
    }
}

/// What the bridge ran out of, in the client's words.
fn busy_reason(busy: Busy) -> &'static str {
    match busy {
        Busy::Stopping => "the bridge is stopping",
        Busy::CallGone => "the call is gone",
        Busy::NoMediaSlot => "every media slot is taken",
        Busy::NoMix => "every conference mix is taken",
        Busy::SocketNotShared => "cannot share the RTP socket",
        Busy::NoRtpPort => "no free RTP port",
        Busy::SipTablesFull => "the SIP call table is full",
    }
}

impl IntoResponse for ApiError {
    /// The status and the error as an extension; [`with_details`] writes the body.
    fn into_response(self) -> Response {
        let error = self.catapult();
        let mut response = Response::new(Body::empty());
        *response.status_mut() = error.status;
        if self == ApiError::Unauthorized || matches!(self, ApiError::UserAccessDenied(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sipconf\""),
            );
        }
        response.extensions_mut().insert(error);
        response
    }
}

/// Middleware: writes the JSON body of every error response, with the
/// request's path and method, and turns the router's own empty 404, 405 and
/// 413 answers into Catapult errors too.
pub async fn with_details(request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request
        .uri()
        .path()
        .trim_start_matches('/')
        .trim_start_matches("v1/")
        .to_string();
    let mut response = next.run(request).await;
    let error = match response.extensions_mut().remove::<CatapultError>() {
        Some(error) => error,
        None => match response.status() {
            StatusCode::NOT_FOUND => ApiError::NotFound.catapult(),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed.catapult(),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge.catapult(),
            _ => return response,
        },
    };
    let body = json!({
        "category": error.category,
        "code": error.code,
        "message": error.message,
        "details": [
            {"name": "requestPath", "value": path},
            {"name": "requestMethod", "value": method},
        ],
    });
    let (mut parts, _) = response.into_parts();
    parts.status = error.status;
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_errors_map_to_the_catapult_table() {
        let full = ApiError::from(RecordError::ConferenceFull(3)).catapult();
        assert_eq!(
            (full.status, full.category, full.code),
            (StatusCode::FORBIDDEN, "limit", "conference-max-members")
        );
        let completed = ApiError::from(RecordError::ConferenceCompleted).catapult();
        assert_eq!(completed.code, "conference-error");
        assert_eq!(completed.message, "Invalid conference state completed");
        let unanswered = ApiError::from(CallError::CallUnavailable("c-x".into())).catapult();
        assert_eq!(unanswered.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unanswered.code, "call-unavailable");
    }

    /// The English of every refusal lives here, not in the records or call layer.
    #[test]
    fn record_and_call_errors_are_worded_for_clients() {
        let worded = |e: CallError| ApiError::from(e).catapult().message;
        for (error, message) in [
            (
                CallError::Record(RecordError::ConferenceNotFound("conf-x".into())),
                "The conference conf-x could not be found",
            ),
            (
                CallError::Record(RecordError::MemberNotFound("member-x".into())),
                "The conference member member-x could not be found",
            ),
            (
                CallError::Record(RecordError::ConferenceCompleted),
                "Invalid conference state completed",
            ),
            (
                CallError::Record(RecordError::ConferenceFull(3)),
                "The conference is full (3 members)",
            ),
            (
                CallError::Record(RecordError::CallNotFound("c-x".into())),
                "The call c-x could not be found",
            ),
            (
                CallError::CallUnavailable("c-x".into()),
                "The call c-x is not answered",
            ),
            (
                CallError::CallInConference("c-x".into(), "conf-y".into()),
                "The call c-x is already a member of conference conf-y",
            ),
            (
                CallError::CallInvalidState("c-x".into(), crate::conference::CallState::Started),
                "The call c-x is in state started",
            ),
            (
                CallError::Busy(Busy::NoMediaSlot),
                "The bridge is busy: every media slot is taken",
            ),
            (
                CallError::BadTarget("no outbound proxy".into()),
                "Cannot call no outbound proxy",
            ),
            (
                CallError::SpeechUnavailable("espeak-ng is missing".into()),
                "Text to speech is unavailable: espeak-ng is missing",
            ),
        ] {
            assert_eq!(worded(error), message);
        }
    }
}
