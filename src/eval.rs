//! Offline evaluation through the serving inference path (tokenizer, batcher, ONNX Runtime,
//! per-label thresholds): the numbers a model will have in service.
//!
//! Input: GoEmotions-format TSV, `text<TAB>label ids (comma-separated)[<TAB>anything]`, the ids
//! indexing the model's labels in order. Predictions are the labels at or above their thresholds
//! (the top label when none is, for multi-label models; the arg-max for single-label ones), as in
//! every TurnResult.
//!
//! A TSV with a header naming `text` and `sentiment` / `emotion` columns (the Chinese
//! contact-center set, SMP2020-EWECT) is evaluated by [`sentiment`] instead.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};
use futures::StreamExt;

use crate::inference::Batcher;

pub mod sentiment;

/// One labelled text.
#[derive(Debug, Clone)]
pub struct Example {
    pub text: String,
    pub labels: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LabelStats {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

#[derive(Debug, Clone)]
pub struct EvalReport {
    pub model: String,
    pub texts: usize,
    pub macro_f1: f64,
    pub micro_f1: f64,
    pub labels: Vec<LabelStats>,
    pub seconds: f64,
}

/// Reads a labelled TSV, checking every id against `num_labels`.
pub fn read_tsv(path: &Path, num_labels: usize) -> anyhow::Result<Vec<Example>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut parts = line.split('\t');
        let (Some(text), Some(ids)) = (parts.next(), parts.next()) else {
            bail!(
                "{} line {}: expected text<TAB>label ids",
                path.display(),
                i + 1
            );
        };
        let labels = ids
            .split(',')
            .map(|id| {
                let id: usize = id.trim().parse().with_context(|| {
                    format!(
                        "{} line {}: label id {id:?} is not a number",
                        path.display(),
                        i + 1
                    )
                })?;
                if id >= num_labels {
                    bail!(
                        "{} line {}: label id {id} is beyond the model's {num_labels} labels",
                        path.display(),
                        i + 1
                    );
                }
                Ok(id)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        out.push(Example {
            text: text.to_string(),
            labels,
        });
    }
    if out.is_empty() {
        bail!("{}: no examples", path.display());
    }
    Ok(out)
}

/// Scores every example through `batcher` and compares its predicted labels with the gold ones.
pub async fn evaluate(batcher: &Batcher, examples: &[Example]) -> anyhow::Result<EvalReport> {
    let spec = batcher.spec();
    let n = spec.labels.len();
    let (mut tp, mut fp, mut fn_) = (vec![0u64; n], vec![0u64; n], vec![0u64; n]);
    let started = Instant::now();
    let mut scored = futures::stream::iter(examples)
        .map(|e| async move {
            let scores = batcher.submit(&e.text).await?.wait().await?;
            Ok::<_, crate::error::InferenceError>((e, scores))
        })
        .buffered(256);
    while let Some(result) = scored.next().await {
        let (example, scores) = result?;
        let mut predicted = vec![false; n];
        for i in scores.model.predicted(&scores.probs) {
            predicted[i] = true;
        }
        let mut gold = vec![false; n];
        for &i in &example.labels {
            gold[i] = true;
        }
        for i in 0..n {
            match (gold[i], predicted[i]) {
                (true, true) => tp[i] += 1,
                (false, true) => fp[i] += 1,
                (true, false) => fn_[i] += 1,
                (false, false) => {}
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let f1 = |tp: u64, fp: u64, fn_: u64| {
        let p = if tp + fp > 0 {
            tp as f64 / (tp + fp) as f64
        } else {
            0.0
        };
        let r = if tp + fn_ > 0 {
            tp as f64 / (tp + fn_) as f64
        } else {
            0.0
        };
        let f = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        (p, r, f)
    };
    let labels: Vec<LabelStats> = (0..n)
        .map(|i| {
            let (precision, recall, f1) = f1(tp[i], fp[i], fn_[i]);
            LabelStats {
                label: spec.labels[i].clone(),
                precision,
                recall,
                f1,
                support: tp[i] + fn_[i],
            }
        })
        .collect();
    let sum = |v: &[u64]| v.iter().sum::<u64>();
    let (_, _, micro_f1) = f1(sum(&tp), sum(&fp), sum(&fn_));
    Ok(EvalReport {
        model: spec.tag.clone(),
        texts: examples.len(),
        macro_f1: labels.iter().map(|l| l.f1).sum::<f64>() / n as f64,
        micro_f1,
        labels,
        seconds,
    })
}

impl EvalReport {
    /// A readable report: the summary, then one row per label.
    pub fn table(&self) -> String {
        let mut out = format!(
            "model {}: {} texts in {:.1} s ({:.0} texts/s)\nmacro-F1 {:.4}  micro-F1 {:.4}\n\n",
            self.model,
            self.texts,
            self.seconds,
            self.texts as f64 / self.seconds.max(1e-9),
            self.macro_f1,
            self.micro_f1
        );
        out.push_str(&format!(
            "{:<16} {:>9} {:>7} {:>7} {:>8}\n",
            "label", "precision", "recall", "f1", "support"
        ));
        for l in &self.labels {
            out.push_str(&format!(
                "{:<16} {:>9.4} {:>7.4} {:>7.4} {:>8}\n",
                l.label, l.precision, l.recall, l.f1, l.support
            ));
        }
        out
    }
}
