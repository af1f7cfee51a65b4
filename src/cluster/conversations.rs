//! The conversations of a cluster: one replicated JetStream key-value bucket
//! (`{prefix}-conversations`), one key per conversation (`c.` and the first 16 bytes of the
//! SHA-256 of its id, in hex: any id is a valid key; the snapshot holds the real one), holding
//! its committed [`SharedState`]. The key's revision is what commits compare and set
//! (`conversation::shared`). History 1; a conversation idle for `limits.conversation_ttl_secs`
//! is ended by the replica that evicts it from memory, if the bucket's copy is idle too
//! (`ConversationStore::end_idle_shared`, which records its customer's contact); the bucket's
//! `max_age` is the TTL plus [`IDLE_GRACE`], so that replica gets there first, and a conversation
//! whose replicas all died expires anyway. (A bucket made by an older version keeps its `max_age`
//! of the TTL alone: contacts of conversations that idle out may then be lost to the expiry.)
//!
//! A failed attempt (a dead node, a leader election, no answer) is retried every 100 ms until
//! `cluster.op_timeout_ms`. A commit whose first attempt landed but whose acknowledgement was
//! lost comes back from its retry as a conflict: the store then reads the state, finds its own
//! turns in it, and answers them as they were committed.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::customers::{CustomerKey, CustomerKeys};
use super::{Cluster, ClusterError};
use crate::conversation::{
    FleetSummary, OUTBOX_WINDOW, Revision, SharedChange, SharedConversations, SharedError,
    SharedState,
};
use crate::customers;

/// The first byte of every value: the encoding's version (4: with the conversation's id).
const FORMAT: u8 = 4;
/// Version 4 sealed with the customer's key: the byte, the customer's handle
/// (`customers::is_handle`, 33 bytes), the sealed value.
const FORMAT_SEALED: u8 = 6;
/// The same written by earlier versions, with the pseudonym (32 hex digits) in place of the
/// handle; still read.
const FORMAT_SEALED_5: u8 = 5;
/// The version before, still read (a rolling upgrade): the same without the id.
const FORMAT_3: u8 = 3;
/// How much longer than the TTL the bucket keeps a conversation nobody writes to: more than
/// the idle sweep's period (at most 30 s).
pub const IDLE_GRACE: Duration = Duration::from_secs(60);
/// Pause between attempts of one operation.
const RETRY: Duration = Duration::from_millis(100);
/// The limit of one attempt (an operation is retried until `cluster.op_timeout_ms`).
const ATTEMPT: Duration = Duration::from_secs(2);

pub struct JetStreamConversations {
    kv: kv::Store,
    codec: Codec,
    /// Where commits and removals are announced to the fleet view (`{prefix}.fleet.{key}`,
    /// core NATS: not stored); None when this replica does not announce (`cluster.fleet_view`
    /// off).
    fleet: Option<Fleet>,
    /// `{prefix}-outbox`: a key per conversation whose committed alert events may not be
    /// published yet (see `conversation::shared`); entries expire with the republish window.
    outbox: kv::Store,
    op_timeout: Duration,
}

