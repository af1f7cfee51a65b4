//! The durable alert log: resume after a disconnect or a kill -9 restart with no lost and no
//! duplicated alert, a slow subscriber that slows nobody, history and acknowledgements.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{ChildServer, TestServer, angry_call, config, conversation, next_alert, stream_all};
use emotion_service::pb;
use emotion_service::pb::alert_feed_client::AlertFeedClient;
use emotion_service::pb::emotion_analysis_client::EmotionAnalysisClient;
use tokio::io::AsyncBufReadExt;

const ESCALATING: &str = "examples/escalating-call.jsonl";

fn resume(after: Option<u64>) -> pb::SubscribeAlertsRequest {
    pb::SubscribeAlertsRequest {
        after_sequence: after,
        ..Default::default()
    }
}

/// Streams `n` angry calls named `{prefix}-{i}` on one stream; each raises one CRITICAL alert.
async fn angry_calls(
    client: &mut EmotionAnalysisClient<tonic::transport::Channel>,
    prefix: &str,
    n: usize,
) {
    let turns: Vec<_> = (0..n)
        .flat_map(|i| angry_call(&format!("{prefix}-{i}")))
        .collect();
    let results = stream_all(client, turns).await;
    assert_eq!(results.len(), 2 * n);
    assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
}

/// The `watch` CLI's printed sequence numbers, read until `last` appears (30 s at most).
async fn printed_sequences(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    last: u64,
) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("watch printed only {seqs:?}, waiting for {last}"))
            .unwrap()
            .expect("watch is running");
        if line.starts_with(' ') {
            continue; // an alert's explanation lines
        }
        let seq = line
            .strip_prefix('[')
            .and_then(|l| l.split(']').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an alert line: {line}"));
        seqs.push(seq);
    }
    seqs
}

