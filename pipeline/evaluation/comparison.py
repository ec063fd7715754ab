"""Run stylization methods side by side on clips and styles, score them, and summarise (the engine of scripts/compare.py).

Methods (``MethodSpec``):
- ``baseline``: the frame-by-frame latent-WCT stylization (``StylizationPipeline`` without a policy);
- ``flow-blend``: the non-learned reference policy ``policies.references.FlowBlendPolicy``;
- ``policy``: trained policies (``policies.base.load_policy``), one run per training seed;
- ``rlnst``: RL-NST models (``baselines.rlnst``), one checkpoint per seed, run only on the style they were trained for;
- ``rlministyler``: RLMiniStyler models (``baselines.rlministyler``), one checkpoint per seed, run on every style.

All latent methods share one ``StylizationPipeline`` set-up and its latent
cache, so the baseline latents of a (clip, style) are computed once. Every
output is scored by ``pipeline.evaluation.metrics.Evaluator`` against the content
(content flows computed once per clip). ``summarize`` turns the per-item
scores into means with 95% confidence intervals over clips (clip x style
pairs), over seeds, and of the paired difference to the baseline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from baselines.rlministyler.inference import FORMATS, load_model, stylize_frames
from baselines.rlnst.inference import FORMATS, load_model, stylize_frames
from pipeline.evaluation import report
from pipeline.evaluation.metrics import METRICS, REFERENCE_OF, Evaluator
from pipeline.evaluation.profiling import device_label
from pipeline.evaluation.stats import mean_ci
from pipeline.io.files import shared_data_dir, tensor_digest
from pipeline.io.images import load_image, resize_to_width
from pipeline.io.video import read_video
from pipeline.latents.cache import LatentCache
from pipeline.latents.codecs import load_codec
from pipeline.latents.stylizers import build_stylizer
from pipeline.stylize import StylizationPipeline
from policies.base import load_policy
from policies.observations import FLOW_WARPS
from policies.references import FlowBlendConfig, FlowBlendPolicy
from rewards.clip_score import load_clip
from rewards.flow import default_flow_model
from rewards.reward import RewardWeights

DEFAULT_CLIPS = tuple(shared_data_dir() / "videos" / "test" / name for name in ("wolf.mp4", "sintel_mountain_2", "sintel_alley"))
DEFAULT_STYLES = (shared_data_dir() / "styles" / "starry_night.jpg",)
RESERVED = ("baseline", "flow-blend", "content")
METHOD_KINDS = ("baseline", "flow-blend", "policy", "rlnst", "rlministyler")

Runner = Callable[[Tensor, Tensor, str], Tensor | None]


@dataclass(frozen=True)
class MethodSpec:
    """A method to compare: ``sources`` are its policy runs / RL-NST checkpoints, one per training seed."""

    name: str
    kind: str
    sources: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "sources": list(self.sources), "options": dict(self.options)}


def parse_named_sources(text: str, flag: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=PATH[,PATH2,...]`` -> (NAME, (PATH, PATH2, ...)); a clear ValueError otherwise."""
    name, sep, rest = text.partition("=")
    sources = tuple(s.strip() for s in rest.split(",") if s.strip())
    if not sep or not name.strip() or not sources:
        raise ValueError(f"{flag} expects NAME=PATH[,PATH2,...] (one path per training seed), got {text!r}")
    return name.strip(), sources


def parse_flow_blend(text: str) -> dict[str, Any]:
    """``FACTOR[:WARP]`` (e.g. ``0.5``, ``0.7:pixel``) -> the flow-blend options {factor, flow_warp}."""

    factor, _, warp = text.partition(":")
    try:
        value = float(factor)
    except ValueError:
        value = float("nan")
    warp = warp or "latent"
    if not 0.0 <= value <= 1.0 or warp not in FLOW_WARPS:
        raise ValueError(f"--flow-blend expects FACTOR[:WARP] with FACTOR in [0,1] and WARP one of "
                         f"{', '.join(FLOW_WARPS)}, got {text!r}")
    return {"factor": value, "flow_warp": warp}


