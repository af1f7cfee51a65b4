//! Putting a new model into service without downtime: validate the candidate in a child process
//! (`emotion check-model`, so a crafted ONNX or tokenizer file can crash only the child), load it
//! with one session per inference worker, then swap it in ([`Batcher::swap`]). The replaced model
//! is kept for [`ModelManager::rollback`]. In a fleet (cluster mode) every swap made here is
//! announced ([`ModelFleet`]) and the other replicas adopt it ([`ModelManager::adopt`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::shadow::Shadow;
use super::{Batcher, LoadedModel};
use crate::alerts::AlertPolicy;
use crate::config::Config;
use crate::conversation::RollingScore;
use crate::metrics::Metrics;

/// What `emotion check-model` prints (one JSON line) when a candidate passes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckReport {
    pub name: String,
    pub version: String,
    pub labels: usize,
    pub problem_type: String,
    /// With a gate: both models' macro-F1 on the gate data.
    pub candidate_macro_f1: Option<f64>,
    pub live_macro_f1: Option<f64>,
}

/// The gate a candidate passed.
#[derive(Debug, Clone, PartialEq)]
pub struct GateResult {
    pub data: PathBuf,
    pub candidate_macro_f1: f64,
    pub live_macro_f1: f64,
    pub max_drop: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("candidate {path} refused: {reason}")]
    Rejected { path: PathBuf, reason: String },
    #[error("no earlier model to roll back to")]
    NoPrevious,
    #[error("no shadow model is running (StartShadow first)")]
    NoShadow,
    #[error("shadow share must be in (0, 1], got {0}")]
    BadShare(f64),
    #[error("model swap: {0}")]
    Internal(String),
    /// Swapped here, but the other replicas were not told (cluster mode).
    #[error("swapped on this replica, but the fleet was not told (retry): {0}")]
    Fleet(String),
}

/// Where the replicas of a fleet learn which model serves (cluster mode: a JetStream object
/// store and key-value bucket; `crate::cluster::models`).
pub trait ModelFleet: Send + Sync {
    /// Makes `model`, now serving on this replica, the one every replica serves.
    fn announce(&self, model: &super::ModelSpec) -> BoxFuture<'static, Result<(), String>>;
    /// The model every replica is told to serve, and each replica's last report.
    fn view(&self) -> BoxFuture<'static, Result<FleetView, String>>;
}

/// What the fleet serves (`GetModel` in cluster mode).
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    /// "name@version" of the active model; empty before any swap.
    pub active: String,
    pub replicas: Vec<ReplicaReport>,
}

/// One replica's last report of what it serves.
#[derive(Debug, Clone)]
pub struct ReplicaReport {
    pub replica_id: String,
    pub serving: String,
    pub sha256: String,
    pub error: Option<String>,
    pub reported_at: std::time::SystemTime,
}

/// The outcome of a swap: the model now serving, the one it replaced, and the gate it passed.
pub struct Swapped {
    pub model: Arc<LoadedModel>,
    pub replaced: Arc<LoadedModel>,
    pub gate: Option<GateResult>,
}

pub struct ModelManager {
    batcher: Batcher,
    config: Config,
    metrics: Metrics,
    previous: Mutex<Option<Arc<LoadedModel>>>,
    shadow: Mutex<Option<Arc<Shadow>>>,
    /// One change at a time: a second LoadModel waits for the first.
    changing: tokio::sync::Mutex<()>,
    fleet: std::sync::OnceLock<Arc<dyn ModelFleet>>,
}

impl ModelManager {
    pub fn new(batcher: Batcher, config: Config, metrics: Metrics) -> Self {
        Self {
            batcher,
            config,
            metrics,
            previous: Mutex::new(None),
            shadow: Mutex::new(None),
            changing: tokio::sync::Mutex::new(()),
            fleet: std::sync::OnceLock::new(),
        }
    }

    /// From now on every swap made here is announced to `fleet`.
    pub fn set_fleet(&self, fleet: Arc<dyn ModelFleet>) {
        let _ = self.fleet.set(fleet);
    }

    /// What the fleet serves; none outside cluster mode.
    pub async fn fleet_view(&self) -> Option<Result<FleetView, String>> {
        let fleet = self.fleet.get()?.clone();
        Some(fleet.view().await)
    }

    /// The default model serving now.
    pub fn serving(&self) -> Arc<super::ModelSpec> {
        self.batcher.spec().clone()
    }

    /// Tells the fleet (if any) what serves here now.
    async fn announce(&self, swapped: Swapped) -> Result<Swapped, SwapError> {
        if let Some(fleet) = self.fleet.get() {
            fleet
                .announce(&swapped.model.spec)
                .await
                .map_err(SwapError::Fleet)?;
        }
        Ok(swapped)
    }

