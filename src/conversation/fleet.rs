//! The fleet view (cluster mode): the dashboard's at-risk list and heatmap over every replica's
//! conversations, not only those the replica it is served from happened to apply.
//!
//! Each replica follows the shared conversations ([`SharedConversations::watch`]): what was
//! committed when it starts, then a [`FleetSummary`] per commit that the committing replica
//! announces (a few hundred bytes: the at-risk entry and the retained customer turns' valence
//! and top label, not the conversation's state), and each removal. It keeps here, per
//! conversation, what the at-risk list shows, and counts into the store's heatmap each customer
//! turn it sees committed, once (by turn id, per conversation). A replica's own turns come back
//! to it the same way: in cluster mode that is the heatmap's only way in.
//!
//! Announcements are not stored: one lost (a connection that broke) leaves a conversation as it
//! was until its next commit, which carries every retained turn, or its TTL; the watch replays
//! the bucket after a reconnection. Two replicas' announcements of one conversation may cross:
//! each carries its commit's revision, and an older one than what is held is ignored (a removal
//! leaves its revision behind for the TTL, so that a late commit does not bring it back).
//!
//! Costs: one summary per commit, built by the committing replica (measured in BENCHMARKS.md);
//! memory: one summary per live conversation of the fleet.
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

use serde::{Deserialize, Serialize};

use super::overview::AtRisk;
use super::state::Conversation;
use super::{Heatmap, Revision, SharedChange, SharedState, Speaker};

/// What the fleet view needs of a committed conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetSummary {
    pub at_risk: AtRisk,
    /// The retained customer turns, oldest first: (turn id, valence, top label).
    pub turns: Vec<(u64, f32, String)>,
}

impl FleetSummary {
    /// The summary of a committed state (None if it cannot be read).
    pub fn of(state: &SharedState) -> Option<Self> {
        let conv = Conversation::from_snapshot(state.snapshot.clone())?;
        let turns = (conv.history.iter())
            .filter(|t| t.speaker == Speaker::Customer)
            .map(|t| {
                let top = (t.probs.iter().enumerate())
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .and_then(|(i, _)| t.model.labels.get(i));
                (t.turn_id, t.valence, top.cloned().unwrap_or_default())
            })
            .collect();
        Some(Self {
            at_risk: conv.at_risk(&state.conversation_id),
            turns,
        })
    }
}

/// How long past the TTL a conversation the fleet view saw no change of stays in it, for the
/// orphan sweep (the bucket expires it 60 s past the TTL).
pub(super) const ORPHANS_KEPT: Duration = Duration::from_secs(120);

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
    /// The revision each removed key had, and when it was removed: a commit announced late
    /// (at or below it) is ignored.
    removed: HashMap<String, (Revision, SystemTime)>,
}

struct Live {
    summary: AtRisk,
    /// The customer's rolling score; +inf before their first turn (listed last).
    risk: f32,
    /// When the change was seen: the bucket's TTL runs from its last write.
    seen: SystemTime,
    revision: Revision,
}

