"""What every model gives the trainer, the sampler and the CLI (the only thing they know of a model).

A model is an ``nn.Module`` subclass of :class:`Model` with a ``@dataclass`` config (a subclass of
:class:`Config`) and named presets. Training is a list of *phases* per step; each phase is one loss and
one optimizer step (a VAE has one phase, ``"main"``; a GAN ``"d"`` then ``"g"``). The trainer calls

    for phase in model.phases(step):
        loss, logs = ddp_or_model(batch, phase=phase, step=step)      # Model.forward
        loss.backward(); clip; optimizers[phase].step(); zero_grad
    ema update of model.ema_modules()

so ``forward`` is the training objective (which makes DistributedDataParallel wrap the model as it is).
Randomness during training (noise, timesteps, dropout) comes from torch's global RNG, which the trainer
seeds per rank and saves in checkpoints; sampling takes an explicit ``torch.Generator``.

Batches are dicts of tensors from ``genkernels.data`` (``"image"`` in [-1, 1] NCHW, and where the data set
has them ``"label"`` int64, ``"caption"`` / ``"tokens"``, ``"target"`` for paired data, ...).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

Tensor = torch.Tensor


@dataclass
class Config:
    """Fields every model config has (training defaults that the CLI can override)."""
    data: str = "digits"            # a data set name of genkernels.data (loaded at image_size)
    image_size: int = 32
    in_channels: int = 1
    batch_size: int = 64
    lr: float = 2e-4
    steps: int = 2000
    ema_decay: Optional[float] = None   # None: no EMA copy
    grad_clip: Optional[float] = 1.0    # max global grad norm per phase; None: off

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class Model(nn.Module):
    """Base class of every model in genkernels.models (see the module docstring for the protocol)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""            # one line, shown by `genkernels models`
    Config: ClassVar[type] = Config
    presets: ClassVar[Dict[str, Dict[str, Any]]] = {}   # preset name -> field overrides ("tiny", "digits", ...)
    # extra flags of `genkernels sample MODEL`: flag -> argparse kwargs (with dest = generate()'s keyword),
    # e.g. {"--class": dict(dest="class_label", type=int, help="digit to draw")}
    sample_options: ClassVar[Dict[str, Dict[str, Any]]] = {}

    def __init__(self, config: Config):
        super().__init__()
        self.config = config

    # ------------------------------------------------------------------ training
    def phases(self, step: int) -> Sequence[str]:
        """The optimizer phases run at this step, in order (names of ``optimizers()``)."""
        return ("main",)

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        """One optimizer per phase name."""
        return {"main": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def ema_modules(self) -> List[str]:
        """Names of submodules whose weights the trainer averages (used for sampling / eval)."""
        return []

    def forward(self, batch: Dict[str, Tensor], phase: str = "main", step: int = 0
                ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The loss of one phase on a batch, and named scalars to log (detached by the trainer)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def preview(self, batch: Dict[str, Tensor], generator: torch.Generator) -> Tensor:
        """Images in [-1, 1], [N, C, H, W], for the PNG grid: samples, or inputs beside reconstructions."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, **options: Any) -> Tensor:
        """`genkernels sample`: num images in [-1, 1], [N, C, H, W] (samples; reconstructions of held-out
        images for models that only reconstruct). options: the dests of ``sample_options``."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, split: str = "test", num: int = 500, generator: Optional[torch.Generator] = None
                 ) -> Dict[str, Any]:
        """Quality metrics (genkernels.metrics) on held-out data, with floors / ceilings where defined."""
        raise NotImplementedError
