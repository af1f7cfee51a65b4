//! The embedded customer store: one SQLite file (WAL). `customers` has a row per customer (what
//! the silent list ranks, with a partial index over customers whose last contact ended badly that
//! holds every column the list filters on, so counting and paging it never reads the table),
//! `contacts` a row per ended contact, clustered by customer and end time. `secure_delete` is on
//! and an erasure ends with a truncating checkpoint, so deleted contacts leave no bytes behind in
//! the database or its WAL.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{
    Contact, ContactFilter, CustomerError, CustomerStore, CustomerSummary, Erased, Outcome,
    SilentCustomer, SilentPage, SilentQuery,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS customers (
    customer          TEXT PRIMARY KEY,
    tenant            TEXT NOT NULL,
    contacts          INTEGER NOT NULL,
    bad_contacts      INTEGER NOT NULL,
    last_ended_ms     INTEGER NOT NULL,
    last_conversation TEXT NOT NULL,
    last_outcome      INTEGER NOT NULL,
    rank              REAL NOT NULL,
    called_at_ms      INTEGER,
    called_by         TEXT
) WITHOUT ROWID;
DROP INDEX IF EXISTS customers_silent;
CREATE INDEX IF NOT EXISTS customers_silent_list ON customers
    (rank DESC, last_ended_ms, called_at_ms, tenant, last_outcome) WHERE last_outcome <> 0;
