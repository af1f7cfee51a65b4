"""ONNX Runtime alone, one thread, models alternating: texts/s one text per call and 16 per call.

    python bench/python/model_cost.py --zh-texts eval/zh-contact-center/test.tsv \
        old=path/to/old/model.onnx new=models/emotion-e5-zh-en/model.onnx

The English model runs on GoEmotions test texts; every NAME=PATH model on the `text` column of
--zh-texts with the Chinese model's tokenizer. Three rounds; compare rows of one run only.
"""
import argparse
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def texts_of(tsv: str, n: int) -> list[str]:
    lines = open(tsv, encoding="utf-8").read().splitlines()
    col = lines[0].split("\t").index("text") if "text" in lines[0].split("\t") else 0
    return [ln.split("\t")[col] for ln in lines[1:] if ln][:n]


def ids_of(tokenizer: str, texts: list[str]) -> list[list[int]]:
    t = Tokenizer.from_file(tokenizer)
    t.no_padding()
    t.enable_truncation(128)
    return [e.ids for e in t.encode_batch(texts)]


def feed(batch):
    w = max(map(len, batch))
    ids = np.zeros((len(batch), w), np.int64)
    mask = np.zeros_like(ids)
    for r, i in enumerate(batch):
        ids[r, : len(i)] = i
        mask[r, : len(i)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="NAME=model.onnx, run on the Chinese texts")
    p.add_argument("--english", default="models/goemotions-minilm-l6")
    p.add_argument("--english-texts", default="tests/data/goemotions/test.tsv")
    p.add_argument("--zh-tokenizer", default="models/emotion-e5-zh-en/tokenizer.json")
    p.add_argument("--zh-texts", default="eval/zh-contact-center/test.tsv")
    p.add_argument("--n", type=int, default=1500)
    args = p.parse_args()

    def session(path):
        o = ort.SessionOptions()
        o.intra_op_num_threads = 1
        return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

    en = ids_of(f"{args.english}/tokenizer.json", texts_of(args.english_texts, args.n))
    zh = ids_of(args.zh_tokenizer, texts_of(args.zh_texts, args.n))
    runs = [("english", session(f"{args.english}/model.onnx"), en)]
    runs += [(m.split("=", 1)[0], session(m.split("=", 1)[1]), zh) for m in args.models]
    for rnd in range(3):
        for bs in (1, 16):
            for name, s, ids in runs:
                ids = sorted(ids, key=len) if bs > 1 else ids
                t0 = time.perf_counter()
                for b in range(0, len(ids), bs):
                    s.run(None, feed(ids[b : b + bs]))
                print(f"round {rnd} batch {bs:2d} {name:10s} {len(ids) / (time.perf_counter() - t0):6.0f} texts/s", flush=True)


if __name__ == "__main__":
    main()
