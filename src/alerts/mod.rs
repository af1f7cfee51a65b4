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

pub use crate::domain::{AlertKind, AlertState, Audience, Severity};
use crate::domain::{Context, Speaker};

/// An audience as the wire and the log's `audience` column spell it.
pub fn wire_audience(a: Audience) -> crate::pb::Audience {
    match a {
        Audience::Supervisor => crate::pb::Audience::Supervisor,
        Audience::Agent => crate::pb::Audience::Agent,
    }
}

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
    /// On `handoff_brief` events: the brief.
    pub brief: Option<Box<HandoffBrief>>,
}

/// What the person taking over a conversation from a bot should know (see `AgentAssist`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HandoffBrief {
    pub customer_rolling: f32,
    /// The customer's rolling score after their first turn.
    pub trend_start: f32,
    /// (label, mean probability over the customer's recent turns), highest first.
    pub dominant_emotions: Vec<(String, f32)>,
    /// Customer turns where the mood dropped, oldest first.
    pub mood_drops: Vec<EvidenceTurn>,
    /// What the customer asked for, in the order first asked.
    pub requests: Vec<CustomerRequest>,
    pub escalation_phrases: Vec<String>,
    pub approach: String,
    pub opening_line: String,
    pub customer_turns: u32,
    pub bot_turns: u32,
    pub lang: crate::lang::Lang,
    /// The customer's earlier contacts (customer memory), newest first.
    pub earlier_contacts: Vec<EarlierContact>,
}

/// One of the customer's earlier contacts, as the brief shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EarlierContact {
    pub conversation_id: String,
    pub queue: String,
    pub agent_id: String,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub final_score: f32,
    pub lowest_score: f32,
    pub alert_events: u32,
    pub emotions: Vec<String>,
    /// "ok", "negative", "open_incident" or "resigned".
    pub outcome: String,
}

impl HandoffBrief {
    /// "falling", "rising" or "steady": the customer's trend since their first turn.
    pub fn trend(&self) -> &'static str {
        let d = self.customer_rolling - self.trend_start;
        if d <= -0.1 {
            "falling"
        } else if d >= 0.1 {
            "rising"
        } else {
            "steady"
        }
    }
}

/// One thing a customer asked for, with how often.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CustomerRequest {
    /// Redacted excerpt of the first ask.
    pub excerpt: Option<Box<str>>,
    pub times: u32,
    pub first_turn_id: u64,
    pub last_turn_id: u64,
}
