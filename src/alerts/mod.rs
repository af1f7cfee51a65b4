//! Supervisor alerts: the rules that decide when a conversation alerts ([`rules`]) and the fan-out
//! to subscribers ([`hub`]).

pub mod explain;
pub mod hub;
pub mod log;
pub mod rules;
pub mod subscribers;
pub mod triggers;

pub use hub::{AlertFilter, AlertHub, Subscription};
pub use log::AlertLog;
pub use rules::{AlertPolicy, AlertTracker, Transition};

use crate::conversation::Context;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Severity {
    None,
    Warning,
    Critical,
    /// Above CRITICAL: a distressed customer repeating themselves (by default).
    Urgent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Raised,
    Escalated,
    Resolved,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::None => "none",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Urgent => "urgent",
        }
    }
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Raised => "raised",
            AlertState::Escalated => "escalated",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One turn attached to an alert as evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceTurn {
    pub turn_id: u64,
    pub speaker: crate::conversation::Speaker,
    pub valence: f32,
    /// (label, probability), most probable first.
    pub top_emotions: Vec<(String, f32)>,
    /// Redacted excerpt, if the policy allows text.
    pub excerpt: Option<Box<str>>,
}

/// An alert event decided by a conversation; the hub numbers, stamps, logs and publishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub alert_id: String,
    pub conversation_id: String,
    pub context: Context,
    pub severity: Severity,
    pub state: AlertState,
    pub kind: &'static str,
    pub rolling_valence: f32,
    pub threshold: f32,
    pub evidence: Vec<EvidenceTurn>,
    pub model_version: String,
    pub turn_id: u64,
    pub detail: String,
    /// (label, mean probability over the evidence), highest first.
    pub dominant_emotions: Vec<(String, f32)>,
    pub trend_start: f32,
    pub trend_now: f32,
    pub suggestion: String,
}
