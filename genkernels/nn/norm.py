"""Drop-in normalisation modules backed by the fused ops."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import adain, group_norm_silu


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


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` on the fused normalisation kernels (same parameters and state_dict keys).

    Instance norm is group norm with one channel per group. Running statistics
    (``track_running_stats=True``) take torch's own path, since they update buffers.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.track_running_stats or x.dim() != 4:
            return super().forward(x)
        return group_norm_silu(x, x.shape[1], self.weight, self.bias, self.eps, act=None)


class AdaIN(nn.Module):
    """StyleGAN's adaptive instance norm: a learned affine map from a style vector w [N, style_dim]
    to a per-channel scale and bias, applied to the instance-normalised x.

    The projection's bias starts at (1, 0) so a fresh layer is a plain instance norm.
    """

    def __init__(self, num_features: int, style_dim: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.style = nn.Linear(style_dim, 2 * num_features)
        with torch.no_grad():
            self.style.bias[:num_features].fill_(1.0)
            self.style.bias[num_features:].zero_()

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, bias = self.style(w).chunk(2, dim=1)
        return adain(x, scale, bias, self.eps)
