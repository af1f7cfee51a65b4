//! Dynamic micro-batching across all callers: one bounded queue in front of inference threads
//! (`model.inference_workers`). A free thread takes every text waiting (at least one: it waits
//! for the first, then up to `max_wait` for company), tokenises them and adds them to a pool the
//! threads share, sorts the pool by length, plans it as the padded calls that cost least
//! (`plan_calls`: texts of like length share a call, a short text is not padded to a long one's
//! length), and runs the call the oldest text belongs to. The rest stays in the pool for the
//! next free thread, together with the texts that arrive meanwhile, so texts of like length
//! gather into fuller calls; a thread that leaves texts there wakes one that waits. Each call's
//! texts get their replies as soon as it returns.
//!
//! Tokenisation happens on the inference thread, once a batch is gathered: callers (async tasks on
//! the runtime's threads) only copy the text into the queue, so a long text never holds up a
//! runtime thread. The oldest text always runs next, but the texts of one call may be younger than
//! others left waiting: the conversation store applies results in turn order regardless.
//!
//! Cores are shared by a gate: each ONNX Runtime call runs either on its worker's own session
//! (`model.intra_threads`, one thread on 2 cores) alongside the other workers' calls, or, when it
//! finds no other call running and nothing else waiting in the queue, alone on the model's solo
//! session (`model.solo_threads`, every core). A lone conversation's turn so gets every core,
//! while under load every worker runs its own single-thread call (which is faster per core than
//! one call on several threads); a worker whose call arrives during a solo call waits for it.
//! Whether the solo session is really faster for a lone call is measured, not assumed
//! ([`LoneCalls`]): on a machine whose second core is shared (a cloud VM's vCPUs, hyperthreads)
//! one call on two threads was seen taking 1.5x as long as on one thread, and the other way round
//! minutes later.
//!
//! Models swap without stopping anything: a [`LoadedModel`] holds its tokenizer and one ONNX
//! Runtime session per worker, and every queued text carries the model it was tokenized for. A
//! swap only changes which model new texts get; texts already queued or running finish on theirs,
//! and a model is freed when nothing refers to it any more.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// How fast this model's lone calls run on the solo session and on a worker's own.
    lone: LoneCalls,
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
            lone: LoneCalls::default(),
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
    /// `None` is no text: it wakes a waiting worker (`Pool::take_call`).
    queue: flume::Sender<Option<Job>>,
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
    /// Waits until no solo call runs, then enters. The call is lone if the model has a solo
    /// session, nothing is queued (`queued()` is asked then, not before the wait), no other call
    /// runs or waits, and the cores have been uncontended for [`SOLO_QUIET`]; a lone call runs
    /// solo if `solo_if_lone`, every other call beside the others.
    fn enter(&self, has_solo: bool, solo_if_lone: bool, queued: impl FnOnce() -> bool) -> Entry {
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
        let lone = has_solo && !contended && quiet;
        let solo = lone && solo_if_lone;
        if solo {
            state.solo = true;
        } else {
            state.shared += 1;
        }
        Entry { solo, lone }
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

/// How a call entered the gate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    /// It runs on the solo session (every core).
    solo: bool,
    /// Nothing else wanted the cores: it could have run solo (and did if `solo`).
    lone: bool,
}

/// One model's lone calls timed both ways: on the solo session (every core) and on a worker's
/// own single-thread session. A lone call takes the faster on recent evidence; after
/// [`LONE_FIRST_EXPLORE`] calls, then every [`LONE_EXPLORE`], [`LONE_BURST`] in a row take the
/// other, so that a change in the
/// machine (a shared core freed or taken) is seen within a few seconds at a lone conversation's
/// rate. Only a call that follows [`LONE_WARMUP`] of its own kind is timed: the first ones after
/// a switch pay for waking a core that sat idle (on a VM, a halted vCPU the host must schedule
/// again) and cold caches; timed from the second call of a burst, the solo session looked 2-3x
/// slower than it runs when it runs all the time. Until both ways have [`LONE_MIN_SAMPLES`]
/// timings, lone calls run solo.
#[derive(Default)]
struct LoneCalls {
    state: Mutex<LoneState>,
}

