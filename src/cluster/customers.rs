//! Customer memory in a cluster (`docs/assist.md`): one replicated JetStream stream
//! (`{PREFIX}_CUSTOMERS`, subjects `{prefix}.customers.{handle}`, a random name of the customer:
//! [`is_handle`]) carries every change to a customer's record (an ended contact, a call-back, an
//! erasure) in one order for the fleet, and each replica follows it into its own SQLite copy
//! (`customers.path`, the embedded store's schema), so the turn path's lookups and the silent
//! list read locally, as the alert log's copy does.
//!
//! Erasure cannot rewrite a stream, so nothing of a customer's is written to a stream in the
//! clear: contacts and call-backs, and in the alert stream the customer's part of every event
//! (excerpts of their turns, their pseudonym), are sealed (AES-256-GCM) with a key of that
//! customer's, kept in the stream `{PREFIX}_CUSTOMER_KEYS` ([`CustomerKeys`]), which alone links
//! the customer's pseudonym to their handle. `DeleteCustomer` erases the key and that link (their
//! messages deleted, which the server overwrites in its files), purges the customer's subject and
//! publishes a tombstone naming their handle and conversations; every replica that
//! applies it deletes the customer from its copy and blanks those conversations' events in its
//! copy of the alert log. Without the key, what stays in the streams cannot be read: a replica
//! rebuilding its copies later finds the events blank (their scrubbed payload) and skips the
//! contacts. A customer who contacts again afterwards gets a new key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::stream::{ATTEMPT, Progress};
use super::{Cluster, ClusterError};
use crate::config::CustomersConfig;
use crate::customers::sqlite::SqliteCustomerStore;
use crate::customers::{
    Contact, ContactFilter, CustomerError, CustomerStore, CustomerSummary, Erased, SilentPage,
    SilentQuery,
};

