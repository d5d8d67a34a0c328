"""What `genkernels info` prints and every benchmark result records: versions, native modules
(CPU ISA, CUDA runtime and the driver's CUDA version), backends and devices."""
from __future__ import annotations

import os
import platform
import sys

import torch

import genkernels
from genkernels import _native
from genkernels.backend import available_backends


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def system_info(device=None) -> dict:
    """Versions, native modules, backends and device names."""
    info: dict = {"genkernels": genkernels.__version__, "torch": torch.__version__,
                  "python": sys.version.split()[0], "platform": platform.platform()}
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception as e:
        info["triton"] = f"not importable ({type(e).__name__})"
    info["torch_cuda"] = torch.version.cuda
    c = _native.load("_C")
    info["cpu_isa"] = getattr(c, "isa", None) if c is not None else f"unavailable: {_native.load_error('_C')}"
    cu = _native.load("_C_cuda")
    versions = _native.cuda_versions()
    info["cuda_runtime"] = _native.cuda_version_text(versions["runtime"])  # what _C_cuda was built with
    info["cuda_driver"] = _native.cuda_version_text(versions["driver"])    # what the installed driver supports
    if cu is not None:
        info["cuda_archs"] = [a for a in str(getattr(cu, "archs", "")).replace(";", ",").split(",") if a]
    else:
        info["cuda_archs"] = f"unavailable: {_native.load_error('_C_cuda')}"
    info["cpu"] = _cpu_model()
    info["cpu_count"] = os.cpu_count()
    info["torch_threads"] = torch.get_num_threads()
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        d = torch.device(device) if device is not None and torch.device(device).type == "cuda" else \
            torch.device("cuda", torch.cuda.current_device())
        idx = d.index if d.index is not None else torch.cuda.current_device()
        p = torch.cuda.get_device_properties(idx)
        info["gpu"] = torch.cuda.get_device_name(idx)
        info["gpu_capability"] = f"sm_{p.major}{p.minor}"
        info["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
    info["backends"] = {"cpu": available_backends("cpu")}
    info["backends"]["cuda"] = available_backends("cuda") if torch.cuda.is_available() else []
    return info
