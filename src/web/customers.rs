//! The dashboard's customer pages: the silent list (JSON, or CSV to download), one customer, and
//! recording a call-back. The same operations as gRPC `CustomerMemory` (`grpc::customers`).

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Web, WebError};
use crate::auth::Role;
use crate::client::customers::{SILENT_CSV_HEADER, silent_csv_row};
use crate::grpc::customers as ops;
use crate::pb;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SilentParams {
    /// Comma-separated; empty: every tenant the caller may see.
    tenant: String,
    /// The list as it will stand this many days from now.
    in_days: u32,
    limit: u32,
    offset: u32,
    /// `csv` for a download.
    format: String,
}

fn millis(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| {
        json!(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
    })
}

pub(super) fn contact_json(c: &pb::CustomerContact) -> Value {
    json!({
        "conversation_id": c.conversation_id,
        "queue": c.queue,
        "agent_id": c.agent_id,
        "started_at_ms": millis(c.started_at.as_ref()),
        "ended_at_ms": millis(c.ended_at.as_ref()),
        "final_score": c.final_score,
        "lowest_score": c.lowest_score,
        "alert_events": c.alert_events,
        "emotions": c.emotions,
        "outcome": c.outcome,
    })
}

fn record_json(r: &pb::CustomerRecord) -> Value {
    json!({
        "customer_key": r.customer_key,
        "tenant": r.tenant,
        "contacts": r.contacts,
        "bad_contacts": r.bad_contacts,
        "rank": r.rank,
        "recent": r.recent.iter().map(contact_json).collect::<Vec<_>>(),
        "called_at_ms": millis(r.called_at.as_ref()),
        "called_by": r.called_by,
    })
}

/// `GET /api/customers/silent?tenant=&in_days=&limit=&offset=&format=csv`.
pub async fn silent(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(p): Query<SilentParams>,
) -> Result<Response, WebError> {
    let identity = web.identity(&headers, &[Role::Supervisor])?;
    if p.in_days > 3_650 {
        return Err(WebError::bad_request(format!(
            "in_days is {}; the limit is 3650",
            p.in_days
        )));
    }
    let request = pb::ListSilentCustomersRequest {
        tenants: (p.tenant.split(','))
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        as_of: Some(
            (SystemTime::now() + Duration::from_secs(u64::from(p.in_days) * 86_400)).into(),
        ),
        page_size: p.limit,
        offset: p.offset,
    };
    let page = ops::silent(&web.app, &identity, request).await?;
    if p.format == "csv" {
        let mut body = String::from(SILENT_CSV_HEADER);
        body.push('\n');
        for s in &page.customers {
            body.push_str(&silent_csv_row(s));
            body.push('\n');
        }
        return Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"silent-customers.csv\""),
                ),
            ],
            body,
        )
            .into_response());
    }
    let customers: Vec<Value> = (page.customers.iter())
        .map(|s| {
            json!({
                "customer_key": s.customer_key,
                "tenant": s.tenant,
                "contacts": s.contacts,
                "bad_contacts": s.bad_contacts,
                "rank": s.rank,
                "last": s.last.as_ref().map(contact_json),
            })
        })
        .collect();
    Ok(Json(json!({
        "customers": customers,
        "total": page.total,
        "silent_after_days": web.app.config.customers.silent_after_days,
    }))
    .into_response())
}

fn by_key(key: String) -> Option<pb::CustomerRef> {
    Some(pb::CustomerRef {
        customer_key: key,
        ..Default::default()
    })
}

/// `GET /api/customers/{key}`.
pub async fn customer(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<Json<Value>, WebError> {
    let identity = web.identity(&headers, &[Role::Supervisor])?;
    let r = ops::get(&web.app, &identity, by_key(key)).await?;
    Ok(Json(record_json(&r)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CalledBody {
    /// Who, when auth is off; with auth on the token's name is recorded instead.
    called_by: String,
}

/// `POST /api/customers/{key}/called {"called_by": ...}`.
pub async fn called(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Option<Json<CalledBody>>,
) -> Result<Json<Value>, WebError> {
    let identity = web.identity(&headers, &[Role::Supervisor])?;
    let by = body.map(|b| b.0.called_by).unwrap_or_default();
    let by = match by.is_empty() {
        true => "dashboard".to_string(),
        false => by,
    };
    let r = ops::mark_called(&web.app, &identity, by_key(key), by).await?;
    Ok(Json(record_json(&r)))
}
