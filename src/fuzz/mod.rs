//! A structure-aware fuzzer for `StreamTurns`, run against a live server: random interleavings of
//! conversations, duplicates, out-of-order ids, invalid UTF-8, unknown speakers, NaN and infinite
//! acoustic valence, huge and empty fields, control characters in ids and context fields, frames
//! that are not protobuf at all, and streams cancelled part way. Each case is one stream; every
//! case checks the contract:
//!
//! - every frame read before the stream ends gets exactly one result, in request order, naming
//!   the request's conversation and turn;
//! - a malformed turn is INVALID_ARGUMENT; no result is ever INTERNAL or UNKNOWN;
//! - a conversation's scored (not duplicate) results have strictly increasing turn ids;
//! - the stream ends OK, or INVALID_ARGUMENT exactly when an undecodable frame was sent, and
//!   only after every frame before it was answered;
//! - the server still answers health after the case.
//!
//! [`unary`] does the same for every other call, [`web`] for the dashboard's HTTP endpoints and
//! [`files`] for config files and model directories. `emotion fuzz` runs them all for as long as
//! asked (with the server's RSS over time); the test suite runs a short seeded run.

pub mod files;
pub mod raw;
pub mod unary;
pub mod web;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

use crate::pb;

/// xorshift64*: small, seedable, good enough to pick cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What the fuzzer expects of one frame.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// A well-formed turn: scored, a duplicate, or refused for order/capacity.
    Turn {
        conversation_id: String,
        turn_id: u64,
    },
    /// Malformed: INVALID_ARGUMENT naming `field`, answered with what could be read of the id.
    Invalid {
        conversation_id: String,
        turn_id: u64,
        field: &'static str,
    },
    /// Not protobuf: ends the stream with INVALID_ARGUMENT.
    Garbage,
}

const TEXTS: &[&str] = &[
    "Hello, I have a question about my bill.",
    "This is the third time I call and nobody helps, I'm furious.",
    "Thank you so much, that fixed it!",
    "我要投诉你们，马上给我转人工！",
    "算了，我不想再折腾了",
    "唔该晒",
    "Can you please check my order status?",
];

