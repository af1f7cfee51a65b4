//! The domain's shared vocabulary: what a caller may do, who speaks, where a conversation belongs, how severe an alert
//! is, what state an alert event records and which trigger raised it. A leaf: it imports nothing
//! from the rest of the crate, so config, alerts, conversation and the stores can all use it
//! without importing each other.

use std::fmt;

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Ingest,
    Supervisor,
    /// The person on the call: reads the guidance for its own agent id (`AgentAssist`).
    Agent,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Supervisor => "supervisor",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Speaker {
    Customer,
    Agent,
    Bot,
}

impl Speaker {
    pub const ALL: [Speaker; 3] = [Speaker::Customer, Speaker::Agent, Speaker::Bot];

    /// 0, 1, 2 in [`Speaker::ALL`]'s order (per-speaker arrays).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where a conversation belongs: used to route and filter alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Context {
    pub tenant: String,
    pub queue: String,
    pub agent_id: String,
    pub language: String,
    /// The customer's pseudonym (`crate::customers`), or empty.
    pub customer: String,
}

impl Context {
    pub fn is_empty(&self) -> bool {
        self.tenant.is_empty()
            && self.queue.is_empty()
            && self.agent_id.is_empty()
            && self.language.is_empty()
            && self.customer.is_empty()
    }
}

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

/// What an alert event records about its incident (acknowledgements are the hub's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AlertState {
    Raised,
    Escalated,
    Resolved,
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

/// Which rule raised an alert. On the wire (`Alert.kind`), in the playbook's keys and on the
/// dashboard it is [`AlertKind::as_str`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum AlertKind {
    /// The speaker's rolling valence crossed a threshold.
    RollingValence,
    /// The customer asked for a human, a complaint, a regulator.
    EscalationRequest,
    /// The customer said the same thing again.
    Repetition,
    /// Negative for a number of turns or seconds in a row.
    SustainedNegativity,
    /// The agent's own turns turned negative.
    AgentStrain,
    /// Guidance: the customer's mood turned (milder than a supervisor alert).
    MoodTurned,
    /// Guidance: the mood that turned recovered (resolves [`AlertKind::MoodTurned`]).
    MoodRecovered,
    /// Guidance: the customer asked for a person, a manager, a complaint: offer the transfer.
    TransferRequested,
    /// Guidance: the customer asked this before in the conversation.
    RepeatedQuestion,
    /// Guidance for the agent themself: strain across their recent conversations.
    BreakSuggested,
    /// Guidance: the brief for the person taking over from a bot.
    HandoffBrief,
    /// The customer contacted us within `customers.window_days` of a contact that ended badly.
    RepeatContact,
}

/// Who an alert-log event is for.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Audience {
    #[default]
    Supervisor,
    Agent,
}

impl AlertKind {
    pub const ALL: [AlertKind; 12] = [
        AlertKind::RollingValence,
        AlertKind::EscalationRequest,
        AlertKind::Repetition,
        AlertKind::SustainedNegativity,
        AlertKind::AgentStrain,
        AlertKind::MoodTurned,
        AlertKind::MoodRecovered,
        AlertKind::TransferRequested,
        AlertKind::RepeatedQuestion,
        AlertKind::BreakSuggested,
        AlertKind::HandoffBrief,
        AlertKind::RepeatContact,
    ];

    /// Who the kind's events are for: supervisors (AlertFeed) or the agent (AgentAssist).
    pub fn audience(self) -> Audience {
        match self {
            AlertKind::RollingValence
            | AlertKind::EscalationRequest
            | AlertKind::Repetition
            | AlertKind::SustainedNegativity
            | AlertKind::AgentStrain
            | AlertKind::RepeatContact => Audience::Supervisor,
            AlertKind::MoodTurned
            | AlertKind::MoodRecovered
            | AlertKind::TransferRequested
            | AlertKind::RepeatedQuestion
            | AlertKind::BreakSuggested
            | AlertKind::HandoffBrief => Audience::Agent,
        }
    }

    /// The kind a wire name (`Alert.kind`) names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::RollingValence => "rolling_valence",
            AlertKind::EscalationRequest => "escalation_request",
            AlertKind::Repetition => "repetition",
            AlertKind::SustainedNegativity => "sustained_negativity",
            AlertKind::AgentStrain => "agent_strain",
            AlertKind::MoodTurned => "mood_turned",
            AlertKind::MoodRecovered => "mood_recovered",
            AlertKind::TransferRequested => "transfer_requested",
            AlertKind::RepeatedQuestion => "repeated_question",
            AlertKind::BreakSuggested => "break_suggested",
            AlertKind::HandoffBrief => "handoff_brief",
            AlertKind::RepeatContact => "repeat_contact",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<&str> for AlertKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_distinct_wire_names() {
        let names: std::collections::BTreeSet<_> =
            AlertKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), AlertKind::ALL.len());
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(AlertKind::parse("rolling"), None);
        assert_eq!(format!("{:<12}|", AlertKind::Repetition), "repetition  |");
    }
}
