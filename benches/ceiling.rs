//! The ceiling: the service's inference path alone (tokenise + micro-batch + ONNX Runtime +
//! valence, through the same `Batcher` the server uses), without gRPC or conversation state,
//! driven closed loop with enough texts in flight to keep batches full.
//!
//!     cargo bench --bench ceiling -- <corpus.tsv> [seconds per setting]
//!
//! Prints texts/s for several batch policies and layouts, the texts per ONNX Runtime call, and how
//! busy the inference threads were (their CPU time over the run, per thread: below 100 % they
//! waited for texts): inference workers x ONNX Runtime
//! intra-op threads (`CEILING_LAYOUTS=1x2,2x1` to choose; `CEILING_SETTINGS=128x1024` picks
//! max_batch x max_batch_tokens; `CEILING_IN_FLIGHT=1` keeps that many texts in flight instead of
//! 2 x max_batch: one is a lone conversation's ceiling). Texts go to their language's model, as in
//! the service (`model.languages`: Chinese to the shipped multilingual model).
//!
//! `CEILING_FUSED_KERNELS=false` runs the model files' graphs as they are (`model.fused_kernels`).
//! Two knobs for looking into a lone conversation's calls: `CEILING_SOLO_THREADS` sets
//! `model.solo_threads` (1: no solo session), and `CEILING_SWEEP_MB=14` reads that many MiB of
//! other memory after each text (a stand-in for another model's weights passing through the
//! caches between two calls); with one text in flight, the texts/s printed then leave the
//! sweeping time out.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use emotion_service::lang::Lang;
use emotion_service::{Config, inference, loadgen, metrics::Metrics};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let corpus = args
        .next()
        .unwrap_or_else(|| "../shared/datasets/goemotions/test.tsv".into());
    let seconds: f64 = args.next().map_or(Ok(5.0), |s| s.parse())?;
    let sweep = Arc::new(Sweep::new(match std::env::var("CEILING_SWEEP_MB") {
        Ok(v) => v.parse()?,
        Err(_) => 0,
    }));
    let texts = Arc::new(loadgen::read_corpus(corpus.as_ref())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "corpus {corpus}: {} texts; {seconds} s per setting",
        texts.len()
    );
    println!(
        "| workers | intra threads | max_batch | max_batch_tokens | texts/s | texts per ORT call | inference threads busy |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    // (max_batch, max_batch_tokens); 100_000 tokens = no length bucketing.
    let settings: Vec<(usize, usize)> = match std::env::var("CEILING_SETTINGS") {
        Ok(v) => pairs(&v),
        Err(_) => vec![
            (1, 100_000),
            (8, 100_000),
            (32, 100_000),
            (64, 100_000),
            (32, 512),
            (64, 1024),
            (128, 1024),
        ],
    };
    let layouts: Vec<(usize, usize)> = match std::env::var("CEILING_LAYOUTS") {
        Ok(v) => pairs(&v),
        Err(_) => vec![(2, 1), (1, 2)],
    };
    for (workers, threads) in layouts {
        for &(max_batch, max_batch_tokens) in &settings {
            let mut config = Config::default();
            config.batching.max_batch = max_batch;
            config.batching.max_batch_tokens = max_batch_tokens;
            config.batching.queue_capacity = 4 * max_batch.max(32);
            config.model.intra_threads = threads;
            config.model.inference_workers = workers;
            if let Ok(dir) = std::env::var("CEILING_MODEL_DIR") {
                config.model.dir = dir.into();
            }
            if let Ok(dir) = std::env::var("CEILING_ZH_MODEL_DIR") {
                config.model.languages.insert("zh".into(), dir.into());
            }
            if let Ok(v) = std::env::var("CEILING_FUSED_KERNELS") {
                config.model.fused_kernels = v.parse()?;
            }
            if let Ok(v) = std::env::var("CEILING_SOLO_THREADS") {
                config.model.solo_threads = v.parse()?;
            }
            if let Ok(v) = std::env::var("CEILING_SOLO_THREADS") {
                config.model.solo_threads = v.parse()?;
            }
            let metrics = Metrics::new();
            let batcher = inference::start(&config, metrics.clone())?;
            let in_flight = match std::env::var("CEILING_IN_FLIGHT") {
                Ok(v) => v.parse()?,
                Err(_) => 2 * max_batch.max(4),
            };
            let before = inference_cpu();
            sweep.spent_ns.store(0, Ordering::Relaxed);
            let (done, batches) = runtime.block_on(drive(
                batcher.clone(),
                texts.clone(),
                in_flight,
                seconds,
                sweep.clone(),
            ));
            let scoring = seconds - sweep.spent_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let busy: Duration = inference_cpu()
                .iter()
                .map(|(thread, cpu)| {
                    cpu.saturating_sub(before.get(thread).copied().unwrap_or_default())
                })
                .sum();
            drop(batcher);
            println!(
                "| {workers} | {threads} | {max_batch} | {max_batch_tokens} | {:.0} | {:.1} | {:.0} % |",
                done as f64 / scoring,
                done as f64 / batches.max(1) as f64,
                100.0 * busy.as_secs_f64() / seconds / workers as f64
            );
        }
    }
    Ok(())
}

/// Keeps `in_flight` texts submitted for `seconds`; returns texts scored and batches run.
async fn drive(
    batcher: inference::Batcher,
    texts: Arc<Vec<String>>,
    in_flight: usize,
    seconds: f64,
    sweep: Arc<Sweep>,
) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for w in 0..in_flight {
        let (batcher, texts, sweep) = (batcher.clone(), texts.clone(), sweep.clone());
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut i = w;
            while Instant::now() < deadline {
                let text = &texts[i % texts.len()];
                let pending = batcher
                    .submit_in(Lang::of_text(text), text)
                    .await
                    .expect("queued");
                pending.wait().await.expect("scored");
                sweep.run();
                done += 1;
                i += in_flight;
            }
            done
        }));
    }
    let mut done = 0;
    for w in workers {
        done += w.await.expect("worker");
    }
    (done, batcher.batches_run())
}

/// Memory read after each text (`CEILING_SWEEP_MB`), and the time spent reading it.
struct Sweep {
    memory: Vec<u8>,
    spent_ns: AtomicU64,
}

impl Sweep {
    fn new(mib: usize) -> Self {
        Self {
            memory: (0..mib << 20).map(|i| i as u8).collect(),
            spent_ns: AtomicU64::new(0),
        }
    }

    /// Reads one byte of every cache line.
    fn run(&self) {
        if self.memory.is_empty() {
            return;
        }
        let started = Instant::now();
        let sum = self
            .memory
            .iter()
            .step_by(64)
            .fold(0u64, |a, &b| a.wrapping_add(u64::from(b)));
        std::hint::black_box(sum);
        self.spent_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// "AxB,CxD" -> [(A, B), (C, D)].
fn pairs(v: &str) -> Vec<(usize, usize)> {
    v.split(',')
        .filter_map(|l| l.split_once('x'))
        .filter_map(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .collect()
}

/// CPU time of each inference thread of this process so far (Linux: its `schedstat`), by thread id.
fn inference_cpu() -> HashMap<String, Duration> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return HashMap::new();
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with("inference"))
        })
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            let nanos = stat.split_whitespace().next()?.parse().ok()?;
            Some((
                task.file_name().to_string_lossy().into_owned(),
                Duration::from_nanos(nanos),
            ))
        })
        .collect()
}
