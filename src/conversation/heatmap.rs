//! The emotion heatmap behind the supervisor dashboard: customer turns aggregated per
//! (tenant, queue) and 5-minute bucket of wall-clock time, as they are scored.
//!
//! Each bucket keeps the number of customer turns, their summed valence and how often each label
//! was a turn's top label (label names, so a model swap with another label set mixes cleanly).
//! Buckets older than the window are dropped as new ones open; the number of (tenant, queue) rows
//! is capped, dropping the one idle longest.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Width of one bucket.
pub const BUCKET: Duration = Duration::from_secs(300);
/// How far back buckets are kept: a long shift.
pub const WINDOW: Duration = Duration::from_secs(12 * 3600);
/// Most (tenant, queue) rows kept.
const MAX_ROWS: usize = 2_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RowKey {
    pub tenant: String,
    pub queue: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bucket {
    /// Unix seconds at the bucket's start.
    start: u64,
    turns: u32,
    valence_sum: f64,
    /// (label, turns whose top label it was), in first-seen order.
    top_labels: Vec<(Box<str>, u32)>,
}

/// One cell as reported: a (row, bucket) with at least one customer turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub start: u64,
    pub turns: u32,
    pub mean_valence: f32,
    /// The most frequent top label, and in how many turns it was the top label.
    pub dominant: (String, u32),
    /// The most frequent top label other than "neutral", if any.
    pub dominant_emotion: Option<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: RowKey,
    pub cells: Vec<Cell>,
}

#[derive(Default)]
pub struct Heatmap {
    rows: Mutex<HashMap<RowKey, VecDeque<Bucket>>>,
    /// A turn was recorded since the last [`Heatmap::changed`].
    dirty: AtomicBool,
}

/// Every row and bucket, as persisted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeatmapSnapshot(Vec<(RowKey, Vec<Bucket>)>);

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The start of the bucket holding `t`, in Unix seconds.
pub fn bucket_start(t: SystemTime) -> u64 {
    let secs = unix_secs(t);
    secs - secs % BUCKET.as_secs()
}

impl Heatmap {
    /// Counts one scored customer turn.
    pub fn record(&self, tenant: &str, queue: &str, at: SystemTime, valence: f32, top: &str) {
        let start = bucket_start(at);
        let oldest = start.saturating_sub(WINDOW.as_secs());
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let key = RowKey {
            tenant: tenant.to_string(),
            queue: queue.to_string(),
        };
        if !rows.contains_key(&key) && rows.len() >= MAX_ROWS {
            let idle = rows
                .iter()
                .min_by_key(|(_, b)| b.back().map_or(0, |b| b.start))
                .map(|(k, _)| k.clone());
            if let Some(idle) = idle {
                rows.remove(&idle);
            }
        }
        let buckets = rows.entry(key).or_default();
        while buckets.front().is_some_and(|b| b.start < oldest) {
            buckets.pop_front();
        }
        // Turns arrive in wall-clock order, so the bucket is the last one or a new one.
        let bucket = match buckets.back_mut() {
            Some(b) if b.start >= start => b,
            _ => {
                buckets.push_back(Bucket {
                    start,
                    turns: 0,
                    valence_sum: 0.0,
                    top_labels: Vec::new(),
                });
                buckets.back_mut().expect("pushed")
            }
        };
        self.dirty.store(true, Ordering::Relaxed);
        bucket.turns += 1;
        bucket.valence_sum += f64::from(valence);
        match bucket.top_labels.iter_mut().find(|(l, _)| &**l == top) {
            Some((_, n)) => *n += 1,
            None => bucket.top_labels.push((top.into(), 1)),
        }
    }