/// One case: the frames of a stream and what each should get.
fn case(
    rng: &mut Rng,
    seed: u64,
    case_no: u64,
    next_turn: &mut HashMap<String, u64>,
) -> Vec<(Vec<u8>, Expect)> {
    let frames = 1 + rng.below(60);
    let mut out = Vec::new();
    for _ in 0..frames {
        let conv = format!("fz{seed}-{}-{}", case_no % 7, rng.below(8));
        let last = next_turn.get(&conv).copied().unwrap_or(0);
        let turn_id = match rng.below(10) {
            0 => last,                              // a duplicate (or out of order after a failure)
            1 => last.saturating_sub(rng.below(3)), // out of order
            2 => last + 1 + rng.below(5),           // a gap
            _ => last + 1,
        };
        let speaker =
            [pb::Speaker::Customer, pb::Speaker::Agent, pb::Speaker::Bot][rng.below(3) as usize];
        let mut t = pb::TurnRequest::new(
            conv.clone(),
            turn_id,
            speaker,
            TEXTS[rng.below(TEXTS.len() as u64) as usize],
        );
        if rng.chance(30) {
            t.context = Some(pb::TurnContext {
                tenant: b"acme".to_vec(),
                queue: b"billing".to_vec(),
                language: b"zh".to_vec(),
                ..Default::default()
            });
        }
        if rng.chance(20) {
            t.acoustic_valence = Some((rng.below(2001) as f32 - 1000.0) / 1000.0);
        }
        let invalid = |field| Expect::Invalid {
            conversation_id: conv.clone(),
            turn_id,
            field,
        };
        let expect = match rng.below(100) {
            0..=3 => {
                t.text = vec![0xce, 0xd2, 0xd2, 0xaa, 0xff];
                invalid("text")
            }
            4..=6 => {
                t.speaker = 4 + rng.below(1000) as i32;
                invalid("speaker")
            }
            7 => {
                t.speaker = 0;
                invalid("speaker")
            }
            8..=9 => {
                t.acoustic_valence =
                    Some([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.5][rng.below(4) as usize]);
                invalid("acoustic_valence")
            }
            10..=11 => {
                t.text = vec![b'a'; 8193 + rng.below(20_000) as usize];
                invalid("text")
            }
            12 => {
                t.text = if rng.chance(50) {
                    Vec::new()
                } else {
                    b"   ".to_vec()
                };
                invalid("text")
            }
            13 => {
                let mut bad = conv.clone().into_bytes();
                bad.push(if rng.chance(50) { b'\n' } else { 0x1b });
                t.conversation_id = bad.clone();
                Expect::Invalid {
                    conversation_id: String::from_utf8(bad).unwrap(),
                    turn_id,
                    field: "conversation_id",
                }
            }
            14 => {
                t.conversation_id = vec![0xff; 1 + rng.below(10) as usize];
                Expect::Invalid {
                    conversation_id: String::new(),
                    turn_id,
                    field: "conversation_id",
                }
            }
            15 => {
                t.context = Some(pb::TurnContext {
                    queue: vec![b'q'; 129 + rng.below(2000) as usize],
                    ..Default::default()
                });
                invalid("context.queue")
            }
            16 => {
                t.context = Some(pb::TurnContext {
                    agent_id: b"agent\x07".to_vec(),
                    ..Default::default()
                });
                invalid("context.agent_id")
            }
            17 => {
                t.context = Some(pb::TurnContext {
                    tenant: vec![0xc3],
                    ..Default::default()
                });
                invalid("context.tenant")
            }
            18 if rng.chance(30) => {
                // Not protobuf: a field with an impossible wire type, or a length past the end.
                let garbage = match rng.below(3) {
                    0 => vec![0x0f, 0x01],
                    1 => vec![0x12, 0x7f, 0x01],
                    // An invalid wire type first, so no random tail can make it decode.
                    _ => std::iter::once(0x0f)
                        .chain((0..1 + rng.below(64)).map(|_| rng.below(256) as u8))
                        .collect(),
                };
                out.push((garbage, Expect::Garbage));
                break;
            }
            _ => {
                next_turn.insert(conv.clone(), last.max(turn_id));
                Expect::Turn {
                    conversation_id: conv,
                    turn_id,
                }
            }
        };
        out.push((t.encode_to_vec(), expect));
    }
    out
}

/// Counts over a run.
#[derive(Debug, Default, Clone)]
pub struct FuzzReport {
    pub cases: u64,
    pub frames: u64,
    pub results: u64,
    pub scored: u64,
    pub duplicates: u64,
    pub rejected_invalid: u64,
    pub refused_other: u64,
    pub garbage_streams: u64,
    pub cancelled: u64,
    /// Broken invariants, described; must stay empty.
    pub violations: Vec<String>,
}

impl std::fmt::Display for FuzzReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cases, {} frames, {} results ({} scored, {} duplicates, {} invalid, {} refused for order/capacity), {} streams ended by garbage, {} cancelled, {} violations",
            self.cases,
            self.frames,
            self.results,
            self.scored,
            self.duplicates,
            self.rejected_invalid,
            self.refused_other,
            self.garbage_streams,
            self.cancelled,
            self.violations.len()
        )
    }
}

