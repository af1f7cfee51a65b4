//! Dynamic micro-batching across all callers: one bounded queue in front of inference threads
//! (`model.inference_workers`). A thread takes the first waiting text, gathers more until the batch
//! is full or the first one has waited `max_wait`, runs them as length-bucketed padded calls, and
//! replies to each.
//!
//! Tokenisation happens on the inference thread, once a batch is gathered: callers (async tasks on
//! the runtime's threads) only copy the text into the queue, so a long text never holds up a
//! runtime thread. Batches are formed in arrival order (FIFO), so one conversation's turns are
//! scored in the order they were submitted.
//!
//! Cores are shared by a gate: each ONNX Runtime call runs either on its worker's own session
//! (`model.intra_threads`, one thread on 2 cores) alongside the other workers' calls, or, when it
//! finds no other call running and nothing else waiting in the queue, alone on the model's solo
//! session (`model.solo_threads`, every core). A lone conversation's turn so gets every core,
//! while under load every worker runs its own single-thread call (which is faster per core than
//! one call on several threads); a worker whose call arrives during a solo call waits for it.
//!
//! Models swap without stopping anything: a [`LoadedModel`] holds its tokenizer and one ONNX
//! Runtime session per worker, and every queued text carries the model it was tokenized for. A
//! swap only changes which model new texts get; texts already queued or running finish on theirs,
//! and a model is freed when nothing refers to it any more.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::engine::{Engine, Scores};
use super::model_dir::ModelSpec;
use super::text::TextEncoder;
use crate::error::InferenceError;
use crate::lang::Lang;
use crate::metrics::Metrics;

/// A model ready to serve: its spec, its tokenizer, one session per inference worker, and the
/// solo session a call running alone gets (if configured).
pub struct LoadedModel {
    pub spec: Arc<ModelSpec>,
    pub encoder: TextEncoder,
    engines: Vec<Mutex<Engine>>,
    solo: Option<Mutex<Engine>>,
    pub loaded_at: SystemTime,
}

impl LoadedModel {
    /// `engines` must number the batcher's inference workers.
    pub fn new(
        spec: Arc<ModelSpec>,
        encoder: TextEncoder,
        engines: Vec<Engine>,
        solo: Option<Engine>,
    ) -> Self {
        Self {
            spec,
            encoder,
            engines: engines.into_iter().map(Mutex::new).collect(),
            solo: solo.map(Mutex::new),
            loaded_at: SystemTime::now(),
        }
    }

    pub fn workers(&self) -> usize {
        self.engines.len()
    }
}

struct Job {
    text: Box<str>,
    model: Arc<LoadedModel>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Scores, InferenceError>>,
}

#[derive(Debug, Clone)]
pub struct BatchPolicy {
    pub max_batch: usize,
    /// Most padded tokens (texts x longest text) in one ONNX Runtime call.
    pub max_batch_tokens: usize,
    pub max_wait: Duration,
    pub queue_capacity: usize,
}

/// Cheap to clone; every clone feeds the same queue.
#[derive(Clone)]
pub struct Batcher {
    /// Bounded: `send_async` waits for room (stream backpressure), `try_send` fails fast (unary).
    queue: flume::Sender<Job>,
    /// The model new texts are tokenized for and scored by, unless a language route takes them.
    current: Arc<RwLock<Arc<LoadedModel>>>,
    /// Language routes (`model.languages`): a text in one of these languages goes to its model.
    routes: Arc<RwLock<BTreeMap<Lang, Arc<LoadedModel>>>>,
    workers: usize,
    capacity: usize,
    metrics: Metrics,
    /// Batches the inference thread has run (for benchmarks and tests).
    batches: Arc<AtomicU64>,
    /// Of those, the ones that ran alone on a solo session.
    solo_batches: Arc<AtomicU64>,
}

/// Who is using the cores: calls running on workers' own sessions, or one solo call.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    freed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// Calls running on their workers' own sessions.
    shared: usize,
    /// Whether a solo call runs.
    solo: bool,
    /// Workers waiting for a solo call to end.
    waiting: usize,
    /// The last time two calls wanted the cores at once (one ran or waited while another
    /// entered, or texts were queued behind a call).
    contended: Option<Instant>,
}

/// How long the cores must have gone uncontended before a call may run solo. Under load that is
/// never (calls overlap every few milliseconds) and each worker keeps to its own session; a lone
/// conversation never contends and always runs solo. Without it, random arrivals at a moderate
/// rate made the workers alternate tiny solo calls (each waiting for the other's), which cost
/// more than they bought: at half saturation, open loop, the p99 went from 24 ms to 100-600 ms.
const SOLO_QUIET: Duration = Duration::from_secs(1);

