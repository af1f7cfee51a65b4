//! Live conversation state that survives restarts: the [`StateStore`] seam, its embedded SQLite
//! implementation ([`sqlite::SqliteStateStore`]), and the [`Persister`] thread that saves what
//! changed every `state.persist_interval_ms`.
//!
//! Scoring never waits for it: a turn only marks its conversation changed; once per interval the
//! persister copies the changed conversations out of the store (each shard locked while its changed
//! conversations are copied) and writes them in one transaction on its own thread. A graceful
//! shutdown saves once more after the last turn; a kill -9 loses at most one interval of rolling
//! state, never an alert event (those are in the alert log before anyone sees them).
//!
//! The store is chosen once at start-up ([`open`]); the domain only sees the trait, so a
//! distributed implementation can stand beside this one.

pub mod sqlite;
pub mod wallclock;

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::StateConfig;
use crate::conversation::heatmap::HeatmapSnapshot;
use crate::conversation::{Changes, ConversationSnapshot, ConversationStore};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {message}")]
    Store { path: String, message: String },
}

/// Everything saved, as read back at start.
#[derive(Debug, Default)]
pub struct SavedState {
    pub conversations: Vec<(String, ConversationSnapshot)>,
    pub heatmap: Option<HeatmapSnapshot>,
    /// Saved entries that could not be read (another format version, a damaged row): skipped.
    pub unreadable: usize,
}

/// Where live conversation state is kept between runs.
pub trait StateStore: Send + Sync {
    fn load(&self) -> Result<SavedState, StateError>;
    /// Writes one batch atomically: changed conversations, removed ones, the heatmap if changed.
    fn save(&self, changes: &Changes, heatmap: Option<&HeatmapSnapshot>) -> Result<(), StateError>;
}

/// The store the configuration names, or none when `state.path` is empty.
pub fn open(config: &StateConfig) -> Result<Option<Arc<dyn StateStore>>, StateError> {
    if config.path.as_os_str().is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(sqlite::SqliteStateStore::open(
        &config.path,
    )?)))
}

/// Puts saved state back into `store`; returns how many conversations came back.
pub fn restore(saved: SavedState, store: &ConversationStore) -> usize {
    if let Some(heatmap) = saved.heatmap {
        store.heatmap().restore(heatmap);
    }
    if saved.unreadable > 0 {
        tracing::warn!(
            skipped = saved.unreadable,
            "saved conversations that could not be read were skipped"
        );
    }
    store.restore(saved.conversations, Instant::now())
}

enum Command {
    /// Save now, answer when written.
    Flush(mpsc::Sender<()>),
    Stop,
}

/// The thread that saves the conversation store's changes every interval.
pub struct Persister {
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl Persister {
    pub fn start(
        store: Arc<dyn StateStore>,
        conversations: Arc<ConversationStore>,
        interval: Duration,
        metrics: Metrics,
    ) -> Self {
        conversations.track_changes();
        let (commands, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("state-persister".into())
            .spawn(move || {
                loop {
                    let command = match rx.recv_timeout(interval) {
                        Ok(c) => Some(c),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => Some(Command::Stop),
                    };
                    save_once(&*store, &conversations, &metrics);
                    match command {
                        Some(Command::Flush(done)) => {
                            let _ = done.send(());
                        }
                        Some(Command::Stop) => break,
                        None => {}
                    }
                }
            })
            .expect("spawning the state persister thread");
        Self {
            commands,
            thread: Some(thread),
        }
    }

    /// Saves now and waits until it is written (blocking).
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.commands.send(Command::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Saves a last time and stops (blocking).
    pub fn stop(mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn save_once(store: &dyn StateStore, conversations: &ConversationStore, metrics: &Metrics) {
    let started = Instant::now();
    let changes = conversations.take_changes();
    let heatmap = conversations.heatmap().changed();
    if changes.is_empty() && heatmap.is_none() {
        return;
    }
    let copied = started.elapsed();
    match store.save(&changes, heatmap.as_ref()) {
        Ok(()) => {
            metrics.state_saved.inc_by(changes.upserts.len() as u64);
            metrics
                .state_save_seconds
                .observe(started.elapsed().as_secs_f64());
            tracing::debug!(
                conversations = changes.upserts.len(),
                removed = changes.removed.len(),
                copy_us = copied.as_micros() as u64,
                total_us = started.elapsed().as_micros() as u64,
                "state saved"
            );
        }
        Err(error) => {
            // Saved again at the next interval (with whatever changed since).
            metrics.state_save_errors.inc();
            tracing::error!(%error, "conversation state not saved; retrying next interval");
            conversations.unsaved(changes);
            if heatmap.is_some() {
                conversations.heatmap().mark_changed();
            }
        }
    }
}
