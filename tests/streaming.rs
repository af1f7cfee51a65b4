//! StreamTurns delivery and its errors through the real server: every turn answered exactly once
//! and in order, idempotent re-sends, per-turn errors that leave the stream going, limits.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{TestServer, config, stream_all, turn};
use emotion_service::pb;
use tokio_stream::StreamExt;
use tonic::Code;

const TEXTS: &[&str] = &[
    "Hello, I have a question about my invoice.",
    "That's great news, thank you!",
    "I've been waiting for forty minutes, this is ridiculous.",
    "Can you check the status of my order please?",
    "I'm not sure I understand what you mean.",
    "Perfect, that works for me.",
    "Why does this keep happening to me?",
    "Thanks for your patience.",
];

#[tokio::test]
async fn two_hundred_conversations_on_four_streams_answered_once_and_in_order() {
    let server = TestServer::start(config()).await;
    let (conversations, turns_each, streams) = (200u64, 5u64, 4u64);
    let mut batches: Vec<Vec<pb::TurnRequest>> = vec![Vec::new(); streams as usize];
    for t in 1..=turns_each {
        for c in 0..conversations {
            let speaker = if t % 2 == 0 {
                pb::Speaker::Agent
            } else {
                pb::Speaker::Customer
            };
            let text = TEXTS[((c + t) % TEXTS.len() as u64) as usize];
            batches[(c % streams) as usize].push(turn(&format!("conv-{c}"), t, speaker, text));
        }
    }
    let mut tasks = Vec::new();
    for batch in batches {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(
            async move { stream_all(&mut client, batch).await },
        ));
    }
    let mut seen = HashSet::new();
    let mut last_turn: HashMap<String, u64> = HashMap::new();
    for task in tasks {
        for r in task.await.unwrap() {
            assert!(r.error.is_none(), "{:?}", r.error);
            assert!(!r.duplicate);
            assert!(
                seen.insert((r.conversation_id.clone(), r.turn_id)),
                "answered twice: {r:?}"
            );
            let last = last_turn.entry(r.conversation_id.clone()).or_insert(0);
            assert!(
                r.turn_id > *last,
                "{} turn {} after {}",
                r.conversation_id,
                r.turn_id,
                last
            );
            *last = r.turn_id;
        }
    }
    assert_eq!(
        seen.len() as u64,
        conversations * turns_each,
        "every turn answered"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_turns_get_their_error_and_the_stream_goes_on() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let c = pb::Speaker::Customer;
    let mut out_of_range = turn("conv", 4, c, "fine");
    out_of_range.acoustic_valence = Some(1.5);
    let turns = vec![
        turn("conv", 1, c, "Hi, my internet is down again."),
        turn("conv", 2, c, ""),
        turn("conv", 3, c, &"a".repeat(8 * 1024 + 1)),
        turn("", 3, c, "no conversation"),
        turn("conv", 3, pb::Speaker::Unspecified, "who am I"),
        out_of_range,
        turn("conv", 5, c, "It has been down since this morning."),
        turn("conv", 4, c, "late turn"),
        turn("conv", 1, c, "re-sent first turn, different text"),
        turn(
            "other",
            1,
            c,
            "Another conversation on the same stream is unaffected.",
        ),
        turn("conv", 6, c, "Thanks, it works now."),
    ];
    let results = stream_all(&mut client, turns).await;
    assert_eq!(results.len(), 11);
    let code = |i: usize| results[i].error.as_ref().map(|e| Code::from(e.code));
    let message = |i: usize| results[i].error.as_ref().unwrap().message.clone();
    assert_eq!(code(0), None);
    assert_eq!(code(1), Some(Code::InvalidArgument));
    assert_eq!(message(1), "text is required");
    assert_eq!(code(2), Some(Code::InvalidArgument));
    assert_eq!(message(2), "text is 8193 bytes, over the limit of 8192");
    assert_eq!(
        (code(3), message(3)),
        (
            Some(Code::InvalidArgument),
            "conversation_id is required".into()
        )
    );
    assert_eq!(
        (code(4), message(4)),
        (Some(Code::InvalidArgument), "speaker is required".into())
    );
    assert_eq!(code(5), Some(Code::InvalidArgument));
    assert!(
        message(5).contains("acoustic_valence must be in [-1, 1]"),
        "{}",
        message(5)
    );
    assert_eq!(code(6), None);
    assert_eq!(code(7), Some(Code::FailedPrecondition));
    assert!(
        message(7).contains("turn_id 4") && message(7).contains("last turn 5"),
        "{}",
        message(7)
    );
    // The re-send answers from history: same scores, marked duplicate, not counted again.
    assert_eq!(code(8), None);
    assert!(results[8].duplicate);
    assert_eq!(results[8].emotions, results[0].emotions);
    assert_eq!(results[8].rolling_valence, results[0].rolling_valence);
    assert_eq!(code(9), None);
    assert_eq!(code(10), None);
    let view = client
        .get_conversation(pb::GetConversationRequest {
            conversation_id: "conv".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<u64> = view.turns.iter().map(|t| t.turn_id).collect();
    assert_eq!(
        ids,
        [1, 5, 6],
        "rejected turns and the re-send are not recorded"
    );
    assert_eq!(view.speakers[0].turns, 3);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_messages_get_a_status_and_earlier_turns_their_results() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let turns = vec![
        turn("big", 1, pb::Speaker::Customer, "hello"),
        turn("big", 2, pb::Speaker::Customer, &"x".repeat(100 * 1024)),
    ];
    let mut results = client
        .stream_turns(tokio_stream::iter(turns))
        .await
        .unwrap()
        .into_inner();
    let first = results.next().await.unwrap().unwrap();
    assert_eq!((first.turn_id, first.error), (1, None));
    let status = results.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let status = client
        .score_texts(pb::ScoreTextsRequest {
            texts: vec!["y".repeat(100 * 1024)],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn limits_on_streams_conversations_texts_and_the_queue() {
    let mut cfg = config();
    cfg.limits.max_streams = 2;
    cfg.limits.max_conversations = 3;
    cfg.batching.queue_capacity = 32;
    cfg.batching.max_batch = 32;
    let server = TestServer::start(cfg).await;
    let mut client = server.client().await;

    // Two open streams are the maximum; a third is refused at once.
    let mut open = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::TurnRequest>(1);
        let stream = client
            .stream_turns(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap();
        open.push((tx, stream));
    }
    let status = client
        .stream_turns(tokio_stream::iter(vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("2 turn streams"),
        "{}",
        status.message()
    );
    drop(open);

    // Three conversations are the maximum; ending one makes room.
    let c = pb::Speaker::Customer;
    let turns: Vec<_> = (0..4)
        .map(|i| turn(&format!("limit-{i}"), 1, c, "hello there"))
        .collect();
    let results = retry_stream(&mut client, turns).await;
    assert!(results[..3].iter().all(|r| r.error.is_none()));
    let error = results[3].error.as_ref().unwrap();
    assert_eq!(Code::from(error.code), Code::ResourceExhausted);
    assert!(
        error.message.contains("3 conversations"),
        "{}",
        error.message
    );
    client
        .end_conversation(pb::EndConversationRequest {
            conversation_id: "limit-0".into(),
        })
        .await
        .unwrap();
    let results = retry_stream(&mut client, vec![turn("limit-3", 1, c, "hello there")]).await;
    assert!(results[0].error.is_none());

    // ScoreTexts: empty, too many texts, and more texts than the queue holds.
    let status = client
        .score_texts(pb::ScoreTextsRequest { texts: vec![] })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "texts is required")
    );
    let texts = vec!["hi".to_string(); 257];
    let status = client
        .score_texts(pb::ScoreTextsRequest { texts })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("over the limit of 256"),
        "{}",
        status.message()
    );
    let texts = vec!["hi".to_string(); 100];
    let status = client
        .score_texts(pb::ScoreTextsRequest { texts })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    server.stop().await.unwrap();
}

/// Streams turns, retrying while the server still counts a just-closed stream as open.
async fn retry_stream(
    client: &mut emotion_service::pb::emotion_analysis_client::EmotionAnalysisClient<
        tonic::transport::Channel,
    >,
    turns: Vec<pb::TurnRequest>,
) -> Vec<pb::TurnResult> {
    for _ in 0..100 {
        match client.stream_turns(tokio_stream::iter(turns.clone())).await {
            Ok(response) => return response.into_inner().map(|r| r.unwrap()).collect().await,
            Err(status) if status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    panic!("streams never freed")
}

#[tokio::test]
async fn get_end_and_idle_eviction() {
    let mut cfg = config();
    cfg.limits.conversation_ttl_secs = 1;
    let server = TestServer::start(cfg).await;
    let mut client = server.client().await;
    let turns = vec![
        turn("life", 1, pb::Speaker::Agent, "Hello, how can I help?"),
        turn(
            "life",
            2,
            pb::Speaker::Customer,
            "My order never arrived and I'm really upset.",
        ),
        turn(
            "life",
            3,
            pb::Speaker::Customer,
            "Thanks, a refund is fine.",
        ),
    ];
    stream_all(&mut client, turns).await;
    let view = client
        .get_conversation(pb::GetConversationRequest {
            conversation_id: "life".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.last_turn_id, 3);
    assert_eq!(view.turns.len(), 3);
    let speakers: Vec<_> = view
        .speakers
        .iter()
        .map(|s| (s.speaker(), s.turns))
        .collect();
    assert_eq!(
        speakers,
        [(pb::Speaker::Customer, 2), (pb::Speaker::Agent, 1)]
    );

    let summary = client
        .end_conversation(pb::EndConversationRequest {
            conversation_id: "life".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.turns, 3);
    assert_eq!(summary.customer_emotions.len(), 5);
    let status = client
        .get_conversation(pb::GetConversationRequest {
            conversation_id: "life".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .end_conversation(pb::EndConversationRequest {
            conversation_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "conversation_id is required")
    );

    // An idle conversation is forgotten after the TTL (1 s here).
    stream_all(
        &mut client,
        vec![turn("idle", 1, pb::Speaker::Customer, "hello")],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = client
            .get_conversation(pb::GetConversationRequest {
                conversation_id: "idle".into(),
            })
            .await;
        match r {
            Err(status) if status.code() == Code::NotFound => break,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("not evicted: {other:?}"),
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_queue_slows_streams_down_instead_of_failing_turns() {
    let mut cfg = config();
    cfg.batching.queue_capacity = 32;
    cfg.batching.max_batch = 32;
    cfg.limits.max_in_flight_per_stream = 64;
    let server = TestServer::start(cfg).await;
    let mut tasks = Vec::new();
    for s in 0..4 {
        let mut client = server.client().await;
        let turns: Vec<_> = (1..=300u64)
            .map(|t| {
                let text = TEXTS[(t as usize + s) % TEXTS.len()];
                turn(
                    &format!("bp-{s}-{}", t % 10),
                    t,
                    pb::Speaker::Customer,
                    text,
                )
            })
            .collect();
        tasks.push(tokio::spawn(
            async move { stream_all(&mut client, turns).await },
        ));
    }
    for task in tasks {
        let results = task.await.unwrap();
        assert_eq!(results.len(), 300);
        assert!(
            results.iter().all(|r| r.error.is_none()),
            "no turn fails for a full queue"
        );
    }
    server.stop().await.unwrap();
}
