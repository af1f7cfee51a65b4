//! Cluster mode on a real 3-node NATS JetStream cluster (`tests/common/nats.rs`): the alert
//! stream numbers every event once, every replica follows it in the same order, a re-published
//! decision is not a second event, a replica that starts late resumes from a sequence, one NATS
//! node of three can die; and two real servers share one alert stream (a supervisor on either sees
//! both servers' alerts under the same sequences, acknowledges on one, sees it on the other).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::nats::NatsCluster;
use common::{TestServer, angry_call, next_alert, stream_all};
use emotion_service::alerts::hub::Delivery;
use emotion_service::alerts::subscribers::SubscriberLimits;
use emotion_service::alerts::{AlertFilter, AlertHub, AlertLog, Subscription};
use emotion_service::cluster::{Cluster, JetStreamAlertLog};
use emotion_service::config::{AlertLogConfig, ClusterConfig};
use emotion_service::metrics::Metrics;
use emotion_service::pb;

fn cluster_config(nats: &NatsCluster) -> ClusterConfig {
    ClusterConfig {
        nats: nats.urls(),
        replicas: 3,
        op_timeout_ms: 10_000,
        ..Default::default()
    }
}

/// One replica's alert side: a connection, the stream's log with its own local copy, a hub.
struct Replica {
    log: Arc<JetStreamAlertLog>,
    hub: AlertHub,
    _copy: tempfile::TempDir,
}

async fn replica(nats: &NatsCluster) -> Replica {
    let cluster = Arc::new(Cluster::connect(&cluster_config(nats)).await.unwrap());
    let copy = tempfile::tempdir().unwrap();
    let config = AlertLogConfig {
        path: copy.path().join("alerts.sqlite3"),
        ..Default::default()
    };
    tokio::task::spawn_blocking(move || {
        let log = Arc::new(JetStreamAlertLog::open(cluster, &config, None).unwrap());
        let hub = AlertHub::new(
            log.clone(),
            64,
            SubscriberLimits::new(100, 100),
            Metrics::new(),
        )
        .unwrap();
        Replica {
            log,
            hub,
            _copy: copy,
        }
    })
    .await
    .unwrap()
}

fn event(conversation: &str, turn_id: u64) -> pb::Alert {
    pb::Alert {
        alert_id: format!("al-{conversation}-{turn_id}"),
        conversation_id: conversation.into(),
        context: Some(pb::Context {
            tenant: "acme".into(),
            queue: if turn_id.is_multiple_of(2) {
                "billing"
            } else {
                ""
            }
            .into(),
            ..Default::default()
        }),
        severity: pb::Severity::Warning.into(),
        state: pb::AlertState::Raised.into(),
        kind: "rolling_valence".into(),
        turn_id,
        ..Default::default()
    }
}

async fn take(sub: &mut Subscription, n: usize) -> Vec<pb::Alert> {
    let mut out = Vec::new();
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(20), sub.next()).await {
            Ok(Delivery::Alert(a)) => out.push((*a).clone()),
            Ok(other) => panic!("{other:?}"),
            Err(_) => panic!("no alert within 20 s after {} of {n}", out.len()),
        }
    }
    out
}

