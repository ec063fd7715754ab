"""Metrics of a stylized video against its content video and style image.

The numbers ``scripts/evaluate.py`` writes and ``scripts/compare.py``
tabulates. Every measure is a scoring function of ``rewards`` (the same code
as the RL reward where the two overlap); this module only feeds them and
collects per-frame values:

- ``warping_error_raft`` / ``warping_error_classical``: warping error of Lai
  et al. 2018 (``rewards.temporal.warping_error``) with the content's flows
  from RAFT-small and from an independent classical estimator (OpenCV Farneback by default, ``JUDGE_FLOW``,
  ``rewards.classical_flow``): policies observe DIS flows and are trained against RAFT flows, so the classical
  judge is a flow family neither uses;
- ``warping_error_k{K}_raft`` / ``warping_error_k{K}_classical``: the long-term warping error between frames
  K apart (``rewards.temporal.long_term_warping_error``: the flow estimated directly between frames t-K and
  t, with its forward-backward occlusion mask), K in ``long_term`` (default ``LONG_TERM_GAPS`` = 5, 10).
  Blending frames over time can pass the consecutive warping error while smearing the video; this catches
  it. A clip of K frames or fewer has no such pair: the metric is left out and the result's ``long_term``
  entry says so;
- ``temporal_l1``: the bidirectional occlusion-masked L1 of Kuang & Chen
  (``rewards.temporal.temporal_loss``) with the RAFT flows;
- ``style_gram``: Gram style loss to the style image (``rewards.style``);
- ``lpips_content``: LPIPS-alex to each content frame (``rewards.content``);
- ``ssim_content``: SSIM to each content frame (``rewards.ssim``);
- ``clip_content`` / ``clip_style`` / ``clip_consecutive``: CLIP cosine
  similarity of each stylized frame to its content frame, to the style image,
  and to the next stylized frame (``rewards.clip_score``), present only when
  CLIP ran; otherwise the result's ``clip`` entry says it was skipped and why.

Per-pair series (temporal metrics, ``clip_consecutive``) have T-1 entries,
entry i for frames (i, i+1) (the long-term ones T-K, entry i for frames (i, i+K)); per-frame series have T. ``reference`` holds
the same temporal measures of the content video itself (its own warping
error is not 0: flows are imperfect, and there are occlusions and lighting
changes), the scale against which a stylized video's numbers are read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pipeline.io.files import tensor_digest
from pipeline.io.images import load_image, restore_size
from pipeline.io.video import read_video
from rewards.classical_flow import ClassicalFlow
from rewards.clip_score import CLIPScorer, CLIPUnavailable, cosine
from rewards.content import MIN_SIZE as LPIPS_MIN_SIZE
from rewards.content import LPIPSDistance
from rewards.flow import ClipFlows, default_flow_model, flows_and_masks
from rewards.ssim import WINDOW as SSIM_WINDOW
from rewards.ssim import ssim
from rewards.style import GramStyleLoss
from rewards.temporal import (
    long_term_flows,
    long_term_warping_error,
    temporal_loss,
    warping_error,
)
from rewards.vgg import VGG16Features

VideoInput = Tensor | str | os.PathLike
MIN_SIDE = max(LPIPS_MIN_SIZE, SSIM_WINDOW)
RANGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class MetricInfo:
    """How to read a metric: label for tables, which direction is better, per frame or per pair."""

    key: str
    label: str
    better: str  # "lower" or "higher"
    per: str  # "frame" or "pair"


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("warping_error_raft", "Warping error, RAFT flow", "lower", "pair"),
    MetricInfo("warping_error_classical", "Warping error, OpenCV flow", "lower", "pair"),
    MetricInfo("temporal_l1", "Temporal L1 (bidirectional, masked)", "lower", "pair"),
    MetricInfo("style_gram", "Gram style loss", "lower", "frame"),
    MetricInfo("lpips_content", "LPIPS to content", "lower", "frame"),
    MetricInfo("ssim_content", "SSIM to content", "higher", "frame"),
    MetricInfo("clip_content", "CLIP similarity to content", "higher", "frame"),
    MetricInfo("clip_style", "CLIP similarity to style", "higher", "frame"),
    MetricInfo("clip_consecutive", "CLIP similarity of consecutive frames", "higher", "pair"),
    # relative to the frame-by-frame baseline of the same clip: computed by pipeline.evaluation.comparison.add_combined_reward
    MetricInfo("reward", "Combined reward (10 style + 1 LPIPS + 10 temporal L1, each / the baseline's)", "higher", "pair"),
)
METRIC_INFO = {m.key: m for m in METRICS}
REFERENCE_OF = {
    "warping_error_raft": "content_warping_error_raft",
    "warping_error_classical": "content_warping_error_classical",
    "temporal_l1": "content_temporal_l1",
    "clip_consecutive": "content_clip_consecutive",
}
LONG_TERM_GAPS = (5, 10)  # frame gaps K of the long-term warping error by default
FLOW_LABELS = {"raft": "RAFT", "classical": "OpenCV"}
# the classical judge: Farneback, a flow family that neither the policies' observations (OpenCV DIS by default)
# nor the reward (RAFT-small) use
JUDGE_FLOW = "farneback"
_LONG_TERM_KEY = re.compile(r"warping_error_k(\d+)_(raft|classical)")


def long_term_key(gap: int, flow: str) -> str:
    """The metric key of the long-term warping error between frames ``gap`` apart under the ``flow`` judge."""
    return f"warping_error_k{gap}_{flow}"


def long_term_gaps(gaps: Iterable[int]) -> tuple[int, ...]:
    """The long-term gaps to compute, sorted and unique; 0 stands for none (``--long-term 0``), 1 and negative
    gaps are refused (gap 1 is the consecutive warping error)."""
    gaps = {int(g) for g in gaps} - {0}
    if any(g < 2 for g in gaps):
        raise ValueError(f"long-term gaps must be >= 2 frames (1 is the consecutive warping error; 0: none), got {sorted(gaps)}")
    return tuple(sorted(gaps))


def metric_info(key: str) -> MetricInfo | None:
    """How to read the metric ``key`` (a key of ``METRICS`` or a long-term warping error of any gap), None if not one."""
    if key in METRIC_INFO:
        return METRIC_INFO[key]
    match = _LONG_TERM_KEY.fullmatch(key)
    if match is None:
        return None
    return MetricInfo(key, f"Warping error {match[1]} frames apart, {FLOW_LABELS[match[2]]} flow", "lower", "pair")


def reference_key(key: str) -> str | None:
    """The key in an evaluation's ``reference`` of the content's own value of metric ``key``, if it has one."""
    return REFERENCE_OF.get(key) or (f"content_{key}" if _LONG_TERM_KEY.fullmatch(key) else None)


def _table_rank(info: MetricInfo) -> tuple[int, int, int]:
    """Table order: that of ``METRICS``, the long-term warping errors (by gap) after the consecutive ones."""
    match = _LONG_TERM_KEY.fullmatch(info.key)
    if match is None:
        return METRICS.index(info), 0, 0
    return METRICS.index(METRIC_INFO["warping_error_classical"]), int(match[1]), list(FLOW_LABELS).index(match[2])


def metric_infos(keys: Iterable[str]) -> list[MetricInfo]:
    """The ``MetricInfo`` of each metric among ``keys`` (others ignored), once each, in table order."""
    return sorted({info.key: info for key in keys if (info := metric_info(key)) is not None}.values(), key=_table_rank)


def _series(values: Tensor) -> dict[str, Any]:
    values = values.detach().float().cpu()
    return {"mean": float(values.mean()), "per_frame": values.tolist()}


def _check_frames(frames: Tensor, what: str) -> None:
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"{what} must be frames (T,3,H,W), got shape {tuple(frames.shape)}")
    if frames.shape[0] < 2:
        raise ValueError(f"{what} has {frames.shape[0]} frame(s); temporal metrics need at least 2")
    if min(frames.shape[-2:]) < MIN_SIDE:
        raise ValueError(f"{what} is {frames.shape[-1]}x{frames.shape[-2]} px; the metrics need at least {MIN_SIDE} px per side")
    if not torch.isfinite(frames).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    low, high = float(frames.min()), float(frames.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(f"{what} has values in [{low:.3g}, {high:.3g}]; frames must be in [0,1]")


class Evaluator:
    """Holds the scoring models (VGG16, LPIPS, RAFT, the classical flow, CLIP) for many evaluations.

    ``clip``: a ``CLIPScorer``, a ``CLIPUnavailable`` (reported as skipped with
    its reason) or None (skipped: not requested). ``chunk_size``: frame pairs
    whose flows are held at once (memory does not grow with the clip unless
    ``cache_flows``, which keeps the flows of the last content clip so that
    several stylizations of one clip share them). ``long_term``: the frame gaps
    K of the long-term warping errors (``long_term_gaps``; empty: none).
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        clip: CLIPScorer | CLIPUnavailable | None = None,
        flow_model: torch.nn.Module | None = None,
        classical_flow: ClassicalFlow | None = None,
        chunk_size: int = 8,
        cache_flows: bool = False,
        long_term: Sequence[int] = LONG_TERM_GAPS,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.device = torch.device(device)
        self.vgg = VGG16Features().to(self.device)
        self.lpips = LPIPSDistance().to(self.device)
        self.flow_models = {
            "raft": flow_model if flow_model is not None else default_flow_model(self.device),
            "classical": classical_flow if classical_flow is not None else ClassicalFlow(JUDGE_FLOW),
        }
        self.clip = clip.to(self.device) if isinstance(clip, CLIPScorer) else clip
        self.chunk_size = chunk_size
        self.cache_flows = cache_flows
        self.long_term = long_term_gaps(long_term)
        self._style_losses: dict[str, GramStyleLoss] = {}
        self._flows: tuple[str, dict[Any, Any]] | None = None  # (content digest, flows by what they are)

    @property
    def flow_names(self) -> dict[str, str]:
        classical = self.flow_models["classical"]
        return {"raft": "raft-small (torchvision, princeton-vl weights)", "classical": getattr(classical, "name", type(classical).__name__)}

    def clip_status(self) -> dict[str, Any]:
        if self.clip is None:
            return {"status": "skipped", "reason": "no CLIP model was requested"}
        return self.clip.describe()

    def _style_loss(self, style_image: Tensor) -> GramStyleLoss:
        key = tensor_digest(style_image)
        if key not in self._style_losses:
            self._style_losses[key] = GramStyleLoss(self.vgg, style_image.to(self.device))
        return self._style_losses[key]

    def _pair_ranges(self, count: int) -> list[tuple[int, int]]:
        """(start, stop) frame ranges, stop inclusive, covering the count-1 pairs in chunks overlapping by one frame."""
        return [(s, min(s + self.chunk_size, count - 1)) for s in range(0, count - 1, self.chunk_size)]

    def _cached(self, content: Tensor, what: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, kept for the last content clip when ``cache_flows`` (``what`` names the result)."""
        if not self.cache_flows:
            return compute()
        key = tensor_digest(content)
        if self._flows is None or self._flows[0] != key:
            self._flows = (key, {})
        if what not in self._flows[1]:
            self._flows[1][what] = compute()
        return self._flows[1][what]

    def content_flows(self, content: Tensor) -> dict[str, list[ClipFlows]]:
        """Flows and occlusion masks of ``content`` per estimator, one ``ClipFlows`` per chunk of pairs."""
        return self._cached(content, "consecutive", lambda: {
            name: [flows_and_masks(content[s : e + 1], model, batch_size=self.chunk_size) for s, e in self._pair_ranges(content.shape[0])]
            for name, model in self.flow_models.items()
        })

    def long_term_flows(self, content: Tensor, gap: int) -> dict[str, ClipFlows]:
        """Flows and occlusion masks of the pairs (i, i+``gap``) of ``content`` per estimator (``rewards.temporal.long_term_flows``)."""
        return self._cached(content, ("long-term", gap), lambda: {
            name: long_term_flows(content, gap, model, batch_size=self.chunk_size) for name, model in self.flow_models.items()
        })

    def _long_term(self, content: Tensor, stylized: Tensor, metrics: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
        """Add the long-term warping errors to ``metrics`` and ``reference``; returns the gaps and the ones skipped (clip too short)."""
        frames = content.shape[0]
        skipped = []
        for gap in self.long_term:
            if frames <= gap:
                skipped.append({"gap": gap, "reason": f"the clip has {frames} frames; frames {gap} apart need at least {gap + 1}"})
                continue
            for name, flows in self.long_term_flows(content, gap).items():
                key = long_term_key(gap, name)
                metrics[key] = _series(long_term_warping_error(stylized, content, gap, flows=flows).per_frame)
                reference[reference_key(key)] = _series(long_term_warping_error(content, content, gap, flows=flows).per_frame)
        return {"gaps": list(self.long_term), "skipped": skipped}

    def _batched(self, fn, *tensors: Tensor) -> Tensor:
        return torch.cat([fn(*(t[i : i + self.chunk_size] for t in tensors)) for i in range(0, tensors[0].shape[0], self.chunk_size)])

    @torch.no_grad()
    def evaluate(self, content: Tensor, stylized: Tensor, style_image: Tensor) -> dict[str, Any]:
        """All metrics of ``stylized`` (T,3,H,W) against ``content`` (same shape) and ``style_image`` (1,3,h,w), all in [0,1]."""
        _check_frames(content, "the content video")
        _check_frames(stylized, "the stylized video")
        if stylized.shape != content.shape:
            raise ValueError(f"stylized {tuple(stylized.shape)} and content {tuple(content.shape)} must have the same shape")
        if style_image.dim() != 4 or style_image.shape[:2] != (1, 3):
            raise ValueError(f"the style image must be (1,3,H,W), got {tuple(style_image.shape)}")
        content, stylized = content.to(self.device), stylized.to(self.device)
        flows = self.content_flows(content)
        ranges = self._pair_ranges(content.shape[0])
        metrics: dict[str, Any] = {}
        reference: dict[str, Any] = {}
        for name, chunks in flows.items():
            metrics[f"warping_error_{name}"] = _series(torch.cat(
                [warping_error(stylized[s : e + 1], content[s : e + 1], flows=f).per_frame for (s, e), f in zip(ranges, chunks)]))
            reference[f"content_warping_error_{name}"] = _series(torch.cat(
                [warping_error(content[s : e + 1], content[s : e + 1], flows=f).per_frame for (s, e), f in zip(ranges, chunks)]))
        long_term = self._long_term(content, stylized, metrics, reference)
        raft = flows["raft"]
        metrics["temporal_l1"] = _series(torch.cat([temporal_loss(stylized[s : e + 1], f) for (s, e), f in zip(ranges, raft)]))
        reference["content_temporal_l1"] = _series(torch.cat([temporal_loss(content[s : e + 1], f) for (s, e), f in zip(ranges, raft)]))
        metrics["style_gram"] = _series(self._batched(self._style_loss(style_image), stylized))
        metrics["lpips_content"] = _series(self._batched(self.lpips, stylized, content))
        metrics["ssim_content"] = _series(self._batched(ssim, stylized, content))
        if isinstance(self.clip, CLIPScorer):
            s_emb, c_emb = self.clip.embed(stylized), self.clip.embed(content)
            metrics["clip_content"] = _series(cosine(s_emb, c_emb))
            metrics["clip_style"] = _series(cosine(s_emb, self.clip.embed(style_image)))
            metrics["clip_consecutive"] = _series(cosine(s_emb[:-1], s_emb[1:]))
            reference["content_clip_consecutive"] = _series(cosine(c_emb[:-1], c_emb[1:]))
        return {
            "frames": content.shape[0],
            "height": content.shape[-2],
            "width": content.shape[-1],
            "flow_estimators": self.flow_names,
            "metrics": metrics,
            "reference": reference,
            "long_term": long_term,
            "clip": self.clip_status(),
        }


def _read(video: VideoInput, what: str, max_frames: int | None) -> tuple[Tensor, str]:
    if max_frames is not None and max_frames < 2:
        raise ValueError(f"max_frames must be at least 2 (temporal metrics need a pair), got {max_frames}")
    if isinstance(video, Tensor):
        return (video if max_frames is None else video[:max_frames]), f"<{what} tensor>"
    frames, _ = read_video(video, max_frames=max_frames)
    return frames, str(video)


def load_inputs(
    content: VideoInput, stylized: VideoInput, max_frames: int | None = None, resize: bool = False
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Content and stylized frames (T,3,H,W) checked to match frame for frame, plus notes for the report.

    Videos are paths (file or frame folder) or tensors. ``max_frames`` keeps
    the first N of each. Different lengths are an error. A stylized video one
    pixel larger on a side (the project's mp4 padding of odd sides) is cropped
    back; other different sizes are an error unless ``resize``, which resizes
    the stylized frames to the content's size (antialiased bilinear). The notes
    say which was done.
    """
    content_frames, content_name = _read(content, "content", max_frames)
    stylized_frames, stylized_name = _read(stylized, "stylized", max_frames)
    for frames, name in ((content_frames, content_name), (stylized_frames, stylized_name)):
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"{name} must hold frames (T,3,H,W), got shape {tuple(frames.shape)}")
    if stylized_frames.shape[0] != content_frames.shape[0]:
        hint = "" if max_frames is not None else " (pass max_frames / --max-frames N to compare the first N frames)"
        raise ValueError(
            f"the stylized video {stylized_name} has {stylized_frames.shape[0]} frames but the content {content_name} "
            f"has {content_frames.shape[0]}: they must match frame for frame{hint}"
        )
    notes: dict[str, Any] = {"content": content_name, "stylized": stylized_name, "max_frames": max_frames, "resized": None}
    size, content_size = tuple(stylized_frames.shape[-2:]), tuple(content_frames.shape[-2:])
    if size != content_size and all(0 <= s - c <= 1 for s, c in zip(size, content_size)):
        # mp4 (yuv420p) pads odd sides by one repeated row / column (pipeline.io.video): crop it away
        stylized_frames = stylized_frames[..., : content_size[0], : content_size[1]]
        notes["cropped"] = {"from": list(size), "to": list(content_size), "how": "mp4 padding to even sides removed"}
    elif size != content_size:
        if not resize:
            raise ValueError(
                f"the stylized video {stylized_name} is {size[1]}x{size[0]} px but the content {content_name} is "
                f"{content_size[1]}x{content_size[0]}: pass resize=True (--resize) to resize it to the content's size"
            )
        stylized_frames = restore_size(stylized_frames, content_size)
        notes["resized"] = {"from": list(size), "to": list(content_size), "how": "stylized frames resized to the content's size (bilinear, antialiased)"}
    return content_frames, stylized_frames, notes


