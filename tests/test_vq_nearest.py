"""vq_nearest and VectorQuantizer: every available backend against exact float64 distances, the
tie rules, registration/compilation, argument errors, memory, and the quantizer's losses, EMA,
dead-code restarts, initialisation, gradients and diffusers compatibility.

Correctness rule (the op's contract): the chosen code's exact distance equals the true minimum within
the rounding of the expanded form ``||e||^2 - 2 z.e`` (tolerance ``rtol * (||z||^2 + max ||e||^2)``,
float32-level for float32/float16/bfloat16 since 16-bit inputs are converted exactly and accumulated in
float32; float64-level for float64); a different index than the exact argmin is allowed only there.
Exact ties go to the lowest index.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from genkernels.ops.vq_nearest import vq_nearest, vq_nearest_reference
from genkernels.nn.quantizer import VectorQuantizer, kmeans

import genkernels
from conftest import DEVICE, compiled_backends

BACKENDS = ["reference"] + compiled_backends()
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# relative tolerance of score comparisons (times ||z||^2 + max ||e||^2)
SCORE_RTOL = {torch.float32: 2e-6, torch.float16: 2e-6, torch.bfloat16: 2e-6, torch.float64: 1e-13}
INTERP = DEVICE.type == "cpu"  # Triton runs through its (slow) interpreter here

FULL = [(M, K, D) for M in (0, 1, 100) for K in (1, 5, 300) for D in (1, 3, 4, 17, 64)]
SMALL = [(0, 5, 3), (1, 1, 1), (1, 300, 17), (100, 5, 4), (100, 300, 64), (37, 300, 3), (100, 1, 17)]


def cases(backend):
    return SMALL if backend == "triton" and INTERP else FULL


def make(M, K, D, dtype, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(M, D, generator=g, dtype=torch.float64) + offset).to(dtype)
    e = (torch.randn(K, D, generator=g, dtype=torch.float64) + offset).to(dtype)
    return z.to(DEVICE), e.to(DEVICE)


def run(backend, z, e, cosine=False):
    with genkernels.use_backend(backend):
        return vq_nearest(z, e, cosine=cosine)


def exact(z, e, cosine=False):
    """float64 distances [M, K] of the (rounded) inputs."""
    z64, e64 = z.double().cpu(), e.double().cpu()
    if cosine:
        z64, e64 = F.normalize(z64, dim=1), F.normalize(e64, dim=1)
    return (z64[:, None, :] - e64[None, :, :]).square().sum(-1), z64, e64


def check_result(z, e, idx, dist, cosine=False, what=""):
    M = z.shape[0]
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    assert idx.shape == (M,) and idx.dtype == torch.int64, what
    assert dist.shape == (M,) and dist.dtype == acc, what
    if M == 0:
        return
    idx, dist = idx.cpu(), dist.cpu()
    d, z64, e64 = exact(z, e, cosine)
    assert ((idx >= 0) & (idx < e.shape[0])).all(), what
    chosen = d[torch.arange(M), idx]
    dmin = d.min(1).values
    scale = z64.square().sum(1) + e64.square().sum(1).max()
    rtol = SCORE_RTOL[z.dtype]
    gap = chosen - dmin
    # near-tie rule: another index only where its distance is the minimum within rounding
    assert (gap <= rtol * scale + 1e-30).all(), f"{what}: chosen code not nearest, max gap {gap.max()}"
    # min_sq_dist is the chosen code's distance, recomputed directly
    dtol = 1e-12 if z.dtype == torch.float64 else 2e-5
    torch.testing.assert_close(dist.double(), chosen, rtol=dtol, atol=dtol * (1 + 1e-3 * scale.max().item()),
                               msg=lambda m: f"{what}: min_sq_dist: {m}")
    assert (dist >= 0).all()


# ------------------------------------------------------------------ parity
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_exact_distances(backend, dtype):
    for i, (M, K, D) in enumerate(cases(backend)):
        z, e = make(M, K, D, dtype, seed=i, offset=0.5 if i % 2 else 0.0)
        idx, dist = run(backend, z, e)
        check_result(z, e, idx, dist, what=f"{backend} {dtype} M={M} K={K} D={D}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
def test_cosine_mode(backend, dtype):
    for i, (M, K, D) in enumerate(cases(backend)[::2]):
        z, e = make(M, K, D, dtype, seed=50 + i, offset=0.3)
        idx, dist = run(backend, z, e, cosine=True)
        check_result(z, e, idx, dist, cosine=True, what=f"cosine {backend} M={M} K={K} D={D}")
        if M:  # index maximises cosine similarity; dist = 2 - 2 cos
            cos = F.normalize(z.double(), dim=1) @ F.normalize(e.double(), dim=1).t()
            best = cos.max(1).values
            got = cos[torch.arange(M, device=cos.device), idx]
            assert (best - got <= 1e-5).all()
            if D > 1:
                torch.testing.assert_close(dist.double(), (2 - 2 * got).clamp(min=0), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_cdist_argmin_on_separated_data(backend):
    M, K, D = (64, 96, 17) if backend == "triton" and INTERP else (2000, 1024, 64)
    g = torch.Generator().manual_seed(3)
    e = torch.randn(K, D, generator=g) * 10
    true = torch.randint(0, K, (M,), generator=g)
    z = e[true] + 0.01 * torch.randn(M, D, generator=g)
    z, e = z.to(DEVICE), e.to(DEVICE)
    idx, dist = run(backend, z, e)
    want = torch.cdist(z, e).argmin(1)
    assert torch.equal(idx, want) and torch.equal(idx.cpu(), true)
    torch.testing.assert_close(dist, (z - e[true.to(DEVICE)]).square().sum(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_ties_take_lowest_index(backend):
    # Small integers (and quarters): every score is exact in floating point whatever the summation order
    # or tile a backend uses, so duplicated codes tie exactly on every machine.
    g = torch.Generator().manual_seed(1)
    K, D = 300, 5
    e = torch.unique(torch.randint(-8, 9, (400, D), generator=g).float(), dim=0)  # distinct codes
    e = e[torch.randperm(e.shape[0], generator=g)[:K]]
    # duplicates far apart: other panels, tiles and K-splits of every backend
    for a, b in ((7, 250), (0, 299), (64, 65), (100, 200)):
        e[b] = e[a]
    M = 100
    src = torch.tensor([7, 0, 64, 100] * 25)
    # nearest at distance 1/16, every other code at least (3/4)^2 away
    z = e[src] + 0.25 * F.one_hot(torch.randint(0, D, (M,), generator=g), D).float()
    idx, _ = run(backend, z.to(DEVICE), e.to(DEVICE))
    assert torch.equal(idx.cpu(), src)
    # symmetric exact ties: z = 0 is at distance 1 from codes 1, 2, 3 (computed scores exactly equal)
    c = torch.tensor([[2.0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0]])
    idx, dist = run(backend, torch.zeros(3, 3, device=DEVICE), c.to(DEVICE))
    assert idx.tolist() == [1, 1, 1] and dist.tolist() == [1.0, 1.0, 1.0]
    z1 = torch.tensor([[0.0], [1.5]])
    idx, _ = run(backend, z1.to(DEVICE), torch.tensor([[3.0], [1.0], [2.0], [1.0], [0.0]], device=DEVICE))
    assert idx.tolist() == [4, 1]  # 1.5 is 0.5 from codes 1, 2, 3: the lowest wins


def test_near_tie_rule_is_the_only_allowed_difference():
    """Two codes at almost the same distance: any backend may pick either, but only those two."""
    g = torch.Generator().manual_seed(5)
    D, M = 64, 200
    base = torch.randn(D, generator=g)
    e = torch.randn(50, D, generator=g) * 3
    z = base.expand(M, D) + 1e-3 * torch.randn(M, D, generator=g)
    e[10] = base + 0.5
    e[20] = base - 0.5 + 1e-7 * torch.randn(D, generator=g)  # same distance up to rounding
    for backend in BACKENDS:
        idx, dist = run(backend, z.to(DEVICE), e.to(DEVICE))
        assert set(idx.cpu().tolist()) <= {10, 20}
        check_result(z, e, idx, dist, what=backend)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
def test_large_k_large_d_and_large_offsets(backend):
    small = backend == "triton" and INTERP
    shapes = [(3, 4100, 4), (9, 70, 1024)] if small else [(100, 65536, 4), (50, 300, 1024), (513, 2049, 33)]
    for i, (M, K, D) in enumerate(shapes):
        z, e = make(M, K, D, torch.float32, seed=70 + i)
        idx, dist = run(backend, z, e)
        check_result(z, e, idx, dist, what=f"{backend} M={M} K={K} D={D}")
    # a large common offset: the expanded form loses digits, the reported distance must not
    z, e = make(40, 64, 8, torch.float32, seed=9, offset=1000.0)
    idx, dist = run(backend, z, e)
    check_result(z, e, idx, dist, what="offset 1000")


def test_thread_counts_agree():
    z, e = make(700, 1000, 24, torch.float32, seed=11)
    prev = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(run("cpu" if DEVICE.type == "cpu" else "auto", z, e))
            outs.append(run("cpu" if DEVICE.type == "cpu" else "auto", z[:5], e))  # K-split path
    finally:
        torch.set_num_threads(prev)
    for o in outs[2::2]:
        assert torch.equal(o[0], outs[0][0]) and torch.equal(o[1], outs[0][1])
    for o in outs[3::2]:
        assert torch.equal(o[0], outs[1][0]) and torch.equal(o[1], outs[1][1])


def test_noncontiguous_and_nan_rows():
    z, e = make(30, 20, 6, torch.float32, seed=12)
    zt = torch.randn(6, 30, device=DEVICE).t()
    for backend in BACKENDS:
        idx, dist = run(backend, zt, e)
        check_result(zt, e, idx, dist, what=f"non-contiguous {backend}")
        zn = z.clone()
        zn[3, 2] = float("nan")
        idx, dist = run(backend, zn, e)
        assert idx[3].item() == 0 and torch.isnan(dist[3]), backend  # as argmin over a row of NaNs
        assert torch.isfinite(dist[torch.arange(30, device=DEVICE) != 3]).all()


# ------------------------------------------------------------------ registration
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    z, e = make(20, 7, 5, torch.float32, seed=13)
    with genkernels.use_backend(backend):
        torch.library.opcheck(torch.ops.genkernels.vq_nearest.default, (z, e, False))
        torch.library.opcheck(torch.ops.genkernels.vq_nearest.default, (z, e, True))
        torch.library.opcheck(torch.ops.genkernels.vq_nearest.default, (z[:0], e, False))


def test_no_gradient_through_op():
    z, e = make(10, 4, 3, torch.float32)
    z.requires_grad_()
    idx, dist = vq_nearest(z, e)
    assert not dist.requires_grad and not idx.requires_grad


def test_compile_fullgraph_no_graph_break():
    torch._dynamo.reset()
    z, e = make(64, 32, 8, torch.float32, seed=14)

    def f(z, e):
        idx, dist = vq_nearest(z * 2, e)
        return e[idx] + dist[:, None]

    explain = torch._dynamo.explain(f)(z, e)
    assert explain.graph_break_count == 0 and explain.graph_count == 1
    out = torch.compile(f, fullgraph=True)(z, e)
    torch.testing.assert_close(out, f(z, e))

    vq = VectorQuantizer(32, 8).to(DEVICE).eval()
    x = torch.randn(2, 8, 4, 4, device=DEVICE, requires_grad=True)
    explain = torch._dynamo.explain(vq)(x)
    assert explain.graph_break_count == 0
    cvq = torch.compile(vq, fullgraph=True, backend="aot_eager")
    got, want = cvq(x), vq(x)
    assert torch.equal(got.indices, want.indices)
    torch.testing.assert_close(got.loss, want.loss)
    got.loss.backward()
    assert x.grad is not None


# ------------------------------------------------------------------ errors
def test_errors_name_the_argument():
    z = torch.randn(4, 3, device=DEVICE)
    e = torch.randn(5, 3, device=DEVICE)
    with pytest.raises(ValueError, match="D=4.*D=3|codebook"):
        vq_nearest(z, torch.randn(5, 4, device=DEVICE))
    with pytest.raises(ValueError, match="`z`"):
        vq_nearest(z[None], e)
    with pytest.raises(ValueError, match="`z`"):
        vq_nearest(z[0], e)
    with pytest.raises(ValueError, match="`codebook`"):
        vq_nearest(z, e[None])
    with pytest.raises(ValueError, match="`codebook`.*K >= 1"):
        vq_nearest(z, e[:0])
    with pytest.raises(TypeError, match="`z`"):
        vq_nearest(z.long(), e)
    with pytest.raises(TypeError, match="`codebook`"):
        vq_nearest(z, e.int())
    with pytest.raises(TypeError, match="`codebook`.*dtype"):
        vq_nearest(z, e.double())
    with pytest.raises(ValueError, match="`codebook`.*meta"):
        vq_nearest(z, torch.randn(5, 3, device="meta"))
    with pytest.raises(TypeError, match="`z`"):
        vq_nearest([[1.0]], e)
    with pytest.raises(TypeError, match="cosine"):
        vq_nearest(z, e, cosine=1)
    with pytest.raises(TypeError):
        vq_nearest(z, e, True)  # cosine is keyword-only


def test_reference_public_function_and_empty_d():
    z, e = make(9, 4, 3, torch.float32)
    i1, d1 = vq_nearest_reference(z, e)
    i2, d2 = run("reference", z, e)
    assert torch.equal(i1, i2) and torch.equal(d1, d2)
    for backend in BACKENDS:
        idx, dist = run(backend, torch.empty(3, 0, device=DEVICE), torch.empty(4, 0, device=DEVICE))
        assert idx.tolist() == [0, 0, 0] and dist.tolist() == [0.0, 0.0, 0.0]


# ------------------------------------------------------------------ memory
_MEM_SCRIPT = textwrap.dedent("""
    import gc, json, os, sys, torch
    import genkernels
    from genkernels.ops.vq_nearest import vq_nearest

    def rss(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    def peak(fn):
        fn(); gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")          # reset the peak-RSS mark
        base = rss("VmRSS:")
        fn()
        return rss("VmHWM:") - base
    torch.manual_seed(0)
    M, K, D = 8192, 4096, 16
    z, e = torch.randn(M, D), torch.randn(K, D)
    out = {}
    for b in ("cpu", "reference"):
        with genkernels.use_backend(b):
            out[b] = peak(lambda: vq_nearest(z, e))
    out["cdist"] = peak(lambda: torch.cdist(z, e).argmin(1))
    print(json.dumps(out))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux") or DEVICE.type != "cpu", reason="Linux /proc, CPU")
def test_peak_memory_is_not_m_times_k():
    """Peak RSS over the call (M=8192, K=4096: an M x K float32 matrix is 128 MiB), measured in a fresh
    process with large allocations mmapped so that freed memory leaves the RSS."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="2")
    r = subprocess.run([sys.executable, "-c", _MEM_SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    if r.returncode != 0 and "clear_refs" in r.stderr:
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs)")
    assert r.returncode == 0, r.stderr
    import json
    peak = json.loads(r.stdout.strip().splitlines()[-1])
    mk = 8192 * 4096 * 4
    assert peak["cdist"] > mk // 2, peak          # the method sees an M x K buffer
    assert peak["cpu"] < 4 * 2**20, peak          # outputs (96 KiB) + packed codebook (256 KiB) + scratch
    assert peak["reference"] < mk // 2, peak      # chunked: ~16 MiB of scores at a time


# ------------------------------------------------------------------ VectorQuantizer
def _vq_input(shape=(2, 8, 5, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(DEVICE)


def test_quantizer_losses_and_straight_through():
    vq = VectorQuantizer(16, 8, beta=0.3).to(DEVICE)
    with torch.no_grad():
        vq.embedding.weight.normal_()
    z = _vq_input().requires_grad_()
    out = vq(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 5, 6)
    zl = z.detach().movedim(1, -1).reshape(-1, 8)
    e = vq.embedding.weight.detach()[out.indices.reshape(-1)]
    torch.testing.assert_close(out.quantized.detach().movedim(1, -1).reshape(-1, 8), e)
    torch.testing.assert_close(out.codebook_loss, F.mse_loss(e, zl))
    torch.testing.assert_close(out.commitment_loss, 0.3 * F.mse_loss(zl, e))
    torch.testing.assert_close(out.loss, out.codebook_loss + out.commitment_loss)
    # straight-through: d quantized / d z = identity
    g = torch.randn_like(z)
    (gz,) = torch.autograd.grad(out.quantized, z, g, retain_graph=True)
    torch.testing.assert_close(gz, g)
    # the codebook loss trains only the codebook, the commitment loss only the encoder
    w = vq.embedding.weight
    gz, gw = torch.autograd.grad(out.codebook_loss, [z, w], allow_unused=True, retain_graph=True)
    assert (gz is None or not gz.any()) and gw.abs().sum() > 0
    gz, gw = torch.autograd.grad(out.commitment_loss, [z, w], allow_unused=True, retain_graph=True)
    assert gz.abs().sum() > 0 and (gw is None or not gw.any())
    # legacy: beta on the codebook term
    vq.legacy = True
    out2 = vq(z)
    torch.testing.assert_close(out2.codebook_loss, 0.3 * F.mse_loss(e, zl))
    torch.testing.assert_close(out2.commitment_loss, F.mse_loss(zl, e))
    # usage and perplexity
    assert out.usage.sum().item() == zl.shape[0] and out.usage.dtype == torch.int64
    p = out.usage.double() / zl.shape[0]
    torch.testing.assert_close(out.perplexity.double(), torch.exp(-(p[p > 0] * p[p > 0].log()).sum()),
                               rtol=1e-5, atol=1e-5)


def test_quantizer_channel_last_inputs_and_cosine():
    vq = VectorQuantizer(12, 6, cosine=True).to(DEVICE)
    with torch.no_grad():
        vq.embedding.weight.normal_()
    z = _vq_input((3, 7, 6))
    out = vq(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (3, 7)
    torch.testing.assert_close(out.quantized.norm(dim=-1), torch.ones(3, 7, device=DEVICE))
    cos = F.normalize(z.reshape(-1, 6), dim=1) @ F.normalize(vq.embedding.weight, dim=1).t()
    assert torch.equal(out.indices.reshape(-1), cos.argmax(1))
    with pytest.raises(ValueError, match="embedding_dim"):
        vq(torch.randn(2, 5, device=DEVICE))


def test_quantizer_matches_diffusers():
    pytest.importorskip("diffusers")
    from diffusers.models.autoencoders.vq_model import VQModel

    torch.manual_seed(0)
    model = VQModel(block_out_channels=(8,), norm_num_groups=4, latent_channels=6, num_vq_embeddings=64,
                    vq_embed_dim=6, sample_size=8).to(DEVICE)
    dq = model.quantize
    with torch.no_grad():
        dq.embedding.weight.normal_()
    ours = VectorQuantizer.from_diffusers(dq)
    assert "embedding.weight" in ours.state_dict() and ours.legacy and ours.beta == dq.beta
    plain = VectorQuantizer(64, 6, ema=True)
    plain.load_state_dict(dq.state_dict())  # strict: the EMA buffers are filled in from the weights
    torch.testing.assert_close(plain.ema_embed_sum, dq.embedding.weight.detach().cpu())
    z = _vq_input((2, 6, 7, 5), seed=1).requires_grad_()
    zq, loss, (_, _, ind) = dq(z)
    out = ours(z)
    assert torch.equal(out.indices.reshape(-1), ind.reshape(-1))
    assert torch.equal(out.quantized, zq)
    torch.testing.assert_close(out.loss, loss)
    dq.legacy = False
    ours_fixed = VectorQuantizer.from_diffusers(dq)
    _, loss_fixed, _ = dq(z)
    torch.testing.assert_close(ours_fixed(z).loss, loss_fixed)
    # decoding from indices, diffusers' shape convention
    torch.testing.assert_close(ours.get_codebook_entry(ind.reshape(-1), (2, 7, 5, 6)),
                               dq.get_codebook_entry(ind.reshape(-1), (2, 7, 5, 6)))


def test_quantizer_ema_update():
    K, D = 8, 4
    vq = VectorQuantizer(K, D, ema=True, decay=0.5, epsilon=1e-5).to(DEVICE)
    assert not vq.embedding.weight.requires_grad
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.randn(K, D) * 3)
    w0 = vq.embedding.weight.detach().clone()
    size0, sum0 = vq.ema_cluster_size.clone(), vq.ema_embed_sum.clone()
    z = _vq_input((64, D), seed=2)
    vq.train()
    out = vq(z)
    idx = torch.cdist(z, w0, compute_mode="donot_use_mm_for_euclid_dist").argmin(1)
    assert torch.equal(out.indices, idx)
    counts = torch.bincount(idx, minlength=K).float()
    sums = torch.zeros(K, D, device=DEVICE).index_add_(0, idx, z)
    size = 0.5 * size0 + 0.5 * counts
    esum = 0.5 * sum0 + 0.5 * sums
    n = size.sum()
    smoothed = (size + 1e-5) / (n + K * 1e-5) * n
    torch.testing.assert_close(vq.ema_cluster_size, size)
    torch.testing.assert_close(vq.embedding.weight, esum / smoothed[:, None])
    torch.testing.assert_close(out.loss, out.commitment_loss)
    vq.eval()
    w1 = vq.embedding.weight.clone()
    vq(z)
    assert torch.equal(vq.embedding.weight, w1)  # no updates in eval mode


def test_quantizer_dead_code_restart():
    torch.manual_seed(0)
    K, D = 6, 3
    vq = VectorQuantizer(K, D, dead_code_threshold=0.95, decay=0.9).to(DEVICE)
    w = torch.randn(K, D) * 0.1
    w[4] = 100.0  # never chosen
    with torch.no_grad():
        vq.embedding.weight.copy_(w)
    z = _vq_input((50, D), seed=3)
    vq.train()
    out = vq(z)
    assert out.usage[4] == 0
    new = vq.embedding.weight.detach()
    # code 4 was restarted onto a vector of the batch; codes in use keep their weights
    assert ((z - new[4]).abs().sum(1) < 1e-6).any()
    # running usage 0.9 * 1 + 0.1 * count: below 0.95 exactly for the unused codes
    used = out.usage > 0
    assert torch.equal(new[used], w.to(DEVICE)[used])
    assert (vq.ema_cluster_size[~used] == 0.95).all()
    assert torch.equal(vq.ema_cluster_size[used], 0.9 + 0.1 * out.usage[used].float())


def test_quantizer_kmeanspp_and_random_init():
    torch.manual_seed(0)
    centers = torch.tensor([[10.0, 0], [-10, 0], [0, 10], [0, -10]])
    z = (centers.repeat(50, 1) + 0.01 * torch.randn(200, 2)).to(DEVICE)
    vq = VectorQuantizer(4, 2, init="kmeans++", kmeans_iters=2).to(DEVICE)
    assert not bool(vq.initialized)
    vq.train()
    out = vq(z)
    assert bool(vq.initialized) and (out.usage == 50).all()
    torch.testing.assert_close(out.perplexity, torch.tensor(4.0, device=DEVICE), rtol=1e-4, atol=1e-4)
    # Lloyd steps land on the cluster means
    means = torch.stack([z[i::4].mean(0) for i in range(4)])
    d = torch.cdist(vq.embedding.weight.detach(), means)
    assert (d.min(1).values < 1e-4).all()
    vq2 = VectorQuantizer(8, 2, init="random").to(DEVICE).train()
    vq2(z)
    rows = vq2.embedding.weight.detach()
    exact_d = torch.cdist(rows, z, compute_mode="donot_use_mm_for_euclid_dist")
    assert (exact_d.min(1).values < 1e-6).all()  # every code is a vector of the batch
    w = vq2.embedding.weight.clone()
    vq2(z)
    assert torch.equal(vq2.embedding.weight, w)  # initialisation happens once
    # state dict round trip keeps the initialised flag
    vq3 = VectorQuantizer(8, 2, init="random").to(DEVICE)
    vq3.load_state_dict(vq2.state_dict())
    assert not vq3._pending_init
    c = kmeans(torch.zeros(5, 2), 3)  # fewer distinct points than k
    assert c.shape == (3, 2) and not c.any()


def test_quantizer_empty_batch():
    vq = VectorQuantizer(4, 3).to(DEVICE).train()
    out = vq(torch.empty(0, 3, 2, 2, device=DEVICE).reshape(0, 3, 2, 2))
    assert out.quantized.shape == (0, 3, 2, 2) and out.loss.item() == 0 and out.usage.sum() == 0