#[tokio::test]
async fn kill_9_mid_stream_then_resume_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Without agent guidance the log holds supervisors' events alone, numbered without gaps, so
    // this test can name every sequence (tests/assist.rs checks supervisors' numbering with
    // guidance between their events).
    let env = [
        (
            "EMOTION__ALERT_LOG__PATH",
            dir.path().join("alerts.sqlite3").display().to_string(),
        ),
        ("EMOTION__ASSIST__ENABLED", "false".to_string()),
    ];
    let server = ChildServer::spawn(&env).await;

    // The supervisor CLI, watching from the start; it must reconnect by itself.
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_emotion"))
        .args([
            "watch",
            "--server",
            &server.url(),
            "--after",
            "0",
            "--color",
            "never",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut printed = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();

    let mut client = EmotionAnalysisClient::new(server.channel().await);
    let mut feed = AlertFeedClient::new(server.channel().await);
    let mut live = feed
        .subscribe_alerts(resume(None))
        .await
        .unwrap()
        .into_inner();
    // Mid-stream: the escalating call up to its CRITICAL turn (WARNING at 12, CRITICAL at 14).
    let first_half: Vec<_> = conversation(ESCALATING, "restart-1")
        .into_iter()
        .take(14)
        .collect();
    stream_all(&mut client, first_half).await;
    let warning = next_alert(&mut live).await;
    assert_eq!(
        (warning.sequence, warning.state()),
        (1, pb::AlertState::Raised)
    );
    // This subscriber processed sequence 1 only, then lost its connection; more alerts fire.
    drop(live);
    angry_calls(&mut client, "before", 5).await;
    // Every alert is logged before any result of its turn is sent: all 7 are on disk now.
    let addr = server.addr;
    server.kill_9();

    let server = ChildServer::spawn_at(addr, &env).await;
    let mut feed = AlertFeedClient::new(server.channel().await);
    let mut resumed = feed
        .subscribe_alerts(resume(Some(warning.sequence)))
        .await
        .unwrap()
        .into_inner();
    let mut client = EmotionAnalysisClient::new(server.channel().await);
    angry_calls(&mut client, "after", 2).await;
    let mut got = Vec::new();
    for _ in 0..8 {
        got.push(next_alert(&mut resumed).await);
    }
    let seqs: Vec<u64> = got.iter().map(|a| a.sequence).collect();
    assert_eq!(seqs, (2..=9).collect::<Vec<_>>(), "no gap, no duplicate");
    assert_eq!(
        (
            got[0].conversation_id.as_str(),
            got[0].state(),
            &got[0].alert_id
        ),
        ("restart-1", pb::AlertState::Escalated, &warning.alert_id)
    );
    let before: HashSet<_> = got[1..6]
        .iter()
        .map(|a| a.conversation_id.clone())
        .collect();
    let after: HashSet<_> = got[6..].iter().map(|a| a.conversation_id.clone()).collect();
    assert_eq!(before, (0..5).map(|i| format!("before-{i}")).collect());
    assert_eq!(after, (0..2).map(|i| format!("after-{i}")).collect());
    // Nothing more: the next event is a sentinel raised now, not a repeat.
    angry_calls(&mut client, "sentinel", 1).await;
    let sentinel = next_alert(&mut resumed).await;
    assert_eq!(
        (sentinel.sequence, sentinel.conversation_id.as_str()),
        (10, "sentinel-0")
    );

    // The CLI printed every event once, across the restart.
    let seqs = printed_sequences(&mut printed, 10).await;
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    watch.kill().await.unwrap();
}

#[tokio::test]
async fn a_subscriber_away_while_100_alerts_fire_gets_all_100_once() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let mut feed = server.alerts().await;
    let away = feed.subscribe_alerts(resume(None)).await.unwrap();
    drop(away);
    angry_calls(&mut client, "away", 100).await;

    let mut back = feed
        .subscribe_alerts(resume(Some(0)))
        .await
        .unwrap()
        .into_inner();
    let mut conversations = HashSet::new();
    for expected in 1..=100u64 {
        let a = next_alert(&mut back).await;
        assert_eq!(a.sequence, expected);
        assert_eq!(
            (a.state(), a.severity()),
            (pb::AlertState::Raised, pb::Severity::Critical)
        );
        assert!(
            conversations.insert(a.conversation_id.clone()),
            "twice: {a:?}"
        );
    }
    assert_eq!(conversations.len(), 100);
    angry_calls(&mut client, "sentinel", 1).await;
    let next = next_alert(&mut back).await;
    assert_eq!(
        (next.sequence, next.conversation_id.as_str()),
        (101, "sentinel-0")
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_subscriber_slows_neither_scoring_nor_other_subscribers() {
    let mut config = config();
    config.alerts.subscriber_buffer = 8;
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let mut feed = server.alerts().await;
    // Subscribed, never read until the end: its buffers fill after a few alerts.
    let mut slow = feed
        .subscribe_alerts(resume(None))
        .await
        .unwrap()
        .into_inner();
    let mut fast = feed
        .subscribe_alerts(resume(None))
        .await
        .unwrap()
        .into_inner();
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        for _ in 0..100 {
            seqs.push(next_alert(&mut fast).await.sequence);
        }
        seqs
    });
    // Scoring finishes (every result back) while the slow subscriber reads nothing.
    angry_calls(&mut client, "load", 100).await;
    assert_eq!(reader.await.unwrap(), (1..=100).collect::<Vec<_>>());
    // The slow one then gets everything too (from its transport buffers and, once it fell more
    // than the 8-event ring behind, from the log: `alerts::hub` tests that path directly).
    let mut seqs = Vec::new();
    while seqs.len() < 100 {
        seqs.push(next_alert(&mut slow).await.sequence);
    }
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn history_paging_filters_and_acknowledgement() {
    // Supervisors' events alone (see above), so that sequences are 1, 2, 3...
    let mut config = config();
    config.assist.enabled = false;
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let mut feed = server.alerts().await;
    let mut live = feed
        .subscribe_alerts(resume(None))
        .await
        .unwrap()
        .into_inner();
    let mut turns = conversation(ESCALATING, "hist-1");
    for t in &mut turns {
        t.context.get_or_insert_with(Default::default).queue = "billing".into();
    }
    stream_all(&mut client, turns).await;
    angry_calls(&mut client, "other", 2).await;

    let all = feed
        .list_alerts(pb::ListAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let seqs: Vec<u64> = all.alerts.iter().map(|a| a.sequence).collect();
    assert_eq!(seqs, [5, 4, 3, 2, 1], "newest first");
    assert_eq!(all.next_before_sequence, 0);

    let billing = |page_size, before_sequence| pb::ListAlertsRequest {
        queues: vec!["billing".into()],
        page_size,
        before_sequence,
        ..Default::default()
    };
    let page1 = feed.list_alerts(billing(2, 0)).await.unwrap().into_inner();
    let states: Vec<_> = page1.alerts.iter().map(|a| a.state()).collect();
    assert_eq!(
        states,
        [pb::AlertState::Resolved, pb::AlertState::Escalated]
    );
    let page2 = feed
        .list_alerts(billing(2, page1.next_before_sequence))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.alerts.len(), 1);
    assert_eq!(page2.alerts[0].state(), pb::AlertState::Raised);
    let alert_id = page2.alerts[0].alert_id.clone();
    let future = feed
        .list_alerts(pb::ListAlertsRequest {
            since: Some((std::time::SystemTime::now() + Duration::from_secs(60)).into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(future.alerts.is_empty());

    let ack = feed
        .acknowledge_alert(pb::AcknowledgeAlertRequest {
            alert_id: alert_id.clone(),
            supervisor: "sam".into(),
            note: "calling the customer back".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            ack.sequence,
            ack.state(),
            ack.acknowledged_by.as_str(),
            ack.alert_id.as_str()
        ),
        (6, pb::AlertState::Acknowledged, "sam", alert_id.as_str())
    );
    assert_eq!(ack.context.as_ref().unwrap().queue, "billing");
    let again = feed
        .acknowledge_alert(pb::AcknowledgeAlertRequest {
            alert_id: alert_id.clone(),
            supervisor: "kim".into(),
            note: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.sequence, again.acknowledged_by.as_str()),
        (6, "sam"),
        "first ack stands"
    );
    // Live subscribers see the acknowledgement as an event.
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(next_alert(&mut live).await);
    }
    assert_eq!(seen[5].state(), pb::AlertState::Acknowledged);

    let err = feed
        .acknowledge_alert(pb::AcknowledgeAlertRequest {
            alert_id: "al-nope".into(),
            supervisor: "sam".into(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = feed
        .acknowledge_alert(pb::AcknowledgeAlertRequest {
            alert_id,
            supervisor: " ".into(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("supervisor"), "{err:?}");
    let err = feed
        .list_alerts(pb::ListAlertsRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("page_size"), "{err:?}");
    let err = feed
        .subscribe_alerts(resume(Some(99)))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    let mut from_five = feed
        .subscribe_alerts(resume(Some(5)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_alert(&mut from_five).await.sequence, 6);
    server.stop().await.unwrap();
}
