"""Which int8 GEMM kernels ONNX Runtime has on this CPU: one [M,384]x[384,1536] GEMM, one thread (or
argv[1] threads): fp32 MatMul, MatMulInteger u8 x s8 (the shipped graph's kind) and s8 x s8, GOPS at
several M. Above ~800 GOPS on one core (AVX-512 VNNI's peak: 2 x 64 int8 MACs a cycle at ~3 GHz) the
u8 x s8 kernel is AMX. Needs onnx:
    python bench/python/int8_gemm_kinds.py [THREADS]"""
import time, sys, numpy as np, onnx, onnxruntime as ort
from onnx import helper as h, numpy_helper as nh, TensorProto as T
K, N = 384, 1536
rng = np.random.default_rng(0)
W = rng.normal(0, 0.05, size=(K, N)).astype(np.float32)
s_w = np.abs(W).max(0) / 127; Wq = np.round(W / s_w).astype(np.int8)

def sess(nodes, inits, xtype, ytype):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", xtype, ["m", K])],
                     [h.make_tensor_value_info("y", ytype, ["m", N])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 21), h.make_opsetid("com.microsoft", 1)], ir_version=10)
    so = ort.SessionOptions(); so.intra_op_num_threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

fp32 = sess([h.make_node("MatMul", ["x", "w"], ["y"])], [nh.from_array(W, "w")], T.FLOAT, T.FLOAT)
mmi = sess([h.make_node("MatMulInteger", ["x", "w", "zp"], ["y"])],
           [nh.from_array(Wq, "w"), nh.from_array(np.array(128, np.uint8), "zp")], T.UINT8, T.INT32)
mmi_s8 = sess([h.make_node("MatMulInteger", ["x", "w"], ["y"])],
           [nh.from_array(Wq, "w")], T.INT8, T.INT32)
for M in (16, 256, 4096):
    xf = rng.normal(0, 1, size=(M, K)).astype(np.float32)
    xu = rng.integers(0, 255, size=(M, K)).astype(np.uint8)
    xs = rng.integers(-127, 127, size=(M, K)).astype(np.int8)
    row = []
    for name, s, x in (("fp32", fp32, xf), ("u8s8", mmi, xu), ("s8s8", mmi_s8, xs)):
        for _ in range(10): s.run(None, {"x": x})
        n = max(20, 20000 // M); t = time.perf_counter()
        for _ in range(n): s.run(None, {"x": x})
        dt = (time.perf_counter() - t) / n
        row.append(f"{name} {dt*1e6:8.1f} us {2*M*K*N/dt/1e9:7.1f} GOPS")
    print(f"M={M:5d} | " + " | ".join(row), flush=True)
