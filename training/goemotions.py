"""GoEmotions data loading, label groupings, and the metrics reported in the model card.

numpy only, so the lightweight CI check can import it without torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# GoEmotions sentiment groups become the default valence weights: positive +1, negative -1,
# ambiguous and neutral 0. The service applies the same formula (see docs/models.md).
SENTIMENT_WEIGHT = {"positive": 1.0, "negative": -1.0, "ambiguous": 0.0}


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray  # [n, num_labels] multi-hot, float32


def load_labels(data_dir: Path) -> list[str]:
    return [line.strip() for line in (data_dir / "emotions.txt").read_text().splitlines() if line.strip()]


def load_split(data_dir: Path, name: str, num_labels: int) -> Split:
    texts: list[str] = []
    rows: list[np.ndarray] = []
    with open(data_dir / f"{name}.tsv", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2:
                raise ValueError(f"{name}.tsv line {line_no}: expected text<TAB>label_ids")
            y = np.zeros(num_labels, dtype=np.float32)
            for idx in parts[1].split(","):
                y[int(idx)] = 1.0
            texts.append(parts[0])
            rows.append(y)
    return Split(texts, np.stack(rows))


def load_groupings(data_dir: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    ekman = json.loads((data_dir / "ekman_mapping.json").read_text())
    sentiment = json.loads((data_dir / "sentiment_mapping.json").read_text())
    return ekman, sentiment


def valence_weights(labels: list[str], sentiment: dict[str, list[str]]) -> np.ndarray:
    weights = np.zeros(len(labels), dtype=np.float32)
    for group, members in sentiment.items():
        for member in members:
            weights[labels.index(member)] = SENTIMENT_WEIGHT[group]
    return weights


def turn_valence(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Probability-weighted mean of the label valence weights, in [-1, 1].

    valence = sum_i(w_i * p_i) / sum_i(p_i); neutral (weight 0) pulls towards 0.
    """
    mass = probs.sum(axis=-1)
    return (probs * weights).sum(axis=-1) / np.maximum(mass, 1e-6)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def f1_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp, dtype=np.float64), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp, dtype=np.float64), where=(tp + fn) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return precision, recall, f1


def multilabel_report(gold: np.ndarray, pred: np.ndarray) -> dict:
    gold = gold.astype(bool)
    pred = pred.astype(bool)
    tp = (gold & pred).sum(0).astype(np.float64)
    fp = (~gold & pred).sum(0).astype(np.float64)
    fn = (gold & ~pred).sum(0).astype(np.float64)
    precision, recall, f1 = f1_counts(tp, fp, fn)
    _, _, micro = f1_counts(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))
    return {
        "macro_f1": float(f1.mean()),
        "micro_f1": float(micro[0]),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": gold.sum(0).astype(int).tolist(),
    }


def group_matrix(labels: list[str], groups: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    """[num_labels, num_groups] 0/1 matrix; `neutral` becomes its own group."""
    names = list(groups) + ["neutral"]
    m = np.zeros((len(labels), len(names)), dtype=np.float32)
    for g, members in enumerate(groups.values()):
        for member in members:
            m[labels.index(member), g] = 1.0
    m[labels.index("neutral"), len(names) - 1] = 1.0
    return names, m


def grouped_macro_f1(gold: np.ndarray, pred: np.ndarray, matrix: np.ndarray) -> float:
    """A group is present when any of its member labels is (gold) or predicted (pred)."""
    return multilabel_report((gold @ matrix) > 0, (pred.astype(np.float32) @ matrix) > 0)["macro_f1"]


def tune_thresholds(gold: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-label threshold maximising that label's F1 on the given (dev) split."""
    grid = np.arange(0.02, 0.96, 0.01)
    best = np.full(gold.shape[1], 0.5)
    for j in range(gold.shape[1]):
        y = gold[:, j].astype(bool)
        p = probs[:, j][:, None] >= grid[None, :]
        tp = (p & y[:, None]).sum(0)
        fp = (p & ~y[:, None]).sum(0)
        fn = (~p & y[:, None]).sum(0)
        f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        best[j] = grid[int(np.argmax(f1))]
    return best


def predict(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Labels at or above their threshold; a text with none gets its top label (never empty)."""
    pred = probs >= thresholds[None, :]
    empty = ~pred.any(axis=1)
    pred[empty, probs[empty].argmax(axis=1)] = True
    return pred


def valence_sign_accuracy(
    gold: np.ndarray, valence: np.ndarray, labels: list[str], sentiment: dict[str, list[str]]
) -> tuple[float, int]:
    """Sign accuracy on texts whose gold labels are all positive or all negative."""
    idx = {g: [labels.index(m) for m in members] for g, members in sentiment.items()}
    pos = gold[:, idx["positive"]].any(1)
    neg = gold[:, idx["negative"]].any(1)
    other = gold[:, idx["ambiguous"] + [labels.index("neutral")]].any(1)
    pure_pos = pos & ~neg & ~other
    pure_neg = neg & ~pos & ~other
    mask = pure_pos | pure_neg
    correct = (pure_pos & (valence > 0)) | (pure_neg & (valence < 0))
    return float(correct[mask].mean()), int(mask.sum())


def full_report(
    gold: np.ndarray,
    probs: np.ndarray,
    thresholds: np.ndarray,
    labels: list[str],
    ekman: dict[str, list[str]],
    sentiment: dict[str, list[str]],
) -> dict:
    pred = predict(probs, thresholds)
    report = multilabel_report(gold, pred)
    _, ekman_m = group_matrix(labels, ekman)
    _, sent_m = group_matrix(labels, sentiment)
    report["ekman_macro_f1"] = grouped_macro_f1(gold, pred, ekman_m)
    report["sentiment_macro_f1"] = grouped_macro_f1(gold, pred, sent_m)
    acc, n = valence_sign_accuracy(gold, turn_valence(probs, valence_weights(labels, sentiment)), labels, sentiment)
    report["valence_sign_accuracy"] = acc
    report["valence_sign_n"] = n
    return report
