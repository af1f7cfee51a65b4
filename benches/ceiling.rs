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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use emotion_service::lang::Lang;
use emotion_service::{Config, inference, loadgen, metrics::Metrics};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let corpus = args
        .next()
        .unwrap_or_else(|| "../shared/datasets/goemotions/test.tsv".into());
    let seconds: f64 = args.next().map_or(Ok(5.0), |s| s.parse())?;
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
            let metrics = Metrics::new();
            let batcher = inference::start(&config, metrics.clone())?;
            let in_flight = match std::env::var("CEILING_IN_FLIGHT") {
                Ok(v) => v.parse()?,
                Err(_) => 2 * max_batch.max(4),
            };
            let before = inference_cpu();
            let (done, batches) =
                runtime.block_on(drive(batcher.clone(), texts.clone(), in_flight, seconds));
            let busy: Duration = inference_cpu()
                .iter()
                .map(|(thread, cpu)| {
                    cpu.saturating_sub(before.get(thread).copied().unwrap_or_default())
                })
                .sum();
            drop(batcher);
            println!(
                "| {workers} | {threads} | {max_batch} | {max_batch_tokens} | {:.0} | {:.1} | {:.0} % |",
                done as f64 / seconds,
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
) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for w in 0..in_flight {
        let (batcher, texts) = (batcher.clone(), texts.clone());
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
