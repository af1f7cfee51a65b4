//! The dashboard's QA report: `GET /api/report` (JSON, or CSV to download) over the same
//! operation as gRPC `QualityReport.GetReport`, and the page that shows it.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{Web, WebError};
use crate::auth::Role;
use crate::client::report::{change, csv, last_days, number, rows};
use crate::pb;

#[derive(Deserialize)]
#[serde(default)]
pub struct ReportParams {
    tenant: String,
    queue: String,
    agent_id: String,
    days: u32,
    /// `csv` for a download.
    format: String,
}

impl Default for ReportParams {
    fn default() -> Self {
        Self {
            tenant: String::new(),
            queue: String::new(),
            agent_id: String::new(),
            days: 7,
            format: String::new(),
        }
    }
}

/// `GET /api/report?tenant=&queue=&agent_id=&days=7&format=csv`.
pub async fn report(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(p): Query<ReportParams>,
) -> Result<Response, WebError> {
    let identity = web.identity(&headers, &[Role::Supervisor])?;
    if p.days == 0 || u64::from(p.days) > crate::grpc::report::MAX_DAYS {
        return Err(WebError::bad_request(format!(
            "days is {}; it must be 1 to {}",
            p.days,
            crate::grpc::report::MAX_DAYS
        )));
    }
    let (since, until) = last_days(p.days);
    let request = pb::GetReportRequest {
        tenant: p.tenant,
        queue: p.queue,
        agent_id: p.agent_id,
        since: Some(since),
        until: Some(until),
    };
    let r = crate::grpc::report::report(&web.app, &identity, request).await?;
    if p.format == "csv" {
        return Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"qa-report.csv\""),
                ),
            ],
            csv(&r),
        )
            .into_response());
    }
    let current = r.current.clone().unwrap_or_default();
    let metrics: Vec<_> = (rows(&r).into_iter())
        .map(|(metric, now, before)| {
            json!({
                "metric": metric,
                "current": number(&metric, now),
                "previous": number(&metric, before),
                "change": change(&metric, now, before),
            })
        })
        .collect();
    let frustrated: Vec<_> = (current.frustrated.iter())
        .map(|f| {
            json!({
                "conversation_id": f.conversation_id,
                "queue": f.queue,
                "agent_id": f.agent_id,
                "language": f.language,
                "customer_rolling_valence": f.customer_rolling_valence,
                "escalation_phrases": f.escalation_phrases,
            })
        })
        .collect();
    Ok(Json(json!({
        "days": p.days,
        "contacts_recorded": r.contacts_recorded,
        "metrics": metrics,
        "frustrated": frustrated,
    }))
    .into_response())
}
