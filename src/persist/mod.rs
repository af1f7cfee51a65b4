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
    /// Leaves no earlier version of a deleted or rewritten conversation in the store's files
    /// (an erasure): checkpoints and truncates the write-ahead log.
    fn scrub(&self) -> Result<(), StateError>;
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

/// How far before a conversation's last saved turn its alert events are read back (clock steps
/// between the turn's and the event's timestamps).
const RECONCILE_MARGIN_MS: u64 = 2_000;

/// Puts the saved conversations right with the alert log, which is never behind them: a kill -9
/// loses up to one persist interval of state, but every alert event published before it is in
/// the log. For each saved conversation, its events from shortly before its last saved turn on
/// are applied in sequence order (idempotent: what the snapshot already knew changes nothing),
/// so an incident raised in the lost interval stays open under its alert id (and later
/// resolves under it), one resolved in it is closed, and cooldowns hold. Blocking (reads the
/// log). Returns how many conversations changed.
///
/// Not covered: a conversation whose first save never happened (it comes back from nothing:
/// its incidents stay in the log, the conversation starts afresh), and the rolling scores of the
/// lost interval (the turns' scores are not in the log).
pub fn reconcile(
    saved: &mut SavedState,
    log: &dyn crate::alerts::AlertLog,
) -> Result<usize, crate::alerts::log::LogError> {
    use std::collections::HashMap;
    let Some(since) = saved
        .conversations
        .iter()
        .map(|(_, c)| c.updated_at_ms().saturating_sub(RECONCILE_MARGIN_MS))
        .min()
    else {
        return Ok(0);
    };
    let index: HashMap<String, usize> = (saved.conversations.iter().enumerate())
        .map(|(i, (id, _))| (id.clone(), i))
        .collect();
    let mut changed = vec![false; saved.conversations.len()];
    let mut after = 0;
    loop {
        let page = log.query(&crate::alerts::log::Query {
            since: Some(std::time::UNIX_EPOCH + Duration::from_millis(since)),
            after_sequence: Some(after),
            limit: 1_000,
            ..Default::default()
        })?;
        let Some(last) = page.last() else { break };
        after = last.sequence;
        for alert in &page {
            let Some(&i) = index.get(&alert.conversation_id) else {
                continue;
            };
            let Some(event) = logged_event(alert) else {
                continue;
            };
            let snapshot = &mut saved.conversations[i].1;
            if event.at_ms + RECONCILE_MARGIN_MS >= snapshot.updated_at_ms() {
                changed[i] |= snapshot.adopt(&event);
            }
        }
    }
    Ok(changed.into_iter().filter(|c| *c).count())
}

/// The incident event a logged alert records; None for acknowledgements and unknown kinds.
fn logged_event(a: &crate::pb::Alert) -> Option<crate::alerts::LoggedEvent> {
    use crate::alerts::AlertState;
    use crate::pb::AlertState as Wire;
    let state = match Wire::try_from(a.state).ok()? {
        Wire::Raised => AlertState::Raised,
        Wire::Escalated => AlertState::Escalated,
        Wire::Resolved => AlertState::Resolved,
        _ => return None,
    };
    let at = a.created_at.as_ref()?;
    Some(crate::alerts::LoggedEvent {
        alert_id: a.alert_id.clone(),
        kind: crate::domain::AlertKind::parse(&a.kind)?,
        state,
        severity: crate::grpc::convert::severity_from(a.severity)?,
        at_ms: (at.seconds.max(0) as u64) * 1000 + (at.nanos.max(0) as u64) / 1_000_000,
    })
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
    /// Save now, then scrub ([`StateStore::scrub`]); answer with how that went.
    Scrub(mpsc::Sender<Result<(), StateError>>),
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
                        Some(Command::Scrub(done)) => {
                            let _ = done.send(store.scrub());
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

    /// What handlers keep to ask for a save and scrub (an erasure) while the persister runs.
    pub fn handle(&self) -> PersisterHandle {
        PersisterHandle {
            commands: std::sync::Mutex::new(self.commands.clone()),
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

/// Asks the running persister to save what changed and scrub the store's files.
pub struct PersisterHandle {
    commands: std::sync::Mutex<mpsc::Sender<Command>>,
}

impl PersisterHandle {
    /// Saves now (removals included), then scrubs; blocking. Ok when the persister has stopped
    /// (its last save already ran).
    pub fn save_and_scrub(&self) -> Result<(), StateError> {
        let (done, wait) = mpsc::channel();
        let sent = (self.commands.lock().unwrap_or_else(|p| p.into_inner()))
            .send(Command::Scrub(done))
            .is_ok();
        match sent {
            true => wait.recv().unwrap_or(Ok(())),
            false => Ok(()),
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
