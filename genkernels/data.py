"""Small real image data sets shipped inside installed packages (nothing is downloaded).

    genkernels.data.load("digits", "train", image_size=32)
        {"image": [1438, 1, 32, 32] float32 in [-1, 1], "label": [1438] int64, "tokens": [1438, 8] int64}
    genkernels.data.load("photos", "test", image_size=64)
        {"image": [256, 3, 64, 64] float32 in [-1, 1], "label": [256] int64 (0 china, 1 flower)}
    genkernels.data.caption(7)          # "a handwritten seven"

Data sets (``DATASETS``: name -> ``loader(split, image_size) -> dict of tensors``):

- ``digits``: scikit-learn's 1797 handwritten digits (8x8, 17 grey levels), resized bilinearly to
  ``image_size`` and scaled to [-1, 1]; labels 0-9; ``tokens``, the caption of each label through the
  tiny word vocabulary ``VOCAB`` (for text-conditioned models). A fixed permutation puts 20 % in ``test``.
- ``photos``: random square crops (32-256 px) of scikit-learn's two sample photographs, resized with
  antialiasing to ``image_size``, RGB. ``train`` crops come from the left 384 columns of each picture,
  ``test`` crops from the remaining 256, so no test pixel is ever seen in training.
- image-to-image sets made from those two (end of the file): paired ``digits_thick`` (digit -> dilated
  digit) and ``photos_gray`` (grey -> colour crop), with ``"target"``; unpaired ``digits_inverted`` and
  ``photos_unpaired`` (the two photographs), with ``"image_b"``; multi-domain ``digits_domains``
  (thick / red / slanted digits), with ``"domain"`` attribute vectors.

Everything is deterministic (fixed seeds), so a split is the same on every machine and every call.
Other data sets register themselves by appending a loader at the end of this file and a line to
``DATASETS``.

Training batches: :func:`batch_indices` gives the rows of a step's batch as a pure function of
(seed, step) — shuffled epochs without replacement — and the shard of one DDP rank, so a resumed run
sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor

SPLITS = ("train", "test")
TEST_FRACTION = 0.2
_SPLIT_SEED = 0

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOCAB: List[str] = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "handwritten", *DIGIT_NAMES]
TOKEN_LENGTH = 8


def caption(label: int) -> str:
    """The caption of a digit label: ``caption(7) == "a handwritten seven"``."""
    label = int(label)
    if not 0 <= label <= 9:
        raise ValueError(f"label must be a digit 0-9, got {label}")
    return f"a handwritten {DIGIT_NAMES[label]}"


def tokenize(texts: Sequence[str], length: int = TOKEN_LENGTH) -> Tensor:
    """Word ids of ``VOCAB`` for each text: ``<bos> words <eos>`` then ``<pad>`` (0), int64 [len(texts), length].
    Unknown words map to ``<unk>``; texts longer than ``length`` are cut (keeping ``<eos>`` last)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    if length < 2:
        raise ValueError(f"length must be >= 2, got {length}")
    index = {w: i for i, w in enumerate(VOCAB)}
    out = torch.zeros(len(texts), length, dtype=torch.int64)
    for row, text in enumerate(texts):
        ids = [index.get(w, index["<unk>"]) for w in text.lower().split()][: length - 2]
        ids = [index["<bos>"], *ids, index["<eos>"]]
        out[row, : len(ids)] = torch.tensor(ids)
    return out


def _check(split: str, image_size: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")


def _split_rows(n: int, split: str) -> Tensor:
    """Row indices of `split` for a data set of n rows: a fixed permutation, the first 20 % is `test`."""
    perm = torch.from_numpy(np.random.RandomState(_SPLIT_SEED).permutation(n))
    n_test = int(round(n * TEST_FRACTION))
    return perm[:n_test] if split == "test" else perm[n_test:]


@functools.lru_cache(maxsize=None)
def _digits_raw():
    from sklearn.datasets import load_digits
    d = load_digits()
    return torch.from_numpy(d.images.astype(np.float32)), torch.from_numpy(d.target.astype(np.int64))


def load_digits(split: str = "train", image_size: int = 32) -> Dict[str, Tensor]:
    _check(split, image_size)
    images, labels = _digits_raw()
    rows = _split_rows(len(images), split)
    x = images[rows, None] / 16.0 * 2.0 - 1.0                      # 17 grey levels -> [-1, 1]
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=image_size < 8).clamp_(-1.0, 1.0)
    y = labels[rows]
    return {"image": x.contiguous(), "label": y, "tokens": tokenize([caption(int(c)) for c in y])}


