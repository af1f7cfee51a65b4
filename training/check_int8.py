"""Self-test of training/export.py's int8 graph without torch: a small two-layer network built with
onnx.helper, quantised by `quantize_int8` (the path of every new export) and, in the earlier form,
rewritten by `use_int8_kernels` (training/int8_kernels.py). Checks that

- the int8 graph computes the per-token formula of `quantize_int8`'s docstring (numpy reference,
  to float rounding);
- the rewrite of the earlier graph gives exactly the same outputs as the earlier graph;
- a row's output does not depend on the rows batched or padded with it (1e-4 contract).

    python training/check_int8.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
import export  # noqa: E402

HIDDEN, FF = 48, 96


def fp32_model(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x [batch, seq, HIDDEN] -> MatMul W1 + b1 -> Relu -> MatMul W2 + b2 -> y [batch, seq, HIDDEN]."""
    w = {
        "W1": rng.standard_normal((HIDDEN, FF)).astype(np.float32) * 0.2,
        "b1": rng.standard_normal(FF).astype(np.float32) * 0.1,
        "W2": rng.standard_normal((FF, HIDDEN)).astype(np.float32) * 0.2,
        "b2": rng.standard_normal(HIDDEN).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "two_layers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", export.OPSET)])
    model.ir_version = export.MAX_IR_VERSION
    return model, w


def reference(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    def int8_matmul(a: np.ndarray, W: np.ndarray) -> np.ndarray:
        s_a = np.maximum(np.abs(a).max(axis=-1, keepdims=True), 1e-8) * np.float32(1.0 / 127.0)
        a_q = np.round(a / s_a)
        s_w = np.maximum(np.abs(W).max(axis=0), 1e-12) / 127.0
        W_q = np.clip(np.round(W / s_w), -127, 127)
        return (a_q @ W_q) * s_w * s_a

    h = np.maximum(int8_matmul(x, w["W1"]) + w["b1"], 0)
    return int8_matmul(h, w["W2"]) + w["b2"]


def legacy_quantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph the earlier `quantize_int8` wrote (Div, Round, Add, Cast; MatMulInteger, Cast, Mul,
    Mul), derived from the new one: what `use_int8_kernels` reads."""
    g = model.graph
    out = []
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            x, scale, _ = n.input
            p = n.output[0]
            out += [
                helper.make_node("Div", [x, scale], [p + "_scaled"]),
                helper.make_node("Round", [p + "_scaled"], [p + "_rounded"]),
                helper.make_node("Add", [p + "_rounded", "ptq_shift"], [p + "_shifted"]),
                helper.make_node("Cast", [p + "_shifted"], [p], to=TensorProto.UINT8),
            ]
        elif n.op_type == "MatMulIntegerToFloat":
            a_q, w, _, w_scale, zp = n.input
            col = n.output[0]
            out += [
                helper.make_node("MatMulInteger", [a_q, w, zp], [col + "_acc"]),
                helper.make_node("Cast", [col + "_acc"], [col + "_acc_f"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [col + "_acc_f", w_scale], [col]),
            ]
        elif n.op_type not in ("Shape", "Expand"):
            out.append(n)
    del g.node[:]
    g.node.extend(out)
    g.initializer.append(numpy_helper.from_array(np.array(128.0, np.float32), "ptq_shift"))
    return model


def run(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    src = model if isinstance(model, Path) else model.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(src) if isinstance(src, Path) else src, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def main() -> int:
    rng = np.random.default_rng(7)
    fp32, w = fp32_model(rng)
    x = (rng.standard_normal((6, 11, HIDDEN)) * 2).astype(np.float32)
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(fp32, str(src))
        quantised = export.quantize_int8(src, dst)
        int8 = onnx.load(str(dst))
        ops = sorted({n.op_type for n in int8.graph.node})
        y = run(dst, x)
        err = float(np.abs(y - reference(x, w)).max())
        print(f"quantize_int8: {quantised} MatMuls, ops {ops}; max |diff| against numpy {err:.2e}")
        if quantised != 2 or "QuantizeLinear" not in ops or "MatMulIntegerToFloat" not in ops:
            failures.append("quantize_int8 did not build the fused int8 kernels")
        if err > 1e-4:
            failures.append(f"quantize_int8 differs from the per-token formula by {err:.2e}")
        # Batch invariance: each row alone, and next to others padded to a longer sequence.
        padded = np.concatenate([x, (rng.standard_normal((6, 5, HIDDEN)) * 9).astype(np.float32)], axis=1)
        alone = np.concatenate([run(dst, x[i : i + 1]) for i in range(len(x))])
        drift = max(float(np.abs(alone - y).max()), float(np.abs(run(dst, padded)[:, :11] - y).max()))
        print(f"batch / padding invariance: {drift:.2e}")
        if drift > 1e-4:
            failures.append(f"int8 graph not batch-invariant ({drift:.2e})")
        legacy = legacy_quantize(onnx.load(str(dst)))
        before = run(legacy, x)
        rewritten = use = onnx.load_from_string(legacy.SerializeToString())
        n = export.use_int8_kernels(use)
        onnx.checker.check_model(rewritten)
        after = run(rewritten, x)
        same = bool(np.array_equal(before, after))
        print(f"use_int8_kernels: {n} MatMuls rewritten; outputs identical to the earlier graph: {same}")
        if n != 2 or not same:
            failures.append("use_int8_kernels changed the outputs")
    if failures:
        print("int8 check failed:", failures)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
