//! Conversation state: the one owner of every tracked conversation's rolling scores, alert state
//! and recent turns.
//!
//! A turn goes through two steps. [`ConversationStore::admit`] checks its order and de-duplicates
//! it (a re-send of a scored turn is answered from history; a re-send of a turn still being scored
//! joins it). Once scored, [`ConversationStore::settle`] applies it, always in turn order: a turn
//! scored before an earlier one of the same conversation waits for it. Admission hands out a
//! receiver that gets the turn's final result; that makes results come back in turn order however
//! many streams carry the conversation. With a shared store (cluster mode, [`shared`]) a turn is
//! final only once its conversation is committed there; this memory is then a cache.
//!
//! State is sharded behind plain mutexes, never held across an `.await`. Idle conversations are
//! evicted after the TTL; the number tracked is capped.

mod fleet;
pub mod heatmap;
mod overview;
pub mod rolling;
pub mod shared;
pub mod snapshot;
mod state;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

pub use fleet::FleetSummary;
pub use heatmap::Heatmap;
pub use overview::AtRisk;
pub use rolling::RollingScore;
pub use shared::{
    OUTBOX_SWEEP_AGE, OUTBOX_WINDOW, Revision, SharedChange, SharedConversations, SharedError,
    SharedState,
};
pub use snapshot::{Changes, ConversationSnapshot};

use state::{Conversation, PendingTurn};

use crate::alerts::explain::PlaybookConfig;
use crate::alerts::triggers::TriggerPolicies;
use crate::alerts::{Alert, AlertPolicy};
use crate::config::Config;
use crate::domain::Severity;
pub use crate::domain::{Context, Speaker};
use crate::error::{InferenceError, RequestError};
use crate::inference::{ModelSpec, Scores};
use crate::metrics::Metrics;

/// A validated turn, without its text (the text goes to inference only).
#[derive(Debug, Clone)]
pub struct TurnInput {
    pub conversation_id: String,
    pub turn_id: u64,
    pub speaker: Speaker,
    pub acoustic_valence: Option<f32>,
    pub context: Option<Context>,
    /// What the triggers and alert evidence need from the text.
    pub signal: Option<TextSignal>,
}

/// Derived from a turn's text before it is admitted; the text itself is not kept.
#[derive(Debug, Clone, Default)]
pub struct TextSignal {
    /// Lower case, punctuation as spaces (escalation phrases, repetition).
    pub normalized: Box<str>,
    /// The excerpt alerts and the dashboard may show, under the redaction policy.
    pub excerpt: Option<Arc<str>>,
    /// The language of the text by its script, if it says (see [`crate::lang::Lang::of_text`]).
    pub lang: Option<crate::lang::Lang>,
    /// A customer's words of giving up ("算了，不折腾了"), if any ([`crate::assist::giving_up`]).
    pub gave_up: Option<&'static str>,
    /// A customer's sentences that ask for something ([`crate::assist::guidance::asks`]).
    pub asks: Vec<crate::assist::guidance::Ask>,
    /// The apology phrase in an agent's text ("对不起", "sorry"), if any
    /// ([`crate::assist::apology`]): the turn's valence is read without the emotions an apology
    /// carries.
    pub apology: Option<&'static str>,
}

impl TextSignal {
    /// What triggers and alert evidence need from a customer's or agent's text (none for bots).
    pub fn of(text: &str, speaker: Speaker, alerts: &crate::config::AlertConfig) -> Option<Self> {
        if speaker == Speaker::Bot {
            return None;
        }
        let normalized = crate::alerts::triggers::normalize(text);
        Some(Self {
            apology: if speaker == Speaker::Agent {
                crate::assist::apology(&normalized)
            } else {
                None
            },
            normalized: normalized.into_boxed_str(),
            excerpt: crate::alerts::explain::excerpt(text, alerts.redaction, alerts.excerpt_chars)
                .map(Arc::from),
            lang: crate::lang::Lang::of_text(text),
            gave_up: if speaker == Speaker::Customer {
                crate::assist::giving_up(text)
            } else {
                None
            },
            asks: if speaker == Speaker::Customer {
                crate::assist::guidance::asks(text, |s| {
                    crate::alerts::explain::excerpt(s, alerts.redaction, alerts.excerpt_chars)
                })
            } else {
                Vec::new()
            },
        })
    }
}

