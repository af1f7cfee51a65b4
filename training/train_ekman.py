"""A second model from the same pipeline: GoEmotions regrouped into Ekman's 6 emotions + neutral,
single-label (softmax over 7), exported in the Hugging Face Optimum layout (model.onnx,
tokenizer.json, config.json; no emotion.json). It exists to show that the service hard-codes
neither the label set nor the problem type. Too large for the repository (~59 MB).

Examples whose GoEmotions labels fall into exactly one Ekman group (neutral counts as one) are
kept; the others are dropped. Same encoder, pooling, export and per-token int8 quantisation as
`train.py`; cross-entropy instead of per-label sigmoids; the best epoch by dev macro-F1.

    python training/train_ekman.py --data ../shared/datasets/goemotions --base-model $BASE \\
        --out /tmp/ekman-minilm-l6 --epochs 1

Writes, besides the model directory, `<work>/ekman_{dev,test}.tsv` (text, Ekman label id) so
that `emotion eval --model OUT --data <work>/ekman_test.tsv` can be compared with the report.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export  # noqa: E402
import goemotions as ge  # noqa: E402
from train import (  # noqa: E402
    EmotionClassifier,
    collate,
    command_line,
    cpu_name,
    encode,
    eval_batches,
    load_tokenizer,
    seed_everything,
    torch_logits,
    write_tokenizer,
)

EKMAN = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]


def ekman_split(data: Path, name: str, labels: list[str], groups: dict[str, list[str]]):
    """(texts, Ekman label ids) of the examples with exactly one Ekman group."""
    group_of = {member: g for g, members in groups.items() for member in members}
    group_of["neutral"] = "neutral"
    split = ge.load_split(data, name, len(labels))
    texts, ys = [], []
    for text, row in zip(split.texts, split.labels):
        found = {group_of[labels[i]] for i in np.flatnonzero(row)}
        if len(found) == 1:
            texts.append(text)
            ys.append(EKMAN.index(found.pop()))
    return texts, np.array(ys, dtype=np.int64)


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> tuple[float, list[float]]:
    f1s = []
    for c in range(len(EKMAN)):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return float(np.mean(f1s)), f1s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--base-model", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--lr", type=float, default=8e-5)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--limit", type=int, default=0, help="use only N examples per split (smoke runs)")
    args = p.parse_args()
    t0 = time.time()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    work = args.work_dir or args.out.with_name(args.out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    labels = ge.load_labels(args.data)
    groups, _ = ge.load_groupings(args.data)
    data = {n: ekman_split(args.data, n, labels, groups) for n in ("train", "dev", "test")}
    if args.limit:
        data = {n: (t[: args.limit], y[: args.limit]) for n, (t, y) in data.items()}
    for n in ("dev", "test"):
        texts, ys = data[n]
        lines = [f"{t}\t{y}" for t, y in zip(texts, ys)]
        (work / f"ekman_{n}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = load_tokenizer(args.base_model, args.max_length)
    ids = {n: encode(tok, t) for n, (t, _) in data.items()}
    print("data: " + ", ".join(f"{n} {len(t)}" for n, (t, _) in data.items()) + " (single Ekman group)", flush=True)

    model = EmotionClassifier(args.base_model, len(EKMAN), args.dropout)
    train_ids, train_y = ids["train"], data["train"][1]
    steps = math.ceil(len(train_ids) / args.batch_size) * args.epochs
    warmup = max(1, steps // 16)
    optim = torch.optim.AdamW(
        [
            {"params": list(model.encoder.parameters()), "lr": args.lr, "weight_decay": 0.01},
            {"params": list(model.head.parameters()), "lr": args.head_lr, "weight_decay": 0.01},
        ]
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    counts = np.bincount(train_y, minlength=len(EKMAN)).astype(np.float64)
    weight = torch.tensor(np.sqrt(counts.sum() / np.maximum(counts, 1) / len(EKMAN)), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    rng = np.random.default_rng(args.seed)
    best, best_f1, history, step = None, -1.0, [], 0
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = rng.permutation(len(train_ids))
        for s in range(0, len(perm), args.batch_size):
            idx = perm[s : s + args.batch_size]
            b = collate([train_ids[i] for i in idx])
            logits = model(*(torch.from_numpy(b[k]) for k in export.INPUT_NAMES))
            loss = loss_fn(logits, torch.from_numpy(train_y[idx]))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                rate = step * args.batch_size / (time.time() - start)
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.4f} {rate:.0f} ex/s "
                      f"eta {(steps - step) * args.batch_size / rate / 60:.1f} min", flush=True)
        dev_f1, _ = macro_f1(data["dev"][1], torch_logits(model, ids["dev"]).argmax(1))
        history.append({"epoch": epoch, "dev_macro_f1": dev_f1})
        print(f"epoch {epoch}: dev macro-F1 {dev_f1:.4f}", flush=True)
        if dev_f1 > best_f1:
            best_f1, best = dev_f1, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best)
    model.eval()
    train_minutes = (time.time() - t0) / 60

    raw, fp32, int8 = work / "model.fp32.raw.onnx", work / "model.fp32.onnx", work / "model.int8.onnx"
    export.export_fp32(model, raw)
    hf_base = AutoConfig.from_pretrained(str(args.base_model))
    export.optimize(raw, fp32, hf_base.num_attention_heads, hf_base.hidden_size)
    export.quantize_int8(fp32, int8)
    batches, restore = eval_batches(ids["test"])
    results = {}
    for kind, path in (("fp32", fp32), ("int8", int8)):
        pred = export.onnx_logits(path, batches, args.threads)[restore].argmax(1)
        f1, per_label = macro_f1(data["test"][1], pred)
        acc = float((pred == data["test"][1]).mean())
        results[kind] = {"test_macro_f1": f1, "test_accuracy": acc, "test_f1": dict(zip(EKMAN, per_label))}
        print(f"{kind}: test macro-F1 {f1:.4f} accuracy {acc:.4f} on {len(pred)} texts", flush=True)

    # Optimum layout: the graph, the tokenizer, config.json with id2label and the problem type.
    (args.out / "model.onnx").write_bytes(int8.read_bytes())
    write_tokenizer(args.base_model, args.out / "tokenizer.json", args.max_length)
    hf = hf_base.to_dict()
    hf.update(
        architectures=["BertMeanPoolForSequenceClassification"],
        id2label={str(i): n for i, n in enumerate(EKMAN)},
        label2id={n: i for i, n in enumerate(EKMAN)},
        problem_type="single_label_classification",
    )
    for key in ("_name_or_path", "transformers_version", "gradient_checkpointing", "use_cache"):
        hf.pop(key, None)
    (args.out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    report = {
        "command": command_line(),
        "history": history,
        "train_minutes": train_minutes,
        "total_minutes": (time.time() - t0) / 60,
        "hardware": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}",
        "examples": {n: len(t) for n, (t, _) in data.items()},
        "results": results,
    }
    (work / "ekman_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} and {work / 'ekman_report.json'} in {report['total_minutes']:.1f} min", flush=True)


if __name__ == "__main__":
    main()
