"""The two observation kinds a policy reads, built in one place.

- ``pair`` (Kuang & Chen, "Video Style Transfer with Reinforcement
  Learning"): concat(L_{t-1}, L_t) of *baseline* latents, 2C channels; at the
  first frame L_{-1} = L_0.
- ``flow`` (ours): concat(L_t, W_t, M_t, L_t - W_t), 3C+1 channels, where
  W_t = warp(previous *output* latent, flow from frame t to t-1 at latent
  resolution) and M_t in [0,1] is the fraction of reliable (non-occluded)
  pixels of frame t under each latent cell. At the first frame (no previous
  output) W_0 = L_0 and M_0 = 0.

The warped previous output W_t of the ``flow`` observation is built in one of
three ways (``FLOW_WARPS``), chosen by the policy (``flow_warp`` of its config):
- ``latent`` (default): the previous output latent warped at latent
  resolution by the downsampled flow (cheap, but a 16x16 latent of a 128-px
  frame warps coarsely);
- ``pixel``: the previous decoded OUTPUT frame warped in pixel space by the
  full-resolution content flow and re-encoded by the codec, plus the warped
  codec round-trip residual of the previous output latent, so repeated
  encode/decode does not wash out the style:
  W_t = E(warp(S_{t-1}, f)) + warp_h(P_{t-1} - E(S_{t-1}), f_h)
  (``pixel_warped_latent``; two encodes per step, same channels and shapes);
- ``detail``: as ``pixel``, the frame warped in two bands (``rewards.warp.detail_preserving_warp``: the
  blurred frame bicubically, its detail by nearest-pixel copy) instead of bilinearly. Bilinear resampling
  softens brush strokes at every step: propagating the previous output through 23 frames of wolf.mp4
  (256 px, Starry Night, no new stylization where the flow is reliable) tripled the Gram style loss with the
  bilinear warp (x3.1) and raised it by 16% with the two-band one.

The encodes of the pixel warps are made by the policy's ``warp_encoder`` (``warp_encoder_field``): by default
(``auto``) TAEF2's distilled light encoder on TAEF2 latents, the codec's own encoder on others
(``pipeline.latents.codecs.load_warp_codec``).

Flows follow ``docs/conventions.md``: pixels, ch0 = x right, ch1 = y down; backward warp
warp(x, f)(p) = x(p + f(p)) (``rewards.warp.backward_warp``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.latents.codecs import WARP_ENCODERS
from policies.base import check_observation_kind
from rewards.flow import FLOW_ESTIMATORS, check_flow_estimator
from rewards.warp import backward_warp, detail_preserving_warp, resize_flow

FLOW_WARPS = ("latent", "pixel", "detail")
PIXEL_FLOW_WARPS = ("pixel", "detail")  # warp the decoded frame and re-encode it
# the estimator of the observation's content flows by default: OpenCV DIS, ~1/20 of RAFT-small's time at 256 px
# on the CPU and as accurate on Sintel (rewards.flow.build_flow_model)
DEFAULT_OBSERVATION_FLOW = "dis"


def observation_flow_field() -> Any:
    """The ``observation_flow`` field every policy config has (a dataclass field with its CLI help)."""
    return field(default=DEFAULT_OBSERVATION_FLOW, metadata={
        "choices": FLOW_ESTIMATORS, "help": "content-flow estimator of the flow observation, in training and at "
                                            "inference (dis: OpenCV DIS; raft: RAFT-small)"})


def warp_encoder_field() -> Any:
    """The ``warp_encoder`` field every policy config has (a dataclass field with its CLI help)."""
    return field(default="auto", metadata={
        "choices": WARP_ENCODERS, "help": "pixel flow warps: the encoder of their two encodes a frame, in training and "
                                          "at inference (auto: on TAEF2 latents the light one distilled from TAEF2's, "
                                          "4.5x faster, else the codec's; codec: the codec's own)"})


def check_observation_flow(name: str) -> str:
    return check_flow_estimator(name, "observation flow")


def warps_pixels(flow_warp: str) -> bool:
    """True for the flow warps that decode, warp in pixels and re-encode (they need the codec and pixel flows)."""
    return check_flow_warp(flow_warp) in PIXEL_FLOW_WARPS


def reads_pixel_warp(policy) -> bool:
    """Whether ``policy`` (a ``policies.base.Policy``) reads a ``flow`` observation built by a pixel warp: it needs
    a warp codec (``pipeline.latents.codecs.load_warp_codec`` of its ``warp_encoder``) and full-resolution flows."""
    return policy.observation == "flow" and warps_pixels(policy.flow_warp)


def check_flow_warp(flow_warp: str) -> str:
    if flow_warp not in FLOW_WARPS:
        raise ValueError(f"unknown flow_warp {flow_warp!r}; choose one of {', '.join(FLOW_WARPS)}")
    return flow_warp


def observation_channels(kind: str, latent_channels: int) -> int:
    """Channels of observation ``kind`` for a codec with ``latent_channels`` C: 2C (pair) or 3C+1 (flow)."""
    check_observation_kind(kind)
    return 2 * latent_channels if kind == "pair" else 3 * latent_channels + 1


@dataclass
class LatentFlows:
    """Per-frame flow to the previous frame, at latent resolution.

    ``flow`` (n,2,h,w): entry i maps frame i to frame i-1 (latent cells, so a
    pixel flow divided by the downscale); ``mask`` (n,1,h,w) in [0,1]: 1 where
    frame i is reliably seen in frame i-1.
    """

    flow: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        if self.flow.ndim != 4 or self.flow.shape[1] != 2:
            raise ValueError(f"latent flow must be (n,2,h,w), got {tuple(self.flow.shape)}")
        if self.mask.shape != (self.flow.shape[0], 1, *self.flow.shape[2:]):
            raise ValueError(f"latent mask {tuple(self.mask.shape)} does not match flow {tuple(self.flow.shape)}")

    def __len__(self) -> int:
        return self.flow.shape[0]

    def __getitem__(self, index: slice) -> LatentFlows:
        return LatentFlows(self.flow[index], self.mask[index])

    def to(self, device: torch.device | str) -> LatentFlows:
        return LatentFlows(self.flow.to(device), self.mask.to(device))


def latent_flows(flow_to_prev: Tensor, mask: Tensor, latent_size: tuple[int, int]) -> LatentFlows:
    """Downsample pixel flows (n,2,H,W) to previous frames and their masks (n,1,H,W) to ``latent_size`` (h,w).

    Vectors are rescaled with the size (``rewards.warp.resize_flow``); the
    mask is area-averaged, so a latent cell's value is its reliable fraction.
    """
    if flow_to_prev.shape[0] != mask.shape[0]:
        raise ValueError(f"{flow_to_prev.shape[0]} flows but {mask.shape[0]} masks")
    small_mask = F.adaptive_avg_pool2d(mask.float(), latent_size)
    return LatentFlows(resize_flow(flow_to_prev, latent_size), small_mask)


def pair_observation(baseline: Tensor, prev_baseline: Tensor | None) -> Tensor:
    """concat(L_{t-1}, L_t): (N,2C,h,w) from baseline latents (N,C,h,w); None = first frame."""
    prev = baseline if prev_baseline is None else prev_baseline
    return torch.cat([prev, baseline], dim=1)


def pixel_warped_latent(
    codec, prev_frame: Tensor, pixel_flow: Tensor, prev_output: Tensor | None = None, round_trip: bool = True,
    flow_warp: str = "pixel",
) -> Tensor:
    """W_t of the ``pixel`` or ``detail`` flow warp (``flow_warp``): (N,C,h,w).

    ``prev_frame`` (N,3,H,W) the previous decoded output S_{t-1} in [0,1];
    ``pixel_flow`` (N,2,H,W) the full-resolution content flow from frame t to
    t-1; ``prev_output`` (N,C,h,w) the previous output latent P_{t-1}. With
    ``round_trip`` (and ``prev_output``) the codec's round-trip residual
    P_{t-1} - E(S_{t-1}) is warped at latent resolution and added back.
    """
    if prev_frame.shape[-2:] != pixel_flow.shape[-2:]:
        raise ValueError(
            f"previous frame {tuple(prev_frame.shape)} and pixel flow {tuple(pixel_flow.shape)} differ in size"
        )
    if not warps_pixels(flow_warp):
        raise ValueError(f"pixel_warped_latent builds the {' or '.join(PIXEL_FLOW_WARPS)} warp, not {flow_warp!r}")
    warp = detail_preserving_warp if flow_warp == "detail" else backward_warp
    warped_frame = warp(prev_frame, pixel_flow.to(prev_frame)).clamp(0, 1)
    if not round_trip or prev_output is None:
        return codec.encode(warped_frame).to(prev_frame.dtype)
    # one encoder call for both images: E(warp(S_{t-1})) and E(S_{t-1})
    warped, reencoded = codec.encode(torch.cat([warped_frame, prev_frame])).to(prev_output).chunk(2)
    residual = prev_output - reencoded
    return warped + backward_warp(residual, resize_flow(pixel_flow.to(residual), tuple(residual.shape[-2:])))


def flow_observation(
    baseline: Tensor, prev_output: Tensor | None, flow: Tensor | None, mask: Tensor | None, warped: Tensor | None = None
) -> Tensor:
    """concat(L_t, W_t, M_t, L_t - W_t): (N,3C+1,h,w).

    ``baseline`` L_t (N,C,h,w); ``prev_output`` the previous refined latent
    (N,C,h,w) or None at the first frame; ``flow`` (N,2,h,w) latent flow from
    frame t to t-1 and ``mask`` (N,1,h,w), both needed when ``prev_output`` is given.
    ``warped``: a precomputed W_t (N,C,h,w) (e.g. ``pixel_warped_latent``); then ``flow`` is not used.
    """
    if prev_output is None:
        warped = baseline
        mask = baseline.new_zeros(baseline.shape[0], 1, *baseline.shape[2:])
    else:
        if (flow is None and warped is None) or mask is None:
            raise ValueError("the flow observation needs the flow to the previous frame and its mask")
        if warped is None:
            warped = backward_warp(prev_output, flow)
        elif warped.shape != baseline.shape:
            raise ValueError(
                f"warped previous output {tuple(warped.shape)} must match the latent {tuple(baseline.shape)}"
            )
    return torch.cat([baseline, warped, mask.to(baseline.dtype), baseline - warped], dim=1)


def build_observation(
    kind: str,
    baseline: Tensor,
    prev_baseline: Tensor | None = None,
    prev_output: Tensor | None = None,
    flow: Tensor | None = None,
    mask: Tensor | None = None,
    warped: Tensor | None = None,
) -> Tensor:
    """Observation ``kind`` (``pair`` or ``flow``) for frame t; see the module docstring."""
    check_observation_kind(kind)
    if kind == "pair":
        return pair_observation(baseline, prev_baseline)
    return flow_observation(baseline, prev_output, flow, mask, warped)
