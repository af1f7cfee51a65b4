//! Shadow scoring: a candidate model scores a share of live conversations beside the live model;
//! its results never reach a client. The report compares the two on the same turns: valence
//! correlation, top-label agreement, alert-decision agreement (the rolling-threshold rule fed with
//! each model's rolling score), and inference latency.
//!
//! Conversations are sampled, not single turns (a stable hash of the conversation id against
//! `share`), so a sampled conversation's rolling scores are complete on both sides. Shadow texts
//! go through the same queue with `try_submit`: when the queue is full the shadow sample is
//! dropped (and counted), never the live turn.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::{LoadedModel, Scores};
use crate::alerts::{AlertPolicy, AlertTracker};
use crate::conversation::RollingScore;
use crate::metrics::{Metrics, OutcomeLabel};

/// Latencies kept for the percentiles (the most recent).
const LATENCY_WINDOW: usize = 10_000;
/// Sampled conversations whose rolling state is kept; beyond it the state restarts.
const MAX_CONVERSATIONS: usize = 100_000;

pub struct Shadow {
    pub model: Arc<LoadedModel>,
    pub share: f64,
    pub started_at: SystemTime,
    decay: f32,
    policy: AlertPolicy,
    stats: Mutex<Stats>,
    metrics: Metrics,
}

#[derive(Default)]
struct Stats {
    n: u64,
    sum_x: f64,
    sum_y: f64,
    sum_xx: f64,
    sum_yy: f64,
    sum_xy: f64,
    sum_abs_diff: f64,
    top_agree: u64,
    alert_decisions: u64,
    alert_agree: u64,
    dropped: u64,
    live_ms: Vec<f32>,
    shadow_ms: Vec<f32>,
    conversations: HashMap<String, Pair>,
}

/// One sampled conversation's customer state under each model. Shadow scores arrive in any
/// order; customer turns are applied to the rolling scores in admission order, each waiting for
/// the ones admitted before it.
#[derive(Default)]
struct Pair {
    /// Customer turns admitted, not yet applied, in order.
    expected: VecDeque<u64>,
    /// Arrived results (live valence, shadow valence); None: the shadow could not score it.
    arrived: HashMap<u64, Option<(f32, f32)>>,
    live: (RollingScore, AlertTracker),
    shadow: (RollingScore, AlertTracker),
}

/// The comparison so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowReport {
    pub live_version: String,
    pub shadow_version: String,
    pub share: f64,
    pub turns_compared: u64,
    pub valence_correlation: f64,
    pub mean_abs_valence_diff: f64,
    pub top_label_agreement: f64,
    pub alert_decisions: u64,
    pub alert_decision_agreement: f64,
    pub live_p50_ms: f64,
    pub live_p99_ms: f64,
    pub shadow_p50_ms: f64,
    pub shadow_p99_ms: f64,
    pub dropped: u64,
}

/// One turn as both models saw it.
pub struct Compared<'a> {
    pub conversation_id: &'a str,
    pub turn_id: u64,
    pub customer: bool,
    pub live: &'a Scores,
    pub live_latency: Duration,
    pub shadow: &'a Scores,
    pub shadow_latency: Duration,
    pub now: Instant,
}

impl Shadow {
    pub fn new(
        model: Arc<LoadedModel>,
        share: f64,
        decay: f32,
        policy: AlertPolicy,
        metrics: Metrics,
    ) -> Self {
        Self {
            model,
            share,
            started_at: SystemTime::now(),
            decay,
            policy,
            stats: Mutex::new(Stats::default()),
            metrics,
        }
    }

    fn publish(&self, st: &Stats) {
        let m = &self.metrics;
        m.shadow_valence_correlation.set(correlation(st));
        m.shadow_top_label_agreement.set(ratio(st.top_agree, st.n));
        m.shadow_alert_agreement
            .set(ratio(st.alert_agree, st.alert_decisions));
    }

    /// Whether this conversation is in the sample.
    pub fn samples(&self, conversation_id: &str) -> bool {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        conversation_id.hash(&mut h);
        (h.finish() as f64 / u64::MAX as f64) < self.share
    }

    /// Called in admission order for each customer turn of a sampled conversation.
    pub fn expect(&self, conversation_id: &str, turn_id: u64) {
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if st.conversations.len() >= MAX_CONVERSATIONS
            && !st.conversations.contains_key(conversation_id)
        {
            st.conversations.clear();
        }
        st.conversations
            .entry(conversation_id.to_string())
            .or_default()
            .expected
            .push_back(turn_id);
    }

