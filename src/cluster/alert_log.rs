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
//! rebuilt from the stream at the next start; found ahead of the stream at start (the stream was
//! recreated) it is emptied. A stream created again while the replica runs (NATS lost its
//! storage, an operator deleted it) is found by the follower (`stream::follow`): the copy is
//! emptied in place, the hub told ([`Followed::Restarted`]: its subscribers reset) and the new
//! stream followed from 1.
//!
//! With customer memory on, an event about a customer is published with its customer part
//! (excerpts of their turns, their pseudonym) scrubbed from the payload and the whole event sealed
//! with that customer's key in a header (`cluster::customers`); the follower opens it into the
//! copy. Once the customer is erased (their key with them), the stream's copy of those events
//! reads as scrubbed everywhere.
//!
//! Retention is the stream's (`max_age` = `alert_log.retention_days`, `max_messages` =
//! `retention_max_events`, set when the stream is created or updated at start-up); the copy drops
//! what the stream dropped when the hub applies retention.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use base64::Engine;
use bytes::Bytes;
use prost::Message;
use sha2::{Digest, Sha256};

use super::customers::{CUSTOMER_HEADER, CustomerKey, CustomerKeys, SEALED_HEADER};
use super::stream::Progress;
use super::{Cluster, ClusterError, token};
use crate::alerts::log::{
    AlertLog, Deliver, Followed, LogError, Query, SqliteAlertLog, scrub_customer,
};
use crate::config::AlertLogConfig;
use crate::pb;

/// How long the stream remembers message ids to drop a re-published event.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

pub struct JetStreamAlertLog {
    cluster: Arc<Cluster>,
    stream: String,
    subjects: String,
    copy: Arc<SqliteAlertLog>,
    /// The newest sequence in the copy (`follow` waits on it to catch up).
    followed: Arc<Progress>,
    /// With customer memory on: the customers' keys that seal their part of each event.
    keys: Option<Arc<CustomerKeys>>,
    /// Set when the log is dropped: the follower thread ends.
    stop: tokio::sync::watch::Sender<bool>,
}

