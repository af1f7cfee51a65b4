//! `AlertFeed`: one task per subscriber, reading the hub at the subscriber's pace.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{App, convert};
use crate::alerts::AlertFilter;
use crate::alerts::hub::Delivery;
use crate::error::RequestError;
use crate::pb;
use crate::pb::alert_feed_server::AlertFeed;

pub struct AlertFeedService {
    app: Arc<App>,
}

impl AlertFeedService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

type AlertStream = Pin<Box<dyn futures::Stream<Item = Result<pb::Alert, Status>> + Send>>;

#[tonic::async_trait]
impl AlertFeed for AlertFeedService {
    type SubscribeAlertsStream = AlertStream;

    async fn subscribe_alerts(
        &self,
        request: Request<pb::SubscribeAlertsRequest>,
    ) -> Result<Response<Self::SubscribeAlertsStream>, Status> {
        let req = request.into_inner();
        let min_severity =
            convert::severity_from(req.min_severity).ok_or(RequestError::OutOfRange {
                field: "min_severity",
                actual: req.min_severity as f32,
                min: 0.0,
                max: 2.0,
            })?;
        let filter = AlertFilter {
            tenants: req.tenants,
            queues: req.queues,
            agent_ids: req.agent_ids,
            min_severity: Some(min_severity),
        };
        let mut subscription = self.app.hub.subscribe(filter);
        // A small channel: the hub's ring is the subscriber's real buffer.
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let delivery = tokio::select! {
                    d = subscription.next() => d,
                    _ = tx.closed() => break,
                };
                match delivery {
                    Delivery::Alert(alert) => {
                        if tx.send(Ok(convert::alert(&alert))).await.is_err() {
                            break;
                        }
                    }
                    Delivery::Lagged {
                        missed,
                        next_sequence,
                    } => {
                        tracing::warn!(missed, "alert subscriber fell behind and was disconnected");
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "subscriber fell behind: {missed} alerts were dropped for it (the next \
                                 available is sequence {next_sequence}); read faster or resubscribe"
                            ))))
                            .await;
                        break;
                    }
                    Delivery::Closed => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
