//! The live alert feed as Server-Sent Events, and alert events as JSON.
//!
//! Each event is `event: alert`, `id: <log sequence>`, `data: <alert JSON>`. A reconnecting
//! EventSource sends `Last-Event-ID`; the stream then replays every event after it from the
//! durable log before going live (the hub's seam: no gap, no duplicate). When that sequence can
//! no longer be resumed (ahead of the log, i.e. a new log file, or removed by retention) the
//! stream sends one `event: reset` and ends: the page reloads its history and subscribes anew.
//! So does a live stream when the log starts again from 1 (cluster mode: the alert stream was
//! created again).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Web, WebError};
use crate::alerts::AlertFilter;
use crate::alerts::hub::{Delivery, SubscribeError, Subscription};
use crate::auth::{Identity, Role};
use crate::grpc::convert;
use crate::pb;

/// The filters every alert endpoint takes: `?tenant=&queue=&min_severity=` (one value each;
/// empty: all).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FeedQuery {
    pub tenant: String,
    pub queue: String,
    /// `warning`, `critical` or `urgent`; empty: all.
    pub min_severity: String,
    /// Resume after this sequence (overridden by a `Last-Event-ID` header).
    pub after: Option<u64>,
    /// History page size (`/api/alerts` only).
    pub limit: Option<usize>,
}

impl FeedQuery {
    /// The hub filter this query asks for, narrowed to what `identity` may see.
    pub fn filter(&self, identity: &Identity) -> Result<AlertFilter, WebError> {
        let one = |v: &str| match v.trim() {
            "" => Vec::new(),
            v => vec![v.to_string()],
        };
        let min_severity = match self.min_severity.trim().to_ascii_lowercase().as_str() {
            "" | "none" => None,
            "warning" => Some(crate::alerts::Severity::Warning),
            "critical" => Some(crate::alerts::Severity::Critical),
            "urgent" => Some(crate::alerts::Severity::Urgent),
            other => {
                return Err(WebError::bad_request(format!(
                    "min_severity must be warning, critical or urgent, got {other:?}"
                )));
            }
        };
        Ok(AlertFilter {
            tenants: identity.scope_tenants(one(&self.tenant))?,
            queues: one(&self.queue),
            agent_ids: Vec::new(),
            min_severity,
            audience: Default::default(),
        })
    }
}

/// `GET /api/alerts/stream`.
pub async fn stream(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<FeedQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    let identity = web.identity(&headers, &[Role::Supervisor])?;
    let filter = query.filter(&identity)?;
    sse(web, &headers, &identity, filter, query.after).await
}

/// What the agent view asks for: `?agent_id=&after=&limit=`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AssistQuery {
    pub agent_id: String,
    pub after: Option<u64>,
    pub limit: Option<usize>,
}

impl AssistQuery {
    /// The guidance of the agent asked for, if `identity` may read it.
    pub fn filter(&self, identity: &Identity) -> Result<AlertFilter, WebError> {
        identity.may_read_agent(&self.agent_id)?;
        Ok(AlertFilter {
            tenants: identity.scope_tenants(Vec::new())?,
            agent_ids: vec![self.agent_id.clone()],
            audience: crate::alerts::Audience::Agent,
            ..Default::default()
        })
    }
}

/// `GET /api/assist/stream?agent_id=`: the agent's guidance, resumable like the alert feed.
pub async fn assist_stream(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<AssistQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    let identity = web.identity(&headers, &[Role::Agent, Role::Supervisor])?;
    let filter = query.filter(&identity)?;
    sse(web, &headers, &identity, filter, query.after).await
}

