//! One ONNX Runtime session over a model directory: checks the graph's inputs and outputs at load,
//! pads each batch to its own longest text, and turns logits into probabilities and a valence.
//! An `Engine` is owned by one inference thread (`Session::run` takes `&mut self`).

use std::borrow::Cow;
use std::sync::Arc;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::model_dir::{ModelSpec, ProblemType};
use super::text::TextEncoder;
use super::weights::SharedWeights;
use crate::error::{InferenceError, ModelError};

/// The scores of one text.
#[derive(Debug, Clone)]
pub struct Scores {
    /// One probability per label, in the model's label order.
    pub probs: Vec<f32>,
    /// Valence of the text alone, in [-1, 1].
    pub valence: f32,
    /// The model that produced them.
    pub model: Arc<ModelSpec>,
}

pub struct Engine {
    session: Session,
    spec: Arc<ModelSpec>,
    /// Whether the graph takes `token_type_ids` (BERT does, DistilBERT and RoBERTa exports don't).
    token_type_ids: bool,
    output: String,
}

impl Engine {
    /// Loads model.onnx with `intra_threads` ONNX Runtime threads and checks it: int64 inputs
    /// `input_ids` and `attention_mask` (and optionally `token_type_ids`), a float output of shape
    /// [batch, labels], and a smoke inference whose width matches the label count.
    ///
    /// With the fused kernels' graph (`shared.fused_graph`), a graph ONNX Runtime refuses or whose smoke
    /// inference fails falls back to the file as it is, with a warning: the rewrite is the
    /// service's, not the model's, so it must never cost a model that loads without it.
    pub fn load(
        env: &Environment,
        spec: Arc<ModelSpec>,
        encoder: &TextEncoder,
        intra_threads: usize,
        shared: &SharedWeights,
    ) -> Result<Self, ModelError> {
        let Some(fused) = shared.fused_graph(intra_threads).map(|g| g.fused) else {
            return Self::open(env, spec, encoder, intra_threads, shared, false);
        };
        match Self::open(env, spec.clone(), encoder, intra_threads, shared, true) {
            Ok(engine) => Ok(engine),
            Err(e) => {
                tracing::warn!(path = %spec.model_path().display(), ?fused, error = %e, "the graph with fused kernels did not load; using the model file as it is");
                Self::open(env, spec, encoder, intra_threads, shared, false)
            }
        }
    }

    /// [`Engine::load`] without the fallback: the fused graph if `fused` and there is one.
    pub(super) fn open(
        env: &Environment,
        spec: Arc<ModelSpec>,
        encoder: &TextEncoder,
        intra_threads: usize,
        shared: &SharedWeights,
        fused: bool,
    ) -> Result<Self, ModelError> {
        let path = spec.model_path();
        let session_err = |source: ort::Error| ModelError::Session {
            path: path.clone(),
            source,
        };
        let mut builder = Session::builder(env)
            .map_err(session_err)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| session_err(e.into()))?
            .with_intra_threads(intra_threads)
            .map_err(|e| session_err(e.into()))?
            // The fused per-token int8 kernels (kernels.rs), for graphs that use them.
            .with_operators(super::kernels::domain(intra_threads).map_err(session_err)?)
            .map_err(|e| session_err(e.into()))?
            // The sessions of one model (a worker's each, the solo one) share their weights
            // (src/inference/weights.rs) instead of holding a copy each.
            .with_prepacked_weights(&shared.prepacked)
            .map_err(|e| session_err(e.into()))?;
        let graph = fused.then(|| shared.fused_graph(intra_threads)).flatten();
        let names = graph.map_or(&shared.file_initializers, |g| &g.initializers);
        for (name, value) in shared
            .initializers
            .iter()
            .filter(|(n, _)| names.contains(n))
        {
            builder = builder
                .with_initializer(name, value.clone())
                .map_err(|e| session_err(e.into()))?;
        }
        if intra_threads > 1 {
            // The pool's threads spin while a call runs (a wake-up per operator would cost more
            // than the operator at batch 1) and stop the moment it returns: a session that runs
            // only now and then (the solo session) must not keep a core busy spinning while the
            // other workers' single-thread sessions need it.
            builder = builder
                .with_config_entry("session.force_spinning_stop", "1")
                .map_err(|e| session_err(e.into()))?;
        }
        let session = match graph {
            Some(graph) => builder.commit_from_memory(&graph.bytes),
            None => builder.commit_from_file(&path),
        }
        .map_err(session_err)?;

