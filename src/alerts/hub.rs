//! Alert fan-out over the durable log. `publish` assigns the next sequence number, appends the
//! event to the [`AlertLog`], then sends it into a bounded broadcast ring, all under one lock, so
//! the log and the ring see events in sequence order. Publishing never waits for subscribers.
//!
//! A subscriber reads the ring at its own pace. Resuming (`after_sequence`) or falling more than
//! the ring behind, it reads the log from the last sequence it delivered until the log has nothing
//! newer, then returns to the ring, skipping what it already delivered: no gap, no duplicate. The
//! ring subscription is taken before the first log read, so an event is either in the log when it
//! is read or arrives through the ring.
//!
//! Nothing is delivered live that a resume would not see. When an append fails (disk full, a
//! read-only file, an I/O error), the event waits in a bounded in-memory backlog, in sequence
//! order, and every later event waits behind it; [`AlertHub::retry_unlogged`] (every second, from
//! `lib.rs`) appends the backlog once the log takes writes again and only then fans it out. While
//! a backlog exists the AlertFeed health is NOT_SERVING and `emotion_alert_log_backlog` says how
//! many events wait. A backlog full at [`MAX_UNLOGGED`] refuses further events (counted in
//! `emotion_alert_events_dropped_total`, logged as errors): bounded memory over silent growth.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::broadcast;

use super::Severity;
use super::log::{AlertLog, LogError, Query};
use super::subscribers::{LimitError, SubscriberLimits, SubscriberPermit};
use crate::metrics::{AlertLabels, Metrics};
use crate::pb;

/// Events read from the log per query while catching up.
const REPLAY_PAGE: usize = 256;
/// Events held in memory while the log cannot be written.
pub const MAX_UNLOGGED: usize = 10_000;

/// The publishing side, behind one lock: sequence numbers and what the log has not taken yet.
struct Publisher {
    /// The last sequence assigned.
    last: u64,
    /// Events not yet appended (the log failed), oldest first; not yet sent to anyone.
    unlogged: VecDeque<pb::Alert>,
}

pub struct AlertHub {
    log: Arc<AlertLog>,
    /// Held across append and send.
    publisher: Mutex<Publisher>,
    /// Bounded ring of recent events; senders never wait for receivers.
    ring: broadcast::Sender<Arc<pb::Alert>>,
    /// Caps open subscriptions (server-wide and per token): each holds a permit.
    subscribers: Arc<SubscriberLimits>,
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
    pub fn matches(&self, alert: &pb::Alert) -> bool {
        let field = |allowed: &[String], value: &str| {
            allowed.is_empty() || allowed.iter().any(|a| a == value)
        };
        let context = alert.context.as_ref();
        let ctx = |f: fn(&pb::Context) -> &str| context.map_or("", f);
        field(&self.tenants, ctx(|c| &c.tenant))
            && field(&self.queues, ctx(|c| &c.queue))
            && field(&self.agent_ids, ctx(|c| &c.agent_id))
            && self
                .min_severity
                .is_none_or(|min| alert.severity >= min as i32)
    }
}

