//! One typed, validated configuration: built-in defaults, then a TOML file, then `EMOTION__*`
//! environment variables, then command-line flags. Validated before any port is bound.
//!
//! Environment variables address any field by its TOML path with `__` between the parts, e.g.
//! `EMOTION__BATCHING__MAX_BATCH=16` or `EMOTION__SERVER__LISTEN=0.0.0.0:50051`; values are parsed as
//! TOML (numbers, booleans) and fall back to strings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "EMOTION__";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub model: ModelConfig,
    pub batching: BatchingConfig,
    pub limits: LimitsConfig,
    pub scoring: ScoringConfig,
    pub alerts: AlertConfig,
    pub alert_log: AlertLogConfig,
    pub auth: AuthConfig,
    pub triggers: crate::alerts::triggers::TriggersConfig,
    pub playbook: crate::alerts::explain::PlaybookConfig,
}

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

/// One bearer token, by its SHA-256 (`emotion token` makes one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    pub role: crate::auth::Role,
    /// Tenants the token is limited to; empty or absent: all.
    #[serde(default)]
    pub tenants: Vec<String>,
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Model directory (see docs/models.md).
    pub dir: PathBuf,
    /// libonnxruntime.so to load; default: `ORT_DYLIB_PATH`, else the one the build fetched.
    pub onnxruntime: Option<PathBuf>,
    /// ONNX Runtime intra-op threads per inference worker; 0 = CPU cores / inference_workers.
    pub intra_threads: usize,
    /// Inference threads, each with its own ONNX Runtime session, taking batches from one queue.
    /// On 2 cores, 2 workers of 1 thread beat 1 worker of 2 threads under load (BENCHMARKS.md).
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
    /// How much turn text alerts carry: "masked" (PII replaced), "none" (as sent), "no_text".
    pub redaction: crate::alerts::explain::Redaction,
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
            onnxruntime: None,
            intra_threads: 0,
            inference_workers: 2,
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
            redaction: crate::alerts::explain::Redaction::Masked,
            excerpt_chars: 160,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `file` (if any), then `EMOTION__*` variables from `env`; validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|source| ConfigError::Parse {
                    path: path.into(),
                    source,
                })?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            set_path(&mut table, &path, parse_env_value(&value)).map_err(|message| {
                ConfigError::Env {
                    name: name.clone(),
                    message,
                }
            })?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError::Invalid(msg));
        self.metrics_addr()?;
        self.web_addr()?;
        if self.model.inference_workers == 0 || self.model.inference_workers > 64 {
            return fail(format!(
                "model.inference_workers must be in 1..=64, got {}",
                self.model.inference_workers
            ));
        }
        let b = &self.batching;
        if b.max_batch == 0 || b.max_batch > 1024 {
            return fail(format!(
                "batching.max_batch must be in 1..=1024, got {}",
                b.max_batch
            ));
        }
        if b.max_batch_tokens < 512 {
            return fail(format!(
                "batching.max_batch_tokens must be at least 512, got {}",
                b.max_batch_tokens
            ));
        }
        if b.queue_capacity < b.max_batch {
            return fail(format!(
                "batching.queue_capacity ({}) must be at least batching.max_batch ({})",
                b.queue_capacity, b.max_batch
            ));
        }
        let l = &self.limits;
        for (name, value) in [
            ("limits.max_text_bytes", l.max_text_bytes),
            (
                "limits.max_conversation_id_bytes",
                l.max_conversation_id_bytes,
            ),
            ("limits.max_texts_per_request", l.max_texts_per_request),
            ("limits.max_streams", l.max_streams),
            (
                "limits.max_in_flight_per_stream",
                l.max_in_flight_per_stream,
            ),
            ("limits.max_conversations", l.max_conversations),
            ("limits.max_history_turns", l.max_history_turns),
        ] {
            if value == 0 {
                return fail(format!("{name} must be positive"));
            }
        }
        if l.max_message_bytes < l.max_text_bytes + 1024 {
            return fail(format!(
                "limits.max_message_bytes ({}) must exceed limits.max_text_bytes ({}) by at least 1024",
                l.max_message_bytes, l.max_text_bytes
            ));
        }
        let s = &self.scoring;
        if !(0.0..=1.0).contains(&s.acoustic_weight) {
            return fail(format!(
                "scoring.acoustic_weight must be in [0, 1], got {}",
                s.acoustic_weight
            ));
        }
        if !(s.half_life_turns.is_finite() && s.half_life_turns > 0.0) {
            return fail(format!(
                "scoring.half_life_turns must be positive, got {}",
                s.half_life_turns
            ));
        }
        let a = &self.alerts;
        if !(-1.0..=1.0).contains(&a.warning_threshold)
            || !(-1.0..=1.0).contains(&a.critical_threshold)
        {
            return fail("alerts thresholds must be in [-1, 1]".into());
        }
        if a.critical_threshold >= a.warning_threshold {
            return fail(format!(
                "alerts.critical_threshold ({}) must be below alerts.warning_threshold ({})",
                a.critical_threshold, a.warning_threshold
            ));
        }
        if !(0.0..=1.0).contains(&a.hysteresis) {
            return fail(format!(
                "alerts.hysteresis must be in [0, 1], got {}",
                a.hysteresis
            ));
        }
        if a.subscriber_buffer == 0 || a.evidence_turns == 0 {
            return fail(
                "alerts.subscriber_buffer and alerts.evidence_turns must be positive".into(),
            );
        }
        if a.excerpt_chars > 2_000 {
            return fail(format!(
                "alerts.excerpt_chars must be at most 2000, got {}",
                a.excerpt_chars
            ));
        }
        self.triggers.validate().map_err(ConfigError::Invalid)?;
        if self.alert_log.path.as_os_str().is_empty() {
            return fail("alert_log.path must name a file".into());
        }
        if self.alert_log.retention_max_events == 0 {
            return fail("alert_log.retention_max_events must be positive".into());
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.auth.tokens {
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                return fail(format!(
                    "auth.tokens: every token needs a unique, non-empty name ({:?})",
                    t.name
                ));
            }
        }
        crate::auth::Authenticator::new(&self.auth, self.server.listen.ip().is_loopback())?;
        Ok(())
    }

    /// The metrics endpoint's address, `None` when disabled.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr("server.metrics_listen", &self.server.metrics_listen)
    }

    /// The dashboard's address, `None` when disabled.
    pub fn web_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr("server.web_listen", &self.server.web_listen)
    }

    pub fn max_wait(&self) -> Duration {
        Duration::from_micros(self.batching.max_wait_us)
    }
}

