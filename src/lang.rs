//! The languages the service speaks (English, Chinese), read from a conversation's language tag
//! or from the script of a text, and the text normalisation that makes Chinese phrase matching
//! work whatever form a caller types: full-width or half-width, Traditional or Simplified,
//! characters spaced or punctuated apart.
//!
//! A leaf module: the alert triggers, explanations and the conversation store use it; it uses
//! nothing of theirs.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Lang {
    #[default]
    En,
    Zh,
}

impl Lang {
    /// The language a BCP 47-ish tag names, if one we speak: `zh`, `zh-CN`, `zh-Hant-TW`,
    /// `yue`, `cmn` are Chinese; `en*` English. Case-insensitive.
    pub fn from_tag(tag: &str) -> Option<Self> {
        let primary = tag
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match primary.as_str() {
            "zh" | "yue" | "cmn" | "wuu" | "nan" | "hak" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language of a text by its script: Chinese when it has at least as many Han
    /// characters as Latin words (and at least one: "我的iPhone坏了" is Chinese), English when
    /// it has at least 3 Latin letters, nothing to go by otherwise (digits, emoji, punctuation,
    /// "ok" in a Chinese chat).
    pub fn of_text(text: &str) -> Option<Self> {
        let (mut han, mut letters, mut words) = (0usize, 0usize, 0usize);
        let mut in_word = false;
        for c in text.chars() {
            let latin = c.is_ascii_alphabetic() || ('\u{FF21}'..='\u{FF5A}').contains(&c);
            if is_han(c) {
                han += 1;
            } else if latin {
                letters += 1;
                if !in_word {
                    words += 1;
                }
            }
            in_word = latin;
        }
        if han > 0 && han >= words {
            Some(Lang::Zh)
        } else if letters >= 3 {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// The tag written in alerts and results (`en`, `zh-CN`).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }
}

/// CJK ideographs (unified, extension A, compatibility, extensions B and beyond).
pub fn is_han(c: char) -> bool {
    matches!(c,
        '\u{4E00}'..='\u{9FFF}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{3134F}')
}

/// Text as phrase matching and repetition see it: NFKC (full-width letters, digits and
/// punctuation become their ASCII forms), Traditional characters as Simplified, lower case,
/// every character that is not a letter or digit as a space, spaces collapsed, and no space left
/// between two Han characters or a Han character and a digit ("转 人 工", "转-人-工" and
/// "轉人工" all read "转人工"; "打 12315" reads "打12315").
pub fn normalize(text: &str) -> String {
    let folded: String = text.nfkc().collect();
    let simplified = fast2s::convert(&folded);
    let mut out = String::with_capacity(simplified.len());
    let mut gap = false;
    for c in simplified.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                let prev = out.chars().next_back().unwrap_or(' ');
                let joins = (is_han(prev) && (is_han(c) || c.is_ascii_digit()))
                    || (prev.is_ascii_digit() && is_han(c));
                if !joins {
                    out.push(' ');
                }
            }
            gap = false;
            out.push(c);
        } else {
            gap = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_scripts() {
        assert_eq!(Lang::from_tag("zh-CN"), Some(Lang::Zh));
        assert_eq!(Lang::from_tag("ZH_hant_tw"), Some(Lang::Zh));
        assert_eq!(Lang::from_tag("yue"), Some(Lang::Zh));
        assert_eq!(Lang::from_tag("en-GB"), Some(Lang::En));
        assert_eq!(Lang::from_tag("fr"), None);
        assert_eq!(Lang::from_tag(""), None);
        assert_eq!(Lang::of_text("我要投诉你们"), Some(Lang::Zh));
        assert_eq!(Lang::of_text("我的iPhone坏了"), Some(Lang::Zh));
        assert_eq!(Lang::of_text("my 宽带 is down again"), Some(Lang::En));
        assert_eq!(Lang::of_text("唔該晒"), Some(Lang::Zh));
        assert_eq!(Lang::of_text("12315 !!!"), None);
        assert_eq!(Lang::of_text("ok"), None);
    }

    #[test]
    fn chinese_forms_normalize_alike() {
        for form in ["转人工", "轉人工", "转 人 工", "转-人-工！", "转人工。"] {
            assert_eq!(normalize(form), "转人工", "{form}");
        }
        assert_eq!(normalize("ＺＨＵＡＮ"), "zhuan");
        assert_eq!(normalize("打１２３１５投訴"), "打12315投诉");
        assert_eq!(normalize("打 1 2 3 1 5"), "打1 2 3 1 5");
        assert_eq!(normalize("I want   a REAL person!"), "i want a real person");
        assert_eq!(normalize("你们，可真行。。。"), "你们可真行");
        assert_eq!(normalize("  "), "");
    }
}
