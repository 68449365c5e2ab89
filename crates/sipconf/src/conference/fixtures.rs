//! Records for rendering tests: one with every optional field set, and ones
//! with none, at fixed instants, so the JSON they render can be written out
//! literally in the tests of the API and of the callback events.

use super::*;
use std::time::{Duration, UNIX_EPOCH};

/// `{public_base_url}/v1/users/{userId}` of the tests.
pub const USER_BASE: &str = "http://bridge.example:8088/v1/users/u-test";

/// `ms` after the epoch.
pub fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Completed, with a tag, a GET callback, a fallback, a non-default profile,
/// and the conference-level hold on.
pub fn full_conference() -> Conference {
    Conference {
        id: "conf-full".into(),
        state: ConferenceState::Completed,
        from: "+15550100".into(),
        tag: Some("board".into()),
        created_time: at(1_795_742_040_250),
        completed_time: Some(at(1_795_745_701_999)),
        mute: false,
        hold: true,
        profile: Profile::PassthruDigits,
        callback: Callback {
            url: Some("http://app.example/cb".into()),
            method: CallbackMethod::Get,
            timeout_ms: 2500,
            fallback_url: Some("http://backup.example/cb".into()),
        },
        room: None,
        completed_reason: Some("completed through the API".into()),
        member_ids: vec!["member-full".into()],
        active_members: 0,
        talking_events: false,
    }
}

/// Active, with a callback URL and nothing else optional.
pub fn active_conference() -> Conference {
    Conference {
        id: "conf-active".into(),
        state: ConferenceState::Active,
        from: "1000".into(),
        tag: None,
        created_time: at(1_795_742_100_000),
        completed_time: None,
        mute: true,
        hold: false,
        profile: Profile::InterpretDigits,
        callback: Callback {
            url: Some("http://app.example/cb".into()),
            ..Callback::default()
        },
        room: Some("1000".into()),
        completed_reason: None,
        member_ids: vec!["member-active".into()],
        active_members: 1,
        talking_events: false,
    }
}

/// Just created: no callback, no tag.
pub fn bare_conference() -> Conference {
    Conference {
        id: "conf-bare".into(),
        state: ConferenceState::Created,
        from: "2000".into(),
        tag: None,
        created_time: at(1_795_742_160_000),
        completed_time: None,
        mute: false,
        hold: false,
        profile: Profile::default(),
        callback: Callback::default(),
        room: None,
        completed_reason: None,
        member_ids: Vec::new(),
        active_members: 0,
        talking_events: false,
    }
}

/// Removed from [`full_conference`]; muted and deaf, with a join tone.
pub fn full_member() -> Member {
    Member {
        id: "member-full".into(),
        conference_id: "conf-full".into(),
        call_id: "c-full".into(),
        state: MemberState::Completed,
        added_time: at(1_795_742_050_500),
        removed_time: Some(at(1_795_745_700_001)),
        mute: true,
        hold: false,
        deaf: true,
        join_tone: true,
        leaving_tone: false,
        talking: false,
        media: None,
        removed_reason: Some("removed through the API".into()),
    }
}

/// In [`active_conference`], held, talking, with a leaving tone.
pub fn active_member() -> Member {
    Member {
        id: "member-active".into(),
        conference_id: "conf-active".into(),
        call_id: "c-active".into(),
        state: MemberState::Active,
        added_time: at(1_795_742_110_000),
        removed_time: None,
        mute: false,
        hold: true,
        deaf: false,
        join_tone: false,
        leaving_tone: true,
        talking: true,
        media: None,
        removed_reason: None,
    }
}

/// An outbound call answered, joined to [`full_conference`] and hung up.
pub fn full_call() -> CallRecord {
    CallRecord {
        id: "c-full".into(),
        direction: CallDirection::Out,
        from: "sip:bridge@example".into(),
        to: "sip:alice@example".into(),
        state: CallState::Completed,
        start_time: at(1_795_742_040_700),
        active_time: Some(at(1_795_742_042_900)),
        end_time: Some(at(1_795_742_108_400)),
        callback_url: Some("http://app.example/calls".into()),
        conference_id: Some("conf-full".into()),
        tag: Some("vip".into()),
        cause: Some("NORMAL_CLEARING".into()),
    }
}

/// An incoming call answered, in [`active_conference`], with a callback URL
/// and nothing else optional.
pub fn active_call() -> CallRecord {
    CallRecord {
        id: "c-active".into(),
        direction: CallDirection::In,
        from: "sip:bob@example".into(),
        to: "sip:1000@bridge".into(),
        state: CallState::Active,
        start_time: at(1_795_742_105_000),
        active_time: Some(at(1_795_742_105_500)),
        end_time: None,
        callback_url: Some("http://app.example/calls".into()),
        conference_id: Some("conf-active".into()),
        tag: None,
        cause: None,
    }
}

/// An incoming call still ringing: nothing optional.
pub fn bare_call() -> CallRecord {
    CallRecord {
        id: "c-bare".into(),
        direction: CallDirection::In,
        from: "sip:carol@example".into(),
        to: "sip:5555@bridge".into(),
        state: CallState::Started,
        start_time: at(1_795_742_170_000),
        active_time: None,
        end_time: None,
        callback_url: None,
        conference_id: None,
        tag: None,
        cause: None,
    }
}

/// A store in memory that refuses every write while `full` is set, as a
/// full disk does.
#[derive(Debug, Default)]
pub struct FullableStore {
    pub records: MemoryStore,
    pub full: std::sync::atomic::AtomicBool,
}

impl FullableStore {
    fn check(&self) -> Result<(), StoreFailure> {
        if self.full.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("database or disk is full".into());
        }
        Ok(())
    }

    pub fn set_full(&self, full: bool) {
        self.full.store(full, std::sync::atomic::Ordering::Relaxed);
    }
}

impl RecordStore for FullableStore {
    fn save_conference(&self, conference: &Conference) -> Result<(), StoreFailure> {
        self.check()?;
        self.records.save_conference(conference)
    }

    fn save_member(&self, member: &Member) -> Result<(), StoreFailure> {
        self.check()?;
        self.records.save_member(member)
    }

    fn save_call(&self, call: &CallRecord) -> Result<(), StoreFailure> {
        self.check()?;
        self.records.save_call(call)
    }

    fn save_all(&self, records: &[Record<'_>]) -> Result<(), StoreFailure> {
        self.check()?;
        self.records.save_all(records)
    }

    fn save_dialog(&self, call_id: &str, dialog: &str) -> Result<(), StoreFailure> {
        self.check()?;
        self.records.save_dialog(call_id, dialog)
    }

    fn load(&self, completed_kept: usize) -> Result<Loaded, StoreFailure> {
        self.records.load(completed_kept)
    }

    fn conference(&self, id: &str) -> Result<Option<Conference>, StoreFailure> {
        self.records.conference(id)
    }

    fn conferences_newest_first(&self) -> Result<Vec<Conference>, StoreFailure> {
        self.records.conferences_newest_first()
    }

    fn member(&self, id: &str) -> Result<Option<Member>, StoreFailure> {
        self.records.member(id)
    }

    fn members_of(&self, conference_id: &str) -> Result<Vec<Member>, StoreFailure> {
        self.records.members_of(conference_id)
    }

    fn call(&self, id: &str) -> Result<Option<CallRecord>, StoreFailure> {
        self.records.call(id)
    }
}
