"""Drop-in normalisation modules backed by the fused ops."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import group_norm_silu


class GroupNormSiLU(nn.GroupNorm):
    """``nn.Sequential(nn.GroupNorm(G, C, eps, affine), nn.SiLU())`` in one fused op.

    Subclasses ``nn.GroupNorm``, so the parameters, the state_dict keys (``weight``, ``bias``) and
    ``load_state_dict`` from an existing GroupNorm are the same. ``act=None`` gives a plain GroupNorm.
    ``forward(x, scale=None, shift=None)`` also takes an AdaGN / time-embedding FiLM ([N, C] each):
    ``silu(group_norm(x) * (1 + scale) + shift)``.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 act: str | None = "silu", device=None, dtype=None):
        super().__init__(num_groups, num_channels, eps, affine, device=device, dtype=dtype)
        if act not in ("silu", None):
            raise ValueError(f"GroupNormSiLU: `act` must be 'silu' or None, got {act!r}")
        self.act = act

    @classmethod
    def from_group_norm(cls, gn: nn.GroupNorm, act: str | None = "silu") -> "GroupNormSiLU":
        """A fused module sharing `gn`'s parameters (no copy)."""
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.num_groups, m.num_channels, m.eps, m.affine = gn.num_groups, gn.num_channels, gn.eps, gn.affine
        m.weight, m.bias = gn.weight, gn.bias
        m.act = act
        return m

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                shift: torch.Tensor | None = None) -> torch.Tensor:
        return group_norm_silu(x, self.num_groups, self.weight, self.bias, self.eps,
                               scale=scale, shift=shift, act=self.act)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", act={self.act!r}"
