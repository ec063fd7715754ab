"""Per-frame stylizers (the frame-by-frame baseline) and a builder by name."""

from __future__ import annotations

from pipeline.stylizers.base import Stylizer

STYLIZERS = ("latent-wct", "diffusest")


def build_stylizer(name: str, codec=None, alpha: float = 1.0, refine_steps: int = 0, model: str | None = None,
                   device: str = "cpu", seed: int = 0) -> Stylizer:
    """The stylizer called ``name`` with its default components.

    latent-wct: works on ``codec`` (default taef2), strength ``alpha``.
    diffusest: Stable Diffusion 1.5 class model ``model`` (hub id or local folder).
    """
    if name == "latent-wct":
        from pipeline.codecs import load_codec
        from pipeline.stylizers.latent_wct import LatentWCT, LatentWCTConfig

        return LatentWCT(codec or load_codec("taef2", device=device), LatentWCTConfig(alpha=alpha, refine_steps=refine_steps))
    if name == "diffusest":
        from pipeline.stylizers.diffusest import DiffuseSTStylizer

        return DiffuseSTStylizer.from_pretrained(model, device=device, seed=seed) if model else DiffuseSTStylizer.from_pretrained(device=device, seed=seed)
    raise ValueError(f"unknown stylizer {name!r}; choose one of {', '.join(STYLIZERS)}")


__all__ = ["STYLIZERS", "Stylizer", "build_stylizer"]