#[derive(Default, Debug, Clone, Copy)]
struct LoneState {
    calls: u64,
    /// Calls of the exploring burst still to run, and the way they take (true: solo).
    burst_left: u32,
    burst_solo: bool,
    /// The way the previous lone call ran (true: solo), and how many in a row ran that way.
    last: Option<bool>,
    run: u32,
    /// Nanoseconds per unit of work (positions + [`CALL_COST_POSITIONS`]), moving averages.
    solo: Option<f64>,
    single: Option<f64>,
    solo_samples: u32,
    single_samples: u32,
}

const LONE_EXPLORE: u64 = 2048;
/// The first exploring burst comes early: a model's lone calls should not wait 2,048 calls
/// (ten seconds of a lone Chinese conversation) for their first timings of the other way.
const LONE_FIRST_EXPLORE: u64 = 128;
const LONE_BURST: u32 = 64;
const LONE_WARMUP: u32 = 16;
const LONE_MIN_SAMPLES: u32 = 4;
/// Weight of a new timing in the moving averages.
const LONE_ALPHA: f64 = 0.125;

impl LoneState {
    /// The way lone calls take when not exploring.
    fn preferred(&self) -> bool {
        match (self.solo, self.single) {
            (Some(solo), Some(single))
                if self.solo_samples >= LONE_MIN_SAMPLES
                    && self.single_samples >= LONE_MIN_SAMPLES =>
            {
                solo <= single
            }
            _ => true,
        }
    }
}

impl LoneCalls {
    /// Whether the next lone call should run on the solo session.
    fn solo_next(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.burst_left > 0 {
            state.burst_left -= 1;
            return state.burst_solo;
        }
        let preferred = state.preferred();
        state.calls += 1;
        if state.calls == LONE_FIRST_EXPLORE || state.calls.is_multiple_of(LONE_EXPLORE) {
            // The whole burst takes the way it set out on, even once its timings make that the
            // preferred one.
            state.burst_left = LONE_BURST - 1;
            state.burst_solo = !preferred;
            return !preferred;
        }
        preferred
    }

