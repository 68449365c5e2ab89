//! The records registry: every conference, member and call record in memory,
//! their state changes, and the write-through to a [`RecordStore`]. With a
//! store, only the newest completed conferences (with their members) and
//! ended calls stay in memory as well (`completed_kept` of each); older ones
//! are read back from the store when asked for, so memory does not grow with
//! the calls a bridge has taken. Records are kept after completion so they
//! stay readable. It knows the store only through the trait.
//!
//! When the store cannot write (a full disk), what the API creates or edits
//! ([`Durability::Required`]) is refused and not made, while what the
//! network did (a call rang, ended, joined its room) is made in memory and
//! written once the store can again ([`Registry::retry_unsaved`]).

use super::{
    new_id, CallDirection, CallRecord, CallState, Callback, Conference, ConferenceState, Member,
    MemberOptions, MemberState, Profile, Record, RecordError, RecordStore, StoreFailure,
};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

#[path = "registry_writes.rs"]
mod writes;

pub use writes::Durability;
use writes::Unsaved;

/// All conference, member and call records; every change is written through
/// to the store when one is attached.
#[derive(Default)]
pub struct Registry {
    conferences: HashMap<String, Conference>,
    /// Conference ids, oldest first.
    conference_order: Vec<String>,
    members: HashMap<String, Member>,
    calls: HashMap<String, CallRecord>,
    /// The active (not completed) conference of each room.
    room_conferences: HashMap<String, String>,
    store: Option<Arc<dyn RecordStore>>,
    /// Completed conferences in memory, oldest completion first.
    completed_in_memory: VecDeque<String>,
    /// Ended (completed or rejected) calls in memory, oldest end first.
    ended_in_memory: VecDeque<String>,
    /// Members of the completed conferences in memory.
    completed_members_in_memory: usize,
    /// How many of each (conferences, their members, calls) stay in memory
    /// when there is a store.
    completed_kept: usize,
    /// Completed conferences only in the store.
    completed_elsewhere: u64,
    /// Records changed while the store could not write them; they stay in
    /// memory (nothing is forgotten) until written.
    unsaved: BTreeSet<Unsaved>,
    /// Dialogs of calls not written yet, kept until their call is.
    unsaved_dialogs: HashMap<String, String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("conferences", &self.conferences.len())
            .field("members", &self.members.len())
            .field("calls", &self.calls.len())
            .finish()
    }
}

/// What completing left-over records at start-up changed, for the callbacks.
#[derive(Debug, Default)]
pub struct Recovered {
    pub members: Vec<String>,
    pub conferences: Vec<String>,
    pub calls: Vec<String>,
    /// The SIP dialogs kept for those calls (as `set_dialog` was given
    /// them): their callers may still be on the line.
    pub dialogs: Vec<String>,
}

/// The reason recorded for records a previous run left active.
pub const RESTART_REASON: &str = "the bridge restarted";

/// The hang-up cause of calls a previous run left up: it stopped without
/// hanging them up (killed, crashed, or the power went).
pub const CRASH_CAUSE: &str = "CRASH";

impl Registry {
    /// A registry in memory only, which keeps every record (tests, and a
    /// call core driven without a store).
    pub fn new() -> Registry {
        Registry {
            completed_kept: usize::MAX,
            ..Registry::default()
        }
    }

