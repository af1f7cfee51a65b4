//! The gRPC surface: thin handlers over the domain ([`App`]), health and reflection.

mod alert_feed;
mod assist;
pub mod convert;
pub mod customers;
mod emotion;
mod model_admin;
pub mod report;
pub mod wire;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::service::interceptor::InterceptedService;

use crate::alerts::AlertHub;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::conversation::ConversationStore;
use crate::inference::Batcher;
use crate::inference::swap::ModelManager;
use crate::metrics::Metrics;
use crate::pb;

/// Everything the handlers share.
pub struct App {
    pub config: Config,
    pub batcher: Batcher,
    /// Shared with the state persister thread.
    pub store: Arc<ConversationStore>,
    pub hub: Arc<AlertHub>,
    /// The one way a turn goes (StreamTurns): admit, submit, complete, publish to `hub`.
    pub pipeline: Arc<crate::pipeline::Pipeline>,
    pub metrics: Metrics,
    /// One permit per open StreamTurns call; none left means RESOURCE_EXHAUSTED.
    pub streams: Arc<Semaphore>,
    pub models: Arc<ModelManager>,
    pub auth: Arc<Authenticator>,
    /// Saves and scrubs the conversation state file (an erasure); none without `state.path` or
    /// in cluster mode.
    pub state: Option<Arc<crate::persist::PersisterHandle>>,
    /// Customer memory, when on (`[customers]`, embedded mode).
    pub customers: Option<Arc<crate::customers::CustomerMemory>>,
    /// False once shutdown began (health NOT_SERVING).
    pub serving: std::sync::atomic::AtomicBool,
    pub started_at: std::time::SystemTime,
}

/// The routes of every service, with message size limits applied.
pub fn routes(app: Arc<App>) -> Result<tonic::service::Routes, tonic_reflection::server::Error> {
    let max = app.config.limits.max_message_bytes;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // Every service but health checks the caller's token (when auth is on) before its handler.
    let auth = app.auth.interceptor();
    let emotion = pb::emotion_analysis_server::EmotionAnalysisServer::new(
        emotion::EmotionService::new(app.clone()),
    )
    .max_decoding_message_size(max)
    .max_encoding_message_size(4 * max);
    let alerts =
        pb::alert_feed_server::AlertFeedServer::new(alert_feed::AlertFeedService::new(app.clone()))
            .max_decoding_message_size(max);
    let assist = pb::agent_assist_server::AgentAssistServer::new(assist::AgentAssistService::new(
        app.clone(),
    ))
    .max_decoding_message_size(max);
    let customers = pb::customer_memory_server::CustomerMemoryServer::new(
        customers::CustomerMemoryService::new(app.clone()),
    )
    .max_decoding_message_size(max);
    let report = pb::quality_report_server::QualityReportServer::new(
        report::QualityReportService::new(app.clone()),
    )
    .max_decoding_message_size(max);
    let admin =
        pb::model_admin_server::ModelAdminServer::new(model_admin::ModelAdminService::new(app))
            .max_decoding_message_size(max);
    Ok(
        tonic::service::Routes::new(InterceptedService::new(emotion, auth.clone()))
            .add_service(InterceptedService::new(alerts, auth.clone()))
            .add_service(InterceptedService::new(assist, auth.clone()))
            .add_service(InterceptedService::new(customers, auth.clone()))
            .add_service(InterceptedService::new(report, auth.clone()))
            .add_service(InterceptedService::new(admin, auth.clone()))
            .add_service(InterceptedService::new(reflection, auth)),
    )
}
