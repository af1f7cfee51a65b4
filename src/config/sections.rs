//! The configuration's sections, each with its defaults (the TOML tables `[server]`, `[model]`,
//! `[batching]`, `[limits]`, `[scoring]`, `[alerts]`, `[alert_log]`, `[state]`, `[auth]`, `[cluster]`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When bearer tokens are required.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// On when `server.listen` is not a loopback address.
    #[default]
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub tokens: Vec<TokenConfig>,
}

impl AuthConfig {
    /// Whether callers must present a token (`auto`: when listening beyond loopback).
    pub fn enabled(&self, listen_is_loopback: bool) -> bool {
        match self.mode {
            AuthMode::On => true,
            AuthMode::Off => false,
            AuthMode::Auto => !listen_is_loopback,
        }
    }

    /// Tokens to check callers against: there are some when auth is on, each a unique name and
    /// a unique 64-hex-digit SHA-256.
    pub fn validate(&self, listen_is_loopback: bool) -> Result<(), String> {
        if self.enabled(listen_is_loopback) && self.tokens.is_empty() {
            return Err(
                "auth is on (auth.mode, or listening beyond loopback) but no auth.tokens are configured; \
                 create one with `emotion token --name NAME --role ROLE`"
                    .into(),
            );
        }
        let (mut names, mut hashes) = (
            std::collections::HashSet::new(),
            std::collections::HashSet::new(),
        );
        for t in &self.tokens {
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                return Err(format!(
                    "auth.tokens: every token needs a unique, non-empty name ({:?})",
                    t.name
                ));
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "auth.tokens {:?}: sha256 must be 64 hex digits",
                    t.name
                ));
            }
            if !hashes.insert(t.sha256.to_ascii_lowercase()) {
                return Err(format!(
                    "auth.tokens {:?}: the same token hash is configured twice",
                    t.name
                ));
            }
            match (t.role == crate::domain::Role::Agent, t.agent_id.is_empty()) {
                (true, true) => {
                    return Err(format!(
                        "auth.tokens {:?}: role agent needs agent_id (the agent whose guidance it reads)",
                        t.name
                    ));
                }
                (false, false) => {
                    return Err(format!(
                        "auth.tokens {:?}: agent_id is for role agent only (this one is {})",
                        t.name,
                        t.role.as_str()
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One bearer token, by its SHA-256 (`emotion token` makes one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    pub role: crate::domain::Role,
    /// Tenants the token is limited to; empty or absent: all.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Role `agent` only, and required for it: the agent id whose guidance the token may read.
    #[serde(default)]
    pub agent_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address. Loopback by default: nothing is exposed until an operator says so.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address; an empty string disables the endpoint.
    pub metrics_listen: String,
    /// Supervisor dashboard (HTTP) listen address; an empty string disables it.
    pub web_listen: String,
    /// Seconds in-flight streams get to finish after SIGINT/SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Threads of the async runtime (gRPC, dashboard, cluster client; inference has its own
    /// threads); 0 = one per 4 CPU cores, at least 1. The async side takes ~5-7 % of the CPU at
    /// saturation, and on 2 cores one runtime thread instead of two scored 2-3 % more turns at 1,
    /// 64 and 1,000 conversations: fewer wake-ups of an idle sibling (BENCHMARKS.md).
    pub runtime_threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Model directory (see docs/models.md): scores every turn no language route below takes.
    pub dir: PathBuf,
    /// Language routes: a turn whose text is in this language (by its script, else by its
    /// conversation's `language` tag) is scored by this model instead. Keys are language tags
    /// (`zh`); default: Chinese to the shipped multilingual model.
    pub languages: std::collections::BTreeMap<String, PathBuf>,
    /// libonnxruntime.so to load; default: `ORT_DYLIB_PATH`, else the one the build fetched.
    pub onnxruntime: Option<PathBuf>,
    /// ONNX Runtime intra-op threads per inference worker; 0 = CPU cores / inference_workers.
    pub intra_threads: usize,
    /// ONNX Runtime threads of the solo session: a batch that finds no other batch running and
    /// nothing else waiting runs on it, so a lone conversation gets every core. 0 = CPU cores;
    /// at most `intra_threads`: no solo session (every batch on its worker's own session).
    pub solo_threads: usize,
    /// Runs the per-token int8 arithmetic of a model's graph on the service's fused kernels
    /// (src/inference/fuse.rs; bit-identical scores, fewer passes). The model file is unchanged.
    pub fused_kernels: bool,
    /// Inference threads, each with its own ONNX Runtime session, taking batches from one queue.
    /// 0 = one per two CPU cores, at least 2. On 2 cores, 2 workers of 1 thread beat 1 worker of
    /// 2 threads under load; on 16, 8 workers of 2 threads beat 2 of 8 (BENCHMARKS.md).
    pub inference_workers: usize,
    /// The `emotion` binary that validates a candidate model in a child process; default: this
    /// executable.
    pub checker: Option<PathBuf>,
    /// Seconds a candidate's validation (gate included) may take.
    pub check_timeout_secs: u64,
    /// Quality gate for LoadModel: a labelled TSV (GoEmotions format) both models are evaluated
    /// on; the candidate is refused if its macro-F1 is more than `gate_max_drop` below the live
    /// model's. Unset: no gate.
    pub gate_data: Option<PathBuf>,
    pub gate_max_drop: f64,
    /// A folder to watch: a subdirectory in which a file named `READY` appears is loaded as with
    /// LoadModel (validated, gated), once. Unset: no watching.
    pub watch_dir: Option<PathBuf>,
    pub watch_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BatchingConfig {
    /// Most turns taken from the queue at once.
    pub max_batch: usize,
    /// Most padded tokens (turns x longest turn) in one ONNX Runtime call: a batch is sorted by
    /// length and split into calls under this budget.
    pub max_batch_tokens: usize,
    /// How long the first turn of a batch may wait for company, in microseconds. 0: take what is
    /// queued and go (turns that arrive while a batch runs form the next one).
    pub max_wait_us: u64,
    /// Turns waiting for inference; beyond it unary calls fail fast and streams wait.
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_text_bytes: usize,
    pub max_conversation_id_bytes: usize,
    /// Each of a turn's `context` fields (tenant, queue, agent_id, language): they are kept per
    /// conversation, per alert and per heatmap row.
    pub max_context_field_bytes: usize,
    /// Largest gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    pub max_texts_per_request: usize,
    /// Concurrent StreamTurns calls.
    pub max_streams: usize,
    /// Turns of one stream being scored at once; the stream stops reading beyond it (backpressure).
    pub max_in_flight_per_stream: usize,
    /// Conversations tracked at once; a turn that would start one more gets RESOURCE_EXHAUSTED.
    pub max_conversations: usize,
    /// Conversations with no turn for this long are forgotten.
    pub conversation_ttl_secs: u64,
    /// Scored turns kept per conversation for GetConversation and idempotent re-sends.
    pub max_history_turns: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringConfig {
    /// Weight of `acoustic_valence` when fused with the text valence: v = (1-w)·text + w·acoustic.
    pub acoustic_weight: f32,
    /// Turns after which a turn's weight in the rolling score has halved.
    pub half_life_turns: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    pub warning_threshold: f32,
    pub critical_threshold: f32,
    /// Customer turns a conversation needs before it can alert.
    pub min_customer_turns: u32,
    /// An alert resolves only once the rolling score is above the warning threshold plus this.
    pub hysteresis: f32,
    /// After an alert of a severity was raised for a conversation, no new one of that severity
    /// is raised for it within this many seconds.
    pub cooldown_secs: u64,
    /// Customer turns attached to an alert as evidence.
    pub evidence_turns: usize,
    /// Live alerts buffered for subscribers; one further behind catches up from the alert log.
    pub subscriber_buffer: usize,
    /// Open alert subscribers (SubscribeAlerts calls and dashboard SSE streams together).
    pub max_subscribers: usize,
    /// Open alert subscribers per authenticated token.
    pub max_subscribers_per_token: usize,
    /// How much turn text alerts carry: "masked" (PII replaced), "none" (as sent), "no_text".
    pub redaction: super::playbook::Redaction,
    /// Longest text excerpt per evidence turn, in characters.
    pub excerpt_chars: usize,
}

/// How durable an append is (SQLite's `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogSync {
    /// Survives the process being killed (kill -9, crash); a power loss may lose the last events.
    #[default]
    Normal,
    /// Also survives a power loss: one fsync per alert event.
    Full,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertLogConfig {
    /// SQLite database file, created (with its directory) on first run.
    pub path: PathBuf,
    pub sync: LogSync,
    /// Events older than this many days are deleted; 0 keeps them regardless of age.
    pub retention_days: u64,
    /// At most this many events are kept (the newest).
    pub retention_max_events: u64,
}

impl Default for AlertLogConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/alerts.sqlite3"),
            sync: LogSync::Normal,
            retention_days: 30,
            retention_max_events: 1_000_000,
        }
    }
}

/// Live conversation state between runs (`persist`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// SQLite database file of live conversations, created on first run; "" keeps conversation
    /// state in memory only (a restart starts every conversation afresh).
    pub path: PathBuf,
    /// How often changed conversations are saved: what a kill -9 can lose of rolling state.
    pub persist_interval_ms: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/state.sqlite3"),
            persist_interval_ms: 1_000,
        }
    }
}

