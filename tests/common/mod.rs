//! Test helpers: a real server on 127.0.0.1:0 with the shipped model, and real tonic clients.
#![allow(dead_code)]

pub mod browser;
pub mod nats;
pub mod onnx;
pub mod smartwatch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use emotion_service::auth::{Role, token_hash};
use emotion_service::config::{AlertLogConfig, CustomersConfig, StateConfig, TokenConfig};
use emotion_service::pb::alert_feed_client::AlertFeedClient;
use emotion_service::pb::emotion_analysis_client::EmotionAnalysisClient;
use emotion_service::{Config, Listeners, client, pb};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// A loopback address that a child process (an `emotion serve`, a NATS node, chromedriver) can
/// listen on. Binding `127.0.0.1:0` and letting go would hand out a port from the kernel's
/// ephemeral range, where any outgoing connection may take it as its source port before the
/// child binds it (CI saw a NATS node die of "address already in use" that way). So the ports
/// come from below that range, walked from a per-process starting point, each checked free and
/// never handed out twice by this process (test binaries run one after another).
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let low = 20_000u32;
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&h| h > low + 1_000)
        .unwrap_or(32_768);
    let span = high - low;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = low + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The supervisor dashboard.
    pub web_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// The alert log's directory when the test did not choose one.
    _log_dir: Option<tempfile::TempDir>,
}

/// Every file under `dir`, at any depth, that holds `needle` (as UTF-8 bytes): its path below
/// `dir`.
pub fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(at) = dirs.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            // A file may go while the walk runs (a server compacting its storage).
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                let shown = path.strip_prefix(dir).unwrap_or(&path);
                found.push(shown.display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// Streams the conversations `ids` of the sample `file` (a JSON-lines conversation file of the
/// repository), one after another, and ends each: each becomes one of its customer's contacts. `token`: the ingest token, when auth is on.
pub async fn contacts(file: &str, channel: Channel, token: Option<&str>, ids: &[&str]) {
    let mut client = pb::emotion_analysis_client::EmotionAnalysisClient::new(channel);
    let all = emotion_service::client::read_conversation_file(&repo_path(file)).unwrap();
    for id in ids {
        let turns: Vec<_> = (all.iter())
            .filter(|t| t.conversation_id == id.as_bytes())
            .cloned()
            .collect();
        assert!(!turns.is_empty(), "{id} is not in {file}");
        let results: Vec<_> = client
            .stream_turns(authorized(token, tokio_stream::iter(turns)))
            .await
            .unwrap()
            .into_inner()
            .collect()
            .await;
        assert!(
            results.iter().all(|r| r.as_ref().unwrap().error.is_none()),
            "{results:?}"
        );
        let end = pb::EndConversationRequest {
            conversation_id: id.to_string(),
        };
        client
            .end_conversation(authorized(token, end))
            .await
            .unwrap();
    }
}

/// `message` with the token, if there is one.
pub fn authorized<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
    match token {
        Some(t) => with(t, message),
        None => tonic::Request::new(message),
    }
}

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A file of the GoEmotions test split: `$GOEMOTIONS_DIR` when set, else the copy shipped in
/// `tests/data/goemotions/` (CC BY 4.0, see its README), so a bare clone runs every test.
pub fn goemotions(file: &str) -> PathBuf {
    let dir = std::env::var_os("GOEMOTIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path("tests/data/goemotions"));
    let path = dir.join(file);
    assert!(
        path.exists(),
        "{} is missing (GOEMOTIONS_DIR={:?})",
        path.display(),
        std::env::var_os("GOEMOTIONS_DIR")
    );
    path
}

/// A configured token named `name` whose secret is `tok-{name}`.
pub fn token(name: &str, role: Role, tenants: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        sha256: token_hash(&format!("tok-{name}")),
        role,
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        agent_id: String::new(),
    }
}

/// `message` with `authorization: Bearer {token}`.
pub fn with<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Defaults, with a short shutdown grace so tests end quickly.
pub fn config() -> Config {
    let mut config = Config::default();
    config.server.shutdown_grace_secs = 2;
    // In-process servers: the checker is the `emotion` binary, not this test's executable.
    config.model.checker = Some(std::path::PathBuf::from(env!("CARGO_BIN_EXE_emotion")));
    config
}

