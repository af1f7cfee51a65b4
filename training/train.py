"""Train, export, quantise, evaluate and write a model directory the service loads.

    python training/train.py --data ../shared/datasets/goemotions \
        --base-model <dir with config.json, model.safetensors, tokenizer.json> \
        --out models/goemotions-minilm-l6

Fine-tunes a BERT encoder (mean pooling + linear head) on GoEmotions as multi-label (sigmoid + BCE),
selects the epoch and tunes per-label thresholds on dev, and touches test only for the final report.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import random
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export  # noqa: E402
import goemotions as ge  # noqa: E402
import model_card  # noqa: E402


class EmotionClassifier(torch.nn.Module):
    """BERT encoder, attention-masked mean pooling, dropout, linear head -> one logit per label."""

    def __init__(self, base_model: Path, num_labels: int, dropout: float):
        super().__init__()
        self.encoder = AutoModel.from_pretrained(str(base_model), add_pooling_layer=False)
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="GoEmotions folder (train/dev/test.tsv, mappings)")
    p.add_argument("--base-model", type=Path, required=True, help="HF BERT folder with tokenizer.json")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--work-dir", type=Path, default=None, help="intermediate files (default: <out>.work)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--lr", type=float, default=8e-5, help="encoder learning rate")
    p.add_argument("--head-lr", type=float, default=1e-3, help="classification head learning rate")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128, help="tokens per text, also served")
    p.add_argument("--warmup", type=float, default=0.06, help="share of steps with linear warmup")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--pos-weight", choices=["none", "sqrt"], default="sqrt",
                   help="BCE positive weight per label: sqrt(neg/pos) clipped to [1, 10], or none")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--limit", type=int, default=0, help="use only N train/dev/test examples (smoke runs)")
    p.add_argument("--name", default="goemotions-minilm-l6")
    p.add_argument("--version", default=date.today().strftime("%Y.%m.%d"))
    p.add_argument("--note", default="", help="a paragraph for the model card (e.g. about the machine)")
    p.add_argument("--export-only", action="store_true",
                   help="skip training: re-export, quantise and evaluate the fp32 ONNX in the work dir, "
                        "reusing the training history in <out>/metrics.json")
    return p.parse_args()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_tokenizer(base_model: Path, max_length: int) -> Tokenizer:
    tok = Tokenizer.from_file(str(base_model / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def encode(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts)]


def collate(ids: list[list[int]]) -> dict[str, np.ndarray]:
    """Pad to the longest sequence of this batch (never to a fixed length)."""
    width = max(len(x) for x in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}


def eval_batches(ids: list[list[int]], batch_size: int = 64) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """Length-sorted batches for fast evaluation, plus the permutation that restores input order."""
    order = np.argsort([len(x) for x in ids], kind="stable")
    batches = [collate([ids[i] for i in order[s : s + batch_size]]) for s in range(0, len(ids), batch_size)]
    return batches, np.argsort(order)


@torch.no_grad()
def torch_logits(model: torch.nn.Module, ids: list[list[int]]) -> np.ndarray:
    model.eval()
    batches, restore = eval_batches(ids)
    out = [model(*(torch.from_numpy(b[k]) for k in export.INPUT_NAMES)).numpy() for b in batches]
    return np.concatenate(out)[restore]


def train(args, model, train_ids, train_y, dev_ids, dev_y) -> tuple[dict, list[dict]]:
    steps_per_epoch = math.ceil(len(train_ids) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup = max(1, int(total_steps * args.warmup))
    decay, no_decay = [], []
    for name, p in model.encoder.named_parameters():
        (no_decay if p.ndim == 1 or "LayerNorm" in name else decay).append(p)
    optim = torch.optim.AdamW(
        [
            {"params": decay, "lr": args.lr, "weight_decay": 0.01},
            {"params": no_decay, "lr": args.lr, "weight_decay": 0.0},
            {"params": list(model.head.parameters()), "lr": args.head_lr, "weight_decay": 0.01},
        ]
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    )
    pos = train_y.sum(0)
    if args.pos_weight == "sqrt":
        pw = np.clip(np.sqrt((len(train_y) - pos) / np.maximum(pos, 1)), 1.0, 10.0)
    else:
        pw = np.ones(train_y.shape[1])
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw, dtype=torch.float32))

    history: list[dict] = []
    best_state, best_f1 = None, -1.0
    rng = np.random.default_rng(args.seed)
    start = time.time()
    step = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = rng.permutation(len(train_ids))
        running, seen = 0.0, 0
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
            running += loss.item() * len(idx)
            seen += len(idx)
            if step % 100 == 0 or s + args.batch_size >= len(perm):
                elapsed = time.time() - start
                rate = step * args.batch_size / elapsed
                eta = (total_steps - step) * args.batch_size / rate
                print(
                    f"epoch {epoch}/{args.epochs} step {step}/{total_steps} loss {running / seen:.4f} "
                    f"{rate:.0f} ex/s elapsed {elapsed / 60:.1f} min eta {eta / 60:.1f} min",
                    flush=True,
                )
        probs = ge.sigmoid(torch_logits(model, dev_ids))
        thresholds = ge.tune_thresholds(dev_y, probs)
        dev_f1 = ge.multilabel_report(dev_y, ge.predict(probs, thresholds))["macro_f1"]
        history.append({"epoch": epoch, "train_loss": running / seen, "dev_macro_f1_tuned": dev_f1})
        print(f"epoch {epoch}: dev macro-F1 (per-label thresholds tuned on dev) {dev_f1:.4f}", flush=True)
        if dev_f1 > best_f1:
            best_f1, best_state = dev_f1, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best_state, history


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def write_tokenizer(base_model: Path, dst: Path, max_length: int) -> None:
    """The base tokenizer with padding off and truncation at the served max length."""
    tok = json.loads((base_model / "tokenizer.json").read_text())
    tok["padding"] = None
    tok["truncation"] = {"direction": "Right", "max_length": max_length, "strategy": "LongestFirst", "stride": 0}
    dst.write_text(json.dumps(tok, ensure_ascii=False))


def main() -> None:
    args = parse_args()
    t0 = time.time()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    work = args.work_dir or args.out.with_name(args.out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    labels = ge.load_labels(args.data)
    ekman, sentiment = ge.load_groupings(args.data)
    splits = {n: ge.load_split(args.data, n, len(labels)) for n in ("train", "dev", "test")}
    if args.limit:
        splits = {n: ge.Split(s.texts[: args.limit], s.labels[: args.limit]) for n, s in splits.items()}
    tok = load_tokenizer(args.base_model, args.max_length)
    ids = {n: encode(tok, s.texts) for n, s in splits.items()}
    print("data: " + ", ".join(f"{n} {len(s.texts)}" for n, s in splits.items()) + f"; {len(labels)} labels")

    raw, fp32, int8 = work / "model.fp32.raw.onnx", work / "model.fp32.onnx", work / "model.int8.onnx"
    dev_batches, dev_restore = eval_batches(ids["dev"])
    test_batches, test_restore = eval_batches(ids["test"])
    if args.export_only:
        # Re-run export, quantisation and evaluation on an earlier run's fp32 export.
        earlier = json.loads((args.out / "metrics.json").read_text())
        history, train_minutes = earlier["history"], earlier["train_minutes"]
        training_command = earlier.get("training_command", earlier["command"])
        max_abs_diff = earlier["onnx_vs_torch_max_abs_logit_diff"]
        print(f"export only: reusing {raw} from the run `{training_command}`")
    else:
        model = EmotionClassifier(args.base_model, len(labels), args.dropout)
        _, history = train(args, model, ids["train"], splits["train"].labels, ids["dev"], splits["dev"].labels)
        train_minutes = (time.time() - t0) / 60
        training_command = command_line()
        model.eval()
        torch.save(model.state_dict(), work / "model.pt")
        export.export_fp32(model, raw)
        torch_dev = torch_logits(model, ids["dev"])
        raw_dev = export.onnx_logits(raw, dev_batches, args.threads)[dev_restore]
        max_abs_diff = float(np.abs(raw_dev - torch_dev).max())
        print(f"ONNX fp32 vs PyTorch on {len(raw_dev)} dev texts: max |logit diff| = {max_abs_diff:.2e}")

    # ORT-optimised fp32, then int8 with per-token activation scales.
    hf_base = AutoConfig.from_pretrained(str(args.base_model))
    export.optimize(raw, fp32, hf_base.num_attention_heads, hf_base.hidden_size)
    quantized = export.quantize_int8(fp32, int8)
    print(f"int8: {quantized} MatMuls quantised per token / per channel")
    fp32_dev = export.onnx_logits(fp32, dev_batches, args.threads)[dev_restore]
    int8_dev = export.onnx_logits(int8, dev_batches, args.threads)[dev_restore]

    single = export.onnx_logits(int8, [collate([x]) for x in ids["dev"][:64]], args.threads)
    batched = int8_dev[:64]
    batch_invariance = float(np.abs(ge.sigmoid(single) - ge.sigmoid(batched)).max())
    print(f"int8 batch invariance on 64 dev texts: max |prob diff| alone vs batched = {batch_invariance:.2e}")

    results = {}
    for kind, path, dev_logits in (("fp32", fp32, fp32_dev), ("int8", int8, int8_dev)):
        thresholds = ge.tune_thresholds(splits["dev"].labels, ge.sigmoid(dev_logits))
        dev_report = ge.full_report(splits["dev"].labels, ge.sigmoid(dev_logits), thresholds, labels, ekman, sentiment)
        test_probs = ge.sigmoid(export.onnx_logits(path, test_batches, args.threads)[test_restore])
        test_report = ge.full_report(splits["test"].labels, test_probs, thresholds, labels, ekman, sentiment)
        results[kind] = {"thresholds": thresholds.tolist(), "dev": dev_report, "test": test_report}
        print(
            f"{kind}: test macro-F1 {test_report['macro_f1']:.4f} micro-F1 {test_report['micro_f1']:.4f} "
            f"ekman {test_report['ekman_macro_f1']:.4f} sentiment {test_report['sentiment_macro_f1']:.4f} "
            f"valence sign acc {test_report['valence_sign_accuracy']:.4f} (dev macro-F1 {dev_report['macro_f1']:.4f})"
        )
    drop = results["fp32"]["test"]["macro_f1"] - results["int8"]["test"]["macro_f1"]
    print(f"int8 vs fp32 test macro-F1 drop: {drop:+.4f} ({'within' if drop <= 0.01 else 'OUTSIDE'} 0.01)")

    # The model directory: int8 graph, tokenizer, HF-style config.json, and our emotion.json.
    (args.out / "model.onnx").write_bytes(int8.read_bytes())
    write_tokenizer(args.base_model, args.out / "tokenizer.json", args.max_length)
    hf = hf_base.to_dict()
    hf.update(
        architectures=["BertMeanPoolForSequenceClassification"],
        id2label={str(i): n for i, n in enumerate(labels)},
        label2id={n: i for i, n in enumerate(labels)},
        problem_type="multi_label_classification",
    )
    for key in ("_name_or_path", "transformers_version", "gradient_checkpointing", "use_cache"):
        hf.pop(key, None)
    (args.out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    weights = ge.valence_weights(labels, sentiment)
    emotion = {
        "name": args.name,
        "version": args.version,
        "max_length": args.max_length,
        "thresholds": {n: round(float(t), 2) for n, t in zip(labels, results["int8"]["thresholds"])},
        "valence_weights": {n: float(w) for n, w in zip(labels, weights)},
    }
    (args.out / "emotion.json").write_text(json.dumps(emotion, indent=2) + "\n")

    total_minutes = (time.time() - t0) / 60
    run = {
        "training_command": training_command,
        "command": command_line(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "history": history,
        "onnx_vs_torch_max_abs_logit_diff": max_abs_diff,
        "int8_batch_invariance_max_abs_prob_diff": batch_invariance,
        "train_minutes": train_minutes,
        "export_minutes": total_minutes - (0 if args.export_only else train_minutes),
        "hardware": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}",
        "note": args.note,
        "model_onnx_bytes": (args.out / "model.onnx").stat().st_size,
        "results": results,
    }
    (args.out / "metrics.json").write_text(json.dumps(run, indent=2) + "\n")
    (args.out / "README.md").write_text(model_card.render(run, labels, emotion))
    print(f"wrote {args.out} in {total_minutes:.1f} min (training {train_minutes:.1f} min)")


if __name__ == "__main__":
    main()
