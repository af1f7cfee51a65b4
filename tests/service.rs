//! The service's operational surface: health, reflection, GetModel, metrics, shutdown.

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use common::{TestServer, config, repo_path, stream_all, turn};
use emotion_service::pb;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test]
async fn health_reflection_and_model_info() {
    let server = TestServer::start(config()).await;
    let channel = server.channel().await;

    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "emotion.v1.EmotionAnalysis",
        "emotion.v1.AlertFeed",
        "emotion.v1.AgentAssist",
        "emotion.v1.CustomerMemory",
        "emotion.v1.QualityReport",
        "emotion.v1.ModelAdmin",
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("{response:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "emotion.v1.EmotionAnalysis",
        "emotion.v1.AlertFeed",
        "emotion.v1.AgentAssist",
        "emotion.v1.CustomerMemory",
        "emotion.v1.QualityReport",
        "emotion.v1.ModelAdmin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let mut admin = pb::model_admin_client::ModelAdminClient::new(channel);
    let model = admin
        .get_model(pb::GetModelRequest {})
        .await
        .unwrap()
        .into_inner();
    let bytes = std::fs::read(repo_path("models/goemotions-minilm-l6/model.onnx")).unwrap();
    assert_eq!(model.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(model.name, "goemotions-minilm-l6");
    assert_eq!(model.labels.len(), 28);
    assert_eq!(
        (model.labels[0].as_str(), model.labels[27].as_str()),
        ("admiration", "neutral")
    );
    assert_eq!(model.problem_type, "multi_label_classification");
    assert!(model.loaded_at.is_some());
    server.stop().await.unwrap();
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

/// Everything this test binary logs, at every level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || LogWriter(sink.clone()))
            .init();
        logs
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn metrics_count_turns_and_neither_metrics_nor_logs_carry_text() {
    let logs = captured_logs();
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    // Asks for a manager: an alert (with a masked excerpt) is raised from this text too.
    let secret = "Let me speak to a manager! my card number is 4111 1111 1111 1111, mail \
                  qxj.canary@example.com, canary QXJ-turn-text-canary";
    let results = stream_all(
        &mut client,
        vec![
            turn("m-1", 1, pb::Speaker::Customer, secret),
            turn("m-1", 2, pb::Speaker::Customer, ""),
            turn("m-1", 1, pb::Speaker::Customer, secret),
        ],
    )
    .await;
    assert_eq!(results.len(), 3);
    let page = http_get(server.metrics_addr, "/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for line in [
        "emotion_turns_total{outcome=\"scored\"} 1",
        "emotion_turns_total{outcome=\"rejected\"} 1",
        "emotion_turns_total{outcome=\"duplicate\"} 1",
        "emotion_active_conversations 1",
        "emotion_batch_size_count",
        "emotion_inference_seconds_bucket",
        // Only the scored turn reached the inference queue; all three were read off the stream.
        "emotion_queue_wait_seconds_count 1\n",
        "emotion_turn_seconds_count 3\n",
        "emotion_queue_depth",
        "emotion_subscribers 0",
        "emotion_lagging_subscribers_total 0",
        "emotion_alerts_total{severity=\"critical\",state=\"raised\"} 1",
        "emotion_alert_log_errors_total 0",
    ] {
        assert!(page.contains(line), "{line} missing from\n{page}");
    }
    assert!(!page.contains("QXJ-turn-text-canary"));
    // A bad message ends a stream with a logged warning; the text must not be in it either.
    let big = turn(
        "m-2",
        1,
        pb::Speaker::Customer,
        &format!("{secret} {}", "z".repeat(70_000)),
    );
    let mut stream = client
        .stream_turns(tokio_stream::iter(vec![big]))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.next().await.unwrap().is_err());
    server.stop().await.unwrap();
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("model loaded"), "logs were captured: {logs}");
    assert!(
        logs.contains("turn stream ended by a bad message"),
        "{logs}"
    );
    for canary in [
        "QXJ-turn-text-canary",
        "qxj.canary@example.com",
        "4111 1111",
    ] {
        assert!(!logs.contains(canary), "turn text in the logs:\n{logs}");
    }
}

#[tokio::test]
async fn shutdown_reports_not_serving_then_stops() {
    let server = TestServer::start(config()).await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "emotion.v1.EmotionAnalysis".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let stopping = tokio::spawn(server.stop());
    let update = watch
        .next()
        .await
        .expect("an update before the stream ends")
        .unwrap();
    assert_eq!(update.status(), ServingStatus::NotServing);
    stopping.await.unwrap().unwrap();
}