impl TestServer {
    /// `GET path` on the dashboard's port, as JSON; the answer must be 200.
    pub async fn web_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = browser::http(self.web_addr.port(), "GET", path, &[], None)
            .await
            .unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Starts the server in this process; unless the test set `alert_log.path`, the alert log
    /// goes to a fresh temporary directory removed with the server.
    pub async fn start(mut config: Config) -> Self {
        let mut log_dir = None;
        if config.alert_log.path == AlertLogConfig::default().path {
            let dir = tempfile::tempdir().unwrap();
            config.alert_log.path = dir.path().join("alerts.sqlite3");
            log_dir = Some(dir);
        }
        if config.state.path == StateConfig::default().path {
            // Beside the alert log: a test that restarts on the same log restarts on the same state.
            config.state.path = config.alert_log.path.with_file_name("state.sqlite3");
        }
        if config.customers.path == CustomersConfig::default().path {
            config.customers.path = config.alert_log.path.with_file_name("customers.sqlite3");
            config.customers.key_file = config.alert_log.path.with_file_name("customer.key");
        }
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = grpc.local_addr().unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let web_addr = web.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(emotion_service::run(
            config,
            Listeners {
                grpc,
                metrics: Some(metrics),
                web: Some(web),
            },
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            metrics_addr,
            web_addr,
            stop: Some(stop),
            handle: Some(handle),
            _log_dir: log_dir,
        }
    }

    /// Waits until the server answers health SERVING; if it stopped instead, panics with the
    /// error `run` returned.
    pub async fn ready(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                let ended = self.handle.take().unwrap().await.unwrap();
                panic!("the server stopped while starting: {ended:?}");
            }
            let serving = async {
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
                        .ok()?
                        .connect()
                        .await
                        .ok()?;
                let status = tonic_health::pb::health_client::HealthClient::new(channel)
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .ok()?;
                (status.into_inner().status == 1).then_some(())
            };
            if serving.await.is_some() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server not ready within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
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

    /// Every supervisor's alert event (no filter), live or, with `after`, resumed after it.
    pub async fn feed(&self, after: Option<u64>) -> tonic::Streaming<pb::Alert> {
        (self.alerts().await)
            .subscribe_alerts(pb::SubscribeAlertsRequest {
                after_sequence: after,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn assist(
        &self,
    ) -> emotion_service::pb::agent_assist_client::AgentAssistClient<Channel> {
        emotion_service::pb::agent_assist_client::AgentAssistClient::new(self.channel().await)
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
    pb::TurnRequest::new(conversation_id, turn_id, speaker, text)
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

/// The server binary as a child process (what `kill -9` needs), on a free loopback port.
pub struct ChildServer {
    pub addr: SocketAddr,
    /// The dashboard's address, when started with one.
    pub web_addr: Option<SocketAddr>,
    child: std::process::Child,
}

impl ChildServer {
    /// Starts `emotion serve` with `env` (EMOTION__* settings) and waits until it answers health.
    pub async fn spawn(env: &[(&str, String)]) -> Self {
        Self::spawn_at(free_addr(), env).await
    }

    /// The same on a given address (a restart where clients expect it), without the dashboard.
    pub async fn spawn_at(addr: SocketAddr, env: &[(&str, String)]) -> Self {
        Self::spawn_with_web(addr, None, env).await
    }

    /// The same with the dashboard on `web_addr`.
    pub async fn spawn_with_web(
        addr: SocketAddr,
        web_addr: Option<SocketAddr>,
        env: &[(&str, String)],
    ) -> Self {
        let web = web_addr.map(|a| a.to_string()).unwrap_or_default();
        // Conversation state beside the alert log (never the working directory's data/).
        let state = env
            .iter()
            .find(|(k, _)| *k == "EMOTION__ALERT_LOG__PATH")
            .map(|(_, v)| {
                PathBuf::from(v)
                    .with_file_name("state.sqlite3")
                    .display()
                    .to_string()
            })
            .unwrap_or_default();
        let beside = |name: &str| match state.is_empty() {
            true => String::new(),
            false => PathBuf::from(&state)
                .with_file_name(name)
                .display()
                .to_string(),
        };
        let (customers, key) = (beside("customers.sqlite3"), beside("customer.key"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_emotion"))
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--metrics-listen",
                "",
                "--web-listen",
                &web,
            ])
            .env("EMOTION__STATE__PATH", &state)
            .env("EMOTION__CUSTOMERS__PATH", customers)
            .env("EMOTION__CUSTOMERS__KEY_FILE", key)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            // EMOTION_TEST_CHILD_LOG: the child's RUST_LOG, to debug a test (default warn).
            .env(
                "RUST_LOG",
                std::env::var("EMOTION_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            addr,
            web_addr,
            child,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = async {
                let channel = tonic::transport::Endpoint::from_shared(server.url())
                    .ok()?
                    .connect()
                    .await
                    .ok()?;
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let status = health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .ok()?;
                (status.into_inner().status == 1).then_some(())
            };
            if ready.await.is_some() {
                return server;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (after a signal sent by the test).
    pub fn wait(mut self) {
        self.child.wait().unwrap();
    }

    /// SIGKILL: no shutdown, no flush, no goodbye.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two strongly negative customer turns: the second raises a CRITICAL alert (min 2 customer turns).
pub fn angry_call(conversation_id: &str) -> Vec<pb::TurnRequest> {
    [
        "This is absolutely terrible, I am furious with your service.",
        "I am disgusted and angry, this is the worst experience ever.",
    ]
    .iter()
    .enumerate()
    .map(|(i, text)| turn(conversation_id, i as u64 + 1, pb::Speaker::Customer, text))
    .collect()
}

/// The shipped model under another version, its thresholds all set to `threshold` if given.
pub fn shipped_copy(dir: &std::path::Path, version: &str, threshold: Option<f32>) {
    std::fs::create_dir_all(dir).unwrap();
    let src = repo_path("models/goemotions-minilm-l6");
    for f in ["model.onnx", "tokenizer.json", "config.json"] {
        std::os::unix::fs::symlink(src.join(f), dir.join(f)).unwrap();
    }
    let mut extra: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("emotion.json")).unwrap()).unwrap();
    extra["version"] = version.into();
    if let Some(t) = threshold {
        for v in extra["thresholds"].as_object_mut().unwrap().values_mut() {
            *v = t.into();
        }
    }
    std::fs::write(dir.join("emotion.json"), extra.to_string()).unwrap();
}

/// The guidance of `agent_id` after `after` until an event of `last` kind (or 15 s).
pub async fn guidance_after(
    server: &TestServer,
    agent_id: &str,
    after: u64,
    last: &str,
) -> Vec<pb::Alert> {
    let mut stream = server
        .assist()
        .await
        .subscribe_assist(pb::SubscribeAssistRequest {
            agent_id: agent_id.into(),
            after_sequence: Some(after),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, stream.next()).await {
        let event = event.unwrap();
        let done = event.kind == last;
        seen.push(event);
        if done {
            break;
        }
    }
    seen
}
