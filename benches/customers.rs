//! Customer memory at scale (issue 17's targets): the embedded store holding CUSTOMERS customers
//! (default 1,000,000) with 5 contacts each. Prints, in one run:
//! - the time to fill it and its size on disk per customer;
//! - the turn path's lookup (a customer's newest contacts, what a conversation's first turn reads
//!   on the blocking pool while the turn is scored): p50 / p99 / max over 100,000 random customers,
//!   on one thread and on two at once;
//! - the silent list's first page (100, with the total) and a deep page;
//! - marking a customer called, and erasing one;
//! - the erasure's search of the alert log for the customer's other conversations
//!   (`AlertLog::conversations_of`) in a log of ALERT_EVENTS events (default 1,000,000; 0 skips
//!   it);
//! - sealing and opening (cluster mode).
//!
//! `cargo bench --bench customers` (CUSTOMERS=100000 for a quick run; CUSTOMERS_DB=path keeps the
//! filled store between runs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use emotion_service::customers::sqlite::SqliteCustomerStore;
use emotion_service::customers::{Contact, CustomerStore, Outcome, Pseudonymizer, SilentQuery};

const CONTACTS_EACH: u64 = 5;
const DAY: u64 = 86_400_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (n={})",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    )
}

fn main() {
    let customers = env("CUSTOMERS", 1_000_000);
    let keep = std::env::var_os("CUSTOMERS_DB");
    let dir = tempfile::tempdir().unwrap();
    let path = keep
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("customers.sqlite3"));
    let pseudonyms = Pseudonymizer::new(b"bench key, not a secret, 32 byte");
    let key = |i: u64| pseudonyms.pseudonym("bench", &format!("customer-{i}"));
    let now = emotion_service::customers::now_ms();
    let fresh = !path.exists();
    let store = Arc::new(SqliteCustomerStore::open(&path).unwrap());
    println!(
        "customer memory: {customers} customers x {CONTACTS_EACH} contacts, {}",
        path.display()
    );

    if fresh {
        let started = Instant::now();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..customers {
            let customer = key(i);
            for n in 0..CONTACTS_EACH {
                let r = rng.next();
                // One contact in five ends badly; the last one decides the silent list.
                let outcome = match r % 20 {
                    0..=15 => Outcome::Ok,
                    16 | 17 => Outcome::Negative,
                    18 => Outcome::OpenIncident,
                    _ => Outcome::Resigned,
                };
                let ended_ms = now - (CONTACTS_EACH - n) * 9 * DAY - (r >> 40) % DAY;
                batch.push(Contact {
                    customer: customer.clone(),
                    conversation_id: format!("conv-{i}-{n}"),
                    tenant: format!("tenant-{}", i % 4),
                    queue: ["billing", "devices", "orders"][(r % 3) as usize].into(),
                    agent_id: format!("agent-{}", r % 500),
                    started_ms: ended_ms - 300_000,
                    ended_ms,
                    final_score: ((r % 200) as f32 / 100.0) - 1.0,
                    lowest_score: ((r % 100) as f32 / 100.0) - 1.0,
                    alert_events: (r % 4) as u32,
                    emotions: vec!["anger".into(), "disappointment".into()],
                    outcome,
                });
            }
            if batch.len() >= 10_000 {
                store.record(&batch).unwrap();
                batch.clear();
            }
            if i > 0 && i % 200_000 == 0 {
                println!(
                    "  filled {i} customers ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        store.record(&batch).unwrap();
        println!(
            "fill: {:.1} s ({:.0} contacts/s)",
            started.elapsed().as_secs_f64(),
            (customers * CONTACTS_EACH) as f64 / started.elapsed().as_secs_f64()
        );
    }
    let (held, contacts, bytes) = store.stats().unwrap();
    println!(
        "held: {held} customers, {contacts} contacts, {:.1} MiB on disk, {:.0} bytes per customer",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / held.max(1) as f64
    );

    // The turn path's read: one customer's newest contacts.
    let lookups = 100_000;
    let mut rng = Rng(42);
    let keys: Vec<String> = (0..lookups).map(|_| key(rng.next() % customers)).collect();
    for k in keys.iter().take(1_000) {
        store.recent(k, 5).unwrap();
    }
    let mut times = Vec::with_capacity(lookups);
    for k in &keys {
        let t = Instant::now();
        let found = store.recent(k, 5).unwrap();
        times.push(t.elapsed());
        assert_eq!(found.len() as u64, CONTACTS_EACH);
    }
    println!("lookup, 1 thread:   {}", percentiles(times));
    let mut threads = Vec::new();
    for half in keys.chunks(lookups / 2) {
        let (store, half) = (store.clone(), half.to_vec());
        threads.push(std::thread::spawn(move || {
            half.iter()
                .map(|k| {
                    let t = Instant::now();
                    store.recent(k, 5).unwrap();
                    t.elapsed()
                })
                .collect::<Vec<_>>()
        }));
    }
    let both: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    println!("lookup, 2 threads:  {}", percentiles(both));
    let miss = Instant::now();
    for i in 0..10_000 {
        store.recent(&key(customers + i), 5).unwrap();
    }
    println!(
        "lookup of a customer never seen: mean {:.3} ms",
        miss.elapsed().as_secs_f64() * 1e3 / 10_000.0
    );

    // The silent list.
    let query = |offset: usize| SilentQuery {
        tenants: Vec::new(),
        as_of_ms: now + 8 * DAY,
        silent_after: Duration::from_millis(7 * DAY),
        limit: 100,
        offset,
    };
    for (label, q) in [
        ("first page", query(0)),
        ("first page again", query(0)),
        ("page at offset 100,000", query(100_000)),
    ] {
        let t = Instant::now();
        let page = store.silent(&q).unwrap();
        println!(
            "silent list, {label}: {:.1} ms ({} of {} silent customers)",
            t.elapsed().as_secs_f64() * 1e3,
            page.customers.len(),
            page.total
        );
    }
    let one_tenant = SilentQuery {
        tenants: vec!["tenant-1".into()],
        ..query(0)
    };
    let t = Instant::now();
    let page = store.silent(&one_tenant).unwrap();
    println!(
        "silent list, one tenant's first page: {:.1} ms ({} of {})",
        t.elapsed().as_secs_f64() * 1e3,
        page.customers.len(),
        page.total
    );

    let top = store.silent(&query(0)).unwrap().customers;
    if let Some(first) = top.first() {
        let t = Instant::now();
        store.mark_called(&first.customer, "bench", now).unwrap();
        println!("mark called: {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let erased = store.delete(&first.customer, &[]).unwrap();
        println!(
            "delete one customer ({} contacts, secure_delete + WAL truncate): {:.2} ms",
            erased.contacts,
            t.elapsed().as_secs_f64() * 1e3
        );
    }

    erasure_scan(&key);
    sealing();
}

/// `DeleteCustomer` searches every retained alert event for the customer's pseudonym (to reach
/// conversations that are neither contacts nor live): its cost on a log of ALERT_EVENTS events,
/// each naming one of 100,000 customers, with two evidence excerpts.
fn erasure_scan(key: &dyn Fn(u64) -> String) {
    use emotion_service::alerts::log::{AlertLog, SqliteAlertLog};
    use emotion_service::pb;
    let events = env("ALERT_EVENTS", 1_000_000);
    if events == 0 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = emotion_service::config::AlertLogConfig {
        path: dir.path().join("alerts.sqlite3"),
        ..Default::default()
    };
    let log = SqliteAlertLog::open(&config).unwrap();
    let started = Instant::now();
    let excerpt =
        "我上个月就已经销户了，为什么还在扣费！你们这个月又多扣了我三十块钱，到底怎么回事？";
    for i in 0..events {
        let evidence = |turn_id: u64| pb::EvidenceTurn {
            turn_id,
            valence: -0.6,
            excerpt: excerpt.into(),
            ..Default::default()
        };
        let alert = pb::Alert {
            alert_id: format!("alert-{i}"),
            conversation_id: format!("conv-{}-{}", i % 100_000, i / 100_000),
            kind: "sustained_negativity".into(),
            context: Some(pb::Context {
                tenant: "bench".into(),
                queue: "billing".into(),
                customer_key: key(i % 100_000),
                ..Default::default()
            }),
            evidence: vec![evidence(3), evidence(4)],
            detail: "The customer's rolling score fell below -0.4 over 3 turns.".into(),
            created_at: Some(std::time::SystemTime::now().into()),
            ..Default::default()
        };
        log.append(&alert).unwrap();
    }
    let bytes = std::fs::metadata(&config.path).map_or(0, |m| m.len());
    println!(
        "alert log: {events} events appended in {:.1} s, {:.0} MiB",
        started.elapsed().as_secs_f64(),
        bytes as f64 / (1 << 20) as f64
    );
    let mut times = Vec::new();
    for c in [7u64, 40_000, 99_999] {
        let t = Instant::now();
        let found = log.conversations_of(&key(c)).unwrap();
        times.push(t.elapsed());
        let expected = if c < events {
            (events - 1 - c) / 100_000 + 1
        } else {
            0
        };
        assert_eq!(found.len() as u64, expected);
    }
    println!(
        "erasure's search of the alert log for one customer's conversations: {}",
        percentiles(times)
    );
}

/// Cluster mode seals what NATS stores of a customer's (a conversation's committed state at
/// every commit, each alert event, each contact) with the customer's key: the cost of sealing and
/// opening one value of a few sizes (a short conversation's state is a few KB).
fn sealing() {
    use emotion_service::cluster::customers::{aead_key, open, seal};
    let key = aead_key(&[7u8; 32]).unwrap();
    let customer = "0123456789abcdef0123456789abcdef";
    for size in [1_024usize, 4_096, 16_384, 65_536] {
        let plain = vec![0x5au8; size];
        let n = (64 * 1_048_576 / size).max(1_000);
        let t = Instant::now();
        let mut sealed = Vec::new();
        for _ in 0..n {
            sealed = seal(&key, customer, std::hint::black_box(&plain));
        }
        let seal_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            assert!(open(&key, customer, std::hint::black_box(&sealed)).is_some());
        }
        let open_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!(
            "seal / open {:>2} KB (AES-256-GCM): {seal_us:.2} / {open_us:.2} us",
            size / 1_024
        );
    }
}