CREATE TABLE IF NOT EXISTS contacts (
    customer        TEXT NOT NULL,
    ended_ms        INTEGER NOT NULL,
    conversation_id TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    queue           TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    started_ms      INTEGER NOT NULL,
    final_score     REAL NOT NULL,
    lowest_score    REAL NOT NULL,
    alert_events    INTEGER NOT NULL,
    emotions        TEXT NOT NULL,
    outcome         INTEGER NOT NULL,
    PRIMARY KEY (customer, ended_ms, conversation_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS contacts_ended ON contacts (ended_ms);
CREATE TABLE IF NOT EXISTS mirrored (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    sequence INTEGER NOT NULL
);
";

const CONTACT_COLUMNS: &str = "customer, conversation_id, tenant, queue, agent_id, started_ms, \
     ended_ms, final_score, lowest_score, alert_events, emotions, outcome";

pub struct SqliteCustomerStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn contact_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Contact> {
    let emotions: String = r.get(at + 10)?;
    Ok(Contact {
        customer: r.get(at)?,
        conversation_id: r.get(at + 1)?,
        tenant: r.get(at + 2)?,
        queue: r.get(at + 3)?,
        agent_id: r.get(at + 4)?,
        started_ms: r.get::<_, i64>(at + 5)? as u64,
        ended_ms: r.get::<_, i64>(at + 6)? as u64,
        final_score: r.get::<_, f64>(at + 7)? as f32,
        lowest_score: r.get::<_, f64>(at + 8)? as f32,
        alert_events: r.get::<_, i64>(at + 9)? as u32,
        emotions: emotions
            .split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect(),
        outcome: Outcome::from_code(r.get(at + 11)?),
    })
}

impl SqliteCustomerStore {
    pub fn open(path: &Path) -> Result<Self, CustomerError> {
        let fail = |message: String| CustomerError::Store {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        conn.busy_timeout(Duration::from_secs(5))
            .and_then(|_| {
                conn.execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                     PRAGMA secure_delete = ON; PRAGMA journal_size_limit = 0;",
                )
            })
            .and_then(|_| conn.execute_batch(SCHEMA))
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> CustomerError {
        CustomerError::Store {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, CustomerError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| self.error(e))?;
                conn.busy_timeout(Duration::from_secs(5))
                    .map_err(|e| self.error(e))?;
                conn
            }
        };
        let result = f(&conn).map_err(|e| self.error(e));
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() < 4 {
            readers.push(conn);
        }
        result
    }

    /// Recomputes a customer's row from their contacts (none left: the row goes).
    fn refresh(tx: &Connection, customer: &str) -> rusqlite::Result<()> {
        let counts: (i64, i64) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(outcome <> 0), 0) FROM contacts WHERE customer = ?1",
            [customer],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let last = tx
            .query_row(
                &format!(
                    "SELECT {CONTACT_COLUMNS} FROM contacts WHERE customer = ?1
                     ORDER BY ended_ms DESC LIMIT 1"
                ),
                [customer],
                |r| contact_from(r, 0),
            )
            .optional()?;
        let Some(last) = last else {
            tx.execute("DELETE FROM customers WHERE customer = ?1", [customer])?;
            return Ok(());
        };
        let rank = rank(counts.1 as u32, &last);
        tx.execute(
            "INSERT INTO customers (customer, tenant, contacts, bad_contacts, last_ended_ms,
                 last_conversation, last_outcome, rank)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (customer) DO UPDATE SET contacts = ?3, bad_contacts = ?4,
                 last_ended_ms = ?5, last_conversation = ?6, last_outcome = ?7, rank = ?8",
            params![
                customer,
                last.tenant,
                counts.0,
                counts.1,
                last.ended_ms as i64,
                last.conversation_id,
                last.outcome.code(),
                rank
            ],
        )?;
        Ok(())
    }

    /// As a cluster replica's copy of the customers stream: the newest stream sequence applied
    /// (0 for none, and for an embedded store).
    pub fn mirrored(&self) -> Result<u64, CustomerError> {
        self.with_reader(|conn| {
            conn.query_row("SELECT sequence FROM mirrored WHERE id = 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
        })
        .map(|s| s.unwrap_or(0) as u64)
    }

    /// Notes that the copy holds the stream up to `sequence`.
    pub fn set_mirrored(&self, sequence: u64) -> Result<(), CustomerError> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "INSERT INTO mirrored (id, sequence) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET sequence = ?1",
            [sequence as i64],
        )
        .map(|_| ())
        .map_err(|e| self.error(e))
    }

    /// The customers whose contacts include one of `conversations` (a cluster replica applying
    /// an erasure it did not make: the stream names the customer by a handle that only the
    /// erased link tied to their pseudonym). A scan of the contacts: erasures are rare.
    pub fn customers_of(&self, conversations: &[String]) -> Result<Vec<String>, CustomerError> {
        if conversations.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: std::collections::HashSet<&str> =
            conversations.iter().map(String::as_str).collect();
        self.with_reader(|conn| {
            let mut stmt =
                conn.prepare("SELECT DISTINCT customer, conversation_id FROM contacts")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut found = Vec::new();
            for row in rows {
                let (customer, conversation) = row?;
                if wanted.contains(conversation.as_str()) && !found.contains(&customer) {
                    found.push(customer);
                }
            }
            Ok(found)
        })
    }

    /// Overwrites what deletions freed in the WAL too: checkpoint everything, truncate the WAL.
    fn scrub(&self, conn: &Connection) -> Result<(), CustomerError> {
        crate::alerts::log::truncate_wal(conn)
            .map_err(|e| self.error(e))?
            .map_err(|e| self.error(e))
    }
}

/// How bad and how often (see [`SilentCustomer::rank`]).
fn rank(bad_contacts: u32, last: &Contact) -> f64 {
    let resigned = if last.outcome == Outcome::Resigned {
        1.0
    } else {
        0.0
    };
    bad_contacts as f64 + (-last.lowest_score as f64).max(0.0) + resigned
}

