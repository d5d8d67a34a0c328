"""Image quality measured offline: an in-repo digits classifier and the metrics built on it.

    genkernels.metrics.fd_digits(fake, real)         Fréchet distance of classifier features (lower is better)
    genkernels.metrics.kid(fake, real)               kernel inception distance on the same features
    genkernels.metrics.digits_accuracy(x, labels)    the classifier's accuracy on class-conditional samples
    genkernels.metrics.mse(a, b), psnr(a, b)         reconstruction error of images in [-1, 1]
    genkernels.metrics.codebook_usage(indices, K)    perplexity and fraction of codes used (VQ models)

Reading a figure: ``floor(metric)`` is the value of real held-out data (train images against the test
split: what a perfect model gets) and ``ceiling(metric)`` the value of uniform noise in [-1, 1] (what a
model that learnt nothing gets); ``bounds(metric, value)`` puts the three side by side for JSON. For
``digits_accuracy`` the floor is the *high* number (the classifier's held-out accuracy) and the
ceiling ~0.1; for ``mse`` / ``psnr`` the floor is perfect reconstruction (0 / inf, reported as None).

The classifier (:class:`DigitsClassifier`, a small CNN on 16x16 grey images) trains deterministically
in seconds on the CPU on the digits train split the first time it is needed, and is cached as
safetensors in ``$GENKERNELS_CACHE`` (default ``~/.cache/genkernels``) under a hash of its code and
settings, so editing either retrains it. Its held-out accuracy: :func:`classifier_accuracy`.
Images of any size and 1 or 3 channels are accepted (resized to 16x16, RGB averaged to grey).
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
import tempfile
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import data

Tensor = torch.Tensor

CLASSIFIER_SIZE = 16
_TRAIN = dict(seed=0, epochs=8, batch_size=64, lr=2e-3, max_shift=1)


class DigitsClassifier(nn.Module):
    """conv-pool-conv-pool-fc(128)-fc(10); the 128 penultimate ReLU features feed FD-digits and KID."""

    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.features(x))


def _prepare(images: Tensor) -> Tensor:
    """[N, C, H, W] in [-1, 1], C in {1, 3}, any H = W -> [N, 1, 16, 16] float32."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be a [N, 1 or 3, H, W] tensor, got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
    x = images.detach().float()
    if x.shape[1] == 3:
        x = x.mean(1, keepdim=True)
    if x.shape[-2:] != (CLASSIFIER_SIZE, CLASSIFIER_SIZE):
        x = F.interpolate(x, size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > CLASSIFIER_SIZE)
    return x.contiguous()


def _shifted(x: Tensor, max_shift: int) -> Tensor:
    """All (2 max_shift + 1)^2 translations of every image, [S, N, C, H, W] (background -1 fills in):
    training on them makes the classifier robust to the small misplacements of generated digits."""
    size = x.shape[-1]
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    r = range(2 * max_shift + 1)
    return torch.stack([padded[..., dy: dy + size, dx: dx + size] for dy in r for dx in r])


