//! Domain values to and from their protobuf messages.

use crate::alerts::{Alert, AlertState, EvidenceTurn, HandoffBrief, Severity};
use crate::conversation::{
    Context, ConversationSummary, ConversationView, ScoredTurn, Speaker, SpeakerState,
};
use crate::inference::ModelSpec;
use crate::pb;

pub fn speaker(s: Speaker) -> pb::Speaker {
    match s {
        Speaker::Customer => pb::Speaker::Customer,
        Speaker::Agent => pb::Speaker::Agent,
        Speaker::Bot => pb::Speaker::Bot,
    }
}

pub fn speaker_from(value: i32) -> Option<Speaker> {
    match pb::Speaker::try_from(value).ok()? {
        pb::Speaker::Customer => Some(Speaker::Customer),
        pb::Speaker::Agent => Some(Speaker::Agent),
        pb::Speaker::Bot => Some(Speaker::Bot),
        pb::Speaker::Unspecified => None,
    }
}

pub fn severity(s: Severity) -> pb::Severity {
    match s {
        Severity::None => pb::Severity::None,
        Severity::Warning => pb::Severity::Warning,
        Severity::Critical => pb::Severity::Critical,
        Severity::Urgent => pb::Severity::Urgent,
    }
}

pub fn severity_from(value: i32) -> Option<Severity> {
    match pb::Severity::try_from(value).ok()? {
        pb::Severity::None => Some(Severity::None),
        pb::Severity::Warning => Some(Severity::Warning),
        pb::Severity::Critical => Some(Severity::Critical),
        pb::Severity::Urgent => Some(Severity::Urgent),
    }
}

fn alert_state(s: AlertState) -> pb::AlertState {
    match s {
        AlertState::Raised => pb::AlertState::Raised,
        AlertState::Escalated => pb::AlertState::Escalated,
        AlertState::Resolved => pb::AlertState::Resolved,
    }
}

pub fn context(c: &Context) -> pb::Context {
    pb::Context {
        tenant: c.tenant.clone(),
        queue: c.queue.clone(),
        agent_id: c.agent_id.clone(),
        language: c.language.clone(),
        customer_id: String::new(),
        customer_key: c.customer.clone(),
    }
}

pub fn context_from(c: pb::Context) -> Context {
    Context {
        tenant: c.tenant,
        queue: c.queue,
        agent_id: c.agent_id,
        language: c.language,
        customer: c.customer_key,
    }
}

/// Every label with its probability, most probable first.
pub fn emotions(model: &ModelSpec, probs: &[f32]) -> Vec<pb::EmotionScore> {
    model
        .ranked(probs)
        .into_iter()
        .map(|i| pb::EmotionScore {
            label: model.labels[i].clone(),
            probability: probs[i],
        })
        .collect()
}

pub fn predicted_labels(model: &ModelSpec, probs: &[f32]) -> Vec<String> {
    model
        .predicted(probs)
        .into_iter()
        .map(|i| model.labels[i].clone())
        .collect()
}

pub fn turn_result(conversation_id: &str, turn: &ScoredTurn, duplicate: bool) -> pb::TurnResult {
    pb::TurnResult {
        conversation_id: conversation_id.to_string(),
        turn_id: turn.turn_id,
        speaker: speaker(turn.speaker).into(),
        emotions: emotions(&turn.model, &turn.probs),
        labels: predicted_labels(&turn.model, &turn.probs),
        valence: turn.valence,
        text_valence: turn.text_valence,
        rolling_valence: turn.rolling_valence,
        alert_level: severity(turn.alert_level).into(),
        model_version: turn.model.tag.clone(),
        error: None,
        duplicate,
    }
}

pub fn error_result(
    conversation_id: String,
    turn_id: u64,
    code: tonic::Code,
    message: String,
) -> pb::TurnResult {
    pb::TurnResult {
        conversation_id,
        turn_id,
        error: Some(pb::TurnError {
            code: code as i32,
            message,
        }),
        ..Default::default()
    }
}

fn speaker_states(states: &[SpeakerState]) -> Vec<pb::SpeakerState> {
    states
        .iter()
        .map(|s| pb::SpeakerState {
            speaker: speaker(s.speaker).into(),
            rolling_valence: s.rolling_valence,
            turns: s.turns,
        })
        .collect()
}