impl CustomerStore for SqliteCustomerStore {
    fn recent(&self, customer: &str, limit: usize) -> Result<Vec<Contact>, CustomerError> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {CONTACT_COLUMNS} FROM contacts WHERE customer = ?1
                 ORDER BY ended_ms DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![customer, limit as i64], |r| contact_from(r, 0))?;
            rows.collect()
        })
    }

    fn record(&self, contacts: &[Contact]) -> Result<(), CustomerError> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let mut touched = std::collections::BTreeSet::new();
        {
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT OR IGNORE INTO contacts ({CONTACT_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ))
                .map_err(|e| self.error(e))?;
            for c in contacts {
                insert
                    .execute(params![
                        c.customer,
                        c.conversation_id,
                        c.tenant,
                        c.queue,
                        c.agent_id,
                        c.started_ms as i64,
                        c.ended_ms as i64,
                        c.final_score as f64,
                        c.lowest_score as f64,
                        c.alert_events as i64,
                        c.emotions.join(","),
                        c.outcome.code(),
                    ])
                    .map_err(|e| self.error(e))?;
                if !c.customer.is_empty() {
                    touched.insert(c.customer.as_str());
                }
            }
        }
        for customer in touched {
            Self::refresh(&tx, customer).map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))
    }

    fn summary(&self, customer: &str) -> Result<Option<CustomerSummary>, CustomerError> {
        self.with_reader(|conn| {
            conn.query_row(
                "SELECT tenant, contacts, bad_contacts, rank, called_at_ms, called_by
                 FROM customers WHERE customer = ?1",
                [customer],
                |r| {
                    let called_at: Option<i64> = r.get(4)?;
                    let called_by: Option<String> = r.get(5)?;
                    Ok(CustomerSummary {
                        customer: customer.to_string(),
                        tenant: r.get(0)?,
                        contacts: r.get::<_, i64>(1)? as u32,
                        bad_contacts: r.get::<_, i64>(2)? as u32,
                        rank: r.get(3)?,
                        called: called_at.map(|at| (at as u64, called_by.unwrap_or_default())),
                    })
                },
            )
            .optional()
        })
    }

    fn silent(&self, q: &SilentQuery) -> Result<SilentPage, CustomerError> {
        let cutoff = q.as_of_ms.saturating_sub(q.silent_after.as_millis() as u64) as i64;
        let tenants = serde_json::to_string(&q.tenants).map_err(|e| self.error(e))?;
        let filter = "c.last_outcome <> 0 AND c.last_ended_ms <= ?1
               AND (c.called_at_ms IS NULL OR c.called_at_ms < c.last_ended_ms)
               AND (?2 = '[]' OR c.tenant IN (SELECT value FROM json_each(?2)))";
        let last_columns: Vec<String> = (CONTACT_COLUMNS.split(", "))
            .map(|col| format!("l.{col}"))
            .collect();
        self.with_reader(|conn| {
            let total: i64 = conn.query_row(
                &format!("SELECT COUNT(*) FROM customers c WHERE {filter}"),
                params![cutoff, tenants],
                |r| r.get(0),
            )?;
            // The page's customers from the index first, then their last contacts: joined
            // the other way round, SQLite would walk the contacts.
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT p.contacts, p.bad_contacts, p.rank, {}
                 FROM (SELECT c.customer, c.contacts, c.bad_contacts, c.rank, c.last_ended_ms,
                              c.last_conversation
                       FROM customers c WHERE {filter}
                       ORDER BY c.rank DESC, c.customer LIMIT ?3 OFFSET ?4) p
                 CROSS JOIN contacts l ON l.customer = p.customer
                     AND l.ended_ms = p.last_ended_ms AND l.conversation_id = p.last_conversation
                 ORDER BY p.rank DESC, p.customer",
                last_columns.join(", ")
            ))?;
            let rows = stmt.query_map(
                params![cutoff, tenants, q.limit as i64, q.offset as i64],
                |r| {
                    let last = contact_from(r, 3)?;
                    Ok(SilentCustomer {
                        customer: last.customer.clone(),
                        tenant: last.tenant.clone(),
                        contacts: r.get::<_, i64>(0)? as u32,
                        bad_contacts: r.get::<_, i64>(1)? as u32,
                        rank: r.get(2)?,
                        last,
                    })
                },
            )?;
            Ok(SilentPage {
                customers: rows.collect::<rusqlite::Result<_>>()?,
                total: total as u64,
            })
        })
    }

    fn outcomes(&self, f: &ContactFilter) -> Result<[u64; 4], CustomerError> {
        let tenants = serde_json::to_string(&f.tenants).map_err(|e| self.error(e))?;
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT outcome, COUNT(*) FROM contacts
                 WHERE ended_ms >= ?1 AND ended_ms < ?2
                   AND (?3 = '[]' OR tenant IN (SELECT value FROM json_each(?3)))
                   AND (?4 = '' OR queue = ?4) AND (?5 = '' OR agent_id = ?5)
                 GROUP BY outcome",
            )?;
            let mut counts = [0u64; 4];
            let rows = stmt.query_map(
                params![
                    f.since_ms as i64,
                    f.until_ms as i64,
                    tenants,
                    f.queue,
                    f.agent_id
                ],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?;
            for row in rows {
                let (outcome, n) = row?;
                counts[Outcome::from_code(outcome).code() as usize] += n as u64;
            }
            Ok(counts)
        })
    }

    fn mark_called(&self, customer: &str, by: &str, at_ms: u64) -> Result<bool, CustomerError> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "UPDATE customers SET called_at_ms = ?2, called_by = ?3 WHERE customer = ?1",
            params![customer, at_ms as i64, by],
        )
        .map(|n| n > 0)
        .map_err(|e| self.error(e))
    }

    fn delete(&self, customer: &str, _live: &[String]) -> Result<Erased, CustomerError> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let conversation_ids: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT conversation_id FROM contacts WHERE customer = ?1")
                .map_err(|e| self.error(e))?;
            stmt.query_map([customer], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.error(e))?
        };
        let contacts = tx
            .execute("DELETE FROM contacts WHERE customer = ?1", [customer])
            .map_err(|e| self.error(e))?;
        tx.execute("DELETE FROM customers WHERE customer = ?1", [customer])
            .map_err(|e| self.error(e))?;
        tx.commit().map_err(|e| self.error(e))?;
        self.scrub(&conn)?;
        Ok(Erased {
            contacts,
            conversation_ids,
        })
    }

    fn apply_retention(&self, before_ms: u64) -> Result<usize, CustomerError> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let customers: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT DISTINCT customer FROM contacts WHERE ended_ms < ?1")
                .map_err(|e| self.error(e))?;
            stmt.query_map([before_ms as i64], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.error(e))?
        };
        let deleted = tx
            .execute(
                "DELETE FROM contacts WHERE ended_ms < ?1",
                [before_ms as i64],
            )
            .map_err(|e| self.error(e))?;
        for customer in customers.iter().filter(|c| !c.is_empty()) {
            Self::refresh(&tx, customer).map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))?;
        if deleted > 0 {
            self.scrub(&conn)?;
        }
        Ok(deleted)
    }

    fn stats(&self) -> Result<(u64, u64, u64), CustomerError> {
        let (customers, contacts) = self.with_reader(|conn| {
            let customers: i64 =
                conn.query_row("SELECT COUNT(*) FROM customers", [], |r| r.get(0))?;
            let contacts: i64 =
                conn.query_row("SELECT COUNT(*) FROM contacts", [], |r| r.get(0))?;
            Ok((customers as u64, contacts as u64))
        })?;
        let size = ["", "-wal"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{}{s}", self.path.display())).ok())
            .map(|m| m.len())
            .sum();
        Ok((customers, contacts, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(
        customer: &str,
        conv: &str,
        ended_ms: u64,
        outcome: Outcome,
        lowest: f32,
    ) -> Contact {
        Contact {
            customer: customer.into(),
            conversation_id: conv.into(),
            tenant: "acme".into(),
            queue: "care".into(),
            agent_id: "a1".into(),
            started_ms: ended_ms - 60_000,
            ended_ms,
            final_score: lowest / 2.0,
            lowest_score: lowest,
            alert_events: 1,
            emotions: vec!["anger".into(), "sadness".into()],
            outcome,
        }
    }

    const DAY: u64 = 86_400_000;

    #[test]
    fn silent_list_ranks_bad_endings_and_forgets_called_and_returning_customers() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteCustomerStore::open(&dir.path().join("c.sqlite3")).unwrap();
        let t0 = 100 * DAY;
        store
            .record(&[
                contact("a", "a1", t0, Outcome::Negative, -0.5),
                contact("a", "a2", t0 + DAY, Outcome::Resigned, -0.7),
                contact("b", "b1", t0, Outcome::Negative, -0.3),
                contact("c", "c1", t0, Outcome::Ok, 0.2),
                contact("d", "d1", t0 + 9 * DAY, Outcome::Resigned, -0.9),
            ])
            .unwrap();
        // Recording the same contact again changes nothing.
        store
            .record(&[contact("a", "a1", t0, Outcome::Negative, -0.5)])
            .unwrap();
        let q = SilentQuery {
            tenants: vec![],
            as_of_ms: t0 + 8 * DAY,
            silent_after: Duration::from_millis(7 * DAY),
            limit: 10,
            offset: 0,
        };
        let page = store.silent(&q).unwrap();
        let names: Vec<&str> = page.customers.iter().map(|c| c.customer.as_str()).collect();
        // a: 2 bad + 0.7 + 1 (resigned); b: 1 + 0.3; c ended ok; d too recent.
        assert_eq!(names, ["a", "b"], "{page:?}");
        assert_eq!(page.total, 2);
        let a = &page.customers[0];
        assert_eq!((a.contacts, a.bad_contacts), (2, 2));
        assert_eq!(a.last.conversation_id, "a2");
        assert!((a.rank - 3.7).abs() < 1e-6, "{}", a.rank);
        // Called back: off the list until the next contact.
        assert!(store.mark_called("a", "sup-1", t0 + 8 * DAY).unwrap());
        assert!(!store.mark_called("nobody", "sup-1", t0).unwrap());
        let names: Vec<String> = (store.silent(&q).unwrap().customers.into_iter())
            .map(|c| c.customer)
            .collect();
        assert_eq!(names, ["b"]);
        // b came back and it went well: not silent any more.
        store
            .record(&[contact("b", "b2", t0 + 2 * DAY, Outcome::Ok, 0.1)])
            .unwrap();
        assert!(store.silent(&q).unwrap().customers.is_empty());
        let other = SilentQuery {
            tenants: vec!["other".into()],
            as_of_ms: t0 + 30 * DAY,
            ..q.clone()
        };
        assert_eq!(store.silent(&other).unwrap().total, 0);
        assert_eq!(store.recent("a", 5).unwrap()[0].conversation_id, "a2");
    }

    #[test]
    fn delete_and_retention_leave_nothing_of_the_customer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let store = SqliteCustomerStore::open(&path).unwrap();
        let t0 = 100 * DAY;
        let erased_id = "0123456789abcdef0123456789abcdef";
        store
            .record(&[
                contact(erased_id, "conv-erased-1", t0, Outcome::Negative, -0.5),
                contact(
                    erased_id,
                    "conv-erased-2",
                    t0 + DAY,
                    Outcome::Resigned,
                    -0.6,
                ),
                contact("kept", "k1", t0, Outcome::Negative, -0.5),
                contact("kept", "k2", t0 + 20 * DAY, Outcome::Ok, 0.5),
            ])
            .unwrap();
        // Whose conversations a cluster erasure names (by handle): that customer only.
        let named = ["conv-erased-2".to_string(), "live-elsewhere".to_string()];
        assert_eq!(store.customers_of(&named).unwrap(), [erased_id]);
        assert!(store.customers_of(&[]).unwrap().is_empty());
        let erased = store.delete(erased_id, &[]).unwrap();
        assert_eq!(erased.contacts, 2);
        assert_eq!(erased.conversation_ids.len(), 2);
        assert!(store.recent(erased_id, 5).unwrap().is_empty());
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            for needle in [erased_id.as_bytes(), b"conv-erased-1"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} still in a file",
                    String::from_utf8_lossy(needle)
                );
            }
        }
        // Retention: k1 goes, kept's row is recomputed from k2 (ended ok).
        assert_eq!(store.apply_retention(t0 + DAY).unwrap(), 1);
        let kept = store.recent("kept", 5).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(store.stats().unwrap().0, 1);
        assert_eq!(store.apply_retention(t0 + 30 * DAY).unwrap(), 1);
        assert_eq!(store.stats().unwrap().0, 0);
    }
}