impl JetStreamAlertLog {
    /// Creates (or updates to the configured retention) the stream and opens this replica's copy.
    /// With `keys`, the customer's part of an event (excerpts of their turns, their pseudonym) is
    /// published sealed with their key (`cluster::customers`). Blocking: call it outside the
    /// async runtime.
    pub fn open(
        cluster: Arc<Cluster>,
        config: &AlertLogConfig,
        keys: Option<Arc<CustomerKeys>>,
    ) -> Result<Self, LogError> {
        let stream = cluster.stream_name("ALERTS");
        let subjects = format!("{}.alerts", cluster.config.prefix);
        let state = super::stream::ensure(
            &cluster,
            stream::Config {
                name: stream.clone(),
                subjects: vec![format!("{subjects}.>")],
                max_age: config.max_age().unwrap_or_default(),
                max_messages: config.retention_max_events as i64,
                num_replicas: cluster.config.replicas,
                duplicate_window: DUPLICATE_WINDOW,
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
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
            followed: Arc::new(Progress::new(last)),
            keys,
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

    /// The event as published: with a customer and their key, the payload scrubbed of the
    /// customer's part and the whole event sealed in a header.
    fn body(&self, alert: &pb::Alert) -> Result<(Bytes, Option<HeaderMap>), LogError> {
        let mut body = alert.clone();
        body.sequence = 0;
        let customer = customer_of(&body);
        let (Some(keys), false) = (&self.keys, customer.is_empty()) else {
            return Ok((Bytes::from(body.encode_to_vec()), None));
        };
        let (k, who) = (keys.clone(), customer.clone());
        let CustomerKey { handle, key } = self
            .cluster
            .block_on("reading the customer's key", async move {
                k.key(&who, true).await?.ok_or_else(|| "no key".into())
            })
            .map_err(unavailable(&self.stream))?;
        let sealed = super::customers::seal(&key, &handle, &body.encode_to_vec());
        let mut headers = HeaderMap::new();
        // The customer's handle, not their pseudonym (see `customers::is_handle`).
        headers.insert(CUSTOMER_HEADER, handle.as_str());
        headers.insert(
            SEALED_HEADER,
            base64::engine::general_purpose::STANDARD
                .encode(sealed)
                .as_str(),
        );
        scrub_customer(&mut body);
        Ok((Bytes::from(body.encode_to_vec()), Some(headers)))
    }
}

/// The customer (pseudonym) an event is about, if any.
fn customer_of(alert: &pb::Alert) -> String {
    let brief = alert.brief.as_ref().and_then(|b| b.context.as_ref());
    (alert.context.iter().chain(brief))
        .map(|c| c.customer_key.clone())
        .find(|k| !k.is_empty())
        .unwrap_or_default()
}

/// The event a message of the stream holds: its sealed original when the customer's key opens
/// it, else its payload (scrubbed when sealed: the customer was erased). An error when the key
/// could not be read (read again later).
async fn unseal(
    keys: Option<&CustomerKeys>,
    message: &jetstream::Message,
) -> Result<Option<pb::Alert>, String> {
    let Ok(alert) = pb::Alert::decode(message.payload.as_ref()) else {
        return Ok(None);
    };
    let headers = message.headers.as_ref();
    let sealed = (headers.and_then(|h| h.get(SEALED_HEADER)))
        .zip(headers.and_then(|h| h.get(CUSTOMER_HEADER)));
    let (Some(keys), Some((sealed, customer))) = (keys, sealed) else {
        return Ok(Some(alert));
    };
    let handle = customer.as_str();
    let Some(key) = keys.key_of_handle(handle).await? else {
        return Ok(Some(alert));
    };
    let original = base64::engine::general_purpose::STANDARD
        .decode(sealed.as_str())
        .ok()
        .and_then(|s: Vec<u8>| super::customers::open(&key, handle, &s))
        .and_then(|plain| pb::Alert::decode(plain.as_slice()).ok());
    if original.is_none() {
        tracing::error!(
            "alert stream: a sealed event that does not open; its scrubbed payload kept"
        );
    }
    Ok(Some(original.unwrap_or(alert)))
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
        let (payload, headers) = self.body(alert)?;
        let ack = super::stream::publish(
            &self.cluster,
            "publishing an alert event",
            subject,
            payload,
            idempotency_key(alert),
            headers,
        )
        .map_err(unavailable(&self.stream))?;
        if ack.duplicate {
            tracing::debug!(sequence = ack.sequence, "alert event already in the stream");
        }
        Ok(ack.sequence)
    }

    fn follow(&self, after: u64, deliver: Deliver) -> Result<(), LogError> {
        let (js, name) = (self.cluster.jetstream.clone(), self.stream.clone());
        let (copy, keys) = (self.copy.clone(), self.keys.clone());
        let deliver = Arc::new(deliver);
        let (copy_for_rebuild, deliver_for_rebuild) = (self.copy.clone(), deliver.clone());
        let apply = move |sequence: u64, message: jetstream::Message| {
            let (copy, keys, deliver) = (copy.clone(), keys.clone(), deliver.clone());
            async move {
                let Some(mut alert) = unseal(keys.as_deref(), &message).await? else {
                    // Not ours (something else published on the subjects): said, and passed over.
                    tracing::error!(
                        sequence,
                        "alert stream: a message that does not decode; skipped"
                    );
                    return Ok(());
                };
                alert.sequence = sequence;
                let stored = {
                    let alert = alert.clone();
                    tokio::task::spawn_blocking(move || copy.mirror(&alert)).await
                };
                match stored {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(format!("storing it in the local copy: {e}")),
                    Err(e) => return Err(format!("storing it in the local copy: {e}")),
                }
                deliver(Followed::Event(Arc::new(alert)));
                Ok(())
            }
        };
        let rebuild = {
            let (copy, deliver) = (copy_for_rebuild, deliver_for_rebuild);
            move |why: String| {
                let (copy, deliver) = (copy.clone(), deliver.clone());
                async move {
                    // Emptied with its numbering: the new stream's events take their sequences.
                    match tokio::task::spawn_blocking(move || copy.truncate_below(u64::MAX, true))
                        .await
                    {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(format!("emptying the local copy: {e}")),
                        Err(e) => return Err(format!("emptying the local copy: {e}")),
                    }
                    deliver(Followed::Restarted(why));
                    Ok(())
                }
            }
        };
        let (progress, stop) = (self.followed.clone(), self.stop.subscribe());
        let runtime = self.cluster.runtime.clone();
        std::thread::Builder::new()
            .name("alert-follower".into())
            .spawn(move || {
                runtime.block_on(super::stream::follow(
                    js, name, progress, stop, apply, rebuild,
                ))
            })
            .map_err(|e| LogError::Io {
                path: self.stream.clone().into(),
                message: format!("starting the alert follower thread: {e}"),
            })?;
        // Catch the copy up to `after` before the hub serves: a subscriber resuming anywhere up to
        // it finds its events in the copy. It may take a while (a long stream, a new replica);
        // it gives up only when no progress is made for the operation timeout.
        self.followed
            .wait_for(after, self.cluster.config.op_timeout())
            .map_err(|at| LogError::Io {
                path: self.stream.clone().into(),
                message: format!(
                    "catching up with the alert stream: at sequence {at} of {after}, no progress \
                     for {} ms",
                    self.cluster.config.op_timeout_ms
                ),
            })
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

    fn erase(&self, conversation_ids: &[String]) -> Result<usize, LogError> {
        // The stream holds the customer's part of these events sealed with their key, which the
        // customer store erases; this replica's copy is blanked here, the others' when they
        // apply the erasure from the customers stream.
        self.copy.erase(conversation_ids)
    }

    fn conversations_of(&self, customer: &str) -> Result<Vec<String>, LogError> {
        // The copy holds every event unsealed (the stream's are sealed).
        self.copy.conversations_of(customer)
    }

    fn fault(&self) -> Option<String> {
        self.followed.diverged()
    }
}

fn unavailable(stream: &str) -> impl Fn(ClusterError) -> LogError + '_ {
    move |e| LogError::Io {
        path: stream.into(),
        message: e.to_string(),
    }
}
