"""Reference implementations of the models that use the fused ops, one file per model.

    genkernels.models.names()                        # registered model names
    genkernels.models.build("vae", preset="digits", lr=1e-3)
    genkernels.models.load("runs/vae")              # a trained model from a checkpoint directory

Each model is a genkernels.models.base.Model subclass with a dataclass config and named presets.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Dict, List, Optional, Union

from .base import Config, Model

# model name -> module of genkernels.models that defines it (imported on first use)
# (or the class itself, for models registered at run time with register())
_REGISTRY: Dict[str, Union[str, type]] = {
    "dcgan": "dcgan",
    "cgan": "cgan",
    "progan": "progan",
    "stylegan": "stylegan",
    "autoencoder": "autoencoder",
    "vae": "vae",
    "vqvae": "vqvae",
    "pix2pix": "pix2pix",
    "cyclegan": "cyclegan",
    "stargan": "stargan",
    "ddpm": "ddpm",
    "ddim": "ddim",
    "cfg": "cfg",
    "ldm": "ldm",
    "stable_diffusion": "stable_diffusion",
}


def names() -> List[str]:
    return list(_REGISTRY)


def model_class(name: str) -> type:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}")
    if isinstance(_REGISTRY[name], type):
        return _REGISTRY[name]
    module = importlib.import_module(f".{_REGISTRY[name]}", __name__)
    cls = next((c for c in vars(module).values()
                if isinstance(c, type) and issubclass(c, Model) and c.name == name), None)
    if cls is None:
        raise ImportError(f"genkernels.models.{_REGISTRY[name]} defines no Model named {name!r}")
    return cls


def make_config(name: str, preset: str = "digits", **overrides: Any) -> Config:
    """The config of `name` with `preset` applied, then `overrides` (unknown keys are a ValueError)."""
    cls = model_class(name)
    if preset not in cls.presets:
        raise ValueError(f"unknown preset {preset!r} for model {name!r}; known: {', '.join(cls.presets)}")
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"model {name!r} has no config key {', '.join(map(repr, bad))}")
    return cls.Config(**{**cls.presets[preset], **overrides})


def build(name: str, preset: str = "digits", **overrides: Any) -> Model:
    """A freshly initialised model `name` with `preset` and field `overrides`."""
    model = model_class(name)(make_config(name, preset, **overrides))
    model.preset = preset      # recorded in checkpoints
    return model


def register(cls: type) -> type:
    """Register a Model subclass defined outside this package under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Model)) or not cls.name:
        raise TypeError(f"cls must be a Model subclass with a name, got {cls!r}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a model named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a model added with register()."""
    if not isinstance(_REGISTRY.get(name), type):
        raise ValueError(f"{name!r} was not added with register()")
    del _REGISTRY[name]


def load(checkpoint_dir: str, *, name: Optional[str] = None, device: Any = "cpu", ema: bool = True) -> Model:
    """The model trained into `checkpoint_dir` (genkernels.train.fit / `genkernels train`), in eval mode on
    `device`, with its EMA weights when it has them and `ema`. With `name`, a checkpoint of another model
    is an error. Errors (missing, truncated, corrupt, foreign) are genkernels.checkpoint.CheckpointError,
    a ValueError."""
    from ..checkpoint import load_model
    return load_model(checkpoint_dir, name=name, device=device, use_ema=ema)


def load_diffusers_unet(m, config=None):
    """Our UNet from a diffusers UNet2DConditionModel (see genkernels.models.unet.load_diffusers_unet)."""
    from .unet import load_diffusers_unet as _load
    return _load(m, config)


def load_diffusers_vae(m, config=None, **overrides):
    """Our VAE from a diffusers AutoencoderKL, an instance or its state dict + config (genkernels.models.vae)."""
    from .vae import load_diffusers_vae as _load
    return _load(m, config, **overrides)


def load_diffusers_vq(m, config=None, **overrides):
    """Our VQVAE from a diffusers VQModel, an instance or its state dict + config (genkernels.models.vqvae)."""
    from .vqvae import load_diffusers_vq as _load
    return _load(m, config, **overrides)


def load_clip_text_encoder(m, config=None):
    """Our CLIP text encoder from a transformers CLIPTextModel, an instance or its state dict + config
    (genkernels.models.clip)."""
    from .clip import load_clip_text_encoder as _load
    return _load(m, config)


__all__ = ["Config", "Model", "build", "load", "make_config", "model_class", "names", "register", "unregister",
           "load_diffusers_unet", "load_diffusers_vae", "load_diffusers_vq",
           "load_clip_text_encoder"]
