//! One conversation's state and what a scored turn does to it: rolling scores, alert rules and
//! triggers, evidence for explanations, history. Owned by [`super::ConversationStore`], which
//! holds each behind its shard's lock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::oneshot;

use super::shared::Revision;
use super::{
    Context, ConversationSummary, RollingScore, ScoredTurn, Speaker, SpeakerState, StoreSettings,
    TextSignal, TurnOutcome,
};
use crate::alerts::rules::Transition;
use crate::alerts::triggers::{TriggerState, TurnFacts};
use crate::alerts::{
    Alert, AlertKind, AlertState, AlertTracker, Audience, EvidenceTurn, HandoffBrief, Severity,
};
use crate::assist::{APOLOGY_EMOTIONS, AssistState, Guidance};
use crate::error::InferenceError;
use crate::inference::{ModelSpec, Scores};
use crate::lang::Lang;

/// A customer's earlier contacts as their new conversation read them, and whether it raised
/// `repeat_contact`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Earlier {
    pub(crate) customer: String,
    pub(crate) contacts: Vec<crate::customers::Contact>,
    pub(crate) raised: bool,
}

pub(super) struct PendingTurn {
    pub(super) speaker: Speaker,
    pub(super) acoustic_valence: Option<f32>,
    pub(super) signal: Option<TextSignal>,
    pub(super) outcome: Option<Result<Scores, InferenceError>>,
    pub(super) waiters: Vec<oneshot::Sender<(TurnOutcome, bool)>>,
}

/// Compact evidence kept for a speaker's last few turns: (turn_id, valence, top 3 label indexes,
/// the redacted excerpt).
pub(super) struct Evidence {
    pub(super) turn_id: u64,
    pub(super) valence: f32,
    pub(super) top: [(u16, f32); 3],
    pub(super) excerpt: Option<Arc<str>>,
    /// Whose label indexes `top` holds (a swap may change the label set mid-conversation).
    pub(super) model: Arc<ModelSpec>,
}

impl Evidence {
    pub(super) fn top_labels(&self) -> impl Iterator<Item = (&str, f32)> {
        self.top
            .iter()
            .filter_map(|&(i, p)| self.model.labels.get(i as usize).map(|l| (l.as_str(), p)))
    }
}

pub(super) struct Conversation {
    pub(super) context: Context,
    pub(super) started_at: SystemTime,
    pub(super) updated_at: SystemTime,
    pub(super) touched: Instant,
    pub(super) last_turn_id: Option<u64>,
    pub(super) pending: BTreeMap<u64, PendingTurn>,
    pub(super) history: VecDeque<Arc<ScoredTurn>>,
    pub(super) speakers: [RollingScore; 3],
    pub(super) alert: AlertTracker,
    pub(super) triggers: TriggerState,
    /// What the agent on the conversation is told (`assist::guidance`).
    pub(super) assist: AssistState,
    /// The customer's earlier contacts (customer memory), once read.
    pub(super) earlier: Option<Earlier>,
    /// Their reading is under way (in memory only).
    pub(super) reading_earlier: bool,
    /// Recent customer and agent turns, for alert evidence.
    pub(super) evidence: VecDeque<Evidence>,
    pub(super) agent_evidence: VecDeque<Evidence>,
    /// Each speaker's rolling score after their first turn (the start of an alert's trend).
    pub(super) first_rolling: [f32; 3],
    pub(super) alert_events: u32,
    pub(super) min_customer_rolling: f32,
    pub(super) customer_prob_sum: Vec<f32>,
    pub(super) customer_model: Option<Arc<ModelSpec>>,
    /// The language its customer writes in, from the script of their latest turn that says
    /// (an agent's before the customer's first); `None` until a turn says.
    pub(super) lang: Option<Lang>,
    /// Changed since it was last persisted (see `snapshot.rs`).
    pub(super) dirty: bool,
    /// With a shared store (cluster mode): its revision there, held while a turn is committed,
    /// so one conversation's turns commit one at a time and in order (see `shared.rs`).
    pub(super) commit: Arc<tokio::sync::Mutex<Revision>>,
}

