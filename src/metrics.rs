//! Prometheus metrics, and the HTTP endpoint that serves them at `/metrics`.
//! Labels carry outcomes and severities only: never conversation ids or turn text.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// scored, duplicate, rejected, failed
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub severity: &'static str,
    pub state: &'static str,
}

/// Cheap to clone: every field is a shared handle.
#[derive(Clone)]
pub struct Metrics {
    pub turns: Family<OutcomeLabel, Counter>,
    pub batch_size: Histogram,
    pub queue_depth: Gauge,
    /// A text's wait from its submission to the start of the ONNX Runtime call that scores it.
    pub queue_wait_seconds: Histogram,
    pub inference_seconds: Histogram,
    /// StreamTurns: a turn's time from being read off its stream to its result being sent back.
    pub turn_seconds: Histogram,
    pub solo_batches: Counter,
    /// A lone call's time on a worker's single-thread session over its time on the solo session
    /// (moving averages; above 1: solo is faster and lone calls run solo).
    pub solo_speedup: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Tokens of the texts run (no padding), and token positions computed (texts x the call's
    /// longest text): their ratio is the work spent on padding.
    pub inference_tokens: Counter,
    pub inference_positions: Counter,
    pub alerts: Family<AlertLabels, Counter>,
    pub active_conversations: Gauge,
    pub open_streams: Gauge,
    pub subscribers: Gauge,
    pub lagging_subscribers: Counter,
    pub alert_log_errors: Counter,
    pub shadow_turns: Family<OutcomeLabel, Counter>,
    pub shadow_valence_correlation: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub shadow_top_label_agreement: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub shadow_alert_agreement: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub model_swaps: Counter,
    pub alert_log_backlog: Gauge,
    pub alert_events_dropped: Counter,
    pub state_saved: Counter,
    pub state_save_seconds: Histogram,
    pub state_save_errors: Counter,
    /// Commits of conversation state that found another replica's commit first (cluster mode).
    pub conflicts: Counter,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let turns = Family::<OutcomeLabel, Counter>::default();
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let queue_depth = Gauge::default();
        let queue_wait_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let inference_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let turn_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let solo_batches = Counter::default();
        let solo_speedup = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let inference_tokens = Counter::default();
        let inference_positions = Counter::default();
        let alerts = Family::<AlertLabels, Counter>::default();
        let active_conversations = Gauge::default();
        let open_streams = Gauge::default();
        let subscribers = Gauge::default();
        let lagging_subscribers = Counter::default();
        let alert_log_errors = Counter::default();
        let shadow_turns = Family::<OutcomeLabel, Counter>::default();
        let shadow_valence_correlation = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let shadow_top_label_agreement = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let shadow_alert_agreement = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let model_swaps = Counter::default();
        let alert_log_backlog = Gauge::default();
        let alert_events_dropped = Counter::default();
        let state_saved = Counter::default();
        let state_save_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let state_save_errors = Counter::default();
        let conflicts = Counter::default();

        let mut registry = Registry::with_prefix("emotion");
        registry.register("turns", "Turns answered, by outcome", turns.clone());
        registry.register(
            "batch_size",
            "Texts per inference batch",
            batch_size.clone(),
        );
        registry.register(
            "queue_depth",
            "Texts waiting for inference",
            queue_depth.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Per text: from its submission to the start of the ONNX Runtime call that scores it",
            queue_wait_seconds.clone(),
        );
        registry.register(
            "inference_seconds",
            "ONNX Runtime time per batch",
            inference_seconds.clone(),
        );
        registry.register(
            "turn_seconds",
            "StreamTurns, per turn: from being read off its stream to its result being sent back (results leave in the order their turns arrived, so this includes waiting for earlier turns of the same stream)",
            turn_seconds.clone(),
        );
        registry.register(
            "solo_batches",
            "Inference batches that ran alone on the solo session (every core)",
            solo_batches.clone(),
        );
        registry.register(
            "solo_speedup",
            "Lone calls: time on one thread over time on the solo session (moving averages; lone calls take the faster)",
            solo_speedup.clone(),
        );
        registry.register(
            "inference_tokens",
            "Tokens of the texts sent to ONNX Runtime, padding not counted",
            inference_tokens.clone(),
        );
        registry.register(
            "inference_positions",
            "Token positions ONNX Runtime computed (texts x each call's longest text)",
            inference_positions.clone(),
        );
        registry.register(
            "alerts",
            "Alert events published, by severity and state",
            alerts.clone(),
        );
        registry.register(
            "active_conversations",
            "Conversations tracked",
            active_conversations.clone(),
        );
        registry.register(
            "open_streams",
            "Open StreamTurns calls",
            open_streams.clone(),
        );
        registry.register(
            "subscribers",
            "Connected alert subscribers",
            subscribers.clone(),
        );
        registry.register(
            "lagging_subscribers",
            "Times an alert subscriber fell behind the live buffer and caught up from the log",
            lagging_subscribers.clone(),
        );
        registry.register(
            "alert_log_errors",
            "Alert events that could not be written to or read from the durable log",
            alert_log_errors.clone(),
        );
        registry.register(
            "shadow_turns",
            "Turns sent to the shadow model, by outcome (compared, skipped)",
            shadow_turns.clone(),
        );
        registry.register(
            "shadow_valence_correlation",
            "Pearson correlation of live and shadow turn valence so far",
            shadow_valence_correlation.clone(),
        );
        registry.register(
            "shadow_top_label_agreement",
            "Share of compared turns with the same top label",
            shadow_top_label_agreement.clone(),
        );
        registry.register(
            "shadow_alert_agreement",
            "Share of compared customer turns with the same rolling-threshold alert level",
            shadow_alert_agreement.clone(),
        );
        registry.register(
            "model_swaps",
            "Models put into service (LoadModel, RollbackModel, PromoteShadow, watched folder)",
            model_swaps.clone(),
        );
        registry.register(
            "state_saved_conversations",
            "Conversation snapshots written to the state store",
            state_saved.clone(),
        );
        registry.register(
            "state_save_seconds",
            "Time per state save (copying changed conversations and writing them)",
            state_save_seconds.clone(),
        );
        registry.register(
            "state_save_errors",
            "State saves that failed (retried at the next interval)",
            state_save_errors.clone(),
        );
        registry.register(
            "conversation_commit_conflicts",
            "Commits of conversation state that found another replica's commit first (cluster mode)",
            conflicts.clone(),
        );
        registry.register(
            "alert_log_backlog",
            "Alert events waiting for the durable log to take writes (not yet sent to anyone)",
            alert_log_backlog.clone(),
        );
        registry.register(
            "alert_events_dropped",
            "Alert events refused because the log took no writes and the backlog was full",
            alert_events_dropped.clone(),
        );
        Self {
            alert_log_backlog,
            alert_events_dropped,
            state_saved,
            state_save_seconds,
            state_save_errors,
            conflicts,
            turns,
            batch_size,
            queue_depth,
            queue_wait_seconds,
            inference_seconds,
            turn_seconds,
            solo_batches,
            solo_speedup,
            inference_tokens,
            inference_positions,
            alerts,
            active_conversations,
            open_streams,
            subscribers,
            lagging_subscribers,
            alert_log_errors,
            shadow_turns,
            shadow_valence_correlation,
            shadow_top_label_agreement,
            shadow_alert_agreement,
            model_swaps,
            registry: Arc::new(registry),
        }
    }

    pub fn turn(&self, outcome: &'static str) {
        self.turns.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// Serves `GET /metrics` on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = self.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
