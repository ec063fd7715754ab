"""Per-frame stylizers (the frame-by-frame baseline) and a builder by name."""

from __future__ import annotations

from typing import Any

from pipeline.latents.codecs import load_codec
from pipeline.latents.stylizers.base import Stylizer
from pipeline.latents.stylizers.diffusest import DEFAULT_MODEL, DiffuseSTStylizer
from pipeline.latents.stylizers.latent_wct import LatentWCT, LatentWCTConfig

STYLIZERS = ("latent-wct", "diffusest")


def build_stylizer(name: str, codec=None, alpha: float = 1.0, refine_steps: int = 0, precision: str = "auto",
                   model: str | None = None, blip_diffusion: str | None = None, device: str = "cpu", **diffusest_options: Any) -> Stylizer:
    """The stylizer called ``name`` with its default components.

    latent-wct: on ``codec`` (default taef2 at ``precision``, see ``pipeline.io.precision``), strength
    ``alpha``, ``refine_steps`` of latent optimisation.
    diffusest: Stable Diffusion 1.5 class ``model`` (hub id or local folder; default SD 1.5),
    optional ``blip_diffusion`` checkpoint for the style embedding, and DiffuseSTConfig
    fields as ``diffusest_options`` (e.g. seed, prompt, num_inference_steps).
    """
    if name == "latent-wct":

        return LatentWCT(codec or load_codec("taef2", device=device, precision=precision), LatentWCTConfig(alpha=alpha, refine_steps=refine_steps))
    if name == "diffusest":

        return DiffuseSTStylizer.from_pretrained(model or DEFAULT_MODEL, blip_diffusion=blip_diffusion, device=device,
                                                 **diffusest_options)
    raise ValueError(f"unknown stylizer {name!r}; choose one of {', '.join(STYLIZERS)}")


__all__ = ["STYLIZERS", "Stylizer", "build_stylizer"]