    /// Loads what is not over and the newest `completed_kept` completed
    /// conferences and ended calls from `store`, and writes every change back
    /// to it. Whatever the previous run left active is completed with
    /// [`RESTART_REASON`]; the returned ids say what, so callbacks can follow.
    pub fn open(
        store: Arc<dyn RecordStore>,
        now: SystemTime,
        completed_kept: usize,
    ) -> Result<(Registry, Recovered), StoreFailure> {
        let loaded = store.load(completed_kept)?;
        let mut registry = Registry::new();
        registry.completed_kept = completed_kept;
        for conference in loaded.conferences {
            if conference.state == ConferenceState::Completed {
                registry
                    .completed_in_memory
                    .push_back(conference.id.clone());
            }
            registry.conference_order.push(conference.id.clone());
            registry
                .conferences
                .insert(conference.id.clone(), conference);
        }
        for member in loaded.members {
            if let Some(c) = registry.conferences.get_mut(&member.conference_id) {
                c.member_ids.push(member.id.clone());
                if c.state == ConferenceState::Completed {
                    registry.completed_members_in_memory += 1;
                }
            }
            registry.members.insert(member.id.clone(), member);
        }
        registry.completed_elsewhere = loaded
            .completed_conferences
            .saturating_sub(registry.completed_in_memory.len() as u64);
        for call in loaded.calls {
            if matches!(call.state, CallState::Completed | CallState::Rejected) {
                registry.ended_in_memory.push_back(call.id.clone());
            }
            registry.calls.insert(call.id.clone(), call);
        }
        registry.store = Some(store);
        let mut recovered = Recovered::default();
        let active_members: Vec<String> = registry
            .members
            .values()
            .filter(|m| m.state == MemberState::Active)
            .map(|m| m.id.clone())
            .collect();
        for id in active_members {
            recovered.members.push(id.clone());
            registry.set_removed_reason(&id, RESTART_REASON);
            let Some(conference) = registry.member(&id).map(|m| m.conference_id.clone()) else {
                continue;
            };
            registry.set_completed_reason(&conference, RESTART_REASON);
            if let Ok(true) = registry.complete_member(&id, now) {
                recovered.conferences.push(conference);
            }
        }
        // A conference counted active with no member left active (a crash between
        // two writes) is completed too.
        let stale: Vec<String> = registry
            .conferences
            .values()
            .filter(|c| c.state == ConferenceState::Active)
            .map(|c| c.id.clone())
            .collect();
        for id in stale {
            registry.set_completed_reason(&id, RESTART_REASON);
            if registry.complete_conference(&id, now).is_ok() {
                recovered.conferences.push(id);
            }
        }
        let open_calls: Vec<String> = registry
            .calls
            .values()
            .filter(|c| matches!(c.state, CallState::Started | CallState::Active))
            .map(|c| c.id.clone())
            .collect();
        recovered.dialogs = loaded
            .dialogs
            .into_iter()
            .filter(|(call, _)| open_calls.contains(call))
            .map(|(_, dialog)| dialog)
            .collect();
        for id in open_calls {
            registry.end_call(&id, CallState::Completed, CRASH_CAUSE, now);
            recovered.calls.push(id);
        }
        // Room conferences still waiting for their first member are reused.
        let waiting: Vec<(String, String)> = registry
            .conferences
            .values()
            .filter(|c| c.state == ConferenceState::Created)
            .filter_map(|c| Some((c.room.clone()?, c.id.clone())))
            .collect();
        registry.room_conferences.extend(waiting);
        registry.forget_old_records();
        Ok((registry, recovered))
    }

    /// Drops the oldest completed conferences (with their members) and ended
    /// calls from memory beyond `completed_kept` of each; the store has them.
    /// (Without a store nothing is tracked, and everything stays.)
    fn forget_old_records(&mut self) {
        if !self.unsaved.is_empty() {
            // What waits for the store is only in memory.
            return;
        }
        while self.completed_in_memory.len() > self.completed_kept
            || self.completed_members_in_memory > self.completed_kept
        {
            let Some(id) = self.completed_in_memory.pop_front() else {
                break;
            };
            if let Some(conference) = self.conferences.remove(&id) {
                for member in &conference.member_ids {
                    self.members.remove(member);
                }
                self.completed_members_in_memory = self
                    .completed_members_in_memory
                    .saturating_sub(conference.member_ids.len());
                if let Some(at) = self.conference_order.iter().position(|c| *c == id) {
                    self.conference_order.remove(at);
                }
                self.completed_elsewhere += 1;
            }
        }
        while self.ended_in_memory.len() > self.completed_kept {
            let Some(id) = self.ended_in_memory.pop_front() else {
                break;
            };
            self.calls.remove(&id);
        }
    }

    /// Reads a record that is no longer in memory back from the store.
    fn read_back<T>(
        &self,
        what: &str,
        id: &str,
        read: impl FnOnce(&dyn RecordStore, &str) -> Result<Option<T>, StoreFailure>,
    ) -> Option<T> {
        let store = self.store.as_ref()?;
        read(store.as_ref(), id)
            .map_err(|e| tracing::error!(%id, "cannot read the {what} record: {e}"))
            .ok()
            .flatten()
    }

    /// Why a conference that is not in memory cannot change: it completed
    /// (an old one the store still has), or it does not exist.
    fn conference_missing(&self, id: &str) -> RecordError {
        match self.read_back("conference", id, |s, id| s.conference(id)) {
            Some(_) => RecordError::ConferenceCompleted,
            None => RecordError::ConferenceNotFound(id.to_string()),
        }
    }

    /// Why a member that is not in memory cannot change: it completed with
    /// its conference (an old one the store still has), or it does not exist.
    fn member_missing(&self, id: &str) -> RecordError {
        match self.read_back("member", id, |s, id| s.member(id)) {
            Some(_) => RecordError::ConferenceCompleted,
            None => RecordError::MemberNotFound(id.to_string()),
        }
    }

