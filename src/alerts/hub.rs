//! Alert fan-out over the durable log. One writer thread (`alert-writer`) owns everything that
//! writes: it takes commands (publish, acknowledge, retention) from its queue in order and
//! appends each event to the [`AlertLog`], which numbers it, so no SQLite call (nor its fsync, nor
//! a cluster's round trip) ever runs on an async runtime thread. The log hands every durable event
//! (this process's and, in a cluster, every other replica's) to the hub's bounded broadcast ring
//! in sequence order ([`AlertLog::follow`]): the ring carries exactly what is in the log. [`AlertHub::enqueue`] never blocks
//! (the turn pipeline calls it under a conversation's lock, to keep that conversation's events in
//! order); what bounds the queue is the pipeline's limit on completions waiting for their events
//! to be durable (`pipeline::MAX_PUBLISHING`), and the callers of acknowledge and retention, who
//! each wait for their answer. Publishing never waits for subscribers.
//!
//! A subscriber reads the ring at its own pace. Resuming (`after_sequence`) or falling more than
//! the ring behind, it reads the log from the last sequence it delivered until the log has nothing
//! newer, then returns to the ring, skipping what it already delivered: no gap, no duplicate. The
//! ring subscription is taken before the newest delivered sequence is read, so an event is either
//! in the log when it is read or arrives through the ring.
//!
//! A shared log deleted and created again under this replica's copy (cluster mode: NATS lost its
//! storage) restarts its numbering from 1: the log says so ([`Followed::Restarted`]), the hub's
//! newest sequence goes back to 0 and every open subscription ends with [`Delivery::Reset`] (its
//! cursor names events that are gone or other events now); the subscriber resumes from 0.
//!
//! Nothing is delivered live that a resume would not see. When an append fails (disk full, a
//! read-only file, an I/O error), the event waits unnumbered in a bounded in-memory backlog, in
//! order, and every later event waits behind it; the writer retries the backlog every second, and
//! the log numbers and fans out each event once it is durable. While a backlog exists the AlertFeed health is
//! NOT_SERVING (`lib.rs` watches [`AlertHub::unlogged`]) and `emotion_alert_log_backlog` says how
//! many events wait. A backlog full at [`MAX_UNLOGGED`] refuses further events (counted in
//! `emotion_alert_events_dropped_total`, logged as errors): bounded memory over silent growth.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, oneshot, watch};

use super::log::{AlertLog, Followed, LogError, Query};
use super::subscribers::{LimitError, SubscriberLimits, SubscriberPermit};
use super::{Audience, Severity};
use crate::metrics::{AlertLabels, Metrics};
use crate::pb;

/// Events read from the log per query while catching up.
const REPLAY_PAGE: usize = 256;
/// Events held in memory while the log cannot be written.
pub const MAX_UNLOGGED: usize = 10_000;
/// How often the writer retries a backlog.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Sequence numbers, shared between the writer, the log's deliveries and readers of the hub.
struct Sequences {
    /// The last sequence sent to the ring: everything at or below it is in the log.
    delivered: AtomicU64,
    /// Events waiting in the backlog.
    unlogged: AtomicUsize,
    /// Why the log last started again from 1 (changed at each restart; subscriptions taken
    /// before a change end with [`Delivery::Reset`]).
    restarts: watch::Sender<String>,
}

type AckResult = Result<(Arc<pb::Alert>, bool), AckError>;

enum Command {
    Publish(Box<pb::Alert>, oneshot::Sender<Arc<pb::Alert>>),
    Acknowledge {
        alert_id: String,
        by: String,
        note: String,
        tenants: Vec<String>,
        reply: oneshot::Sender<AckResult>,
    },
    Retain {
        max_age: Option<Duration>,
        max_events: u64,
        reply: oneshot::Sender<Result<usize, LogError>>,
    },
    Erase {
        conversation_ids: Vec<String>,
        reply: oneshot::Sender<Result<usize, LogError>>,
    },
}

pub struct AlertHub {
    log: Arc<dyn AlertLog>,
    /// To the writer thread; it stops once the hub (the only sender) is dropped.
    commands: flume::Sender<Command>,
    sequences: Arc<Sequences>,
    /// Bounded ring of recent events; senders never wait for receivers.
    ring: broadcast::Sender<Arc<pb::Alert>>,
    /// Caps open subscriptions (server-wide and per token): each holds a permit.
    subscribers: Arc<SubscriberLimits>,
    metrics: Metrics,
}

