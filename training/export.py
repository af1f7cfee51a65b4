"""ONNX export, ORT graph optimisation and int8 dynamic quantisation of the trained classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

# ONNX Runtime 1.31 loads IR <= 11; the issue asks for IR <= 10 so older runtimes load it too.
MAX_IR_VERSION = 10
OPSET = 17
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def export_fp32(model: torch.nn.Module, path: Path) -> None:
    """Export with int64 inputs, dynamic batch and sequence axes, output `logits` [batch, labels]."""
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
    with. Returns the number of MatMuls quantised.
    """
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}

    def quantisable(node) -> bool:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        return w is not None and len(w.dims) == 2

    prefix: dict[str, str] = {}
    for node in graph.node:
        if quantisable(node):
            prefix.setdefault(node.input[0], f"ptq{len(prefix)}")
    added = [
        numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), "ptq_inv127"),
        numpy_helper.from_array(np.array(1e-8, np.float32), "ptq_eps"),
        numpy_helper.from_array(np.array(128.0, np.float32), "ptq_shift"),
        numpy_helper.from_array(np.array(128, np.uint8), "ptq_zero_point"),
    ]
    nodes, replaced, emitted = [], set(), set()
    for node in graph.node:
        if not quantisable(node):
            nodes.append(node)
            continue
        a = node.input[0]
        p = prefix[a]
        if a not in emitted:  # the shared input's quantised activation, once
            emitted.add(a)
            nodes += [
                helper.make_node("Abs", [a], [p + "_abs"]),
                helper.make_node("ReduceMax", [p + "_abs"], [p + "_absmax"], axes=[-1], keepdims=1),
                helper.make_node("Max", [p + "_absmax", "ptq_eps"], [p + "_range"]),
                helper.make_node("Mul", [p + "_range", "ptq_inv127"], [p + "_a_scale"]),
                helper.make_node("Div", [a, p + "_a_scale"], [p + "_scaled"]),
                helper.make_node("Round", [p + "_scaled"], [p + "_rounded"]),
                helper.make_node("Add", [p + "_rounded", "ptq_shift"], [p + "_shifted"]),
                helper.make_node("Cast", [p + "_shifted"], [p + "_a_q"], to=TensorProto.UINT8),
            ]
        w = weights[node.input[1]]
        W = numpy_helper.to_array(w).astype(np.float32)
        w_scale = (np.maximum(np.abs(W).max(axis=0), 1e-12) / 127.0).astype(np.float32)
        W_q = np.clip(np.round(W / w_scale), -127, 127).astype(np.int8)
        q = f"{p}_{len(replaced)}"
        replaced.add(w.name)
        added += [numpy_helper.from_array(W_q, q + "_w"), numpy_helper.from_array(w_scale, q + "_w_scale")]
        nodes += [
            helper.make_node("MatMulInteger", [p + "_a_q", q + "_w", "ptq_zero_point"], [q + "_acc"]),
            helper.make_node("Cast", [q + "_acc"], [q + "_acc_f"], to=TensorProto.FLOAT),
            # Column scales first, then token scales. The other order, Mul(acc, Mul(s_a, s_w)), is
            # the pattern ORT's MatMulIntegerToFloat fusion rewrites, and that kernel mishandles a
            # per-token s_a (measured: 10x the error, dev macro-F1 0.526 instead of 0.556).
            helper.make_node("Mul", [q + "_acc_f", q + "_w_scale"], [q + "_col"]),
            helper.make_node("Mul", [q + "_col", p + "_a_scale"], [node.output[0]], name=node.name),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [i for i in graph.initializer if i.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    onnx.save(model, str(dst))
    clamp_ir_version(dst)
    return len(replaced)


def onnx_logits(path: Path, batches: list[dict[str, np.ndarray]], threads: int = 2) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    out = [sess.run(["logits"], {k: v for k, v in b.items() if k in wanted})[0] for b in batches]
    return np.concatenate(out)
