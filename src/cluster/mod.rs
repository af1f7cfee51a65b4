//! Cluster mode (`docs/cluster.md`): replicas that share NATS JetStream. [`Cluster::connect`] runs
//! once at start-up when `cluster.nats` names servers; the shared implementations of the storage
//! seams live here ([`JetStreamAlertLog`] for `alerts::AlertLog`), chosen in `lib.rs` so that no
//! domain code asks which mode it runs in.

pub mod alert_log;
pub mod conversations;
pub mod customers;
pub mod models;
pub mod stream;

use std::time::Duration;

use async_nats::jetstream;

pub use alert_log::JetStreamAlertLog;

use crate::config::ClusterConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster: connecting to NATS at {servers}: {message}")]
    Connect { servers: String, message: String },
    #[error("cluster: {0}")]
    JetStream(String),
}

/// A connection to the NATS cluster, shared by everything this replica keeps there.
pub struct Cluster {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub config: ClusterConfig,
    /// This replica's name (config `cluster.replica_id`, else host name and pid).
    pub replica_id: String,
    /// The runtime the client runs on: blocking seams (the alert log) wait on it from their own
    /// threads.
    pub runtime: tokio::runtime::Handle,
    /// Counts the times core NATS messages may have been lost to this replica: each lost
    /// connection, each subscription that fell behind. What
    /// follows unstored messages (the fleet view) starts again from stored state when it moves.
    pub gaps: tokio::sync::watch::Receiver<u64>,
}

impl Cluster {
    /// Connects and checks that JetStream answers (a cluster still electing its leader is waited
    /// for, up to `cluster.op_timeout_ms`). Must run on the runtime the service runs on.
    pub async fn connect(config: &ClusterConfig) -> Result<Self, ClusterError> {
        let servers = config.nats.join(",");
        let replica_id = if config.replica_id.is_empty() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            format!("{host}-{}", std::process::id())
        } else {
            config.replica_id.clone()
        };
        let connect = |message: String| ClusterError::Connect {
            servers: servers.clone(),
            message,
        };
        let (gap, gaps) = tokio::sync::watch::channel(0u64);
        let gap = std::sync::Arc::new(gap);
        let client = async_nats::ConnectOptions::new()
            .name(format!("emotion {replica_id}"))
            .event_callback(move |event| {
                let gap = gap.clone();
                async move {
                    use async_nats::Event::{Disconnected, SlowConsumer};
                    if matches!(event, Disconnected | SlowConsumer(_)) {
                        tracing::info!(%event, "NATS: core messages may have been missed");
                        gap.send_modify(|n| *n += 1);
                    }
                }
            })
            .connection_timeout(config.op_timeout())
            .request_timeout(Some(config.op_timeout()))
            .connect(config.nats.as_slice())
            .await
            .map_err(|e| connect(e.to_string()))?;
        let mut context = jetstream::new(client.clone());
        context.set_timeout(config.op_timeout());
        let deadline = tokio::time::Instant::now() + config.op_timeout();
        loop {
            match context.query_account().await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(connect(format!("JetStream does not answer: {e}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        Ok(Self {
            client,
            jetstream: context,
            config: config.clone(),
            replica_id,
            runtime: tokio::runtime::Handle::current(),
            gaps,
        })
    }

    /// A stream's name: the prefix, upper-cased, and what it holds (`EMOTION_ALERTS`).
    pub fn stream_name(&self, what: &str) -> String {
        format!("{}_{what}", self.config.prefix.to_ascii_uppercase())
    }

    /// Runs `f` on the client's runtime from a thread outside it, waiting at most the operation
    /// timeout.
    pub fn block_on<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, String>>,
    ) -> Result<T, ClusterError> {
        self.runtime.block_on(async {
            match tokio::time::timeout(self.config.op_timeout(), f).await {
                Ok(result) => result.map_err(|e| ClusterError::JetStream(format!("{what}: {e}"))),
                Err(_) => Err(ClusterError::JetStream(format!(
                    "{what}: no answer within {} ms",
                    self.config.op_timeout_ms
                ))),
            }
        })
    }
}

/// `s` as one subject token: bytes outside `[A-Za-z0-9_-]` as `~XX`, the empty string as `~`
/// (a lone `~` is no escape, so no two strings share a token).
pub fn token(s: &str) -> String {
    if s.is_empty() {
        return "~".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_escape_what_a_subject_cannot_hold() {
        assert_eq!(super::token(""), "~");
        assert_eq!(super::token("billing-2"), "billing-2");
        assert_eq!(super::token("a.b c*>"), "a~2Eb~20c~2A~3E");
        assert_eq!(super::token("投诉"), "~E6~8A~95~E8~AF~89");
        assert_ne!(super::token("_"), super::token(""));
    }
}
