//! Calls and their routing (docs/architecture.md "Call routing"): an incoming INVITE to a
//! room number is answered and joined to that room's conference; an INVITE to
//! any other number becomes a Catapult Call that the application answers,
//! rejects and adds to conferences through the API; the API places outbound
//! calls. The call's life (hold, hang-up, RTP timeout) is carried to the
//! records, the callbacks and the media plane.
//!
//! The rules live in one sans-IO state machine, the [`Switchboard`]: inputs
//! in ([`Input`]: SIP events, media events, API requests, clips, time),
//! actions out ([`Action`]: SIP commands, media commands, callbacks, fetches,
//! replies). [`driver`] is the small tokio task that feeds it from the
//! channels and carries its actions out; it is the only part of this module
//! that touches a channel, a socket or the clock. Nothing here touches the
//! media thread's state (only its queues), SQLite (only through the
//! registry) or HTTP (only through the callback outbox).
//!
//! The files: `switchboard` (the state machine and the rules of the
//! network's events), `membership` (joining and leaving conferences, the
//! keypad's reports, the PIN lobby's wiring), `requests` (the API's
//! requests), `audio` (playback and prompts), `cascade` (links to the same
//! room on other bridges), and the parts with state of
//! their own: `table` (live calls), `lobby` (PIN entry), `playback` (audio
//! bookkeeping), `ports` (RTP ports), `outbound` (outbound targets).

mod audio;
mod cascade;
pub mod dialogs;
pub mod driver;
mod lobby;
mod membership;
mod outbound;
mod pin_guard;
mod playback;
mod ports;
mod requests;
mod switchboard;
mod table;
mod talking;
#[cfg(test)]
mod tests;

pub use cascade::LinkStats;
pub use driver::SwitchboardHandle;
pub use lobby::{PIN_FAILED, PIN_LOCKED_OUT, PIN_TRIES, WRONG_PIN};
pub use outbound::{outbound_target, OutboundTarget};
pub use pin_guard::PinStats;
pub use playback::{AudioRequest, AudioTarget};
pub use ports::{local_address_towards, CallPorts, PortPool, RtpPorts};
pub use switchboard::Switchboard;

use crate::audio::{AudioError, Clip, Source};
use crate::conference::{CallState, MemberOptions, RecordError, Registry};
use crate::events::{CallbackEvent, Events};
use crate::media::{Command, Event};
use crate::sip::transport::SipCommand;
use crate::sip::{CallKey, OutgoingCall, SipEvent};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Hangup causes (docs/api.md "Calls").
pub const NORMAL_CLEARING: &str = "NORMAL_CLEARING";
pub const ORIGINATOR_CANCEL: &str = "ORIGINATOR_CANCEL";
pub const USER_BUSY: &str = "USER_BUSY";
pub const NO_ANSWER: &str = "NO_ANSWER";
pub const CALL_REJECTED: &str = "CALL_REJECTED";

/// The default `callTimeout` of outbound calls.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the switchboard refused an API request. The API words it for clients
/// (`api/error.rs`); the `Display` here is terse, for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The records refused.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The call is not answered (or is gone), so it cannot join or hear audio.
    #[error("call {0} not answered")]
    CallUnavailable(String),
    /// The call (first) is already an active member of the conference (second).
    #[error("call {0} already in conference {1}")]
    CallInConference(String, String),
    /// The call cannot go to the state asked from the state it is in.
    #[error("call {0} is {state}", state = .1.as_str())]
    CallInvalidState(String, CallState),
    /// The bridge cannot take the request now.
    #[error("busy: {0}")]
    Busy(Busy),
    /// An outbound call's `to` cannot be called, for this reason.
    #[error("bad target: {0}")]
    BadTarget(String),
    /// Text to speech is unavailable, for this reason.
    #[error("speech unavailable: {0}")]
    SpeechUnavailable(String),
}

/// What the bridge ran out of, or why it cannot act now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    /// The bridge is stopping; the switchboard no longer takes requests.
    #[error("stopping")]
    Stopping,
    /// The call ended while the request was on its way.
    #[error("call gone")]
    CallGone,
    /// Every media slot (`media.max_members`) is taken.
    #[error("no media slot")]
    NoMediaSlot,
    /// Every conference mix is taken.
    #[error("no mix")]
    NoMix,
    /// The call's RTP socket could not be handed to the media plane.
    #[error("socket not shared")]
    SocketNotShared,
    /// Every RTP port pair of `media.rtp_ports` is in use.
    #[error("no RTP port")]
    NoRtpPort,
    /// The SIP endpoint's call or transaction table is full.
    #[error("SIP tables full")]
    SipTablesFull,
}

/// The records and the callback queue, shared by the call driver and the API.
/// Record changes and the events they cause are made under the one registry
/// lock, so events leave in the order the records changed.
pub struct Shared {
    pub registry: Mutex<Registry>,
    pub events: Events,
    /// The switchboard's count of wrong PINs and lockouts, for `/metrics`.
    pub pins: Arc<PinStats>,
    /// Each `[[registration]]`'s address of record and state, for `/metrics`.
    pub registrations: Vec<(String, Arc<crate::sip::registration::RegistrationStats>)>,
    /// What the SIP endpoint's per-source limits refused, for `/metrics`.
    pub sip_limits: Arc<crate::sip::source_guard::LimitStats>,
    /// SIP over TCP's and the API's connections, for `/metrics`.
    pub sip_connections: Arc<crate::net::connections::ConnectionStats>,
    pub api_connections: Arc<crate::net::connections::ConnectionStats>,
    /// The switchboard's count of cascade links, for `/metrics`.
    pub links: Arc<LinkStats>,
}

