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

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from tokenizers import Tokenizer


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


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def probs(sess: ort.InferenceSession, batch: list[list[int]]) -> np.ndarray:
    width = max(len(ids) for ids in batch)
    ids = np.zeros((len(batch), width), np.int64)
    mask = np.zeros_like(ids)
    for r, seq in enumerate(batch):
        ids[r, : len(seq)] = seq
        mask[r, : len(seq)] = 1
    feed = {"input_ids": ids, "attention_mask": mask}
    if any(i.name == "token_type_ids" for i in sess.get_inputs()):
        feed["token_type_ids"] = np.zeros_like(ids)
    return 1.0 / (1.0 + np.exp(-sess.run(None, feed)[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--texts", type=Path, required=True, help="TSV, text in the first column")
    ap.add_argument("--limit", type=int, default=500)
    args = ap.parse_args()

    path = args.model_dir / "model.onnx"
    model = onnx.load(str(path))
    count = unfuse(model)
    if count == 0:
        print(f"{path}: no SkipLayerNormalization node; nothing to do")
        return
    tok = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(128)
    lines = args.texts.read_text(encoding="utf-8").splitlines()
    texts = [line.split("\t")[0] for line in lines if line.strip()][1 : args.limit + 1]
    enc = [tok.encode(t).ids for t in texts]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        onnx.save(model, str(out))
        onnx.checker.check_model(str(out))
        before, after = session(path), session(out)
        one_before = np.concatenate([probs(before, [e]) for e in enc])
        one_after = np.concatenate([probs(after, [e]) for e in enc])
        order = np.random.default_rng(13).permutation(len(enc))
        invariance = 0.0
        for b in range(0, len(order), 16):
            idx = order[b : b + 16]
            batched = probs(after, [enc[i] for i in idx])
            invariance = max(invariance, float(np.abs(batched - one_after[idx]).max()))
        change = np.abs(one_after - one_before)
        print(f"{count} SkipLayerNormalization nodes -> Add + LayerNormalization")
        print(f"against the original, {len(enc)} texts: max |prob diff| {change.max():.4f}, mean {change.mean():.6f}")
        print(f"batch invariance (16 per call, padded): max |prob diff| {invariance:.2e}")
        if invariance > 1e-4:
            raise SystemExit("not batch-invariant to 1e-4; model.onnx left as it was")
        path.write_bytes(out.read_bytes())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
