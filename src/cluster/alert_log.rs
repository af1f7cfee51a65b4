//! The alert log of a cluster: one replicated JetStream stream (`{PREFIX}_ALERTS`, subjects
//! `{prefix}.alerts.{tenant}.{queue}`) whose stream sequence is every alert event's global
//! `sequence`, the same on every replica.
//!
//! Appending publishes the event with a `Nats-Msg-Id` (its idempotency key, below) and waits for
//! the stream's acknowledgement, which carries the sequence: a publish retried after a lost
//! acknowledgement, or the same decision re-published by another replica, comes back as a
//! duplicate with the first one's sequence, so an event is never in the stream twice within the
//! stream's duplicate window.
//!
//! Each replica keeps a copy of the stream in an SQLite file (`alert_log.path`, the embedded
//! log's schema, rows under the stream's sequences): one follower thread reads the stream in
//! order (an ordered consumer, re-created from the next sequence after any error), stores each
//! event in the copy and only then hands it to the hub's fan-out. History, resume, filters and
//! acknowledgements then read the copy, with the embedded log's code and indexes, and a live
//! subscriber on any replica sees exactly the stream's order. The copy is a cache: deleted, it is
//! rebuilt from the stream at the next start; found ahead of the stream (the stream was
//! recreated) it is emptied.
//!
//! Retention is the stream's (`max_age` = `alert_log.retention_days`, `max_messages` =
//! `retention_max_events`, set when the stream is created or updated at start-up); the copy drops
//! what the stream dropped when the hub applies retention.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use sha2::{Digest, Sha256};

use super::{Cluster, ClusterError, token};
use crate::alerts::log::{AlertLog, Deliver, LogError, Query, SqliteAlertLog};
use crate::config::AlertLogConfig;
use crate::pb;

/// How long the stream remembers message ids to drop a re-published event.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
/// Pause before re-creating the follower's consumer after an error.
const FOLLOW_RETRY: Duration = Duration::from_millis(500);
/// The limit of one attempt to create or read the stream at start-up.
const ATTEMPT: Duration = Duration::from_secs(2);
/// Pause between attempts to publish one event.
const PUBLISH_RETRY: Duration = Duration::from_millis(200);
/// A follower that received nothing for this long asks the stream whether it missed something.
const STALL_CHECK: Duration = Duration::from_secs(1);

pub struct JetStreamAlertLog {
    cluster: Arc<Cluster>,
    stream: String,
    subjects: String,
    copy: Arc<SqliteAlertLog>,
    /// The newest sequence in the copy, with a condition variable for `follow`'s catch-up.
    followed: Arc<(Mutex<u64>, Condvar)>,
    /// Set when the log is dropped: the follower thread ends.
    stop: tokio::sync::watch::Sender<bool>,
}

