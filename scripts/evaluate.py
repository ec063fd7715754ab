"""Score a stylized video against its content video and style image: temporal, style, content and CLIP metrics.

Writes a JSON (atomically; an existing file is refused without --overwrite) and prints a table.
Metrics: warping error (Lai et al. 2018) with RAFT flows and with OpenCV Farneback flows of the content, the
long-term warping error between frames K apart (--long-term, default 5 10: warping_error_k5_raft, ...; the
flow estimated directly between frames t-K and t; a clip of K frames or fewer skips it, as the JSON's
long_term entry says), bidirectional masked temporal L1, Gram style loss, LPIPS and SSIM to the content,
CLIP similarities (to the content frame, to the style image, between consecutive frames). CLIP needs its
weights: when they cannot be had (offline, not cached) the JSON says CLIP was skipped and why.

Example:
    python scripts/evaluate.py --content ../shared/data/videos/test/wolf.mp4 --stylized wolf_starry.mp4 \\
        --style ../shared/data/styles/starry_night.jpg --out wolf_metrics.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluation.metrics import JUDGE_FLOW, LONG_TERM_GAPS, evaluate_video, summary_rows  # noqa: E402
from pipeline.evaluation.profiling import print_table  # noqa: E402
from pipeline.io.files import write_json  # noqa: E402
from rewards.classical_flow import METHODS as FLOW_METHODS  # noqa: E402
from rewards.clip_score import DEFAULT_MODEL, DEFAULT_PRETRAINED, load_clip  # noqa: E402
from scripts._cli import run_cli  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--content", required=True, help="content video: file or folder of numbered frames")
    parser.add_argument("--stylized", required=True, help="stylized video of the same length and size (see --resize)")
    parser.add_argument("--style", required=True, help="style image")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--resize", action="store_true",
                        help="resize the stylized frames to the content's size instead of refusing a size mismatch (stated in the JSON)")
    parser.add_argument("--max-frames", type=int, default=None, help="evaluate only the first N frames of both videos")
    parser.add_argument("--clip-model", default=DEFAULT_MODEL,
                        help=f"open_clip model name, or local-dir:FOLDER / hf-hub:ORG/REPO (default {DEFAULT_MODEL})")
    parser.add_argument("--clip-pretrained", default=DEFAULT_PRETRAINED,
                        help=f"pretrained tag or local checkpoint file for --clip-model (default {DEFAULT_PRETRAINED})")
    parser.add_argument("--no-clip", action="store_true", help="skip the CLIP metrics")
    parser.add_argument("--flow", choices=FLOW_METHODS, default=JUDGE_FLOW,
                        help="classical flow estimator of the independent warping error (default %(default)s: "
                             "policies observe OpenCV DIS and are trained against RAFT; auto = DIS)")
    parser.add_argument("--long-term", type=int, nargs="*", default=list(LONG_TERM_GAPS), metavar="K",
                        help="long-term warping error between frames K apart, per K (default: %(default)s; 0 or no K: none)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0; the metrics are deterministic)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: folder {out.parent} does not exist")
    clip = None if args.no_clip else load_clip(args.clip_model, args.clip_pretrained, args.device)
    result = evaluate_video(args.content, args.stylized, args.style, clip, resize=args.resize,
                            max_frames=args.max_frames, device=args.device, classical_method=args.flow,
                            long_term=args.long_term)
    if args.no_clip:
        result["clip"] = {"status": "skipped", "reason": "disabled with --no-clip"}
    write_json(out, result, overwrite=args.overwrite)
    print_table(summary_rows(result), f"{result['frames']} frames, {result['width']}x{result['height']} px")
    if result["inputs"]["resized"]:
        print(f"note: {result['inputs']['resized']['how']} (from {result['inputs']['resized']['from']})")
    for skipped in result["long_term"]["skipped"]:
        print(f"long-term warping error k={skipped['gap']} skipped: {skipped['reason']}")
    if result["clip"]["status"] != "computed":
        print(f"CLIP skipped: {result['clip']['reason']}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    run_cli(main)
