//! Alerts from real conversations through the real server: the escalating sample warns, escalates
//! and resolves exactly once; a calm call raises nothing; the cooldown holds; filters route.

mod common;

use common::{TestServer, config, conversation, next_alert, stream_all};
use emotion_service::pb;
use emotion_service::pb::alert_feed_client::AlertFeedClient;
use tonic::transport::Channel;

const ESCALATING: &str = "examples/escalating-call.jsonl";
const CALM: &str = "examples/calm-call.jsonl";

async fn subscribe(
    client: &mut AlertFeedClient<Channel>,
    request: pb::SubscribeAlertsRequest,
) -> tonic::Streaming<pb::Alert> {
    client.subscribe_alerts(request).await.unwrap().into_inner()
}

fn in_queue(mut turns: Vec<pb::TurnRequest>, queue: &str) -> Vec<pb::TurnRequest> {
    for t in &mut turns {
        t.context.get_or_insert_with(Default::default).queue = queue.into();
    }
    turns
}

/// (state, severity) of the next three alerts, which must all belong to `conversation_id`.
async fn incident(
    stream: &mut tonic::Streaming<pb::Alert>,
    conversation_id: &str,
) -> Vec<(pb::AlertState, pb::Severity)> {
    let mut got = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let a = next_alert(stream).await;
        assert_eq!(a.conversation_id, conversation_id, "{a:?}");
        ids.push(a.alert_id.clone());
        got.push((a.state(), a.severity()));
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one incident, one alert_id: {ids:?}"
    );
    got
}

const WARN_ESCALATE_RESOLVE: [(pb::AlertState, pb::Severity); 3] = [
    (pb::AlertState::Raised, pb::Severity::Warning),
    (pb::AlertState::Escalated, pb::Severity::Critical),
    (pb::AlertState::Resolved, pb::Severity::Critical),
];

