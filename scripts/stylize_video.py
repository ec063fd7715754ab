r"""Stylize a video with a style image.

Methods: ``latent`` (default): each frame stylized in the codec's latent space
(``--stylizer``), optionally refined by a policy trained with
train_policy.py (``--policy``); ``rlnst-image`` / ``rlnst-video``: the RL-NST
pixel-space models of train_rlnst.py (``--checkpoint``, ``--steps``; one model
per style); ``rlministyler``: the arbitrary-style RLMiniStyler model of
train_rlministyler.py (``--checkpoint``, ``--steps``, any ``--style``).

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

from baselines.rlministyler.inference import load_model, stylize_frames  # noqa: E402
from baselines.rlnst.inference import StepwiseStylizer, load_model  # noqa: E402
from pipeline.io.images import load_image
from pipeline.io.precision import PRECISIONS
from pipeline.latents.cache import LatentCache  # noqa: E402
from pipeline.latents.stylizers import STYLIZERS, build_stylizer
from pipeline.stylize import StylizationPipeline, stream_video
from policies.base import load_policy  # noqa: E402
from rewards.flow import RAFTFlow  # noqa: E402
from scripts._cli import run_cli

METHODS = ("latent", "rlnst-image", "rlnst-video", "rlministyler")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True, help="input video file or folder of numbered frames")
    parser.add_argument("--style", required=True, help="style image (any format PIL reads)")
    parser.add_argument("--out", required=True, help="output mp4 path (refused if it exists, see --overwrite)")
    parser.add_argument("--size", type=int, default=None,
                        help="output width in pixels, aspect ratio kept (default: the input's, at most 512)")
    parser.add_argument("--method", choices=METHODS, default="latent",
                        help="latent (default): latent stylizer [+ policy]; rlnst-image, rlnst-video, rlministyler: "
                             "pixel-space RL baselines loaded from --checkpoint")
    parser.add_argument("--checkpoint", default=None, help="rlnst-*/rlministyler: model.pt or trainer.pt of their training script")
    parser.add_argument("--rl-steps", type=int, default=10,
                        help="rlnst-*/rlministyler: refinement steps, more = stronger style (default 10, as trained)")
    parser.add_argument("--stylizer", choices=STYLIZERS, default="latent-wct", help="per-frame stylizer (default latent-wct)")
    parser.add_argument("--alpha", type=float, default=1.0, help="latent-wct strength in [0,1] (default 1)")
    parser.add_argument("--refine-steps", type=int, default=0,
                        help="latent-wct: Adam steps of Gram/content latent optimisation per frame (default 0)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="latent-wct codec compute precision: auto (default) = bf16 autocast where the CPU/GPU runs "
                             "it natively (2.3x faster TAEF2, same round-trip PSNR), else fp32")
    parser.add_argument("--model", default=None,
                        help="diffusest: Stable Diffusion 1.5 hub id or local folder (default stable-diffusion-v1-5)")
    parser.add_argument("--blip-diffusion", default=None,
                        help="diffusest: BLIP-Diffusion checkpoint whose Q-Former embeds the style image")
    parser.add_argument("--prompt", default="a painting", help="diffusest: text condition when no BLIP-Diffusion is given")
    parser.add_argument("--steps", type=int, default=50, help="diffusest: DDIM steps (default 50)")
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


def pixel_method(args: argparse.Namespace, style):
    """``process(frames) -> panels`` for the RL-NST / RLMiniStyler methods of ``stream_video``."""
    if not args.checkpoint:
        raise ValueError(f"--method {args.method} needs --checkpoint (a model.pt written by its training script)")
    if args.method == "rlministyler":

        model = load_model(args.checkpoint, device=args.device)
        return lambda frames: [frames, stylize_frames(model, frames, style, args.rl_steps)]

    model = load_model(args.checkpoint, device=args.device)
    if model.is_video != (args.method == "rlnst-video"):
        kind = "video" if model.is_video else "image"
        raise ValueError(f"{args.checkpoint} holds an RL-NST {kind} model; use --method rlnst-{kind}")
    stylizer = StepwiseStylizer(model, args.rl_steps)
    return lambda frames: [frames, stylizer(frames)]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    style = load_image(args.style)
    if args.method == "latent":
        summary = stylize_latent(args, style)
    else:
        process = pixel_method(args, style.to(args.device))
        summary = stream_video(args.video, args.out, lambda frames: process(frames)[0 if args.side_by_side else 1:],
                               size=args.size, overwrite=args.overwrite, max_frames=args.max_frames,
                               chunk_size=args.chunk_size)
    print(f"wrote {args.out}: {summary['frames']} frames at {summary['fps']:.3f} fps, "
          f"{summary['output_size'][1]}x{summary['output_size'][0]}")
    return summary


def stylize_latent(args: argparse.Namespace, style) -> dict:
    """The latent pipeline: per-frame stylizer, optional policy."""
    diffusest_options = {"seed": args.seed, "prompt": args.prompt, "num_inference_steps": args.steps}
    stylizer = build_stylizer(args.stylizer, alpha=args.alpha, refine_steps=args.refine_steps, precision=args.precision,
                              model=args.model,
                              blip_diffusion=args.blip_diffusion, device=args.device,
                              **(diffusest_options if args.stylizer == "diffusest" else {}))
    policy, flow_model = None, None
    if args.policy:

        policy = load_policy(args.policy).to(args.device).eval()
        if policy.observation == "flow":

            flow_model = RAFTFlow().to(args.device)
    pipe = StylizationPipeline(stylizer, policy=policy, cache=None if args.no_cache else LatentCache(args.cache_dir),
                               flow_model=flow_model, chunk_size=args.chunk_size)
    return pipe.stylize_video(args.video, style.to(args.device), args.out, size=args.size,
                              side_by_side=args.side_by_side, overwrite=args.overwrite, max_frames=args.max_frames)


if __name__ == "__main__":
    run_cli(main)