impl FleetIndex {
    /// Applies one change of the watch; the customer turns it commits are counted into
    /// `heatmap`.
    pub(super) fn apply(&self, change: SharedChange, heatmap: &Heatmap, ttl: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        match change {
            SharedChange::Restarted => {
                // What the watch replays next is all there is: conversations removed while it
                // was interrupted are not in it.
                inner.live.clear();
                inner.removed.clear();
                inner
                    .counted
                    .retain(|_, (_, seen)| now.duration_since(*seen).unwrap_or_default() < ttl);
            }
            SharedChange::Removed { key, revision } => {
                if inner.live.get(&key).is_some_and(|l| l.revision > revision) {
                    return; // started again since, under the same id
                }
                // Ended: the same id may start again, from turn 1.
                inner.live.remove(&key);
                inner.counted.remove(&key);
                inner.removed.insert(key, (revision, now));
            }
            SharedChange::Committed {
                key,
                revision,
                summary,
            } => {
                let stale = inner.live.get(&key).is_some_and(|l| l.revision >= revision)
                    || inner.removed.get(&key).is_some_and(|(r, _)| *r >= revision);
                if stale {
                    return;
                }
                inner.removed.remove(&key);
                let FleetSummary { at_risk, turns } = *summary;
                let counted = inner.counted.get(&key).map_or(0, |(turn, _)| *turn);
                let mut newest = counted;
                for (turn_id, valence, top) in turns.iter().filter(|t| t.0 > counted) {
                    let c = &at_risk.context;
                    heatmap.record(&c.tenant, &c.queue, at_risk.updated_at, *valence, top);
                    newest = newest.max(*turn_id);
                }
                inner.counted.insert(key.clone(), (newest, now));
                let risk = at_risk.customer_rolling.unwrap_or(f32::INFINITY);
                inner.live.insert(
                    key,
                    Live {
                        summary: at_risk,
                        risk,
                        seen: now,
                        revision,
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

    /// The conversations of which no change has been seen for `idle` or longer, the oldest
    /// first, at most `limit`: candidates for ending, if the replica that held one died before
    /// its idle sweep ended it (the bucket would expire it unrecorded). Kept here for `idle` plus
    /// [`ORPHANS_KEPT`] after their last change, so that a sweep finds them.
    pub(super) fn idle(&self, idle: Duration, limit: usize) -> Vec<String> {
        let now = SystemTime::now();
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut idle: Vec<(SystemTime, &str)> = (inner.live.values())
            .filter(|l| now.duration_since(l.seen).unwrap_or_default() >= idle)
            .map(|l| (l.seen, l.summary.conversation_id.as_str()))
            .collect();
        idle.sort();
        idle.into_iter()
            .take(limit)
            .map(|(_, id)| id.to_string())
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
        // Idle ones stay a while for the orphan sweep ([`Self::idle`]); the list shows them no
        // more.
        let kept =
            |seen: SystemTime| now.duration_since(seen).unwrap_or_default() < ttl + ORPHANS_KEPT;
        inner.live.retain(|_, l| kept(l.seen));
        inner.counted.retain(|_, (_, seen)| fresh(*seen));
        inner.removed.retain(|_, (_, seen)| fresh(*seen));
        let mut matched: Vec<&Live> = inner
            .live
            .values()
            .filter(|l| {
                let c = &l.summary.context;
                fresh(l.seen)
                    && (tenants.is_empty() || tenants.contains(&c.tenant))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Context, Severity};

    fn summary(id: &str, rolling: f32, turns: &[u64]) -> Box<FleetSummary> {
        Box::new(FleetSummary {
            at_risk: AtRisk {
                conversation_id: id.into(),
                context: Context {
                    tenant: "acme".into(),
                    queue: "billing".into(),
                    ..Default::default()
                },
                customer_rolling: Some(rolling),
                alert_level: Severity::None,
                turns: turns.len() as u32,
                trajectory: vec![rolling; turns.len()],
                dominant: Vec::new(),
                updated_at: SystemTime::now(),
            },
            turns: turns
                .iter()
                .map(|&t| (t, rolling, "anger".into()))
                .collect(),
        })
    }

    fn committed(revision: Revision, rolling: f32, turns: &[u64]) -> SharedChange {
        SharedChange::Committed {
            key: "c.1".into(),
            revision,
            summary: summary("one", rolling, turns),
        }
    }

    fn counted(heatmap: &Heatmap) -> u32 {
        let rows = heatmap.snapshot(&[], None, SystemTime::UNIX_EPOCH);
        rows.iter().flat_map(|r| &r.cells).map(|c| c.turns).sum()
    }

    fn rolling(index: &FleetIndex) -> Vec<Option<f32>> {
        let (listed, _) = index.at_risk(&[], None, 10, Duration::from_secs(60));
        listed.iter().map(|a| a.customer_rolling).collect()
    }

    /// A conversation with no change for the TTL leaves the at-risk list but stays a candidate
    /// for the orphan sweep until it has been idle for the TTL plus `ORPHANS_KEPT`.
    #[test]
    fn an_idle_conversation_leaves_the_list_and_waits_for_the_sweep() {
        let (index, heatmap) = (FleetIndex::default(), Heatmap::default());
        index.apply(committed(1, -0.5, &[1]), &heatmap, Duration::from_secs(60));
        let hour = Duration::from_secs(3600);
        assert_eq!(index.at_risk(&[], None, 10, hour).1, 1);
        assert!(index.idle(hour, 10).is_empty());
        // As seen a TTL of 0 later: idle, off the list, still there for the sweep.
        assert_eq!(index.at_risk(&[], None, 10, Duration::ZERO).1, 0);
        assert_eq!(index.idle(Duration::ZERO, 10), ["one"]);
        assert!(index.idle(Duration::ZERO, 0).is_empty());
        // Ended (by whichever replica won the compare-and-set): gone.
        let removed = SharedChange::Removed {
            key: "c.1".into(),
            revision: 2,
        };
        index.apply(removed, &heatmap, Duration::from_secs(60));
        assert!(index.idle(Duration::ZERO, 10).is_empty());
    }

    #[test]
    fn announcements_that_cross_apply_by_revision_and_count_each_turn_once() {
        let (index, heatmap, ttl) = (
            FleetIndex::default(),
            Heatmap::default(),
            Duration::from_secs(60),
        );
        index.apply(committed(5, -0.5, &[1, 2]), &heatmap, ttl);
        // An older commit announced late (another replica's) changes nothing.
        index.apply(committed(4, 0.3, &[1]), &heatmap, ttl);
        assert_eq!(rolling(&index), [Some(-0.5)]);
        // The replay of what was already applied counts nothing twice.
        index.apply(committed(5, -0.5, &[1, 2]), &heatmap, ttl);
        index.apply(committed(7, -0.6, &[1, 2, 3]), &heatmap, ttl);
        assert_eq!((rolling(&index), counted(&heatmap)), (vec![Some(-0.6)], 3));

        // A removal of an older revision than held: the conversation started again since.
        let removed = |revision| SharedChange::Removed {
            key: "c.1".into(),
            revision,
        };
        index.apply(removed(6), &heatmap, ttl);
        assert_eq!(rolling(&index), [Some(-0.6)]);
        // Removed at its revision: gone, and a commit announced late does not bring it back.
        index.apply(removed(7), &heatmap, ttl);
        index.apply(committed(7, -0.6, &[1, 2, 3]), &heatmap, ttl);
        assert!(rolling(&index).is_empty());
        // The same id started again (a later revision): listed, its turns counted from 1.
        index.apply(committed(9, 0.4, &[1]), &heatmap, ttl);
        assert_eq!((rolling(&index), counted(&heatmap)), (vec![Some(0.4)], 4));
    }
}
