//! Customer memory (issue 17): what the service remembers about a customer across contacts,
//! keyed by a pseudonym, never by the id the platform sends.
//!
//! - [`Pseudonymizer`]: `context.customer_id` becomes, at ingress, the first 16 bytes of
//!   HMAC-SHA256(key, tenant ‖ 0 ‖ customer_id) in hex (`Context::customer`); the raw id goes no
//!   further than the turn's validation. The key is the operator's (`customers.key_file`,
//!   generated on first start); without it the pseudonyms cannot be recomputed or reversed.
//! - [`CustomerStore`]: the seam. Per customer, their contacts (conversation, start and end, final
//!   and lowest customer rolling score, alert events, dominant emotions, [`Outcome`]) and a row
//!   the silent list ranks. Embedded: [`sqlite::SqliteCustomerStore`].
//! - [`CustomerMemory`]: the store plus its writer thread. A conversation that ends (or is
//!   evicted idle) hands its [`Contact`] over without waiting; the turn path reads a customer's
//!   earlier contacts once per conversation, on the blocking pool, while the turn is scored.

pub mod sqlite;

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::CustomersConfig;

#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    #[error("customer store {path}: {message}")]
    Store { path: String, message: String },
    #[error("customer key {path}: {message}")]
    Key { path: String, message: String },
}

/// How a contact ended, worst last (the silent list only holds customers whose last contact was
/// not `Ok`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Outcome {
    Ok,
    /// The customer's final rolling score below `customers.negative_below`.
    Negative,
    /// An alert still open when the contact ended.
    OpenIncident,
    /// The customer gave up ("算了，不折腾了", "forget it"), or ended sad/disappointed and falling.
    Resigned,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Negative,
        Outcome::OpenIncident,
        Outcome::Resigned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Negative => "negative",
            Outcome::OpenIncident => "open_incident",
            Outcome::Resigned => "resigned",
        }
    }

    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn from_code(code: i64) -> Outcome {
        Self::ALL
            .get(code.clamp(0, 3) as usize)
            .copied()
            .unwrap_or(Outcome::Ok)
    }

    pub fn bad(self) -> bool {
        self != Outcome::Ok
    }
}

/// One ended contact of a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// The customer's pseudonym (hex).
    pub customer: String,
    pub conversation_id: String,
    pub tenant: String,
    pub queue: String,
    pub agent_id: String,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub final_score: f32,
    pub lowest_score: f32,
    pub alert_events: u32,
    /// The customer's dominant emotions over the contact (at most 3).
    pub emotions: Vec<String>,
    pub outcome: Outcome,
}

/// A customer on the silent list: their last contact ended badly and they have not come back.
#[derive(Debug, Clone, PartialEq)]
pub struct SilentCustomer {
    pub customer: String,
    pub tenant: String,
    /// Retained contacts, and how many of them ended badly.
    pub contacts: u32,
    pub bad_contacts: u32,
    pub last: Contact,
    /// How bad and how often: bad contacts + the last contact's lowest score below 0 (as a
    /// positive number) + 1 if it ended resigned.
    pub rank: f64,
}

/// What is held about one customer beside their contacts.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerSummary {
    pub customer: String,
    pub tenant: String,
    pub contacts: u32,
    pub bad_contacts: u32,
    pub rank: f64,
    /// The last call-back recorded: when, and by whom.
    pub called: Option<(u64, String)>,
}

/// Which ended contacts to count (the QA report). Empty strings and lists match everything.
#[derive(Debug, Clone, Default)]
pub struct ContactFilter {
    pub tenants: Vec<String>,
    pub queue: String,
    pub agent_id: String,
    /// Ended in [since_ms, until_ms).
    pub since_ms: u64,
    pub until_ms: u64,
}

/// Which silent customers to list.
#[derive(Debug, Clone)]
pub struct SilentQuery {
    /// Empty: every tenant.
    pub tenants: Vec<String>,
    /// "Now" for the list (tests and "who will be silent by Friday").
    pub as_of_ms: u64,
    /// Last contact at least this long before `as_of_ms`.
    pub silent_after: Duration,
    pub limit: usize,
    pub offset: usize,
}

/// A page of the silent list and how many match in all.
#[derive(Debug, Clone, Default)]
pub struct SilentPage {
    pub customers: Vec<SilentCustomer>,
    pub total: u64,
}

/// What `delete` removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Erased {
    pub contacts: usize,
    /// The conversations of the deleted contacts (their alert events' excerpts are erased next).
    pub conversation_ids: Vec<String>,
}

