//! A durable log that cannot write holds alerts back instead of sending them live: on a file
//! system that really fills up (a 1 MiB tmpfs), alert events wait in order, the AlertFeed health
//! is NOT_SERVING, scoring goes on; once space is freed, the events are appended and delivered in
//! sequence order, and a resume from the log sees exactly what the live subscriber saw.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{TestServer, angry_call, next_alert, stream_all};
use emotion_service::pb;
use tokio_stream::StreamExt;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Writes until the file system says it is full; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).and_then(|_| f.flush()).is_ok() {}
    let _ = f.sync_all();
    path
}

async fn health(server: &TestServer, service: &str) -> i32 {
    let mut client = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_holds_alerts_back_until_they_are_durable() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let disk = Tmpfs::mount("1m").expect("mount a 1 MiB tmpfs (as root)");
    let state = tempfile::tempdir().unwrap();
    let mut config = common::config();
    config.alert_log.path = disk.path().join("alerts.sqlite3");
    config.state.path = state.path().join("state.sqlite3");
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let mut feed = server.alerts().await;
    let mut live = feed
        .subscribe_alerts(pb::SubscribeAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    stream_all(&mut client, angry_call("before-full")).await;
    let first = next_alert(&mut live).await;
    assert_eq!(first.sequence, 1);
    const FEED: &str = "emotion.v1.AlertFeed";
    assert_eq!(health(&server, FEED).await, 1, "SERVING");

    let filler = fill(disk.path());
    let mut while_full = Vec::new();
    for i in 0..3 {
        let results = stream_all(&mut client, angry_call(&format!("full-{i}"))).await;
        // Scoring goes on: the turn says CRITICAL even though its alert waits.
        assert_eq!(
            results[1].alert_level(),
            pb::Severity::Critical,
            "{:?}",
            results[1]
        );
        while_full.push(format!("full-{i}"));
    }
    until("AlertFeed NOT_SERVING", async || {
        health(&server, FEED).await == 2
    })
    .await;
    let (_, metrics) =
        common::browser::http(server.metrics_addr.port(), "GET", "/metrics", &[], None)
            .await
            .unwrap();
    assert!(metrics.contains("emotion_alert_log_backlog 3"), "{metrics}");
    // Nothing that is not in the log reaches a subscriber.
    let early = tokio::time::timeout(Duration::from_millis(1500), live.next()).await;
    assert!(
        early.is_err(),
        "an event not yet durable was delivered: {early:?}"
    );

    std::fs::remove_file(filler).unwrap();
    let mut delivered = Vec::new();
    for _ in 0..3 {
        delivered.push(next_alert(&mut live).await);
    }
    assert_eq!(
        delivered.iter().map(|a| a.sequence).collect::<Vec<_>>(),
        [2, 3, 4],
        "in sequence order, once each"
    );
    assert_eq!(
        delivered
            .iter()
            .map(|a| a.conversation_id.clone())
            .collect::<Vec<_>>(),
        while_full
    );
    until("AlertFeed SERVING again", async || {
        health(&server, FEED).await == 1
    })
    .await;
    // Durable: a resume from the log replays exactly what the live subscriber saw.
    let mut resumed = feed
        .subscribe_alerts(pb::SubscribeAlertsRequest {
            after_sequence: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for expected in &delivered {
        assert_eq!(&next_alert(&mut resumed).await, expected);
    }
    server.stop().await.unwrap();
}
