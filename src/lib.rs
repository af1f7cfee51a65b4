//! Streaming emotion and sentiment analysis for contact centers.
//!
//! ```text
//!  StreamTurns ─┐   pipeline::Pipeline (the one way a turn goes; backtest replays through it too)
//!               └─► admit: validate, conversation::ConversationStore::admit (order, de-dup)
//!                     │
//!                     ▼
//!                   submit: inference::Batcher ──► inference thread: tokenise, Engine (ONNX
//!                     │                              Runtime, padded batches)
//!                     ▼
//!                   complete: ConversationStore (rolling score, alert rules, in turn order)
//!                     │                                 │
//!                     ▼                                 ▼
//!                   TurnResult to the stream     publish: alerts::AlertHub, writer thread
//!                   (after its alerts are durable)  (AlertLog seam: SQLite) ──► SubscribeAlerts,
//!                                                       │                      ListAlerts, Ack
//!                  web (HTTP): the supervisor dashboard ◄┘ SSE feed, conversations, heatmap
//! ```
//!
//! [`run`] serves everything on given listeners until a shutdown future resolves; `main.rs` only
//! parses flags, loads the [`Config`] and calls it.

#![forbid(unsafe_code)]

/// The allocator of every binary built on this crate (the server, its tests and benchmarks, so a
/// benchmark measures what is served): jemalloc, which also takes ONNX Runtime's mallocs.
#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod alerts;
pub mod assist;
pub mod auth;
pub mod backtest;
pub mod client;
pub mod cluster;
pub mod config;
pub mod conversation;
pub mod customers;
pub mod domain;
pub mod error;
pub mod eval;
pub mod fuzz;
pub mod grpc;
pub mod inference;
pub mod lang;
pub mod loadgen;
pub mod metrics;
pub mod persist;
pub mod pipeline;
pub mod report;
pub mod wallclock;
pub mod web;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic_health::ServingStatus;

pub use config::Config;

use crate::alerts::AlertHub;
use crate::alerts::subscribers::SubscriberLimits;
use crate::auth::Authenticator;
use crate::conversation::{ConversationStore, StoreSettings};
use crate::grpc::App;
use crate::inference::swap::ModelManager;
use crate::metrics::Metrics;

/// Generated protobuf and gRPC code for `emotion.v1`.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("emotion.v1");
    /// `TurnRequest` as the server reads it (string fields as bytes): see `grpc::wire`.
    pub use crate::grpc::wire::{TurnContext, TurnRequest};

    /// The encoded descriptor set of `emotion.v1`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/emotion_descriptor.bin"));
}

/// The sockets the service listens on, bound by the caller (tests bind port 0).
pub struct Listeners {
    pub grpc: TcpListener,
    pub metrics: Option<TcpListener>,
    /// The supervisor dashboard.
    pub web: Option<TcpListener>,
}