    /// Brings an ended call that was dropped from memory back, to change it.
    fn recall_call(&mut self, id: &str) {
        if self.calls.contains_key(id) {
            return;
        }
        // Room first, so that memory holds at most one more than it keeps.
        self.forget_old_records();
        if let Some(call) = self.read_back("call", id, |s, id| s.call(id)) {
            self.ended_in_memory.push_back(id.to_string());
            self.calls.insert(id.to_string(), call);
        }
    }

    /// Creates a conference in state `created`.
    pub fn create_conference(
        &mut self,
        from: &str,
        tag: Option<String>,
        room: Option<&str>,
        now: SystemTime,
    ) -> &Conference {
        self.create_conference_with(
            from,
            tag,
            room,
            Profile::default(),
            Callback::default(),
            now,
        )
    }

    /// Creates a conference in state `created` with its profile and callback.
    pub fn create_conference_with(
        &mut self,
        from: &str,
        tag: Option<String>,
        room: Option<&str>,
        profile: Profile,
        callback: Callback,
        now: SystemTime,
    ) -> &Conference {
        let conference = new_conference(from, tag, room, profile, callback, now);
        self.insert_conference(conference, Durability::BestEffort)
            .expect("a best-effort change is never refused")
    }

    /// Creates a conference in state `created` with `change` made to it,
    /// if the store takes it (the API's `POST /conferences`).
    pub fn create_conference_stored(
        &mut self,
        from: &str,
        profile: Profile,
        now: SystemTime,
        change: impl FnOnce(&mut Conference),
    ) -> Result<&Conference, RecordError> {
        let mut conference = new_conference(from, None, None, profile, Callback::default(), now);
        change(&mut conference);
        self.insert_conference(conference, Durability::Required)
    }

    fn insert_conference(
        &mut self,
        conference: Conference,
        durability: Durability,
    ) -> Result<&Conference, RecordError> {
        self.store_first(durability, &[Record::Conference(&conference)])?;
        let id = conference.id.clone();
        if let Some(room) = &conference.room {
            self.room_conferences.insert(room.clone(), id.clone());
        }
        self.conference_order.push(id.clone());
        self.conferences.insert(id.clone(), conference);
        if durability == Durability::BestEffort {
            self.persist_conference(&id);
        }
        Ok(&self.conferences[&id])
    }

    /// The room's conference that is not completed, if any.
    pub fn room_conference(&self, room: &str) -> Option<&Conference> {
        self.room_conferences
            .get(room)
            .and_then(|id| self.conferences.get(id))
    }