/// Why a subscription could not start.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error(
        "after_sequence {after} is beyond the newest alert event ({last}); resubscribe without it"
    )]
    Ahead { after: u64, last: u64 },
    #[error(
        "events after sequence {after} up to {} were removed by retention; the oldest retained is {first}",
        first - 1
    )]
    Expired { after: u64, first: u64 },
    #[error(transparent)]
    TooMany(#[from] LimitError),
    #[error(transparent)]
    Log(#[from] LogError),
}

#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("no alert with alert_id {0:?} (unknown, or removed by retention)")]
    NotFound(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Why the feed ended.
#[derive(Debug)]
pub enum Delivery {
    Alert(Arc<pb::Alert>),
    /// The log could not be read while catching up.
    Failed(LogError),
    Closed,
}

pub struct Subscription {
    rx: broadcast::Receiver<Arc<pb::Alert>>,
    log: Arc<AlertLog>,
    filter: AlertFilter,
    /// The last sequence delivered or passed over: nothing at or below it is delivered again.
    cursor: u64,
    catching_up: bool,
    pending: VecDeque<Arc<pb::Alert>>,
    metrics: Metrics,
    _permit: SubscriberPermit,
}

impl AlertHub {
    pub fn new(
        log: AlertLog,
        buffer: usize,
        subscribers: Arc<SubscriberLimits>,
        metrics: Metrics,
    ) -> Result<Self, LogError> {
        let (ring, _) = broadcast::channel(buffer);
        Ok(Self {
            subscribers,
            publisher: Mutex::new(Publisher {
                last: log.last_sequence()?,
                unlogged: VecDeque::new(),
            }),
            log: Arc::new(log),
            ring,
            metrics,
        })
    }

    pub fn log(&self) -> &AlertLog {
        &self.log
    }

    /// The sequence of the newest event published (or found in the log at start).
    pub fn last_sequence(&self) -> u64 {
        self.publisher().last
    }

    fn publisher(&self) -> std::sync::MutexGuard<'_, Publisher> {
        self.publisher.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events waiting for the log to take writes again (0: everything published is durable).
    pub fn unlogged(&self) -> usize {
        self.publisher().unlogged.len()
    }

    /// Appends the backlog, oldest first, fanning out each event once it is durable; stops at
    /// the first failure. Returns how many still wait. Blocking (SQLite).
    pub fn retry_unlogged(&self) -> usize {
        let mut p = self.publisher();
        while let Some(alert) = p.unlogged.front() {
            if let Err(error) = self.log.append(alert) {
                tracing::warn!(%error, waiting = p.unlogged.len(), "alert log still not writable");
                break;
            }
            let alert = Arc::new(p.unlogged.pop_front().expect("front above"));
            let _ = self.ring.send(alert);
        }
        if p.unlogged.is_empty() {
            tracing::info!("alert log writable again; backlog delivered");
        }
        self.metrics.alert_log_backlog.set(p.unlogged.len() as i64);
        p.unlogged.len()
    }

    /// Assigns the next sequence number and the time, appends the event to the log, then fans it
    /// out. If the log cannot take it, it waits in the backlog (see the module docs) and is sent
    /// once durable.
    pub fn publish(&self, alert: pb::Alert) -> Arc<pb::Alert> {
        let mut p = self.publisher();
        self.publish_locked(&mut p, alert)
    }

    fn publish_locked(&self, p: &mut Publisher, mut alert: pb::Alert) -> Arc<pb::Alert> {
        if p.unlogged.len() >= MAX_UNLOGGED {
            self.metrics.alert_events_dropped.inc();
            tracing::error!(
                conversation = %alert.conversation_id,
                "alert event dropped: the alert log takes no writes and {MAX_UNLOGGED} events wait"
            );
            return Arc::new(alert);
        }
        p.last += 1;
        alert.sequence = p.last;
        alert.created_at = Some(SystemTime::now().into());
        let logged = p.unlogged.is_empty()
            && self.log.append(&alert).map_err(|error| {
                self.metrics.alert_log_errors.inc();
                tracing::error!(%error, sequence = alert.sequence, "alert event not logged; held until the log takes writes");
            }).is_ok();
        self.metrics
            .alerts
            .get_or_create(&AlertLabels {
                severity: severity_str(alert.severity),
                state: state_str(alert.state),
            })
            .inc();
        if !logged {
            p.unlogged.push_back(alert.clone());
            self.metrics.alert_log_backlog.set(p.unlogged.len() as i64);
            return Arc::new(alert);
        }
        let alert = Arc::new(alert);
        // An error only means nobody is subscribed right now.
        let _ = self.ring.send(alert.clone());
        alert
    }

    /// Records that `by` took the alert: appends and publishes an ACKNOWLEDGED event copied from
    /// the alert's latest event. Returns it and `true`, or the earlier acknowledgement and `false`.
    /// Blocking (reads the log under the publishing lock, so two acknowledgements cannot race).
    /// `tenants` limits which tenants' alerts the caller may take (empty: any); others are
    /// reported as not found.
    pub fn acknowledge(
        &self,
        alert_id: &str,
        by: &str,
        note: &str,
        tenants: &[String],
    ) -> Result<(Arc<pb::Alert>, bool), AckError> {
        let mut p = self.publisher();
        let events = self.log.query(&Query {
            alert_id: Some(alert_id.to_string()),
            newest_first: true,
            limit: 1,
            ..Default::default()
        })?;
        let visible = |a: &pb::Alert| {
            tenants.is_empty() || tenants.contains(&a.context.clone().unwrap_or_default().tenant)
        };
        let Some(latest) = events.into_iter().next().filter(visible) else {
            return Err(AckError::NotFound(alert_id.to_string()));
        };
        let earlier = self.log.query(&Query {
            alert_id: Some(alert_id.to_string()),
            state: Some(pb::AlertState::Acknowledged.into()),
            limit: 1,
            ..Default::default()
        })?;
        if let Some(ack) = earlier.into_iter().next() {
            return Ok((Arc::new(ack), false));
        }
        let ack = pb::Alert {
            state: pb::AlertState::Acknowledged.into(),
            acknowledged_by: by.to_string(),
            note: note.to_string(),
            ..latest
        };
        Ok((self.publish_locked(&mut p, ack), true))
    }

    /// A live subscription, or with `after` one that first replays every retained event after it.
    /// `token` is the subscriber's token name (None with auth off), for the per-token cap.
    pub fn subscribe(
        &self,
        filter: AlertFilter,
        after: Option<u64>,
        token: Option<&str>,
    ) -> Result<Subscription, SubscribeError> {
        let permit = self.subscribers.admit(token)?;
        let (rx, last) = { (self.ring.subscribe(), self.publisher().last) };
        let cursor = match after {
            None => last,
            Some(after) if after > last => return Err(SubscribeError::Ahead { after, last }),
            Some(after) => {
                // 0 asks for everything retained, whatever that is.
                if let Some(first) = self.log.first_sequence()?
                    && after > 0
                    && after + 1 < first
                    && after < last
                {
                    return Err(SubscribeError::Expired { after, first });
                }
                after
            }
        };
        self.metrics.subscribers.inc();
        Ok(Subscription {
            rx,
            log: self.log.clone(),
            filter,
            cursor,
            catching_up: cursor < last,
            pending: VecDeque::new(),
            metrics: self.metrics.clone(),
            _permit: permit,
        })
    }
}

impl Subscription {
    /// The next event matching the filter, in sequence order.
    pub async fn next(&mut self) -> Delivery {
        loop {
            if let Some(alert) = self.pending.pop_front() {
                self.cursor = alert.sequence;
                return Delivery::Alert(alert);
            }
            if self.catching_up {
                let log = self.log.clone();
                let query = Query {
                    filter: self.filter.clone(),
                    after_sequence: Some(self.cursor),
                    limit: REPLAY_PAGE,
                    ..Default::default()
                };
                match tokio::task::spawn_blocking(move || log.query(&query)).await {
                    Ok(Ok(page)) if page.is_empty() => self.catching_up = false,
                    Ok(Ok(page)) => self.pending.extend(page.into_iter().map(Arc::new)),
                    Ok(Err(error)) => {
                        self.metrics.alert_log_errors.inc();
                        return Delivery::Failed(error);
                    }
                    Err(_) => return Delivery::Closed,
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(alert) if alert.sequence <= self.cursor => continue,
                Ok(alert) if self.filter.matches(&alert) => {
                    self.cursor = alert.sequence;
                    return Delivery::Alert(alert);
                }
                Ok(alert) => self.cursor = alert.sequence,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.metrics.lagging_subscribers.inc();
                    self.catching_up = true;
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

fn severity_str(s: i32) -> &'static str {
    match pb::Severity::try_from(s) {
        Ok(pb::Severity::Warning) => "warning",
        Ok(pb::Severity::Critical) => "critical",
        Ok(pb::Severity::Urgent) => "urgent",
        _ => "none",
    }
}

fn state_str(s: i32) -> &'static str {
    match pb::AlertState::try_from(s) {
        Ok(pb::AlertState::Raised) => "raised",
        Ok(pb::AlertState::Escalated) => "escalated",
        Ok(pb::AlertState::Resolved) => "resolved",
        Ok(pb::AlertState::Acknowledged) => "acknowledged",
        _ => "unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AlertLogConfig;

    fn hub(dir: &std::path::Path, buffer: usize) -> AlertHub {
        let log = AlertLog::open(&AlertLogConfig {
            path: dir.join("alerts.sqlite3"),
            ..Default::default()
        })
        .unwrap();
        AlertHub::new(log, buffer, SubscriberLimits::new(100, 100), Metrics::new()).unwrap()
    }

    fn alert(queue: &str, severity: pb::Severity) -> pb::Alert {
        pb::Alert {
            alert_id: "a".into(),
            conversation_id: "c".into(),
            context: Some(pb::Context {
                queue: queue.into(),
                ..Default::default()
            }),
            severity: severity.into(),
            state: pb::AlertState::Raised.into(),
            ..Default::default()
        }
    }

    async fn take(sub: &mut Subscription, n: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        for _ in 0..n {
            match sub.next().await {
                Delivery::Alert(a) => seqs.push(a.sequence),
                other => panic!("{other:?}"),
            }
        }
        seqs
    }

    #[tokio::test]
    async fn filters_and_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path(), 16);
        let mut billing = hub
            .subscribe(
                AlertFilter {
                    queues: vec!["billing".into()],
                    ..Default::default()
                },
                None,
                None,
            )
            .unwrap();
        let mut critical = hub
            .subscribe(
                AlertFilter {
                    min_severity: Some(Severity::Critical),
                    ..Default::default()
                },
                None,
                None,
            )
            .unwrap();
        hub.publish(alert("sales", pb::Severity::Warning));
        hub.publish(alert("billing", pb::Severity::Warning));
        hub.publish(alert("sales", pb::Severity::Critical));
        assert_eq!(take(&mut billing, 1).await, [2]);
        assert_eq!(take(&mut critical, 1).await, [3]);
    }

    #[tokio::test]
    async fn a_lagging_subscriber_catches_up_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path(), 4);
        let mut slow = hub.subscribe(AlertFilter::default(), None, None).unwrap();
        for _ in 0..10 {
            hub.publish(alert("q", pb::Severity::Warning));
        }
        assert_eq!(take(&mut slow, 10).await, (1..=10).collect::<Vec<_>>());
        hub.publish(alert("q", pb::Severity::Warning));
        assert_eq!(take(&mut slow, 1).await, [11], "then live again");
    }

    #[tokio::test]
    async fn resume_replays_then_goes_live_without_gap_or_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        {
            let hub = hub(dir.path(), 16);
            for _ in 0..5 {
                hub.publish(alert("q", pb::Severity::Warning));
            }
        }
        // A restarted hub on the same file continues the numbering.
        let hub = hub(dir.path(), 16);
        let mut resumed = hub
            .subscribe(AlertFilter::default(), Some(2), None)
            .unwrap();
        for _ in 0..3 {
            hub.publish(alert("q", pb::Severity::Warning));
        }
        assert_eq!(take(&mut resumed, 6).await, [3, 4, 5, 6, 7, 8]);
        assert!(matches!(
            hub.subscribe(AlertFilter::default(), Some(9), None),
            Err(SubscribeError::Ahead { after: 9, last: 8 })
        ));
        hub.log().apply_retention(None, 2).unwrap();
        assert!(matches!(
            hub.subscribe(AlertFilter::default(), Some(3), None),
            Err(SubscribeError::Expired { after: 3, first: 7 })
        ));
        let mut from_oldest = hub
            .subscribe(AlertFilter::default(), Some(6), None)
            .unwrap();
        assert_eq!(take(&mut from_oldest, 2).await, [7, 8]);
    }
}