/// A turn's final scores, as stored in history and returned to every sender of the turn.
#[derive(Debug, Clone)]
pub struct ScoredTurn {
    pub turn_id: u64,
    pub speaker: Speaker,
    pub probs: Box<[f32]>,
    pub text_valence: f32,
    pub valence: f32,
    pub rolling_valence: f32,
    pub alert_level: Severity,
    pub model: Arc<ModelSpec>,
    /// The text as `alerts.redaction` allows (shared with the alert evidence); none for bots.
    pub excerpt: Option<Arc<str>>,
}

pub type TurnOutcome = Result<Arc<ScoredTurn>, InferenceError>;

/// What a waiter for a turn receives: its outcome, and whether the turn had been scored before
/// this send of it (found so only once a shared store was read).
pub type Delivery = (TurnOutcome, bool);

pub enum Admission {
    /// Already scored: the stored result (a re-send).
    Answered(Arc<ScoredTurn>),
    /// An earlier send of this turn is being scored; this receives its outcome.
    Joined(oneshot::Receiver<Delivery>),
    /// New: the caller scores the text, calls `settle`, and this receives the outcome.
    Admitted(oneshot::Receiver<Delivery>),
    Rejected(RequestError),
}

/// What completing a turn produced: alert events to publish and results to deliver, in order.
#[derive(Default)]
pub struct Completion {
    pub alerts: Vec<Alert>,
    results: Vec<Applied>,
}

/// One turn a completion applied (or failed): who waits for it and what they get.
struct Applied {
    waiters: Vec<oneshot::Sender<Delivery>>,
    outcome: TurnOutcome,
    duplicate: bool,
    /// What applying it again needs (shared store only: see `shared.rs`).
    again: Option<shared::Reapply>,
}

impl Completion {
    /// Hands each applied turn's outcome to everyone waiting for it.
    pub fn deliver(self) {
        for applied in self.results {
            for waiter in applied.waiters {
                let _ = waiter.send((applied.outcome.clone(), applied.duplicate));
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub max_conversations: usize,
    pub max_history: usize,
    pub ttl: Duration,
    pub decay: f32,
    pub acoustic_weight: f32,
    pub policy: AlertPolicy,
    pub triggers: Arc<TriggerPolicies>,
    pub playbook: Arc<PlaybookConfig>,
    pub assist: crate::config::AssistConfig,
    /// `repeat_contact`: a contact within this long of one that ended badly.
    pub repeat_window: Duration,
}

impl From<&Config> for StoreSettings {
    fn from(c: &Config) -> Self {
        Self {
            max_conversations: c.limits.max_conversations,
            max_history: c.limits.max_history_turns,
            ttl: Duration::from_secs(c.limits.conversation_ttl_secs),
            decay: RollingScore::decay_for(c.scoring.half_life_turns),
            acoustic_weight: c.scoring.acoustic_weight,
            policy: AlertPolicy::from(&c.alerts),
            triggers: Arc::new(TriggerPolicies::new(&c.triggers)),
            playbook: Arc::new(c.playbook.clone()),
            assist: c.assist.clone(),
            repeat_window: c.customers.window(),
        }
    }
}

/// The state of one speaker, as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerState {
    pub speaker: Speaker,
    pub rolling_valence: f32,
    pub turns: u32,
}

/// A live conversation's state, as reported by GetConversation.
#[derive(Debug, Clone)]
pub struct ConversationView {
    pub conversation_id: String,
    pub context: Context,
    pub speakers: Vec<SpeakerState>,
    pub alert_level: Severity,
    pub last_turn_id: u64,
    pub turns: Vec<Arc<ScoredTurn>>,
    pub started_at: SystemTime,
    pub updated_at: SystemTime,
}

/// The final summary returned by EndConversation.
#[derive(Debug, Clone)]
pub struct ConversationSummary {
    pub conversation_id: String,
    pub context: Context,
    pub turns: u32,
    pub speakers: Vec<SpeakerState>,
    pub min_customer_rolling_valence: f32,
    pub alert_events: u32,
    pub final_alert_level: Severity,
    /// Mean probability over the customer's turns: (label, probability), top 5.
    pub customer_emotions: Vec<(String, f32)>,
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
}

pub struct ConversationStore {
    shards: Box<[Mutex<HashMap<String, Conversation>>]>,
    /// Conversations tracked across all shards; checked against the cap before one is added.
    tracked: AtomicUsize,
    settings: StoreSettings,
    metrics: Metrics,
    /// Customer valence per queue and 5 minutes, for the dashboard.
    heatmap: Heatmap,
    /// Ids ended or evicted since the last `take_changes`; only recorded once something persists
    /// the store (`track_changes`), so a store nobody saves does not grow it.
    removed: Mutex<Vec<String>>,
    tracking: std::sync::atomic::AtomicBool,
    /// Where conversations are decided when replicas share them (cluster mode); without it this
    /// store's memory is the truth.
    shared: Option<Arc<dyn SharedConversations>>,
    /// Cluster mode: every replica's conversations, for the dashboard (`fleet`).
    fleet: Option<fleet::FleetIndex>,
    /// Per agent: the conversations that strained them lately (break suggestions). In memory,
    /// per process: in cluster mode each replica counts the conversations it applied.
    shifts: Mutex<HashMap<String, Shift>>,
    /// Where a conversation with a customer is remembered once it ends (or is evicted idle).
    customers: Option<Arc<crate::customers::CustomerMemory>>,
    /// With a shared store: conversations this replica evicted idle, for
    /// [`Self::end_idle_shared`] to end in the store if they are idle there too.
    idled: Mutex<Vec<String>>,
}

/// One agent's recent strained conversations and their last break suggestion.
#[derive(Default)]
struct Shift {
    strained: std::collections::VecDeque<(Instant, String)>,
    suggested_at: Option<Instant>,
}

const SHARDS: usize = 32;

impl ConversationStore {
    pub fn new(settings: StoreSettings, metrics: Metrics) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            tracked: AtomicUsize::new(0),
            settings,
            metrics,
            heatmap: Heatmap::default(),
            removed: Mutex::new(Vec::new()),
            tracking: std::sync::atomic::AtomicBool::new(false),
            shared: None,
            fleet: None,
            shifts: Mutex::default(),
            customers: None,
            idled: Mutex::default(),
        }
    }

