"""Small measuring helpers shared by the benchmark scripts: timing side by side, peak memory in fresh
processes, tables, and the stages of the stylization pipeline timed one by one."""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from pipeline.io.video import write_video
from pipeline.stylize import StylizationPipeline
from policies.observations import LatentFlows, build_observation, latent_flows, pixel_warped_latent, warps_pixels
from rewards.flow import ClipFlows, flows_and_masks


def device_label(device: str | torch.device = "cpu") -> str:
    """A human-readable name of the machine a figure was measured on."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch threads"


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def alternating_medians(functions: Sequence[Callable[[], object]], repeats: int, warmup: int = 1) -> list[float]:
    """Median wall-clock seconds of each function, timed in turn round after round (after ``warmup`` calls
    each), so that changes in the machine's load affect all of them alike."""
    for fn in functions:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for fn, bucket in zip(functions, times):
            _synchronize()
            started = time.perf_counter()
            fn()
            _synchronize()
            bucket.append(time.perf_counter() - started)
    return [sorted(t)[len(t) // 2] for t in times]


def seconds_per_call(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    return alternating_medians([fn], repeats, warmup)[0]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB: Linux's ``VmHWM`` of /proc/self/status, else
    ``ru_maxrss``. Not ``ru_maxrss`` on Linux: a child process inherits its parent's there (the kernel carries the
    forking process's peak across exec), so a fresh process would report the parent's peak when that was higher."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    if found:
        return int(found.group(1)) / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if platform.system() == "Darwin" else maxrss / 1024  # bytes on macOS, KiB elsewhere


def peak_memory_mib(device: str | torch.device = "cpu") -> dict[str, float | None]:
    """Peak memory of this process so far: ``peak_rss_mib``, and ``cuda_peak_mib`` on a CUDA ``device`` (else None)."""
    device = torch.device(device)
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"peak_rss_mib": peak_rss_mib(), "cuda_peak_mib": cuda}


def write_looped_clip(frames: torch.Tensor, length: int, path: str | os.PathLike, fps: float) -> Path:
    """Write ``length`` frames cycling through ``frames`` (T,3,H,W) as a video at ``path``; return ``path``."""

    write_video(path, frames[torch.arange(length) % frames.shape[0]], fps)
    return Path(path)


def run_child_json(command: Sequence[str]) -> dict:
    """Run ``command`` in a fresh process and parse the last line of its standard output as JSON; a failure
    raises ``RuntimeError`` with the end of its standard error."""
    done = subprocess.run(list(command), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child process {' '.join(map(str, command[:3]))} ... failed: {done.stderr[-1000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def looped_clips_in_fresh_processes(
    frames: torch.Tensor, fps: float, lengths: Sequence[int], workdir: Path, command: Callable[[Path], list[str]],
) -> list[dict]:
    """For each length, write ``frames`` looped to that many frames (``write_looped_clip``) and run
    ``command(clip_path)`` in a fresh process (``run_child_json``): the JSON each printed, in order. Used to
    measure the peak memory of stylizing clips of several lengths, untouched by what the parent loaded."""
    results = []
    for length in lengths:
        clip = write_looped_clip(frames, length, Path(workdir) / f"clip{length}.mp4", fps)
        results.append(run_child_json(command(clip)))
    return results


def print_table(rows: list[dict[str, object]], title: str | None = None) -> None:
    """Print rows of equal keys as an aligned Markdown table."""
    if title:
        print(f"\n{title}")
    if not rows:
        return
    keys = list(rows[0])
    cells = [[f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k]) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("| " + " | ".join(k.ljust(w) for k, w in zip(keys, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |")


def model_label(model: nn.Module | None) -> str:
    """The name a flow model reports (``RAFTFlow.name``, ``ClassicalFlow.name``), else its class; ``none``."""
    return "none" if model is None else getattr(model, "name", type(model).__name__)


ROLLOUT_DECODES = "rollout decodes (1 a frame)"  # the stage name of a pixel-warp policy's per-frame decodes


@torch.no_grad()
def pipeline_stages(pipeline: StylizationPipeline, frames: Tensor, style: Tensor) -> dict[str, Callable[[], object]]:
    """The stages of ``pipeline.stylize_chunk`` on one chunk ``frames`` (T,3,H,W) with ``style``, each as a
    function to time alone, on the pipeline's own components (stylizer, codec, policy, flow model):

    - ``stylize``: encode + the per-frame stylizer; ``decode``: the codec's decode of the chunk;
    - with a flow-observation policy, ``content flow``: both directions, occlusion masks, latent-size flows;
    - with a policy, ``policy network``: one action per frame (batch 1, as the rollout acts);
    - with the pixel flow warp, ``pixel warp``: the warped previous output re-encoded (2 encodes a frame, by the
      pipeline's ``warp_codec``; where that is not the codec, also by the codec's own encoder, for comparison), and
      ``rollout decodes``: each output decoded alone for the next frame's warp.
    """
    stylizer, codec, policy, flow_model = pipeline.stylizer, pipeline.codec, pipeline.policy, pipeline.flow_model
    warp_codec = pipeline.warp_codec
    latents = stylizer.stylize(frames, style)
    stages: dict[str, Callable[[], object]] = {
        f"stylize (encode + {stylizer.name})": lambda: stylizer.stylize(frames, style),
        "decode": lambda: codec.decode(latents),
    }
    if policy is None:
        return stages
    count, latent_size = frames.shape[0], tuple(latents.shape[-2:])
    flow = mask = pixel = None
    if policy.observation == "flow":
        def content_flow() -> tuple[ClipFlows, LatentFlows]:
            clip = flows_and_masks(frames, flow_model)
            return clip, latent_flows(clip.flow_bwd, clip.mask_bwd, latent_size)

        stages[f"content flow ({model_label(flow_model)})"] = content_flow
        pixel, small = content_flow()
        flow, mask = small.flow, small.mask
    observations = [build_observation(policy.observation, latents[:1])] + [
        build_observation(policy.observation, latents[t : t + 1], latents[t - 1 : t], latents[t - 1 : t],
                          None if flow is None else flow[t - 1 : t], None if mask is None else mask[t - 1 : t])
        for t in range(1, count)]
    stages["policy network"] = lambda: [policy.act(obs, deterministic=True) for obs in observations]
    if pixel is not None and warps_pixels(policy.flow_warp):
        decoded = codec.decode(latents)
        encoders = {"": warp_codec} if warp_codec is codec else {"": warp_codec, ", the codec's encoder instead": codec}
        for label, encoder in encoders.items():
            stages[f"pixel warp (2 encodes a frame{label})"] = lambda encoder=encoder: [
                pixel_warped_latent(encoder, decoded[t - 1 : t], pixel.flow_bwd[t - 1 : t], latents[t - 1 : t],
                                    flow_warp=policy.flow_warp)
                for t in range(1, count)]
        stages[ROLLOUT_DECODES] = lambda: [codec.decode(latents[t : t + 1]) for t in range(count)]
    return stages


def stage_milliseconds(pipeline: StylizationPipeline, frames: Tensor, style: Tensor, repeats: int) -> dict[str, float]:
    """Milliseconds per frame of each stage of ``pipeline_stages`` (median of ``repeats``, timed in turn)."""
    stages = pipeline_stages(pipeline, frames, style)
    with torch.no_grad():
        seconds = alternating_medians(list(stages.values()), repeats)
    return {name: 1000 * value / frames.shape[0] for name, value in zip(stages, seconds)}
