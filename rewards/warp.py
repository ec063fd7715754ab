"""Backward warping, forward-backward occlusion test and flow resizing.

This is THE one place in the project that implements warping; every other
module calls these functions.

Convention (``docs/conventions.md``):

- A flow is a tensor (N,2,H,W) in pixels; channel 0 is the x displacement
  (positive = right), channel 1 the y displacement (positive = down).
- ``flow_fwd[i]`` is the flow from frame i to frame i+1, ``flow_bwd[i]`` the
  flow from frame i+1 to frame i (see ``rewards.flow``).
- Backward warp: ``warp(x, f)(p) = x(p + f(p))``, sampled bilinearly. So
  ``backward_warp(frame_{i+1}, flow_fwd[i])`` aligns frame i+1 to frame i.
  Pixel coordinates are pixel centres, 0..W-1 and 0..H-1; they are normalised
  for ``torch.nn.functional.grid_sample(..., align_corners=True)`` as
  ``2 x / (W - 1) - 1``, which maps pixel centre 0 to -1 and W-1 to +1, so a
  flow of exactly one pixel moves the sample by exactly one pixel.
- Samples whose position p + f(p) falls outside [0, W-1] x [0, H-1] are
  "out of frame": ``backward_warp`` fills them from the nearest border pixel
  and ``in_frame_mask`` marks them 0.
- Masks are float tensors (N,1,H,W), 1 = reliable, 0 = not.

Occlusion test: forward-backward consistency of Sundaram, Brox & Keutzer,
"Dense point trajectories by GPU-accelerated large displacement optical flow"
(ECCV 2010), with the thresholds used by Ruder, Dosovitskiy & Brox,
"Artistic style transfer for videos" (GCPR 2016) and Lai et al., "Learning
Blind Video Temporal Consistency" (ECCV 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur


def _check_flow(flow: Tensor, name: str = "flow") -> None:
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N,2,H,W), got {tuple(flow.shape)}")


def _sample_positions(flow: Tensor) -> tuple[Tensor, Tensor]:
    """Absolute sample positions p + f(p): x (N,H,W) and y (N,H,W), in pixels."""
    _, _, height, width = flow.shape
    ys = torch.arange(height, device=flow.device, dtype=flow.dtype).view(1, height, 1)
    xs = torch.arange(width, device=flow.device, dtype=flow.dtype).view(1, 1, width)
    return xs + flow[:, 0], ys + flow[:, 1]


WARP_MODES = ("bilinear", "bicubic", "nearest")


def backward_warp(x: Tensor, flow: Tensor, mode: str = "bilinear") -> Tensor:
    """Warp ``x`` (N,C,H,W) by ``flow`` (N,2,H,W) or (1,2,H,W): out(p) = x(p + flow(p)).

    Bilinear sampling (``mode="bicubic"``: sharper, for images whose texture must survive; it may overshoot
    the input's range; ``"nearest"``: each output pixel a copy of one input pixel); out-of-frame samples take
    the nearest border value (use ``in_frame_mask`` to find them). Differentiable in ``x`` and ``flow``.
    Coordinates are computed in at least float32 whatever ``x``'s dtype, and
    the result has ``x``'s dtype.
    """
    _check_flow(flow)
    if mode not in WARP_MODES:
        raise ValueError(f"unknown warp mode {mode!r}; choose one of {', '.join(WARP_MODES)}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N,C,H,W), got {tuple(x.shape)}")
    if x.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"x is {tuple(x.shape[-2:])} but the flow is {tuple(flow.shape[-2:])} (H,W must match)")
    if flow.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"x has {x.shape[0]} images but the flow has {flow.shape[0]} (must match or be 1)")
    work = torch.promote_types(x.dtype, torch.float32)
    height, width = x.shape[-2:]
    px, py = _sample_positions(flow.to(device=x.device, dtype=work))
    grid = torch.stack((2.0 * px / max(width - 1, 1) - 1.0, 2.0 * py / max(height - 1, 1) - 1.0), dim=-1)
    grid = grid.expand(x.shape[0], -1, -1, -1)
    out = F.grid_sample(x.to(work), grid, mode=mode, padding_mode="border", align_corners=True)
    return out.to(x.dtype)


DETAIL_SIGMA = 1.0  # px: the Gaussian that splits an image into the two bands of ``detail_preserving_warp``


def detail_preserving_warp(images: Tensor, flow: Tensor, sigma: float = DETAIL_SIGMA) -> Tensor:
    """``images`` (N,3,H,W) backward-warped by ``flow`` (N,2,H,W) or (1,2,H,W) in two bands: the images blurred by
    a Gaussian of ``sigma`` px warped bicubically, plus the detail (images minus that blur) warped by
    nearest-pixel copy, so that sub-pixel motion moves brush strokes without softening them (a half-pixel
    bicubic shift of a stylized frame doubled its Gram style loss; ``pipeline.keyframes``). Not clamped."""
    radius = max(1, round(3 * sigma))
    smooth = gaussian_blur(images, [2 * radius + 1] * 2, [sigma, sigma])
    return backward_warp(smooth, flow, mode="bicubic") + backward_warp(images - smooth, flow, mode="nearest")


def in_frame_mask(flow: Tensor) -> Tensor:
    """(N,1,H,W) float: 1 where p + flow(p) lies inside the frame, 0 where it leaves it."""
    _check_flow(flow)
    height, width = flow.shape[-2:]
    px, py = _sample_positions(flow)
    inside = (px >= 0) & (px <= width - 1) & (py >= 0) & (py <= height - 1)
    return inside.unsqueeze(1).to(flow.dtype)


def _motion_boundaries(flow: Tensor) -> Tensor:
    """(N,1,H,W) bool: |grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002 (forward differences)."""
    dx = F.pad(flow[..., :, 1:] - flow[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(flow[..., 1:, :] - flow[..., :-1, :], (0, 0, 0, 1))
    gradient = (dx.square() + dy.square()).sum(dim=1, keepdim=True)
    return gradient > 0.01 * flow.square().sum(dim=1, keepdim=True) + 0.002


def occlusion_mask(flow: Tensor, flow_other: Tensor, motion_boundaries: bool = False) -> Tensor:
    """Reliability mask (N,1,H,W) float, 1 = reliable, of the pixels of ``flow``'s source frame.

    ``flow`` goes from frame a to frame b, ``flow_other`` from b to a (both
    (N,2,H,W)). With w = flow(p) and w~ = flow_other(p + w) (``flow_other``
    backward-warped by ``flow``), p is occluded where
    |w + w~|^2 > 0.01 (|w|^2 + |w~|^2) + 0.5. Pixels whose target p + w
    leaves the frame are unreliable too. With ``motion_boundaries`` pixels
    where |grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002 are also unreliable.
    """
    _check_flow(flow)
    _check_flow(flow_other, "flow_other")
    if flow.shape != flow_other.shape:
        raise ValueError(f"flow {tuple(flow.shape)} and flow_other {tuple(flow_other.shape)} must have the same shape")
    other = backward_warp(flow_other, flow)
    inconsistency = (flow + other).square().sum(dim=1, keepdim=True)
    magnitudes = flow.square().sum(dim=1, keepdim=True) + other.square().sum(dim=1, keepdim=True)
    reliable = (inconsistency <= 0.01 * magnitudes + 0.5) & (in_frame_mask(flow) > 0)
    if motion_boundaries:
        reliable &= ~_motion_boundaries(flow)
    return reliable.to(flow.dtype)


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize ``flow`` (N,2,H,W) to ``size`` = (h, w) and scale its vectors (u by w/W, v by h/H).

    Bilinear, pixel-centre aligned (``align_corners=False``); antialiased when
    shrinking, e.g. to latent resolution (H/8, W/8).
    """
    _check_flow(flow)
    height, width = flow.shape[-2:]
    new_h, new_w = int(size[0]), int(size[1])
    if new_h < 1 or new_w < 1:
        raise ValueError(f"size must be positive (h, w), got {size}")
    if (new_h, new_w) == (height, width):
        return flow
    shrinking = new_h < height or new_w < width
    resized = F.interpolate(flow, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=shrinking)
    scale = torch.tensor([new_w / width, new_h / height], device=flow.device, dtype=flow.dtype)
    return resized * scale.view(1, 2, 1, 1)
