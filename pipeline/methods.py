"""The registry of stylization methods: one entry per method, read by ``scripts/stylize_video.py`` and
``scripts/compare.py`` (through ``pipeline.evaluation.comparison``).

A loaded ``Method`` stylizes the consecutive chunks of one video: ``method.video(style)`` returns a function
``frames (t,3,H,W) in [0,1] at the working size -> StylizedClip`` that keeps what the method carries from one
chunk to the next (the policy's previous output, RL-NST's hidden state). Entries:

- ``baseline``: every frame stylized on its own by the latent stylizer (the frame-by-frame baseline);
- ``policy``: the baseline latents refined by a trained policy (a run folder of ``train_policy.py``);
- ``flow-blend``: refined by the fixed flow-blend reference, source ``FACTOR[:WARP]`` (e.g. ``0.7:pixel``);
- ``rlnst``: an RL-NST pixel-space model (image or video) of ``train_rlnst.py``, on the style it was trained for;
- ``rlministyler``: an arbitrary-style RLMiniStyler model of ``train_rlministyler.py``.

Adding a method = a loader ``(components, source, steps) -> Method`` and one ``MethodEntry`` in ``METHODS``
(``docs/architecture.md``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from baselines.rlministyler import inference as rlministyler
from baselines.rlnst import inference as rlnst
from pipeline.io.video import IMAGE_EXTENSIONS, list_videos
from pipeline.latents.cache import LatentCache
from pipeline.latents.stylizers.base import Stylizer
from pipeline.stylize import StylizationPipeline, StylizedClip, stream_video
from policies.base import SHIPPED_POLICIES, Policy, load_policy
from policies.observations import FLOW_WARPS
from policies.references import FlowBlendConfig, FlowBlendPolicy
from rewards.flow import build_flow_model, default_flow_model

ChunkStylizer = Callable[[Tensor], StylizedClip]
DEFAULT_FLOW_BLEND = "0.5"
# content flows that propagate keyframes: OpenCV Farneback (default: 30 ms a pair at 256 px on the CPU, where
# RAFT-small took 2.4 s and the refined latent WCT 17.5 s a frame, so RAFT would eat the saving), DIS, or RAFT
KEYFRAME_FLOWS = ("farneback", "dis", "raft")


@dataclass
class Components:
    """What the methods share, built once by the caller: the per-frame ``stylizer`` (its codec decodes), the
    latent ``cache`` (None: no caching), the ``device``, and the RAFT ``flow_model`` that flow-observation
    policies reading RAFT flows and keyframe propagation use (None: the shared RAFT, loaded on first use by ``flow``).
    ``chunk_size``: frames per chunk; ``keyframes``: K > 1 runs the stylizer on every K-th frame only and
    propagates it to the frames between (``pipeline.keyframes``), for every latent method, along the content
    flow of ``keyframe_flow`` (``KEYFRAME_FLOWS``)."""

    stylizer: Stylizer
    cache: LatentCache | None
    device: torch.device
    flow_model: nn.Module | None = None
    chunk_size: int = 16
    keyframes: int = 1
    keyframe_flow: str = "farneback"

    def __post_init__(self) -> None:
        if self.keyframes < 1:
            raise ValueError(f"keyframes must be >= 1 (1: the stylizer on every frame), got {self.keyframes}")
        if self.keyframe_flow not in KEYFRAME_FLOWS:
            raise ValueError(f"unknown keyframe flow {self.keyframe_flow!r}; choose one of {', '.join(KEYFRAME_FLOWS)}")

    def propagation_flow(self) -> nn.Module:
        """The flow model that carries keyframes to the frames between (``keyframe_flow``)."""
        return self.flow(self.keyframe_flow)

    def flow(self, estimator: str = "raft") -> nn.Module:
        """The content flow model ``estimator`` (``rewards.flow.FLOW_ESTIMATORS``): for ``raft`` ``flow_model``,
        loading the shared RAFT the first time it is needed; the OpenCV ones are built on the spot (no weights)."""
        if estimator != "raft":
            return build_flow_model(estimator, self.device)
        if self.flow_model is None:
            self.flow_model = default_flow_model(self.device)
        return self.flow_model


class Method:
    """A loaded method. ``info``: what the report says of it (kind, steps, trained styles)."""

    def __init__(self, info: dict[str, Any] | None = None) -> None:
        self.info = info or {}

    def applies_to(self, style_name: str) -> bool:
        """Whether the method can stylize with the style named ``style_name`` (a file stem)."""
        return True

    def video(self, style: Tensor, with_baseline: bool = False) -> ChunkStylizer:
        """The chunk stylizer of one new video with ``style`` (1,3,H,W) in [0,1]; ``with_baseline`` also
        returns the frame-by-frame baseline where the method has one (else ``StylizedClip.baseline`` is None)."""
        raise NotImplementedError

    def stylize_clip(self, frames: Tensor, style: Tensor, chunk_size: int = 16) -> Tensor:
        """Stylized frames (T,3,H,W) of a whole in-memory clip, run chunk by chunk as a video would be."""
        run = self.video(style)
        return torch.cat([run(frames[i : i + chunk_size]).result for i in range(0, frames.shape[0], chunk_size)])


class LatentMethod(Method):
    """The latent pipeline (a ``StylizationPipeline``, with a policy or without: the frame-by-frame baseline)."""

    def __init__(self, pipeline: StylizationPipeline, info: dict[str, Any] | None = None) -> None:
        super().__init__(info)
        self.pipeline = pipeline

    @classmethod
    def from_components(cls, components: Components, policy: Policy | None,
                        info: dict[str, Any] | None = None) -> LatentMethod:
        """The pipeline of ``components`` with ``policy`` (the flow model only where the policy reads flows)."""
        reads_flow = policy is not None and policy.observation == "flow"
        flow_model = components.flow(policy.observation_flow) if reads_flow else None
        keyframe_flow = components.propagation_flow() if components.keyframes > 1 else None
        return cls(StylizationPipeline(components.stylizer, policy=policy, cache=components.cache,
                                       flow_model=flow_model, chunk_size=components.chunk_size,
                                       keyframes=components.keyframes, keyframe_flow=keyframe_flow), info)

    def video(self, style: Tensor, with_baseline: bool = False) -> ChunkStylizer:
        state = None

        def run(frames: Tensor) -> StylizedClip:
            nonlocal state
            clip, state = self.pipeline.stylize_chunk(frames, style, state, decode_baseline=with_baseline)
            return clip

        return run


class PixelMethod(Method):
    """A pixel-space model: ``new_video(style)`` gives ``frames (t,3,H,W) -> stylized (t,3,H,W)`` for one video;
    ``styles``: the style names it is limited to (None: any)."""

    def __init__(self, new_video: Callable[[Tensor], Callable[[Tensor], Tensor]], device: torch.device,
                 styles: set[str] | None = None, info: dict[str, Any] | None = None) -> None:
        super().__init__(info)
        self.new_video = new_video
        self.device = device
        self.styles = styles

    def applies_to(self, style_name: str) -> bool:
        return self.styles is None or style_name in self.styles

    def video(self, style: Tensor, with_baseline: bool = False) -> ChunkStylizer:
        stylize = self.new_video(style.to(self.device))
        return lambda frames: StylizedClip(None, stylize(frames.to(self.device)).to(frames.device))


def _check_policy_run(source: str, stylizer: Stylizer) -> None:
    """A run folder's config.json, or a model folder's ``training`` settings, must name the latent space in use:
    its stylizer and codec (settings without them predate the choice: latent-wct on taef2)."""
    config_file = SHIPPED_POLICIES.get(source, Path(source)) / "config.json"
    if not config_file.is_file():
        return
    saved = json.loads(config_file.read_text())
    config = saved.get("training", saved)
    trained = (config.get("stylizer") or "latent-wct", config.get("codec") or "taef2")
    if trained != (stylizer.name, stylizer.codec.name):
        raise ValueError(f"policy run {source} was trained on another latent space (stylizer {trained[0]}, codec "
                         f"{trained[1]}) than this one (stylizer {stylizer.name}, codec {stylizer.codec.name}): pass "
                         f"--stylizer {trained[0]} --codec {trained[1]}, or train a policy on this latent space")


def load_baseline(components: Components, source: str | None, steps: int | None) -> Method:
    return LatentMethod.from_components(components, None)


def load_trained_policy(components: Components, source: str | None, steps: int | None) -> Method:
    _check_policy_run(source, components.stylizer)
    policy = load_policy(source, device=components.device)
    codec = components.stylizer.codec
    if policy.latent_channels != codec.latent_channels:
        raise ValueError(f"policy {source} acts on {policy.latent_channels}-channel latents; codec {codec.name} "
                         f"has {codec.latent_channels}: it was trained on another latent space")
    return LatentMethod.from_components(components, policy, {"kind": policy.kind})


def parse_flow_blend(text: str) -> tuple[float, str]:
    """``FACTOR[:WARP]`` (e.g. ``0.5``, ``0.7:pixel``) -> (factor, warp) of the flow-blend reference."""
    factor, _, warp = text.partition(":")
    try:
        value = float(factor)
    except ValueError:
        value = float("nan")
    warp = warp or "latent"
    if not 0.0 <= value <= 1.0 or warp not in FLOW_WARPS:
        raise ValueError(f"flow-blend expects FACTOR[:WARP] with FACTOR in [0,1] and WARP one of "
                         f"{', '.join(FLOW_WARPS)}, got {text!r}")
    return value, warp


def load_flow_blend(components: Components, source: str | None, steps: int | None) -> Method:
    factor, warp = parse_flow_blend(source or DEFAULT_FLOW_BLEND)
    config = FlowBlendConfig(components.stylizer.codec.latent_channels, factor=factor, flow_warp=warp)
    return LatentMethod.from_components(components, FlowBlendPolicy(config).to(components.device),
                                        {"factor": factor, "flow_warp": warp})


def load_rlnst(components: Components, source: str | None, steps: int | None) -> Method:
    model = rlnst.load_model(source, device=components.device)
    settings = rlnst.training_settings(source)
    steps = steps or int(settings["episode_steps"])
    trained_style = Path(settings["style"]).stem
    return PixelMethod(lambda style: rlnst.StepwiseStylizer(model, steps), components.device, {trained_style},
                       {"kind": "rlnst-video" if model.is_video else "rlnst-image", "trained_style": trained_style,
                        "steps": steps})


def load_rlministyler(components: Components, source: str | None, steps: int | None) -> Method:
    model = rlministyler.load_model(source, device=components.device)
    settings = rlministyler.training_settings(source)
    steps = steps or int(settings["episode_steps"])

    def new_video(style: Tensor) -> Callable[[Tensor], Tensor]:
        return lambda frames: rlministyler.stylize_frames(model, frames, style, steps)

    return PixelMethod(new_video, components.device, None,
                       {"trained_styles": sorted(Path(p).stem for p in settings["styles"]), "steps": steps})


MIN_STYLE_SIDE = 16  # below this, VGG's Gram statistics hold a colour, not a texture


def style_warning(style: Tensor) -> str | None:
    """Why a style image (1,3,H,W) in [0,1] cannot carry a style (too small, or flat), or None if it can."""
    height, width = style.shape[-2:]
    if min(height, width) < MIN_STYLE_SIDE:
        return (f"the style image is {width}x{height} px: it holds a colour, not a texture, so the result is a "
                f"flat tint (use at least {MIN_STYLE_SIDE} px per side)")
    if float(style.std()) < 1e-3:
        return "the style image is one flat colour: the result is a flat tint"
    return None


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: ``source`` says what its source argument is (None: it takes none), ``source_path``
    whether that is a file or folder that must exist (else a spec, optional), ``steps`` whether it has a
    refinement-step count, ``load`` builds it."""

    name: str
    help: str
    load: Callable[[Components, str | None, int | None], Method] = field(repr=False)
    source: str | None = None
    source_path: bool = True
    steps: bool = False


