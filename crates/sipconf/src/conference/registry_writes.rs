//! The registry's writes to its store (docs/security.md, "When the disk is
//! full"): each change written through; what the API makes stored first or
//! refused ([`Durability::Required`]); what the network did kept in memory
//! when the store cannot take it, and written back later; a call's SIP
//! dialog kept with its record. It owns the list of what waits; the records
//! themselves are the registry's.

use super::Registry;
use crate::conference::{Record, RecordError, RecordStore, StoreFailure};

/// Whether a change must be stored before it is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Stored first, or refused with [`RecordError::NotStored`] and not
    /// made: what the API creates or edits and answers 201 or 200 for.
    Required,
    /// Made in memory whatever the store says, and written once it can:
    /// what the network did.
    BestEffort,
}

/// A record the store could not write yet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Unsaved {
    Conference(String),
    Member(String),
    Call(String),
}

/// Unsaved records written back after each write that went through, at most.
const RETRIES_PER_WRITE: usize = 16;

impl Registry {
    /// Writes one record through; what the store cannot write waits in
    /// `unsaved`. After a write that went through, some that waited go too.
    fn persist(&mut self, unsaved: Unsaved) {
        let Some(store) = self.store.clone() else {
            return;
        };
        match self.write_back(store.as_ref(), &unsaved) {
            Ok(()) => {
                if !self.unsaved.is_empty() {
                    self.retry_some(RETRIES_PER_WRITE);
                }
            }
            Err(e) => {
                // The store logs the first failure of each kind; this is per record.
                tracing::debug!(record = ?unsaved, "record kept in memory, not stored: {e}");
                self.unsaved.insert(unsaved);
            }
        }
    }

    /// Saves the record `unsaved` names, and a call's dialog that waited
    /// for it; then it waits no more.
    fn write_back(
        &mut self,
        store: &dyn RecordStore,
        unsaved: &Unsaved,
    ) -> Result<(), StoreFailure> {
        self.save(store, unsaved)?;
        if let Unsaved::Call(id) = unsaved {
            if let Some(dialog) = self.unsaved_dialogs.get(id) {
                store.save_dialog(id, dialog)?;
                self.unsaved_dialogs.remove(id);
            }
        }
        self.unsaved.remove(unsaved);
        Ok(())
    }

    /// Saves the record `unsaved` names as it is now (gone: nothing to save).
    fn save(&self, store: &dyn RecordStore, unsaved: &Unsaved) -> Result<(), StoreFailure> {
        match unsaved {
            Unsaved::Conference(id) => self.conferences.get(id).map(|c| store.save_conference(c)),
            Unsaved::Member(id) => self.members.get(id).map(|m| store.save_member(m)),
            Unsaved::Call(id) => self.calls.get(id).map(|c| store.save_call(c)),
        }
        .unwrap_or(Ok(()))
    }

    pub(super) fn persist_conference(&mut self, id: &str) {
        self.persist(Unsaved::Conference(id.to_string()));
    }

    pub(super) fn persist_member(&mut self, id: &str) {
        self.persist(Unsaved::Member(id.to_string()));
    }

    pub(super) fn persist_call(&mut self, id: &str) {
        self.persist(Unsaved::Call(id.to_string()));
    }

    /// Writes up to `budget` records that wait, oldest kind first; stops at
    /// the first the store refuses.
    fn retry_some(&mut self, budget: usize) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let waiting: Vec<Unsaved> = self.unsaved.iter().take(budget).cloned().collect();
        for unsaved in waiting {
            if self.write_back(store.as_ref(), &unsaved).is_err() {
                return;
            }
        }
        if self.unsaved.is_empty() {
            self.forget_old_records();
        }
    }

    /// Writes up to `budget` records that wait for the store (call it now
    /// and then while [`Registry::unsaved`] is not zero); returns how many
    /// still wait.
    pub fn retry_unsaved(&mut self, budget: usize) -> usize {
        self.retry_some(budget);
        self.unsaved.len()
    }

    /// Records changed in memory that the store has not taken yet.
    pub fn unsaved(&self) -> usize {
        self.unsaved.len()
    }

    /// Stores `records` before the change they make is made in memory;
    /// `Durability::BestEffort` stores nothing here (the change is written
    /// through afterwards).
    pub(super) fn store_first(
        &self,
        durability: Durability,
        records: &[Record<'_>],
    ) -> Result<(), RecordError> {
        let (Durability::Required, Some(store)) = (durability, &self.store) else {
            return Ok(());
        };
        store
            .save_all(records)
            .map_err(|e| RecordError::NotStored(e.to_string()))
    }

    /// Keeps a call's SIP dialog with its record while it is not over (see
    /// `RecordStore::save_dialog`); a store that cannot write loses it.
    pub fn set_dialog(&mut self, call_id: &str, dialog: &str) {
        let Some(store) = &self.store else {
            return;
        };
        let waiting = self.unsaved.contains(&Unsaved::Call(call_id.to_string()));
        if waiting || store.save_dialog(call_id, dialog).is_err() {
            // Written with its call (`retry_some`).
            self.unsaved_dialogs
                .insert(call_id.to_string(), dialog.to_string());
            self.unsaved.insert(Unsaved::Call(call_id.to_string()));
        }
    }
}
