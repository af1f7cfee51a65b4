//! Test helpers: a real server on 127.0.0.1:0 with the shipped model, and real tonic clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use emotion_service::pb::alert_feed_client::AlertFeedClient;
use emotion_service::pb::emotion_analysis_client::EmotionAnalysisClient;
use emotion_service::{Config, Listeners, client, pb};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Defaults, with a short shutdown grace so tests end quickly.
pub fn config() -> Config {
    let mut config = Config::default();
    config.server.shutdown_grace_secs = 2;
    config
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = grpc.local_addr().unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(emotion_service::run(
            config,
            Listeners {
                grpc,
                metrics: Some(metrics),
            },
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            metrics_addr,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn client(&self) -> EmotionAnalysisClient<Channel> {
        EmotionAnalysisClient::new(self.channel().await)
    }

    pub async fn alerts(&self) -> AlertFeedClient<Channel> {
        AlertFeedClient::new(self.channel().await)
    }

    /// Stops the server and returns how `run` ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap()
    }
}

pub fn turn(
    conversation_id: &str,
    turn_id: u64,
    speaker: pb::Speaker,
    text: &str,
) -> pb::TurnRequest {
    pb::TurnRequest {
        conversation_id: conversation_id.into(),
        turn_id,
        speaker: speaker.into(),
        text: text.into(),
        acoustic_valence: None,
        context: None,
    }
}

/// The turns of a conversation file under examples/, renamed to `conversation_id`.
pub fn conversation(file: &str, conversation_id: &str) -> Vec<pb::TurnRequest> {
    client::read_conversation_file(&repo_path(file))
        .unwrap()
        .into_iter()
        .map(|mut t| {
            t.conversation_id = conversation_id.into();
            t
        })
        .collect()
}

/// Sends `turns` on one stream and collects every result.
pub async fn stream_all(
    client: &mut EmotionAnalysisClient<Channel>,
    turns: Vec<pb::TurnRequest>,
) -> Vec<pb::TurnResult> {
    let results = client
        .stream_turns(tokio_stream::iter(turns))
        .await
        .unwrap()
        .into_inner();
    results.map(|r| r.unwrap()).collect().await
}

/// The next alert of a subscription, failing the test after 10 s.
pub async fn next_alert(stream: &mut tonic::Streaming<pb::Alert>) -> pb::Alert {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an alert within 10 s")
        .expect("the alert stream is open")
        .expect("not an error")
}
