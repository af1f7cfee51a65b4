//! Puts the fused per-token int8 kernels ([`super::kernels`]) into a model's graph at load time,
//! so model files stay standard ONNX (what a data scientist exports, what the Python baseline
//! and `training/` run) while the service runs the faster graph.
//!
//! Two patterns of the per-token quantisation that `training/export.py` writes are replaced:
//!
//! ```text
//!  Abs(x) -> ReduceMax(axes [-1], keepdims) -> Max(., eps) -> Mul(., inv_max) = scale
//!  [Expand(zero_point, Shape(scale)) = zp] ; QuantizeLinear(x, scale, zp; axis -1, blocked) = q
//!      => RowQuantize(x, eps, inv_max, zero_point) = (q, scale)
//!
//!  MatMulIntegerToFloat(q, ...) = acc ; Mul(acc, scale) [; Add(bias, .) [; Add(., residual)]]
//!      => RowScaleBias(acc, scale[, bias[, residual]])
//!  MatMulIntegerToFloat(q, ...) = acc ; Mul(acc, scale) ; Add(., residual) ; Add(., bias)
//!      => RowScaleResidualBias(acc, scale, bias, residual)
//! ```
//!
//! (The residual: a transformer layer's skip connection, the attention's or the FFN's output
//! plus the layer's input before its layer norm, read by the kernel in the same pass instead of
//! by an `Add` of its own.)
//!
//! Only where every condition that makes the two compute the same holds: the constants are
//! initializers of the right type and shape, the chain's intermediate results are used nowhere
//! else, and a GEMM's row scale is the one of its own input. Nodes that only fed what was
//! replaced (the zero point's Shape and Expand) go too. The rest of the file is copied byte for
//! byte: the rewrite walks the protobuf wire format and decodes nodes, never the weights.

use std::collections::{HashMap, HashSet};

use prost::Message;

// An initializer with its bytes (the projections merged into one GEMM read and write them).
use super::weights::onnx::TensorProto as RawTensor;

/// The operators put in, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fused {
    pub row_quantize: usize,
    pub row_scale_bias: usize,
    /// Of those, the ones that add a residual too.
    pub residual: usize,
    /// Layers whose query, key and value projections run as one GEMM.
    pub merged_projections: usize,
    pub nodes_before: usize,
    pub nodes_after: usize,
}

/// The graph with the fused kernels, or `None` when it has nothing to fuse or is not a graph
/// this rewrite reads (the file is then used as it is).
/// With `merge`, each layer's query, key and value projections become one GEMM as well
/// ([`merge_projections`]).
pub fn rewrite(model: &[u8], merge: bool) -> Option<(Vec<u8>, Fused)> {
    let top = fields(model)?;
    let graph = top.iter().find(|f| f.tag == MODEL_GRAPH && f.wire == LEN)?;
    let (graph_bytes, fused) = rewrite_graph(graph.payload, merge)?;
    let mut out = Vec::with_capacity(model.len() + 64);
    for f in &top {
        if f.tag == MODEL_GRAPH && f.wire == LEN {
            put_len_field(&mut out, MODEL_GRAPH, &graph_bytes);
        } else {
            out.extend_from_slice(f.whole);
        }
    }
    let opset = OperatorSetId {
        domain: super::kernels::DOMAIN.into(),
        version: 1,
    };
    put_len_field(&mut out, MODEL_OPSET_IMPORT, &opset.encode_to_vec());
    Some((out, fused))
}

// ONNX field numbers (onnx.proto).
const MODEL_GRAPH: u32 = 7;
const MODEL_OPSET_IMPORT: u32 = 8;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;
const INT64: i32 = 7;
const LEN: u8 = 2;

#[derive(Clone, PartialEq, Message)]
struct Node {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<Attribute>,
    #[prost(string, tag = "7")]
    domain: String,
}

#[derive(Clone, PartialEq, Message)]
struct Attribute {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
}

/// An initializer's header: what the rewrite checks, never its data.
#[derive(Clone, PartialEq, Message)]
struct TensorHead {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(string, tag = "8")]
    name: String,
}