    /// Records each ended conversation that has a customer as one of their contacts.
    pub fn with_customers(mut self, customers: Arc<crate::customers::CustomerMemory>) -> Self {
        self.customers = Some(customers);
        self
    }

    /// The contact `conv` was, for its customer's memory (none without a customer or memory).
    fn contact_of(
        &self,
        conversation_id: &str,
        conv: &Conversation,
    ) -> Option<crate::customers::Contact> {
        let memory = self.customers.as_ref()?;
        conv.contact(conversation_id, memory.config.negative_below)
    }

    /// Decides every turn in `shared` (cluster mode): see [`Self::settle`].
    /// `fleet_view`: the at-risk list and the heatmap follow every replica's conversations
    /// (`fleet`), once [`Self::watch_fleet`] is called; else this store's own.
    pub fn with_shared(mut self, shared: Arc<dyn SharedConversations>, fleet_view: bool) -> Self {
        self.shared = Some(shared);
        self.fleet = fleet_view.then(fleet::FleetIndex::default);
        self
    }

    /// Cluster mode with the fleet view: from now on (for as long as the store lives), the
    /// at-risk list and the heatmap follow every replica's conversations (`fleet`).
    pub fn watch_fleet(self: &Arc<Self>) {
        let (Some(shared), Some(_)) = (&self.shared, &self.fleet) else {
            return;
        };
        let store = Arc::downgrade(self);
        shared.watch(Box::new(move |change| {
            let Some(store) = store.upgrade() else {
                return false;
            };
            if let Some(fleet) = &store.fleet {
                fleet.apply(change, &store.heatmap, store.settings.ttl);
            }
            true
        }));
    }

    /// From now on, records which conversations are ended or evicted (for `take_changes`).
    pub fn track_changes(&self) {
        self.tracking.store(true, Ordering::Relaxed);
    }

    fn record_removed(&self, ids: impl IntoIterator<Item = String>) {
        if self.tracking.load(Ordering::Relaxed) {
            let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
            removed.extend(ids);
        }
    }

    pub fn heatmap(&self) -> &Heatmap {
        &self.heatmap
    }