fn optional_addr(field: &str, value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    match value.trim() {
        "" => Ok(None),
        addr => addr
            .parse()
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("{field} `{addr}` is not an address: {e}"))),
    }
}

fn parse_env_value(value: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(inner) => set_path(inner, rest, value),
            _ => Err(format!("`{first}` is not a section")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
        assert_eq!(Config::load(None, []).unwrap(), Config::default());
    }

    #[test]
    fn file_then_env_override() {
        let dir = std::env::temp_dir().join(format!("emotion-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[batching]\nmax_batch = 8\n[alerts]\ncooldown_secs = 5\n\
             [[auth.tokens]]\nname = \"sam\"\nrole = \"supervisor\"\nsha256 = \"",
        )
        .unwrap();
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str(&crate::auth::token_hash("t"));
        text.push_str("\"\n");
        std::fs::write(&file, text).unwrap();
        let env = [
            ("EMOTION__BATCHING__MAX_BATCH".to_string(), "16".to_string()),
            (
                "EMOTION__SERVER__LISTEN".to_string(),
                "0.0.0.0:6000".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::load(Some(&file), env).unwrap();
        assert_eq!(c.batching.max_batch, 16);
        assert_eq!(c.alerts.cooldown_secs, 5);
        assert_eq!(c.server.listen.port(), 6000);
        assert_eq!(c.auth.tokens[0].role, crate::auth::Role::Supervisor);
        // Beyond loopback without a token, the server refuses to start.
        std::fs::write(&file, "[batching]\nmax_batch = 8\n").unwrap();
        let env = [(
            "EMOTION__SERVER__LISTEN".to_string(),
            "0.0.0.0:6000".to_string(),
        )];
        let err = Config::load(Some(&file), env).unwrap_err().to_string();
        assert!(err.contains("auth.tokens"), "{err}");
    }

    #[test]
    fn the_readme_config_example_loads() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").expect("a toml block") + 8;
        let len = readme[start..].find("```").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, &readme[start..start + len]).unwrap();
        let c = Config::load(Some(&file), []).unwrap();
        assert_eq!(
            c.alerts.redaction,
            crate::alerts::explain::Redaction::Masked
        );
        assert!(c.triggers.escalation.enabled);
    }

    #[test]
    fn rejects_bad_values_naming_the_field() {
        let env = [(
            "EMOTION__ALERTS__CRITICAL_THRESHOLD".to_string(),
            "0.2".to_string(),
        )];
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("alerts.critical_threshold"), "{err}");
        let env = [("EMOTION__BATCHING__MAX_BACH".to_string(), "3".to_string())];
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("max_bach"), "{err}");
    }
}
