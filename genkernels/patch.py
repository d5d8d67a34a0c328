"""Swap the fused ops into a model you already have, in place: ``genkernels.patch`` / ``genkernels.unpatch``.

    report = genkernels.patch(pipe)        # a diffusers pipeline, a diffusers model or any nn.Module
    print(report)                          # what was patched, by kind; what was left and why
    genkernels.unpatch(pipe)               # the original modules, processors and scheduler again

A replacement is made only where the code it replaces is known to compute the same function, checked
structurally (exact module types, the forward that is actually called, activation types, no hooks or
per-instance ``forward`` that the swap would bypass), never from names:

| kind | where | becomes |
|---|---|---|
| ``resnet_block`` | diffusers ``ResnetBlock2D`` with plain GroupNorms and a SiLU nonlinearity | ``FusedResnetBlock2D`` (class swap): ``group_norm_silu``, time scale/shift fused for ``scale_shift`` |
| ``norm_out`` | ``conv_norm_out`` + ``conv_act`` of diffusers' UNets and VAE encoder/decoders | ``GroupNormSiLU`` + ``nn.Identity`` |
| ``group_norm_silu`` | ``nn.GroupNorm`` directly followed by ``nn.SiLU`` in an ``nn.Sequential`` | ``GroupNormSiLU`` + ``nn.Identity`` |
| ``attention`` | diffusers ``Attention`` on ``AttnProcessor2_0`` / ``AttnProcessor`` | ``genkernels.diffusers.AttnProcessor`` (calls with a mask go to the old processor) |
| ``multihead_attention`` | ``nn.MultiheadAttention`` without bias_k/v or zero-attn | class swap: ``attention`` (see ``MultiheadAttention``) |
| ``instance_norm`` | ``nn.InstanceNorm2d`` without running statistics | ``genkernels.nn.InstanceNorm2d`` (the adain kernel family) |
| ``vq_quantizer`` | diffusers ``VectorQuantizer`` | ``FusedVectorQuantizer`` (class swap): ``vq_nearest`` |
| ``scheduler`` | a pipeline's diffusers ``DDIMScheduler`` / ``DDPMScheduler`` | ``genkernels.nn`` scheduler (one fused step) |
| ``conv2d`` / ``linear`` | plain ``nn.Conv2d`` / ``nn.Linear`` inside a diffusers model (``ModelMixin``) | class swap: ``genkernels.models.onednn`` (float32 CPU inference: few output rows on genkernels' ``conv_rows`` kernel, else oneDNN on weights reordered once or F.linear, by shape; convolutions return channels_last) |

Parameters are never copied: replacements share the original ``Parameter`` objects, so ``state_dict`` keys,
optimizer state and ``model.to(...)`` work unchanged. Class swaps keep the module object itself.

Classifier-free guidance: ``StableDiffusionPipeline``'s loop combines the [uncond; cond] outputs itself
(chunk, then ``uncond + g * (cond - uncond)``, optionally rescaled) before it calls ``scheduler.step`` with
the guided output, so the fused CFG step (``step(..., guidance_scale=g)``) has nothing to fuse there; the
patch swaps the step only. Loops that call the step with the batched output can pass ``guidance_scale``.

``backend``: "auto" follows the process-wide choice (``genkernels.use_backend``); another name is checked
against the model's device and selected around each forward of the patched model(s) and each scheduler
step (eager calls; under ``torch.compile`` the process-wide backend applies).
"""
from __future__ import annotations

import functools
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .backend import BACKENDS, backend_error, use_backend
from .models import onednn
from .nn import DDIMScheduler, DDPMScheduler, GroupNormSiLU, InstanceNorm2d
from .ops.attention import attention

# the fused ops, and "onednn": diffusers models' convolutions and linear layers on reordered weights
OPS = ("group_norm_silu", "adain", "attention", "vq_nearest", "ddim_step", "ddpm_step", "onednn")
KIND_OP = {"resnet_block": "group_norm_silu", "norm_out": "group_norm_silu", "group_norm_silu": "group_norm_silu",
           "instance_norm": "adain", "attention": "attention", "multihead_attention": "attention",
           "vq_quantizer": "vq_nearest", "scheduler": "ddim_step/ddpm_step", "conv2d": "onednn", "linear": "onednn"}
