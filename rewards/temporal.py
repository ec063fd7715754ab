"""Temporal consistency: the bidirectional temporal loss (reward), the warping error and its long-term
version between frames k apart (metrics).

All use the flows of the CONTENT frames (``rewards.flow.ClipFlows``) and the
warping convention of ``rewards.warp``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from rewards.flow import ClipFlows, RAFTFlow, flows_and_masks
from rewards.warp import backward_warp


def _check_flows_fit(frames: Tensor, flows: ClipFlows, name: str) -> None:
    if len(flows) != frames.shape[0] - 1:
        raise ValueError(f"{name} has {frames.shape[0]} frames but the flows cover {len(flows)} pairs (need T-1)")
    if flows.flow_fwd.shape[-2:] != frames.shape[-2:]:
        size, flow_size = tuple(frames.shape[-2:]), tuple(flows.flow_fwd.shape[-2:])
        raise ValueError(f"{name} is {size} but the flows are {flow_size} (H,W must match)")


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Per image mean of ``values`` (N,C,H,W) over the pixels where ``mask`` (N,1,H,W) is 1, summed over C.

    An empty mask gives 0 (nothing reliable to compare).
    """
    return (values * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1.0)


def temporal_loss(stylized: Tensor, flows: ClipFlows) -> Tensor:
    """Bidirectional occlusion-masked L1 temporal loss per consecutive pair, (T-1,).

    Kuang & Chen, "Video Style Transfer with Reinforcement Learning": for the
    pair (i, i+1) of ``stylized`` (T,C,H,W) (images in [0,1], or latents with
    flows resized to their size)

        L_i = sum(M_f |S_i - warp(S_{i+1}, flow_fwd[i])|) / (C sum(M_f))
            + sum(M_b |S_{i+1} - warp(S_i, flow_bwd[i])|) / (C sum(M_b))

    with M_f = mask_fwd[i], M_b = mask_bwd[i]: each term is the mean absolute
    difference over channels and reliable pixels. Differentiable in ``stylized``.
    """
    if stylized.dim() != 4:
        raise ValueError(f"stylized must have shape (T,C,H,W), got {tuple(stylized.shape)}")
    _check_flows_fit(stylized, flows, "stylized")
    flows = flows.to(stylized.device)
    channels = stylized.shape[1]
    previous, following = stylized[:-1], stylized[1:]
    forward = _masked_mean((previous - backward_warp(following, flows.flow_fwd)).abs(), flows.mask_fwd)
    backward = _masked_mean((following - backward_warp(previous, flows.flow_bwd)).abs(), flows.mask_bwd)
    return (forward + backward) / channels


@dataclass(frozen=True)
class WarpingError:
    """``mean`` over pairs of ``per_frame`` (T-1,), one error per pair (t-1, t)."""

    mean: float
    per_frame: Tensor


@torch.no_grad()
def warping_error(
    stylized: Tensor,
    content: Tensor,
    flow_model: RAFTFlow | None = None,
    flows: ClipFlows | None = None,
    chunk_size: int = 8,
) -> WarpingError:
    """Warping error of Lai et al., "Learning Blind Video Temporal Consistency" (ECCV 2018).

    ``stylized`` and ``content`` are (T,3,H,W) in [0,1] of the same shape.
    E_t = sum(M_t * (warp(S_t, flow_fwd[t-1]) - S_{t-1})^2) / sum(M_t), the sum
    running over channels and pixels while sum(M_t) counts reliable pixels
    (the mask is one channel, as in Lai et al.'s evaluation code); M_t =
    mask_fwd[t-1], the occlusion mask of the content flow (pixels of frame
    t-1). E = mean over t. Flows are estimated on ``content`` with
    ``flow_model`` (default RAFT-small), ``chunk_size`` pairs at a time with
    chunks overlapping by one frame, so memory does not grow with T; or
    ``flows`` gives precomputed content flows for the whole clip.
    """
    if stylized.dim() != 4 or stylized.shape[1] != 3:
        raise ValueError(f"stylized must have shape (T,3,H,W), got {tuple(stylized.shape)}")
    if stylized.shape != content.shape:
        raise ValueError(
            f"stylized {tuple(stylized.shape)} and content {tuple(content.shape)} must have the same shape"
        )
    if stylized.shape[0] < 2:
        raise ValueError(f"need at least 2 frames for a warping error, got {stylized.shape[0]}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if flows is not None:
        _check_flows_fit(content, flows, "content")
    pairs = stylized.shape[0] - 1
    errors = []
    for start in range(0, pairs, chunk_size):
        stop = min(start + chunk_size, pairs)
        if flows is not None:
            chunk = flows[start:stop].to(stylized.device)
        else:
            chunk = flows_and_masks(content[start : stop + 1], flow_model, batch_size=chunk_size)
        warped = backward_warp(stylized[start + 1 : stop + 1], chunk.flow_fwd)
        errors.append(_masked_mean((warped - stylized[start:stop]).square(), chunk.mask_fwd))
    per_frame = torch.cat(errors)
    return WarpingError(mean=float(per_frame.mean()), per_frame=per_frame)


def _check_gap(frames: Tensor, gap: int) -> None:
    if gap < 1:
        raise ValueError(f"the frame gap k must be >= 1, got {gap}")
    if frames.shape[0] <= gap:
        raise ValueError(f"frames {gap} apart need at least {gap + 1} frames, got {frames.shape[0]}")


def _interleave(parts: list[Tensor], gap: int) -> Tensor:
    """The rows of ``parts[r]`` at positions r, r+gap, r+2*gap, ... of one tensor (undoes ``x[r::gap]``)."""
    out = parts[0].new_empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]))
    for residue, part in enumerate(parts):
        out[residue::gap] = part
    return out