    /// Records a lone call's time; `work` = positions + [`CALL_COST_POSITIONS`].
    fn record(&self, solo: bool, elapsed: Duration, work: usize) -> LoneState {
        let per_work = elapsed.as_nanos() as f64 / work.max(1) as f64;
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        state.run = if state.last == Some(solo) {
            state.run.saturating_add(1)
        } else {
            1
        };
        state.last = Some(solo);
        if state.run > LONE_WARMUP {
            let (average, samples) = if solo {
                (&mut state.solo, &mut state.solo_samples)
            } else {
                (&mut state.single, &mut state.single_samples)
            };
            // A timing over twice the average counts as twice the average: one preempted call
            // must not swing the choice for a whole exploring period.
            *average =
                Some(average.map_or(per_work, |a| a + LONE_ALPHA * (per_work.min(2.0 * a) - a)));
            *samples = samples.saturating_add(1);
        }
        *state
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
        let (queue, jobs) = flume::bounded::<Option<Job>>(policy.queue_capacity);
        let workers = model.workers();
        assert!(workers > 0, "at least one engine");
        let batches = Arc::new(AtomicU64::new(0));
        let solo_batches = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Gate::default());
        let pool = Arc::new(Pool::new(queue.downgrade()));
        for i in 0..workers {
            let worker = Worker {
                index: i,
                jobs: jobs.clone(),
                policy: policy.clone(),
                metrics: metrics.clone(),
                batches: batches.clone(),
                solo_batches: solo_batches.clone(),
                gate: gate.clone(),
                pool: pool.clone(),
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
            .send_async(Some(job))
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
        self.queue.try_send(Some(job)).map_err(|e| match e {
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

/// A call's fixed cost (session run, tensors, the pooler and head), in token positions' worth of
/// work: about 0.6 ms against ~80 us per position for the shipped 6-layer models on one
/// AVX-512 core (BENCHMARKS.md, "padding").
const CALL_COST_POSITIONS: usize = 8;

/// How a gathered batch runs: the sizes of consecutive calls over `texts` (model, token count),
/// sorted by model then length. Each call holds one model's texts, padded to its longest, and
/// at most `max_tokens` positions (a single text always fits). Among those splits, the one with
/// the least work: positions computed plus [`CALL_COST_POSITIONS`] per call, so texts of very
/// different lengths run apart while similar ones share a call.
fn plan_calls(texts: &[(usize, usize)], max_tokens: usize) -> Vec<usize> {
    let n = texts.len();
    // best[j]: the least work for texts[..j]; from[j]: where its last call starts.
    let mut best = vec![usize::MAX; n + 1];
    let mut from = vec![0; n + 1];
    best[0] = 0;
    for j in 1..=n {
        let (model, width) = texts[j - 1];
        let width = width.max(1);
        for i in (0..j).rev() {
            let rows = j - i;
            if texts[i].0 != model || (rows > 1 && rows * width > max_tokens) {
                break;
            }
            let work = best[i] + CALL_COST_POSITIONS + rows * width;
            if work < best[j] {
                best[j] = work;
                from[j] = i;
            }
        }
    }
    let mut sizes = Vec::new();
    let mut j = n;
    while j > 0 {
        sizes.push(j - from[j]);
        j = from[j];
    }
    sizes.reverse();
    sizes
}

/// Tokenized texts waiting for a call, shared by the inference workers. A free worker plans the
/// calls of everything waiting (`plan_calls`) and takes only the one the oldest text belongs
/// to; the rest waits for the next free worker, together with the texts that arrive meanwhile.
/// So texts of like length gather into fuller calls than one worker's gathered batch allows
/// (64 conversations: 3.7 -> 5.9 texts per call, BENCHMARKS.md "A shared pool"), and no text
/// is passed over for long: the oldest always goes next.
struct Pool {
    texts: Mutex<Vec<(Vec<u32>, Job)>>,
    /// Workers about to wait, or waiting, for texts.
    idle: AtomicUsize,
    /// The workers' queue, to wake a waiting worker with a `None` when texts are left in the
    /// pool (weak: the workers stop once every `Batcher` is gone).
    wake: flume::WeakSender<Option<Job>>,
}

impl Pool {
    fn new(wake: flume::WeakSender<Option<Job>>) -> Self {
        Self {
            texts: Mutex::default(),
            idle: AtomicUsize::new(0),
            wake,
        }
    }

    fn len(&self) -> usize {
        self.texts.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Adds `fresh` to the pool and takes the call its oldest text belongs to (`None` if the
    /// pool is empty); wakes an idle worker if texts are left.
    fn take_call(
        &self,
        fresh: &mut Vec<(Vec<u32>, Job)>,
        max_tokens: usize,
    ) -> Option<Vec<(Vec<u32>, Job)>> {
        let (call, left) = {
            let mut texts = self.texts.lock().unwrap_or_else(|p| p.into_inner());
            texts.append(fresh);
            if texts.is_empty() {
                return None;
            }
            let call = take_oldest_call(
                &mut texts,
                |(ids, job)| (Arc::as_ptr(&job.model) as usize, ids.len()),
                |(_, job)| job.enqueued,
                max_tokens,
            );
            (call, texts.len())
        };
        if left > 0 && self.idle.load(Ordering::SeqCst) > 0 {
            // A full queue needs no wake: no worker waits for texts then.
            if let Some(queue) = self.wake.upgrade() {
                let _ = queue.try_send(None);
            }
        }
        Some(call)
    }
}

/// Sorts `texts` by (model, length) (`key`), splits them into the calls `plan_calls` chooses and
/// removes and returns the call with the oldest text (the earliest `enqueued`).
fn take_oldest_call<T>(
    texts: &mut Vec<T>,
    key: impl Fn(&T) -> (usize, usize),
    enqueued: impl Fn(&T) -> Instant,
    max_tokens: usize,
) -> Vec<T> {
    texts.sort_by_key(&key);
    let lengths: Vec<(usize, usize)> = texts.iter().map(&key).collect();
    let oldest = (0..texts.len())
        .min_by_key(|&i| enqueued(&texts[i]))
        .unwrap_or(0);
    let mut start = 0;
    for size in plan_calls(&lengths, max_tokens) {
        if oldest < start + size {
            return texts.drain(start..start + size).collect();
        }
        start += size;
    }
    Vec::new()
}

/// One inference thread and what it shares with the others.
struct Worker {
    index: usize,
    jobs: flume::Receiver<Option<Job>>,
    policy: BatchPolicy,
    metrics: Metrics,
    batches: Arc<AtomicU64>,
    solo_batches: Arc<AtomicU64>,
    gate: Arc<Gate>,
    pool: Arc<Pool>,
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
            pool,
        } = self;
        let mut gathered: Vec<Job> = Vec::with_capacity(policy.max_batch);
        let mut fresh: Vec<(Vec<u32>, Job)> = Vec::with_capacity(policy.max_batch);
        loop {
            // Counted idle before looking at the pool: a worker that leaves texts there after
            // this look sees the count and wakes this one (`Pool::leave`).
            pool.idle.fetch_add(1, Ordering::SeqCst);
            let pooled = pool.len();
            if pooled > 0 {
                pool.idle.fetch_sub(1, Ordering::SeqCst);
                // Texts are waiting in the pool: plan them with whatever has arrived since.
                while pooled + gathered.len() < policy.max_batch {
                    match jobs.try_recv() {
                        Ok(Some(job)) => gathered.push(job),
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            } else {
                let next = jobs.recv();
                pool.idle.fetch_sub(1, Ordering::SeqCst);
                let first = match next {
                    Ok(Some(job)) => job,
                    // Woken for texts another worker left in the pool.
                    Ok(None) => continue,
                    Err(_) => break,
                };
                let deadline = first.enqueued + policy.max_wait;
                gathered.push(first);
                while gathered.len() < policy.max_batch {
                    match jobs.try_recv() {
                        Ok(Some(job)) => gathered.push(job),
                        Ok(None) => {}
                        Err(flume::TryRecvError::Empty) => match jobs.recv_deadline(deadline) {
                            Ok(Some(job)) => gathered.push(job),
                            Ok(None) => {}
                            Err(_) => break,
                        },
                        Err(flume::TryRecvError::Disconnected) => break,
                    }
                }
            }
            for job in gathered.drain(..) {
                match job.model.encoder.encode(&job.text) {
                    Ok(ids) => fresh.push((ids, job)),
                    Err(e) => {
                        let _ = job
                            .reply
                            .send(Err(InferenceError::Runtime(format!("tokenizer: {e}"))));
                    }
                }
            }
            let Some(call) = pool.take_call(&mut fresh, policy.max_batch_tokens) else {
                continue;
            };
            metrics.queue_depth.set((jobs.len() + pool.len()) as i64);
            let size = call.len();
            {
                let model = call[0].1.model.clone();
                let ids: Vec<&[u32]> = call.iter().map(|(ids, _)| ids.as_slice()).collect();
                // Solo only when nothing waits: queued texts are the other workers' to take,
                // and they would wait for a solo call to end (see `Gate::enter`).
                let has_solo = model.solo.is_some();
                let entry = gate.enter(has_solo, has_solo && model.lone.solo_next(), || {
                    !jobs.is_empty() || pool.len() > 0
                });
                let solo = entry.solo;
                let started = Instant::now();
                for (_, job) in &call {
                    let waited = started.saturating_duration_since(job.enqueued);
                    metrics.queue_wait_seconds.observe(waited.as_secs_f64());
                }
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
                metrics.inference_seconds.observe(elapsed.as_secs_f64());
                metrics.batch_size.observe(ids.len() as f64);
                let tokens: usize = ids.iter().map(|t| t.len()).sum();
                let positions = call[size - 1].0.len() * size;
                metrics.inference_tokens.inc_by(tokens as u64);
                metrics.inference_positions.inc_by(positions as u64);
                if entry.lone && outcome.is_ok() {
                    let lone = model
                        .lone
                        .record(solo, elapsed, positions + CALL_COST_POSITIONS);
                    if let (Some(solo), Some(single)) = (lone.solo, lone.single) {
                        metrics.solo_speedup.set(single / solo);
                    }
                }
                batches.fetch_add(1, Ordering::Relaxed);
                if solo {
                    solo_batches.fetch_add(1, Ordering::Relaxed);
                    metrics.solo_batches.inc();
                }
                drop(ids);
                match outcome {
                    Ok(scores) => {
                        for ((_, job), scores) in call.into_iter().zip(scores) {
                            let _ = job.reply.send(Ok(scores));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, size, "inference batch failed");
                        for (_, job) in call {
                            let _ = job.reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
        tracing::info!("inference thread stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(texts: &[(usize, usize)], max_tokens: usize) -> Vec<Vec<(usize, usize)>> {
        let mut rest = texts;
        plan_calls(texts, max_tokens)
            .into_iter()
            .map(|size| {
                let (call, tail) = rest.split_at(size);
                rest = tail;
                call.to_vec()
            })
            .collect()
    }

    /// Runs `n` lone calls against machines where a unit of work costs `solo_ns` on the solo
    /// session and `single_ns` on one thread (the first 16 calls after a switch of way 4x
    /// that); returns how many ran solo.
    fn lone_calls(lone: &LoneCalls, n: usize, solo_ns: u64, single_ns: u64) -> usize {
        let mut solo_runs = 0;
        for _ in 0..n {
            let solo = lone.solo_next();
            solo_runs += usize::from(solo);
            let ns = if solo { solo_ns } else { single_ns };
            let state = *lone.state.lock().unwrap();
            let warm = state.last == Some(solo) && state.run >= 16;
            let cold = if warm { 1 } else { 4 };
            lone.record(solo, Duration::from_nanos(ns * 30 * cold), 30);
        }
        solo_runs
    }

    #[test]
    fn lone_calls_take_the_faster_session_and_follow_a_change_of_machine() {
        let lone = LoneCalls::default();
        // Before the single-thread way has its timings: solo, bar the exploring calls.
        assert!(lone.solo_next());
        // Two threads faster (a machine with two free cores): solo, but a burst of 64 at the
        // 128th call and every 2048 after.
        let solo_runs = lone_calls(&lone, 21_120, 45_000, 80_000);
        assert!(solo_runs >= 20_416, "{solo_runs} of 21120 solo");
        // The second core taken (two threads now 1.5x one thread's time): after the next
        // exploring burst, lone calls leave the solo session.
        lone_calls(&lone, 4_300, 120_000, 80_000);
        let solo_runs = lone_calls(&lone, 21_120, 120_000, 80_000);
        assert!(solo_runs <= 640, "{solo_runs} of 21120 still solo");
        // And back.
        lone_calls(&lone, 4_300, 45_000, 80_000);
        let solo_runs = lone_calls(&lone, 21_120, 45_000, 80_000);
        assert!(solo_runs >= 20_480, "{solo_runs} of 21120 solo");
    }

    #[test]
    fn a_new_model_times_both_ways_within_its_first_few_hundred_lone_calls() {
        let lone = LoneCalls::default();
        // One thread faster: the burst at the 128th call finds it.
        let solo_runs = lone_calls(&lone, 256, 120_000, 80_000);
        assert_eq!(
            solo_runs, 127,
            "solo until the burst at the 128th call, then the faster way"
        );
        assert!(!lone.solo_next());
        // Two threads faster: the burst tries one thread, and the calls go back to solo.
        let lone = LoneCalls::default();
        lone_calls(&lone, 256, 45_000, 80_000);
        assert!(lone.solo_next());
        assert_eq!(lone.state.lock().unwrap().single_samples, 48);
    }

    #[test]
    fn a_few_slow_calls_do_not_swing_the_choice() {
        let lone = LoneCalls::default();
        // One thread faster (solo 1.5x its time): lone calls settle on a worker's session.
        lone_calls(&lone, 4_300, 120_000, 80_000);
        assert!(!lone.solo_next());
        // Two preempted calls of ten times the usual time, then the usual again.
        for _ in 0..2 {
            lone.record(false, Duration::from_nanos(800_000 * 30), 30);
        }
        let solo_runs = lone_calls(&lone, 1_000, 120_000, 80_000);
        assert!(
            solo_runs <= 64,
            "{solo_runs} of 1000 solo after two slow calls"
        );
    }

    #[test]
    fn the_gate_runs_a_lone_call_solo_only_when_asked() {
        let gate = Gate::default();
        assert_eq!(
            gate.enter(true, true, || false),
            Entry {
                solo: true,
                lone: true
            }
        );
        gate.leave(true);
        // Lone, but the faster way is a worker's own session: it runs beside any others.
        let entry = gate.enter(true, false, || false);
        assert_eq!(
            entry,
            Entry {
                solo: false,
                lone: true
            }
        );
        // A second call now contends: neither lone nor solo.
        assert_eq!(
            gate.enter(true, true, || false),
            Entry {
                solo: false,
                lone: false
            }
        );
        gate.leave(false);
        gate.leave(false);
    }

    #[test]
    fn the_pool_gives_the_oldest_texts_call_and_keeps_the_rest() {
        // (model, length, arrival): the oldest text is the odd-length one.
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut texts = vec![
            (0, 20, at(5)),
            (0, 61, at(0)),
            (0, 21, at(6)),
            (0, 64, at(9)),
            (0, 22, at(7)),
            (1, 20, at(8)),
        ];
        let take = |texts: &mut Vec<(usize, usize, Instant)>| {
            take_oldest_call(texts, |t| (t.0, t.1), |t| t.2, 1024)
                .into_iter()
                .map(|t| (t.0, t.1))
                .collect::<Vec<_>>()
        };
        assert_eq!(take(&mut texts), [(0, 61), (0, 64)]);
        assert_eq!(texts.len(), 4, "the rest waits");
        // A later text of like length joins those left: they now share one call.
        texts.push((0, 23, at(10)));
        assert_eq!(take(&mut texts), [(0, 20), (0, 21), (0, 22), (0, 23)]);
        assert_eq!(take(&mut texts), [(1, 20)]);
        assert!(texts.is_empty());
        assert!(take(&mut texts).is_empty());
    }

    #[test]
    fn a_worker_leaving_texts_in_the_pool_wakes_an_idle_one() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/goemotions-minilm-l6");
        let spec = Arc::new(ModelSpec::load(&dir).unwrap());
        let encoder = TextEncoder::load(&spec).unwrap();
        let model = Arc::new(LoadedModel::new(spec, encoder, Vec::new(), None));
        let (queue, jobs) = flume::bounded::<Option<Job>>(8);
        let pool = Pool::new(queue.downgrade());
        let text = |t: &str| {
            let (job, pending) = Batcher::job(model.clone(), t);
            ((model.encoder.encode(t).unwrap(), job), pending)
        };
        let (short, _a) = text("ok");
        let (long, _b) =
            text("This is the third time I call about the same bill and still nobody has fixed it");
        let mut fresh = vec![short, long];
        // Nobody idle: the text left over is the next free worker's, no wake.
        let call = pool.take_call(&mut fresh, 1024).unwrap();
        assert_eq!(call.len(), 1);
        assert_eq!(pool.len(), 1);
        assert!(jobs.is_empty());
        // A worker waits: the next call that leaves texts behind wakes it.
        pool.idle.fetch_add(1, Ordering::SeqCst);
        let (other, _c) = text("hi");
        fresh.push(other);
        let call = pool.take_call(&mut fresh, 1024).unwrap();
        assert!(
            call[0].0.len() > 10,
            "the oldest (the long text) goes first"
        );
        assert_eq!(call.len(), 1, "a far length runs apart");
        assert_eq!(pool.len(), 1);
        assert!(matches!(jobs.try_recv(), Ok(None)), "a wake, not a text");
        // The queue gone (every Batcher dropped), the pool holds it no longer.
        drop(queue);
        assert!(jobs.recv().is_err());
    }

    #[test]
    fn texts_of_like_length_share_a_call_and_far_ones_run_apart() {
        let alike = [(0, 20), (0, 21), (0, 22), (0, 24)];
        assert_eq!(calls(&alike, 1024), vec![alike.to_vec()]);
        let mixed = [(0, 8), (0, 9), (0, 10), (0, 60), (0, 64)];
        assert_eq!(
            calls(&mixed, 1024),
            vec![mixed[..3].to_vec(), mixed[3..].to_vec()]
        );
        assert!(calls(&[], 1024).is_empty());
    }

    #[test]
    fn a_call_holds_one_model_and_keeps_to_the_token_budget() {
        let texts: Vec<(usize, usize)> = (0..40)
            .map(|i| (i / 20, 30 + i % 20))
            .chain([(2, 600), (2, 700)])
            .collect();
        let planned = calls(&texts, 512);
        assert_eq!(planned.concat(), texts, "every text once, in order");
        for call in &planned {
            assert!(call.iter().all(|t| t.0 == call[0].0), "one model: {call:?}");
            let width = call.last().unwrap().1;
            assert!(call.len() == 1 || call.len() * width <= 512, "{call:?}");
        }
        // The two long texts exceed the budget together, so each runs alone.
        assert_eq!(
            planned[planned.len() - 2..],
            [vec![(2, 600)], vec![(2, 700)]]
        );
    }
}