impl JetStreamConversations {
    /// Opens the buckets, creating them if no replica has yet. `fleet_view`: announce each
    /// commit and removal to the replicas' fleet views (see [`SharedConversations::watch`]).
    pub async fn open(
        cluster: &Cluster,
        ttl: Duration,
        codec: Codec,
        fleet_view: bool,
    ) -> Result<Self, ClusterError> {
        let bucket = |name: &str, description: &str, max_age| kv::Config {
            bucket: format!("{}-{name}", cluster.config.prefix),
            description: description.into(),
            history: 1,
            max_age,
            num_replicas: cluster.config.replicas,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let kv = open_bucket(
            cluster,
            bucket(
                "conversations",
                "emotion-service conversation state (one key per conversation)",
                ttl + IDLE_GRACE,
            ),
        )
        .await?;
        let outbox = open_bucket(
            cluster,
            bucket(
                "outbox",
                "emotion-service conversations whose alert events may be unpublished",
                OUTBOX_WINDOW,
            ),
        )
        .await?;
        let fleet = fleet_view.then(|| Fleet {
            client: cluster.client.clone(),
            subjects: format!("{}.fleet.", cluster.config.prefix),
            gaps: cluster.gaps.clone(),
            codec: codec.clone(),
        });
        Ok(Self {
            kv,
            outbox,
            op_timeout: cluster.config.op_timeout(),
            codec,
            fleet,
        })
    }
}

/// The fleet view's announcements: after each commit, the conversation's [`FleetSummary`] and
/// the commit's revision; after each removal, the revision removed. On core NATS, not stored:
/// a summary is a few hundred bytes where the committed state is a few KB, and no replica has
/// to read every commit from the bucket (BENCHMARKS.md, 2026-12-03: that cost NATS about 1 s of
/// CPU per 1,000 turns). A replica that may have missed some ([`Cluster::gaps`]) replays the
/// bucket. The summary of a conversation with a customer is sealed with their key, as its state
/// is: the customer's pseudonym is not on the wire, and once they are erased no replica can
/// read what an announcement still in flight says of them.
#[derive(Clone)]
struct Fleet {
    client: async_nats::Client,
    /// `{prefix}.fleet.`; the bucket's key follows.
    subjects: String,
    gaps: tokio::sync::watch::Receiver<u64>,
    codec: Codec,
}

/// The first byte of an announcement: its encoding's version. Version 1: the announcement in
/// the clear (no customer, or customer memory off); version 2: the length of the customer's
/// handle (a byte), the handle, then the announcement sealed with the customer's key.
const ANNOUNCEMENT: u8 = 1;
const ANNOUNCEMENT_SEALED: u8 = 2;

#[derive(serde::Serialize, serde::Deserialize)]
struct Announcement {
    revision: Revision,
    /// None: removed.
    summary: Option<FleetSummary>,
}

impl Announcement {
    async fn encode(&self, codec: &Codec) -> Result<Bytes, SharedError> {
        let plain = postcard::to_stdvec(self)
            .map_err(|e| SharedError::Unavailable(format!("encoding an announcement: {e}")))?;
        let customer = (self.summary.as_ref()).map_or("", |s| s.at_risk.context.customer.as_str());
        let out = match codec.seal_for(&plain, customer).await? {
            None => [&[ANNOUNCEMENT][..], &plain].concat(),
            Some((handle, sealed)) => {
                let width = u8::try_from(handle.len()).expect("a handle is 32 or 33 bytes");
                [
                    &[ANNOUNCEMENT_SEALED, width][..],
                    handle.as_bytes(),
                    &sealed,
                ]
                .concat()
            }
        };
        Ok(out.into())
    }

    async fn decode(body: &[u8], codec: &Codec) -> Option<Self> {
        match body.split_first() {
            Some((&ANNOUNCEMENT, rest)) => postcard::from_bytes(rest).ok(),
            Some((&ANNOUNCEMENT_SEALED, rest)) => {
                let (&width, rest) = rest.split_first()?;
                let (handle, sealed) = rest.split_at_checked(usize::from(width))?;
                let plain = codec
                    .open_by(std::str::from_utf8(handle).ok()?, sealed)
                    .await?;
                postcard::from_bytes(&plain).ok()
            }
            _ => None,
        }
    }