/// Where customers' contacts are kept.
pub trait CustomerStore: Send + Sync {
    /// The customer's newest contacts, newest first.
    fn recent(&self, customer: &str, limit: usize) -> Result<Vec<Contact>, CustomerError>;
    /// Records ended contacts (one transaction); a contact recorded before is left as it is.
    fn record(&self, contacts: &[Contact]) -> Result<(), CustomerError>;
    /// The customer's row (counts, rank, last call-back); None for a customer never recorded.
    fn summary(&self, customer: &str) -> Result<Option<CustomerSummary>, CustomerError>;
    fn silent(&self, q: &SilentQuery) -> Result<SilentPage, CustomerError>;
    /// Marks a customer called back (off the silent list until their next contact). False for
    /// an unknown customer.
    fn mark_called(&self, customer: &str, by: &str, at_ms: u64) -> Result<bool, CustomerError>;
    /// Erases everything held about the customer; the freed space is overwritten. `live`: their
    /// conversations that are not (yet) contacts, whose alert events a store shared by replicas
    /// has the others blank too.
    fn delete(&self, customer: &str, live: &[String]) -> Result<Erased, CustomerError>;
    /// How many matching contacts ended each way, indexed by [`Outcome::code`].
    fn outcomes(&self, f: &ContactFilter) -> Result<[u64; 4], CustomerError>;
    /// Deletes contacts that ended before `before_ms` (and customers left with none). Returns
    /// how many contacts.
    fn apply_retention(&self, before_ms: u64) -> Result<usize, CustomerError>;
    /// Customers and contacts held, and the store's size on disk in bytes.
    fn stats(&self) -> Result<(u64, u64, u64), CustomerError>;
}

/// Turns platform customer ids into pseudonyms with the operator's key.
pub struct Pseudonymizer {
    key: ring::hmac::Key,
}

impl Pseudonymizer {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    /// Reads the key at `path`, creating it (32 random bytes, hex, mode 0600) on first start.
    pub fn from_key_file(path: &Path) -> Result<Self, CustomerError> {
        if let Some(secret) = Self::read_key_file(path)? {
            return Ok(Self::new(&secret));
        }
        if let Some(made) = Self::create_key_file(path)? {
            return Ok(made);
        }
        // Another process created it first: use theirs.
        Self::from_key_file(path)
    }

