//! Tiny ONNX models written from scratch (the few ONNX protobuf messages they need, by field
//! number), for tests that need a second model with another label set, or a malformed one.
//!
//! The graph is a real text classifier in miniature: embedding lookup of the token ids, mean over
//! the attention mask, a linear layer to `labels` logits. Deterministic weights, so different
//! texts get different scores.

use std::path::Path;

use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "3")]
    i: i64,
    /// AttributeType: INT = 2.
    #[prost(int32, tag = "20")]
    r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    /// FLOAT = 1, INT64 = 7.
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorType>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorType {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
struct Dimension {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}

const FLOAT: i32 = 1;
const INT64: i32 = 7;

fn value(name: &str, elem_type: i32, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorType {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| match d {
                            Ok(v) => Dimension {
                                dim_value: Some(*v),
                                dim_param: None,
                            },
                            Err(p) => Dimension {
                                dim_value: None,
                                dim_param: Some(p.to_string()),
                            },
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: &[(&str, i64)]) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        attribute: attrs
            .iter()
            .map(|(n, i)| AttributeProto {
                name: n.to_string(),
                i: *i,
                r#type: 2,
            })
            .collect(),
    }
}

fn floats(name: &str, dims: &[i64], f: impl Fn(usize) -> f32) -> TensorProto {
    let n: i64 = dims.iter().product();
    TensorProto {
        dims: dims.to_vec(),
        data_type: FLOAT,
        name: name.into(),
        raw_data: (0..n as usize).flat_map(|i| f(i).to_le_bytes()).collect(),
    }
}

fn int64s(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![values.len() as i64],
        data_type: INT64,
        name: name.into(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// What to get wrong, for the malformed-candidate tests.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// logits [batch, labels]
    Good,
    /// logits [batch, seq, dim]: not [batch, labels]
    Rank3,
}

/// The ONNX bytes of a mean-of-embeddings classifier with `labels` outputs over `vocab` ids.
pub fn classifier(vocab: i64, labels: i64, shape: Shape) -> Vec<u8> {
    const DIM: i64 = 16;
    let mut nodes = vec![
        node("Gather", &["emb", "input_ids"], "e", &[("axis", 0)]),
        node("Cast", &["attention_mask"], "m", &[("to", FLOAT as i64)]),
        node("Unsqueeze", &["m", "axis2"], "m3", &[]),
        node("Mul", &["e", "m3"], "em", &[]),
        node("ReduceSum", &["em", "axis1"], "sum", &[("keepdims", 0)]),
        node("ReduceSum", &["m3", "axis1"], "count", &[("keepdims", 0)]),
        node("Div", &["sum", "count"], "mean", &[]),
        node("MatMul", &["mean", "w"], "logits", &[]),
    ];
    let output = match shape {
        Shape::Good => value("logits", FLOAT, &[Err("batch"), Ok(labels)]),
        Shape::Rank3 => {
            nodes.truncate(4);
            nodes.push(node("Identity", &["em"], "logits", &[]));
            value("logits", FLOAT, &[Err("batch"), Err("seq"), Ok(DIM)])
        }
    };
    let graph = GraphProto {
        node: nodes,
        name: "tiny-classifier".into(),
        initializer: vec![
            floats("emb", &[vocab, DIM], |i| ((i as f32) * 0.618).sin()),
            floats("w", &[DIM, labels], |i| {
                ((i as f32) * 1.37 + 0.5).cos() * 3.0
            }),
            int64s("axis1", &[1]),
            int64s("axis2", &[2]),
        ],
        input: vec![
            value("input_ids", INT64, &[Err("batch"), Err("seq")]),
            value("attention_mask", INT64, &[Err("batch"), Err("seq")]),
        ],
        output: vec![output],
    };
    ModelProto {
        ir_version: 8,
        producer_name: "emotion-service tests".into(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
    }
    .encode_to_vec()
}

pub const EKMAN: [&str; 7] = [
    "anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral",
];

/// A complete model directory: a tiny 7-label single-label (softmax) Ekman classifier in the
/// Optimum layout (model.onnx, config.json, tokenizer.json; no emotion.json).
pub fn write_ekman_dir(dir: &Path, shape: Shape, config_labels: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let tokenizer = super::repo_path("models/goemotions-minilm-l6/tokenizer.json");
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).unwrap();
    std::fs::write(dir.join("model.onnx"), classifier(30_522, 7, shape)).unwrap();
    let id2label: serde_json::Map<String, serde_json::Value> = config_labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), serde_json::Value::from(*l)))
        .collect();
    let config = serde_json::json!({
        "architectures": ["TinyClassifier"],
        "id2label": id2label,
        "problem_type": "single_label_classification",
        "max_position_embeddings": 128,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}
