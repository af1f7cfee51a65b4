//! `ModelAdmin`: what is serving, and swapping it (validated load, rollback).

use std::path::Path;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::App;
use crate::auth::{Identity, Role};
use crate::error::RequestError;
use crate::inference::LoadedModel;
use crate::inference::shadow::Shadow;
use crate::inference::swap::{SwapError, Swapped};
use crate::pb;
use crate::pb::model_admin_server::ModelAdmin;

pub struct ModelAdminService {
    app: Arc<App>,
}

impl ModelAdminService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    fn report(&self, shadow: &Shadow) -> pb::ShadowReport {
        let r = shadow.report(&self.app.batcher.spec().tag);
        pb::ShadowReport {
            live_version: r.live_version,
            shadow_version: r.shadow_version,
            share: r.share,
            turns_compared: r.turns_compared,
            valence_correlation: r.valence_correlation,
            mean_abs_valence_diff: r.mean_abs_valence_diff,
            top_label_agreement: r.top_label_agreement,
            alert_decisions: r.alert_decisions,
            alert_decision_agreement: r.alert_decision_agreement,
            live_p50_ms: r.live_p50_ms,
            live_p99_ms: r.live_p99_ms,
            shadow_p50_ms: r.shadow_p50_ms,
            shadow_p99_ms: r.shadow_p99_ms,
            dropped: r.dropped,
            started_at: Some(shadow.started_at.into()),
        }
    }
}

fn info(model: &LoadedModel) -> pb::ModelInfo {
    let spec = &model.spec;
    pb::ModelInfo {
        name: spec.name.clone(),
        version: spec.version.clone(),
        labels: spec.labels.clone(),
        sha256: spec.sha256.clone(),
        loaded_at: Some(model.loaded_at.into()),
        problem_type: spec.problem_type.as_str().to_string(),
        max_length: spec.max_length as u32,
        path: spec.dir.display().to_string(),
        replaced_version: String::new(),
        quality_gate: None,
        fleet_active: String::new(),
        fleet: Vec::new(),
    }
}

fn swapped(s: Swapped) -> pb::ModelInfo {
    pb::ModelInfo {
        replaced_version: s.replaced.spec.tag.clone(),
        quality_gate: s.gate.map(|g| pb::QualityGate {
            data: g.data.display().to_string(),
            candidate_macro_f1: g.candidate_macro_f1,
            live_macro_f1: g.live_macro_f1,
            max_drop: g.max_drop,
        }),
        ..info(&s.model)
    }
}

impl From<SwapError> for Status {
    fn from(e: SwapError) -> Self {
        match e {
            SwapError::Rejected { .. } | SwapError::NoPrevious | SwapError::NoShadow => {
                Status::failed_precondition(e.to_string())
            }
            SwapError::BadShare(_) => Status::invalid_argument(e.to_string()),
            SwapError::Internal(_) => Status::internal(e.to_string()),
            SwapError::Fleet(_) => Status::unavailable(e.to_string()),
        }
    }
}

#[tonic::async_trait]
impl ModelAdmin for ModelAdminService {
    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        Identity::require(&request, &[Role::Ingest, Role::Supervisor])?;
        let mut info = info(&self.app.batcher.model());
        match self.app.models.fleet_view().await {
            None => {}
            Some(Ok(fleet)) => {
                info.fleet_active = fleet.active;
                info.fleet = (fleet.replicas.into_iter())
                    .map(|r| pb::ReplicaModel {
                        replica_id: r.replica_id,
                        serving: r.serving,
                        sha256: r.sha256,
                        error: r.error.unwrap_or_default(),
                        reported_at: Some(r.reported_at.into()),
                    })
                    .collect();
            }
            // What this replica serves is still the answer; the fleet part stays empty.
            Some(Err(error)) => tracing::warn!(%error, "GetModel: the fleet's models not read"),
        }
        Ok(Response::new(info))
    }

    async fn load_model(
        &self,
        request: Request<pb::LoadModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        Identity::require(&request, &[])?;
        let req = request.into_inner();
        if req.path.trim().is_empty() {
            return Err(RequestError::Missing { field: "path" }.into());
        }
        let s = self
            .app
            .models
            .load(Path::new(&req.path), req.skip_quality_gate)
            .await?;
        Ok(Response::new(swapped(s)))
    }

    async fn start_shadow(
        &self,
        request: Request<pb::StartShadowRequest>,
    ) -> Result<Response<pb::ShadowReport>, Status> {
        Identity::require(&request, &[])?;
        let req = request.into_inner();
        if req.path.trim().is_empty() {
            return Err(RequestError::Missing { field: "path" }.into());
        }
        let shadow = self
            .app
            .models
            .start_shadow(Path::new(&req.path), req.share)
            .await?;
        Ok(Response::new(self.report(&shadow)))
    }

    async fn get_shadow_report(
        &self,
        request: Request<pb::GetShadowReportRequest>,
    ) -> Result<Response<pb::ShadowReport>, Status> {
        Identity::require(&request, &[Role::Supervisor])?;
        let shadow = self.app.models.shadow().ok_or(SwapError::NoShadow)?;
        Ok(Response::new(self.report(&shadow)))
    }

    async fn promote_shadow(
        &self,
        request: Request<pb::PromoteShadowRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        Identity::require(&request, &[])?;
        Ok(Response::new(swapped(
            self.app.models.promote_shadow().await?,
        )))
    }

    async fn stop_shadow(
        &self,
        request: Request<pb::StopShadowRequest>,
    ) -> Result<Response<pb::ShadowReport>, Status> {
        Identity::require(&request, &[])?;
        let shadow = self.app.models.stop_shadow()?;
        Ok(Response::new(self.report(&shadow)))
    }

    async fn rollback_model(
        &self,
        request: Request<pb::RollbackModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        Identity::require(&request, &[])?;
        Ok(Response::new(swapped(self.app.models.rollback().await?)))
    }
}
