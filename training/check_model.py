"""Checks a model directory with ONNX Runtime and tokenizers only (no torch): the format contract,
the label count, batch invariance, and a few unambiguous texts.

    python training/check_model.py models/goemotions-minilm-l6
    python training/check_model.py models/emotion-e5-zh-en --language zh

The unambiguous texts are in the language the model serves (`--language`, en by default): the
Chinese model is routed only Chinese turns, so it is checked on Chinese ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

CASES = {}
CASES["en"] = [
    # (text, labels of which one must be among the top 2, expected valence sign)
    ("Thank you so much, that fixed it!", {"gratitude"}, +1),
    ("This is the third time I call and nobody helps, I'm furious", {"anger", "annoyance"}, -1),
    ("I love how easy this was, you are wonderful", {"love", "admiration", "joy"}, +1),
    ("I'm so scared my account was hacked", {"fear", "nervousness"}, -1),
]
CASES["zh"] = [
    ("太感谢你了，问题终于解决了！", {"gratitude", "joy", "relief"}, +1),
    ("等了一个星期还没到，气死我了", {"anger", "annoyance"}, -1),
    ("你们的服务真好，我很满意", {"admiration", "joy", "approval"}, +1),
    ("我好害怕，我的银行卡被盗刷了", {"fear", "nervousness"}, -1),
]


def main(model_dir: Path, language: str) -> int:
    cases = CASES[language]
    config = json.loads((model_dir / "config.json").read_text())
    extra_path = model_dir / "emotion.json"
    extra = json.loads(extra_path.read_text()) if extra_path.exists() else {}
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    weights = np.array([extra.get("valence_weights", {}).get(l, 0.0) for l in labels], dtype=np.float32)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(extra.get("max_length", 128))
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    assert {"input_ids", "attention_mask"} <= names <= {"input_ids", "attention_mask", "token_type_ids"}, names

    def run(texts: list[str]) -> np.ndarray:
        ids = [e.ids for e in tok.encode_batch(texts)]
        width = max(map(len, ids))
        input_ids = np.zeros((len(ids), width), np.int64)
        mask = np.zeros_like(input_ids)  # by length: id 0 is a real token (`<s>`) in XLM-R's vocabulary
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = x
            mask[i, : len(x)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        logits = sess.run(None, feed)[0]
        assert logits.shape == (len(texts), len(labels)), (logits.shape, len(labels))
        return 1.0 / (1.0 + np.exp(-logits))

    texts = [c[0] for c in cases]
    batched = run(texts)
    alone = np.concatenate([run([t]) for t in texts])
    drift = float(np.abs(batched - alone).max())
    failures = []
    if drift > 1e-4:
        failures.append(f"batching changed scores by {drift:.2e} (> 1e-4)")
    for (text, expected, sign), probs in zip(cases, batched):
        top2 = [labels[i] for i in np.argsort(-probs)[:2]]
        valence = float((probs * weights).sum() / max(probs.sum(), 1e-6))
        ok = bool(expected & set(top2)) and np.sign(valence) == sign
        print(f"{'ok  ' if ok else 'FAIL'} {text!r}: top {top2}, valence {valence:+.2f}")
        if not ok:
            failures.append(text)
    print(f"{len(labels)} labels; batch drift {drift:.2e}")
    if failures:
        print("model check failed:", failures)
        return 1
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path, nargs="?", default=Path("models/goemotions-minilm-l6"))
    p.add_argument("--language", choices=sorted(CASES), default="en", help="the language the model serves")
    a = p.parse_args()
    sys.exit(main(a.model_dir, a.language))
