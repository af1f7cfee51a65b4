//! The turn pipeline: the one way a turn goes from the wire to its result, for `StreamTurns` and
//! `emotion backtest` alike (and the fuzz harness, which drives a real server).
//!
//! ```text
//!  admit     validate every field (validate.rs); the conversation store orders and de-duplicates
//!    │       (a re-sent turn is answered from history, a turn in flight is joined)
//!  submit    text signals for the triggers (normalised text, redacted excerpt, script), the
//!    │       language route's model, the batcher's bounded queue (tokenised and scored on an
//!    │       inference thread)
//!  complete  rolling scores, alert rules and triggers, applied in turn order; in cluster mode
//!    │       committed to the shared conversation state first (conversation/shared.rs)
//!    │
//!  publish   alert events to the [`AlertSink`] (the durable hub when serving), then the turn's
//!            result to everyone waiting for it: a supervisor never learns of an alert later
//!            than the turn's sender
//! ```
//!
//! Scoring runs in a task of its own, so an admitted turn completes (and its alerts are published)
//! even if the stream that sent it goes away. Ranking texts without a conversation (`ScoreTexts`,
//! `emotion score`, `emotion eval`) uses the submit stage alone: [`Batcher`] directly.

pub mod validate;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt};

use crate::alerts::{Alert, AlertHub};
use crate::config::{AlertConfig, Config, LimitsConfig};
use crate::conversation::{Admission, ConversationStore, Delivery, Speaker, TextSignal};
use crate::error::{InferenceError, RequestError};
use crate::grpc::convert;
use crate::inference::shadow::{Compared, Shadow};
use crate::inference::swap::ModelManager;
use crate::inference::{Batcher, Scores};
use crate::lang::Lang;
use crate::metrics::Metrics;
use crate::pb;

pub use validate::{ValidTurn, validate_turn};

/// Where a completed turn's alert events go.
pub trait AlertSink: Send + Sync {
    /// Takes one completion's events, in order, without blocking: it is called while their
    /// conversation is locked, so one conversation's events arrive in the order they were
    /// decided. The future resolves once they are where their readers will find them (for the
    /// hub: appended to the durable log, or held in its backlog), to whether every one of them
    /// is durable (false: one waits in a backlog that dies with the process).
    fn enqueue(&self, alerts: &[Alert]) -> BoxFuture<'static, bool>;
}

impl AlertSink for AlertHub {
    fn enqueue(&self, alerts: &[Alert]) -> BoxFuture<'static, bool> {
        let published: Vec<_> = alerts
            .iter()
            .map(|a| AlertHub::enqueue(self, convert::alert(a)))
            .collect();
        async move {
            let mut durable = true;
            for p in published {
                durable &= p.await.sequence != 0;
            }
            durable
        }
        .boxed()
    }
}

/// Keeps alert events in memory, in order (backtest).
#[derive(Default)]
pub struct CollectedAlerts(Mutex<Vec<Alert>>);

impl CollectedAlerts {
    pub fn take(&self) -> Vec<Alert> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl AlertSink for CollectedAlerts {
    fn enqueue(&self, alerts: &[Alert]) -> BoxFuture<'static, bool> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(alerts);
        futures::future::ready(true).boxed()
    }
}

/// Completions between deciding their alerts and the sink taking them: beyond this, turns wait
/// before completing (backpressure from a slow alert log onto the streams).
const MAX_PUBLISHING: usize = 1024;

pub struct Pipeline {
    limits: LimitsConfig,
    alerts: AlertConfig,
    store: Arc<ConversationStore>,
    batcher: Batcher,
    sink: Arc<dyn AlertSink>,
    publishing: Arc<tokio::sync::Semaphore>,
    /// For the shadow model, when one is being compared (serving only).
    models: Option<Arc<ModelManager>>,
    /// Pseudonymises `context.customer_id` (customer memory on); without it the id is dropped.
    customers: Option<Arc<crate::customers::CustomerMemory>>,
    metrics: Metrics,
}

impl Pipeline {
    pub fn new(
        config: &Config,
        store: Arc<ConversationStore>,
        batcher: Batcher,
        sink: Arc<dyn AlertSink>,
        metrics: Metrics,
    ) -> Self {
        Self {
            limits: config.limits.clone(),
            alerts: config.alerts.clone(),
            store,
            batcher,
            sink,
            publishing: Arc::new(tokio::sync::Semaphore::new(MAX_PUBLISHING)),
            models: None,
            customers: None,
            metrics,
        }
    }