    fn change(self, key: String) -> SharedChange {
        match self.summary {
            Some(summary) => SharedChange::Committed {
                key,
                revision: self.revision,
                summary: Box::new(summary),
            },
            None => SharedChange::Removed {
                key,
                revision: self.revision,
            },
        }
    }
}

impl Fleet {
    /// Announces a commit (`summary`) or a removal (None) of `key` at `revision`; a failure
    /// only delays the fleet view (see [`Fleet`]).
    async fn announce(&self, key: &str, revision: Revision, summary: Option<FleetSummary>) {
        let body = match (Announcement { revision, summary })
            .encode(&self.codec)
            .await
        {
            Ok(body) => body,
            Err(e) => {
                tracing::debug!(error = %e, "sealing an announcement to the fleet view");
                return;
            }
        };
        let subject = format!("{}{key}", self.subjects);
        if let Err(e) = self.client.publish(subject, body).await {
            tracing::debug!(error = %e, "announcing a conversation to the fleet view");
        }
    }
}

/// Opens a bucket, creating it if no replica has yet (replicas starting together race).
pub(super) async fn open_bucket(
    cluster: &Cluster,
    config: kv::Config,
) -> Result<kv::Store, ClusterError> {
    let js = cluster.jetstream.clone();
    let deadline = tokio::time::Instant::now() + cluster.config.op_timeout();
    loop {
        let attempt = tokio::time::timeout(ATTEMPT, async {
            match js.get_key_value(config.bucket.as_str()).await {
                Ok(store) => Ok(store),
                Err(_) => js
                    .create_key_value(config.clone())
                    .await
                    .map_err(|e| e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|_| Err("no answer".into()));
        match attempt {
            Ok(kv) => return Ok(kv),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(ClusterError::JetStream(format!(
                    "opening the bucket {}: {e}",
                    config.bucket
                )));
            }
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

fn key(conversation_id: &str) -> String {
    format!(
        "c.{}",
        hex::encode(&Sha256::digest(conversation_id.as_bytes())[..16])
    )
}

/// How values are written and read: with customer memory on, the state of a conversation with a
/// customer is sealed with their key (`cluster::customers`), so an erased customer's
/// conversations cannot be read from the bucket's storage either.
#[derive(Clone, Default)]
pub struct Codec {
    pub keys: Option<Arc<CustomerKeys>>,
}

impl Codec {
    /// `state` as stored: a future, so that `state` need not outlive the call.
    fn encode(
        &self,
        state: &SharedState,
    ) -> impl Future<Output = Result<Bytes, SharedError>> + Send + 'static {
        let plain = postcard::to_stdvec(state)
            .map_err(|e| SharedError::Unavailable(format!("encoding conversation state: {e}")));
        let customer = state.snapshot.customer().to_string();
        let codec = self.clone();
        async move { codec.seal(plain?, &customer).await }
    }

    async fn seal(&self, plain: Vec<u8>, customer: &str) -> Result<Bytes, SharedError> {
        let Some((handle, sealed)) = self.seal_for(&plain, customer).await? else {
            let mut out = vec![FORMAT];
            out.extend(plain);
            return Ok(out.into());
        };
        // A customer first seen by an earlier version has their pseudonym as handle.
        let format = if handle.len() == 32 {
            FORMAT_SEALED_5
        } else {
            FORMAT_SEALED
        };
        let mut out = vec![format];
        out.extend(handle.as_bytes());
        out.extend(sealed);
        Ok(out.into())
    }

    /// `plain` sealed with the key of `customer` (a pseudonym), and the customer's handle; None
    /// when nothing is sealed (customer memory off, or no customer).
    async fn seal_for(
        &self,
        plain: &[u8],
        customer: &str,
    ) -> Result<Option<(String, Vec<u8>)>, SharedError> {
        let (Some(keys), true) = (&self.keys, customers::is_pseudonym(customer)) else {
            return Ok(None);
        };
        let CustomerKey { handle, key } = (keys.key(customer, true).await)
            .map_err(SharedError::Unavailable)?
            .ok_or_else(|| SharedError::Unavailable("no customer key".into()))?;
        let sealed = super::customers::seal(&key, &handle, plain);
        Ok(Some((handle, sealed)))
    }

    /// What [`Self::seal_for`] sealed for the customer named by `handle`; None once their key is
    /// gone (erased) or cannot be read (said).
    async fn open_by(&self, handle: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let key = match self.keys.as_ref()?.key_of_handle(handle).await {
            Ok(key) => key?,
            Err(e) => {
                tracing::warn!(error = %e, "reading a customer key for a conversation's state");
                return None;
            }
        };
        super::customers::open(&key, handle, sealed)
    }

    /// The committed state of `conversation_id` (None, said, if it cannot be read).
    async fn decode(&self, conversation_id: &str, body: &[u8]) -> Option<SharedState> {
        let state = self.decode_any(body, Some(conversation_id)).await;
        if state.is_none() {
            tracing::warn!(conversation = %conversation_id, "the committed state of a conversation cannot be read (another version, or its customer erased?); it starts again");
        }
        state
    }

    /// A value of any version; one of version 3 only with the id it is read for; a sealed one
    /// only while its customer's key exists.
    async fn decode_any(&self, body: &[u8], conversation_id: Option<&str>) -> Option<SharedState> {
        #[derive(serde::Deserialize)]
        struct Format3 {
            snapshot: crate::conversation::ConversationSnapshot,
            outbox: Vec<crate::alerts::Alert>,
        }
        match body.split_first() {
            Some((&FORMAT, rest)) => postcard::from_bytes(rest).ok(),
            Some((&format @ (FORMAT_SEALED | FORMAT_SEALED_5), rest)) => {
                let width = if format == FORMAT_SEALED { 33 } else { 32 };
                let (handle, sealed) = rest.split_at_checked(width)?;
                let plain = self
                    .open_by(std::str::from_utf8(handle).ok()?, sealed)
                    .await?;
                postcard::from_bytes(&plain).ok()
            }
            Some((&FORMAT_3, rest)) => {
                let old: Format3 = postcard::from_bytes(rest).ok()?;
                Some(SharedState {
                    snapshot: old.snapshot,
                    outbox: old.outbox,
                    conversation_id: conversation_id?.to_string(),
                })
            }
            _ => None,
        }
    }
}

/// Follows the conversations into `apply` (see [`SharedConversations::watch`]) until that
/// fails or announcements may have been missed; the reason. First subscribes to the
/// announcements (so that nothing committed during the replay is missed; what the replay and
/// an announcement both carry is applied once, by revision), then replays the bucket's latest
/// value of each key, then applies announcements.
async fn watch_once(
    kv: &kv::Store,
    codec: &Codec,
    fleet: &Fleet,
    apply: &(dyn Fn(SharedChange) -> bool + Send + Sync),
) -> Option<String> {
    let mut gaps = fleet.gaps.clone();
    gaps.mark_unchanged();
    let subscribed = tokio::time::timeout(ATTEMPT, async {
        let sub = (fleet.client)
            .subscribe(format!("{}>", fleet.subjects))
            .await
            .map_err(|e| e.to_string())?;
        // The server has the subscription once the flush is answered.
        fleet.client.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(sub)
    })
    .await;
    let mut announcements = match subscribed {
        Ok(Ok(sub)) => sub,
        Ok(Err(e)) => return Some(format!("subscribing to the fleet's announcements: {e}")),
        Err(_) => {
            return Some(format!(
                "subscribing to the fleet's announcements: no answer within {ATTEMPT:?}"
            ));
        }
    };
    if !apply(SharedChange::Restarted) {
        return None;
    }
    if let Some(error) = replay(kv, codec, apply).await {
        return error;
    }
    loop {
        tokio::select! {
            message = announcements.next() => {
                let Some(message) = message else {
                    return Some("the fleet's announcements ended".into());
                };
                let key = message.subject.as_str().strip_prefix(fleet.subjects.as_str());
                let announcement = Announcement::decode(&message.payload, codec).await;
                let change = key.zip(announcement);
                let Some((key, announcement)) = change else {
                    tracing::debug!(subject = %message.subject, "an announcement the fleet view cannot read");
                    continue;
                };
                if !apply(announcement.change(key.to_string())) {
                    return None;
                }
            }
            gap = gaps.changed() => match gap {
                Ok(()) => return Some("announcements may have been missed (NATS connection lost, or a slow subscriber): reading the bucket again".into()),
                // The connection is gone for good: nothing more will come.
                Err(_) => return None,
            },
        }
    }
}

/// The bucket's latest value of each key, into `apply`: None when it is all applied, Some(None)
/// when `apply` wants no more, Some(error) when it could not be read.
async fn replay(
    kv: &kv::Store,
    codec: &Codec,
    apply: &(dyn Fn(SharedChange) -> bool + Send + Sync),
) -> Option<Option<String>> {
    let failed = |e: String| Some(Some(format!("reading the conversation bucket: {e}")));
    let values = match tokio::time::timeout(ATTEMPT, kv.status()).await {
        Ok(Ok(status)) => status.values(),
        Ok(Err(e)) => return failed(e.to_string()),
        Err(_) => return failed(format!("no answer within {ATTEMPT:?}")),
    };
    if values == 0 {
        return None;
    }
    let mut watch = match tokio::time::timeout(ATTEMPT, kv.watch_with_history("c.>")).await {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => return failed(e.to_string()),
        Err(_) => return failed(format!("no answer within {ATTEMPT:?}")),
    };
    loop {
        let entry = match tokio::time::timeout(ATTEMPT, watch.next()).await {
            // What was counted expired meanwhile: nothing left to replay.
            Err(_) => return None,
            Ok(None) => return failed("the watch ended".into()),
            Ok(Some(Err(e))) => return failed(e.to_string()),
            Ok(Some(Ok(entry))) => entry,
        };
        let last = entry.delta == 0;
        let go_on = match entry.operation {
            kv::Operation::Put => {
                let summary = (codec.decode_any(&entry.value, None).await)
                    .and_then(|state| FleetSummary::of(&state));
                match summary {
                    Some(summary) => apply(SharedChange::Committed {
                        key: entry.key,
                        revision: entry.revision,
                        summary: Box::new(summary),
                    }),
                    None => {
                        // Version 3 (no id), or a customer erased: rewritten at its next commit.
                        tracing::debug!(key = %entry.key, "a conversation the fleet view cannot read");
                        true
                    }
                }
            }
            kv::Operation::Delete | kv::Operation::Purge => apply(SharedChange::Removed {
                key: entry.key,
                revision: entry.revision,
            }),
        };
        if !go_on {
            return Some(None);
        }
        if last {
            return None;
        }
    }
}

/// Runs `op` until it gives an answer other than a transient failure, at most `timeout`.
async fn retried<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    timeout: Duration,
    mut op: impl FnMut() -> F,
    final_error: impl Fn(&E) -> Option<SharedError>,
) -> Result<T, SharedError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Each attempt is cut short: a request sent to a node that died is never answered, and
        // its retry (through the client's new connection) is what succeeds.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let last = match tokio::time::timeout(left.min(ATTEMPT), op()).await {
            Ok(Ok(t)) => return Ok(t),
            Ok(Err(e)) => match final_error(&e) {
                Some(error) => return Err(error),
                None => e.to_string(),
            },
            Err(_) => "no answer".to_string(),
        };
        if tokio::time::Instant::now() + RETRY >= deadline {
            return Err(SharedError::Unavailable(format!(
                "{what}: {last} (tried for {} ms)",
                timeout.as_millis()
            )));
        }
        tokio::time::sleep(RETRY).await;
    }
}

fn conflict(e: &kv::UpdateError) -> Option<SharedError> {
    (e.kind() == kv::UpdateErrorKind::WrongLastRevision).then_some(SharedError::Conflict)
}

impl SharedConversations for JetStreamConversations {
    fn load(
        &self,
        conversation_id: &str,
    ) -> BoxFuture<'static, Result<(Option<SharedState>, Revision), SharedError>> {
        let (kv, key, id, timeout) = (
            self.kv.clone(),
            key(conversation_id),
            conversation_id.to_string(),
            self.op_timeout,
        );
        let codec = self.codec.clone();
        async move {
            let entry = retried(
                "reading conversation state",
                timeout,
                || kv.entry(key.clone()),
                |_| None,
            )
            .await?;
            Ok(match entry {
                None => (None, 0),
                Some(e) => match e.operation {
                    kv::Operation::Put => (codec.decode(&id, &e.value).await, e.revision),
                    kv::Operation::Delete | kv::Operation::Purge => (None, e.revision),
                },
            })
        }
        .boxed()
    }

