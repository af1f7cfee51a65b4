//! `ModelAdmin`: what is serving.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::App;
use crate::auth::{Identity, Role};
use crate::pb;
use crate::pb::model_admin_server::ModelAdmin;

pub struct ModelAdminService {
    app: Arc<App>,
}

impl ModelAdminService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl ModelAdmin for ModelAdminService {
    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        Identity::require(&request, &[Role::Ingest, Role::Supervisor])?;
        let spec = self.app.batcher.spec();
        Ok(Response::new(pb::ModelInfo {
            name: spec.name.clone(),
            version: spec.version.clone(),
            labels: spec.labels.clone(),
            sha256: spec.sha256.clone(),
            loaded_at: Some(self.app.loaded_at.into()),
            problem_type: spec.problem_type.as_str().to_string(),
            max_length: spec.max_length as u32,
            path: spec.dir.display().to_string(),
        }))
    }
}