    /// Validates, loads and swaps in the model at `path` (quality gate unless `skip_gate`), and
    /// announces it to the fleet.
    pub async fn load(&self, path: &Path, skip_gate: bool) -> Result<Swapped, SwapError> {
        let _one_at_a_time = self.changing.lock().await;
        let swapped = self.swap_in(path, skip_gate).await?;
        self.announce(swapped).await
    }

    /// Puts in service a model another replica announced (downloaded to `path`): validated
    /// by the checker like any candidate (the gate was the announcer's), not announced again.
    pub async fn adopt(&self, path: &Path) -> Result<Swapped, SwapError> {
        let _one_at_a_time = self.changing.lock().await;
        self.swap_in(path, true).await
    }

    async fn swap_in(&self, path: &Path, skip_gate: bool) -> Result<Swapped, SwapError> {
        let rejected = |reason: String| SwapError::Rejected {
            path: path.to_path_buf(),
            reason,
        };
        let gate = (!skip_gate)
            .then_some(self.config.model.gate_data.clone())
            .flatten();
        let live_dir = self.batcher.spec().dir.clone();
        let report = self.check(path, gate.as_deref(), &live_dir).await?;
        let gate = match (gate, report.candidate_macro_f1, report.live_macro_f1) {
            (Some(data), Some(candidate), Some(live)) => {
                let max_drop = self.config.model.gate_max_drop;
                if candidate < live - max_drop {
                    return Err(rejected(format!(
                        "quality gate: macro-F1 {candidate:.4} on {} is more than {max_drop} below the live model's {live:.4}",
                        data.display()
                    )));
                }
                Some(GateResult {
                    data,
                    candidate_macro_f1: candidate,
                    live_macro_f1: live,
                    max_drop,
                })
            }
            (Some(_), _, _) => {
                return Err(rejected(
                    "the checker did not report the gate's numbers".into(),
                ));
            }
            (None, _, _) => None,
        };
        let (config, dir) = (self.config.clone(), path.to_path_buf());
        let model = tokio::task::spawn_blocking(move || super::load(&config, &dir))
            .await
            .map_err(|e| SwapError::Internal(e.to_string()))?
            .map_err(|e| rejected(e.to_string()))?;
        let model = Arc::new(model);
        let replaced = self.batcher.swap(model.clone());
        self.metrics.model_swaps.inc();
        tracing::info!(from = %replaced.spec.tag, to = %model.spec.tag, "model swapped");
        *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some(replaced.clone());
        Ok(Swapped {
            model,
            replaced,
            gate,
        })
    }