    fn probe(&self) -> BoxFuture<'static, Result<(), SharedError>> {
        let kv = self.kv.clone();
        async move {
            match tokio::time::timeout(ATTEMPT, kv.entry("probe")).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(SharedError::Unavailable(format!(
                    "reading the conversation bucket: {e}"
                ))),
                Err(_) => Err(SharedError::Unavailable(format!(
                    "the conversation bucket did not answer within {} ms",
                    ATTEMPT.as_millis()
                ))),
            }
        }
        .boxed()
    }

    fn commit(
        &self,
        conversation_id: &str,
        state: &SharedState,
        expected: Revision,
    ) -> BoxFuture<'static, Result<Revision, SharedError>> {
        let body = self.codec.encode(state);
        let (kv, key, timeout) = (self.kv.clone(), key(conversation_id), self.op_timeout);
        let announce = (self.fleet.clone()).zip(FleetSummary::of(state));
        async move {
            let body = body.await?;
            let revision = retried(
                "committing conversation state",
                timeout,
                || kv.update(key.clone(), body.clone(), expected),
                conflict,
            )
            .await?;
            if let Some((fleet, summary)) = announce {
                fleet.announce(&key, revision, Some(summary)).await;
            }
            Ok(revision)
        }
        .boxed()
    }

    fn mark_outbox(
        &self,
        conversation_id: &str,
    ) -> BoxFuture<'static, Result<Revision, SharedError>> {
        let (kv, key, timeout) = (self.outbox.clone(), key(conversation_id), self.op_timeout);
        let id = Bytes::from(conversation_id.to_string());
        async move {
            retried(
                "marking the conversation's alert events",
                timeout,
                || kv.put(key.clone(), id.clone()),
                |_| None,
            )
            .await
        }
        .boxed()
    }

    fn clear_outbox(&self, conversation_id: &str, mark: Revision) -> BoxFuture<'static, ()> {
        let (kv, key) = (self.outbox.clone(), key(conversation_id));
        async move {
            // Kept if marked again since (a later commit's events); a failure leaves it to the
            // sweeper, which finds the events published and clears it then.
            let cleared = tokio::time::timeout(ATTEMPT, kv.purge_expect_revision(key, Some(mark)));
            if let Ok(Err(e)) = cleared.await
                && e.kind() != kv::PurgeErrorKind::WrongLastRevision
            {
                tracing::debug!(error = %e, "outbox mark not cleared; the sweeper will");
            }
        }
        .boxed()
    }

    fn stale_outboxes(
        &self,
        age: Duration,
    ) -> BoxFuture<'static, Result<Vec<(String, Revision)>, SharedError>> {
        let kv = self.outbox.clone();
        async move {
            let unavailable =
                |e: String| SharedError::Unavailable(format!("listing outbox marks: {e}"));
            let keys: Vec<String> = tokio::time::timeout(ATTEMPT, async {
                kv.keys()
                    .await
                    .map_err(|e| e.to_string())?
                    .try_collect()
                    .await
                    .map_err(|e: kv::WatcherError| e.to_string())
            })
            .await
            .map_err(|_| unavailable("no answer".into()))?
            .map_err(unavailable)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            let mut stale = Vec::new();
            for key in keys {
                let entry = tokio::time::timeout(ATTEMPT, kv.entry(key))
                    .await
                    .map_err(|_| unavailable("no answer".into()))?
                    .map_err(|e| unavailable(e.to_string()))?;
                if let Some(e) = entry.filter(|e| e.operation == kv::Operation::Put)
                    && now - e.created.unix_timestamp_nanos() >= age.as_nanos() as i128
                    && let Ok(id) = String::from_utf8(e.value.to_vec())
                {
                    stale.push((id, e.revision));
                }
            }
            Ok(stale)
        }
        .boxed()
    }

    fn remove(
        &self,
        conversation_id: &str,
        expected: Revision,
    ) -> BoxFuture<'static, Result<(), SharedError>> {
        let (kv, key, timeout) = (self.kv.clone(), key(conversation_id), self.op_timeout);
        let fleet = self.fleet.clone();
        async move {
            retried(
                "ending the conversation",
                timeout,
                || kv.delete_expect_revision(key.clone(), Some(expected)),
                conflict,
            )
            .await?;
            if let Some(fleet) = fleet {
                fleet.announce(&key, expected, None).await;
            }
            Ok(())
        }
        .boxed()
    }

    fn watch(&self, apply: Box<dyn Fn(SharedChange) -> bool + Send + Sync>) {
        let (kv, codec) = (self.kv.clone(), self.codec.clone());
        let Some(fleet) = self.fleet.clone() else {
            tracing::warn!("the fleet view is off on this replica: nothing to watch");
            return;
        };
        tokio::spawn(async move {
            while let Some(error) = watch_once(&kv, &codec, &fleet, apply.as_ref()).await {
                tracing::warn!(%error, "following the conversation bucket (fleet view); retrying");
                tokio::time::sleep(WATCH_RETRY).await;
            }
        });
    }
}

/// Pause before watching the bucket again after the watch failed.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// For `lib.rs`: the bucket behind the conversation store's shared seam.
pub async fn open(
    cluster: &Cluster,
    ttl: Duration,
    codec: Codec,
    fleet_view: bool,
) -> Result<Arc<dyn SharedConversations>, ClusterError> {
    Ok(Arc::new(
        JetStreamConversations::open(cluster, ttl, codec, fleet_view).await?,
    ))
}
