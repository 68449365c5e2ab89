//! The records as the Catapult v1 wire shows them (docs/api.md): the API's
//! Conference, Member and Call resources and every kind of callback event,
//! each a `Serialize` view borrowed from the records, and [`to_json`], the one
//! way a view becomes JSON text. The API and the callback outbox both render
//! through here. Nothing here reads the clock, sends, stores or changes a
//! record: the instant of an event is an argument.
//!
//! Unset optional fields are omitted, never `null` (docs/api.md "Conventions": the
//! C# client throws on a `null` date).

mod time;

pub use time::{event_time, resource_time, EventTime, ResourceTime};

use super::{
    CallDirection, CallRecord, CallState, CallbackMethod, Conference, ConferenceState, Member,
    MemberState, Profile,
};
use crate::media::quality::Quality;
use serde::{Serialize, Serializer};
use std::time::SystemTime;

/// The `applicationId` of `incomingcall` events: the bridge is one application.
pub const APPLICATION_ID: &str = "a-sipconf";

/// A view as JSON text, its keys in alphabetical order at every level.
///
/// The views declare their fields in the order docs/api.md lists them, but the
/// wire has always carried the keys sorted (the renderers before these views
/// built `serde_json::Map`s, which are sorted maps), and those are the bytes
/// the v1 clients were tested against. Going through a `Value` and sorting it
/// keeps them, even should a dependency turn on serde_json's
/// `preserve_order`. The wire tests below and in `events` pin the bytes.
pub fn to_json(view: &impl Serialize) -> String {
    let mut value = serde_json::to_value(view)
        .expect("a view of strings, numbers and booleans always serializes");
    value.sort_all_objects();
    value.to_string()
}

/// The absolute URIs of resources, `{public_base_url}/v1/users/{userId}/...`,
/// as `Location` headers, a member's `call` and the events' `...Uri` show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uris {
    user_base: String,
}

impl Uris {
    /// `user_base` is `{public_base_url}/v1/users/{userId}`.
    pub fn new(user_base: String) -> Uris {
        Uris { user_base }
    }

    pub fn conference(&self, id: &str) -> String {
        format!("{}/conferences/{id}", self.user_base)
    }

    pub fn member(&self, conference_id: &str, member_id: &str) -> String {
        format!(
            "{}/conferences/{conference_id}/members/{member_id}",
            self.user_base
        )
    }

    pub fn call(&self, id: &str) -> String {
        format!("{}/calls/{id}", self.user_base)
    }
}

/// Record states and settings go on the wire as their API names.
macro_rules! serialize_as_api_name {
    ($($record:ty),+) => {
        $(impl Serialize for $record {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        })+
    };
}

serialize_as_api_name!(
    ConferenceState,
    MemberState,
    Profile,
    CallbackMethod,
    CallDirection,
    CallState
);

/// The Conference resource (docs/api.md "Conferences").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConferenceView<'a> {
    id: &'a str,
    state: ConferenceState,
    from: &'a str,
    created_time: ResourceTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_time: Option<ResourceTime>,
    active_members: usize,
    hold: bool,
    mute: bool,
    profile: Profile,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<&'a str>,
    callback_http_method: CallbackMethod,
    callback_timeout: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
}

impl<'a> ConferenceView<'a> {
    pub fn new(c: &'a Conference) -> ConferenceView<'a> {
        ConferenceView {
            id: &c.id,
            state: c.state,
            from: &c.from,
            created_time: ResourceTime(c.created_time),
            completed_time: c.completed_time.map(ResourceTime),
            active_members: c.active_members,
            hold: c.hold,
            mute: c.mute,
            profile: c.profile,
            callback_url: c.callback.url.as_deref(),
            callback_http_method: c.callback.method,
            callback_timeout: c.callback.timeout_ms,
            fallback_url: c.callback.fallback_url.as_deref(),
            tag: c.tag.as_deref(),
        }
    }
}

/// The Member resource (docs/api.md "Members"), with the read-only extras
/// `talking` and `deaf`. A member's own flags, not the conference's.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView<'a> {
    id: &'a str,
    state: MemberState,
    added_time: ResourceTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_time: Option<ResourceTime>,
    hold: bool,
    mute: bool,
    join_tone: bool,
    leaving_tone: bool,
    /// The absolute URL of the member's call.
    call: String,
    talking: bool,
    deaf: bool,
    /// While active, once the media thread published them.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    quality: Option<QualityView>,
}

/// A member's reception figures (`media/quality.rs`), read-only extras.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QualityView {
    packets_received: u64,
    packets_lost: i64,
    /// RFC 3550 interarrival jitter, in milliseconds with one decimal.
    jitter_ms: f64,
}