def evaluate_video(
    content: VideoInput,
    stylized: VideoInput,
    style_image: Tensor | str | os.PathLike,
    clip_model: CLIPScorer | CLIPUnavailable | None = None,
    *,
    resize: bool = False,
    max_frames: int | None = None,
    device: str | torch.device = "cpu",
    classical_method: str = JUDGE_FLOW,
    long_term: Sequence[int] = LONG_TERM_GAPS,
) -> dict[str, Any]:
    """Metrics of a stylized video (see the module docstring) as a JSON-serialisable dict.

    ``content``/``stylized``: video files, frame folders or tensors (T,3,H,W)
    in [0,1]; ``style_image``: an image path or a tensor (1,3,H,W).
    ``clip_model``: from ``rewards.clip_score.load_clip`` (None: CLIP skipped,
    not requested). ``classical_method``: ``farneback`` (default, ``JUDGE_FLOW``), ``dis`` or ``auto`` (DIS, else Farneback),
    ``dis`` or ``farneback``. ``long_term``: the gaps of the long-term warping
    errors (empty: none).
    """
    content_frames, stylized_frames, notes = load_inputs(content, stylized, max_frames, resize)
    style_name = "<style tensor>" if isinstance(style_image, Tensor) else str(style_image)
    style = style_image if isinstance(style_image, Tensor) else load_image(Path(style_image))
    evaluator = Evaluator(device, clip=clip_model, classical_flow=ClassicalFlow(classical_method), long_term=long_term)
    result = evaluator.evaluate(content_frames, stylized_frames, style)
    return {"format": "vstyle-metrics-v1", "inputs": {**notes, "style": style_name}, **result}


def summary_rows(result: dict[str, Any]) -> list[dict[str, object]]:
    """Rows (metric, mean, better, content's own) of an ``evaluate_video`` result, for ``print_table``."""
    rows = []
    for info in metric_infos(result["metrics"]):
        ref = result["reference"].get(reference_key(info.key) or "")
        rows.append({
            "metric": info.label,
            "mean": result["metrics"][info.key]["mean"],
            "better": info.better,
            "content's own": ref["mean"] if ref else "",
        })
    return rows
