"""The per-frame stylizer interface: the frame-by-frame baseline by definition."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from pipeline.io.files import tensor_digest


class Stylizer(ABC):
    """Stylizes each frame on its own into a codec's latent space.

    Subclasses set ``name``, ``codecs`` (and ``owns_codec``) and ``codec`` (a ``pipeline.latents.codecs.LatentCodec``),
    implement ``from_config`` (what ``build_stylizer`` calls), ``prepare_style`` (what depends on the style image only,
    computed once per style) and ``stylize_prepared``, and report their
    settings in ``config`` (part of the latent cache key).
    """

    name: str
    codecs: tuple[str, ...]  # the codec names (``pipeline.latents.codecs.CODEC_NAMES``) it works on, default first
    owns_codec: bool = False  # it loads its codec itself (``from_config`` takes none)

    def __init__(self, codec) -> None:
        self.codec = codec
        self._style_key: str | None = None
        self._style_state: Any = None

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any, codec=None, device: str | torch.device = "cpu") -> Stylizer:
        """The stylizer of settings ``config`` (its config dataclass), on ``codec`` where it takes one."""

    @abstractmethod
    def prepare_style(self, style_image: Tensor) -> Any:
        """Precompute what depends only on ``style_image`` (1,3,H,W) in [0,1]."""

    @abstractmethod
    def stylize_prepared(self, frames: Tensor, style_state: Any) -> Tensor:
        """Latents (N,C,H/8,W/8) of ``frames`` (N,3,H,W) in [0,1], each frame independent."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings that change the output (the cache key uses them)."""

    def stylize(self, frames: Tensor, style_image: Tensor) -> Tensor:
        """Stylized latents (N,C,H/8,W/8) of ``frames`` (N,3,H,W) in [0,1].

        Style statistics are computed once per distinct style image and reused.
        """
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (N,3,H,W), got {tuple(frames.shape)}")
        if style_image.ndim != 4 or style_image.shape[:2] != (1, 3):
            raise ValueError(f"style_image must be (1,3,H,W), got {tuple(style_image.shape)}")
        key = tensor_digest(style_image)
        if key != self._style_key:
            self._style_state = self.prepare_style(style_image)
            self._style_key = key
        return self.stylize_prepared(frames, self._style_state)