METHODS: dict[str, MethodEntry] = {entry.name: entry for entry in (
    MethodEntry("baseline", "each frame stylized on its own in the latent space (the frame-by-frame baseline)",
                load_baseline),
    MethodEntry("policy", "baseline latents refined by a trained policy", load_trained_policy,
                source="'default' (the policy that ships, any style), or a run or policy folder of train_policy.py"),
    MethodEntry("flow-blend", "baseline latents pulled toward the flow-warped previous output by a fixed factor",
                load_flow_blend, source=f"FACTOR[:WARP], factor in [0,1], warp latent (default), pixel or detail (pixels, two bands); "
                       f"default {DEFAULT_FLOW_BLEND}",
                source_path=False),
    MethodEntry("rlnst", "RL-NST pixel-space model (image or video), only on the style it was trained for",
                load_rlnst, source="a model or run folder of train_rlnst.py", steps=True),
    MethodEntry("rlministyler", "RLMiniStyler pixel-space model, any style", load_rlministyler,
                source="a model or run folder of train_rlministyler.py", steps=True),
)}


def check_source(name: str, source: str | None) -> MethodEntry:
    """The registry entry of method ``name``, after checking ``source`` suits it: a clear error when the name is
    unknown, a required source is missing, a source is given to a method without one, or a path does not exist
    (a shipped policy's name, ``policies.base.SHIPPED_POLICIES``, stands for its folder)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    entry = METHODS[name]
    if entry.source is None and source is not None:
        raise ValueError(f"method {name} takes no source, got {source!r}")
    if entry.source is not None and entry.source_path:
        if source is None:
            raise ValueError(f"method {name} needs a source: {entry.source}")
        if source not in SHIPPED_POLICIES and not Path(source).exists():
            raise FileNotFoundError(f"{name}: {source} does not exist")
    return entry


def load_method(name: str, components: Components, source: str | None = None, steps: int | None = None) -> Method:
    """Load the registered method ``name`` from ``source`` (its run/model folder or spec); a clear error when
    the name is unknown, a required source is missing, or the source does not exist."""
    entry = check_source(name, source)
    if steps is not None and (not entry.steps or steps < 1):
        raise ValueError(f"method {name} takes no step count" if not entry.steps else f"steps must be >= 1, got {steps}")
    return entry.load(components, source, steps)


def stylize_file(
    method: Method,
    video_path: str | os.PathLike,
    style: Tensor,
    out_path: str | os.PathLike,
    size: int | None = None,
    side_by_side: bool = False,
    overwrite: bool = False,
    max_frames: int | None = None,
    chunk_size: int = 16,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Stylize the video (file or frame folder) at ``video_path`` with ``method`` and ``style`` (1,3,H,W) in
    [0,1] into ``out_path``, streaming in chunks (``pipeline.stylize.stream_video``: ``size``, ``overwrite``,
    ``max_frames``, ``on_progress``). ``side_by_side`` writes input | baseline (where the method has one) | result.
    Returns the summary of ``stream_video`` with ``scene_cuts``: the frames where a new scene starts."""
    stylize = method.video(style, with_baseline=side_by_side)
    cuts: list[int] = []
    done = 0

    def process(frames: Tensor) -> list[Tensor]:
        nonlocal done
        clip = stylize(frames)
        cuts.extend(done + c for c in clip.cuts if done + c > 0)
        done += frames.shape[0]
        if not side_by_side:
            return [clip.result]
        return [frames, clip.result] if clip.baseline is None else [frames, clip.baseline, clip.result]

    summary = stream_video(video_path, out_path, process, size=size, overwrite=overwrite, max_frames=max_frames,
                           chunk_size=chunk_size, progress=progress, on_progress=on_progress)
    return {**summary, "scene_cuts": cuts}


