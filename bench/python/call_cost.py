"""What one ONNX Runtime call costs by rows x width (equal texts, one intra-op thread): the fixed
cost per call against the cost per token position, which `plan_calls` (src/inference/batcher.rs)
weighs when it splits a batch.

    .venv-bench/bin/python bench/python/call_cost.py models/goemotions-minilm-l6/model.onnx
"""
import onnxruntime as ort, numpy as np, time, sys
m = sys.argv[1]
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(m, o, providers=["CPUExecutionProvider"])
names = [i.name for i in s.get_inputs()]
def run(r, w):
    ids = np.full((r, w), 1000, dtype=np.int64); mask = np.ones((r, w), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names: feed["token_type_ids"] = np.zeros((r, w), dtype=np.int64)
    s.run(None, feed)
for r, w in [(1,8)]*20: run(r,w)
print("rows width ms ms/position")
for r in [1, 2, 4, 8, 16, 32]:
    for w in [8, 16, 24, 32, 48, 64, 96]:
        n = max(3, int(200 / (r * w) ))
        t = time.perf_counter()
        for _ in range(n): run(r, w)
        ms = (time.perf_counter() - t) / n * 1000
        print(r, w, f"{ms:.2f}", f"{ms/(r*w)*1000:.1f}us")
