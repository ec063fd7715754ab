"""CLIP image-image similarities with open_clip (Radford et al. 2021; Ilharco et al., OpenCLIP).

``CLIPScorer`` embeds frames (N,3,H,W) in [0,1] with an open_clip model's
image tower (preprocessing as open_clip's own: resize the shorter side to
the model's input size and centre-crop, or squash, bicubic; the model's mean
and std) and returns unit-norm embeddings; similarities are their cosines,
in [-1, 1].

``load_clip(model, pretrained)`` finds the weights: a built-in model name
(default ViT-B-32) with a pretrained tag (default ``openai``: looked up in
the local Hugging Face / open_clip caches first, downloaded only when not
offline) or a local checkpoint file, or an ``local-dir:FOLDER`` /
``hf-hub:ORG/REPO`` model. When the weights cannot be had (offline, not
cached, download failed) it returns ``CLIPUnavailable`` with the reason, so
reports say that CLIP was skipped and why instead of showing numbers of a
random network. Names or tags that do not exist are errors (ValueError), as
is a checkpoint path that does not exist (FileNotFoundError).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import (
    HF_SAFE_WEIGHTS_NAME,
    HF_WEIGHTS_NAME,
    OPENAI_DATASET_MEAN,
    OPENAI_DATASET_STD,
)
from torch import Tensor, nn

from pipeline.io.weights import ENV_OFFLINE

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


def is_offline() -> bool:
    """True when downloads are disabled: ``VSTYLE_OFFLINE`` or ``HF_HUB_OFFLINE`` set to a true value."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in (ENV_OFFLINE, "HF_HUB_OFFLINE"))


@dataclass(frozen=True)
class CLIPUnavailable:
    """CLIP was requested but cannot run; ``reason`` says why (goes into reports instead of numbers)."""

    model: str
    pretrained: str | None
    reason: str

    def describe(self) -> dict[str, Any]:
        return {"status": "skipped", "model": self.model, "pretrained": self.pretrained, "reason": self.reason}