/// Loads the model and serves gRPC (and metrics) until `shutdown` resolves, then reports
/// NOT_SERVING, stops accepting, and gives open calls `server.shutdown_grace_secs` to finish.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let metrics = Metrics::new();
    let batcher = {
        let (config, metrics) = (config.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || inference::start(&config, metrics))
            .await?
            .context("loading the model")?
    };
    let web_is_loopback = match &listeners.web {
        Some(web) => web.local_addr()?.ip().is_loopback(),
        None => true,
    };
    let auth = Arc::new(Authenticator::new(
        &config.auth,
        listeners.grpc.local_addr()?.ip().is_loopback() && web_is_loopback,
    )?);
    if auth.enabled() {
        tracing::info!(tokens = config.auth.tokens.len(), "bearer tokens required");
    } else {
        tracing::warn!("auth is off: any local caller may do anything");
    }
    let cluster = match config.cluster.enabled() {
        true => Some(Arc::new(cluster::Cluster::connect(&config.cluster).await?)),
        false => None,
    };
    // Customer memory in a cluster: every customer's part of what the streams hold is sealed
    // with a key of theirs (`cluster::customers`).
    let customer_keys = match (&cluster, config.customers.enabled()) {
        (Some(cluster), true) => Some(cluster::customers::CustomerKeys::open(cluster).await?),
        _ => None,
    };
    let hub = {
        let (config, metrics, cluster) = (config.clone(), metrics.clone(), cluster.clone());
        let keys = customer_keys.clone();
        tokio::task::spawn_blocking(move || {
            let log: Arc<dyn alerts::AlertLog> = match cluster {
                Some(cluster) => {
                    tracing::info!(replica = %cluster.replica_id, servers = %cluster.config.nats.join(","), "cluster mode: alert events on JetStream");
                    Arc::new(
                        cluster::JetStreamAlertLog::open(cluster, &config.alert_log, keys)
                            .context("opening the alert stream")?,
                    )
                }
                None => alerts::log::open(&config.alert_log).context("opening the alert log")?,
            };
            let subscribers = SubscriberLimits::new(
                config.alerts.max_subscribers,
                config.alerts.max_subscribers_per_token,
            );
            AlertHub::new(log, config.alerts.subscriber_buffer, subscribers, metrics)
                .context("reading the alert log")
        })
        .await??
    };
    tracing::info!(log = %hub.log().describe(), "alert log open");
    let spec = batcher.spec().clone();
    tracing::info!(model = %spec.tag, labels = spec.labels.len(), sha256 = %spec.sha256, "model loaded");
    let mut shared_customers = None;
    let customers = match (&cluster, customer_keys.clone()) {
        (Some(cluster), Some(keys)) => {
            let local = customers::Pseudonymizer::read_key_file(&config.customers.key_file)?;
            let secret = (keys.pseudonym_secret(local).await)
                .map_err(|e| anyhow::anyhow!("customer memory: the pseudonym key: {e}"))?;
            let (c, cluster) = (config.customers.clone(), cluster.clone());
            let store = tokio::task::spawn_blocking(move || {
                cluster::customers::JetStreamCustomerStore::open(cluster, &c, keys)
            })
            .await?
            .context("opening the customers stream")?;
            let store = Arc::new(store);
            shared_customers = Some(store.clone());
            let pseudonyms = customers::Pseudonymizer::new(&secret);
            Some(Arc::new(customers::CustomerMemory::new(
                store,
                pseudonyms,
                config.customers.clone(),
            )))
        }
        (None, _) if config.customers.enabled() => {
            let c = config.customers.clone();
            tokio::task::spawn_blocking(move || customers::CustomerMemory::open(&c))
                .await?
                .context("opening the customer store")?
        }
        _ => None,
    };
    let mut store = ConversationStore::new(StoreSettings::from(&config), metrics.clone());
    if let Some(memory) = &customers {
        tracing::info!(path = %config.customers.path.display(), "customer memory on");
        store = store.with_customers(memory.clone());
    }
    // Conversations are decided in the cluster's bucket, else in this process (saved to
    // `state.path`).
    let (store, persister) = match &cluster {
        Some(cluster) => {
            let ttl = Duration::from_secs(config.limits.conversation_ttl_secs);
            let codec = cluster::conversations::Codec {
                keys: customer_keys.clone(),
            };
            let shared =
                cluster::conversations::open(cluster, ttl, codec, config.cluster.fleet_view)
                    .await?;
            tracing::info!("cluster mode: conversation state in a JetStream key-value bucket");
            let store = Arc::new(store.with_shared(shared, config.cluster.fleet_view));
            store.watch_fleet();
            (store, None)
        }
        None => {
            let store = Arc::new(store);
            let persister = start_persisting(&config, &store, hub.log().clone(), &metrics).await?;
            (store, persister)
        }
    };
    let hub = Arc::new(hub);
    let models = Arc::new(ModelManager::new(
        batcher.clone(),
        config.clone(),
        metrics.clone(),
    ));
    if let Some(cluster) = &cluster {
        // Swaps made here reach the fleet; the fleet's swaps reach here.
        let cache = (config.alert_log.path.parent())
            .unwrap_or(std::path::Path::new("."))
            .join("models");
        let fleet = cluster::models::JetStreamModels::open(cluster, cache).await?;
        models.set_fleet(fleet.clone());
        fleet.follow(models.clone());
    }
    let mut pipeline = pipeline::Pipeline::new(
        &config,
        store.clone(),
        batcher.clone(),
        hub.clone(),
        metrics.clone(),
    )
    .with_shadow(models.clone());
    if let Some(memory) = &customers {
        pipeline = pipeline.with_customers(memory.clone());
    }
    let pipeline = Arc::new(pipeline);
    let app = Arc::new(App {
        state: persister.as_ref().map(|p| Arc::new(p.handle())),
        store,
        hub,
        pipeline,
        streams: Arc::new(Semaphore::new(config.limits.max_streams)),
        auth,
        models,
        customers,
        batcher,
        metrics: metrics.clone(),
        serving: std::sync::atomic::AtomicBool::new(true),
        started_at: std::time::SystemTime::now(),
        config,
    });

    if let Some(shared) = shared_customers {
        // An erasure made on another replica: this replica's live conversations of the customer
        // and its copy of their alert events.
        // (The replica that erased removed them from the conversation bucket.) Weak: the store
        // is part of the app.
        let app_ = Arc::downgrade(&app);
        shared.on_erased(Box::new(move |customer, conversations| {
            let Some(app) = app_.upgrade() else {
                return;
            };
            let live = app.store.forget_customer(customer).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "erasure from another replica: live conversations not all forgotten");
                    Vec::new()
                });
            let mut all = conversations.to_vec();
            all.extend(live);
            if let Err(e) = app.hub.log().erase(&all) {
                tracing::error!(error = %e, "erasure from another replica: alert events not blanked");
            }
        }));
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    let routes = grpc::routes(app.clone())?.add_service(health_service);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    if let Some(listener) = listeners.metrics {
        tracing::info!(addr = %listener.local_addr()?, "metrics on /metrics");
        tokio::spawn(metrics.clone().serve(listener, stopped(stop_rx.clone())));
    }
    if let Some(listener) = listeners.web {
        tracing::info!(addr = %listener.local_addr()?, "supervisor dashboard on http://{}/", listener.local_addr()?);
        tokio::spawn(web::serve(app.clone(), listener, stop_rx.clone()));
    }
    tokio::spawn(evict_idle(app.clone(), stopped(stop_rx.clone())));
    tokio::spawn(alert_retention(app.clone(), stopped(stop_rx.clone())));
    tokio::spawn(customer_retention(app.clone(), stopped(stop_rx.clone())));
    tokio::spawn(alert_log_backlog(
        app.clone(),
        health.clone(),
        stopped(stop_rx.clone()),
    ));
    if cluster.is_some() {
        tokio::spawn(sweep_outboxes(app.clone(), stopped(stop_rx.clone())));
    }
    tokio::spawn(conversation_state_health(
        app.clone(),
        health.clone(),
        stopped(stop_rx.clone()),
    ));
    if let Some(dir) = app.config.model.watch_dir.clone() {
        tokio::spawn(watch_models(app.clone(), dir, stopped(stop_rx.clone())));
    }

    let addr = listeners.grpc.local_addr()?;
    let server = tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY a lone small result waits for the client's delayed ACK (~40 ms).
            tonic::transport::server::TcpIncoming::from(listeners.grpc).with_nodelay(Some(true)),
            stopped(stop_rx),
        );
    let server = tokio::spawn(server);
    let (workers, intra_threads, solo_threads) = inference::thread_layout(&app.config);
    tracing::info!(
        %addr,
        runtime_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        inference_workers = workers,
        intra_threads,
        solo_threads = solo_threads.unwrap_or(0),
        "serving gRPC"
    );

    shutdown.await;
    tracing::info!("shutting down: NOT_SERVING, draining");
    set_health(&health, ServingStatus::NotServing).await;
    app.serving
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(app.config.server.shutdown_grace_secs);
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result?.context("gRPC server")?,
        Err(_) => tracing::warn!(?grace, "open calls did not finish within the grace period"),
    }
    if let Some(persister) = persister {
        // The last save, after the last turn: a graceful restart loses nothing.
        tokio::task::spawn_blocking(move || persister.stop()).await?;
        tracing::info!(tracked = app.store.tracked(), "conversation state saved");
    }
    if let Some(memory) = app.customers.clone() {
        tokio::task::spawn_blocking(move || memory.flush()).await?;
    }
    Ok(())
}

