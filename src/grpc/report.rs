//! `QualityReport.GetReport`: the QA report ([`crate::report`]) for what the caller may see.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::{Request, Response, Status};

use super::App;
use crate::auth::{Identity, Role};
use crate::error::RequestError;
use crate::pb;
use crate::pb::quality_report_server::QualityReport;
use crate::pipeline::validate::check_identifier;
use crate::report::{ReportError, ReportQuery};

/// The longest period a report covers.
pub const MAX_DAYS: u64 = 92;
const WEEK: Duration = Duration::from_secs(7 * 86_400);

pub struct QualityReportService {
    app: Arc<App>,
}

impl QualityReportService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn time(
    field: &'static str,
    t: Option<prost_types::Timestamp>,
) -> Result<Option<SystemTime>, Status> {
    t.map(|t| {
        SystemTime::try_from(t).map_err(|_| {
            Status::from(RequestError::OutOfRange {
                field,
                actual: f32::NAN,
                min: 0.0,
                max: f32::MAX,
            })
        })
    })
    .transpose()
}

/// The report as `identity` may see it.
pub async fn report(
    app: &App,
    identity: &Identity,
    req: pb::GetReportRequest,
) -> Result<pb::Report, Status> {
    let limit = app.config.limits.max_context_field_bytes;
    check_identifier("tenant", &req.tenant, limit)?;
    check_identifier("queue", &req.queue, limit)?;
    check_identifier("agent_id", &req.agent_id, limit)?;
    let until = time("until", req.until)?.unwrap_or_else(SystemTime::now);
    let since = time("since", req.since)?.unwrap_or_else(|| until - WEEK);
    let length = until
        .duration_since(since)
        .map_err(|_| Status::invalid_argument("since must be before until"))?;
    if length > Duration::from_secs(MAX_DAYS * 86_400) {
        return Err(Status::invalid_argument(format!(
            "the period is {} days; the limit is {MAX_DAYS}",
            length.as_secs() / 86_400
        )));
    }
    let requested = match req.tenant.is_empty() {
        true => Vec::new(),
        false => vec![req.tenant],
    };
    let query = ReportQuery {
        tenants: identity.scope_tenants(requested)?,
        queue: req.queue,
        agent_id: req.agent_id,
        since,
        until,
        frustrated_below: app.config.assist.mood_turned_below,
    };
    let log = app.hub.log().clone();
    let contacts = app.customers.as_ref().map(|m| m.store.clone());
    tokio::task::spawn_blocking(move || crate::report::report(&*log, contacts.as_deref(), &query))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| match e {
            ReportError::Log(e) => Status::unavailable(e.to_string()),
            ReportError::Contacts(e) => Status::from(e),
        })
}

#[tonic::async_trait]
impl QualityReport for QualityReportService {
    async fn get_report(
        &self,
        request: Request<pb::GetReportRequest>,
    ) -> Result<Response<pb::Report>, Status> {
        let identity = Identity::require(&request, &[Role::Supervisor])?;
        report(&self.app, &identity, request.into_inner())
            .await
            .map(Response::new)
    }
}
