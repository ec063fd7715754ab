"""Per-frame stylizers (the frame-by-frame baseline), their config dataclasses, and a builder by name."""

from __future__ import annotations

from typing import Any

import torch

from pipeline.latents.stylizers.base import Stylizer
from pipeline.latents.stylizers.diffusest import DiffuseSTConfig, DiffuseSTStylizer
from pipeline.latents.stylizers.latent_wct import LatentWCT, LatentWCTConfig

# name -> (stylizer class, its config dataclass); every class has ``from_config(config, codec, device)``
STYLIZERS: dict[str, tuple[type[Stylizer], type]] = {
    LatentWCT.name: (LatentWCT, LatentWCTConfig),
    DiffuseSTStylizer.name: (DiffuseSTStylizer, DiffuseSTConfig),
}


def stylizer_config_class(name: str) -> type:
    """The config dataclass of stylizer ``name``; a ValueError naming the choices when unknown."""
    if name not in STYLIZERS:
        raise ValueError(f"unknown stylizer {name!r}; choose one of {', '.join(STYLIZERS)}")
    return STYLIZERS[name][1]


def build_stylizer(name: str, config: Any | None = None, *, codec=None,
                   device: str | torch.device = "cpu") -> Stylizer:
    """Stylizer ``name`` with ``config`` (an instance of its config class; None: the defaults) on ``device``.

    latent-wct works on ``codec`` (default taef2 at precision auto); diffusest loads its model and uses the
    model's own VAE, so it takes no codec.
    """
    config_class = stylizer_config_class(name)
    config = config_class() if config is None else config
    if not isinstance(config, config_class):
        raise TypeError(f"stylizer {name!r} takes a {config_class.__name__}, got a {type(config).__name__}")
    return STYLIZERS[name][0].from_config(config, codec=codec, device=device)


__all__ = ["STYLIZERS", "Stylizer", "build_stylizer", "stylizer_config_class"]