impl From<Quality> for QualityView {
    fn from(q: Quality) -> QualityView {
        QualityView {
            packets_received: q.packets_received,
            packets_lost: q.packets_lost,
            jitter_ms: (f64::from(q.jitter_us) / 100.0).round() / 10.0,
        }
    }
}

impl<'a> MemberView<'a> {
    pub fn new(uris: &Uris, m: &'a Member) -> MemberView<'a> {
        MemberView {
            id: &m.id,
            state: m.state,
            added_time: ResourceTime(m.added_time),
            removed_time: m.removed_time.map(ResourceTime),
            hold: m.hold,
            mute: m.mute,
            join_tone: m.join_tone,
            leaving_tone: m.leaving_tone,
            call: uris.call(&m.call_id),
            talking: m.talking,
            deaf: m.deaf,
            quality: None,
        }
    }

    /// With the member's reception figures (`packetsReceived`,
    /// `packetsLost`, `jitterMs`).
    pub fn with_quality(self, quality: Option<Quality>) -> MemberView<'a> {
        MemberView {
            quality: quality.map(QualityView::from),
            ..self
        }
    }
}

/// The Call resource (docs/api.md "Calls").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallView<'a> {
    id: &'a str,
    direction: CallDirection,
    from: &'a str,
    to: &'a str,
    state: CallState,
    start_time: ResourceTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_time: Option<ResourceTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<ResourceTime>,
    /// Whole seconds between answer and end.
    #[serde(skip_serializing_if = "Option::is_none")]
    chargeable_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conference_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
    /// Why it ended (docs/api.md "Hang-up causes"), once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'a str>,
}

impl<'a> CallView<'a> {
    pub fn new(c: &'a CallRecord) -> CallView<'a> {
        CallView {
            id: &c.id,
            direction: c.direction,
            from: &c.from,
            to: &c.to,
            state: c.state,
            start_time: ResourceTime(c.start_time),
            active_time: c.active_time.map(ResourceTime),
            end_time: c.end_time.map(ResourceTime),
            chargeable_duration: c.chargeable_duration_s(),
            callback_url: c.callback_url.as_deref(),
            conference_id: c.conference_id.as_deref(),
            tag: c.tag.as_deref(),
            cause: c.cause.as_deref(),
        }
    }
}

/// `conference`: the conference was created, or completed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConferenceEvent<'a> {
    event_type: &'static str,
    conference_id: &'a str,
    conference_uri: String,
    /// `completed` once completed, else `created` (an active one too).
    status: &'static str,
    created_time: EventTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_time: Option<EventTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
}

impl<'a> ConferenceEvent<'a> {
    pub fn new(uris: &Uris, c: &'a Conference) -> ConferenceEvent<'a> {
        ConferenceEvent {
            event_type: "conference",
            conference_id: &c.id,
            conference_uri: uris.conference(&c.id),
            status: match c.state {
                ConferenceState::Completed => "completed",
                ConferenceState::Created | ConferenceState::Active => "created",
            },
            created_time: EventTime(c.created_time),
            completed_time: c.completed_time.map(EventTime),
            tag: c.tag.as_deref(),
        }
    }
}

/// `conference-member`: a member joined, left or was removed, or its mute or
/// hold changed. `hold` and `mute` are as heard: the member's own or the
/// conference's.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberEvent<'a> {
    event_type: &'static str,
    conference_id: &'a str,
    call_id: &'a str,
    member_id: &'a str,
    member_uri: String,
    /// After the change.
    active_members: usize,
    state: MemberState,
    hold: bool,
    mute: bool,
    time: EventTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
    /// Only in a conference created with `talkingEvents` (v1 clients see
    /// the events they always saw).
    #[serde(skip_serializing_if = "Option::is_none")]
    talking: Option<bool>,
}

impl<'a> MemberEvent<'a> {
    pub fn new(uris: &Uris, c: &'a Conference, m: &'a Member, now: SystemTime) -> MemberEvent<'a> {
        MemberEvent {
            event_type: "conference-member",
            conference_id: &c.id,
            call_id: &m.call_id,
            member_id: &m.id,
            member_uri: uris.member(&c.id, &m.id),
            active_members: c.active_members,
            state: m.state,
            hold: m.hold || c.hold,
            mute: m.mute || c.mute,
            time: EventTime(now),
            tag: c.tag.as_deref(),
            talking: c.talking_events.then_some(m.talking),
        }
    }
}

/// `conference-playback` / `conference-speak`: audio into the whole
/// conference started or is done.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConferenceAudioEvent<'a> {
    event_type: String,
    conference_id: &'a str,
    conference_uri: String,
    status: &'a str,
    time: EventTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
}

