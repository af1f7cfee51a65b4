//! Conversation state: the one owner of every tracked conversation's rolling scores, alert state
//! and recent turns.
//!
//! A turn goes through two steps. [`ConversationStore::admit`] checks its order and de-duplicates
//! it (a re-send of a scored turn is answered from history; a re-send of a turn still being scored
//! joins it). Once scored, [`ConversationStore::complete`] applies it, always in turn order: a turn
//! scored before an earlier one of the same conversation waits for it. Admission hands out a
//! receiver that gets the turn's final result; that makes results come back in turn order however
//! many streams carry the conversation.
//!
//! State is sharded behind plain mutexes, never held across an `.await`. Idle conversations are
//! evicted after the TTL; the number tracked is capped.

pub mod heatmap;
mod overview;
pub mod rolling;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

pub use heatmap::Heatmap;
pub use overview::AtRisk;
pub use rolling::RollingScore;

use crate::alerts::explain::PlaybookConfig;
use crate::alerts::rules::Transition;
use crate::alerts::triggers::{TriggerPolicies, TriggerState, TurnFacts};
use crate::alerts::{Alert, AlertPolicy, AlertState, AlertTracker, EvidenceTurn, Severity};
use crate::config::Config;
use crate::error::{InferenceError, RequestError};
use crate::inference::{ModelSpec, Scores};
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Speaker {
    Customer,
    Agent,
    Bot,
}

impl Speaker {
    pub const ALL: [Speaker; 3] = [Speaker::Customer, Speaker::Agent, Speaker::Bot];

    fn index(self) -> usize {
        self as usize
    }
}

/// Where a conversation belongs: used to route and filter alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub tenant: String,
    pub queue: String,
    pub agent_id: String,
    pub language: String,
}

impl Context {
    pub fn is_empty(&self) -> bool {
        self.tenant.is_empty()
            && self.queue.is_empty()
            && self.agent_id.is_empty()
            && self.language.is_empty()
    }
}

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
}

