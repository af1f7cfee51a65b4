//! Inference: the model directory contract, tokenisation, the ONNX Runtime session, and the
//! micro-batcher that owns it on a dedicated thread, off the async runtime.

pub mod batcher;
pub mod engine;
pub mod fuse;
pub mod kernels;
pub mod model_dir;
pub mod runtime;
pub mod shadow;
pub mod swap;
pub mod text;
pub mod weights;

use std::sync::Arc;

pub use batcher::{BatchPolicy, Batcher, LoadedModel, Pending};
pub use engine::{Engine, Scores};
pub use model_dir::{ModelSpec, ProblemType};
pub use text::TextEncoder;

use crate::config::Config;
use crate::error::ModelError;
use crate::metrics::Metrics;

/// Loads and checks the configured model, then starts its inference threads.
pub fn start(config: &Config, metrics: Metrics) -> Result<Batcher, ModelError> {
    let model = load(config, &config.model.dir)?;
    let policy = BatchPolicy {
        max_batch: config.batching.max_batch,
        max_batch_tokens: config.batching.max_batch_tokens,
        max_wait: config.max_wait(),
        queue_capacity: config.batching.queue_capacity,
    };
    let batcher = Batcher::start(model, policy, metrics);
    for (tag, dir) in &config.model.languages {
        let lang = crate::lang::Lang::from_tag(tag).ok_or_else(|| ModelError::Invalid {
            path: dir.clone(),
            message: format!("model.languages: {tag:?} is not a language the service speaks"),
        })?;
        let model = load(config, dir)?;
        tracing::info!(language = tag.as_str(), model = %model.spec.tag, "language route");
        batcher.route(lang, Arc::new(model));
    }
    Ok(batcher)
}

/// Loads and checks the model in `dir` with one session per configured inference worker, and the
/// solo session (`model.solo_threads`) when it has more threads than a worker's.
pub fn load(config: &Config, dir: &std::path::Path) -> Result<LoadedModel, ModelError> {
    let env = runtime::environment(config.model.onnxruntime.as_deref())?;
    let spec = Arc::new(ModelSpec::load(dir)?);
    let encoder = TextEncoder::load(&spec)?;
    let (workers, threads, solo_threads) = thread_layout(config);
    let wide = threads > 1 || solo_threads.is_some();
    let shared =
        weights::SharedWeights::load(&spec.model_path(), config.model.fused_kernels, wide)?;
    let engines = (0..workers)
        .map(|_| Engine::load(env, spec.clone(), &encoder, threads, &shared))
        .collect::<Result<Vec<_>, _>>()?;
    let solo = solo_threads
        .map(|n| Engine::load(env, spec.clone(), &encoder, n, &shared))
        .transpose()?;
    tracing::debug!(
        model = %spec.tag,
        sessions = engines.len() + usize::from(solo.is_some()),
        threads,
        solo_threads,
        shared_weights_mib = shared.bytes / (1 << 20),
        fused = ?shared.graph.as_ref().map(|g| g.fused),
        fused_wide = ?shared.wide.as_ref().map(|g| g.fused),
        "model sessions"
    );
    Ok(LoadedModel::new(spec, encoder, engines, solo))
}

/// Inference workers, ONNX Runtime threads per worker's session, and the solo session's threads
/// (none when it would have no more than a worker's).
pub fn thread_layout(config: &Config) -> (usize, usize, Option<usize>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    layout_for(cores, config)
}

/// [`thread_layout`] on a machine of `cores` cores. Workers by default (0): one per two cores, at
/// least 2 (on 2 cores, 2 workers of 1 thread; on 16, 8 of 2 threads: 2,424 turns/s where 2
/// workers of 8 threads gave 1,408, BENCHMARKS.md 2026-12-04).
fn layout_for(cores: usize, config: &Config) -> (usize, usize, Option<usize>) {
    let workers = match config.model.inference_workers {
        0 => (cores / 2).clamp(2, 64),
        n => n,
    };
    let threads = match config.model.intra_threads {
        0 => (cores / workers).max(1),
        n => n,
    };
    let solo = match config.model.solo_threads {
        0 => cores,
        n => n,
    };
    (workers, threads, (solo > threads).then_some(solo))
}

