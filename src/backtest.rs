//! Backtest: replay recorded conversations through the serving path (the same
//! [`Pipeline`]: validation, conversation store, language routes, model, rolling scores, every
//! trigger) and list the alerts that would have fired; with a second model or rule set, what
//! would change.
//!
//! Turns are replayed in file order, one at a time, at replay speed: time-based conditions
//! (cooldowns, the repetition window, sustained negativity's `secs`) see replay time, not the
//! time of the recording.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::bail;

use crate::alerts::{Alert, AlertKind, AlertState, Severity};
use crate::config::Config;
use crate::conversation::{ConversationStore, StoreSettings};
use crate::inference::Batcher;
use crate::metrics::Metrics;
use crate::pb;
use crate::pipeline::{CollectedAlerts, Pipeline};

/// What a replay produced.
pub struct Replay {
    pub label: String,
    pub turns: usize,
    pub rejected: Vec<String>,
    pub alerts: Vec<Alert>,
}

/// Replays `turns` with `config`'s rules through `batcher`'s model.
pub async fn replay(
    label: impl Into<String>,
    config: &Config,
    batcher: &Batcher,
    turns: &[pb::TurnRequest],
) -> anyhow::Result<Replay> {
    let metrics = Metrics::new();
    let store = Arc::new(ConversationStore::new(
        StoreSettings::from(config),
        metrics.clone(),
    ));
    let alerts = Arc::new(CollectedAlerts::default());
    let pipeline = Arc::new(Pipeline::new(
        config,
        store,
        batcher.clone(),
        alerts.clone(),
        metrics,
    ));
    let mut rejected = Vec::new();
    for turn in turns {
        // One at a time: each turn's alerts are collected before its result resolves.
        let result = pipeline.turn(&[], turn.clone()).await;
        let Some(error) = result.error else {
            continue; // scored, or a repeated line answered from history
        };
        let line = format!(
            "{} #{}: {}",
            result.conversation_id, result.turn_id, error.message
        );
        match tonic::Code::from(error.code) {
            // The model failed, not the recording: no report to trust.
            tonic::Code::Internal | tonic::Code::Unavailable => bail!("scoring {line}"),
            _ => rejected.push(line),
        }
    }
    Ok(Replay {
        label: label.into(),
        turns: turns.len(),
        rejected,
        // Supervisors' events only: guidance for agents is not what a backtest compares.
        alerts: alerts
            .take()
            .into_iter()
            .filter(|a| a.kind.audience() == crate::alerts::Audience::Supervisor)
            .collect(),
    })
}

/// An alert's identity for comparing replays: conversation, trigger, state, severity.
type Key = (String, AlertKind, &'static str, Severity);

fn key(a: &Alert) -> Key {
    (
        a.conversation_id.clone(),
        a.kind,
        a.state.as_str(),
        a.severity,
    )
}

fn line(a: &Alert) -> String {
    format!(
        "{:<24} turn {:>4}  {:<20} {:<9} {:<8} rolling {:+.2}  {}",
        a.conversation_id,
        a.turn_id,
        a.kind,
        a.state.as_str().to_uppercase(),
        a.severity.as_str().to_uppercase(),
        a.rolling_valence,
        a.detail
    )
}

fn index(r: &Replay) -> BTreeMap<Key, Vec<&Alert>> {
    let mut m: BTreeMap<Key, Vec<&Alert>> = BTreeMap::new();
    for a in &r.alerts {
        m.entry(key(a)).or_default().push(a);
    }
    m
}

impl Replay {
    /// Every alert, in order, then a count by trigger.
    pub fn report(&self) -> String {
        let mut s = format!(
            "{}: {} turns, {} rejected, {} alert events\n",
            self.label,
            self.turns,
            self.rejected.len(),
            self.alerts.len()
        );
        for r in &self.rejected {
            s.push_str(&format!("  rejected {r}\n"));
        }
        for a in &self.alerts {
            s.push_str(&format!("  {}\n", line(a)));
        }
        let mut by_kind: BTreeMap<AlertKind, usize> = BTreeMap::new();
        for a in self.alerts.iter().filter(|a| a.state == AlertState::Raised) {
            *by_kind.entry(a.kind).or_default() += 1;
        }
        let counts: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        s.push_str(&format!("  raised: {}\n", counts.join(", ")));
        s
    }

    /// What `other` fires that this does not, what it no longer fires, and what moves turns.
    pub fn diff(&self, other: &Replay) -> String {
        let (a, b) = (index(self), index(other));
        let mut s = format!("{} -> {}:\n", self.label, other.label);
        let mut same = 0;
        for (k, xs) in &a {
            match b.get(k) {
                None => {
                    for x in xs {
                        s.push_str(&format!("  - no longer: {}\n", line(x)));
                    }
                }
                Some(ys) => {
                    for (x, y) in xs.iter().zip(ys) {
                        if x.turn_id == y.turn_id {
                            same += 1;
                        } else {
                            s.push_str(&format!(
                                "  ~ moved: {} {} {}: turn {} -> {}\n",
                                k.0, k.1, k.2, x.turn_id, y.turn_id
                            ));
                        }
                    }
                }
            }
        }
        for (k, ys) in &b {
            if !a.contains_key(k) {
                for y in ys {
                    s.push_str(&format!("  + new:       {}\n", line(y)));
                }
            }
        }
        s.push_str(&format!("  unchanged: {same}\n"));
        s
    }
}

/// Replays `turns` with `config`, then, with another model directory and/or another config's
/// rules (alerts, triggers, scoring), again; returns the reports and what changed.
pub async fn compare(
    config: Config,
    turns: &[pb::TurnRequest],
    compare_model: Option<&std::path::Path>,
    compare_rules: Option<Config>,
) -> anyhow::Result<String> {
    let start = |config: Config| async move {
        let batcher =
            tokio::task::spawn_blocking(move || crate::inference::start(&config, Metrics::new()))
                .await??;
        anyhow::Ok(batcher)
    };
    let label = |b: &Batcher, rules: &str| {
        let routes: Vec<String> = b
            .routes()
            .iter()
            .map(|(lang, m)| format!("{}: {}", lang.tag(), m.spec.tag))
            .collect();
        match routes.is_empty() {
            true => format!("model {} with {rules}", b.spec().tag),
            false => format!(
                "model {} ({}) with {rules}",
                b.spec().tag,
                routes.join(", ")
            ),
        }
    };
    let batcher = start(config.clone()).await?;
    let first = replay(label(&batcher, "these rules"), &config, &batcher, turns).await?;
    let mut out = first.report();
    if compare_model.is_none() && compare_rules.is_none() {
        return Ok(out);
    }
    let mut second_config = config.clone();
    let mut rules = "the same rules";
    if let Some(other) = compare_rules {
        second_config.alerts = other.alerts;
        second_config.triggers = other.triggers;
        second_config.scoring = other.scoring;
        rules = "the compared rules";
    }
    let second_batcher = match compare_model {
        Some(dir) => {
            let mut c = config.clone();
            c.model.dir = dir.to_path_buf();
            start(c).await?
        }
        None => batcher.clone(),
    };
    let second = replay(
        label(&second_batcher, rules),
        &second_config,
        &second_batcher,
        turns,
    )
    .await?;
    out.push_str(&format!("\n{}\n{}", second.report(), first.diff(&second)));
    Ok(out)
}
