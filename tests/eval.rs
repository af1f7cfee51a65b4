//! `eval` goes through the serving inference path and reproduces the training report.

mod common;

use std::path::PathBuf;

use emotion_service::metrics::Metrics;
use emotion_service::{Config, eval, inference};

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[tokio::test(flavor = "multi_thread")]
async fn eval_on_goemotions_test_matches_the_training_report() {
    let data = common::goemotions("test.tsv");
    let config = Config::default();
    let batcher = tokio::task::spawn_blocking(move || inference::start(&config, Metrics::new()))
        .await
        .unwrap()
        .unwrap();
    let examples = eval::read_tsv(&data, batcher.spec().labels.len()).unwrap();
    let report = eval::evaluate(&batcher, &examples).await.unwrap();

    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("models/goemotions-minilm-l6/metrics.json")).unwrap(),
    )
    .unwrap();
    let test = &metrics["results"]["int8"]["test"];
    let expected_macro = test["macro_f1"].as_f64().unwrap();
    let expected_micro = test["micro_f1"].as_f64().unwrap();
    assert_eq!(report.texts, 5427);
    assert!(
        (report.macro_f1 - expected_macro).abs() <= 0.005,
        "macro-F1 {} vs the training report's {expected_macro}",
        report.macro_f1
    );
    assert!(
        (report.micro_f1 - expected_micro).abs() <= 0.005,
        "micro-F1 {} vs {expected_micro}",
        report.micro_f1
    );
    let supports: Vec<u64> = test["support"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(
        report.labels.iter().map(|l| l.support).collect::<Vec<_>>(),
        supports
    );
}

#[test]
fn bad_label_ids_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.tsv");
    std::fs::write(&file, "fine\t1\ttx\nbroken\t99\tty\n").unwrap();
    let err = eval::read_tsv(&file, 28).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("99"), "{err}");
}
