"""RL-NST's compound temporal regularisation.

From Wang et al., "Consistent Video Style Transfer via Compound
Regularization" (AAAI 2020), as used by RL-NST's video model:
zeta * || model(M(s) + noise) - M(model(s)) ||_1 (mean over pixels): a
stylization step should commute with a small smooth motion M of its input and
ignore small noise, so consecutive frames, which differ by such a motion,
come out consistent without optical flow at training time. As in the public
RL-I2IT video code (``temporalLoss.py``): M is a backward warp by a random
smooth flow (a Gaussian map with std ``motion_std`` px on a grid of one cell
per ``grid_step`` px, upsampled to the image, plus one random integer
translation in [-max_shift, max_shift] px per axis, box-blurred with a
``blur_size`` px window), and noise ~ N(0, sigma^2) with
sigma ~ U(noise_sigma). Warping uses ``rewards.warp.backward_warp``
(border padding); the blur window is capped at the image size, since the
public code's 100 px window assumes frames larger than this project trains on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rewards.warp import backward_warp


@dataclass(frozen=True)
class CompoundRegularizationConfig:
    """Random motion and noise of the compound regularisation (defaults of the public code)."""

    motion_std: float = 8.0
    grid_step: int = 100
    blur_size: int = 100
    max_shift: int = 10
    noise_sigma: tuple[float, float] = (0.001, 0.002)

    def __post_init__(self) -> None:
        if self.grid_step < 1 or self.blur_size < 1 or self.max_shift < 0 or self.motion_std < 0:
            raise ValueError(f"invalid compound regularisation settings: {self}")
        low, high = self.noise_sigma
        if not 0 <= low <= high:
            raise ValueError(f"noise_sigma must be (low, high) with 0 <= low <= high, got {self.noise_sigma}")


def _box_blur(x: Tensor, size: int) -> Tensor:
    """Mean over a size x size window (separably), reflection at the borders, output the size of ``x``."""
    left, right = size // 2, (size - 1) // 2
    x = F.avg_pool2d(F.pad(x, (left, right, 0, 0), mode="reflect"), (1, size), stride=1)
    return F.avg_pool2d(F.pad(x, (0, 0, left, right), mode="reflect"), (size, 1), stride=1)


def random_smooth_flow(
    count: int,
    height: int,
    width: int,
    config: CompoundRegularizationConfig | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random smooth flows (count,2,height,width) in pixels (ch0 = x, ch1 = y), as described in the module doc."""
    config = config or CompoundRegularizationConfig()
    grid = (max(1, height // config.grid_step), max(1, width // config.grid_step))
    noise = torch.randn(count, 2, *grid, generator=generator) * config.motion_std
    flow = F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)
    shift = torch.randint(-config.max_shift, config.max_shift + 1, (count, 2, 1, 1), generator=generator)
    flow = flow + shift.to(flow.dtype)
    return _box_blur(flow, min(config.blur_size, height, width))


def random_perturbation(
    images: Tensor, config: CompoundRegularizationConfig | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """(flow (N,2,H,W), noise (N,C,H,W)) for ``images`` (N,C,H,W): one random motion and noise per image."""
    config = config or CompoundRegularizationConfig()
    n, _, height, width = images.shape
    flow = random_smooth_flow(n, height, width, config, generator).to(images.device, images.dtype)
    low, high = config.noise_sigma
    sigma = low + (high - low) * torch.rand(n, 1, 1, 1, generator=generator)
    noise = sigma * torch.randn(images.shape, generator=generator)
    return flow, noise.to(images.device, images.dtype)


def compound_regularization(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    flow: Tensor,
    noise: Tensor,
    mask: Tensor | None = None,
) -> Tensor:
    """mean | model(M(images) + noise) - M(model(images)) | (a scalar), M = ``backward_warp(., flow)``.

    ``model`` maps images (N,3,H,W) to images of the same size (one
    stylization step). ``mask`` (N,1,H,W), 1 = counted, restricts the mean
    (e.g. to the interior, away from border effects). Multiply by zeta
    (``AgentConfig.temporal_weight``) for the loss.
    """
    if flow.shape[0] != images.shape[0] or noise.shape != images.shape:
        raise ValueError(
            f"flow {tuple(flow.shape)} and noise {tuple(noise.shape)} must match images {tuple(images.shape)}"
        )
    moved = model(backward_warp(images, flow) + noise)
    expected = backward_warp(model(images), flow)
    diff = (moved - expected).abs()
    if mask is None:
        return diff.mean()
    weights = mask.expand_as(diff)
    return (diff * weights).sum() / weights.sum().clamp_min(1.0)
