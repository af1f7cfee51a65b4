//! The durable alert log: the [`AlertLog`] seam, chosen once at start-up ([`open`]), and its
//! embedded implementation, [`SqliteAlertLog`]: an SQLite database in WAL mode holding every alert
//! event, keyed by its sequence number. The log assigns the sequence (in a cluster, the shared
//! stream does), and the hub's live fan-out is fed by the log ([`AlertLog::follow`]), never by the
//! hub's own appends: subscribers get live exactly what is durable, in sequence order, whoever
//! appended it. Resuming subscribers, `ListAlerts` and acknowledgements read from it.
//!
//! Every method blocks (file I/O). The hub calls the writing ones from its one writer thread;
//! readers call the others from the blocking pool, never from an async runtime thread.
//!
//! Each event is stored as its protobuf encoding (`body`, with `sequence` left 0: the row's key is
//! the truth) next to the columns that filters and retention need. `AUTOINCREMENT` keeps the
//! largest sequence ever used in `sqlite_sequence`, so numbers are never reused, even after
//! retention has deleted every row.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter, types::Value};

use super::hub::AlertFilter;
use crate::config::{AlertLogConfig, LogSync};
use crate::pb;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("alert log {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("alert log {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("alert log: stored event {sequence} does not decode: {source}")]
    Corrupt {
        sequence: u64,
        source: prost::DecodeError,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alert_events (
    sequence        INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id        TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    queue           TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    severity        INTEGER NOT NULL,
    state           INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    body            BLOB NOT NULL,
    audience        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alert_events_alert_id ON alert_events (alert_id, sequence);
CREATE INDEX IF NOT EXISTS alert_events_conversation ON alert_events (conversation_id, sequence);
CREATE INDEX IF NOT EXISTS alert_events_created ON alert_events (created_at_ms);
";

/// After [`SCHEMA`] and the `audience` column's migration (a log written before audiences
/// existed holds supervisors' events only, which the column's default says).
const AUDIENCE_INDEX: &str = "CREATE INDEX IF NOT EXISTS alert_events_audience ON alert_events (audience, agent_id, sequence);";

/// What to read: the subscriber's filter plus history-only conditions.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub filter: AlertFilter,
    pub alert_id: Option<String>,
    pub conversation_id: Option<String>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    pub after_sequence: Option<u64>,
    pub before_sequence: Option<u64>,
    /// Only this state (as a `pb::AlertState` value).
    pub state: Option<i32>,
    pub newest_first: bool,
    pub limit: usize,
}

/// What the log hands its follower.
pub enum Followed {
    /// A durable event, in sequence order.
    Event(Arc<pb::Alert>),
    /// The log started again from sequence 1 (a shared log deleted and created again under this
    /// process's copy: NATS lost its storage), for the reason given: the sequences handed out so
    /// far now name other events, or none. What follows is the new log's events from its start.
    Restarted(String),
}

/// Where the log hands durable events (the hub's fan-out). Called on whatever thread made the
/// event durable; it must not block.
pub type Deliver = Box<dyn Fn(Followed) + Send + Sync>;

/// Where alert events are kept. The log assigns sequence numbers, increasing, never reusing one.
pub trait AlertLog: Send + Sync {
    /// Where the log is, for messages.
    fn describe(&self) -> String;
    /// The largest sequence ever appended (0 for a new log), retained or not.
    fn last_sequence(&self) -> Result<u64, LogError>;
    /// The smallest retained sequence, if any event is retained.
    fn first_sequence(&self) -> Result<Option<u64>, LogError>;
    /// Appends one event (its `sequence` field is ignored) and returns the sequence the log gave
    /// it; durable (as the configured sync level makes it) when this returns.
    fn append(&self, alert: &pb::Alert) -> Result<u64, LogError>;
    /// From now on hands `deliver` every event appended after sequence `after`, by this process
    /// or any other writing the same log, once durable, in sequence order, each once (a shared
    /// log created again says [`Followed::Restarted`] and hands the new log's events from 1).
    /// Called once, by the hub, before its first append.
    fn follow(&self, after: u64, deliver: Deliver) -> Result<(), LogError>;
    /// Events matching `q`, in sequence order (oldest first unless `q.newest_first`).
    fn query(&self, q: &Query) -> Result<Vec<pb::Alert>, LogError>;
    /// Deletes events older than `max_age` and all but the newest `max_events`. Returns how many.
    fn apply_retention(
        &self,
        max_age: Option<Duration>,
        max_events: u64,
    ) -> Result<usize, LogError>;
    /// Right to erasure: in every event of these conversations, the customer's words (evidence
    /// and brief excerpts) and their pseudonym are blanked; the freed bytes are overwritten.
    /// Returns how many events changed.
    fn erase(&self, conversation_ids: &[String]) -> Result<usize, LogError>;
    /// The conversations whose events name `customer` (a pseudonym): with the contacts and the
    /// live conversations, what an erasure blanks, so that it also reaches a conversation that is
    /// neither (one that ended before customer memory recorded it, or whose replica died). Reads
    /// every retained event: erasures are rare.
    fn conversations_of(&self, customer: &str) -> Result<Vec<String>, LogError>;
    /// Why the log cannot be trusted to deliver every event right now (a shared log replaced
    /// under this process's copy, until the copy is rebuilt), if it cannot; readiness reports it.
    fn fault(&self) -> Option<String> {
        None
    }
}

/// Copies every page of the write-ahead log into the database and truncates the log to zero
/// bytes, so no earlier version of a rewritten or deleted row stays in it (erasures). A reader in
/// the middle of a query can hold the checkpoint back: retried for up to 2 s, then an error
/// (the erasure is idempotent: the caller tries again).
pub fn truncate_wal(conn: &Connection) -> rusqlite::Result<Result<(), String>> {
    for attempt in 0..100 {
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy == 0 {
            return Ok(Ok(()));
        }
        std::thread::sleep(Duration::from_millis(if attempt < 10 { 2 } else { 20 }));
    }
    Ok(Err(
        "readers kept the write-ahead log from being truncated for 2 s; retry".to_string(),
    ))
}

/// Blanks what in `alert` is the customer's: excerpts of their turns and their pseudonym.
/// Returns whether anything changed.
pub fn scrub_customer(alert: &mut pb::Alert) -> bool {
    let before = alert.clone();
    if let Some(c) = alert.context.as_mut() {
        c.customer_key.clear();
        c.customer_id.clear();
    }
    let excerpts = alert.evidence.iter_mut().map(|e| &mut e.excerpt);
    let brief = alert.brief.as_mut().into_iter().flat_map(|b| {
        if let Some(c) = b.context.as_mut() {
            c.customer_key.clear();
            c.customer_id.clear();
        }
        (b.mood_drops.iter_mut().map(|e| &mut e.excerpt))
            .chain(b.requests.iter_mut().map(|r| &mut r.excerpt))
    });
    excerpts.chain(brief).for_each(String::clear);
    *alert != before
}

/// The log the configuration names (the embedded SQLite file at `alert_log.path`).
pub fn open(config: &AlertLogConfig) -> Result<std::sync::Arc<dyn AlertLog>, LogError> {
    Ok(std::sync::Arc::new(SqliteAlertLog::open(config)?))
}

pub struct SqliteAlertLog {
    path: PathBuf,
    sync: LogSync,
    /// The one writing connection. The hub holds its own lock around append + fan-out.
    writer: Mutex<Connection>,
    /// Idle reading connections (WAL lets them read while the writer writes).
    readers: Mutex<Vec<Connection>>,
    /// The hub's fan-out: only this process writes the file, so what `append` commits is all
    /// there is to follow.
    deliver: Mutex<Option<Deliver>>,
}

impl SqliteAlertLog {
    /// Opens (creating it and its directory on first run) the log at `config.path`.
    pub fn open(config: &AlertLogConfig) -> Result<Self, LogError> {
        let path = config.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LogError::Io {
                path: path.clone(),
                message: format!("creating {}: {e}", dir.display()),
            })?;
        }
        let log = Self {
            writer: Mutex::new(Connection::open(&path).map_err(sqlite(&path))?),
            readers: Mutex::new(Vec::new()),
            deliver: Mutex::new(None),
            sync: config.sync,
            path,
        };
        {
            let conn = log.writer.lock().unwrap_or_else(|p| p.into_inner());
            log.configure(&conn)?;
            conn.execute_batch(SCHEMA).map_err(sqlite(&log.path))?;
            let has_audience: bool = conn
                .prepare("SELECT 1 FROM pragma_table_info('alert_events') WHERE name = 'audience'")
                .and_then(|mut s| s.exists([]))
                .map_err(sqlite(&log.path))?;
            if !has_audience {
                conn.execute_batch(
                    "ALTER TABLE alert_events ADD COLUMN audience INTEGER NOT NULL DEFAULT 0",
                )
                .map_err(sqlite(&log.path))?;
            }
            conn.execute_batch(AUDIENCE_INDEX)
                .map_err(sqlite(&log.path))?;
        }
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `alert` under `sequence` (None: the next one), returns the sequence used.
    fn insert(
        &self,
        conn: &Connection,
        sequence: Option<u64>,
        alert: &pb::Alert,
    ) -> Result<u64, LogError> {
        let context = alert.context.clone().unwrap_or_default();
        let mut body = alert.clone();
        body.sequence = 0;
        conn.prepare_cached(
            "INSERT OR IGNORE INTO alert_events (sequence, alert_id, conversation_id, tenant,
                 queue, agent_id, severity, state, created_at_ms, body, audience)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .and_then(|mut stmt| {
            stmt.execute(rusqlite::params![
                sequence.map(|s| s as i64),
                alert.alert_id,
                alert.conversation_id,
                context.tenant,
                context.queue,
                context.agent_id,
                alert.severity,
                alert.state,
                timestamp_ms(alert.created_at.as_ref()),
                body.encode_to_vec(),
                alert.audience,
            ])
        })
        .map(|_| sequence.unwrap_or_else(|| conn.last_insert_rowid() as u64))
        .map_err(sqlite(&self.path))
    }

    /// As a replica's copy of a shared log (`cluster::JetStreamAlertLog`): stores an event under
    /// the sequence the shared log gave it; one already there is left as it is. Delivers nothing.
    pub fn mirror(&self, alert: &pb::Alert) -> Result<(), LogError> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.insert(&conn, Some(alert.sequence), alert).map(|_| ())
    }

    /// Deletes every event below `first` and, with `all`, the numbering too (the copy of a shared
    /// log that was recreated). Returns how many events.
    pub fn truncate_below(&self, first: u64, all: bool) -> Result<usize, LogError> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let deleted = conn
            .execute(
                "DELETE FROM alert_events WHERE sequence < ?1",
                // u64::MAX (everything) as i64 would be -1: nothing.
                [i64::try_from(first).unwrap_or(i64::MAX)],
            )
            .map_err(sqlite(&self.path))?;
        if all {
            conn.execute(
                "DELETE FROM sqlite_sequence WHERE name = 'alert_events'",
                [],
            )
            .map_err(sqlite(&self.path))?;
        }
        Ok(deleted)
    }

    fn configure(&self, conn: &Connection) -> Result<(), LogError> {
        let sync = match self.sync {
            LogSync::Normal => "NORMAL",
            LogSync::Full => "FULL",
        };
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(sqlite(&self.path))?;
        // secure_delete: what an erasure or retention frees is overwritten, not left in free pages.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA secure_delete = ON;"
        ))
        .map_err(sqlite(&self.path))
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, LogError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(sqlite(&self.path))?;
                conn.busy_timeout(Duration::from_secs(5))
                    .map_err(sqlite(&self.path))?;
                conn
            }
        };
        let result = f(&conn).map_err(sqlite(&self.path));
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() < 4 {
            readers.push(conn);
        }
        result
    }
}

