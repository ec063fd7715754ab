"""Benchmark of the reward terms and the codec on real frames.

Prints frames/s of each reward term (Gram style, LPIPS content, RAFT flow,
occlusion masks, temporal loss, warping error) and of the TAEF2 codec at 128
and 256 px width on this machine, and the share of time each takes in one
reward evaluation of an RL step (codec decode + style + content + temporal;
RAFT flows and occlusion masks are precomputed once per clip).

    python scripts/benchmark_rewards.py [--frames 8] [--sizes 128 256]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluation.profiling import device_label, print_table, seconds_per_call  # noqa: E402
from pipeline.io.files import shared_data_dir  # noqa: E402
from pipeline.io.images import load_image, resize_to_width  # noqa: E402
from pipeline.io.video import read_video  # noqa: E402
from pipeline.latents.codecs import load_codec  # noqa: E402
from rewards.content import LPIPSDistance  # noqa: E402
from rewards.flow import RAFTFlow, flows_and_masks  # noqa: E402
from rewards.style import GramStyleLoss  # noqa: E402
from rewards.temporal import temporal_loss, warping_error  # noqa: E402
from rewards.vgg import VGG16Features  # noqa: E402
from rewards.warp import occlusion_mask  # noqa: E402

DATA = shared_data_dir()
# What one RL step evaluates; flows and occlusion masks are computed once per clip beforehand.
REWARD_PARTS = ("codec decode", "gram style", "lpips content", "temporal loss")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=str(DATA / "videos" / "train" / "dog.mp4"), help="clip the frames come from")
    parser.add_argument("--style", default=str(DATA / "styles" / "starry_night.jpg"), help="style image")
    parser.add_argument("--frames", type=int, default=8, help="frames per batch (default 8)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="frame widths (default 128 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the median is kept")
    return parser.parse_args(argv)


@torch.no_grad()
def measure(size: int, frames: torch.Tensor, models: dict, repeats: int) -> dict[str, float]:
    """Frames/s of each part on ``frames`` resized to width ``size``."""
    clip = resize_to_width(frames, size)
    n = clip.shape[0]
    codec, style_loss, lpips, raft = models["codec"], models["style"], models["lpips"], models["raft"]
    latents = codec.encode(clip)
    flows = flows_and_masks(clip, raft)
    shifted = clip.roll(1, dims=0)
    pairs = n - 1
    timings = {
        "codec encode": (lambda: codec.encode(clip), n),
        "codec decode": (lambda: codec.decode(latents), n),
        "gram style": (lambda: style_loss(clip), n),
        "lpips content": (lambda: lpips(clip, shifted), n),
        "raft flow (fwd+bwd)": (lambda: raft(torch.cat([clip[:-1], clip[1:]]), torch.cat([clip[1:], clip[:-1]])), pairs),
        "occlusion masks": (lambda: occlusion_mask(flows.flow_fwd, flows.flow_bwd), pairs),
        "temporal loss": (lambda: temporal_loss(clip, flows), pairs),
        "warping error (incl. flow)": (lambda: warping_error(clip, clip, flow_model=raft), pairs),
    }
    return {name: count / seconds_per_call(fn, repeats=repeats) for name, (fn, count) in timings.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    frames, _ = read_video(args.video, max_frames=args.frames)
    models = {
        "codec": load_codec("taef2"),
        "style": GramStyleLoss(VGG16Features(), load_image(args.style)),
        "lpips": LPIPSDistance(),
        "raft": RAFTFlow(),
    }
    results = {size: measure(size, frames, models, args.repeats) for size in args.sizes}
    rows = []
    for name in results[args.sizes[0]]:
        row: dict[str, object] = {"part": name}
        for size in args.sizes:
            row[f"fps @{size}px"] = results[size][name]
        largest = results[args.sizes[-1]]
        if name in REWARD_PARTS:
            total = sum(1.0 / largest[p] for p in REWARD_PARTS)
            row[f"share of reward @{args.sizes[-1]}px"] = f"{100 * (1.0 / largest[name]) / total:.0f}%"
        else:
            row[f"share of reward @{args.sizes[-1]}px"] = "-"
        rows.append(row)
    print(f"device: {device_label()}; {args.frames} frames of {Path(args.video).name}, batch = whole clip")
    print_table(rows, "frames/s (pairs/s for flow terms), median of runs")
    for size in args.sizes:
        per_frame = sum(1.0 / results[size][p] for p in REWARD_PARTS)
        print(f"one RL-step reward evaluation (decode + style + content + temporal) @{size}px: "
              f"{1000 * per_frame:.0f} ms/frame = {1 / per_frame:.2f} frames/s")


if __name__ == "__main__":
    main()