/// The events `filter` matches as Server-Sent Events, resumed after `Last-Event-ID` (else
/// `after`).
async fn sse(
    web: Web,
    headers: &HeaderMap,
    identity: &Identity,
    filter: AlertFilter,
    after: Option<u64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, WebError> {
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            let v = v
                .to_str()
                .map_err(|_| WebError::bad_request("Last-Event-ID is not visible ASCII"))?;
            v.trim().parse::<u64>().map_err(|_| {
                WebError::bad_request(format!("Last-Event-ID {v:?} is not a sequence"))
            })
        })
        .transpose()?;
    let after = last_event_id.or(after);
    let token = identity.authenticated.then(|| identity.name.clone());
    let subscribed = web
        .blocking(move |app| app.hub.subscribe(filter, after, token.as_deref()))
        .await?;
    let first = match subscribed {
        Ok(subscription) => Ok(subscription),
        Err(e @ (SubscribeError::Ahead { .. } | SubscribeError::Expired { .. })) => {
            Err(Event::default().event("reset").data(e.to_string()))
        }
        Err(SubscribeError::TooMany(e)) => {
            return Err(WebError(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                e.to_string(),
            ));
        }
        Err(SubscribeError::Log(e)) => {
            return Err(WebError(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("alert log unavailable: {e}"),
            ));
        }
    };
    let state = match first {
        Ok(subscription) => Feed::Live(Box::new(subscription), web.stopping.clone()),
        Err(reset) => Feed::Reset(reset),
    };
    let greeting = Event::default()
        .retry(Duration::from_secs(1))
        .comment("resumable: reconnect with Last-Event-ID");
    let events = futures::stream::once(async { Ok(greeting) }).chain(futures::stream::unfold(
        state,
        |state| async move {
            match state {
                Feed::Done => None,
                Feed::Reset(event) => Some((Ok(event), Feed::Done)),
                Feed::Live(mut subscription, mut stopping) => {
                    let delivery = tokio::select! {
                        d = subscription.next() => d,
                        _ = stopping.wait_for(|s| *s) => return None,
                    };
                    match delivery {
                        Delivery::Alert(alert) => {
                            let event = Event::default()
                                .event("alert")
                                .id(alert.sequence.to_string())
                                .data(alert_json(&alert).to_string());
                            Some((Ok(event), Feed::Live(subscription, stopping)))
                        }
                        Delivery::Failed(error) => {
                            // Ending the response makes the browser reconnect and resume.
                            tracing::error!(%error, "alert feed: the log could not be read");
                            None
                        }
                        Delivery::Reset(why) => {
                            let event = Event::default().event("reset").data(format!(
                                "the alert log started again from sequence 1: {why}"
                            ));
                            Some((Ok(event), Feed::Done))
                        }
                        Delivery::Closed => None,
                    }
                }
            }
        },
    ));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

enum Feed {
    Live(Box<Subscription>, watch::Receiver<bool>),
    Reset(Event),
    Done,
}

fn emotions(scores: &[pb::EmotionScore]) -> Vec<Value> {
    scores
        .iter()
        .map(|s| json!({ "label": s.label, "p": s.probability }))
        .collect()
}

/// An alert event as the page reads it.
pub fn alert_json(a: &pb::Alert) -> Value {
    let ctx = a.context.clone().unwrap_or_default();
    let severity = convert::severity_from(a.severity).unwrap_or(crate::alerts::Severity::None);
    let state = pb::AlertState::try_from(a.state).unwrap_or(pb::AlertState::Unspecified);
    json!({
        "sequence": a.sequence,
        "alert_id": a.alert_id,
        "conversation_id": a.conversation_id,
        "tenant": ctx.tenant,
        "queue": ctx.queue,
        "agent_id": ctx.agent_id,
        "severity": severity.as_str(),
        "state": state.as_str_name().trim_start_matches("ALERT_STATE_"),
        "kind": a.kind,
        "rolling_valence": a.rolling_valence,
        "threshold": a.threshold,
        "turn_id": a.turn_id,
        "model_version": a.model_version,
        "created_at_ms": a.created_at.map(|t| t.seconds * 1_000 + i64::from(t.nanos) / 1_000_000),
        "acknowledged_by": a.acknowledged_by,
        "note": a.note,
        "detail": a.detail,
        "suggestion": a.suggestion,
        "trend_start": a.trend_start,
        "trend_now": a.trend_now,
        "dominant_emotions": emotions(&a.dominant_emotions),
        "audience": if a.audience == pb::Audience::Agent as i32 { "agent" } else { "supervisor" },
        "brief": a.brief.as_ref().map(brief_json),
        "evidence": a.evidence.iter().map(|e| json!({
            "turn_id": e.turn_id,
            "valence": e.valence,
            "excerpt": e.excerpt,
            "top_emotions": emotions(&e.top_emotions),
        })).collect::<Vec<_>>(),
    })
}

/// A hand-off brief as the pages read it.
pub fn brief_json(b: &pb::HandoffBrief) -> Value {
    json!({
        "conversation_id": b.conversation_id,
        "customer_rolling_valence": b.customer_rolling_valence,
        "trend_start": b.trend_start,
        "trend": b.trend,
        "dominant_emotions": emotions(&b.dominant_emotions),
        "mood_drops": b.mood_drops.iter().map(|e| json!({
            "turn_id": e.turn_id,
            "valence": e.valence,
            "excerpt": e.excerpt,
            "top_emotions": emotions(&e.top_emotions),
        })).collect::<Vec<_>>(),
        "requests": b.requests.iter().map(|r| json!({
            "excerpt": r.excerpt,
            "times": r.times,
            "first_turn_id": r.first_turn_id,
            "last_turn_id": r.last_turn_id,
        })).collect::<Vec<_>>(),
        "escalation_phrases": b.escalation_phrases,
        "approach": b.approach,
        "opening_line": b.opening_line,
        "customer_turns": b.customer_turns,
        "bot_turns": b.bot_turns,
        "language": b.language,
        "earlier_contacts": b.earlier_contacts.iter().map(super::customers::contact_json).collect::<Vec<_>>(),
    })
}
