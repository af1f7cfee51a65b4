"""Check a rewritten graph of a shipped model against the original before it replaces model.onnx.

Used by the graph rewrites that keep a model's weights (training/unfuse_layernorm.py,
training/int8_kernels.py): the largest probability change on real texts (one text per call) and
the rewritten graph's batch invariance (texts batched 16 at a time and padded, against one at a
time: the service's 1e-4 contract). Needs onnx, onnxruntime and tokenizers only.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tokenizers import Tokenizer

INVARIANCE_LIMIT = 1e-4


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


def encode(model_dir: Path, texts: Path, limit: int) -> list[list[int]]:
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(128)
    lines = texts.read_text(encoding="utf-8").splitlines()
    texts = [line.split("\t")[0] for line in lines if line.strip()][1 : limit + 1]
    return [tok.encode(t).ids for t in texts]


def check_and_replace(model_dir: Path, model: onnx.ModelProto, texts: Path, limit: int) -> None:
    """Write `model` over model_dir/model.onnx if it is batch-invariant to 1e-4 (and say how far its
    probabilities moved); else leave the file as it was and exit non-zero."""
    path = model_dir / "model.onnx"
    enc = encode(model_dir, texts, limit)
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
        print(f"against the original, {len(enc)} texts: max |prob diff| {change.max():.4g}, mean {change.mean():.3g}")
        print(f"batch invariance (16 per call, padded): max |prob diff| {invariance:.2e}")
        if invariance > INVARIANCE_LIMIT:
            raise SystemExit(f"not batch-invariant to {INVARIANCE_LIMIT}; {path} left as it was")
        path.write_bytes(out.read_bytes())
    print(f"wrote {path}")


def rewrite_main(doc: str, rewrite: Callable[[onnx.ModelProto], int], what: str) -> None:
    """The command line of a graph rewrite: `MODEL_DIR --texts TSV [--limit N]`; `rewrite` edits the
    loaded model in place and returns how many places it changed (`what` names them)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--texts", type=Path, required=True, help="TSV, text in the first column")
    ap.add_argument("--limit", type=int, default=500)
    args = ap.parse_args()

    path = args.model_dir / "model.onnx"
    model = onnx.load(str(path))
    count = rewrite(model)
    if count == 0:
        print(f"{path}: nothing to rewrite ({what}: none, or done before)")
        return
    print(f"{count} {what} rewritten")
    check_and_replace(args.model_dir, model, args.texts, args.limit)