/// The header that names whose key sealed a message's customer part.
pub const CUSTOMER_HEADER: &str = "Emotion-Customer";
/// The header holding the sealed original (base64) of an alert event whose payload is scrubbed.
pub const SEALED_HEADER: &str = "Emotion-Sealed";
/// The fleet's pseudonym key among the customers' keys (not 32 hex digits: never a customer's).
const PSEUDONYM_KEY: &str = "pseudonym-key";
/// How long the stream remembers message ids to drop a re-published change.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// A customer's name inside NATS: a random handle (`h` and 32 hex digits), never their
/// pseudonym. The pseudonym is derived from the platform's customer id with the fleet's
/// pseudonym key, so anything written under it (a subject, a header) would let whoever holds
/// that key and a customer id find the customer's traces in NATS's files after their erasure. A
/// handle is linked to its pseudonym by one message only, deleted by the erasure.
pub fn is_handle(s: &str) -> bool {
    s.len() == 33
        && s.starts_with('h')
        && s[1..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A customer's handle and sealing key.
#[derive(Clone)]
pub struct CustomerKey {
    /// The name of the customer's messages in NATS ([`is_handle`]; the pseudonym itself for a
    /// customer first seen by an earlier version, which named them by pseudonym).
    pub handle: String,
    pub key: Arc<LessSafeKey>,
}

/// Every customer's sealing key, cached per replica: a replicated stream
/// (`{PREFIX}_CUSTOMER_KEYS`, one message kept per subject) with two messages per customer:
/// `{prefix}.customer-keys.{handle}`, the key, and `{prefix}.customer-keys.{pseudonym}`, the
/// handle (the only place where the two meet). A stream rather than a key-value bucket because
/// a bucket's messages cannot be deleted one by one, and erasing a customer is deleting both
/// messages, which the server overwrites in its files (its Raft log keeps them until it is
/// compacted, within about two and a half minutes as measured). A customer first seen by an
/// earlier version has one message, `{prefix}.customer-keys.{pseudonym}` holding the key, and
/// the pseudonym as handle.
pub struct CustomerKeys {
    js: jetstream::Context,
    stream: String,
    subjects: String,
    op_timeout: Duration,
    cache: Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    /// Pseudonym -> handle and key.
    by_customer: HashMap<String, CustomerKey>,
    /// Handle -> key, and the pseudonym when this replica has seen it.
    by_handle: HashMap<String, (Arc<LessSafeKey>, Option<String>)>,
}

impl KeyCache {
    fn insert(&mut self, customer: Option<&str>, key: &CustomerKey) {
        if self.by_handle.len() >= 100_000 {
            self.by_customer.clear();
            self.by_handle.clear();
        }
        if let Some(customer) = customer {
            self.by_customer.insert(customer.to_string(), key.clone());
        }
        let known = customer.map(str::to_string).or_else(|| {
            (self.by_handle.get(&key.handle)).and_then(|(_, customer)| customer.clone())
        });
        (self.by_handle).insert(key.handle.clone(), (key.key.clone(), known));
    }
}

/// The two ways to a key: from the customer's pseudonym (through their handle) or from a handle.
#[derive(Clone, Copy)]
enum Lookup<'a> {
    Customer(&'a str),
    Handle(&'a str),
}

impl CustomerKeys {
    pub async fn open(cluster: &Cluster) -> Result<Arc<Self>, ClusterError> {
        let stream = cluster.stream_name("CUSTOMER_KEYS");
        let subjects = format!("{}.customer-keys", cluster.config.prefix);
        let config = stream::Config {
            name: stream.clone(),
            description: Some(
                "emotion-service customers' sealing keys (erasure deletes one)".into(),
            ),
            subjects: vec![format!("{subjects}.>")],
            max_messages_per_subject: 1,
            num_replicas: cluster.config.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let js = cluster.jetstream.clone();
        super::stream::ensure_async(js, config, cluster.config.op_timeout()).await?;
        Ok(Arc::new(Self {
            js: cluster.jetstream.clone(),
            stream,
            subjects,
            op_timeout: cluster.config.op_timeout(),
            cache: Mutex::new(KeyCache::default()),
        }))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stored secret named `name` and its sequence, if there is one. One attempt.
    async fn entry(&self, name: &str) -> Result<Option<(u64, Bytes)>, String> {
        let read = async {
            let stream = self
                .js
                .get_stream_no_info(&self.stream)
                .await
                .map_err(|e| e.to_string())?;
            match stream
                .get_last_raw_message_by_subject(&format!("{}.{name}", self.subjects))
                .await
            {
                Ok(m) => Ok(Some((m.sequence, m.payload))),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        };
        once(read).await
    }

    /// Stores `secret` as `name` unless one is there already. One attempt; an error when another
    /// replica stored one first (read it next).
    async fn create(&self, name: &str, secret: &[u8]) -> Result<(), String> {
        let message = jetstream::message::PublishMessage::build()
            .payload(Bytes::copy_from_slice(secret))
            .expected_last_subject_sequence(0);
        let sent = async {
            self.js
                .send_publish(format!("{}.{name}", self.subjects), message)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        once(sent).await
    }

    /// Deletes the message at `sequence` (the server overwrites it in its files). One attempt.
    async fn delete(&self, sequence: u64) -> Result<(), String> {
        let deleted = async {
            let stream = self
                .js
                .get_stream_no_info(&self.stream)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .delete_message(sequence)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        once(deleted).await
    }

    /// The customer's (a pseudonym) handle and key; with `create`, made on first use (the first
    /// replica to link a handle to the customer wins, the others read theirs). None: no key
    /// (never made, or erased).
    pub async fn key(&self, customer: &str, create: bool) -> Result<Option<CustomerKey>, String> {
        if let Some(key) = self.cache().by_customer.get(customer).cloned() {
            return Ok(Some(key));
        }
        let key = self.retried(Lookup::Customer(customer), create).await?;
        if let Some(key) = &key {
            self.cache().insert(Some(customer), key);
        }
        Ok(key)
    }

    /// The key of the customer named `handle` in a message (a pseudonym in messages of an
    /// earlier version). None: erased.
    pub async fn key_of_handle(&self, handle: &str) -> Result<Option<Arc<LessSafeKey>>, String> {
        if let Some((key, _)) = self.cache().by_handle.get(handle) {
            return Ok(Some(key.clone()));
        }
        let key = self.retried(Lookup::Handle(handle), false).await?;
        if let Some(key) = &key {
            self.cache().insert(None, key);
        }
        Ok(key.map(|k| k.key))
    }

    /// The pseudonym of `handle`, if this replica has looked the customer up by it since it
    /// started (the messages name handles only).
    pub fn customer_of_handle(&self, handle: &str) -> Option<String> {
        if crate::customers::is_pseudonym(handle) {
            return Some(handle.to_string());
        }
        let cache = self.cache();
        cache.by_handle.get(handle).and_then(|(_, c)| c.clone())
    }

    async fn retried(
        &self,
        lookup: Lookup<'_>,
        create: bool,
    ) -> Result<Option<CustomerKey>, String> {
        let deadline = tokio::time::Instant::now() + self.op_timeout;
        loop {
            let attempt = match lookup {
                Lookup::Customer(customer) => self.fetch(customer, create).await,
                Lookup::Handle(handle) => self.fetch_handle(handle).await,
            };
            match attempt {
                Ok(key) => return Ok(key),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!("a customer's key: {e}"));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reading a customer key; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn fetch_handle(&self, handle: &str) -> Result<Option<CustomerKey>, String> {
        if !(is_handle(handle) || crate::customers::is_pseudonym(handle)) {
            return Ok(None);
        }
        match self.entry(handle).await? {
            // A pseudonym's message holds a handle, unless an earlier version wrote the key.
            Some((_, secret)) if secret.len() == 32 => Ok(Some(CustomerKey {
                handle: handle.to_string(),
                key: aead_key(&secret)?,
            })),
            _ => Ok(None),
        }
    }

    async fn fetch(&self, customer: &str, create: bool) -> Result<Option<CustomerKey>, String> {
        for _ in 0..8 {
            match self.entry(customer).await? {
                // Named by an earlier version: the key itself, the pseudonym as handle.
                Some((_, secret)) if secret.len() == 32 => {
                    return Ok(Some(CustomerKey {
                        handle: customer.to_string(),
                        key: aead_key(&secret)?,
                    }));
                }
                Some((sequence, handle)) => {
                    let handle = std::str::from_utf8(&handle)
                        .ok()
                        .filter(|h| is_handle(h))
                        .ok_or("a customer's handle that is not one")?;
                    if let Some(key) = self.fetch_handle(handle).await? {
                        return Ok(Some(key));
                    }
                    if !create {
                        return Ok(None);
                    }
                    // The key is gone, the link not yet: an erasure that stopped half-way (it
                    // deletes the key first). The link goes too and the customer starts anew.
                    self.delete(sequence).await?;
                }
                None if !create => return Ok(None),
                None => {
                    let mut bytes = [0u8; 16 + 32];
                    SystemRandom::new()
                        .fill(&mut bytes)
                        .map_err(|_| "no random source".to_string())?;
                    let handle = format!("h{}", hex::encode(&bytes[..16]));
                    let secret = &bytes[16..];
                    // The key first: a link is never left without its key. A key left without
                    // a link (this replica lost the race below) names no one.
                    self.create(&handle, secret).await?;
                    if self.create(customer, handle.as_bytes()).await.is_ok() {
                        return Ok(Some(CustomerKey {
                            handle,
                            key: aead_key(secret)?,
                        }));
                    }
                    // Another replica linked theirs first (or the answer was lost): read again,
                    // and drop this key if it is not the one linked.
                    if let Some((_, linked)) = self.entry(customer).await?
                        && linked.as_ref() != handle.as_bytes()
                        && let Some((sequence, _)) = self.entry(&handle).await?
                    {
                        let _ = self.delete(sequence).await;
                    }
                }
            }
        }
        Err("the customer's key changed under every attempt".into())
    }

    /// The pseudonym key the fleet shares (every replica must turn a customer id into the same
    /// pseudonym), kept in the bucket beside the customers' keys: the first replica to start
    /// offers `local` (the operator's `customers.key_file`, so an embedded deployment keeps its
    /// pseudonyms) or a new random one. A replica whose own key file differs from the fleet's
    /// refuses to start rather than split every customer in two.
    pub async fn pseudonym_secret(&self, local: Option<Vec<u8>>) -> Result<Vec<u8>, String> {
        let deadline = tokio::time::Instant::now() + self.op_timeout;
        loop {
            let attempt = async {
                if let Some((_, shared)) = self.entry(PSEUDONYM_KEY).await? {
                    return Ok(shared.to_vec());
                }
                let secret = match &local {
                    Some(secret) => secret.clone(),
                    None => {
                        let mut secret = vec![0u8; 32];
                        SystemRandom::new()
                            .fill(&mut secret)
                            .map_err(|_| "no random source".to_string())?;
                        secret
                    }
                };
                self.create(PSEUDONYM_KEY, &secret).await.map(|_| secret)
            };
            match attempt.await {
                Ok(shared) => {
                    return match &local {
                        Some(local) if *local != shared => Err(
                            "customers.key_file holds another key than the one the cluster's \
                             replicas share (pseudonyms would differ by replica): remove the \
                             file to use the cluster's, or give every replica the same file"
                                .into(),
                        ),
                        _ => Ok(shared),
                    };
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Erases the customer: their key's message, then the one linking their pseudonym to their
    /// handle, are deleted (the server overwrites them in its files), and this replica's cached
    /// copy dropped. Returns the handle they had (None: no key, erased already).
    pub async fn erase(&self, customer: &str) -> Result<Option<String>, String> {
        let handle = self
            .cache()
            .by_customer
            .get(customer)
            .map(|k| k.handle.clone());
        if let Some(handle) = &handle {
            self.forget(handle);
        }
        let deadline = tokio::time::Instant::now() + self.op_timeout;
        let erased = loop {
            let attempt = async {
                let Some((sequence, linked)) = self.entry(customer).await? else {
                    return Ok(None);
                };
                let handle = match std::str::from_utf8(&linked) {
                    Ok(h) if linked.len() != 32 && is_handle(h) => {
                        if let Some((key, _)) = self.entry(h).await? {
                            self.delete(key).await?;
                        }
                        h.to_string()
                    }
                    _ => customer.to_string(),
                };
                self.delete(sequence).await?;
                Ok::<_, String>(Some(handle))
            };
            match attempt.await {
                Ok(handle) => break handle,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!("erasing the key: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        if let Some(handle) = erased.as_ref().or(handle.as_ref()) {
            self.forget(handle);
        }
        Ok(erased.or(handle))
    }

    /// Drops this replica's cached copy of the customer named `handle` (erased).
    pub fn forget(&self, handle: &str) {
        let mut cache = self.cache();
        cache.by_handle.remove(handle);
        cache.by_customer.retain(|_, k| k.handle != handle);
    }
}

/// One attempt at an operation on the keys stream: its result, or "no answer" after [`ATTEMPT`].
async fn once<T>(op: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(ATTEMPT, op)
        .await
        .map_err(|_| "no answer".to_string())?
}

/// The sealing key a customer's 32-byte secret makes.
pub fn aead_key(secret: &[u8]) -> Result<Arc<LessSafeKey>, String> {
    UnboundKey::new(&AES_256_GCM, secret)
        .map(|k| Arc::new(LessSafeKey::new(k)))
        .map_err(|_| format!("a customer key of {} bytes, not 32", secret.len()))
}

/// `plain` sealed for `customer`: a random nonce, then the ciphertext and its tag (the pseudonym
/// is authenticated with it, so a sealed part cannot be moved to another customer).
pub fn seal(key: &LessSafeKey, customer: &str, plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the system's random source");
    let mut out = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(customer.as_bytes()),
        &mut out,
    )
    .expect("sealing fits in memory");
    let mut sealed = nonce.to_vec();
    sealed.extend(out);
    sealed
}

/// What [`seal`] sealed; None if it was sealed with another key or for another customer, or
/// was altered.
pub fn open(key: &LessSafeKey, customer: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    let (nonce, data) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut data = data.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(customer.as_bytes()), &mut data)
        .ok()?;
    Some(plain.to_vec())
}

/// One message of the customers stream (subject `{prefix}.customers.{handle}`).
#[derive(Serialize, Deserialize)]
enum Message {
    /// A [`Change`] sealed with the key of the customer named `handle` ([`CustomerKey`]).
    Sealed { handle: String, data: Vec<u8> },
    /// The customer named `handle` was erased; their conversations' events are blanked on every
    /// replica.
    Erased {
        handle: String,
        conversations: Vec<String>,
    },
}

/// What a sealed message holds. The customer (pseudonym) is inside the seal: a message names a
/// handle only.
#[derive(Serialize, Deserialize)]
enum Change {
    Contact(Contact),
    /// Written by earlier versions, whose handle was the pseudonym.
    Called {
        by: String,
        at_ms: u64,
    },
    CalledBack {
        customer: String,
        by: String,
        at_ms: u64,
    },
}

/// What a replica does besides its customer copy when it applies an erasure made on another
/// replica (the one that made it did so itself): forget the customer's live conversations and
/// blank their events in the alert log's copy. Set once the service's parts exist
/// ([`JetStreamCustomerStore::on_erased`]).
pub type OnErased = Box<dyn Fn(&str, &[String]) + Send + Sync>;

pub struct JetStreamCustomerStore {
    cluster: Arc<Cluster>,
    stream: String,
    subjects: String,
    copy: Arc<SqliteCustomerStore>,
    keys: Arc<CustomerKeys>,
    progress: Arc<Progress>,
    on_erased: Arc<OnceLock<OnErased>>,
    /// The message ids of the erasures this process made (their tombstones skip `on_erased`).
    erasing: Arc<Mutex<std::collections::HashSet<String>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl JetStreamCustomerStore {
    /// Creates (or updates to the configured retention) the stream, opens this replica's copy
    /// and catches it up with the stream before returning. Blocking: call it outside the async
    /// runtime.
    pub fn open(
        cluster: Arc<Cluster>,
        config: &CustomersConfig,
        keys: Arc<CustomerKeys>,
    ) -> Result<Self, CustomerError> {
        let stream = cluster.stream_name("CUSTOMERS");
        let subjects = format!("{}.customers", cluster.config.prefix);
        let unavailable = |message: String| CustomerError::Store {
            path: stream.clone(),
            message,
        };
        let state = super::stream::ensure(
            &cluster,
            stream::Config {
                name: stream.clone(),
                subjects: vec![format!("{subjects}.>")],
                max_age: Duration::from_secs(config.retention_days.saturating_mul(86_400)),
                num_replicas: cluster.config.replicas,
                duplicate_window: DUPLICATE_WINDOW,
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
        .map_err(|e| unavailable(e.to_string()))?;
        let copy = Arc::new(SqliteCustomerStore::open(&config.path)?);
        let mut at = copy.mirrored()?;
        if at > state.last_sequence {
            // Changes are idempotent: the stream is applied again over what the copy holds.
            tracing::warn!(
                copy = at,
                stream = state.last_sequence,
                "the local copy of the customers stream is ahead of the stream (recreated?): read again from its start"
            );
            at = 0;
        }
        let store = Self {
            stream: stream.clone(),
            subjects,
            copy,
            keys,
            progress: Arc::new(Progress::new(at)),
            on_erased: Arc::new(OnceLock::new()),
            erasing: Arc::default(),
            stop: tokio::sync::watch::channel(false).0,
            cluster,
        };
        store.start_follower()?;
        store
            .progress
            .wait_for(state.last_sequence, store.cluster.config.op_timeout())
            .map_err(|at| {
                unavailable(format!(
                    "catching up with the customers stream: at {at} of {}, no progress for {} ms",
                    state.last_sequence, store.cluster.config.op_timeout_ms
                ))
            })?;
        Ok(store)
    }

    /// What applying an erasure does beyond the copy (set once).
    pub fn on_erased(&self, f: OnErased) {
        let _ = self.on_erased.set(f);
    }

    fn start_follower(&self) -> Result<(), CustomerError> {
        let (js, name) = (self.cluster.jetstream.clone(), self.stream.clone());
        let (copy, keys) = (self.copy.clone(), self.keys.clone());
        let (progress, stop) = (self.progress.clone(), self.stop.subscribe());
        let (on_erased, erasing) = (self.on_erased.clone(), self.erasing.clone());
        let runtime = self.cluster.runtime.clone();
        let apply = move |sequence: u64, message: jetstream::Message| {
            let (copy, keys, on_erased) = (copy.clone(), keys.clone(), on_erased.clone());
            let id = (message.headers.as_ref())
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            let ours = erasing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            async move {
                match postcard::from_bytes::<Message>(&message.payload) {
                    Ok(Message::Sealed { handle, data }) => {
                        let Some(key) = keys.key_of_handle(&handle).await? else {
                            // Erased since: nothing to apply.
                            return mirrored(copy, sequence).await;
                        };
                        match open(&key, &handle, &data)
                            .and_then(|plain| postcard::from_bytes::<Change>(&plain).ok())
                        {
                            Some(change) => {
                                blocking(move || {
                                    match change {
                                        Change::Contact(c) => copy.record(&[c])?,
                                        Change::Called { by, at_ms } => {
                                            copy.mark_called(&handle, &by, at_ms).map(|_| ())?
                                        }
                                        Change::CalledBack {
                                            customer,
                                            by,
                                            at_ms,
                                        } => copy.mark_called(&customer, &by, at_ms).map(|_| ())?,
                                    }
                                    copy.set_mirrored(sequence)
                                })
                                .await
                            }
                            None => {
                                tracing::error!(
                                    sequence,
                                    "customers stream: a sealed change that does not open; skipped"
                                );
                                mirrored(copy, sequence).await
                            }
                        }
                    }
                    Ok(Message::Erased {
                        handle,
                        conversations,
                    }) => {
                        // Whose handle it was: known if this replica looked the customer up
                        // since it started, else read off the contacts its copy holds.
                        let known = keys.customer_of_handle(&handle);
                        keys.forget(&handle);
                        blocking(move || {
                            let customers = match known {
                                Some(customer) => vec![customer],
                                None => copy.customers_of(&conversations)?,
                            };
                            for customer in &customers {
                                copy.delete(customer, &[])?;
                            }
                            if let Some(f) = on_erased.get().filter(|_| !ours) {
                                f(customers.first().map_or("", String::as_str), &conversations);
                            }
                            copy.set_mirrored(sequence)
                        })
                        .await
                    }
                    Err(e) => {
                        tracing::error!(sequence, error = %e, "customers stream: a message that does not decode; skipped");
                        mirrored(copy, sequence).await
                    }
                }
            }
        };
        // A stream created again under the copy (NATS lost its storage): its changes are applied
        // over what the copy holds, from its start (they are idempotent), as at start-up.
        let rebuild = |_why: String| async { Ok(()) };
        std::thread::Builder::new()
            .name("customer-follower".into())
            .spawn(move || {
                runtime.block_on(super::stream::follow(
                    js, name, progress, stop, apply, rebuild,
                ))
            })
            .map(|_| ())
            .map_err(|e| CustomerError::Store {
                path: self.stream.clone(),
                message: format!("starting the customers follower thread: {e}"),
            })
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> CustomerError {
        CustomerError::Store {
            path: self.stream.clone(),
            message: e.to_string(),
        }
    }

    /// Publishes `message` on the subject of the customer named `handle` and waits until this
    /// replica's copy holds it (a caller reads its own write).
    fn publish(&self, handle: &str, message: &Message, id: String) -> Result<(), CustomerError> {
        let payload = postcard::to_stdvec(message).map_err(|e| self.unavailable(e))?;
        let ack = super::stream::publish(
            &self.cluster,
            "publishing to the customers stream",
            format!("{}.{handle}", self.subjects),
            Bytes::from(payload),
            id,
            None,
        )
        .map_err(|e| self.unavailable(e))?;
        self.progress
            .wait_for(ack.sequence, self.cluster.config.op_timeout())
            .map_err(|at| {
                self.unavailable(format!(
                    "the local copy is at {at}, not yet at the change just published ({})",
                    ack.sequence
                ))
            })
    }

    /// The customer's handle and `change` sealed with their key (made on first use).
    fn sealed(&self, customer: &str, change: &Change) -> Result<(String, Message), CustomerError> {
        let keys = self.keys.clone();
        let who = customer.to_string();
        let CustomerKey { handle, key } = self
            .cluster
            .block_on("reading the customer's key", async move {
                keys.key(&who, true).await?.ok_or_else(|| "no key".into())
            })
            .map_err(|e| self.unavailable(e))?;
        let plain = postcard::to_stdvec(change).map_err(|e| self.unavailable(e))?;
        let data = seal(&key, &handle, &plain);
        Ok((handle.clone(), Message::Sealed { handle, data }))
    }
}

impl Drop for JetStreamCustomerStore {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn blocking(
    f: impl FnOnce() -> Result<(), CustomerError> + Send + 'static,
) -> Result<(), String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn mirrored(copy: Arc<SqliteCustomerStore>, sequence: u64) -> Result<(), String> {
    blocking(move || copy.set_mirrored(sequence)).await
}

fn message_id(parts: &[&str]) -> String {
    hex::encode(&Sha256::digest(parts.join("\u{0}").as_bytes())[..16])
}

impl CustomerStore for JetStreamCustomerStore {
    fn recent(&self, customer: &str, limit: usize) -> Result<Vec<Contact>, CustomerError> {
        self.copy.recent(customer, limit)
    }

    fn record(&self, contacts: &[Contact]) -> Result<(), CustomerError> {
        for c in contacts {
            let (handle, message) = self.sealed(&c.customer, &Change::Contact(c.clone()))?;
            // One contact per conversation and customer, whichever replica records it (by
            // handle: an id made from the pseudonym would name the customer in the stream).
            let id = message_id(&["contact", &handle, &c.conversation_id]);
            self.publish(&handle, &message, id)?;
        }
        Ok(())
    }

    fn summary(&self, customer: &str) -> Result<Option<CustomerSummary>, CustomerError> {
        self.copy.summary(customer)
    }

    fn silent(&self, q: &SilentQuery) -> Result<SilentPage, CustomerError> {
        self.copy.silent(q)
    }

    fn mark_called(&self, customer: &str, by: &str, at_ms: u64) -> Result<bool, CustomerError> {
        if self.copy.summary(customer)?.is_none() {
            return Ok(false);
        }
        let change = Change::CalledBack {
            customer: customer.to_string(),
            by: by.to_string(),
            at_ms,
        };
        let (handle, message) = self.sealed(customer, &change)?;
        let id = message_id(&["called", &handle, by, &at_ms.to_string()]);
        self.publish(&handle, &message, id)?;
        Ok(true)
    }

    fn delete(&self, customer: &str, live: &[String]) -> Result<Erased, CustomerError> {
        let erased = self.copy.delete(customer, &[])?;
        let keys = self.keys.clone();
        let (js, name, subjects) = (
            self.cluster.jetstream.clone(),
            self.stream.clone(),
            self.subjects.clone(),
        );
        let who = customer.to_string();
        let handle = self
            .cluster
            .block_on("erasing the customer", async move {
                let Some(handle) = keys.erase(&who).await? else {
                    return Ok(None);
                };
                let stream = js
                    .get_stream_no_info(&name)
                    .await
                    .map_err(|e| e.to_string())?;
                stream
                    .purge()
                    .filter(format!("{subjects}.{handle}"))
                    .await
                    .map(|_| Some(handle))
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| self.unavailable(e))?;
        // A customer without a key never had a record in the stream; the live conversations
        // still go on every replica (under a handle that names no one).
        let handle = handle.unwrap_or_else(|| {
            let mut bytes = [0u8; 16];
            let _ = SystemRandom::new().fill(&mut bytes);
            format!("h{}", hex::encode(bytes))
        });
        let mut conversations = erased.conversation_ids.clone();
        conversations.extend(live.iter().cloned());
        conversations.sort();
        conversations.dedup();
        let tombstone = Message::Erased {
            handle: handle.clone(),
            conversations,
        };
        // Each erasure is its own message (a customer may be erased, come back and be erased
        // again within the duplicate window).
        let mut nonce = [0u8; 8];
        let _ = SystemRandom::new().fill(&mut nonce);
        let id = message_id(&["erased", &handle, &hex::encode(nonce)]);
        self.erasing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        self.publish(&handle, &tombstone, id)?;
        Ok(erased)
    }

    fn outcomes(&self, f: &ContactFilter) -> Result<[u64; 4], CustomerError> {
        self.copy.outcomes(f)
    }

    fn apply_retention(&self, before_ms: u64) -> Result<usize, CustomerError> {
        // The stream drops what is older than its max age itself; the copy the same.
        self.copy.apply_retention(before_ms)
    }

    fn stats(&self) -> Result<(u64, u64, u64), CustomerError> {
        self.copy.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_part_opens_only_with_its_key_and_for_its_customer() {
        let key = aead_key(&[7u8; 32]).unwrap();
        let other = aead_key(&[8u8; 32]).unwrap();
        let sealed = seal(&key, "aa", b"my order never came");
        assert!(!sealed.windows(5).any(|w| w == b"order"));
        assert_eq!(open(&key, "aa", &sealed).unwrap(), b"my order never came");
        assert_eq!(open(&other, "aa", &sealed), None);
        assert_eq!(open(&key, "bb", &sealed), None);
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(open(&key, "aa", &altered), None);
        assert_eq!(open(&key, "aa", &sealed[..5]), None);
        assert!(aead_key(&[1u8; 16]).is_err());
    }

    #[test]
    fn a_handle_is_never_a_pseudonym() {
        let handle = format!("h{}", "0123456789abcdef".repeat(2));
        assert!(is_handle(&handle));
        assert!(!crate::customers::is_pseudonym(&handle));
        let pseudonym = "0123456789abcdef".repeat(2);
        assert!(crate::customers::is_pseudonym(&pseudonym) && !is_handle(&pseudonym));
        for not in [
            "pseudonym-key",
            "h0123",
            &handle.to_uppercase(),
            &format!("{handle}0"),
        ] {
            assert!(!is_handle(not), "{not}");
        }
    }
}