    /// A conference, from memory or (an old completed one) from the store.
    pub fn conference(&self, id: &str) -> Option<Cow<'_, Conference>> {
        match self.conferences.get(id) {
            Some(c) => Some(Cow::Borrowed(c)),
            None => self
                .read_back("conference", id, |s, id| s.conference(id))
                .map(Cow::Owned),
        }
    }

    /// Every conference, newest first. When old ones are only in the store,
    /// they all come from it, without `member_ids` (the list does not show them).
    pub fn conferences_newest_first(&self) -> Vec<Cow<'_, Conference>> {
        let in_memory = || {
            self.conference_order
                .iter()
                .rev()
                .filter_map(|id| self.conferences.get(id))
                .map(Cow::Borrowed)
                .collect()
        };
        let Some(store) = self.store.as_ref().filter(|_| self.completed_elsewhere > 0) else {
            return in_memory();
        };
        match store.conferences_newest_first() {
            // Written through, so the store's copy is the one in memory.
            Ok(all) => all.into_iter().map(Cow::Owned).collect(),
            Err(e) => {
                tracing::error!("cannot list the conference records: {e}");
                in_memory()
            }
        }
    }

    /// Changes a conference's own settings (not its state or flags); refused
    /// once it is completed.
    pub fn update_conference(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut Conference),
    ) -> Result<&Conference, RecordError> {
        let Some(conference) = self.conferences.get_mut(id) else {
            return Err(self.conference_missing(id));
        };
        if conference.state == ConferenceState::Completed {
            return Err(RecordError::ConferenceCompleted);
        }
        change(conference);
        self.persist_conference(id);
        Ok(&self.conferences[id])
    }

    /// As `update_conference`, if the store takes the changed record first
    /// (the API's own changes to a conference's settings).
    pub fn update_conference_stored(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut Conference),
    ) -> Result<&Conference, RecordError> {
        let Some(conference) = self.conferences.get(id) else {
            return Err(self.conference_missing(id));
        };
        if conference.state == ConferenceState::Completed {
            return Err(RecordError::ConferenceCompleted);
        }
        let mut changed = conference.clone();
        change(&mut changed);
        self.store_first(Durability::Required, &[Record::Conference(&changed)])?;
        self.conferences.insert(id.to_string(), changed);
        Ok(&self.conferences[id])
    }

    /// A member, from memory or (of an old completed conference) from the store.
    pub fn member(&self, id: &str) -> Option<Cow<'_, Member>> {
        match self.members.get(id) {
            Some(m) => Some(Cow::Borrowed(m)),
            None => self
                .read_back("member", id, |s, id| s.member(id))
                .map(Cow::Owned),
        }
    }

    /// Members of a conference, oldest first, completed ones included.
    pub fn members_of(&self, conference_id: &str) -> Vec<Cow<'_, Member>> {
        if let Some(c) = self.conferences.get(conference_id) {
            // A conference in memory has all its members in memory.
            return c
                .member_ids
                .iter()
                .filter_map(|m| self.members.get(m))
                .map(Cow::Borrowed)
                .collect();
        }
        self.read_back("members of conference", conference_id, |store, id| {
            store.members_of(id).map(Some)
        })
        .unwrap_or_default()
        .into_iter()
        .map(Cow::Owned)
        .collect()
    }

    /// Adds an active member; the conference becomes `active`.
    pub fn add_member(
        &mut self,
        conference_id: &str,
        call_id: &str,
        max_members: usize,
        now: SystemTime,
    ) -> Result<&Member, RecordError> {
        self.add_member_with(
            conference_id,
            call_id,
            MemberOptions::default(),
            max_members,
            now,
            Durability::BestEffort,
        )
    }

    /// Adds an active member with its initial flags; the conference becomes `active`.
    /// With `Durability::Required` the conference, the member and the call
    /// are stored together first, or nothing changes.
    pub fn add_member_with(
        &mut self,
        conference_id: &str,
        call_id: &str,
        options: MemberOptions,
        max_members: usize,
        now: SystemTime,
        durability: Durability,
    ) -> Result<&Member, RecordError> {
        let Some(conference) = self.conferences.get(conference_id) else {
            return Err(self.conference_missing(conference_id));
        };
        if conference.state == ConferenceState::Completed {
            return Err(RecordError::ConferenceCompleted);
        }
        if conference.active_members >= max_members {
            return Err(RecordError::ConferenceFull(max_members));
        }
        let id = new_id("member-");
        let mut conference = conference.clone();
        conference.state = ConferenceState::Active;
        conference.active_members += 1;
        conference.member_ids.push(id.clone());
        let member = Member {
            id: id.clone(),
            conference_id: conference_id.to_string(),
            call_id: call_id.to_string(),
            state: MemberState::Active,
            added_time: now,
            removed_time: None,
            mute: options.mute,
            hold: options.hold,
            deaf: false,
            join_tone: options.join_tone,
            leaving_tone: options.leaving_tone,
            talking: false,
            removed_reason: None,
            media: None,
        };
        let call = self.calls.get(call_id).map(|call| CallRecord {
            conference_id: Some(conference_id.to_string()),
            ..call.clone()
        });
        let mut records = vec![Record::Conference(&conference), Record::Member(&member)];
        records.extend(call.as_ref().map(Record::Call));
        self.store_first(durability, &records)?;
        self.conferences
            .insert(conference_id.to_string(), conference);
        self.members.insert(id.clone(), member);
        if let Some(call) = call {
            self.calls.insert(call_id.to_string(), call);
        }
        if durability == Durability::BestEffort {
            self.persist_conference(conference_id);
            self.persist_member(&id);
            self.persist_call(call_id);
        }
        Ok(&self.members[&id])
    }

    /// Changes a member's own mute/hold/deaf flags.
    pub fn set_member_flags(
        &mut self,
        member_id: &str,
        mute: bool,
        hold: bool,
        deaf: bool,
    ) -> Result<&Member, RecordError> {
        self.update_member(member_id, |m| {
            m.mute = mute;
            m.hold = hold;
            m.deaf = deaf;
        })
    }

    /// Changes an active member's settings; refused once it is completed.
    pub fn update_member(
        &mut self,
        member_id: &str,
        change: impl FnOnce(&mut Member),
    ) -> Result<&Member, RecordError> {
        let Some(member) = self.members.get_mut(member_id) else {
            return Err(self.member_missing(member_id));
        };
        if member.state == MemberState::Completed {
            return Err(RecordError::ConferenceCompleted);
        }
        change(member);
        self.persist_member(member_id);
        Ok(&self.members[member_id])
    }

    /// Runtime-only: whether the member is heard right now (not written to the store).
    pub fn set_talking(&mut self, member_id: &str, talking: bool) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.talking = talking;
        }
    }

    /// Runtime-only: the media slot serving the member (not written to the store).
    pub fn set_media(&mut self, member_id: &str, key: crate::media::MemberKey) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.media = Some(key);
        }
    }

    /// Records why a member is (about to be) removed.
    pub fn set_removed_reason(&mut self, member_id: &str, reason: &str) {
        if let Some(member) = self.members.get_mut(member_id) {
            if member.removed_reason.is_none() {
                member.removed_reason = Some(reason.to_string());
            }
        }
    }

    /// Records why a conference is (about to be) completed.
    pub fn set_completed_reason(&mut self, conference_id: &str, reason: &str) {
        if let Some(c) = self.conferences.get_mut(conference_id) {
            if c.completed_reason.is_none() {
                c.completed_reason = Some(reason.to_string());
            }
        }
    }

    /// Completes a member (idempotent). When it was the last active member of a
    /// conference that had members, the conference completes too; returns whether it did.
    pub fn complete_member(
        &mut self,
        member_id: &str,
        now: SystemTime,
    ) -> Result<bool, RecordError> {
        let Some(member) = self.members.get_mut(member_id) else {
            // An old member the store still has completed long ago.
            return match self.member_missing(member_id) {
                RecordError::ConferenceCompleted => Ok(false),
                missing => Err(missing),
            };
        };
        if member.state == MemberState::Completed {
            return Ok(false);
        }
        member.state = MemberState::Completed;
        member.removed_time = Some(now);
        member.talking = false;
        member.media = None;
        let conference_id = member.conference_id.clone();
        self.persist_member(member_id);
        let Some(conference) = self.conferences.get_mut(&conference_id) else {
            return Ok(false);
        };
        conference.active_members = conference.active_members.saturating_sub(1);
        if conference.active_members == 0 && conference.state == ConferenceState::Active {
            self.set_completed_reason(&conference_id, "the last member left");
            self.complete_conference(&conference_id, now)?;
            return Ok(true);
        }
        self.persist_conference(&conference_id);
        Ok(false)
    }

    /// Completes a conference (terminal). Completing it twice is an error, as in the API.
    pub fn complete_conference(&mut self, id: &str, now: SystemTime) -> Result<(), RecordError> {
        let Some(conference) = self.conferences.get_mut(id) else {
            return Err(self.conference_missing(id));
        };
        if conference.state == ConferenceState::Completed {
            return Err(RecordError::ConferenceCompleted);
        }
        conference.state = ConferenceState::Completed;
        conference.completed_time = Some(now);
        if let Some(room) = &conference.room {
            if self.room_conferences.get(room).map(String::as_str) == Some(id) {
                self.room_conferences.remove(room);
            }
        }
        let members = conference.member_ids.len();
        self.persist_conference(id);
        if self.store.is_some() {
            self.completed_members_in_memory += members;
            self.completed_in_memory.push_back(id.to_string());
            self.forget_old_records();
        }
        Ok(())
    }

    /// For metrics: calls `[started, active]`, active members, conferences
    /// `[created, active, completed]`.
    pub fn counts(&self) -> ([u64; 2], u64, [u64; 3]) {
        let mut calls = [0; 2];
        for c in self.calls.values() {
            match c.state {
                CallState::Started => calls[0] += 1,
                CallState::Active => calls[1] += 1,
                _ => {}
            }
        }
        let members = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Active)
            .count() as u64;
        let mut conferences = [0; 3];
        for c in self.conferences.values() {
            conferences[c.state as usize] += 1;
        }
        conferences[ConferenceState::Completed as usize] += self.completed_elsewhere;
        (calls, members, conferences)
    }

    /// A call, from memory or (an old ended one) from the store.
    pub fn call(&self, id: &str) -> Option<Cow<'_, CallRecord>> {
        match self.calls.get(id) {
            Some(c) => Some(Cow::Borrowed(c)),
            None => self
                .read_back("call", id, |s, id| s.call(id))
                .map(Cow::Owned),
        }
    }

    /// Records a new call in state `started`.
    pub fn create_call(
        &mut self,
        direction: CallDirection,
        from: &str,
        to: &str,
        now: SystemTime,
    ) -> &CallRecord {
        let id = new_id("c-");
        let record = CallRecord {
            id: id.clone(),
            direction,
            from: from.to_string(),
            to: to.to_string(),
            state: CallState::Started,
            start_time: now,
            active_time: None,
            end_time: None,
            callback_url: None,
            conference_id: None,
            tag: None,
            cause: None,
        };
        self.calls.insert(id.clone(), record);
        self.persist_call(&id);
        &self.calls[&id]
    }

    /// Records a new call in state `started` with `change` made to it, if
    /// the store takes it (the API's `POST /calls`).
    pub fn create_call_stored(
        &mut self,
        direction: CallDirection,
        from: &str,
        to: &str,
        now: SystemTime,
        change: impl FnOnce(&mut CallRecord),
    ) -> Result<&CallRecord, RecordError> {
        let mut record = CallRecord {
            id: new_id("c-"),
            direction,
            from: from.to_string(),
            to: to.to_string(),
            state: CallState::Started,
            start_time: now,
            active_time: None,
            end_time: None,
            callback_url: None,
            conference_id: None,
            tag: None,
            cause: None,
        };
        change(&mut record);
        self.store_first(Durability::Required, &[Record::Call(&record)])?;
        let id = record.id.clone();
        self.calls.insert(id.clone(), record);
        Ok(&self.calls[&id])
    }

    /// Changes a call record.
    pub fn update_call(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut CallRecord),
    ) -> Result<&CallRecord, RecordError> {
        self.recall_call(id);
        let call = self
            .calls
            .get_mut(id)
            .ok_or_else(|| RecordError::CallNotFound(id.to_string()))?;
        change(call);
        self.persist_call(id);
        Ok(&self.calls[id])
    }

    /// As `update_call`, if the store takes the changed record first (the
    /// API's changes to a call's settings).
    pub fn update_call_stored(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut CallRecord),
    ) -> Result<&CallRecord, RecordError> {
        self.recall_call(id);
        let mut changed = self
            .calls
            .get(id)
            .ok_or_else(|| RecordError::CallNotFound(id.to_string()))?
            .clone();
        change(&mut changed);
        self.store_first(Durability::Required, &[Record::Call(&changed)])?;
        self.calls.insert(id.to_string(), changed);
        Ok(&self.calls[id])
    }

    /// Marks a call answered.
    pub fn answer_call(&mut self, id: &str, now: SystemTime) {
        let _ = self.update_call(id, |c| {
            c.state = CallState::Active;
            c.active_time = Some(now);
        });
    }

    /// Ends a call (idempotent): `Rejected` or `Completed`, with its hangup cause.
    /// Returns whether it changed.
    pub fn end_call(&mut self, id: &str, state: CallState, cause: &str, now: SystemTime) -> bool {
        let Some(call) = self.calls.get_mut(id) else {
            return false;
        };
        if matches!(call.state, CallState::Rejected | CallState::Completed) {
            return false;
        }
        call.state = state;
        call.end_time = Some(now);
        call.cause = Some(cause.to_string());
        self.persist_call(id);
        if self.store.is_some() {
            self.ended_in_memory.push_back(id.to_string());
            self.forget_old_records();
        }
        true
    }
}