#[tokio::test]
async fn escalating_call_warns_then_escalates_then_resolves_and_calm_call_raises_nothing() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let mut feed = server.alerts().await;
    let mut alerts = subscribe(&mut feed, Default::default()).await;

    let calm = stream_all(&mut client, conversation(CALM, "calm-1")).await;
    assert!(
        calm.iter()
            .all(|r| r.error.is_none() && r.alert_level() == pb::Severity::None)
    );
    let results = stream_all(&mut client, conversation(ESCALATING, "esc-1")).await;
    assert!(results.iter().all(|r| r.error.is_none()));

    let first = next_alert(&mut alerts).await;
    assert_eq!(
        first.conversation_id, "esc-1",
        "the calm call must not alert: {first:?}"
    );
    assert_eq!((first.state(), first.severity()), WARN_ESCALATE_RESOLVE[0]);
    assert_eq!(first.kind, "rolling_valence");
    assert!((first.threshold - (-0.35)).abs() < 1e-6);
    assert!(first.rolling_valence <= -0.35);
    assert!(!first.evidence.is_empty() && first.evidence.last().unwrap().turn_id == first.turn_id);
    assert!(first.model_version.starts_with("goemotions-minilm-l6@"));
    let context = first.context.clone().unwrap();
    assert_eq!(
        (context.tenant.as_str(), context.queue.as_str()),
        ("acme", "billing")
    );
    // The turn that raised it reports the alert level.
    let trigger = results.iter().find(|r| r.turn_id == first.turn_id).unwrap();
    assert_eq!(trigger.alert_level(), pb::Severity::Warning);

    let second = next_alert(&mut alerts).await;
    let third = next_alert(&mut alerts).await;
    for a in [&second, &third] {
        assert_eq!(
            (a.conversation_id.as_str(), a.alert_id.as_str()),
            ("esc-1", first.alert_id.as_str())
        );
    }
    assert_eq!(
        (second.state(), second.severity()),
        WARN_ESCALATE_RESOLVE[1]
    );
    assert_eq!((third.state(), third.severity()), WARN_ESCALATE_RESOLVE[2]);
    assert!(first.sequence < second.sequence && second.sequence < third.sequence);
    assert!(
        third.rolling_valence > -0.35 + 0.1,
        "resolves only above threshold + hysteresis"
    );
    assert_eq!(results.last().unwrap().alert_level(), pb::Severity::None);

    // Nothing else was raised for either call: the next alert is a new conversation's.
    stream_all(&mut client, conversation(ESCALATING, "sentinel")).await;
    assert_eq!(next_alert(&mut alerts).await.conversation_id, "sentinel");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn cooldown_holds_and_is_what_holds_back_a_second_alert() {
    for (cooldown_secs, second_pass_alerts) in [(300, false), (0, true)] {
        let mut cfg = config();
        cfg.alerts.cooldown_secs = cooldown_secs;
        let server = TestServer::start(cfg).await;
        let mut client = server.client().await;
        let mut feed = server.alerts().await;
        let mut alerts = subscribe(&mut feed, Default::default()).await;

        stream_all(&mut client, conversation(ESCALATING, "again")).await;
        assert_eq!(incident(&mut alerts, "again").await, WARN_ESCALATE_RESOLVE);
        // The same call relapses: the sample's turns once more, later turn ids.
        let relapse: Vec<_> = conversation(ESCALATING, "again")
            .into_iter()
            .map(|mut t| {
                t.turn_id += 100;
                t
            })
            .collect();
        stream_all(&mut client, relapse).await;
        stream_all(&mut client, conversation(ESCALATING, "sentinel")).await;
        let next = next_alert(&mut alerts).await;
        if second_pass_alerts {
            assert_eq!(
                (next.conversation_id.as_str(), next.state()),
                ("again", pb::AlertState::Raised)
            );
        } else {
            assert_eq!(
                next.conversation_id, "sentinel",
                "cooldown {cooldown_secs}s: {next:?}"
            );
        }
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn filtered_subscribers_see_their_queue_and_every_subscriber_sees_every_match() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let mut feed = server.alerts().await;
    let queue = |q: &str| pb::SubscribeAlertsRequest {
        queues: vec![q.into()],
        ..Default::default()
    };
    let mut billing = subscribe(&mut feed, queue("billing")).await;
    let mut accounts = subscribe(&mut feed, queue("accounts")).await;
    let mut critical = subscribe(
        &mut feed,
        pb::SubscribeAlertsRequest {
            min_severity: pb::Severity::Critical.into(),
            ..Default::default()
        },
    )
    .await;
    let mut all_a = subscribe(&mut feed, Default::default()).await;
    let mut all_b = subscribe(&mut feed, Default::default()).await;

    for (id, q) in [
        ("b-1", "billing"),
        ("a-1", "accounts"),
        ("b-2", "billing"),
        ("a-2", "accounts"),
    ] {
        stream_all(&mut client, in_queue(conversation(ESCALATING, id), q)).await;
    }
    for id in ["b-1", "b-2"] {
        assert_eq!(incident(&mut billing, id).await, WARN_ESCALATE_RESOLVE);
    }
    for id in ["a-1", "a-2"] {
        assert_eq!(incident(&mut accounts, id).await, WARN_ESCALATE_RESOLVE);
    }
    for id in ["b-1", "a-1", "b-2", "a-2"] {
        let a = next_alert(&mut critical).await;
        let b = next_alert(&mut critical).await;
        assert_eq!(
            (a.conversation_id.as_str(), a.state()),
            (id, pb::AlertState::Escalated)
        );
        assert_eq!(
            (b.conversation_id.as_str(), b.state()),
            (id, pb::AlertState::Resolved)
        );
    }
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..12 {
        seen_a.push(next_alert(&mut all_a).await.sequence);
        seen_b.push(next_alert(&mut all_b).await.sequence);
    }
    assert_eq!(seen_a, seen_b);
    assert!(seen_a.windows(2).all(|w| w[0] < w[1]));
    server.stop().await.unwrap();
}