def is_video_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder of videos (files or frame folders) rather than one video's numbered frames."""
    path = Path(path)
    if not path.is_dir() or any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir() if p.is_file()):
        return False
    try:
        return bool(list_videos(path))
    except ValueError:  # no videos in it
        return False


def stylize_folder(
    method: Method,
    folder: str | os.PathLike,
    style: Tensor,
    out_dir: str | os.PathLike,
    extension: str = ".mp4",
    overwrite: bool = False,
    **options: Any,
) -> list[dict[str, Any]]:
    """Stylize every video of ``folder`` (``pipeline.io.video.list_videos``) into ``out_dir/<name><extension>``.

    Resumable: a clip whose output exists is skipped (unless ``overwrite``). A clip that fails with a user
    error (unreadable file, ...) is reported and the others still run. ``options``: ``stylize_file``'s.
    Returns one row per clip: name, status (``done``, ``skipped``, ``failed``), output, and the summary or error.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for video in list_videos(folder):
        out = out_dir / f"{video.stem}{extension}"
        row: dict[str, Any] = {"name": video.name, "output": str(out)}
        if out.exists() and not overwrite:
            rows.append({**row, "status": "skipped"})
            continue
        try:
            rows.append({**row, "status": "done", **stylize_file(method, video, style, out, overwrite=overwrite, **options)})
        except (OSError, ValueError) as error:
            rows.append({**row, "status": "failed", "error": str(error)})
    return rows
