"""Chinese training/dev data, label mappings onto GoEmotions, and the Chinese metrics.

numpy only (CI's check imports it without torch). The dataset files are read from the folder given
on the command line (in this workspace ../shared/datasets/zh; see its README for sources and
licenses); nothing here is in the repository except our own contact-center set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import goemotions as ge

# SMP2020-EWECT's six emotions and the GoEmotions label each one trains.
SMP_EMOTIONS = ["happy", "angry", "sad", "fear", "surprise", "neutral"]
SMP_TO_GOEMOTIONS = {"happy": "joy", "angry": "anger", "sad": "sadness", "fear": "fear",
                     "surprise": "surprise", "neutral": "neutral"}
POLARITY = {"negative": 0, "neutral": 1, "positive": 2}
REVIEW_FILES = ("online_shopping.tsv", "chnsenticorp_htl.tsv", "waimai_train.tsv")
# Coarse emotions of our contact-center set: Ekman's six plus neutral, as GoEmotions groups them.
COARSE = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]


def read_tsv(path: Path) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, ln.split("\t"))) for ln in lines[1:] if ln]


def is_dev_review(text: str) -> bool:
    """The fixed dev cut of the review sets: 1 in 20 by a hash of the text."""
    return hashlib.md5(text.encode("utf-8")).digest()[0] % 20 == 0


def _take(rows: list[tuple[str, int]], per_label: int) -> list[tuple[str, int]]:
    """Up to `per_label` rows per label, chosen by a hash of the text (deterministic)."""
    out = []
    for label in sorted({y for _, y in rows}):
        mine = sorted((r for r in rows if r[1] == label), key=lambda r: hashlib.md5(r[0].encode()).hexdigest())
        out += mine[:per_label]
    return out


@dataclass
class CcSet:
    texts: list[str]
    sentiment: np.ndarray  # 0 negative, 1 neutral, 2 positive
    emotion: list[str]  # one of COARSE
    rows: list[dict[str, str]]


def load_cc(path: Path) -> CcSet:
    rows = read_tsv(path)
    for i, r in enumerate(rows, 2):
        if r.get("sentiment") not in POLARITY or r.get("emotion") not in COARSE:
            raise ValueError(f"{path} line {i}: sentiment must be one of {list(POLARITY)}, emotion one of {COARSE}")
    return CcSet([r["text"] for r in rows], np.array([POLARITY[r["sentiment"]] for r in rows]),
                 [r["emotion"] for r in rows], rows)


def load_all(ge_dir: Path, zh_dir: Path, num_labels: int, reviews_per_label: int, limit: int = 0) -> dict:
    ge_train = ge.load_split(ge_dir, "train", num_labels)
    ge_dev = ge.load_split(ge_dir, "dev", num_labels)
    smp_tr = read_tsv(zh_dir / "smp2020_train.tsv")
    smp_dv = read_tsv(zh_dir / "smp2020_dev.tsv")
    smp_dev = ([r["text"] for r in smp_dv], np.array([SMP_EMOTIONS.index(r["emotion"]) for r in smp_dv]))
    dev_texts = set(smp_dev[0])

    reviews_train, reviews_dev, seen = [], [], set()
    for name in REVIEW_FILES:
        rows = []
        for r in read_tsv(zh_dir / name):
            t = r["text"]
            if t in seen:
                continue  # the shopping set's hotel reviews repeat ChnSentiCorp
            seen.add(t)
            y = 2 if r["label"] == "1" else 0
            (reviews_dev if is_dev_review(t) else rows).append((t, y))
        reviews_train += _take([r for r in rows if r[0] not in dev_texts], reviews_per_label)
    dev_texts |= {t for t, _ in reviews_dev}
    dialog = []
    for r in read_tsv(zh_dir / "jddc_valid.tsv"):
        if r["speaker"] == "customer" and r["sentiment"] in POLARITY:
            dialog.append((r["text"], POLARITY[r["sentiment"]]))
    for r in read_tsv(zh_dir / "cped_valid.tsv"):
        dialog.append((r["text"], POLARITY[r["sentiment"]]))
    pol = [(t, y) for t, y in reviews_train + dialog if t not in dev_texts]
    smp_train = [(r["text"], SMP_EMOTIONS.index(r["emotion"])) for r in smp_tr if r["text"] not in dev_texts]

    def cut(x):
        return x[:limit] if limit else x

    train = {
        "ge": (cut(ge_train.texts), cut(ge_train.labels)),
        "smp": ([t for t, _ in cut(smp_train)], np.array([y for _, y in cut(smp_train)])),
        "pol": ([t for t, _ in cut(pol)], np.array([y for _, y in cut(pol)])),
    }
    dev = {
        "ge": ge.Split(cut(ge_dev.texts), cut(ge_dev.labels)),
        "smp": (cut(smp_dev[0]), cut(smp_dev[1])),
        "pol": ([t for t, _ in cut(reviews_dev)], np.array([y for _, y in cut(reviews_dev)])),
    }
    return {"train": train, "dev": dev}


def with_cc_train(pol: tuple, cc: CcSet, repeat: int, *held_out: Path | None) -> tuple:
    """The polarity source plus our contact-center training turns, each `repeat` times. Refuses a
    turn that is also in a held-out set (the evaluation parts), compared without punctuation."""
    import zh_cc_train

    held = {zh_cc_train.norm(t) for p in held_out if p for t in load_cc(p).texts}
    clash = [t for t in cc.texts if zh_cc_train.norm(t) in held]
    if clash:
        raise ValueError(f"{len(clash)} training turns are in the evaluation set, e.g. {clash[0]!r}")
    texts, y = pol
    return (list(texts) + list(cc.texts) * repeat, np.concatenate([y, np.tile(cc.sentiment, repeat)]))


def smp_predict(probs: np.ndarray, labels: list[str]) -> np.ndarray:
    """SMP2020's emotion as the highest of the six GoEmotions labels it maps onto."""
    idx = [labels.index(SMP_TO_GOEMOTIONS[e]) for e in SMP_EMOTIONS]
    return probs[:, idx].argmax(1)


