"""One GEMM [M,K]x[K,N] (K 384, N 1536, one thread): the shipped per-token int8 chain (Abs, ReduceMax,
Max, Mul, QuantizeLinear, MatMulIntegerToFloat, Mul) against com.microsoft MatMulNBits (8 and 4 bit,
accuracy_level 4: A quantised per block of K per row, so batch-invariant too). Needs onnx and
onnxruntime:  python bench/python/int8_gemm_variants.py"""
import time, numpy as np, onnx, onnxruntime as ort
from onnx import helper as h, numpy_helper as nh, TensorProto as T
K, N = 384, 1536
rng = np.random.default_rng(0)
W = rng.normal(0, 0.05, size=(K, N)).astype(np.float32)

def chain():
    s_w = np.abs(W).max(0) / 127; Wq = np.round(W / s_w).astype(np.int8)
    inits = [nh.from_array(Wq, "w"), nh.from_array(s_w.astype(np.float32), "sw"),
             nh.from_array(np.array(1.0/127, np.float32), "inv127"), nh.from_array(np.array(1e-8, np.float32), "eps"),
             nh.from_array(np.array([-1], np.int64), "ax"), nh.from_array(np.array(1.0, np.float32), "one"),
             nh.from_array(np.array(128, np.uint8), "zp")]
    nodes = [h.make_node("Abs", ["x"], ["a"]), h.make_node("ReduceMax", ["a", "ax"], ["m"], keepdims=1),
             h.make_node("Max", ["m", "eps"], ["m2"]), h.make_node("Mul", ["m2", "inv127"], ["s"]),
             h.make_node("Shape", ["s"], ["ss"]), h.make_node("Expand", ["zp", "ss"], ["zpe"]),
             h.make_node("QuantizeLinear", ["x", "s", "zpe"], ["xq"], axis=-1, block_size=K),
             h.make_node("MatMulIntegerToFloat", ["xq", "w", "one", "sw", "zp"], ["yc"], domain="com.microsoft"),
             h.make_node("Mul", ["yc", "s"], ["y"])]
    return nodes, inits

def nbits(bits, block):
    kb = K // block
    Wb = W.T.reshape(N, kb, block)
    qmax = 2 ** (bits - 1) - 1
    s = np.abs(Wb).max(-1) / qmax; s[s == 0] = 1
    q = np.clip(np.round(Wb / s[..., None]), -qmax - 1, qmax).astype(np.int32) + 2 ** (bits - 1)
    if bits == 8:
        blob = q.astype(np.uint8)
    else:
        blob = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    inits = [nh.from_array(blob, "b"), nh.from_array(s.astype(np.float32).reshape(N, kb), "s")]
    nodes = [h.make_node("MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft",
                         K=K, N=N, bits=bits, block_size=block, accuracy_level=4)]
    return nodes, inits

def session(nodes, inits):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["b", "t", K])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["b", "t", N])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 21), h.make_opsetid("com.microsoft", 1)], ir_version=10)
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

X = rng.normal(0, 1, size=(16, 16, K)).astype(np.float32)
ref = X @ W
variants = {"chain": chain(), "nbits8/32": nbits(8, 32), "nbits8/128": nbits(8, 128), "nbits4/32": nbits(4, 32)}
for name, (nodes, inits) in variants.items():
    s = session(nodes, inits)
    full = s.run(None, {"x": X})[0]
    one = s.run(None, {"x": X[3:4]})[0]
    err = np.abs(full - ref).max() / np.abs(ref).max()
    inv = np.abs(full[3:4] - one).max()
    row = []
    for M in (1, 16):
        x = X[:M]
        for _ in range(20): s.run(None, {"x": x})
        n = 2000 // M; t = time.perf_counter()
        for _ in range(n): s.run(None, {"x": x})
        row.append(f"{M}x16 tokens: {(time.perf_counter()-t)/n*1e6:7.1f} us")
    print(f"{name:11s} rel err {err:.4f} batch-invariance {inv:.2e} | " + " | ".join(row))
