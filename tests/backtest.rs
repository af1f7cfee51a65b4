//! Backtest: recorded conversations through the serving path, offline; what other rules change.

mod common;

use emotion_service::backtest::replay;
use emotion_service::metrics::Metrics;
use emotion_service::{Config, client, inference};

#[tokio::test(flavor = "multi_thread")]
async fn replays_the_samples_and_shows_what_other_rules_change() {
    let mut turns = Vec::new();
    for f in [
        "calm-call",
        "escalating-call",
        "escalation-request",
        "repetition",
    ] {
        turns.extend(
            client::read_conversation_file(&common::repo_path(&format!("examples/{f}.jsonl")))
                .unwrap(),
        );
    }
    let config = Config::default();
    let c = config.clone();
    let batcher = tokio::task::spawn_blocking(move || inference::start(&c, Metrics::new()))
        .await
        .unwrap()
        .unwrap();
    let base = replay("base", &config, &batcher, &turns).await.unwrap();
    assert!(base.rejected.is_empty());
    let fired: Vec<(&str, u64, &str, &str)> = base
        .alerts
        .iter()
        .map(|a| {
            (
                a.conversation_id.as_str(),
                a.turn_id,
                a.kind.as_str(),
                a.state.as_str(),
            )
        })
        .collect();
    assert_eq!(
        fired,
        [
            ("call-escalating-1", 12, "rolling_valence", "raised"),
            ("call-escalating-1", 14, "rolling_valence", "escalated"),
            ("call-escalating-1", 18, "rolling_valence", "resolved"),
            ("call-escalation-1", 4, "escalation_request", "raised"),
            ("call-repetition-1", 6, "repetition", "raised"),
        ]
    );

    let mut stricter = config.clone();
    stricter.alerts.warning_threshold = -0.25;
    stricter.alerts.critical_threshold = -0.5;
    stricter.triggers.escalation.enabled = false;
    let other = replay("stricter", &stricter, &batcher, &turns)
        .await
        .unwrap();
    let diff = base.diff(&other);
    assert!(diff.contains("raised: turn 12 -> 10"), "{diff}");
    assert!(diff.contains("- no longer: call-escalation-1"), "{diff}");
    assert!(diff.contains("unchanged: 1"), "{diff}");
}
