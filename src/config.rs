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

pub mod customers;
pub mod playbook;
mod sections;
pub mod triggers;

pub use customers::CustomersConfig;
pub use sections::{
    AlertConfig, AlertLogConfig, AssistConfig, AuthConfig, AuthMode, BatchingConfig, ClusterConfig,
    LimitsConfig, LogSync, ModelConfig, ScoringConfig, ServerConfig, StateConfig, TokenConfig,
};

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
    pub state: StateConfig,
    pub auth: AuthConfig,
    pub triggers: triggers::TriggersConfig,
    pub playbook: playbook::PlaybookConfig,
    pub assist: AssistConfig,
    pub customers: CustomersConfig,
    pub cluster: ClusterConfig,
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
        // The path says which key was wrong (serde's own message names only the type).
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Invalid(format!("{}: {}", e.path(), e.inner())))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError::Invalid(msg));
        if !(10..=60_000).contains(&self.state.persist_interval_ms) {
            return fail(format!(
                "state.persist_interval_ms must be in 10..=60000, got {}",
                self.state.persist_interval_ms
            ));
        }
        self.metrics_addr()?;
        self.web_addr()?;
        if let Some(tag) = self
            .model
            .languages
            .keys()
            .find(|t| crate::lang::Lang::from_tag(t).is_none())
        {
            return fail(format!(
                "model.languages: {tag:?} is not a language the service speaks (zh, en)"
            ));
        }
        if self.model.inference_workers > 64 {
            return fail(format!(
                "model.inference_workers must be in 0..=64 (0: one per two cores), got {}",
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
        // Upper bounds: beyond them a value is a typo, and some would overflow a timer, an
        // allocation or a semaphore at run time.
        const DAY: u64 = 86_400;
        let m = &self.model;
        let (l, a) = (&self.limits, &self.alerts);
        for (name, value, range) in [
            (
                "server.shutdown_grace_secs",
                self.server.shutdown_grace_secs,
                0..=3_600,
            ),
            (
                "server.runtime_threads",
                self.server.runtime_threads as u64,
                0..=1_024,
            ),
            ("model.intra_threads", m.intra_threads as u64, 0..=256),
            ("model.solo_threads", m.solo_threads as u64, 0..=256),
            ("model.check_timeout_secs", m.check_timeout_secs, 1..=DAY),
            ("model.watch_interval_secs", m.watch_interval_secs, 1..=DAY),
            (
                "batching.max_batch_tokens",
                b.max_batch_tokens as u64,
                512..=1 << 20,
            ),
            ("batching.max_wait_us", b.max_wait_us, 0..=1_000_000),
            (
                "batching.queue_capacity",
                b.queue_capacity as u64,
                1..=1 << 20,
            ),
            (
                "limits.max_text_bytes",
                l.max_text_bytes as u64,
                1..=1 << 20,
            ),
            (
                "limits.max_conversation_id_bytes",
                l.max_conversation_id_bytes as u64,
                1..=4_096,
            ),
            (
                "limits.max_context_field_bytes",
                l.max_context_field_bytes as u64,
                1..=4_096,
            ),
            (
                "limits.max_message_bytes",
                l.max_message_bytes as u64,
                1..=64 << 20,
            ),
            (
                "limits.max_texts_per_request",
                l.max_texts_per_request as u64,
                1..=65_536,
            ),
            ("limits.max_streams", l.max_streams as u64, 1..=1_000_000),
            (
                "limits.max_in_flight_per_stream",
                l.max_in_flight_per_stream as u64,
                1..=65_536,
            ),
            (
                "limits.max_conversations",
                l.max_conversations as u64,
                1..=10_000_000,
            ),
            (
                "limits.conversation_ttl_secs",
                l.conversation_ttl_secs,
                1..=30 * DAY,
            ),
            (
                "limits.max_history_turns",
                l.max_history_turns as u64,
                1..=10_000,
            ),
            (
                "alerts.min_customer_turns",
                u64::from(a.min_customer_turns),
                0..=10_000,
            ),
            ("alerts.cooldown_secs", a.cooldown_secs, 0..=30 * DAY),
            ("alerts.evidence_turns", a.evidence_turns as u64, 1..=100),
            (
                "alerts.subscriber_buffer",
                a.subscriber_buffer as u64,
                1..=1_000_000,
            ),
            (
                "alerts.max_subscribers",
                a.max_subscribers as u64,
                1..=1_000_000,
            ),
            (
                "alerts.max_subscribers_per_token",
                a.max_subscribers_per_token as u64,
                1..=1_000_000,
            ),
            (
                "alert_log.retention_days",
                self.alert_log.retention_days,
                0..=36_500,
            ),
            (
                "alert_log.retention_max_events",
                self.alert_log.retention_max_events,
                1..=1 << 40,
            ),
        ] {
            if !range.contains(&value) {
                return fail(format!(
                    "{name} must be in {}..={}, got {value}",
                    range.start(),
                    range.end()
                ));
            }
        }
        if !(m.gate_max_drop.is_finite() && (0.0..=1.0).contains(&m.gate_max_drop)) {
            return fail(format!(
                "model.gate_max_drop must be in [0, 1], got {}",
                m.gate_max_drop
            ));
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
        if a.excerpt_chars > 2_000 {
            return fail(format!(
                "alerts.excerpt_chars must be at most 2000, got {}",
                a.excerpt_chars
            ));
        }
        self.triggers.validate().map_err(ConfigError::Invalid)?;
        let g = &self.assist;
        for (name, v) in [
            ("assist.mood_turned_below", g.mood_turned_below),
            ("assist.mood_turn_valence", g.mood_turn_valence),
            ("assist.recovered_above", g.recovered_above),
            ("assist.recovered_turn_valence", g.recovered_turn_valence),
            ("assist.drop_valence", g.drop_valence),
        ] {
            if !(-1.0..=1.0).contains(&v) {
                return fail(format!("{name} must be in [-1, 1], got {v}"));
            }
        }
        for (name, v) in [
            ("assist.recovery_rise", g.recovery_rise),
            ("assist.drop_delta", g.drop_delta),
        ] {
            if !(0.0..=2.0).contains(&v) {
                return fail(format!("{name} must be in [0, 2], got {v}"));
            }
        }
        if g.recovered_above <= g.mood_turned_below {
            return fail(format!(
                "assist.recovered_above ({}) must be above assist.mood_turned_below ({})",
                g.recovered_above, g.mood_turned_below
            ));
        }
        if g.strain_conversations == 0 || g.strain_window_mins == 0 {
            return fail(
                "assist.strain_conversations and assist.strain_window_mins must be positive".into(),
            );
        }
        self.customers.validate().map_err(ConfigError::Invalid)?;
        if self.alert_log.path.as_os_str().is_empty() {
            return fail("alert_log.path must name a file".into());
        }
        if self.alert_log.retention_max_events == 0 {
            return fail("alert_log.retention_max_events must be positive".into());
        }
        let c = &self.cluster;
        if !matches!(c.replicas, 1 | 3 | 5) {
            return fail(format!(
                "cluster.replicas must be 1, 3 or 5, got {}",
                c.replicas
            ));
        }
        if !(100..=600_000).contains(&c.op_timeout_ms) {
            return fail(format!(
                "cluster.op_timeout_ms must be in 100..=600000, got {}",
                c.op_timeout_ms
            ));
        }
        if c.prefix.is_empty()
            || !c
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return fail(format!(
                "cluster.prefix must be letters, digits, '_' or '-', got {:?}",
                c.prefix
            ));
        }
        if let Some(url) = c.nats.iter().find(|u| u.trim().is_empty()) {
            return fail(format!("cluster.nats: an empty server URL ({url:?})"));
        }
        self.auth
            .validate(self.server.listen.ip().is_loopback())
            .map_err(ConfigError::Invalid)?;
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

    /// The async runtime's worker threads (`server.runtime_threads`) on this machine.
    pub fn runtime_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        runtime_threads_for(cores, self.server.runtime_threads)
    }
}

/// `server.runtime_threads` on a machine of `cores` cores: 0 is one per 4 cores, at least 1.
fn runtime_threads_for(cores: usize, configured: usize) -> usize {
    match configured {
        0 => (cores / 4).max(1),
        n => n,
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

    /// The deployment's config (deploy/) loads, is cluster mode, and its demo tokens are what
    /// deploy/README.md says they are.
    #[test]
    fn the_deploy_config_validates() {
        use sha2::{Digest, Sha256};
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/emotion.toml");
        let c = Config::load(Some(&path), []).unwrap();
        assert!(c.cluster.enabled());
        assert_eq!(c.cluster.nats.len(), 3);
        let plain = [
            "demo-ingest-CHANGE-ME",
            "demo-supervisor-CHANGE-ME",
            "demo-admin-CHANGE-ME",
        ];
        for (token, plain) in c.auth.tokens.iter().zip(plain) {
            assert_eq!(
                token.sha256,
                hex::encode(Sha256::digest(plain)),
                "{}",
                token.name
            );
        }
        let manifest =
            std::fs::read_to_string(path.with_file_name("kubernetes/emotion.yaml")).unwrap();
        for token in &c.auth.tokens {
            assert!(
                manifest.contains(&token.sha256),
                "the ConfigMap has {}",
                token.name
            );
        }
    }

    #[test]
    fn file_then_env_override() {
        let dir = std::env::temp_dir().join(format!("emotion-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[batching]\nmax_batch = 8\n[alerts]\ncooldown_secs = 5\n\
             [[auth.tokens]]\nname = \"sam\"\nrole = \"supervisor\"\n\
             sha256 = \"e3b98a4da31a127d4bde6e43033f66ba274cab0eb7eb1c70ec41402bf6273dd8\"\n", // sha256 of "t"
        )
        .unwrap();
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
        assert_eq!(c.auth.tokens[0].role, crate::domain::Role::Supervisor);
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
        assert_eq!(c.alerts.redaction, playbook::Redaction::Masked);
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

    /// Values the config fuzzer found loading and then panicking the server (a semaphore or a
    /// broadcast buffer beyond what can be allocated), and a type error that did not name its
    /// key: each is refused naming the key.
    #[test]
    fn refuses_values_beyond_their_bounds_and_names_the_key_of_a_type_error() {
        for (name, value, key) in [
            (
                "EMOTION__LIMITS__MAX_STREAMS",
                "9223372036854775807",
                "limits.max_streams",
            ),
            (
                "EMOTION__ALERTS__SUBSCRIBER_BUFFER",
                "9223372036854775807",
                "alerts.subscriber_buffer",
            ),
            (
                "EMOTION__ALERTS__COOLDOWN_SECS",
                "9223372036854775807",
                "alerts.cooldown_secs",
            ),
            (
                "EMOTION__MODEL__WATCH_INTERVAL_SECS",
                "0",
                "model.watch_interval_secs",
            ),
            (
                "EMOTION__ALERTS__COOLDOWN_SECS",
                "18446744073709551615",
                "alerts.cooldown_secs",
            ),
            (
                "EMOTION__SERVER__RUNTIME_THREADS",
                "100000",
                "server.runtime_threads",
            ),
        ] {
            let err = Config::load(None, [(name.to_string(), value.to_string())])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{name}={value}: {err}");
        }
    }

    /// One runtime thread per 4 cores by default, never none; a configured count is kept.
    #[test]
    fn runtime_threads_default_to_one_per_four_cores() {
        assert_eq!(runtime_threads_for(1, 0), 1);
        assert_eq!(runtime_threads_for(2, 0), 1);
        assert_eq!(runtime_threads_for(7, 0), 1);
        assert_eq!(runtime_threads_for(16, 0), 4);
        assert_eq!(runtime_threads_for(2, 3), 3);
        let env = [(
            "EMOTION__SERVER__RUNTIME_THREADS".to_string(),
            "2".to_string(),
        )];
        assert_eq!(Config::load(None, env).unwrap().runtime_threads(), 2);
    }
}
