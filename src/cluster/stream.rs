//! What every stream this replica keeps in JetStream needs: creating it (or updating its limits)
//! at start-up, publishing to it with a message id until the stream acknowledges, and following
//! it in order into a local copy ([`follow`], with the [`Progress`] a writer waits on to read its
//! own write from the copy).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;

use super::{Cluster, ClusterError};

/// The limit of one request to the stream: a request lost while the stream elects a leader (a
/// node died) would otherwise wait for the client's whole operation timeout.
pub const ATTEMPT: Duration = Duration::from_secs(2);
/// Pause between attempts of one publish or of creating the stream.
const RETRY: Duration = Duration::from_millis(200);
/// Pause before re-creating a follower's consumer after an error.
const FOLLOW_RETRY: Duration = Duration::from_millis(500);
/// A follower that received nothing for this long asks the stream whether it missed something.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Creates the stream, or updates it when its limits (age, messages, replicas) differ; returns
/// its state. Retried until the operation timeout: replicas starting together race to create it,
/// and a stream being placed may leave a request unanswered.
pub fn ensure(cluster: &Cluster, config: stream::Config) -> Result<stream::State, ClusterError> {
    let js = cluster.jetstream.clone();
    cluster
        .runtime
        .block_on(ensure_async(js, config, cluster.config.op_timeout()))
}

/// [`ensure`] from async code. After `patience`, the last attempt's error (a node that will not
/// take the stream says why, e.g. a single node asked for 3 replicas).
pub async fn ensure_async(
    js: jetstream::Context,
    config: stream::Config,
    patience: Duration,
) -> Result<stream::State, ClusterError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut attempt = 0u32;
    loop {
        let tried = tokio::time::timeout(ATTEMPT, async {
            match js.get_stream(&config.name).await {
                Ok(mut existing) => {
                    let current = existing.info().await.map_err(|e| e.to_string())?;
                    let c = &current.config;
                    if (c.max_age, c.max_messages, c.num_replicas)
                        != (config.max_age, config.max_messages, config.num_replicas)
                    {
                        let info = js
                            .update_stream(config.clone())
                            .await
                            .map_err(|e| e.to_string())?;
                        return Ok(info.state);
                    }
                    Ok(current.state.clone())
                }
                Err(_) => js
                    .create_stream(config.clone())
                    .await
                    .map(|s| s.cached_info().state.clone())
                    .map_err(|e| e.to_string()),
            }
        })
        .await;
        let error = match tried {
            Ok(Ok(state)) => return Ok(state),
            Ok(Err(e)) => e,
            Err(_) => "no answer".to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            let hint = match error.contains("non-clustered mode") {
                true => " (a single NATS node: set cluster.replicas = 1)",
                false => "",
            };
            return Err(ClusterError::JetStream(format!(
                "creating the stream {}: {error}{hint}",
                config.name
            )));
        }
        tracing::warn!(%error, attempt, stream = %config.name, "creating the stream; retrying");
        attempt += 1;
        tokio::time::sleep(RETRY).await;
    }
}