impl AlertLog for SqliteAlertLog {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn last_sequence(&self) -> Result<u64, LogError> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let seq: Option<i64> = conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'alert_events'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite(&self.path))?;
        Ok(seq.unwrap_or(0) as u64)
    }

    fn first_sequence(&self) -> Result<Option<u64>, LogError> {
        self.with_reader(|conn| {
            conn.query_row("SELECT MIN(sequence) FROM alert_events", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map(|s| s.map(|s| s as u64))
        })
    }

    fn append(&self, alert: &pb::Alert) -> Result<u64, LogError> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let sequence = self.insert(&conn, None, alert)?;
        // Still under the writer's lock: deliveries leave in the order of the commits.
        if let Some(deliver) = &*self.deliver.lock().unwrap_or_else(|p| p.into_inner()) {
            let mut event = alert.clone();
            event.sequence = sequence;
            deliver(Followed::Event(Arc::new(event)));
        }
        Ok(sequence)
    }

    fn follow(&self, after: u64, deliver: Deliver) -> Result<(), LogError> {
        let last = self.last_sequence()?;
        if after != last {
            return Err(LogError::Io {
                path: self.path.clone(),
                message: format!(
                    "following from sequence {after}, but the last is {last} (only this process \
                     writes the embedded log: it is followed from its end)"
                ),
            });
        }
        *self.deliver.lock().unwrap_or_else(|p| p.into_inner()) = Some(deliver);
        Ok(())
    }

    fn query(&self, q: &Query) -> Result<Vec<pb::Alert>, LogError> {
        let mut sql = String::from("SELECT sequence, body FROM alert_events WHERE 1 = 1");
        let mut args: Vec<Value> = Vec::new();
        let mut any_of = |sql: &mut String, column: &str, values: &[String]| {
            if !values.is_empty() {
                sql.push_str(&format!(
                    " AND {column} IN ({})",
                    vec!["?"; values.len()].join(", ")
                ));
                args.extend(values.iter().cloned().map(Value::Text));
            }
        };
        any_of(&mut sql, "tenant", &q.filter.tenants);
        any_of(&mut sql, "queue", &q.filter.queues);
        any_of(&mut sql, "agent_id", &q.filter.agent_ids);
        let mut cond = |sql: &mut String, clause: &str, value: Value| {
            sql.push_str(clause);
            args.push(value);
        };
        cond(
            &mut sql,
            " AND audience = ?",
            Value::Integer(super::wire_audience(q.filter.audience) as i64),
        );
        if let Some(min) = q.filter.min_severity {
            cond(&mut sql, " AND severity >= ?", Value::Integer(min as i64));
        }
        if let Some(id) = &q.alert_id {
            cond(&mut sql, " AND alert_id = ?", Value::Text(id.clone()));
        }
        if let Some(id) = &q.conversation_id {
            cond(
                &mut sql,
                " AND conversation_id = ?",
                Value::Text(id.clone()),
            );
        }
        if let Some(t) = q.since {
            cond(&mut sql, " AND created_at_ms >= ?", Value::Integer(ms(t)));
        }
        if let Some(t) = q.until {
            cond(&mut sql, " AND created_at_ms < ?", Value::Integer(ms(t)));
        }
        if let Some(s) = q.after_sequence {
            cond(&mut sql, " AND sequence > ?", Value::Integer(s as i64));
        }
        if let Some(s) = q.before_sequence {
            cond(&mut sql, " AND sequence < ?", Value::Integer(s as i64));
        }
        if let Some(state) = q.state {
            cond(&mut sql, " AND state = ?", Value::Integer(state as i64));
        }
        sql.push_str(if q.newest_first {
            " ORDER BY sequence DESC"
        } else {
            " ORDER BY sequence ASC"
        });
        sql.push_str(&format!(" LIMIT {}", q.limit.max(1)));

        let rows: Vec<(i64, Vec<u8>)> = self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params_from_iter(args.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(sequence, body)| {
                let mut alert =
                    pb::Alert::decode(body.as_slice()).map_err(|source| LogError::Corrupt {
                        sequence: sequence as u64,
                        source,
                    })?;
                alert.sequence = sequence as u64;
                Ok(alert)
            })
            .collect()
    }

    fn apply_retention(
        &self,
        max_age: Option<Duration>,
        max_events: u64,
    ) -> Result<usize, LogError> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut deleted = 0;
        if let Some(age) = max_age {
            let cutoff = ms(SystemTime::now()) - age.as_millis() as i64;
            deleted += conn
                .execute(
                    "DELETE FROM alert_events WHERE created_at_ms < ?1",
                    [cutoff],
                )
                .map_err(sqlite(&self.path))?;
        }
        deleted += conn
            .execute(
                "DELETE FROM alert_events WHERE sequence <= (
                     SELECT sequence FROM alert_events ORDER BY sequence DESC LIMIT 1 OFFSET ?1)",
                [max_events as i64],
            )
            .map_err(sqlite(&self.path))?;
        Ok(deleted)
    }

    fn conversations_of(&self, customer: &str) -> Result<Vec<String>, LogError> {
        if customer.is_empty() {
            return Ok(Vec::new());
        }
        // The pseudonym is a field of the stored event: a byte search finds the candidates
        // without decoding every event; each is then decoded and checked.
        let rows: Vec<(i64, String, Vec<u8>)> = self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT sequence, conversation_id, body FROM alert_events WHERE instr(body, ?1) > 0",
            )?;
            let rows = stmt
                .query_map([customer.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })?;
        let mut found = Vec::new();
        for (sequence, conversation_id, body) in rows {
            let alert = pb::Alert::decode(body.as_slice()).map_err(|source| LogError::Corrupt {
                sequence: sequence as u64,
                source,
            })?;
            let brief = alert.brief.as_ref().and_then(|b| b.context.as_ref());
            let named = (alert.context.iter().chain(brief)).any(|c| c.customer_key == customer);
            if named && !found.contains(&conversation_id) {
                found.push(conversation_id);
            }
        }
        Ok(found)
    }

    fn erase(&self, conversation_ids: &[String]) -> Result<usize, LogError> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(sqlite(&self.path))?;
        let mut changed = 0;
        for id in conversation_ids {
            let rows: Vec<(i64, Vec<u8>)> = tx
                .prepare_cached(
                    "SELECT sequence, body FROM alert_events WHERE conversation_id = ?1",
                )
                .and_then(|mut stmt| {
                    stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                })
                .map_err(sqlite(&self.path))?;
            for (sequence, body) in rows {
                let mut alert =
                    pb::Alert::decode(body.as_slice()).map_err(|source| LogError::Corrupt {
                        sequence: sequence as u64,
                        source,
                    })?;
                if scrub_customer(&mut alert) {
                    tx.execute(
                        "UPDATE alert_events SET body = ?2 WHERE sequence = ?1",
                        rusqlite::params![sequence, alert.encode_to_vec()],
                    )
                    .map_err(sqlite(&self.path))?;
                    changed += 1;
                }
            }
        }
        tx.commit().map_err(sqlite(&self.path))?;
        // The old bodies are still in the WAL until it is checkpointed and truncated.
        truncate_wal(&conn)
            .map_err(sqlite(&self.path))?
            .map_err(|message| LogError::Io {
                path: self.path.clone(),
                message,
            })?;
        Ok(changed)
    }
}

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> LogError + '_ {
    move |source| LogError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn timestamp_ms(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{Audience, Severity};

    fn open(dir: &Path) -> SqliteAlertLog {
        SqliteAlertLog::open(&AlertLogConfig {
            path: dir.join("alerts.sqlite3"),
            ..Default::default()
        })
        .unwrap()
    }

    fn event(sequence: u64, queue: &str, severity: pb::Severity) -> pb::Alert {
        pb::Alert {
            sequence,
            alert_id: format!("a{sequence}"),
            conversation_id: "c".into(),
            context: Some(pb::Context {
                queue: queue.into(),
                ..Default::default()
            }),
            severity: severity.into(),
            state: pb::AlertState::Raised.into(),
            created_at: Some(SystemTime::now().into()),
            ..Default::default()
        }
    }

    /// The conversations an erasure finds by their events: the customer named in an event's
    /// context or in a brief's, not where their pseudonym is only text (an excerpt quoting it).
    #[test]
    fn the_conversations_of_a_customer_are_found_by_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let key = "0123456789abcdef0123456789abcdef";
        let with = |conversation: &str, customer: &str| {
            let mut e = event(0, "billing", pb::Severity::Warning);
            e.conversation_id = conversation.into();
            e.context.as_mut().unwrap().customer_key = customer.into();
            e
        };
        log.append(&with("c-1", key)).unwrap();
        log.append(&with("c-1", key)).unwrap();
        let mut briefed = with("c-2", "");
        briefed.brief = Some(pb::HandoffBrief {
            context: Some(pb::Context {
                customer_key: key.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        log.append(&briefed).unwrap();
        log.append(&with("c-3", "fedcba9876543210fedcba9876543210"))
            .unwrap();
        let mut quoted = with("c-4", "");
        quoted.evidence.push(pb::EvidenceTurn {
            excerpt: format!("my reference is {key}"),
            ..Default::default()
        });
        log.append(&quoted).unwrap();
        let mut found = log.conversations_of(key).unwrap();
        found.sort();
        assert_eq!(found, ["c-1", "c-2"]);
        assert!(log.conversations_of("").unwrap().is_empty());
        assert_eq!(log.erase(&found).unwrap(), 3);
        assert!(log.conversations_of(key).unwrap().is_empty());
    }

    /// The copy of a shared log that was created again: emptied with its numbering, then filled
    /// from sequence 1 with the new log's events (not the old rows under the same numbers).
    #[test]
    fn a_mirror_emptied_whole_takes_the_new_logs_events() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        for s in 1..=3 {
            log.mirror(&event(s, "old", pb::Severity::Warning)).unwrap();
        }
        assert_eq!(log.last_sequence().unwrap(), 3);
        assert_eq!(log.truncate_below(u64::MAX, true).unwrap(), 3);
        assert_eq!(log.last_sequence().unwrap(), 0);
        assert_eq!(log.first_sequence().unwrap(), None);
        log.mirror(&event(1, "new", pb::Severity::Critical))
            .unwrap();
        let all = log.query(&Query::default()).unwrap();
        let queues: Vec<_> = (all.iter())
            .map(|a| (a.sequence, a.context.clone().unwrap_or_default().queue))
            .collect();
        assert_eq!(queues, [(1, "new".to_string())]);
    }

    #[test]
    fn append_query_reopen_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        assert_eq!(log.last_sequence().unwrap(), 0);
        for s in 1..=10 {
            let queue = if s % 2 == 0 { "billing" } else { "sales" };
            let sev = if s > 8 {
                pb::Severity::Critical
            } else {
                pb::Severity::Warning
            };
            let mut e = event(s, queue, sev);
            e.sequence = 99; // ignored: the log numbers its events
            assert_eq!(log.append(&e).unwrap(), s);
        }
        let billing = log
            .query(&Query {
                filter: AlertFilter {
                    queues: vec!["billing".into()],
                    ..Default::default()
                },
                after_sequence: Some(3),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        let seqs: Vec<u64> = billing.iter().map(|a| a.sequence).collect();
        assert_eq!(seqs, [4, 6, 8, 10]);
        assert_eq!(billing[0].alert_id, "a4");
        let critical = log
            .query(&Query {
                filter: AlertFilter {
                    min_severity: Some(Severity::Critical),
                    ..Default::default()
                },
                newest_first: true,
                limit: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(critical[0].sequence, 10);
        drop(log);

        let log = open(dir.path());
        assert_eq!(log.last_sequence().unwrap(), 10, "survives reopening");
        assert_eq!(log.apply_retention(None, 3).unwrap(), 7);
        assert_eq!(log.first_sequence().unwrap(), Some(8));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            log.apply_retention(Some(Duration::ZERO), 100).unwrap(),
            3,
            "everything is older than zero seconds"
        );
        assert_eq!(log.first_sequence().unwrap(), None);
        assert_eq!(
            log.last_sequence().unwrap(),
            10,
            "numbers are never reused after deletion"
        );
    }

    #[test]
    fn a_log_from_before_audiences_is_migrated_and_each_audience_reads_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.sqlite3");
        {
            // The table as it was before the audience column existed, with one event in it.
            let conn = Connection::open(&path).unwrap();
            let old = SCHEMA.replace(",\n    audience        INTEGER NOT NULL DEFAULT 0", "");
            assert!(!old.contains("audience"));
            conn.execute_batch(&old).unwrap();
            let body = event(0, "billing", pb::Severity::Warning).encode_to_vec();
            conn.execute(
                "INSERT INTO alert_events (alert_id, conversation_id, tenant, queue, agent_id,
                     severity, state, created_at_ms, body) VALUES ('old', 'c', '', 'billing', 'ag', 1, 1, 0, ?1)",
                [body],
            )
            .unwrap();
        }
        let log = open(dir.path());
        let mut guidance = event(0, "billing", pb::Severity::Warning);
        guidance.audience = pb::Audience::Agent.into();
        guidance.context.as_mut().unwrap().agent_id = "ag".into();
        assert_eq!(log.append(&guidance).unwrap(), 2);
        let read = |audience| {
            log.query(&Query {
                filter: AlertFilter {
                    audience,
                    ..Default::default()
                },
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .iter()
            .map(|a| a.sequence)
            .collect::<Vec<_>>()
        };
        assert_eq!(
            read(Audience::Supervisor),
            [1],
            "the old event is a supervisor's"
        );
        assert_eq!(read(Audience::Agent), [2]);
        drop(log);
        assert_eq!(
            open(dir.path()).last_sequence().unwrap(),
            2,
            "reopens migrated"
        );
    }
}
