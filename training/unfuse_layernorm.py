"""Rewrite a shipped model's SkipLayerNormalization nodes as Add + LayerNormalization, in place.

ORT's transformer optimizer (training/export.py `optimize`) used to fuse each residual add and
layer norm into one com.microsoft SkipLayerNormalization node. On CPU that kernel is slow: with
the per-token int8 graph it took 25 % of ONNX Runtime's time on AVX-512 VNNI, and the same graph
with a plain Add and the standard LayerNormalization runs 25-33 % more texts per second (one
thread; BENCHMARKS.md, "Performance: padding"). ONNX Runtime does not fuse them again at load.
New exports no longer fuse them (`enable_skip_layer_norm = False`); this script brings a model
exported before that change to the same graph without retraining, and checks it:

    python training/unfuse_layernorm.py models/goemotions-minilm-l6 --texts tests/data/goemotions/test.tsv

Prints the largest probability change against the original on the texts (one text per call) and
the rewritten graph's batch invariance (texts batched 16 at a time, padded, against one at a
time: the service's 1e-4 contract), then replaces model.onnx. Re-run the model's evaluation
afterwards (`emotion eval`) and record it in the model card.
"""

from __future__ import annotations


import onnx
from graph_check import rewrite_main
from onnx import helper


def unfuse(model: onnx.ModelProto) -> int:
    nodes, count = [], 0
    for node in model.graph.node:
        if node.op_type != "SkipLayerNormalization":
            nodes.append(node)
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        inputs = list(node.input) + [""] * (5 - len(node.input))
        x, skip, gamma, beta, bias = inputs[:5]
        if len(node.output) > 1 and any(node.output[1:3]):
            raise SystemExit(f"{node.name}: mean / inv_std outputs in use; not supported")
        p = f"unfused_ln{count}"
        count += 1
        total = node.output[3] if len(node.output) > 3 and node.output[3] else p + "_sum"
        if bias:
            nodes.append(helper.make_node("Add", [x, skip], [p + "_residual"], name=p + "_add"))
            nodes.append(helper.make_node("Add", [p + "_residual", bias], [total], name=p + "_bias"))
        else:
            nodes.append(helper.make_node("Add", [x, skip], [total], name=p + "_add"))
        ln_inputs = [total, gamma] + ([beta] if beta else [])
        nodes.append(helper.make_node("LayerNormalization", ln_inputs, [node.output[0]],
                                      name=p, axis=-1, epsilon=eps))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


if __name__ == "__main__":
    rewrite_main(__doc__, unfuse, "SkipLayerNormalization nodes (-> Add + LayerNormalization)")
