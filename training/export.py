"""ONNX export, ORT graph optimisation and int8 dynamic quantisation of the trained classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

# ONNX Runtime 1.31 loads IR <= 11; the issue asks for IR <= 10 so older runtimes load it too.
MAX_IR_VERSION = 10
OPSET = 17
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def export_fp32(model: torch.nn.Module, path: Path) -> None:
    """Export with int64 inputs, dynamic batch and sequence axes, output `logits` [batch, labels]."""
    import torch

    model.eval()
    # Eager attention traces to plain MatMul/Softmax that ORT's optimiser fuses; the SDPA path bakes
    # mask shapes into the trace.
    model.encoder.set_attn_implementation("eager")
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes["logits"] = {0: "batch"}
    torch.onnx.export(
        model,
        (ids, mask, types),
        str(path),
        input_names=INPUT_NAMES,
        output_names=["logits"],
        dynamic_axes=axes,
        opset_version=OPSET,
        dynamo=False,
    )
    clamp_ir_version(path)


def clamp_ir_version(path: Path) -> None:
    proto = onnx.load(str(path))
    if proto.ir_version > MAX_IR_VERSION:
        proto.ir_version = MAX_IR_VERSION
        onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))


def optimize(src: Path, dst: Path, num_heads: int, hidden_size: int) -> None:
    """ORT transformer fusions (layer norm, GELU with its bias): fewer, larger kernels on CPU.

    Attention fusion stays off so that the Q, K and V projections remain plain MatMuls, which the
    per-token quantisation below turns into int8 kernels. Skip-layer-norm fusion stays off too:
    ORT's CPU SkipLayerNormalization kernel took 25 % of the int8 graph's time, and a plain Add
    with the standard LayerNormalization runs the whole model 25-33 % faster (BENCHMARKS.md,
    "Performance: padding"; training/unfuse_layernorm.py rewrites models exported before).
    """
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_attention = False
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    opt = optimizer.optimize_model(
        str(src),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=options,
        opt_level=1,
        use_gpu=False,
    )
    opt.save_model_to_file(str(dst))
    clamp_ir_version(dst)


# Opset of the int8 graph: QuantizeLinear with `block_size` (one scale per token) needs 21.
INT8_OPSET = 21
# Reduce* ops that took `axes` as an attribute before opset 18 and as an input since.
_REDUCE_AXES_INPUT_SINCE_18 = {
    "ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
}


def quantize_int8(src: Path, dst: Path) -> int:
    """Batch-invariant int8: per-output-channel weights, per-token dynamic activations.

    ORT's `quantize_dynamic` quantises each activation tensor with one scale over the whole batch,
    so a text's scores would depend on the texts batched with it (up to 0.02 in probability, measured).
    Here every MatMul with a constant weight W [K, N] becomes

        s_a  = max|x[token, :]| / 127                      (one scale per token)
        x_q  = round(x / s_a) + 128                        (uint8, zero point 128)
        y    = MatMulInteger(x_q, W_q) * s_w[N] * s_a      (W_q int8, s_w per output column)

    MatMuls sharing an input (Q, K, V) share one quantised activation. It runs on ORT's u8s8 integer
    GEMM (VNNI where present), and every token gets the same result whatever it is batched or padded
    with. The quantisation is one blocked QuantizeLinear (block = the row) and the GEMM with its
    column scales one MatMulIntegerToFloat (`quantize_nodes`, `int8_matmul_nodes`). Returns the
    number of MatMuls quantised.
    """
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    to_int8_opset(model)
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}

    def quantisable(node) -> bool:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        return w is not None and len(w.dims) == 2

    prefix: dict[str, str] = {}
    for node in graph.node:
        if quantisable(node):
            prefix.setdefault(node.input[0], f"ptq{len(prefix)}")
    ranks = activation_ranks(model, list(prefix))
    added = int8_constants() + [
        numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), "ptq_inv127"),
        numpy_helper.from_array(np.array(1e-8, np.float32), "ptq_eps"),
        numpy_helper.from_array(np.array([-1], np.int64), "ptq_last_axis"),
    ]
    nodes, replaced, emitted = [], set(), set()
    zero_points: dict = {}
    for node in graph.node:
        if not quantisable(node):
            nodes.append(node)
            continue
        a = node.input[0]
        p = prefix[a]
        w = weights[node.input[1]]
        if a not in emitted:  # the shared input's quantised activation, once
            emitted.add(a)
            nodes += [
                helper.make_node("Abs", [a], [p + "_abs"]),
                helper.make_node("ReduceMax", [p + "_abs", "ptq_last_axis"], [p + "_absmax"], keepdims=1),
                helper.make_node("Max", [p + "_absmax", "ptq_eps"], [p + "_range"]),
                helper.make_node("Mul", [p + "_range", "ptq_inv127"], [p + "_a_scale"]),
            ]
            nodes += quantize_nodes(a, p + "_a_scale", p + "_a_q", w.dims[0], ranks[a], zero_points)
        W = numpy_helper.to_array(w).astype(np.float32)
        w_scale = (np.maximum(np.abs(W).max(axis=0), 1e-12) / 127.0).astype(np.float32)
        W_q = np.clip(np.round(W / w_scale), -127, 127).astype(np.int8)
        q = f"{p}_{len(replaced)}"
        replaced.add(w.name)
        added += [numpy_helper.from_array(W_q, q + "_w"), numpy_helper.from_array(w_scale, q + "_w_scale")]
        nodes += int8_matmul_nodes(p + "_a_q", q + "_w", q + "_w_scale", p + "_a_scale", q, node.output[0], node.name)
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [i for i in graph.initializer if i.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    onnx.save(model, str(dst))
    clamp_ir_version(dst)
    return len(replaced)


def int8_constants() -> list:
    from onnx import numpy_helper

    return [
        numpy_helper.from_array(np.array(1.0, np.float32), "ptq_one"),
        numpy_helper.from_array(np.array(128, np.uint8), "ptq_zero_point"),
    ]


def quantize_nodes(x: str, scale: str, out: str, width: int, rank: int | str, zero_points: dict) -> list:
    """x [..., width] float -> round(x / scale) + 128 as uint8, one scale per row (`scale` [..., 1]).

    One QuantizeLinear with `block_size` = the row (round half to even, as the Round op), instead
    of Div, Round, Add and Cast: bit-identical, 2.5x faster. Its zero point must have the scale's
    shape, so one is expanded per activation rank and shared (`zero_points`, by `rank`).
    """
    from onnx import helper

    nodes = []
    if rank not in zero_points:
        zp = zero_points[rank] = f"ptq_zero_point_r{rank}" if isinstance(rank, int) else f"{out}_zero_point"
        nodes += [
            helper.make_node("Shape", [scale], [zp + "_shape"]),
            helper.make_node("Expand", ["ptq_zero_point", zp + "_shape"], [zp]),
        ]
    nodes.append(helper.make_node("QuantizeLinear", [x, scale, zero_points[rank]], [out],
                                  axis=-1, block_size=width))
    return nodes


def int8_matmul_nodes(a_q: str, w: str, w_scale: str, a_scale: str, p: str, out: str, name: str) -> list:
    """(a_q - 128) @ w, times the weight's column scales, times the token scales: `out`.

    MatMulIntegerToFloat (com.microsoft) with a scalar activation scale of 1 computes the GEMM and
    the column scales in one kernel (the same float products as Cast then Mul). The token scales
    stay a separate Mul: ORT's kernel takes a 1-D activation scale as per column of A, not per row
    (a per-token scale there gave 10x the error, dev macro-F1 0.526 instead of 0.556).
    """
    from onnx import helper

    return [
        helper.make_node("MatMulIntegerToFloat", [a_q, w, "ptq_one", w_scale, "ptq_zero_point"],
                         [p + "_col"], domain="com.microsoft"),
        helper.make_node("Mul", [p + "_col", a_scale], [out], name=name),
    ]


# Operators whose output has the rank of their widest input (element-wise, normalisations, and
# the com.microsoft ones that ONNX shape inference does not know).
_RANK_KEEPING = {
    "Abs", "Add", "Sub", "Mul", "Div", "Max", "Min", "Round", "Cast", "Relu", "Tanh", "Sigmoid", "Erf",
    "Gelu", "BiasGelu", "FastGelu", "LayerNormalization", "SkipLayerNormalization", "QuantizeLinear",
    "DequantizeLinear", "MatMulIntegerToFloat", "MatMulInteger", "MatMul", "Softmax",
}


def activation_ranks(model: onnx.ModelProto, names: list[str]) -> dict[str, int | str]:
    """Each named tensor's rank, which the zero points are shared by: ONNX shape inference, carried
    through the operators of _RANK_KEEPING where it stops (com.microsoft ones); where neither can
    tell, the tensor's own name (a zero point of its own)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known: dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        if vi.type.tensor_type.HasField("shape"):
            known[vi.name] = len(vi.type.tensor_type.shape.dim)
    for init in model.graph.initializer:
        known[init.name] = len(init.dims)
    for node in model.graph.node:
        inputs = [known[i] for i in node.input if i in known]
        keeps = node.op_type in _RANK_KEEPING or (node.op_type in _REDUCE_AXES_INPUT_SINCE_18 and all(
            a.i for a in node.attribute if a.name == "keepdims"))
        if keeps and node.input and node.input[0] in known:
            for out in node.output:
                known.setdefault(out, max(inputs))
    return {n: known.get(n, n) for n in names}