        let mut token_type_ids = false;
        for input in session.inputs() {
            match input.name() {
                "input_ids" | "attention_mask" => {}
                "token_type_ids" => token_type_ids = true,
                other => {
                    return Err(ModelError::Check(format!(
                        "model.onnx input {other:?} is not one of input_ids, attention_mask, token_type_ids"
                    )));
                }
            }
            if input.dtype().tensor_type() != Some(TensorElementType::Int64) {
                return Err(ModelError::Check(format!(
                    "model.onnx input {:?} must be int64, is {:?}",
                    input.name(),
                    input.dtype()
                )));
            }
        }
        for required in ["input_ids", "attention_mask"] {
            if !session.inputs().iter().any(|i| i.name() == required) {
                return Err(ModelError::Check(format!(
                    "model.onnx has no input {required:?}"
                )));
            }
        }
        let output = match session.outputs() {
            [single] => single,
            many => many.iter().find(|o| o.name() == "logits").ok_or_else(|| {
                ModelError::Check(
                    "model.onnx has several outputs and none is named \"logits\"".into(),
                )
            })?,
        };
        match output.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } if shape.len() == 2 => {
                let width = shape[1];
                if width >= 0 && width as usize != spec.labels.len() {
                    return Err(ModelError::Check(format!(
                        "model.onnx output {:?} has {width} columns but config.json has {} labels",
                        output.name(),
                        spec.labels.len()
                    )));
                }
            }
            other => {
                return Err(ModelError::Check(format!(
                    "model.onnx output {:?} must be float32 [batch, labels], is {other:?}",
                    output.name()
                )));
            }
        }
        let output = output.name().to_string();
        let mut engine = Self {
            session,
            spec,
            token_type_ids,
            output,
        };
        // Two texts of different lengths: a graph that only works for one text, or for one
        // length, fails here and not on the first batch in service.
        let probe = |text| {
            encoder
                .encode(text)
                .map_err(|e| ModelError::Check(e.to_string()))
        };
        let (long, short) = (probe("Thank you, that helps.")?, probe("ok")?);
        engine
            .run(&[&long, &short])
            .map_err(|e| ModelError::Check(format!("smoke inference: {e}")))?;
        Ok(engine)
    }

    pub fn spec(&self) -> &Arc<ModelSpec> {
        &self.spec
    }

    /// Scores a batch of token-id sequences, padded to the batch's longest. Returns one `Scores`
    /// per sequence, in order.
    pub fn run(&mut self, batch: &[&[u32]]) -> Result<Vec<Scores>, InferenceError> {
        let rows = batch.len();
        let width = batch.iter().map(|ids| ids.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0i64; rows * width];
        let mut mask = vec![0i64; rows * width];
        for (r, seq) in batch.iter().enumerate() {
            for (c, &id) in seq.iter().enumerate() {
                ids[r * width + c] = i64::from(id);
                mask[r * width + c] = 1;
            }
        }
        let shape = [rows as i64, width as i64];
        let tensor = |data: Vec<i64>| -> Result<SessionInputValue<'static>, InferenceError> {
            Tensor::from_array((shape, data))
                .map(Into::into)
                .map_err(|e| InferenceError::Runtime(e.to_string()))
        };
        let mut inputs: Vec<(Cow<'static, str>, SessionInputValue<'static>)> = vec![
            ("input_ids".into(), tensor(ids)?),
            ("attention_mask".into(), tensor(mask)?),
        ];
        if self.token_type_ids {
            inputs.push(("token_type_ids".into(), tensor(vec![0i64; rows * width])?));
        }
        let outputs = self
            .session
            .run(inputs)
            .map_err(|e| InferenceError::Runtime(e.to_string()))?;
        let (out_shape, logits) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| InferenceError::Runtime(e.to_string()))?;
        let labels = self.spec.labels.len();
        if out_shape.len() != 2 || out_shape[0] as usize != rows || out_shape[1] as usize != labels
        {
            return Err(InferenceError::Runtime(format!(
                "model returned logits of shape {:?}, expected [{rows}, {labels}]",
                &out_shape[..]
            )));
        }
        Ok(logits
            .chunks_exact(labels)
            .map(|row| scores(&self.spec, row))
            .collect())
    }
}

/// Probabilities (sigmoid or softmax per the problem type) and the valence
/// `sum(w_i p_i) / sum(p_i)`, the formula of docs/models.md.
pub fn scores(spec: &Arc<ModelSpec>, logits: &[f32]) -> Scores {
    let probs: Vec<f32> = match spec.problem_type {
        ProblemType::MultiLabel => logits.iter().map(|&z| 1.0 / (1.0 + (-z).exp())).collect(),
        ProblemType::SingleLabel => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = logits.iter().map(|&z| (z - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.into_iter().map(|e| e / sum).collect()
        }
    };
    let valence = valence_of(spec, &probs, &[]);
    Scores {
        probs,
        valence,
        model: spec.clone(),
    }
}

impl Scores {
    /// This text's valence with the labels named in `left_out` counting neither way.
    pub fn valence_without(&self, left_out: &[&str]) -> f32 {
        valence_of(&self.model, &self.probs, left_out)
    }
}

/// The valence of `probs` with the labels named in `left_out` counting neither way (not in the
/// weighted sum, not in the mass): `sum(w_i p_i) / sum(p_i)` over the others.
pub fn valence_of(spec: &ModelSpec, probs: &[f32], left_out: &[&str]) -> f32 {
    let (weighted, mass) = probs
        .iter()
        .zip(&spec.valence_weights)
        .zip(&spec.labels)
        .filter(|(_, label)| !left_out.contains(&label.as_str()))
        .fold((0.0f32, 0.0f32), |(weighted, mass), ((p, w), _)| {
            (weighted + p * w, mass + p)
        });
    (weighted / mass.max(1e-6)).clamp(-1.0, 1.0)
}