impl<'a> ConferenceAudioEvent<'a> {
    /// `kind` is `playback` or `speak`, `status` `started` or `done`; `tag` is
    /// the audio request's, else the conference's.
    pub fn new(
        uris: &Uris,
        c: &'a Conference,
        kind: &str,
        status: &'a str,
        tag: Option<&'a str>,
        now: SystemTime,
    ) -> ConferenceAudioEvent<'a> {
        ConferenceAudioEvent {
            event_type: format!("conference-{kind}"),
            conference_id: &c.id,
            conference_uri: uris.conference(&c.id),
            status,
            time: EventTime(now),
            tag: tag.or(c.tag.as_deref()),
        }
    }
}

/// What every event about a call carries.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallFields<'a> {
    event_type: &'a str,
    call_id: &'a str,
    call_uri: String,
    from: &'a str,
    to: &'a str,
    call_state: CallState,
    time: EventTime,
}

impl<'a> CallFields<'a> {
    fn new(uris: &Uris, call: &'a CallRecord, event_type: &'a str, now: SystemTime) -> Self {
        CallFields {
            event_type,
            call_id: &call.id,
            call_uri: uris.call(&call.id),
            from: &call.from,
            to: &call.to,
            call_state: call.state,
            time: EventTime(now),
        }
    }
}

/// `answer` or `hangup` (with the call's hangup `cause`, once it has one).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallEvent<'a> {
    #[serde(flatten)]
    call: CallFields<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
}

impl<'a> CallEvent<'a> {
    pub fn new(
        uris: &Uris,
        call: &'a CallRecord,
        event_type: &'a str,
        now: SystemTime,
    ) -> CallEvent<'a> {
        CallEvent {
            call: CallFields::new(uris, call, event_type, now),
            cause: call.cause.as_deref().filter(|_| event_type == "hangup"),
            tag: call.tag.as_deref(),
        }
    }
}

/// `dtmf`: a key pressed in a `passthru_digits` conference.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DtmfEvent<'a> {
    #[serde(flatten)]
    call: CallFields<'a>,
    dtmf_digit: char,
    dtmf_duration: u32,
    conference_id: &'a str,
    /// The call's, else the conference's.
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
}

impl<'a> DtmfEvent<'a> {
    pub fn new(
        uris: &Uris,
        call: &'a CallRecord,
        conference: &'a Conference,
        digit: char,
        duration_ms: u32,
        now: SystemTime,
    ) -> DtmfEvent<'a> {
        DtmfEvent {
            call: CallFields::new(uris, call, "dtmf", now),
            dtmf_digit: digit,
            dtmf_duration: duration_ms,
            conference_id: &conference.id,
            tag: call.tag.as_deref().or(conference.tag.as_deref()),
        }
    }
}

/// The call's `playback` or `speak` event: audio to one call started or is done.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallAudioEvent<'a> {
    #[serde(flatten)]
    call: CallFields<'a>,
    status: &'a str,
    /// The audio request's, else the call's.
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
}

impl<'a> CallAudioEvent<'a> {
    /// `kind` is `playback` or `speak`, `status` `started` or `done`.
    pub fn new(
        uris: &Uris,
        call: &'a CallRecord,
        kind: &'a str,
        status: &'a str,
        tag: Option<&'a str>,
        now: SystemTime,
    ) -> CallAudioEvent<'a> {
        CallAudioEvent {
            call: CallFields::new(uris, call, kind, now),
            status,
            tag: tag.or(call.tag.as_deref()),
        }
    }
}

/// `incomingcall`: a call no room takes, for the application to answer or
/// reject. It carries no `tag`: the application has not set one yet.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IncomingCallEvent<'a> {
    #[serde(flatten)]
    call: CallFields<'a>,
    application_id: &'static str,
}

