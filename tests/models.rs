//! Model swaps: validated in a child process, atomic under load with zero failed turns, rollback,
//! malformed candidates refused while serving continues, the quality gate, and a second model with
//! another label set and problem type (7 Ekman labels, softmax).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::onnx::{EKMAN, Shape, write_ekman_dir};
use common::{TestServer, config, shipped_copy, turn};
use emotion_service::pb;
use emotion_service::pb::model_admin_client::ModelAdminClient;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const LIVE: &str = "goemotions-minilm-l6@2026.12.04";

fn swap_config() -> emotion_service::Config {
    let mut c = config();
    c.model.checker = Some(PathBuf::from(env!("CARGO_BIN_EXE_emotion")));
    c
}

async fn load(
    admin: &mut ModelAdminClient<tonic::transport::Channel>,
    path: &Path,
) -> Result<pb::ModelInfo, tonic::Status> {
    admin
        .load_model(pb::LoadModelRequest {
            path: path.display().to_string(),
            skip_quality_gate: false,
        })
        .await
        .map(|r| r.into_inner())
}

async fn take(n: usize, results: &mut tonic::Streaming<pb::TurnResult>) -> Vec<pb::TurnResult> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(results.next().await.unwrap().unwrap());
    }
    v
}

async fn serving(server: &TestServer) -> String {
    let mut admin = ModelAdminClient::new(server.channel().await);
    let model = admin
        .get_model(pb::GetModelRequest {})
        .await
        .unwrap()
        .into_inner();
    // And it scores.
    let mut client = server.client().await;
    let r = client
        .score_texts(pb::ScoreTextsRequest {
            texts: vec!["Thanks, that helped a lot!".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model_version, format!("{}@{}", model.name, model.version));
    r.model_version
}

#[tokio::test]
async fn swap_to_another_label_set_under_load_and_back_fails_no_turn() {
    let dir = tempfile::tempdir().unwrap();
    let ekman = dir.path().join("ekman");
    write_ekman_dir(&ekman, Shape::Good, &EKMAN);
    let server = TestServer::start(swap_config()).await;
    let mut admin = ModelAdminClient::new(server.channel().await);

    // A steady stream of turns (conversations of 5) until told to stop.
    let (tx, rx) = mpsc::channel::<pb::TurnRequest>(64);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let producer = tokio::spawn(async move {
        let mut n = 0u64;
        while !*stop_rx.borrow_and_update() {
            let text = if n.is_multiple_of(3) {
                "I am so angry, this is terrible"
            } else {
                "Thank you, that is great"
            };
            let t = turn(
                &format!("swap-{}", n / 5),
                n % 5 + 1,
                pb::Speaker::Customer,
                text,
            );
            if tx.send(t).await.is_err() {
                break;
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    });
    let mut client = server.client().await;
    let mut results = client
        .stream_turns(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut got: Vec<pb::TurnResult> = take(50, &mut results).await;

    // Swap while the stream runs; a turn sent after LoadModel returns is scored by the new model.
    let (swapped, more) = tokio::join!(load(&mut admin, &ekman), take(50, &mut results));
    got.extend(more);
    let swapped = swapped.unwrap();
    assert_eq!(swapped.labels, EKMAN);
    assert_eq!(swapped.problem_type, "single_label_classification");
    assert_eq!(swapped.replaced_version, LIVE);
    let tiny = format!("{}@{}", swapped.name, swapped.version);
    assert_eq!(serving(&server).await, tiny);
    let probe = |id: &str| vec![turn(id, 1, pb::Speaker::Customer, "I am furious with you")];
    let after_swap = common::stream_all(&mut server.client().await, probe("probe-1")).await;
    got.extend(take(50, &mut results).await);

    let (back, more) = tokio::join!(
        admin.rollback_model(pb::RollbackModelRequest {}),
        take(50, &mut results)
    );
    got.extend(more);
    assert_eq!(back.unwrap().into_inner().replaced_version, tiny);
    let after_rollback = common::stream_all(&mut server.client().await, probe("probe-2")).await;
    got.extend(take(50, &mut results).await);
    stop_tx.send(true).unwrap();
    let sent = producer.await.unwrap();
    while let Some(r) = results.next().await {
        got.push(r.unwrap());
    }
    assert_eq!(
        got.len() as u64,
        sent,
        "every turn of the loaded stream answered once"
    );
    assert!(got.iter().all(|r| r.error.is_none()), "no failed turn");
    assert_eq!(after_swap[0].model_version, tiny);
    assert_eq!(after_rollback[0].model_version, LIVE);

    // In result order the versions never go back and forth: the old model, then (if the stream
    // had turns submitted in that window) the new one, then the old one again.
    let mut runs: Vec<&str> = Vec::new();
    for r in &got {
        if runs.last() != Some(&r.model_version.as_str()) {
            runs.push(&r.model_version);
        }
    }
    let allowed = [LIVE, tiny.as_str(), LIVE];
    assert!(
        runs.len() <= 3 && runs.iter().zip(allowed).all(|(a, b)| *a == b),
        "model versions in result order: {runs:?}"
    );
    for r in after_swap
        .iter()
        .chain(got.iter().filter(|r| r.model_version == tiny))
    {
        let labels: Vec<&str> = r.emotions.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels.len(), 7);
        assert!(labels.iter().all(|l| EKMAN.contains(l)));
        assert_eq!(r.labels.len(), 1, "single-label: the arg-max");
        let sum: f32 = r.emotions.iter().map(|e| e.probability).sum();
        assert!((sum - 1.0).abs() < 1e-4, "softmax sums to 1: {sum}");
    }
    assert_eq!(serving(&server).await, LIVE);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_candidates_are_refused_and_the_live_model_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    write_ekman_dir(&d("truncated"), Shape::Good, &EKMAN);
    let bytes = std::fs::read(d("truncated").join("model.onnx")).unwrap();
    std::fs::write(d("truncated").join("model.onnx"), &bytes[..bytes.len() / 3]).unwrap();
    write_ekman_dir(&d("rank3"), Shape::Rank3, &EKMAN);
    write_ekman_dir(&d("six-labels"), Shape::Good, &EKMAN[..6]);
    write_ekman_dir(&d("no-tokenizer"), Shape::Good, &EKMAN);
    std::fs::remove_file(d("no-tokenizer").join("tokenizer.json")).unwrap();
    write_ekman_dir(&d("bad-tokenizer"), Shape::Good, &EKMAN);
    std::fs::write(
        d("bad-tokenizer").join("tokenizer.json"),
        "{\"model\": {\"type\": \"BPE\", ",
    )
    .unwrap();

    let server = TestServer::start(swap_config()).await;
    let mut admin = ModelAdminClient::new(server.channel().await);
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for (name, hint) in [
        ("truncated", "model.onnx"),
        ("rank3", "[batch, labels]"),
        ("six-labels", "6 labels"),
        ("no-tokenizer", "tokenizer.json"),
        ("bad-tokenizer", "tokenizer.json"),
        ("does-not-exist", "does-not-exist"),
    ] {
        let err = load(&mut admin, &d(name)).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{name}: {err:?}"
        );
        assert!(
            err.message().contains(hint),
            "{name}: the reason should name {hint:?}: {}",
            err.message()
        );
        let status = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, 1, "SERVING after {name}");
        assert_eq!(serving(&server).await, LIVE, "after {name}");
    }
    let err = admin
        .rollback_model(pb::RollbackModelRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "nothing to roll back to"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_quality_gate_refuses_a_worse_model_and_passes_an_equal_one() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate.tsv");
    let test = std::fs::read_to_string(common::goemotions("test.tsv")).unwrap();
    let sample: Vec<&str> = test.lines().take(400).collect();
    std::fs::write(&gate, sample.join("\n")).unwrap();
    let same = dir.path().join("same");
    shipped_copy(&same, "same-weights", None);
    let worse = dir.path().join("worse");
    shipped_copy(&worse, "worse-thresholds", Some(0.999));
    let ekman = dir.path().join("ekman");
    write_ekman_dir(&ekman, Shape::Good, &EKMAN);

    let mut config = swap_config();
    config.model.gate_data = Some(gate.clone());
    let server = TestServer::start(config).await;
    let mut admin = ModelAdminClient::new(server.channel().await);

    let err = load(&mut admin, &worse).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("quality gate: macro-F1"), "{err:?}");
    let err = load(&mut admin, &ekman).await.unwrap_err();
    assert!(err.message().contains("same labels"), "{err:?}");
    assert_eq!(serving(&server).await, LIVE);

    let ok = load(&mut admin, &same).await.unwrap();
    let g = ok.quality_gate.unwrap();
    assert!(
        (g.candidate_macro_f1 - g.live_macro_f1).abs() < 1e-9,
        "{g:?}"
    );
    assert_eq!(serving(&server).await, "goemotions-minilm-l6@same-weights");
    // Skipping the gate lets another label set in.
    let skipped = admin
        .load_model(pb::LoadModelRequest {
            path: ekman.display().to_string(),
            skip_quality_gate: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(skipped.quality_gate.is_none());
    assert_eq!(skipped.labels.len(), 7);
    server.stop().await.unwrap();
}

/// Waits until the shadow has compared `n` turns; returns the report.
async fn shadow_report(
    admin: &mut ModelAdminClient<tonic::transport::Channel>,
    n: u64,
) -> pb::ShadowReport {
    for _ in 0..200 {
        let r = admin
            .get_shadow_report(pb::GetShadowReportRequest {})
            .await
            .unwrap()
            .into_inner();
        if r.turns_compared >= n {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the shadow did not compare {n} turns");
}

#[tokio::test]
async fn shadow_scoring_reports_agreement_on_a_known_stream_then_promotes() {
    use emotion_service::alerts::{AlertPolicy, AlertTracker};
    use emotion_service::conversation::RollingScore;

    let dir = tempfile::tempdir().unwrap();
    let same = dir.path().join("same");
    shipped_copy(&same, "shadow-copy", None);
    let ekman = dir.path().join("ekman");
    write_ekman_dir(&ekman, Shape::Good, &EKMAN);
    let server = TestServer::start(swap_config()).await;
    let mut admin = ModelAdminClient::new(server.channel().await);
    let mut client = server.client().await;
    let known = |id: &str| common::conversation("examples/escalating-call.jsonl", id);
    let n = known("x").len() as u64;
    let customer_turns = known("x")
        .iter()
        .filter(|t| t.speaker() == pb::Speaker::Customer)
        .count() as u64;

    let bad = admin
        .start_shadow(pb::StartShadowRequest {
            path: same.display().to_string(),
            share: 0.0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // The same weights as a shadow: perfect agreement.
    admin
        .start_shadow(pb::StartShadowRequest {
            path: same.display().to_string(),
            share: 1.0,
        })
        .await
        .unwrap();
    let live = common::stream_all(&mut client, known("shadow-a")).await;
    assert!(
        live.iter().all(|r| r.model_version == LIVE),
        "shadow results never reach clients"
    );
    let r = shadow_report(&mut admin, n).await;
    assert_eq!(r.turns_compared, n);
    assert_eq!(r.shadow_version, "goemotions-minilm-l6@shadow-copy");
    assert!(r.valence_correlation > 0.9999, "{r:?}");
    assert!(r.mean_abs_valence_diff < 1e-4, "{r:?}");
    assert_eq!(r.top_label_agreement, 1.0);
    assert_eq!(
        (r.alert_decisions, r.alert_decision_agreement),
        (customer_turns, 1.0)
    );
    assert!(r.live_p50_ms > 0.0 && r.shadow_p50_ms > 0.0);

    // Another model: the report's numbers, recomputed here from the live results and the
    // candidate scoring the same texts on its own.
    admin
        .start_shadow(pb::StartShadowRequest {
            path: ekman.display().to_string(),
            share: 1.0,
        })
        .await
        .unwrap();
    let turns = known("shadow-b");
    let live = common::stream_all(&mut client, turns.clone()).await;
    let r = shadow_report(&mut admin, n).await;
    let mut config = emotion_service::Config::default();
    config.model.inference_workers = 1;
    let tiny = emotion_service::inference::load(&config, &ekman).unwrap();
    let tiny = emotion_service::inference::Batcher::start(
        tiny,
        emotion_service::inference::BatchPolicy {
            max_batch: 8,
            max_batch_tokens: 1024,
            max_wait: Duration::ZERO,
            queue_capacity: 64,
        },
        emotion_service::metrics::Metrics::new(),
    );
    let (mut xs, mut ys, mut top_agree) = (Vec::new(), Vec::new(), 0);
    let policy = AlertPolicy::from(&config.alerts);
    let decay = RollingScore::decay_for(config.scoring.half_life_turns);
    let (mut rl, mut rs) = (RollingScore::default(), RollingScore::default());
    let (mut tl, mut ts) = (AlertTracker::default(), AlertTracker::default());
    let (mut decisions, mut agree) = (0u64, 0u64);
    let now = std::time::Instant::now();
    for (t, res) in turns.iter().zip(&live) {
        let text = std::str::from_utf8(&t.text).unwrap();
        let s = tiny.submit(text).await.unwrap().wait().await.unwrap();
        // As the conversation counts it: an agent's apology's remorse and sadness aside.
        let apologises = t.speaker() == pb::Speaker::Agent
            && emotion_service::assist::apology(&emotion_service::lang::normalize(text)).is_some();
        let shadow_valence = if apologises {
            s.valence_without(emotion_service::assist::APOLOGY_EMOTIONS)
        } else {
            s.valence
        };
        let shadow_top = &s.model.labels[s.model.ranked(&s.probs)[0]];
        if *shadow_top == res.emotions[0].label {
            top_agree += 1;
        }
        xs.push(res.text_valence as f64);
        ys.push(shadow_valence as f64);
        if t.speaker() == pb::Speaker::Customer {
            let (a, b) = (
                rl.update(res.text_valence, decay),
                rs.update(shadow_valence, decay),
            );
            tl.observe(&policy, a, rl.turns(), now);
            ts.observe(&policy, b, rs.turns(), now);
            decisions += 1;
            agree += u64::from(tl.level() == ts.level());
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mx, my) = (mean(&xs), mean(&ys));
    let cov: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum::<f64>().sqrt();
    let sy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum::<f64>().sqrt();
    let correlation = cov / (sx * sy);
    assert!(
        (r.valence_correlation - correlation).abs() < 1e-3,
        "report {} vs recomputed {correlation}",
        r.valence_correlation
    );
    assert!(
        (r.top_label_agreement - top_agree as f64 / n as f64).abs() < 1e-9,
        "{r:?}"
    );
    assert_eq!(r.alert_decisions, decisions);
    assert!(
        (r.alert_decision_agreement - agree as f64 / decisions as f64).abs() < 1e-9,
        "{r:?} vs {agree}/{decisions}"
    );

    // Promote: the shadow serves, the old model is the rollback target.
    let promoted = admin
        .promote_shadow(pb::PromoteShadowRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoted.replaced_version, LIVE);
    assert_eq!(promoted.labels, EKMAN);
    let err = admin
        .stop_shadow(pb::StopShadowRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "promoting ends the shadow"
    );
    admin
        .rollback_model(pb::RollbackModelRequest {})
        .await
        .unwrap();
    assert_eq!(serving(&server).await, LIVE);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_model_dropped_into_the_watched_folder_is_loaded_once_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = swap_config();
    config.model.watch_dir = Some(dir.path().to_path_buf());
    config.model.watch_interval_secs = 1;
    let server = TestServer::start(config).await;
    // Not yet marked READY: ignored. A broken one marked READY: refused, the live model stays.
    shipped_copy(&dir.path().join("b-next"), "watched", None);
    std::fs::create_dir_all(dir.path().join("a-broken")).unwrap();
    std::fs::write(dir.path().join("a-broken/READY"), "").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(serving(&server).await, LIVE);
    std::fs::write(dir.path().join("b-next/READY"), "").unwrap();
    for _ in 0..100 {
        if serving(&server).await == "goemotions-minilm-l6@watched" {
            server.stop().await.unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the READY model was not loaded");
}
