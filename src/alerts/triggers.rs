//! Alert triggers beyond the customer's rolling threshold ([`super::rules`]), each configurable per
//! tenant and queue:
//!
//! - `escalation_request`: the customer asks for a human, a manager, to cancel, or threatens legal
//!   action (phrase lists per language); raised at once, whatever the score;
//! - `repetition`: the same customer text (normalized) `count` times within `window_secs`;
//! - `sustained_negativity`: the customer's rolling score below `threshold` (milder than the
//!   rolling WARNING) for `turns` customer turns in a row or for `secs` seconds, while no rolling
//!   alert is open (that one already tells); resolves above the threshold plus `hysteresis`;
//! - `agent_strain`: the agent's own rolling score at or below `threshold`; resolves likewise.
//!
//! A conversation keeps a small [`TriggerState`]; [`TriggerState::observe`] is fed every scored
//! turn and returns what fired.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::rules::{Transition, new_alert_id};
use super::{AlertState, Severity};
use crate::domain::{AlertKind, Speaker};
use crate::lang::Lang;

pub use crate::config::triggers::{
    AgentStrainTrigger, EscalationTrigger, RepetitionTrigger, SeverityName, SustainedTrigger,
    TriggerOverride, TriggersConfig,
};

/// The triggers in force for one (tenant, queue), with phrases normalized once.
#[derive(Debug, Clone)]
pub struct TriggerSet {
    pub escalation: EscalationTrigger,
    pub repetition: RepetitionTrigger,
    pub sustained: SustainedTrigger,
    pub agent_strain: AgentStrainTrigger,
    /// Normalized phrases.
    normalized_phrases: Vec<Phrase>,
}

/// An escalation phrase as matched: normalized, and whether it must be the whole message
/// (written with a leading `=`, e.g. `=人工`: a customer typing just "人工" to a bot wants a
/// person; "人工智能" and "人工费" do not).
#[derive(Debug, Clone)]
struct Phrase {
    text: String,
    whole: bool,
    /// No Latin letters: also matched with every space removed ("1 2 3 1 5", "投 诉").
    compact: bool,
}

impl Phrase {
    fn new(raw: &str) -> Option<Self> {
        let (whole, raw) = match raw.strip_prefix('=') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let text = normalize(raw);
        let compact = !text.chars().any(|c| c.is_ascii_alphabetic());
        (!text.is_empty()).then_some(Self {
            text: if compact { text.replace(' ', "") } else { text },
            whole,
            compact,
        })
    }

    fn found_in(&self, normalized: &str, compact: &str) -> bool {
        if self.whole {
            return normalized == self.text || (self.compact && compact == self.text);
        }
        contains_word(normalized, &self.text)
            || (self.compact && contains_word(compact, &self.text))
    }
}

impl TriggersConfig {
    /// The trigger set in force where `o` applies (see [`TriggersConfig::merged`]).
    pub(crate) fn resolved(&self, o: Option<&TriggerOverride>) -> TriggerSet {
        let m = self.merged(o);
        TriggerSet::new(m.escalation, m.repetition, m.sustained, m.agent_strain)
    }
}

impl TriggerSet {
    fn new(
        escalation: EscalationTrigger,
        repetition: RepetitionTrigger,
        sustained: SustainedTrigger,
        agent_strain: AgentStrainTrigger,
    ) -> Self {
        let normalized_phrases = escalation
            .phrases
            .values()
            .flatten()
            .filter_map(|p| Phrase::new(p))
            .collect();
        Self {
            escalation,
            repetition,
            sustained,
            agent_strain,
            normalized_phrases,
        }
    }

    /// The configured phrase found in `normalized` text, if any.
    pub fn escalation_phrase(&self, normalized: &str) -> Option<&str> {
        if !self.escalation.enabled {
            return None;
        }
        let compact = normalized.replace(' ', "");
        self.normalized_phrases
            .iter()
            .find(|p| p.found_in(normalized, &compact))
            .map(|p| p.text.as_str())
    }
}

