//! Conference, member and call records and their state machines: the single
//! source of truth for what exists, read by the call layer and the API.
//!
//! States follow the Catapult v1 contract (docs/api.md): a conference goes
//! `created` -> `active` -> `completed`; a member is `active` until `completed`.
//! The [`Registry`] holds the records and writes every change through a
//! [`RecordStore`] (SQLite's `crate::store::Store` in the daemon); [`wire`]
//! renders them for the API and the callbacks. This module never does IO of
//! its own and never imports the store, the API or the call layer: they
//! depend on it, not it on them.

#[cfg(test)]
pub(crate) mod fixtures;
mod registry;
mod storage;
pub mod wire;

pub use registry::Durability;
pub use registry::{Recovered, Registry, CRASH_CAUSE, RESTART_REASON};
pub use storage::{Loaded, MemoryStore, Record, RecordStore, StoreFailure};

#[cfg(test)]
pub(crate) use registry::store_checks;

use std::time::SystemTime;

/// Length of the random part of every id (`conf-`, `member-`, `c-` + 22 characters).
const ID_RANDOM_CHARS: usize = 22;

/// A new id: `prefix` + 22 random characters from `[a-z0-9]`.
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut id = String::with_capacity(prefix.len() + ID_RANDOM_CHARS);
    id.push_str(prefix);
    for _ in 0..ID_RANDOM_CHARS {
        id.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    id
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConferenceState {
    Created,
    Active,
    Completed,
}

impl ConferenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConferenceState::Created => "created",
            ConferenceState::Active => "active",
            ConferenceState::Completed => "completed",
        }
    }

    pub fn parse(text: &str) -> Option<ConferenceState> {
        [
            ConferenceState::Created,
            ConferenceState::Active,
            ConferenceState::Completed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Active,
    Completed,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Active => "active",
            MemberState::Completed => "completed",
        }
    }

    pub fn parse(text: &str) -> Option<MemberState> {
        [MemberState::Active, MemberState::Completed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// What the keypad does in a conference (the README, "The keypad").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    #[default]
    InterpretDigits,
    PassthruDigits,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::InterpretDigits => "interpret_digits",
            Profile::PassthruDigits => "passthru_digits",
        }
    }

    pub fn parse(text: &str) -> Option<Profile> {
        [Profile::InterpretDigits, Profile::PassthruDigits]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text))
    }
}

/// How callback events are sent (`callbackHttpMethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallbackMethod {
    Get,
    #[default]
    Post,
}

impl CallbackMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackMethod::Get => "GET",
            CallbackMethod::Post => "POST",
        }
    }

    pub fn parse(text: &str) -> Option<CallbackMethod> {
        [CallbackMethod::Get, CallbackMethod::Post]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(text))
    }
}

/// The default and the largest `callbackTimeout`, in milliseconds (docs/api.md).
pub const MAX_CALLBACK_TIMEOUT_MS: u32 = 10_000;

/// Where and how a resource's events are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub url: Option<String>,
    pub method: CallbackMethod,
    pub timeout_ms: u32,
    pub fallback_url: Option<String>,
}

impl Default for Callback {
    fn default() -> Self {
        Callback {
            url: None,
            method: CallbackMethod::Post,
            timeout_ms: MAX_CALLBACK_TIMEOUT_MS,
            fallback_url: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conference {
    pub id: String,
    pub state: ConferenceState,
    /// The number the conference is reached at (a room number for dial-in rooms).
    pub from: String,
    pub tag: Option<String>,
    pub created_time: SystemTime,
    pub completed_time: Option<SystemTime>,
    pub mute: bool,
    pub hold: bool,
    pub profile: Profile,
    pub callback: Callback,
    /// The room this conference belongs to, for dial-in rooms.
    pub room: Option<String>,
    /// Why it completed (`last member left`, `completed through the API`, `restart`...).
    pub completed_reason: Option<String>,
    /// Members in join order (oldest first), including completed ones.
    pub member_ids: Vec<String>,
    pub active_members: usize,
    /// `talkingEvents`: members' talking changes are sent as
    /// `conference-member` events (runtime only: a conference outlives no
    /// restart as active, and a completed one sends no events).
    pub talking_events: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    pub conference_id: String,
    pub call_id: String,
    pub state: MemberState,
    pub added_time: SystemTime,
    pub removed_time: Option<SystemTime>,
    pub mute: bool,
    pub hold: bool,
    pub deaf: bool,
    pub join_tone: bool,
    pub leaving_tone: bool,
    /// Whether the member's voice is being mixed right now (runtime only).
    pub talking: bool,
    pub removed_reason: Option<String>,
    /// The member's media slot while it is active (runtime only): where
    /// the API reads its reception figures.
    pub media: Option<crate::media::MemberKey>,
}

/// The flags a conference applies to a new member (`POST .../members`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberOptions {
    pub mute: bool,
    pub hold: bool,
    pub join_tone: bool,
    pub leaving_tone: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDirection {
    In,
    Out,
}

impl CallDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::In => "in",
            CallDirection::Out => "out",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    Started,
    Rejected,
    Active,
    Completed,
}

impl CallState {
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Started => "started",
            CallState::Rejected => "rejected",
            CallState::Active => "active",
            CallState::Completed => "completed",
        }
    }

    pub fn parse(text: &str) -> Option<CallState> {
        [
            CallState::Started,
            CallState::Rejected,
            CallState::Active,
            CallState::Completed,
        ]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }
}

/// A Catapult Call (`c-...`): every SIP call the bridge handles, room calls included.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub id: String,
    pub direction: CallDirection,
    pub from: String,
    pub to: String,
    pub state: CallState,
    pub start_time: SystemTime,
    pub active_time: Option<SystemTime>,
    pub end_time: Option<SystemTime>,
    pub callback_url: Option<String>,
    /// The conference the call was last added to.
    pub conference_id: Option<String>,
    pub tag: Option<String>,
    /// The hangup `cause` (`NORMAL_CLEARING`...), once ended.
    pub cause: Option<String>,
}

impl CallRecord {
    /// Whole seconds between answer and end (`chargeableDuration`).
    pub fn chargeable_duration_s(&self) -> Option<u64> {
        let (Some(active), Some(end)) = (self.active_time, self.end_time) else {
            return None;
        };
        Some(end.duration_since(active).unwrap_or_default().as_secs())
    }
}

/// Why a record could not change, or a request about one was refused: what
/// went wrong, as data. The API words it for clients (`api/error.rs`); the
/// `Display` here is terse, for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// No conference has this id.
    #[error("conference {0} not found")]
    ConferenceNotFound(String),
    /// No member has this id (in this conference).
    #[error("member {0} not found")]
    MemberNotFound(String),
    /// The conference (or the member's) is completed: nothing changes any more.
    #[error("conference completed")]
    ConferenceCompleted,
    /// The conference already has this many active members, its maximum.
    #[error("conference full at {0} members")]
    ConferenceFull(usize),
    /// No call has this id.
    #[error("call {0} not found")]
    CallNotFound(String),
    /// The store could not write the record (the reason), so nothing was
    /// made or changed.
    #[error("record not stored: {0}")]
    NotStored(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_22_lowercase_alphanumerics() {
        let id = new_id("conf-");
        assert_eq!(id.len(), 5 + 22);
        assert!(id[5..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_ne!(new_id("c-"), new_id("c-"));
    }
}
