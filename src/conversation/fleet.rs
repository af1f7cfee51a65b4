//! The fleet view (cluster mode): the dashboard's at-risk list and heatmap over every replica's
//! conversations, not only those the replica it is served from happened to apply.
//!
//! Each replica watches the shared conversations ([`SharedConversations::watch`]) and keeps
//! here, per conversation, what the at-risk list shows (built by the same code as the embedded
//! list, from the committed snapshot), and counts into the store's heatmap each customer turn it
//! sees committed, once (by turn id, per conversation). A replica's own turns come back to it
//! through the watch too: in cluster mode that is the heatmap's only way in.
//!
//! Costs: one decode of the committed state per commit, on every replica (measured in
//! BENCHMARKS.md); memory: one summary per live conversation of the fleet.
//! Limits: a conversation that expires in the bucket (the TTL) leaves no change to watch; it
//! leaves the list when its TTL has passed here too. Turns committed together (a client that
//! moved, a replica's retry) are counted at the commit's last-turn time; a replica that starts
//! counts the retained customer turns of the live conversations it finds at their last turn's
//! time.
//!
//! [`SharedConversations::watch`]: super::SharedConversations::watch

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::overview::AtRisk;
use super::state::Conversation;
use super::{Heatmap, SharedChange, Speaker};

#[derive(Default)]
pub(super) struct FleetIndex {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By the bucket's key.
    live: HashMap<String, Live>,
    /// The newest customer turn counted into the heatmap, per key (kept across a restarted
    /// watch, so that its replay counts nothing twice), and when it was last seen.
    counted: HashMap<String, (u64, SystemTime)>,
}

struct Live {
    summary: AtRisk,
    /// The customer's rolling score; +inf before their first turn (listed last).
    risk: f32,
    /// When the change was seen: the bucket's TTL runs from its last write.
    seen: SystemTime,
}

impl FleetIndex {
    /// Applies one change of the watch; the customer turns it commits are counted into
    /// `heatmap`.
    pub(super) fn apply(&self, change: SharedChange, heatmap: &Heatmap, ttl: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match change {
            SharedChange::Restarted => {
                // What the watch replays next is all there is: conversations removed while it
                // was interrupted are not in it.
                inner.live.clear();
                let now = SystemTime::now();
                inner
                    .counted
                    .retain(|_, (_, seen)| now.duration_since(*seen).unwrap_or_default() < ttl);
            }
            SharedChange::Removed { key } => {
                // Ended: the same id may start again, from turn 1.
                inner.live.remove(&key);
                inner.counted.remove(&key);
            }
            SharedChange::Committed { key, state, .. } => {
                let id = state.conversation_id;
                let Some(conv) = Conversation::from_snapshot(state.snapshot) else {
                    inner.live.remove(&key);
                    return;
                };
                let now = SystemTime::now();
                let counted = inner.counted.get(&key).map_or(0, |(turn, _)| *turn);
                let mut newest = counted;
                for turn in conv.history.iter() {
                    if turn.speaker != Speaker::Customer || turn.turn_id <= counted {
                        continue;
                    }
                    let top = (turn.probs.iter().enumerate())
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .and_then(|(i, _)| turn.model.labels.get(i));
                    heatmap.record(
                        &conv.context.tenant,
                        &conv.context.queue,
                        conv.updated_at,
                        turn.valence,
                        top.map_or("", String::as_str),
                    );
                    newest = newest.max(turn.turn_id);
                }
                inner.counted.insert(key.clone(), (newest, now));
                let summary = conv.at_risk(&id);
                let risk = summary.customer_rolling.unwrap_or(f32::INFINITY);
                inner.live.insert(
                    key,
                    Live {
                        summary,
                        risk,
                        seen: now,
                    },
                );
            }
        }
    }

    /// The live conversations of `customer` (a pseudonym) anywhere in the fleet (erasure).
    pub(super) fn of_customer(&self, customer: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.live.values())
            .filter(|l| !customer.is_empty() && l.summary.context.customer == customer)
            .map(|l| l.summary.conversation_id.clone())
            .collect()
    }

    /// The `limit` riskiest live conversations of the fleet of `tenants` (empty: all) and
    /// `queue`, and how many matched; as [`ConversationStore::at_risk`] in one process.
    ///
    /// [`ConversationStore::at_risk`]: super::ConversationStore::at_risk
    pub(super) fn at_risk(
        &self,
        tenants: &[String],
        queue: Option<&str>,
        limit: usize,
        ttl: Duration,
    ) -> (Vec<AtRisk>, usize) {
        let now = SystemTime::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = |seen: SystemTime| now.duration_since(seen).unwrap_or_default() < ttl;
        inner.live.retain(|_, l| fresh(l.seen));
        inner.counted.retain(|_, (_, seen)| fresh(*seen));
        let mut matched: Vec<&Live> = inner
            .live
            .values()
            .filter(|l| {
                let c = &l.summary.context;
                (tenants.is_empty() || tenants.contains(&c.tenant))
                    && queue.is_none_or(|q| q == c.queue)
            })
            .collect();
        let n = matched.len();
        matched.sort_by(|a, b| {
            a.risk
                .total_cmp(&b.risk)
                .then_with(|| a.summary.conversation_id.cmp(&b.summary.conversation_id))
        });
        let listed = matched
            .into_iter()
            .take(limit)
            .map(|l| l.summary.clone())
            .collect();
        (listed, n)
    }
}
