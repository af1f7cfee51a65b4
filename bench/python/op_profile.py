"""Where ONNX Runtime spends its time on this model: per-operator totals from ORT's own profiler.

perf sees ~95% of the service's CPU inside libonnxruntime, whose kernel symbols are stripped; this
names the operators. Runs the model the way the service does (texts sorted by length, calls of at
most --max-tokens padded tokens) and the way the Python baseline does (one text per call), and
prints each operator type's share of kernel time, plus texts/s for both.

    .venv-bench/bin/python bench/python/op_profile.py --data ../shared/datasets/goemotions/test.tsv
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]


def load_texts(path: Path, n: int) -> list[str]:
    texts = [line.split("\t")[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts[:n]


def batches(ids: list[list[int]], max_tokens: int, sort: bool) -> list[list[list[int]]]:
    order = sorted(ids, key=len) if sort else ids
    out, cur = [], []
    for seq in order:
        if cur and (len(cur) + 1) * max(len(seq), max(len(s) for s in cur)) > max_tokens:
            out.append(cur)
            cur = []
        cur.append(seq)
    if cur:
        out.append(cur)
    return out


def feed(batch: list[list[int]]) -> dict[str, np.ndarray]:
    width = max(len(s) for s in batch)
    ids = np.zeros((len(batch), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, s in enumerate(batch):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def run(model: Path, calls: list[dict[str, np.ndarray]], threads: int, profile: bool) -> tuple[float, dict[str, float]]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(str(model / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    for f in calls[:5]:
        session.run(["logits"], f)
    start = time.perf_counter()
    for f in calls:
        session.run(["logits"], f)
    wall = time.perf_counter() - start
    per_op: dict[str, float] = collections.Counter()
    if profile:
        events = json.loads(Path(session.end_profiling()).read_text())
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                per_op[e["args"]["op_name"]] += e["dur"] / 1e6
    return wall, per_op


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=ROOT / "models/goemotions-minilm-l6")
    p.add_argument("--data", type=Path, required=True, help="GoEmotions TSV (text first)")
    p.add_argument("--texts", type=int, default=2000)
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(128)
    texts = load_texts(args.data, args.texts)
    ids = [e.ids for e in tok.encode_batch(texts)]
    real = sum(len(s) for s in ids)
    print(f"{len(texts)} texts, {real / len(texts):.1f} tokens on average, ORT intra-op threads {args.threads}")

    for name, calls in [
        ("one text per call (Python baseline)", [feed([s]) for s in ids]),
        (f"length-sorted calls of <= {args.max_tokens} padded tokens (service)",
         [feed(b) for b in batches(ids, args.max_tokens, sort=True)]),
    ]:
        padded = sum(f["input_ids"].size for f in calls)
        wall, _ = run(args.model, calls, args.threads, profile=False)
        _, per_op = run(args.model, calls, args.threads, profile=True)
        total = sum(per_op.values())
        print(f"\n{name}: {len(calls)} calls, {padded / real:.2f} padded tokens per real token, "
              f"{len(texts) / wall:.0f} texts/s, {wall / len(texts) * 1e3:.2f} ms per text")
        for op, secs in sorted(per_op.items(), key=lambda kv: -kv[1])[:10]:
            print(f"  {op:<28} {secs / total:6.1%}")


if __name__ == "__main__":
    main()