_STATE = "_genkernels_patch"  # the undo records, kept on the patched object
_NOTES = {
    "attention": "attention: calls with an attention_mask run the replaced diffusers processor",
    "multihead_attention": ("multihead_attention: calls with need_weights=True (torch's default), attn_mask, "
                            "is_causal, a float key_padding_mask or dropout in training run torch's forward"),
    "conv2d": "conv2d: float32 CPU inference returns channels_last tensors (the same values; .contiguous() for NCHW)",
    "scheduler": ("scheduler: a pipeline loop that combines [uncond; cond] itself (StableDiffusionPipeline) calls "
                  "the fused step with the guided output; CFG is fused only where a loop passes guidance_scale"),
}


# ------------------------------------------------------------------------------------------- report
@dataclass
class PatchReport:
    """What ``patch`` did: ``patched`` [(path, kind)], ``left`` [(path, kind, reason)], and ``notes``:
    calls that a patched module hands back to the original code at run time."""
    patched: List[Tuple[str, str]] = field(default_factory=list)
    left: List[Tuple[str, str, str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def counts(self) -> Dict[str, int]:
        return dict(Counter(kind for _, kind in self.patched))

    def to_dict(self) -> dict:
        return {"patched": self.counts(),
                "patched_modules": [{"module": p, "kind": k} for p, k in self.patched],
                "left": [{"module": p, "kind": k, "reason": r} for p, k, r in self.left], "notes": list(self.notes)}

    def __len__(self) -> int:
        return len(self.patched)

    def __str__(self) -> str:
        lines = [f"genkernels.patch: {len(self.patched)} patched, {len(self.left)} left"]
        for kind, n in sorted(self.counts().items()):
            lines.append(f"  patched {kind:<20} {n:4d}  ({KIND_OP[kind]})")
        by_reason = Counter((k, r) for _, k, r in self.left)
        for (kind, reason), n in sorted(by_reason.items()):
            first = next(p for p, k, r in self.left if (k, r) == (kind, reason))
            lines.append(f"  left    {kind:<20} {n:4d}  {reason} (e.g. {first or '<root>'})")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# ------------------------------------------------------------------------------ nn.MultiheadAttention
class MultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with the attention on ``genkernels.attention`` (same parameters).

    Runs the fused path for batched inputs with ``need_weights=False`` (as torch's own fast path and
    ``nn.TransformerEncoderLayer`` call it), no ``attn_mask``/``is_causal``, a boolean or absent
    ``key_padding_mask``, and no attention dropout in effect; other calls run torch's forward. A query
    whose keys are all masked gives zeros here (torch gives NaN)."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if (need_weights or attn_mask is not None or is_causal or query.dim() != 3
                or (key_padding_mask is not None and key_padding_mask.dtype != torch.bool)
                or (self.training and self.dropout > 0)):
            return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                                   average_attn_weights, is_causal)
        if not self.batch_first:  # [L, B, E] -> [B, L, E] views; the kernel reads the strides
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        E = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else b.split(E)
        if self._qkv_same_embed_dim:
            if query is key and key is value:
                q, k, v = F.linear(query, self.in_proj_weight, b).split(E, dim=-1)
            else:
                wq, wk, wv = self.in_proj_weight.split(E)
                q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
        else:
            q = F.linear(query, self.q_proj_weight, bq)
            k = F.linear(key, self.k_proj_weight, bk)
            v = F.linear(value, self.v_proj_weight, bv)
        out = attention(q, k, v, key_padding_mask=key_padding_mask, heads=self.num_heads)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.out_proj(out), None


# ------------------------------------------------------------------------------------------- checks
def _bypassed(*mods: nn.Module) -> Optional[str]:
    """Why replacing these modules (or calling around their forward) would change behaviour."""
    for m in mods:
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return f"{type(m).__name__} has hooks"
        if "forward" in m.__dict__:
            return f"{type(m).__name__} has a per-instance forward (e.g. an offload hook)"
    return None


def _gn_silu_pair(norm, act) -> Optional[str]:
    """None when (norm, act) is exactly nn.GroupNorm -> nn.SiLU that a fused call may replace."""
    if type(norm) is not nn.GroupNorm:
        return f"norm is {type(norm).__name__}, not nn.GroupNorm"
    if type(act) is not nn.SiLU:
        return f"activation is {type(act).__name__}, not nn.SiLU"
    return _bypassed(norm, act)


