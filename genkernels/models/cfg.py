"""Classifier-free guidance (Ho & Salimans 2022) on a class-conditional DDPM, sampled with DDIM.

Training: the UNet gets the class through its class embedding (``num_class_embeds`` = classes + 1); with
probability ``p_uncond`` a label is replaced by the null class (the last index), so one network learns
both eps(x, t, c) and eps(x, t). Sampling: each step runs the UNet once on the batched [x; x] with labels
[null; c], and ``DDIMScheduler.step(..., guidance_scale=w)`` fuses uncond + w (cond - uncond) into the
same ``ddim_step`` kernel as the update. w = 1 is the conditional model alone; w = 0 the unconditional one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

from .. import metrics
from .ddim import DDIM, DDIMConfig
from .ddpm import DIGITS, TINY

Tensor = torch.Tensor


@dataclass
class CFGConfig(DDIMConfig):
    num_classes: int = 10
    p_uncond: float = 0.1          # probability of training on the null class
    guidance: float = 3.0          # default guidance scale of generate()

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.p_uncond <= 1:
            raise ValueError(f"CFGConfig: `p_uncond` must be in [0, 1], got {self.p_uncond}")
        if self.guidance < 0:
            raise ValueError(f"CFGConfig: `guidance` must be >= 0, got {self.guidance}")


class CFG(DDIM):
    name = "cfg"
    description = "Classifier-free guidance: class-conditional UNet with a null class, guidance fused into ddim_step"
    Config = CFGConfig
    presets = {"tiny": TINY, "digits": DIGITS}
    sample_options = {**DDIM.sample_options,
                      "--class": dict(dest="class_label", type=int, help="the class (digit) to draw; default all"),
                      "--guidance": dict(dest="guidance", type=float, help="guidance scale w (default: the config's)")}

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def num_class_embeds(self) -> Optional[int]:
        return self.config.num_classes + 1

    def train_labels(self, batch: Dict[str, Tensor]) -> Tensor:
        labels = batch["label"]
        drop = torch.rand(labels.shape, device=labels.device) < self.config.p_uncond
        return torch.where(drop, torch.full_like(labels, self.null_class), labels)

    def labels_for(self, num: int, class_label: Optional[int] = None, labels: Optional[Tensor] = None) -> Tensor:
        """The classes of num samples: `labels`, or all `class_label`, or 0, 1, ..., 9, 0, ..."""
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long)
            if labels.shape != (num,):
                raise ValueError(f"cfg: `labels` must have shape ({num},), got {tuple(labels.shape)}")
        elif class_label is not None:
            labels = torch.full((num,), int(class_label), dtype=torch.long)
        else:
            labels = torch.arange(num) % self.config.num_classes
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.config.num_classes):
            raise ValueError(f"cfg: class labels must be in [0, {self.config.num_classes - 1}], "
                             f"got {labels.unique().tolist()}")
        return labels

    def denoise(self, sched, x, t, generator, eta: Optional[float] = None, labels: Tensor = None,
                guidance: float = 1.0, **options: Any):
        null = torch.full_like(labels, self.null_class)
        out = self.unet(torch.cat([x, x]), t, class_labels=torch.cat([null, labels]))   # [uncond; cond]
        return sched.step(out, t, x, eta=self._eta(eta), generator=generator, guidance_scale=guidance).prev_sample

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, class_label: Optional[int] = None,
                 guidance: Optional[float] = None, labels: Optional[Tensor] = None, **options: Any) -> Tensor:
        guidance = self.config.guidance if guidance is None else float(guidance)
        if guidance < 0:
            raise ValueError(f"cfg: `guidance` must be >= 0, got {guidance}")
        labels = self.labels_for(num, class_label, labels).to(next(self.parameters()).device)
        return self.sample(num, generator, labels=labels, guidance=guidance, **options)

    @torch.no_grad()
    def evaluate(self, split: str = "test", num: int = 500, generator: Optional[torch.Generator] = None,
                 guidances=(1.0, 3.0, 5.0), **options: Any) -> Dict[str, Any]:
        """FD-digits / KID at the config's guidance, and the classifier's accuracy on the requested classes
        of samples at each of `guidances` (floor: its held-out accuracy; ceiling: chance)."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        out = super().evaluate(split, num, generator, **options)
        n = out["num"]
        labels = self.labels_for(n)
        out["accuracy"] = {}
        for w in guidances:
            images = self.generate(n, generator, guidance=w, labels=labels, **options).float().cpu()
            acc = metrics.digits_accuracy(images, labels)
            out["accuracy"][str(w)] = metrics.bounds("digits_accuracy", acc, num=n, image_size=self.config.image_size)
        return out
