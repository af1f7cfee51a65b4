//! The dashboard's view over the store: live conversations ranked by risk.

use std::collections::BinaryHeap;
use std::time::SystemTime;

use super::state::Conversation;
use super::{Context, ConversationStore, Speaker, visible};
use crate::alerts::Severity;

/// A live conversation as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AtRisk {
    pub conversation_id: String,
    pub context: Context,
    /// The customer's rolling valence; `None` before the customer's first scored turn.
    pub customer_rolling: Option<f32>,
    pub alert_level: Severity,
    pub turns: u32,
    /// The customer's rolling valence after each retained customer turn, oldest first.
    pub trajectory: Vec<f32>,
    /// Mean probability over the customer's turns, highest first, at most 3.
    pub dominant: Vec<(String, f32)>,
    pub updated_at: SystemTime,
}

/// The sort key: lowest customer rolling score first; conversations without a customer turn last.
struct Risk(f32);

impl PartialEq for Risk {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Risk {}

impl PartialOrd for Risk {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Risk {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl ConversationStore {
    /// The `limit` riskiest live conversations of `tenants` (empty: all) and `queue` (if given),
    /// and how many conversations matched in all.
    pub fn at_risk(
        &self,
        tenants: &[String],
        queue: Option<&str>,
        limit: usize,
    ) -> (Vec<AtRisk>, usize) {
        if let Some(fleet) = &self.fleet {
            return fleet.at_risk(tenants, queue, limit, self.settings.ttl);
        }
        // A bounded max-heap of (risk, id): the least risky of the kept ones is dropped first.
        let mut kept: BinaryHeap<(Risk, String)> = BinaryHeap::with_capacity(limit + 1);
        let mut matched = 0;
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (id, conv) in shard.iter() {
                if !visible(conv, tenants) || queue.is_some_and(|q| q != conv.context.queue) {
                    continue;
                }
                matched += 1;
                let customer = &conv.speakers[Speaker::Customer.index()];
                let risk = if customer.turns() > 0 {
                    customer.value()
                } else {
                    f32::INFINITY
                };
                kept.push((Risk(risk), id.clone()));
                if kept.len() > limit {
                    kept.pop();
                }
            }
        }
        let listed = kept
            .into_sorted_vec()
            .into_iter()
            .filter_map(|(_, id)| self.summarize(&id))
            .collect();
        (listed, matched)
    }

    fn summarize(&self, conversation_id: &str) -> Option<AtRisk> {
        let shard = self.shard(conversation_id);
        Some(shard.get(conversation_id)?.at_risk(conversation_id))
    }
}

impl Conversation {
    /// The conversation as the at-risk list shows it.
    pub(super) fn at_risk(&self, conversation_id: &str) -> AtRisk {
        let customer = &self.speakers[Speaker::Customer.index()];
        let turns = customer.turns().max(1) as f32;
        let dominant = match &self.customer_model {
            Some(model) => {
                let mean: Vec<f32> = self.customer_prob_sum.iter().map(|s| s / turns).collect();
                model
                    .ranked(&mean)
                    .into_iter()
                    .take(3)
                    .map(|i| (model.labels[i].clone(), mean[i]))
                    .collect()
            }
            None => Vec::new(),
        };
        AtRisk {
            conversation_id: conversation_id.to_string(),
            context: self.context.clone(),
            customer_rolling: (customer.turns() > 0).then(|| customer.value()),
            alert_level: self.alert.level().max(self.triggers.open_level()),
            turns: self.speakers.iter().map(|s| s.turns()).sum(),
            trajectory: self
                .history
                .iter()
                .filter(|t| t.speaker == Speaker::Customer)
                .map(|t| t.rolling_valence)
                .collect(),
            dominant,
            updated_at: self.updated_at,
        }
    }
}
