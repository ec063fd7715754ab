"""Content-addressed cache of the frame-by-frame baseline latents.

An entry is one safetensors file holding the latents (T,C,h,w) of a clip,
named by the sha256 of its key: the frames' content hash, the style image's
hash, the stylizer's name and config, and the codec's config. The key is
also stored in the file's metadata and checked on every read, together with
the latents' shape and finiteness, so a corrupt, truncated or mismatched
entry is detected and recomputed rather than used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from pipeline.io.files import atomic_output, tensor_digest
from pipeline.latents.stylizers.base import Stylizer

ENV_CACHE = "VSTYLE_CACHE"
log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$VSTYLE_CACHE``, else ``$XDG_CACHE_HOME/vstyle/latents`` (default ``~/.cache``)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(root) / "vstyle" / "latents"


class LatentCache:
    """Baseline latents of (frames, style, stylizer, codec), computed once and reused."""

    def __init__(self, root: str | os.PathLike | None = None, batch_size: int = 8) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.batch_size = batch_size

    @staticmethod
    def key(stylizer: Stylizer, frames: Tensor, style_image: Tensor) -> dict[str, object]:
        """Everything the latents depend on, as a JSON-serialisable dict."""
        return {
            "frames": tensor_digest(frames),
            "style": tensor_digest(style_image),
            "stylizer": stylizer.config(),
            "codec": stylizer.codec.config(),
        }

    def path_for(self, key: dict[str, object]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.root / f"{digest}.safetensors"

    def _read(self, path: Path, key_json: str, expected_shape: tuple[int, ...]) -> Tensor | None:
        """The cached latents at ``path`` if the entry is intact and matches, else None."""
        try:
            with safe_open(path, framework="pt") as entry:
                stored_key = (entry.metadata() or {}).get("key")
                latents = entry.get_tensor("latents")
        except (OSError, ValueError, KeyError, SafetensorError) as error:
            log.warning("latent cache entry %s is unreadable (%s); recomputing", path, error)
            return None
        if stored_key != key_json:
            log.warning("latent cache entry %s belongs to another key; recomputing", path)
            return None
        if tuple(latents.shape) != expected_shape or not torch.isfinite(latents).all():
            log.warning("latent cache entry %s has shape %s or non-finite values; recomputing", path, tuple(latents.shape))
            return None
        return latents

    def _write(self, path: Path, latents: Tensor, key_json: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, ".safetensors") as tmp:
            save_file({"latents": latents.contiguous().cpu()}, str(tmp), metadata={"key": key_json})

    def latents(self, stylizer: Stylizer, frames: Tensor, style_image: Tensor) -> Tensor:
        """Baseline latents (T,C,H/8,W/8) of ``frames`` (T,3,H,W), from the cache or computed.

        Frames are stylized in batches of ``batch_size``; each is independent.
        """
        key = self.key(stylizer, frames, style_image)
        key_json = json.dumps(key, sort_keys=True)
        path = self.path_for(key)
        codec = stylizer.codec
        t, _, h, w = frames.shape
        expected = (t, codec.latent_channels, h // codec.downscale, w // codec.downscale)
        if path.is_file():
            cached = self._read(path, key_json, expected)
            if cached is not None:
                return cached
        latents = torch.cat(
            [stylizer.stylize(frames[i : i + self.batch_size], style_image).cpu() for i in range(0, t, self.batch_size)]
        )
        self._write(path, latents, key_json)
        return latents
