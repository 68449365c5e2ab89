//! Conference and member records and their state machines: the single source of
//! truth for what exists, read by the call layer now and by the API later.
//!
//! States follow the Catapult v1 contract (`API.md`): a conference goes
//! `created` -> `active` -> `completed`; a member is `active` until `completed`.
//! Records are kept after completion so they stay readable.

use std::collections::HashMap;
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
    /// The room this conference belongs to, for dial-in rooms.
    pub room: Option<String>,
    /// Members in join order (oldest first), including completed ones.
    pub member_ids: Vec<String>,
    pub active_members: usize,
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
}

/// Why a record could not change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the conference {0} could not be found")]
    ConferenceNotFound(String),
    #[error("the member {0} could not be found")]
    MemberNotFound(String),
    #[error("invalid conference state completed")]
    ConferenceCompleted,
    #[error("the conference is full ({0} members)")]
    ConferenceFull(usize),
}

/// All conference and member records.
#[derive(Debug, Default)]
pub struct Registry {
    conferences: HashMap<String, Conference>,
    members: HashMap<String, Member>,
    /// The active (not completed) conference of each room.
    room_conferences: HashMap<String, String>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Creates a conference in state `created`.
    pub fn create_conference(
        &mut self,
        from: &str,
        tag: Option<String>,
        room: Option<&str>,
        now: SystemTime,
    ) -> &Conference {
        let id = new_id("conf-");
        let conference = Conference {
            id: id.clone(),
            state: ConferenceState::Created,
            from: from.to_string(),
            tag,
            created_time: now,
            completed_time: None,
            mute: false,
            hold: false,
            room: room.map(str::to_string),
            member_ids: Vec::new(),
            active_members: 0,
        };
        if let Some(room) = room {
            self.room_conferences.insert(room.to_string(), id.clone());
        }
        self.conferences.entry(id).or_insert(conference)
    }

    /// The room's conference that is not completed, if any.
    pub fn room_conference(&self, room: &str) -> Option<&Conference> {
        self.room_conferences
            .get(room)
            .and_then(|id| self.conferences.get(id))
    }

    pub fn conference(&self, id: &str) -> Option<&Conference> {
        self.conferences.get(id)
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    /// Members of a conference, oldest first, completed ones included.
    pub fn members_of(&self, conference_id: &str) -> Vec<&Member> {
        self.conferences
            .get(conference_id)
            .map(|c| {
                c.member_ids
                    .iter()
                    .filter_map(|m| self.members.get(m))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds an active member; the conference becomes `active`.
    pub fn add_member(
        &mut self,
        conference_id: &str,
        call_id: &str,
        max_members: usize,
        now: SystemTime,
    ) -> Result<&Member, RecordError> {
        let conference = self
            .conferences
            .get_mut(conference_id)
            .ok_or_else(|| RecordError::ConferenceNotFound(conference_id.to_string()))?;
        if conference.state == ConferenceState::Completed {
            return Err(RecordError::ConferenceCompleted);
        }
        if conference.active_members >= max_members {
            return Err(RecordError::ConferenceFull(max_members));
        }
        let id = new_id("member-");
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
            mute: false,
            hold: false,
            deaf: false,
        };
        Ok(self.members.entry(id).or_insert(member))
    }

    /// Changes a member's own mute/hold/deaf flags.
    pub fn set_member_flags(
        &mut self,
        member_id: &str,
        mute: bool,
        hold: bool,
        deaf: bool,
    ) -> Result<&Member, RecordError> {
        let member = self
            .members
            .get_mut(member_id)
            .ok_or_else(|| RecordError::MemberNotFound(member_id.to_string()))?;
        if member.state == MemberState::Completed {
            return Err(RecordError::ConferenceCompleted);
        }
        member.mute = mute;
        member.hold = hold;
        member.deaf = deaf;
        Ok(member)
    }

    /// Completes a member (idempotent). When it was the last active member of a
    /// conference that had members, the conference completes too; returns whether it did.
    pub fn complete_member(
        &mut self,
        member_id: &str,
        now: SystemTime,
    ) -> Result<bool, RecordError> {
        let member = self
            .members
            .get_mut(member_id)
            .ok_or_else(|| RecordError::MemberNotFound(member_id.to_string()))?;
        if member.state == MemberState::Completed {
            return Ok(false);
        }
        member.state = MemberState::Completed;
        member.removed_time = Some(now);
        let conference_id = member.conference_id.clone();
        let Some(conference) = self.conferences.get_mut(&conference_id) else {
            return Ok(false);
        };
        conference.active_members = conference.active_members.saturating_sub(1);
        if conference.active_members == 0 && conference.state == ConferenceState::Active {
            self.complete_conference(&conference_id, now)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Completes a conference (terminal). Completing it twice is an error, as in the API.
    pub fn complete_conference(&mut self, id: &str, now: SystemTime) -> Result<(), RecordError> {
        let conference = self
            .conferences
            .get_mut(id)
            .ok_or_else(|| RecordError::ConferenceNotFound(id.to_string()))?;
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
        Ok(())
    }
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
}
