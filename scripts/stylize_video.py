r"""Stylize a video with a style image.

By default each frame is stylized in the codec's latent space (``--stylizer``) and the latents are refined by
the policy that ships with the project (``--policy default``, trained for any style): the temporally consistent
result. ``--policy none`` writes the frame-by-frame baseline; ``--policy RUN`` uses a run of train_policy.py.
Other methods (``--method``, the registry in ``pipeline/methods.py``): ``flow-blend`` (the fixed reference,
``--source FACTOR[:WARP]``), ``rlnst`` (an RL-NST pixel-space model of train_rlnst.py, ``--source``, one model
per style), ``rlministyler`` (the arbitrary-style RLMiniStyler model of train_rlministyler.py, ``--source``).

Output by extension: .mp4, .webm, .gif, or a folder of PNG frames for a path ending with /; the input's audio
is kept. A folder of videos as --video stylizes each into the --out folder (resumable).

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

from pipeline.io.images import load_image  # noqa: E402
from pipeline.io.precision import PRECISIONS  # noqa: E402
from pipeline.io.video import FRAMES_OUTPUT, check_output, output_kind  # noqa: E402
from pipeline.latents.cache import LatentCache  # noqa: E402
from pipeline.methods import (  # noqa: E402
    KEYFRAME_FLOWS,
    METHODS,
    Components,
    is_video_folder,
    load_method,
    style_warning,
    stylize_file,
    stylize_folder,
)
from scripts._cli import add_stylizer_arguments, run_cli, stylizer_from_args  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True,
                        help="input video file or folder of numbered frames; or a folder of videos, stylized one by "
                             "one into the --out folder (ending with /), skipping those already there")
    parser.add_argument("--style", required=True, help="style image (any format PIL reads)")
    parser.add_argument("--out", required=True,
                        help="output: .mp4 (H.264), .webm (VP9), .gif, or a path ending with / for a folder of PNG "
                             "frames; the input's audio is kept (mp4, webm); refused if it exists, see --overwrite")
    parser.add_argument("--size", type=int, default=None,
                        help="output width in pixels, aspect ratio kept (default: the input's, at most 512)")
    parser.add_argument("--method", choices=list(METHODS), default=None,
                        help="; ".join(f"{e.name}: {e.help}" for e in METHODS.values())
                        + " (default: policy, with --policy's policy)")
    parser.add_argument("--source", "--checkpoint", dest="source", default=None,
                        help="what the method loads: " + "; ".join(f"{e.name}: {e.source}" for e in METHODS.values() if e.source))
    parser.add_argument("--rl-steps", type=int, default=None,
                        help="rlnst/rlministyler: refinement steps, more = stronger style (default: as trained)")
    add_stylizer_arguments(parser)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="codec compute precision: auto (default) = bf16 autocast where the CPU/GPU runs "
                             "it natively (2.3x faster TAEF2, same round-trip PSNR), else fp32; diffusest computes "
                             "in its model's dtype")
    parser.add_argument("--policy", default=None,
                        help="default (when no --method is given): the temporally consistent policy that ships, for "
                             "any style; none: the frame-by-frame baseline; or a run folder of train_policy.py")
    parser.add_argument("--side-by-side", action="store_true", help="write input | baseline | result side by side")
    parser.add_argument("--max-frames", type=int, default=None, help="stylize only the first N frames")
    parser.add_argument("--chunk-size", type=int, default=16, help="frames held in memory at once (default 16)")
    parser.add_argument("--keyframes", type=int, default=1, metavar="K",
                        help="run the stylizer on every K-th frame (and at scene cuts and chunk ends) and propagate "
                             "it along the content flow to the frames between (default 1: every frame)")
    parser.add_argument("--keyframe-flow", choices=KEYFRAME_FLOWS, default=KEYFRAME_FLOWS[0],
                        help="the content flow that propagates keyframes (default: %(default)s, fast on the CPU)")
    parser.add_argument("--cache-dir", default=None, help="latent cache folder (default $VSTYLE_CACHE or ~/.cache/vstyle/latents)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the latent cache")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser.parse_args(argv)


def method_and_source(args: argparse.Namespace) -> tuple[str, str | None]:
    """The registry method and its source from ``--method``, ``--source`` and ``--policy`` (default: the shipped
    policy; ``none``: the frame-by-frame baseline)."""
    if args.method is None:
        policy = args.policy or "default"
        return ("baseline", None) if policy == "none" else ("policy", policy)
    if args.policy is not None:
        if args.method != "policy" or args.source is not None:
            raise ValueError("--policy RUN is --method policy --source RUN; give one or the other")
        return "policy", args.policy
    return args.method, args.source


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    batch = is_video_folder(args.video)
    if batch and output_kind(args.out) != FRAMES_OUTPUT:
        raise ValueError(f"{args.video} is a folder of videos: give an output folder ending with /, got {args.out}")
    if not batch:
        check_output(args.out, args.overwrite)  # before any work
    name, source = method_and_source(args)
    style = load_image(args.style).to(args.device)
    if (warning := style_warning(style)) is not None:
        print(f"warning: {args.style}: {warning}", file=sys.stderr)
    method = load_method(name, build_components(args), source, args.rl_steps)
    options = dict(size=args.size, side_by_side=args.side_by_side, max_frames=args.max_frames,
                   chunk_size=args.chunk_size)
    if batch:
        rows = stylize_folder(method, args.video, style, args.out, overwrite=args.overwrite, **options)
        for row in rows:
            print(f"{row['status']:>7}  {row['name']}" + (f": {row['error']}" if row["status"] == "failed" else ""))
        counts = {status: sum(r["status"] == status for r in rows) for status in ("done", "skipped", "failed")}
        print(f"{args.out}: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
        return {"clips": rows, **counts}
    summary = stylize_file(method, args.video, style, args.out, overwrite=args.overwrite, **options)
    cuts = f"; scene cuts at frames {summary['scene_cuts']}" if summary["scene_cuts"] else ""
    audio = "with audio" if summary["audio"] else "no audio"
    print(f"wrote {args.out}: {summary['frames']} frames at {summary['fps']:.3f} fps, "
          f"{summary['output_size'][1]}x{summary['output_size'][0]}, {audio}{cuts}")
    return summary


def build_components(args: argparse.Namespace) -> Components:
    """The per-frame stylizer (with its codec), the latent cache and the device the methods share."""
    stylizer = stylizer_from_args(args, device=args.device, precision=args.precision)
    cache = None if args.no_cache else LatentCache(args.cache_dir)
    return Components(stylizer, cache, torch.device(args.device), chunk_size=args.chunk_size, keyframes=args.keyframes,
                      keyframe_flow=args.keyframe_flow)


if __name__ == "__main__":
    run_cli(main)
