//! In-memory alert fan-out. Publishing never blocks scoring: alerts go into a bounded broadcast
//! ring; each subscriber reads at its own pace and one that falls more than the ring behind is
//! told how many alerts it missed (and counted) rather than silently skipped.
//! Durable history and resume-from-sequence come with the durable alert log.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::broadcast;

use super::{Alert, Severity};
use crate::metrics::{AlertLabels, Metrics};

pub struct AlertHub {
    /// Sequence numbers are assigned under this lock so that they reach the ring in order.
    next_sequence: Mutex<u64>,
    /// Bounded ring of recent alerts; senders never wait for receivers.
    ring: broadcast::Sender<Arc<Alert>>,
    metrics: Metrics,
}

/// Which alerts a subscriber wants. Empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub tenants: Vec<String>,
    pub queues: Vec<String>,
    pub agent_ids: Vec<String>,
    pub min_severity: Option<Severity>,
}

impl AlertFilter {
    pub fn matches(&self, alert: &Alert) -> bool {
        let field = |allowed: &[String], value: &str| {
            allowed.is_empty() || allowed.iter().any(|a| a == value)
        };
        field(&self.tenants, &alert.context.tenant)
            && field(&self.queues, &alert.context.queue)
            && field(&self.agent_ids, &alert.context.agent_id)
            && self.min_severity.is_none_or(|min| alert.severity >= min)
    }
}

/// What a subscriber receives next.
#[derive(Debug)]
pub enum Delivery {
    Alert(Arc<Alert>),
    /// The subscriber fell behind; `missed` alerts (of any filter) were dropped for it.
    Lagged {
        missed: u64,
        next_sequence: u64,
    },
    Closed,
}

pub struct Subscription {
    rx: broadcast::Receiver<Arc<Alert>>,
    filter: AlertFilter,
    metrics: Metrics,
}

impl AlertHub {
    pub fn new(buffer: usize, metrics: Metrics) -> Self {
        let (ring, _) = broadcast::channel(buffer);
        Self {
            next_sequence: Mutex::new(1),
            ring,
            metrics,
        }
    }

    /// Assigns the next sequence number and timestamp and fans the alert out.
    pub fn publish(&self, mut alert: Alert) -> Arc<Alert> {
        let mut next = self.next_sequence.lock().unwrap_or_else(|p| p.into_inner());
        alert.sequence = *next;
        alert.created_at = SystemTime::now();
        *next += 1;
        self.metrics
            .alerts
            .get_or_create(&AlertLabels {
                severity: alert.severity.as_str(),
                state: alert.state.as_str(),
            })
            .inc();
        let alert = Arc::new(alert);
        // An error only means nobody is subscribed right now.
        let _ = self.ring.send(alert.clone());
        alert
    }

    pub fn subscribe(&self, filter: AlertFilter) -> Subscription {
        self.metrics.subscribers.inc();
        Subscription {
            rx: self.ring.subscribe(),
            filter,
            metrics: self.metrics.clone(),
        }
    }
}

impl Subscription {
    /// The next alert matching the filter, a lag notice, or `Closed` when the hub is gone.
    pub async fn next(&mut self) -> Delivery {
        loop {
            match self.rx.recv().await {
                Ok(alert) if self.filter.matches(&alert) => return Delivery::Alert(alert),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.metrics.lagging_subscribers.inc();
                    let next_sequence = match self.rx.try_recv() {
                        Ok(alert) => alert.sequence,
                        Err(_) => 0,
                    };
                    return Delivery::Lagged {
                        missed,
                        next_sequence,
                    };
                }
                Err(broadcast::error::RecvError::Closed) => return Delivery::Closed,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.metrics.subscribers.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertState;
    use crate::conversation::Context;

    fn alert(queue: &str, severity: Severity) -> Alert {
        Alert {
            sequence: 0,
            alert_id: "a".into(),
            conversation_id: "c".into(),
            context: Context {
                queue: queue.into(),
                ..Default::default()
            },
            severity,
            state: AlertState::Raised,
            kind: "rolling_valence",
            rolling_valence: -0.5,
            threshold: -0.35,
            evidence: vec![],
            model_version: "m".into(),
            created_at: SystemTime::UNIX_EPOCH,
            turn_id: 1,
        }
    }

    #[tokio::test]
    async fn filters_and_sequences() {
        let hub = AlertHub::new(16, Metrics::new());
        let mut billing = hub.subscribe(AlertFilter {
            queues: vec!["billing".into()],
            ..Default::default()
        });
        let mut critical = hub.subscribe(AlertFilter {
            min_severity: Some(Severity::Critical),
            ..Default::default()
        });
        hub.publish(alert("sales", Severity::Warning));
        hub.publish(alert("billing", Severity::Warning));
        hub.publish(alert("sales", Severity::Critical));
        match billing.next().await {
            Delivery::Alert(a) => {
                assert_eq!((a.sequence, a.context.queue.as_str()), (2, "billing"))
            }
            other => panic!("{other:?}"),
        }
        match critical.next().await {
            Delivery::Alert(a) => assert_eq!((a.sequence, a.severity), (3, Severity::Critical)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told() {
        let hub = AlertHub::new(4, Metrics::new());
        let mut slow = hub.subscribe(AlertFilter::default());
        for _ in 0..10 {
            hub.publish(alert("q", Severity::Warning));
        }
        match slow.next().await {
            Delivery::Lagged {
                missed,
                next_sequence,
            } => assert_eq!((missed, next_sequence), (6, 7)),
            other => panic!("{other:?}"),
        }
    }
}
