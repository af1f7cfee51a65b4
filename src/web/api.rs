//! The dashboard's JSON endpoints: session, status, alert history and acknowledgement, live
//! conversations, and the heatmap. Each checks the caller's token and tenant scope exactly as the
//! gRPC services do.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::feed::{FeedQuery, alert_json};
use super::{COOKIE, Web, WebError};
use crate::alerts::hub::AckError;
use crate::alerts::log::Query as LogQuery;
use crate::auth::{Identity, Role};
use crate::conversation::Speaker;
use crate::conversation::heatmap::{self, BUCKET};

const MAX_ID_BYTES: usize = 128;
const MAX_NOTE_BYTES: usize = 1_024;
const MAX_HISTORY: usize = 1_000;
const MAX_CONVERSATIONS: usize = 500;
const MAX_HEATMAP_HOURS: u64 = 12;

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn identity_json(id: &Identity, auth_enabled: bool) -> Value {
    json!({
        "auth_enabled": auth_enabled,
        "name": id.name,
        "role": id.role.as_str(),
        "tenants": id.tenants,
        "agent_id": id.agent_id,
    })
}

fn check_len(field: &str, value: &str, limit: usize) -> Result<(), WebError> {
    if value.len() > limit {
        return Err(WebError::bad_request(format!(
            "{field} is {} bytes; the limit is {limit}",
            value.len()
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
    /// `agent` for the agent view (agent or supervisor tokens); else the supervisor dashboard.
    #[serde(default)]
    view: String,
}

/// `POST /api/session {"token": ...}`: checks the token, then keeps it in an HttpOnly cookie.
pub async fn sign_in(State(web): State<Web>, Json(body): Json<SignIn>) -> Response {
    let token = body.token.trim();
    // Tokens are printable ASCII words: anything else could not travel in a header or a cookie.
    let word = |b: u8| b.is_ascii_graphic() && !b";,\"\\".contains(&b);
    let header = (!token.is_empty() && token.len() <= 512 && token.bytes().all(word))
        .then(|| HeaderValue::from_str(&format!("Bearer {token}")).ok())
        .flatten();
    let Some(header) = header else {
        return WebError::bad_request(
            "token must be one word of at most 512 printable ASCII characters",
        )
        .into_response();
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, header);
    let roles: &[Role] = match body.view.as_str() {
        "agent" => &[Role::Agent, Role::Supervisor],
        _ => &[Role::Supervisor],
    };
    let identity = match web.identity(&headers, roles) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    (
        [(header::SET_COOKIE, cookie)],
        Json(identity_json(&identity, web.app.auth.enabled())),
    )
        .into_response()
}

/// `DELETE /api/session`: forgets the cookie.
pub async fn sign_out() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT).into_response()
}

/// `GET /api/status`: the caller, the live model, health.
pub async fn status(State(web): State<Web>, headers: HeaderMap) -> Result<Json<Value>, WebError> {
    let identity = web.identity(&headers, &[Role::Supervisor])?;
    let app = &web.app;
    let model = app.batcher.model();
    let shadow = app.models.shadow().map(|s| s.model.spec.tag.clone());
    Ok(Json(json!({
        "identity": identity_json(&identity, app.auth.enabled()),
        "health": if app.serving.load(Ordering::Relaxed) { "SERVING" } else { "NOT_SERVING" },
        "model": {
            "version": model.spec.tag,
            "labels": model.spec.labels.len(),
            "sha256": model.spec.sha256,
            "loaded_at_ms": millis(model.loaded_at),
            "shadow": shadow,
            "languages": app.batcher.routes().iter().map(|(lang, m)| json!({
                "language": lang.tag(),
                "version": m.spec.tag,
            })).collect::<Vec<_>>(),
        },
        "started_at_ms": millis(app.started_at),
        "conversations_tracked": app.store.tracked(),
        "alert_log_errors": app.metrics.alert_log_errors.get(),
        "last_sequence": app.hub.last_sequence(),
        "redaction": app.config.alerts.redaction.as_str(),
    })))
}

/// `GET /api/alerts?tenant=&queue=&min_severity=&limit=`: the newest events first, and the
/// sequence to resume the live feed after.
pub async fn alerts(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<FeedQuery>,
) -> Result<Json<Value>, WebError> {
    let identity = web.identity(&headers, &[Role::Supervisor])?;
    let filter = query.filter(&identity)?;
    history(&web, filter, query.limit).await
}

/// The newest events `filter` matches (`limit`, default 200), and the sequence to resume after.
async fn history(
    web: &Web,
    filter: crate::alerts::AlertFilter,
    limit: Option<usize>,
) -> Result<Json<Value>, WebError> {
    let limit = limit.unwrap_or(200);
    if !(1..=MAX_HISTORY).contains(&limit) {
        return Err(WebError::bad_request(format!(
            "limit must be in 1..={MAX_HISTORY}, got {limit}"
        )));
    }
    let log_query = LogQuery {
        filter,
        newest_first: true,
        limit,
        ..Default::default()
    };
    // Read before the history: anything newer comes through the feed (the page de-duplicates).
    let last_sequence = web.app.hub.last_sequence();
    let events = web
        .blocking(move |app| app.hub.log().query(&log_query))
        .await?
        .map_err(|e| WebError(StatusCode::SERVICE_UNAVAILABLE, format!("alert log: {e}")))?;
    Ok(Json(json!({
        "last_sequence": last_sequence,
        "alerts": events.iter().map(alert_json).collect::<Vec<_>>(),
    })))
}

/// `GET /api/assist/history?agent_id=&limit=`: the agent's guidance, newest first, and the
/// sequence to resume the live feed after.
pub async fn assist_history(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<super::feed::AssistQuery>,
) -> Result<Json<Value>, WebError> {
    let identity = web.identity(&headers, &[Role::Agent, Role::Supervisor])?;
    let filter = query.filter(&identity)?;
    history(&web, filter, query.limit).await
}

/// `GET /api/conversations/{id}/brief`: the hand-off brief as the conversation stands.
pub async fn brief(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, WebError> {
    let identity = web.identity(&headers, &[Role::Agent, Role::Supervisor])?;
    crate::pipeline::validate::validate_conversation_id(&id, &web.app.config.limits)?;
    let (context, brief) = web
        .app
        .store
        .latest_brief(&id, &identity.tenants)
        .await?
        .filter(|(c, _)| identity.role != Role::Agent || c.agent_id == identity.agent_id)
        .ok_or_else(|| crate::error::RequestError::UnknownConversation(id.clone()))?;
    Ok(Json(super::feed::brief_json(&crate::grpc::convert::brief(
        &id, &context, &brief,
    ))))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AckBody {
    note: String,
    /// Who, when auth is off; with auth on the token's name is recorded instead.
    supervisor: String,
}

/// `POST /api/alerts/{id}/ack {"note": ...}`.
pub async fn acknowledge(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(alert_id): Path<String>,
    Json(body): Json<AckBody>,
) -> Result<Json<Value>, WebError> {
    let identity = web.identity(&headers, &[Role::Supervisor])?;
    let by = if identity.authenticated {
        identity.name.clone()
    } else {
        body.supervisor.trim().to_string()
    };
    if by.is_empty() {
        return Err(WebError::bad_request(
            "supervisor is required when auth is off (who takes the alert)",
        ));
    }
    check_len("alert_id", &alert_id, MAX_ID_BYTES)?;
    check_len("supervisor", &by, MAX_ID_BYTES)?;
    check_len("note", &body.note, MAX_NOTE_BYTES)?;
    let tenants = identity.tenants.clone();
    let acked = web
        .app
        .hub
        .acknowledge(&alert_id, &by, &body.note, &tenants)
        .await;
    match acked {
        Ok((event, _new)) => Ok(Json(alert_json(&event))),
        Err(e @ AckError::NotFound(_)) => Err(WebError(StatusCode::NOT_FOUND, e.to_string())),
        Err(e @ AckError::Stopped) => Err(WebError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(AckError::Log(e)) => Err(WebError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("alert log: {e}"),
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    tenant: String,
    queue: String,
    limit: Option<usize>,
    /// Heatmap only: how many hours back.
    hours: Option<u64>,
}

impl ListQuery {
    fn tenants(&self, identity: &Identity) -> Result<Vec<String>, WebError> {
        let requested = match self.tenant.trim() {
            "" => Vec::new(),
            t => vec![t.to_string()],
        };
        Ok(identity.scope_tenants(requested)?)
    }

    fn queue(&self) -> Option<&str> {
        Some(self.queue.trim()).filter(|q| !q.is_empty())
    }
}

fn emotions(pairs: &[(String, f32)]) -> Vec<Value> {
    pairs
        .iter()
        .map(|(l, p)| json!({ "label": l, "p": p }))
        .collect()
}

/// `GET /api/conversations?tenant=&queue=&limit=`: live conversations, lowest customer rolling
/// score first.
pub async fn conversations(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, WebError> {
    let identity = web.identity(&headers, &[Role::Supervisor])?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_CONVERSATIONS).contains(&limit) {
        return Err(WebError::bad_request(format!(
            "limit must be in 1..={MAX_CONVERSATIONS}, got {limit}"
        )));
    }
    let tenants = query.tenants(&identity)?;
    let queue = query.queue().map(str::to_string);
    let (listed, matched) = web
        .blocking(move |app| app.store.at_risk(&tenants, queue.as_deref(), limit))
        .await?;
    let rows: Vec<Value> = listed
        .iter()
        .map(|c| {
            json!({
                "conversation_id": c.conversation_id,
                "tenant": c.context.tenant,
                "queue": c.context.queue,
                "agent_id": c.context.agent_id,
                "customer_rolling": c.customer_rolling,
                "alert_level": c.alert_level.as_str(),
                "turns": c.turns,
                "trajectory": c.trajectory,
                "dominant_emotions": emotions(&c.dominant),
                "updated_at_ms": millis(c.updated_at),
            })
        })
        .collect();
    Ok(Json(json!({ "matched": matched, "conversations": rows })))
}

/// `GET /api/conversations/{id}`: every retained turn with its scores and (redacted) text.
pub async fn conversation(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, WebError> {
    let identity = web.identity(&headers, &[Role::Supervisor])?;
    check_len("conversation_id", &id, MAX_ID_BYTES)?;
    let view = web.app.store.latest_view(&id, &identity.tenants).await;
    let view = view
        .map_err(|e| WebError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .ok_or_else(|| {
            WebError(
                StatusCode::NOT_FOUND,
                format!("no live conversation {id:?} (ended, evicted, or never seen)"),
            )
        })?;
    let speaker = |s: Speaker| match s {
        Speaker::Customer => "customer",
        Speaker::Agent => "agent",
        Speaker::Bot => "bot",
    };
    let turns: Vec<Value> = view
        .turns
        .iter()
        .map(|t| {
            let top: Vec<(String, f32)> = t
                .model
                .ranked(&t.probs)
                .into_iter()
                .take(3)
                .map(|i| (t.model.labels[i].clone(), t.probs[i]))
                .collect();
            json!({
                "turn_id": t.turn_id,
                "speaker": speaker(t.speaker),
                "text": t.excerpt.as_deref(),
                "valence": t.valence,
                "text_valence": t.text_valence,
                "rolling_valence": t.rolling_valence,
                "alert_level": t.alert_level.as_str(),
                "top_emotions": emotions(&top),
                "model_version": t.model.tag,
            })
        })
        .collect();
    Ok(Json(json!({
        "conversation_id": view.conversation_id,
        "tenant": view.context.tenant,
        "queue": view.context.queue,
        "agent_id": view.context.agent_id,
        "alert_level": view.alert_level.as_str(),
        "speakers": view.speakers.iter().map(|s| json!({
            "speaker": speaker(s.speaker),
            "rolling_valence": s.rolling_valence,
            "turns": s.turns,
        })).collect::<Vec<_>>(),
        "redaction": web.app.config.alerts.redaction.as_str(),
        "turns": turns,
        "started_at_ms": millis(view.started_at),
        "updated_at_ms": millis(view.updated_at),
    })))
}

/// `GET /api/heatmap?tenant=&queue=&hours=`: per (tenant, queue), the 5-minute buckets of the last
/// `hours` (default 2) that had customer turns.
pub async fn heatmap(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, WebError> {
    let identity = web.identity(&headers, &[Role::Supervisor])?;
    let hours = query.hours.unwrap_or(2);
    if !(1..=MAX_HEATMAP_HOURS).contains(&hours) {
        return Err(WebError::bad_request(format!(
            "hours must be in 1..={MAX_HEATMAP_HOURS}, got {hours}"
        )));
    }
    let tenants = query.tenants(&identity)?;
    let now = SystemTime::now();
    let since = now - Duration::from_secs(hours * 3600) + BUCKET;
    let rows = web
        .app
        .store
        .heatmap()
        .snapshot(&tenants, query.queue(), since);
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "tenant": r.key.tenant,
                "queue": r.key.queue,
                "cells": r.cells.iter().map(|c| json!({
                    "start": c.start,
                    "turns": c.turns,
                    "mean_valence": c.mean_valence,
                    "dominant": c.dominant.0,
                    "dominant_turns": c.dominant.1,
                    "dominant_emotion": c.dominant_emotion.as_ref().map(|d| &d.0),
                    "dominant_emotion_turns": c.dominant_emotion.as_ref().map(|d| d.1),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "bucket_secs": BUCKET.as_secs(),
        "from": heatmap::bucket_start(since),
        "to": heatmap::bucket_start(now),
        "rows": rows,
    })))
}
