"""Structural similarity (SSIM) of Wang, Bovik, Sheikh & Simoncelli, "Image Quality
Assessment: From Error Visibility to Structural Similarity" (IEEE TIP 2004).

The paper's settings: an 11x11 circular-symmetric Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, population (not sample) statistics. Local
statistics are taken only where the window fits inside the image ("valid"
filtering), each RGB channel on its own, and the SSIM map is averaged over
channels and positions. This matches scikit-image's
``structural_similarity(..., channel_axis=-1, gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def _gaussian_window(size: int, sigma: float, channels: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Separable normalised Gaussian filters (C,1,1,size) and (C,1,size,1) for a depthwise conv."""
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    kernel = torch.exp(-coords.square() / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return kernel.view(1, 1, 1, size).repeat(channels, 1, 1, 1), kernel.view(1, 1, size, 1).repeat(channels, 1, 1, 1)


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0, window: int = WINDOW, sigma: float = SIGMA) -> Tensor:
    """Mean SSIM (N,) of images ``a`` and ``b`` (N,C,H,W) with values spanning ``data_range``; 1 = identical.

    Images must be at least ``window`` pixels on each side.
    """
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(f"ssim expects two (N,C,H,W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window} px per side, got {tuple(a.shape[-2:])}")
    work = torch.promote_types(a.dtype, torch.float32)
    a, b = a.to(work), b.to(work)
    channels = a.shape[1]
    horizontal, vertical = _gaussian_window(window, sigma, channels, a)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(x, horizontal, groups=channels), vertical, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(1, 2, 3))
