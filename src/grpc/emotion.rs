//! `EmotionAnalysis`: validate, hand to the conversation store and the batcher, map errors.
//!
//! StreamTurns runs one task per stream. It reads a turn only while fewer than
//! `max_in_flight_per_stream` of its turns are unanswered and the client is reading results, so a
//! slow client or a full inference queue pushes back through HTTP/2 flow control instead of
//! buffering without bound. Results leave in the order the turns arrived.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{App, convert};
use crate::auth::{Identity, Role};
use crate::config::LimitsConfig;
use crate::conversation::{Admission, Speaker, TextSignal, TurnInput, TurnOutcome};
use crate::error::{InferenceError, RequestError};
use crate::inference::Scores;
use crate::inference::shadow::{Compared, Shadow};
use crate::pb;
use crate::pb::emotion_analysis_server::EmotionAnalysis;

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
            let mut input_open = true;
            let mut input_error = None;
            loop {
                tokio::select! {
                    Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                        if tx.send(Ok(result)).await.is_err() {
                            break; // the client went away; admitted turns still complete
                        }
                    }
                    message = inbound.message(), if input_open && in_flight.len() < max_in_flight => {
                        match message {
                            Ok(Some(turn)) => in_flight.push_back(handle_turn(&app, &identity, turn)),
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
            .view(&id, &identity.tenants)
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
        let summary = self.app.store.end(&id, &identity.tenants)?;
        Ok(Response::new(convert::summary(&summary)))
    }
}

/// One turn's way to its result: validated, admitted (or answered from history), scored on the
/// batcher by a task of its own (so it completes even if the stream goes away), then converted.
fn handle_turn(
    app: &Arc<App>,
    identity: &Identity,
    turn: pb::TurnRequest,
) -> BoxFuture<'static, pb::TurnResult> {
    let ValidTurn { mut input, text } = match validate_turn(turn, &app.config.limits) {
        Ok(valid) => valid,
        Err((conversation_id, turn_id, e)) => return rejected(app, conversation_id, turn_id, e),
    };
    input.signal = TextSignal::of(&text, input.speaker, &app.config.alerts);
    let tag = input.context.as_ref().map_or("", |c| c.language.as_str());
    let model = app
        .batcher
        .model_for(crate::inference::turn_language(&text, tag));
    let metrics = app.metrics.clone();
    match app
        .store
        .admit(&mut input, &identity.tenants, Instant::now())
    {
        Admission::Rejected(e) => rejected(app, input.conversation_id, input.turn_id, e),
        Admission::Answered(scored) => {
            metrics.turn("duplicate");
            futures::future::ready(convert::turn_result(&input.conversation_id, &scored, true))
                .boxed()
        }
        Admission::Joined(rx) => finish(input, rx, true, metrics).boxed(),
        Admission::Admitted(rx) => {
            let app = app.clone();
            let (conversation_id, turn_id) = (input.conversation_id.clone(), input.turn_id);
            let customer = input.speaker == Speaker::Customer;
            // The shadow stands in for the default model: turns a language route takes are not
            // compared with it.
            let on_default = Arc::ptr_eq(&model, &app.batcher.model());
            let shadow = app
                .models
                .shadow()
                .filter(|s| on_default && s.samples(&conversation_id));
            if let Some(s) = shadow.as_ref().filter(|_| customer) {
                s.expect(&conversation_id, turn_id); // in admission order
            }
            tokio::spawn(async move {
                let started = Instant::now();
                let scores = match app.batcher.submit_to(model, &text).await {
                    Ok(pending) => pending.wait().await,
                    Err(e) => Err(e),
                };
                if let Some(shadow) = shadow {
                    let key = (conversation_id.clone(), turn_id, customer);
                    match &scores {
                        Ok(live) => {
                            let live = (live.clone(), started.elapsed());
                            tokio::spawn(shadow_score(app.clone(), shadow, text, live, key));
                        }
                        Err(_) => {
                            shadow.skipped(&conversation_id, turn_id, customer, Instant::now())
                        }
                    }
                }
                let mut completion =
                    app.store
                        .complete(&conversation_id, turn_id, scores, Instant::now());
                // Alerts first: a supervisor never learns of an alert later than the turn's sender.
                for alert in completion.alerts.drain(..) {
                    app.hub.publish(convert::alert(&alert));
                }
                completion.deliver();
            });
            finish(input, rx, false, metrics).boxed()
        }
    }
}

async fn finish(
    input: TurnInput,
    rx: tokio::sync::oneshot::Receiver<TurnOutcome>,
    duplicate: bool,
    metrics: crate::metrics::Metrics,
) -> pb::TurnResult {
    let outcome = rx.await.unwrap_or(Err(InferenceError::Stopped));
    match outcome {
        Ok(scored) => {
            metrics.turn(if duplicate { "duplicate" } else { "scored" });
            convert::turn_result(&input.conversation_id, &scored, duplicate)
        }
        Err(e) => {
            metrics.turn("failed");
            convert::error_result(
                input.conversation_id,
                input.turn_id,
                e.code(),
                e.to_string(),
            )
        }
    }
}