impl Gate {
    /// Waits until no solo call runs, then enters: solo (returns true) if the model has a solo
    /// session, nothing is queued (`queued()` is asked then, not before the wait), no other call
    /// runs or waits, and the cores have been uncontended for [`SOLO_QUIET`]; else beside the
    /// others.
    fn enter(&self, has_solo: bool, queued: impl FnOnce() -> bool) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut contended = state.shared > 0 || state.waiting > 0;
        if state.solo {
            contended = true;
            state.waiting += 1;
            while state.solo {
                state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.waiting -= 1;
        }
        if has_solo && !contended && queued() {
            contended = true;
        }
        let now = Instant::now();
        let quiet = state
            .contended
            .is_none_or(|t| now.duration_since(t) >= SOLO_QUIET);
        if contended {
            state.contended = Some(now);
        }
        if has_solo && !contended && quiet {
            state.solo = true;
        } else {
            state.shared += 1;
        }
        state.solo
    }

    fn leave(&self, solo: bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if solo {
            state.solo = false;
        } else {
            state.shared -= 1;
        }
        drop(state);
        self.freed.notify_all();
    }
}

/// A submitted text's eventual scores.
pub struct Pending(oneshot::Receiver<Result<Scores, InferenceError>>);

impl Pending {
    pub async fn wait(self) -> Result<Scores, InferenceError> {
        self.0.await.unwrap_or(Err(InferenceError::Stopped))
    }
}

impl Batcher {
    /// Starts one inference thread per engine of `model`. They stop once every `Batcher` clone is
    /// dropped and the queue has drained.
    pub fn start(model: LoadedModel, policy: BatchPolicy, metrics: Metrics) -> Self {
        let (queue, jobs) = flume::bounded::<Job>(policy.queue_capacity);
        let workers = model.workers();
        assert!(workers > 0, "at least one engine");
        let batches = Arc::new(AtomicU64::new(0));
        let solo_batches = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Gate::default());
        for i in 0..workers {
            let worker = Worker {
                index: i,
                jobs: jobs.clone(),
                policy: policy.clone(),
                metrics: metrics.clone(),
                batches: batches.clone(),
                solo_batches: solo_batches.clone(),
                gate: gate.clone(),
            };
            std::thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || worker.run())
                .expect("spawning an inference thread");
        }
        Self {
            queue,
            current: Arc::new(RwLock::new(Arc::new(model))),
            routes: Arc::default(),
            workers,
            capacity: policy.queue_capacity,
            metrics,
            batches,
            solo_batches,
        }
    }

    pub fn batches_run(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Batches that ran alone on a model's solo session.
    pub fn solo_batches_run(&self) -> u64 {
        self.solo_batches.load(Ordering::Relaxed)
    }

    /// The model in service now.
    pub fn model(&self) -> Arc<LoadedModel> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The model a text in `lang` is scored by: its language route, else the default model.
    pub fn model_for(&self, lang: Option<Lang>) -> Arc<LoadedModel> {
        lang.and_then(|l| {
            self.routes
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&l)
                .cloned()
        })
        .unwrap_or_else(|| self.model())
    }

    /// The language routes in force.
    pub fn routes(&self) -> Vec<(Lang, Arc<LoadedModel>)> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        routes.iter().map(|(l, m)| (*l, m.clone())).collect()
    }

    /// Routes texts in `lang` to `model` from now on; returns the model it replaces, if any.
    pub fn route(&self, lang: Lang, model: Arc<LoadedModel>) -> Option<Arc<LoadedModel>> {
        assert_eq!(
            model.workers(),
            self.workers,
            "one engine per inference worker"
        );
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.insert(lang, model)
    }

    pub fn spec(&self) -> Arc<ModelSpec> {
        self.model().spec.clone()
    }

    /// Inference workers: a model to swap in needs one engine for each.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Puts `model` in service for every text submitted from now on; returns the one it replaces.
    pub fn swap(&self, model: Arc<LoadedModel>) -> Arc<LoadedModel> {
        assert_eq!(
            model.workers(),
            self.workers,
            "one engine per inference worker"
        );
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *current, model)
    }

    fn job(model: Arc<LoadedModel>, text: &str) -> (Job, Pending) {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            text: text.into(),
            model,
            enqueued: Instant::now(),
            reply,
        };
        (job, Pending(rx))
    }

    /// Queues a text for the model in service, waiting for room in the queue (backpressure for
    /// streams).
    pub async fn submit(&self, text: &str) -> Result<Pending, InferenceError> {
        self.submit_to(self.model(), text).await
    }

    /// Queues a text for a given model (shadow scoring, evaluation of a candidate).
    pub async fn submit_to(
        &self,
        model: Arc<LoadedModel>,
        text: &str,
    ) -> Result<Pending, InferenceError> {
        let (job, pending) = Self::job(model, text);
        self.queue
            .send_async(job)
            .await
            .map_err(|_| InferenceError::Stopped)?;
        self.metrics.queue_depth.set(self.queue.len() as i64);
        Ok(pending)
    }

    /// Queues a text for the model of its language (route, else default), waiting for room.
    pub async fn submit_in(
        &self,
        lang: Option<Lang>,
        text: &str,
    ) -> Result<Pending, InferenceError> {
        self.submit_to(self.model_for(lang), text).await
    }

    /// Queues a text for the model of its language or fails at once with `QueueFull`.
    pub fn try_submit_in(&self, lang: Option<Lang>, text: &str) -> Result<Pending, InferenceError> {
        self.try_submit_to(self.model_for(lang), text)
    }

    /// Queues a text or fails at once with `QueueFull` (unary calls).
    pub fn try_submit(&self, text: &str) -> Result<Pending, InferenceError> {
        self.try_submit_to(self.model(), text)
    }

    /// The same for a given model.
    pub fn try_submit_to(
        &self,
        model: Arc<LoadedModel>,
        text: &str,
    ) -> Result<Pending, InferenceError> {
        let (job, pending) = Self::job(model, text);
        self.queue.try_send(job).map_err(|e| match e {
            flume::TrySendError::Full(_) => InferenceError::QueueFull {
                capacity: self.capacity,
            },
            flume::TrySendError::Disconnected(_) => InferenceError::Stopped,
        })?;
        self.metrics.queue_depth.set(self.queue.len() as i64);
        Ok(pending)
    }

    /// Room for `n` more texts right now (a hint for unary calls that submit several).
    pub fn has_room_for(&self, n: usize) -> bool {
        self.queue.len() + n <= self.capacity
    }
}

