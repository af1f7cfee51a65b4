//! `AgentAssist`: the agent's guidance stream (the durable alert log's agent-audience events for
//! one agent id, resumable like alerts) and the hand-off brief on demand.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::alert_feed::{AlertStream, subscribe};
use super::{App, convert};
use crate::alerts::{AlertFilter, Audience};
use crate::auth::{Identity, Role};
use crate::error::RequestError;
use crate::pb;
use crate::pb::agent_assist_server::AgentAssist;
use crate::pipeline::validate::{check_identifier, validate_conversation_id};

pub struct AgentAssistService {
    app: Arc<App>,
}

impl AgentAssistService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl AgentAssist for AgentAssistService {
    type SubscribeAssistStream = AlertStream;

    async fn subscribe_assist(
        &self,
        request: Request<pb::SubscribeAssistRequest>,
    ) -> Result<Response<Self::SubscribeAssistStream>, Status> {
        let identity = Identity::require(&request, &[Role::Agent, Role::Supervisor])?;
        let req = request.into_inner();
        identity.may_read_agent(&req.agent_id)?;
        let filter = AlertFilter {
            tenants: identity.scope_tenants(Vec::new())?,
            agent_ids: vec![req.agent_id],
            audience: Audience::Agent,
            ..Default::default()
        };
        subscribe(&self.app, &identity, filter, req.after_sequence).await
    }

    async fn get_handoff_brief(
        &self,
        request: Request<pb::GetHandoffBriefRequest>,
    ) -> Result<Response<pb::HandoffBrief>, Status> {
        let identity = Identity::require(&request, &[Role::Agent, Role::Supervisor])?;
        let id = request.into_inner().conversation_id;
        validate_conversation_id(&id, &self.app.config.limits)?;
        let (context, brief) = self
            .app
            .store
            .latest_brief(&id, &identity.tenants)
            .await?
            .filter(|(c, _)| identity.role != Role::Agent || c.agent_id == identity.agent_id)
            .ok_or(RequestError::UnknownConversation(id.clone()))?;
        Ok(Response::new(convert::brief(&id, &context, &brief)))
    }

    async fn handoff(
        &self,
        request: Request<pb::HandoffRequest>,
    ) -> Result<Response<pb::HandoffBrief>, Status> {
        let identity = Identity::require(&request, &[Role::Ingest, Role::Supervisor])?;
        let req = request.into_inner();
        let limits = &self.app.config.limits;
        validate_conversation_id(&req.conversation_id, limits)?;
        if req.agent_id.is_empty() {
            return Err(RequestError::Missing { field: "agent_id" }.into());
        }
        check_identifier("agent_id", &req.agent_id, limits.max_context_field_bytes)?;
        let (context, brief) = self
            .app
            .pipeline
            .hand_off(&req.conversation_id, &req.agent_id, &identity.tenants)
            .await?;
        Ok(Response::new(convert::brief(
            &req.conversation_id,
            &context,
            &brief,
        )))
    }
}
