//! Whether the store can write now, and why not when it cannot
//! (docs/security.md, "When the disk is full"). Every write of the store
//! reports here: the first failure of each kind in a spell of failures is
//! logged (a full disk would otherwise log every record), the spell's end is
//! logged once, and `/health` and `/metrics` read the state.
//!
//! Owns: the writable flag, the failure counts and kinds. Never touches:
//! SQLite (the store hands it the outcome of each write), records.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Why a write failed, as an operator would act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// SQLITE_FULL: the file system is full.
    DiskFull,
    /// The file or its directory is read-only.
    ReadOnly,
    /// The disk or the file system failed an I/O.
    Io,
    /// Another process holds the database locked beyond the busy timeout.
    Busy,
    Other,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::DiskFull => "disk full",
            FailureKind::ReadOnly => "read-only",
            FailureKind::Io => "I/O error",
            FailureKind::Busy => "database locked",
            FailureKind::Other => "write failed",
        }
    }

    /// The kind of a SQLite error.
    pub fn of(error: &rusqlite::Error) -> FailureKind {
        use rusqlite::ErrorCode as Code;
        match error.sqlite_error_code() {
            Some(Code::DiskFull) => FailureKind::DiskFull,
            Some(Code::ReadOnly) => FailureKind::ReadOnly,
            Some(Code::SystemIoFailure) => FailureKind::Io,
            Some(Code::DatabaseBusy | Code::DatabaseLocked) => FailureKind::Busy,
            _ => FailureKind::Other,
        }
    }
}

/// The store's ability to write, shared with the API.
#[derive(Debug)]
pub struct StoreHealth {
    writable: AtomicBool,
    failed_writes: AtomicU64,
    /// The kinds logged in the current spell of failures, and the last one.
    spell: Mutex<Spell>,
}

#[derive(Debug, Default)]
struct Spell {
    logged: Vec<FailureKind>,
    last: Option<FailureKind>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            writable: AtomicBool::new(true),
            failed_writes: AtomicU64::new(0),
            spell: Mutex::new(Spell::default()),
        }
    }
}

impl StoreHealth {
    fn spell(&self) -> std::sync::MutexGuard<'_, Spell> {
        self.spell
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A write went through: a spell of failures, if any, is over.
    pub fn wrote(&self) {
        if self.writable.load(Ordering::Relaxed) {
            return;
        }
        let mut spell = self.spell();
        if !self.writable.swap(true, Ordering::Relaxed) {
            tracing::info!(
                failed_writes = self.failed_writes(),
                "the store is writable again"
            );
            *spell = Spell::default();
        }
    }

    /// A write failed with `error`; the first of its kind in a spell is logged.
    pub fn failed(&self, error: &rusqlite::Error) -> FailureKind {
        let kind = FailureKind::of(error);
        self.failed_writes.fetch_add(1, Ordering::Relaxed);
        let mut spell = self.spell();
        self.writable.store(false, Ordering::Relaxed);
        spell.last = Some(kind);
        if !spell.logged.contains(&kind) {
            spell.logged.push(kind);
            tracing::error!(
                kind = kind.as_str(),
                "cannot write the store ({error}): the API refuses new records with 503, \
                 calls go on and their records are written once it can"
            );
        }
        kind
    }

    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    /// Why the last write failed, while the store cannot write.
    pub fn failure(&self) -> Option<FailureKind> {
        if self.is_writable() {
            return None;
        }
        self.spell().last
    }

    /// Writes that failed since start.
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        )
    }

    #[test]
    fn a_failure_makes_the_store_unwritable_until_a_write_goes_through() {
        let health = StoreHealth::default();
        assert!(health.is_writable());
        assert_eq!(health.failure(), None);
        assert_eq!(health.failed(&full()), FailureKind::DiskFull);
        assert_eq!(health.failed(&full()), FailureKind::DiskFull);
        assert!(!health.is_writable());
        assert_eq!(health.failure(), Some(FailureKind::DiskFull));
        assert_eq!(
            health.spell().logged,
            [FailureKind::DiskFull],
            "once per kind"
        );
        health.wrote();
        assert!(health.is_writable());
        assert_eq!(health.failure(), None);
        assert!(health.spell().logged.is_empty());
        assert_eq!(health.failed_writes(), 2);
    }
}
