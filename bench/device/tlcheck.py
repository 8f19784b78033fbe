"""tilelang on the device: imports, fla's dispatch of chunk_bwd_dqkwg, a GDN forward+backward at Qwen3.5's head shapes
with cu_seqlens (int32 and int64); warms the tilelang JIT cache for the bench."""
import logging, os, sys, time, traceback
import torch
import torch.nn.functional as F
logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
logging.getLogger("fla").setLevel(logging.INFO)
t = time.time()
try:
    import tilelang
    print("tilelang", tilelang.__version__, tilelang.__file__, f"import {time.time() - t:.1f}s", flush=True)
except Exception:
    traceback.print_exc(); print("TILELANG IMPORT FAILED"); sys.exit(2)
import fla
from fla.ops.common.backends.tilelang import CommonTileLangBackend as C
print("fla", fla.__version__, "tilelang backend available", C.is_available(), "enabled", C().is_enabled(), flush=True)
from fla.ops.gated_delta_rule import chunk_gated_delta_rule
dev, T, H, HV, D = "cuda", 2048, 16, 32, 128
bad_int32 = False
for cu_dtype in (torch.int32, torch.int64):
    torch.manual_seed(0)
    q = torch.randn(1, T, H, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, T, H, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, T, HV, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    a = torch.randn(1, T, HV, device=dev, requires_grad=True)
    b = torch.randn(1, T, HV, device=dev, dtype=torch.bfloat16, requires_grad=True)
    cu = torch.tensor([0, 500, 1200, T], device=dev, dtype=cu_dtype)
    t = time.time()
    try:
        o, _ = chunk_gated_delta_rule(q, k, v, g=-F.softplus(a), beta=b.sigmoid(), cu_seqlens=cu,
                                      use_qk_l2norm_in_kernel=True)
        o.float().pow(2).mean().backward()
        torch.cuda.synchronize()
        fin = all(bool(torch.isfinite(x.grad).all()) for x in (q, k, v, a, b))
        print(f"GDN fwd+bwd cu_seqlens {cu_dtype}: OK in {time.time() - t:.1f}s, grads finite {fin}, "
              f"|dq| {q.grad.float().norm():.4g} |da| {a.grad.float().norm():.4g}", flush=True)
    except Exception as e:
        print(f"GDN fwd+bwd cu_seqlens {cu_dtype}: FAILED after {time.time() - t:.1f}s: {type(e).__name__}: {e}"[:1500])
        traceback.print_exc(limit=-6)
        if cu_dtype is torch.int32:
            bad_int32 = True
if bad_int32:
    open(os.environ["ST"] + "/cu_long", "w").write("1")