/// Trigger sets by (tenant, queue), resolved once at start.
#[derive(Debug)]
pub struct TriggerPolicies {
    base: Arc<TriggerSet>,
    by_both: HashMap<(String, String), Arc<TriggerSet>>,
    by_tenant: HashMap<String, Arc<TriggerSet>>,
    by_queue: HashMap<String, Arc<TriggerSet>>,
}

impl TriggerPolicies {
    pub fn new(config: &TriggersConfig) -> Self {
        let mut p = Self {
            base: Arc::new(config.resolved(None)),
            by_both: HashMap::new(),
            by_tenant: HashMap::new(),
            by_queue: HashMap::new(),
        };
        for o in &config.overrides {
            let set = Arc::new(config.resolved(Some(o)));
            match (o.tenant.is_empty(), o.queue.is_empty()) {
                (false, false) => {
                    p.by_both.insert((o.tenant.clone(), o.queue.clone()), set);
                }
                (false, true) => {
                    p.by_tenant.insert(o.tenant.clone(), set);
                }
                (true, false) => {
                    p.by_queue.insert(o.queue.clone(), set);
                }
                (true, true) => {}
            }
        }
        p
    }

    pub fn for_context(&self, tenant: &str, queue: &str) -> &TriggerSet {
        if self.by_both.is_empty() && self.by_tenant.is_empty() && self.by_queue.is_empty() {
            return &self.base;
        }
        self.by_both
            .get(&(tenant.to_string(), queue.to_string()))
            .or_else(|| self.by_tenant.get(tenant))
            .or_else(|| self.by_queue.get(queue))
            .unwrap_or(&self.base)
    }
}

/// Whether `phrase` occurs in `text` not glued to Latin letters or digits on either side ("my
/// lawyer" is not in "my lawyers", "12315" is in "打12315"; CJK text has no spaces to wait for).
fn contains_word(text: &str, phrase: &str) -> bool {
    let glued = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    text.match_indices(phrase).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + phrase.len()..].chars().next();
        let starts_ascii = phrase
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let ends_ascii = phrase
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        !((starts_ascii && glued(before)) || (ends_ascii && glued(after)))
    })
}

/// Text as escalation phrases and repetition see it (see [`crate::lang::normalize`]: full-width
/// and Traditional forms folded, punctuation as spaces, no spaces inside Chinese).
pub fn normalize(text: &str) -> String {
    crate::lang::normalize(text)
}

/// A 64-bit fingerprint of normalized text (for repetition; the text itself is not kept).
pub fn fingerprint(normalized: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    normalized.hash(&mut h);
    h.finish()
}

/// What the conversation knows about the turn just applied.
pub struct TurnFacts<'a> {
    pub speaker: Speaker,
    /// The speaker's rolling score after the turn, and their number of turns.
    pub rolling: f32,
    pub speaker_turns: u32,
    /// The turn's normalized text (customer and agent turns).
    pub normalized: Option<&'a str>,
    /// Whether a rolling-threshold alert was open before this turn or is open after it.
    pub rolling_alert_open: bool,
    /// The language the alert's words are written in.
    pub lang: Lang,
    pub now: Instant,
}

/// An alert event a trigger decided on.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub kind: AlertKind,
    pub transition: Transition,
    /// What set it off, in words: the phrase, the repeat count, the duration.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Open {
    id: String,
    severity: Severity,
}

/// Per-conversation trigger state. Small: it lives in every tracked conversation, and is
/// persisted with it (times as wall-clock times, see `persist::wallclock`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TriggerState {
    #[serde(with = "crate::wallclock::option")]
    escalation_at: Option<Instant>,
    /// (fingerprint, when) of recent customer turns within the repetition window.
    #[serde(with = "crate::wallclock::keyed")]
    recent: VecDeque<(u64, Instant)>,
    #[serde(with = "crate::wallclock::option")]
    repetition_at: Option<Instant>,
    /// Since when, and for how many customer turns, the score has been below the threshold.
    #[serde(with = "crate::wallclock::since")]
    below: Option<(Instant, u32)>,
    sustained: Option<Open>,
    strain: Option<Open>,
}