@functools.lru_cache(maxsize=None)
def _photos_raw():
    from sklearn.datasets import load_sample_images
    # [H, W, 3] uint8 -> [3, H, W] float in [-1, 1]
    return [torch.from_numpy(im.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0
            for im in load_sample_images().images]


PHOTO_CROPS = {"train": 1024, "test": 256}
_PHOTO_TEST_COLUMNS = 256         # the right-most columns of each picture are held out
_PHOTO_MIN, _PHOTO_MAX = 32, 256  # crop side range (px of the original picture)


def load_photos(split: str = "train", image_size: int = 32) -> Dict[str, Tensor]:
    _check(split, image_size)
    pictures = _photos_raw()
    rng = np.random.RandomState({"train": 1, "test": 2}[split])
    images, labels = [], []
    for i in range(PHOTO_CROPS[split]):
        which = i % len(pictures)
        pic = pictures[which]
        h, w = pic.shape[1:]
        lo, hi = (0, w - _PHOTO_TEST_COLUMNS) if split == "train" else (w - _PHOTO_TEST_COLUMNS, w)
        side = int(rng.randint(_PHOTO_MIN, min(_PHOTO_MAX, hi - lo, h) + 1))
        top = int(rng.randint(0, h - side + 1))
        left = int(rng.randint(lo, hi - side + 1))
        crop = pic[None, :, top: top + side, left: left + side]
        images.append(F.interpolate(crop, size=(image_size, image_size), mode="bilinear",
                                    align_corners=False, antialias=True))
        labels.append(which)
    return {"image": torch.cat(images).clamp_(-1.0, 1.0).contiguous(),
            "label": torch.tensor(labels, dtype=torch.int64)}


DATASETS: Dict[str, Callable[[str, int], Dict[str, Tensor]]] = {
    "digits": load_digits,
    "photos": load_photos,
}  # image-to-image sets (digits_thick, photos_gray, digits_inverted, photos_unpaired, digits_domains): end of file


@functools.lru_cache(maxsize=32)
def _load_cached(name: str, split: str, image_size: int) -> Dict[str, Tensor]:
    return DATASETS[name](split, image_size)


def load(name: str, split: str = "train", image_size: int = 32) -> Dict[str, Tensor]:
    """The whole `split` of data set `name` at `image_size`: a dict of tensors with equal first dims
    (``"image"`` float32 NCHW in [-1, 1]; ``"label"`` int64 where defined). Fresh tensors each call."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    _check(split, image_size)
    return {k: v.clone() for k, v in _load_cached(name, split, image_size).items()}


def num_rows(data: Dict[str, Tensor]) -> int:
    sizes = {len(v) for v in data.values()}
    if len(sizes) != 1:
        raise ValueError(f"data tensors have different first dims: { {k: len(v) for k, v in data.items()} }")
    return sizes.pop()


def batch_indices(n: int, batch_size: int, step: int, seed: int = 0, rank: int = 0, world_size: int = 1
                  ) -> Tensor:
    """Rows of step `step`'s batch (this rank's shard) of a data set of n rows.

    The global batch is ``batch_size`` consecutive entries of an endless sequence of shuffled epochs
    (each a permutation of range(n) seeded by (seed, epoch)); rank r of world_size takes the r-th
    contiguous ``batch_size // world_size`` of it. A pure function of its arguments: resuming at any
    step reproduces the batches exactly, and the shards of all ranks make up the single-process batch."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the world size {world_size}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    per_rank = batch_size // world_size
    start = step * batch_size + rank * per_rank
    positions = torch.arange(start, start + per_rank)
    epochs = positions // n
    out = torch.empty(per_rank, dtype=torch.int64)
    for e in epochs.unique().tolist():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + e))
        sel = epochs == e
        out[sel] = perm[positions[sel] % n]
    return out


def get_batch(data: Dict[str, Tensor], batch_size: int, step: int, seed: int = 0, rank: int = 0,
              world_size: int = 1, device="cpu") -> Dict[str, Tensor]:
    """The batch of `step` (see :func:`batch_indices`) as a dict of tensors on `device`."""
    idx = batch_indices(num_rows(data), batch_size, step, seed, rank, world_size)
    return {k: v[idx].to(device, non_blocking=True) for k, v in data.items()}


__all__ = ["DATASETS", "SPLITS", "VOCAB", "batch_indices", "caption", "get_batch", "load", "load_digits",
           "load_photos", "num_rows", "tokenize"]


