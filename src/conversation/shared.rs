//! The conversation store's seam to state that replicas share (cluster mode, `docs/cluster.md`).
//!
//! Without a shared store, the store's memory is the truth and a turn is final once applied.
//! With one ([`ConversationStore::with_shared`]), a turn is final only once its conversation is
//! committed there: [`ConversationStore::settle`] applies the turns that are ready (one commit at
//! a time per conversation, in turn order), commits the conversation's snapshot with
//! compare-and-set against the revision this replica last saw, and only then hands the alert
//! events to the sink and the results to their waiters. On a conflict (another replica committed
//! the conversation since: a client moved), it reads the committed state, applies its turns again
//! on top of it with the scores it already has (no second inference), answers those the state
//! already holds as duplicates, and commits again. A turn whose commit cannot be made is answered
//! UNAVAILABLE and the conversation is dropped from memory (the next turn reads it again), so no
//! answer is ever given from state that was not kept.
//!
//! Alert events are committed with the state that decided them (its outbox). Whoever reads a
//! committed state whose outbox is recent hands those events to the sink again: the alert log
//! drops a re-published event by its id, and a replica that died between commit and publish
//! loses none.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::fleet::FleetSummary;
use super::state::{Conversation, PendingTurn};
use super::{
    Completion, Context, ConversationSnapshot, ConversationStore, ConversationSummary,
    ConversationView, Speaker, TextSignal, visible,
};
use crate::alerts::{Alert, HandoffBrief};
use crate::error::{InferenceError, RequestError};
use crate::inference::Scores;

/// A conversation's version in the shared store; 0 when it was never stored.
pub type Revision = u64;

/// A conversation as committed: its id, its snapshot and the alert events its last commit
/// decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedState {
    pub snapshot: ConversationSnapshot,
    pub outbox: Vec<Alert>,
    /// So that a replica watching every conversation ([`SharedConversations::watch`]) knows
    /// which one a change is.
    pub conversation_id: String,
}

/// A change to the shared conversations, as a replica watching all of them sees it.
#[derive(Debug)]
pub enum SharedChange {
    /// A conversation as committed at `revision`.
    Committed {
        key: String,
        revision: Revision,
        summary: Box<FleetSummary>,
    },
    /// A conversation ended: its key removed at `revision` (the revision it had, or after).
    Removed { key: String, revision: Revision },
    /// The watch starts again (after an interruption): what it replays next is all there is.
    Restarted,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SharedError {
    #[error("the conversation was changed by another replica")]
    Conflict,
    #[error("{0}")]
    Unavailable(String),
}

/// Where replicas keep their conversations (cluster: a JetStream key-value bucket).
pub trait SharedConversations: Send + Sync {
    /// The conversation as last committed (none if never stored, ended or expired), and the
    /// revision to commit against.
    fn load(
        &self,
        conversation_id: &str,
    ) -> BoxFuture<'static, Result<(Option<SharedState>, Revision), SharedError>>;
    /// Stores `state` if the stored revision is still `expected`; the new revision.
    fn commit(
        &self,
        conversation_id: &str,
        state: &SharedState,
        expected: Revision,
    ) -> BoxFuture<'static, Result<Revision, SharedError>>;
    /// One quick read that tells whether commits can be made now (readiness).
    fn probe(&self) -> BoxFuture<'static, Result<(), SharedError>>;
    /// Notes, before a commit that carries alert events, that they may be unpublished: if this
    /// replica dies before publishing them, a sweeper ([`ConversationStore::sweep_outboxes`]) on
    /// any replica does. The mark's revision, to clear it with.
    fn mark_outbox(
        &self,
        conversation_id: &str,
    ) -> BoxFuture<'static, Result<Revision, SharedError>>;
    /// Clears a mark once its events are published (kept if marked again since).
    fn clear_outbox(&self, conversation_id: &str, mark: Revision) -> BoxFuture<'static, ()>;
    /// Marks at least `age` old: (conversation id, mark).
    fn stale_outboxes(
        &self,
        age: std::time::Duration,
    ) -> BoxFuture<'static, Result<Vec<(String, Revision)>, SharedError>>;
    /// Removes the conversation if the stored revision is still `expected`.
    fn remove(
        &self,
        conversation_id: &str,
        expected: Revision,
    ) -> BoxFuture<'static, Result<(), SharedError>>;
    /// Calls `apply` with every conversation as committed (the latest of each, then every
    /// change, summarised: [`FleetSummary`]) until it returns false; after an interruption,
    /// [`SharedChange::Restarted`] and everything again. Conversations that expire (the TTL)
    /// go without a change.
    fn watch(&self, apply: Box<dyn Fn(SharedChange) -> bool + Send + Sync>);
}

/// What applying a scored turn again on another state needs.
pub(super) struct Reapply {
    turn_id: u64,
    speaker: Speaker,
    acoustic_valence: Option<f32>,
    signal: Option<TextSignal>,
    scores: Scores,
}

impl Reapply {
    pub(super) fn of(turn_id: u64, pending: &PendingTurn, scores: &Scores) -> Self {
        Self {
            turn_id,
            speaker: pending.speaker,
            acoustic_valence: pending.acoustic_valence,
            signal: pending.signal.clone(),
            scores: scores.clone(),
        }
    }