impl TriggerState {
    /// The highest severity of an open sustained-negativity or agent-strain incident.
    pub fn open_level(&self) -> Severity {
        [&self.sustained, &self.strain]
            .into_iter()
            .flatten()
            .map(|o| o.severity)
            .max()
            .unwrap_or(Severity::None)
    }

    /// Puts a logged event of one of these triggers into this state (restored state older than
    /// the log): incidents open or close as the log says, cooldowns run from the event. Returns
    /// whether anything changed.
    pub fn adopt(&mut self, event: &super::LoggedEvent) -> bool {
        let at = crate::wallclock::from_ms(event.at_ms);
        let later = |t: &mut Option<Instant>| {
            let changed = t.is_none_or(|t| t < at);
            if changed {
                *t = Some(at);
            }
            changed
        };
        let slot = match event.kind {
            AlertKind::EscalationRequest => return later(&mut self.escalation_at),
            AlertKind::Repetition => return later(&mut self.repetition_at),
            AlertKind::SustainedNegativity => &mut self.sustained,
            AlertKind::AgentStrain => &mut self.strain,
            // The rolling tracker's, and guidance (the assist state's).
            _ => return false,
        };
        match event.state {
            AlertState::Raised | AlertState::Escalated => {
                let changed = slot
                    .as_ref()
                    .is_none_or(|o| o.id != event.alert_id || o.severity != event.severity);
                *slot = Some(Open {
                    id: event.alert_id.clone(),
                    severity: event.severity,
                });
                changed
            }
            AlertState::Resolved if slot.as_ref().is_some_and(|o| o.id == event.alert_id) => {
                *slot = None;
                true
            }
            AlertState::Resolved => false,
        }
    }

    pub fn observe(&mut self, set: &TriggerSet, facts: &TurnFacts<'_>) -> Vec<Fired> {
        let mut fired = Vec::new();
        match facts.speaker {
            Speaker::Customer => {
                if let Some(text) = facts.normalized {
                    fired.extend(self.escalation(set, text, facts.lang, facts.now));
                    fired.extend(self.repetition(set, text, facts.lang, facts.now));
                }
                fired.extend(self.sustained(set, facts));
            }
            Speaker::Agent => fired.extend(self.agent_strain(set, facts)),
            Speaker::Bot => {}
        }
        fired
    }

    fn escalation(
        &mut self,
        set: &TriggerSet,
        text: &str,
        lang: Lang,
        now: Instant,
    ) -> Option<Fired> {
        let phrase = set.escalation_phrase(text)?;
        let cooldown = Duration::from_secs(set.escalation.cooldown_secs);
        if self
            .escalation_at
            .is_some_and(|t| now.duration_since(t) < cooldown)
        {
            return None;
        }
        self.escalation_at = Some(now);
        Some(Fired {
            kind: AlertKind::EscalationRequest,
            transition: raised(set.escalation.severity.into(), 0.0),
            detail: match lang {
                Lang::En => format!("the customer said {phrase:?}"),
                Lang::Zh => format!("客户说了“{phrase}”"),
            },
        })
    }

    fn repetition(
        &mut self,
        set: &TriggerSet,
        text: &str,
        lang: Lang,
        now: Instant,
    ) -> Option<Fired> {
        let r = &set.repetition;
        if !r.enabled || text.chars().count() < r.min_chars {
            return None;
        }
        let window = Duration::from_secs(r.window_secs);
        while self
            .recent
            .front()
            .is_some_and(|&(_, t)| now.duration_since(t) > window)
        {
            self.recent.pop_front();
        }
        let print = fingerprint(text);
        self.recent.push_back((print, now));
        // Bounded: only `count` copies of anything are ever needed.
        let cap = (r.count as usize).saturating_mul(4).max(8);
        while self.recent.len() > cap {
            self.recent.pop_front();
        }
        let times = self.recent.iter().filter(|(p, _)| *p == print).count() as u32;
        let cooldown = Duration::from_secs(r.cooldown_secs);
        if times < r.count
            || self
                .repetition_at
                .is_some_and(|t| now.duration_since(t) < cooldown)
        {
            return None;
        }
        self.repetition_at = Some(now);
        Some(Fired {
            kind: AlertKind::Repetition,
            transition: raised(r.severity.into(), 0.0),
            detail: match lang {
                Lang::En => format!(
                    "the customer sent the same message {times} times within {} s",
                    r.window_secs
                ),
                Lang::Zh => format!("客户在 {} 秒内把同一句话发了 {times} 次", r.window_secs),
            },
        })
    }

