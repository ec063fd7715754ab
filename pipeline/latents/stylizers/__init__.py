"""Per-frame stylizers (the frame-by-frame baseline), their config dataclasses, and a builder by name."""

from __future__ import annotations

from typing import Any

import torch

from pipeline.latents.codecs import load_codec
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


def resolve_codec(name: str, codec: str | None = None) -> str:
    """The codec name of stylizer ``name``'s latent space: ``codec``, checked against the stylizer's ``codecs``
    (None: its default, the first); a one-line ValueError naming the choices."""
    stylizer_config_class(name)  # unknown names: the one-line error
    choices = STYLIZERS[name][0].codecs
    if codec is None:
        return choices[0]
    if codec not in choices:
        raise ValueError(f"stylizer {name} works with codec {' or '.join(choices)}, not {codec!r}"
                         + (" (it decodes with its model's own VAE)" if STYLIZERS[name][0].owns_codec else ""))
    return codec


def build_latent_space(name: str, config: Any | None = None, codec: str | None = None, *,
                       device: str | torch.device = "cpu", precision: str = "auto") -> Stylizer:
    """Stylizer ``name`` (``config``: its config dataclass, None: the defaults) on the codec named ``codec``
    (``resolve_codec``); a stylizer that brings its own codec (diffusest: its model's VAE) loads it itself.
    ``precision``: the loaded codec's compute precision (``load_codec``)."""
    codec = resolve_codec(name, codec)
    loaded = None if STYLIZERS[name][0].owns_codec else load_codec(codec, device=device, precision=precision)
    return build_stylizer(name, config, codec=loaded, device=device)


__all__ = ["STYLIZERS", "Stylizer", "build_latent_space", "build_stylizer", "resolve_codec", "stylizer_config_class"]