/// Publishes `payload` to `subject` with `message_id` (and `headers`), retried with the same id
/// until the stream acknowledges or the operation timeout passes: a node that died, a stream
/// electing a new leader, a lost acknowledgement. The stream keeps one copy whichever attempt
/// landed (within its duplicate window). Blocking: call it outside the async runtime.
pub fn publish(
    cluster: &Cluster,
    what: &str,
    subject: String,
    payload: Bytes,
    message_id: String,
    headers: Option<HeaderMap>,
) -> Result<jetstream::publish::PublishAck, ClusterError> {
    let mut message = jetstream::message::PublishMessage::build()
        .payload(payload)
        .message_id(message_id);
    if let Some(headers) = headers {
        message = message.headers(headers);
    }
    let js = cluster.jetstream.clone();
    cluster.block_on(what, async move {
        let mut attempt = 0u32;
        loop {
            let sent = async {
                js.send_publish(subject.clone(), message.clone())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            };
            // Cut short: a publish sent to a node that died is never acknowledged.
            match tokio::time::timeout(ATTEMPT, sent)
                .await
                .unwrap_or_else(|_| Err("no acknowledgement".into()))
            {
                Ok(ack) => return Ok(ack),
                Err(error) => {
                    attempt += 1;
                    tracing::debug!(%error, attempt, %subject, "publish failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    })
}

/// The newest stream sequence a follower has applied to its copy, for writers and readers that
/// wait for it; and whether the stream is still the one the copy was built from.
#[derive(Default)]
pub struct Progress {
    at: Mutex<u64>,
    moved: Condvar,
    /// When the stream followed was created (Unix nanoseconds), as first seen.
    origin: Mutex<Option<i128>>,
    /// Why the copy no longer matches the stream (it was deleted and created again, e.g. after
    /// NATS lost its storage): its sequences mean other events now. Reported until [`follow`]'s
    /// `rebuild` has emptied the copy and following starts again from the new stream's start.
    diverged: Mutex<Option<String>>,
}

impl Progress {
    pub fn new(at: u64) -> Self {
        Self {
            at: Mutex::new(at),
            ..Default::default()
        }
    }

    /// Why the copy no longer matches the stream; None while it does.
    pub fn diverged(&self) -> Option<String> {
        self.diverged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks the stream's identity (its creation time) and length against the copy: a stream
    /// created since the copy was first checked against it, or one shorter than the copy, is
    /// another stream. Returns why, once diverged. (Checked when a consumer is created, when it
    /// answers in time, and whenever the stream is quiet: a stream created again under the copy
    /// is quiet to its follower at first, whose consumer starts past its end.)
    fn check(&self, name: &str, info: &stream::Info) -> Option<String> {
        let mut origin = self.origin.lock().unwrap_or_else(|p| p.into_inner());
        let created = info.created.unix_timestamp_nanos();
        let why = match *origin {
            Some(first) if first != created => Some(format!(
                "the stream {name} was created again at {}: NATS lost it, or it was deleted",
                info.created
            )),
            _ if info.state.last_sequence < self.at() => Some(format!(
                "the stream {name} ends at sequence {} but this replica's copy holds {}: NATS \
                 lost part of it, or it was created again",
                info.state.last_sequence,
                self.at()
            )),
            _ => None,
        };
        origin.get_or_insert(created);
        let why = why?;
        let mut diverged = self.diverged.lock().unwrap_or_else(|p| p.into_inner());
        if diverged.is_none() {
            tracing::error!(stream = name, %why, "the local copy no longer matches the stream: rebuilding it from the stream's start");
            *diverged = Some(why.clone());
        }
        Some(why)
    }

    /// The copy was emptied for the stream created at `created`: following starts again from its
    /// first sequence, and the copy matches the stream again.
    fn rebase(&self, created: i128) {
        *self.origin.lock().unwrap_or_else(|p| p.into_inner()) = Some(created);
        *self.at.lock().unwrap_or_else(|p| p.into_inner()) = 0;
        *self.diverged.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn at(&self) -> u64 {
        *self.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn advance(&self, sequence: u64) {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        *at = (*at).max(sequence);
        self.moved.notify_all();
    }

    /// Blocks until the copy holds `sequence`. Gives up (returning where it stands) only when no
    /// progress was made for `patience`: catching up a long stream may take a while.
    pub fn wait_for(&self, sequence: u64, patience: Duration) -> Result<(), u64> {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        let mut moved = (*at, Instant::now());
        while *at < sequence {
            if *at != moved.0 {
                moved = (*at, Instant::now());
            } else if moved.1.elapsed() > patience {
                return Err(*at);
            }
            at = self
                .moved
                .wait_timeout(at, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }
}

/// Why [`consume`] stopped.
enum Stopped {
    Error(String),
    /// The stream is another one than the copy was built from (`why`), created at `created`.
    Replaced {
        why: String,
        created: i128,
    },
}

/// Reads `stream` in order from the sequence after `progress`, handing each message to `apply`
/// and advancing `progress` once it returns; re-creates its ordered consumer from the next
/// sequence after any error, until `stop` turns true. `apply` returns an error to have the
/// message read again (its copy could not store it). When the stream turns out to be another
/// one (deleted and created again: NATS lost its storage), `rebuild` empties the copy (or readies
/// it to take the stream again from its start) and following starts again from sequence 1; until
/// `rebuild` succeeds, [`Progress::diverged`] reports it.
pub async fn follow<F, Fut, R, RFut>(
    js: jetstream::Context,
    stream: String,
    progress: std::sync::Arc<Progress>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    apply: F,
    rebuild: R,
) where
    F: Fn(u64, jetstream::Message) -> Fut,
    Fut: Future<Output = Result<(), String>>,
    R: Fn(String) -> RFut,
    RFut: Future<Output = Result<(), String>>,
{
    while !*stop.borrow() {
        let next = progress.at() + 1;
        let stopped = tokio::select! {
            e = consume(&js, &stream, &progress, next, &apply) => e,
            _ = stop.changed() => break,
        };
        match stopped {
            Stopped::Error(error) => {
                tracing::warn!(%error, next, %stream, "following the stream; retrying");
            }
            Stopped::Replaced { why, created } => match rebuild(why).await {
                Ok(()) => {
                    progress.rebase(created);
                    tracing::warn!(%stream, "local copy emptied; following the new stream from its start");
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, %stream, "emptying the local copy of a stream created again; retrying");
                }
            },
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_RETRY) => {}
            _ = stop.changed() => break,
        }
    }
}

/// Follows from `next` until an error or a stream that is not the copy's, which it returns.
/// Every request has a limit of its own (`ATTEMPT`).
async fn consume<F, Fut>(
    js: &jetstream::Context,
    name: &str,
    progress: &Progress,
    next: u64,
    apply: &F,
) -> Stopped
where
    F: Fn(u64, jetstream::Message) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let stream = match tokio::time::timeout(ATTEMPT, js.get_stream_no_info(name)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Stopped::Error(format!("opening the stream: {e}")),
        Err(_) => {
            return Stopped::Error(format!("opening the stream: no answer within {ATTEMPT:?}"));
        }
    };
    // The stream may have been created again since the last consumer (an error brought us
    // here): checked before reading it, when it answers in time (a loaded node answers slowly;
    // else the quiet check below does it, which a stream created again under the copy always
    // gets at first: its consumer starts past the new stream's end).
    if let Ok(Ok(info)) = tokio::time::timeout(ATTEMPT, stream.get_info()).await
        && let Some(why) = progress.check(name, &info)
    {
        return Stopped::Replaced {
            why,
            created: info.created.unix_timestamp_nanos(),
        };
    }
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
        Ok(Err(e)) => return Stopped::Error(format!("creating the ordered consumer: {e}")),
        Err(_) => {
            return Stopped::Error(format!(
                "creating the ordered consumer: no answer within {ATTEMPT:?}"
            ));
        }
    };
    let mut messages = match tokio::time::timeout(ATTEMPT, consumer.messages()).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return Stopped::Error(format!("reading the ordered consumer: {e}")),
        Err(_) => {
            return Stopped::Error(format!(
                "reading the ordered consumer: no answer within {ATTEMPT:?}"
            ));
        }
    };
    // The consumer's own count of the last message it delivered.
    let mut consumed = 0u64;
    loop {
        let message = match tokio::time::timeout(STALL_CHECK, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Stopped::Error(format!("reading the stream: {e}")),
            Ok(None) => return Stopped::Error("the consumer ended".into()),
            Err(_) => {
                // Quiet, or the consumer died with its node (the client notices only after two
                // missed 15 s heartbeats): the stream's last sequence says which.
                let info = match tokio::time::timeout(STALL_CHECK, stream.get_info()).await {
                    Err(_) => {
                        return Stopped::Error("the stream's state: no answer within 1 s".into());
                    }
                    Ok(Err(e)) => {
                        return Stopped::Error(format!("reading the stream's state: {e}"));
                    }
                    Ok(Ok(info)) => info,
                };
                if let Some(why) = progress.check(name, &info) {
                    return Stopped::Replaced {
                        why,
                        created: info.created.unix_timestamp_nanos(),
                    };
                }
                if info.state.last_sequence > progress.at() {
                    return Stopped::Error(format!(
                        "the consumer stalled at {} while the stream is at {}",
                        progress.at(),
                        info.state.last_sequence
                    ));
                }
                tracing::debug!(
                    at = progress.at(),
                    stream = info.state.last_sequence,
                    name,
                    "stream quiet"
                );
                continue;
            }
        };
        let (sequence, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.consumer_sequence),
            Err(e) => return Stopped::Error(format!("a message without stream metadata: {e}")),
        };
        // The client re-creates an ordered consumer by itself when it misses heartbeats or the
        // consumer is gone (its stream deleted, and maybe created again), from the stream
        // sequence after the last it delivered, and says nothing: a new consumer counts from 1
        // again. Such a message is not applied: the consumer is created again here, after the
        // stream's identity is checked (a stream created again may already be longer than the
        // copy, so its sequences alone would go on as if nothing happened).
        if delivered <= consumed {
            return Stopped::Error(format!(
                "the ordered consumer was re-created by the client (delivery {delivered} after \
                 {consumed}, stream sequence {sequence})"
            ));
        }
        consumed = delivered;
        if let Err(e) = apply(sequence, message).await {
            return Stopped::Error(format!("applying message {sequence}: {e}"));
        }
        progress.advance(sequence);
    }
}
