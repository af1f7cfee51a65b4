//! The other calls with hostile frames: every unary method of `EmotionAnalysis`, `AlertFeed`,
//! `ModelAdmin`, `AgentAssist`, `CustomerMemory` and `QualityReport`, and `SubscribeAlerts`'
//! opening request, each sent a request built field by
//! field from hostile values (invalid UTF-8, control characters, 100 kB strings, empty ones,
//! CJK, huge and negative numbers, wrong wire types) and then perhaps mutated (truncated, bytes
//! flipped, garbage appended, or replaced by random bytes). The contract: an answer within 30 s,
//! OK or a status that says the caller's request was at fault or refused (INVALID_ARGUMENT,
//! NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, OUT_OF_RANGE, PERMISSION_DENIED,
//! UNAUTHENTICATED); never INTERNAL, UNKNOWN, UNAVAILABLE or a dropped connection.
//!
//! Conversation ids it sends start with `fu-`, apart from the stream fuzzer's `fz-` ones; model
//! paths never name a model directory, so LoadModel and StartShadow are refused, and Rollback
//! and Promote find nothing to act on.

use std::time::Duration;

use prost::encoding::{WireType, encode_key, encode_varint};
use tonic::Code;
use tonic::transport::Channel;

use super::{Rng, raw};

/// (path, fields: (number, kind)) of each call; kinds say what a well-formed value is.
#[derive(Clone, Copy)]
enum Field {
    Text,
    Id,
    Number,
    Flag,
}

const CALLS: &[(&str, &[(u32, Field)])] = &[
    (
        "/emotion.v1.EmotionAnalysis/ScoreTexts",
        &[(1, Field::Text)],
    ),
    (
        "/emotion.v1.EmotionAnalysis/GetConversation",
        &[(1, Field::Id)],
    ),
    (
        "/emotion.v1.EmotionAnalysis/EndConversation",
        &[(1, Field::Id)],
    ),
    (
        "/emotion.v1.AlertFeed/ListAlerts",
        &[
            (1, Field::Id),
            (2, Field::Id),
            (3, Field::Id),
            (4, Field::Number),
            (5, Field::Id), // Timestamps: arbitrary bytes where a message goes
            (6, Field::Id),
            (7, Field::Id),
            (8, Field::Id),
            (9, Field::Number),
            (10, Field::Number),
        ],
    ),
    (
        "/emotion.v1.AlertFeed/AcknowledgeAlert",
        &[(1, Field::Id), (2, Field::Id), (3, Field::Text)],
    ),
    ("/emotion.v1.ModelAdmin/GetModel", &[]),
    (
        "/emotion.v1.ModelAdmin/LoadModel",
        &[(1, Field::Id), (2, Field::Flag)],
    ),
    ("/emotion.v1.ModelAdmin/RollbackModel", &[]),
    (
        "/emotion.v1.ModelAdmin/StartShadow",
        &[(1, Field::Id), (2, Field::Number)], // share is a double: a varint is a wrong type
    ),
    ("/emotion.v1.ModelAdmin/GetShadowReport", &[]),
    ("/emotion.v1.ModelAdmin/PromoteShadow", &[]),
    ("/emotion.v1.ModelAdmin/StopShadow", &[]),
    ("/emotion.v1.AgentAssist/GetHandoffBrief", &[(1, Field::Id)]),
    (
        "/emotion.v1.AgentAssist/Handoff",
        &[(1, Field::Id), (2, Field::Id)],
    ),
    (
        "/emotion.v1.CustomerMemory/ListSilentCustomers",
        &[
            (1, Field::Id),
            (2, Field::Id), // a Timestamp: arbitrary bytes where a message goes
            (3, Field::Number),
            (4, Field::Number),
        ],
    ),
    // CustomerRef is a message: arbitrary bytes where it goes.
    ("/emotion.v1.CustomerMemory/GetCustomer", &[(1, Field::Id)]),
    (
        "/emotion.v1.CustomerMemory/MarkCustomerCalled",
        &[(1, Field::Id), (2, Field::Text)],
    ),
    (
        "/emotion.v1.CustomerMemory/DeleteCustomer",
        &[(1, Field::Id)],
    ),
    (
        "/emotion.v1.QualityReport/GetReport",
        &[
            (1, Field::Id),
            (2, Field::Id),
            (3, Field::Id),
            (4, Field::Id),
            (5, Field::Id),
        ],
    ),
];

const SUBSCRIBE: &str = "/emotion.v1.AlertFeed/SubscribeAlerts";
const SUBSCRIBE_FIELDS: &[(u32, Field)] = &[
    (1, Field::Id),
    (2, Field::Id),
    (3, Field::Id),
    (4, Field::Number),
    (5, Field::Number),
];

