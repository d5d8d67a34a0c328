"""Checkpoints: one directory, no pickle anywhere.

    out/checkpoint.safetensors   every tensor (model "model.*", EMA "ema.*", optimizer state "optim.<phase>.<i>.<key>",
                                 RNG states "rng.*") and, in its metadata, everything else as JSON
    out/config.json              {"model", "preset", "config"}      (copies of that metadata, for people and tools)
    out/state.json               {"step", "seed", "world_size", "time", ...}

The safetensors file is the commit point: it is written to a temporary file in the same directory,
flushed to disk and renamed over the old one (``os.replace``, atomic on POSIX), so a crash or a failing
write at any moment leaves the previous checkpoint whole. The JSON files are renamed into place after
it; readers take everything from the safetensors file, so a crash between the renames costs nothing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import torch

Tensor = torch.Tensor

FORMAT = "genkernels-checkpoint-1"
WEIGHTS = "checkpoint.safetensors"
CONFIG = "config.json"
STATE = "state.json"
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be used (missing, truncated, corrupt, another model)."""


# ---------------------------------------------------------------- atomic writes
def atomic_write(path: str, blob: bytes) -> None:
    """Write `blob` to `path` so that `path` is either the old file or the whole new one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            for i in range(0, len(blob), _CHUNK):
                f.write(blob[i: i + _CHUNK])
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:   # make the rename itself durable (not possible on every file system)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)


# ---------------------------------------------------------------- flattening
def flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    """An optimizer's state_dict as tensors ``{prefix}.{param index}.{key}`` and a JSON-able rest."""
    sd = opt.state_dict()
    tensors, extra = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = val
            else:
                extra.setdefault(str(idx), {})[key] = val
    groups = []
    for g in sd["param_groups"]:
        g = dict(g)
        for k, v in g.items():
            if isinstance(v, Tensor):   # e.g. a tensor lr: stored as a tensor, named in the JSON
                tensors[f"{prefix}.group{len(groups)}.{k}"] = v
                g[k] = {"tensor": f"{prefix}.group{len(groups)}.{k}"}
            elif isinstance(v, tuple):
                g[k] = {"tuple": list(v)}
        groups.append(g)
    return tensors, {"param_groups": groups, "state_extra": extra}


