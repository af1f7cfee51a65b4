//! The fuzz smoke run: seeded structure-aware StreamTurns cases and hostile requests to every
//! other call against a real server (the same harness as `emotion fuzz`), then the server still
//! serves and holds what it should.

mod common;

use std::time::Duration;

use common::TestServer;
use emotion_service::fuzz;
use emotion_service::pb;

#[tokio::test(flavor = "multi_thread")]
async fn seeded_fuzz_cases_keep_the_contract() {
    let server = TestServer::start(common::config()).await;
    let mut total = fuzz::FuzzReport::default();
    for seed in [1, 2, 3] {
        let r = fuzz::run(server.channel().await, seed, Duration::from_secs(120), 60).await;
        println!("seed {seed}: {r}");
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        total.cases += r.cases;
        total.scored += r.scored;
        total.rejected_invalid += r.rejected_invalid;
        total.garbage_streams += r.garbage_streams;
        total.duplicates += r.duplicates;
    }
    // The run covered what it is for (a harness that generated nothing bad would pass trivially).
    assert_eq!(total.cases, 180);
    assert!(total.scored > 500, "{total:?}");
    assert!(total.rejected_invalid > 100, "{total:?}");
    assert!(total.garbage_streams > 2, "{total:?}");
    assert!(total.duplicates > 10, "{total:?}");
    // Every other call, with hostile requests.
    let u = fuzz::unary::run(server.channel().await, 7, 300).await;
    println!("other calls: {u:?}");
    assert!(u.violations.is_empty(), "{:#?}", u.violations);
    assert_eq!(u.calls, 300);
    assert!(u.ok > 10 && u.refused > 150, "{u:?}");
    // Still serving, and nothing leaked into the conversation count beyond the fuzz ids.
    let scored = server
        .client()
        .await
        .score_texts(pb::ScoreTextsRequest {
            texts: vec!["still here".into()],
        })
        .await
        .unwrap();
    assert_eq!(scored.into_inner().results.len(), 1);
    server.stop().await.unwrap();
}

/// The dashboard's endpoints, mutated configs (some started as servers) and mutated model
/// directories offered to LoadModel, each seeded.
#[tokio::test(flavor = "multi_thread")]
async fn seeded_web_config_and_model_dir_cases_keep_the_contract() {
    let server = TestServer::start(common::config()).await;
    let w = fuzz::web::run(server.web_addr.port(), 11, 400).await;
    println!("web: {w:?}");
    assert!(w.violations.is_empty(), "{:#?}", w.violations);
    assert!(w.ok > 20 && w.refused > 150, "{w:?}");

    let work = tempfile::tempdir().unwrap();
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_emotion"));
    let c =
        fuzz::files::run_configs(13, 300, 3, exe, &common::repo_path("models"), work.path()).await;
    println!("configs: {c:?}");
    assert!(c.violations.is_empty(), "{:#?}", c.violations);
    assert!(c.configs_loaded > 10 && c.configs_refused > 100, "{c:?}");
    assert_eq!(c.servers_started, 3);

    let base = common::repo_path("models/goemotions-minilm-l6");
    let m = fuzz::files::run_model_dirs(server.channel().await, 17, 8, &base, work.path()).await;
    println!("model dirs: {m:?}");
    assert!(m.violations.is_empty(), "{:#?}", m.violations);
    assert!(m.models_refused >= 4, "{m:?}");
    server.stop().await.unwrap();
}