impl AlertLogConfig {
    pub fn max_age(&self) -> Option<Duration> {
        (self.retention_days > 0).then(|| Duration::from_secs(self.retention_days * 86_400))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: "127.0.0.1:9464".into(),
            web_listen: "127.0.0.1:8080".into(),
            shutdown_grace_secs: 10,
            runtime_threads: 0,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/models/goemotions-minilm-l6"
            )),
            languages: [(
                "zh".to_string(),
                PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/models/emotion-e5-zh-en"
                )),
            )]
            .into_iter()
            .collect(),
            onnxruntime: None,
            intra_threads: 0,
            solo_threads: 0,
            fused_kernels: true,
            inference_workers: 0,
            checker: None,
            check_timeout_secs: 300,
            gate_data: None,
            gate_max_drop: 0.02,
            watch_dir: None,
            watch_interval_secs: 10,
        }
    }
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch: 128,
            max_batch_tokens: 1024,
            max_wait_us: 0,
            queue_capacity: 1_024,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_text_bytes: 8 * 1024,
            max_conversation_id_bytes: 128,
            max_context_field_bytes: 128,
            max_message_bytes: 64 * 1024,
            max_texts_per_request: 256,
            max_streams: 1_024,
            max_in_flight_per_stream: 256,
            max_conversations: 100_000,
            conversation_ttl_secs: 30 * 60,
            max_history_turns: 64,
        }
    }
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            acoustic_weight: 0.5,
            half_life_turns: 2.0,
        }
    }
}