impl Conversation {
    pub(super) fn new(now: Instant) -> Self {
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
            assist: AssistState::default(),
            earlier: None,
            reading_earlier: false,
            evidence: VecDeque::new(),
            agent_evidence: VecDeque::new(),
            first_rolling: [0.0; 3],
            alert_events: 0,
            min_customer_rolling: f32::INFINITY,
            customer_prob_sum: Vec::new(),
            customer_model: None,
            lang: None,
            dirty: false,
            commit: Arc::default(),
        }
    }

    pub(super) fn view(&self, conversation_id: &str) -> super::ConversationView {
        super::ConversationView {
            conversation_id: conversation_id.to_string(),
            context: self.context.clone(),
            speakers: self.speaker_states(),
            alert_level: self.alert.level().max(self.triggers.open_level()),
            last_turn_id: self.last_turn_id.unwrap_or(0),
            turns: self.history.iter().cloned().collect(),
            started_at: self.started_at,
            updated_at: self.updated_at,
        }
    }

    /// The language alerts about this conversation are written in: its customer's script, else
    /// the context's language tag, else English.
    pub(super) fn lang(&self) -> Lang {
        self.lang
            .or_else(|| Lang::from_tag(&self.context.language))
            .unwrap_or_default()
    }

    pub(super) fn apply(
        &mut self,
        conversation_id: &str,
        turn_id: u64,
        pending: &mut PendingTurn,
        scores: Scores,
        settings: &StoreSettings,
        now: Instant,
    ) -> (Arc<ScoredTurn>, Vec<Alert>) {
        let signal = pending.signal.take().unwrap_or_default();
        // An apology's remorse and sadness are manners, not the speaker's mood (assist::apology).
        let text_valence = match signal.apology {
            Some(_) => scores.valence_without(APOLOGY_EMOTIONS),
            None => scores.valence,
        };
        let valence = match pending.acoustic_valence {
            Some(a) => {
                (1.0 - settings.acoustic_weight) * text_valence + settings.acoustic_weight * a
            }
            None => text_valence,
        }
        .clamp(-1.0, 1.0);
        let speaker = pending.speaker;
        let previous_rolling = (self.speakers[speaker.index()].turns() > 0)
            .then(|| self.speakers[speaker.index()].value());
        let rolling = self.speakers[speaker.index()].update(valence, settings.decay);
        let speaker_turns = self.speakers[speaker.index()].turns();
        if speaker_turns == 1 {
            self.first_rolling[speaker.index()] = rolling;
        }
        if signal.lang.is_some() && (speaker == Speaker::Customer || self.lang.is_none()) {
            self.lang = signal.lang;
        }
        let lang = self.lang();
        let mut fired: Vec<(AlertKind, Transition, String)> = Vec::new();
        let rolling_open_before = self.alert.level() != Severity::None;
        let mut top = [(0u16, 0.0f32); 3];
        if speaker != Speaker::Bot {
            let ranked = scores.model.ranked(&scores.probs);
            top = std::array::from_fn(|i| {
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
                let detail = match lang {
                    Lang::En => format!(
                        "the customer's rolling score is {rolling:+.2} (threshold {:+.2})",
                        t.threshold
                    ),
                    Lang::Zh => format!(
                        "客户的滚动情绪分为 {rolling:+.2}（阈值 {:+.2}）",
                        t.threshold
                    ),
                };
                fired.push((AlertKind::RollingValence, t, detail));
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
            lang,
            now,
        };
        for f in self.triggers.observe(set, &facts) {
            fired.push((f.kind, f.transition, f.detail));
        }
        let normalized = &*signal.normalized;
        let escalation_phrase = (speaker == Speaker::Customer && !normalized.is_empty())
            .then(|| set.escalation_phrase(normalized))
            .flatten();
        let top_named: Vec<(&str, f32)> = if speaker == Speaker::Bot {
            Vec::new()
        } else {
            top.iter()
                .filter_map(|&(i, p)| scores.model.labels.get(i as usize).map(|l| (l.as_str(), p)))
                .collect()
        };
        let customer = &self.speakers[Speaker::Customer.index()];
        let guidance = self.assist.observe(
            &settings.assist,
            &crate::assist::guidance::TurnFacts {
                speaker,
                turn_id,
                valence,
                rolling,
                previous_rolling,
                speaker_turns,
                trend_start: self.first_rolling[Speaker::Customer.index()],
                customer_rolling: (customer.turns() > 0).then(|| customer.value()),
                asks: &signal.asks,
                excerpt: signal.excerpt.as_deref(),
                top: &top_named,
                escalation_phrase,
                escalation_fired: fired.iter().any(|(k, t, _)| {
                    *k == AlertKind::EscalationRequest && t.state == AlertState::Raised
                }),
                gave_up: signal.gave_up,
                agent_id: &self.context.agent_id,
                min_customer_turns: settings.policy.min_customer_turns,
                lang,
            },
        );
        drop(top_named);
        let scored = Arc::new(ScoredTurn {
            turn_id,
            speaker,
            probs: scores.probs.into_boxed_slice(),
            text_valence,
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
        if let Some(repeat) = self.repeat_contact(settings) {
            fired.push(repeat);
        }
        let mut alerts: Vec<Alert> = fired
            .into_iter()
            .map(|(kind, t, detail)| {
                self.alert_events += 1;
                self.explain(conversation_id, kind, t, detail, speaker, &scored, settings)
            })
            .collect();
        alerts.extend(
            guidance
                .into_iter()
                .map(|g| self.guide(conversation_id, g, &scored, settings)),
        );
        (scored, alerts)
    }

    /// `repeat_contact`, once per conversation, when its customer's earlier contacts include one
    /// that ended badly within `customers.window_days`: WARNING, CRITICAL for two or more.
    fn repeat_contact(
        &mut self,
        settings: &StoreSettings,
    ) -> Option<(AlertKind, Transition, String)> {
        let lang = self.lang();
        let earlier = self.earlier.as_mut().filter(|e| !e.raised)?;
        earlier.raised = true;
        let now = crate::customers::now_ms();
        let since = now.saturating_sub(settings.repeat_window.as_millis() as u64);
        let bad: Vec<&crate::customers::Contact> = (earlier.contacts.iter())
            .filter(|c| c.ended_ms >= since && c.outcome.bad())
            .collect();
        let last = bad.first()?;
        let n = bad.len();
        let days = settings.repeat_window.as_secs() / 86_400;
        let ago_h = now.saturating_sub(last.ended_ms) / 3_600_000;
        let ago = |zh: bool| match (ago_h >= 48, zh) {
            (true, false) => format!("{} days ago", ago_h / 24),
            (false, false) => format!("{ago_h} h ago"),
            (true, true) => format!("{} 天前", ago_h / 24),
            (false, true) => format!("{ago_h} 小时前"),
        };
        let detail = match lang {
            Lang::En => format!(
                "repeat contact: {n} contact(s) in the last {days} days ended badly; the latest ({}, {}) ended {} with a lowest score of {:+.2}",
                last.conversation_id,
                ago(false),
                last.outcome.as_str().replace('_', " "),
                last.lowest_score
            ),
            Lang::Zh => format!(
                "重复来电：近 {days} 天内有 {n} 次来电未妥善结束；最近一次（{}，{}）结果为{}，最低情绪分 {:+.2}",
                last.conversation_id,
                ago(true),
                match last.outcome {
                    crate::customers::Outcome::Ok => "正常",
                    crate::customers::Outcome::Negative => "负面",
                    crate::customers::Outcome::OpenIncident => "告警未结",
                    crate::customers::Outcome::Resigned => "客户放弃",
                },
                last.lowest_score
            ),
        };
        Some((
            AlertKind::RepeatContact,
            Transition {
                alert_id: crate::alerts::rules::new_alert_id(),
                state: AlertState::Raised,
                severity: if n >= 2 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                threshold: n as f32,
            },
            detail,
        ))
    }

    /// A guidance event for the agent: the customer's evidence (or the guidance's own), the
    /// playbook's advice, and for a hand-off the brief.
    fn guide(
        &self,
        conversation_id: &str,
        g: Guidance,
        scored: &ScoredTurn,
        settings: &StoreSettings,
    ) -> Alert {
        let mut alert = self.explain(
            conversation_id,
            g.kind,
            g.transition,
            g.detail,
            Speaker::Customer,
            scored,
            settings,
        );
        if let Some(evidence) = g.evidence {
            alert.evidence = evidence;
        }
        let customer = &self.speakers[Speaker::Customer.index()];
        alert.rolling_valence = customer.value();
        alert.trend_now = customer.value();
        if g.kind == AlertKind::MoodTurned {
            let labels = self.assist.drop_emotions();
            let labels = labels.chain(alert.dominant_emotions.iter().map(|(l, _)| l.as_str()));
            alert.suggestion = settings
                .playbook
                .suggest(g.kind.as_str(), labels, self.lang())
                .to_string();
        }
        if g.kind == AlertKind::HandoffBrief {
            let brief = self.brief(settings);
            alert.suggestion = brief.approach.clone();
            alert.brief = Some(Box::new(brief));
        }
        alert
    }

    /// A hand-off to `agent_id` by call (`ConversationStore::hand_off`): they become the
    /// conversation's agent, and the guidance to send them. None when nothing changed: it was
    /// already handed to them, or no turn was applied yet (the caller refuses that).
    pub(super) fn hand_off(
        &mut self,
        conversation_id: &str,
        agent_id: &str,
        settings: &StoreSettings,
    ) -> Option<Vec<Alert>> {
        let scored = self.history.back().cloned()?;
        let previous = std::mem::replace(&mut self.context.agent_id, agent_id.to_string());
        let theirs = previous == agent_id;
        if theirs && self.assist.handed_off() {
            return None;
        }
        self.updated_at = SystemTime::now();
        self.dirty = true;
        if !settings.assist.enabled {
            return Some(Vec::new());
        }
        let customer = &self.speakers[Speaker::Customer.index()];
        let rolling = (customer.turns() > 0).then(|| customer.value());
        // From another person (not the bot whose id the context carried while it served).
        let transfer = !theirs
            && !previous.is_empty()
            && (self.assist.handed_off() || self.assist.bot_turns() == 0);
        self.assist
            .hand_off(&settings.assist, self.lang(), rolling, transfer)
            .into_iter()
            .map(|g| self.guide(conversation_id, g, &scored, settings))
            .collect::<Vec<_>>()
            .into()
    }

    /// Guidance for the agent themself: `n` of their recent conversations strained them.
    pub(super) fn break_suggestion(
        &self,
        conversation_id: &str,
        n: usize,
        settings: &StoreSettings,
    ) -> Alert {
        let mins = settings.assist.strain_window_mins;
        let detail = match self.lang() {
            Lang::En => format!(
                "{n} of your conversations in the last {mins} minutes were strained: take a short break after this one"
            ),
            Lang::Zh => format!("过去 {mins} 分钟内您有 {n} 通通话压力较大：这通结束后请休息一下"),
        };
        let scored = self
            .history
            .back()
            .expect("called after a turn was applied");
        let t = Transition {
            alert_id: crate::alerts::rules::new_alert_id(),
            state: AlertState::Raised,
            severity: Severity::Warning,
            threshold: n as f32,
        };
        self.explain(
            conversation_id,
            AlertKind::BreakSuggested,
            t,
            detail,
            Speaker::Agent,
            scored,
            settings,
        )
    }

    /// The hand-off brief as the conversation stands.
    pub(super) fn brief(&self, settings: &StoreSettings) -> HandoffBrief {
        let c = Speaker::Customer.index();
        let dominant = dominant(&self.evidence);
        let lang = self.lang();
        // The approach answers what set the mood off (the drops' emotions) before the latest.
        let labels = || {
            self.assist
                .drop_emotions()
                .chain(dominant.iter().map(|(l, _)| l.as_str()))
        };
        HandoffBrief {
            customer_rolling: self.speakers[c].value(),
            trend_start: self.first_rolling[c],
            approach: settings
                .playbook
                .suggest(AlertKind::HandoffBrief.as_str(), labels(), lang)
                .to_string(),
            opening_line: settings.playbook.opening(labels(), lang).to_string(),
            dominant_emotions: dominant,
            mood_drops: self.assist.mood_drops(),
            requests: self.assist.requests(),
            escalation_phrases: self.assist.escalation_phrases().to_vec(),
            customer_turns: self.speakers[c].turns(),
            bot_turns: self.assist.bot_turns(),
            lang,
            earlier_contacts: (self.earlier.iter().flat_map(|e| &e.contacts))
                .map(|c| crate::alerts::EarlierContact {
                    conversation_id: c.conversation_id.clone(),
                    queue: c.queue.clone(),
                    agent_id: c.agent_id.clone(),
                    started_ms: c.started_ms,
                    ended_ms: c.ended_ms,
                    final_score: c.final_score,
                    lowest_score: c.lowest_score,
                    alert_events: c.alert_events,
                    emotions: c.emotions.clone(),
                    outcome: c.outcome.as_str().to_string(),
                })
                .collect(),
        }
    }

    /// An alert event with its explanation: evidence of the speaker concerned, their dominant
    /// emotions, the trend, and the playbook's suggestion.
    #[allow(clippy::too_many_arguments)]
    fn explain(
        &self,
        conversation_id: &str,
        kind: AlertKind,
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
        let dominant = dominant(ring);
        let suggestion = match t.state {
            AlertState::Resolved if kind.audience() == Audience::Supervisor => String::new(),
            _ => settings
                .playbook
                .suggest(
                    kind.as_str(),
                    dominant.iter().map(|(l, _)| l.as_str()),
                    self.lang(),
                )
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
            brief: None,
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

    pub(super) fn speaker_states(&self) -> Vec<SpeakerState> {
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

    /// The customer's mean probability per label over the conversation, highest first (`n`).
    fn customer_emotions(&self, n: usize) -> Vec<(String, f32)> {
        let customer_turns = self.speakers[Speaker::Customer.index()].turns().max(1) as f32;
        match &self.customer_model {
            Some(model) => {
                let mean: Vec<f32> = self
                    .customer_prob_sum
                    .iter()
                    .map(|s| s / customer_turns)
                    .collect();
                model
                    .ranked(&mean)
                    .into_iter()
                    .take(n)
                    .map(|i| (model.labels[i].clone(), mean[i]))
                    .collect()
            }
            None => Vec::new(),
        }
    }

    /// Did the customer end resigned? Their words of giving up in one of their last two turns,
    /// or their last two turns led by sadness or disappointment, negative, with the rolling score
    /// below where it started (the model's half of the rule).
    fn ended_resigned(&self) -> bool {
        let last_two: Vec<&Evidence> = self.evidence.iter().rev().take(2).collect();
        if let Some((turn, _)) = self.assist.resigned()
            && last_two.iter().any(|e| e.turn_id == turn)
        {
            return true;
        }
        let c = Speaker::Customer.index();
        last_two.len() == 2
            && last_two.iter().all(|e| {
                e.valence < 0.0
                    && e.top_labels()
                        .next()
                        .is_some_and(|(l, _)| RESIGNED_LABELS.contains(&l))
            })
            && self.speakers[c].value() < self.first_rolling[c]
    }

    /// This conversation as one of its customer's contacts; none without a customer or a
    /// customer turn.
    pub(super) fn contact(
        &self,
        conversation_id: &str,
        negative_below: f32,
    ) -> Option<crate::customers::Contact> {
        use crate::customers::Outcome;
        let c = Speaker::Customer.index();
        // A conversation without a customer id is still a contact (for the QA report), of
        // nobody in particular: it joins no customer's memory.
        if self.speakers[c].turns() == 0 {
            return None;
        }
        let final_score = self.speakers[c].value();
        let open = self.alert.level().max(self.triggers.open_level()) != Severity::None;
        let outcome = if self.ended_resigned() {
            Outcome::Resigned
        } else if open {
            Outcome::OpenIncident
        } else if final_score < negative_below {
            Outcome::Negative
        } else {
            Outcome::Ok
        };
        let ms = |t: SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        Some(crate::customers::Contact {
            customer: self.context.customer.clone(),
            conversation_id: conversation_id.to_string(),
            tenant: self.context.tenant.clone(),
            queue: self.context.queue.clone(),
            agent_id: self.context.agent_id.clone(),
            started_ms: ms(self.started_at),
            ended_ms: ms(self.updated_at),
            final_score,
            lowest_score: self.min_customer_rolling.min(final_score),
            alert_events: self.alert_events,
            emotions: (self.customer_emotions(3).into_iter())
                .map(|(l, _)| l)
                .collect(),
            outcome,
        })
    }

    pub(super) fn summary(self, conversation_id: &str) -> ConversationSummary {
        let customer_emotions = self.customer_emotions(5);
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

/// Top labels of a resigned customer's last turns (the model's half of resignation).
const RESIGNED_LABELS: &[&str] = &["sadness", "disappointment", "grief"];

/// The emotions dominating a ring of evidence: (label, mean probability), highest first, at
/// most 3.
fn dominant(ring: &VecDeque<Evidence>) -> Vec<(String, f32)> {
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
    dominant
}