def _train_classifier() -> DigitsClassifier:
    cfg = _TRAIN
    g = torch.Generator().manual_seed(cfg["seed"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        model = DigitsClassifier()
    train = data.load("digits", "train", CLASSIFIER_SIZE)
    x, y = train["image"], train["label"]
    shifted = _shifted(x, cfg["max_shift"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    steps = cfg["epochs"] * math.ceil(len(x) / cfg["batch_size"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=steps)
    model.train()
    for _ in range(cfg["epochs"]):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), cfg["batch_size"]):
            idx = perm[i: i + cfg["batch_size"]]
            which = torch.randint(0, len(shifted), (len(idx),), generator=g)
            loss = F.cross_entropy(model(shifted[which, idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _cache_dir() -> str:
    return os.environ.get("GENKERNELS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "genkernels")


def _classifier_key() -> str:
    src = "".join(inspect.getsource(f) for f in (DigitsClassifier, _prepare, _shifted, _train_classifier))
    blob = json.dumps({"src": src, "train": _TRAIN, "size": CLASSIFIER_SIZE, "split": data.TEST_FRACTION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def _accuracy(model: DigitsClassifier, x: Tensor, y: Tensor) -> float:
    return (model(_prepare(x)).argmax(1) == y).float().mean().item()


@functools.lru_cache(maxsize=1)
def classifier() -> DigitsClassifier:
    """The digits classifier (eval mode, CPU), trained on first use and cached on disk."""
    from safetensors.torch import load_file, save_file

    path = os.path.join(_cache_dir(), f"digits_classifier-{_classifier_key()}.safetensors")
    model = DigitsClassifier().eval()
    if os.path.exists(path):
        try:
            model.load_state_dict(load_file(path))
            return model.requires_grad_(False)
        except Exception:   # a damaged cache file: train again and replace it
            pass
    model = _train_classifier()
    test = data.load("digits", "test", CLASSIFIER_SIZE)
    acc = _accuracy(model, test["image"], test["label"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp,
                  metadata={"test_accuracy": repr(acc)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return model.requires_grad_(False)


@functools.lru_cache(maxsize=1)
def classifier_accuracy() -> float:
    """The classifier's accuracy on the held-out digits test split (measured, not stored)."""
    test = data.load("digits", "test", CLASSIFIER_SIZE)
    return _accuracy(classifier(), test["image"], test["label"])


@torch.no_grad()
def digits_features(images: Tensor, batch_size: int = 512) -> Tensor:
    """The classifier's 128 penultimate features of each image, float64 [N, 128] on the CPU."""
    model = classifier()
    x = _prepare(images).cpu()
    return torch.cat([model.features(x[i: i + batch_size]) for i in range(0, len(x), batch_size)]
                     or [torch.empty(0, model.feature_dim)]).double()


def _feats(x: Tensor) -> Tensor:
    """Features of images, or features given directly as a 2-D tensor (lets callers reuse them)."""
    return x.double().cpu() if isinstance(x, Tensor) and x.dim() == 2 else digits_features(x)


def frechet_distance(f1: Tensor, f2: Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2) between Gaussians fitted to two feature sets."""
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError("the Fréchet distance needs at least 2 samples on each side")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = torch.cov(f1.T), torch.cov(f2.T)
    # Tr((S1 S2)^1/2) = sum of sqrt(eigenvalues of S1^1/2 S2 S1^1/2), a symmetric PSD matrix
    w, v = torch.linalg.eigh(s1)
    r1 = (v * w.clamp_min(0).sqrt()) @ v.T
    tr_sqrt = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * tr_sqrt)


def fd_digits(fake: Tensor, real: Tensor) -> float:
    """FD-digits: the Fréchet distance of the digits classifier's features (FID's recipe with an
    in-repo network). Images [N, C, H, W] in [-1, 1] (or precomputed [N, 128] features). Lower is better;
    it is biased upward for small N, so compare figures at the same N (floor/ceiling use the same N)."""
    return frechet_distance(_feats(fake), _feats(real))


def kid(fake: Tensor, real: Tensor, subsets: int = 10, subset_size: int = 200, seed: int = 0) -> float:
    """Kernel inception distance on the classifier's features: the unbiased MMD^2 estimate with the
    cubic kernel k(x, y) = (x.y / d + 1)^3, averaged over `subsets` random subsets of `subset_size`
    (capped by the set sizes). Unbiased, so comparable across N; ~0 for matching distributions."""
    f1, f2 = _feats(fake), _feats(real)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError("kid needs at least 2 samples on each side")
    g = torch.Generator().manual_seed(seed)
    d = f1.shape[1]
    vals = []
    for _ in range(subsets):
        a = f1[torch.randperm(len(f1), generator=g)[:m]]
        b = f2[torch.randperm(len(f2), generator=g)[:m]]
        kxx, kyy, kxy = ((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
        off = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        vals.append(off - 2 * kxy.mean())
    return float(torch.stack(vals).mean())


@torch.no_grad()
def digits_accuracy(images: Tensor, labels: Tensor) -> float:
    """Fraction of images the classifier labels as `labels` (class-conditional samples)."""
    labels = torch.as_tensor(labels).cpu()
    if labels.shape != (len(images),):
        raise ValueError(f"labels must be [N] = [{len(images)}], got {tuple(labels.shape)}")
    return _accuracy(classifier(), _prepare(images).cpu(), labels)


def mse(a: Tensor, b: Tensor) -> float:
    """Mean squared error over all elements."""
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a.detach().double() - b.detach().double()).square().mean())


def psnr(a: Tensor, b: Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB, averaged over images (data_range 2 for [-1, 1] images)."""
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(f"a and b must be batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    per = (a.detach().double() - b.detach().double()).square().flatten(1).mean(1)
    return float((10 * torch.log10(data_range ** 2 / per.clamp_min(1e-20))).mean())


def codebook_usage(indices: Tensor, num_codes: int) -> Dict[str, float]:
    """``perplexity``: exp of the entropy of the code histogram (1 = one code, num_codes = uniform);
    ``usage``: fraction of the num_codes codes used at least once."""
    idx = torch.as_tensor(indices).flatten().long().cpu()
    if num_codes < 1:
        raise ValueError(f"num_codes must be >= 1, got {num_codes}")
    if len(idx) and (idx.min() < 0 or idx.max() >= num_codes):
        raise ValueError(f"indices must lie in [0, {num_codes})")
    counts = torch.bincount(idx, minlength=num_codes).double()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p * p.clamp_min(1e-30).log()).sum()
    return {"perplexity": float(entropy.exp()), "usage": float((counts > 0).double().mean())}


# ---------------------------------------------------------------- floors and ceilings
METRICS = ("fd_digits", "kid", "digits_accuracy", "mse", "psnr")


def _noise(num: int, image_size: int, channels: int, seed: int) -> Tensor:
    return torch.rand(num, channels, image_size, image_size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _real(split: str, num: int, image_size: int, seed: int) -> Dict[str, Tensor]:
    d = data.load("digits", split, image_size)
    idx = torch.randperm(len(d["image"]), generator=torch.Generator().manual_seed(seed))[:num]
    return {k: v[idx] for k, v in d.items()}


@functools.lru_cache(maxsize=64)
def _bound(metric: str, which: str, num: int, image_size: int, seed: int) -> Optional[float]:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    test = _real("test", num, image_size, seed)
    if which == "floor":
        if metric in ("mse", "psnr"):
            return None      # perfect reconstruction: 0 / inf
        if metric == "digits_accuracy":   # the classifier's held-out accuracy
            return digits_accuracy(test["image"], test["label"])
        cand = _real("train", num, image_size, seed)
    else:
        cand = {"image": _noise(len(test["image"]), image_size, 1, seed),
                "label": torch.randint(0, 10, (len(test["image"]),), generator=torch.Generator().manual_seed(seed))}
    if metric == "digits_accuracy":
        return digits_accuracy(cand["image"], cand["label"])
    if metric in ("mse", "psnr"):
        return (mse if metric == "mse" else psnr)(cand["image"], test["image"])
    return (fd_digits if metric == "fd_digits" else kid)(cand["image"], test["image"])


def floor(metric: str, num: int = 500, image_size: int = 32, seed: int = 0) -> Optional[float]:
    """The metric for real data: `num` train digits against `num` test digits at image_size (None for
    mse / psnr, whose floor is a perfect reconstruction). num is capped by the test split (359)."""
    return _bound(metric, "floor", num, image_size, seed)


def ceiling(metric: str, num: int = 500, image_size: int = 32, seed: int = 0) -> Optional[float]:
    """The metric for uniform noise in [-1, 1] (random labels for digits_accuracy) against `num` test digits."""
    return _bound(metric, "ceiling", num, image_size, seed)


def bounds(metric: str, value: float, num: int = 500, image_size: int = 32, seed: int = 0) -> Dict[str, Any]:
    """``{"value", "floor", "ceiling"}`` of a measured metric, for JSON reports."""
    return {"value": value, "floor": floor(metric, num, image_size, seed),
            "ceiling": ceiling(metric, num, image_size, seed)}


__all__ = ["DigitsClassifier", "METRICS", "bounds", "ceiling", "classifier", "classifier_accuracy",
           "codebook_usage", "digits_accuracy", "digits_features", "fd_digits", "floor", "frechet_distance",
           "kid", "mse", "psnr"]