pub fn conversation(view: &ConversationView) -> pb::Conversation {
    pb::Conversation {
        conversation_id: view.conversation_id.clone(),
        context: Some(context(&view.context)),
        speakers: speaker_states(&view.speakers),
        alert_level: severity(view.alert_level).into(),
        last_turn_id: view.last_turn_id,
        turns: view
            .turns
            .iter()
            .map(|t| turn_result(&view.conversation_id, t, false))
            .collect(),
        started_at: Some(view.started_at.into()),
        updated_at: Some(view.updated_at.into()),
    }
}

pub fn summary(s: &ConversationSummary) -> pb::ConversationSummary {
    pb::ConversationSummary {
        conversation_id: s.conversation_id.clone(),
        context: Some(context(&s.context)),
        turns: s.turns,
        speakers: speaker_states(&s.speakers),
        min_customer_rolling_valence: s.min_customer_rolling_valence,
        alert_events: s.alert_events,
        final_alert_level: severity(s.final_alert_level).into(),
        customer_emotions: s
            .customer_emotions
            .iter()
            .map(|(label, probability)| pb::EmotionScore {
                label: label.clone(),
                probability: *probability,
            })
            .collect(),
        started_at: Some(s.started_at.into()),
        ended_at: Some(s.ended_at.into()),
    }
}

fn scores(pairs: &[(String, f32)]) -> Vec<pb::EmotionScore> {
    pairs
        .iter()
        .map(|(label, probability)| pb::EmotionScore {
            label: label.clone(),
            probability: *probability,
        })
        .collect()
}

fn evidence(e: &EvidenceTurn) -> pb::EvidenceTurn {
    pb::EvidenceTurn {
        turn_id: e.turn_id,
        valence: e.valence,
        top_emotions: scores(&e.top_emotions),
        excerpt: e.excerpt.as_deref().unwrap_or_default().to_string(),
        speaker: speaker(e.speaker).into(),
    }
}

pub fn alert(a: &Alert) -> pb::Alert {
    pb::Alert {
        sequence: 0,
        alert_id: a.alert_id.clone(),
        conversation_id: a.conversation_id.clone(),
        context: Some(context(&a.context)),
        severity: severity(a.severity).into(),
        state: alert_state(a.state).into(),
        kind: a.kind.as_str().to_string(),
        rolling_valence: a.rolling_valence,
        threshold: a.threshold,
        evidence: a.evidence.iter().map(evidence).collect(),
        model_version: a.model_version.clone(),
        created_at: None,
        turn_id: a.turn_id,
        acknowledged_by: String::new(),
        note: String::new(),
        detail: a.detail.clone(),
        dominant_emotions: scores(&a.dominant_emotions),
        trend_start: a.trend_start,
        trend_now: a.trend_now,
        suggestion: a.suggestion.clone(),
        audience: crate::alerts::wire_audience(a.kind.audience()).into(),
        brief: a
            .brief
            .as_deref()
            .map(|b| brief(&a.conversation_id, &a.context, b)),
    }
}

pub fn brief(conversation_id: &str, ctx: &Context, b: &HandoffBrief) -> pb::HandoffBrief {
    pb::HandoffBrief {
        conversation_id: conversation_id.to_string(),
        context: Some(context(ctx)),
        customer_rolling_valence: b.customer_rolling,
        trend_start: b.trend_start,
        trend: b.trend().to_string(),
        dominant_emotions: scores(&b.dominant_emotions),
        mood_drops: b.mood_drops.iter().map(evidence).collect(),
        requests: b
            .requests
            .iter()
            .map(|r| pb::CustomerRequest {
                excerpt: r.excerpt.as_deref().unwrap_or_default().to_string(),
                times: r.times,
                first_turn_id: r.first_turn_id,
                last_turn_id: r.last_turn_id,
            })
            .collect(),
        escalation_phrases: b.escalation_phrases.clone(),
        approach: b.approach.clone(),
        opening_line: b.opening_line.clone(),
        customer_turns: b.customer_turns,
        bot_turns: b.bot_turns,
        language: b.lang.tag().to_string(),
        earlier_contacts: b.earlier_contacts.iter().map(earlier_contact).collect(),
    }
}

pub fn earlier_contact(c: &crate::alerts::EarlierContact) -> pb::CustomerContact {
    let at = |ms: u64| Some((std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).into());
    pb::CustomerContact {
        conversation_id: c.conversation_id.clone(),
        queue: c.queue.clone(),
        agent_id: c.agent_id.clone(),
        started_at: at(c.started_ms),
        ended_at: at(c.ended_ms),
        final_score: c.final_score,
        lowest_score: c.lowest_score,
        alert_events: c.alert_events,
        emotions: c.emotions.clone(),
        outcome: c.outcome.clone(),
    }
}