impl ModelSpec {
    /// Indexes of the predicted labels: multi-label, every label at or above its threshold (the top
    /// label when none is); single-label, the most probable label.
    pub fn predicted(&self, probs: &[f32]) -> Vec<usize> {
        let top = probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        match self.problem_type {
            ProblemType::MultiLabel => {
                let above: Vec<usize> = (0..probs.len())
                    .filter(|&i| probs[i] >= self.thresholds[i])
                    .collect();
                if above.is_empty() { vec![top] } else { above }
            }
            ProblemType::SingleLabel => vec![top],
        }
    }

    /// Label indexes by descending probability.
    pub fn ranked(&self, probs: &[f32]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_layout_gives_one_worker_per_two_cores() {
        let mut config = Config::default();
        assert_eq!(layout_for(2, &config), (2, 1, Some(2)));
        assert_eq!(layout_for(4, &config), (2, 2, Some(4)));
        assert_eq!(layout_for(16, &config), (8, 2, Some(16)));
        assert_eq!(layout_for(1, &config), (2, 1, None));
        config.model.inference_workers = 3;
        config.model.solo_threads = 1;
        assert_eq!(layout_for(16, &config), (3, 5, None));
    }

    /// The first column of a TSV (after its header), at most `n` lines.
    fn texts(path: &str, column: usize, n: usize) -> Vec<String> {
        let data = std::fs::read_to_string(path).expect(path);
        data.lines()
            .skip(1)
            .filter_map(|l| l.split('\t').nth(column).map(str::to_string))
            .take(n)
            .collect()
    }

    /// Both shipped models: every per-token chain is fused (and each layer's three projections
    /// merged into one GEMM), and the fused graph's scores equal the
    /// model file's bit for bit, one text per call and in padded batches of 16,
    /// on one thread and on two.
    #[test]
    fn the_fused_kernels_score_bit_for_bit_as_the_model_file_does() {
        let config = Config::default();
        let env = runtime::environment(None).expect("ONNX Runtime");
        let cases = [
            (
                config.model.dir.clone(),
                texts("tests/data/goemotions/test.tsv", 0, 64),
                (24, 36, 12, 6),
            ),
            (
                config.model.languages["zh"].clone(),
                texts("eval/zh-contact-center/test.tsv", 1, 64),
                (32, 48, 16, 8),
            ),
        ];
        for (dir, texts, (row_quantize, row_scale_bias, residual, merged)) in cases {
            let spec = Arc::new(ModelSpec::load(&dir).expect("model"));
            let encoder = TextEncoder::load(&spec).expect("tokenizer");
            let ids: Vec<Vec<u32>> = texts.iter().map(|t| encoder.encode(t).unwrap()).collect();
            let shared = weights::SharedWeights::load(&spec.model_path(), true, true).unwrap();
            let fused = shared
                .graph
                .as_ref()
                .expect("the shipped graph is fused")
                .fused;
            assert_eq!(
                (fused.row_quantize, fused.row_scale_bias, fused.residual),
                (row_quantize, row_scale_bias, residual),
                "{fused:?}"
            );
            // For sessions of several threads, each layer's query, key and value projections
            // as one GEMM.
            assert_eq!(fused.merged_projections, 0, "{fused:?}");
            let wide = shared.wide.as_ref().expect("the projections merge").fused;
            assert_eq!(wide.merged_projections, merged, "{wide:?}");
            assert_eq!(shared.fused_graph(2).map(|g| g.fused), Some(wide));
            assert!(fused.nodes_after < fused.nodes_before, "{fused:?}");
            let plain = weights::SharedWeights::load(&spec.model_path(), false, true).unwrap();
            assert!(plain.graph.is_none());
            // One thread per call, and two (the kernels split a call's rows between them).
            for threads in [1, 2] {
                let open = |shared, fused| {
                    Engine::open(env, spec.clone(), &encoder, threads, shared, fused).unwrap()
                };
                let (mut fast, mut file) = (open(&shared, true), open(&plain, false));
                for one in &ids {
                    let (a, b) = (fast.run(&[one]).unwrap(), file.run(&[one]).unwrap());
                    assert_eq!(a[0].probs, b[0].probs, "{} on {threads}", spec.tag);
                }
                for batch in ids.chunks(16) {
                    let batch: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
                    let (a, b) = (fast.run(&batch).unwrap(), file.run(&batch).unwrap());
                    for (a, b) in a.iter().zip(&b) {
                        assert_eq!(a.probs, b.probs, "{} on {threads}", spec.tag);
                    }
                }
            }
        }
    }
}
