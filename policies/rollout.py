"""The sequential inference loop: refine a chunk of baseline latents with a policy.

Used by the stylization pipeline on consecutive chunks of a long video (the
``RolloutState`` carries the previous output and baseline latents across chunk
boundaries) and by ``policies.env`` step by step, through the same
``observe``/``advance`` functions, so training and inference build the same
observations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from policies.base import Policy
from policies.observations import (
    LatentFlows,
    build_observation,
    latent_flows,
    pixel_warped_latent,
    reads_pixel_warp,
)
from rewards.flow import flows_and_masks


@dataclass
class RolloutState:
    """What frame t needs from frame t-1: its refined and baseline latents (1,C,h,w), None at the start.

    ``prev_frame`` (1,3,H,W): the previous content frame, kept by
    ``apply_policy_to_chunk`` to estimate the flow across a chunk boundary.
    ``prev_output_frame`` (1,3,H,W): the previous output decoded, kept for the
    ``pixel`` flow warp (``policies.observations.pixel_warped_latent``).
    ``decoded`` (t,3,H,W): after ``apply_policy`` with the pixel flow warp, which decodes every output anyway,
    the chunk's refined latents decoded (the pipeline writes them instead of decoding again); else None.
    """

    prev_output: Tensor | None = None
    prev_baseline: Tensor | None = None
    prev_frame: Tensor | None = None
    prev_output_frame: Tensor | None = None
    decoded: Tensor | None = None


def observe(
    kind: str, baseline: Tensor, state: RolloutState, flows: LatentFlows | None, warped: Tensor | None = None
) -> Tensor:
    """Observation (1,Cobs,h,w) of frame t from its baseline latent (1,C,h,w).

    ``flows`` holds the single entry (frame t to t-1) for the ``flow`` kind;
    it is ignored at the first frame and by the ``pair`` kind. ``warped``: a
    precomputed warped previous output W_t (the ``pixel`` flow warp).
    """
    flow = mask = None
    if kind == "flow" and state.prev_output is not None:
        if flows is None:
            raise ValueError("the flow observation needs latent flows to the previous frame")
        flow, mask = flows.flow, flows.mask
    return build_observation(kind, baseline, state.prev_baseline, state.prev_output, flow, mask, warped)


def advance(baseline: Tensor, output: Tensor) -> RolloutState:
    """The state after frame t: its baseline (1,C,h,w) and refined (1,C,h,w) latents, detached."""
    return RolloutState(prev_output=output.detach(), prev_baseline=baseline.detach())


def _policy_device(policy: Policy, fallback: torch.device) -> torch.device:
    param = next(policy.parameters(), None)
    return fallback if param is None else param.device


def _per_frame_flows(latent_flows: LatentFlows | None, count: int, state: RolloutState) -> LatentFlows | None:
    """Flows with one entry per frame: at the start of a video the caller may give count-1 (no entry for frame 0)."""
    if latent_flows is None:
        return None
    if len(latent_flows) == count:
        return latent_flows
    if len(latent_flows) == count - 1 and state.prev_output is None:
        pad = LatentFlows(latent_flows.flow[:1].new_zeros((1, *latent_flows.flow.shape[1:])),
                          latent_flows.mask[:1].new_zeros((1, *latent_flows.mask.shape[1:])))
        return LatentFlows(torch.cat([pad.flow, latent_flows.flow]), torch.cat([pad.mask, latent_flows.mask]))
    expected = f"{count}" if state.prev_output is not None else f"{count} or {count - 1}"
    raise ValueError(
        f"got {len(latent_flows)} latent flows for {count} frames; expected {expected} "
        "(entry i = flow from frame i to frame i-1; a continuing chunk needs the flow across its boundary)"
    )


@torch.no_grad()
def apply_policy(
    policy: Policy,
    baseline_latents: Tensor,
    latent_flows: LatentFlows | None = None,
    state: RolloutState | None = None,
    pixel_flows: Tensor | None = None,
    codec=None,
) -> tuple[Tensor, RolloutState]:
    """Refined latents L_t + delta_t (t,C,h,w) of a chunk, acting with the policy's mean.

    ``baseline_latents`` (t,C,h,w): the chunk's baseline latents.
    ``latent_flows``: for ``flow`` policies, per-frame latent flows to the
    previous frame (``policies.observations.latent_flows``): t entries, or
    t-1 at the start of a video (``state`` None). ``state``: from the
    previous chunk's call. Returns the refined latents (same device as the
    input) and the state for the next chunk.
    Policies whose ``flow_warp`` warps in pixels (``pixel``, ``detail``) also need ``pixel_flows``
    (full-resolution flows to the previous frame, as many entries as
    ``latent_flows``) and the ``codec`` that decodes and re-encodes the warp.
    """
    if baseline_latents.ndim != 4 or baseline_latents.shape[1] != policy.latent_channels:
        raise ValueError(
            f"baseline latents must be (t,{policy.latent_channels},h,w) for this policy, "
            f"got {tuple(baseline_latents.shape)}"
        )
    state = state or RolloutState()
    count = baseline_latents.shape[0]
    if count == 0:
        return baseline_latents.clone(), state
    if policy.observation == "flow" and latent_flows is None and (count > 1 or state.prev_output is not None):
        raise ValueError("a flow-observation policy needs latent_flows")
    pixel = reads_pixel_warp(policy)
    if pixel and (codec is None or (pixel_flows is None and (count > 1 or state.prev_output is not None))):
        raise ValueError("the pixel flow warp needs the codec and the full-resolution pixel_flows")
    if pixel and pixel_flows is not None:
        if latent_flows is None or pixel_flows.shape[0] != len(latent_flows):
            raise ValueError("pixel_flows must have one entry per latent flow")
        offset = count - pixel_flows.shape[0]  # 1 at the start of a video (no entry for frame 0)
    flows = _per_frame_flows(latent_flows, count, state)
    device = _policy_device(policy, baseline_latents.device)
    outputs, decoded = [], []
    for t in range(count):
        baseline = baseline_latents[t : t + 1].to(device)
        warped = None
        if pixel and state.prev_output is not None:
            flow = pixel_flows[t - offset : t - offset + 1].to(device)
            if state.prev_output_frame is None:  # a state from a caller that did not keep the decoded frame
                state.prev_output_frame = codec.decode(state.prev_output.to(codec.device)).to(state.prev_output)
            warped = pixel_warped_latent(codec, state.prev_output_frame, flow, state.prev_output,
                                         flow_warp=policy.flow_warp)
        obs = observe(policy.observation, baseline, state, None if flows is None else flows[t : t + 1].to(device), warped)
        output = baseline + policy.act(obs, deterministic=True)
        outputs.append(output)
        state = advance(baseline, output)
        if pixel:
            state.prev_output_frame = codec.decode(output.to(codec.device)).to(output)
            decoded.append(state.prev_output_frame)
    state.decoded = torch.cat(decoded) if decoded else None
    return torch.cat(outputs).to(baseline_latents.device), state


@torch.no_grad()
def apply_policy_to_chunk(
    policy: Policy,
    baseline_latents: Tensor,
    frames: Tensor,
    state: RolloutState | None = None,
    flow_model: torch.nn.Module | None = None,
    codec=None,
) -> tuple[Tensor, RolloutState]:
    """``apply_policy`` on a chunk of a video given its content frames (t,3,H,W) in [0,1].

    For ``flow`` policies the content flows from each frame to the one before
    (across the chunk boundary too, through ``state.prev_frame``) and their
    occlusion masks are estimated with ``flow_model`` (a ``rewards.flow.RAFTFlow``
    or any model with its call signature; required for them) and downsampled to
    the latent size. Policies with the ``pixel`` flow warp also need the
    ``codec``. Returns the refined latents (t,C,h,w) and the state for the next
    chunk of the same video.
    """
    if frames.shape[0] != baseline_latents.shape[0]:
        raise ValueError(f"{frames.shape[0]} frames but {baseline_latents.shape[0]} baseline latents")
    state = state or RolloutState()
    flows = pixel_flows = None
    if policy.observation == "flow":
        if flow_model is None:
            raise ValueError("a flow-observation policy needs a flow_model to estimate the content flows")
        sequence = frames if state.prev_frame is None else torch.cat([state.prev_frame.to(frames), frames])
        if sequence.shape[0] >= 2:
            pixel = flows_and_masks(sequence, flow_model)
            flows = latent_flows(pixel.flow_bwd, pixel.mask_bwd, tuple(baseline_latents.shape[-2:]))
            pixel_flows = pixel.flow_bwd
    refined, state = apply_policy(policy, baseline_latents, flows, state, pixel_flows=pixel_flows, codec=codec)
    state.prev_frame = frames[-1:].detach()
    return refined, state