/// Guidance for the agent on the call (`[assist]`, `AgentAssist`; docs/assist.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AssistConfig {
    /// Off: no guidance events at all (supervisor alerts are unaffected).
    pub enabled: bool,
    /// The agent hears that the mood turned when the customer's rolling score is at or below
    /// this (milder than `alerts.warning_threshold`, so the agent hears first), or on a customer
    /// turn at or below `mood_turn_valence` that lowers it by at least `drop_delta`.
    pub mood_turned_below: f32,
    pub mood_turn_valence: f32,
    /// A turned mood recovers on a customer turn of at least `recovered_turn_valence` that brings
    /// the rolling score to `recovered_above`, or `recovery_rise` above its low since it turned.
    pub recovered_above: f32,
    pub recovered_turn_valence: f32,
    pub recovery_rise: f32,
    /// A customer turn is a mood drop (the brief's evidence) at or below this valence, or when it
    /// lowers the rolling score by at least `drop_delta`.
    pub drop_valence: f32,
    pub drop_delta: f32,
    /// Break suggestion: `strain_conversations` conversations of one agent raising
    /// `agent_strain` within `strain_window_mins`; then none again for `break_cooldown_mins`.
    pub strain_window_mins: u64,
    pub strain_conversations: usize,
    pub break_cooldown_mins: u64,
}

impl Default for AssistConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mood_turned_below: -0.25,
            mood_turn_valence: -0.6,
            recovered_above: 0.0,
            recovered_turn_valence: 0.3,
            recovery_rise: 0.3,
            drop_valence: -0.3,
            drop_delta: 0.15,
            strain_window_mins: 60,
            strain_conversations: 3,
            break_cooldown_mins: 30,
        }
    }
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            warning_threshold: -0.35,
            critical_threshold: -0.6,
            min_customer_turns: 2,
            hysteresis: 0.1,
            cooldown_secs: 300,
            evidence_turns: 3,
            subscriber_buffer: 1_024,
            max_subscribers: 10_000,
            max_subscribers_per_token: 1_000,
            redaction: super::playbook::Redaction::Masked,
            excerpt_chars: 160,
        }
    }
}

/// Cluster mode (`docs/cluster.md`): replicas sharing NATS JetStream. Empty `nats`: the embedded
/// mode (one process, SQLite), the default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs (any node of the cluster; the client learns the others).
    pub nats: Vec<String>,
    /// Prefix of every stream, bucket and subject name.
    pub prefix: String,
    /// JetStream replication of the streams and buckets this service creates (1, 3 or 5).
    pub replicas: usize,
    /// A publish or commit not acknowledged by then fails (the alert waits in the hub's backlog).
    pub op_timeout_ms: u64,
    /// A name for this replica in logs and the fleet (default: host name and process id).
    pub replica_id: String,
    /// The dashboard's at-risk list and heatmap over every replica's conversations (each
    /// replica announces a summary of each commit on core NATS, and every replica follows
    /// them); off, each replica's dashboard shows the conversations it applied and announces
    /// nothing. Set it alike on every replica.
    pub fleet_view: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats: Vec::new(),
            prefix: "emotion".into(),
            replicas: 3,
            op_timeout_ms: 5_000,
            replica_id: String::new(),
            fleet_view: true,
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.nats.is_empty()
    }

    pub fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.op_timeout_ms)
    }
}