def build_methods(
    policies: Sequence[str] = (),
    rlnst: Sequence[str] = (),
    flow_blends: Sequence[str] = ("0.5",),
    rlnst_steps: int | None = None,
    rlministyler: Sequence[str] = (),
    rlministyler_steps: int | None = None,
) -> list[MethodSpec]:
    """The method list of a comparison: baseline, the flow-blend references (``parse_flow_blend`` specs;
    one is named ``flow-blend``, several ``flow-blend-WARP-FACTOR``), ``--policy``, ``--rlnst`` and
    ``--rlministyler`` entries (``*_steps``: refinement steps, None = as trained)."""
    methods = [MethodSpec("baseline", "baseline")]
    for text in flow_blends:
        options = parse_flow_blend(text)
        name = "flow-blend" if len(flow_blends) == 1 else f"flow-blend-{options['flow_warp']}-{options['factor']:g}"
        methods.append(MethodSpec(name, "flow-blend", options=options))
    for text in policies:
        name, sources = parse_named_sources(text, "--policy")
        methods.append(MethodSpec(name, "policy", sources))
    for text in rlnst:
        name, sources = parse_named_sources(text, "--rlnst")
        methods.append(MethodSpec(name, "rlnst", sources, {"steps": rlnst_steps}))
    for text in rlministyler:
        name, sources = parse_named_sources(text, "--rlministyler")
        methods.append(MethodSpec(name, "rlministyler", sources, {"steps": rlministyler_steps}))
    for method in methods[1 + len(flow_blends) :]:
        if method.name in RESERVED:
            raise ValueError(f"method name {method.name!r} is reserved; choose another NAME")
        for source in method.sources:
            if not Path(source).exists():
                raise FileNotFoundError(f"{method.name}: {source} does not exist")
    names = [m.name for m in methods]
    if len(set(names)) < len(names):
        raise ValueError(f"method name(s) given twice: {sorted({n for n in names if names.count(n) > 1})}")
    return methods


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


def _check_policy_run(source: str, codec_name: str, stylizer_name: str) -> None:
    """A run folder's config.json must name the codec and stylizer the comparison uses."""
    config_file = Path(source) / "config.json"
    if not config_file.is_file():
        return
    config = json.loads(config_file.read_text())
    for key, expected in (("codec", codec_name), ("stylizer", stylizer_name)):
        if config.get(key, expected) != expected:
            raise ValueError(f"policy run {source} was trained with {key} {config[key]!r}; the comparison uses {expected!r}")


def _policy_runner(policy, stylizer, cache, flow_model) -> Runner:

    pipe = StylizationPipeline(stylizer, policy=policy, cache=cache, flow_model=flow_model)
    return lambda frames, style, style_name: pipe.stylize_clip(frames, style).result


def _rlnst_runner(checkpoint: str, steps: int | None, device: torch.device) -> tuple[Runner, dict[str, Any]]:
    """Runner of an RL-NST model (``model.pt`` or ``trainer.pt`` of ``baselines.rlnst.train``).

    It runs ``steps`` refinement steps (default: the episode length it was
    trained with) and only on the style it was trained for (by file name);
    on other styles it returns None.
    """

    model = load_model(checkpoint, device=device)
    settings = _training_settings(checkpoint, FORMATS[1], weights_only=True)
    steps = steps or int(settings["episode_steps"])
    trained_style = Path(settings["style"]).stem

    def run(frames: Tensor, style: Tensor, style_name: str) -> Tensor | None:
        if style_name != trained_style:
            return None
        return stylize_frames(model, frames.to(device), steps).cpu()

    return run, {"trained_style": trained_style, "steps": steps}


