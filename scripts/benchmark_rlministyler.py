"""Benchmark of RLMiniStyler inference: time per frame per refinement step.

Prints, measured side by side in one run (alternating repeats) and labelled with the device, the
milliseconds one step takes per frame on real frames at ``--size`` px, for the model with residual
steps (this port's default) and with the public builder (``residual=False``), or for a trained
``--checkpoint`` instead of the residual one. The time depends on the architecture, not on the
weights, so untrained models give the figure for any trained model of the same config.

    python scripts/benchmark_rlministyler.py [--size 256] [--frames 4] [--threads 1] [--checkpoint RUN]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.rlministyler.inference import load_model, resize_style  # noqa: E402
from baselines.rlministyler.models import RLMiniStyler, RLMiniStylerConfig  # noqa: E402
from pipeline.evaluation.profiling import alternating_medians, device_label, print_table  # noqa: E402
from pipeline.io.files import shared_data_dir  # noqa: E402
from pipeline.io.images import load_image  # noqa: E402
from pipeline.io.video import read_video  # noqa: E402
from scripts._cli import run_cli  # noqa: E402

DATA = shared_data_dir()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--video", default=str(DATA / "videos" / "test" / "wolf.mp4"), help="clip whose frames are used")
    parser.add_argument("--style", default=str(DATA / "styles" / "starry_night.jpg"), help="style image")
    parser.add_argument("--size", type=int, default=256, help="frames are resized to size x size (multiple of 4)")
    parser.add_argument("--frames", type=int, default=4, help="frames per step call (one batch)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats, median reported")
    parser.add_argument("--checkpoint", default=None, help="a trained model (its run folder or model folder) to time in place of the residual one")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    frames = read_video(args.video, max_frames=args.frames)[0]
    frames = torch.nn.functional.interpolate(frames, size=(args.size, args.size), mode="area").to(device)
    style = resize_style(load_image(args.style), args.size).to(device)
    residual = load_model(args.checkpoint, device) if args.checkpoint else RLMiniStyler().to(device).eval()
    models = {"residual steps" + (" (checkpoint)" if args.checkpoint else ""): residual,
              "public builder": RLMiniStyler(RLMiniStylerConfig(residual=False)).to(device).eval()}
    with torch.no_grad():
        codes = {name: model.style_code(style) for name, model in models.items()}
        seconds = alternating_medians(
            [lambda m=model, c=codes[name]: m.step(frames, c, deterministic=True) for name, model in models.items()],
            args.repeats,
        )
    count = frames.shape[0]
    print_table([{"model": name, "ms per frame per step": f"{1000 * s / count:.4g}"}
                 for name, s in zip(models, seconds)],
                f"RLMiniStyler, one step on {count} frames of {Path(args.video).name} at {args.size}x{args.size}; "
                f"{device_label(device)}")


if __name__ == "__main__":
    run_cli(main)
