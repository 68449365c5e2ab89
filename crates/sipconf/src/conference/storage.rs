//! Where the registry keeps its records beyond memory: the [`RecordStore`]
//! trait it writes every change through and reads old records back from.
//! SQLite's `crate::store::Store` implements it for the daemon;
//! [`MemoryStore`] implements it in memory, for tests that want a registry
//! with a store but no file. The registry knows stores only through this
//! trait, so the records layer never depends on SQLite.

use super::{CallRecord, CallState, Conference, ConferenceState, Member};
use std::sync::{Mutex, MutexGuard};

/// A store's failure as the registry sees it: something to log (or, at
/// start-up, to stop for). The store's own error type stays the store's;
/// it arrives here boxed.
pub type StoreFailure = Box<dyn std::error::Error + Send + Sync>;

/// Everything read back at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Oldest first, without their `member_ids` (the members give them).
    pub conferences: Vec<Conference>,
    /// In join order.
    pub members: Vec<Member>,
    /// Oldest first.
    pub calls: Vec<CallRecord>,
    /// Completed conferences in the store, loaded or not.
    pub completed_conferences: u64,
    /// The SIP dialogs of calls that are not over (call id, dialog as
    /// `save_dialog` was given it).
    pub dialogs: Vec<(String, String)>,
}