def _rlministyler_runner(checkpoint: str, steps: int | None, device: torch.device) -> tuple[Runner, dict[str, Any]]:
    """Runner of an RLMiniStyler model (``model.pt`` or ``trainer.pt`` of ``baselines.rlministyler.train``):
    any style image, ``steps`` refinement steps (default: its training episode length)."""

    model = load_model(checkpoint, device=device)
    settings = _training_settings(checkpoint, FORMATS[1], weights_only=False)  # as its load_model
    steps = steps or int(settings["episode_steps"])
    trained_styles = sorted(Path(p).stem for p in settings["styles"])

    def run(frames: Tensor, style: Tensor, style_name: str) -> Tensor:
        return stylize_frames(model, frames.to(device), style.to(device), steps).cpu()

    return run, {"trained_styles": trained_styles, "steps": steps}


def _training_settings(checkpoint: str, trainer_format: str, weights_only: bool) -> dict[str, Any]:
    """The training settings stored in a baseline's ``model.pt`` (beside the weights) or ``trainer.pt`` (its config)."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=weights_only)
    return saved["config"] if saved.get("format") == trainer_format else saved


class MemoFlow(torch.nn.Module):
    """A flow model that remembers the flow of every image pair it has seen (until ``clear``).

    The content flows of a clip are needed by every flow-observation policy
    and by the evaluator; with this wrapper RAFT runs once per pair and clip.
    Pairs are keyed by the digests of both images.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self._flows: dict[tuple[str, str], Tensor] = {}

    def clear(self) -> None:
        self._flows.clear()

    @torch.no_grad()
    def forward(self, img1: Tensor, img2: Tensor) -> Tensor:
        """Flow (N,2,H,W) from ``img1`` to ``img2`` (N,3,H,W), computing only the pairs not seen before."""
        keys = [(tensor_digest(a), tensor_digest(b)) for a, b in zip(img1, img2)]
        missing = sorted({i for i, key in enumerate(keys) if key not in self._flows})
        if missing:
            index = torch.tensor(missing, device=img1.device)
            for i, flow in zip(missing, self.model(img1.index_select(0, index), img2.index_select(0, index))):
                self._flows[keys[i]] = flow
        return torch.stack([self._flows[key] for key in keys]).to(img1.device)


@dataclass
class MethodRun:
    """One seed of a method, ready to run: ``runner(frames, style, style_name)`` -> frames or None (not applicable)."""

    spec: MethodSpec
    seed_index: int
    source: str | None
    runner: Runner
    info: dict[str, Any] = field(default_factory=dict)


def prepare_methods(methods: list[MethodSpec], stylizer, cache, flow_model, device: torch.device) -> list[MethodRun]:
    """Load every method's models once (policies, RL-NST checkpoints)."""

    codec = stylizer.codec
    runs = []
    for spec in methods:
        if spec.kind == "baseline":
            runs.append(MethodRun(spec, 0, None, _policy_runner(None, stylizer, cache, flow_model)))
        elif spec.kind == "flow-blend":
            policy = FlowBlendPolicy(FlowBlendConfig(codec.latent_channels, **spec.options)).to(device)
            runs.append(MethodRun(spec, 0, None, _policy_runner(policy, stylizer, cache, flow_model)))
        elif spec.kind == "policy":
            for index, source in enumerate(spec.sources):
                _check_policy_run(source, codec.name, stylizer.name)
                policy = load_policy(source, device=device)
                if policy.latent_channels != codec.latent_channels:
                    raise ValueError(
                        f"policy {source} acts on {policy.latent_channels}-channel latents; codec {codec.name} has {codec.latent_channels}"
                    )
                runs.append(MethodRun(spec, index, source, _policy_runner(policy, stylizer, cache, flow_model), {"kind": policy.kind}))
        elif spec.kind == "rlnst":
            for index, source in enumerate(spec.sources):
                runner, info = _rlnst_runner(source, spec.options.get("steps"), device)
                runs.append(MethodRun(spec, index, source, runner, info))
        elif spec.kind == "rlministyler":
            for index, source in enumerate(spec.sources):
                runner, info = _rlministyler_runner(source, spec.options.get("steps"), device)
                runs.append(MethodRun(spec, index, source, runner, info))
        else:
            raise ValueError(f"unknown method kind {spec.kind!r}; known: {', '.join(METHOD_KINDS)}")
    return runs