/// The writer thread's side: the only code that appends.
struct Writer {
    log: Arc<dyn AlertLog>,
    sequences: Arc<Sequences>,
    /// Events not yet appended (the log failed), oldest first; not yet sent to anyone.
    unlogged: VecDeque<pb::Alert>,
    metrics: Metrics,
}

/// Which alerts a subscriber wants. Empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub tenants: Vec<String>,
    pub queues: Vec<String>,
    pub agent_ids: Vec<String>,
    pub min_severity: Option<Severity>,
    /// Whose events: supervisors' (the default: AlertFeed, the dashboard) or agents' guidance.
    pub audience: Audience,
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
            && alert.audience == super::wire_audience(self.audience) as i32
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
    #[error("the alert writer has stopped")]
    Stopped,
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Why the feed ended.
#[derive(Debug)]
pub enum Delivery {
    Alert(Arc<pb::Alert>),
    /// The log could not be read while catching up.
    Failed(LogError),
    /// The log started again from sequence 1 (why): the subscriber's position means nothing
    /// now; it resumes from 0.
    Reset(String),
    Closed,
}

pub struct Subscription {
    rx: broadcast::Receiver<Arc<pb::Alert>>,
    log: Arc<dyn AlertLog>,
    filter: AlertFilter,
    /// The last sequence delivered or passed over: nothing at or below it is delivered again.
    cursor: u64,
    catching_up: bool,
    pending: VecDeque<Arc<pb::Alert>>,
    /// Changes when the log starts again from 1.
    restarts: watch::Receiver<String>,
    metrics: Metrics,
    _permit: SubscriberPermit,
}

impl AlertHub {
    /// Follows the log from its end and starts the writer thread. Blocking (reads the log).
    pub fn new(
        log: Arc<dyn AlertLog>,
        buffer: usize,
        subscribers: Arc<SubscriberLimits>,
        metrics: Metrics,
    ) -> Result<Self, LogError> {
        let (ring, _) = broadcast::channel(buffer);
        let last = log.last_sequence()?;
        let sequences = Arc::new(Sequences {
            delivered: AtomicU64::new(last),
            unlogged: AtomicUsize::new(0),
            restarts: watch::Sender::new(String::new()),
        });
        let deliver = {
            let (sequences, ring) = (sequences.clone(), ring.clone());
            move |followed: Followed| match followed {
                Followed::Event(alert) => {
                    // A shared log's follower may hand over, while catching up at start, events
                    // below the last sequence read: the mark never moves back but at a restart.
                    sequences
                        .delivered
                        .fetch_max(alert.sequence, Ordering::SeqCst);
                    // An error only means nobody is subscribed right now.
                    let _ = ring.send(alert);
                }
                Followed::Restarted(why) => {
                    // The mark first: a subscription that sees the restart's change reads 0.
                    sequences.delivered.store(0, Ordering::SeqCst);
                    tracing::warn!(%why, "alert log started again from sequence 1: subscribers reset");
                    sequences.restarts.send_replace(why);
                }
            }
        };
        log.follow(last, Box::new(deliver))?;
        let (commands, rx) = flume::unbounded();
        let writer = Writer {
            log: log.clone(),
            sequences: sequences.clone(),
            unlogged: VecDeque::new(),
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("alert-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::Io {
                path: log.describe().into(),
                message: format!("starting the alert writer thread: {e}"),
            })?;
        Ok(Self {
            log,
            commands,
            sequences,
            ring,
            subscribers,
            metrics,
        })
    }

    /// For reads (blocking: call from the blocking pool).
    pub fn log(&self) -> &Arc<dyn AlertLog> {
        &self.log
    }

    /// The sequence of the newest event in the log that the ring has carried (or found in the
    /// log at start): a live subscription taken now starts after it.
    pub fn last_sequence(&self) -> u64 {
        self.sequences.delivered.load(Ordering::SeqCst)
    }

    /// Events waiting for the log to take writes again (0: everything published is durable).
    pub fn unlogged(&self) -> usize {
        self.sequences.unlogged.load(Ordering::SeqCst)
    }

