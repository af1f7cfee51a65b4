//! The embedded state store: one SQLite file (WAL) holding a row per live conversation (its
//! snapshot, postcard-encoded behind a format version byte) and the heatmap. Only the persister
//! thread writes it; it is read once, at start.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{SavedState, StateError, StateStore};
use crate::conversation::Changes;
use crate::conversation::heatmap::HeatmapSnapshot;

/// Bumped whenever the snapshot layout changes: rows of another version are skipped at load
/// (their conversations start afresh) instead of being misread.
const FORMAT: u8 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conversations (
    id   TEXT PRIMARY KEY,
    body BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heatmap (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    body BLOB NOT NULL
);
";

pub struct SqliteStateStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut out = vec![FORMAT];
    out.extend(postcard::to_stdvec(value)?);
    Ok(out)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    match body.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

impl SqliteStateStore {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let fail = |message: String| StateError::Store {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        // secure_delete: an ended or erased conversation's excerpts do not stay in free pages.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA secure_delete = ON;",
        )
        .and_then(|_| conn.execute_batch(SCHEMA))
        .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Store {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }
}

impl StateStore for SqliteStateStore {
    fn load(&self) -> Result<SavedState, StateError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut saved = SavedState::default();
        let mut stmt = conn
            .prepare("SELECT id, body FROM conversations")
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|e| self.error(e))?;
        for row in rows {
            let (id, body) = row.map_err(|e| self.error(e))?;
            match decode(&body) {
                Some(snapshot) => saved.conversations.push((id, snapshot)),
                None => saved.unreadable += 1,
            }
        }
        let heatmap: Option<Vec<u8>> = conn
            .query_row("SELECT body FROM heatmap WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.error(e))?;
        saved.heatmap = heatmap.and_then(|b| decode(&b));
        Ok(saved)
    }

    fn save(&self, changes: &Changes, heatmap: Option<&HeatmapSnapshot>) -> Result<(), StateError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        {
            let mut upsert = tx
                .prepare_cached("INSERT OR REPLACE INTO conversations (id, body) VALUES (?1, ?2)")
                .map_err(|e| self.error(e))?;
            for (id, snapshot) in &changes.upserts {
                let body = encode(snapshot).map_err(|e| self.error(e))?;
                upsert
                    .execute(params![id, body])
                    .map_err(|e| self.error(e))?;
            }
            let mut delete = tx
                .prepare_cached("DELETE FROM conversations WHERE id = ?1")
                .map_err(|e| self.error(e))?;
            for id in &changes.removed {
                delete.execute(params![id]).map_err(|e| self.error(e))?;
            }
            if let Some(h) = heatmap {
                let body = encode(h).map_err(|e| self.error(e))?;
                tx.execute(
                    "INSERT OR REPLACE INTO heatmap (id, body) VALUES (1, ?1)",
                    params![body],
                )
                .map_err(|e| self.error(e))?;
            }
        }
        tx.commit().map_err(|e| self.error(e))
    }

    fn scrub(&self) -> Result<(), StateError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        crate::alerts::log::truncate_wal(&conn)
            .map_err(|e| self.error(e))?
            .map_err(|e| self.error(e))
    }
}
