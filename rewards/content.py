"""LPIPS content distance (Zhang et al. 2018, "The Unreasonable Effectiveness of
Deep Features as a Perceptual Metric"), AlexNet trunk, v0.1 linear heads.

The model is the ``lpips`` package's own ``lpips.LPIPS`` (richzhang/
PerceptualSimilarity), built with a randomly initialised trunk
(``pnet_rand=True``, so it never asks torchvision to download AlexNet) and
then given the ImageNet AlexNet ``features`` weights from the project's weight
lookup (``alexnet_features``), mapped into lpips' ``slice1..slice5``. The v0.1
linear heads ship inside the lpips wheel (``lpips/weights/v0.1/alex.pth``).
This is the published LPIPS-alex v0.1 metric.
"""

from __future__ import annotations

import os
import warnings

import lpips
from torch import Tensor, nn

from pipeline.io.weights import load_state_dict

MIN_SIZE = 32  # AlexNet's stride-4 conv and two 3x3/2 pools need at least 31 px


def _alexnet_to_lpips_keys(trunk: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision ``alexnet().features`` keys (``3.weight``) to lpips' (``slice2.3.weight``)."""
    slice_of = {}
    for slice_index in range(1, trunk.N_slices + 1):
        for child in getattr(trunk, f"slice{slice_index}")._modules:
            slice_of[child] = f"slice{slice_index}"
    renamed = {}
    for key, value in state.items():
        layer = key.split(".", 1)[0]
        if layer not in slice_of:
            raise KeyError(f"alexnet_features key {key!r} has no place in the LPIPS AlexNet trunk")
        renamed[f"{slice_of[layer]}.{key}"] = value
    return renamed


class LPIPSDistance(nn.Module):
    """LPIPS-alex v0.1 distance: ``forward(a, b)`` with images (N,3,H,W) in [0,1] -> (N,).

    Frozen (no trainable parameters, always in eval mode) but differentiable
    with respect to both inputs. Frames must be at least ``MIN_SIZE`` pixels
    on each side. ``alexnet_path``: explicit ``alexnet_features.pth``.
    """

    def __init__(self, alexnet_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        with warnings.catch_warnings():  # torchvision's deprecation notes on lpips' `pretrained=` call
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        model.net.load_state_dict(
            _alexnet_to_lpips_keys(model.net, load_state_dict("alexnet_features", alexnet_path)), strict=True
        )
        self.model = model
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPSDistance:
        """Stay in eval mode (the linear heads have dropout) whatever the parent does."""
        return super().train(False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS distance (N,) between ``a`` and ``b`` (N,3,H,W) in [0,1]; 0 for identical images."""
        if a.ndim != 4 or a.shape[1] != 3 or a.shape != b.shape:
            raise ValueError(f"LPIPSDistance expects two (N,3,H,W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        if min(a.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS-alex needs frames of at least {MIN_SIZE} px per side, got {tuple(a.shape[-2:])}")
        return self.model(a, b, normalize=True).flatten()