def to_int8_opset(model: onnx.ModelProto) -> None:
    """Raise the default opset to INT8_OPSET; Reduce* axes move from attribute to input (opset 18).

    The shipped graphs' other operators mean the same at 21; onnx.checker and the logits check of
    training/int8_kernels.py confirm it for a given model.
    """
    from onnx import numpy_helper

    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in _REDUCE_AXES_INPUT_SINCE_18:
            axes = [a for a in node.attribute if a.name == "axes"]
            if axes:
                name = f"{node.output[0]}_axes"
                model.graph.initializer.append(numpy_helper.from_array(np.array(axes[0].ints, np.int64), name))
                node.attribute.remove(axes[0])
                del node.input[1:]
                node.input.append(name)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, INT8_OPSET)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))  # MatMulIntegerToFloat


def use_int8_kernels(model: onnx.ModelProto) -> int:
    """Rewrite a model quantised by the earlier `quantize_int8` (Div, Round, Add, Cast per activation;
    MatMulInteger, Cast, Mul per weight) into `quantize_nodes` and `int8_matmul_nodes`. Same weights,
    same arithmetic. Returns the number of MatMuls rewritten."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    weights = {i.name: i for i in graph.initializer}
    quantised = [n for n in graph.node if n.op_type == "MatMulInteger"]
    if not quantised:
        return 0
    to_int8_opset(model)
    graph.initializer.extend(c for c in int8_constants() if c.name not in weights)  # the old one is the same 128
    activations = {n.input[0] for n in quantised}
    casts = {n.output[0]: n for n in graph.node if n.output[0] in activations}  # in graph order
    ranks = activation_ranks(model, [casts[a].output[0] for a in activations])
    dropped, replacement, zero_points = set(), {}, {}
    for a, cast in casts.items():
        add = producer[cast.input[0]]
        rnd = producer[add.input[0]]
        div = producer[rnd.input[0]]
        if (cast.op_type, add.op_type, rnd.op_type, div.op_type) != ("Cast", "Add", "Round", "Div"):
            raise SystemExit(f"{a}: not the per-token chain of quantize_int8")
        x, scale = div.input
        width = weights[next(c for c in consumers[a] if c.op_type == "MatMulInteger").input[1]].dims[0]
        dropped |= {id(add), id(rnd), id(div)}
        replacement[id(cast)] = quantize_nodes(x, scale, a, width, ranks[a], zero_points)
    for mm in quantised:
        (cast,) = consumers[mm.output[0]]
        (mul,) = consumers[cast.output[0]]
        (token,) = consumers[mul.output[0]]
        if (cast.op_type, mul.op_type, token.op_type) != ("Cast", "Mul", "Mul"):
            raise SystemExit(f"{mm.output[0]}: not the int8 matmul of quantize_int8")
        a_scale = next(i for i in token.input if i != mul.output[0])
        dropped |= {id(cast), id(mul)}
        replacement[id(mm)] = int8_matmul_nodes(mm.input[0], mm.input[1], mul.input[1], a_scale,
                                                mm.output[0], token.output[0], token.name)
        dropped.add(id(token))
    nodes = []
    for n in graph.node:
        if id(n) in replacement:
            nodes += replacement[id(n)]
        elif id(n) not in dropped:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(quantised)


def onnx_logits(path: Path, batches: list[dict[str, np.ndarray]], threads: int = 2) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    out = [sess.run(["logits"], {k: v for k, v in b.items() if k in wanted})[0] for b in batches]
    return np.concatenate(out)