    /// Rows of the tenants in `tenants` (empty: all) and of `queue` (if given), with their
    /// buckets starting at or after `since`, sorted by tenant and queue.
    pub fn snapshot(&self, tenants: &[String], queue: Option<&str>, since: SystemTime) -> Vec<Row> {
        let since = bucket_start(since);
        let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Row> = rows
            .iter()
            .filter(|(k, _)| tenants.is_empty() || tenants.contains(&k.tenant))
            .filter(|(k, _)| queue.is_none_or(|q| q == k.queue))
            .map(|(k, buckets)| Row {
                key: k.clone(),
                cells: buckets
                    .iter()
                    .filter(|b| b.start >= since)
                    .map(Bucket::cell)
                    .collect(),
            })
            .filter(|r| !r.cells.is_empty())
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

impl Heatmap {
    /// Every row, if a turn was recorded since the last call.
    pub fn changed(&self) -> Option<HeatmapSnapshot> {
        let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return None;
        }
        Some(HeatmapSnapshot(
            rows.iter()
                .map(|(k, b)| (k.clone(), b.iter().cloned().collect()))
                .collect(),
        ))
    }

    /// The last `changed` was not saved: report the rows again next time.
    pub fn mark_changed(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Puts saved rows back (at start).
    pub fn restore(&self, saved: HeatmapSnapshot) {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        for (key, buckets) in saved.0.into_iter().take(MAX_ROWS) {
            rows.insert(key, buckets.into());
        }
    }
}

impl Bucket {
    fn cell(&self) -> Cell {
        let most = |skip_neutral: bool| {
            self.top_labels
                .iter()
                .filter(|(l, _)| !skip_neutral || &**l != "neutral")
                // The first-seen label wins a tie.
                .fold(None::<&(Box<str>, u32)>, |best, x| match best {
                    Some(b) if b.1 >= x.1 => Some(b),
                    _ => Some(x),
                })
                .map(|(l, n)| (l.to_string(), *n))
        };
        Cell {
            start: self.start,
            turns: self.turns,
            mean_valence: (self.valence_sum / f64::from(self.turns.max(1))) as f32,
            dominant: most(false).unwrap_or_default(),
            dominant_emotion: most(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn buckets_means_dominant_and_window() {
        let map = Heatmap::default();
        let t0 = 1_800_000_100 - 1_800_000_100 % 300;
        map.record("acme", "billing", at(t0 + 10), -0.5, "anger");
        map.record("acme", "billing", at(t0 + 20), -0.1, "neutral");
        map.record("acme", "billing", at(t0 + 299), -0.3, "anger");
        map.record("acme", "billing", at(t0 + 300), 0.4, "joy");
        map.record("acme", "sales", at(t0 + 5), 0.2, "neutral");
        map.record("globex", "billing", at(t0 + 5), 0.2, "neutral");

        let rows = map.snapshot(&["acme".into()], None, at(t0));
        assert_eq!(rows.len(), 2);
        let billing = &rows[0];
        assert_eq!(billing.key.queue, "billing");
        assert_eq!(billing.cells.len(), 2);
        let first = &billing.cells[0];
        assert_eq!((first.start, first.turns), (t0, 3));
        assert!((first.mean_valence - (-0.3)).abs() < 1e-6);
        assert_eq!(first.dominant, ("anger".to_string(), 2));
        assert_eq!(billing.cells[1].dominant, ("joy".to_string(), 1));
        let sales = &rows[1].cells[0];
        assert_eq!(sales.dominant.0, "neutral");
        assert_eq!(sales.dominant_emotion, None);

        let later = map.snapshot(&[], Some("billing"), at(t0 + 300));
        assert_eq!(later.len(), 1, "globex/billing has nothing since then");
        assert_eq!(
            (later[0].key.tenant.as_str(), later[0].cells.len()),
            ("acme", 1)
        );
        assert_eq!(map.snapshot(&[], Some("billing"), at(t0)).len(), 2);

        // A turn more than a window after the row's last bucket drops its old buckets.
        map.record(
            "acme",
            "billing",
            at(t0 + 300 + WINDOW.as_secs() + 300),
            0.0,
            "neutral",
        );
        let rows = map.snapshot(&["acme".into()], Some("billing"), at(0));
        assert_eq!(rows[0].cells.len(), 1);
    }
}
