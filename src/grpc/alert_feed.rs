//! `AlertFeed`: live and resumed subscriptions (one task per subscriber, reading at its pace),
//! history, and acknowledgements, all over the durable alert log.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{App, convert};
use crate::alerts::AlertFilter;
use crate::alerts::hub::{AckError, Delivery, SubscribeError};
use crate::alerts::log::{LogError, Query};
use crate::auth::{Identity, Role};
use crate::error::RequestError;
use crate::pb;
use crate::pb::alert_feed_server::AlertFeed;

/// Largest `ListAlerts` page.
const MAX_PAGE: u32 = 1_000;
const DEFAULT_PAGE: u32 = 100;
const MAX_ID_BYTES: usize = 128;
const MAX_NOTE_BYTES: usize = 1_024;

pub struct AlertFeedService {
    app: Arc<App>,
}

impl AlertFeedService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

pub(super) type AlertStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::Alert, Status>> + Send>>;

fn filter(
    tenants: Vec<String>,
    queues: Vec<String>,
    agent_ids: Vec<String>,
    min_severity: i32,
) -> Result<AlertFilter, RequestError> {
    let min = convert::severity_from(min_severity).ok_or(RequestError::OutOfRange {
        field: "min_severity",
        actual: min_severity as f32,
        min: 0.0,
        max: 3.0,
    })?;
    Ok(AlertFilter {
        tenants,
        queues,
        agent_ids,
        min_severity: Some(min),
        audience: Default::default(),
    })
}

pub(super) fn log_status(error: LogError) -> Status {
    tracing::error!(%error, "alert log");
    Status::unavailable(format!("alert log unavailable: {error}"))
}

fn check_len(field: &'static str, value: &str, limit: usize) -> Result<(), RequestError> {
    if value.len() > limit {
        return Err(RequestError::TooLong {
            field,
            actual: value.len(),
            limit,
        });
    }
    Ok(())
}

/// A subscription to the durable log's events matching `filter` (resumed after `after`), as a
/// stream: one task per subscriber, reading at its pace. SubscribeAlerts and SubscribeAssist.
pub(super) async fn subscribe(
    app: &Arc<App>,
    identity: &Identity,
    filter: AlertFilter,
    after: Option<u64>,
) -> Result<Response<AlertStream>, Status> {
    let app = app.clone();
    let token = identity.authenticated.then(|| identity.name.clone());
    let subscribe =
        tokio::task::spawn_blocking(move || app.hub.subscribe(filter, after, token.as_deref()));
    let mut subscription = match subscribe
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    {
        Ok(s) => s,
        Err(e @ (SubscribeError::Ahead { .. } | SubscribeError::Expired { .. })) => {
            return Err(Status::out_of_range(e.to_string()));
        }
        Err(SubscribeError::TooMany(e)) => {
            return Err(Status::resource_exhausted(e.to_string()));
        }
        Err(SubscribeError::Log(e)) => return Err(log_status(e)),
    };
    // A small channel: the hub's ring and the log are the subscriber's real buffer.
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let delivery = tokio::select! {
                d = subscription.next() => d,
                _ = tx.closed() => break,
            };
            match delivery {
                Delivery::Alert(alert) => {
                    if tx.send(Ok(alert.as_ref().clone())).await.is_err() {
                        break;
                    }
                }
                Delivery::Failed(error) => {
                    let _ = tx.send(Err(log_status(error))).await;
                    break;
                }
                Delivery::Reset(why) => {
                    // OUT_OF_RANGE like a resume from a position the log no longer has: the
                    // subscriber resumes from 0 (the new log's events from its start).
                    let status = Status::out_of_range(format!(
                        "the alert log started again from sequence 1 ({why}): resubscribe with \
                         after_sequence 0"
                    ));
                    let _ = tx.send(Err(status)).await;
                    break;
                }
                Delivery::Closed => break,
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

#[tonic::async_trait]
impl AlertFeed for AlertFeedService {
    type SubscribeAlertsStream = AlertStream;

    async fn subscribe_alerts(
        &self,
        request: Request<pb::SubscribeAlertsRequest>,
    ) -> Result<Response<Self::SubscribeAlertsStream>, Status> {
        let identity = Identity::require(&request, &[Role::Supervisor])?;
        let req = request.into_inner();
        let tenants = identity.scope_tenants(req.tenants)?;
        let filter = filter(tenants, req.queues, req.agent_ids, req.min_severity)?;
        subscribe(&self.app, &identity, filter, req.after_sequence).await
    }

    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let identity = Identity::require(&request, &[Role::Supervisor])?;
        let req = request.into_inner();
        let tenants = identity.scope_tenants(req.tenants)?;
        let page = match req.page_size {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            n => {
                return Err(RequestError::OutOfRange {
                    field: "page_size",
                    actual: n as f32,
                    min: 0.0,
                    max: MAX_PAGE as f32,
                }
                .into());
            }
        };
        let time = |field: &'static str, t: Option<prost_types::Timestamp>| {
            t.map(|t| {
                std::time::SystemTime::try_from(t).map_err(|_| RequestError::OutOfRange {
                    field,
                    actual: f32::NAN,
                    min: 0.0,
                    max: f32::MAX,
                })
            })
            .transpose()
        };
        let query = Query {
            filter: filter(tenants, req.queues, req.agent_ids, req.min_severity)?,
            alert_id: Some(req.alert_id).filter(|s| !s.is_empty()),
            conversation_id: Some(req.conversation_id).filter(|s| !s.is_empty()),
            since: time("since", req.since)?,
            until: time("until", req.until)?,
            before_sequence: Some(req.before_sequence).filter(|&s| s > 0),
            newest_first: true,
            limit: page as usize,
            ..Default::default()
        };
        let app = self.app.clone();
        let alerts = tokio::task::spawn_blocking(move || app.hub.log().query(&query))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(log_status)?;
        let next_before_sequence = match alerts.last() {
            Some(last) if alerts.len() == page as usize => last.sequence,
            _ => 0,
        };
        Ok(Response::new(pb::ListAlertsResponse {
            alerts,
            next_before_sequence,
        }))
    }

    async fn acknowledge_alert(
        &self,
        request: Request<pb::AcknowledgeAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        let identity = Identity::require(&request, &[Role::Supervisor])?;
        let mut req = request.into_inner();
        if identity.authenticated {
            // Who took it is who called, not what the request says.
            req.supervisor.clone_from(&identity.name);
        }
        if req.alert_id.is_empty() {
            return Err(RequestError::Missing { field: "alert_id" }.into());
        }
        if req.supervisor.trim().is_empty() {
            return Err(RequestError::Missing {
                field: "supervisor",
            }
            .into());
        }
        check_len("alert_id", &req.alert_id, MAX_ID_BYTES)?;
        check_len("supervisor", &req.supervisor, MAX_ID_BYTES)?;
        check_len("note", &req.note, MAX_NOTE_BYTES)?;
        let result = self
            .app
            .hub
            .acknowledge(
                &req.alert_id,
                req.supervisor.trim(),
                &req.note,
                &identity.tenants,
            )
            .await;
        match result {
            Ok((ack, _new)) => Ok(Response::new(ack.as_ref().clone())),
            Err(e @ AckError::NotFound(_)) => Err(Status::not_found(e.to_string())),
            Err(e @ AckError::Stopped) => Err(Status::unavailable(e.to_string())),
            Err(AckError::Log(e)) => Err(log_status(e)),
        }
    }
}
