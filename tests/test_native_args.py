"""The named native boundary: each kernel's argument names are declared once (csrc/common/*_args.h),
exported by every compiled module as kernel_args(), and matched by the NamedTuples the ops build their
calls from (genkernels/ops/_kernels.py). A mismatch, a wrong name or a wrong count is a clear error."""
import ast
import pathlib
from typing import NamedTuple, Optional

import pytest
import torch

import genkernels
from genkernels import _native
from genkernels.ops._kernels import KERNEL_ARGS, GroupNormFwd

MODULES = [m for m in ("_C", "_C_cuda", "_C_cuemu") if _native.load(m) is not None]


@pytest.mark.parametrize("module", MODULES)
def test_every_kernel_is_named_alike_on_both_sides(module):
    mod = _native.load(module)
    kernels = [a for a in KERNEL_ARGS if module == "_C" or not a.CPU_ONLY]
    assert set(mod.kernel_args()) == {a.KERNEL for a in kernels}
    for args in kernels:
        n_ptrs, n_ints, workspace = _native.layout(mod, args)
        ptrs, ints, floats = mod.kernel_args()[args.KERNEL]
        assert workspace == (module != "_C") == (ptrs[-1] == "workspace")  # the CUDA kernels' scratch
        assert (n_ptrs + workspace, n_ints - n_ptrs, len(args._fields)) == (len(ptrs), len(ints), n_ints + len(floats))


def _gn_fields(swap=None):
    """GroupNormFwd's fields, two of them swapped."""
    fields = list(GroupNormFwd.__annotations__.items())
    if swap:
        i, j = (GroupNormFwd._fields.index(n) for n in swap)
        fields[i], fields[j] = fields[j], fields[i]
    return fields


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("swap", [("weight", "bias"), ("N", "C"), ("channels_last", "eps")])
def test_swapped_fields_are_refused(module, swap):
    mod = _native.load(module)
    swapped = NamedTuple("GroupNormFwd", _gn_fields(swap))
    swapped.KERNEL, swapped.FAMILY = GroupNormFwd.KERNEL, GroupNormFwd.FAMILY
    with pytest.raises(RuntimeError, match="do not match the arguments of .*group_norm_fwd"):
        _native.layout(mod, swapped)
    same = NamedTuple("GroupNormFwd", _gn_fields())
    same.KERNEL, same.FAMILY = GroupNormFwd.KERNEL, GroupNormFwd.FAMILY
    assert _native.layout(mod, same) == _native.layout(mod, GroupNormFwd)


def _gn_args(**over):
    x = torch.randn(2, 4, 3, 3)
    kw = dict(x=x, y=torch.empty_like(x), weight=None, bias=None, scale=None, shift=None,
              mean=torch.empty(2, 2), rstd=torch.empty(2, 2), N=2, C=4, HW=9, G=2, silu=1, one_plus_scale=1,
              channels_last=0, eps=1e-5)
    kw.update(over)
    return kw


def test_a_named_call_runs_and_a_wrong_name_is_a_type_error():
    if "_C" not in MODULES:
        pytest.skip("genkernels._C not built")
    args = GroupNormFwd(**_gn_args())
    _native.call(args, torch.float32)
    mean = args.x.view(2, 2, -1).mean(-1)
    torch.testing.assert_close(args.mean, mean)
    with pytest.raises(TypeError, match="wieght"):
        GroupNormFwd(**{("wieght" if k == "weight" else k): v for k, v in _gn_args().items()})
    with pytest.raises(TypeError, match="eps"):
        GroupNormFwd(**{k: v for k, v in _gn_args().items() if k != "eps"})


def test_a_kernel_the_module_lacks_is_refused():
    if "_C" not in MODULES:
        pytest.skip("genkernels._C not built")
    Unknown = NamedTuple("Unknown", [("x", Optional[torch.Tensor])])
    Unknown.KERNEL = "no_such_kernel"
    with pytest.raises(RuntimeError, match="no kernel 'no_such_kernel'"):
        _native.layout(_native.load("_C"), Unknown)