/// What the calls got.
#[derive(Debug, Default, Clone)]
pub struct UnaryReport {
    pub calls: u64,
    pub ok: u64,
    /// Answered with a status that puts the fault on the request.
    pub refused: u64,
    pub violations: Vec<String>,
}

fn bytes_of(rng: &mut Rng, kind: Field) -> Vec<u8> {
    match rng.below(12) {
        0 => Vec::new(),
        1 => vec![0xce, 0xd2, 0xd2, 0xaa, 0xcd, 0xb6, 0xcb, 0xdf], // GBK, not UTF-8
        2 => b"fu-\x00\x07\x1b[31m".to_vec(),
        3 => "x".repeat(100_000).into_bytes(),
        4 => (0..rng.below(64)).map(|_| rng.below(256) as u8).collect(),
        5 => "我要投诉，转人工".as_bytes().to_vec(),
        6 => b"../../../../etc".to_vec(),
        7 => b"models".to_vec(), // a directory, but not a model directory
        _ => match kind {
            Field::Text => super::TEXTS[rng.below(super::TEXTS.len() as u64) as usize]
                .as_bytes()
                .to_vec(),
            _ => format!("fu-{}", rng.below(50)).into_bytes(),
        },
    }
}

fn number_of(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => 0,
        1 => u64::MAX,
        2 => (-1i64) as u64,
        3 => u64::from(u32::MAX) + 1,
        _ => rng.below(1_000),
    }
}

/// A request built field by field, then perhaps mutated.
fn frame(rng: &mut Rng, fields: &[(u32, Field)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(number, kind) in fields {
        if rng.chance(30) {
            continue;
        }
        let repeats = if rng.chance(10) { 1 + rng.below(3) } else { 1 };
        for _ in 0..repeats {
            let wrong_type = rng.chance(5);
            match (kind, wrong_type) {
                (Field::Number | Field::Flag, false) | (Field::Text | Field::Id, true) => {
                    encode_key(number, WireType::Varint, &mut out);
                    let v = match kind {
                        Field::Flag => rng.below(3),
                        _ => number_of(rng),
                    };
                    encode_varint(v, &mut out);
                }
                _ => {
                    let value = bytes_of(rng, kind);
                    encode_key(number, WireType::LengthDelimited, &mut out);
                    encode_varint(value.len() as u64, &mut out);
                    out.extend_from_slice(&value);
                }
            }
        }
    }
    match rng.below(10) {
        0 if !out.is_empty() => {
            let cut = rng.below(out.len() as u64) as usize;
            out.truncate(cut);
        }
        1 if !out.is_empty() => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(out.len() as u64) as usize;
                out[i] ^= 1 << rng.below(8);
            }
        }
        2 => out.extend((0..1 + rng.below(16)).map(|_| rng.below(256) as u8)),
        3 => out = (0..rng.below(128)).map(|_| rng.below(256) as u8).collect(),
        _ => {}
    }
    out
}

fn refused(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::OutOfRange
            | Code::PermissionDenied
            | Code::Unauthenticated
    )
}

/// `calls` hostile calls against the server on `channel`.
pub async fn run(channel: Channel, seed: u64, calls: u64) -> UnaryReport {
    let mut rng = Rng::new(seed ^ 0x0075_6e61_7279);
    let mut report = UnaryReport::default();
    for n in 0..calls {
        // One in eight opens an alert subscription instead.
        let subscribe = rng.chance(12);
        let (path, fields) = if subscribe {
            (SUBSCRIBE, SUBSCRIBE_FIELDS)
        } else {
            CALLS[rng.below(CALLS.len() as u64) as usize]
        };
        let request = frame(&mut rng, fields);
        let call = async {
            if subscribe {
                // The opening request is what can be hostile; the first event or a quiet feed
                // both mean it was taken.
                match raw::server_streaming::<()>(channel.clone(), path, request).await {
                    Ok(mut events) => {
                        match tokio::time::timeout(Duration::from_millis(200), events.message())
                            .await
                        {
                            Ok(Err(status)) => Err(status),
                            _ => Ok(()),
                        }
                    }
                    Err(status) => Err(status),
                }
            } else {
                raw::unary::<()>(channel.clone(), path, request).await
            }
        };
        report.calls += 1;
        match tokio::time::timeout(Duration::from_secs(30), call).await {
            Err(_) => report.violations.push(format!(
                "call {n} (seed {seed}) {path}: no answer within 30 s"
            )),
            Ok(Ok(())) => report.ok += 1,
            Ok(Err(status)) if refused(status.code()) => report.refused += 1,
            Ok(Err(status)) => report
                .violations
                .push(format!("call {n} (seed {seed}) {path}: {status:?}")),
        }
        if report.violations.len() > 20 {
            break;
        }
    }
    report
}