/// One inference thread and what it shares with the others.
struct Worker {
    index: usize,
    jobs: flume::Receiver<Job>,
    policy: BatchPolicy,
    metrics: Metrics,
    batches: Arc<AtomicU64>,
    solo_batches: Arc<AtomicU64>,
    gate: Arc<Gate>,
}

impl Worker {
    fn run(self) {
        let Worker {
            index: worker,
            jobs,
            policy,
            metrics,
            batches,
            solo_batches,
            gate,
        } = self;
        let mut gathered: Vec<Job> = Vec::with_capacity(policy.max_batch);
        let mut batch: Vec<(Vec<u32>, Job)> = Vec::with_capacity(policy.max_batch);
        while let Ok(first) = jobs.recv() {
            let deadline = first.enqueued + policy.max_wait;
            gathered.push(first);
            while gathered.len() < policy.max_batch {
                match jobs.try_recv() {
                    Ok(job) => gathered.push(job),
                    Err(flume::TryRecvError::Empty) => match jobs.recv_deadline(deadline) {
                        Ok(job) => gathered.push(job),
                        Err(_) => break,
                    },
                    Err(flume::TryRecvError::Disconnected) => break,
                }
            }
            metrics.queue_depth.set(jobs.len() as i64);
            for job in gathered.drain(..) {
                match job.model.encoder.encode(&job.text) {
                    Ok(ids) => batch.push((ids, job)),
                    Err(e) => {
                        let _ = job
                            .reply
                            .send(Err(InferenceError::Runtime(format!("tokenizer: {e}"))));
                    }
                }
            }
            // Length bucketing: sorted by model, then length, the batch runs as sub-batches of
            // one model and at most `max_batch_tokens` padded tokens, so short texts are not
            // padded to a long one's length. Safe for ordering: the conversation store applies
            // results in turn order regardless.
            batch.sort_by_key(|(ids, j)| (Arc::as_ptr(&j.model) as usize, ids.len()));
            let mut results = Vec::with_capacity(batch.len());
            let mut start = 0;
            while start < batch.len() {
                let model = batch[start].1.model.clone();
                let mut end = start + 1;
                while end < batch.len()
                    && Arc::ptr_eq(&batch[end].1.model, &model)
                    && (end + 1 - start) * batch[end].0.len() <= policy.max_batch_tokens
                {
                    end += 1;
                }
                let ids: Vec<&[u32]> = batch[start..end]
                    .iter()
                    .map(|(ids, _)| ids.as_slice())
                    .collect();
                // Solo only when nothing waits: queued texts are the other workers' to take,
                // and they would wait for a solo call to end (see `Gate::enter`).
                let solo = gate.enter(model.solo.is_some(), || !jobs.is_empty());
                let started = Instant::now();
                // Only this worker uses engine `worker` of any model, and only a solo call the
                // solo engine: neither lock is ever contended.
                let mut engine = match (&model.solo, solo) {
                    (Some(engine), true) => engine.lock(),
                    _ => model.engines[worker].lock(),
                }
                .unwrap_or_else(|p| p.into_inner());
                let outcome = engine.run(&ids);
                drop(engine);
                let elapsed = started.elapsed();
                gate.leave(solo);
                match outcome {
                    Ok(scores) => results.extend(scores.into_iter().map(Ok)),
                    Err(e) => {
                        tracing::error!(error = %e, size = ids.len(), "inference batch failed");
                        results.extend(std::iter::repeat_n(Err(e), ids.len()));
                    }
                }
                metrics.inference_seconds.observe(elapsed.as_secs_f64());
                metrics.batch_size.observe(ids.len() as f64);
                batches.fetch_add(1, Ordering::Relaxed);
                if solo {
                    solo_batches.fetch_add(1, Ordering::Relaxed);
                    metrics.solo_batches.inc();
                }
                start = end;
            }
            for ((_, job), result) in batch.drain(..).zip(results) {
                let _ = job.reply.send(result);
            }
        }
        tracing::info!("inference thread stopped");
    }
}