/// A new conference in state `created`.
fn new_conference(
    from: &str,
    tag: Option<String>,
    room: Option<&str>,
    profile: Profile,
    callback: Callback,
    now: SystemTime,
) -> Conference {
    Conference {
        id: new_id("conf-"),
        state: ConferenceState::Created,
        from: from.to_string(),
        tag,
        created_time: now,
        completed_time: None,
        mute: false,
        hold: false,
        profile,
        callback,
        room: room.map(str::to_string),
        completed_reason: None,
        member_ids: Vec::new(),
        active_members: 0,
        talking_events: false,
    }
}

/// Checks of the registry run against every [`RecordStore`]: the SQLite
/// store's tests run them too, so both stores are held to the same answers.
#[cfg(test)]
pub(crate) mod store_checks {
    use super::*;

    /// Five calls, each alone in its conference: join, leave (the conference
    /// completes), hang up.
    pub(crate) fn five_finished_calls(r: &mut Registry) -> Vec<(String, String, String)> {
        let now = SystemTime::now();
        (0..5)
            .map(|n| {
                let call = r
                    .create_call(CallDirection::In, "sip:a@x", "sip:b@y", now)
                    .id
                    .clone();
                r.answer_call(&call, now);
                let conf = r
                    .create_conference(&format!("+1555{n}"), None, None, now)
                    .id
                    .clone();
                let member = r.add_member(&conf, &call, 10, now).unwrap().id.clone();
                assert!(r.complete_member(&member, now).unwrap());
                assert!(r.end_call(&call, CallState::Completed, "NORMAL_CLEARING", now));
                (conf, member, call)
            })
            .collect()
    }

