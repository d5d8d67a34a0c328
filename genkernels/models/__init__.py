"""Reference implementations of the models that use the fused ops, one file per model.

    genkernels.models.names()                        # registered model names
    genkernels.models.build("vae", preset="digits", lr=1e-3)

Each model is a genkernels.models.base.Model subclass with a dataclass config and named presets.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Dict, List

from .base import Config, Model

# model name -> module of genkernels.models that defines it (imported on first use)
_REGISTRY: Dict[str, str] = {
    "dcgan": "dcgan",
    "cgan": "cgan",
    "progan": "progan",
    "stylegan": "stylegan",
}


def names() -> List[str]:
    return list(_REGISTRY)


def model_class(name: str) -> type:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}")
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
    return model_class(name)(make_config(name, preset, **overrides))


__all__ = ["Config", "Model", "build", "make_config", "model_class", "names"]
