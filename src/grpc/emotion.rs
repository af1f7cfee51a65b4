//! `EmotionAnalysis`: turns go through the [`crate::pipeline`]; this maps streams and errors.
//!
//! StreamTurns runs one task per stream. It reads a turn only while fewer than
//! `max_in_flight_per_stream` of its turns are unanswered and the client is reading results, so a
//! slow client or a full inference queue pushes back through HTTP/2 flow control instead of
//! buffering without bound. Results leave in the order the turns arrived; `emotion_turn_seconds`
//! times each turn from being read to its result leaving (so it includes that wait).

use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{App, convert};
use crate::auth::{Identity, Role};
use crate::error::{InferenceError, RequestError};
use crate::pb;
use crate::pb::emotion_analysis_server::EmotionAnalysis;
use crate::pipeline::validate::{validate_conversation_id, validate_text};

pub struct EmotionService {
    app: Arc<App>,
}

impl EmotionService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

type ResultStream = Pin<Box<dyn futures::Stream<Item = Result<pb::TurnResult, Status>> + Send>>;

#[tonic::async_trait]
impl EmotionAnalysis for EmotionService {
    type StreamTurnsStream = ResultStream;

    async fn stream_turns(
        &self,
        request: Request<Streaming<pb::TurnRequest>>,
    ) -> Result<Response<Self::StreamTurnsStream>, Status> {
        let identity = Identity::require(&request, &[Role::Ingest])?;
        let limits = &self.app.config.limits;
        let permit = self
            .app
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| RequestError::TooManyStreams(limits.max_streams))?;
        let max_in_flight = limits.max_in_flight_per_stream;
        let (tx, rx) = mpsc::channel(max_in_flight);
        let app = self.app.clone();
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            let _permit = permit;
            app.metrics.open_streams.inc();
            let mut in_flight: FuturesOrdered<BoxFuture<'static, pb::TurnResult>> =
                FuturesOrdered::new();
            // When each turn in flight was read, in the same order.
            let mut read_at: std::collections::VecDeque<std::time::Instant> =
                std::collections::VecDeque::with_capacity(max_in_flight);
            let mut input_open = true;
            let mut input_error = None;
            loop {
                tokio::select! {
                    Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                        if let Some(at) = read_at.pop_front() {
                            app.metrics.turn_seconds.observe(at.elapsed().as_secs_f64());
                        }
                        if tx.send(Ok(result)).await.is_err() {
                            break; // the client went away; admitted turns still complete
                        }
                    }
                    message = inbound.message(), if input_open && in_flight.len() < max_in_flight => {
                        match message {
                            Ok(Some(turn)) => {
                                read_at.push_back(std::time::Instant::now());
                                in_flight.push_back(app.pipeline.turn(&identity.tenants, turn));
                            }
                            Ok(None) => input_open = false,
                            Err(status) => {
                                input_open = false;
                                input_error = Some(status);
                            }
                        }
                    }
                    else => break,
                }
            }
            if let Some(status) = input_error {
                tracing::warn!(code = ?status.code(), "turn stream ended by a bad message");
                let _ = tx.send(Err(status)).await;
            }
            app.metrics.open_streams.dec();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn score_texts(
        &self,
        request: Request<pb::ScoreTextsRequest>,
    ) -> Result<Response<pb::ScoreTextsResponse>, Status> {
        Identity::require(&request, &[Role::Ingest])?;
        let texts = request.into_inner().texts;
        let limits = &self.app.config.limits;
        if texts.is_empty() {
            return Err(RequestError::Missing { field: "texts" }.into());
        }
        if texts.len() > limits.max_texts_per_request {
            return Err(RequestError::TooMany {
                field: "texts",
                actual: texts.len(),
                limit: limits.max_texts_per_request,
            }
            .into());
        }
        for text in &texts {
            validate_text(text, "texts[]", limits)?;
        }
        if !self.app.batcher.has_room_for(texts.len()) {
            return Err(InferenceError::QueueFull {
                capacity: self.app.config.batching.queue_capacity,
            }
            .into());
        }
        let pending = texts
            .iter()
            .map(|t| {
                let lang = crate::lang::Lang::of_text(t);
                self.app.batcher.try_submit_in(lang, t)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut results = Vec::with_capacity(pending.len());
        let mut model_version = String::new();
        for p in pending {
            let scores = p.wait().await?;
            model_version.clone_from(&scores.model.tag);
            results.push(pb::TextScore {
                emotions: convert::emotions(&scores.model, &scores.probs),
                labels: convert::predicted_labels(&scores.model, &scores.probs),
                valence: scores.valence,
            });
        }
        Ok(Response::new(pb::ScoreTextsResponse {
            results,
            model_version,
        }))
    }

    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let identity = Identity::require(&request, &[Role::Ingest, Role::Supervisor])?;
        let id = request.into_inner().conversation_id;
        validate_conversation_id(&id, &self.app.config.limits)?;
        let view = self
            .app
            .store
            .latest_view(&id, &identity.tenants)
            .await?
            .ok_or(RequestError::UnknownConversation(id))?;
        Ok(Response::new(convert::conversation(&view)))
    }

    async fn end_conversation(
        &self,
        request: Request<pb::EndConversationRequest>,
    ) -> Result<Response<pb::ConversationSummary>, Status> {
        let identity = Identity::require(&request, &[Role::Ingest])?;
        let id = request.into_inner().conversation_id;
        validate_conversation_id(&id, &self.app.config.limits)?;
        let summary = self.app.pipeline.end(&id, &identity.tenants).await?;
        Ok(Response::new(convert::summary(&summary)))
    }
}
