//! The SQLite store: conferences, members, calls and the callback outbox, so
//! records survive restarts and power loss (WAL) and can be read with `sqlite3`.
//! The records registry writes through it as a [`RecordStore`]; the callback
//! outbox is its own.
//!
//! Writes come from the signalling plane only (the call driver, the API and
//! the callback sender), through one connection behind a mutex: each write is
//! one short statement (or one transaction), never on the media thread. Each
//! write's outcome goes to [`StoreHealth`] (`store/health.rs`), which logs
//! failures once per kind and tells `/health` whether the store can write.
//! It stores and reads records; it never decides what they hold.

mod health;

pub use health::{FailureKind, StoreHealth};

use crate::conference::{
    CallDirection, CallRecord, CallState, Callback, CallbackMethod, Conference, ConferenceState,
    Loaded, Member, MemberState, Profile, Record, RecordStore, StoreFailure,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `PRAGMA user_version` of the schema below; bump it with a migration.
pub const SCHEMA_VERSION: i64 = 2;

/// What turns a file of each older version into the one before the next:
/// version 2 keeps the SIP dialog of a call that is not over.
const MIGRATIONS: [(i64, &str); 1] = [(1, "ALTER TABLE calls ADD COLUMN dialog TEXT;")];

const SCHEMA: &str = "
CREATE TABLE conferences (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    from_number TEXT NOT NULL,
    tag TEXT,
    created_ms INTEGER NOT NULL,
    completed_ms INTEGER,
    completed_reason TEXT,
    mute INTEGER NOT NULL,
    hold INTEGER NOT NULL,
    profile TEXT NOT NULL,
    callback_url TEXT,
    callback_method TEXT NOT NULL,
    callback_timeout_ms INTEGER NOT NULL,
    fallback_url TEXT,
    room TEXT,
    active_members INTEGER NOT NULL
);
CREATE TABLE members (
    id TEXT PRIMARY KEY,
    conference_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    state TEXT NOT NULL,
    added_ms INTEGER NOT NULL,
    removed_ms INTEGER,
    removed_reason TEXT,
    mute INTEGER NOT NULL,
    hold INTEGER NOT NULL,
    deaf INTEGER NOT NULL,
    join_tone INTEGER NOT NULL,
    leaving_tone INTEGER NOT NULL
);
CREATE INDEX members_by_conference ON members (conference_id);
CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    direction TEXT NOT NULL,
    from_uri TEXT NOT NULL,
    to_uri TEXT NOT NULL,
    state TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    active_ms INTEGER,
    end_ms INTEGER,
    callback_url TEXT,
    conference_id TEXT,
    tag TEXT,
    cause TEXT,
    dialog TEXT
);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    url TEXT NOT NULL,
    fallback_url TEXT,
    method TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create the directory {0}: {1}")]
    Directory(String, std::io::Error),
    #[error("the database has schema version {0}; this sipconf knows {SCHEMA_VERSION}")]
    NewerSchema(i64),
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
}

/// One callback waiting to be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub seq: i64,
    /// Events of one stream (a conference or a call) are delivered in order.
    pub stream: String,
    pub url: String,
    pub fallback_url: Option<String>,
    pub method: CallbackMethod,
    pub timeout_ms: u32,
    /// The event as a JSON object.
    pub body: String,
    pub attempts: u32,
}

pub struct Store {
    connection: Mutex<Connection>,
    health: StoreHealth,
}