    fn shard(&self, conversation_id: &str) -> MutexGuard<'_, HashMap<String, Conversation>> {
        let mut h = DefaultHasher::new();
        conversation_id.hash(&mut h);
        self.shards[h.finish() as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Admits a turn. `tenants` limits which tenants' conversations the sender may write (empty:
    /// any); a conversation's tenant, once known, never changes.
    /// The language tag the conversation's context carries (from an earlier turn), if any.
    pub fn language_tag(&self, conversation_id: &str) -> Option<String> {
        let shard = self.shard(conversation_id);
        let language = &shard.get(conversation_id)?.context.language;
        (!language.is_empty()).then(|| language.clone())
    }

    pub fn admit(&self, turn: &mut TurnInput, tenants: &[String], now: Instant) -> Admission {
        let mut shard = self.shard(&turn.conversation_id);
        let turn_tenant = turn.context.as_ref().map_or("", |c| c.tenant.as_str());
        let known_tenant = shard
            .get(&turn.conversation_id)
            .map_or("", |c| c.context.tenant.as_str());
        if !known_tenant.is_empty() && !turn_tenant.is_empty() && turn_tenant != known_tenant {
            return Admission::Rejected(RequestError::TenantConflict {
                conversation_id: turn.conversation_id.clone(),
            });
        }
        let tenant = if known_tenant.is_empty() {
            turn_tenant
        } else {
            known_tenant
        };
        if !tenants.is_empty() && !tenants.iter().any(|t| t == tenant) {
            return Admission::Rejected(RequestError::TenantNotAllowed {
                tenant: tenant.to_string(),
            });
        }
        if !shard.contains_key(&turn.conversation_id) {
            let max = self.settings.max_conversations;
            if self.tracked.fetch_add(1, Ordering::Relaxed) >= max {
                self.tracked.fetch_sub(1, Ordering::Relaxed);
                return Admission::Rejected(RequestError::TooManyConversations(max));
            }
            self.metrics.active_conversations.inc();
            shard.insert(turn.conversation_id.clone(), Conversation::new(now));
        }
        let conv = shard
            .get_mut(&turn.conversation_id)
            .expect("inserted above");
        conv.touched = now;
        if let Some(context) = turn.context.as_ref().filter(|c| !c.is_empty()) {
            // A context without the customer or the agent keeps the one given before (sent
            // once, or named by a hand-off call, and never dropped by a later partial context).
            let customer = std::mem::take(&mut conv.context.customer);
            let agent = std::mem::take(&mut conv.context.agent_id);
            conv.context.clone_from(context);
            if conv.context.customer.is_empty() {
                conv.context.customer = customer;
            }
            if conv.context.agent_id.is_empty() {
                conv.context.agent_id = agent;
            }
        }
        if let Ok(i) = conv
            .history
            .binary_search_by_key(&turn.turn_id, |t| t.turn_id)
        {
            return Admission::Answered(conv.history[i].clone());
        }
        let (tx, rx) = oneshot::channel();
        if let Some(pending) = conv.pending.get_mut(&turn.turn_id) {
            pending.waiters.push(tx);
            return Admission::Joined(rx);
        }
        if let Some(last) = conv.last_turn_id.filter(|&last| turn.turn_id <= last) {
            return Admission::Rejected(RequestError::OutOfOrder {
                conversation_id: turn.conversation_id.clone(),
                turn_id: turn.turn_id,
                last,
            });
        }
        conv.last_turn_id = Some(turn.turn_id);
        conv.pending.insert(
            turn.turn_id,
            PendingTurn {
                speaker: turn.speaker,
                acoustic_valence: turn.acoustic_valence,
                signal: turn.signal.take(),
                outcome: None,
                waiters: vec![tx],
            },
        );
        Admission::Admitted(rx)
    }

    /// Records an admitted turn's scores (or failure) and applies every turn of the conversation
    /// that is now ready, in turn order. The caller publishes the returned alerts, then delivers
    /// the results (see [`Completion::deliver`]), outside the shard lock.
    pub fn complete(
        &self,
        conversation_id: &str,
        turn_id: u64,
        outcome: Result<Scores, InferenceError>,
        now: Instant,
    ) -> Completion {
        self.complete_with(conversation_id, turn_id, outcome, now, |_| ())
            .0
    }

    /// [`complete`](Self::complete), calling `under_lock` with the alert events decided while
    /// the conversation is still locked: whatever it hands them to receives one conversation's
    /// events in the order they were decided, however many tasks complete its turns. It must not
    /// block.
    pub fn complete_with<T>(
        &self,
        conversation_id: &str,
        turn_id: u64,
        outcome: Result<Scores, InferenceError>,
        now: Instant,
        under_lock: impl FnOnce(&[Alert]) -> T,
    ) -> (Completion, T) {
        let mut done = Completion::default();
        let mut shard = self.shard(conversation_id);
        let Some(conv) = shard.get_mut(conversation_id) else {
            let t = under_lock(&[]);
            return (done, t);
        };
        if let Some(pending) = conv.pending.get_mut(&turn_id) {
            pending.outcome = Some(outcome);
        }
        self.apply_ready(conv, conversation_id, now, &mut done);
        let t = under_lock(&done.alerts);
        (done, t)
    }

    /// Applies every turn of `conv` that is ready (scored, and every turn before it applied), in
    /// turn order, into `done`.
    fn apply_ready(
        &self,
        conv: &mut Conversation,
        conversation_id: &str,
        now: Instant,
        done: &mut Completion,
    ) {
        while let Some(entry) = conv.pending.first_entry() {
            if entry.get().outcome.is_none() {
                break;
            }
            let (turn_id, mut pending) = entry.remove_entry();
            let mut again = None;
            let outcome = match pending.outcome.take().expect("checked above") {
                Ok(scores) => {
                    if self.shared.is_some() {
                        again = Some(shared::Reapply::of(turn_id, &pending, &scores));
                    }
                    let (scored, alerts) = conv.apply(
                        conversation_id,
                        turn_id,
                        &mut pending,
                        scores,
                        &self.settings,
                        now,
                    );
                    let strained = alerts.iter().any(|a| {
                        a.kind == crate::alerts::AlertKind::AgentStrain
                            && a.state == crate::alerts::AlertState::Raised
                    });
                    done.alerts.extend(alerts);
                    if strained && let Some(n) = self.strained(conv, conversation_id, now) {
                        done.alerts
                            .push(conv.break_suggestion(conversation_id, n, &self.settings));
                    }
                    // The fleet view's watch counts every replica's turns (this one's too).
                    if scored.speaker == Speaker::Customer && self.fleet.is_none() {
                        let top = (scored.probs.iter().enumerate())
                            .max_by(|a, b| a.1.total_cmp(b.1))
                            .map(|(i, _)| i);
                        self.heatmap.record(
                            &conv.context.tenant,
                            &conv.context.queue,
                            conv.updated_at,
                            scored.valence,
                            top.and_then(|i| scored.model.labels.get(i))
                                .map_or("", |l| l.as_str()),
                        );
                    }
                    Ok(scored)
                }
                Err(e) => {
                    // Let the client retry a failed turn if nothing after it was admitted.
                    if conv.last_turn_id == Some(turn_id) {
                        conv.last_turn_id = conv.history.back().map(|t| t.turn_id);
                    }
                    Err(e)
                }
            };
            done.results.push(Applied {
                waiters: std::mem::take(&mut pending.waiters),
                outcome,
                duplicate: false,
                again,
            });
            conv.dirty = true;
        }
    }

    /// Records that `conv` strained its agent; returns how many conversations did within the
    /// window when that makes a break due (`[assist]`).
    fn strained(&self, conv: &Conversation, conversation_id: &str, now: Instant) -> Option<usize> {
        let a = &self.settings.assist;
        let agent = &conv.context.agent_id;
        if !a.enabled || agent.is_empty() {
            return None;
        }
        let window = Duration::from_secs(a.strain_window_mins * 60);
        let cooldown = Duration::from_secs(a.break_cooldown_mins * 60);
        let mut shifts = self.shifts.lock().unwrap_or_else(|p| p.into_inner());
        // Forget agents with nothing in the window (bounded by agents strained lately).
        if shifts.len() > 1_024 {
            shifts.retain(|_, s| {
                s.strained
                    .back()
                    .is_some_and(|(t, _)| now.saturating_duration_since(*t) < window)
            });
        }
        let shift = shifts.entry(agent.clone()).or_default();
        while shift
            .strained
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= window)
        {
            shift.strained.pop_front();
        }
        if !shift.strained.iter().any(|(_, c)| c == conversation_id) {
            shift.strained.push_back((now, conversation_id.to_string()));
        }
        let n = shift.strained.len();
        let cooling = shift
            .suggested_at
            .is_some_and(|t| now.saturating_duration_since(t) < cooldown);
        if n < a.strain_conversations || cooling {
            return None;
        }
        shift.suggested_at = Some(now);
        Some(n)
    }

