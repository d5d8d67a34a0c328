"""Calls every genkernels GPU kernel once (tests/op_calls.py: forward and backward, small odd shapes,
NCHW and channels_last) in fp32 and fp16 on each GPU backend (GK_BACKENDS: a comma list to restrict),
plain or under compute-sanitizer. GK_GRAPH=1: each call is captured in a CUDA graph and replayed (the
cuda backend's scratch `workspace` is a torch allocation, so a captured call takes it from the graph's
private memory pool, which lives as long as the graph).
Python-level errors are reported as WARN (as FAIL with GK_GRAPH=1); a CUDA error exits 1."""
import os
import sys
import torch
import genkernels

dev = torch.device("cuda")
cuda_errors, warns = [], []


GRAPH = os.environ.get("GK_GRAPH") == "1"


def captured(fn):
    """fn captured in a CUDA graph (after a warm-up on a side stream, as torch.cuda.graph needs), replayed."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()


def run(label, fn):
    try:
        captured(fn) if GRAPH else fn()
        torch.cuda.synchronize()
        print("OK  ", label, flush=True)
    except Exception as e:
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        is_cuda = any(k in str(e) for k in ("CUDA error", "[CUDA]", "illegal memory", "misaligned address",
                                            "unspecified launch failure", "cudaError"))
        is_cuda = is_cuda or GRAPH
        (cuda_errors if is_cuda else warns).append(f"{label}: {msg}")
        print("FAIL" if is_cuda else "WARN", label, msg, flush=True)


sys.path.insert(0, os.path.join(os.environ["REPO"], "tests"))
from op_calls import op_calls  # noqa: E402

if not torch.cuda.is_available():
    print("FAIL: no GPU (torch.cuda.is_available() is False): nothing to call"); sys.exit(1)
wanted = os.environ.get("GK_BACKENDS", "cuda,triton").split(",")
backends = [b for b in genkernels.available_backends("cuda") if b in wanted]
print("backends under test:", backends)
if not backends:
    print("FAIL: no GPU backend available"); sys.exit(1)
for be in backends:
    with genkernels.use_backend(be):
        for dt in (torch.float32, torch.float16):
            for label, fn in op_calls(dev, dt).items():
                run(f"{label} [{be} {str(dt)[6:]}]", fn)
print(f"{len(cuda_errors)} CUDA errors, {len(warns)} warnings")
for m in cuda_errors + warns:
    print("  ", m)
sys.exit(1 if cuda_errors else 0)
