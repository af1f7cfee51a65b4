//! A conversation's persistent form, and the store's side of persisting: which conversations
//! changed since the last save, which are gone, and putting saved ones back after a restart.
//!
//! A snapshot holds everything a scored turn leaves behind (rolling scores, the open incident and
//! its alert id, cooldowns, trigger windows, evidence, retained turns with their excerpts as the
//! redaction policy allowed, never raw text) and none of what is in flight: a turn admitted but not
//! yet scored is not in it, so its sender's re-send after a crash is scored, not refused.
//! The models that scored the retained turns travel with the snapshot (a handful of labels), so a
//! re-sent turn is answered exactly as before even if another model serves after the restart.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::state::{Conversation, Evidence};
use super::{Context, ConversationStore, RollingScore, ScoredTurn, Speaker};
use crate::alerts::triggers::TriggerState;
use crate::alerts::{AlertTracker, Severity};
use crate::inference::ModelSpec;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConversationSnapshot {
    context: Context,
    started_at_ms: u64,
    updated_at_ms: u64,
    /// The last turn (wall clock) that kept it alive: the TTL goes on from there.
    touched_ms: u64,
    last_turn_id: Option<u64>,
    /// Models referred to below by index.
    models: Vec<ModelSpec>,
    history: Vec<TurnSnapshot>,
    speakers: [RollingScore; 3],
    alert: AlertTracker,
    triggers: TriggerState,
    assist: crate::assist::AssistState,
    earlier: Option<super::state::Earlier>,
    evidence: Vec<EvidenceSnapshot>,
    agent_evidence: Vec<EvidenceSnapshot>,
    first_rolling: [f32; 3],
    alert_events: u32,
    min_customer_rolling: f32,
    customer_prob_sum: Vec<f32>,
    customer_model: Option<u16>,
    lang: Option<crate::lang::Lang>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TurnSnapshot {
    turn_id: u64,
    speaker: Speaker,
    probs: Vec<f32>,
    text_valence: f32,
    valence: f32,
    rolling_valence: f32,
    alert_level: Severity,
    model: u16,
    excerpt: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EvidenceSnapshot {
    turn_id: u64,
    valence: f32,
    top: [(u16, f32); 3],
    excerpt: Option<String>,
    model: u16,
}

impl ConversationSnapshot {
    /// The last turn it knows (scored before the snapshot was taken).
    pub fn last_turn_id(&self) -> Option<u64> {
        self.last_turn_id
    }

    /// When its last turn was applied (Unix ms): alert events after it may be news to it.
    /// The customer's pseudonym (empty without customer memory or a customer id).
    pub fn customer(&self) -> &str {
        &self.context.customer
    }

    pub fn updated_at_ms(&self) -> u64 {
        self.updated_at_ms
    }

    /// Applies an alert event of this conversation from the log (see `persist::reconcile`).
    /// Returns whether anything changed.
    pub fn adopt(&mut self, event: &crate::alerts::LoggedEvent) -> bool {
        match (event.kind, event.kind.audience()) {
            (crate::alerts::AlertKind::RollingValence, _) => self.alert.adopt(event),
            (_, crate::alerts::Audience::Agent) => self.assist.adopt(event),
            _ => self.triggers.adopt(event),
        }
    }
}

/// What changed since the last [`ConversationStore::take_changes`].
#[derive(Debug, Default)]
pub struct Changes {
    pub upserts: Vec<(String, ConversationSnapshot)>,
    /// Ended or evicted since.
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty()
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn wall(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Gives each distinct model an index (and, restoring, one shared `Arc`).
#[derive(Default)]
struct Models(Vec<Arc<ModelSpec>>);

impl Models {
    fn index(&mut self, m: &Arc<ModelSpec>) -> u16 {
        match self.0.iter().position(|k| Arc::ptr_eq(k, m) || **k == **m) {
            Some(i) => i as u16,
            None => {
                self.0.push(m.clone());
                (self.0.len() - 1) as u16
            }
        }
    }
}

impl Conversation {
    pub(super) fn snapshot(&self) -> ConversationSnapshot {
        let mut models = Models::default();
        let evidence = |ring: &VecDeque<Evidence>, models: &mut Models| {
            ring.iter()
                .map(|e| EvidenceSnapshot {
                    turn_id: e.turn_id,
                    valence: e.valence,
                    top: e.top,
                    excerpt: e.excerpt.as_deref().map(str::to_string),
                    model: models.index(&e.model),
                })
                .collect()
        };
        let history = self
            .history
            .iter()
            .map(|t| TurnSnapshot {
                turn_id: t.turn_id,
                speaker: t.speaker,
                probs: t.probs.to_vec(),
                text_valence: t.text_valence,
                valence: t.valence,
                rolling_valence: t.rolling_valence,
                alert_level: t.alert_level,
                model: models.index(&t.model),
                excerpt: t.excerpt.as_deref().map(str::to_string),
            })
            .collect();
        let (evidence, agent_evidence) = (
            evidence(&self.evidence, &mut models),
            evidence(&self.agent_evidence, &mut models),
        );
        let customer_model = self.customer_model.as_ref().map(|m| models.index(m));
        // Turns in flight are not part of it: the last turn it knows is the last one scored.
        let last_turn_id = if self.pending.is_empty() {
            self.last_turn_id
        } else {
            self.history.back().map(|t| t.turn_id)
        };
        ConversationSnapshot {
            context: self.context.clone(),
            started_at_ms: ms(self.started_at),
            updated_at_ms: ms(self.updated_at),
            touched_ms: crate::wallclock::to_ms(self.touched),
            last_turn_id,
            models: models.0.iter().map(|m| (**m).clone()).collect(),
            history,
            speakers: self.speakers,
            alert: self.alert.clone(),
            triggers: self.triggers.clone(),
            assist: self.assist.clone(),
            earlier: self.earlier.clone(),
            evidence,
            agent_evidence,
            first_rolling: self.first_rolling,
            alert_events: self.alert_events,
            min_customer_rolling: self.min_customer_rolling,
            customer_prob_sum: self.customer_prob_sum.clone(),
            customer_model,
            lang: self.lang,
        }
    }

    /// The conversation a snapshot describes, on its own (none if it does not hold together).
    pub(super) fn from_snapshot(s: ConversationSnapshot) -> Option<Self> {
        Self::restore(s, &mut Models::default())
    }

    /// The conversation a snapshot describes; `models` shares model specs between conversations.
    fn restore(s: ConversationSnapshot, shared: &mut Models) -> Option<Self> {
        let models: Vec<Arc<ModelSpec>> = s
            .models
            .into_iter()
            .map(|m| {
                let m = Arc::new(m);
                let i = shared.index(&m);
                shared.0[i as usize].clone()
            })
            .collect();
        let model = |i: u16| models.get(i as usize).cloned();
        let evidence = |ring: Vec<EvidenceSnapshot>| {
            ring.into_iter()
                .map(|e| {
                    Some(Evidence {
                        turn_id: e.turn_id,
                        valence: e.valence,
                        top: e.top,
                        excerpt: e.excerpt.map(Arc::from),
                        model: model(e.model)?,
                    })
                })
                .collect::<Option<VecDeque<_>>>()
        };
        let history = s
            .history
            .into_iter()
            .map(|t| {
                Some(Arc::new(ScoredTurn {
                    turn_id: t.turn_id,
                    speaker: t.speaker,
                    probs: t.probs.into_boxed_slice(),
                    text_valence: t.text_valence,
                    valence: t.valence,
                    rolling_valence: t.rolling_valence,
                    alert_level: t.alert_level,
                    model: model(t.model)?,
                    excerpt: t.excerpt.map(Arc::from),
                }))
            })
            .collect::<Option<VecDeque<_>>>()?;
        let mut conv = Conversation::new(crate::wallclock::from_ms(s.touched_ms));
        conv.context = s.context;
        conv.started_at = wall(s.started_at_ms);
        conv.updated_at = wall(s.updated_at_ms);
        conv.last_turn_id = s.last_turn_id;
        conv.history = history;
        conv.speakers = s.speakers;
        conv.alert = s.alert;
        conv.triggers = s.triggers;
        conv.assist = s.assist;
        conv.earlier = s.earlier;
        conv.evidence = evidence(s.evidence)?;
        conv.agent_evidence = evidence(s.agent_evidence)?;
        conv.first_rolling = s.first_rolling;
        conv.alert_events = s.alert_events;
        conv.min_customer_rolling = s.min_customer_rolling;
        conv.customer_prob_sum = s.customer_prob_sum;
        conv.lang = s.lang;
        conv.customer_model = match s.customer_model {
            Some(i) => Some(model(i)?),
            None => None,
        };
        Some(conv)
    }
}

impl ConversationStore {
    /// Snapshots of the conversations changed since the last call, and the ids of those ended or
    /// evicted since. Each shard is locked only while its changed conversations are copied.
    pub fn take_changes(&self) -> Changes {
        let mut changes = Changes {
            removed: std::mem::take(&mut *self.removed.lock().unwrap_or_else(|p| p.into_inner())),
            ..Default::default()
        };
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (id, conv) in shard.iter_mut().filter(|(_, c)| c.dirty) {
                conv.dirty = false;
                changes.upserts.push((id.clone(), conv.snapshot()));
            }
        }
        changes
    }

    /// A batch from `take_changes` that could not be written: its conversations (those still
    /// tracked) and removals are taken again by the next call.
    pub fn unsaved(&self, changes: Changes) {
        for (id, _) in changes.upserts {
            if let Some(conv) = self.shard(&id).get_mut(&id) {
                conv.dirty = true;
            }
        }
        self.record_removed(changes.removed);
    }

    /// Puts saved conversations back (at start, before any turn arrives). Conversations past
    /// their TTL, beyond `max_conversations`, or whose snapshot does not hold together are
    /// skipped; returns how many came back.
    pub fn restore(&self, saved: Vec<(String, ConversationSnapshot)>, now: Instant) -> usize {
        let mut models = Models::default();
        let mut restored = 0;
        for (id, snapshot) in saved {
            if self.tracked.load(Ordering::Relaxed) >= self.settings.max_conversations {
                break;
            }
            let Some(mut conv) = Conversation::restore(snapshot, &mut models) else {
                tracing::warn!(conversation = %id, "a saved conversation does not hold together; skipped");
                continue;
            };
            if now.saturating_duration_since(conv.touched) >= self.settings.ttl {
                self.removed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(id);
                continue;
            }
            conv.dirty = false;
            if self.shard(&id).insert(id, conv).is_none() {
                self.tracked.fetch_add(1, Ordering::Relaxed);
                self.metrics.active_conversations.inc();
                restored += 1;
            }
        }
        restored
    }
}