    /// The customer whose earlier contacts `conversation_id` has yet to read, if any; the caller
    /// reads them and hands them to [`Self::remember_earlier`] before the turn settles.
    pub fn earlier_due(&self, conversation_id: &str) -> Option<String> {
        let mut shard = self.shard(conversation_id);
        let conv = shard.get_mut(conversation_id)?;
        let customer = &conv.context.customer;
        let known = conv
            .earlier
            .as_ref()
            .is_some_and(|e| &e.customer == customer);
        if customer.is_empty() || known || conv.reading_earlier {
            return None;
        }
        conv.reading_earlier = true;
        Some(customer.clone())
    }

    /// What [`Self::earlier_due`] asked for: the customer's earlier contacts, newest first.
    pub fn remember_earlier(
        &self,
        conversation_id: &str,
        customer: String,
        contacts: Vec<crate::customers::Contact>,
    ) {
        let mut shard = self.shard(conversation_id);
        if let Some(conv) = shard.get_mut(conversation_id) {
            conv.reading_earlier = false;
            conv.earlier = Some(state::Earlier {
                customer,
                contacts,
                raised: false,
            });
        }
    }

    /// A conversation's state, if tracked and of one of `tenants` (empty: any).
    pub fn view(&self, conversation_id: &str, tenants: &[String]) -> Option<ConversationView> {
        let shard = self.shard(conversation_id);
        let conv = shard.get(conversation_id).filter(|c| visible(c, tenants))?;
        Some(conv.view(conversation_id))
    }