impl<'a> IncomingCallEvent<'a> {
    pub fn new(uris: &Uris, call: &'a CallRecord, now: SystemTime) -> IncomingCallEvent<'a> {
        IncomingCallEvent {
            call: CallFields::new(uris, call, "incomingcall", now),
            application_id: APPLICATION_ID,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conference::fixtures::{self, *};

    fn uris() -> Uris {
        Uris::new(fixtures::USER_BASE.into())
    }

    /// The exact bytes of each resource, every optional field present and
    /// absent, as the v1 clients have accepted them: keys in alphabetical
    /// order, unset optional fields omitted.
    #[test]
    fn resources_render_byte_for_byte() {
        let uris = uris();
        let got = [
            to_json(&ConferenceView::new(&full_conference())),
            to_json(&ConferenceView::new(&active_conference())),
            to_json(&ConferenceView::new(&bare_conference())),
            to_json(&MemberView::new(&uris, &full_member())),
            to_json(&MemberView::new(&uris, &active_member())),
            to_json(&CallView::new(&full_call())),
            to_json(&CallView::new(&active_call())),
            to_json(&CallView::new(&bare_call())),
        ];
        let want = [
            r#"{"activeMembers":0,"callbackHttpMethod":"GET","callbackTimeout":2500,"callbackUrl":"http://app.example/cb","completedTime":"2026-11-27T02:15:01Z","createdTime":"2026-11-27T01:14:00Z","fallbackUrl":"http://backup.example/cb","from":"+15550100","hold":true,"id":"conf-full","mute":false,"profile":"passthru_digits","state":"completed","tag":"board"}"#,
            r#"{"activeMembers":1,"callbackHttpMethod":"POST","callbackTimeout":10000,"callbackUrl":"http://app.example/cb","createdTime":"2026-11-27T01:15:00Z","from":"1000","hold":false,"id":"conf-active","mute":true,"profile":"interpret_digits","state":"active"}"#,
            r#"{"activeMembers":0,"callbackHttpMethod":"POST","callbackTimeout":10000,"createdTime":"2026-11-27T01:16:00Z","from":"2000","hold":false,"id":"conf-bare","mute":false,"profile":"interpret_digits","state":"created"}"#,
            r#"{"addedTime":"2026-11-27T01:14:10Z","call":"http://bridge.example:8088/v1/users/u-test/calls/c-full","deaf":true,"hold":false,"id":"member-full","joinTone":true,"leavingTone":false,"mute":true,"removedTime":"2026-11-27T02:15:00Z","state":"completed","talking":false}"#,
            r#"{"addedTime":"2026-11-27T01:15:10Z","call":"http://bridge.example:8088/v1/users/u-test/calls/c-active","deaf":false,"hold":true,"id":"member-active","joinTone":false,"leavingTone":true,"mute":false,"state":"active","talking":true}"#,
            r#"{"activeTime":"2026-11-27T01:14:02Z","callbackUrl":"http://app.example/calls","cause":"NORMAL_CLEARING","chargeableDuration":65,"conferenceId":"conf-full","direction":"out","endTime":"2026-11-27T01:15:08Z","from":"sip:bridge@example","id":"c-full","startTime":"2026-11-27T01:14:00Z","state":"completed","tag":"vip","to":"sip:alice@example"}"#,
            r#"{"activeTime":"2026-11-27T01:15:05Z","callbackUrl":"http://app.example/calls","conferenceId":"conf-active","direction":"in","from":"sip:bob@example","id":"c-active","startTime":"2026-11-27T01:15:05Z","state":"active","to":"sip:1000@bridge"}"#,
            r#"{"direction":"in","from":"sip:carol@example","id":"c-bare","startTime":"2026-11-27T01:16:10Z","state":"started","to":"sip:5555@bridge"}"#,
        ];
        assert_eq!(got, want);
    }

    /// A list is an array of the same objects, each sorted.
    #[test]
    fn a_list_renders_each_resource_as_alone() {
        let (full, bare) = (full_conference(), bare_conference());
        let list = [ConferenceView::new(&full), ConferenceView::new(&bare)];
        assert_eq!(
            to_json(&list),
            format!(
                "[{},{}]",
                to_json(&ConferenceView::new(&full)),
                to_json(&ConferenceView::new(&bare))
            )
        );
        assert_eq!(to_json(&Vec::<ConferenceView>::new()), "[]");
    }

    /// The instant an event is about is the one given, to the millisecond.
    #[test]
    fn an_event_carries_the_instant_it_is_given() {
        let (c, m) = (active_conference(), active_member());
        let event = MemberEvent::new(&uris(), &c, &m, at(1_795_742_111_042));
        assert!(
            to_json(&event).contains(r#""time":"2026-11-27T01:15:11.042Z""#),
            "{}",
            to_json(&event)
        );
    }

    /// The reception figures join the member's fields when there are some.
    #[test]
    fn a_member_with_figures_shows_packets_and_jitter() {
        let m = active_member();
        let figures = Quality {
            packets_received: 1498,
            packets_lost: 3,
            jitter_us: 12_345,
        };
        let json = to_json(&MemberView::new(&uris(), &m).with_quality(Some(figures)));
        assert!(
            json.contains(r#""hold":true,"id":"member-active","jitterMs":12.3,"joinTone":false,"leavingTone":true,"mute":false,"packetsLost":3,"packetsReceived":1498,"state":"active""#),
            "{json}"
        );
    }

    /// `talking` is in member events only for a conference that asked.
    #[test]
    fn member_events_carry_talking_only_when_asked() {
        let (mut c, m) = (active_conference(), active_member());
        let event = to_json(&MemberEvent::new(&uris(), &c, &m, at(0)));
        assert!(!event.contains("talking"), "{event}");
        c.talking_events = true;
        let event = to_json(&MemberEvent::new(&uris(), &c, &m, at(0)));
        assert!(event.contains(r#""talking":true"#), "{event}");
    }
}