impl TextSignal {
    /// What triggers and alert evidence need from a customer's or agent's text (none for bots).
    pub fn of(text: &str, speaker: Speaker, alerts: &crate::config::AlertConfig) -> Option<Self> {
        (speaker != Speaker::Bot).then(|| Self {
            normalized: crate::alerts::triggers::normalize(text).into_boxed_str(),
            excerpt: crate::alerts::explain::excerpt(text, alerts.redaction, alerts.excerpt_chars)
                .map(Arc::from),
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

pub enum Admission {
    /// Already scored: the stored result (a re-send).
    Answered(Arc<ScoredTurn>),
    /// An earlier send of this turn is being scored; this receives its outcome.
    Joined(oneshot::Receiver<TurnOutcome>),
    /// New: the caller scores the text, calls `complete`, and this receives the outcome.
    Admitted(oneshot::Receiver<TurnOutcome>),
    Rejected(RequestError),
}

/// What completing a turn produced: alert events to publish and results to deliver, in order.
#[derive(Default)]
pub struct Completion {
    pub alerts: Vec<Alert>,
    results: Vec<(Vec<oneshot::Sender<TurnOutcome>>, TurnOutcome)>,
}

impl Completion {
    /// Hands each applied turn's outcome to everyone waiting for it.
    pub fn deliver(self) {
        for (waiters, outcome) in self.results {
            for waiter in waiters {
                let _ = waiter.send(outcome.clone());
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

struct PendingTurn {
    speaker: Speaker,
    acoustic_valence: Option<f32>,
    signal: Option<TextSignal>,
    outcome: Option<Result<Scores, InferenceError>>,
    waiters: Vec<oneshot::Sender<TurnOutcome>>,
}

/// Compact evidence kept for a speaker's last few turns: (turn_id, valence, top 3 label indexes,
/// the redacted excerpt).
struct Evidence {
    turn_id: u64,
    valence: f32,
    top: [(u16, f32); 3],
    excerpt: Option<Arc<str>>,
    /// Whose label indexes `top` holds (a swap may change the label set mid-conversation).
    model: Arc<ModelSpec>,
}

impl Evidence {
    fn top_labels(&self) -> impl Iterator<Item = (&str, f32)> {
        self.top
            .iter()
            .filter_map(|&(i, p)| self.model.labels.get(i as usize).map(|l| (l.as_str(), p)))
    }
}

struct Conversation {
    context: Context,
    started_at: SystemTime,
    updated_at: SystemTime,
    touched: Instant,
    last_turn_id: Option<u64>,
    pending: BTreeMap<u64, PendingTurn>,
    history: VecDeque<Arc<ScoredTurn>>,
    speakers: [RollingScore; 3],
    alert: AlertTracker,
    triggers: TriggerState,
    /// Recent customer and agent turns, for alert evidence.
    evidence: VecDeque<Evidence>,
    agent_evidence: VecDeque<Evidence>,
    /// Each speaker's rolling score after their first turn (the start of an alert's trend).
    first_rolling: [f32; 3],
    alert_events: u32,
    min_customer_rolling: f32,
    customer_prob_sum: Vec<f32>,
    customer_model: Option<Arc<ModelSpec>>,
}

pub struct ConversationStore {
    shards: Box<[Mutex<HashMap<String, Conversation>>]>,
    /// Conversations tracked across all shards; checked against the cap before one is added.
    tracked: AtomicUsize,
    settings: StoreSettings,
    metrics: Metrics,
    /// Customer valence per queue and 5 minutes, for the dashboard.
    heatmap: Heatmap,
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
            conv.context.clone_from(context);
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
        let mut done = Completion::default();
        let mut shard = self.shard(conversation_id);
        let Some(conv) = shard.get_mut(conversation_id) else {
            return done;
        };
        if let Some(pending) = conv.pending.get_mut(&turn_id) {
            pending.outcome = Some(outcome);
        }
        while let Some(entry) = conv.pending.first_entry() {
            if entry.get().outcome.is_none() {
                break;
            }
            let (turn_id, mut pending) = entry.remove_entry();
            let outcome = match pending.outcome.take().expect("checked above") {
                Ok(scores) => {
                    let (scored, alerts) = conv.apply(
                        conversation_id,
                        turn_id,
                        &mut pending,
                        scores,
                        &self.settings,
                        now,
                    );
                    done.alerts.extend(alerts);
                    if scored.speaker == Speaker::Customer {
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
            done.results
                .push((std::mem::take(&mut pending.waiters), outcome));
        }
        done
    }

    /// A conversation's state, if tracked and of one of `tenants` (empty: any).
    pub fn view(&self, conversation_id: &str, tenants: &[String]) -> Option<ConversationView> {
        let shard = self.shard(conversation_id);
        let conv = shard.get(conversation_id).filter(|c| visible(c, tenants))?;
        Some(ConversationView {
            conversation_id: conversation_id.to_string(),
            context: conv.context.clone(),
            speakers: conv.speaker_states(),
            alert_level: conv.alert.level().max(conv.triggers.open_level()),
            last_turn_id: conv.last_turn_id.unwrap_or(0),
            turns: conv.history.iter().cloned().collect(),
            started_at: conv.started_at,
            updated_at: conv.updated_at,
        })
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
        Ok(conv.summary(conversation_id))
    }

    /// Forgets conversations idle for longer than the TTL that have nothing in flight.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let mut evicted = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = shard.len();
            shard.retain(|_, c| {
                !c.pending.is_empty() || now.duration_since(c.touched) < self.settings.ttl
            });
            evicted += before - shard.len();
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

impl Conversation {
    fn new(now: Instant) -> Self {
        let wall = SystemTime::now();
        Self {
            context: Context::default(),
            started_at: wall,
            updated_at: wall,
            touched: now,
            last_turn_id: None,
            pending: BTreeMap::new(),
            history: VecDeque::new(),
            speakers: [RollingScore::default(); 3],
            alert: AlertTracker::default(),
            triggers: TriggerState::default(),
            evidence: VecDeque::new(),
            agent_evidence: VecDeque::new(),
            first_rolling: [0.0; 3],
            alert_events: 0,
            min_customer_rolling: f32::INFINITY,
            customer_prob_sum: Vec::new(),
            customer_model: None,
        }
    }

    fn apply(
        &mut self,
        conversation_id: &str,
        turn_id: u64,
        pending: &mut PendingTurn,
        scores: Scores,
        settings: &StoreSettings,
        now: Instant,
    ) -> (Arc<ScoredTurn>, Vec<Alert>) {
        let valence = match pending.acoustic_valence {
            Some(a) => {
                (1.0 - settings.acoustic_weight) * scores.valence + settings.acoustic_weight * a
            }
            None => scores.valence,
        }
        .clamp(-1.0, 1.0);
        let speaker = pending.speaker;
        let rolling = self.speakers[speaker.index()].update(valence, settings.decay);
        let speaker_turns = self.speakers[speaker.index()].turns();
        if speaker_turns == 1 {
            self.first_rolling[speaker.index()] = rolling;
        }
        let signal = pending.signal.take().unwrap_or_default();
        let mut fired: Vec<(&'static str, Transition, String)> = Vec::new();
        let rolling_open_before = self.alert.level() != Severity::None;
        if speaker != Speaker::Bot {
            let ranked = scores.model.ranked(&scores.probs);
            let top = std::array::from_fn(|i| {
                let label = ranked.get(i).copied().unwrap_or(0);
                (
                    label as u16,
                    scores.probs.get(label).copied().unwrap_or(0.0),
                )
            });
            let ring = if speaker == Speaker::Customer {
                &mut self.evidence
            } else {
                &mut self.agent_evidence
            };
            ring.push_back(Evidence {
                turn_id,
                valence,
                top,
                excerpt: signal.excerpt.clone(),
                model: scores.model.clone(),
            });
            if ring.len() > settings.policy.evidence_turns {
                ring.pop_front();
            }
        }
        if speaker == Speaker::Customer {
            self.min_customer_rolling = self.min_customer_rolling.min(rolling);
            self.add_customer_probs(&scores);
            if let Some(t) = self
                .alert
                .observe(&settings.policy, rolling, speaker_turns, now)
            {
                let detail = format!(
                    "the customer's rolling score is {rolling:+.2} (threshold {:+.2})",
                    t.threshold
                );
                fired.push(("rolling_valence", t, detail));
            }
        }
        let set = settings
            .triggers
            .for_context(&self.context.tenant, &self.context.queue);
        let facts = TurnFacts {
            speaker,
            rolling,
            speaker_turns,
            normalized: Some(&*signal.normalized).filter(|t| !t.is_empty()),
            rolling_alert_open: rolling_open_before || self.alert.level() != Severity::None,
            now,
        };
        for f in self.triggers.observe(set, &facts) {
            fired.push((f.kind, f.transition, f.detail));
        }
        let scored = Arc::new(ScoredTurn {
            turn_id,
            speaker,
            probs: scores.probs.into_boxed_slice(),
            text_valence: scores.valence,
            valence,
            rolling_valence: rolling,
            alert_level: self.alert.level().max(self.triggers.open_level()),
            model: scores.model,
            excerpt: signal.excerpt,
        });
        self.history.push_back(scored.clone());
        if self.history.len() > settings.max_history {
            self.history.pop_front();
        }
        self.updated_at = SystemTime::now();
        let alerts = fired
            .into_iter()
            .map(|(kind, t, detail)| {
                self.alert_events += 1;
                self.explain(conversation_id, kind, t, detail, speaker, &scored, settings)
            })
            .collect();
        (scored, alerts)
    }

    /// An alert event with its explanation: evidence of the speaker concerned, their dominant
    /// emotions, the trend, and the playbook's suggestion.
    #[allow(clippy::too_many_arguments)]
    fn explain(
        &self,
        conversation_id: &str,
        kind: &'static str,
        t: Transition,
        detail: String,
        speaker: Speaker,
        scored: &ScoredTurn,
        settings: &StoreSettings,
    ) -> Alert {
        let ring = if speaker == Speaker::Agent {
            &self.agent_evidence
        } else {
            &self.evidence
        };
        let mut mass: BTreeMap<&str, f32> = BTreeMap::new();
        for e in ring {
            for (label, p) in e.top_labels() {
                *mass.entry(label).or_default() += p / ring.len().max(1) as f32;
            }
        }
        let mut dominant: Vec<(String, f32)> =
            mass.into_iter().map(|(l, p)| (l.to_string(), p)).collect();
        dominant.sort_by(|a, b| b.1.total_cmp(&a.1));
        dominant.truncate(3);
        let suggestion = match t.state {
            AlertState::Resolved => String::new(),
            _ => settings
                .playbook
                .suggest(kind, dominant.iter().map(|(l, _)| l.as_str()))
                .to_string(),
        };
        Alert {
            alert_id: t.alert_id,
            conversation_id: conversation_id.to_string(),
            context: self.context.clone(),
            severity: t.severity,
            state: t.state,
            kind,
            rolling_valence: scored.rolling_valence,
            threshold: t.threshold,
            evidence: ring
                .iter()
                .map(|e| EvidenceTurn {
                    turn_id: e.turn_id,
                    speaker,
                    valence: e.valence,
                    top_emotions: e.top_labels().map(|(l, p)| (l.to_string(), p)).collect(),
                    excerpt: e.excerpt.as_deref().map(Box::from),
                })
                .collect(),
            model_version: scored.model.tag.clone(),
            turn_id: scored.turn_id,
            detail,
            dominant_emotions: dominant,
            trend_start: self.first_rolling[speaker.index()],
            trend_now: scored.rolling_valence,
            suggestion,
        }
    }

    fn add_customer_probs(&mut self, scores: &Scores) {
        let same_model = self
            .customer_model
            .as_ref()
            .is_some_and(|m| m.labels == scores.model.labels);
        if !same_model {
            // A model swap with another label set restarts the customer's emotion summary.
            self.customer_prob_sum = vec![0.0; scores.probs.len()];
            self.customer_model = Some(scores.model.clone());
        }
        for (sum, p) in self.customer_prob_sum.iter_mut().zip(&scores.probs) {
            *sum += p;
        }
    }

    fn speaker_states(&self) -> Vec<SpeakerState> {
        Speaker::ALL
            .iter()
            .filter(|s| self.speakers[s.index()].turns() > 0)
            .map(|&s| SpeakerState {
                speaker: s,
                rolling_valence: self.speakers[s.index()].value(),
                turns: self.speakers[s.index()].turns(),
            })
            .collect()
    }

    fn summary(self, conversation_id: &str) -> ConversationSummary {
        let customer_turns = self.speakers[Speaker::Customer.index()].turns().max(1) as f32;
        let customer_emotions = match &self.customer_model {
            Some(model) => {
                let mean: Vec<f32> = self
                    .customer_prob_sum
                    .iter()
                    .map(|s| s / customer_turns)
                    .collect();
                model
                    .ranked(&mean)
                    .into_iter()
                    .take(5)
                    .map(|i| (model.labels[i].clone(), mean[i]))
                    .collect()
            }
            None => Vec::new(),
        };
        ConversationSummary {
            conversation_id: conversation_id.to_string(),
            context: self.context.clone(),
            turns: self.speakers.iter().map(|s| s.turns()).sum(),
            speakers: self.speaker_states(),
            min_customer_rolling_valence: if self.min_customer_rolling.is_finite() {
                self.min_customer_rolling
            } else {
                0.0
            },
            alert_events: self.alert_events,
            final_alert_level: self.alert.level().max(self.triggers.open_level()),
            customer_emotions,
            started_at: self.started_at,
            ended_at: SystemTime::now(),
        }
    }
}
