"""Export, quantise, evaluate and write the multilingual model directory (train_multilingual.py's
last step; `--export-only` re-runs it on the kept checkpoint).

The numbers here are the training pipeline's own (PyTorch tokenizer, ONNX Runtime in Python).
The model card's headline numbers are re-measured through the service (`emotion eval`) and
added by hand with the command that reproduces them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

import export
import goemotions as ge
import zh_data
from train import collate, command_line


def batches_of(ids: list[list[int]], size: int = 64):
    order = np.argsort([len(x) for x in ids], kind="stable")
    return [collate([ids[i] for i in order[s : s + size]]) for s in range(0, len(ids), size)], np.argsort(order)


def onnx_probs(path: Path, ids: list[list[int]], threads: int) -> np.ndarray:
    b, restore = batches_of(ids)
    return ge.sigmoid(export.onnx_logits(path, b, threads)[restore])


def export_and_report(args, model, tok, labels, sentiment, weights, data, dev, hist, work: Path, cpu: str):
    t0 = time.time()
    ekman, _ = ge.load_groupings(args.goemotions)
    raw, fp32, int8 = work / "model.fp32.raw.onnx", work / "model.fp32.onnx", work / "model.int8.onnx"
    export.export_fp32(model, raw)
    enc = lambda texts: [e.ids for e in tok.encode_batch(texts)]  # noqa: E731
    dev_ids = {"ge": enc(dev["ge"].texts), "smp": enc(dev["smp"][0]), "pol": enc(dev["pol"][0])}
    with torch.no_grad():
        b, restore = batches_of(dev_ids["smp"][:512])
        torch_l = np.concatenate([model(*(torch.from_numpy(x[k]) for k in export.INPUT_NAMES)).numpy() for x in b])[restore]
    raw_l = export.onnx_logits(raw, b, args.threads)[restore]
    max_diff = float(np.abs(raw_l - torch_l).max())
    print(f"ONNX fp32 vs PyTorch on 512 SMP dev texts: max |logit diff| {max_diff:.2e}", flush=True)
    cfg = model.encoder.config
    export.optimize(raw, fp32, cfg.num_attention_heads, cfg.hidden_size)
    n_q = export.quantize_int8(fp32, int8)
    print(f"int8: {n_q} MatMuls quantised per token / per channel", flush=True)
    single = export.onnx_logits(int8, [collate([x]) for x in dev_ids["smp"][:64]], args.threads)
    b64, r64 = batches_of(dev_ids["smp"][:64])
    batched = export.onnx_logits(int8, b64, args.threads)[r64]
    invariance = float(np.abs(ge.sigmoid(single) - ge.sigmoid(batched)).max())
    print(f"int8 batch invariance on 64 texts: max |prob diff| {invariance:.2e}", flush=True)

    ge_test = ge.load_split(args.goemotions, "test", len(labels))
    test_ids = enc(ge_test.texts)
    cc = {}
    if args.cc_dev:
        cc["dev"] = zh_data.load_cc(args.cc_dev)
    if args.cc_test:
        cc["test"] = zh_data.load_cc(args.cc_test)
    results = {}
    for kind, path in (("fp32", fp32), ("int8", int8)):
        p_dev = onnx_probs(path, dev_ids["ge"], args.threads)
        th = ge.tune_thresholds(dev["ge"].labels, p_dev)
        r = {"thresholds": th.tolist()}
        r["goemotions_dev"] = ge.full_report(dev["ge"].labels, p_dev, th, labels, ekman, sentiment)
        r["goemotions_test"] = ge.full_report(ge_test.labels, onnx_probs(path, test_ids, args.threads), th, labels,
                                              ekman, sentiment)
        smp_p = zh_data.smp_predict(onnx_probs(path, dev_ids["smp"], args.threads), labels)
        r["smp2020_dev_macro_f1"] = zh_data.macro_f1(dev["smp"][1], smp_p, len(zh_data.SMP_EMOTIONS))
        r["smp2020_dev_accuracy"] = float((smp_p == dev["smp"][1]).mean())
        val = ge.turn_valence(onnx_probs(path, dev_ids["pol"], args.threads), weights)
        r["reviews_dev_sign_accuracy"] = float(((val > 0) == (dev["pol"][1] == 2)).mean())
        band = None
        for part in ("dev", "test"):
            if part in cc:
                rep = zh_data.cc_report(onnx_probs(path, enc(cc[part].texts), args.threads), weights, cc[part],
                                        labels, band=band, ekman=ekman)
                band = rep["band"]  # tuned on dev, then applied to test
                r[f"cc_{part}"] = rep
        results[kind] = r
        t = r["goemotions_test"]
        print(f"{kind}: GoEmotions test macro-F1 {t['macro_f1']:.4f} sign {t['valence_sign_accuracy']:.4f}; "
              f"SMP dev macro-F1 {r['smp2020_dev_macro_f1']:.4f}; reviews dev sign {r['reviews_dev_sign_accuracy']:.4f}; "
              + "; ".join(f"cc {p} acc3 {r[f'cc_{p}']['accuracy3']:.4f} sign {r[f'cc_{p}']['sign_accuracy']:.4f}"
                          for p in ("dev", "test") if f"cc_{p}" in r), flush=True)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(int8.read_bytes())
    tj = json.loads((args.base_model / "tokenizer.json").read_text())
    tj["truncation"] = {"direction": "Right", "max_length": args.max_length, "strategy": "LongestFirst", "stride": 0}
    tj["padding"] = None
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))
    hf = cfg.to_dict()
    hf.update(architectures=["BertMeanPoolForSequenceClassification"],
              id2label={str(i): n for i, n in enumerate(labels)}, label2id={n: i for i, n in enumerate(labels)},
              problem_type="multi_label_classification")
    for key in ("_name_or_path", "transformers_version", "gradient_checkpointing", "use_cache", "dtype", "torch_dtype"):
        hf.pop(key, None)
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    emotion = {
        "name": args.name, "version": args.version, "max_length": args.max_length,
        "thresholds": {n: round(float(t), 2) for n, t in zip(labels, results["int8"]["thresholds"])},
        "valence_weights": {n: float(w) for n, w in zip(labels, weights)},
    }
    if "cc_dev" in results["int8"]:  # the 3-class reading's neutral band, tuned on the dev part
        emotion["neutral_band"] = round(results["int8"]["cc_dev"]["band"], 2)
    (out / "emotion.json").write_text(json.dumps(emotion, indent=2) + "\n")
    conversion = json.loads((args.base_model / "conversion.json").read_text())
    run = {
        "command": command_line(), "training_command": hist.get("command"), "history": hist["history"],
        "best": hist["best"], "train_minutes": hist.get("train_minutes"),
        "export_minutes": (time.time() - t0) / 60, "hardware": f"{cpu}, {args.threads} threads, torch {torch.__version__}",
        "layers": cfg.num_hidden_layers, "vocabulary": conversion["pieces_kept"],
        "onnx_vs_torch_max_abs_logit_diff": max_diff, "int8_batch_invariance_max_abs_prob_diff": invariance,
        "model_onnx_bytes": (out / "model.onnx").stat().st_size, "conversion": conversion,
        "train_sizes": {s: len(data["train"][s][0]) for s in data["train"]}, "results": results,
    }
    (out / "metrics.json").write_text(json.dumps(run, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out} ({run['model_onnx_bytes'] / 1e6:.1f} MB model.onnx)", flush=True)
