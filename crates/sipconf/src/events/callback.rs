//! One callback as it happened: the records it reports, copied when the change
//! was made, so whoever carries it later (the call core hands callbacks out as
//! actions) renders what was true then. It owns nothing but the copies and
//! never queues itself: [`CallbackEvent::queue`] hands it to [`Events`].

use super::Events;
use crate::conference::{CallRecord, Conference, Member};

#[derive(Debug, Clone, PartialEq)]
pub enum CallbackEvent {
    /// `conference` with `status` `created` or `completed`.
    Conference(Conference),
    /// `conference-member`: joined, left or removed, mute or hold changed.
    Member {
        conference: Conference,
        member: Member,
    },
    /// A call event: `answer`, or `hangup` with its cause.
    Call {
        call: CallRecord,
        event_type: &'static str,
    },
    /// `dtmf`: a key pressed in a `passthru_digits` conference.
    Dtmf {
        call: CallRecord,
        conference: Conference,
        digit: char,
        duration_ms: u32,
    },
    /// `conference-playback` or `conference-speak` (`kind` `playback` / `speak`).
    ConferenceAudio {
        conference: Conference,
        kind: &'static str,
        status: &'static str,
        tag: Option<String>,
    },
    /// The call's `playback` or `speak`.
    CallAudio {
        call: CallRecord,
        kind: &'static str,
        status: &'static str,
        tag: Option<String>,
    },
    /// `incomingcall` to the application's URL.
    IncomingCall { url: String, call: CallRecord },
}

impl CallbackEvent {
    /// Renders it and queues it in the outbox.
    pub fn queue(self, events: &Events) {
        match self {
            CallbackEvent::Conference(conference) => events.conference(&conference),
            CallbackEvent::Member { conference, member } => events.member(&conference, &member),
            CallbackEvent::Call { call, event_type } => events.call(&call, event_type),
            CallbackEvent::Dtmf {
                call,
                conference,
                digit,
                duration_ms,
            } => events.dtmf(&call, &conference, digit, duration_ms),
            CallbackEvent::ConferenceAudio {
                conference,
                kind,
                status,
                tag,
            } => events.conference_audio(&conference, kind, status, tag.as_deref()),
            CallbackEvent::CallAudio {
                call,
                kind,
                status,
                tag,
            } => events.call_audio(&call, kind, status, tag.as_deref()),
            CallbackEvent::IncomingCall { url, call } => events.incoming_call(&url, &call),
        }
    }
}
