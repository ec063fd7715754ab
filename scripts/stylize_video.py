"""Stylize a video with a style image, frame by frame, optionally refined by a trained policy.

Example:
    python scripts/stylize_video.py --video ../shared/data/videos/test/wolf.mp4 \
        --style ../shared/data/styles/starry_night.jpg --out wolf_starry.mp4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cache import LatentCache  # noqa: E402
from pipeline.images import load_image
from pipeline.stylize import StylizationPipeline
from pipeline.stylizers import STYLIZERS, build_stylizer
from scripts._cli import run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True, help="input video file or folder of numbered frames")
    parser.add_argument("--style", required=True, help="style image (any format PIL reads)")
    parser.add_argument("--out", required=True, help="output mp4 path (refused if it exists, see --overwrite)")
    parser.add_argument("--size", type=int, default=None,
                        help="output width in pixels, aspect ratio kept (default: the input's, at most 512)")
    parser.add_argument("--stylizer", choices=STYLIZERS, default="latent-wct", help="per-frame stylizer (default latent-wct)")
    parser.add_argument("--alpha", type=float, default=1.0, help="latent-wct strength in [0,1] (default 1)")
    parser.add_argument("--refine-steps", type=int, default=0,
                        help="latent-wct: Adam steps of Gram/content latent optimisation per frame (default 0)")
    parser.add_argument("--model", default=None, help="diffusest: Stable Diffusion 1.5 hub id or local folder")
    parser.add_argument("--policy", default=None, help="trained policy: a run folder or checkpoint of train_policy.py")
    parser.add_argument("--side-by-side", action="store_true", help="write input | baseline | result side by side")
    parser.add_argument("--max-frames", type=int, default=None, help="stylize only the first N frames")
    parser.add_argument("--chunk-size", type=int, default=16, help="frames held in memory at once (default 16)")
    parser.add_argument("--cache-dir", default=None, help="latent cache folder (default $VSTYLE_CACHE or ~/.cache/vstyle/latents)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the latent cache")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    style = load_image(args.style)
    stylizer = build_stylizer(args.stylizer, alpha=args.alpha, refine_steps=args.refine_steps, model=args.model,
                              device=args.device, seed=args.seed)
    policy, flow_model = None, None
    if args.policy:
        from policies.base import load_policy

        policy = load_policy(args.policy).to(args.device).eval()
        if policy.observation == "flow":
            from rewards.flow import RAFTFlow

            flow_model = RAFTFlow().to(args.device)
    pipe = StylizationPipeline(stylizer, policy=policy, cache=None if args.no_cache else LatentCache(args.cache_dir),
                               flow_model=flow_model, chunk_size=args.chunk_size)
    summary = pipe.stylize_video(args.video, style, args.out, size=args.size, side_by_side=args.side_by_side,
                                 overwrite=args.overwrite, max_frames=args.max_frames)
    print(f"wrote {args.out}: {summary['frames']} frames at {summary['fps']:.3f} fps, "
          f"{summary['output_size'][1]}x{summary['output_size'][0]}")
    return summary


if __name__ == "__main__":
    run_cli(main)
