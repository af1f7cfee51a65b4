//! Weights shared by the sessions of one model: a model runs on one ONNX Runtime session per
//! inference worker plus the solo session, and each session would otherwise hold its own copy of
//! every initializer (the whole model file, 58-80 MB for the shipped models) and of its
//! pre-packed GEMM weights. The large initializers are read once from model.onnx and handed to
//! every session as user-owned values (ONNX Runtime uses them in place); pre-packed weights go to
//! one shared container.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use ort::session::builder::PrepackedWeights;
use ort::value::{DynValue, Tensor};

use crate::error::ModelError;

/// Initializers at least this large are shared; smaller ones each session keeps (they are
/// often stored in typed fields rather than raw bytes, and cost little).
const SHARE_MIN_BYTES: usize = 64 * 1024;

/// What the sessions of one model share.
pub struct SharedWeights {
    pub prepacked: PrepackedWeights,
    /// The large initializers of every graph below, by name (a name is the same tensor in each).
    pub initializers: Vec<(String, Arc<DynValue>)>,
    /// Bytes of the shared initializers.
    pub bytes: usize,
    /// Names of the model file's initializers.
    pub file_initializers: HashSet<String>,
    /// The graph with the fused int8 kernels put in (fuse.rs), when asked for and it has any:
    /// the one-thread sessions load it instead of the file.
    pub graph: Option<FusedGraph>,
    /// The same with each layer's query, key and value projections as one GEMM: for sessions of
    /// several threads (the solo session), where one call instead of three saves hand-offs
    /// between the threads; on one thread it was slower at full load (BENCHMARKS.md).
    pub wide: Option<FusedGraph>,
}

/// A rewritten graph and what it holds.
pub struct FusedGraph {
    pub bytes: Vec<u8>,
    pub fused: super::fuse::Fused,
    /// Names of its initializers.
    pub initializers: HashSet<String>,
}

impl SharedWeights {
    /// Reads the large initializers of `model.onnx` (and of the rewritten graphs: with `fuse`,
    /// the fused graph, and with `wide` too the one for sessions of several threads). A graph
    /// whose initializers cannot be read this way (external data, an unusual type) is not an
    /// error: those stay with the session.
    pub fn load(path: &Path, fuse: bool, wide: bool) -> Result<Self, ModelError> {
        let invalid = |message: String| ModelError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
        let mut shared = Self {
            prepacked: PrepackedWeights::new(),
            initializers: Vec::new(),
            bytes: 0,
            file_initializers: HashSet::new(),
            graph: None,
            wide: None,
        };
        shared.file_initializers = shared.read(&bytes).map_err(invalid)?;
        if fuse {
            for wide in [false, true].into_iter().filter(|&w| w <= wide) {
                let Some((graph, fused)) = super::fuse::rewrite(&bytes, wide) else {
                    continue;
                };
                if wide && fused.merged_projections == 0 {
                    continue;
                }
                // Without merging, the rewrite keeps the file's initializers as they are.
                let initializers = match wide {
                    true => shared.read(&graph).map_err(invalid)?,
                    false => shared.file_initializers.clone(),
                };
                let graph = Some(FusedGraph {
                    bytes: graph,
                    fused,
                    initializers,
                });
                match wide {
                    true => shared.wide = graph,
                    false => shared.graph = graph,
                }
            }
        }
        Ok(shared)
    }

    /// Adds the large initializers of `model` not yet shared; returns the names of all of its
    /// initializers.
    fn read(&mut self, model: &[u8]) -> Result<HashSet<String>, String> {
        let model = <onnx::ModelProto as prost::Message>::decode(model)
            .map_err(|e| format!("not an ONNX model: {e}"))?;
        let mut names = HashSet::new();
        for tensor in model.graph.map(|g| g.initializer).unwrap_or_default() {
            names.insert(tensor.name.clone());
            if tensor.raw_data.len() < SHARE_MIN_BYTES
                || tensor.data_location == 1
                || self.initializers.iter().any(|(n, _)| *n == tensor.name)
            {
                continue;
            }
            if let Some(value) = tensor_value(&tensor) {
                self.bytes += tensor.raw_data.len();
                self.initializers.push((tensor.name, Arc::new(value)));
            }
        }
        Ok(names)
    }

    /// The graph a session of `threads` threads loads with the fused kernels, if any.
    pub fn fused_graph(&self, threads: usize) -> Option<&FusedGraph> {
        match threads > 1 {
            true => self.wide.as_ref().or(self.graph.as_ref()),
            false => self.graph.as_ref(),
        }
    }
}

/// The tensor as an ONNX Runtime value, for the element types BERT-style graphs store their
/// weights in; `None` for another type or a size that does not match its shape.
fn tensor_value(t: &onnx::TensorProto) -> Option<DynValue> {
    let dims: Vec<i64> = t.dims.clone();
    let count: i64 = dims.iter().product();
    let raw = &t.raw_data;
    fn le<const N: usize, T>(raw: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
        raw.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N")))
            .collect()
    }
    let (size, value): (usize, Option<DynValue>) = match t.data_type {
        1 => (
            4,
            Tensor::from_array((dims, le(raw, f32::from_le_bytes)))
                .ok()
                .map(Into::into),
        ),
        2 => (
            1,
            Tensor::from_array((dims, raw.clone())).ok().map(Into::into),
        ),
        3 => (
            1,
            Tensor::from_array((dims, raw.iter().map(|&b| b as i8).collect::<Vec<i8>>()))
                .ok()
                .map(Into::into),
        ),
        6 => (
            4,
            Tensor::from_array((dims, le(raw, i32::from_le_bytes)))
                .ok()
                .map(Into::into),
        ),
        7 => (
            8,
            Tensor::from_array((dims, le(raw, i64::from_le_bytes)))
                .ok()
                .map(Into::into),
        ),
        _ => return None,
    };
    (count >= 0 && raw.len() == count as usize * size)
        .then_some(value)
        .flatten()
}

/// The few fields of onnx.proto this reads (field numbers from the ONNX spec); the rest of the
/// file is skipped by the decoder.
pub(super) mod onnx {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(string, tag = "8")]
        pub name: String,
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
        /// 1 = EXTERNAL (the data is in another file).
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }
}
