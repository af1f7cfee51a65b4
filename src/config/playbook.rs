//! What alerts may carry and suggest (`alerts.redaction`, `[alerts.playbook]`): the data as
//! configured. The alerts module (`alerts::explain`) applies them.

use std::collections::BTreeMap;

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

/// Suggested next steps: by trigger kind first, then by the first dominant emotion listed, in the
/// conversation's language: `[alerts.playbook]` is English, `[alerts.playbook.zh]` Chinese (any
/// entry it lacks falls back to the English one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PlaybookConfig {
    pub triggers: BTreeMap<String, String>,
    pub emotions: BTreeMap<String, String>,
    /// When nothing above applies.
    pub default: String,
    /// The hand-off brief's suggested first sentence, by dominant emotion; key `default` when
    /// none applies.
    pub openings: BTreeMap<String, String>,
    /// The same in Chinese (zh-CN), for conversations in Chinese.
    pub zh: PlaybookTexts,
}

/// One language's playbook entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PlaybookTexts {
    pub triggers: BTreeMap<String, String>,
    pub emotions: BTreeMap<String, String>,
    pub default: String,
    pub openings: BTreeMap<String, String>,
}

fn entries(list: &[(&[&str], &str)]) -> BTreeMap<String, String> {
    list.iter()
        .flat_map(|(keys, text)| keys.iter().map(|k| (k.to_string(), text.to_string())))
        .collect()
}

const ANGER: &[&str] = &["anger", "annoyance", "disapproval", "disgust"];
const FEAR: &[&str] = &["fear", "nervousness"];
const SADNESS: &[&str] = &["sadness", "disappointment", "grief", "remorse"];

impl Default for PlaybookConfig {
    fn default() -> Self {
        Self {
            triggers: entries(&[
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
                (
                    &["transfer_requested"],
                    "They asked for someone else: acknowledge it, say what you can do now, and offer the transfer if they still want it.",
                ),
                (
                    &["repeated_question"],
                    "They asked this before: do not ask them to explain again; answer it, or say exactly when they will have the answer.",
                ),
                (
                    &["mood_recovered"],
                    "The customer is calmer: confirm what was agreed and close on the next step.",
                ),
                (
                    &["break_suggested"],
                    "Several tough conversations in a row: take a short break after this one (your supervisor can see this too).",
                ),
                (
                    &["repeat_contact"],
                    "They contacted us recently and it ended badly: name the earlier contact, do not make them start over, and own the fix.",
                ),
            ]),
            emotions: entries(&[
                (
                    ANGER,
                    "Apologise first, then explain what happened and what you will do.",
                ),
                (
                    FEAR,
                    "Reassure step by step: say what happens next and when, and check they are with you.",
                ),
                (
                    &["confusion"],
                    "Simplify and confirm: one step at a time, and ask them to repeat the key point back.",
                ),
                (
                    SADNESS,
                    "Acknowledge how they feel and offer a concrete remedy.",
                ),
            ]),
            default: "Listen, acknowledge the concern in their words, and agree on a next step."
                .into(),
            openings: entries(&[
                (
                    ANGER,
                    "I'm sorry you've had to go through this, and that you had to explain it more than once. I have what you told us and I'll sort it out with you now.",
                ),
                (
                    FEAR,
                    "I'm here to help, and we'll go through this step by step. First, let me confirm what you told us.",
                ),
                (
                    &["confusion"],
                    "Let's make this simple: I'll take it one step at a time, and you stop me whenever something isn't clear.",
                ),
                (
                    SADNESS,
                    "I'm sorry about this; I can see it has been frustrating. Here is what I can do for you right now.",
                ),
                (
                    &["default"],
                    "Thanks for waiting. I've read what you told our assistant, so you won't need to repeat it.",
                ),
            ]),
            zh: PlaybookTexts {
                triggers: entries(&[
                    (
                        &["escalation_request"],
                        "立即为客户转接：告诉客户将由谁接听，转接完成前不要挂断。",
                    ),
                    (
                        &["repetition"],
                        "客户在重复同一个问题：正面回答他问的那一点，再确认问题已经解决。",
                    ),
                    (
                        &["agent_strain"],
                        "关心一下坐席：提供协助或接手这通电话，通话结束后安排短暂休息。",
                    ),
                    (
                        &["transfer_requested"],
                        "客户要求转接或投诉：先回应这个诉求，说明你现在能解决什么，客户仍坚持时为其转接。",
                    ),
                    (
                        &["repeated_question"],
                        "客户之前已经问过这个问题：不要让客户再解释一遍，直接回答，或说明何时给出答复。",
                    ),
                    (
                        &["mood_recovered"],
                        "客户情绪已缓和：确认双方达成的处理方案，并说明下一步。",
                    ),
                    (
                        &["break_suggested"],
                        "连续几通通话压力较大：这通结束后休息一下（主管也能看到这条提示）。",
                    ),
                    (
                        &["repeat_contact"],
                        "客户近期来过电且问题没有解决好：先提到上次的来电，不要让客户从头再说，主动负责解决。",
                    ),
                ]),
                emotions: entries(&[
                    (ANGER, "先真诚道歉，再说明发生了什么、接下来你会怎么处理。"),
                    (
                        FEAR,
                        "一步一步地引导安抚：说清楚下一步做什么、什么时候完成，并确认客户跟上了。",
                    ),
                    (
                        &["confusion"],
                        "简化并确认：一次只讲一步，请客户把关键点复述一遍。",
                    ),
                    (
                        SADNESS,
                        "先体谅客户的感受，再给出具体的补救办法，并约定回电时间。",
                    ),
                ]),
                default: "耐心倾听，用客户自己的话复述他的诉求，并约定下一步。".into(),
                openings: entries(&[
                    (
                        ANGER,
                        "非常抱歉让您遇到这样的问题，还让您反复说明。您之前说的情况我都看到了，我现在就和您一起解决。",
                    ),
                    (
                        FEAR,
                        "您别着急，我来帮您，我们一步一步来。我先跟您确认一下您刚才说的情况。",
                    ),
                    (&["confusion"], "我们一步一步来，哪一步不清楚您随时打断我。"),
                    (
                        SADNESS,
                        "真的很抱歉给您带来这些麻烦。我现在就告诉您我能为您做些什么。",
                    ),
                    (
                        &["default"],
                        "感谢您的耐心等待。您和智能助手说过的情况我都看到了，不用再重复一遍。",
                    ),
                ]),
            },
        }
    }
}