    /// Turns customer ids into `customers`' pseudonyms.
    pub fn with_customers(mut self, customers: Arc<crate::customers::CustomerMemory>) -> Self {
        self.customers = Some(customers);
        self
    }

    /// Samples turns for the shadow model `models` may be comparing.
    pub fn with_shadow(mut self, models: Arc<ModelManager>) -> Self {
        self.models = Some(models);
        self
    }

    pub fn store(&self) -> &Arc<ConversationStore> {
        &self.store
    }

    /// EndConversation: the conversation's summary, its state released wherever it is decided.
    pub async fn end(
        &self,
        conversation_id: &str,
        tenants: &[String],
    ) -> Result<crate::conversation::ConversationSummary, RequestError> {
        let enqueue = |alerts: &[Alert]| self.sink.enqueue(alerts);
        self.store
            .end_latest(conversation_id, tenants, &enqueue)
            .await
    }

    /// One sweep of committed outboxes that their replica left unpublished (cluster mode; see
    /// `ConversationStore::sweep_outboxes`).
    pub async fn sweep_outboxes(&self) -> Result<usize, crate::conversation::SharedError> {
        let enqueue = |alerts: &[Alert]| self.sink.enqueue(alerts);
        self.store.sweep_outboxes(&enqueue).await
    }

    /// Hands a conversation to an agent by call (`AgentAssist.Handoff`): the guidance goes the
    /// way of the turns' alert events; returns the context and brief after.
    pub async fn hand_off(
        &self,
        conversation_id: &str,
        agent_id: &str,
        tenants: &[String],
    ) -> Result<(crate::conversation::Context, crate::alerts::HandoffBrief), RequestError> {
        let enqueue = |alerts: &[Alert]| self.sink.enqueue(alerts);
        self.store
            .hand_off(conversation_id, agent_id, tenants, &enqueue)
            .await
    }

