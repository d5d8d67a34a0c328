"""torch.compile sees genkernels' Triton kernels: on the triton backend with CUDA tensors, AOTAutograd's
trace of each op (the tracing torch.compile runs before Inductor) holds the op's Triton kernels as
triton_kernel_wrapper_functional nodes in the forward and backward graphs, not one opaque genkernels::
call (ops/_common.Op.decompose). Runs on fake CUDA tensors: no GPU and no kernel launch; the Triton
target Triton would read from the driver is sm_90. Run with TRITON_INTERPRET unset (interpreted kernels
cannot be traced). Prints what each graph holds; exit 1 on a missing kernel."""
import os
import sys

import torch
import triton
from torch._functorch.aot_autograd import aot_function
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
from torch._subclasses.fake_tensor import FakeTensorMode
from triton.backends.compiler import GPUTarget

import genkernels
from genkernels import backend


class _Sm90:
    """What the tracing asks of the absent GPU: Triton's driver, the target its kernels compile for;
    torch.cuda, the SM count (vq_nearest sizes its grid by it), an H100's."""

    multi_processor_count = 132

    @staticmethod
    def get_current_target():
        return GPUTarget("cuda", 90, 32)


def contents(gm):
    """Names of the Triton kernels and genkernels ops called in a traced graph."""
    names = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if "triton_kernel_wrapper" in str(node.target):
            names.append(kernel_side_table.get_kernel(node.kwargs["kernel_idx"]).fn.__name__)
        elif str(node.target).startswith("genkernels."):
            names.append(str(node.target))
    return names


def _attention_backward(dout, q, k, v, out, lse):
    return torch.ops.genkernels.attention_backward(dout, q, k, v, out, lse, None, 0.125, 0, "triton", True)


def _norm_backward(dy, x, mean, rstd, w, b):
    return torch.ops.genkernels.norm_backward(dy, x, mean, rstd, w, b, None, None, 4, 1e-5, True, True, "triton")


# op -> (call, input shapes, the Triton kernels its trace must hold). The backward ops are traced on
# their own: autograd on fake CUDA tensors needs a CUDA build of torch (it aborts on this CPU one), and
# the joint trace reaches them through the same decomposition.
CASES = {
    "attention": (lambda q, k, v: genkernels.attention(q, k, v, is_causal=True), [(1, 2, 40, 64)] * 3,
                  {"_fwd_kernel"}),
    "attention_backward": (_attention_backward, [(1, 2, 40, 64)] * 5 + [(1, 2, 40)],
                           {"_bwd_dkdv_kernel", "_bwd_dq_kernel"}),
    "group_norm_silu": (lambda x, w, b: genkernels.group_norm_silu(x, 4, w, b), [(2, 8, 5, 5), (8,), (8,)],
                        {"_stats_kernel", "_fwd_fin_kernel", "_fwd_apply_kernel"}),
    "adain": (genkernels.adain, [(2, 8, 5, 5), (2, 8), (2, 8)],
              {"_stats_kernel", "_fwd_fin_kernel", "_fwd_apply_kernel"}),
    "norm_backward": (_norm_backward, [(2, 8, 5, 5)] * 2 + [(2, 4)] * 2 + [(8,)] * 2,
                      {"_bwd_sums_kernel", "_bwd_fin_kernel", "_bwd_apply_kernel"}),
    "vq_nearest": (genkernels.vq_nearest, [(37, 16), (50, 16)], {"_prep_kernel", "_search_kernel", "_finalize_kernel"}),
    "ddim_step": (lambda x, m: genkernels.ddim_step(x, m, 0.5, 0.6), [(2, 4, 9, 9), (2, 4, 9, 9)], {"_step_kernel"}),
}


def main() -> int:
    if os.environ.get("TRITON_INTERPRET"):
        print("TRITON_INTERPRET is set: interpreted kernels cannot be traced")
        return 2
    triton.runtime.driver.set_active(_Sm90())
    torch.cuda.get_device_properties = lambda device=None: _Sm90
    backend.backend_error = lambda name, device: None  # every backend "available" on the fake GPU
    failures = 0
    with genkernels.use_backend("triton"):
        for name, (f, shapes, want) in CASES.items():
            got = []

            def keep(gm, example_inputs):
                got.extend(contents(gm))
                return gm

            with FakeTensorMode():
                aot_function(f, fw_compiler=keep)(*(torch.randn(s, device="cuda") for s in shapes))
            ok = want <= set(got) and not any(g.startswith("genkernels.") for g in got)
            failures += not ok
            print(f"{'ok ' if ok else 'BAD'} {name}: {', '.join(got) or 'no graph'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