def summarize(items: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Per metric and method: mean with 95% CI over clips, over seeds, and of the paired difference to the baseline.

    An item is one (clip, style, method, seed) evaluation. Per (clip, style)
    the seeds of a method are averaged first; "clips" statistics run over
    these (clip, style) means, "seeds" statistics over each seed's mean across
    (clip, style) pairs (only for methods with several seeds), and "delta"
    over the paired differences method - baseline of the (clip, style) means.
    """
    summary: dict[str, Any] = {}
    for info in METRICS:
        per_method: dict[str, dict[tuple[str, str], dict[int, float]]] = {}
        references: dict[tuple[str, str], float] = {}
        for item in items:
            if info.key not in item["metrics"]:
                continue
            pair = (item["clip"], item["style"])
            per_method.setdefault(item["method"], {}).setdefault(pair, {})[item["seed_index"]] = item["metrics"][info.key]["mean"]
            reference = item["reference"].get(REFERENCE_OF.get(info.key, ""))
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
    """Add the metric ``reward`` to the ``items`` of one (clip, style), in place: DESIGN.md's combined reward
    r_t = -(w_s L_style/S + w_c L_content/C + w_t L_temp/T) per frame t >= 1, from the evaluation metrics
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

    scales = [term.mean().clamp_min(1e-6) for term in terms(baseline)]
    for item in items:
        style, content, temporal = terms(item)
        reward = -(weights.style * style / scales[0] + weights.content * content / scales[1]
                   + weights.temporal * temporal / scales[2])
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
    codec = load_codec("taef2", device=device)
    stylizer = build_stylizer("latent-wct", codec=codec, device=str(device), seed=config.seed)
    cache = LatentCache(config.cache_dir) if config.use_cache else None
    flow_model = MemoFlow(default_flow_model(device))
    runs = prepare_methods(methods, stylizer, cache, flow_model, device)
    clip = load_clip(config.clip_model, config.clip_pretrained, device) if config.use_clip else None
    evaluator = Evaluator(device, clip=clip, flow_model=flow_model, cache_flows=True)
    folder = report.prepare_folder(config.out, config.overwrite)

    items, panels, skipped = [], [], []
    bar = tqdm(total=len(clips) * len(styles) * len(runs), unit="run", desc="comparing", disable=not config.progress)
    for name, (frames, fps) in clips.items():
        flow_model.clear()
        for style_name, style in styles.items():
            outputs: dict[str, Tensor] = {}
            first_item = len(items)
            for run in runs:
                bar.set_postfix_str(f"{name} / {style_name} / {run.spec.name}")
                stylized = run.runner(frames, style, style_name)
                bar.update(1)
                if stylized is None:
                    skipped.append({"clip": name, "style": style_name, "method": run.spec.name, "source": run.source,
                                    "reason": f"trained for style {run.info.get('trained_style')!r}"})
                    continue
                scores = evaluator.evaluate(frames, stylized, style)
                items.append({"clip": name, "style": style_name, "method": run.spec.name, "seed_index": run.seed_index,
                              "source": run.source,
                              "metrics": scores["metrics"], "reference": scores["reference"]})
                outputs.setdefault(run.spec.name, stylized)
            add_combined_reward(items[first_item:])
            panels.append(report.write_clip_media(folder, name, style_name, frames, outputs, fps))
    bar.close()
    method_names = [m.name for m in methods]
    results = {
        "format": "vstyle-comparison-v1",
        "device": device_label(device),
        "config": {**vars(config), "codec": codec.name, "stylizer": stylizer.name},
        "methods": [m.describe() | {"runs": [r.info | {"source": r.source} for r in runs if r.spec is m]} for m in methods],
        "clips": {name: {"frames": f.shape[0], "height": f.shape[-2], "width": f.shape[-1], "fps": fps} for name, (f, fps) in clips.items()},
        "styles": list(styles),
        "clip_status": evaluator.clip_status(),
        "flow_estimators": evaluator.flow_names,
        "skipped": skipped,
        "summary": summarize(items, method_names),
        "items": items,
        "media": panels,
    }
    report.write_report(folder, results)
    return results
