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
    /// Answered once everything handed over before it is written.
    Flush(mpsc::Sender<()>),
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
                .spawn(move || {
                    // Everything that arrived together is one transaction.
                    while let Ok(first) = rx.recv() {
                        let mut batch = Vec::new();
                        let mut flushes = Vec::new();
                        for w in std::iter::once(first).chain(rx.try_iter().take(4_095)) {
                            match w {
                                Write::Contact(c) => batch.push(c),
                                Write::Flush(done) => flushes.push(done),
                            }
                        }
                        if !batch.is_empty()
                            && let Err(e) = store.record(&batch)
                        {
                            tracing::error!(error = %e, contacts = batch.len(), "customer contacts not recorded");
                        }
                        for done in flushes {
                            let _ = done.send(());
                        }
                    }
                })
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

    /// Blocks until every contact handed over so far is written.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.send(Write::Flush(tx)) {
            let _ = rx.recv();
        }
    }

    /// Earlier contacts of `customer`, newest first, as much as the brief and the repeat rule
    /// need. Blocking.
    pub fn earlier(&self, customer: &str) -> Result<Vec<Contact>, CustomerError> {
        self.store.recent(customer, EARLIER_CONTACTS)
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