impl JetStreamAlertLog {
    /// Creates (or updates to the configured retention) the stream and opens this replica's copy.
    /// Blocking: call it outside the async runtime.
    pub fn open(cluster: Arc<Cluster>, config: &AlertLogConfig) -> Result<Self, LogError> {
        let stream = cluster.stream_name("ALERTS");
        let subjects = format!("{}.alerts", cluster.config.prefix);
        let stream_config = stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{subjects}.>")],
            max_age: config.max_age().unwrap_or_default(),
            max_messages: config.retention_max_events as i64,
            num_replicas: cluster.config.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let js = cluster.jetstream.clone();
        let state = cluster
            .block_on("creating the alert stream", async move {
                // Replicas starting together race to create it, and a stream being placed
                // may leave a request unanswered: each attempt has a short limit, retried until
                // the operation timeout.
                let mut attempt = 0u32;
                loop {
                    let tried = tokio::time::timeout(ATTEMPT, async {
                        match js.get_stream(&stream_config.name).await {
                            Ok(mut existing) => {
                                let current = existing.info().await.map_err(|e| e.to_string())?;
                                let c = &current.config;
                                if (c.max_age, c.max_messages, c.num_replicas)
                                    != (
                                        stream_config.max_age,
                                        stream_config.max_messages,
                                        stream_config.num_replicas,
                                    )
                                {
                                    let info = js
                                        .update_stream(stream_config.clone())
                                        .await
                                        .map_err(|e| e.to_string())?;
                                    return Ok(info.state);
                                }
                                Ok(current.state.clone())
                            }
                            Err(_) => js
                                .create_stream(stream_config.clone())
                                .await
                                .map(|s| s.cached_info().state.clone())
                                .map_err(|e| e.to_string()),
                        }
                    })
                    .await;
                    match tried {
                        Ok(Ok(state)) => return Ok(state),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, attempt, "creating the alert stream; retrying")
                        }
                        Err(_) => tracing::warn!(attempt, "creating the alert stream: no answer; retrying"),
                    }
                    attempt += 1;
                    tokio::time::sleep(PUBLISH_RETRY).await;
                }
            })
            .map_err(unavailable(&stream))?;
        let copy = Arc::new(SqliteAlertLog::open(config)?);
        let mut last = copy.last_sequence()?;
        if last > state.last_sequence {
            tracing::warn!(
                copy = last,
                stream = state.last_sequence,
                "the local copy of the alert stream is ahead of the stream (recreated?): emptied"
            );
            copy.truncate_below(u64::MAX, true)?;
            last = 0;
        }
        if state.messages > 0 {
            copy.truncate_below(state.first_sequence, false)?;
        }
        let (stop, _) = tokio::sync::watch::channel(false);
        Ok(Self {
            cluster,
            stream,
            subjects,
            copy,
            followed: Arc::new((Mutex::new(last), Condvar::new())),
            stop,
        })
    }

    fn info(&self) -> Result<stream::State, LogError> {
        let js = self.cluster.jetstream.clone();
        let name = self.stream.clone();
        self.cluster
            .block_on("reading the alert stream's state", async move {
                let stream = js.get_stream(&name).await.map_err(|e| e.to_string())?;
                Ok(stream.cached_info().state.clone())
            })
            .map_err(unavailable(&self.stream))
    }
}