impl Shared {
    pub fn new(registry: Registry, events: Events) -> Shared {
        Shared {
            registry: Mutex::new(registry),
            events,
            pins: Arc::new(PinStats::default()),
            registrations: Vec::new(),
            sip_limits: Arc::default(),
            sip_connections: Arc::default(),
            api_connections: Arc::default(),
            links: Arc::new(LinkStats::default()),
        }
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues the `conference-member` event for a member as it is now.
    pub fn member_event(&self, registry: &Registry, member_id: &str) {
        let Some(member) = registry.member(member_id) else {
            return;
        };
        if let Some(conference) = registry.conference(&member.conference_id) {
            self.events.member(&conference, &member);
        }
    }

    /// Queues the `conference` event for a conference as it is now.
    pub fn conference_event(&self, registry: &Registry, conference_id: &str) {
        if let Some(c) = registry.conference(conference_id) {
            self.events.conference(&c);
        }
    }

    /// Queues a call event (`answer`, `hangup`) for a call as it is now.
    pub fn call_event(&self, registry: &Registry, call_id: &str, event_type: &str) {
        if let Some(call) = registry.call(call_id) {
            self.events.call(&call, event_type);
        }
    }
}

/// A change to a member asked for through the API; `None` leaves a field as is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberChange {
    pub remove: bool,
    pub mute: Option<bool>,
    pub hold: Option<bool>,
    pub join_tone: Option<bool>,
    pub leaving_tone: Option<bool>,
}

/// A change to a conference's state or flags asked for through the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConferenceChange {
    pub complete: bool,
    pub mute: Option<bool>,
    pub hold: Option<bool>,
}

/// `POST /calls` as the switchboard needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingRequest {
    /// A number or a `sip:` URI; our From.
    pub from: String,
    /// A `sip:` URI, or a number reached through `sip.outbound.proxy`.
    pub to: String,
    pub callback_url: Option<String>,
    /// Join this conference once answered.
    pub conference_id: Option<String>,
    /// Give up (CANCEL) when not answered within this.
    pub call_timeout: Duration,
    pub tag: Option<String>,
}

/// When an input happened: the monotonic instant (timers) and the wall clock
/// (records and callbacks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl Now {
    /// The machine's clocks now (the driver's; tests make their own).
    pub fn current() -> Now {
        Now {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// `by` later on both clocks.
    pub fn after(self, by: Duration) -> Now {
        Now {
            instant: self.instant + by,
            wall: self.wall + by,
        }
    }
}

/// Names an API request so its reply finds its way back.
pub type RequestId = u64;

/// What the API asks of the switchboard: everything that touches SIP or the mixer.
#[derive(Debug)]
pub enum ApiRequest {
    AddMember {
        conference_id: String,
        call_id: String,
        options: MemberOptions,
    },
    UpdateMember {
        member_id: String,
        change: MemberChange,
    },
    UpdateConference {
        conference_id: String,
        change: ConferenceChange,
    },
    /// Places an outbound call to `target` (resolved from `call.to` by the
    /// caller, which refuses a bad one first); replies with its id.
    CreateCall {
        call: OutgoingRequest,
        target: OutboundTarget,
    },
    /// Answer (`Active`), reject (`Rejected`) or hang up (`Completed`).
    SetCallState { call_id: String, state: CallState },
    /// Play a file or a sentence, or stop (`POST .../audio`). `speech_missing`
    /// says why text to speech is unavailable, when it is (checked by the
    /// caller for speech requests).
    Audio {
        target: AudioTarget,
        request: AudioRequest,
        speech_missing: Option<String>,
    },
}

/// A successful reply to an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done,
    /// The id of the member or call made.
    Created(String),
}

/// Everything that can happen to the switchboard.
#[derive(Debug)]
pub enum Input {
    Sip(SipEvent),
    Media(Event),
    Api {
        request: RequestId,
        call: ApiRequest,
    },
    /// The SIP endpoint took (or refused, `None`) an outbound call's INVITE
    /// asked for by [`Action::Invite`].
    Invited {
        call_id: String,
        key: Option<CallKey>,
    },
    /// A clip asked for by [`Action::Fetch`] is ready, or failed.
    Clip {
        id: u64,
        result: Result<Clip, AudioError>,
    },
    /// A cascade link's URI asked for by [`Action::ResolveLink`], resolved
    /// or not (why).
    LinkTarget {
        index: usize,
        target: Result<OutboundTarget, String>,
    },
    /// `poll_timeout`'s instant came.
    Timeout,
    /// The bridge is stopping: hang up every call.
    Shutdown,
}

/// What the switchboard wants done, in order.
#[derive(Debug)]
pub enum Action {
    Sip(SipCommand),
    /// Place an outbound call and answer with [`Input::Invited`].
    Invite {
        call_id: String,
        call: Box<OutgoingCall>,
    },
    Media(Command),
    Callback(Box<CallbackEvent>),
    /// Fetch a file or speak a sentence; answer with [`Input::Clip`] under `id`.
    Fetch {
        id: u64,
        source: Source,
    },
    Reply {
        request: RequestId,
        result: Result<Reply, CallError>,
    },
    /// Resolve `[[room]] cascade` entry `index`'s URI and answer with
    /// [`Input::LinkTarget`].
    ResolveLink {
        index: usize,
        uri: String,
    },
}
