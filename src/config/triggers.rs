//! The triggers' configuration (`[triggers]`): defaults (escalation phrases in English and
//! Chinese, the playbook thresholds) and per tenant/queue overrides. The alerts module resolves
//! them into its trigger sets; the configuration imports nothing from it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::Severity;
use crate::lang::normalize;

/// A severity as written in the config.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SeverityName {
    Warning,
    Critical,
    Urgent,
}

impl From<SeverityName> for Severity {
    fn from(s: SeverityName) -> Self {
        match s {
            SeverityName::Warning => Severity::Warning,
            SeverityName::Critical => Severity::Critical,
            SeverityName::Urgent => Severity::Urgent,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationTrigger {
    pub enabled: bool,
    pub severity: SeverityName,
    /// No second escalation alert for the same conversation within this many seconds.
    pub cooldown_secs: u64,
    /// Phrases by language tag; all languages' lists are checked (a caller may not set one).
    /// Matched on normalized text: lower case, punctuation as spaces, whole words for Latin script.
    pub phrases: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RepetitionTrigger {
    pub enabled: bool,
    pub severity: SeverityName,
    /// The same normalized customer text this many times ...
    pub count: u32,
    /// ... within this many seconds.
    pub window_secs: u64,
    /// Shorter normalized texts ("yes", "ok") never count as repetition.
    pub min_chars: usize,
    pub cooldown_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SustainedTrigger {
    pub enabled: bool,
    pub severity: SeverityName,
    pub threshold: f32,
    /// Customer turns in a row below the threshold ...
    pub turns: u32,
    /// ... or seconds since the score first went below it, whichever comes first.
    pub secs: u64,
    pub hysteresis: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentStrainTrigger {
    pub enabled: bool,
    pub severity: SeverityName,
    pub threshold: f32,
    pub min_agent_turns: u32,
    pub hysteresis: f32,
}

/// Replaces whole trigger sections for a tenant, a queue, or a tenant's queue.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerOverride {
    /// Empty: any tenant.
    pub tenant: String,
    /// Empty: any queue.
    pub queue: String,
    pub escalation: Option<EscalationTrigger>,
    pub repetition: Option<RepetitionTrigger>,
    pub sustained: Option<SustainedTrigger>,
    pub agent_strain: Option<AgentStrainTrigger>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TriggersConfig {
    pub escalation: EscalationTrigger,
    pub repetition: RepetitionTrigger,
    pub sustained: SustainedTrigger,
    pub agent_strain: AgentStrainTrigger,
    /// The most specific match wins: tenant and queue, then tenant, then queue.
    pub overrides: Vec<TriggerOverride>,
}

fn phrases(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl Default for EscalationTrigger {
    fn default() -> Self {
        let mut phrases_by_language = BTreeMap::new();
        phrases_by_language.insert(
            "en".into(),
            phrases(&[
                "speak to a manager",
                "speak to your manager",
                "talk to a manager",
                "talk to your supervisor",
                "speak to a supervisor",
                "get me a manager",
                "a real person",
                "a human being",
                "speak to a human",
                "talk to a human",
                "cancel my account",
                "cancel my subscription",
                "close my account",
                "my lawyer",
                "my attorney",
                "legal action",
                "take you to court",
                "sue you",
                "file a complaint",
            ]),
        );
        phrases_by_language.insert(
            "zh".into(),
            // Matched after normalisation (crate::lang::normalize): Traditional, full-width,
            // spaced and punctuated forms of these match too. A leading `=` means the phrase
            // must be the whole message.
            phrases(&[
                "转人工",
                "转接人工",
                "人工客服",
                "人工服务",
                "人工坐席",
                "找人工",
                "要人工",
                "=人工",
                "真人",
                "不要机器人",
                "投诉",
                "12315",
                "12345",
                "打315",
                "315曝光",
                "消协",
                "消费者协会",
                "消基会",
                "工信部",
                "银保监",
                "金融监管",
                "你们经理",
                "找经理",
                "你们领导",
                "找领导",
                "你们老板",
                "客服电话",
                "投诉电话",
                "救命",
                "律师",
                "起诉",
                "报警",
                "曝光",
                "搵经理",
                "你哋经理",
                "搵人工",
                "唔要机械人",
            ]),
        );
        Self {
            enabled: true,
            severity: SeverityName::Critical,
            cooldown_secs: 300,
            phrases: phrases_by_language,
        }
    }
}

impl Default for RepetitionTrigger {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: SeverityName::Urgent,
            count: 3,
            window_secs: 600,
            min_chars: 8,
            cooldown_secs: 300,
        }
    }
}

impl Default for SustainedTrigger {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: SeverityName::Warning,
            threshold: -0.2,
            turns: 4,
            secs: 120,
            hysteresis: 0.1,
        }
    }
}

impl Default for AgentStrainTrigger {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: SeverityName::Warning,
            threshold: -0.3,
            min_agent_turns: 3,
            hysteresis: 0.1,
        }
    }
}

impl TriggersConfig {
    pub fn validate(&self) -> Result<(), String> {
        let sets = std::iter::once(("triggers".to_string(), self.merged(None))).chain(
            self.overrides.iter().map(|o| {
                (
                    format!(
                        "triggers.overrides (tenant {:?}, queue {:?})",
                        o.tenant, o.queue
                    ),
                    self.merged(Some(o)),
                )
            }),
        );
        for (name, set) in sets {
            let r = &set.repetition;
            if r.enabled && (r.count < 2 || r.window_secs == 0) {
                return Err(format!(
                    "{name}: repetition.count must be at least 2 and window_secs positive"
                ));
            }
            let s = &set.sustained;
            if s.enabled && (!(-1.0..=1.0).contains(&s.threshold) || s.turns == 0) {
                return Err(format!(
                    "{name}: sustained.threshold must be in [-1, 1] and turns positive"
                ));
            }
            let a = &set.agent_strain;
            if a.enabled && !(-1.0..=1.0).contains(&a.threshold) {
                return Err(format!("{name}: agent_strain.threshold must be in [-1, 1]"));
            }
            if set.escalation.enabled
                && set
                    .escalation
                    .phrases
                    .values()
                    .flatten()
                    .any(|p| normalize(p).is_empty())
            {
                return Err(format!("{name}: escalation.phrases has an empty phrase"));
            }
        }
        for o in &self.overrides {
            if o.tenant.is_empty() && o.queue.is_empty() {
                return Err("triggers.overrides: each needs a tenant, a queue, or both".into());
            }
        }
        Ok(())
    }

    /// The sections in force where `o` applies: its own sections, the defaults for the rest (no
    /// overrides of its own).
    pub fn merged(&self, o: Option<&TriggerOverride>) -> TriggersConfig {
        let o = o.cloned().unwrap_or_default();
        TriggersConfig {
            escalation: o.escalation.unwrap_or_else(|| self.escalation.clone()),
            repetition: o.repetition.unwrap_or_else(|| self.repetition.clone()),
            sustained: o.sustained.unwrap_or_else(|| self.sustained.clone()),
            agent_strain: o.agent_strain.unwrap_or_else(|| self.agent_strain.clone()),
            overrides: Vec::new(),
        }
    }
}
