"""Shared by the autoencoder-family tests (test_blocks, test_model_autoencoder / vae / vqvae)."""
import torch

from conftest import compiled_backends

# the CPU kernels and the reference (the Triton interpreter is slow and covered by the op tests)
BACKENDS = ["reference"] + [b for b in compiled_backends(torch.device("cpu")) if b == "cpu"]


def close(got, want, what="", scale=None):
    """float32 agreement: errors of a few ulps of the tensor's largest magnitude (sums reorder), or of
    `scale` when the tensor is a sum of larger terms (a gradient whose exact value cancels)."""
    scale = max(1.0, want.abs().max().item(), scale or 0.0)
    torch.testing.assert_close(got, want, atol=2e-5 * scale, rtol=1e-4, msg=lambda m: f"{what}: {m}")


def random_diffusers(cls, cfg, seed=0):
    """A diffusers model `cls(**cfg)` in eval mode with every parameter moved off its init."""
    torch.manual_seed(seed)
    m = cls(**cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


def train_digits(name):
    """Train `name`'s digits preset for its configured steps; its held-out evaluation (long tests)."""
    from genkernels import models, train
    m = models.build(name, "digits")
    train.fit(m, progress=False)
    r = m.evaluate("test", 359)
    assert r["psnr"]["value"] > r["baseline_bicubic"]["psnr"], r
    return r
