//! Hearing a customer give up. A customer who writes "算了，不折腾了" ("forget it, I give up") has
//! not been satisfied: they have stopped asking. The rule reads the raw text one clause at a time
//! (split at punctuation and spaces), because normalized Chinese has no clause boundaries left and
//! "算了" is resignation as a clause of its own ("算了吧") but arithmetic inside one ("我算了一下",
//! "算了算").
//!
//! Phrases are matched on [`crate::lang::normalize`]d clauses, so Traditional and full-width
//! forms ("算了，不弄了", "唔搞喇") read the same as Simplified ones.

use crate::lang::normalize;

/// Clauses that are resignation only on their own (the whole clause, after normalizing).
const WHOLE: &[&str] = &[
    "算了",
    "算了吧",
    "算啦",
    "算咯",
    "算了啦",
    "罢了",
    "随便吧",
    "随便你们吧",
    "随你们吧",
    "随便你们",
    "无所谓了",
    "爱咋咋地",
    "whatever",
    "forget it",
    "never mind",
    "nevermind",
    "fine whatever",
];

/// Phrases that are resignation wherever they stand in a clause.
const ANYWHERE: &[&str] = &[
    // Mandarin
    "不折腾了",
    "不弄了",
    "不想弄了",
    "懒得弄了",
    "懒得折腾",
    "不搞了",
    "不想搞了",
    "不整了",
    "我放弃",
    "放弃了",
    "不管了",
    "不想再说了",
    "说了也白说",
    "说了也没用",
    "不指望了",
    "不想再打了",
    // Cantonese
    "唔搞喇",
    "唔搞啦",
    "唔理喇",
    "算数啦",
    "算数喇",
    "唔使喇",
    // Sichuanese
    "算球了",
    "算逑了",
    "莫得法",
    "懒得整",
    // English
    "i give up",
    "giving up",
    "not worth it",
    "not worth the hassle",
    "don t bother",
    "forget about it",
    "i ll live with it",
    "no point",
    "what s the point",
    "i m done with this",
];

/// The phrase in `text` by which the customer gives up, if any.
pub fn giving_up(text: &str) -> Option<&'static str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’' || c == ' '))
        .map(normalize)
        .filter(|clause| !clause.is_empty())
        .find_map(|clause| resigned_clause(&clause))
}

fn resigned_clause(clause: &str) -> Option<&'static str> {
    if let Some(p) = WHOLE.iter().find(|p| **p == clause) {
        return Some(p);
    }
    if let Some(p) = ANYWHERE.iter().find(|p| contains_words(clause, p)) {
        return Some(p);
    }
    // "算了不折腾了" and "算了吧我不要了" start with 算了; "算了一下" and "算了算" count.
    let rest = clause.strip_prefix("算了")?;
    let counting = rest.starts_with('一') || rest.starts_with('算') || rest.starts_with('下');
    (!counting).then_some("算了")
}

/// Whether `phrase` is in `clause`, as whole words when it is Latin ("no point" is not in
/// "no pointers").
pub(super) fn contains_words(clause: &str, phrase: &str) -> bool {
    if !phrase.is_ascii() {
        return clause.contains(phrase);
    }
    clause.match_indices(phrase).any(|(i, _)| {
        let before = clause[..i].chars().next_back();
        let after = clause[i + phrase.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric()) && !after.is_some_and(|c| c.is_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::giving_up;

    #[test]
    fn hears_customers_give_up_in_chinese_and_english() {
        for (text, phrase) in [
            ("算了，不折腾了", "算了"),
            ("算了不折腾了", "不折腾了"),
            ("你们年轻人的东西我学不会，不弄了", "不弄了"),
            ("算了吧。", "算了吧"),
            ("唉，随便吧", "随便吧"),
            ("算了，不弄了", "算了"),
            ("唔搞喇，算数啦", "唔搞喇"),
            ("算球了，懒得整", "算球了"),
            ("Forget it, I give up.", "forget it"),
            ("never mind", "never mind"),
            ("It's not worth the hassle anymore", "not worth the hassle"),
        ] {
            // The first clause that gives up names the phrase (whole-clause phrases first).
            assert_eq!(giving_up(text), Some(phrase), "{text:?}");
        }
    }

    #[test]
    fn counting_and_ordinary_requests_are_not_giving_up() {
        for text in [
            "我算了一下，多扣了30块",
            "我算了算，账单不对",
            "随便问一下，你们几点下班？",
            "我要投诉，马上转人工",
            "whatever you do, don't cancel my order",
            "the point is it broke again",
            "there is no pointer in the manual",
            "谢谢，问题解决了",
            "Thanks, that fixed it!",
        ] {
            assert_eq!(giving_up(text), None, "{text:?}");
        }
    }
}