# ------------------------------------------------------------------ image-to-image domains (pix2pix, cyclegan, stargan)
# Paired sets add ``"target"`` (the output image of each input ``"image"``); unpaired sets add
# ``"image_b"`` (domain B, drawn in an independent order, so row i of A and row i of B are unrelated);
# multi-domain sets add ``"domain"`` (float {0, 1} attribute vectors, names in DOMAIN_ATTRIBUTES).
# Strokes are reshaped at a 32-px base (one dilation pixel there is a fixed fraction of a digit), then
# resized to ``image_size``.
_BASE = 32
DOMAIN_ATTRIBUTES = ("thick", "red", "slanted")


def _resize(x: Tensor, image_size: int) -> Tensor:
    if x.shape[-1] == image_size:
        return x.contiguous()
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                         antialias=image_size < x.shape[-1]).clamp_(-1.0, 1.0).contiguous()


def _dilate(x: Tensor) -> Tensor:
    """Morphological dilation of bright strokes on a dark ground (3x3 max filter)."""
    return F.max_pool2d(x, 3, stride=1, padding=1)


def _slant(x: Tensor, shear: float = 0.3) -> Tensor:
    """Italic digits: shear rows sideways in proportion to their height (bottom left, top right)."""
    theta = torch.tensor([[1.0, shear, 0.0], [0.0, 1.0, 0.0]]).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


def _unpaired_order(n: int, split: str) -> Tensor:
    """An order of domain B's rows independent of domain A's (and fixed per split)."""
    seed = {"train": 11, "test": 12}[split]
    return torch.from_numpy(np.random.RandomState(seed).permutation(n))


def load_digits_thick(split: str = "train", image_size: int = 32) -> Dict[str, Tensor]:
    """Paired: a digit (``image``) and the same digit with strokes thickened by a 3x3 dilation at 32 px
    (``target``)."""
    d = load_digits(split, _BASE)
    return {"image": _resize(d["image"], image_size), "target": _resize(_dilate(d["image"]), image_size),
            "label": d["label"]}


def load_photos_gray(split: str = "train", image_size: int = 32) -> Dict[str, Tensor]:
    """Paired: the grey levels of a photo crop (``image``, 1 channel, ITU-R 601 luma) and the colour crop
    (``target``, RGB), from the crops of ``photos``."""
    d = load_photos(split, image_size)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return {"image": (d["image"] * luma).sum(1, keepdim=True).contiguous(), "target": d["image"],
            "label": d["label"]}


def load_digits_inverted(split: str = "train", image_size: int = 32) -> Dict[str, Tensor]:
    """Unpaired: light digits on a dark ground (``image``) and dark digits on a light ground
    (``image_b``, other rows of the same split, inverted)."""
    d = load_digits(split, image_size)
    order = _unpaired_order(len(d["image"]), split)
    return {"image": d["image"], "label": d["label"],
            "image_b": (-d["image"][order]).contiguous(), "label_b": d["label"][order]}


def load_photos_unpaired(split: str = "train", image_size: int = 32) -> Dict[str, Tensor]:
    """Unpaired: crops of the first photograph (china, ``image``) and of the second (flower, ``image_b``)."""
    d = load_photos(split, image_size)
    a, b = d["image"][d["label"] == 0], d["image"][d["label"] == 1]
    n = min(len(a), len(b))
    return {"image": a[:n].contiguous(), "image_b": b[_unpaired_order(n, split)].contiguous()}


def load_digits_domains(split: str = "train", image_size: int = 32) -> Dict[str, Tensor]:
    """Multi-domain (StarGAN): each digit drawn in RGB with three independent binary attributes
    (``domain``, [N, 3] float in {0, 1}: DOMAIN_ATTRIBUTES = thick strokes (3x3 dilation at 32 px),
    red strokes (else white), slanted (sheared 0.3)), each attribute on with probability 1/2."""
    d = load_digits(split, _BASE)
    x = d["image"]
    rng = np.random.RandomState({"train": 21, "test": 22}[split])
    domain = torch.from_numpy(rng.randint(0, 2, size=(len(x), len(DOMAIN_ATTRIBUTES))).astype(np.float32))
    thick, red, slanted = (domain[:, i].bool().view(-1, 1, 1, 1) for i in range(3))
    x = torch.where(thick, _dilate(x), x)
    x = torch.where(slanted, _slant(x), x)
    ink = (x + 1) / 2                                               # stroke coverage in [0, 1]
    colour = torch.where(red, torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1),
                         torch.ones(1, 3, 1, 1))                     # stroke colour in [-1, 1]
    rgb = -1 + ink * (colour + 1)                                    # on a black ground
    return {"image": _resize(rgb, image_size), "label": d["label"], "domain": domain}


DATASETS.update(digits_thick=load_digits_thick, photos_gray=load_photos_gray, digits_inverted=load_digits_inverted,
                photos_unpaired=load_photos_unpaired, digits_domains=load_digits_domains)