    fn pending(&self) -> PendingTurn {
        PendingTurn {
            speaker: self.speaker,
            acoustic_valence: self.acoustic_valence,
            signal: self.signal.clone(),
            outcome: None,
            waiters: Vec::new(),
        }
    }
}

/// Conflicts one commit goes through before its turns are answered UNAVAILABLE.
const MAX_REBASES: usize = 8;
/// An outbox older than this is taken as published (the alert log forgets ids after 10 min);
/// outbox marks expire after it too.
pub const OUTBOX_WINDOW: std::time::Duration = std::time::Duration::from_secs(5 * 60);
const OUTBOX_REPUBLISH_MS: u64 = OUTBOX_WINDOW.as_millis() as u64;
/// A mark this old whose events were not published is the sweeper's (a live replica publishes
/// and clears its marks within milliseconds; a commit is retried for at most the op timeout).
pub const OUTBOX_SWEEP_AGE: std::time::Duration = std::time::Duration::from_secs(15);

/// What putting a completion's turns on the committed state gave.
enum Rebased {
    /// Commit this.
    Commit(Box<ConversationSnapshot>),
    /// The committed state already holds every turn (or refuses them): nothing to commit.
    Nothing,
    /// The conversation left memory meanwhile.
    Gone,
}

/// Hands alert events to the sink; resolves to whether all of them are durable.
type Enqueue<'a> = &'a (dyn Fn(&[Alert]) -> BoxFuture<'static, bool> + Sync);

impl ConversationStore {
    /// Completes a turn and makes it final: records its outcome, applies every turn of the
    /// conversation that is ready (in turn order), commits them where the conversation is
    /// decided (the shared store, if any), and hands their alert events to `enqueue` in the
    /// order they were decided; resolves once `enqueue`'s futures have. The caller then
    /// delivers the results ([`Completion::deliver`]).
    pub async fn settle(
        &self,
        conversation_id: &str,
        turn_id: u64,
        outcome: Result<Scores, InferenceError>,
        enqueue: Enqueue<'_>,
    ) -> Completion {
        let Some(shared) = self.shared.clone() else {
            let (done, published) =
                self.complete_with(conversation_id, turn_id, outcome, Instant::now(), enqueue);
            published.await;
            return done;
        };
        let mut lock = {
            let mut shard = self.shard(conversation_id);
            let Some(conv) = shard.get_mut(conversation_id) else {
                return Completion::default();
            };
            if let Some(pending) = conv.pending.get_mut(&turn_id) {
                pending.outcome = Some(outcome);
            }
            conv.commit.clone()
        };
        // One commit at a time per conversation, in the order turns completed (the lock is fair).
        let (mut revision, mut done, snapshot) = loop {
            let revision = lock.clone().lock_owned().await;
            let mut shard = self.shard(conversation_id);
            let Some(conv) = shard.get_mut(conversation_id) else {
                return Completion::default();
            };
            if !Arc::ptr_eq(&conv.commit, &lock) {
                // Dropped from memory and admitted again while this waited.
                lock = conv.commit.clone();
                continue;
            }
            let mut done = Completion::default();
            self.apply_ready(conv, conversation_id, Instant::now(), &mut done);
            let scored = done.results.iter().any(|a| a.again.is_some());
            break (revision, done, scored.then(|| conv.snapshot()));
        };
        let Some(mut snapshot) = snapshot else {
            return done; // nothing scored (only failures): nothing to decide
        };
        let mut republish = Vec::new();
        let mut rebases = 0;
        let mut mark = None;
        loop {
            let state = SharedState {
                snapshot,
                outbox: done.alerts.clone(),
                conversation_id: conversation_id.to_string(),
            };
            if !state.outbox.is_empty() && mark.is_none() {
                match shared.mark_outbox(conversation_id).await {
                    Ok(m) => mark = Some(m),
                    Err(e) => return self.abandon(conversation_id, &lock, done, e),
                }
            }
            let error = match shared.commit(conversation_id, &state, *revision).await {
                Ok(r) => {
                    *revision = r;
                    break;
                }
                Err(SharedError::Conflict) if rebases < MAX_REBASES => {
                    rebases += 1;
                    self.metrics.conflicts.inc();
                    match shared.load(conversation_id).await {
                        Ok((committed, r)) => {
                            *revision = r;
                            let committed = committed.map(|c| {
                                if recent(c.snapshot.updated_at_ms()) {
                                    republish.extend(c.outbox);
                                }
                                c.snapshot
                            });
                            match self.rebase(conversation_id, &lock, committed, &mut done) {
                                Rebased::Commit(s) => {
                                    snapshot = *s;
                                    continue;
                                }
                                Rebased::Nothing => {
                                    done.alerts.clear();
                                    break;
                                }
                                Rebased::Gone => SharedError::Unavailable(
                                    "the conversation left memory while it was committed".into(),
                                ),
                            }
                        }
                        Err(e) => e,
                    }
                }
                Err(SharedError::Conflict) => SharedError::Unavailable(format!(
                    "{MAX_REBASES} replicas committed the conversation at the same time"
                )),
                Err(e) => e,
            };
            return self.abandon(conversation_id, &lock, done, error);
        }
        let (again, decided) = (enqueue(&republish), enqueue(&done.alerts));
        let durable = again.await & decided.await;
        drop(revision);
        // Events held in a backlog (the stream unreachable) die with this process: the mark
        // stays for the sweeper.
        if let Some(mark) = mark.filter(|_| durable) {
            tokio::spawn(shared.clear_outbox(conversation_id, mark));
        }
        done
    }

    /// Puts a completion's scored turns on the committed state `committed` (none: ended or
    /// expired there), which replaces the conversation in memory.
    fn rebase(
        &self,
        conversation_id: &str,
        lock: &Arc<tokio::sync::Mutex<Revision>>,
        committed: Option<ConversationSnapshot>,
        done: &mut Completion,
    ) -> Rebased {
        let now = Instant::now();
        let mut shard = self.shard(conversation_id);
        let Some(conv) = shard
            .get_mut(conversation_id)
            .filter(|c| Arc::ptr_eq(&c.commit, lock))
        else {
            return Rebased::Gone;
        };
        let mut base = match committed.map(Conversation::from_snapshot) {
            Some(Some(base)) => base,
            Some(None) => {
                tracing::warn!(conversation = %conversation_id, "the committed conversation does not hold together; starting it again");
                Conversation::new(conv.touched)
            }
            None => Conversation::new(conv.touched),
        };
        let tenant_conflict = !base.context.tenant.is_empty()
            && !conv.context.tenant.is_empty()
            && base.context.tenant != conv.context.tenant;
        if base.context.is_empty() {
            base.context = conv.context.clone();
        }
        let known = base.last_turn_id;
        base.pending = std::mem::take(&mut conv.pending);
        // Turns still being scored here that the committed state already holds (a client
        // re-sending a conversation another replica scored): answered as committed now, never
        // applied a second time.
        if let Some(last) = known {
            let stale: Vec<u64> = base.pending.range(..=last).map(|(&id, _)| id).collect();
            for turn_id in stale {
                let pending = base.pending.remove(&turn_id).expect("listed above");
                let (outcome, duplicate) =
                    match base.history.binary_search_by_key(&turn_id, |t| t.turn_id) {
                        Ok(i) => (Ok(base.history[i].clone()), true),
                        Err(_) => (
                            Err(InferenceError::Rejected(RequestError::OutOfOrder {
                                conversation_id: conversation_id.to_string(),
                                turn_id,
                                last,
                            })),
                            false,
                        ),
                    };
                done.results.push(super::Applied {
                    waiters: pending.waiters,
                    outcome,
                    duplicate,
                    again: None,
                });
            }
        }
        base.touched = conv.touched;
        base.commit = conv.commit.clone();
        base.dirty = true;
        let mut alerts = Vec::new();
        let mut applied_any = false;
        for applied in done.results.iter_mut() {
            let Some(again) = applied.again.as_ref() else {
                continue;
            };
            applied.duplicate = false;
            if tenant_conflict {
                applied.outcome = Err(InferenceError::Rejected(RequestError::TenantConflict {
                    conversation_id: conversation_id.to_string(),
                }));
                continue;
            }
            if let Some(last) = known.filter(|&last| again.turn_id <= last) {
                applied.outcome = match base
                    .history
                    .binary_search_by_key(&again.turn_id, |t| t.turn_id)
                {
                    Ok(i) => {
                        applied.duplicate = true;
                        Ok(base.history[i].clone())
                    }
                    Err(_) => Err(InferenceError::Rejected(RequestError::OutOfOrder {
                        conversation_id: conversation_id.to_string(),
                        turn_id: again.turn_id,
                        last,
                    })),
                };
                continue;
            }
            let (scored, decided) = base.apply(
                conversation_id,
                again.turn_id,
                &mut again.pending(),
                again.scores.clone(),
                &self.settings,
                now,
            );
            applied.outcome = Ok(scored);
            alerts.extend(decided);
            applied_any = true;
        }
        base.last_turn_id = [
            known,
            base.history.back().map(|t| t.turn_id),
            base.pending.keys().next_back().copied(),
        ]
        .into_iter()
        .flatten()
        .max();
        done.alerts = alerts;
        *conv = base;
        match applied_any {
            true => Rebased::Commit(Box::new(conv.snapshot())),
            false => Rebased::Nothing,
        }
    }

    /// A commit that could not be made: its turns are answered UNAVAILABLE, and the
    /// conversation (whose memory now holds turns that were not kept) leaves memory; the turns
    /// still in flight there are answered the same.
    fn abandon(
        &self,
        conversation_id: &str,
        lock: &Arc<tokio::sync::Mutex<Revision>>,
        mut done: Completion,
        error: SharedError,
    ) -> Completion {
        let message = error.to_string();
        tracing::warn!(conversation = %conversation_id, error = %message, "conversation state not committed; its turns are answered UNAVAILABLE");
        let unavailable = || InferenceError::Unavailable(message.clone());
        let removed = {
            let mut shard = self.shard(conversation_id);
            match shard.get(conversation_id) {
                Some(c) if Arc::ptr_eq(&c.commit, lock) => shard.remove(conversation_id),
                _ => None,
            }
        };
        if let Some(conv) = removed {
            self.forget(1);
            for (_, pending) in conv.pending {
                for waiter in pending.waiters {
                    let _ = waiter.send((Err(unavailable()), false));
                }
            }
        }
        for applied in &mut done.results {
            if applied.outcome.is_ok() {
                applied.outcome = Err(unavailable());
                applied.duplicate = false;
            }
        }
        done.alerts.clear();
        done
    }

    /// Whether the shared store answers now (none without one): readiness in cluster mode.
    pub async fn probe_shared(&self) -> Option<Result<(), SharedError>> {
        let shared = self.shared.clone()?;
        Some(shared.probe().await)
    }

    /// A conversation's state as decided: with a shared store, as last committed there (any
    /// replica's turns); else [`Self::view`].
    pub async fn latest_view(
        &self,
        conversation_id: &str,
        tenants: &[String],
    ) -> Result<Option<ConversationView>, RequestError> {
        self.latest(conversation_id, tenants, |c| c.view(conversation_id))
            .await
    }

    /// The hand-off brief of a conversation as decided (see [`Self::latest_view`]), with the
    /// conversation's context.
    pub async fn latest_brief(
        &self,
        conversation_id: &str,
        tenants: &[String],
    ) -> Result<Option<(Context, HandoffBrief)>, RequestError> {
        self.latest(conversation_id, tenants, |c| {
            (c.context.clone(), c.brief(&self.settings))
        })
        .await
    }

    async fn latest<T>(
        &self,
        conversation_id: &str,
        tenants: &[String],
        read: impl FnOnce(&Conversation) -> T,
    ) -> Result<Option<T>, RequestError> {
        let Some(shared) = &self.shared else {
            let shard = self.shard(conversation_id);
            return Ok(shard
                .get(conversation_id)
                .filter(|c| visible(c, tenants))
                .map(read));
        };
        let (committed, _) = shared
            .load(conversation_id)
            .await
            .map_err(|e| RequestError::StateUnavailable(e.to_string()))?;
        Ok(committed
            .and_then(|c| Conversation::from_snapshot(c.snapshot))
            .filter(|c| visible(c, tenants))
            .map(|c| read(&c)))
    }

    /// Ends a conversation wherever it is decided: with a shared store, removed there (from any
    /// replica) and from memory, after handing its recent outbox to `enqueue` (the events of a
    /// replica that died before publishing them); else [`Self::end`].
    pub async fn end_latest(
        &self,
        conversation_id: &str,
        tenants: &[String],
        enqueue: Enqueue<'_>,
    ) -> Result<ConversationSummary, RequestError> {
        let Some(shared) = &self.shared else {
            return self.end(conversation_id, tenants);
        };
        let unavailable = |e: SharedError| RequestError::StateUnavailable(e.to_string());
        for _ in 0..MAX_REBASES {
            if let Some(conv) = self.shard(conversation_id).get(conversation_id)
                && !conv.pending.is_empty()
            {
                return Err(RequestError::TurnsInFlight {
                    conversation_id: conversation_id.to_string(),
                    pending: conv.pending.len(),
                });
            }
            let (committed, revision) = shared.load(conversation_id).await.map_err(unavailable)?;
            let mut outbox = Vec::new();
            let conv = committed
                .and_then(|c| {
                    if recent(c.snapshot.updated_at_ms()) {
                        outbox = c.outbox;
                    }
                    Conversation::from_snapshot(c.snapshot)
                })
                .filter(|c| visible(c, tenants))
                .ok_or_else(|| RequestError::UnknownConversation(conversation_id.to_string()))?;
            match shared.remove(conversation_id, revision).await {
                Ok(()) => {
                    enqueue(&outbox).await;
                    // Removed here, so recorded here: once for the fleet.
                    if let Some(contact) = self.contact_of(conversation_id, &conv) {
                        self.customers.as_ref().expect("a contact").record(contact);
                    }
                    let mut shard = self.shard(conversation_id);
                    if shard
                        .get(conversation_id)
                        .is_some_and(|c| c.pending.is_empty())
                    {
                        shard.remove(conversation_id);
                        drop(shard);
                        self.forget(1);
                    }
                    return Ok(conv.summary(conversation_id));
                }
                Err(SharedError::Conflict) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable(SharedError::Unavailable(format!(
            "the conversation changed {MAX_REBASES} times while it was ended"
        ))))
    }
}

impl ConversationStore {
    /// With a shared store: ends there each conversation this replica evicted idle whose
    /// committed state is idle too (one that went on on another replica is left to it), and
    /// records it as its customer's contact; the removal is a compare-and-set, so one replica
    /// records it. With the fleet view, the same for the fleet's conversations of which no
    /// change was seen for the TTL: one whose last replica died before evicting it would
    /// otherwise expire from the bucket unrecorded. Returns how many ended.
    pub async fn end_idle_shared(&self) -> usize {
        let Some(shared) = &self.shared else {
            return 0;
        };
        let mut idled = std::mem::take(&mut *self.idled.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(fleet) = &self.fleet {
            // Bounded per sweep; the oldest first (the bucket expires them first).
            for id in fleet.idle(self.settings.ttl, 256) {
                if !idled.contains(&id) {
                    idled.push(id);
                }
            }
        }
        let ttl_ms = self.settings.ttl.as_millis() as u64;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut ended = 0;
        for id in idled {
            let (committed, revision) = match shared.load(&id).await {
                Ok(loaded) => loaded,
                Err(e) => {
                    tracing::warn!(error = %e, conversation_id = %id, "ending an idle conversation in the shared store");
                    continue;
                }
            };
            let Some(conv) = committed
                .filter(|c| now.saturating_sub(c.snapshot.updated_at_ms()) >= ttl_ms)
                .and_then(|c| Conversation::from_snapshot(c.snapshot))
            else {
                continue;
            };
            match shared.remove(&id, revision).await {
                Ok(()) => {
                    ended += 1;
                    if let Some(contact) = self.contact_of(&id, &conv) {
                        self.customers.as_ref().expect("a contact").record(contact);
                    }
                }
                // Changed meanwhile (a new turn) or ended elsewhere: not idle after all.
                Err(SharedError::Conflict) => {}
                Err(e) => {
                    tracing::warn!(error = %e, conversation_id = %id, "ending an idle conversation in the shared store")
                }
            }
        }
        ended
    }

    /// Right to erasure: forgets the customer's (a pseudonym) live conversations in this
    /// process ([`Self::forget_customer`]) and, with a shared store, removes from it those and
    /// the ones the fleet view knows on other replicas (the others forget their copies when
    /// they apply the erasure). Returns their ids.
    pub async fn forget_customer_everywhere(
        &self,
        customer: &str,
    ) -> Result<Vec<String>, RequestError> {
        let mut ids = self.forget_customer(customer)?;
        let Some(shared) = &self.shared else {
            return Ok(ids);
        };
        if let Some(fleet) = &self.fleet {
            ids.extend(fleet.of_customer(customer));
            ids.sort();
            ids.dedup();
        }
        let unavailable = |e: SharedError| RequestError::StateUnavailable(e.to_string());
        for id in &ids {
            for attempt in 0..MAX_REBASES {
                let (committed, revision) = shared.load(id).await.map_err(unavailable)?;
                let theirs = committed
                    .and_then(|c| Conversation::from_snapshot(c.snapshot))
                    .is_some_and(|c| c.context.customer == customer);
                if !theirs {
                    break;
                }
                match shared.remove(id, revision).await {
                    Ok(()) => break,
                    Err(SharedError::Conflict) if attempt + 1 < MAX_REBASES => continue,
                    Err(e) => return Err(unavailable(e)),
                }
            }
        }
        Ok(ids)
    }

    /// Hands a conversation to `agent_id` by call, wherever it is decided, and hands the
    /// guidance this decides (the brief, a mood that turned before) to `enqueue`; returns the
    /// conversation's context and brief as they stand after. With a shared store the change is
    /// committed there first (with the guidance as its outbox, so a replica that dies before
    /// publishing loses none), retried on a conflict with a turn committed meanwhile.
    pub async fn hand_off(
        &self,
        conversation_id: &str,
        agent_id: &str,
        tenants: &[String],
        enqueue: Enqueue<'_>,
    ) -> Result<(Context, HandoffBrief), RequestError> {
        let unknown = || RequestError::UnknownConversation(conversation_id.to_string());
        let not_yet = |pending: usize| RequestError::TurnsInFlight {
            conversation_id: conversation_id.to_string(),
            pending,
        };
        let Some(shared) = &self.shared else {
            let (published, out) = {
                let mut shard = self.shard(conversation_id);
                let conv = shard
                    .get_mut(conversation_id)
                    .filter(|c| visible(c, tenants))
                    .ok_or_else(unknown)?;
                if conv.history.is_empty() {
                    return Err(not_yet(conv.pending.len()));
                }
                let guidance = conv
                    .hand_off(conversation_id, agent_id, &self.settings)
                    .unwrap_or_default();
                // Handed over under the conversation's lock: after every event its turns
                // decided before, ahead of any they decide after.
                let published = enqueue(&guidance);
                (
                    published,
                    (conv.context.clone(), conv.brief(&self.settings)),
                )
            };
            published.await;
            return Ok(out);
        };
        let unavailable = |e: SharedError| RequestError::StateUnavailable(e.to_string());
        for _ in 0..MAX_REBASES {
            let (committed, revision) = shared.load(conversation_id).await.map_err(unavailable)?;
            let committed = committed.ok_or_else(unknown)?;
            // What the last commit decided goes out before its outbox is replaced.
            if recent(committed.snapshot.updated_at_ms()) {
                enqueue(&committed.outbox).await;
            }
            let mut conv = Conversation::from_snapshot(committed.snapshot)
                .filter(|c| visible(c, tenants))
                .ok_or_else(unknown)?;
            if conv.history.is_empty() {
                return Err(not_yet(0));
            }
            let changed = conv.hand_off(conversation_id, agent_id, &self.settings);
            let out = (conv.context.clone(), conv.brief(&self.settings));
            let Some(guidance) = changed else {
                return Ok(out); // already theirs: nothing to commit or tell
            };
            let state = SharedState {
                snapshot: conv.snapshot(),
                outbox: guidance,
                conversation_id: conversation_id.to_string(),
            };
            let mark = match state.outbox.is_empty() {
                true => None,
                false => Some(
                    shared
                        .mark_outbox(conversation_id)
                        .await
                        .map_err(unavailable)?,
                ),
            };
            match shared.commit(conversation_id, &state, revision).await {
                Ok(_) => {
                    let durable = enqueue(&state.outbox).await;
                    if let Some(mark) = mark.filter(|_| durable) {
                        shared.clear_outbox(conversation_id, mark).await;
                    }
                    return Ok(out);
                }
                Err(SharedError::Conflict) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable(SharedError::Unavailable(format!(
            "the conversation changed {MAX_REBASES} times while it was handed off"
        ))))
    }
}

impl ConversationStore {
    /// The sweeper (cluster mode, every few seconds on every replica): for each conversation
    /// marked as committing alert events [`OUTBOX_SWEEP_AGE`] ago and not cleared (its replica
    /// died between commit and publish, and nobody has read the state since), hands the
    /// committed outbox to `enqueue` (the stream drops what it already has) and clears the
    /// mark. Returns how many outboxes it handed over; none without a shared store.
    pub async fn sweep_outboxes(&self, enqueue: Enqueue<'_>) -> Result<usize, SharedError> {
        let Some(shared) = &self.shared else {
            return Ok(0);
        };
        let mut swept = 0;
        for (conversation_id, mark) in shared.stale_outboxes(OUTBOX_SWEEP_AGE).await? {
            let (committed, _) = shared.load(&conversation_id).await?;
            if let Some(c) = committed.filter(|c| recent(c.snapshot.updated_at_ms()))
                && !c.outbox.is_empty()
            {
                tracing::info!(conversation = %conversation_id, events = c.outbox.len(), "publishing a committed outbox its replica left");
                if !enqueue(&c.outbox).await {
                    continue; // still not durable: the mark stays
                }
                swept += 1;
            }
            shared.clear_outbox(&conversation_id, mark).await;
        }
        Ok(swept)
    }
}

fn recent(updated_at_ms: u64) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now.saturating_sub(updated_at_ms) < OUTBOX_REPUBLISH_MS
}