    /// Every record of `finished` is read back as it was.
    pub(crate) fn readable(r: &Registry, finished: &[(String, String, String)]) {
        for (conf, member, call) in finished {
            let c = r.conference(conf).expect("conference readable");
            assert_eq!(c.state, ConferenceState::Completed);
            assert_eq!(c.member_ids, std::slice::from_ref(member));
            assert_eq!(c.completed_reason.as_deref(), Some("the last member left"));
            let m = r.member(member).expect("member readable");
            assert_eq!(
                (m.state, m.call_id.as_str()),
                (MemberState::Completed, call.as_str())
            );
            assert_eq!(r.members_of(conf).len(), 1);
            assert_eq!(
                r.call(call).expect("call readable").state,
                CallState::Completed
            );
        }
    }

    /// Only the newest two completed conferences (with their members) and
    /// ended calls stay in memory; older ones are read back from the store,
    /// refuse changes as completed ones do, and are all there after a
    /// restart. `open_store` opens the same records each time.
    pub(crate) fn old_completed_records_leave_memory_but_stay_readable_and_unchangeable(
        open_store: impl Fn() -> Arc<dyn RecordStore>,
    ) {
        let now = SystemTime::now();
        let finished = {
            let (mut r, _) = Registry::open(open_store(), now, 2).unwrap();
            let finished = five_finished_calls(&mut r);
            assert_eq!(
                (r.conferences.len(), r.members.len(), r.calls.len()),
                (2, 2, 2)
            );
            readable(&r, &finished);
            let listed: Vec<String> = r
                .conferences_newest_first()
                .iter()
                .map(|c| c.id.clone())
                .collect();
            let newest_first: Vec<String> = finished.iter().rev().map(|f| f.0.clone()).collect();
            assert_eq!(listed, newest_first);
            assert_eq!(r.counts().2, [0, 0, 5]);

            // Old ones refuse changes as completed ones in memory do...
            let (old_conf, old_member, old_call) = &finished[0];
            assert_eq!(
                r.add_member(old_conf, "c-x", 10, now).unwrap_err(),
                RecordError::ConferenceCompleted
            );
            assert_eq!(
                r.complete_conference(old_conf, now).unwrap_err(),
                RecordError::ConferenceCompleted
            );
            assert_eq!(
                r.update_member(old_member, |m| m.mute = true).unwrap_err(),
                RecordError::ConferenceCompleted
            );
            assert!(!r.complete_member(old_member, now).unwrap(), "idempotent");
            assert!(!r.end_call(old_call, CallState::Completed, "X", now));
            // ...and a call's tag may still change, and is kept.
            r.update_call(old_call, |c| c.tag = Some("late".into()))
                .unwrap();
            assert_eq!(
                r.add_member("conf-nothing", "c-x", 10, now).unwrap_err(),
                RecordError::ConferenceNotFound("conf-nothing".into())
            );
            finished
        };
        // A restart loads only the newest two of each, and reads the rest.
        let (r, recovered) = Registry::open(open_store(), now, 2).unwrap();
        assert!(recovered.conferences.is_empty() && recovered.calls.is_empty());
        assert_eq!(
            (r.conferences.len(), r.members.len(), r.calls.len()),
            (2, 2, 2)
        );
        readable(&r, &finished);
        assert_eq!(r.call(&finished[0].2).unwrap().tag.as_deref(), Some("late"));
        assert_eq!(r.counts().2, [0, 0, 5]);
        assert_eq!(r.conferences_newest_first().len(), 5);
    }
}

