"""Small measuring helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from pipeline.io.video import write_video


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
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