@pytest.mark.parametrize("module", [m for m in MODULES if m != "_C_cuda"])  # (_C_cuda: device pointers)
def test_a_wrong_count_is_refused_by_the_native_side(module):
    mod = _native.load(module)
    args = GroupNormFwd(**_gn_args())
    n_ptrs, n_ints, workspace = _native.layout(mod, GroupNormFwd)
    tensors = args[:n_ptrs]
    ptrs = [0 if t is None else t.data_ptr() for t in tensors]
    sizes = [_native.nbytes(t) for t in tensors]
    ints, floats = list(args[n_ptrs:n_ints]), list(args[n_ints:])
    ws = []  # the emulated CUDA kernel's scratch, last
    if workspace:
        need = mod.group_norm_fwd_workspace(0, ptrs, sizes, ints, floats, 1)
        ws = [torch.empty(need, dtype=torch.uint8)]
    ptrs, sizes = ptrs + [t.data_ptr() for t in ws], sizes + [t.numel() for t in ws]
    for p, n, i, f in ((ptrs[1:], sizes[1:], ints, floats), (ptrs, sizes, ints + [0], floats),
                       (ptrs, sizes, ints, []), (ptrs, sizes[:-1], ints, floats)):
        with pytest.raises(ValueError, match="group_norm_fwd: wrong number of native arguments"):
            mod.group_norm_fwd(0, p, n, i, f, 1)
    mod.group_norm_fwd(0, ptrs, sizes, ints, floats, 1)  # the same call with the right counts runs


def test_every_kernel_family_has_its_triton_entry_point():
    """launch() finds the Triton twin of a kernel as genkernels.triton.<FAMILY>.<KERNEL>, taking the
    same arguments in the same order (their count, where the entry point spells them out)."""
    pytest.importorskip("triton")
    import importlib
    import inspect

    for args in (a for a in KERNEL_ARGS if not a.CPU_ONLY):
        fn = getattr(importlib.import_module(f"genkernels.triton.{args.FAMILY}"), args.KERNEL)
        params = inspect.signature(fn).parameters.values()
        if all(p.kind == p.POSITIONAL_OR_KEYWORD for p in params):
            assert len(params) == len(args._fields), args.KERNEL
        else:
            assert len([p for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]) < len(args._fields)


_ARGS_BY_NAME = {a.__name__: a for a in KERNEL_ARGS}


def kernel_args_calls(source: str, filename: str = "<source>"):
    """(where, class name, problem or None) for every call of a kernel-argument NamedTuple class in
    `source`. The ops build them positionally (a call of more than 15 keywords builds a dict first),
    so each argument must be a plain name equal to its field, in the fields' order: a swapped or
    renamed argument is then a visible mismatch, never a shifted value."""
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if name not in _ARGS_BY_NAME:
            continue
        fields = _ARGS_BY_NAME[name]._fields
        got = [a.id if isinstance(a, ast.Name) else ast.unparse(a) for a in node.args]
        if node.keywords:
            problem = "keywords: build it positionally from variables named as its fields"
        elif not all(isinstance(a, ast.Name) for a in node.args) or tuple(got) != fields:
            problem = f"arguments {got} are not the fields {list(fields)} in order"
        else:
            problem = None
        yield f"{filename}:{node.lineno}", name, problem


def test_kernel_args_are_built_from_variables_named_as_their_fields():
    pkg = pathlib.Path(genkernels.__file__).parent
    built, bad = set(), []
    for path in sorted(pkg.rglob("*.py")):
        for where, name, problem in kernel_args_calls(path.read_text(), str(path.relative_to(pkg))):
            built.add(name)
            if problem:
                bad.append(f"{where} {name}: {problem}")
    assert not bad, "\n".join(bad)
    assert built == set(_ARGS_BY_NAME)  # every kernel's arguments are built somewhere, and checked here


def test_a_swapped_or_keyword_construction_is_reported():
    fields = ", ".join(GroupNormFwd._fields)
    assert [p for *_, p in kernel_args_calls(f"GroupNormFwd({fields})")] == [None]
    swapped = fields.replace("weight, bias", "bias, weight")
    for src in (f"GroupNormFwd({swapped})", f"_kernels.GroupNormFwd({fields.replace('x, y', 'x, out')})",
                f"GroupNormFwd({fields.replace('eps', '1e-5')})", "GroupNormFwd(x=x)",
                f"GroupNormFwd({fields}, extra)"):
        [(_, name, problem)] = kernel_args_calls(src)
        assert name == "GroupNormFwd" and problem, src