/// Scores a sampled turn with the shadow model and records how it compares; never answers anyone.
async fn shadow_score(
    app: Arc<App>,
    shadow: Arc<Shadow>,
    text: String,
    (live, live_latency): (Scores, std::time::Duration),
    (conversation_id, turn_id, customer): (String, u64, bool),
) {
    let started = Instant::now();
    let scored = match app.batcher.try_submit_to(shadow.model.clone(), &text) {
        Ok(pending) => pending.wait().await.ok(),
        Err(_) => None,
    };
    let Some(scores) = scored else {
        return shadow.skipped(&conversation_id, turn_id, customer, Instant::now());
    };
    shadow.record(Compared {
        conversation_id: &conversation_id,
        turn_id,
        customer,
        live: &live,
        live_latency,
        shadow: &scores,
        shadow_latency: started.elapsed(),
        now: Instant::now(),
    });
}

fn rejected(
    app: &App,
    conversation_id: String,
    turn_id: u64,
    e: RequestError,
) -> BoxFuture<'static, pb::TurnResult> {
    app.metrics.turn("rejected");
    futures::future::ready(convert::error_result(
        conversation_id,
        turn_id,
        e.code(),
        e.to_string(),
    ))
    .boxed()
}

fn validate_conversation_id(id: &str, limits: &LimitsConfig) -> Result<(), RequestError> {
    if id.is_empty() {
        return Err(RequestError::Missing {
            field: "conversation_id",
        });
    }
    check_identifier("conversation_id", id, limits.max_conversation_id_bytes)
}

/// An id or context field: at most `limit` bytes, no control characters (they end up in logs,
/// SQLite rows, dashboard cells and metrics labels).
fn check_identifier(field: &'static str, value: &str, limit: usize) -> Result<(), RequestError> {
    if value.len() > limit {
        return Err(RequestError::TooLong {
            field,
            actual: value.len(),
            limit,
        });
    }
    match value.char_indices().find(|(_, c)| c.is_control()) {
        Some((offset, c)) => Err(RequestError::ControlCharacter {
            field,
            code: c as u32,
            offset,
        }),
        None => Ok(()),
    }
}

/// The bytes of a string field as text, or INVALID_ARGUMENT naming the field.
fn utf8(field: &'static str, bytes: Vec<u8>) -> Result<String, RequestError> {
    String::from_utf8(bytes).map_err(|e| RequestError::NotUtf8 {
        field,
        offset: e.utf8_error().valid_up_to(),
    })
}

fn validate_text(
    text: &str,
    field: &'static str,
    limits: &LimitsConfig,
) -> Result<(), RequestError> {
    if text.trim().is_empty() {
        return Err(RequestError::Missing { field });
    }
    if text.len() > limits.max_text_bytes {
        return Err(RequestError::TooLong {
            field,
            actual: text.len(),
            limit: limits.max_text_bytes,
        });
    }
    Ok(())
}

fn validate_context(
    c: pb::TurnContext,
    limits: &LimitsConfig,
) -> Result<crate::conversation::Context, RequestError> {
    let limit = limits.max_context_field_bytes;
    let field = |name: &'static str, bytes: Vec<u8>| {
        let value = utf8(name, bytes)?;
        check_identifier(name, &value, limit)?;
        Ok::<_, RequestError>(value)
    };
    Ok(crate::conversation::Context {
        tenant: field("context.tenant", c.tenant)?,
        queue: field("context.queue", c.queue)?,
        agent_id: field("context.agent_id", c.agent_id)?,
        language: field("context.language", c.language)?,
    })
}

/// A turn that passed validation: what the store admits, and the text to score.
pub struct ValidTurn {
    pub input: TurnInput,
    pub text: String,
}

/// Checks every field of a turn as it came off the wire. On failure, the conversation id (as
/// far as it is readable) and turn id to answer with, and what was wrong.
pub fn validate_turn(
    turn: pb::TurnRequest,
    limits: &LimitsConfig,
) -> Result<ValidTurn, (String, u64, RequestError)> {
    let turn_id = turn.turn_id;
    let conversation_id = match utf8("conversation_id", turn.conversation_id) {
        Ok(id) => id,
        // Not readable: answered with an empty id (results come in request order).
        Err(e) => return Err((String::new(), turn_id, e)),
    };
    let checked = (|| {
        validate_conversation_id(&conversation_id, limits)?;
        let speaker = match convert::speaker_from(turn.speaker) {
            Some(s) => s,
            None if turn.speaker == 0 => return Err(RequestError::Missing { field: "speaker" }),
            None => {
                return Err(RequestError::UnknownValue {
                    field: "speaker",
                    value: turn.speaker,
                    known: "1 customer, 2 agent, 3 bot",
                });
            }
        };
        let text = utf8("text", turn.text)?;
        validate_text(&text, "text", limits)?;
        if let Some(a) = turn.acoustic_valence
            && !(a.is_finite() && (-1.0..=1.0).contains(&a))
        {
            return Err(RequestError::OutOfRange {
                field: "acoustic_valence",
                actual: a,
                min: -1.0,
                max: 1.0,
            });
        }
        let context = turn
            .context
            .map(|c| validate_context(c, limits))
            .transpose()?;
        Ok((speaker, text, context))
    })();
    match checked {
        Ok((speaker, text, context)) => Ok(ValidTurn {
            input: TurnInput {
                conversation_id,
                turn_id,
                speaker,
                acoustic_valence: turn.acoustic_valence,
                context,
                signal: None,
            },
            text,
        }),
        Err(e) => Err((conversation_id, turn_id, e)),
    }
}