    async fn call<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send_async(command(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Queues the event for the writer (never blocks; events queued in order are published in
    /// that order): it stamps the time and appends the event to the log, which numbers it and
    /// fans it out. The future gives the event as logged, once durable, or once held in the
    /// backlog if the log cannot take it (then with `sequence` 0: see the module docs).
    pub fn enqueue(&self, alert: pb::Alert) -> impl Future<Output = Arc<pb::Alert>> + Send + use<> {
        let (reply, answer) = oneshot::channel();
        let refused = match self.commands.send(Command::Publish(Box::new(alert), reply)) {
            Ok(()) => None,
            Err(flume::SendError(Command::Publish(alert, _))) => {
                // Only if the writer thread died (a panic): said loudly, never silently.
                self.metrics.alert_events_dropped.inc();
                tracing::error!(conversation = %alert.conversation_id, "alert event dropped: the alert writer has stopped");
                Some(Arc::new(*alert))
            }
            Err(_) => unreachable!("a publish command comes back as sent"),
        };
        async move {
            match refused {
                Some(alert) => alert,
                None => answer.await.unwrap_or_default(),
            }
        }
    }

    /// [`enqueue`](Self::enqueue) and wait.
    pub async fn publish(&self, alert: pb::Alert) -> Arc<pb::Alert> {
        self.enqueue(alert).await
    }

    /// Records that `by` took the alert: appends and publishes an ACKNOWLEDGED event copied from
    /// the alert's latest event. Returns it and `true`, or the earlier acknowledgement and `false`.
    /// Runs on the writer thread, between publishes, so two acknowledgements cannot race.
    /// `tenants` limits which tenants' alerts the caller may take (empty: any); others are
    /// reported as not found.
    pub async fn acknowledge(
        &self,
        alert_id: &str,
        by: &str,
        note: &str,
        tenants: &[String],
    ) -> AckResult {
        let (alert_id, by, note, tenants) = (
            alert_id.to_string(),
            by.to_string(),
            note.to_string(),
            tenants.to_vec(),
        );
        self.call(|reply| Command::Acknowledge {
            alert_id,
            by,
            note,
            tenants,
            reply,
        })
        .await
        .unwrap_or_else(|| Err(AckError::Stopped))
    }

    /// Deletes events older than `max_age` and all but the newest `max_events`, on the writer
    /// thread. Returns how many.
    pub async fn apply_retention(
        &self,
        max_age: Option<Duration>,
        max_events: u64,
    ) -> Result<usize, LogError> {
        self.call(|reply| Command::Retain {
            max_age,
            max_events,
            reply,
        })
        .await
        .unwrap_or_else(|| {
            Err(LogError::Io {
                path: self.log.describe().into(),
                message: "the alert writer has stopped".into(),
            })
        })
    }

    /// Blanks the customer's words and pseudonym in the events of these conversations
    /// ([`AlertLog::erase`]), on the writer thread: after every event queued before it. Events
    /// still in the live ring keep theirs until newer events push them out.
    pub async fn erase(&self, conversation_ids: Vec<String>) -> Result<usize, LogError> {
        self.call(|reply| Command::Erase {
            conversation_ids,
            reply,
        })
        .await
        .unwrap_or_else(|| {
            Err(LogError::Io {
                path: self.log.describe().into(),
                message: "the alert writer has stopped".into(),
            })
        })
    }

    /// A live subscription, or with `after` one that first replays every retained event after it.
    /// `token` is the subscriber's token name (None with auth off), for the per-token cap.
    /// Blocking (may read the log).
    pub fn subscribe(
        &self,
        filter: AlertFilter,
        after: Option<u64>,
        token: Option<&str>,
    ) -> Result<Subscription, SubscribeError> {
        let permit = self.subscribers.admit(token)?;
        // The ring and the restarts first, then the newest delivered sequence: see the module
        // docs (a restart after this point ends the subscription).
        let rx = self.ring.subscribe();
        let restarts = self.sequences.restarts.subscribe();
        let last = self.sequences.delivered.load(Ordering::SeqCst);
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
            restarts,
            metrics: self.metrics.clone(),
            _permit: permit,
        })
    }
}

impl Writer {
    fn run(mut self, commands: flume::Receiver<Command>) {
        let mut retried = Instant::now();
        loop {
            match commands.recv_timeout(RETRY_EVERY) {
                Ok(Command::Publish(alert, reply)) => {
                    let _ = reply.send(self.publish(*alert));
                }
                Ok(Command::Acknowledge {
                    alert_id,
                    by,
                    note,
                    tenants,
                    reply,
                }) => {
                    let _ = reply.send(self.acknowledge(&alert_id, &by, &note, &tenants));
                }
                Ok(Command::Retain {
                    max_age,
                    max_events,
                    reply,
                }) => {
                    let _ = reply.send(self.log.apply_retention(max_age, max_events));
                }
                Ok(Command::Erase {
                    conversation_ids,
                    reply,
                }) => {
                    let _ = reply.send(self.log.erase(&conversation_ids));
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => break,
            }
            if !self.unlogged.is_empty() && retried.elapsed() >= RETRY_EVERY {
                self.retry_unlogged();
                retried = Instant::now();
            }
        }
        if !self.unlogged.is_empty() {
            tracing::error!(
                waiting = self.unlogged.len(),
                "alert hub stopped with events the log never took"
            );
        }
    }

    /// Appends the backlog, oldest first (the log fans out each event once it is durable);
    /// stops at the first failure.
    fn retry_unlogged(&mut self) {
        while let Some(alert) = self.unlogged.front() {
            if let Err(error) = self.log.append(alert) {
                tracing::warn!(%error, waiting = self.unlogged.len(), "alert log still not writable");
                break;
            }
            self.unlogged.pop_front();
        }
        if self.unlogged.is_empty() {
            tracing::info!("alert log writable again; backlog delivered");
        }
        self.count_unlogged();
    }

    fn count_unlogged(&self) {
        self.sequences
            .unlogged
            .store(self.unlogged.len(), Ordering::SeqCst);
        self.metrics
            .alert_log_backlog
            .set(self.unlogged.len() as i64);
    }

    fn publish(&mut self, mut alert: pb::Alert) -> Arc<pb::Alert> {
        if self.unlogged.len() >= MAX_UNLOGGED {
            self.metrics.alert_events_dropped.inc();
            tracing::error!(
                conversation = %alert.conversation_id,
                "alert event dropped: the alert log takes no writes and {MAX_UNLOGGED} events wait"
            );
            return Arc::new(alert);
        }
        alert.sequence = 0;
        alert.created_at = Some(SystemTime::now().into());
        let logged = if self.unlogged.is_empty() {
            match self.log.append(&alert) {
                Ok(sequence) => {
                    alert.sequence = sequence;
                    true
                }
                Err(error) => {
                    self.metrics.alert_log_errors.inc();
                    tracing::error!(%error, conversation = %alert.conversation_id, "alert event not logged; held until the log takes writes");
                    false
                }
            }
        } else {
            false
        };
        self.metrics
            .alerts
            .get_or_create(&AlertLabels {
                severity: severity_str(alert.severity),
                state: state_str(alert.state),
            })
            .inc();
        if !logged {
            self.unlogged.push_back(alert.clone());
            self.count_unlogged();
        }
        Arc::new(alert)
    }

    fn acknowledge(
        &mut self,
        alert_id: &str,
        by: &str,
        note: &str,
        tenants: &[String],
    ) -> AckResult {
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
        Ok((self.publish(ack), true))
    }
}

impl Subscription {
    /// The next event matching the filter, in sequence order.
    pub async fn next(&mut self) -> Delivery {
        loop {
            if self.restarts.has_changed().unwrap_or(false) {
                return Delivery::Reset(self.restarts.borrow_and_update().clone());
            }
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
            let received = tokio::select! {
                r = self.rx.recv() => r,
                changed = self.restarts.changed() => match changed {
                    Ok(()) => return Delivery::Reset(self.restarts.borrow_and_update().clone()),
                    Err(_) => return Delivery::Closed,
                },
            };
            match received {
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
        let log = crate::alerts::log::open(&AlertLogConfig {
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
        hub.publish(alert("sales", pb::Severity::Warning)).await;
        hub.publish(alert("billing", pb::Severity::Warning)).await;
        hub.publish(alert("sales", pb::Severity::Critical)).await;
        assert_eq!(take(&mut billing, 1).await, [2]);
        assert_eq!(take(&mut critical, 1).await, [3]);
    }

    #[tokio::test]
    async fn a_lagging_subscriber_catches_up_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path(), 4);
        let mut slow = hub.subscribe(AlertFilter::default(), None, None).unwrap();
        for _ in 0..10 {
            hub.publish(alert("q", pb::Severity::Warning)).await;
        }
        assert_eq!(take(&mut slow, 10).await, (1..=10).collect::<Vec<_>>());
        hub.publish(alert("q", pb::Severity::Warning)).await;
        assert_eq!(take(&mut slow, 1).await, [11], "then live again");
    }

    #[tokio::test]
    async fn resume_replays_then_goes_live_without_gap_or_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        {
            let hub = hub(dir.path(), 16);
            for _ in 0..5 {
                hub.publish(alert("q", pb::Severity::Warning)).await;
            }
        }
        // A restarted hub on the same file continues the numbering.
        let hub = hub(dir.path(), 16);
        let mut resumed = hub
            .subscribe(AlertFilter::default(), Some(2), None)
            .unwrap();
        for _ in 0..3 {
            hub.publish(alert("q", pb::Severity::Warning)).await;
        }
        assert_eq!(take(&mut resumed, 6).await, [3, 4, 5, 6, 7, 8]);
        assert!(matches!(
            hub.subscribe(AlertFilter::default(), Some(9), None),
            Err(SubscribeError::Ahead { after: 9, last: 8 })
        ));
        hub.apply_retention(None, 2).await.unwrap();
        assert!(matches!(
            hub.subscribe(AlertFilter::default(), Some(3), None),
            Err(SubscribeError::Expired { after: 3, first: 7 })
        ));
        let mut from_oldest = hub
            .subscribe(AlertFilter::default(), Some(6), None)
            .unwrap();
        assert_eq!(take(&mut from_oldest, 2).await, [7, 8]);
    }

    /// The embedded log, with what it hands its follower relayed through a switch the test can
    /// also pull: a shared log that started again (a cluster's stream created again).
    struct Restartable {
        inner: crate::alerts::SqliteAlertLog,
        deliver: Arc<std::sync::Mutex<Option<Deliver>>>,
    }

    type Deliver = crate::alerts::log::Deliver;

    impl Restartable {
        fn restart(&self, why: &str) {
            let deliver = self.deliver.lock().unwrap();
            (deliver.as_ref().unwrap())(Followed::Restarted(why.into()));
        }
    }

    impl AlertLog for Restartable {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn last_sequence(&self) -> Result<u64, LogError> {
            self.inner.last_sequence()
        }
        fn first_sequence(&self) -> Result<Option<u64>, LogError> {
            self.inner.first_sequence()
        }
        fn append(&self, alert: &pb::Alert) -> Result<u64, LogError> {
            self.inner.append(alert)
        }
        fn follow(&self, after: u64, deliver: Deliver) -> Result<(), LogError> {
            *self.deliver.lock().unwrap() = Some(deliver);
            let relay = self.deliver.clone();
            self.inner.follow(
                after,
                Box::new(move |f| (relay.lock().unwrap().as_ref().unwrap())(f)),
            )
        }
        fn query(&self, q: &Query) -> Result<Vec<pb::Alert>, LogError> {
            self.inner.query(q)
        }
        fn apply_retention(&self, age: Option<Duration>, n: u64) -> Result<usize, LogError> {
            self.inner.apply_retention(age, n)
        }
        fn erase(&self, conversation_ids: &[String]) -> Result<usize, LogError> {
            self.inner.erase(conversation_ids)
        }
        fn conversations_of(&self, customer: &str) -> Result<Vec<String>, LogError> {
            self.inner.conversations_of(customer)
        }
    }

    /// A log that starts again from 1 ends every open subscription with a reset at once (a live
    /// one waiting for the next event, one still catching up), its newest sequence goes back to
    /// 0, and a subscription taken afterwards from 0 gets what follows.
    #[tokio::test]
    async fn a_log_started_again_resets_every_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Restartable {
            inner: crate::alerts::SqliteAlertLog::open(&AlertLogConfig {
                path: dir.path().join("alerts.sqlite3"),
                ..Default::default()
            })
            .unwrap(),
            deliver: Default::default(),
        });
        let hub = AlertHub::new(
            log.clone(),
            16,
            SubscriberLimits::new(100, 100),
            Metrics::new(),
        )
        .unwrap();
        let mut live = hub.subscribe(AlertFilter::default(), None, None).unwrap();
        for _ in 0..3 {
            hub.publish(alert("q", pb::Severity::Warning)).await;
        }
        assert_eq!(take(&mut live, 1).await, [1]);
        let mut replaying = hub
            .subscribe(AlertFilter::default(), Some(0), None)
            .unwrap();
        assert_eq!(take(&mut replaying, 1).await, [1]);
        assert_eq!(hub.last_sequence(), 3);

        log.restart("created again");
        for sub in [&mut live, &mut replaying] {
            match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
                Ok(Delivery::Reset(why)) => assert_eq!(why, "created again"),
                other => panic!("a reset, not {other:?}"),
            }
        }
        assert_eq!(hub.last_sequence(), 0);
        let mut again = hub
            .subscribe(AlertFilter::default(), Some(0), None)
            .unwrap();
        hub.publish(alert("q", pb::Severity::Warning)).await;
        // (The embedded log itself goes on numbering from 4.)
        assert_eq!(take(&mut again, 1).await, [4]);
    }
}