impl Drop for JetStreamAlertLog {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The key the stream de-duplicates an event by. A decided event is keyed by what decided it
/// (conversation, turn, kind, state, severity), so the same turn decided again on another
/// replica is the same event; an acknowledgement by its alert (an alert is acknowledged once).
pub fn idempotency_key(alert: &pb::Alert) -> String {
    let key = if alert.state == i32::from(pb::AlertState::Acknowledged) {
        format!("ack\u{0}{}", alert.alert_id)
    } else if alert.audience == i32::from(pb::Audience::Agent) {
        // Guidance is for one agent: a transfer tells the next agent what it told the last.
        let agent = alert.context.as_ref().map_or("", |c| c.agent_id.as_str());
        format!(
            "guidance\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{agent}",
            alert.conversation_id, alert.turn_id, alert.kind, alert.state, alert.severity
        )
    } else {
        format!(
            "event\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            alert.conversation_id, alert.turn_id, alert.kind, alert.state, alert.severity
        )
    };
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

impl AlertLog for JetStreamAlertLog {
    fn describe(&self) -> String {
        format!(
            "JetStream stream {} (local copy {})",
            self.stream,
            self.copy.path().display()
        )
    }

    fn last_sequence(&self) -> Result<u64, LogError> {
        Ok(self.info()?.last_sequence)
    }

    fn first_sequence(&self) -> Result<Option<u64>, LogError> {
        self.copy.first_sequence()
    }

    fn append(&self, alert: &pb::Alert) -> Result<u64, LogError> {
        let context = alert.context.clone().unwrap_or_default();
        let subject = format!(
            "{}.{}.{}",
            self.subjects,
            token(&context.tenant),
            token(&context.queue)
        );
        let mut body = alert.clone();
        body.sequence = 0;
        let publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(body.encode_to_vec()))
            .message_id(idempotency_key(alert));
        let js = self.cluster.jetstream.clone();
        // Retried with the same message id until the operation timeout: a node that died, a
        // stream electing a new leader (a few seconds), a lost acknowledgement. The stream keeps
        // one copy whichever attempt landed.
        let ack = self
            .cluster
            .block_on("publishing an alert event", async move {
                let mut attempt = 0u32;
                loop {
                    let sent = async {
                        js.send_publish(subject.clone(), publish.clone())
                            .await
                            .map_err(|e| e.to_string())?
                            .await
                            .map_err(|e| e.to_string())
                    };
                    // Cut short: a publish sent to a node that died is never acknowledged.
                    let sent = tokio::time::timeout(ATTEMPT, sent);
                    match sent
                        .await
                        .unwrap_or_else(|_| Err("no acknowledgement".into()))
                    {
                        Ok(ack) => return Ok(ack),
                        Err(error) => {
                            attempt += 1;
                            tracing::debug!(%error, attempt, "alert publish failed; retrying");
                            tokio::time::sleep(PUBLISH_RETRY).await;
                        }
                    }
                }
            })
            .map_err(unavailable(&self.stream))?;
        if ack.duplicate {
            tracing::debug!(sequence = ack.sequence, "alert event already in the stream");
        }
        Ok(ack.sequence)
    }

    fn follow(&self, after: u64, deliver: Deliver) -> Result<(), LogError> {
        let follower = Follower {
            js: self.cluster.jetstream.clone(),
            stream: self.stream.clone(),
            copy: self.copy.clone(),
            followed: self.followed.clone(),
            deliver,
            stop: self.stop.subscribe(),
        };
        let runtime = self.cluster.runtime.clone();
        std::thread::Builder::new()
            .name("alert-follower".into())
            .spawn(move || runtime.block_on(follower.run()))
            .map_err(|e| LogError::Io {
                path: self.stream.clone().into(),
                message: format!("starting the alert follower thread: {e}"),
            })?;
        // Catch the copy up to `after` before the hub serves: a subscriber resuming anywhere up to
        // it finds its events in the copy. It may take a while (a long stream, a new replica);
        // it gives up only when no progress is made for the operation timeout.
        let (lock, progress) = &*self.followed;
        let mut at = lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut moved = (*at, Instant::now());
        while *at < after {
            if *at != moved.0 {
                moved = (*at, Instant::now());
            } else if moved.1.elapsed() > self.cluster.config.op_timeout() {
                return Err(LogError::Io {
                    path: self.stream.clone().into(),
                    message: format!(
                        "catching up with the alert stream: at sequence {} of {after}, no progress \
                         for {} ms",
                        *at, self.cluster.config.op_timeout_ms
                    ),
                });
            }
            at = progress
                .wait_timeout(at, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    fn query(&self, q: &Query) -> Result<Vec<pb::Alert>, LogError> {
        self.copy.query(q)
    }

    fn apply_retention(
        &self,
        max_age: Option<Duration>,
        max_events: u64,
    ) -> Result<usize, LogError> {
        // The stream applies its limits itself; the copy drops what the stream no longer has.
        let state = self.info()?;
        let first = if state.messages > 0 {
            state.first_sequence
        } else {
            state.last_sequence + 1
        };
        Ok(self.copy.truncate_below(first, false)?
            + self.copy.apply_retention(max_age, max_events)?)
    }

    fn erase(&self, _conversation_ids: &[String]) -> Result<usize, LogError> {
        // Stream messages cannot be rewritten in place; customer memory is off in cluster mode.
        Err(LogError::Io {
            path: self.stream.clone().into(),
            message: "erasing excerpts from the shared alert stream is not supported".into(),
        })
    }
}

fn unavailable(stream: &str) -> impl Fn(ClusterError) -> LogError + '_ {
    move |e| LogError::Io {
        path: stream.into(),
        message: e.to_string(),
    }
}

/// Reads the stream in order into the copy, then into the hub's fan-out.
struct Follower {
    js: jetstream::Context,
    stream: String,
    copy: Arc<SqliteAlertLog>,
    followed: Arc<(Mutex<u64>, Condvar)>,
    deliver: Deliver,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Follower {
    async fn run(self) {
        let mut stop = self.stop.clone();
        while !*stop.borrow() {
            let next = self.at() + 1;
            let error = tokio::select! {
                e = self.consume(next) => e,
                _ = stop.changed() => break,
            };
            tracing::warn!(%error, next, "following the alert stream; retrying");
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_RETRY) => {}
                _ = stop.changed() => break,
            }
        }
    }

    /// Follows from `next` until an error, which it returns.
    ///
    /// Every request to the stream has a limit of its own (`ATTEMPT`), much shorter than the
    /// client's operation timeout: a request lost while the stream elects a leader (a node died)
    /// would otherwise keep the copy, and every supervisor on this replica, waiting for the
    /// whole operation timeout before the next attempt.
    async fn consume(&self, next: u64) -> String {
        let stream =
            match tokio::time::timeout(ATTEMPT, self.js.get_stream_no_info(&self.stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return format!("opening the stream: {e}"),
                Err(_) => return format!("opening the stream: no answer within {ATTEMPT:?}"),
            };
        let created = tokio::time::timeout(
            ATTEMPT,
            stream.create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: next,
                },
                ..Default::default()
            }),
        )
        .await;
        let consumer = match created {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return format!("creating the ordered consumer: {e}"),
            Err(_) => {
                return format!("creating the ordered consumer: no answer within {ATTEMPT:?}");
            }
        };
        let mut messages = match tokio::time::timeout(ATTEMPT, consumer.messages()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return format!("reading the ordered consumer: {e}"),
            Err(_) => return format!("reading the ordered consumer: no answer within {ATTEMPT:?}"),
        };
        loop {
            let message = match tokio::time::timeout(STALL_CHECK, messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return format!("reading the stream: {e}"),
                Ok(None) => return "the consumer ended".into(),
                Err(_) => {
                    // Quiet, or the consumer died with its node (the client notices only after
                    // two missed 15 s heartbeats): the stream's last sequence says which.
                    match tokio::time::timeout(STALL_CHECK, stream.get_info()).await {
                        Err(_) => return "the stream's state: no answer within 1 s".into(),
                        Ok(Ok(info)) if info.state.last_sequence > self.at() => {
                            return format!(
                                "the consumer stalled at {} while the stream is at {}",
                                self.at(),
                                info.state.last_sequence
                            );
                        }
                        Ok(Ok(info)) => {
                            tracing::debug!(
                                at = self.at(),
                                stream = info.state.last_sequence,
                                "alert stream quiet"
                            );
                            continue;
                        }
                        Ok(Err(e)) => return format!("reading the stream's state: {e}"),
                    }
                }
            };
            let sequence = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(e) => return format!("a message without stream metadata: {e}"),
            };
            let mut alert = match pb::Alert::decode(message.payload.as_ref()) {
                Ok(a) => a,
                Err(e) => {
                    // Not ours (something else published on the subjects): said, and passed over.
                    tracing::error!(sequence, error = %e, "alert stream: a message that does not decode; skipped");
                    self.advance(sequence);
                    continue;
                }
            };
            alert.sequence = sequence;
            let copy = self.copy.clone();
            let stored = {
                let alert = alert.clone();
                tokio::task::spawn_blocking(move || copy.mirror(&alert)).await
            };
            match stored {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return format!("storing event {sequence} in the local copy: {e}"),
                Err(e) => return format!("storing event {sequence} in the local copy: {e}"),
            }
            self.advance(sequence);
            (self.deliver)(Arc::new(alert));
        }
    }

    fn at(&self) -> u64 {
        *self.followed.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn advance(&self, sequence: u64) {
        let (lock, progress) = &*self.followed;
        let mut at = lock.lock().unwrap_or_else(|p| p.into_inner());
        *at = (*at).max(sequence);
        progress.notify_all();
    }
}
