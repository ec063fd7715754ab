"""The work behind ``scripts/app.py``: which methods the page offers, checks of uploads, one job per browser
session, and running a job through the same code as ``stylize_video.py`` (the method registry and
``stylize_file``), then scoring it with the evaluation code. No stylization logic of its own."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from baselines.rlministyler.models import RLMiniStyler
from baselines.rlnst.models import RLNST
from pipeline.evaluation.metrics import Evaluator
from pipeline.io.images import ImageReadError, load_image, restore_size
from pipeline.io.pretrained import CONFIG_FILE, resolve_model_folder
from pipeline.io.video import (
    VideoInfo,
    list_videos,
    read_video,
    video_info,
    write_video,
)
from pipeline.latents.cache import LatentCache
from pipeline.latents.codecs import LatentCodec, load_codec
from pipeline.latents.stylizers import build_stylizer
from pipeline.latents.stylizers.base import Stylizer
from pipeline.latents.stylizers.latent_wct import LatentWCTConfig
from pipeline.methods import Components, load_method, stylize_file
from policies.base import Policy
from rewards.flow import default_flow_model

# model format in a run's config.json -> registry method that loads it, and how the page names it
RUN_KINDS: dict[str, tuple[str, str]] = {
    Policy.pretrained_format: ("policy", "Trained policy"),
    RLNST.pretrained_format: ("rlnst", "RL-NST"),
    RLMiniStyler.pretrained_format: ("rlministyler", "RLMiniStyler"),
}
DEFAULT_LABEL = "Latent stylizer + the shipped policy (temporally consistent, any style)"
BASELINE_LABEL = "Latent stylizer, no policy (frame by frame)"
FLOW_BLEND_LABEL = "Latent stylizer + flow-blend (temporal strength)"


class UploadError(ValueError):
    """An upload or a choice the page refuses, with the one-line message it shows."""


class JobCancelled(Exception):
    """Raised from the progress callback when the session asked to cancel its job."""


@dataclass(frozen=True)
class MethodChoice:
    """One entry of the method menu: the registry ``name`` and its ``source`` (None: built from the sliders)."""

    label: str
    name: str
    source: str | None = None


def method_choices(runs_dir: Path) -> list[MethodChoice]:
    """The latent stylizer with the shipped policy (the default), with the flow-blend reference and without a
    policy, then every trained run or model folder found directly under ``runs_dir`` (policies, RL-NST and
    RLMiniStyler models), by name."""
    choices = [MethodChoice(DEFAULT_LABEL, "policy", "default"), MethodChoice(FLOW_BLEND_LABEL, "flow-blend"),
               MethodChoice(BASELINE_LABEL, "baseline")]
    for folder in sorted(p for p in runs_dir.glob("*") if p.is_dir()) if runs_dir.is_dir() else []:
        try:
            model_format = json.loads((resolve_model_folder(folder) / CONFIG_FILE).read_text()).get("format")
        except (OSError, ValueError):
            continue
        if model_format in RUN_KINDS:
            name, kind = RUN_KINDS[model_format]
            choices.append(MethodChoice(f"{kind}: {folder}", name, str(folder)))
    return choices


def check_video(path: str | Path, max_seconds: float) -> VideoInfo:
    """What the video at ``path`` holds; an UploadError when it is not a readable video or runs longer
    than ``max_seconds``."""
    try:
        info = video_info(path)
    except (OSError, ValueError) as error:
        raise UploadError(f"{Path(path).name} is not a video this app can read ({error})") from None
    seconds = info.num_frames / info.fps
    if seconds > max_seconds:
        raise UploadError(f"{Path(path).name} runs {seconds:.1f} s; this app takes videos of at most {max_seconds:g} s")
    return info


def check_style(path: str | Path) -> torch.Tensor:
    """The style image (1,3,H,W) at ``path``; an UploadError when it is not an image."""
    try:
        return load_image(path)
    except (OSError, ImageReadError, ValueError) as error:
        raise UploadError(f"{Path(path).name} is not an image this app can read ({error})") from None


def bundled_clips(data_dir: Path) -> list[Path]:
    """The test clips shipped in ``data_dir/videos/test`` (files and frame folders)."""
    folder = data_dir / "videos" / "test"
    return list_videos(folder) if folder.is_dir() else []


def bundled_styles(data_dir: Path) -> list[Path]:
    """The paintings shipped in ``data_dir/styles``."""
    return sorted((data_dir / "styles").glob("*.jpg"))


class SessionJobs:
    """At most one job per browser session; ``cancel`` flags a session's job, which its progress callback
    (``checkpoint``) then stops by raising JobCancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}

    def begin(self, session: str) -> bool:
        """Register a job for ``session``; False when it already has one running."""
        with self._lock:
            if session in self._cancel:
                return False
            self._cancel[session] = threading.Event()
            return True

    def end(self, session: str) -> None:
        with self._lock:
            self._cancel.pop(session, None)

    def cancel(self, session: str) -> bool:
        """Ask the job of ``session`` to stop; False when it has none."""
        with self._lock:
            event = self._cancel.get(session)
        if event is None:
            return False
        event.set()
        return True

    def checkpoint(self, session: str) -> None:
        """Raise JobCancelled when the job of ``session`` was asked to stop."""
        with self._lock:
            event = self._cancel.get(session)
        if event is not None and event.is_set():
            raise JobCancelled


