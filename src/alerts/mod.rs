//! Supervisor alerts: the rules that decide when a conversation alerts ([`rules`]) and the fan-out
//! to subscribers ([`hub`]).

pub mod explain;
pub mod hub;
pub mod log;
pub mod rules;
pub mod subscribers;
pub mod triggers;

pub use hub::{AlertFilter, AlertHub, Subscription};
pub use log::{AlertLog, SqliteAlertLog};
pub use rules::{AlertPolicy, AlertTracker, Transition};

pub use crate::domain::{AlertKind, AlertState, Severity};
use crate::domain::{Context, Speaker};

/// An alert event as the durable log holds it: what putting restored conversation state right
/// needs (see `persist::reconcile`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub alert_id: String,
    pub kind: AlertKind,
    pub state: AlertState,
    pub severity: Severity,
    /// When the hub published it (Unix ms).
    pub at_ms: u64,
}

/// One turn attached to an alert as evidence.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvidenceTurn {
    pub turn_id: u64,
    pub speaker: Speaker,
    pub valence: f32,
    /// (label, probability), most probable first.
    pub top_emotions: Vec<(String, f32)>,
    /// Redacted excerpt, if the policy allows text.
    pub excerpt: Option<Box<str>>,
}

/// An alert event decided by a conversation; the hub numbers, stamps, logs and publishes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub conversation_id: String,
    pub context: Context,
    pub severity: Severity,
    pub state: AlertState,
    pub kind: AlertKind,
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
