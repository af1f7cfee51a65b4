//! Bad input costs only itself: a malformed turn is answered with INVALID_ARGUMENT naming the
//! field while the stream and every other conversation go on; a frame that is not protobuf ends
//! the stream with INVALID_ARGUMENT after every turn before it is answered; unary calls and the
//! dashboard's endpoints answer hostile requests with 4xx, never a panic.

mod common;

use std::collections::HashMap;

use common::browser::{http, http_raw};
use common::{TestServer, turn};
use emotion_service::fuzz::raw;
use emotion_service::pb;
use prost::Message;
use tokio_stream::StreamExt;

/// A turn as it goes on the wire.
fn frame(t: &pb::TurnRequest) -> Vec<u8> {
    t.encode_to_vec()
}

const GBK: &[u8] = &[0xce, 0xd2, 0xd2, 0xaa, 0xcd, 0xb6, 0xcb, 0xdf]; // 我要投诉 in GBK

#[tokio::test(flavor = "multi_thread")]
async fn bad_turns_cost_only_themselves_on_a_stream_shared_with_50_conversations() {
    let server = TestServer::start(common::config()).await;
    let texts = [
        "Hello, I have a question about my bill.",
        "Thanks, that is very helpful.",
        "Great, have a nice day!",
    ];
    // What each bad turn is and which field its error must name.
    let mut bad: Vec<(pb::TurnRequest, &str)> = Vec::new();
    let mut t = turn("bad-utf8", 1, pb::Speaker::Customer, "x");
    t.text = GBK.to_vec();
    bad.push((t, "text is not valid UTF-8"));
    let mut t = turn("bad-speaker", 1, pb::Speaker::Customer, "hello there");
    t.speaker = 9;
    bad.push((t, "speaker 9 is not a known value"));
    let mut t = turn("bad-acoustic", 1, pb::Speaker::Customer, "hello there");
    t.acoustic_valence = Some(f32::NAN);
    bad.push((t, "acoustic_valence must be in [-1, 1], got NaN"));
    let mut t = turn("bad-queue", 1, pb::Speaker::Customer, "hello there");
    t.context = Some(pb::TurnContext {
        queue: b"billing\x1b[31m".to_vec(),
        ..Default::default()
    });
    bad.push((t, "context.queue contains a control character"));
    let mut t = turn("bad-tenant", 1, pb::Speaker::Customer, "hello there");
    t.context = Some(pb::TurnContext {
        tenant: vec![b'a'; 4096],
        ..Default::default()
    });
    bad.push((t, "context.tenant is 4096 bytes, over the limit of 128"));
    let mut t = turn("x", 1, pb::Speaker::Customer, "hello there");
    t.conversation_id = vec![0xff, 0xfe];
    bad.push((t, "conversation_id is not valid UTF-8"));
    let mut t = turn("x", 1, pb::Speaker::Customer, "hello there");
    t.conversation_id = b"id\nwith newline".to_vec();
    bad.push((
        t,
        "conversation_id contains a control character (U+000A) at byte 2",
    ));

    // 50 conversations x 3 turns, round robin, with the bad turns spread through the middle.
    let mut frames = Vec::new();
    let mut expected = Vec::new(); // None: a good turn (conversation, turn id); Some(i): bad[i]
    let mut next_bad = 0;
    for round in 0..3u64 {
        for c in 0..50 {
            let good = turn(
                &format!("good-{c}"),
                round + 1,
                if c % 2 == 0 {
                    pb::Speaker::Customer
                } else {
                    pb::Speaker::Agent
                },
                texts[round as usize],
            );
            frames.push(frame(&good));
            expected.push(Err((format!("good-{c}"), round + 1)));
            if c % 20 == 10 && next_bad < bad.len() {
                for _ in 0..3 {
                    if next_bad < bad.len() {
                        frames.push(frame(&bad[next_bad].0));
                        expected.push(Ok(next_bad));
                        next_bad += 1;
                    }
                }
            }
        }
    }
    assert_eq!(next_bad, bad.len(), "every bad turn was sent");

    let results: Vec<Result<pb::TurnResult, tonic::Status>> =
        raw::stream_turns(server.channel().await, frames)
            .await
            .unwrap()
            .collect()
            .await;
    assert!(
        results.iter().all(|r| r.is_ok()),
        "the stream ended with an error: {:?}",
        results.iter().find(|r| r.is_err())
    );
    let results: Vec<pb::TurnResult> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.len(), expected.len(), "one result per request");

    // Results of one conversation in turn order; every good turn once; every bad one rejected.
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    let mut rejected = 0;
    for r in &results {
        match &r.error {
            None => seen
                .entry(r.conversation_id.clone())
                .or_default()
                .push(r.turn_id),
            Some(e) => {
                rejected += 1;
                let (_, what) = bad
                    .iter()
                    .find(|(_, what)| e.message.contains(what))
                    .unwrap_or_else(|| panic!("unexpected rejection {e:?} of {r:?}"));
                assert_eq!(e.code, tonic::Code::InvalidArgument as i32, "{what}: {e:?}");
            }
        }
    }
    assert_eq!(rejected, bad.len(), "exactly the bad turns were rejected");
    assert_eq!(seen.len(), 50);
    for (id, turns) in &seen {
        assert_eq!(turns, &[1, 2, 3], "{id}: every turn once, in order");
    }
    // The rejected turn is answered with what could be read of its ids.
    let speaker = results
        .iter()
        .find(|r| r.conversation_id == "bad-speaker")
        .unwrap();
    assert_eq!(speaker.turn_id, 1);
    // A client that re-sends the bad turn on a new stream gets the same answer, not a dead stream.
    let again: Vec<_> = raw::stream_turns(
        server.channel().await,
        vec![frame(&bad[0].0), frame(&bad[1].0)],
    )
    .await
    .unwrap()
    .collect()
    .await;
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|r| r.as_ref().unwrap().error.is_some()));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_frame_ends_the_stream_with_invalid_argument_after_the_turns_before_it() {
    let server = TestServer::start(common::config()).await;
    let mut frames: Vec<Vec<u8>> = (1..=20)
        .map(|i| {
            frame(&turn(
                &format!("before-{i}"),
                1,
                pb::Speaker::Customer,
                "I would like to change my address please.",
            ))
        })
        .collect();
    // Field 2 (turn_id, a varint) sent as length-delimited with a length past the end.
    frames.push(vec![0x12, 0x7f, 0x01]);
    frames.push(frame(&turn(
        "after",
        1,
        pb::Speaker::Customer,
        "never read",
    )));
    let mut results = raw::stream_turns(server.channel().await, frames)
        .await
        .unwrap();
    let mut answered = Vec::new();
    let status = loop {
        match results.next().await {
            Some(Ok(r)) => answered.push(r),
            Some(Err(status)) => break status,
            None => panic!("the stream ended without an error"),
        }
    };
    assert_eq!(
        answered.len(),
        20,
        "every turn before the bad frame is answered"
    );
    assert!(answered.iter().all(|r| r.error.is_none()));
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("TurnRequest"), "{status:?}");

    // Unary: a text that is not UTF-8 is the caller's fault, and the server goes on.
    let mut request = Vec::new();
    prost::encoding::bytes::encode(1, &GBK.to_vec(), &mut request);
    let err = raw::unary::<pb::ScoreTextsResponse>(
        server.channel().await,
        "/emotion.v1.EmotionAnalysis/ScoreTexts",
        request,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = raw::unary::<pb::Conversation>(
        server.channel().await,
        "/emotion.v1.EmotionAnalysis/GetConversation",
        vec![0xff, 0xff, 0xff],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let ok = server
        .client()
        .await
        .score_texts(pb::ScoreTextsRequest {
            texts: vec!["still serving".into()],
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().results.len(), 1);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_answers_hostile_requests_with_4xx_and_keeps_serving() {
    let server = TestServer::start(common::config()).await;
    let port = server.web_addr.port();
    let post = |path: &str, body: &[u8]| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let get = |target: &[u8], extra: &[u8]| {
        let mut r = b"GET ".to_vec();
        r.extend_from_slice(target);
        r.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        r.extend_from_slice(extra);
        r.extend_from_slice(b"\r\n");
        r
    };
    let huge = format!("X-Filler: {}\r\n", "a".repeat(200_000));
    let huger = format!("X-Filler: {}\r\n", "a".repeat(2_000_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "token with a newline",
            post("/api/session", br#"{"token":"a\nb"}"#),
        ),
        (
            "token with a DEL",
            post("/api/session", b"{\"token\":\"ab\x7f\"}"),
        ),
        (
            "token with non-ASCII",
            post("/api/session", "{\"token\":\"令牌\"}".as_bytes()),
        ),
        ("not JSON", post("/api/session", b"{token")),
        (
            "body not UTF-8",
            post("/api/session", b"{\"token\":\"\xff\xfe\"}"),
        ),
        ("JSON of the wrong shape", post("/api/session", b"[1,2,3]")),
        (
            "ack with a bad body",
            post("/api/alerts/al-1/ack", b"{\"note\": 5}"),
        ),
        (
            "ack of an id not UTF-8",
            post("/api/alerts/%FF%FE/ack", b"{}"),
        ),
        (
            "conversation id not UTF-8",
            get(b"/api/conversations/%FF", b""),
        ),
        ("query not UTF-8", get(b"/api/alerts?queue=%FF", b"")),
        ("limit not a number", get(b"/api/alerts?limit=lots", b"")),
        (
            "hours out of range",
            get(b"/api/heatmap?hours=99999999999999999999", b""),
        ),
        (
            "Last-Event-ID not a number",
            get(b"/api/alerts/stream", b"Last-Event-ID: \xff\r\n"),
        ),
        (
            "cookie not UTF-8",
            get(b"/api/status?x", b"Cookie: emotion_token=\xff\xfe\r\n"),
        ),
        ("huge header", get(b"/api/status", huge.as_bytes())),
        (
            "header larger than the server reads",
            get(b"/api/status", huger.as_bytes()),
        ),
        (
            "long conversation id",
            get(
                format!("/api/conversations/{}", "c".repeat(5000)).as_bytes(),
                b"",
            ),
        ),
    ];
    for (what, request) in cases {
        let (status, body) =
            tokio::time::timeout(std::time::Duration::from_secs(10), http_raw(port, &request))
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer within 10 s"))
                .unwrap();
        // Auth is off here, so the cookie case is a well-formed request: 200 is right for it.
        let ok = if what == "cookie not UTF-8" {
            status == 200
        } else {
            (400..500).contains(&status)
        };
        assert!(ok, "{what}: {status} {body}");
    }
    let (status, body) = http(port, "GET", "/api/status", &[], None).await.unwrap();
    assert_eq!(
        status, 200,
        "still serving after every hostile request: {body}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_subscribers_beyond_the_cap_get_resource_exhausted_and_429() {
    let mut config = common::config();
    config.alerts.max_subscribers = 2;
    let server = TestServer::start(config).await;
    let mut feed = server.alerts().await;
    let subscribe = || pb::SubscribeAlertsRequest::default();
    let first = feed.subscribe_alerts(subscribe()).await.unwrap();
    let _second = feed.subscribe_alerts(subscribe()).await.unwrap();
    let err = feed.subscribe_alerts(subscribe()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("alerts.max_subscribers"), "{err:?}");
    let (status, body) = http(
        server.web_addr.port(),
        "GET",
        "/api/alerts/stream",
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 429, "{body}");
    // A subscriber that leaves gives its place back.
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match feed.subscribe_alerts(subscribe()).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                assert_eq!(e.code(), tonic::Code::ResourceExhausted);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the place was never given back: {e:?}"),
        }
    }
    server.stop().await.unwrap();
}