def long_term_flows(
    frames: Tensor, gap: int, model: nn.Module | None = None, motion_boundaries: bool = False, batch_size: int = 8
) -> ClipFlows:
    """Flows and occlusion masks of the T-k pairs (i, i+k) of ``frames`` (T,3,H,W) in [0,1], k = ``gap``.

    Each flow is estimated DIRECTLY between frames i and i+k (both directions, the forward-backward test of
    ``rewards.warp.occlusion_mask``), never chained: ``flow_fwd[i]`` goes from frame i to i+k, ``flow_bwd[i]``
    back. The pairs of every residue r < k are the consecutive pairs of ``frames[r::k]``
    (``rewards.flow.flows_and_masks``, ``batch_size`` pairs per model call). ``model`` as ``flows_and_masks``.
    """
    _check_gap(frames, gap)
    parts = [flows_and_masks(frames[r::gap], model, motion_boundaries, batch_size)
             for r in range(min(gap, frames.shape[0] - gap))]
    return ClipFlows(*(_interleave([getattr(p, f.name) for p in parts], gap) for f in fields(ClipFlows)))


@torch.no_grad()
def long_term_warping_error(
    stylized: Tensor,
    content: Tensor,
    gap: int,
    flow_model: nn.Module | None = None,
    flows: ClipFlows | None = None,
    chunk_size: int = 8,
) -> WarpingError:
    """Warping error (Lai et al. 2018, as ``warping_error``) between frames k = ``gap`` apart.

    E_t = sum(M (warp(S_t, F_{t-k->t}) - S_{t-k})^2) / sum(M) for t = k..T-1, with the content flow
    F_{t-k->t} estimated directly between frames t-k and t by ``flow_model`` and M its forward-backward
    occlusion mask (``long_term_flows``). Blending frames over time can pass the consecutive warping error
    while the content drifts: that shows here. ``stylized`` and ``content`` (T,3,H,W) in [0,1], T > k.
    ``per_frame`` (T-k,): entry i for the pair (i, i+k). Flows are estimated ``chunk_size`` pairs at a time
    (memory does not grow with T), or ``flows`` gives ``long_term_flows(content, gap)`` precomputed.
    ``gap=1`` is ``warping_error``.
    """
    if stylized.shape != content.shape:
        raise ValueError(
            f"stylized {tuple(stylized.shape)} and content {tuple(content.shape)} must have the same shape"
        )
    _check_gap(content, gap)
    pairs = content.shape[0] - gap
    if flows is not None and len(flows) != pairs:
        raise ValueError(f"content has {content.shape[0]} frames but the flows cover {len(flows)} pairs "
                         f"(need T-k = {pairs} for k = {gap})")
    per_residue = [
        warping_error(stylized[r::gap], content[r::gap], flow_model,
                      None if flows is None else flows[r::gap], chunk_size).per_frame
        for r in range(min(gap, pairs))
    ]
    per_frame = _interleave(per_residue, gap)
    return WarpingError(mean=float(per_frame.mean()), per_frame=per_frame)
