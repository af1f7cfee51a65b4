"""What the per-row int8 GEMM's epilogue costs: MatMulIntegerToFloat alone, then with the per-row
activation scale Mul and the bias Add the shipped graph puts after it (one [M,384]x[384,1536] GEMM,
one thread, medians of 5). ONNX Runtime takes only a scalar a_scale, so the per-row scale cannot
ride in the kernel's own epilogue. Needs onnx:
    python bench/python/int8_epilogue.py"""
import time, numpy as np, onnxruntime as ort
from onnx import helper as h, numpy_helper as nh, TensorProto as T
K,N=384,1536
rng=np.random.default_rng(0)
W=rng.normal(0,0.05,(K,N)).astype(np.float32); sw=np.abs(W).max(0)/127; Wq=np.round(W/sw).astype(np.int8)
ins=[nh.from_array(Wq,"w"),nh.from_array(sw.astype(np.float32),"sw"),nh.from_array(np.float32(1.0),"one"),nh.from_array(np.uint8(128),"zp"),nh.from_array(rng.normal(0,.1,N).astype(np.float32),"b")]
def sess(nodes,extra_in=()):
    g=h.make_graph(nodes,"g",[h.make_tensor_value_info("xq",T.UINT8,["m",K]),h.make_tensor_value_info("s",T.FLOAT,["m",1])],[h.make_tensor_value_info("y",T.FLOAT,None)],ins)
    m=h.make_model(g,opset_imports=[h.make_opsetid("",21),h.make_opsetid("com.microsoft",1)],ir_version=10)
    so=ort.SessionOptions(); so.intra_op_num_threads=1
    return ort.InferenceSession(m.SerializeToString(),so,providers=["CPUExecutionProvider"])
S={"mmitf":sess([h.make_node("MatMulIntegerToFloat",["xq","w","one","sw","zp"],["yy"],domain="com.microsoft"),h.make_node("Identity",["yy"],["y"])]),
   "mmitf+mul":sess([h.make_node("MatMulIntegerToFloat",["xq","w","one","sw","zp"],["yc"],domain="com.microsoft"),h.make_node("Mul",["yc","s"],["y"])]),
   "mmitf+mul+add":sess([h.make_node("MatMulIntegerToFloat",["xq","w","one","sw","zp"],["yc"],domain="com.microsoft"),h.make_node("Mul",["yc","s"],["y1"]),h.make_node("Add",["y1","b"],["y"])]),
   "mmi":sess([h.make_node("MatMulInteger",["xq","w","zp"],["yi"]),h.make_node("Cast",["yi"],["y"],to=T.FLOAT)])}
for M in (16,256):
    xq=rng.integers(0,255,(M,K)).astype(np.uint8); s=rng.random((M,1)).astype(np.float32)
    res={}
    for r in range(5):
        for k,ss in S.items():
            for _ in range(10): ss.run(None,{"xq":xq,"s":s})
            n=40000//M; t=time.perf_counter()
            for _ in range(n): ss.run(None,{"xq":xq,"s":s})
            res.setdefault(k,[]).append((time.perf_counter()-t)/n*1e6)
    print(M,{k:f"{np.median(v):.1f}us" for k,v in res.items()})