    /// A sampled turn the shadow could not score (queue full, or the live turn failed).
    pub fn skipped(&self, conversation_id: &str, turn_id: u64, customer: bool, now: Instant) {
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        st.dropped += 1;
        self.metrics
            .shadow_turns
            .get_or_create(&OutcomeLabel { outcome: "skipped" })
            .inc();
        if customer {
            self.arrive(&mut st, conversation_id, turn_id, None, now);
        }
    }

    fn arrive(
        &self,
        st: &mut Stats,
        conversation_id: &str,
        turn_id: u64,
        values: Option<(f32, f32)>,
        now: Instant,
    ) {
        let Some(pair) = st.conversations.get_mut(conversation_id) else {
            return;
        };
        pair.arrived.insert(turn_id, values);
        let mut applied = Vec::new();
        while let Some(&next) = pair.expected.front() {
            let Some(values) = pair.arrived.remove(&next) else {
                break;
            };
            pair.expected.pop_front();
            if let Some((x, y)) = values {
                let level = |(rolling, tracker): &mut (RollingScore, AlertTracker), v: f32| {
                    let r = rolling.update(v, self.decay);
                    tracker.observe(&self.policy, r, rolling.turns(), now);
                    tracker.level()
                };
                applied.push(level(&mut pair.live, x) == level(&mut pair.shadow, y));
            }
        }
        for agree in applied {
            st.alert_decisions += 1;
            st.alert_agree += u64::from(agree);
        }
    }

    pub fn record(&self, c: Compared<'_>) {
        let (x, y) = (c.live.valence as f64, c.shadow.valence as f64);
        let top = |s: &Scores| {
            s.model
                .ranked(&s.probs)
                .first()
                .map(|&i| s.model.labels[i].clone())
        };
        let mut guard = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *guard;
        st.n += 1;
        st.sum_x += x;
        st.sum_y += y;
        st.sum_xx += x * x;
        st.sum_yy += y * y;
        st.sum_xy += x * y;
        st.sum_abs_diff += (x - y).abs();
        if top(c.live) == top(c.shadow) {
            st.top_agree += 1;
        }
        for (v, ms) in [
            (&mut st.live_ms, c.live_latency),
            (&mut st.shadow_ms, c.shadow_latency),
        ] {
            if v.len() == LATENCY_WINDOW {
                v.remove(0);
            }
            v.push(ms.as_secs_f32() * 1000.0);
        }
        if c.customer {
            self.arrive(
                st,
                c.conversation_id,
                c.turn_id,
                Some((c.live.valence, c.shadow.valence)),
                c.now,
            );
        }
        self.metrics
            .shadow_turns
            .get_or_create(&OutcomeLabel {
                outcome: "compared",
            })
            .inc();
        self.publish(st);
    }

    pub fn report(&self, live_version: &str) -> ShadowReport {
        let st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let n = st.n as f64;
        ShadowReport {
            live_version: live_version.to_string(),
            shadow_version: self.model.spec.tag.clone(),
            share: self.share,
            turns_compared: st.n,
            valence_correlation: correlation(&st),
            mean_abs_valence_diff: if st.n == 0 { 0.0 } else { st.sum_abs_diff / n },
            top_label_agreement: ratio(st.top_agree, st.n),
            alert_decisions: st.alert_decisions,
            alert_decision_agreement: ratio(st.alert_agree, st.alert_decisions),
            live_p50_ms: percentile(&st.live_ms, 0.5),
            live_p99_ms: percentile(&st.live_ms, 0.99),
            shadow_p50_ms: percentile(&st.shadow_ms, 0.5),
            shadow_p99_ms: percentile(&st.shadow_ms, 0.99),
            dropped: st.dropped,
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Pearson correlation of the live and shadow valences so far (0 until defined).
fn correlation(st: &Stats) -> f64 {
    let n = st.n as f64;
    let cov = st.sum_xy / n - (st.sum_x / n) * (st.sum_y / n);
    let vx = st.sum_xx / n - (st.sum_x / n).powi(2);
    let vy = st.sum_yy / n - (st.sum_y / n).powi(2);
    if st.n < 2 || vx <= 0.0 || vy <= 0.0 {
        0.0
    } else {
        (cov / (vx.sqrt() * vy.sqrt())).clamp(-1.0, 1.0)
    }
}

fn percentile(values: &[f32], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize] as f64
}
