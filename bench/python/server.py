"""The Python baseline: what a data scientist would write to serve the same model over the same
proto. grpcio server (thread pool), onnxruntime 1.31.1 and tokenizers, one inference call per turn,
a rolling score per conversation and speaker. Not part of CI; see bench/README.md.

    python bench/python/server.py --model models/goemotions-minilm-l6 --listen 127.0.0.1:50061

With `--zh-model DIR`, a turn whose text has a CJK character is scored by that model instead (the
service's Chinese route, done the simple way).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from grpc_tools import protoc
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]


def generate_stubs() -> Path:
    out = Path(tempfile.mkdtemp(prefix="emotion-pb-"))
    include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(
        ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}",
         "emotion/v1/emotion.proto"]
    )
    if rc != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, str(out))
    return out


class Model:
    def __init__(self, model_dir: Path, threads: int):
        config = json.loads((model_dir / "config.json").read_text())
        extra = json.loads((model_dir / "emotion.json").read_text())
        self.labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        self.weights = np.array([extra["valence_weights"][l] for l in self.labels], dtype=np.float32)
        self.thresholds = np.array([extra["thresholds"][l] for l in self.labels], dtype=np.float32)
        self.version = f"{extra['name']}@{extra['version']}"
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(extra.get("max_length", 128))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])

    def score(self, text: str) -> tuple[np.ndarray, float]:
        ids = np.array([self.tokenizer.encode(text).ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        logits = self.session.run(["logits"], feed)[0][0]
        probs = 1.0 / (1.0 + np.exp(-logits))
        return probs, float((probs * self.weights).sum() / max(probs.sum(), 1e-6))


def has_cjk(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" for ch in text)


def make_servicer(pb, pb_grpc, default: Model, half_life: float, zh: Model | None = None):
    decay = 0.5 ** (1.0 / half_life)
    rolling: dict[tuple[str, int], float] = {}
    lock = threading.Lock()

    class Servicer(pb_grpc.EmotionAnalysisServicer):
        def StreamTurns(self, request_iterator, context):
            for turn in request_iterator:
                if not turn.conversation_id or not turn.text.strip():
                    yield pb.TurnResult(conversation_id=turn.conversation_id, turn_id=turn.turn_id,
                                        error=pb.TurnError(code=3, message="conversation_id and text are required"))
                    continue
                model = zh if zh is not None and has_cjk(turn.text) else default
                probs, valence = model.score(turn.text)
                key = (turn.conversation_id, turn.speaker)
                with lock:
                    r = valence if key not in rolling else decay * rolling[key] + (1 - decay) * valence
                    rolling[key] = r
                order = np.argsort(-probs)
                yield pb.TurnResult(
                    conversation_id=turn.conversation_id,
                    turn_id=turn.turn_id,
                    speaker=turn.speaker,
                    emotions=[pb.EmotionScore(label=model.labels[i], probability=float(probs[i])) for i in order],
                    labels=[model.labels[i] for i in order if probs[i] >= model.thresholds[i]] or [model.labels[order[0]]],
                    valence=valence,
                    text_valence=valence,
                    rolling_valence=r,
                    model_version=model.version,
                )

    return Servicer()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=ROOT / "models/goemotions-minilm-l6")
    p.add_argument("--zh-model", type=Path, default=None, help="model for texts with CJK characters")
    p.add_argument("--listen", default="127.0.0.1:50061")
    p.add_argument("--workers", type=int, default=16, help="gRPC thread pool size")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = p.parse_args()
    generate_stubs()
    from emotion.v1 import emotion_pb2 as pb
    from emotion.v1 import emotion_pb2_grpc as pb_grpc

    model = Model(args.model, args.threads)
    zh = Model(args.zh_model, args.threads) if args.zh_model else None
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers))
    pb_grpc.add_EmotionAnalysisServicer_to_server(make_servicer(pb, pb_grpc, model, 2.0, zh), server)
    server.add_insecure_port(args.listen)
    server.start()
    print(f"python baseline serving {model.version} on {args.listen}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