/// One record to save, of any kind.
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    Conference(&'a Conference),
    Member(&'a Member),
    Call(&'a CallRecord),
}

/// Durable records: the registry writes each change through (one record at
/// a time, inserted or replaced by id), loads what it needs at start-up, and
/// reads old records it no longer keeps in memory. "Oldest" is the order in
/// which records were first saved.
pub trait RecordStore: Send + Sync {
    fn save_conference(&self, conference: &Conference) -> Result<(), StoreFailure>;
    fn save_member(&self, member: &Member) -> Result<(), StoreFailure>;
    fn save_call(&self, call: &CallRecord) -> Result<(), StoreFailure>;

    /// Saves every one of `records`, or (on failure) none of them.
    fn save_all(&self, records: &[Record<'_>]) -> Result<(), StoreFailure>;

    /// Keeps the SIP dialog (an opaque text) of a call that is not over;
    /// it is forgotten when the call is saved ended.
    fn save_dialog(&self, call_id: &str, dialog: &str) -> Result<(), StoreFailure>;

    /// What start-up needs: every conference, member and call that is not
    /// over, and the newest `completed_kept` completed conferences (with
    /// their members) and ended (completed or rejected) calls.
    fn load(&self, completed_kept: usize) -> Result<Loaded, StoreFailure>;

    /// One conference, with its members' ids in join order.
    fn conference(&self, id: &str) -> Result<Option<Conference>, StoreFailure>;
    /// Every conference, newest first, without their members' ids.
    fn conferences_newest_first(&self) -> Result<Vec<Conference>, StoreFailure>;
    fn member(&self, id: &str) -> Result<Option<Member>, StoreFailure>;
    /// A conference's members in join order.
    fn members_of(&self, conference_id: &str) -> Result<Vec<Member>, StoreFailure>;
    fn call(&self, id: &str) -> Result<Option<CallRecord>, StoreFailure>;
}

/// A [`RecordStore`] in memory that never fails, with the same answers as
/// the SQLite store (times are kept exactly, where SQLite keeps milliseconds;
/// `talking`, runtime only, reads back false).
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<Records>,
}

/// Each kind in the order first saved.
#[derive(Debug, Default)]
struct Records {
    conferences: Vec<Conference>,
    members: Vec<Member>,
    calls: Vec<CallRecord>,
    /// Dialogs of calls not over, by call id.
    dialogs: Vec<(String, String)>,
}

/// Replaces the record with `id`, or adds it last.
fn upsert<T: Clone>(records: &mut Vec<T>, record: &T, id: impl Fn(&T) -> &str) {
    match records.iter_mut().find(|r| id(r) == id(record)) {
        Some(old) => *old = record.clone(),
        None => records.push(record.clone()),
    }
}

/// The newest `kept` of those `over`, and every one that is not.
fn newest_over<T>(records: &[T], kept: usize, over: impl Fn(&T) -> bool) -> Vec<&T> {
    let over_total = records.iter().filter(|r| over(r)).count();
    let mut skip = over_total.saturating_sub(kept);
    records
        .iter()
        .filter(|r| {
            if !over(r) {
                return true;
            }
            if skip > 0 {
                skip -= 1;
                return false;
            }
            true
        })
        .collect()
}

fn is_over(call: &CallRecord) -> bool {
    matches!(call.state, CallState::Completed | CallState::Rejected)
}

fn without_member_ids(c: &Conference) -> Conference {
    Conference {
        member_ids: Vec::new(),
        talking_events: false,
        ..c.clone()
    }
}

fn as_read_back(m: &Member) -> Member {
    Member {
        talking: false,
        media: None,
        ..m.clone()
    }
}

impl MemoryStore {
    fn records(&self) -> MutexGuard<'_, Records> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RecordStore for MemoryStore {
    fn save_conference(&self, conference: &Conference) -> Result<(), StoreFailure> {
        upsert(&mut self.records().conferences, conference, |c| &c.id);
        Ok(())
    }

    fn save_member(&self, member: &Member) -> Result<(), StoreFailure> {
        upsert(&mut self.records().members, member, |m| &m.id);
        Ok(())
    }

    fn save_call(&self, call: &CallRecord) -> Result<(), StoreFailure> {
        let mut records = self.records();
        upsert(&mut records.calls, call, |c| &c.id);
        if is_over(call) {
            records.dialogs.retain(|(id, _)| *id != call.id);
        }
        Ok(())
    }

    fn save_dialog(&self, call_id: &str, dialog: &str) -> Result<(), StoreFailure> {
        let mut records = self.records();
        let open = records.calls.iter().any(|c| c.id == call_id && !is_over(c));
        if open {
            records.dialogs.retain(|(id, _)| id != call_id);
            records
                .dialogs
                .push((call_id.to_string(), dialog.to_string()));
        }
        Ok(())
    }

    fn save_all(&self, records: &[Record<'_>]) -> Result<(), StoreFailure> {
        for record in records {
            match record {
                Record::Conference(c) => self.save_conference(c)?,
                Record::Member(m) => self.save_member(m)?,
                Record::Call(c) => self.save_call(c)?,
            }
        }
        Ok(())
    }

    fn load(&self, completed_kept: usize) -> Result<Loaded, StoreFailure> {
        let records = self.records();
        let completed = |c: &Conference| c.state == ConferenceState::Completed;
        let conferences: Vec<Conference> =
            newest_over(&records.conferences, completed_kept, completed)
                .into_iter()
                .map(without_member_ids)
                .collect();
        let members = records
            .members
            .iter()
            .filter(|m| conferences.iter().any(|c| c.id == m.conference_id))
            .map(as_read_back)
            .collect();
        let ended = |c: &CallRecord| is_over(c);
        Ok(Loaded {
            dialogs: records.dialogs.clone(),
            members,
            calls: newest_over(&records.calls, completed_kept, ended)
                .into_iter()
                .cloned()
                .collect(),
            completed_conferences: records.conferences.iter().filter(|c| completed(c)).count()
                as u64,
            conferences,
        })
    }

    fn conference(&self, id: &str) -> Result<Option<Conference>, StoreFailure> {
        let records = self.records();
        Ok(records.conferences.iter().find(|c| c.id == id).map(|c| {
            let member_ids = records
                .members
                .iter()
                .filter(|m| m.conference_id == id)
                .map(|m| m.id.clone())
                .collect();
            Conference {
                member_ids,
                talking_events: false,
                ..c.clone()
            }
        }))
    }

    fn conferences_newest_first(&self) -> Result<Vec<Conference>, StoreFailure> {
        let records = self.records();
        Ok(records
            .conferences
            .iter()
            .rev()
            .map(without_member_ids)
            .collect())
    }

    fn member(&self, id: &str) -> Result<Option<Member>, StoreFailure> {
        let records = self.records();
        Ok(records
            .members
            .iter()
            .find(|m| m.id == id)
            .map(as_read_back))
    }

    fn members_of(&self, conference_id: &str) -> Result<Vec<Member>, StoreFailure> {
        let records = self.records();
        Ok(records
            .members
            .iter()
            .filter(|m| m.conference_id == conference_id)
            .map(as_read_back)
            .collect())
    }

    fn call(&self, id: &str) -> Result<Option<CallRecord>, StoreFailure> {
        Ok(self.records().calls.iter().find(|c| c.id == id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conference::fixtures::*;

    #[test]
    fn a_record_saved_again_replaces_itself_in_its_first_place() {
        let store = MemoryStore::default();
        let (mut full, active) = (full_conference(), active_conference());
        store.save_conference(&full).unwrap();
        store.save_conference(&active).unwrap();
        full.tag = Some("renamed".into());
        store.save_conference(&full).unwrap();
        let listed = store.conferences_newest_first().unwrap();
        let ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["conf-active", "conf-full"]);
        assert_eq!(listed[1].tag.as_deref(), Some("renamed"));
        assert!(listed.iter().all(|c| c.member_ids.is_empty()));
    }

    #[test]
    fn load_keeps_what_is_not_over_and_the_newest_of_what_is() {
        let store = MemoryStore::default();
        let mut old = full_conference();
        old.id = "conf-old".into();
        let mut old_member = full_member();
        old_member.id = "member-old".into();
        old_member.conference_id = "conf-old".into();
        let (full, active) = (full_conference(), active_conference());
        for c in [&old, &active, &full] {
            store.save_conference(c).unwrap();
        }
        for m in [&old_member, &full_member(), &active_member()] {
            store.save_member(m).unwrap();
        }
        let mut old_call = full_call();
        old_call.id = "c-old".into();
        for c in [&old_call, &active_call(), &full_call(), &bare_call()] {
            store.save_call(c).unwrap();
        }

        let loaded = store.load(1).unwrap();
        let ids = |v: Vec<&str>| v.join(" ");
        assert_eq!(
            ids(loaded.conferences.iter().map(|c| c.id.as_str()).collect()),
            "conf-active conf-full"
        );
        assert!(loaded.conferences.iter().all(|c| c.member_ids.is_empty()));
        assert_eq!(
            ids(loaded.members.iter().map(|m| m.id.as_str()).collect()),
            "member-full member-active"
        );
        assert!(loaded.members.iter().all(|m| !m.talking));
        assert_eq!(
            ids(loaded.calls.iter().map(|c| c.id.as_str()).collect()),
            "c-active c-full c-bare"
        );
        assert_eq!(loaded.completed_conferences, 2);

        // What was not loaded is still read.
        let old_read = store.conference("conf-old").unwrap().unwrap();
        assert_eq!(old_read.member_ids, ["member-old"]);
        assert_eq!(store.members_of("conf-old").unwrap().len(), 1);
        assert!(store.call("c-old").unwrap().is_some());
        assert!(store.member("member-nothing").unwrap().is_none());
    }
}
