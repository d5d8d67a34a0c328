"""The ops called from several Python threads at once (each op, forward and backward, on the cpu
backend and the reference) give bit-for-bit the single-threaded results. scripts/sanitize.sh also runs
this file under AddressSanitizer + UBSan."""
import threading

import pytest
import torch

import genkernels
from conftest import compiled_backends

THREADS, REPEATS = 4, 3


def _inputs(seed, *shapes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


def _grads(out, inputs, seed):
    """out and the gradients of inputs for a fixed output gradient."""
    outs = out if isinstance(out, tuple) else (out,)
    ins = [t for t in inputs if t.requires_grad]
    if not ins:
        return [o.detach() for o in outs]
    dout = _inputs(seed, outs[0].shape)[0]
    return [outs[0].detach()] + list(torch.autograd.grad(outs[0], ins, dout))


def _norm(seed):
    x, w, b, s, h = _inputs(seed, (2, 32, 9, 11), (32,), (32,), (2, 32), (2, 32))
    x = x.contiguous(memory_format=torch.channels_last) if seed % 2 else x
    leaves = [t.requires_grad_() for t in (x, w, b, s, h)]
    return _grads(genkernels.group_norm_silu(x, 8, w, b, scale=s, shift=h), leaves, seed)


def _adain(seed):
    leaves = [t.requires_grad_() for t in _inputs(seed, (2, 16, 7, 13), (2, 16), (2, 16))]
    return _grads(genkernels.adain(*leaves), leaves, seed)


def _attention(seed):
    q, k, v = (t.requires_grad_() for t in _inputs(seed, (2, 3, 33, 40), (2, 3, 21, 40), (2, 3, 21, 40)))
    mask = torch.zeros(2, 21, dtype=torch.bool)
    mask[1, 15:] = True
    return _grads(genkernels.attention(q, k, v, key_padding_mask=mask, is_causal=bool(seed % 2)), [q, k, v], seed)


def _vq(seed):
    z, cb = _inputs(seed, (300, 16), (97, 16))
    return list(genkernels.vq_nearest(z, cb, cosine=bool(seed % 2)))


def _ddim(seed):
    x, m, n = _inputs(seed, (2, 4, 12, 12), (4, 4, 12, 12), (2, 4, 12, 12))
    return list(genkernels.ddim_step(x, m, torch.tensor([0.3, 0.5]), torch.tensor([0.6, 0.9]), 0.5, n,
                                     guidance_scale=5.0, clip_sample_range=1.0))


def _ddpm(seed):
    x, m, n = _inputs(seed, (2, 4, 12, 12), (2, 4, 12, 12), (2, 4, 12, 12))
    return list(genkernels.ddpm_step(x, m, 0.4, 0.7, n, prediction_type="v_prediction"))


OPS = {"group_norm_silu": _norm, "adain": _adain, "attention": _attention, "vq_nearest": _vq,
       "ddim_step": _ddim, "ddpm_step": _ddpm}


@pytest.mark.parametrize("backend", ["reference"] + [b for b in compiled_backends("cpu") if b == "cpu"])
@pytest.mark.parametrize("op", list(OPS))
def test_ops_from_threads_match_single_thread(backend, op):
    fn = OPS[op]
    with genkernels.use_backend(backend):
        want = {seed: fn(seed) for seed in range(THREADS)}
    got, errors = {}, []
    barrier = threading.Barrier(THREADS)

    def worker(seed):
        try:
            with genkernels.use_backend(backend):  # thread-local
                barrier.wait()
                got[seed] = [fn(seed) for _ in range(REPEATS)]
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for seed in range(THREADS):
        for run in got[seed]:
            for i, (a, b) in enumerate(zip(run, want[seed])):
                assert torch.equal(a, b), f"{op} on {backend}, thread {seed}, result {i} differs"
