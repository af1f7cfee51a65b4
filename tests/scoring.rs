//! Scoring with the shipped model through the real server: unambiguous texts, valence signs,
//! batching invariance, and agreement between ScoreTexts and StreamTurns.

mod common;

use common::{TestServer, config, stream_all, turn};
use emotion_service::pb;

const CASES: &[(&str, &[&str], f32)] = &[
    ("Thank you so much, that fixed it!", &["gratitude"], 1.0),
    (
        "This is the third time I call and nobody helps, I'm furious",
        &["anger", "annoyance"],
        -1.0,
    ),
    (
        "I love how easy this was, you are wonderful",
        &["love", "admiration", "joy"],
        1.0,
    ),
    (
        "I'm so scared my account was hacked",
        &["fear", "nervousness"],
        -1.0,
    ),
    (
        "Why is my bill higher this month? I don't understand",
        &["confusion", "curiosity"],
        0.0,
    ),
];

#[tokio::test]
async fn unambiguous_texts_get_expected_emotions_and_valence_sign() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let texts: Vec<String> = CASES.iter().map(|c| c.0.to_string()).collect();
    let response = client
        .score_texts(pb::ScoreTextsRequest { texts })
        .await
        .unwrap()
        .into_inner();
    assert!(
        response.model_version.starts_with("goemotions-minilm-l6@"),
        "{}",
        response.model_version
    );
    for ((text, expected, sign), result) in CASES.iter().zip(&response.results) {
        let top2: Vec<&str> = result
            .emotions
            .iter()
            .take(2)
            .map(|e| e.label.as_str())
            .collect();
        assert!(
            expected.iter().any(|e| top2.contains(e)),
            "{text:?}: expected one of {expected:?} in the top 2, got {top2:?}"
        );
        if *sign != 0.0 {
            assert_eq!(
                result.valence.signum(),
                *sign,
                "{text:?}: valence {}",
                result.valence
            );
        }
        assert_eq!(result.emotions.len(), 28);
        assert!(
            result
                .emotions
                .windows(2)
                .all(|w| w[0].probability >= w[1].probability)
        );
        assert!(!result.labels.is_empty());
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn batching_does_not_change_scores() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let texts: Vec<String> = [
        "ok",
        "Thank you so much, that fixed it!",
        "This is the third time I call and nobody helps, I'm furious and I want to cancel everything right now",
        "Could you tell me when the technician will arrive?",
        "meh",
        "I'm really disappointed, I expected much better service from you after all these years as a customer",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let batched = client
        .score_texts(pb::ScoreTextsRequest {
            texts: texts.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    for (text, together) in texts.iter().zip(&batched) {
        let alone = client
            .score_texts(pb::ScoreTextsRequest {
                texts: vec![text.clone()],
            })
            .await
            .unwrap()
            .into_inner()
            .results
            .remove(0);
        assert_eq!(alone.emotions.len(), together.emotions.len());
        for a in &alone.emotions {
            let b = together
                .emotions
                .iter()
                .find(|b| b.label == a.label)
                .unwrap();
            assert!(
                (a.probability - b.probability).abs() <= 1e-4,
                "{text:?} {}: alone {} vs batched {}",
                a.label,
                a.probability,
                b.probability
            );
        }
        assert!((alone.valence - together.valence).abs() <= 1e-4);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn stream_and_score_texts_agree() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let turns: Vec<pb::TurnRequest> = CASES
        .iter()
        .enumerate()
        .map(|(i, c)| turn("agree", i as u64 + 1, pb::Speaker::Customer, c.0))
        .collect();
    let streamed = stream_all(&mut client, turns).await;
    let texts = CASES.iter().map(|c| c.0.to_string()).collect();
    let unary = client
        .score_texts(pb::ScoreTextsRequest { texts })
        .await
        .unwrap()
        .into_inner();
    for (s, u) in streamed.iter().zip(&unary.results) {
        assert!(s.error.is_none(), "{:?}", s.error);
        assert!(
            (s.text_valence - u.valence).abs() <= 1e-4,
            "{} vs {}",
            s.text_valence,
            u.valence
        );
        assert_eq!(
            s.valence, s.text_valence,
            "no acoustic valence: the turn valence is the text's"
        );
        assert_eq!(s.labels, u.labels);
        for (a, b) in s.emotions.iter().zip(&u.emotions) {
            assert_eq!(a.label, b.label);
            assert!((a.probability - b.probability).abs() <= 1e-4);
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn acoustic_valence_is_fused_with_the_configured_weight() {
    let mut cfg = config();
    cfg.scoring.acoustic_weight = 0.25;
    let server = TestServer::start(cfg).await;
    let mut client = server.client().await;
    let mut t = turn(
        "fused",
        1,
        pb::Speaker::Customer,
        "Thank you so much, that fixed it!",
    );
    t.acoustic_valence = Some(-1.0);
    let r = stream_all(&mut client, vec![t]).await.remove(0);
    let expected = 0.75 * r.text_valence - 0.25;
    assert!(
        (r.valence - expected).abs() < 1e-5,
        "{} vs {expected}",
        r.valence
    );
    assert!(
        (r.rolling_valence - r.valence).abs() < 1e-6,
        "the first turn sets the rolling score"
    );
    server.stop().await.unwrap();
}

/// A lone text runs on the solo session (every core) and a batch under load on the workers' own
/// sessions, and neither changes a score: the same texts through a batcher without a solo session
/// agree to 1e-4. Both shipped models (the Chinese one through its texts).
#[tokio::test]
async fn the_solo_session_takes_lone_texts_and_scores_like_the_workers_sessions() {
    use emotion_service::inference::{self, BatchPolicy, Batcher};
    use emotion_service::metrics::Metrics;
    let policy = BatchPolicy {
        max_batch: 32,
        max_batch_tokens: 1024,
        max_wait: std::time::Duration::ZERO,
        queue_capacity: 512,
    };
    let texts = [
        "Thank you so much, that fixed it!",
        "This is the third time I call and nobody helps, I'm furious",
        "ok",
        "我要投诉你们，马上给我转人工！",
        "谢谢你，问题解决了",
    ];
    for model in ["models/goemotions-minilm-l6", "models/emotion-e5-zh-en"] {
        let dir = common::repo_path(model);
        let mut config = emotion_service::Config::default();
        config.model.inference_workers = 2;
        config.model.intra_threads = 1;
        config.model.solo_threads = 2;
        let solo = Batcher::start(
            inference::load(&config, &dir).unwrap(),
            policy.clone(),
            Metrics::new(),
        );
        config.model.solo_threads = 1;
        let plain = Batcher::start(
            inference::load(&config, &dir).unwrap(),
            policy.clone(),
            Metrics::new(),
        );
        let same = |a: &inference::Scores, b: &inference::Scores, what: &str| {
            for (x, y) in a.probs.iter().zip(&b.probs) {
                assert!((x - y).abs() <= 1e-4, "{model} {what}: {x} vs {y}");
            }
            assert!((a.valence - b.valence).abs() <= 1e-4, "{model} {what}");
        };
        let mut reference = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let a = solo.submit(text).await.unwrap().wait().await.unwrap();
            assert_eq!(
                solo.solo_batches_run(),
                i as u64 + 1,
                "{model}: a lone text runs solo"
            );
            let b = plain.submit(text).await.unwrap().wait().await.unwrap();
            same(&a, &b, text);
            reference.push(b);
        }
        assert_eq!(plain.solo_batches_run(), 0, "no solo session, no solo call");

        // Under load (400 texts queued at once), calls run beside each other, not solo.
        let (batches, solos) = (solo.batches_run(), solo.solo_batches_run());
        let mut pending = Vec::new();
        for i in 0..400 {
            pending.push(solo.submit(texts[i % texts.len()]).await.unwrap());
        }
        for (i, p) in pending.into_iter().enumerate() {
            let s = p.wait().await.unwrap();
            same(&s, &reference[i % texts.len()], "under load");
        }
        let (batches, solos) = (
            solo.batches_run() - batches,
            solo.solo_batches_run() - solos,
        );
        assert!(
            solos < batches,
            "{model}: {solos} of {batches} calls under load ran solo"
        );
    }
}
