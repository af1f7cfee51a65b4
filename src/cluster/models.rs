//! Models across the fleet: a swap on one replica reaches every replica.
//!
//! A replica that swaps its default model (LoadModel, PromoteShadow, RollbackModel) puts the
//! model directory's files into the object store `{prefix}-models` (objects
//! `{name}@{version}-{sha256[..12]}/{file}`) and then sets `model.active` in the key-value bucket
//! `{prefix}-fleet` to name it. Every replica watches `model.active` (from its latest value, so a
//! replica that starts later adopts it too): when it names another model than the one serving,
//! the replica downloads the files beside its alert-log copy (`models/` in that directory),
//! validates them with the checker like any candidate and swaps them in
//! ([`ModelManager::adopt`]); then it records what it serves under `replica.{id}` (JSON: the
//! serving tag and sha256, or why the active model could not be adopted). Only the default model
//! travels; language routes (`model.languages`) stay per replica.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{kv, object_store};
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterError};
use crate::inference::ModelSpec;
use crate::inference::swap::{FleetView, ModelFleet, ModelManager, ReplicaReport};

const ACTIVE: &str = "model.active";
const RETRY: Duration = Duration::from_secs(1);
/// The limit of one attempt to start watching `model.active`.
const WATCH_ATTEMPT: Duration = Duration::from_secs(2);

/// What `model.active` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActiveModel {
    pub tag: String,
    pub sha256: String,
    /// The object-name prefix of its files.
    pub key: String,
    pub files: Vec<String>,
}

pub struct JetStreamModels {
    kv: kv::Store,
    objects: object_store::ObjectStore,
    replica_id: String,
    /// Where adopted models are downloaded.
    cache: PathBuf,
}

fn key(spec: &ModelSpec) -> String {
    let sha = &spec.sha256[..spec.sha256.len().min(12)];
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
                _ => '_',
            })
            .collect()
    };
    format!("{}@{}-{sha}", safe(&spec.name), safe(&spec.version))
}

impl JetStreamModels {
    /// Opens (creating them if needed) the object store and the fleet bucket.
    pub async fn open(cluster: &Cluster, cache: PathBuf) -> Result<Arc<Self>, ClusterError> {
        let js = &cluster.jetstream;
        let prefix = &cluster.config.prefix;
        let error = |what: &str, e: String| ClusterError::JetStream(format!("{what}: {e}"));
        let fleet = format!("{prefix}-fleet");
        let kv = match js.get_key_value(&fleet).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: fleet.clone(),
                    description: "emotion-service: the active model, what each replica serves"
                        .into(),
                    history: 5,
                    num_replicas: cluster.config.replicas,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| error("creating the fleet bucket", e.to_string()))?,
        };
        let store = format!("{prefix}-models");
        let objects = match js.get_object_store(&store).await {
            Ok(o) => o,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: store.clone(),
                    description: Some("emotion-service: model directories".into()),
                    num_replicas: cluster.config.replicas,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| error("creating the model store", e.to_string()))?,
        };
        Ok(Arc::new(Self {
            kv,
            objects,
            replica_id: cluster.replica_id.clone(),
            cache,
        }))
    }

    /// Follows `model.active` for as long as the service runs, adopting what it names.
    pub fn follow(self: Arc<Self>, models: Arc<ModelManager>) {
        tokio::spawn(async move {
            loop {
                // Cut short like the alert follower's requests: one lost while NATS elects a
                // leader would otherwise wait out the whole operation timeout.
                let watched =
                    tokio::time::timeout(WATCH_ATTEMPT, self.kv.watch_with_history(ACTIVE));
                let mut watch = match watched.await {
                    Ok(Ok(w)) => w,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "watching the fleet's active model; retrying");
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                    Err(_) => {
                        tracing::warn!(
                            "watching the fleet's active model: no answer within {WATCH_ATTEMPT:?}; retrying"
                        );
                        continue;
                    }
                };
                self.report(&models, None).await;
                while let Some(entry) = watch.next().await {
                    let Ok(entry) = entry else { break };
                    if entry.operation != kv::Operation::Put {
                        continue;
                    }
                    match serde_json::from_slice::<ActiveModel>(&entry.value) {
                        Ok(active) => self.adopt(&models, &active).await,
                        Err(e) => tracing::warn!(error = %e, "model.active does not parse"),
                    }
                }
                tokio::time::sleep(RETRY).await;
            }
        });
    }

    async fn adopt(&self, models: &ModelManager, active: &ActiveModel) {
        let serving = models.serving();
        if serving.tag == active.tag && serving.sha256 == active.sha256 {
            return self.report(models, None).await;
        }
        tracing::info!(model = %active.tag, "the fleet's active model changed; adopting it");
        let outcome = match self.download(active).await {
            Ok(dir) => models
                .adopt(&dir)
                .await
                .map(|s| s.model.spec.tag.clone())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(tag) => tracing::info!(model = %tag, "adopted the fleet's model"),
            Err(e) => {
                tracing::error!(model = %active.tag, error = %e, "could not adopt the fleet's model; serving the old one")
            }
        }
        self.report(models, outcome.err()).await;
    }

    /// The active model's files under the cache directory (downloaded unless already there).
    async fn download(&self, active: &ActiveModel) -> Result<PathBuf, String> {
        let dir = self.cache.join(&active.key);
        let done = dir.join(".complete");
        if done.exists() {
            return Ok(dir);
        }
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        for file in &active.files {
            if file.contains('/') || file.starts_with('.') {
                return Err(format!("model.active names a file {file:?}"));
            }
            let mut object = self
                .objects
                .get(format!("{}/{file}", active.key))
                .await
                .map_err(|e| format!("fetching {file}: {e}"))?;
            let path = dir.join(file);
            let mut out = tokio::fs::File::create(&path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tokio::io::copy(&mut object, &mut out)
                .await
                .map_err(|e| format!("fetching {file}: {e}"))?;
        }
        tokio::fs::write(&done, b"")
            .await
            .map_err(|e| format!("{}: {e}", done.display()))?;
        Ok(dir)
    }

    /// Records what this replica serves (and why not the active model, if it could not).
    async fn report(&self, models: &ModelManager, error: Option<String>) {
        let serving = models.serving();
        let status = serde_json::json!({
            "replica": self.replica_id,
            "serving": serving.tag,
            "sha256": serving.sha256,
            "error": error,
        });
        if let Err(e) = self
            .kv
            .put(
                format!("replica.{}", super::token(&self.replica_id)),
                status.to_string().into(),
            )
            .await
        {
            tracing::warn!(error = %e, "recording this replica's model in the fleet bucket");
        }
    }
}