    /// The shadow model, if one is running.
    pub fn shadow(&self) -> Option<Arc<Shadow>> {
        self.shadow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Validates and loads the model at `path` as the shadow of `share` of the conversations
    /// (replacing any shadow running).
    pub async fn start_shadow(&self, path: &Path, share: f64) -> Result<Arc<Shadow>, SwapError> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(SwapError::BadShare(share));
        }
        let _one_at_a_time = self.changing.lock().await;
        let live_dir = self.batcher.spec().dir.clone();
        self.check(path, None, &live_dir).await?;
        let (config, dir) = (self.config.clone(), path.to_path_buf());
        let model = tokio::task::spawn_blocking(move || super::load(&config, &dir))
            .await
            .map_err(|e| SwapError::Internal(e.to_string()))?
            .map_err(|e| SwapError::Rejected {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let shadow = Arc::new(Shadow::new(
            Arc::new(model),
            share,
            RollingScore::decay_for(self.config.scoring.half_life_turns),
            AlertPolicy::from(&self.config.alerts),
            self.metrics.clone(),
        ));
        tracing::info!(shadow = %shadow.model.spec.tag, share, "shadow scoring started");
        *self.shadow.lock().unwrap_or_else(|p| p.into_inner()) = Some(shadow.clone());
        Ok(shadow)
    }

    /// Stops shadow scoring; returns the shadow with its final numbers.
    pub fn stop_shadow(&self) -> Result<Arc<Shadow>, SwapError> {
        self.shadow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or(SwapError::NoShadow)
    }

    /// Puts the shadow model in service (the live one becomes the rollback target).
    pub async fn promote_shadow(&self) -> Result<Swapped, SwapError> {
        let _one_at_a_time = self.changing.lock().await;
        let shadow = self.stop_shadow()?;
        let replaced = self.batcher.swap(shadow.model.clone());
        self.metrics.model_swaps.inc();
        tracing::info!(from = %replaced.spec.tag, to = %shadow.model.spec.tag, "shadow promoted");
        *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some(replaced.clone());
        self.announce(Swapped {
            model: shadow.model.clone(),
            replaced,
            gate: None,
        })
        .await
    }

    /// Swaps back to the model the last swap replaced.
    pub async fn rollback(&self) -> Result<Swapped, SwapError> {
        let _one_at_a_time = self.changing.lock().await;
        let swapped = {
            let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
            let model = previous.take().ok_or(SwapError::NoPrevious)?;
            let replaced = self.batcher.swap(model.clone());
            self.metrics.model_swaps.inc();
            tracing::info!(from = %replaced.spec.tag, to = %model.spec.tag, "model rolled back");
            *previous = Some(replaced.clone());
            Swapped {
                model,
                replaced,
                gate: None,
            }
        };
        self.announce(swapped).await
    }

    /// Runs `emotion check-model` on the candidate and reads its verdict.
    async fn check(
        &self,
        path: &Path,
        gate: Option<&Path>,
        live: &Path,
    ) -> Result<CheckReport, SwapError> {
        let rejected = |reason: String| SwapError::Rejected {
            path: path.to_path_buf(),
            reason,
        };
        // Refused here, before a child process is started for them.
        if path.to_string_lossy().chars().any(char::is_control) {
            return Err(rejected("the path holds control characters".into()));
        }
        if !path.is_dir() {
            return Err(rejected("not a directory on the server".into()));
        }
        let checker = match &self.config.model.checker {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|e| SwapError::Internal(e.to_string()))?,
        };
        let mut cmd = tokio::process::Command::new(&checker);
        cmd.arg("check-model")
            .arg(path)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        if let Some(lib) = &self.config.model.onnxruntime {
            cmd.arg("--onnxruntime").arg(lib);
        }
        if let Some(data) = gate {
            cmd.arg("--gate-data").arg(data).arg("--live").arg(live);
        }
        let timeout = Duration::from_secs(self.config.model.check_timeout_secs);
        let output = match tokio::time::timeout(timeout, cmd.output()).await {
            Err(_) => {
                return Err(rejected(format!(
                    "validation took longer than {} s",
                    timeout.as_secs()
                )));
            }
            Ok(Err(e)) => {
                return Err(SwapError::Internal(format!(
                    "running the checker {}: {e}",
                    checker.display()
                )));
            }
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let reason = stderr
                .lines()
                .rev()
                .find(|l| l.starts_with("Error: "))
                .map(|l| l.trim_start_matches("Error: ").to_string())
                .unwrap_or_else(|| match output.status.code() {
                    Some(code) => format!("the checker failed (exit {code}): {}", stderr.trim()),
                    None => "the checker crashed (killed by a signal)".to_string(),
                });
            return Err(rejected(reason));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("");
        serde_json::from_str(line)
            .map_err(|e| SwapError::Internal(format!("reading the checker's report {line:?}: {e}")))
    }
}

/// The child's side: everything a candidate must pass, with one inference worker.
pub async fn check_model(
    mut config: Config,
    dir: &Path,
    gate: Option<(&Path, &Path)>,
) -> anyhow::Result<CheckReport> {
    config.model.inference_workers = 1;
    config.model.intra_threads = 1;
    config.validate()?;
    let candidate = {
        let (config, dir) = (config.clone(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || super::load(&config, &dir)).await??
    };
    let spec = candidate.spec.clone();
    let policy = super::BatchPolicy {
        max_batch: config.batching.max_batch,
        max_batch_tokens: config.batching.max_batch_tokens,
        max_wait: config.max_wait(),
        queue_capacity: config.batching.queue_capacity,
    };
    let mut report = CheckReport {
        name: spec.name.clone(),
        version: spec.version.clone(),
        labels: spec.labels.len(),
        problem_type: spec.problem_type.as_str().to_string(),
        candidate_macro_f1: None,
        live_macro_f1: None,
    };
    let batcher = Batcher::start(candidate, policy, crate::metrics::Metrics::new());
    if let Some((data, live_dir)) = gate {
        let live = {
            let (config, dir) = (config.clone(), live_dir.to_path_buf());
            tokio::task::spawn_blocking(move || super::load(&config, &dir)).await??
        };
        anyhow::ensure!(
            live.spec.labels == spec.labels,
            "the quality gate compares models with the same labels; the live model has {} labels, \
             the candidate {} (load with skip_quality_gate to swap anyway)",
            live.spec.labels.len(),
            spec.labels.len()
        );
        let examples = crate::eval::read_tsv(data, spec.labels.len())?;
        report.candidate_macro_f1 =
            Some(crate::eval::evaluate(&batcher, &examples).await?.macro_f1);
        batcher.swap(Arc::new(live));
        report.live_macro_f1 = Some(crate::eval::evaluate(&batcher, &examples).await?.macro_f1);
    }
    Ok(report)
}