fn subscribe(hub: &AlertHub, after: Option<u64>) -> Subscription {
    hub.subscribe(AlertFilter::default(), after, None).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_alert_stream_numbers_once_and_every_replica_follows_it_in_order() {
    let Some(mut nats) = NatsCluster::start(3).await else {
        return;
    };
    let a = replica(&nats).await;
    let b = replica(&nats).await;
    let mut on_a = subscribe(&a.hub, None);
    let mut on_b = subscribe(&b.hub, None);

    // Both replicas publish, interleaved.
    let mut published = Vec::new();
    for i in 0..10u64 {
        let (hub, name) = if i.is_multiple_of(2) {
            (&a.hub, "a")
        } else {
            (&b.hub, "b")
        };
        published.push(hub.publish(event(name, i)).await);
    }
    let mut sequences: Vec<u64> = published.iter().map(|e| e.sequence).collect();
    sequences.sort();
    assert_eq!(
        sequences,
        (1..=10).collect::<Vec<_>>(),
        "one number each, no gap"
    );
    let seen_a = take(&mut on_a, 10).await;
    let seen_b = take(&mut on_b, 10).await;
    assert_eq!(
        seen_a.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>(),
        "in sequence order on the replica"
    );
    assert_eq!(
        seen_a, seen_b,
        "the same events in the same order on both replicas"
    );
    for p in &published {
        assert_eq!(
            &seen_a[p.sequence as usize - 1],
            &**p,
            "delivered as logged"
        );
    }

    // The same decision published again (a retried publish, or another replica re-deciding the
    // turn after a failover) is the first event, not a new one.
    let again = {
        let log = a.log.clone();
        tokio::task::spawn_blocking(move || log.append(&event("a", 4)).unwrap())
            .await
            .unwrap()
    };
    assert_eq!(
        again, published[4].sequence,
        "de-duplicated by its idempotency key"
    );
    let next = b.hub.publish(event("b", 11)).await;
    assert_eq!(next.sequence, 11);
    assert_eq!(
        take(&mut on_a, 1).await[0].sequence,
        11,
        "no duplicate delivered"
    );
    assert_eq!(take(&mut on_b, 1).await[0].sequence, 11);

    // History on either replica holds both replicas' events.
    let history = {
        let log = b.log.clone();
        tokio::task::spawn_blocking(move || {
            log.query(&emotion_service::alerts::log::Query {
                filter: AlertFilter {
                    queues: vec!["billing".into()],
                    ..Default::default()
                },
                limit: 100,
                ..Default::default()
            })
            .unwrap()
        })
        .await
        .unwrap()
    };
    assert_eq!(
        history
            .iter()
            .map(|e| e.conversation_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "a", "a", "a", "a"],
        "billing (even turns) were all replica a's; {history:?}"
    );

    // A replica that starts now, with an empty copy, resumes from a sequence.
    let late = replica(&nats).await;
    let mut resumed = subscribe(&late.hub, Some(4));
    let rest = take(&mut resumed, 7).await;
    assert_eq!(
        rest,
        seen_a[4..]
            .iter()
            .cloned()
            .chain([next.as_ref().clone()])
            .collect::<Vec<_>>()
    );

    // One NATS node of three dies: publishing and following go on.
    nats.nodes[0].kill_9();
    let killed = std::time::Instant::now();
    let mut after_kill = Vec::new();
    for i in 0..4u64 {
        let hub = if i.is_multiple_of(2) {
            &a.hub
        } else {
            &late.hub
        };
        after_kill.push(hub.publish(event("k", i)).await.sequence);
        if i == 0 {
            eprintln!(
                "first publish after a NATS node died: {} ms",
                killed.elapsed().as_millis()
            );
        }
    }
    assert_eq!(
        after_kill,
        [12, 13, 14, 15],
        "logged in order after the node died"
    );
    assert_eq!(
        take(&mut on_b, 4)
            .await
            .iter()
            .map(|e| e.sequence)
            .collect::<Vec<_>>(),
        [12, 13, 14, 15]
    );
    assert_eq!(take(&mut resumed, 4).await.len(), 4);
    eprintln!(
        "every replica had the 4 events {} ms after the node died",
        killed.elapsed().as_millis()
    );
    nats.restart(0).await;
}

fn replica_config(nats: &NatsCluster) -> emotion_service::Config {
    let mut config = common::config();
    config.cluster = cluster_config(nats);
    config
}

/// Two servers in cluster mode, started together as replicas of a deployment are (they race to
/// create the stream and the bucket), each ready.
async fn two_replicas(nats: &NatsCluster) -> (TestServer, TestServer) {
    // In one test process both would be named after the same host and pid.
    let named = |id: &str| {
        let mut c = replica_config(nats);
        c.cluster.replica_id = id.into();
        c
    };
    let mut one = TestServer::start(named("replica-one")).await;
    let mut two = TestServer::start(named("replica-two")).await;
    one.ready().await;
    two.ready().await;
    (one, two)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_share_one_alert_stream() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (one, two) = two_replicas(&nats).await;
    let mut feed_one = one.alerts().await;
    let mut feed_two = two.alerts().await;
    let live = |feed: &mut emotion_service::pb::alert_feed_client::AlertFeedClient<_>| {
        let mut feed = feed.clone();
        async move {
            feed.subscribe_alerts(pb::SubscribeAlertsRequest::default())
                .await
                .unwrap()
                .into_inner()
        }
    };
    let (mut live_one, mut live_two) = (live(&mut feed_one).await, live(&mut feed_two).await);

    stream_all(&mut one.client().await, angry_call("on-one")).await;
    let first_one = next_alert(&mut live_one).await;
    let first_two = next_alert(&mut live_two).await;
    assert_eq!(first_one, first_two);
    assert_eq!(first_one.conversation_id, "on-one");
    stream_all(&mut two.client().await, angry_call("on-two")).await;
    let second_one = next_alert(&mut live_one).await;
    assert_eq!(second_one, next_alert(&mut live_two).await);
    assert_eq!(second_one.conversation_id, "on-two");
    assert_eq!(second_one.sequence, first_one.sequence + 1);

    // Acknowledged on the other server than the one that raised it: seen on both.
    let ack = feed_two
        .acknowledge_alert(pb::AcknowledgeAlertRequest {
            alert_id: first_one.alert_id.clone(),
            supervisor: "sam".into(),
            note: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.state(), pb::AlertState::Acknowledged);
    assert_eq!(ack.sequence, second_one.sequence + 1);
    assert_eq!(next_alert(&mut live_one).await, ack);
    assert_eq!(next_alert(&mut live_two).await, ack);
    let history = feed_one
        .list_alerts(pb::ListAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        history
            .alerts
            .iter()
            .map(|a| a.sequence)
            .collect::<Vec<_>>(),
        [ack.sequence, second_one.sequence, first_one.sequence],
        "newest first, both servers' events"
    );
    one.stop().await.unwrap();
    two.stop().await.unwrap();
}

/// The dashboard's at-risk list on a replica: (conversation id, customer rolling, turns), riskiest
/// first, and how many matched.
async fn listed(server: &TestServer) -> (Vec<(String, f64, u64)>, u64) {
    let body = server.web_json("/api/conversations").await;
    let rows = body["conversations"].as_array().unwrap();
    let rows = rows
        .iter()
        .map(|r| {
            (
                r["conversation_id"].as_str().unwrap().to_string(),
                r["customer_rolling"].as_f64().unwrap_or(f64::NAN),
                r["turns"].as_u64().unwrap(),
            )
        })
        .collect();
    (rows, body["matched"].as_u64().unwrap())
}

/// The customer turns the dashboard's heatmap counts on a replica, per queue.
async fn heatmap_turns(server: &TestServer) -> std::collections::BTreeMap<String, u64> {
    let body = server.web_json("/api/heatmap").await;
    let mut turns = std::collections::BTreeMap::new();
    for row in body["rows"].as_array().unwrap() {
        let n: u64 = (row["cells"].as_array().unwrap().iter())
            .map(|c| c["turns"].as_u64().unwrap())
            .sum();
        *turns
            .entry(row["queue"].as_str().unwrap().to_string())
            .or_default() += n;
    }
    turns
}

/// The dashboard on either replica lists both replicas' conversations, riskiest first, and its
/// heatmap counts each customer turn once, whichever replica scored it; a conversation ended on
/// one replica leaves the list on both.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_on_any_replica_shows_the_whole_fleet() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (one, two) = two_replicas(&nats).await;
    let in_queue = |mut turns: Vec<pb::TurnRequest>, queue: &str| {
        for t in &mut turns {
            t.context = Some(
                pb::Context {
                    queue: queue.into(),
                    ..Default::default()
                }
                .into(),
            );
        }
        turns
    };
    stream_all(
        &mut one.client().await,
        in_queue(angry_call("fleet-angry"), "billing"),
    )
    .await;
    let calm = vec![
        common::turn(
            "fleet-calm",
            1,
            pb::Speaker::Customer,
            "Thank you so much, that solved it. I am really happy with the help.",
        ),
        common::turn(
            "fleet-calm",
            2,
            pb::Speaker::Agent,
            "Glad to hear it! Anything else I can do?",
        ),
    ];
    stream_all(&mut two.client().await, in_queue(calm, "billing")).await;

    // Each replica applied one of the two; both list both, the angry one first, alike.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (on_one, on_two) = loop {
        let (on_one, on_two) = (listed(&one).await, listed(&two).await);
        // Each replica learns of the other's commits a moment after them: equal once both know.
        if (on_one.1 == 2 && on_one == on_two) || std::time::Instant::now() > deadline {
            break (on_one, on_two);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(on_one.1, 2, "replica one lists {on_one:?}");
    assert_eq!(on_one, on_two, "the same list on both replicas");
    let ids: Vec<&str> = on_one.0.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids, ["fleet-angry", "fleet-calm"], "riskiest first");
    assert!(on_one.0[0].1 < 0.0 && on_one.0[1].1 > 0.0, "{on_one:?}");
    assert_eq!((on_one.0[0].2, on_one.0[1].2), (2, 2), "turns");

    // Three customer turns in billing on each heatmap: none counted twice, none missed.
    for server in [&one, &two] {
        assert_eq!(
            heatmap_turns(server).await,
            [("billing".to_string(), 3)].into()
        );
    }
    // A replica started now has missed every announcement: it reads the bucket, and lists and
    // counts the same.
    let mut late = replica_config(&nats);
    late.cluster.replica_id = "replica-late".into();
    let mut late = TestServer::start(late).await;
    late.ready().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let on_late = loop {
        let on_late = listed(&late).await;
        if on_late.1 == 2 || std::time::Instant::now() > deadline {
            break on_late;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(on_late, on_one, "a replica started later lists the same");
    assert_eq!(
        heatmap_turns(&late).await,
        [("billing".to_string(), 3)].into()
    );
    late.stop().await.unwrap();

    // Ended on replica two (which never saw it): gone from both lists.
    two.client()
        .await
        .end_conversation(pb::EndConversationRequest {
            conversation_id: "fleet-angry".into(),
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (on_one, on_two) = (listed(&one).await, listed(&two).await);
        if on_one.1 == 1 && on_two.1 == 1 {
            assert_eq!(on_one.0[0].0, "fleet-calm");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still listed: {on_one:?} {on_two:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    one.stop().await.unwrap();
    two.stop().await.unwrap();
}

/// What decides an alert event, without what only its replica knows (ids, sequence, time).
fn decision(a: &pb::Alert) -> (String, i32, i32, u64) {
    (a.kind.clone(), a.state, a.severity, a.turn_id)
}

async fn decisions(server: &TestServer, conversation_id: &str) -> Vec<(String, i32, i32, u64)> {
    let mut history = server
        .alerts()
        .await
        .list_alerts(pb::ListAlertsRequest {
            conversation_id: conversation_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .alerts;
    history.reverse(); // oldest first
    history.iter().map(decision).collect()
}

/// A result in cluster mode against one process's for the same turn.
fn same_as_one_process(got: &pb::TurnResult, want: &pb::TurnResult, duplicate: bool) {
    assert!(got.error.is_none(), "turn {}: {:?}", got.turn_id, got.error);
    assert_eq!(got.turn_id, want.turn_id);
    assert_eq!(got.duplicate, duplicate, "turn {}", got.turn_id);
    assert!(
        (got.rolling_valence - want.rolling_valence).abs() < 1e-4,
        "turn {}: rolling {} in the cluster, {} on one process",
        got.turn_id,
        got.rolling_valence,
        want.rolling_valence
    );
    assert_eq!(got.alert_level, want.alert_level, "turn {}", got.turn_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_moves_between_replicas_with_one_continuous_state() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (one, two) = two_replicas(&nats).await;
    let solo = TestServer::start(common::config()).await;

    // The reference: the whole call on one process, on one stream.
    let turns = common::conversation("examples/escalating-call.jsonl", "moving");
    let expected = stream_all(&mut solo.client().await, turns.clone()).await;
    assert!(expected.iter().all(|r| r.error.is_none()), "{expected:?}");

    // The same call with its turns alternating between the replicas (a new stream each time,
    // as a client that reconnects through a load balancer would): each replica's memory is
    // stale every time, so every turn after the first conflicts and is re-applied on the
    // committed state.
    let (mut c1, mut c2) = (one.client().await, two.client().await);
    let mut results = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        let client = if i % 2 == 0 { &mut c1 } else { &mut c2 };
        results.extend(stream_all(client, vec![turn.clone()]).await);
    }
    assert_eq!(results.len(), expected.len());
    for (got, want) in results.iter().zip(&expected) {
        same_as_one_process(got, want, false);
    }

    // The last turn re-sent to a third replica that has never seen the conversation (the
    // client's answer was lost in a failover): a duplicate, answered as committed, not scored
    // again; and an earlier one re-sent to a replica whose memory has it.
    let mut three = TestServer::start(replica_config(&nats)).await;
    three.ready().await;
    let last = turns.len() - 1;
    let resent = stream_all(&mut three.client().await, vec![turns[last].clone()]).await;
    assert!(resent[0].duplicate, "{resent:?}");
    assert!(resent[0].error.is_none(), "{resent:?}");
    assert_eq!(resent[0].rolling_valence, results[last].rolling_valence);
    let again = stream_all(&mut c1, vec![turns[3].clone()]).await;
    assert!(again[0].duplicate, "{again:?}");
    assert_eq!(again[0].rolling_valence, results[3].rolling_valence);

    // A client that re-sends a whole conversation, pipelined on one stream, to a replica that
    // knows only its start: the turns scored elsewhere come back as committed, once, and the
    // rest go on from there, as on one process.
    let piped = |t: &pb::TurnRequest| {
        let mut t = t.clone();
        t.conversation_id = "pipelined".into();
        t
    };
    stream_all(&mut c1, turns[..4].iter().map(piped).collect()).await;
    let again = stream_all(&mut c2, turns.iter().map(piped).collect()).await;
    assert_eq!(again.len(), turns.len());
    for (i, (got, want)) in again.iter().zip(&expected).enumerate() {
        same_as_one_process(got, want, i < 4);
    }

    // Alerts: the same decisions as one process, once each, on either replica's history.
    let want = decisions(&solo, "moving").await;
    assert!(!want.is_empty(), "the call raises alerts");
    assert_eq!(decisions(&one, "moving").await, want);
    assert_eq!(decisions(&two, "moving").await, want);

    // GetConversation on either replica: every turn, whoever scored it.
    for server in [&one, &two] {
        let view = server
            .client()
            .await
            .get_conversation(pb::GetConversationRequest {
                conversation_id: "moving".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(view.last_turn_id, turns.last().unwrap().turn_id);
    }
    // Ended on one replica: gone on the other.
    let summary = c1
        .end_conversation(pb::EndConversationRequest {
            conversation_id: "moving".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.turns as usize, turns.len());
    let gone = c2
        .get_conversation(pb::GetConversationRequest {
            conversation_id: "moving".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    one.stop().await.unwrap();
    two.stop().await.unwrap();
    three.stop().await.unwrap();
    solo.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handoff_on_one_replica_briefs_the_agent_once_across_replicas() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (one, two) = two_replicas(&nats).await;
    let id = "handed-over";
    let mut turns = common::conversation("examples/bot-handoff.jsonl", id);
    let later = turns.split_off(6);
    let mut c1 = one.client().await;
    stream_all(&mut c1, turns).await;
    // The router calls the other replica, which has never seen the conversation.
    let brief = two
        .assist()
        .await
        .handoff(pb::HandoffRequest {
            conversation_id: id.into(),
            agent_id: "agent-sam".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((brief.bot_turns, brief.customer_turns), (3, 3));
    let told = common::guidance_after(&one, "agent-sam", 0, "mood_turned").await;
    let kinds = |events: &[pb::Alert]| events.iter().map(|e| e.kind.clone()).collect::<Vec<_>>();
    assert_eq!(kinds(&told), ["handoff_brief", "mood_turned"], "{told:#?}");
    // The agent's turns go to the first replica, whose memory predates the hand-off: its commit
    // conflicts, it re-applies them on the committed state, and the agent is not briefed again.
    stream_all(&mut c1, later).await;
    let rest = common::guidance_after(&two, "agent-sam", told[1].sequence, "mood_recovered").await;
    assert_eq!(
        kinds(&rest),
        ["repeated_question", "mood_recovered"],
        "{rest:#?}"
    );
    assert_eq!(rest[1].alert_id, told[1].alert_id);
    one.stop().await.unwrap();
    two.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_events_a_dead_replica_committed_but_never_published_are_swept_out() {
    use emotion_service::cluster::conversations::JetStreamConversations;
    use emotion_service::conversation::SharedConversations;
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let mut server = TestServer::start(replica_config(&nats)).await;
    server.ready().await;
    stream_all(&mut server.client().await, angry_call("published")).await;
    let logged = |server: &TestServer, id: &'static str| {
        let url = format!("http://{}", server.addr);
        async move {
            all_alerts(url)
                .await
                .into_iter()
                .filter(|a| a.conversation_id == id)
                .map(|a| decision(&a))
                .collect::<Vec<_>>()
        }
    };
    // The replica's copy of the stream follows the stream a moment after the results.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let published = loop {
        let published = logged(&server, "published").await;
        if !published.is_empty() || std::time::Instant::now() > deadline {
            break published;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!published.is_empty(), "the angry call raises alerts");

    // A replica that dies between commit and publish, played by hand: "orphan"'s state is
    // committed with alert events in its outbox, marked, and never published; no client sends
    // it another turn or ends it.
    let cluster = Cluster::connect(&cluster_config(&nats)).await.unwrap();
    let bucket = JetStreamConversations::open(
        &cluster,
        Duration::from_secs(3_600),
        Default::default(),
        false,
    )
    .await
    .unwrap();
    let (committed, _) = bucket.load("published").await.unwrap();
    let mut state = committed.expect("the call's state is committed");
    let decided = |kind, severity, turn_id| emotion_service::alerts::Alert {
        alert_id: format!("al-orphan-{turn_id}"),
        conversation_id: "orphan".into(),
        context: Default::default(),
        severity,
        state: emotion_service::alerts::AlertState::Raised,
        kind,
        rolling_valence: -0.5,
        threshold: -0.3,
        evidence: Vec::new(),
        model_version: "test".into(),
        turn_id,
        detail: String::new(),
        dominant_emotions: Vec::new(),
        trend_start: 0.0,
        trend_now: -0.5,
        suggestion: String::new(),
        brief: None,
    };
    use emotion_service::alerts::{AlertKind, Severity};
    state.outbox = vec![
        decided(AlertKind::RollingValence, Severity::Warning, 3),
        decided(AlertKind::EscalationRequest, Severity::Critical, 4),
    ];
    let want: Vec<_> = state
        .outbox
        .iter()
        .map(|a| decision(&emotion_service::grpc::convert::alert(a)))
        .collect();
    bucket.mark_outbox("orphan").await.unwrap();
    bucket.commit("orphan", &state, 0).await.unwrap();
    let committed_at = std::time::Instant::now();
    assert!(
        logged(&server, "orphan").await.is_empty(),
        "nothing published it yet"
    );

    // The sweeper publishes them once the mark is old enough, exactly once, and clears it.
    let deadline = committed_at + Duration::from_secs(60);
    let swept = loop {
        let got = logged(&server, "orphan").await;
        if !got.is_empty() || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("swept after {:?}: {swept:?}", committed_at.elapsed());
    assert!(committed_at.elapsed() >= emotion_service::conversation::OUTBOX_SWEEP_AGE);
    assert_eq!(swept, want, "every event of the outbox, once");
    tokio::time::sleep(Duration::from_secs(6)).await; // another sweep: nothing twice
    assert_eq!(logged(&server, "orphan").await, want);
    let marks = bucket.stale_outboxes(Duration::ZERO).await.unwrap();
    assert!(marks.is_empty(), "{marks:?}");
    server.stop().await.unwrap();
}

/// Every event of the log, oldest first (ListAlerts, page by page).
async fn all_alerts(url: String) -> Vec<pb::Alert> {
    let mut feed = pb::alert_feed_client::AlertFeedClient::connect(url)
        .await
        .unwrap();
    let mut all = Vec::new();
    let mut before = 0;
    loop {
        let page = feed
            .list_alerts(pb::ListAlertsRequest {
                page_size: 100,
                before_sequence: before,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.alerts);
        if page.next_before_sequence == 0 {
            break;
        }
        before = page.next_before_sequence;
    }
    all.reverse();
    all
}

fn soak(
    server: String,
    failover: Vec<String>,
    texts: &Arc<Vec<String>>,
) -> impl Future<Output = emotion_service::loadgen::soak::SoakReport> + use<> {
    let config = emotion_service::loadgen::soak::SoakConfig {
        server: emotion_service::client::Server::new(server),
        conversations: 200,
        streams: 6,
        duration: Duration::from_secs(120),
        rate: 60.0,
        cancel_every: None,
        turns_per_conversation: 6,
        report_every: Duration::from_secs(5),
        drain: Duration::from_secs(60),
        failover: failover
            .into_iter()
            .map(emotion_service::client::Server::new)
            .collect(),
        total_turns: Some(1200),
        run_id: Some("failover".into()),
        customers: 0,
    };
    let texts = texts.clone();
    async move {
        emotion_service::loadgen::soak::run(config, texts)
            .await
            .unwrap()
    }
}

/// The failover test: 3 NATS nodes and 3 replicas (real processes), 200 conversations
/// over 6 streams spread over the replicas; one replica is killed (kill -9) after a third of the
/// turns and one NATS node after two thirds; the load generator re-sends unanswered turns on
/// another replica. Every turn is answered once, the alert stream is gap-free and the same on
/// a gRPC supervisor (who moves from the killed replica to a third one, resuming from its last
/// sequence) and an SSE reader, and holds exactly the events one process decides for the same
/// input.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_fail_over_without_losing_a_turn_or_an_alert() {
    use futures::StreamExt;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let Some(mut nats) = NatsCluster::start(3).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let servers = nats
        .urls()
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(",");
    let free = common::free_addr;
    let mut replicas = Vec::new();
    for i in 0..3 {
        let copy = dir.path().join(format!("r{i}"));
        std::fs::create_dir_all(&copy).unwrap();
        let env = [
            ("EMOTION__CLUSTER__NATS", format!("[{servers}]")),
            ("EMOTION__CLUSTER__REPLICAS", "3".into()),
            // Turns wait out a NATS leader election (8-9 s seen here) rather than fail.
            ("EMOTION__CLUSTER__OP_TIMEOUT_MS", "30000".into()),
            ("EMOTION__CLUSTER__REPLICA_ID", format!("r{i}")),
            (
                "EMOTION__ALERT_LOG__PATH",
                copy.join("alerts.sqlite3").display().to_string(),
            ),
        ];
        let web = (i == 2).then(free);
        replicas.push(Some(
            common::ChildServer::spawn_with_web(free(), web, &env).await,
        ));
    }
    let url = |i: usize| replicas[i].as_ref().unwrap().url();
    let (url0, url1, url2) = (url(0), url(1), url(2));
    let web2 = replicas[2].as_ref().unwrap().web_addr.unwrap();

    // The texts of every example call, English and Chinese.
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(common::repo_path("examples")).unwrap() {
        let path = entry.unwrap().path();
        for t in emotion_service::client::read_conversation_file(&path).unwrap() {
            texts.push(String::from_utf8_lossy(&t.text).into_owned());
        }
    }
    texts.sort();
    let texts = Arc::new(texts);

    // The reference: the same input on one process (first: the cluster run is then compared
    // with it once every replica's copy of the stream has caught up).
    let key = |a: &pb::Alert| {
        (
            a.conversation_id.clone(),
            a.turn_id,
            a.kind.clone(),
            a.state,
            a.severity,
        )
    };
    let mut want: Vec<_> = {
        let solo = TestServer::start(common::config()).await;
        let solo_url = format!("http://{}", solo.addr);
        let reference = soak(solo_url.clone(), vec![], &texts).await;
        assert_eq!(
            (reference.answered, reference.errors),
            (1200, 0),
            "{reference:?}"
        );
        let decided = all_alerts(solo_url).await.iter().map(key).collect();
        solo.stop().await.unwrap();
        decided
    };
    want.sort();

    // A supervisor on the replica that will die, who moves to another when it does, and from
    // there (told to, when the NATS node dies) to a third, each time resuming from the last
    // sequence it saw; an SSE reader on the third replica throughout.
    let supervisor = Arc::new(std::sync::Mutex::new(Vec::<pb::Alert>::new()));
    let moves = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let move_now = Arc::new(tokio::sync::Notify::new());
    let supervising = {
        let urls = [url1.clone(), url0.clone(), url2.clone()];
        let (seen, moves, move_now) = (supervisor.clone(), moves.clone(), move_now.clone());
        tokio::spawn(async move {
            let mut after = None;
            for (i, url) in urls.into_iter().enumerate() {
                let mut feed = pb::alert_feed_client::AlertFeedClient::connect(url)
                    .await
                    .unwrap();
                let mut live = feed
                    .subscribe_alerts(pb::SubscribeAlertsRequest {
                        after_sequence: after,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                loop {
                    tokio::select! {
                        next = live.next() => match next {
                            Some(Ok(a)) => {
                                after = Some(a.sequence);
                                seen.lock().unwrap().push(a);
                            }
                            _ => break, // its replica died
                        },
                        () = move_now.notified(), if i == 1 => break,
                    }
                }
                moves.lock().unwrap().push(after.unwrap_or(0));
            }
        })
    };
    let sse = Arc::new(std::sync::Mutex::new(Vec::<(u64, serde_json::Value)>::new()));
    let sse_reader = {
        let sse = sse.clone();
        tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(web2).await.unwrap();
            stream
                .write_all(b"GET /api/alerts/stream?after=0 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
                .await
                .unwrap();
            let mut lines = BufReader::new(stream).lines();
            let (mut id, mut kind) = (None, None);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse::<u64>().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ")
                    && kind.as_deref() == Some("alert")
                {
                    sse.lock()
                        .unwrap()
                        .push((id.unwrap(), serde_json::from_str(v).unwrap()));
                }
            }
        })
    };

    // The load, and the deaths: a replica after a third of the turns (1,200 at 60/s), a NATS
    // node after two thirds.
    let load = tokio::spawn(soak(url0.clone(), vec![url1.clone(), url2.clone()], &texts));
    tokio::time::sleep(Duration::from_secs_f64(20.0 / 3.0)).await;
    replicas[1].take().unwrap().kill_9();
    eprintln!("replica r1 killed");
    tokio::time::sleep(Duration::from_secs_f64(20.0 / 3.0)).await;
    nats.nodes[1].kill_9();
    move_now.notify_one();
    eprintln!("NATS node 1 killed");
    let report = load.await.unwrap();
    eprintln!("cluster run: {report:?}");
    assert_eq!(report.sent, 1200);
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.duplicated, 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.answered, 1200);
    assert_eq!(report.conversations_ended, 200);
    assert!(
        report.reconnects >= 2,
        "the killed replica's streams moved: {report:?}"
    );

    // The alert stream: gap-free, one event per decision, the same on every reader.
    // r2's copy of the stream may still be catching up (its consumer may have been on the
    // NATS node that died): wait for at least the reference's number of events. Its follower
    // re-creates a dead consumer within seconds of the stream moving on (each request to the
    // stream is cut at 2 s); the limit is for a slow CI machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let logged = loop {
        let logged = all_alerts(url2.clone()).await;
        if logged.len() >= want.len() || std::time::Instant::now() > deadline {
            break logged;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let n = logged.len() as u64;
    eprintln!(
        "r2's copy of the stream: {n} events; one process decided {}",
        want.len()
    );
    assert!(n > 0, "the calls raise alerts");
    assert_eq!(
        logged.iter().map(|a| a.sequence).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "contiguous sequences"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (supervisor.lock().unwrap().len() as u64) < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    supervising.abort();
    let moves = moves.lock().unwrap().clone();
    eprintln!(
        "the supervisor moved r1 -> r0 after sequence {}, r0 -> r2 after {}; {n} events in all",
        moves[0], moves[1]
    );
    assert!(
        moves[1] > moves[0],
        "it saw events on r0 before moving on: {moves:?}"
    );
    assert_eq!(
        *supervisor.lock().unwrap(),
        logged,
        "the supervisor got exactly every event, once, in order"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (sse.lock().unwrap().len() as u64) < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sse_reader.abort();
    let sse = sse.lock().unwrap().clone();
    assert_eq!(
        sse.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "the SSE reader on r2 saw the same sequence"
    );
    for ((_, json), a) in sse.iter().zip(&logged) {
        assert_eq!(json["alert_id"], a.alert_id.as_str());
    }

    let mut got: Vec<_> = logged.iter().map(key).collect();
    got.sort();
    if got != want {
        // Said as the difference: the full lists are too long to read in a CI log.
        let missing: Vec<_> = want.iter().filter(|k| !got.contains(k)).collect();
        let extra: Vec<_> = got.iter().filter(|k| !want.contains(k)).collect();
        panic!(
            "the cluster decided what one process decides: {} events against {}; \
             missing {missing:?}; extra {extra:?}",
            got.len(),
            want.len()
        );
    }
}

/// The server's own health status (grpc.health.v1, service "").
/// The AlertFeed service's health on `server`.
async fn alert_feed(server: &TestServer) -> i32 {
    let mut client = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: "emotion.v1.AlertFeed".into(),
        })
        .await
        .map_or(0, |r| r.into_inner().status)
}

async fn health(server: &TestServer) -> i32 {
    let mut client = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    client
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .map_or(0, |r| r.into_inner().status)
}

async fn health_becomes(server: &TestServer, status: i32, within: Duration) -> Duration {
    let start = std::time::Instant::now();
    while health(server).await != status {
        assert!(
            start.elapsed() < within,
            "health not {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// NATS gone entirely: the replica says NOT_SERVING (a load balancer stops sending to it), a
/// turn sent anyway is answered UNAVAILABLE, not scored into state it could not keep; once NATS
/// is back it serves again and the conversation goes on from its committed state.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_without_nats_says_not_serving_and_answers_unavailable() {
    const SERVING: i32 = 1;
    const NOT_SERVING: i32 = 2;
    let Some(mut nats) = NatsCluster::start(3).await else {
        return;
    };
    let mut config = replica_config(&nats);
    config.cluster.op_timeout_ms = 2_000;
    let mut server = TestServer::start(config).await;
    server.ready().await;
    assert_eq!(health(&server).await, SERVING);
    let mut client = server.client().await;
    let turn = |id: u64| {
        common::turn(
            "cut-off",
            id,
            pb::Speaker::Customer,
            "My parcel is late again.",
        )
    };
    let first = stream_all(&mut client, vec![turn(1)]).await;
    assert!(first[0].error.is_none(), "{first:?}");

    for node in &mut nats.nodes {
        node.kill_9();
    }
    let took = health_becomes(&server, NOT_SERVING, Duration::from_secs(15)).await;
    eprintln!("NOT_SERVING {} ms after NATS died", took.as_millis());
    let refused = stream_all(&mut client, vec![turn(2)]).await;
    let error = refused[0].error.as_ref().expect("not scored");
    assert_eq!(error.code, tonic::Code::Unavailable as i32, "{error:?}");
    assert!(error.message.contains("conversation state"), "{error:?}");

    nats.restart_all().await;
    let took = health_becomes(&server, SERVING, Duration::from_secs(60)).await;
    eprintln!("SERVING {} ms after NATS came back", took.as_millis());
    let resent = stream_all(&mut client, vec![turn(2)]).await;
    assert!(resent[0].error.is_none(), "{resent:?}");
    assert!(!resent[0].duplicate, "scored now, not before: {resent:?}");
    let view = client
        .get_conversation(pb::GetConversationRequest {
            conversation_id: "cut-off".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        view.turns.iter().map(|t| t.turn_id).collect::<Vec<_>>(),
        [1, 2],
        "turn 1 kept through the outage"
    );
    server.stop().await.unwrap();
}

async fn serving_model(server: &TestServer) -> String {
    let mut admin = pb::model_admin_client::ModelAdminClient::new(server.channel().await);
    let m = admin
        .get_model(pb::GetModelRequest {})
        .await
        .unwrap()
        .into_inner();
    format!("{}@{}", m.name, m.version)
}

async fn serves_within(server: &TestServer, tag: &str, within: Duration) -> Duration {
    let start = std::time::Instant::now();
    while serving_model(server).await != tag {
        assert!(
            start.elapsed() < within,
            "{tag} not serving within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    start.elapsed()
}

/// LoadModel on one replica reaches the other (through the object store and `model.active`),
/// which scores with it; RollbackModel on the other takes both back.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_loaded_on_one_replica_serves_on_every_replica() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (one, two) = two_replicas(&nats).await;
    let original = serving_model(&one).await;
    assert_eq!(serving_model(&two).await, original);
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("v2");
    common::shipped_copy(&candidate, "fleet-v2", None);
    let mut admin = pb::model_admin_client::ModelAdminClient::new(one.channel().await);
    let loaded = admin
        .load_model(pb::LoadModelRequest {
            path: candidate.display().to_string(),
            skip_quality_gate: false,
        })
        .await
        .unwrap()
        .into_inner();
    let v2 = format!("{}@{}", loaded.name, loaded.version);
    assert!(v2.ends_with("@fleet-v2"), "{v2}");
    let took = serves_within(&two, &v2, Duration::from_secs(60)).await;
    eprintln!(
        "the other replica served {v2} {} ms after LoadModel returned",
        took.as_millis()
    );
    let scored = stream_all(&mut two.client().await, angry_call("after-swap")).await;
    assert!(scored.iter().all(|r| r.model_version == v2), "{scored:?}");
    // GetModel on either replica shows the fleet: the active model, and both replicas serving
    // it by their own report.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let fleet = loop {
        let info = admin
            .get_model(pb::GetModelRequest {})
            .await
            .unwrap()
            .into_inner();
        let both = info.fleet.len() == 2 && info.fleet.iter().all(|r| r.serving == v2);
        if both || std::time::Instant::now() > deadline {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "{}",
        emotion_service::client::admin::model_info(fleet.clone())
    );
    assert_eq!(fleet.fleet_active, v2);
    assert_eq!(fleet.fleet.len(), 2, "{:?}", fleet.fleet);
    for r in &fleet.fleet {
        assert_eq!(r.serving, v2, "{r:?}");
        assert_eq!(r.sha256, loaded.sha256, "{r:?}");
        assert!(r.error.is_empty(), "{r:?}");
        assert!(!r.replica_id.is_empty());
    }
    assert_ne!(fleet.fleet[0].replica_id, fleet.fleet[1].replica_id);

    // Rolled back on the other replica: both serve the original again.
    let mut admin_two = pb::model_admin_client::ModelAdminClient::new(two.channel().await);
    let back = admin_two
        .rollback_model(pb::RollbackModelRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(format!("{}@{}", back.name, back.version), original);
    serves_within(&one, &original, Duration::from_secs(60)).await;
    one.stop().await.unwrap();
    two.stop().await.unwrap();
}

/// NATS lost the alert stream under a running replica (deleted and created again, as a replica
/// started on wiped storage does): this replica's copy holds sequences that now name other
/// events. Without a restart, the replica empties its copy and follows the new stream from 1: a
/// live supervisor is told to start again (OUT_OF_RANGE), a resubscription from 0 gets exactly the
/// new stream's events, history no longer shows the lost ones, and AlertFeed serves; a replica
/// started afterwards agrees.
#[tokio::test(flavor = "multi_thread")]
async fn an_alert_stream_created_again_under_a_replica_is_rebuilt_in_place() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    use tonic_health::pb::health_check_response::ServingStatus;
    const SERVING: i32 = ServingStatus::Serving as i32;
    let mut old = replica_config(&nats);
    old.cluster.replica_id = "replica-old".into();
    let mut old = TestServer::start(old).await;
    old.ready().await;
    let mut live = old.feed(None).await;
    stream_all(&mut old.client().await, angry_call("before-the-loss")).await;
    let before = next_alert(&mut live).await;
    assert_eq!(before.conversation_id, "before-the-loss");
    assert_eq!(alert_feed(&old).await, SERVING);
    // The dashboard's live feed too: its event kinds, in order.
    let sse = {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut stream = tokio::net::TcpStream::connect(old.web_addr).await.unwrap();
        stream
            .write_all(
                b"GET /api/alerts/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
            )
            .await
            .unwrap();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(kind) = line.strip_prefix("event: ") {
                    return kind.to_string();
                }
            }
            "(the feed ended without an event)".to_string()
        })
    };

    let client = async_nats::connect(nats.urls()[0].as_str()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let config = (js.get_stream("EMOTION_ALERTS").await.unwrap())
        .cached_info()
        .config
        .clone();
    js.delete_stream("EMOTION_ALERTS").await.unwrap();
    js.create_stream(config).await.unwrap();
    // Another replica (here, this test) publishes to the new stream at once: it is longer than
    // the old copy before the replica notices, so the copy's length cannot be what tells.
    for turn in 1..=3 {
        // Dated now: an undated event is older than the retention a replica applies at start.
        let mut alert = event("published-elsewhere", turn);
        alert.created_at = Some(std::time::SystemTime::now().into());
        let payload = prost::Message::encode_to_vec(&alert);
        (js.publish("emotion.alerts.acme.billing", payload.into())
            .await
            .unwrap())
        .await
        .unwrap();
    }

    // The live subscriber is told, within seconds.
    let start = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(15), live.message())
        .await
        .expect("the live feed told of the new stream within 15 s");
    let status = ended.expect_err("a status, not an alert nor the end of the feed");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("after_sequence 0"), "{status:?}");
    println!("live subscriber reset after {:?}", start.elapsed());
    let kind = tokio::time::timeout(Duration::from_secs(15), sse).await;
    assert_eq!(kind.expect("the SSE feed said something").unwrap(), "reset");
    let start = std::time::Instant::now();
    while alert_feed(&old).await != SERVING {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "AlertFeed not serving again within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(health(&old).await, SERVING, "turns are still scored");

    // Resubscribed from 0 as told; new events are numbered from 1 and reach it, and the history
    // holds only the new stream's events.
    let mut again = old.feed(Some(0)).await;
    stream_all(&mut old.client().await, angry_call("after-the-loss")).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let a = next_alert(&mut again).await;
        got.push((a.sequence, a.conversation_id));
    }
    let mut want: Vec<_> = (1..=3)
        .map(|s| (s, "published-elsewhere".to_string()))
        .collect();
    want.push((4, "after-the-loss".to_string()));
    assert_eq!(got, want);
    async fn history(server: &TestServer) -> Vec<(u64, String)> {
        let alerts = (server.alerts().await)
            .list_alerts(pb::ListAlertsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .alerts;
        (alerts.iter())
            .map(|a| (a.sequence, a.conversation_id.clone()))
            .collect()
    }
    let on_old = history(&old).await;
    want.reverse(); // newest first
    assert_eq!(on_old, want);

    let mut new = replica_config(&nats);
    new.cluster.replica_id = "replica-new".into();
    let mut new = TestServer::start(new).await;
    new.ready().await;
    assert_eq!(alert_feed(&new).await, SERVING);
    assert_eq!(history(&new).await, on_old);
    old.stop().await.unwrap();
    new.stop().await.unwrap();
}

mod customers {
    //! Customer memory in a cluster: one memory for the fleet, every customer's part of what NATS
    //! stores sealed with their key, and an erasure made on one replica that reaches every
    //! replica and leaves the customer's words nowhere, not even in NATS's files.

    use std::path::Path;
    use std::time::Duration;

    use super::common::nats::NatsCluster;
    use super::common::smartwatch::{self, CUSTOMER_ID, FILE, WORDS, by_id, by_key};
    use super::common::{TestServer, contacts, files_holding};
    use super::replica_config;
    use emotion_service::pb;
    use emotion_service::pb::customer_memory_client::CustomerMemoryClient;
    use tonic::Code;

    async fn start(nats: &NatsCluster, id: &str, dir: &Path) -> TestServer {
        let mut c = replica_config(nats);
        c.cluster.replica_id = id.into();
        c.alert_log.path = dir.join("alerts.sqlite3");
        let mut server = TestServer::start(c).await;
        server.ready().await;
        server
    }

    async fn memory(server: &TestServer) -> CustomerMemoryClient<tonic::transport::Channel> {
        CustomerMemoryClient::new(server.channel().await)
    }

    /// Polls `check` every 100 ms until it holds, for at most `within`.
    async fn eventually<F, Fut>(what: &str, within: Duration, check: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match check().await {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("{what} within {within:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Every file under `dir` holding one of the customer's words, their id or `key`.
    fn traces(dir: &Path, key: &str) -> Vec<String> {
        (WORDS.iter().copied().chain([CUSTOMER_ID, key]))
            .flat_map(|needle| {
                files_holding(dir, needle)
                    .into_iter()
                    .map(move |f| format!("{needle} in {f}"))
            })
            .collect()
    }

    /// The events of `conversation_id` as `server` lists them.
    async fn events(server: &TestServer, conversation_id: &str) -> Vec<pb::Alert> {
        server
            .alerts()
            .await
            .list_alerts(pb::ListAlertsRequest {
                conversation_id: conversation_id.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .alerts
    }

    /// The silent list on `server` 8 days from now: the customers' keys.
    async fn silent(server: &TestServer) -> Vec<String> {
        let message = pb::ListSilentCustomersRequest {
            as_of: Some((std::time::SystemTime::now() + Duration::from_secs(8 * 86_400)).into()),
            ..Default::default()
        };
        (memory(server).await.list_silent_customers(message).await)
            .unwrap()
            .into_inner()
            .customers
            .into_iter()
            .map(|c| c.customer_key)
            .collect()
    }

    fn blank(a: &pb::Alert) -> bool {
        a.context.as_ref().is_none_or(|c| c.customer_key.is_empty())
            && a.evidence.iter().all(|e| e.excerpt.is_empty())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn customer_memory_is_one_for_the_fleet_and_an_erasure_reaches_every_replica() {
        let Some(nats) = NatsCluster::start(3).await else {
            return;
        };
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        // What the replicas announce to each other's fleet views (core NATS, not stored).
        let announced = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
        let listener = async_nats::connect(nats.urls()[0].as_str()).await.unwrap();
        let prefix = super::cluster_config(&nats).prefix;
        let mut sub = listener
            .subscribe(format!("{prefix}.fleet.>"))
            .await
            .unwrap();
        listener.flush().await.unwrap();
        let heard = announced.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(m) = sub.next().await {
                heard.lock().unwrap().push(m.payload.to_vec());
            }
        });
        let one = start(&nats, "replica-one", dirs[0].path()).await;
        let two = start(&nats, "replica-two", dirs[1].path()).await;

        // Two contacts on one replica, the third (ending 算了，不折腾了) on the other.
        let first_two = ["watch-contact-1", "watch-contact-2"];
        contacts(FILE, one.channel().await, None, &first_two).await;
        contacts(FILE, two.channel().await, None, &["watch-contact-3"]).await;
        let mut key = String::new();
        for server in [&one, &two] {
            let record = {
                let mut client = memory(server).await;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                loop {
                    let got = client
                        .get_customer(pb::GetCustomerRequest {
                            customer: Some(by_id()),
                        })
                        .await;
                    match got {
                        Ok(r) if r.get_ref().contacts == 3 => break r.into_inner(),
                        _ if tokio::time::Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        other => panic!("three contacts on every replica: {other:?}"),
                    }
                }
            };
            let last = &record.recent[0];
            assert_eq!(
                (last.conversation_id.as_str(), last.outcome.as_str()),
                ("watch-contact-3", "resigned")
            );
            assert!(
                key.is_empty() || key == record.customer_key,
                "one pseudonym"
            );
            key = record.customer_key;
        }

        // The silent list on one; called back from the other, off the first one's list.
        assert_eq!(silent(&one).await, [key.clone()]);
        memory(&two)
            .await
            .mark_customer_called(pb::MarkCustomerCalledRequest {
                customer: Some(by_key(&key)),
                called_by: "wang".into(),
            })
            .await
            .unwrap();
        eventually(
            "called back, off every list",
            Duration::from_secs(10),
            || async {
                let left = silent(&one).await;
                left.is_empty().then_some(()).ok_or(format!("{left:?}"))
            },
        )
        .await;

        // A new contact on the other replica raises repeat_contact, seen on the first.
        smartwatch::repeat_contact(&one, &mut two.client().await, &key).await;

        // The replicas' copies hold the customer's words (so the checks below can fail); NATS's
        // files hold the conversations (the scan reads them) but not one word in the clear.
        let before: Vec<String> = dirs.iter().flat_map(|d| traces(d.path(), &key)).collect();
        eprintln!("before the erasure: {before:?}");
        assert!(
            WORDS
                .iter()
                .any(|w| before.iter().any(|t| t.starts_with(w)))
        );
        eventually(
            "the conversations in NATS's files",
            Duration::from_secs(10),
            || async {
                let found = files_holding(nats.store_dir(), "watch-contact-4");
                (!found.is_empty()).then_some(()).ok_or("nowhere".into())
            },
        )
        .await;
        for needle in WORDS.iter().copied().chain([CUSTOMER_ID]) {
            assert_eq!(
                files_holding(nats.store_dir(), needle),
                Vec::<String>::new(),
                "{needle:?} in the clear in NATS's files"
            );
        }
        // Nor the pseudonym, but in the one message the erasure deletes: the link from it to
        // the handle that names the customer in every other stream (and that message's copy in
        // the keys stream's Raft log).
        let linked = files_holding(nats.store_dir(), &key);
        eprintln!("the pseudonym before the erasure: {linked:?}");
        assert!(!linked.is_empty(), "the link is in NATS's files");
        let elsewhere: Vec<_> = (linked.iter())
            .filter(|f| f.contains("/streams/") && !f.contains("CUSTOMER_KEYS"))
            .collect();
        assert!(elsewhere.is_empty(), "the pseudonym in {elsewhere:?}");
        // Nor on the wire between the replicas: the fleet view's announcements of the
        // customer's conversations are sealed with their key.
        let heard = announced.lock().unwrap().clone();
        assert!(heard.len() >= 8, "announcements: {}", heard.len());
        let in_clear = (heard.iter())
            .filter(|m| m.windows(key.len()).any(|w| w == key.as_bytes()))
            .count();
        assert_eq!(in_clear, 0, "of {} announcements", heard.len());

        // Erased on one replica; the live contact is on the other (found through the fleet view).
        smartwatch::erase(&mut memory(&one).await, &key).await;
        let erased_at = tokio::time::Instant::now();
        for (server, dir) in [&one, &two].into_iter().zip(&dirs) {
            let server: &TestServer = server;
            eventually(
                "the erasure on every replica",
                Duration::from_secs(10),
                || async {
                    let known = memory(server)
                        .await
                        .get_customer(pb::GetCustomerRequest {
                            customer: Some(by_key(&key)),
                        })
                        .await;
                    match known {
                        Err(s) if s.code() == Code::NotFound => {}
                        other => return Err(format!("the customer: {other:?}")),
                    }
                    let left = traces(dir.path(), &key);
                    left.is_empty().then_some(()).ok_or(format!("{left:?}"))
                },
            )
            .await;
            let live = server
                .client()
                .await
                .get_conversation(pb::GetConversationRequest {
                    conversation_id: "watch-contact-4".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(live.code(), Code::NotFound, "{live:?}");
            let kept = events(server, "watch-contact-4").await;
            assert!(kept.iter().any(|a| a.kind == "repeat_contact"), "{kept:?}");
            assert!(kept.iter().all(blank), "{kept:?}");
        }

        // A replica that starts now builds its copies from the streams: the events are there,
        // the customer's part of them is not, nor is the customer.
        let dir = tempfile::tempdir().unwrap();
        let three = start(&nats, "replica-three", dir.path()).await;
        for id in first_two
            .iter()
            .chain(&["watch-contact-3", "watch-contact-4"])
        {
            let (theirs, ours) = (events(&one, id).await, events(&three, id).await);
            assert_eq!(theirs.len(), ours.len(), "{id}: the same events");
            assert!(ours.iter().all(blank), "{id}: {ours:?}");
        }
        let unknown = memory(&three)
            .await
            .get_customer(pb::GetCustomerRequest {
                customer: Some(by_key(&key)),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);
        assert_eq!(traces(dir.path(), &key), Vec::<String>::new());
        for server in [one, two, three] {
            server.stop().await.unwrap();
        }

        // The link's message was overwritten in the stream's files at once; its copy in the
        // Raft log goes when NATS compacts the log (every two minutes or so): then no file of
        // NATS's names the customer.
        let streams: Vec<_> = (files_holding(nats.store_dir(), &key).into_iter())
            .filter(|f| f.contains("/streams/"))
            .collect();
        assert_eq!(
            streams,
            Vec::<String>::new(),
            "the pseudonym after the erasure"
        );
        loop {
            let left = files_holding(nats.store_dir(), &key);
            if left.is_empty() {
                eprintln!(
                    "the pseudonym in no file of NATS's {:.0} s after the erasure",
                    erased_at.elapsed().as_secs_f64()
                );
                break;
            }
            assert!(
                erased_at.elapsed() < Duration::from_secs(360),
                "the pseudonym still in {left:?} {:?} after the erasure",
                erased_at.elapsed()
            );
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    /// A customer first seen by a version before handles: their key stored under their
    /// pseudonym, which named them everywhere. They are still remembered by every replica (one
    /// started afterwards reads their old-style records), named as before, and erased.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_customer_keyed_by_an_earlier_version_is_remembered_and_erased() {
        let Some(nats) = NatsCluster::start(3).await else {
            return;
        };
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let one = start(&nats, "replica-one", dirs[0].path()).await;
        let client = async_nats::connect(nats.urls()[0].clone()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let keys = js.get_stream("EMOTION_CUSTOMER_KEYS").await.unwrap();
        let last = |stream: async_nats::jetstream::stream::Stream, subject: String| async move {
            stream.get_last_raw_message_by_subject(&subject).await
        };
        let fleet = (last(keys.clone(), "emotion.customer-keys.pseudonym-key".into()).await)
            .unwrap()
            .payload;
        let key = emotion_service::customers::Pseudonymizer::new(&fleet)
            .pseudonym(smartwatch::TENANT, CUSTOMER_ID);
        // As an earlier version stored it: the key itself under the pseudonym.
        js.publish(format!("emotion.customer-keys.{key}"), vec![7u8; 32].into())
            .await
            .unwrap()
            .await
            .unwrap();

        contacts(
            FILE,
            one.channel().await,
            None,
            &["watch-contact-1", "watch-contact-2"],
        )
        .await;
        let customers = js.get_stream("EMOTION_CUSTOMERS").await.unwrap();
        (last(customers.clone(), format!("emotion.customers.{key}")).await)
            .expect("named by their pseudonym, as before");
        let two = start(&nats, "replica-two", dirs[1].path()).await;
        for server in [&one, &two] {
            eventually("two contacts", Duration::from_secs(10), || async {
                let got = memory(server)
                    .await
                    .get_customer(pb::GetCustomerRequest {
                        customer: Some(by_id()),
                    })
                    .await;
                match got {
                    Ok(r) if r.get_ref().contacts == 2 && r.get_ref().customer_key == key => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
        }

        let erased = memory(&two)
            .await
            .delete_customer(pb::DeleteCustomerRequest {
                customer: Some(by_id()),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(erased.contacts_deleted, 2, "{erased:?}");
        let gone = last(keys, format!("emotion.customer-keys.{key}")).await;
        assert!(gone.is_err(), "the key is erased: {gone:?}");
        for (server, dir) in [&one, &two].into_iter().zip(&dirs) {
            let server: &TestServer = server;
            eventually(
                "the erasure on every replica",
                Duration::from_secs(10),
                || async {
                    let left = traces(dir.path(), &key);
                    left.is_empty().then_some(()).ok_or(format!("{left:?}"))
                },
            )
            .await;
            let unknown = memory(server)
                .await
                .get_customer(pb::GetCustomerRequest {
                    customer: Some(by_id()),
                })
                .await
                .unwrap_err();
            assert_eq!(unknown.code(), Code::NotFound);
        }
        for server in [one, two] {
            server.stop().await.unwrap();
        }
    }

    /// A conversation whose replica is killed before its idle sweep ends it: another replica,
    /// which never held it, ends it once the fleet view has seen no change of it for the TTL,
    /// and records it as the customer's contact (before, the bucket expired it unrecorded).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_conversation_whose_replica_died_is_recorded_by_another() {
        use futures::StreamExt;
        let Some(nats) = NatsCluster::start(3).await else {
            return;
        };
        let ttl = 4;
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut c = replica_config(&nats);
        c.cluster.replica_id = "replica-two".into();
        c.alert_log.path = dirs[1].path().join("alerts.sqlite3");
        c.limits.conversation_ttl_secs = ttl;
        let mut two = TestServer::start(c).await;
        two.ready().await;
        let servers = (nats.urls().iter())
            .map(|u| format!("{u:?}"))
            .collect::<Vec<_>>()
            .join(",");
        let env = [
            ("EMOTION__CLUSTER__NATS", format!("[{servers}]")),
            ("EMOTION__CLUSTER__REPLICAS", "3".into()),
            ("EMOTION__CLUSTER__REPLICA_ID", "replica-one".into()),
            ("EMOTION__LIMITS__CONVERSATION_TTL_SECS", ttl.to_string()),
            (
                "EMOTION__ALERT_LOG__PATH",
                dirs[0].path().join("alerts.sqlite3").display().to_string(),
            ),
        ];
        let one = super::common::ChildServer::spawn(&env).await;

        // Two turns of the sample customer's first contact on replica one, not ended.
        let all = emotion_service::client::read_conversation_file(&super::common::repo_path(FILE))
            .unwrap();
        let turns: Vec<_> = (all.into_iter())
            .filter(|t| t.conversation_id == b"watch-contact-1")
            .take(2)
            .collect();
        let channel = tonic::transport::Endpoint::from_shared(one.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = pb::emotion_analysis_client::EmotionAnalysisClient::new(channel);
        let results: Vec<_> = (client.stream_turns(tokio_stream::iter(turns)).await)
            .unwrap()
            .into_inner()
            .collect()
            .await;
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|r| r.as_ref().unwrap().error.is_none()));
        let died = tokio::time::Instant::now();
        one.kill_9();

        eventually(
            "the conversation recorded by the replica still up",
            Duration::from_secs(ttl + 30),
            || async {
                let got = memory(&two)
                    .await
                    .get_customer(pb::GetCustomerRequest {
                        customer: Some(by_id()),
                    })
                    .await;
                match got {
                    Ok(r) if r.get_ref().contacts == 1 => {
                        let last = &r.get_ref().recent[0];
                        assert_eq!(last.conversation_id, "watch-contact-1");
                        Ok(())
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        eprintln!(
            "recorded {:.1} s after its replica died (TTL {ttl} s)",
            died.elapsed().as_secs_f64()
        );
        // Ended in the bucket: no replica serves it as live any more.
        let live = (two.client().await)
            .get_conversation(pb::GetConversationRequest {
                conversation_id: "watch-contact-1".into(),
            })
            .await;
        assert_eq!(live.unwrap_err().code(), Code::NotFound);
        two.stop().await.unwrap();
    }

    /// The silent customers page on one replica, the contacts taken on another, in a real
    /// headless Chromium, with auth off (the default on loopback): the customer who gave up is
    /// on the list, the supervisor gives their name and marks them called, and the other
    /// replica knows who called.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_silent_customers_page_reads_the_fleets_memory_in_a_real_browser() {
        use super::common::browser::Browser;
        use serde_json::json;
        let Some(nats) = NatsCluster::start(3).await else {
            return;
        };
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let one = start(&nats, "replica-one", dirs[0].path()).await;
        let two = start(&nats, "replica-two", dirs[1].path()).await;
        let ids = ["watch-contact-1", "watch-contact-2", "watch-contact-3"];
        contacts(FILE, one.channel().await, None, &ids).await;
        eventually(
            "the customer on the other replica's list",
            Duration::from_secs(10),
            || async {
                let on_two = silent(&two).await;
                (on_two.len() == 1)
                    .then_some(())
                    .ok_or(format!("{on_two:?}"))
            },
        )
        .await;

        let browser = Browser::start().await;
        browser
            .goto(&format!("http://{}/customers?lang=en", two.web_addr))
            .await;
        browser
            .wait_for(
                "the list and the name field (auth off)",
                Duration::from_secs(10),
                "return !document.getElementById('customers').hidden \
                 && !document.getElementById('called-by-label').hidden",
                json!([]),
            )
            .await;
        let row = smartwatch::silent_row_in_a_week(&browser).await;
        assert_eq!(row["outcome"], "resigned");
        assert!(row["text"].as_str().unwrap().contains("watch-contact-3"));

        // Without a name the call-back is not sent: the page says why.
        browser.click("#silent-rows button.called").await;
        let said = browser
            .wait_for(
                "the page asking for a name",
                Duration::from_secs(10),
                "const e = document.getElementById('customers-error').textContent; \
                 return e.includes('Your name') && e",
                json!([]),
            )
            .await;
        eprintln!("{said}");
        browser.type_into("#called-by", "Ming").await;
        browser.click("#silent-rows button.called").await;
        smartwatch::silent_list_empties(&browser, "the list empty after the call-back").await;
        eventually(
            "the call-back known on the replica that took the contacts",
            Duration::from_secs(10),
            || async {
                let record = memory(&one)
                    .await
                    .get_customer(pb::GetCustomerRequest {
                        customer: Some(by_id()),
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                (record.called_by == "Ming")
                    .then_some(())
                    .ok_or(format!("called_by {:?}", record.called_by))
            },
        )
        .await;
        for server in [one, two] {
            server.stop().await.unwrap();
        }
    }
}
