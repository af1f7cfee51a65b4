//! What an alert tells the supervisor besides the score: text excerpts under a redaction policy,
//! and a suggested next step from a playbook.

use std::sync::OnceLock;

pub use crate::config::playbook::{PlaybookConfig, PlaybookTexts, Redaction};
use crate::lang::Lang;
use regex::Regex;

fn patterns() -> &'static [(Regex, &'static str)] {
    static PATTERNS: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    // Word boundaries are ASCII ones (`(?-u:\b)`): a Chinese character next to a number is a
    // boundary ("身份证号110101199003071234"), where Unicode's \b sees one word and masks nothing.
    PATTERNS.get_or_init(|| {
        [
            (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", "[EMAIL]"),
            // A PRC resident identity number: 6-digit area, birth date, 3 digits, check digit or X.
            (
                r"(?-u:\b)[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?-u:\b)",
                "[NATIONAL_ID]",
            ),
            // A mainland mobile number: 11 digits from 13x to 19x, optionally +86 and grouped 3-4-4.
            (
                r"(?:\+?86[ -]?)?(?-u:\b)1[3-9]\d(?:[ -]?\d{4}){2}(?-u:\b)",
                "[PHONE]",
            ),
            // 13 to 19 digits, optionally grouped by spaces or dashes (bank cards: 16 to 19).
            (r"(?-u:\b)(?:\d[ -]?){12,18}\d(?-u:\b)", "[CARD]"),
            // Letters then 4 or more digits: account, ticket, passport numbers.
            (
                r"(?-u:\b)[A-Za-z]{1,6}[-#]?\d{4,}[A-Za-z0-9]*(?-u:\b)",
                "[ID]",
            ),
            // 7 or more digits with the usual separators, optionally international.
            (r"\+?\(?\d[\d ().-]{5,}\d", "[PHONE]"),
            // Any other run of 5 or more digits: order numbers, national ids.
            (r"(?-u:\b)\d{5,}(?-u:\b)", "[ID]"),
        ]
        .into_iter()
        .map(|(p, r)| (Regex::new(p).expect("valid pattern"), r))
        .collect()
    })
}

/// `text` with PII replaced. Full-width digits and letters (１３８…, Ｘ) are read as ASCII first,
/// so a number typed on a Chinese keyboard is masked too.
pub fn mask_pii(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| match c {
            '\u{FF10}'..='\u{FF19}'
            | '\u{FF21}'..='\u{FF3A}'
            | '\u{FF41}'..='\u{FF5A}'
            | '\u{FF0B}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .collect();
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

impl PlaybookConfig {
    /// The trigger's entry, else the first dominant emotion's, else the default: for a Chinese
    /// conversation from the Chinese playbook (unless a configuration emptied it).
    pub fn suggest<'a>(
        &self,
        kind: &str,
        dominant: impl IntoIterator<Item = &'a str>,
        lang: Lang,
    ) -> &str {
        let (triggers, emotions, default) = match lang {
            Lang::Zh if !self.zh.default.is_empty() => {
                (&self.zh.triggers, &self.zh.emotions, &self.zh.default)
            }
            _ => (&self.triggers, &self.emotions, &self.default),
        };
        triggers
            .get(kind)
            .or_else(|| dominant.into_iter().find_map(|e| emotions.get(e)))
            .unwrap_or(default)
    }

    /// The hand-off brief's first sentence: the first dominant emotion's opening, else the
    /// default one, in the conversation's language (falling back to English).
    pub fn opening<'a>(&self, dominant: impl IntoIterator<Item = &'a str>, lang: Lang) -> &str {
        let openings = match lang {
            Lang::Zh if !self.zh.openings.is_empty() => &self.zh.openings,
            _ => &self.openings,
        };
        dominant
            .into_iter()
            .find_map(|e| openings.get(e))
            .or_else(|| openings.get("default"))
            .map_or("", String::as_str)
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
    fn masks_chinese_ids_by_their_kind() {
        for (text, want) in [
            (
                "我的身份证号是110101199003071234，麻烦查一下",
                "我的身份证号是[NATIONAL_ID]，麻烦查一下",
            ),
            ("身份证44030419851231002X", "身份证[NATIONAL_ID]"),
            ("手机13812345678打不通", "手机[PHONE]打不通"),
            ("号码138 1234 5678", "号码[PHONE]"),
            ("+86 139-1234-5678", "[PHONE]"),
            ("手机１３８１２３４５６７８", "手机[PHONE]"),
            ("卡号6222021234567890123被冻结了", "卡号[CARD]被冻结了"),
            ("卡号6222 0212 3456 7890", "卡号[CARD]"),
            ("运单SF1234567890到哪了", "运单[ID]到哪了"),
            ("花了315元", "花了315元"),
        ] {
            assert_eq!(mask_pii(text), want, "{text}");
        }
    }

    #[test]
    fn playbook_prefers_trigger_then_emotion() {
        let p = PlaybookConfig::default();
        assert!(
            p.suggest("escalation_request", ["anger"], Lang::En)
                .starts_with("Offer the transfer")
        );
        assert!(
            p.suggest("rolling_valence", ["neutral", "anger"], Lang::En)
                .starts_with("Apologise")
        );
        assert!(
            p.suggest("rolling_valence", ["nervousness"], Lang::En)
                .starts_with("Reassure")
        );
        assert!(
            p.suggest("rolling_valence", ["confusion"], Lang::En)
                .starts_with("Simplify")
        );
        assert!(
            p.suggest("rolling_valence", ["disappointment"], Lang::En)
                .starts_with("Acknowledge")
        );
        assert_eq!(p.suggest("rolling_valence", ["joy"], Lang::En), p.default);
        // Chinese conversations get the Chinese entries, with the same strategies.
        assert!(
            p.suggest("escalation_request", ["anger"], Lang::Zh)
                .starts_with("立即为客户转接")
        );
        assert!(
            p.suggest("rolling_valence", ["annoyance"], Lang::Zh)
                .starts_with("先真诚道歉")
        );
        assert!(
            p.suggest("rolling_valence", ["nervousness"], Lang::Zh)
                .starts_with("一步一步")
        );
        assert!(
            p.suggest("rolling_valence", ["sadness"], Lang::Zh)
                .contains("回电")
        );
        assert_eq!(
            p.suggest("rolling_valence", ["joy"], Lang::Zh),
            p.zh.default
        );
    }
}