    fn sustained(&mut self, set: &TriggerSet, facts: &TurnFacts<'_>) -> Option<Fired> {
        let s = &set.sustained;
        if !s.enabled {
            return None;
        }
        if facts.rolling_alert_open {
            // The rolling alert speaks for this stretch; count afresh once it has closed.
            self.below = None;
            return None;
        }
        if facts.rolling < s.threshold {
            let (since, turns) = self.below.get_or_insert((facts.now, 0));
            *turns += 1;
            let (since, turns) = (*since, *turns);
            let lasted = facts.now.duration_since(since);
            if self.sustained.is_none()
                && (turns >= s.turns || lasted >= Duration::from_secs(s.secs))
            {
                let transition = raised(s.severity.into(), s.threshold);
                self.sustained = Some(Open {
                    id: transition.alert_id.clone(),
                    severity: transition.severity,
                });
                return Some(Fired {
                    kind: AlertKind::SustainedNegativity,
                    transition,
                    detail: match facts.lang {
                        Lang::En => format!(
                            "the customer's rolling score has been below {:+.2} for {turns} turns ({} s)",
                            s.threshold,
                            lasted.as_secs()
                        ),
                        Lang::Zh => format!(
                            "客户的滚动情绪分已连续 {turns} 轮（{} 秒）低于 {:+.2}",
                            lasted.as_secs(),
                            s.threshold
                        ),
                    },
                });
            }
            return None;
        }
        if facts.rolling > s.threshold + s.hysteresis {
            self.below = None;
            return self.sustained.take().map(|open| Fired {
                kind: AlertKind::SustainedNegativity,
                transition: resolved(open, s.threshold + s.hysteresis),
                detail: match facts.lang {
                    Lang::En => "the customer's rolling score recovered".into(),
                    Lang::Zh => "客户的滚动情绪分已回升".into(),
                },
            });
        }
        None
    }

    fn agent_strain(&mut self, set: &TriggerSet, facts: &TurnFacts<'_>) -> Option<Fired> {
        let a = &set.agent_strain;
        if !a.enabled || facts.speaker_turns < a.min_agent_turns {
            return None;
        }
        if facts.rolling <= a.threshold && self.strain.is_none() {
            let transition = raised(a.severity.into(), a.threshold);
            self.strain = Some(Open {
                id: transition.alert_id.clone(),
                severity: transition.severity,
            });
            return Some(Fired {
                kind: AlertKind::AgentStrain,
                transition,
                detail: match facts.lang {
                    Lang::En => format!(
                        "the agent's own rolling score is {:+.2}, at or below {:+.2}",
                        facts.rolling, a.threshold
                    ),
                    Lang::Zh => format!(
                        "坐席自己的滚动情绪分为 {:+.2}，不高于 {:+.2}",
                        facts.rolling, a.threshold
                    ),
                },
            });
        }
        if facts.rolling > a.threshold + a.hysteresis {
            return self.strain.take().map(|open| Fired {
                kind: AlertKind::AgentStrain,
                transition: resolved(open, a.threshold + a.hysteresis),
                detail: match facts.lang {
                    Lang::En => "the agent's rolling score recovered".into(),
                    Lang::Zh => "坐席的滚动情绪分已回升".into(),
                },
            });
        }
        None
    }
}

fn raised(severity: Severity, threshold: f32) -> Transition {
    Transition {
        alert_id: new_alert_id(),
        state: AlertState::Raised,
        severity,
        threshold,
    }
}

fn resolved(open: Open, threshold: f32) -> Transition {
    Transition {
        alert_id: open.id,
        state: AlertState::Resolved,
        severity: open.severity,
        threshold,
    }
}

#[cfg(test)]
mod tests;
