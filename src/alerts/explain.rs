//! What an alert tells the supervisor besides the score: text excerpts under a redaction policy,
//! and a suggested next step from a playbook.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// How much of a turn's text an alert may carry.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Redaction {
    /// The text as sent.
    None,
    /// E-mail addresses, card numbers, phone numbers and long ids replaced by [EMAIL], [CARD],
    /// [PHONE], [ID].
    #[default]
    Masked,
    /// No text at all.
    NoText,
}

impl Redaction {
    /// As configured (`alerts.redaction`).
    pub fn as_str(self) -> &'static str {
        match self {
            Redaction::None => "none",
            Redaction::Masked => "masked",
            Redaction::NoText => "no_text",
        }
    }
}

fn patterns() -> &'static [(Regex, &'static str)] {
    static PATTERNS: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        [
            (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", "[EMAIL]"),
            // 13 to 19 digits, optionally grouped by spaces or dashes.
            (r"\b(?:\d[ -]?){12,18}\d\b", "[CARD]"),
            // Letters then 4 or more digits: account, ticket, passport numbers.
            (r"\b[A-Za-z]{1,6}[-#]?\d{4,}[A-Za-z0-9]*\b", "[ID]"),
            // 7 or more digits with the usual separators, optionally international.
            (r"\+?\(?\d[\d ().-]{5,}\d", "[PHONE]"),
            // Any other run of 5 or more digits: order numbers, national ids.
            (r"\b\d{5,}\b", "[ID]"),
        ]
        .into_iter()
        .map(|(p, r)| (Regex::new(p).expect("valid pattern"), r))
        .collect()
    })
}

/// `text` with PII replaced.
pub fn mask_pii(text: &str) -> String {
    let mut out = text.to_string();
    for (re, replacement) in patterns() {
        if re.is_match(&out) {
            out = re.replace_all(&out, *replacement).into_owned();
        }
    }
    out
}

/// The excerpt of `text` an alert may carry: redacted, then cut to `max_chars` characters.
pub fn excerpt(text: &str, redaction: Redaction, max_chars: usize) -> Option<Box<str>> {
    let text = match redaction {
        Redaction::NoText => return None,
        Redaction::None => text.trim().to_string(),
        Redaction::Masked => mask_pii(text.trim()),
    };
    let mut cut: String = text.chars().take(max_chars).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    Some(cut.into_boxed_str())
}

/// Suggested next steps: by trigger kind first, then by the first dominant emotion listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PlaybookConfig {
    pub triggers: BTreeMap<String, String>,
    pub emotions: BTreeMap<String, String>,
    /// When nothing above applies.
    pub default: String,
}

impl Default for PlaybookConfig {
    fn default() -> Self {
        let map = |entries: &[(&[&str], &str)]| {
            entries
                .iter()
                .flat_map(|(keys, text)| keys.iter().map(|k| (k.to_string(), text.to_string())))
                .collect()
        };
        Self {
            triggers: map(&[
                (
                    &["escalation_request"],
                    "Offer the transfer now: say who they will speak to, and stay on until the handover.",
                ),
                (
                    &["repetition"],
                    "They are repeating themselves: answer exactly what they asked, then confirm it is solved.",
                ),
                (
                    &["agent_strain"],
                    "Check in with the agent: offer help or take over, and a short break after the call.",
                ),
            ]),
            emotions: map(&[
                (
                    &["anger", "annoyance", "disapproval", "disgust"],
                    "Apologise first, then explain what happened and what you will do.",
                ),
                (
                    &["fear", "nervousness"],
                    "Reassure step by step: say what happens next and when, and check they are with you.",
                ),
                (
                    &["confusion"],
                    "Simplify and confirm: one step at a time, and ask them to repeat the key point back.",
                ),
                (
                    &["sadness", "disappointment", "grief", "remorse"],
                    "Acknowledge how they feel and offer a concrete remedy.",
                ),
            ]),
            default: "Listen, acknowledge the concern in their words, and agree on a next step."
                .into(),
        }
    }
}

impl PlaybookConfig {
    pub fn suggest<'a>(&self, kind: &str, dominant: impl IntoIterator<Item = &'a str>) -> &str {
        self.triggers
            .get(kind)
            .or_else(|| dominant.into_iter().find_map(|e| self.emotions.get(e)))
            .unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_pii_and_cuts() {
        let text = "I'm jane.doe@example.com, card 4111 1111 1111 1111, call +1 (415) 555-0132, order AB1234567.";
        let masked = mask_pii(text);
        assert_eq!(
            masked,
            "I'm [EMAIL], card [CARD], call [PHONE], order [ID]."
        );
        assert_eq!(
            excerpt(text, Redaction::NoText, 100),
            None,
            "no text at all"
        );
        assert_eq!(
            excerpt("abcdef", Redaction::None, 3).as_deref(),
            Some("abc…")
        );
        assert_eq!(
            excerpt("It broke again", Redaction::Masked, 100).as_deref(),
            Some("It broke again")
        );
    }

    #[test]
    fn playbook_prefers_trigger_then_emotion() {
        let p = PlaybookConfig::default();
        assert!(
            p.suggest("escalation_request", ["anger"])
                .starts_with("Offer the transfer")
        );
        assert!(
            p.suggest("rolling_valence", ["neutral", "anger"])
                .starts_with("Apologise")
        );
        assert!(
            p.suggest("rolling_valence", ["nervousness"])
                .starts_with("Reassure")
        );
        assert!(
            p.suggest("rolling_valence", ["confusion"])
                .starts_with("Simplify")
        );
        assert!(
            p.suggest("rolling_valence", ["disappointment"])
                .starts_with("Acknowledge")
        );
        assert_eq!(p.suggest("rolling_valence", ["joy"]), p.default);
    }
}