class _Diffusers:
    """The diffusers classes the patch knows (imported only when diffusers already is)."""

    def __init__(self):
        from diffusers import ModelMixin
        from diffusers.models import attention_processor as ap
        from diffusers.models.autoencoders import vae
        from diffusers.models.resnet import ResnetBlock2D
        from diffusers.models.unets.unet_2d import UNet2DModel
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
        from diffusers.schedulers import DDIMScheduler as DDIM, DDPMScheduler as DDPM

        from . import diffusers as gkd
        self.gkd, self.ModelMixin = gkd, ModelMixin
        self.ResnetBlock2D, self.Attention, self.VectorQuantizer = ResnetBlock2D, ap.Attention, vae.VectorQuantizer
        self.sdpa_processor, self.classic_processor = ap.AttnProcessor2_0, ap.AttnProcessor
        # forwards that call conv_act(conv_norm_out(x)) with nothing in between (GroupNorm configs)
        self.norm_out_owners = (UNet2DConditionModel, UNet2DModel, vae.Encoder, vae.Decoder, vae.MaskConditionDecoder)
        self.schedulers = {DDIM: DDIMScheduler, DDPM: DDPMScheduler}


def _diffusers() -> Optional[_Diffusers]:
    if "diffusers" not in sys.modules:  # a model holding diffusers modules has imported it
        return None
    return _Diffusers()