#[cfg(test)]
mod tests {
    use super::store_checks::{five_finished_calls, readable};
    use super::*;
    use crate::conference::MemoryStore;

    #[test]
    fn room_conference_goes_created_active_completed_and_the_next_caller_starts_anew() {
        let now = SystemTime::now();
        let mut r = Registry::new();
        let conf = r
            .create_conference("1000", None, Some("1000"), now)
            .id
            .clone();
        assert_eq!(r.conference(&conf).unwrap().state, ConferenceState::Created);
        let a = r.add_member(&conf, "c-a", 10, now).unwrap().id.clone();
        let b = r.add_member(&conf, "c-b", 10, now).unwrap().id.clone();
        assert_eq!(r.conference(&conf).unwrap().state, ConferenceState::Active);
        assert_eq!(r.conference(&conf).unwrap().active_members, 2);
        assert!(!r.complete_member(&a, now).unwrap());
        assert!(!r.complete_member(&a, now).unwrap(), "idempotent");
        assert!(r.complete_member(&b, now).unwrap());
        let c = r.conference(&conf).unwrap();
        assert_eq!(c.state, ConferenceState::Completed);
        assert!(c.completed_time.is_some());
        assert!(r.room_conference("1000").is_none());
        assert_eq!(r.members_of(&conf).len(), 2);
        assert_eq!(r.member(&a).unwrap().state, MemberState::Completed);
        assert_eq!(
            r.add_member(&conf, "c-c", 10, now).unwrap_err(),
            RecordError::ConferenceCompleted
        );
    }