/// Deletes customers' contacts older than `customers.retention_days`, at start and hourly.
async fn customer_retention(app: Arc<App>, stopped: impl Future<Output = ()>) {
    let Some(memory) = app.customers.clone() else {
        return;
    };
    let days = app.config.customers.retention_days;
    if days == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(3_600));
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let memory = memory.clone();
                let before = customers::now_ms().saturating_sub(days * 86_400_000);
                match tokio::task::spawn_blocking(move || memory.store.apply_retention(before)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(deleted)) => tracing::info!(deleted, days, "customer contacts past retention deleted"),
                    Ok(Err(e)) => tracing::error!(error = %e, "customer retention"),
                    Err(e) => tracing::error!(error = %e, "customer retention task"),
                }
            }
            _ = &mut stopped => return,
        }
    }
}

/// Opens the state store the config names, puts saved conversations back into `store`, and
/// starts saving changes; None when `state.path` is empty.
async fn start_persisting(
    config: &Config,
    store: &Arc<ConversationStore>,
    log: Arc<dyn alerts::AlertLog>,
    metrics: &Metrics,
) -> anyhow::Result<Option<persist::Persister>> {
    let path = config.state.path.clone();
    let opened = {
        let state = config.state.clone();
        tokio::task::spawn_blocking(move || {
            let store = persist::open(&state).context("opening the conversation state store")?;
            let Some(store) = store else {
                return anyhow::Ok(None);
            };
            let mut saved = store
                .load()
                .context("reading the conversation state store")?;
            let reconciled = persist::reconcile(&mut saved, &*log)
                .context("reading the alert log to reconcile restored conversations")?;
            anyhow::Ok(Some((store, saved, reconciled)))
        })
        .await??
    };
    let Some((state, saved, reconciled)) = opened else {
        tracing::info!("conversation state in memory only (state.path is empty)");
        return Ok(None);
    };
    let restored = persist::restore(saved, store);
    tracing::info!(path = %path.display(), restored, reconciled, "conversation state restored");
    Ok(Some(persist::Persister::start(
        state,
        store.clone(),
        Duration::from_millis(config.state.persist_interval_ms),
        metrics.clone(),
    )))
}

