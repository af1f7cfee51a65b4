//! When a conversation alerts: the customer's rolling score against the WARNING and CRITICAL
//! thresholds, with a minimum number of customer turns, hysteresis on the way back up, and a
//! cooldown per severity. WARNING -> CRITICAL escalates at once; recovery resolves the open alert.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{AlertState, Severity};
use crate::config::AlertConfig;

#[derive(Debug, Clone)]
pub struct AlertPolicy {
    pub warning: f32,
    pub critical: f32,
    pub min_customer_turns: u32,
    pub hysteresis: f32,
    pub cooldown: Duration,
    pub evidence_turns: usize,
}

impl From<&AlertConfig> for AlertPolicy {
    fn from(c: &AlertConfig) -> Self {
        Self {
            warning: c.warning_threshold,
            critical: c.critical_threshold,
            min_customer_turns: c.min_customer_turns,
            hysteresis: c.hysteresis,
            cooldown: Duration::from_secs(c.cooldown_secs),
            evidence_turns: c.evidence_turns,
        }
    }
}

/// An alert event a tracker decided to emit.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub alert_id: String,
    pub state: AlertState,
    pub severity: Severity,
    /// The threshold crossed; for RESOLVED, the level the score rose above.
    pub threshold: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenAlert {
    id: String,
    severity: Severity,
}

/// Per-conversation alert state. Small: it lives in every tracked conversation.
/// Persisted with its conversation (cooldowns as wall-clock times, see `persist::wallclock`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AlertTracker {
    level: Option<Severity>,
    open: Option<OpenAlert>,
    #[serde(with = "crate::wallclock::option")]
    last_warning: Option<Instant>,
    #[serde(with = "crate::wallclock::option")]
    last_critical: Option<Instant>,
}

impl AlertTracker {
    /// The conversation's current risk level (also when an alert was held back by the cooldown).
    pub fn level(&self) -> Severity {
        self.level.unwrap_or(Severity::None)
    }

    /// Feeds the customer's rolling score after one of their turns.
    pub fn observe(
        &mut self,
        policy: &AlertPolicy,
        rolling: f32,
        customer_turns: u32,
        now: Instant,
    ) -> Option<Transition> {
        if customer_turns < policy.min_customer_turns {
            return None;
        }
        let recovered = rolling > policy.warning + policy.hysteresis;
        match self.level() {
            Severity::None => {
                let severity = if rolling <= policy.critical {
                    Severity::Critical
                } else if rolling <= policy.warning {
                    Severity::Warning
                } else {
                    return None;
                };
                self.level = Some(severity);
                self.raise(policy, severity, now)
            }
            Severity::Warning if rolling <= policy.critical => {
                self.level = Some(Severity::Critical);
                match self.open.as_mut() {
                    Some(open) => {
                        open.severity = Severity::Critical;
                        self.last_critical = Some(now);
                        Some(Transition {
                            alert_id: open.id.clone(),
                            state: AlertState::Escalated,
                            severity: Severity::Critical,
                            threshold: policy.critical,
                        })
                    }
                    None => self.raise(policy, Severity::Critical, now),
                }
            }
            Severity::Warning | Severity::Critical | Severity::Urgent if recovered => {
                self.level = None;
                self.open.take().map(|open| Transition {
                    alert_id: open.id,
                    state: AlertState::Resolved,
                    severity: open.severity,
                    threshold: policy.warning + policy.hysteresis,
                })
            }
            Severity::Warning | Severity::Critical | Severity::Urgent => None,
        }
    }

    /// Puts an incident's logged event into this tracker (restored state older than the log):
    /// RAISED and ESCALATED open it at the event's severity with its alert id, RESOLVED closes it
    /// if it is the one open. Returns whether anything changed.
    pub fn adopt(&mut self, event: &super::LoggedEvent) -> bool {
        match event.state {
            AlertState::Raised | AlertState::Escalated => {
                let open = Some(OpenAlert {
                    id: event.alert_id.clone(),
                    severity: event.severity,
                });
                let changed = self.open.as_ref().map(|o| (&o.id, o.severity))
                    != open.as_ref().map(|o| (&o.id, o.severity));
                let at = Some(crate::wallclock::from_ms(event.at_ms));
                // The cooldowns run from the event, as `observe` would have set them.
                match event.severity {
                    Severity::Critical => self.last_critical = at,
                    _ => self.last_warning = at,
                }
                self.open = open;
                self.level = Some(event.severity);
                changed
            }
            AlertState::Resolved => {
                if self.open.as_ref().is_some_and(|o| o.id == event.alert_id) {
                    self.open = None;
                    self.level = None;
                    true
                } else {
                    false
                }
            }
        }
    }