    /// One turn's way to its result. `tenants` are the tenants the caller may write to (empty:
    /// any). The future resolves to the turn's result; scoring goes on in its own task whether
    /// or not the future is polled to the end.
    pub fn turn(
        self: &Arc<Self>,
        tenants: &[String],
        turn: pb::TurnRequest,
    ) -> BoxFuture<'static, pb::TurnResult> {
        // admit
        let ValidTurn {
            mut input,
            customer_id,
            text,
        } = match validate_turn(turn, &self.limits) {
            Ok(valid) => valid,
            Err((conversation_id, turn_id, e)) => {
                return self.rejected(conversation_id, turn_id, e);
            }
        };
        // The raw id stops here.
        if let (Some(id), Some(memory), Some(context)) =
            (customer_id, &self.customers, input.context.as_mut())
        {
            context.customer = memory.pseudonyms.pseudonym(&context.tenant, &id);
        }
        input.signal = TextSignal::of(&text, input.speaker, &self.alerts);
        // The shadow compares the valences the conversation counts (an apology's aside).
        let apology = input.signal.as_ref().is_some_and(|s| s.apology.is_some());
        // The route: the text's script, else the turn's language tag, else the one its
        // conversation was given on an earlier turn (contexts are often sent once); the
        // conversation is looked up only for a turn that has neither.
        // (The text signal already read the script, bots' turns aside.)
        let script = match &input.signal {
            Some(signal) => signal.lang,
            None => Lang::of_text(&text),
        };
        let own = input.context.as_ref().map_or("", |c| c.language.as_str());
        let language = script.or_else(|| match own {
            "" => self
                .store
                .language_tag(&input.conversation_id)
                .and_then(|tag| Lang::from_tag(&tag)),
            own => Lang::from_tag(own),
        });
        let model = self.batcher.model_for(language);
        let conversation_id = input.conversation_id.clone();
        let turn_id = input.turn_id;
        let rx = match self.store.admit(&mut input, tenants, Instant::now()) {
            Admission::Rejected(e) => return self.rejected(conversation_id, turn_id, e),
            Admission::Answered(scored) => {
                self.metrics.turn("duplicate");
                return futures::future::ready(convert::turn_result(
                    &conversation_id,
                    &scored,
                    true,
                ))
                .boxed();
            }
            Admission::Joined(rx) => {
                return finish(conversation_id, turn_id, rx, true, self.metrics.clone()).boxed();
            }
            Admission::Admitted(rx) => rx,
        };
        // submit
        let customer = input.speaker == Speaker::Customer;
        // The shadow stands in for the default model: turns a language route takes are not
        // compared with it.
        let on_default = Arc::ptr_eq(&model, &self.batcher.model());
        let shadow = self
            .models
            .as_ref()
            .and_then(|m| m.shadow())
            .filter(|s| on_default && s.samples(&conversation_id));
        if let Some(s) = shadow.as_ref().filter(|_| customer) {
            s.expect(&conversation_id, turn_id); // in admission order
        }
        // The customer's earlier contacts, read once per conversation while this turn is scored.
        let earlier = self
            .customers
            .clone()
            .and_then(|m| Some((m, self.store.earlier_due(&conversation_id)?)));
        let this = self.clone();
        let id = conversation_id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let scoring = async {
                match this.batcher.submit_to(model, &text).await {
                    Ok(pending) => pending.wait().await,
                    Err(e) => Err(e),
                }
            };
            let (scores, ()) = tokio::join!(scoring, async {
                if let Some((memory, customer)) = earlier {
                    let read = tokio::task::spawn_blocking(move || {
                        let contacts = memory.earlier(&customer);
                        (customer, contacts)
                    })
                    .await;
                    match read {
                        Ok((customer, Ok(contacts))) => {
                            this.store.remember_earlier(&id, customer, contacts)
                        }
                        Ok((customer, Err(e))) => {
                            tracing::warn!(error = %e, "customer's earlier contacts not read: no repeat_contact for this conversation");
                            this.store.remember_earlier(&id, customer, Vec::new())
                        }
                        Err(e) => tracing::warn!(error = %e, "reading earlier contacts"),
                    }
                }
            });
            if let Some(shadow) = shadow {
                match &scores {
                    Ok(live) => {
                        let live = (counted(live.clone(), apology), started.elapsed());
                        let key = (id.clone(), turn_id, customer, apology);
                        tokio::spawn(shadow_score(this.batcher.clone(), shadow, text, live, key));
                    }
                    Err(_) => shadow.skipped(&id, turn_id, customer, Instant::now()),
                }
            }
            // complete (and commit, where conversations are shared), hand the alerts to the sink
            // in the conversation's order, then the results to their waiters
            let _room = this.publishing.acquire().await;
            let enqueue = |alerts: &[Alert]| this.sink.enqueue(alerts);
            let completion = this.store.settle(&id, turn_id, scores, &enqueue).await;
            completion.deliver();
        });
        finish(conversation_id, turn_id, rx, false, self.metrics.clone()).boxed()
    }

    fn rejected(
        &self,
        conversation_id: String,
        turn_id: u64,
        e: RequestError,
    ) -> BoxFuture<'static, pb::TurnResult> {
        self.metrics.turn("rejected");
        futures::future::ready(convert::error_result(
            conversation_id,
            turn_id,
            e.code(),
            e.to_string(),
        ))
        .boxed()
    }
}

async fn finish(
    conversation_id: String,
    turn_id: u64,
    rx: tokio::sync::oneshot::Receiver<Delivery>,
    joined: bool,
    metrics: Metrics,
) -> pb::TurnResult {
    let (outcome, scored_before) = rx.await.unwrap_or((Err(InferenceError::Stopped), false));
    let duplicate = joined || scored_before;
    match outcome {
        Ok(scored) => {
            metrics.turn(if duplicate { "duplicate" } else { "scored" });
            convert::turn_result(&conversation_id, &scored, duplicate)
        }
        Err(e) => {
            metrics.turn("failed");
            convert::error_result(conversation_id, turn_id, e.code(), e.to_string())
        }
    }
}

/// Scores a sampled turn with the shadow model and records how it compares; never answers anyone.
async fn shadow_score(
    batcher: Batcher,
    shadow: Arc<Shadow>,
    text: String,
    (live, live_latency): (Scores, std::time::Duration),
    (conversation_id, turn_id, customer, apology): (String, u64, bool, bool),
) {
    let started = Instant::now();
    let scored = match batcher.try_submit_to(shadow.model.clone(), &text) {
        Ok(pending) => pending.wait().await.ok(),
        Err(_) => None,
    };
    let Some(scores) = scored else {
        return shadow.skipped(&conversation_id, turn_id, customer, Instant::now());
    };
    let scores = counted(scores, apology);
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

/// `scores` with the valence a conversation counts: on an agent's turn that apologises, without
/// the emotions an apology carries (see [`crate::assist::apology`]).
fn counted(mut scores: Scores, apology: bool) -> Scores {
    if apology {
        scores.valence = scores.valence_without(crate::assist::APOLOGY_EMOTIONS);
    }
    scores
}
