"""Run stylization methods side by side on clips and styles, score them, and summarise (the engine of scripts/compare.py).

Methods come from the registry ``pipeline.methods.METHODS`` (``MethodSpec``: a label, the registry name, one
source per training seed): the frame-by-frame ``baseline``, ``flow-blend`` references, trained ``policy``
runs, ``rlnst`` models (run only on the style they were trained for) and ``rlministyler`` models.

All latent methods share one ``pipeline.methods.Components`` (the stylizer on its codec, as ``CompareConfig``
names them, the latent cache, the flow model, the keyframe spacing), so the
baseline latents of a (clip, style) are computed once. Every output is scored by
``pipeline.evaluation.metrics.Evaluator`` against the content (content flows computed once per clip).
``summarize`` turns the per-item scores into means with 95% confidence intervals over clips (clip x style
pairs), over seeds, and of the paired difference to the baseline. With a frontier sweep (``CompareConfig.frontier``,
default ``pipeline.evaluation.frontier.DEFAULT_FRONTIER``: factors 0.3 to 0.9 of the latent, pixel and detail
warps, and 1.0 of the detail warp) the flow-blend references are swept and every method is placed against their
frontier (``frontier_report``): does it beat every fixed blend at its warping error?
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pipeline.evaluation import report
from pipeline.evaluation.frontier import DEFAULT_FRONTIER, frontier_report
from pipeline.evaluation.metrics import (
    LONG_TERM_GAPS,
    Evaluator,
    metric_infos,
    reference_key,
)
from pipeline.evaluation.profiling import device_label
from pipeline.evaluation.stats import mean_ci
from pipeline.io.files import shared_data_dir
from pipeline.io.images import load_image, resize_to_width
from pipeline.io.video import read_video
from pipeline.latents.cache import LatentCache
from pipeline.latents.stylizers import build_latent_space, stylizer_config_class
from pipeline.methods import (
    DEFAULT_FLOW_BLEND,
    METHODS,
    Components,
    Method,
    check_source,
    load_method,
    parse_flow_blend,
)
from rewards.clip_score import load_clip
from rewards.flow import MemoFlow, default_flow_model
from rewards.reward import RewardScales, RewardWeights, combined_reward

DEFAULT_CLIPS = tuple(shared_data_dir() / "videos" / "test" / name
                      for name in ("wolf.mp4", "sintel_mountain_2", "sintel_alley", "asl_signing.mp4", "rollercoaster.mp4"))
DEFAULT_STYLES = (shared_data_dir() / "styles" / "starry_night.jpg",)
RESERVED = ("baseline", "flow-blend", "content")


@dataclass(frozen=True)
class MethodSpec:
    """A method to compare: ``label`` in the report, ``method`` its registry name, ``sources`` one per training
    seed (a flow-blend's ``FACTOR[:WARP]``; none for the baseline), ``steps`` its refinement steps (None: as trained).
    ``sweep``: a reference of the frontier sweep only: scored, tabulated and on the frontier plot, but left out of
    the side-by-side videos, the bar charts and the per-frame plots."""

    label: str
    method: str
    sources: tuple[str | None, ...] = (None,)
    steps: int | None = None
    sweep: bool = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.label, "method": self.method, "sources": list(self.sources), "steps": self.steps,
                "sweep": self.sweep}


def parse_named_sources(text: str, flag: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=PATH[,PATH2,...]`` -> (NAME, (PATH, PATH2, ...)); a clear ValueError otherwise."""
    name, sep, rest = text.partition("=")
    sources = tuple(s.strip() for s in rest.split(",") if s.strip())
    if not sep or not name.strip() or not sources:
        raise ValueError(f"{flag} expects NAME=PATH[,PATH2,...] (one path per training seed), got {text!r}")
    return name.strip(), sources


def build_methods(requests: Mapping[str, Sequence[str]] | None = None, flow_blends: Sequence[str] = (DEFAULT_FLOW_BLEND,),
                  steps: Mapping[str, int | None] | None = None, frontier: Sequence[str] = ()) -> list[MethodSpec]:
    """The method list of a comparison: the baseline, the flow-blend references (``FACTOR[:WARP]`` specs of
    ``flow_blends``, then those of the ``frontier`` sweep not among them, marked ``sweep``; one flow-blend in all
    is labelled ``flow-blend``, several ``flow-blend-WARP-FACTOR``), then per registry method with path sources
    its ``requests`` (``NAME=PATH[,PATH2,...]`` texts, one path per seed) with ``steps[method]``."""
    methods = [MethodSpec("baseline", "baseline")]
    blends: dict[tuple[float, str], tuple[str, bool]] = {}  # (factor, warp) -> (spec, only in the sweep)
    for texts, sweep in ((flow_blends, False), (frontier, True)):
        for text in texts:
            blends.setdefault(parse_flow_blend(text), (text, sweep))
    for (factor, warp), (text, sweep) in blends.items():
        label = "flow-blend" if len(blends) == 1 else f"flow-blend-{warp}-{factor:g}"
        methods.append(MethodSpec(label, "flow-blend", (text,), sweep=sweep))
    for method, texts in (requests or {}).items():
        if method not in METHODS or not METHODS[method].source_path:
            raise ValueError(f"{method!r} is not a registered method with sources; choose one of "
                             + ", ".join(name for name, entry in METHODS.items() if entry.source_path and entry.source))
        for text in texts:
            label, sources = parse_named_sources(text, f"--{method}")
            if label in RESERVED:
                raise ValueError(f"method name {label!r} is reserved; choose another NAME")
            for source in sources:
                check_source(method, source)
            methods.append(MethodSpec(label, method, sources, (steps or {}).get(method)))
    labels = [m.label for m in methods]
    if len(set(labels)) < len(labels):
        raise ValueError(f"method name(s) given twice: {sorted({n for n in labels if labels.count(n) > 1})}")
    return methods


def frontier_references(methods: Sequence[MethodSpec]) -> dict[str, str]:
    """The references of the frontier among ``methods``: label -> name on the plot (``0 (baseline)``, ``0.5:latent``)."""
    names = {}
    for spec in methods:
        if spec.method == "baseline":
            names[spec.label] = "0 (baseline)"
        elif spec.method == "flow-blend":
            factor, warp = parse_flow_blend(spec.sources[0] or DEFAULT_FLOW_BLEND)
            names[spec.label] = f"{factor:g}:{warp}"
    return names


@dataclass
class CompareConfig:
    """Settings of a comparison run (saved in results.json)."""

    out: str
    clips: list[str] = field(default_factory=lambda: [str(p) for p in DEFAULT_CLIPS])
    styles: list[str] = field(default_factory=lambda: [str(p) for p in DEFAULT_STYLES])
    width: int = 256
    max_frames: int | None = 24
    device: str = "cpu"
    cache_dir: str | None = None
    use_cache: bool = True
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    use_clip: bool = True
    seed: int = 0
    overwrite: bool = False
    progress: bool = True
    stylizer: str = "latent-wct"
    stylizer_options: dict[str, Any] = field(default_factory=dict)  # fields of the stylizer's config dataclass
    codec: str | None = None  # None: the stylizer's default
    keyframes: int = 1
    keyframe_flow: str = "farneback"
    long_term: list[int] = field(default_factory=lambda: list(LONG_TERM_GAPS))  # gaps K of the long-term warping error
    # the frontier sweep (build_methods' ``frontier``); empty: no frontier in the report
    frontier: list[str] = field(default_factory=lambda: list(DEFAULT_FRONTIER))

    def __post_init__(self) -> None:
        if self.width < 32:
            raise ValueError(f"width must be at least 32 px (LPIPS needs 32), got {self.width}")
        if self.max_frames is not None and self.max_frames < 2:
            raise ValueError(f"max_frames must be at least 2 (temporal metrics need a pair), got {self.max_frames}")
        if not self.clips or not self.styles:
            raise ValueError("a comparison needs at least one clip and one style")


def clip_name(path: str | os.PathLike) -> str:
    return Path(path).stem


def load_clips(paths: list[str], width: int, max_frames: int | None) -> dict[str, tuple[Tensor, float]]:
    """Frames (T,3,H,W) at ``width`` (sides multiples of 8) and fps of each clip, by name (file stem)."""
    clips: dict[str, tuple[Tensor, float]] = {}
    for path in paths:
        name = clip_name(path)
        if name in clips:
            raise ValueError(f"two clips are named {name!r}; clip names (file stems) must differ")
        frames, fps = read_video(path, max_frames=max_frames)
        if frames.shape[0] < 2:
            raise ValueError(f"clip {path} has {frames.shape[0]} frame(s); the comparison needs at least 2")
        clips[name] = (resize_to_width(frames, width), fps)
    return clips


@dataclass
class MethodRun:
    """One seed of a method, loaded: ``method`` runs it, ``seed_index``/``source`` say which seed."""

    spec: MethodSpec
    seed_index: int
    source: str | None
    method: Method

    def run(self, frames: Tensor, style: Tensor, style_name: str) -> Tensor | None:
        """Stylized frames (T,3,H,W) of a clip, or None where the method does not apply to this style."""
        return self.method.stylize_clip(frames, style) if self.method.applies_to(style_name) else None


def prepare_methods(methods: list[MethodSpec], components: Components) -> list[MethodRun]:
    """Load every seed of every method once."""
    return [MethodRun(spec, index, source, load_method(spec.method, components, source, spec.steps))
            for spec in methods for index, source in enumerate(spec.sources)]


def summarize(items: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Per metric and method: mean with 95% CI over clips, over seeds, and of the paired difference to the baseline.

    An item is one (clip, style, method, seed) evaluation. Per (clip, style)
    the seeds of a method are averaged first; "clips" statistics run over
    these (clip, style) means, "seeds" statistics over each seed's mean across
    (clip, style) pairs (only for methods with several seeds), and "delta"
    over the paired differences method - baseline of the (clip, style) means.
    """
    summary: dict[str, Any] = {}
    for info in metric_infos(key for item in items for key in item["metrics"]):
        per_method: dict[str, dict[tuple[str, str], dict[int, float]]] = {}
        references: dict[tuple[str, str], float] = {}
        for item in items:
            if info.key not in item["metrics"]:
                continue
            pair = (item["clip"], item["style"])
            per_method.setdefault(item["method"], {}).setdefault(pair, {})[item["seed_index"]] = item["metrics"][info.key]["mean"]
            reference = item["reference"].get(reference_key(info.key) or "")
            if reference is not None:
                references[pair] = reference["mean"]
        if not per_method:
            continue
        pair_means = {m: {pair: sum(s.values()) / len(s) for pair, s in pairs.items()} for m, pairs in per_method.items()}
        baseline = pair_means.get("baseline", {})
        rows = {}
        for method in methods:
            if method not in per_method:
                continue
            means = pair_means[method]
            row: dict[str, Any] = {"clips": mean_ci(list(means.values())).as_dict()}
            seeds = sorted({s for seeds in per_method[method].values() for s in seeds})
            row["n_seeds"] = len(seeds)
            if len(seeds) > 1:
                seed_means = [
                    sum(v[s] for v in per_method[method].values() if s in v) / sum(1 for v in per_method[method].values() if s in v)
                    for s in seeds
                ]
                row["seeds"] = mean_ci(seed_means).as_dict()
            shared = [pair for pair in means if pair in baseline]
            if method != "baseline" and shared:
                row["delta_vs_baseline"] = mean_ci([means[p] - baseline[p] for p in shared]).as_dict()
            rows[method] = row
        summary[info.key] = {
            "label": info.label,
            "better": info.better,
            "methods": rows,
            "content_reference": mean_ci(list(references.values())).as_dict() if references else None,
        }
    return summary


def add_combined_reward(items: list[dict[str, Any]], weights: RewardWeights = RewardWeights()) -> None:
    """Add the metric ``reward`` to the ``items`` of one (clip, style), in place: the combined reward
    (``rewards.reward.combined_reward``, ``docs/conventions.md``) per frame t >= 1, from the evaluation metrics
    (Gram style loss, LPIPS to the content, temporal L1 of the pair (t-1, t)), with (S, C, T) the
    frame-by-frame baseline's means on this clip (as ``rewards.reward.RewardScales.from_terms``): the
    baseline scores -(w_s + w_c + w_t). Nothing is added when the baseline is not among the items."""
    baseline = next((item for item in items if item["method"] == "baseline"), None)
    if baseline is None:
        return

    def terms(item: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        metrics = item["metrics"]
        return (torch.tensor(metrics["style_gram"]["per_frame"][1:]), torch.tensor(metrics["lpips_content"]["per_frame"][1:]),
                torch.tensor(metrics["temporal_l1"]["per_frame"]))

    scales = RewardScales(*(max(term.mean().item(), 1e-6) for term in terms(baseline)))
    for item in items:
        reward = combined_reward(weights, scales, *terms(item))
        item["metrics"]["reward"] = {"mean": float(reward.mean()), "per_frame": reward.tolist()}


def run_comparison(config: CompareConfig, methods: list[MethodSpec]) -> dict[str, Any]:
    """Run ``methods`` on every clip x style, score them, and write the report folder ``config.out``.

    Returns the results written to ``results.json``.
    """

    report.check_folder(config.out, config.overwrite)
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    styles = {clip_name(path): load_image(path) for path in config.styles}
    if len(styles) != len(config.styles):
        raise ValueError("two styles share a file name; style names (file stems) must differ")
    clips = load_clips(config.clips, config.width, config.max_frames)
    stylizer = build_latent_space(config.stylizer, stylizer_config_class(config.stylizer)(**config.stylizer_options),
                                  config.codec, device=device)
    codec = stylizer.codec
    cache = LatentCache(config.cache_dir) if config.use_cache else None
    flow_model = MemoFlow(default_flow_model(device))
    runs = prepare_methods(methods, Components(stylizer, cache, device, flow_model, keyframes=config.keyframes,
                                                    keyframe_flow=config.keyframe_flow))
    clip = load_clip(config.clip_model, config.clip_pretrained, device) if config.use_clip else None
    evaluator = Evaluator(device, clip=clip, flow_model=flow_model, cache_flows=True, long_term=config.long_term)
    folder = report.prepare_folder(config.out, config.overwrite)

    items, panels, skipped = [], [], []
    long_term_skipped: dict[str, list[dict[str, Any]]] = {}
    bar = tqdm(total=len(clips) * len(styles) * len(runs), unit="run", desc="comparing", disable=not config.progress)
    for name, (frames, fps) in clips.items():
        flow_model.clear()
        for style_name, style in styles.items():
            outputs: dict[str, Tensor] = {}
            first_item = len(items)
            for run in runs:
                bar.set_postfix_str(f"{name} / {style_name} / {run.spec.label}")
                stylized = run.run(frames, style, style_name)
                bar.update(1)
                if stylized is None:
                    skipped.append({"clip": name, "style": style_name, "method": run.spec.label, "source": run.source,
                                    "reason": f"trained for style {run.method.info.get('trained_style')!r}"})
                    continue
                scores = evaluator.evaluate(frames, stylized, style)
                items.append({"clip": name, "style": style_name, "method": run.spec.label, "seed_index": run.seed_index,
                              "source": run.source,
                              "metrics": scores["metrics"], "reference": scores["reference"]})
                long_term_skipped.setdefault(name, scores["long_term"]["skipped"])
                if not run.spec.sweep:
                    outputs.setdefault(run.spec.label, stylized)
            add_combined_reward(items[first_item:])
            panels.append(report.write_clip_media(folder, name, style_name, frames, outputs, fps))
    bar.close()
    method_names = [m.label for m in methods]
    results = {
        "format": "vstyle-comparison-v1",
        "device": device_label(device),
        "config": {**vars(config), "codec": codec.name, "stylizer": stylizer.name},
        "methods": [m.describe() | {"runs": [r.method.info | {"source": r.source} for r in runs if r.spec is m]}
                    for m in methods],
        "clips": {name: {"frames": f.shape[0], "height": f.shape[-2], "width": f.shape[-1], "fps": fps} for name, (f, fps) in clips.items()},
        "styles": list(styles),
        "clip_status": evaluator.clip_status(),
        "flow_estimators": evaluator.flow_names,
        "skipped": skipped,
        "long_term": {"gaps": list(evaluator.long_term), "skipped": {clip: s for clip, s in long_term_skipped.items() if s}},
        "summary": summarize(items, method_names),
        "frontier": frontier_report(items, frontier_references(methods)) if config.frontier else None,
        "items": items,
        "media": panels,
    }
    report.write_report(folder, results)
    return results
