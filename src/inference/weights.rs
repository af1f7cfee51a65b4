//! Weights shared by the sessions of one model: a model runs on one ONNX Runtime session per
//! inference worker plus the solo session, and each session would otherwise hold its own copy of
//! every initializer (the whole model file, 58-80 MB for the shipped models) and of its
//! pre-packed GEMM weights. The large initializers are read once from model.onnx and handed to
//! every session as user-owned values (ONNX Runtime uses them in place); pre-packed weights go to
//! one shared container.

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
    pub initializers: Vec<(String, Arc<DynValue>)>,
    /// Bytes of the shared initializers.
    pub bytes: usize,
    /// The graph with the fused int8 kernels put in (fuse.rs), when asked for and it has any:
    /// the sessions load it instead of the file.
    pub graph: Option<(Vec<u8>, super::fuse::Fused)>,
}

impl SharedWeights {
    /// Reads the large initializers of `model.onnx`. A graph whose initializers cannot be read
    /// this way (external data, an unusual type) is not an error: those stay with the session.
    pub fn load(path: &Path, fuse: bool) -> Result<Self, ModelError> {
        let invalid = |message: String| ModelError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
        let model = <onnx::ModelProto as prost::Message>::decode(bytes.as_slice())
            .map_err(|e| invalid(format!("not an ONNX model: {e}")))?;
        let graph = fuse.then(|| super::fuse::rewrite(&bytes)).flatten();
        drop(bytes);
        let mut initializers = Vec::new();
        let mut bytes = 0;
        for tensor in model.graph.map(|g| g.initializer).unwrap_or_default() {
            if tensor.raw_data.len() < SHARE_MIN_BYTES || tensor.data_location == 1 {
                continue;
            }
            if let Some(value) = tensor_value(&tensor) {
                bytes += tensor.raw_data.len();
                initializers.push((tensor.name, Arc::new(value)));
            }
        }
        Ok(Self {
            prepacked: PrepackedWeights::new(),
            initializers,
            bytes,
            graph,
        })
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
mod onnx {
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