# ------------------------------------------------------------------------------------------- patching
class _Patcher:
    def __init__(self, ops: set, report: PatchReport, records: list):
        self.ops, self.report, self.records = ops, report, records
        self.d = _diffusers()

    def wants(self, kind: str) -> bool:
        return KIND_OP[kind] in self.ops

    def done(self, path: str, kind: str):
        self.report.patched.append((path, kind))
        note = _NOTES.get(kind)
        if note and note not in self.report.notes:
            self.report.notes.append(note)

    def leave(self, path: str, kind: str, reason: str):
        self.report.left.append((path, kind, reason))

    def swap_class(self, m: nn.Module, cls: type):
        self.records.append(("class", m, type(m)))
        m.__class__ = cls

    def set_child(self, owner: nn.Module, name: str, new: nn.Module):
        old = owner._modules[name]
        new.train(old.training)
        self.records.append(("child", owner, name, old))
        owner._modules[name] = new

    def module(self, root: nn.Module, prefix: str = ""):
        considered = set()  # ids of GroupNorms that belong to a structure handled (or declined) above
        d = self.d
        # the layers of diffusers models, whose forwards accept channels_last activations (tested)
        in_diffusers = ({id(s) for m in root.modules() if isinstance(m, d.ModelMixin) for s in m.modules()}
                        if d is not None and self.wants("conv2d") else set())
        for path, m in list(root.named_modules()):
            path = f"{prefix}.{path}".strip(".") if prefix else path
            t = type(m)
            if t in onednn.SWAPS and id(m) in in_diffusers:
                self.reordered(path, m)
            if d is not None:
                if t is d.ResnetBlock2D:
                    considered.update((id(m.norm1), id(m.norm2)))
                    self.resnet(path, m)
                elif t is d.Attention:
                    considered.update(id(x) for x in (m.group_norm, m.norm_cross) if x is not None)
                    self.attention(path, m)
                elif t is d.VectorQuantizer and self.wants("vq_quantizer"):
                    self.swap_class(m, d.gkd.FusedVectorQuantizer)
                    self.done(path, "vq_quantizer")
                if t in d.norm_out_owners and isinstance(getattr(m, "conv_norm_out", None), nn.Module):
                    considered.add(id(m.conv_norm_out))
                    self.pair(path, m, "conv_norm_out", "conv_act", "norm_out")
            if isinstance(m, nn.Sequential) and t.forward is nn.Sequential.forward:
                names = list(m._modules)
                for a, b in zip(names, names[1:]):
                    if type(m._modules[a]) is nn.GroupNorm and type(m._modules[b]) is nn.SiLU:
                        considered.add(id(m._modules[a]))
                        self.pair(path, m, a, b, "group_norm_silu")
            if t is nn.InstanceNorm2d and self.wants("instance_norm"):
                if m.track_running_stats:
                    self.leave(path, "instance_norm", "track_running_stats=True (running statistics)")
                else:
                    self.swap_class(m, InstanceNorm2d)
                    self.done(path, "instance_norm")
            if t is nn.MultiheadAttention and self.wants("multihead_attention"):
                self.mha(path, m)
            if t is nn.GroupNorm and id(m) not in considered and self.wants("group_norm_silu"):
                self.leave(path, "group_norm", "not followed by SiLU in an nn.Sequential or a known diffusers block")

    def reordered(self, path: str, m: nn.Module):
        kind = "conv2d" if type(m) is nn.Conv2d else "linear"
        why = _bypassed(m)
        if why:
            return self.leave(path, kind, why)
        self.records.append(("onednn", m, type(m)))
        m.__class__ = onednn.SWAPS[type(m)]
        self.done(path, kind)

    def pair(self, path: str, owner: nn.Module, norm: str, act: str, kind: str):
        if not self.wants(kind):
            return
        where = f"{path}.{norm}".strip(".")
        why = _gn_silu_pair(owner._modules.get(norm), owner._modules.get(act))
        if why:
            return self.leave(where, kind, why)
        gn = owner._modules[norm]
        self.set_child(owner, norm, GroupNormSiLU.from_group_norm(gn))
        self.set_child(owner, act, nn.Identity())
        self.done(where, kind)

    def resnet(self, path: str, m: nn.Module):
        if not self.wants("resnet_block"):
            return
        why = (_gn_silu_pair(m.norm1, m.nonlinearity) or _gn_silu_pair(m.norm2, m.nonlinearity)
               or _bypassed(m))
        if why is None and m.time_embedding_norm == "scale_shift" and m.time_emb_proj is None:
            why = "scale_shift without a time_emb_proj"
        if why:
            return self.leave(path, "resnet_block", why)
        self.swap_class(m, self.d.gkd.FusedResnetBlock2D)
        self.done(path, "resnet_block")

    def attention(self, path: str, m: nn.Module):
        if not self.wants("attention"):
            return
        d, proc = self.d, m.processor
        why = None
        if type(proc) not in (d.sdpa_processor, d.classic_processor):
            why = f"processor {type(proc).__name__} (only AttnProcessor2_0 / AttnProcessor are replaced)"
        elif m.added_kv_proj_dim is not None:
            why = "added_kv_proj_dim (extra key/value projections)"
        elif m.to_k is None or m.to_v is None or m.to_out is None or len(m.to_out) != 2:
            why = "no to_k/to_v/to_out projections"
        elif not m.to_q.out_features == m.to_k.out_features == m.to_v.out_features:
            why = "kv_heads != heads"
        elif m.to_q.out_features % m.heads:
            why = "inner dim not divisible by heads"
        elif (type(proc) is d.sdpa_processor
              and not math.isclose(m.scale, (m.to_q.out_features // m.heads) ** -0.5, rel_tol=1e-6)):
            why = "attn.scale != 1/sqrt(head_dim) (AttnProcessor2_0 ignores attn.scale)"
        elif type(proc) is d.classic_processor and (m.norm_q is not None or m.norm_k is not None):
            why = "AttnProcessor with norm_q/norm_k (that processor does not apply them)"
        if why:
            return self.leave(path, "attention", why)
        self.records.append(("processor", m, proc))
        m.set_processor(d.gkd.AttnProcessor(fallback=proc))
        self.done(path, "attention")

    def mha(self, path: str, m: nn.MultiheadAttention):
        why = None
        if m.bias_k is not None or m.bias_v is not None:
            why = "add_bias_kv=True"
        elif m.add_zero_attn:
            why = "add_zero_attn=True"
        elif m.embed_dim % m.num_heads or m.kdim != m.embed_dim or m.vdim != m.embed_dim:
            why = "kdim/vdim differ from embed_dim"
        elif type(m.out_proj) not in (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear):
            why = f"out_proj is {type(m.out_proj).__name__}"
        else:
            why = _bypassed(m.out_proj)
        if why:
            return self.leave(path, "multihead_attention", why)
        self.swap_class(m, MultiheadAttention)
        self.done(path, "multihead_attention")

    def scheduler(self, owner, name: str, sched):
        d = self.d
        gk_cls = d.schedulers.get(type(sched)) if d is not None else None
        if gk_cls is None:
            return self.leave(name, "scheduler", f"{type(sched).__name__} (only DDIMScheduler / DDPMScheduler)")
        op = "ddim_step" if gk_cls is DDIMScheduler else "ddpm_step"
        if op not in self.ops:
            return
        try:
            new = gk_cls.from_config(sched.config)
        except ValueError as e:  # an option the fused step does not cover (thresholding, learned variance)
            return self.leave(name, "scheduler", str(e))
        self.records.append(("attr", owner, name, sched))
        setattr(owner, name, new)
        self.done(name, "scheduler")
        return new


def _is_pipeline(obj) -> bool:
    return not isinstance(obj, nn.Module) and isinstance(getattr(obj, "components", None), dict)


def _device(modules: Iterable[nn.Module]) -> torch.device:
    for m in modules:
        for p in m.parameters():
            return p.device
    return torch.device("cpu")


class _BackendScope:
    """Selects `name` from a forward pre-hook to the matching forward hook (eager calls only)."""

    def __init__(self, name: str):
        self.name, self.stack = name, []

    def enter(self, *_):
        if not torch.compiler.is_compiling():
            self.stack.append(use_backend(self.name))

    def exit(self, *_):
        if not torch.compiler.is_compiling() and self.stack:
            self.stack.pop().__exit__()

    def wrap_step(self, step):
        @functools.wraps(step)
        def scoped_step(*args, **kwargs):
            with use_backend(self.name):
                return step(*args, **kwargs)
        return scoped_step


def patch(model, ops: Optional[Iterable[str]] = None, backend: str = "auto") -> PatchReport:
    """Swap fused kernels into `model` in place (see the module docstring) and report what was done.

    model: an ``nn.Module`` (any, including diffusers models) or a diffusers pipeline (every module
    component, and its DDIM/DDPM scheduler). ops: restrict to these ops (names from ``OPS``; default all).
    backend: a name from ``genkernels.BACKENDS`` ("auto": the process-wide choice)."""
    if ops is None:
        ops_set = set(OPS)
    else:
        if isinstance(ops, str):
            raise TypeError(f"patch: `ops` must be an iterable of op names, got the string {ops!r}")
        ops_set = set(ops)
        bad = ops_set - set(OPS)
        if bad:
            raise ValueError(f"patch: unknown `ops` {sorted(bad)}; expected names from {OPS}")
    if backend not in BACKENDS:
        raise ValueError(f"patch: unknown `backend` {backend!r}; expected one of {BACKENDS}")
    pipeline = _is_pipeline(model)
    if not pipeline and not isinstance(model, nn.Module):
        raise TypeError(f"patch: `model` must be an nn.Module or a diffusers pipeline, got {type(model).__name__}")
    components = ({k: v for k, v in model.components.items() if v is not None} if pipeline else {"": model})
    modules = {k: v for k, v in components.items() if isinstance(v, nn.Module)}
    if backend != "auto":
        err = backend_error(backend, _device(modules.values()))
        if err:
            raise ValueError(f"patch: `backend` {backend!r} cannot run this model: {err}")

    report, records = PatchReport(), []
    p = _Patcher(ops_set, report, records)
    scope = _BackendScope(backend) if backend != "auto" else None
    for name, comp in components.items():
        if isinstance(comp, nn.Module):
            n = len(report.patched)
            p.module(comp, name)
            if scope is not None and len(report.patched) > n:
                records.append(("hook", comp.register_forward_pre_hook(scope.enter)))
                records.append(("hook", comp.register_forward_hook(scope.exit, always_call=True)))
        elif pipeline and name == "scheduler":
            new = p.scheduler(model, name, comp)
            if new is not None and scope is not None:
                new.step = scope.wrap_step(new.step)
    if records:
        prev = getattr(model, _STATE, None) or []
        setattr(model, _STATE, prev + records)
    return report


def unpatch(model) -> int:
    """Undo every ``patch`` of `model` (latest first): the original classes, child modules, attention
    processors and scheduler objects. Returns the number of changes undone (0 if never patched)."""
    records = getattr(model, _STATE, None) or []
    for rec in reversed(records):
        kind = rec[0]
        if kind == "class":
            rec[1].__class__ = rec[2]
        elif kind == "child":
            rec[1]._modules[rec[2]] = rec[3]
        elif kind == "processor":
            rec[1].set_processor(rec[2])
        elif kind == "attr":
            setattr(rec[1], rec[2], rec[3])
        elif kind == "hook":
            rec[1].remove()
        elif kind == "onednn":
            onednn.restore(rec[1], rec[2])
    if records:
        if isinstance(model, nn.Module):
            delattr(model, _STATE)
        else:
            object.__delattr__(model, _STATE)
    return len(records)
