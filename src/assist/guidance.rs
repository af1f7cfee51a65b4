//! What the agent on a conversation is told, decided turn by turn beside the supervisor's alert
//! rules: the mood turned or recovered, the customer asked for a transfer or asked the same thing
//! again, and at a hand-off from a bot, the brief. A conversation keeps one small [`AssistState`]
//! (persisted with it); [`AssistState::observe`] is fed every scored turn and returns the
//! guidance to emit, which goes into the same durable log as alerts with the agent audience.
//!
//! Nothing is told while a bot serves the conversation or before it names an agent
//! (`context.agent_id`): the state still gathers what the brief needs, and the agent hears of a
//! mood that turned before them right after the brief.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::alerts::rules::{Transition, new_alert_id};
use crate::alerts::{CustomerRequest, EvidenceTurn, LoggedEvent};
use crate::config::AssistConfig;
use crate::domain::{AlertKind, AlertState, Severity, Speaker};
use crate::lang::Lang;

/// Mood drops kept for the brief (the latest).
const MAX_DROPS: usize = 5;
/// Distinct requests remembered per conversation (the first ones).
const MAX_REQUESTS: usize = 16;
const MAX_PHRASES: usize = 8;
/// Two requests are the same question when this share of the shorter one's tokens is in both.
const SAME_QUESTION: f32 = 0.7;

/// What [`AssistState::observe`] needs to know about a scored turn.
pub struct TurnFacts<'a> {
    pub speaker: Speaker,
    pub turn_id: u64,
    pub valence: f32,
    /// The speaker's rolling score after the turn, and before it (none on their first turn).
    pub rolling: f32,
    pub previous_rolling: Option<f32>,
    pub speaker_turns: u32,
    /// The customer's rolling score after their first turn, and now (none before their first).
    pub trend_start: f32,
    pub customer_rolling: Option<f32>,
    /// The requests among the turn's sentences ([`asks`]).
    pub asks: &'a [Ask],
    pub excerpt: Option<&'a str>,
    /// The turn's top emotions (label, probability), most probable first.
    pub top: &'a [(&'a str, f32)],
    /// The escalation phrase this turn contains, if any, and whether the escalation trigger
    /// fired on it (the supervisor's cooldown applies to the agent's offer too).
    pub escalation_phrase: Option<&'a str>,
    pub escalation_fired: bool,
    /// A phrase of giving up this turn contains (`assist::giving_up`).
    pub gave_up: Option<&'static str>,
    /// The conversation's agent id (empty: none yet).
    pub agent_id: &'a str,
    /// Customer turns a conversation needs before its mood can turn (`alerts.min_customer_turns`).
    pub min_customer_turns: u32,
    pub lang: Lang,
}