fn to_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// A time as the store keeps it (whole milliseconds), so what is read back
/// equals what was written.
pub fn truncate_to_ms(time: SystemTime) -> SystemTime {
    from_ms(to_ms(time))
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{value}`"))
}

impl Store {
    /// Opens (or creates) the database, in WAL mode, at the current schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Directory(dir.display().to_string(), e))?;
        }
        let connection = Connection::open(path)?;
        Store::init(connection)
    }

    /// A private database in memory (tests).
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(connection: Connection) -> Result<Store, StoreError> {
        connection.busy_timeout(Duration::from_secs(5))?;
        // WAL survives power loss without corrupting and lets sqlite3 read while
        // we write; NORMAL sync is durable at every checkpoint, safe in WAL.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema(version));
        }
        if version == 0 {
            connection.execute_batch(&format!(
                "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))?;
        }
        for (from, migration) in MIGRATIONS {
            // A file made at version 0 here got the whole schema above.
            if version > 0 && version <= from {
                connection.execute_batch(&format!(
                    "BEGIN; {migration} PRAGMA user_version = {}; COMMIT;",
                    from + 1
                ))?;
            }
        }
        Ok(Store {
            connection: Mutex::new(connection),
            health: StoreHealth::default(),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the store can write now, and why not.
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// Runs one write on the connection and tells `health` how it went.
    fn write<T>(
        &self,
        write: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = write(&mut self.connection());
        match &result {
            Ok(_) => self.health.wrote(),
            Err(StoreError::Sqlite(error)) => {
                self.health.failed(error);
            }
            Err(_) => {}
        }
        result
    }

    /// Runs an UPDATE or DELETE that may find nothing to change; only one
    /// that changed rows shows the store can write again (a statement that
    /// changes nothing writes nothing, even to a full disk).
    fn write_rows(
        &self,
        write: impl FnOnce(&mut Connection) -> Result<usize, rusqlite::Error>,
    ) -> Result<usize, StoreError> {
        let result = write(&mut self.connection());
        match &result {
            Ok(0) => {}
            Ok(_) => self.health.wrote(),
            Err(error) => {
                self.health.failed(error);
            }
        }
        Ok(result?)
    }

    /// Writes and takes back one row, so the file must take a page: whether
    /// the store can write now (a full disk says no). Nothing is kept.
    pub fn probe(&self) -> Result<(), StoreError> {
        self.write(|connection| {
            let transaction = connection.transaction()?;
            transaction.execute(
                "INSERT INTO outbox (stream, url, method, timeout_ms, body)
                 VALUES ('', '', 'POST', 1, '')",
                [],
            )?;
            let seq = transaction.last_insert_rowid();
            transaction.execute("DELETE FROM outbox WHERE seq = ?1", params![seq])?;
            transaction.commit()?;
            Ok(())
        })
    }

    /// Queues a callback; returns its sequence number.
    pub fn enqueue(
        &self,
        stream: &str,
        url: &str,
        fallback_url: Option<&str>,
        method: CallbackMethod,
        timeout_ms: u32,
        body: &str,
    ) -> Result<i64, StoreError> {
        self.write(|connection| {
            connection.execute(
                "INSERT INTO outbox (stream, url, fallback_url, method, timeout_ms, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![stream, url, fallback_url, method.as_str(), timeout_ms, body],
            )?;
            Ok(connection.last_insert_rowid())
        })
    }

    /// The oldest waiting callback of every stream, except `busy` ones.
    pub fn outbox_heads(&self, busy: &[String]) -> Result<Vec<OutboxEntry>, StoreError> {
        let connection = self.connection();
        let mut statement = connection.prepare(
            "SELECT seq, stream, url, fallback_url, method, timeout_ms, body, attempts
             FROM outbox WHERE seq IN (SELECT MIN(seq) FROM outbox GROUP BY stream) ORDER BY seq",
        )?;
        let rows = statement.query_map([], outbox_row)?;
        let mut heads = Vec::new();
        for row in rows {
            let entry = row??;
            if !busy.contains(&entry.stream) {
                heads.push(entry);
            }
        }
        Ok(heads)
    }

    /// The oldest waiting callback of one stream.
    pub fn outbox_head(&self, stream: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let connection = self.connection();
        let entry = connection
            .query_row(
                "SELECT seq, stream, url, fallback_url, method, timeout_ms, body, attempts
                 FROM outbox WHERE stream = ?1 ORDER BY seq LIMIT 1",
                params![stream],
                outbox_row,
            )
            .optional()?;
        entry.transpose()
    }

    pub fn outbox_len(&self) -> Result<usize, StoreError> {
        let n: i64 = self
            .connection()
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
        Ok(n.max(0) as usize)
    }

    /// Records one more failed try.
    pub fn outbox_attempted(&self, seq: i64, attempts: u32) -> Result<(), StoreError> {
        self.write_rows(|connection| {
            connection.execute(
                "UPDATE outbox SET attempts = ?2 WHERE seq = ?1",
                params![seq, attempts],
            )
        })?;
        Ok(())
    }

    /// Removes a callback that was delivered or given up on.
    pub fn outbox_remove(&self, seq: i64) -> Result<(), StoreError> {
        self.write_rows(|connection| {
            connection.execute("DELETE FROM outbox WHERE seq = ?1", params![seq])
        })?;
        Ok(())
    }
}

/// The records registry's storage. Each call takes the connection for one
/// statement (or, at start-up, one load); the store's own errors are boxed
/// for the registry, which logs them.
impl RecordStore for Store {
    fn save_conference(&self, conference: &Conference) -> Result<(), StoreFailure> {
        Ok(self.write(|connection| write_conference(connection, conference))?)
    }

    fn save_member(&self, member: &Member) -> Result<(), StoreFailure> {
        Ok(self.write(|connection| write_member(connection, member))?)
    }

    fn save_call(&self, call: &CallRecord) -> Result<(), StoreFailure> {
        Ok(self.write(|connection| write_call(connection, call))?)
    }

    fn save_dialog(&self, call_id: &str, dialog: &str) -> Result<(), StoreFailure> {
        self.write_rows(|connection| {
            connection.execute(
                "UPDATE calls SET dialog = ?2 WHERE id = ?1 AND state IN ('started', 'active')",
                params![call_id, dialog],
            )
        })?;
        Ok(())
    }

    /// One transaction: all of them are stored, or none.
    fn save_all(&self, records: &[Record<'_>]) -> Result<(), StoreFailure> {
        Ok(self.write(|connection| {
            let transaction = connection.transaction()?;
            for record in records {
                match record {
                    Record::Conference(c) => write_conference(&transaction, c)?,
                    Record::Member(m) => write_member(&transaction, m)?,
                    Record::Call(c) => write_call(&transaction, c)?,
                }
            }
            transaction.commit()?;
            Ok(())
        })?)
    }

    fn load(&self, completed_kept: usize) -> Result<Loaded, StoreFailure> {
        Ok(load_records(&self.connection(), completed_kept)?)
    }

    fn conference(&self, id: &str) -> Result<Option<Conference>, StoreFailure> {
        Ok(conference_with_member_ids(&self.connection(), id)?)
    }

    /// One query, not one per conference: the list is a year of conferences
    /// on a busy box.
    fn conferences_newest_first(&self) -> Result<Vec<Conference>, StoreFailure> {
        Ok(conferences_where(
            &self.connection(),
            "ORDER BY rowid DESC",
            [],
        )?)
    }

    fn member(&self, id: &str) -> Result<Option<Member>, StoreFailure> {
        Ok(members_where(&self.connection(), "WHERE id = ?1", params![id])?.pop())
    }

    fn members_of(&self, conference_id: &str) -> Result<Vec<Member>, StoreFailure> {
        Ok(members_where(
            &self.connection(),
            "WHERE conference_id = ?1 ORDER BY rowid",
            params![conference_id],
        )?)
    }

    fn call(&self, id: &str) -> Result<Option<CallRecord>, StoreFailure> {
        Ok(calls_where(&self.connection(), "WHERE id = ?1", params![id])?.pop())
    }
}

fn write_conference(connection: &Connection, c: &Conference) -> Result<(), StoreError> {
    connection.execute(
        "INSERT INTO conferences (id, state, from_number, tag, created_ms, completed_ms,
            completed_reason, mute, hold, profile, callback_url, callback_method,
            callback_timeout_ms, fallback_url, room, active_members)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT(id) DO UPDATE SET state = ?2, from_number = ?3, tag = ?4,
            created_ms = ?5, completed_ms = ?6, completed_reason = ?7, mute = ?8,
            hold = ?9, profile = ?10, callback_url = ?11, callback_method = ?12,
            callback_timeout_ms = ?13, fallback_url = ?14, room = ?15, active_members = ?16",
        params![
            c.id,
            c.state.as_str(),
            c.from,
            c.tag,
            to_ms(c.created_time),
            c.completed_time.map(to_ms),
            c.completed_reason,
            c.mute,
            c.hold,
            c.profile.as_str(),
            c.callback.url,
            c.callback.method.as_str(),
            c.callback.timeout_ms,
            c.callback.fallback_url,
            c.room,
            c.active_members as i64,
        ],
    )?;
    Ok(())
}

fn write_member(connection: &Connection, m: &Member) -> Result<(), StoreError> {
    connection.execute(
        "INSERT INTO members (id, conference_id, call_id, state, added_ms, removed_ms,
            removed_reason, mute, hold, deaf, join_tone, leaving_tone)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT(id) DO UPDATE SET state = ?4, removed_ms = ?6, removed_reason = ?7,
            mute = ?8, hold = ?9, deaf = ?10, join_tone = ?11, leaving_tone = ?12",
        params![
            m.id,
            m.conference_id,
            m.call_id,
            m.state.as_str(),
            to_ms(m.added_time),
            m.removed_time.map(to_ms),
            m.removed_reason,
            m.mute,
            m.hold,
            m.deaf,
            m.join_tone,
            m.leaving_tone,
        ],
    )?;
    Ok(())
}

fn write_call(connection: &Connection, c: &CallRecord) -> Result<(), StoreError> {
    connection.execute(
        "INSERT INTO calls (id, direction, from_uri, to_uri, state, start_ms, active_ms,
            end_ms, callback_url, conference_id, tag, cause)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT(id) DO UPDATE SET state = ?5, active_ms = ?7, end_ms = ?8,
            callback_url = ?9, conference_id = ?10, tag = ?11, cause = ?12,
            dialog = CASE WHEN ?5 IN ('completed', 'rejected') THEN NULL ELSE dialog END",
        params![
            c.id,
            c.direction.as_str(),
            c.from,
            c.to,
            c.state.as_str(),
            to_ms(c.start_time),
            c.active_time.map(to_ms),
            c.end_time.map(to_ms),
            c.callback_url,
            c.conference_id,
            c.tag,
            c.cause,
        ],
    )?;
    Ok(())
}

/// What start-up needs: every conference, member and call that is not
/// over, and the newest `completed_kept` completed conferences (with
/// their members) and ended calls; conferences oldest first, members in
/// join order. Older records stay in the file and are read on demand.
fn load_records(connection: &Connection, completed_kept: usize) -> Result<Loaded, StoreError> {
    let kept = completed_kept.min(i64::MAX as usize) as i64;
    let conferences_kept = "state != 'completed' OR rowid IN (SELECT rowid FROM conferences
        WHERE state = 'completed' ORDER BY rowid DESC LIMIT ?1)";
    Ok(Loaded {
        conferences: conferences_where(
            connection,
            &format!("WHERE {conferences_kept} ORDER BY rowid"),
            params![kept],
        )?,
        members: members_where(
            connection,
            &format!(
                "WHERE conference_id IN (SELECT id FROM conferences WHERE {conferences_kept})
                 ORDER BY rowid"
            ),
            params![kept],
        )?,
        calls: calls_where(
            connection,
            "WHERE state IN ('started', 'active') OR rowid IN (SELECT rowid FROM calls
                WHERE state IN ('completed', 'rejected') ORDER BY rowid DESC LIMIT ?1)
             ORDER BY rowid",
            params![kept],
        )?,
        completed_conferences: connection.query_row(
            "SELECT COUNT(*) FROM conferences WHERE state = 'completed'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64,
        dialogs: open_dialogs(connection)?,
    })
}

/// The dialogs of calls that are not over.
fn open_dialogs(connection: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut statement = connection.prepare(
        "SELECT id, dialog FROM calls
         WHERE state IN ('started', 'active') AND dialog IS NOT NULL ORDER BY rowid",
    )?;
    let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One conference, with its members' ids in join order.
fn conference_with_member_ids(
    connection: &Connection,
    id: &str,
) -> Result<Option<Conference>, StoreError> {
    let Some(mut conference) = conferences_where(connection, "WHERE id = ?1", params![id])?.pop()
    else {
        return Ok(None);
    };
    conference.member_ids = member_ids_of(connection, id)?;
    Ok(Some(conference))
}

type OutboxRow = Result<OutboxEntry, StoreError>;

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let method: String = r.get(4)?;
    let Some(method) = CallbackMethod::parse(&method) else {
        return Ok(Err(corrupt("callback method", &method)));
    };
    Ok(Ok(OutboxEntry {
        seq: r.get(0)?,
        stream: r.get(1)?,
        url: r.get(2)?,
        fallback_url: r.get(3)?,
        method,
        timeout_ms: r.get(5)?,
        body: r.get(6)?,
        attempts: r.get(7)?,
    }))
}

/// Conferences selected by `tail` (a WHERE and ORDER BY), without member ids.
fn conferences_where(
    connection: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Conference>, StoreError> {
    let mut statement = connection.prepare(&format!(
        "SELECT id, state, from_number, tag, created_ms, completed_ms, completed_reason,
            mute, hold, profile, callback_url, callback_method, callback_timeout_ms,
            fallback_url, room, active_members FROM conferences {tail}"
    ))?;
    let rows = statement.query_map(params, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, Option<String>>(6)?,
            (r.get::<_, bool>(7)?, r.get::<_, bool>(8)?),
            r.get::<_, String>(9)?,
            (
                r.get::<_, Option<String>>(10)?,
                r.get::<_, String>(11)?,
                r.get::<_, u32>(12)?,
                r.get::<_, Option<String>>(13)?,
            ),
            r.get::<_, Option<String>>(14)?,
            r.get::<_, i64>(15)?,
        ))
    })?;
    let mut records = Vec::new();
    for row in rows {
        let (id, state, from, tag, created, completed, reason, flags, profile, cb, room, n) = row?;
        let (url, method, timeout_ms, fallback_url) = cb;
        records.push(Conference {
            state: ConferenceState::parse(&state)
                .ok_or_else(|| corrupt("conference state", &state))?,
            profile: Profile::parse(&profile).ok_or_else(|| corrupt("profile", &profile))?,
            callback: Callback {
                url,
                method: CallbackMethod::parse(&method)
                    .ok_or_else(|| corrupt("callback method", &method))?,
                timeout_ms,
                fallback_url,
            },
            id,
            from,
            tag,
            created_time: from_ms(created),
            completed_time: completed.map(from_ms),
            completed_reason: reason,
            mute: flags.0,
            hold: flags.1,
            room,
            member_ids: Vec::new(),
            active_members: n.max(0) as usize,
            talking_events: false,
        });
    }
    Ok(records)
}

/// Members selected by `tail`.
fn members_where(
    connection: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Member>, StoreError> {
    let mut statement = connection.prepare(&format!(
        "SELECT id, conference_id, call_id, state, added_ms, removed_ms, removed_reason,
            mute, hold, deaf, join_tone, leaving_tone FROM members {tail}"
    ))?;
    let rows = statement.query_map(params, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, Option<String>>(6)?,
            [
                r.get::<_, bool>(7)?,
                r.get::<_, bool>(8)?,
                r.get::<_, bool>(9)?,
                r.get::<_, bool>(10)?,
                r.get::<_, bool>(11)?,
            ],
        ))
    })?;
    let mut records = Vec::new();
    for row in rows {
        let (id, conference_id, call_id, state, added, removed, reason, flags) = row?;
        let [mute, hold, deaf, join_tone, leaving_tone] = flags;
        records.push(Member {
            state: MemberState::parse(&state).ok_or_else(|| corrupt("member state", &state))?,
            id,
            conference_id,
            call_id,
            added_time: from_ms(added),
            removed_time: removed.map(from_ms),
            removed_reason: reason,
            mute,
            hold,
            deaf,
            join_tone,
            leaving_tone,
            talking: false,
            media: None,
        });
    }
    Ok(records)
}

/// Call records selected by `tail`.
fn calls_where(
    connection: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<CallRecord>, StoreError> {
    let mut statement = connection.prepare(&format!(
        "SELECT id, direction, from_uri, to_uri, state, start_ms, active_ms, end_ms,
            callback_url, conference_id, tag, cause FROM calls {tail}"
    ))?;
    let rows = statement.query_map(params, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            [
                Some(r.get::<_, i64>(5)?),
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<i64>>(7)?,
            ],
            [
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
                r.get::<_, Option<String>>(11)?,
            ],
        ))
    })?;
    let mut records = Vec::new();
    for row in rows {
        let (id, direction, from, to, state, times, texts) = row?;
        let [start, active, end] = times;
        let [callback_url, conference_id, tag, cause] = texts;
        records.push(CallRecord {
            direction: match direction.as_str() {
                "in" => CallDirection::In,
                "out" => CallDirection::Out,
                other => return Err(corrupt("call direction", other)),
            },
            state: CallState::parse(&state).ok_or_else(|| corrupt("call state", &state))?,
            id,
            from,
            to,
            start_time: from_ms(start.unwrap_or(0)),
            active_time: active.map(from_ms),
            end_time: end.map(from_ms),
            callback_url,
            conference_id,
            tag,
            cause,
        });
    }
    Ok(records)
}

/// A conference's member ids in join order.
fn member_ids_of(connection: &Connection, conference_id: &str) -> Result<Vec<String>, StoreError> {
    let mut statement =
        connection.prepare("SELECT id FROM members WHERE conference_id = ?1 ORDER BY rowid")?;
    let ids = statement.query_map(params![conference_id], |r| r.get::<_, String>(0))?;
    Ok(ids.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conference::{store_checks, Durability, MemberOptions, RecordError, Registry};
    use std::sync::Arc;

    fn now() -> SystemTime {
        truncate_to_ms(SystemTime::now())
    }

    #[test]
    fn records_read_back_unchanged_and_active_ones_complete_on_open() {
        let dir = std::env::temp_dir().join(format!("sipconf-store-{}", std::process::id()));
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        let (conf, member, call, idle) = {
            let store = Arc::new(Store::open(&path).unwrap());
            let (mut r, recovered) = Registry::open(store, now(), 1000).unwrap();
            assert!(recovered.members.is_empty());
            let call = r
                .create_call(CallDirection::In, "sip:a@x", "sip:b@y", now())
                .id
                .clone();
            r.answer_call(&call, now());
            let callback = Callback {
                url: Some("http://127.0.0.1:1/cb".into()),
                method: CallbackMethod::Get,
                timeout_ms: 500,
                fallback_url: None,
            };
            let conf = r
                .create_conference_with(
                    "+1555",
                    Some("t".into()),
                    None,
                    Profile::PassthruDigits,
                    callback,
                    now(),
                )
                .id
                .clone();
            let idle = r.create_conference("+1666", None, None, now()).id.clone();
            let options = MemberOptions {
                mute: true,
                join_tone: true,
                ..MemberOptions::default()
            };
            let member = r
                .add_member_with(&conf, &call, options, 10, now(), Durability::Required)
                .unwrap()
                .id
                .clone();
            (conf, member, call, idle)
        };
        let store = Arc::new(Store::open(&path).unwrap());
        assert_eq!(
            store
                .connection()
                .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
                .unwrap(),
            SCHEMA_VERSION
        );
        let (r, recovered) = Registry::open(store, now(), 1000).unwrap();
        assert_eq!(recovered.members, vec![member.clone()]);
        assert_eq!(recovered.conferences, vec![conf.clone()]);
        assert_eq!(recovered.calls, vec![call.clone()]);
        let c = r.conference(&conf).unwrap();
        assert_eq!(c.state, ConferenceState::Completed);
        assert_eq!(
            c.completed_reason.as_deref(),
            Some(crate::conference::RESTART_REASON)
        );
        assert_eq!(c.profile, Profile::PassthruDigits);
        assert_eq!(c.callback.method, CallbackMethod::Get);
        assert_eq!(c.tag.as_deref(), Some("t"));
        let m = r.member(&member).unwrap();
        assert_eq!(m.state, MemberState::Completed);
        assert!(m.mute && m.join_tone && !m.leaving_tone);
        assert_eq!(r.call(&call).unwrap().state, CallState::Completed);
        assert_eq!(
            r.conference(&idle).unwrap().state,
            ConferenceState::Created,
            "a conference without members waits for them"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The file may grow by `pages` more pages at most: SQLite then answers
    /// as on a full disk (SQLITE_FULL).
    fn fill_up(store: &Store, pages: i64) {
        let connection = store.connection();
        let count: i64 = connection
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        connection
            .pragma_update(None, "max_page_count", count + pages)
            .unwrap();
    }

    #[test]
    fn a_full_file_refuses_the_apis_records_keeps_the_calls_and_recovers_when_space_returns() {
        let store = Arc::new(Store::in_memory().unwrap());
        let (mut r, _) = Registry::open(store.clone(), now(), 1000).unwrap();
        let kept = r
            .create_conference_stored("+1555", Profile::default(), now(), |_| {})
            .unwrap()
            .id
            .clone();
        fill_up(&store, 0);
        // What still fits in the file's pages is stored; then one is refused,
        // with nothing made.
        let mut stored = 1;
        let refused = loop {
            match r.create_conference_stored("+1666", Profile::default(), now(), |_| {}) {
                Ok(_) if stored < 10_000 => stored += 1,
                other => break other.map(|c| c.id.clone()),
            }
        };
        assert!(
            matches!(refused, Err(RecordError::NotStored(_))),
            "{refused:?}"
        );
        assert_eq!(r.conferences_newest_first().len(), stored);
        assert!(!store.health().is_writable());
        assert_eq!(store.health().failure(), Some(FailureKind::DiskFull));
        // Calls the network brings are made all the same; the first that
        // does not fit waits in memory.
        let mut calls = Vec::new();
        while r.unsaved() == 0 && calls.len() < 10_000 {
            let call = r.create_call(CallDirection::In, "sip:a@x", "sip:b@y", now());
            calls.push(call.id.clone());
        }
        assert_eq!(r.unsaved(), 1);
        let call = calls.last().expect("a call").clone();
        assert!(store.call(&call).unwrap().is_none());
        assert!(r.call(&call).is_some());
        // Space returns: what waited is written, and the store is healthy.
        store
            .connection()
            .pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        assert_eq!(r.retry_unsaved(100), 0);
        assert!(store.health().is_writable());
        assert!(store.call(&call).unwrap().is_some());
        assert!(store.conference(&kept).unwrap().is_some());
        assert_eq!(store.health().failed_writes(), 2, "one refused, one waited");
    }

    #[test]
    fn the_dialog_of_a_call_left_up_comes_back_at_the_next_start_and_an_ended_ones_does_not() {
        let dir = std::env::temp_dir().join(format!("sipconf-dialogs-{}", std::process::id()));
        let path = dir.join("t.db");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Arc::new(Store::open(&path).unwrap());
            let (mut r, _) = Registry::open(store, now(), 10).unwrap();
            for (n, ends) in [(1, false), (2, true)] {
                let id = r.create_call(CallDirection::In, "a", "b", now()).id.clone();
                r.answer_call(&id, now());
                r.set_dialog(&id, &format!("dialog {n}"));
                if ends {
                    r.end_call(&id, CallState::Completed, "NORMAL_CLEARING", now());
                }
            }
        }
        let store = Arc::new(Store::open(&path).unwrap());
        let (r, recovered) = Registry::open(store, now(), 10).unwrap();
        assert_eq!(recovered.dialogs, ["dialog 1"]);
        let left_up = &recovered.calls[0];
        assert_eq!(
            r.call(left_up).unwrap().cause.as_deref(),
            Some(crate::conference::CRASH_CAUSE)
        );
        // Completed now, so the next start finds no dialog.
        drop(r);
        let store = Arc::new(Store::open(&path).unwrap());
        let (_, recovered) = Registry::open(store, now(), 10).unwrap();
        assert!(recovered.dialogs.is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_version_1_file_gains_the_dialog_column_and_keeps_its_calls() {
        let dir = std::env::temp_dir().join(format!("sipconf-v1-{}", std::process::id()));
        let path = dir.join("t.db");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        {
            let v1 = SCHEMA.replace("    cause TEXT,\n    dialog TEXT\n", "    cause TEXT\n");
            assert_ne!(v1, SCHEMA);
            let connection = Connection::open(&path).unwrap();
            connection
                .execute_batch(&format!("{v1} PRAGMA user_version = 1;"))
                .unwrap();
            connection
                .execute(
                    "INSERT INTO calls (id, direction, from_uri, to_uri, state, start_ms)
                     VALUES ('c-old', 'in', 'a', 'b', 'completed', 0)",
                    [],
                )
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let version: i64 = store
            .connection()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(
            store.call("c-old").unwrap().unwrap().state,
            CallState::Completed
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn old_completed_records_leave_memory_but_stay_readable_and_unchangeable() {
        let dir = std::env::temp_dir().join(format!("sipconf-kept-{}", std::process::id()));
        let path = dir.join("t.db");
        let _ = std::fs::remove_dir_all(&dir);
        store_checks::old_completed_records_leave_memory_but_stay_readable_and_unchangeable(|| {
            Arc::new(Store::open(&path).unwrap())
        });
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn outbox_keeps_order_per_stream() {
        let store = Store::in_memory().unwrap();
        let a1 = store
            .enqueue("a", "http://x/", None, CallbackMethod::Post, 10, "{}")
            .unwrap();
        store
            .enqueue(
                "b",
                "http://x/",
                Some("http://y/"),
                CallbackMethod::Get,
                10,
                "{}",
            )
            .unwrap();
        store
            .enqueue("a", "http://x/", None, CallbackMethod::Post, 10, "{}")
            .unwrap();
        let heads = store.outbox_heads(&[]).unwrap();
        assert_eq!(heads.len(), 2);
        assert_eq!(heads[0].seq, a1);
        assert_eq!(heads[1].fallback_url.as_deref(), Some("http://y/"));
        assert_eq!(store.outbox_heads(&["a".into()]).unwrap().len(), 1);
        store.outbox_attempted(a1, 2).unwrap();
        assert_eq!(store.outbox_head("a").unwrap().unwrap().attempts, 2);
        store.outbox_remove(a1).unwrap();
        assert_ne!(store.outbox_head("a").unwrap().unwrap().seq, a1);
        assert_eq!(store.outbox_len().unwrap(), 2);
    }
}