/// The whole server ("") and each of its services, as health checks name them.
const HEALTH_SERVICES: [&str; 7] = [
    "",
    "emotion.v1.EmotionAnalysis",
    "emotion.v1.AlertFeed",
    "emotion.v1.AgentAssist",
    "emotion.v1.CustomerMemory",
    "emotion.v1.QualityReport",
    "emotion.v1.ModelAdmin",
];

async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Forgets idle conversations every so often.
async fn evict_idle(app: Arc<App>, stopped: impl Future<Output = ()>) {
    let ttl = Duration::from_secs(app.config.limits.conversation_ttl_secs);
    let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let evicted = app.store.evict_idle(Instant::now());
                if evicted > 0 {
                    tracing::info!(evicted, tracked = app.store.tracked(), "evicted idle conversations");
                }
                let ended = app.store.end_idle_shared().await;
                if ended > 0 {
                    tracing::info!(ended, "idle conversations ended in the shared store");
                }
            }
            _ = &mut stopped => return,
        }
    }
}

/// Loads each subdirectory of `dir` in which a `READY` file appears (once per READY file's
/// modification time), through the same validation and gate as LoadModel.
async fn watch_models(app: Arc<App>, dir: std::path::PathBuf, stopped: impl Future<Output = ()>) {
    let every = Duration::from_secs(app.config.model.watch_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    let mut seen: std::collections::HashMap<std::path::PathBuf, std::time::SystemTime> =
        std::collections::HashMap::new();
    tokio::pin!(stopped);
    tracing::info!(dir = %dir.display(), "watching for models (a READY file marks one)");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => return,
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut ready: Vec<(std::time::SystemTime, std::path::PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let marker = e.path().join("READY");
                let at = std::fs::metadata(&marker).and_then(|m| m.modified()).ok()?;
                Some((at, e.path()))
            })
            .filter(|(at, path)| seen.get(path) != Some(at))
            .collect();
        ready.sort();
        for (at, path) in ready {
            seen.insert(path.clone(), at);
            match app.models.load(&path, false).await {
                Ok(s) => {
                    tracing::info!(model = %s.model.spec.tag, path = %path.display(), "watched model loaded")
                }
                Err(error) => tracing::error!(%error, "watched model refused"),
            }
        }
    }
}

/// Every 5 s, in cluster mode: publishes the alert events of commits whose replica died before
/// publishing them (and that nobody has read since); every replica sweeps, the stream keeps one
/// copy of each event.
async fn sweep_outboxes(app: Arc<App>, stopped: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => return,
        }
        match app.pipeline.sweep_outboxes().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(outboxes = n, "published alert events a replica had left"),
            Err(error) => tracing::debug!(%error, "outbox sweep skipped"),
        }
    }
}