/// One guidance event to emit.
#[derive(Debug, Clone, PartialEq)]
pub struct Guidance {
    pub kind: AlertKind,
    pub transition: Transition,
    pub detail: String,
    /// Evidence other than the customer's latest turns (repeated question: the first ask).
    pub evidence: Option<Vec<EvidenceTurn>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Mood {
    alert_id: String,
    /// The lowest customer rolling score since it turned.
    low: f32,
    /// Whether the agent was told (false while a bot served).
    announced: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Drop {
    turn_id: u64,
    valence: f32,
    top: Vec<(String, f32)>,
    excerpt: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Asked {
    /// Sorted, de-duplicated token hashes (words, or character pairs of Chinese text).
    tokens: Vec<u32>,
    excerpt: Option<String>,
    valence: f32,
    times: u32,
    first_turn_id: u64,
    last_turn_id: u64,
}

/// Per-conversation assist state: small, serialisable, persisted with the conversation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AssistState {
    mood: Option<Mood>,
    drops: VecDeque<Drop>,
    requests: Vec<Asked>,
    escalations: Vec<String>,
    bot_turns: u32,
    handed_off: bool,
    /// The customer turn that gave up and the phrase heard (the latest).
    resigned: Option<(u64, String)>,
}

impl AssistState {
    pub fn bot_turns(&self) -> u32 {
        self.bot_turns
    }

    pub fn escalation_phrases(&self) -> &[String] {
        &self.escalations
    }

    /// The latest customer turn that gave up, and the phrase.
    pub fn resigned(&self) -> Option<(u64, &str)> {
        self.resigned.as_ref().map(|(t, p)| (*t, p.as_str()))
    }

    /// The customer turns where the mood dropped, oldest first.
    pub fn mood_drops(&self) -> Vec<EvidenceTurn> {
        self.drops
            .iter()
            .map(|d| EvidenceTurn {
                turn_id: d.turn_id,
                speaker: Speaker::Customer,
                valence: d.valence,
                top_emotions: d.top.clone(),
                excerpt: d.excerpt.as_deref().map(Box::from),
            })
            .collect()
    }

    /// The emotions of the mood drops, latest drop first: what set the mood off.
    pub fn drop_emotions(&self) -> impl Iterator<Item = &str> {
        self.drops
            .iter()
            .rev()
            .flat_map(|d| d.top.iter().map(|(l, _)| l.as_str()))
    }

    /// What the customer asked for, in the order first asked.
    pub fn requests(&self) -> Vec<CustomerRequest> {
        self.requests
            .iter()
            .map(|a| CustomerRequest {
                excerpt: a.excerpt.as_deref().map(Box::from),
                times: a.times,
                first_turn_id: a.first_turn_id,
                last_turn_id: a.last_turn_id,
            })
            .collect()
    }

    /// Whether guidance reaches an agent now: one is named and no bot is serving.
    fn agent_on(&self, agent_id: &str) -> bool {
        !agent_id.is_empty() && (self.bot_turns == 0 || self.handed_off)
    }

    /// Feeds one scored turn; returns the guidance it produces, in order.
    pub fn observe(&mut self, cfg: &AssistConfig, f: &TurnFacts<'_>) -> Vec<Guidance> {
        let mut out = Vec::new();
        if !cfg.enabled {
            return out;
        }
        match f.speaker {
            Speaker::Bot => self.bot_turns += 1,
            Speaker::Agent => {
                if !self.handed_off && self.bot_turns > 0 && !f.agent_id.is_empty() {
                    out.extend(self.hand_off(cfg, f.lang, f.customer_rolling, false));
                }
            }
            Speaker::Customer => self.customer(cfg, f, &mut out),
        }
        out
    }

    /// Whether the conversation was handed to a person (detected, or by `Handoff`).
    pub fn handed_off(&self) -> bool {
        self.handed_off
    }

    /// The explicit or detected move to the agent: the brief (the caller fills it in), then the
    /// mood turned if it turned before the agent came. Nothing if already handed off, unless
    /// `transfer`: another agent takes over from the one on the conversation, and is told all
    /// of it again.
    pub fn hand_off(
        &mut self,
        cfg: &AssistConfig,
        lang: Lang,
        customer_rolling: Option<f32>,
        transfer: bool,
    ) -> Vec<Guidance> {
        if self.handed_off && !transfer {
            return Vec::new();
        }
        if transfer && let Some(m) = self.mood.as_mut() {
            m.announced = false;
        }
        self.handed_off = true;
        let severity = if self.mood.is_some() {
            Severity::Warning
        } else {
            Severity::None
        };
        let mut out = vec![Guidance {
            kind: AlertKind::HandoffBrief,
            transition: raised(severity, 0.0),
            detail: match (lang, transfer, self.bot_turns) {
                (Lang::En, true, _) => {
                    "taking over from another agent: read the brief before you answer".into()
                }
                (Lang::En, false, 0) => {
                    "this conversation is handed to you: read the brief before you answer".into()
                }
                (Lang::En, false, n) => format!(
                    "taking over from the bot after {n} bot turns: read the brief before you answer"
                ),
                (Lang::Zh, true, _) => "从其他坐席转接：接话前请先看客户情况摘要".into(),
                (Lang::Zh, false, 0) => "此会话已转给您：接话前请先看客户情况摘要".into(),
                (Lang::Zh, false, n) => {
                    format!("从智能助手转接（助手已回复 {n} 轮）：接话前请先看客户情况摘要")
                }
            },
            evidence: None,
        }];
        if let Some(m) = self.mood.as_mut().filter(|m| !m.announced) {
            m.announced = true;
            let rolling = customer_rolling.unwrap_or(m.low);
            out.push(mood_turned(
                &m.alert_id,
                rolling,
                cfg.mood_turned_below,
                None,
                lang,
            ));
        }
        out
    }

    fn customer(&mut self, cfg: &AssistConfig, f: &TurnFacts<'_>, out: &mut Vec<Guidance>) {
        let agent_on = self.agent_on(f.agent_id);
        let fell = f
            .previous_rolling
            .is_some_and(|p| p - f.rolling >= cfg.drop_delta);
        if f.valence <= cfg.drop_valence || fell {
            self.drops.push_back(Drop {
                turn_id: f.turn_id,
                valence: f.valence,
                top: f.top.iter().map(|&(l, p)| (l.to_string(), p)).collect(),
                excerpt: f.excerpt.map(str::to_string),
            });
            if self.drops.len() > MAX_DROPS {
                self.drops.pop_front();
            }
        }
        if let Some(phrase) = f.escalation_phrase {
            if self.escalations.len() < MAX_PHRASES && !self.escalations.iter().any(|p| p == phrase)
            {
                self.escalations.push(phrase.to_string());
            }
            if f.escalation_fired && agent_on {
                out.push(Guidance {
                    kind: AlertKind::TransferRequested,
                    transition: raised(Severity::Warning, 0.0),
                    detail: match f.lang {
                        Lang::En => format!("the customer asked for {phrase:?}"),
                        Lang::Zh => format!("客户提出“{phrase}”"),
                    },
                    evidence: None,
                });
            }
        }
        if let Some(phrase) = f.gave_up {
            self.resigned = Some((f.turn_id, phrase.to_string()));
        }
        let mut counted: Vec<usize> = Vec::new();
        for ask in f.asks {
            self.ask(f, ask, agent_on, &mut counted, out);
        }
        match self.mood.as_mut() {
            None if f.speaker_turns >= f.min_customer_turns
                && (f.rolling <= cfg.mood_turned_below
                    || (f.valence <= cfg.mood_turn_valence && fell)) =>
            {
                let alert_id = new_alert_id();
                if agent_on {
                    out.push(mood_turned(
                        &alert_id,
                        f.rolling,
                        cfg.mood_turned_below,
                        Some(f.trend_start),
                        f.lang,
                    ));
                }
                self.mood = Some(Mood {
                    alert_id,
                    low: f.rolling,
                    announced: agent_on,
                });
            }
            None => {}
            Some(m) => {
                m.low = m.low.min(f.rolling);
                // Asking again what was asked before is not a recovery, however it is worded.
                let recovered = counted.is_empty()
                    && f.valence >= cfg.recovered_turn_valence
                    && (f.rolling >= cfg.recovered_above || f.rolling - m.low >= cfg.recovery_rise);
                if recovered {
                    let m = self.mood.take().expect("matched Some");
                    if m.announced {
                        out.push(Guidance {
                            kind: AlertKind::MoodRecovered,
                            transition: Transition {
                                alert_id: m.alert_id,
                                state: AlertState::Resolved,
                                severity: Severity::Warning,
                                threshold: cfg.recovered_above,
                            },
                            detail: match f.lang {
                                Lang::En => format!(
                                    "the customer's mood recovered: rolling score {:+.2}, up from {:+.2}",
                                    f.rolling, m.low
                                ),
                                Lang::Zh => format!(
                                    "客户情绪已好转：滚动情绪分 {:+.2}，最低时 {:+.2}",
                                    f.rolling, m.low
                                ),
                            },
                            evidence: None,
                        });
                    }
                }
            }
        }
    }

    /// A customer request: a new one is remembered; one asked before counts again and, with an
    /// agent on the conversation, tells them.
    /// `counted`: the requests this turn already asked again (two sentences of one turn asking
    /// the same thing count once).
    fn ask(
        &mut self,
        f: &TurnFacts<'_>,
        ask: &Ask,
        agent_on: bool,
        counted: &mut Vec<usize>,
        out: &mut Vec<Guidance>,
    ) {
        let same = self
            .requests
            .iter()
            .position(|a| overlap(&a.tokens, &ask.tokens) >= SAME_QUESTION);
        let Some(i) = same else {
            if self.requests.len() < MAX_REQUESTS {
                self.requests.push(Asked {
                    tokens: ask.tokens.clone(),
                    excerpt: ask.excerpt.as_deref().map(str::to_string),
                    valence: f.valence,
                    times: 1,
                    first_turn_id: f.turn_id,
                    last_turn_id: f.turn_id,
                });
            }
            return;
        };
        if counted.contains(&i) {
            return;
        }
        counted.push(i);
        let asked = &mut self.requests[i];
        asked.times += 1;
        asked.last_turn_id = f.turn_id;
        if agent_on {
            let first = EvidenceTurn {
                turn_id: asked.first_turn_id,
                speaker: Speaker::Customer,
                valence: asked.valence,
                top_emotions: Vec::new(),
                excerpt: asked.excerpt.as_deref().map(Box::from),
            };
            let now = EvidenceTurn {
                turn_id: f.turn_id,
                speaker: Speaker::Customer,
                valence: f.valence,
                top_emotions: f.top.iter().map(|&(l, p)| (l.to_string(), p)).collect(),
                excerpt: f.excerpt.map(Box::from),
            };
            out.push(Guidance {
                kind: AlertKind::RepeatedQuestion,
                transition: raised(Severity::Warning, 0.0),
                detail: match f.lang {
                    Lang::En => format!(
                        "the customer has asked this {} times (first at turn {})",
                        asked.times, asked.first_turn_id
                    ),
                    Lang::Zh => format!(
                        "客户已第 {} 次问到这个问题（第一次在第 {} 轮）",
                        asked.times, asked.first_turn_id
                    ),
                },
                evidence: Some(vec![first, now]),
            });
        }
    }

    /// Applies a guidance event of this conversation from the log (see `persist::reconcile`):
    /// a mood turned that the saved state missed is open, a recovery closes it.
    pub fn adopt(&mut self, event: &LoggedEvent) -> bool {
        match (event.kind, event.state) {
            (AlertKind::MoodTurned, AlertState::Raised) => {
                let changed = self
                    .mood
                    .as_ref()
                    .is_none_or(|m| m.alert_id != event.alert_id);
                if changed {
                    self.mood = Some(Mood {
                        alert_id: event.alert_id.clone(),
                        low: 0.0,
                        announced: true,
                    });
                }
                changed
            }
            (AlertKind::MoodRecovered, AlertState::Resolved)
                if self
                    .mood
                    .as_ref()
                    .is_some_and(|m| m.alert_id == event.alert_id) =>
            {
                self.mood = None;
                true
            }
            (AlertKind::HandoffBrief, _) if !self.handed_off => {
                self.handed_off = true;
                true
            }
            _ => false,
        }
    }
}

fn raised(severity: Severity, threshold: f32) -> Transition {
    Transition {
        alert_id: new_alert_id(),
        state: AlertState::Raised,
        severity,
        threshold,
    }
}

fn mood_turned(
    alert_id: &str,
    rolling: f32,
    threshold: f32,
    start: Option<f32>,
    lang: Lang,
) -> Guidance {
    Guidance {
        kind: AlertKind::MoodTurned,
        transition: Transition {
            alert_id: alert_id.to_string(),
            state: AlertState::Raised,
            severity: Severity::Warning,
            threshold,
        },
        detail: match (lang, start) {
            (Lang::En, Some(s)) => format!(
                "the customer's mood turned: rolling score {rolling:+.2} (it started at {s:+.2})"
            ),
            (Lang::En, None) => {
                format!("the customer's mood turned before you joined: rolling score {rolling:+.2}")
            }
            (Lang::Zh, Some(s)) => {
                format!("客户情绪转差：滚动情绪分 {rolling:+.2}（起初 {s:+.2}）")
            }
            (Lang::Zh, None) => format!("您接入前客户情绪已转差：滚动情绪分 {rolling:+.2}"),
        },
        evidence: None,
    }
}

/// A sentence of a customer turn that asks for something, as [`AssistState`] compares it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ask {
    tokens: Vec<u32>,
    /// The sentence as the redaction policy allows.
    pub excerpt: Option<std::sync::Arc<str>>,
}

/// The sentences of `text` that ask for something (at most 4), each with its excerpt by
/// `redact`. Sentence by sentence, so that "Where is my order? It was due Monday." and "I gave
/// you the number twice. Where is my order?" are seen to ask the same.
pub fn asks(text: &str, redact: impl Fn(&str) -> Option<Box<str>>) -> Vec<Ask> {
    text.split_inclusive(['.', '?', '!', ';', '\n', '。', '？', '！', '；', '…'])
        .filter_map(|sentence| {
            let normalized = crate::alerts::triggers::normalize(sentence);
            let question = sentence.trim_end().ends_with(['?', '？']);
            if !(question || is_request(&normalized)) {
                return None;
            }
            let tokens = fingerprint(&normalized);
            (tokens.len() >= 2).then(|| Ask {
                tokens,
                excerpt: redact(sentence.trim()).map(std::sync::Arc::from),
            })
        })
        .take(4)
        .collect()
}

/// Whether a customer's normalized text asks for something: a question, or a want.
pub fn is_request(normalized: &str) -> bool {
    const EN_OPENERS: &[&str] = &[
        "why", "what", "when", "where", "how", "who", "which", "can", "could", "would", "will",
        "is", "are", "do", "does", "did", "have", "has",
    ];
    const EN_ASKS: &[&str] = &[
        "want",
        "need",
        "wanna",
        "i d like",
        "i would like",
        "please",
        "help me",
        "tell me",
        "refund",
        "cancel",
        "i m waiting",
        "still waiting",
    ];
    const ZH_ASKS: &[&str] = &[
        "吗",
        "呢",
        "么",
        "什么",
        "怎么",
        "为什么",
        "为啥",
        "咋",
        "几时",
        "多久",
        "哪里",
        "哪儿",
        "是不是",
        "能不能",
        "可不可以",
        "有没有",
        "我要",
        "我想",
        "帮我",
        "给我",
        "请",
        "退款",
        "退货",
        "赔",
        "到底",
        "啥子",
        "点解",
        "乜",
        "几时",
        "边度",
        "未",
    ];
    let t = normalized.trim();
    if t.is_empty() {
        return false;
    }
    if t.chars().any(crate::lang::is_han) {
        return ZH_ASKS.iter().any(|w| t.contains(w));
    }
    let first = t.split(' ').next().unwrap_or("");
    EN_OPENERS.contains(&first) || EN_ASKS.iter().any(|a| contains_words(t, a))
}

fn contains_words(text: &str, words: &str) -> bool {
    text.match_indices(words).any(|(i, m)| {
        let before = text[..i].chars().next_back();
        let after = text[i + m.len()..].chars().next();
        before.is_none_or(|c| c == ' ') && after.is_none_or(|c| c == ' ')
    })
}

/// A request's content as token hashes: English words less the commonest ones, or the pairs of
/// adjacent characters of Chinese text (which has no spaces), sorted and de-duplicated.
fn fingerprint(normalized: &str) -> Vec<u32> {
    const STOP: &[&str] = &[
        "a", "an", "the", "is", "are", "was", "i", "my", "me", "you", "your", "to", "of", "it",
        "this", "that", "and", "or", "do", "does", "did", "can", "could", "would", "please",
        "just", "still", "again", "so", "for", "on", "in", "at", "be", "now", "want", "know",
        "need", "hi", "hello", "ok", "okay", "yes", "no", "why", "there", "s", "m", "t", "d",
        "will", "should", "shall", "get", "has", "have", "been", "am", "were", "with", "about",
    ];
    const ZH_STOP: &[char] = &[
        '我', '你', '的', '了', '吗', '呢', '啊', '吧', '么', '就', '是', '在', '还', '都', '又',
        '要', '想', '请', '嘛', '呀', '哦', '嗯', '们', '这', '那', '个',
    ];
    /// Question words say it is a question, not what about: "退款什么时候到账" is not
    /// "快递什么时候到".
    const ZH_QUESTION: &[&str] = &[
        "什么时候",
        "为什么",
        "什么",
        "怎么样",
        "怎么",
        "到底",
        "多久",
        "是不是",
        "能不能",
        "可不可以",
        "有没有",
        "为啥",
        "几时",
    ];
    let mut out: Vec<u32> = Vec::new();
    if normalized.chars().any(crate::lang::is_han) {
        let mut text = normalized.to_string();
        for q in ZH_QUESTION {
            text = text.replace(q, "");
        }
        let chars: Vec<char> = text
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .filter(|c| !ZH_STOP.contains(c))
            .collect();
        // Pairs within a run of characters: a removed word or a space breaks the run.
        for w in chars.windows(2).filter(|w| !w.contains(&' ')) {
            out.push(fnv(w.iter().collect::<String>().as_bytes()));
        }
    } else {
        for w in normalized
            .split(' ')
            .filter(|w| !w.is_empty() && !STOP.contains(w))
        {
            out.push(fnv(w.as_bytes()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Shared tokens over the shorter set's size.
fn overlap(a: &[u32], b: &[u32]) -> f32 {
    let (mut i, mut j, mut both) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    both as f32 / a.len().min(b.len()).max(1) as f32
}

/// FNV-1a: stable across processes and versions (fingerprints are persisted).
fn fnv(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::triggers::normalize;

    fn facts(speaker: Speaker, turn_id: u64, valence: f32, rolling: f32) -> TurnFacts<'static> {
        TurnFacts {
            speaker,
            turn_id,
            valence,
            rolling,
            previous_rolling: None,
            speaker_turns: turn_id as u32,
            trend_start: 0.0,
            customer_rolling: None,
            asks: &[],
            excerpt: None,
            top: &[],
            escalation_phrase: None,
            escalation_fired: false,
            gave_up: None,
            agent_id: "ag-1",
            min_customer_turns: 2,
            lang: Lang::En,
        }
    }

    #[test]
    fn requests_and_same_questions() {
        let same = |a: &str, b: &str| {
            overlap(&fingerprint(&normalize(a)), &fingerprint(&normalize(b))) >= SAME_QUESTION
        };
        for (text, asks) in [
            ("Where is my order?", true),
            ("I want a refund", true),
            ("thanks, that's great", false),
            ("我的快递什么时候到？", true),
            ("我要投诉", true),
            ("好的谢谢", false),
            ("点解仲未到", true),
        ] {
            assert_eq!(is_request(&normalize(text)), asks, "{text}");
        }
        assert!(same(
            "Where is my order?",
            "I still want to know where my order is"
        ));
        assert!(!same("Where is my order?", "where is my refund"));
        assert!(same(
            "我的快递什么时候到？",
            "我就想知道我的快递到底什么时候到"
        ));
        assert!(
            fingerprint(&normalize("我的快递什么时候到？")).len() >= 2,
            "enough to remember"
        );
        assert!(same(
            "我的快递什么时候到？",
            "订单号我已经发了两遍了，我的快递到底什么时候到？"
        ));
        assert!(same(
            "Where is my order?",
            "I already gave you the number twice. Where is my order?"
        ));
        assert!(!same(
            "when will my refund arrive",
            "when will my order arrive"
        ));
        assert!(!same("我的快递什么时候到？", "退款什么时候到账"));
    }

    #[test]
    fn mood_waits_for_the_hand_off_and_recovers_on_the_same_alert_id() {
        let cfg = AssistConfig::default();
        let mut s = AssistState::default();
        let customer = |s: &mut AssistState, id, v, r| {
            s.observe(&cfg, &facts(Speaker::Customer, id, v, r))
                .into_iter()
                .map(|g| (g.kind, g.transition.state, g.transition.alert_id))
                .collect::<Vec<_>>()
        };
        assert!(
            s.observe(&cfg, &facts(Speaker::Bot, 1, 0.0, 0.0))
                .is_empty()
        );
        assert!(
            customer(&mut s, 2, -0.8, -0.5).is_empty(),
            "a bot serves: nobody to tell"
        );
        let handed = s.observe(&cfg, &facts(Speaker::Agent, 3, 0.2, 0.2));
        let kinds: Vec<_> = handed.iter().map(|g| g.kind).collect();
        assert_eq!(kinds, [AlertKind::HandoffBrief, AlertKind::MoodTurned]);
        let turned_id = handed[1].transition.alert_id.clone();
        assert!(
            s.observe(&cfg, &facts(Speaker::Agent, 4, 0.2, 0.2))
                .is_empty(),
            "one brief"
        );
        assert!(
            customer(&mut s, 5, 0.1, -0.4).is_empty(),
            "not positive enough"
        );
        let recovered = customer(&mut s, 6, 0.8, -0.05);
        assert_eq!(
            recovered,
            [(AlertKind::MoodRecovered, AlertState::Resolved, turned_id)]
        );
        // Without a bot the agent hears at once.
        let mut direct = AssistState::default();
        assert!(
            customer(&mut direct, 1, -0.9, -0.9).is_empty(),
            "one customer turn is not enough"
        );
        let turned = customer(&mut direct, 2, -0.9, -0.9);
        assert_eq!(turned.len(), 1);
        assert_eq!(turned[0].0, AlertKind::MoodTurned);
    }
}
