"""Benchmark of keyframe propagation: speed and quality of ``--keyframes K`` against the stylizer on every frame.

Stylizes the clips with the frame-by-frame baseline through the method registry (``pipeline.methods``, the code
``stylize_video.py --keyframes K`` runs) for each K, and prints one table row per K: frames/s of the
stylization (latents and decoding; reading and scoring not timed), the speed-up over K = 1, the warping
error under an independent flow (OpenCV DIS; the keyframes are propagated with Farneback), the Gram style
loss and the LPIPS distance to the content, each a mean over all frames of all clips, and the change of each
against K = 1. The expensive stylizer the option is for is the default here: latent WCT with 10 refinement
steps (``--latent-wct-refine-steps``; any --stylizer flag applies).

    python scripts/benchmark_keyframes.py [--keyframes 1 4] [--size 256] [--max-frames 24] [--clips ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluation.comparison import DEFAULT_CLIPS, load_clips  # noqa: E402
from pipeline.evaluation.profiling import device_label, print_table  # noqa: E402
from pipeline.io.files import shared_data_dir  # noqa: E402
from pipeline.io.images import load_image  # noqa: E402
from pipeline.methods import KEYFRAME_FLOWS, Components, load_method  # noqa: E402
from rewards.classical_flow import ClassicalFlow  # noqa: E402
from rewards.content import LPIPSDistance  # noqa: E402
from rewards.style import GramStyleLoss  # noqa: E402
from rewards.temporal import warping_error  # noqa: E402
from rewards.vgg import VGG16Features  # noqa: E402
from scripts._cli import add_stylizer_arguments, run_cli, stylizer_from_args  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=[str(p) for p in DEFAULT_CLIPS], help="default: the test clips")
    parser.add_argument("--style", default=str(shared_data_dir() / "styles" / "starry_night.jpg"), help="style image")
    parser.add_argument("--keyframes", type=int, nargs="+", default=[1, 4], help="keyframe spacings; the first is "
                        "the reference (default 1 4)")
    parser.add_argument("--keyframe-flow", choices=KEYFRAME_FLOWS, default=KEYFRAME_FLOWS[0], help="propagation flow")
    parser.add_argument("--size", type=int, default=256, help="frame width (default 256)")
    parser.add_argument("--max-frames", type=int, default=24, help="first N frames of each clip (default 24)")
    parser.add_argument("--chunk-size", type=int, default=16, help="frames per chunk (default 16)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    add_stylizer_arguments(parser)
    parser.set_defaults(latent_wct_refine_steps=10)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    clips = load_clips(args.clips, args.size, args.max_frames)
    style = load_image(args.style).to(device)
    stylizer = stylizer_from_args(args, device=device)
    vgg = VGG16Features().to(device)
    gram, lpips, dis = GramStyleLoss(vgg, style).to(device), LPIPSDistance().to(device), ClassicalFlow("dis")
    rows: list[dict] = []
    for keyframes in args.keyframes:
        components = Components(stylizer, None, device, chunk_size=args.chunk_size, keyframes=keyframes,
                                keyframe_flow=args.keyframe_flow)
        method = load_method("baseline", components)
        seconds, frames_done, warp, style_loss, content_loss = 0.0, 0, [], [], []
        for frames, _ in clips.values():
            started = time.perf_counter()
            stylized = method.stylize_clip(frames, style, args.chunk_size)
            seconds += time.perf_counter() - started
            frames_done += frames.shape[0]
            with torch.no_grad():
                warp.append(warping_error(stylized, frames, dis).per_frame)
                style_loss.append(gram(stylized.to(device)).cpu())
                content_loss.append(lpips(stylized.to(device), frames.to(device)).cpu())
        rows.append({"keyframes": keyframes, "fps": frames_done / seconds,
                     "warping error (DIS)": float(torch.cat(warp).mean()),
                     "Gram style loss": float(torch.cat(style_loss).mean()),
                     "LPIPS to content": float(torch.cat(content_loss).mean())})
    reference = rows[0]
    for row in rows:
        row["speed-up"] = row["fps"] / reference["fps"]
        for key, short in (("warping error (DIS)", "warping"), ("Gram style loss", "Gram"), ("LPIPS to content", "LPIPS")):
            row[f"{short} vs K={reference['keyframes']}"] = f"{row[key] / reference[key] - 1:+.1%}"
    frames = sum(f.shape[0] for f, _ in clips.values())
    print_table(rows, f"keyframe propagation ({args.keyframe_flow} flow), {stylizer.name} {stylizer.config()} on "
                      f"{len(clips)} clips ({frames} frames) at {args.size} px, {device_label(device)}")
    return rows


if __name__ == "__main__":
    run_cli(main)
