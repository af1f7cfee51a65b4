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
        let log = Arc::new(JetStreamAlertLog::open(cluster, &config).unwrap());
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

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_share_one_alert_stream() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let start = || {
        let mut config = common::config();
        config.cluster = cluster_config(&nats);
        TestServer::start(config)
    };
    // Started together, as replicas of a deployment are: they race to create the stream.
    let (mut one, mut two) = (start().await, start().await);
    one.ready().await;
    two.ready().await;
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