    fn raise(
        &mut self,
        policy: &AlertPolicy,
        severity: Severity,
        now: Instant,
    ) -> Option<Transition> {
        let last = match severity {
            Severity::Critical => &mut self.last_critical,
            _ => &mut self.last_warning,
        };
        if last.is_some_and(|t| now.duration_since(t) < policy.cooldown) {
            return None;
        }
        *last = Some(now);
        let id = new_alert_id();
        self.open = Some(OpenAlert {
            id: id.clone(),
            severity,
        });
        Some(Transition {
            alert_id: id,
            state: AlertState::Raised,
            severity,
            threshold: if severity == Severity::Critical {
                policy.critical
            } else {
                policy.warning
            },
        })
    }
}

/// Unique within a process, across restarts and across replicas: start time in ms and a random
/// number drawn at start, then a counter.
pub(crate) fn new_alert_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<(u128, u32)> = std::sync::OnceLock::new();
    let (start, nonce) = START.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        // The standard library seeds each RandomState from the OS.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        (ms, h.finish() as u32)
    });
    format!(
        "al-{start:x}{nonce:08x}-{}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AlertPolicy {
        AlertPolicy::from(&AlertConfig::default())
    }

    fn states(
        tracker: &mut AlertTracker,
        scores: &[f32],
        now: Instant,
    ) -> Vec<(AlertState, Severity)> {
        scores
            .iter()
            .enumerate()
            .filter_map(|(i, &r)| tracker.observe(&policy(), r, i as u32 + 1, now))
            .map(|t| (t.state, t.severity))
            .collect()
    }

    #[test]
    fn warning_escalates_then_resolves_with_hysteresis() {
        let mut t = AlertTracker::default();
        let now = Instant::now();
        let got = states(
            &mut t,
            &[0.2, -0.1, -0.4, -0.45, -0.7, -0.65, -0.3, -0.26, -0.2],
            now,
        );
        assert_eq!(
            got,
            [
                (AlertState::Raised, Severity::Warning),
                (AlertState::Escalated, Severity::Critical),
                (AlertState::Resolved, Severity::Critical),
            ]
        );
        assert_eq!(t.level(), Severity::None);
    }

    #[test]
    fn min_turns_and_cooldown_hold() {
        let p = policy();
        let mut t = AlertTracker::default();
        let now = Instant::now();
        assert_eq!(
            t.observe(&p, -0.9, 1, now),
            None,
            "first customer turn never alerts"
        );
        assert_eq!(
            t.observe(&p, -0.9, 2, now).unwrap().state,
            AlertState::Raised
        );
        assert_eq!(
            t.observe(&p, 0.5, 3, now).unwrap().state,
            AlertState::Resolved
        );
        assert_eq!(
            t.observe(&p, -0.9, 4, now),
            None,
            "within cooldown: no second CRITICAL"
        );
        assert_eq!(t.level(), Severity::Critical);
        assert_eq!(
            t.observe(&p, 0.5, 5, now),
            None,
            "nothing open, nothing to resolve"
        );
        let later = now + p.cooldown + Duration::from_secs(1);
        assert_eq!(
            t.observe(&p, -0.9, 6, later).unwrap().state,
            AlertState::Raised
        );
    }

    #[test]
    fn direct_critical_and_neutral_calls() {
        let mut t = AlertTracker::default();
        let now = Instant::now();
        assert_eq!(
            states(&mut t, &[-0.1, -0.7], now),
            [(AlertState::Raised, Severity::Critical)]
        );
        let mut calm = AlertTracker::default();
        assert!(states(&mut calm, &[0.3, 0.0, -0.2, -0.34, 0.1], now).is_empty());
    }
}
