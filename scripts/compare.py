"""Compare stylization methods against the frame-by-frame baseline on test clips, and write a report folder.

The latent space is --stylizer (latent-wct, diffusest: its settings are the --<stylizer>-* flags) on --codec;
--keyframes K runs the stylizer on every K-th frame only (pipeline/keyframes.py), for every latent method.
Methods: baseline (frame by frame), flow-blend (non-learned reference), trained policies
(--policy NAME=RUN[,RUN2,...]: one run folder or checkpoint per training seed) and RL-NST models
(--rlnst NAME=CHECKPOINT[,...]: run only on the style each was trained for) and RLMiniStyler models
(--rlministyler NAME=CHECKPOINT[,...]: any style). Default: the shared test
clips with starry_night, 256 px wide, the first 24 frames.

Did learning help? --frontier sweeps the fixed flow-blend references (default factors 0.3 0.5 0.7 0.9 with
the latent and the pixel warp; --no-frontier: none) and the report opens with their frontier, per style: the
lower-left convex frontier of the references' points (baseline = factor 0 included) of Gram style loss and of
LPIPS against the warping error under the OpenCV Farneback flow (a flow no method uses), and each method's distance to it (its loss minus the
frontier's at its warping error; "outside" beyond the frontier's range). The sweep's references are scored
and tabulated but left out of the videos and bar charts. Metrics include the long-term warping error between
frames K apart (--long-term, default 5 10).

The report folder holds results.json, results.md (the frontier table, then a table per metric: mean and 95% CI
over clips, the paired difference to the baseline, and the spread over seeds), plots/ (frontier.png, bar
charts, per-frame warping error), videos/ (content | baseline | each method, labelled) and index.html showing
all of it.

Example:
    python scripts/compare.py --policy reinforce=runs/starry_night-reinforce-flow-s0 --out reports/starry
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluation.comparison import (  # noqa: E402
    DEFAULT_CLIPS,
    DEFAULT_STYLES,
    CompareConfig,
    build_methods,
    run_comparison,
)
from pipeline.evaluation.frontier import DEFAULT_FRONTIER  # noqa: E402
from pipeline.evaluation.metrics import LONG_TERM_GAPS  # noqa: E402
from pipeline.latents.stylizers import stylizer_config_class  # noqa: E402
from pipeline.methods import DEFAULT_FLOW_BLEND, KEYFRAME_FLOWS, METHODS  # noqa: E402
from rewards.clip_score import DEFAULT_MODEL, DEFAULT_PRETRAINED  # noqa: E402
from scripts._cli import add_stylizer_arguments, config_values, run_cli  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports/compare", help="report folder (refused if not empty, see --overwrite)")
    parser.add_argument("--clips", nargs="+", default=[str(p) for p in DEFAULT_CLIPS],
                        help="videos (files or frame folders); default: the shared test clips")
    parser.add_argument("--styles", nargs="+", default=[str(p) for p in DEFAULT_STYLES], help="style images (default starry_night)")
    for name, entry in METHODS.items():
        if entry.source is None or not entry.source_path:
            continue
        parser.add_argument(f"--{name}", action="append", default=[], metavar="NAME=SOURCE[,SOURCE2,...]",
                            help=f"{entry.help}; SOURCE: {entry.source}; several = several training seeds (repeatable)")
        if entry.steps:
            parser.add_argument(f"--{name}-steps", type=int, default=None,
                                help=f"{name}: refinement steps (default: as trained)")
    parser.add_argument("--no-flow-blend", action="store_true", help="leave out the flow-blend reference")
    parser.add_argument("--flow-blend", action="append", default=None, metavar="FACTOR[:WARP]",
                        help=f"{METHODS['flow-blend'].help}: {METHODS['flow-blend'].source}; repeatable")
    parser.add_argument("--frontier", nargs="+", default=list(DEFAULT_FRONTIER), metavar="FACTOR[:WARP]",
                        help="the flow-blend references swept for the frontier plot and the distance table "
                             "(default: %(default)s)")
    parser.add_argument("--no-frontier", action="store_true", help="no frontier sweep, plot or distance table")
    parser.add_argument("--long-term", type=int, nargs="*", default=list(LONG_TERM_GAPS), metavar="K",
                        help="long-term warping error between frames K apart, per K (default: %(default)s; 0 or no K: none)")
    parser.add_argument("--width", type=int, default=256, help="frame width in pixels (default 256)")
    parser.add_argument("--max-frames", type=int, default=24, help="first N frames of each clip; 0 = all (default 24)")
    parser.add_argument("--clip-model", default=DEFAULT_MODEL, help=f"open_clip model (default {DEFAULT_MODEL})")
    parser.add_argument("--clip-pretrained", default=DEFAULT_PRETRAINED,
                        help=f"pretrained tag or checkpoint file (default {DEFAULT_PRETRAINED})")
    parser.add_argument("--no-clip", action="store_true", help="skip the CLIP metrics")
    parser.add_argument("--cache-dir", default=None, help="latent cache folder (default $VSTYLE_CACHE or ~/.cache/vstyle/latents)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the latent cache")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="write into a report folder that is not empty")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--keyframes", type=int, default=1, metavar="K",
                        help="latent methods: the stylizer on every K-th frame, propagated between (default 1: all)")
    parser.add_argument("--keyframe-flow", choices=KEYFRAME_FLOWS, default=KEYFRAME_FLOWS[0],
                        help="the content flow that propagates keyframes (default: %(default)s)")
    add_stylizer_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.max_frames is not None and args.max_frames < 0:
        raise ValueError(f"--max-frames must be >= 0 (0 = all), got {args.max_frames}")
    flow_blends = [] if args.no_flow_blend else args.flow_blend or [DEFAULT_FLOW_BLEND]
    sourced = [name for name, entry in METHODS.items() if entry.source is not None and entry.source_path]
    requests = {name: getattr(args, name.replace("-", "_")) for name in sourced}
    steps = {name: getattr(args, f"{name.replace('-', '_')}_steps") for name in sourced if METHODS[name].steps}
    frontier = [] if args.no_frontier else args.frontier
    methods = build_methods(requests, flow_blends, steps, frontier)
    stylizer_options = config_values(stylizer_config_class(args.stylizer), args, prefix=args.stylizer)
    config = CompareConfig(
        out=args.out, clips=args.clips, styles=args.styles, width=args.width, max_frames=args.max_frames or None,
        device=args.device, cache_dir=args.cache_dir, use_cache=not args.no_cache, clip_model=args.clip_model,
        clip_pretrained=args.clip_pretrained, use_clip=not args.no_clip, seed=args.seed, overwrite=args.overwrite,
        progress=not args.quiet, stylizer=args.stylizer, stylizer_options=stylizer_options, codec=args.codec,
        keyframes=args.keyframes, keyframe_flow=args.keyframe_flow, long_term=args.long_term, frontier=frontier,
    )
    results = run_comparison(config, methods)
    print(f"wrote {Path(args.out) / 'index.html'} ({len(results['items'])} evaluations); tables in {Path(args.out) / 'results.md'}")
    return results


if __name__ == "__main__":
    run_cli(main)