/// A small int64 initializer's values (ReduceMax's axes).
#[derive(Clone, PartialEq, Message)]
struct Int64Tensor {
    #[prost(int64, repeated, tag = "7")]
    int64_data: Vec<i64>,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfo {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetId {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

/// One field of a protobuf message as it lies in the buffer.
struct Field<'a> {
    tag: u32,
    wire: u8,
    /// Key, length and payload: the field exactly as read.
    whole: &'a [u8],
    /// The payload of a length-delimited field (empty for the others).
    payload: &'a [u8],
}

fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of a message, in order; `None` if it is not well-formed protobuf.
fn fields(buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let key = varint(buf, &mut at)?;
        let (tag, wire) = (u32::try_from(key >> 3).ok()?, (key & 7) as u8);
        let mut payload: &[u8] = &[];
        match wire {
            0 => {
                varint(buf, &mut at)?;
            }
            1 => at += 8,
            LEN => {
                let len = usize::try_from(varint(buf, &mut at)?).ok()?;
                payload = buf.get(at..at.checked_add(len)?)?;
                at += len;
            }
            5 => at += 4,
            _ => return None,
        }
        out.push(Field {
            tag,
            wire,
            whole: buf.get(start..at)?,
            payload,
        });
    }
    Some(out)
}

fn put_len_field(out: &mut Vec<u8>, tag: u32, payload: &[u8]) {
    prost::encoding::encode_varint(u64::from(tag) << 3 | u64::from(LEN), out);
    prost::encoding::encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// What the graph's nodes and constants say, for matching.
struct Graph<'a> {
    nodes: Vec<Node>,
    initializers: HashMap<String, TensorHead>,
    /// Values of the small int64 initializers.
    int64s: HashMap<String, Vec<i64>>,
    outputs: HashSet<String>,
    /// The graph's inputs (old exports list initializers among them too).
    inputs: HashSet<String>,
    /// Initializer name -> its field's payload.
    raw: HashMap<String, &'a [u8]>,
    /// Output name -> the node that produces it.
    producer: HashMap<String, usize>,
    /// Name -> the nodes that read it.
    consumers: HashMap<String, Vec<usize>>,
}

impl Graph<'_> {
    fn node_of(&self, name: &str, op_type: &str) -> Option<usize> {
        let i = *self.producer.get(name)?;
        let node = &self.nodes[i];
        (node.op_type == op_type && matches!(node.domain.as_str(), "" | "ai.onnx")).then_some(i)
    }

    /// Whether `name` is read by `node` alone and is no graph output.
    fn only_for(&self, name: &str, node: usize) -> bool {
        !self.outputs.contains(name)
            && self
                .consumers
                .get(name)
                .is_some_and(|c| c.iter().all(|&n| n == node))
    }

    fn scalar(&self, name: &str, data_type: i32) -> bool {
        self.initializers
            .get(name)
            .is_some_and(|t| t.data_type == data_type && t.dims.iter().all(|&d| d == 1))
    }

    fn attribute(&self, node: usize, name: &str) -> Option<&Attribute> {
        self.nodes[node].attribute.iter().find(|a| a.name == name)
    }
}

/// One matched quantisation chain.
struct RowQuantizeMatch {
    /// The chain's first node (Abs), whose place the fused node takes: every reader of the scale
    /// comes after it.
    anchor: usize,
    removed: Vec<usize>,
    node: Node,
}

fn match_row_quantize(g: &Graph, q: usize) -> Option<RowQuantizeMatch> {
    let quantize = &g.nodes[q];
    let [x, scale, zp] = quantize.input.as_slice() else {
        return None;
    };
    let axis = g.attribute(q, "axis").map(|a| a.i);
    let block = g.attribute(q, "block_size").map(|a| a.i);
    if axis != Some(-1) || block.is_none_or(|b| b <= 0) || quantize.output.len() != 1 {
        return None;
    }
    let mul = g.node_of(scale, "Mul")?;
    let (max_out, inv_max) = pick(&g.nodes[mul].input, |n| g.node_of(n, "Max").is_some())?;
    let max = g.node_of(max_out, "Max")?;
    let (reduced, eps) = pick(&g.nodes[max].input, |n| g.node_of(n, "ReduceMax").is_some())?;
    let reduce = g.node_of(reduced, "ReduceMax")?;
    let abs_out = g.nodes[reduce].input.first()?;
    let abs = g.node_of(abs_out, "Abs")?;
    if g.nodes[abs].input.first() != Some(x)
        || !g.scalar(inv_max, FLOAT)
        || !g.scalar(eps, FLOAT)
        || !g.only_for(abs_out, reduce)
        || !g.only_for(reduced, max)
        || !g.only_for(max_out, mul)
    {
        return None;
    }
    // The reduction runs over the last axis and keeps it (the scale is one per row).
    let axes = match g.nodes[reduce].input.get(1) {
        Some(axes) => g.int64s.get(axes)?.clone(),
        None => g.attribute(reduce, "axes")?.ints.clone(),
    };
    let keepdims = g.attribute(reduce, "keepdims").map_or(1, |a| a.i);
    if axes != [-1] || keepdims != 1 {
        return None;
    }
    let mut removed = vec![abs, reduce, max, mul, q];
    let zero_point = match g.node_of(zp, "Expand") {
        Some(expand) => g.nodes[expand].input.first()?,
        None => zp,
    };
    if !g.scalar(zero_point, UINT8) {
        return None;
    }
    removed.sort_unstable();
    Some(RowQuantizeMatch {
        anchor: abs,
        removed,
        node: Node {
            input: vec![x.clone(), eps.clone(), inv_max.clone(), zero_point.clone()],
            output: vec![quantize.output[0].clone(), scale.clone()],
            name: format!("{}/RowQuantize", quantize.output[0]),
            op_type: "RowQuantize".into(),
            attribute: Vec::new(),
            domain: super::kernels::DOMAIN.into(),
        },
    })
}