@dataclass(frozen=True)
class JobRequest:
    """What the page asks for: the input video and style image paths, the method, the style strength
    (latent-WCT alpha), the temporal strength (the flow-blend factor), the output width and the keyframe
    spacing (``pipeline.keyframes``; 1: the stylizer on every frame)."""

    video: Path
    style: Path
    method: MethodChoice
    alpha: float
    temporal: float
    width: int
    keyframes: int = 1


@dataclass
class JobResult:
    """The stylized video, the input's frames at the same size (for the side-by-side view), the summary of
    ``stylize_file``, the metrics (None when they could not be computed, ``metrics_note`` says why)."""

    output: Path
    input_preview: Path
    summary: dict[str, Any]
    seconds: float
    metrics: dict[str, Any] | None
    metrics_note: str = ""


def build_latent_stylizer(alpha: float, codec: LatentCodec, device: torch.device) -> Stylizer:
    """The latent-WCT stylizer at strength ``alpha`` on ``codec`` (the one place that calls build_stylizer)."""
    return build_stylizer("latent-wct", LatentWCTConfig(alpha=alpha), codec=codec, device=device)


@dataclass
class Studio:
    """Runs jobs one at a time on ``device`` (models are shared between sessions): ``max_frames`` per video,
    ``chunk_size`` frames per progress step, the latent ``cache`` (None: no caching)."""

    device: torch.device
    max_frames: int | None
    chunk_size: int = 8
    cache: LatentCache | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _codec: LatentCodec | None = field(default=None, repr=False)
    _evaluator: Evaluator | None = field(default=None, repr=False)

    def components(self, alpha: float, keyframes: int = 1) -> Components:
        """The methods' shared parts, as ``stylize_video.py`` builds them, with the codec loaded once."""
        if self._codec is None:
            self._codec = load_codec("taef2", device=self.device)
        return Components(build_latent_stylizer(alpha, self._codec, self.device), self.cache, self.device,
                          chunk_size=self.chunk_size, keyframes=keyframes)  # the shared RAFT, loaded when needed

    def run(self, request: JobRequest, out_dir: Path, on_progress: Callable[[int, int], None],
            on_wait: Callable[[], None]) -> JobResult:
        """Stylize ``request`` into a new file in ``out_dir``, calling ``on_progress(done, total)`` per chunk
        (it may raise JobCancelled) and ``on_wait()`` first when another session's job holds the machine."""
        if not self._lock.acquire(blocking=False):
            on_wait()
            self._lock.acquire()
        try:
            return self._run(request, out_dir, on_progress)
        finally:
            self._lock.release()

    def _run(self, request: JobRequest, out_dir: Path, on_progress: Callable[[int, int], None]) -> JobResult:
        start = time.perf_counter()
        style = check_style(request.style).to(self.device)
        source = f"{request.temporal:g}" if request.method.name == "flow-blend" else request.method.source
        method = load_method(request.method.name, self.components(request.alpha, request.keyframes), source)
        out_dir.mkdir(parents=True, exist_ok=True)
        output = out_dir / f"{request.video.stem}_{request.style.stem}.mp4"
        summary = stylize_file(method, request.video, style, output, size=request.width, max_frames=self.max_frames,
                               chunk_size=self.chunk_size, progress=False, on_progress=on_progress)
        seconds = time.perf_counter() - start
        stylized, _ = read_video(output)
        content, _ = read_video(request.video, max_frames=stylized.shape[0])
        content = restore_size(content, tuple(stylized.shape[-2:]))
        preview = out_dir / f"{request.video.stem}_input.mp4"
        write_video(preview, content, summary["fps"])
        metrics, note = None, ""
        try:
            metrics = self.evaluator().evaluate(content, stylized, style.cpu())
        except ValueError as error:
            note = f"metrics skipped: {error}"
        return JobResult(output, preview, summary, seconds, metrics, note)

    def evaluator(self) -> Evaluator:
        """The scoring models (CLIP off, RAFT flow shared with the methods, no long-term warping errors: the page
        shows none), loaded on first use."""
        if self._evaluator is None:
            self._evaluator = Evaluator(self.device, clip=None, flow_model=default_flow_model(self.device), long_term=())
        return self._evaluator
