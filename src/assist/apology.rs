//! Hearing an agent apologise. "I'm so sorry about that, let me fix it" and "实在对不起，让您久等
//! 了" are what the playbook asks an agent to say; the emotion model reads each as remorse and
//! sadness (GoEmotions: "sorry" is remorse), valence -0.6 to -0.9. Counted as the agent's mood,
//! three apologies put an agent under the strain threshold: an `agent_strain` alert for doing the
//! job well.
//!
//! An agent's turn with an apology phrase has its valence read without the emotions an apology
//! carries ([`APOLOGY_EMOTIONS`]); what else it says still counts ("Sorry, this stupid tool froze
//! again, I hate this" keeps its anger). Customers' turns are read as they are: a customer's
//! "对不起，我真的很难过" may be real sadness. Phrases are matched on
//! [`crate::lang::normalize`]d text (Traditional, full-width and spaced forms read as
//! Simplified), Latin ones as whole words.

use super::resignation::contains_words;

/// The labels an apology's wording carries, left out of an apologising turn's valence.
pub const APOLOGY_EMOTIONS: &[&str] = &["remorse", "sadness", "embarrassment"];

const PHRASES: &[&str] = &[
    // Mandarin
    "对不起",
    "对不住",
    "抱歉",
    "不好意思",
    "道歉",
    "致歉",
    "添麻烦",
    "久等",
    // Cantonese
    "对唔住",
    "唔好意思",
    // English (and in Chinese chats)
    "sorry",
    "apologise",
    "apologize",
    "apologies",
    "apologised",
    "apologized",
];

/// The apology phrase in `normalized` text, if any.
pub fn apology(normalized: &str) -> Option<&'static str> {
    PHRASES
        .iter()
        .copied()
        .find(|p| contains_words(normalized, p))
}

#[cfg(test)]
mod tests {
    use super::apology;
    use crate::lang::normalize;

    #[test]
    fn hears_apologies_in_chinese_and_english() {
        for (text, phrase) in [
            ("实在对不起，让您久等了", "对不起"),
            ("非常抱歉给您带来不便", "抱歉"),
            ("不好意思，我想问一下我的快递到哪了", "不好意思"),
            ("給您添麻煩了", "添麻烦"),
            ("對唔住，我哋即刻幫你跟進", "对唔住"),
            ("ＳＯＲＲＹ，系统刚才卡了", "sorry"),
            ("I'm so sorry about that, let me look into it.", "sorry"),
            ("I apologise, that should never have happened.", "apologise"),
            ("My apologies for the wait", "apologies"),
        ] {
            assert_eq!(apology(&normalize(text)), Some(phrase), "{text:?}");
        }
    }

    #[test]
    fn other_words_are_not_apologies() {
        for text in [
            "我要投诉你们，马上给我转人工！",
            "好的，我等一下",
            "The sorrow of it all",
            "I'm furious, nobody helps",
            "你们这是什么意思？",
        ] {
            assert_eq!(apology(&normalize(text)), None, "{text:?}");
        }
    }
}