class CLIPScorer(nn.Module):
    """Frozen open_clip image tower: ``embed(images (N,3,H,W) [0,1]) -> (N,D)`` unit-norm embeddings.

    ``model``: an open_clip ``CLIP`` (or any model with ``encode_image`` and
    ``visual.image_size``); ``model_name``/``pretrained``: what it is, for reports.
    """

    def __init__(self, model: nn.Module, model_name: str, pretrained: str | None, batch_size: int = 16) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.model_name = model_name
        self.pretrained = pretrained
        self.batch_size = batch_size
        size = model.visual.image_size
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        self.resize_mode = cfg.get("resize_mode", "shortest")
        self.register_buffer("mean", torch.tensor(cfg.get("mean", OPENAI_DATASET_MEAN)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", OPENAI_DATASET_STD)).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> CLIPScorer:
        """Stay in eval mode."""
        return super().train(False)

    def describe(self) -> dict[str, Any]:
        return {"status": "computed", "model": self.model_name, "pretrained": self.pretrained}

    def preprocess(self, images: Tensor) -> Tensor:
        """(N,3,H,W) [0,1] -> the model's input (N,3,h,w), normalised."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"CLIP expects images (N,3,H,W), got {tuple(images.shape)}")
        target_h, target_w = self.image_size
        height, width = images.shape[-2:]
        if self.resize_mode == "squash":
            images = F.interpolate(images, size=(target_h, target_w), mode="bicubic", align_corners=False, antialias=True)
        else:  # "shortest": scale the shorter side to the input size, then centre-crop
            scale = max(target_h / height, target_w / width)
            size = (max(target_h, round(height * scale)), max(target_w, round(width * scale)))
            images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
            top, left = (size[0] - target_h) // 2, (size[1] - target_w) // 2
            images = images[..., top : top + target_h, left : left + target_w]
        return (images.clamp(0.0, 1.0) - self.mean) / self.std

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Unit-norm image embeddings (N,D) of ``images`` (N,3,H,W) in [0,1], in batches of ``batch_size``."""
        device = self.mean.device
        parts = [
            F.normalize(self.model.encode_image(self.preprocess(chunk.to(device))).float(), dim=-1)
            for chunk in images.split(self.batch_size)
        ]
        return torch.cat(parts)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarities (N,) of unit-norm embeddings ``a`` (N,D) and ``b`` (N,D) or (1,D)."""
    return (a * b).sum(dim=-1)


def _cached_checkpoint(tag_cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """The local file of a pretrained tag in the Hugging Face or open_clip URL cache, or None (no network)."""
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        for name in names:
            found = try_to_load_from_cache(repo_id=repo, filename=name, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    url = tag_cfg.get("url", "")
    if url:
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def _tag_source(tag_cfg: dict[str, Any]) -> str:
    hub = tag_cfg.get("hf_hub", "")
    return f"Hugging Face repo {hub.rstrip('/')}" if hub else tag_cfg.get("url", "an unknown source")


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def load_clip(
    model: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
) -> CLIPScorer | CLIPUnavailable:
    """A ``CLIPScorer`` for open_clip ``model`` with weights ``pretrained`` (tag or checkpoint file).

    ``model`` may also be ``local-dir:FOLDER`` (open_clip_config.json plus a
    checkpoint; ``pretrained`` ignored) or ``hf-hub:ORG/REPO``. Returns
    ``CLIPUnavailable`` when the weights cannot be obtained.
    """
    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:") :])
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"CLIP model folder {folder} has no open_clip_config.json")
        if not any(p.suffix in CHECKPOINT_SUFFIXES for p in folder.iterdir()):
            return CLIPUnavailable(model, None, f"CLIP model folder {folder} holds no checkpoint ({'/'.join(CHECKPOINT_SUFFIXES)})")
        return CLIPScorer(open_clip.create_model(model, device=device), model, str(folder)).to(device)
    if model.startswith("hf-hub:"):
        if is_offline():
            return CLIPUnavailable(model, None, f"offline ({ENV_OFFLINE} or HF_HUB_OFFLINE is set): cannot fetch {model}")
        try:
            return CLIPScorer(open_clip.create_model(model, device=device, cache_dir=cache_dir), model, model).to(device)
        except Exception as error:  # network and hub errors of several libraries
            return CLIPUnavailable(model, None, f"could not load {model}: {_first_line(error)}")
    if open_clip.get_model_config(model) is None:
        raise ValueError(f"unknown open_clip model {model!r}; built-in models include {', '.join(open_clip.list_models()[:12])}, ...")
    if pretrained is None:
        return CLIPUnavailable(model, None, "no pretrained weights given; similarities of a random network mean nothing")
    if Path(pretrained).is_file():
        try:
            network = open_clip.create_model(model, pretrained=pretrained, device=device)
        except (RuntimeError, KeyError) as error:
            raise ValueError(f"{pretrained} is not a checkpoint of open_clip {model}: {_first_line(error)}") from error
        return CLIPScorer(network, model, pretrained).to(device)
    if os.sep in pretrained or Path(pretrained).suffix in CHECKPOINT_SUFFIXES:
        raise FileNotFoundError(f"CLIP checkpoint {pretrained} does not exist")
    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise ValueError(f"unknown pretrained tag {pretrained!r} for {model}; known tags: {tags}")
    cached = _cached_checkpoint(tag_cfg, cache_dir)
    if cached is not None:
        network = open_clip.create_model(
            model, pretrained=cached, device=device, force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            force_preprocess_cfg={k: tag_cfg[k] for k in PREPROCESS_KEYS if k in tag_cfg},
        )
        return CLIPScorer(network, model, pretrained).to(device)
    if is_offline():
        return CLIPUnavailable(
            model, pretrained,
            f"weights {model}/{pretrained} are not in the local cache and downloads are disabled "
            f"({ENV_OFFLINE} or HF_HUB_OFFLINE is set); fetch them from {_tag_source(tag_cfg)} "
            "or pass a local checkpoint file as the pretrained argument",
        )
    try:
        network = open_clip.create_model(model, pretrained=pretrained, device=device, cache_dir=cache_dir)
    except Exception as error:  # network and hub errors of several libraries
        return CLIPUnavailable(model, pretrained, f"could not download {model}/{pretrained} from {_tag_source(tag_cfg)}: {_first_line(error)}")
    return CLIPScorer(network, model, pretrained).to(device)