    #[test]
    fn a_full_conference_refuses_a_member() {
        let now = SystemTime::now();
        let mut r = Registry::new();
        let conf = r.create_conference("1000", None, None, now).id.clone();
        r.add_member(&conf, "c-a", 1, now).unwrap();
        assert_eq!(
            r.add_member(&conf, "c-b", 1, now).unwrap_err(),
            RecordError::ConferenceFull(1)
        );
    }

    #[test]
    fn old_completed_records_leave_memory_but_stay_readable_and_unchangeable() {
        let store: Arc<dyn RecordStore> = Arc::new(MemoryStore::default());
        store_checks::old_completed_records_leave_memory_but_stay_readable_and_unchangeable(|| {
            store.clone()
        });
    }

    #[test]
    fn a_full_store_refuses_required_changes_and_keeps_best_effort_ones_until_it_takes_them() {
        use crate::conference::fixtures::FullableStore;
        let now = SystemTime::now();
        let store = Arc::new(FullableStore::default());
        let (mut r, _) = Registry::open(store.clone(), now, 2).unwrap();
        let conf = r
            .create_conference_stored("+1555", Profile::default(), now, |_| {})
            .unwrap()
            .id
            .clone();
        let call = r
            .create_call(CallDirection::In, "sip:a@x", "sip:b@y", now)
            .id
            .clone();
        store.set_full(true);
        let not_stored = |e: RecordError| matches!(e, RecordError::NotStored(_));
        let refused = r.create_conference_stored("+1666", Profile::default(), now, |_| {});
        assert!(refused.is_err_and(not_stored));
        let refused =
            r.create_call_stored(CallDirection::Out, "1000", "sip:b@y", now, |c| c.tag = None);
        assert!(refused.is_err_and(not_stored));
        let refused = r.update_conference_stored(&conf, |c| c.tag = Some("x".into()));
        assert!(refused.is_err_and(not_stored));
        let refused = r.update_call_stored(&call, |c| c.tag = Some("x".into()));
        assert!(refused.is_err_and(not_stored));
        let options = MemberOptions::default();
        let refused = r.add_member_with(&conf, &call, options, 10, now, Durability::Required);
        assert!(refused.is_err_and(not_stored));
        // Nothing of it was made.
        assert_eq!(
            (r.conferences.len(), r.members.len(), r.calls.len()),
            (1, 0, 1)
        );
        assert_eq!(r.conference(&conf).unwrap().tag, None);
        assert_eq!(r.conference(&conf).unwrap().active_members, 0);
        assert_eq!(r.call(&call).unwrap().tag, None);
        assert_eq!(r.unsaved(), 0);

        // What the network does goes on in memory, and is not forgotten.
        let member = r
            .add_member_with(&conf, &call, options, 10, now, Durability::BestEffort)
            .unwrap()
            .id
            .clone();
        assert!(r.complete_member(&member, now).unwrap());
        assert!(r.end_call(&call, CallState::Completed, "NORMAL_CLEARING", now));
        for n in 0..5 {
            let old = r.create_call(CallDirection::In, "a", "b", now).id.clone();
            r.end_call(&old, CallState::Completed, &format!("C{n}"), now);
        }
        assert_eq!(r.unsaved(), 8);
        assert_eq!(r.retry_unsaved(100), 8, "still full");
        assert_eq!(r.calls.len(), 6, "nothing unsaved leaves memory");

        // Space returns: everything is written, then the oldest leave memory.
        store.set_full(false);
        assert_eq!(r.retry_unsaved(100), 0);
        assert_eq!(r.calls.len(), 2);
        let stored = store.records.member(&member).unwrap().expect("stored");
        assert_eq!(stored.state, MemberState::Completed);
        let stored = store.records.conference(&conf).unwrap().expect("stored");
        assert_eq!(stored.state, ConferenceState::Completed);
        let stored = store.records.call(&call).unwrap().expect("stored");
        assert_eq!(stored.conference_id.as_deref(), Some(conf.as_str()));
    }

    #[test]
    fn without_a_store_every_record_stays_in_memory() {
        let mut r = Registry::new();
        let finished = five_finished_calls(&mut r);
        assert_eq!(
            (r.conferences.len(), r.members.len(), r.calls.len()),
            (5, 5, 5)
        );
        readable(&r, &finished);
    }
}