def macro_f1(gold: np.ndarray, pred: np.ndarray, k: int) -> float:
    f1 = []
    for c in range(k):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        f1.append(2 * tp / max(2 * tp + fp + fn, 1))
    return float(np.mean(f1))


def sentiment3(valence: np.ndarray, band: float) -> np.ndarray:
    """Negative below -band, positive above +band, neutral between (the service's 3-class reading)."""
    return np.where(valence <= -band, 0, np.where(valence >= band, 2, 1))


def coarse_emotion(probs: np.ndarray, labels: list[str], classes: list[str]) -> list[str]:
    """Among `classes` (coarse emotions), the one whose GoEmotions label is the most probable
    (the same reading as the service's `emotion eval`)."""
    idx = [labels.index(c) for c in classes]
    return [classes[i] for i in probs[:, idx].argmax(1)]


def cc_report(probs: np.ndarray, weights: np.ndarray, cc: CcSet, labels: list[str],
              band: float | None = None, ekman: dict | None = None) -> dict:
    val = ge.turn_valence(probs, weights)
    if band is None:  # tuned on this (dev) set
        grid = np.arange(0.02, 0.61, 0.02)
        band = float(grid[int(np.argmax([(sentiment3(val, b) == cc.sentiment).mean() for b in grid]))])
    pred = sentiment3(val, band)
    polar = cc.sentiment != 1
    r = {
        "band": float(band),
        "accuracy3": float((pred == cc.sentiment).mean()),
        "sign_accuracy": float(((val[polar] > 0) == (cc.sentiment[polar] == 2)).mean()) if polar.any() else float("nan"),
        "n": int(len(cc.texts)),
        "n_polar": int(polar.sum()),
    }
    if ekman is not None:
        got = coarse_emotion(probs, labels, [c for c in COARSE if c in set(cc.emotion)])
        r["coarse_emotion_accuracy"] = float(np.mean([a == b for a, b in zip(got, cc.emotion)]))
    return r