    /// The secret in the key file at `path`; None when there is no file.
    pub fn read_key_file(path: &Path) -> Result<Option<Vec<u8>>, CustomerError> {
        let fail = |message: String| CustomerError::Key {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => hex::decode(text.trim())
                .map_err(|e| fail(format!("not hex: {e}")))
                .and_then(|s| match s.len() >= 16 {
                    true => Ok(Some(s)),
                    false => Err(fail("shorter than 16 bytes".into())),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// A new random key written to `path`; None when the file appeared meanwhile. The key is
    /// written whole to a private temporary file first and then linked into place (which fails if
    /// `path` exists), so a process starting at the same time reads either no file or the whole
    /// key, never half of one.
    fn create_key_file(path: &Path) -> Result<Option<Self>, CustomerError> {
        let fail = |message: String| CustomerError::Key {
            path: path.display().to_string(),
            message,
        };
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| fail("no random source".into()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            hex::encode(&secret[..4])
        ));
        let tmp = std::path::PathBuf::from(tmp);
        write_private(&tmp, hex::encode(secret).as_bytes())
            .map_err(|e| fail(format!("writing {}: {e}", tmp.display())))?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(fail(format!("linking {}: {e}", tmp.display()))),
        }
        tracing::info!(path = %path.display(), "customer pseudonym key created");
        Ok(Some(Self::new(&secret)))
    }

    /// The pseudonym of `customer_id` within `tenant`: 32 hex digits.
    pub fn pseudonym(&self, tenant: &str, customer_id: &str) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(tenant.as_bytes());
        ctx.update(&[0]);
        ctx.update(customer_id.as_bytes());
        hex::encode(&ctx.sign().as_ref()[..16])
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Is `s` a pseudonym as [`Pseudonymizer::pseudonym`] writes them?
pub fn is_pseudonym(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the writer thread is handed.
enum Write {
    Contact(Contact),
    /// Answered once everything handed over before it is written, or an attempt to write it
    /// failed (it is then retried).
    Flush(mpsc::Sender<()>),
    /// Drops the customer's contacts not written yet (an erasure); answered once no write that
    /// may hold one is under way.
    Forget(String, mpsc::Sender<()>),
}

/// The store, the pseudonymizer and the thread that writes ended contacts.
pub struct CustomerMemory {
    pub store: Arc<dyn CustomerStore>,
    pub pseudonyms: Pseudonymizer,
    pub config: CustomersConfig,
    writes: std::sync::Mutex<Option<mpsc::Sender<Write>>>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl CustomerMemory {
    /// The memory the configuration names, or none when `customers.path` is empty.
    pub fn open(config: &CustomersConfig) -> Result<Option<Arc<Self>>, CustomerError> {
        if config.path.as_os_str().is_empty() {
            return Ok(None);
        }
        let store: Arc<dyn CustomerStore> =
            Arc::new(sqlite::SqliteCustomerStore::open(&config.path)?);
        let pseudonyms = Pseudonymizer::from_key_file(&config.key_file)?;
        Ok(Some(Arc::new(Self::new(store, pseudonyms, config.clone()))))
    }

    pub fn new(
        store: Arc<dyn CustomerStore>,
        pseudonyms: Pseudonymizer,
        config: CustomersConfig,
    ) -> Self {
        let (writes, rx) = mpsc::channel::<Write>();
        let writer = {
            let store = store.clone();
            std::thread::Builder::new()
                .name("customer-writer".into())
                .spawn(move || write_contacts(store.as_ref(), &rx))
                .expect("spawning the customer writer")
        };
        Self {
            store,
            pseudonyms,
            config,
            writes: std::sync::Mutex::new(Some(writes)),
            writer: std::sync::Mutex::new(Some(writer)),
        }
    }

    fn send(&self, w: Write) -> bool {
        let writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        writes.as_ref().is_some_and(|tx| tx.send(w).is_ok())
    }

    /// Hands an ended contact to the writer; never blocks.
    pub fn record(&self, contact: Contact) {
        if !self.send(Write::Contact(contact)) {
            tracing::error!("customer writer stopped: contact not recorded");
        }
    }

    /// Blocks until every contact handed over so far is written, or an attempt failed (the
    /// writer keeps them and tries again).
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.send(Write::Flush(tx)) {
            let _ = rx.recv();
        }
    }

    /// Before erasing `customer`: blocks until none of their contacts handed over so far can
    /// be written later (each is written already, or dropped).
    pub fn forget_pending(&self, customer: &str) {
        let (tx, rx) = mpsc::channel();
        if self.send(Write::Forget(customer.to_string(), tx)) {
            let _ = rx.recv();
        }
    }

    /// Earlier contacts of `customer`, newest first, as much as the brief and the repeat rule
    /// need. Blocking.
    pub fn earlier(&self, customer: &str) -> Result<Vec<Contact>, CustomerError> {
        self.store.recent(customer, EARLIER_CONTACTS)
    }
}

/// Contacts the writer holds at most while the store fails (then the oldest are dropped, said).
const MAX_PENDING: usize = 100_000;
/// The writer's first pause after a failed write, doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Contacts per write (one transaction, or one publish each in cluster mode).
const WRITE_BATCH: usize = 4_096;

/// The customer writer: what arrives together is written together (one transaction). A write
/// that fails (the database, or in cluster mode NATS, unavailable) is kept and tried again, with
/// what arrived since, after a pause that doubles up to [`RETRY_MAX`]: a contact is lost only if
/// [`MAX_PENDING`] are waiting, or if the process stops while the store still fails. Writing a
/// contact twice is harmless (a copy keeps one per customer, end and conversation).
fn write_contacts(store: &dyn CustomerStore, rx: &mpsc::Receiver<Write>) {
    let mut pending: std::collections::VecDeque<Contact> = std::collections::VecDeque::new();
    let mut pause = RETRY_FIRST;
    let mut failing = false;
    loop {
        let first = if pending.is_empty() {
            match rx.recv() {
                Ok(w) => Some(w),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(if failing { pause } else { Duration::ZERO }) {
                Ok(w) => Some(w),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stopping: one last attempt.
                    let last: Vec<Contact> = pending.drain(..).collect();
                    if let Err(e) = store.record(&last) {
                        tracing::error!(error = %e, contacts = last.len(), "stopping: customer contacts not recorded, lost");
                    }
                    return;
                }
            }
        };
        let mut flushes = Vec::new();
        for w in first.into_iter().chain(rx.try_iter().take(WRITE_BATCH - 1)) {
            match w {
                Write::Contact(c) => pending.push_back(c),
                Write::Flush(done) => flushes.push(done),
                Write::Forget(customer, done) => {
                    pending.retain(|c| c.customer != customer);
                    flushes.push(done);
                }
            }
        }
        if pending.len() > MAX_PENDING {
            let dropped = pending.len() - MAX_PENDING;
            pending.drain(..dropped);
            tracing::error!(
                dropped,
                "customer contacts dropped: the store has failed for too long"
            );
        }
        if !pending.is_empty() {
            let batch: Vec<Contact> = pending.iter().take(WRITE_BATCH).cloned().collect();
            match store.record(&batch) {
                Ok(()) => {
                    pending.drain(..batch.len());
                    if failing {
                        tracing::info!(waiting = pending.len(), "customer contacts recorded again");
                    }
                    (failing, pause) = (false, RETRY_FIRST);
                }
                Err(e) => {
                    tracing::warn!(error = %e, waiting = pending.len(), retry_in_ms = pause.as_millis() as u64, "customer contacts not recorded yet; retrying");
                    if failing {
                        pause = (pause * 2).min(RETRY_MAX);
                    }
                    failing = true;
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

impl Drop for CustomerMemory {
    fn drop(&mut self) {
        // Closing the channel ends the writer after what was handed over.
        self.writes.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = w.join();
        }
    }
}

/// How many earlier contacts a conversation keeps of its customer.
pub const EARLIER_CONTACTS: usize = 5;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// The SQLite store, whose writes fail while `failures` is above 0 (each failure counts).
    struct Flaky {
        inner: sqlite::SqliteCustomerStore,
        failures: AtomicUsize,
    }

    impl CustomerStore for Flaky {
        fn recent(&self, customer: &str, limit: usize) -> Result<Vec<Contact>, CustomerError> {
            self.inner.recent(customer, limit)
        }
        fn record(&self, contacts: &[Contact]) -> Result<(), CustomerError> {
            let failing = self.failures.load(Ordering::SeqCst);
            if failing > 0 {
                self.failures.store(failing - 1, Ordering::SeqCst);
                return Err(CustomerError::Store {
                    path: "flaky".into(),
                    message: "unavailable".into(),
                });
            }
            self.inner.record(contacts)
        }
        fn summary(&self, customer: &str) -> Result<Option<CustomerSummary>, CustomerError> {
            self.inner.summary(customer)
        }
        fn silent(&self, q: &SilentQuery) -> Result<SilentPage, CustomerError> {
            self.inner.silent(q)
        }
        fn mark_called(&self, customer: &str, by: &str, at_ms: u64) -> Result<bool, CustomerError> {
            self.inner.mark_called(customer, by, at_ms)
        }
        fn delete(&self, customer: &str, live: &[String]) -> Result<Erased, CustomerError> {
            self.inner.delete(customer, live)
        }
        fn outcomes(&self, f: &ContactFilter) -> Result<[u64; 4], CustomerError> {
            self.inner.outcomes(f)
        }
        fn apply_retention(&self, before_ms: u64) -> Result<usize, CustomerError> {
            self.inner.apply_retention(before_ms)
        }
        fn stats(&self) -> Result<(u64, u64, u64), CustomerError> {
            self.inner.stats()
        }
    }

    fn contact(customer: &str, conversation: &str) -> Contact {
        Contact {
            customer: customer.into(),
            conversation_id: conversation.into(),
            tenant: "acme".into(),
            queue: "care".into(),
            agent_id: "a1".into(),
            started_ms: 1_000,
            ended_ms: 61_000,
            final_score: -0.4,
            lowest_score: -0.6,
            alert_events: 1,
            emotions: vec!["anger".into()],
            outcome: Outcome::Negative,
        }
    }

    fn memory(failures: usize) -> (Arc<Flaky>, CustomerMemory, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Flaky {
            inner: sqlite::SqliteCustomerStore::open(&dir.path().join("c.sqlite3")).unwrap(),
            failures: AtomicUsize::new(failures),
        });
        let memory = CustomerMemory::new(
            store.clone(),
            Pseudonymizer::new(b"0123456789abcdef"),
            CustomersConfig::default(),
        );
        (store, memory, dir)
    }

    #[test]
    fn contacts_a_failing_store_refuses_are_written_once_it_takes_them() {
        let (store, memory, _dir) = memory(3);
        memory.record(contact("a", "one"));
        memory.flush(); // after the first attempt, which failed
        assert!(store.recent("a", 10).unwrap().is_empty());
        memory.record(contact("a", "two"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let written = loop {
            let written = store.recent("a", 10).unwrap();
            if written.len() == 2 || std::time::Instant::now() > deadline {
                break written;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut ids: Vec<&str> = written.iter().map(|c| c.conversation_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["one", "two"], "both kept through three failed writes");
        assert_eq!(store.failures.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn an_erased_customers_waiting_contacts_are_never_written() {
        let (store, memory, _dir) = memory(usize::MAX);
        memory.record(contact("b", "one"));
        memory.flush();
        memory.forget_pending("b");
        store.failures.store(0, Ordering::SeqCst);
        memory.record(contact("a", "two"));
        memory.flush();
        assert_eq!(store.recent("a", 10).unwrap().len(), 1);
        std::thread::sleep(RETRY_FIRST * 3);
        assert!(
            store.recent("b", 10).unwrap().is_empty(),
            "erased before it was written"
        );
    }
}