/// Every second, in cluster mode: while the conversation bucket does not answer (NATS
/// unreachable, or this replica cut off from its majority), the server and EmotionAnalysis say
/// NOT_SERVING, so a load balancer moves the turns to replicas that can commit them (each turn
/// sent here meanwhile is answered UNAVAILABLE); SERVING again once it answers.
async fn conversation_state_health(
    app: Arc<App>,
    health: tonic_health::server::HealthReporter,
    stopped: impl Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut degraded = false;
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => return,
        }
        let Some(probe) = app.store.probe_shared().await else {
            return; // embedded: memory is the truth
        };
        if probe.is_err() != degraded && app.serving.load(std::sync::atomic::Ordering::Relaxed) {
            degraded = probe.is_err();
            let status = match probe {
                Err(error) => {
                    tracing::error!(%error, "conversation state unreachable: NOT_SERVING");
                    ServingStatus::NotServing
                }
                Ok(()) => {
                    tracing::info!("conversation state reachable again: SERVING");
                    ServingStatus::Serving
                }
            };
            for service in ["", "emotion.v1.EmotionAnalysis"] {
                health.set_service_status(service, status).await;
            }
        }
    }
}

/// Every second: while alert events wait for the log (it took no writes; the hub's writer retries
/// them), or the log reports a fault (cluster mode: the alert stream was created again under
/// this replica's copy, until the copy is emptied and the new stream followed), AlertFeed health
/// says NOT_SERVING.
async fn alert_log_backlog(
    app: Arc<App>,
    health: tonic_health::server::HealthReporter,
    stopped: impl Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut degraded = false;
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => return,
        }
        let waiting = app.hub.unlogged();
        let fault = app.hub.log().fault();
        let serving = app.serving.load(std::sync::atomic::Ordering::Relaxed);
        if (waiting > 0 || fault.is_some()) != degraded && serving {
            degraded = waiting > 0 || fault.is_some();
            let status = if let Some(fault) = &fault {
                tracing::error!(%fault, "alert log not to be trusted: AlertFeed NOT_SERVING until its copy is rebuilt");
                ServingStatus::NotServing
            } else if degraded {
                tracing::error!(waiting, "alert log not writable: AlertFeed NOT_SERVING");
                ServingStatus::NotServing
            } else {
                ServingStatus::Serving
            };
            health
                .set_service_status("emotion.v1.AlertFeed", status)
                .await;
        }
    }
}

/// Applies the alert log's retention at start and then every minute.
async fn alert_retention(app: Arc<App>, stopped: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let c = &app.config.alert_log;
                let (max_age, max_events) = (c.max_age(), c.retention_max_events);
                match app.hub.apply_retention(max_age, max_events).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "alert log retention"),
                    Err(error) => {
                        app.metrics.alert_log_errors.inc();
                        tracing::error!(%error, "alert log retention failed");
                    }
                }
            }
            _ = &mut stopped => return,
        }
    }
}

/// The module layering, checked on the sources: the leaves (domain, lang, wallclock) import no
/// other module of the crate, the configuration only those, and auth, alerts and assist nothing
/// above them, so config, auth, alerts, assist and conversation never import each other in a
/// circle.
#[cfg(test)]
mod layering {
    use std::path::Path;

    fn imports(module: &str) -> Vec<String> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.join(format!("{module}.rs"))];
        let mut dirs = vec![src.join(module)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let mut found = Vec::new();
        for file in files.iter().filter(|f| f.exists()) {
            let text = std::fs::read_to_string(file).unwrap();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if name != module && !found.contains(&name) {
                        found.push(name);
                    }
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn leaves_config_auth_and_alerts_import_only_what_is_below_them() {
        // The scanner sees imports where they are (the conversation store uses the alerts).
        assert!(imports("conversation").contains(&"alerts".to_string()));
        for (module, allowed) in [
            ("domain", &[][..]),
            ("lang", &[]),
            ("wallclock", &[]),
            ("config", &["domain", "lang"]),
            ("auth", &["config", "domain", "pb"]),
            // Agent assist decides guidance from what a turn left; the conversation calls it.
            ("assist", &["alerts", "config", "domain", "lang"]),
            (
                "alerts",
                &[
                    "config",
                    "domain",
                    "lang",
                    "wallclock",
                    "pb",
                    "metrics",
                    "error",
                ],
            ),
        ] {
            let extra: Vec<String> = imports(module)
                .into_iter()
                .filter(|m| !allowed.contains(&m.as_str()))
                .collect();
            assert!(extra.is_empty(), "{module} imports {extra:?}");
        }
    }
}
