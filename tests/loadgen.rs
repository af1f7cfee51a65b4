//! A CI-sized run of the load generator against the real server: every turn answered exactly once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, config, repo_path};
use emotion_service::client::read_conversation_file;
use emotion_service::loadgen::{LoadConfig, run};

fn corpus() -> Arc<Vec<String>> {
    let mut texts = Vec::new();
    for file in ["examples/escalating-call.jsonl", "examples/calm-call.jsonl"] {
        texts.extend(
            read_conversation_file(&repo_path(file))
                .unwrap()
                .into_iter()
                .map(|t| String::from_utf8(t.text).unwrap()),
        );
    }
    Arc::new(texts)
}

#[tokio::test]
async fn load_generator_delivers_every_turn_exactly_once() {
    let server = TestServer::start(config()).await;
    let base = LoadConfig {
        server: emotion_service::client::Server::new(format!("http://{}", server.addr)),
        conversations: 50,
        streams: 4,
        duration: Duration::from_secs(120),
        rate: None,
        max_turns: Some(400),
        drain: Duration::from_secs(60),
        agents: 0,
        assist: false,
        customers: 0,
    };
    for rate in [None, Some(400.0)] {
        let report = run(
            LoadConfig {
                rate,
                ..base.clone()
            },
            corpus(),
        )
        .await
        .unwrap();
        println!("{rate:?}: {}", report.summary());
        assert_eq!(report.sent, 400);
        assert_eq!(report.answered, 400, "{}", report.summary());
        assert_eq!((report.lost, report.duplicated, report.errors), (0, 0, 0));
    }
    server.stop().await.unwrap();
}