    /// Ends a conversation: its summary, and its state released. Refused while turns are in flight.
    pub fn end(
        &self,
        conversation_id: &str,
        tenants: &[String],
    ) -> Result<ConversationSummary, RequestError> {
        let mut shard = self.shard(conversation_id);
        let conv = shard
            .get(conversation_id)
            .filter(|c| visible(c, tenants))
            .ok_or_else(|| RequestError::UnknownConversation(conversation_id.to_string()))?;
        if !conv.pending.is_empty() {
            return Err(RequestError::TurnsInFlight {
                conversation_id: conversation_id.to_string(),
                pending: conv.pending.len(),
            });
        }
        let conv = shard.remove(conversation_id).expect("present above");
        drop(shard);
        self.forget(1);
        self.record_removed([conversation_id.to_string()]);
        if let Some(contact) = self.contact_of(conversation_id, &conv) {
            self.customers.as_ref().expect("a contact").record(contact);
        }
        Ok(conv.summary(conversation_id))
    }

    /// Right to erasure: forgets the live conversations of `customer` (a pseudonym) without
    /// recording them as contacts; the state store drops them at its next save. Refused while
    /// one has turns being scored (those found before it stay forgotten). Returns their ids.
    pub fn forget_customer(&self, customer: &str) -> Result<Vec<String>, RequestError> {
        let mut gone = Vec::new();
        let mut busy = None;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|id, c| {
                let theirs = !customer.is_empty() && c.context.customer == customer;
                if theirs && !c.pending.is_empty() {
                    busy.get_or_insert((id.clone(), c.pending.len()));
                    return true;
                }
                if theirs {
                    gone.push(id.clone());
                }
                !theirs
            });
        }
        self.forget(gone.len());
        self.record_removed(gone.clone());
        match busy {
            Some((conversation_id, pending)) => Err(RequestError::TurnsInFlight {
                conversation_id,
                pending,
            }),
            None => Ok(gone),
        }
    }

    /// Forgets conversations idle for longer than the TTL that have nothing in flight.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let mut evicted = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let mut gone = Vec::new();
            let mut contacts = Vec::new();
            shard.retain(|id, c| {
                let keep =
                    !c.pending.is_empty() || now.duration_since(c.touched) < self.settings.ttl;
                if !keep {
                    gone.push(id.clone());
                    // With a shared store this copy may be stale: the store decides whether the
                    // conversation ended (`end_idle_shared`).
                    if self.shared.is_none() {
                        contacts.extend(self.contact_of(id, c));
                    }
                }
                keep
            });
            drop(shard);
            if self.shared.is_some() {
                let mut idled = self.idled.lock().unwrap_or_else(|p| p.into_inner());
                idled.extend(gone.iter().cloned());
            }
            if let Some(memory) = &self.customers {
                contacts.into_iter().for_each(|c| memory.record(c));
            }
            evicted += gone.len();
            self.record_removed(gone);
        }
        self.forget(evicted);
        evicted
    }

    fn forget(&self, n: usize) {
        self.tracked.fetch_sub(n, Ordering::Relaxed);
        self.metrics.active_conversations.dec_by(n as i64);
    }
}

fn visible(conv: &Conversation, tenants: &[String]) -> bool {
    tenants.is_empty() || tenants.contains(&conv.context.tenant)
}
