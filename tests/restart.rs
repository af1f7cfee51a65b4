//! Live conversation state survives a restart: after kill -9 (and after a graceful stop) the
//! next turn continues the rolling score, an open incident resolves with its original alert id, a
//! re-sent turn that was scored before is answered as a duplicate, and the dashboard's at-risk
//! list and heatmap come back.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::browser::http;
use common::{ChildServer, conversation, next_alert, stream_all};
use emotion_service::pb;
use emotion_service::pb::alert_feed_client::AlertFeedClient;
use emotion_service::pb::emotion_analysis_client::EmotionAnalysisClient;
use emotion_service::persist::StateStore;
use emotion_service::persist::sqlite::SqliteStateStore;
use serde_json::Value;

const ESCALATING: &str = "examples/escalating-call.jsonl";

/// Waits until the state file holds `conversation_id` as of `turn_id` (what the persister
/// thread writes every interval), reading it as the next start will.
async fn saved_through(state: &Path, conversation_id: &str, turn_id: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let saved = SqliteStateStore::open(state).and_then(|s| s.load());
        let last = saved.ok().and_then(|s| {
            s.conversations
                .iter()
                .find(|(id, _)| id == conversation_id)
                .and_then(|(_, c)| c.last_turn_id())
        });
        if last == Some(turn_id) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never saved through turn {turn_id}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sigterm(server: &ChildServer) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incident_open_at_kill_9_resolves_with_its_alert_id_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(
        "EMOTION__ALERT_LOG__PATH",
        dir.path().join("alerts.sqlite3").display().to_string(),
    )];
    let state = dir.path().join("state.sqlite3");
    let (addr, web) = (common::free_addr(), common::free_addr());
    let server = ChildServer::spawn_with_web(addr, Some(web), &env).await;
    let turns = conversation(ESCALATING, "restart-1");
    let mut feed = AlertFeedClient::new(server.channel().await);
    let mut live = feed
        .subscribe_alerts(pb::SubscribeAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut client = EmotionAnalysisClient::new(server.channel().await);
    // Up to turn 16: WARNING raised at 12, CRITICAL at 14, still open (customer rolling ~ -0.7).
    let before = stream_all(&mut client, turns[..16].to_vec()).await;
    let raised = next_alert(&mut live).await;
    assert_eq!(raised.state(), pb::AlertState::Raised);
    let escalated = next_alert(&mut live).await;
    assert_eq!(
        (escalated.state(), &escalated.alert_id),
        (pb::AlertState::Escalated, &raised.alert_id)
    );
    let last_customer = before
        .iter()
        .rev()
        .find(|r| r.speaker() == pb::Speaker::Customer)
        .unwrap()
        .clone();
    assert_eq!(last_customer.turn_id, 16);
    assert_eq!(last_customer.alert_level(), pb::Severity::Critical);
    let (_, at_risk) = http(web.port(), "GET", "/api/conversations", &[], None)
        .await
        .unwrap();
    saved_through(&state, "restart-1", 16).await;
    server.kill_9();

    let server = ChildServer::spawn_with_web(addr, Some(web), &env).await;
    let mut client = EmotionAnalysisClient::new(server.channel().await);
    let view = client
        .get_conversation(pb::GetConversationRequest {
            conversation_id: "restart-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.last_turn_id, 16);
    assert_eq!(view.alert_level(), pb::Severity::Critical);
    let customer = view
        .speakers
        .iter()
        .find(|s| s.speaker() == pb::Speaker::Customer)
        .unwrap();
    assert_eq!(customer.rolling_valence, last_customer.rolling_valence);
    assert_eq!(view.turns.len(), 16);
    // A re-send of a turn scored before the crash is answered from the restored history.
    let again = stream_all(&mut client, vec![turns[15].clone()]).await;
    assert!(again[0].duplicate, "{:?}", again[0]);
    assert_eq!(again[0].rolling_valence, last_customer.rolling_valence);
    assert_eq!(again[0].emotions, last_customer.emotions);
    // The at-risk list and the heatmap are back.
    let (status, after) = http(web.port(), "GET", "/api/conversations", &[], None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let listed = |body: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(body).unwrap();
        v["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["conversation_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&after), listed(&at_risk));
    let (_, heatmap) = http(web.port(), "GET", "/api/heatmap", &[], None)
        .await
        .unwrap();
    assert!(heatmap.contains("billing"), "{heatmap}");

    // The rest of the call: the next customer turn continues the rolling score (a fresh start
    // would make it that turn's own, clearly positive, valence), and the incident resolves
    // under the alert id it was raised with.
    let mut feed = AlertFeedClient::new(server.channel().await);
    let mut resumed = feed
        .subscribe_alerts(pb::SubscribeAlertsRequest {
            after_sequence: Some(escalated.sequence),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rest = stream_all(&mut client, turns[16..].to_vec()).await;
    assert!(rest.iter().all(|r| r.error.is_none() && !r.duplicate));
    let turn_18 = rest.iter().find(|r| r.turn_id == 18).unwrap();
    assert!(
        turn_18.rolling_valence < turn_18.valence - 0.2,
        "rolling {} continues from {} instead of restarting at the turn's valence {}",
        turn_18.rolling_valence,
        last_customer.rolling_valence,
        turn_18.valence
    );
    let resolved = next_alert(&mut resumed).await;
    assert_eq!(
        (resolved.state(), &resolved.alert_id),
        (pb::AlertState::Resolved, &raised.alert_id),
        "{resolved:?}"
    );
    server.kill_9();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        (
            "EMOTION__ALERT_LOG__PATH",
            dir.path().join("alerts.sqlite3").display().to_string(),
        ),
        // Far longer than the test: only the save at shutdown can have written the last turn.
        ("EMOTION__STATE__PERSIST_INTERVAL_MS", "60000".to_string()),
    ];
    let addr = common::free_addr();
    let server = ChildServer::spawn_at(addr, &env).await;
    let turns = conversation(ESCALATING, "graceful-1");
    let mut client = EmotionAnalysisClient::new(server.channel().await);
    let before = stream_all(&mut client, turns[..15].to_vec()).await;
    sigterm(&server);
    server.wait();

    let server = ChildServer::spawn_at(addr, &env).await;
    let mut client = EmotionAnalysisClient::new(server.channel().await);
    let again = stream_all(&mut client, vec![turns[14].clone()]).await;
    assert!(again[0].duplicate, "{:?}", again[0]);
    assert_eq!(again[0].rolling_valence, before[14].rolling_valence);
    let next = stream_all(&mut client, vec![turns[15].clone()]).await;
    assert!(
        !next[0].duplicate && next[0].error.is_none(),
        "{:?}",
        next[0]
    );
    server.kill_9();
}

#[tokio::test(flavor = "multi_thread")]
async fn state_behind_the_alert_log_is_put_right_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        (
            "EMOTION__ALERT_LOG__PATH",
            dir.path().join("alerts.sqlite3").display().to_string(),
        ),
        // Far longer than the test: after the graceful stop nothing more is saved, so the kill -9
        // below loses every turn the second server scored (the worst a crash can do).
        ("EMOTION__STATE__PERSIST_INTERVAL_MS", "60000".to_string()),
    ];
    let addr = common::free_addr();
    let turns = conversation(ESCALATING, "behind-1");
    let server = ChildServer::spawn_at(addr, &env).await;
    let mut client = EmotionAnalysisClient::new(server.channel().await);
    stream_all(&mut client, turns[..11].to_vec()).await;
    sigterm(&server);
    server.wait(); // saved through turn 11, before any alert

    let server = ChildServer::spawn_at(addr, &env).await;
    let mut feed = AlertFeedClient::new(server.channel().await);
    let mut live = feed
        .subscribe_alerts(pb::SubscribeAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut client = EmotionAnalysisClient::new(server.channel().await);
    stream_all(&mut client, turns[11..16].to_vec()).await;
    let raised = next_alert(&mut live).await;
    let escalated = next_alert(&mut live).await;
    assert_eq!(
        (raised.state(), escalated.state(), &escalated.alert_id),
        (
            pb::AlertState::Raised,
            pb::AlertState::Escalated,
            &raised.alert_id
        )
    );
    server.kill_9();

    let server = ChildServer::spawn_at(addr, &env).await;
    let mut client = EmotionAnalysisClient::new(server.channel().await);
    let view = client
        .get_conversation(pb::GetConversationRequest {
            conversation_id: "behind-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.last_turn_id, 11, "the state lost turns 12-16");
    assert_eq!(
        view.alert_level(),
        pb::Severity::Critical,
        "but the incident the log holds is open"
    );
    let mut feed = AlertFeedClient::new(server.channel().await);
    let mut resumed = feed
        .subscribe_alerts(pb::SubscribeAlertsRequest {
            after_sequence: Some(escalated.sequence),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The platform re-sends what went unanswered; the call goes on to its calm end. No second
    // RAISED for the same incident: the next event is its RESOLVED, under the original id.
    let rest = stream_all(&mut client, turns[11..].to_vec()).await;
    assert!(rest.iter().all(|r| r.error.is_none()), "{rest:?}");
    let next = next_alert(&mut resumed).await;
    assert_eq!(
        (next.state(), &next.alert_id),
        (pb::AlertState::Resolved, &raised.alert_id),
        "{next:?}"
    );
    server.kill_9();
}
