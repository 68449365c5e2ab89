//! The request bodies of the API as typed requests: what each handler reads
//! from its body, field by field, under the lenient conventions of `input.rs`
//! (docs/api.md). Pure functions of the body: they touch no registry and no
//! switchboard, so each body can be tested, and fuzzed (fuzz/), on its own.

use super::error::ApiError;
use super::input::Input;
use crate::audio::Source;
use crate::calls::{AudioRequest, ConferenceChange, MemberChange, OutgoingRequest};
use crate::conference::{
    CallState, CallbackMethod, Conference, MemberOptions, Profile, MAX_CALLBACK_TIMEOUT_MS,
};
use std::time::Duration;

/// The callback settings a request sets; `None` leaves one unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackInput {
    /// `Some(None)` clears the URL (`""`).
    pub url: Option<Option<String>>,
    pub method: Option<CallbackMethod>,
    pub timeout_ms: Option<u32>,
    pub fallback_url: Option<Option<String>>,
    pub tag: Option<String>,
}

impl CallbackInput {
    fn read(input: &Input) -> Result<CallbackInput, ApiError> {
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

    /// The request sets none of them.
    pub fn is_empty(&self) -> bool {
        *self == CallbackInput::default()
    }

    pub fn apply(self, c: &mut Conference) {
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

/// `POST /conferences`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceCreate {
    pub from: String,
    pub profile: Profile,
    pub callback: CallbackInput,
    /// `talkingEvents` (an extension): members' talking changes are sent
    /// as `conference-member` events.
    pub talking_events: bool,
}

impl ConferenceCreate {
    pub fn parse(body: &[u8]) -> Result<ConferenceCreate, ApiError> {
        let input = Input::parse(body)?;
        Ok(ConferenceCreate {
            from: input.required_string("from")?,
            profile: input
                .choice(
                    "profile",
                    "interpret_digits, passthru_digits",
                    Profile::parse,
                )?
                .unwrap_or_default(),
            callback: CallbackInput::read(&input)?,
            talking_events: input.boolean("talkingEvents")?.unwrap_or(false),
        })
    }
}

/// `POST /conferences/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceUpdate {
    pub change: ConferenceChange,
    pub callback: CallbackInput,
    /// `talkingEvents` turned on or off (a room's conference, say).
    pub talking_events: Option<bool>,
}

impl ConferenceUpdate {
    pub fn parse(body: &[u8]) -> Result<ConferenceUpdate, ApiError> {
        let input = Input::parse(body)?;
        let complete = match input.string("state")? {
            None => false,
            Some(s) if s.trim().eq_ignore_ascii_case("completed") => true,
            Some(_) => {
                return Err(ApiError::Validation(
                    "The property state can only be completed".into(),
                ))
            }
        };
        Ok(ConferenceUpdate {
            change: ConferenceChange {
                complete,
                mute: input.boolean("mute")?,
                hold: input.boolean("hold")?,
            },
            callback: CallbackInput::read(&input)?,
            talking_events: input.boolean("talkingEvents")?,
        })
    }
}

/// `POST /conferences/{id}/members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAdd {
    pub call_id: String,
    pub options: MemberOptions,
}

impl MemberAdd {
    pub fn parse(body: &[u8]) -> Result<MemberAdd, ApiError> {
        let input = Input::parse(body)?;
        Ok(MemberAdd {
            call_id: input.required_string("callId")?,
            options: MemberOptions {
                join_tone: input.boolean("joinTone")?.unwrap_or(false),
                leaving_tone: input.boolean("leavingTone")?.unwrap_or(false),
                mute: input.boolean("mute")?.unwrap_or(false),
                hold: input.boolean("hold")?.unwrap_or(false),
            },
        })
    }
}

/// `POST /conferences/{id}/members/{member}`.
pub fn member_update(body: &[u8]) -> Result<MemberChange, ApiError> {
    let input = Input::parse(body)?;
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
    Ok(MemberChange {
        remove,
        mute: input.boolean("mute")?,
        hold: input.boolean("hold")?,
        join_tone: input.boolean("joinTone")?,
        leaving_tone: input.boolean("leavingTone")?,
    })
}

/// `POST /calls/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallUpdate {
    pub target: Option<CallState>,
    pub callback_url: Option<Option<String>>,
    pub tag: Option<String>,
}

impl CallUpdate {
    pub fn parse(body: &[u8]) -> Result<CallUpdate, ApiError> {
        let input = Input::parse(body)?;
        Ok(CallUpdate {
            target: input.choice(
                "state",
                "active, rejected, completed",
                |s| match CallState::parse(s) {
                    Some(CallState::Started) | None => None,
                    other => other,
                },
            )?,
            callback_url: input.url("callbackUrl")?,
            tag: input.string("tag")?,
        })
    }
}

/// `POST /calls`.
pub fn call_create(body: &[u8]) -> Result<OutgoingRequest, ApiError> {
    let input = Input::parse(body)?;
    let call_timeout = match input.number("callTimeout")? {
        None => crate::calls::DEFAULT_CALL_TIMEOUT,
        Some(s) if (1..=300).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            return Err(ApiError::Validation(
                "The property callTimeout must be between 1 and 300 seconds".into(),
            ))
        }
    };
    Ok(OutgoingRequest {
        from: input.required_string("from")?,
        to: input.required_string("to")?,
        callback_url: input.url("callbackUrl")?.flatten(),
        conference_id: input.string("conferenceId")?.filter(|c| !c.is_empty()),
        call_timeout,
        tag: input.string("tag")?.filter(|t| !t.is_empty()),
    })
}

/// The audio request of docs/api.md (`.../audio` of a conference, member or
/// call): exactly one of `fileUrl` and `sentence`; an empty one stops what plays.
pub fn audio(body: &[u8]) -> Result<AudioRequest, ApiError> {
    let input = Input::parse(body)?;
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