impl ModelFleet for JetStreamModels {
    fn announce(&self, model: &ModelSpec) -> BoxFuture<'static, Result<(), String>> {
        let (kv, objects) = (self.kv.clone(), self.objects.clone());
        let (dir, key, tag, sha256) = (
            model.dir.clone(),
            key(model),
            model.tag.clone(),
            model.sha256.clone(),
        );
        async move {
            let files = model_files(&dir)?;
            for file in &files {
                let path = dir.join(file);
                let mut data = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                objects
                    .put(format!("{key}/{file}").as_str(), &mut data)
                    .await
                    .map_err(|e| format!("storing {file} in the model store: {e}"))?;
            }
            let active = ActiveModel {
                tag,
                sha256,
                key,
                files,
            };
            let body = serde_json::to_vec(&active).map_err(|e| e.to_string())?;
            kv.put(ACTIVE, body.into())
                .await
                .map_err(|e| format!("setting {ACTIVE}: {e}"))?;
            tracing::info!(model = %active.tag, "announced to the fleet");
            Ok(())
        }
        .boxed()
    }

    fn view(&self) -> BoxFuture<'static, Result<FleetView, String>> {
        let kv = self.kv.clone();
        async move {
            let read = async {
                let mut view = FleetView::default();
                let keys: Vec<String> = kv
                    .keys()
                    .await
                    .map_err(|e| e.to_string())?
                    .try_collect()
                    .await
                    .map_err(|e| e.to_string())?;
                for key in keys {
                    let Some(entry) = kv.entry(key.clone()).await.map_err(|e| e.to_string())?
                    else {
                        continue;
                    };
                    if key == ACTIVE {
                        if let Ok(active) = serde_json::from_slice::<ActiveModel>(&entry.value) {
                            view.active = active.tag;
                        }
                        continue;
                    }
                    let Some(token) = key.strip_prefix("replica.") else {
                        continue;
                    };
                    let Ok(status) = serde_json::from_slice::<serde_json::Value>(&entry.value)
                    else {
                        continue;
                    };
                    let text = |field: &str| status[field].as_str().unwrap_or("").to_string();
                    let nanos = entry.created.unix_timestamp_nanos().max(0) as u64;
                    view.replicas.push(ReplicaReport {
                        // Reports from before the id was in them: the key's token.
                        replica_id: Some(text("replica"))
                            .filter(|r| !r.is_empty())
                            .unwrap_or_else(|| token.to_string()),
                        serving: text("serving"),
                        sha256: text("sha256"),
                        error: status["error"].as_str().map(str::to_string),
                        reported_at: std::time::UNIX_EPOCH + Duration::from_nanos(nanos),
                    });
                }
                view.replicas
                    .sort_by(|a, b| a.replica_id.cmp(&b.replica_id));
                Ok::<_, String>(view)
            };
            tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .map_err(|_| "the fleet bucket did not answer within 5 s".to_string())?
        }
        .boxed()
    }
}

/// The regular files (symbolic links followed) at the top of a model directory.
fn model_files(dir: &Path) -> Result<Vec<String>, String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            continue;
        }
        files.push(name);
    }
    files.sort();
    Ok(files)
}
