"""The end-to-end stylization pipeline: video in, stylized video out.

frames -> per-frame stylizer latents (cached) -> optional policy residual
-> codec decode -> frames at the original size. Long videos stream through
in chunks, so memory is bounded by the chunk size, not the video's length.
Components are passed in, as in a diffusers pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pipeline.io.images import resize_to_width, restore_size
from pipeline.io.video import iter_video_chunks, open_writer, video_info
from pipeline.keyframes import keyframe_indices, propagate
from pipeline.latents.cache import LatentCache
from pipeline.latents.codecs import LatentCodec, load_warp_codec
from pipeline.latents.stylizers.base import Stylizer
from pipeline.scenes import scene_cuts
from policies.observations import reads_pixel_warp
from policies.rollout import RolloutState, apply_policy_to_chunk

MAX_DEFAULT_WIDTH = 512


@dataclass
class StylizedClip:
    """Frames (T,3,H,W) in [0,1] of the frame-by-frame baseline and of the result, at the working size.

    ``baseline`` is None where the caller asked not to decode it (``stylize_chunk``). ``cuts``: indices of
    the frames that start a new scene (``pipeline.scenes``), where the policy started afresh.
    """

    baseline: Tensor | None
    result: Tensor
    cuts: list[int] = field(default_factory=list)


@dataclass
class ChunkState:
    """What the next chunk of a video needs from this one: the policy's rollout state, the last frame and,
    with keyframes, its stylized image (1,3,H,W) in [0,1] (the chunk's last frame is always a keyframe)."""

    rollout: RolloutState | None = None
    last_frame: Tensor | None = None
    keyframe: Tensor | None = None


def working_width(input_width: int, size: int | None) -> int:
    """The frame width the pipeline works at: ``size``, else the input's capped at 512."""
    if size is not None:
        if size < 8:
            raise ValueError(f"--size must be at least 8 pixels, got {size}")
        return size
    return min(input_width, MAX_DEFAULT_WIDTH)


class StylizationPipeline:
    """Stylize clips frame by frame, then refine the latents with a policy.

    stylizer: the per-frame stylizer (its ``codec`` decodes the latents).
    policy: a ``policies.base.Policy`` or None for the frame-by-frame baseline.
    cache: where baseline latents are kept; None computes them without caching.
    flow_model: the content-flow estimator of a policy with flow observations, the one it was trained with
    (``policy.observation_flow``, built by ``rewards.flow.build_flow_model``).
    warp_codec: for a policy whose observation warps in pixels, the codec that decodes its outputs and re-encodes
    the warp (default: ``pipeline.latents.codecs.load_warp_codec`` of the stylizer's codec and the policy's
    ``warp_encoder``: the same decoder, the encoder the policy was trained with).
    chunk_size: frames held in memory at once when streaming a video.
    keyframes: K > 1 runs the stylizer on keyframes only (every K-th frame, scene cuts, chunk ends) and
    propagates them along the content flow of ``keyframe_flow`` (a model with ``RAFTFlow``'s call, e.g.
    ``rewards.classical_flow.ClassicalFlow``) to the frames between (``pipeline.keyframes``).
    Scene cuts (``pipeline.scenes.scene_cuts``) restart the policy's temporal
    state and the keyframes, so nothing from before a cut is blended into the frames after it.
    """

    def __init__(
        self,
        stylizer: Stylizer,
        policy: Any | None = None,
        cache: LatentCache | None = None,
        flow_model: Any | None = None,
        chunk_size: int = 16,
        keyframes: int = 1,
        keyframe_flow: Any | None = None,
        warp_codec: LatentCodec | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if keyframes < 1:
            raise ValueError(f"keyframes must be >= 1, got {keyframes}")
        if keyframes > 1 and keyframe_flow is None:
            raise ValueError("keyframe propagation needs a keyframe_flow model for the content flow")
        self.stylizer = stylizer
        self.codec = stylizer.codec
        self.policy = policy
        self.cache = cache
        self.flow_model = flow_model
        self.chunk_size = chunk_size
        self.keyframes = keyframes
        self.keyframe_flow = keyframe_flow
        if warp_codec is None:
            pixel_warp = policy is not None and reads_pixel_warp(policy)
            warp_codec = load_warp_codec(self.codec, policy.warp_encoder) if pixel_warp else self.codec
        self.warp_codec = warp_codec

    def baseline_latents(self, frames: Tensor, style_image: Tensor) -> Tensor:
        """Per-frame stylized latents (T,C,H/8,W/8) of frames (T,3,H,W), cached when a cache is set."""
        if self.cache is not None:
            return self.cache.latents(self.stylizer, frames, style_image)
        with torch.no_grad():
            return self.stylizer.stylize(frames, style_image)

    def propagated_latents(self, frames: Tensor, style_image: Tensor, cuts: list[int],
                           state: ChunkState) -> tuple[Tensor | None, Tensor]:
        """Frames (T,3,H,W) with keyframes: their latents (T,C,h,w), None without a policy to refine them, and
        their images (T,3,H,W) in [0,1] on the CPU. At the keyframes the stylizer's latents (cached) and their
        decoding; between them the keyframe images propagated along the content flow (``pipeline.keyframes``)
        and, for the policy, the codec's encoding of those."""
        previous = state.keyframe is not None and 0 not in cuts
        keys = keyframe_indices(frames.shape[0], self.keyframes, cuts, continues=previous)
        key_latents = self.baseline_latents(frames[keys], style_image)
        device = next(self.codec.parameters()).device
        key_images = self.codec.decode(key_latents.to(device))
        images = propagate(frames.to(device), keys, key_images, self.keyframe_flow,
                           (state.last_frame.to(device), state.keyframe.to(device)) if previous else None)
        if self.policy is None:
            return None, images.cpu()
        between = [t for t in range(frames.shape[0]) if t not in set(keys)]
        latents = key_latents.new_empty((frames.shape[0], *key_latents.shape[1:]))
        latents[keys] = key_latents
        if between:
            latents[between] = self.codec.encode(images[between]).to(latents)
        return latents, images.cpu()

    @torch.no_grad()
    def stylize_chunk(
        self, frames: Tensor, style_image: Tensor, state: ChunkState | None = None, decode_baseline: bool = True
    ) -> tuple[StylizedClip, ChunkState]:
        """Stylize consecutive frames (t,3,H,W) at their size (multiples of 8).

        ``state`` carries what the policy needs from the previous chunk; pass the
        returned state with the next chunk of the same video, None at its start.
        ``decode_baseline=False`` skips decoding the baseline latents when a
        policy refines them (the clip's ``baseline`` is then None).
        """
        state = state or ChunkState()
        cuts = scene_cuts(frames, state.last_frame)
        device = next(self.codec.parameters()).device
        if self.keyframes > 1:  # the frames between keyframes are their propagated images, not re-decoded
            latents, images = self.propagated_latents(frames, style_image, cuts, state)
        else:
            latents = self.baseline_latents(frames, style_image)
            images = self.codec.decode(latents.to(device)).cpu() if self.policy is None or decode_baseline else None
        keyframe = images[-1:] if self.keyframes > 1 else None  # a chunk's last frame is a keyframe
        if self.policy is None:
            return StylizedClip(images, images, cuts), ChunkState(None, frames[-1:], keyframe)
        rollout, parts, decoded = state.rollout, [], []
        bounds = [0, *(c for c in cuts if c > 0), frames.shape[0]]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            if start in cuts:
                rollout = None  # a new scene: start the temporal state afresh
            part, rollout = apply_policy_to_chunk(self.policy, latents[start:stop], frames[start:stop], rollout,
                                                  flow_model=self.flow_model, codec=self.warp_codec)
            parts.append(part)
            decoded.append(rollout.decoded)
        baseline = images if decode_baseline else None
        if all(part is not None for part in decoded):  # the pixel flow warp decoded every output already
            result = torch.cat(decoded).cpu()
        else:
            result = self.codec.decode(torch.cat(parts).to(device)).cpu()
        return StylizedClip(baseline, result, cuts), ChunkState(rollout, frames[-1:], keyframe)

    def stylize_clip(self, frames: Tensor, style_image: Tensor) -> StylizedClip:
        """Stylize a whole in-memory clip (T,3,H,W) in chunks; returns frames at the same size."""
        parts, state = [], None
        for start in range(0, frames.shape[0], self.chunk_size):
            clip, state = self.stylize_chunk(frames[start : start + self.chunk_size], style_image, state)
            parts.append(clip)
        cuts = [start + c for start, clip in zip(range(0, frames.shape[0], self.chunk_size), parts) for c in clip.cuts]
        return StylizedClip(torch.cat([p.baseline for p in parts]), torch.cat([p.result for p in parts]), cuts)


def stream_video(
    video_path: str | os.PathLike,
    out_path: str | os.PathLike,
    process: Callable[[Tensor], list[Tensor]],
    size: int | None = None,
    overwrite: bool = False,
    max_frames: int | None = None,
    chunk_size: int = 16,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Read a video chunk by chunk, stylize each chunk with ``process``, write the result atomically.

    ``process(frames (t,3,H,W)) -> panels``: frames at the working size (width
    ``size``, else the input's up to 512, sides multiples of 8) in, one or more
    (t,3,H,W) panels out, written side by side. Panels are resized to the
    output size (the working width, the input's aspect ratio); the output
    keeps the input's fps and audio, in the format its extension names
    (``pipeline.io.video.open_writer``: mp4, webm, gif, or PNG frames for a
    path ending with ``/``). The writer checks the output before any frame is
    stylized (``pipeline.io.video.check_output``). Memory is
    bounded by ``chunk_size``. Returns a summary (frames, fps, sizes: the
    written size, with mp4's padding to even sides; whether audio was kept).
    ``on_progress(frames done, total)`` is called after each written chunk; an
    exception it raises (e.g. to cancel) stops the job and leaves no output.
    """
    info = video_info(video_path)
    width = working_width(info.width, size)
    out_height = max(1, round(info.height * width / info.width))
    total = info.num_frames if max_frames is None else min(info.num_frames, max_frames)
    with open_writer(out_path, info.fps, overwrite=overwrite, audio_from=video_path) as writer, tqdm(
        total=total, unit="frame", desc="stylizing", disable=not progress
    ) as bar:
        done = 0
        for chunk in iter_video_chunks(video_path, chunk_size, max_frames=max_frames):
            work = resize_to_width(chunk, width)
            panels = process(work)
            writer.write(torch.cat([restore_size(p, (out_height, width)) for p in panels], dim=3))
            bar.update(chunk.shape[0])
            done += chunk.shape[0]
            if on_progress is not None:
                on_progress(done, total)
    return {
        "frames": total,
        "fps": info.fps,
        "input_size": (info.height, info.width),
        "output_size": tuple(writer.size),
        "working_size": tuple(work.shape[-2:]),
        "audio": writer.audio,
    }