def unflatten_optimizer(prefix: str, tensors: Dict[str, Tensor], meta: Dict[str, Any]) -> Dict[str, Any]:
    state: Dict[int, Dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith(prefix + ".") and not name[len(prefix) + 1:].startswith("group"):
            idx, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[key] = val
    for idx, extra in meta["state_extra"].items():
        state.setdefault(int(idx), {}).update(extra)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        for k, v in g.items():
            if isinstance(v, dict) and "tensor" in v:
                g[k] = tensors[v["tensor"]]
            elif isinstance(v, dict) and "tuple" in v:
                g[k] = tuple(v["tuple"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def _plain(t: Tensor) -> Tensor:
    # safetensors wants contiguous CPU tensors that share no memory with each other
    return t.detach().to("cpu", copy=True).contiguous()


# ---------------------------------------------------------------- save / read
def save(directory: str, model, *, ema: Optional[Dict[str, Tensor]] = None,
         optimizers: Optional[Dict[str, torch.optim.Optimizer]] = None,
         rng: Optional[Dict[str, Tensor]] = None, state: Optional[Dict[str, Any]] = None) -> None:
    """Write a checkpoint of `model` (a genkernels Model) into `directory` (created if needed).
    ema: EMA tensors by parameter name; rng: named uint8 RNG state tensors; state: JSON-able extras."""
    from safetensors.torch import save as st_save

    os.makedirs(directory, exist_ok=True)
    tensors = {f"model.{k}": _plain(v) for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": _plain(v) for k, v in (ema or {}).items()})
    tensors.update({f"rng.{k}": _plain(v) for k, v in (rng or {}).items()})
    optim_meta = {}
    for phase, opt in (optimizers or {}).items():
        t, m = flatten_optimizer(f"optim.{phase}", opt)
        tensors.update({k: _plain(v) for k, v in t.items()})
        optim_meta[phase] = m
    config = {"model": model.name, "preset": getattr(model, "preset", None), "config": model.config.to_dict()}
    state = dict(state or {})
    meta = {"format": FORMAT, "config": _json(config), "state": _json(state), "optim": _json(optim_meta)}
    atomic_write(os.path.join(directory, WEIGHTS), st_save(tensors, metadata=meta))
    atomic_write(os.path.join(directory, CONFIG), (_json(config) + "\n").encode())
    atomic_write(os.path.join(directory, STATE), (_json(state) + "\n").encode())


@dataclasses.dataclass
class Checkpoint:
    directory: str
    model: str                      # registry name
    preset: Optional[str]
    config: Dict[str, Any]
    state: Dict[str, Any]
    optim: Dict[str, Any]           # phase -> JSON part of the optimizer state
    tensors: Dict[str, Tensor]

    def group(self, prefix: str) -> Dict[str, Tensor]:
        """Tensors named ``prefix.*``, with the prefix removed."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}

    def optimizer_state(self, phase: str) -> Dict[str, Any]:
        if phase not in self.optim:
            raise CheckpointError(f"checkpoint {self.directory} has no optimizer state for phase {phase!r}")
        return unflatten_optimizer(f"optim.{phase}", self.tensors, self.optim[phase])


def exists(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, WEIGHTS))


def read(directory: str, device: Any = "cpu") -> Checkpoint:
    """Read a checkpoint directory (no unpickling). CheckpointError names what is wrong."""
    from safetensors import safe_open

    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint directory {directory!r} does not exist")
    path = os.path.join(directory, WEIGHTS)
    if not os.path.isfile(path):
        raise CheckpointError(f"{directory!r} holds no {WEIGHTS} (not a genkernels checkpoint)")
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:   # safetensors raises its own error types for every kind of damage
        raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a genkernels checkpoint (format {meta.get('format')!r})")
    try:
        config, state, optim = (json.loads(meta[k]) for k in ("config", "state", "optim"))
        return Checkpoint(directory, config["model"], config.get("preset"), config["config"], state, optim, tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has damaged metadata ({type(e).__name__}: {e})") from None


def config_from_dict(cls: type, values: Dict[str, Any]):
    """``cls.Config(**values)`` with JSON lists turned back into tuples where the field's default is one.
    Keys the config does not have are a CheckpointError."""
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    bad = sorted(set(values) - set(fields))
    if bad:
        raise CheckpointError(f"checkpoint config has keys model {cls.name!r} does not: {', '.join(bad)}")
    out = {}
    for k, v in values.items():
        f = fields[k]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out[k] = tuple(v) if isinstance(v, list) and isinstance(default, tuple) else v
    return cls.Config(**out)


def load_model_state(model, ckpt: Checkpoint, use_ema: bool = True) -> None:
    """Load the checkpoint's weights into `model`; with use_ema, the EMA weights over their modules."""
    sd = ckpt.group("model")
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt.directory} does not fit model {model.name!r}: "
                              f"{str(e).splitlines()[0]}") from None
    ema = ckpt.group("ema")
    if use_ema and ema:
        missing = sorted(set(ema) - set(sd))
        if missing:
            raise CheckpointError(f"checkpoint {ckpt.directory} has EMA tensors of no parameter: {missing[:3]}")
        with torch.no_grad():
            params = dict(model.state_dict(keep_vars=True))
            for k, v in ema.items():
                params[k].copy_(v)


def load_model(directory: str, name: Optional[str] = None, device: Any = "cpu", use_ema: bool = True):
    """The model saved in `directory` (EMA weights when present and use_ema), in eval mode on `device`.
    With `name`, a checkpoint of another model is a CheckpointError."""
    from . import models

    ckpt = read(directory)
    if name is not None and ckpt.model != name:
        raise CheckpointError(f"{directory} holds a checkpoint of model {ckpt.model!r}, not {name!r}")
    try:
        cls = models.model_class(ckpt.model)
    except ValueError as e:
        raise CheckpointError(f"{directory}: {e}") from None
    model = cls(config_from_dict(cls, ckpt.config))
    model.preset = ckpt.preset
    load_model_state(model, ckpt, use_ema)
    return model.to(device).eval()


__all__ = ["Checkpoint", "CheckpointError", "atomic_write", "config_from_dict", "exists", "load_model",
           "load_model_state", "read", "save"]
