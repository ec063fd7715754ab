"""Keyframe propagation: the per-frame stylizer runs on keyframes only, the frames between are warped from them.

An expensive stylizer (DiffuseST, latent WCT with refinement steps) dominates the cost of a video. With
``keyframes`` K > 1 the pipeline stylizes every K-th frame of each scene, the first frame of each scene
(``pipeline.scenes`` cuts) and the last frame of each chunk and of each scene (so that every frame between
two keyframes sees both within one chunk). Each frame t between keyframes p < t < n takes, pixel by pixel,
the decoded stylized image of one of them backward-warped into it along the content flow (t -> p, t -> n,
estimated on the content frames; ``rewards.warp.detail_preserving_warp``): the nearer keyframe where its
occlusion test (forward-backward, ``rewards.warp``) passes, else the other where that one's passes, else the
nearer.
Without a policy these images are the output; with one, the codec encodes them and the policy refines all
the latents as usual (its observations, flows and rewards unchanged). They are not re-decoded where no policy
acts: the codec's round trip blurs them.

Choices, measured with latent WCT (10 refinement steps) on the five test clips (first 24 frames, 256 px,
starry_night; Gram style loss of all frames with K = 4 against K = 1, warping error under OpenCV DIS):
a pixel is never averaged over the two keyframes, whose brush strokes do not line up (sintel_alley at 128 px,
Gram +39% blending two warped images, +15% selecting); pixels rather than latents (warping latents: Gram +40%,
warping error -3%; pixels: +12%, -48%; both without the refinement's jitter). Any resampling softens the
strokes the Gram loss reads: a half-pixel bicubic shift of a refined frame (no jitter) doubled its Gram loss.
So the warp is split in two bands: the frame blurred (Gaussian, sigma 1 px) is warped bicubically, its detail
(the rest) by copying the nearest pixel, which keeps the strokes' contrast (Gram +6.9% -> +3.8%, warping
error -47.5% -> -43.3%, with the jittered refinement of ``pipeline.latents.stylizers.latent_wct``; without
that jitter +11.6% -> +10.2%).

Conventions: frames (T,3,H,W) in [0,1]; flows as ``rewards.warp`` (ch0 = x right, ch1 = y down, in pixels).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rewards.warp import detail_preserving_warp, occlusion_mask

FLOW_BATCH = 8  # frame pairs per flow-model call


def keyframe_indices(length: int, keyframes: int, cuts: Sequence[int] = (), continues: bool = False) -> list[int]:
    """Indices (sorted) of the keyframes among ``length`` frames of a chunk.

    ``keyframes`` K: every K-th frame of each scene counted from its first frame, or, when the chunk
    ``continues`` a scene whose last keyframe was the previous chunk's last frame, from that frame (index -1);
    ``cuts``: the frames that start a new scene (``pipeline.scenes.scene_cuts``), always keyframes, as is the
    last frame of each scene and of the chunk. K = 1: every frame.
    """
    if keyframes < 1:
        raise ValueError(f"keyframes must be >= 1, got {keyframes}")
    bounds = [0, *sorted(c for c in cuts if 0 < c < length), length]
    keys: set[int] = set()
    for start, stop in itertools.pairwise(bounds):
        first = start - 1 + keyframes if start == 0 and continues and 0 not in cuts else start
        keys.update(range(first, stop, keyframes))
        keys.add(stop - 1)
    return sorted(keys)


@torch.no_grad()
def _flows_to(frames: Tensor, targets: Tensor, flow_model: nn.Module) -> tuple[Tensor, Tensor]:
    """Flows (N,2,H,W) from each frame (N,3,H,W) to its target (N,3,H,W), and the occlusion masks (N,1,H,W)
    of those flows (1 = the frame's pixel is seen in the target), ``FLOW_BATCH`` pairs per call."""
    flows, masks = [], []
    for start in range(0, frames.shape[0], FLOW_BATCH):
        first, second = frames[start : start + FLOW_BATCH], targets[start : start + FLOW_BATCH]
        both = flow_model(torch.cat([first, second]), torch.cat([second, first]))
        to_target, back = both[: first.shape[0]], both[first.shape[0] :]
        flows.append(to_target)
        masks.append(occlusion_mask(to_target, back))
    return torch.cat(flows), torch.cat(masks)


@torch.no_grad()
def propagate(frames: Tensor, keys: list[int], key_images: Tensor, flow_model: nn.Module,
              previous: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Stylized images (T,3,H,W) in [0,1] of ``frames`` (T,3,H,W): at the ``keys`` (``keyframe_indices``)
    their ``key_images`` (K,3,H,W), in between each pixel from one of the two neighbouring keyframes warped
    along the content flow (the module docstring's rule; ``flow_model``: ``rewards.flow.RAFTFlow`` or any
    model with its call). ``previous``: (content frame, stylized image), each (1,3,H,W), of the keyframe just
    before the chunk, the left neighbour of the frames before the first key."""
    if key_images.shape[0] != len(keys) or key_images.shape[-2:] != frames.shape[-2:]:
        raise ValueError(f"{len(keys)} keyframes need {len(keys)} images of {tuple(frames.shape[-2:])}, "
                         f"got {tuple(key_images.shape)}")
    content = frames if previous is None else torch.cat([previous[0].to(frames), frames])
    offset = 0 if previous is None else 1  # index in ``content`` of frame 0
    anchors = ([-1] if previous is not None else []) + list(keys)  # the keyframes' frame indices, sorted
    stylized = key_images.to(frames) if previous is None else torch.cat([previous[1].to(frames), key_images.to(frames)])
    result = torch.empty_like(frames)
    result[keys] = key_images.to(frames)
    between = [t for t in range(frames.shape[0]) if t not in set(keys)]
    if not between:
        return result
    left = [bisect.bisect_left(anchors, t) - 1 for t in between]
    right = [bisect.bisect_right(anchors, t) for t in between]
    if min(left) < 0 or max(right) >= len(anchors):
        raise ValueError(f"every frame between keyframes needs a keyframe on each side; keyframes {keys} of "
                         f"{frames.shape[0]} frames" + (" (and the previous chunk's last)" if previous else ""))
    sources = content[[t + offset for t in between] * 2]
    flows, masks = _flows_to(sources, content[[anchors[i] + offset for i in left + right]], flow_model)
    warped = detail_preserving_warp(stylized[left + right], flows)
    count = len(between)
    to_left = torch.tensor([t - anchors[i] for t, i in zip(between, left)], device=frames.device)
    to_right = torch.tensor([anchors[i] - t for t, i in zip(between, right)], device=frames.device)
    nearer_left = (to_left <= to_right).to(frames.dtype).view(-1, 1, 1, 1)
    score_left = 2 * masks[:count] + nearer_left  # visible beats occluded; between equals, the nearer keyframe
    score_right = 2 * masks[count:] + 1 - nearer_left
    result[between] = torch.where(score_left >= score_right, warped[:count], warped[count:]).clamp(0, 1)
    return result