/// Runs cases against the server on `channel` until `duration` has passed or `max_cases` ran.
pub async fn run(channel: Channel, seed: u64, duration: Duration, max_cases: u64) -> FuzzReport {
    let mut rng = Rng::new(seed);
    let mut report = FuzzReport::default();
    let mut next_turn = HashMap::new();
    let started = Instant::now();
    while report.cases < max_cases && started.elapsed() < duration {
        let case_no = report.cases;
        let frames = case(&mut rng, seed, case_no, &mut next_turn);
        let cancel_after = rng
            .chance(10)
            .then(|| rng.below(frames.len() as u64) as usize);
        report.cases += 1;
        report.frames += frames.len() as u64;
        if let Err(v) = check(&channel, frames, cancel_after, &mut report).await {
            report
                .violations
                .push(format!("case {case_no} (seed {seed}): {v}"));
        }
        if report.violations.len() > 20 {
            break;
        }
    }
    report
}

async fn check(
    channel: &Channel,
    frames: Vec<(Vec<u8>, Expect)>,
    cancel_after: Option<usize>,
    report: &mut FuzzReport,
) -> Result<(), String> {
    let (bytes, expected): (Vec<_>, Vec<_>) = frames.into_iter().unzip();
    let garbage = expected.last() == Some(&Expect::Garbage);
    let mut results = raw::stream_turns(channel.clone(), bytes)
        .await
        .map_err(|s| format!("the call failed: {s:?}"))?;
    let mut last_scored: HashMap<String, u64> = HashMap::new();
    let mut i = 0;
    let end = loop {
        if cancel_after == Some(i) {
            report.cancelled += 1;
            return Ok(()); // dropping the stream cancels it
        }
        match tokio::time::timeout(Duration::from_secs(60), results.next()).await {
            Err(_) => return Err(format!("no result for frame {i} within 60 s")),
            Ok(None) => break None,
            Ok(Some(Err(status))) => break Some(status),
            Ok(Some(Ok(r))) => {
                report.results += 1;
                let Some(want) = expected.get(i) else {
                    return Err(format!(
                        "a result beyond the {} frames: {r:?}",
                        expected.len()
                    ));
                };
                i += 1;
                let code = r.error.as_ref().map(|e| Code::from(e.code));
                if matches!(code, Some(Code::Internal | Code::Unknown)) {
                    return Err(format!("{code:?} for {want:?}: {r:?}"));
                }
                match want {
                    Expect::Turn {
                        conversation_id,
                        turn_id,
                    } => {
                        if (&r.conversation_id, r.turn_id) != (conversation_id, *turn_id) {
                            return Err(format!("result {r:?} for {want:?}"));
                        }
                        match code {
                            None if r.duplicate => report.duplicates += 1,
                            None => {
                                report.scored += 1;
                                let last =
                                    last_scored.entry(r.conversation_id.clone()).or_default();
                                if r.turn_id <= *last && *last > 0 {
                                    return Err(format!(
                                        "turn {} scored after {}",
                                        r.turn_id, last
                                    ));
                                }
                                *last = r.turn_id;
                            }
                            Some(Code::FailedPrecondition | Code::ResourceExhausted) => {
                                report.refused_other += 1
                            }
                            Some(c) => return Err(format!("{c:?} for a well-formed turn: {r:?}")),
                        }
                    }
                    Expect::Invalid {
                        conversation_id,
                        turn_id,
                        field,
                    } => {
                        let e = r.error.as_ref();
                        if code != Some(Code::InvalidArgument)
                            || !e.is_some_and(|e| e.message.starts_with(field))
                            || (&r.conversation_id, r.turn_id) != (conversation_id, *turn_id)
                        {
                            return Err(format!("expected INVALID_ARGUMENT on {field}: {r:?}"));
                        }
                        report.rejected_invalid += 1;
                    }
                    Expect::Garbage => return Err(format!("a result for a garbage frame: {r:?}")),
                }
            }
        }
    };
    let answered_all = i == expected.len() - usize::from(garbage);
    match end {
        None if !garbage && answered_all => Ok(()),
        Some(s) if garbage && answered_all && s.code() == Code::InvalidArgument => {
            report.garbage_streams += 1;
            Ok(())
        }
        other => Err(format!(
            "stream ended with {other:?} after {i} of {} frames (garbage: {garbage})",
            expected.len()
        )),
    }
}