/// Of a two-input node's inputs, the one `first` accepts and the other.
fn pick(inputs: &[String], first: impl Fn(&str) -> bool) -> Option<(&String, &String)> {
    match inputs {
        [a, b] if first(a) => Some((a, b)),
        [a, b] if first(b) => Some((b, a)),
        _ => None,
    }
}

fn rewrite_graph(graph: &[u8], merge: bool) -> Option<(Vec<u8>, Fused)> {
    let all = fields(graph)?;
    let mut g = Graph {
        nodes: Vec::new(),
        initializers: HashMap::new(),
        int64s: HashMap::new(),
        outputs: HashSet::new(),
        inputs: HashSet::new(),
        raw: HashMap::new(),
        producer: HashMap::new(),
        consumers: HashMap::new(),
    };
    for f in &all {
        match (f.tag, f.wire) {
            (GRAPH_NODE, LEN) => g.nodes.push(Node::decode(f.payload).ok()?),
            (GRAPH_INITIALIZER, LEN) => {
                let head = TensorHead::decode(f.payload).ok()?;
                if head.data_type == INT64 && f.payload.len() < 256 {
                    let t = Int64Tensor::decode(f.payload).ok()?;
                    let values = match t.raw_data.is_empty() {
                        true => t.int64_data,
                        false => (t.raw_data.chunks_exact(8))
                            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
                            .collect(),
                    };
                    g.int64s.insert(head.name.clone(), values);
                }
                g.raw.insert(head.name.clone(), f.payload);
                g.initializers.insert(head.name.clone(), head);
            }
            (GRAPH_OUTPUT, LEN) => {
                g.outputs.insert(ValueInfo::decode(f.payload).ok()?.name);
            }
            (GRAPH_INPUT, LEN) => {
                g.inputs.insert(ValueInfo::decode(f.payload).ok()?.name);
            }
            _ => {}
        }
    }
    for (i, node) in g.nodes.iter().enumerate() {
        for out in &node.output {
            g.producer.insert(out.clone(), i);
        }
        for input in node.input.iter().filter(|n| !n.is_empty()) {
            g.consumers.entry(input.clone()).or_default().push(i);
        }
    }

    // The quantisation chains.
    let mut removed: HashSet<usize> = HashSet::new();
    let mut placed: HashMap<usize, Node> = HashMap::new();
    // Row scale -> the quantised tensor it belongs to.
    let mut scales: HashMap<String, String> = HashMap::new();
    for q in 0..g.nodes.len() {
        let node = &g.nodes[q];
        if node.op_type != "QuantizeLinear" || !matches!(node.domain.as_str(), "" | "ai.onnx") {
            continue;
        }
        let Some(m) = match_row_quantize(&g, q) else {
            continue;
        };
        if m.removed.iter().any(|r| removed.contains(r)) {
            continue;
        }
        scales.insert(m.node.output[1].clone(), m.node.output[0].clone());
        removed.extend(&m.removed);
        placed.insert(m.anchor, m.node);
    }
    let row_quantize = placed.len();
    if row_quantize == 0 {
        return None;
    }

    // The row scale (and bias) after each integer GEMM of a fused quantisation.
    let mut row_scale_bias = 0;
    let mut residuals = 0;
    // The fused chains with a bias and no residual: (GEMM, fused node's place, bias).
    let mut projections: Vec<(usize, usize, String)> = Vec::new();
    for mul in 0..g.nodes.len() {
        let node = &g.nodes[mul];
        if node.op_type != "Mul" || !matches!(node.domain.as_str(), "" | "ai.onnx") {
            continue;
        }
        let Some((acc, scale)) = pick(&node.input, |n| {
            g.producer
                .get(n)
                .is_some_and(|&p| g.nodes[p].op_type == "MatMulIntegerToFloat")
        }) else {
            continue;
        };
        let gemm = &g.nodes[g.producer[acc]];
        if !scales.contains_key(scale) || scales.get(scale) != gemm.input.first() {
            continue;
        }
        let out = &node.output[0];
        // The Add that reads `sum` alone, and its other input.
        let add_after = |sum: &String| {
            let add = match g.consumers.get(sum).map(Vec::as_slice) {
                Some(&[add]) if g.only_for(sum, add) => add,
                _ => return None,
            };
            g.node_of(&g.nodes[add].output[0], "Add")?;
            let (_, other) = pick(&g.nodes[add].input, |n| n == sum)?;
            (other != sum).then(|| (add, other.clone()))
        };
        let is_bias = |name: &String| {
            g.initializers
                .get(name)
                .is_some_and(|t| t.data_type == FLOAT && t.dims.len() == 1)
        };
        let plain = (
            mul,
            vec![acc.clone(), scale.clone()],
            out.clone(),
            "RowScaleBias",
        );
        let (anchor, inputs, output, op_type) = match add_after(out) {
            // Mul, Add(bias) [, Add(residual)]: the projections, and in some graphs a skip
            // connection after the bias. A fused skip takes the last Add's place: every input
            // exists by then and every reader comes after. A residual from an initializer
            // could broadcast: not fused.
            Some((add, bias)) if is_bias(&bias) => {
                removed.insert(add);
                let sum = g.nodes[add].output[0].clone();
                match add_after(&sum) {
                    Some((skip, residual)) if !g.initializers.contains_key(&residual) => {
                        removed.insert(skip);
                        residuals += 1;
                        let inputs = vec![acc.clone(), scale.clone(), bias, residual];
                        (
                            skip,
                            inputs,
                            g.nodes[skip].output[0].clone(),
                            "RowScaleBias",
                        )
                    }
                    _ => (
                        add,
                        vec![acc.clone(), scale.clone(), bias],
                        sum,
                        "RowScaleBias",
                    ),
                }
            }
            // Mul, Add(residual), Add(bias): the skip connection first.
            Some((skip, residual)) if !g.initializers.contains_key(&residual) => {
                match add_after(&g.nodes[skip].output[0]) {
                    Some((add, bias)) if is_bias(&bias) => {
                        removed.insert(skip);
                        removed.insert(add);
                        residuals += 1;
                        let sum = g.nodes[add].output[0].clone();
                        let inputs = vec![acc.clone(), scale.clone(), bias, residual];
                        (add, inputs, sum, "RowScaleResidualBias")
                    }
                    _ => plain,
                }
            }
            _ => plain,
        };
        removed.insert(mul);
        if let [_, _, bias] = inputs.as_slice() {
            projections.push((g.producer[acc], anchor, bias.clone()));
        }
        placed.insert(
            anchor,
            Node {
                name: format!("{output}/RowScaleBias"),
                input: inputs,
                output: vec![output],
                op_type: op_type.into(),
                attribute: Vec::new(),
                domain: super::kernels::DOMAIN.into(),
            },
        );
        row_scale_bias += 1;
    }

    let (merged, dropped) = match merge {
        true => merge_projections(&g, &projections, &mut removed, &mut placed),
        false => Default::default(),
    };
    let merged_projections = merged.len() / 3;

    // Nodes that fed only what was replaced (the zero point's Shape and Expand).
    let mut kept: Vec<bool> = (0..g.nodes.len()).map(|i| !removed.contains(&i)).collect();
    loop {
        let mut read: HashSet<&str> = HashSet::new();
        for (i, node) in g.nodes.iter().enumerate() {
            let inputs = match placed.get(&i) {
                Some(new) => &new.input,
                None if kept[i] => &node.input,
                None => continue,
            };
            read.extend(inputs.iter().map(String::as_str));
        }
        let dead: Vec<usize> = (0..g.nodes.len())
            .filter(|&i| kept[i] && !placed.contains_key(&i))
            .filter(|&i| {
                let outputs = &g.nodes[i].output;
                outputs.iter().any(|o| g.consumers.contains_key(o))
                    && outputs
                        .iter()
                        .all(|o| !read.contains(o.as_str()) && !g.outputs.contains(o))
            })
            .collect();
        if dead.is_empty() {
            break;
        }
        for i in dead {
            kept[i] = false;
        }
    }

    let mut out = Vec::with_capacity(graph.len());
    let mut index = 0;
    let mut nodes_after = 0;
    for f in &all {
        if (f.tag, f.wire) == (GRAPH_INITIALIZER, LEN) {
            let name = TensorHead::decode(f.payload).ok()?.name;
            if !dropped.contains(&name) {
                out.extend_from_slice(f.whole);
            }
            continue;
        }
        if (f.tag, f.wire) != (GRAPH_NODE, LEN) {
            out.extend_from_slice(f.whole);
            continue;
        }
        if let Some(new) = placed.get(&index) {
            put_len_field(&mut out, GRAPH_NODE, &new.encode_to_vec());
            nodes_after += 1;
        } else if kept[index] {
            out.extend_from_slice(f.whole);
            nodes_after += 1;
        }
        index += 1;
    }
    for tensor in &merged {
        put_len_field(&mut out, GRAPH_INITIALIZER, &tensor.encode_to_vec());
    }
    let fused = Fused {
        row_quantize,
        row_scale_bias,
        residual: residuals,
        merged_projections,
        nodes_before: g.nodes.len(),
        nodes_after,
    };
    Some((out, fused))
}

/// The query, key and value projections of each layer as one integer GEMM of three times the
/// width and a [`RowScaleBiasSplit`](super::kernels) that scales, biases and cuts its output
/// into the three tensors the chains wrote: one GEMM call instead of three (fewer hand-offs
/// between a call's threads, one pass over the activations). Each column's arithmetic is the
/// same (integer sums, then the same products and sums), so the scores do not change.
///
/// Groups of exactly three fused `projections` (GEMM, fused node's place, bias) that read the
/// same quantised input with the same activation scale and zero point, whose int8 weights
/// `[K, N]`, per-column scales `[N]` and biases `[N]` are raw initializers of one shape, read by
/// their own node alone and not graph inputs. Returns the merged initializers to add (three a
/// group) and the names of those they replace.
fn merge_projections(
    g: &Graph,
    projections: &[(usize, usize, String)],
    removed: &mut HashSet<usize>,
    placed: &mut HashMap<usize, Node>,
) -> (Vec<RawTensor>, HashSet<String>) {
    let mut groups: HashMap<Vec<&str>, Vec<&(usize, usize, String)>> = HashMap::new();
    for p in projections {
        let gemm = &g.nodes[p.0];
        if gemm.input.len() != 5 || !gemm.attribute.is_empty() {
            continue;
        }
        let key = [0, 2, 4].iter().map(|&i| gemm.input[i].as_str()).collect();
        groups.entry(key).or_default().push(p);
    }
    let mut keys: Vec<_> = groups.keys().cloned().collect();
    keys.sort();
    let (mut merged, mut dropped) = (Vec::new(), HashSet::new());
    for key in keys {
        let mut group = groups[&key].clone();
        group.sort();
        let [a, b, c] = group.as_slice() else {
            continue;
        };
        let Some(tensors) = [a, b, c]
            .iter()
            .map(|(gemm, anchor, bias)| {
                let gemm_node = &g.nodes[*gemm];
                let read = |name: &String, node: usize, dtype: i32| {
                    let t = RawTensor::decode(*g.raw.get(name)?).ok()?;
                    let size = if dtype == FLOAT { 4 } else { 1 };
                    // Dims from the file: positive, and no product that overflows.
                    let bytes = (t.dims.iter())
                        .try_fold(size, |n: usize, &d| n.checked_mul(usize::try_from(d).ok()?))?;
                    (t.data_type == dtype
                        && t.data_location != 1
                        && t.dims.iter().all(|&d| d > 0)
                        && g.only_for(name, node)
                        && !g.inputs.contains(name)
                        && t.raw_data.len() == bytes)
                        .then_some(t)
                };
                let w = read(&gemm_node.input[1], *gemm, INT8)?;
                let scale = read(&gemm_node.input[3], *gemm, FLOAT)?;
                let bias = read(bias, *anchor, FLOAT)?;
                let n = *w.dims.get(1)?;
                (w.dims.len() == 2 && scale.dims == [n] && bias.dims == [n])
                    .then_some([w, scale, bias])
            })
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        if tensors.iter().any(|t| t[0].dims != tensors[0][0].dims) {
            continue;
        }
        let (k, n) = (
            tensors[0][0].dims[0] as usize,
            tensors[0][0].dims[1] as usize,
        );
        let first = &g.nodes[a.0];
        let name = |what: &str| format!("{}/qkv_{what}", first.output[0]);
        if ["w", "scale", "bias", "acc"]
            .iter()
            .any(|w| g.initializers.contains_key(&name(w)) || g.producer.contains_key(&name(w)))
        {
            continue;
        }
        let row_scale = placed.get(&a.1).map(|n| &n.input[1]);
        let chained = [a, b, c].iter().all(|p| {
            placed.get(&p.1).is_some_and(|n| {
                n.input.len() == 3 && n.output.len() == 1 && Some(&n.input[1]) == row_scale
            })
        });
        if !chained {
            continue;
        }
        // The weights' rows side by side; the scales and biases one after the other.
        let mut w = Vec::with_capacity(3 * k * n);
        for row in 0..k {
            for t in &tensors {
                w.extend_from_slice(&t[0].raw_data[row * n..(row + 1) * n]);
            }
        }
        let concat = |i: usize| tensors.iter().flat_map(|t| t[i].raw_data.clone()).collect();
        let wide = 3 * n as i64;
        merged.push(RawTensor {
            dims: vec![k as i64, wide],
            data_type: INT8,
            name: name("w"),
            raw_data: w,
            data_location: 0,
        });
        merged.push(RawTensor {
            dims: vec![wide],
            data_type: FLOAT,
            name: name("scale"),
            raw_data: concat(1),
            data_location: 0,
        });
        merged.push(RawTensor {
            dims: vec![wide],
            data_type: FLOAT,
            name: name("bias"),
            raw_data: concat(2),
            data_location: 0,
        });
        for t in tensors {
            dropped.extend(t.into_iter().map(|t| t.name));
        }
        // The wide GEMM takes the first GEMM's place, the split the first fused node's: every
        // input exists by then and every reader of the three outputs comes after.
        let chains: Vec<Node> = [a, b, c]
            .iter()
            .filter_map(|p| placed.remove(&p.1))
            .collect();
        let outputs = chains.iter().map(|n| n.output[0].clone()).collect();
        let scale = chains[0].input[1].clone();
        removed.extend([b.0, c.0]);
        placed.insert(
            a.0,
            Node {
                input: vec![
                    first.input[0].clone(),
                    name("w"),
                    first.input[2].clone(),
                    name("scale"),
                    first.input[4].clone(),
                ],
                output: vec![name("acc")],
                name: name("gemm"),
                op_type: first.op_type.clone(),
                attribute: Vec::new(),
                domain: first.domain.clone(),
            },
        );
        placed.insert(
            a.1.min(b.1).min(c.1),
            Node {
                input: vec![name("acc"), scale, name("bias")],
                output: outputs,
                name: name("split"),
                op_type: "RowScaleBiasSplit".into(),
                attribute: Vec::new(),
                domain: super::kernels::DOMAIN.into(),
            },
        );
    }
    (merged, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_it_cannot_read_or_fuse_it_leaves_alone() {
        for merge in [false, true] {
            assert!(rewrite(b"", merge).is_none());
            assert!(rewrite(b"\xff\xff\xff\xff not protobuf", merge).is_none());
        }
        let model = std::fs::read("models/goemotions-minilm-l6/model.onnx").unwrap();
        // Cut short (a truncated download): not read, not a panic.
        assert!(rewrite(&model[..model.len() / 2], true).is_none());
        for merge in [false, true] {
            // Fused once, nothing is left to fuse.
            let (fused, counts) = rewrite(&model, merge).expect("the shipped graph fuses");
            assert_eq!((counts.row_quantize, counts.row_scale_bias), (24, 36));
            // The two skip connections of each of the 6 layers.
            assert_eq!(counts.residual, 12);
            // Each layer's query, key and value: one GEMM and one split instead of three of
            // each, and only when asked.
            assert_eq!(counts.merged_projections, if merge { 6 } else { 0 });
            assert_eq!(counts.nodes_after + 4 * counts.merged_projections, 335);
            assert!(rewrite(&fused, merge).is_none());
        }
    }
}
