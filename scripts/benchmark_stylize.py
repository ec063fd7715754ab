"""Benchmark of the frame-by-frame stylization path (latent-wct + taef2).

Prints, measured side by side in one run on this machine:
  1. end-to-end frames/s (read, resize, encode, WCT, decode, write) against the
     codec's encode+decode alone (timed alternately), and their ratio, for
     each compute precision asked for (fp32, and bf16 autocast by default);
  2. peak resident memory stylizing a 240-frame clip against a 48-frame clip
     (each in a fresh process), and their ratio;
  3. the warping error of the frame-by-frame baseline next to the content's
     own on the test clips: the flicker a policy has to remove.

    python scripts/benchmark_stylize.py [--size 256] [--precision fp32 auto] [--skip-memory] [--skip-flicker]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluation.profiling import (  # noqa: E402
    alternating_medians,
    device_label,
    looped_clips_in_fresh_processes,
    peak_rss_mib,
    print_table,
)
from pipeline.io.files import shared_data_dir  # noqa: E402
from pipeline.io.images import load_image, resize_to_width  # noqa: E402
from pipeline.io.precision import PRECISIONS  # noqa: E402
from pipeline.io.video import read_video  # noqa: E402
from pipeline.latents.codecs import load_codec  # noqa: E402
from pipeline.latents.stylizers.latent_wct import LatentWCT  # noqa: E402
from pipeline.methods import LatentMethod, stylize_file  # noqa: E402
from pipeline.stylize import StylizationPipeline  # noqa: E402
from rewards.temporal import warping_error  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = shared_data_dir()
TEST_CLIPS = ("wolf.mp4", "sintel_mountain_2", "sintel_alley")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=str(DATA / "videos" / "test" / "wolf.mp4"), help="clip for the speed test")
    parser.add_argument("--style", default=str(DATA / "styles" / "starry_night.jpg"), help="style image")
    parser.add_argument("--size", type=int, default=256, help="frame width (default 256)")
    parser.add_argument("--precision", nargs="+", default=["fp32", "auto"], choices=PRECISIONS,
                        help="codec compute precisions to time (auto: bf16 where the CPU/GPU runs it natively); "
                             "the memory and flicker parts use the last one")
    parser.add_argument("--long", type=int, default=240, help="frames of the long clip in the memory test")
    parser.add_argument("--short", type=int, default=48, help="frames of the short clip in the memory test")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory test")
    parser.add_argument("--skip-flicker", action="store_true", help="skip the warping-error report")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def speed(args: argparse.Namespace, workdir: Path, precision: str) -> dict[str, object]:
    codec = load_codec("taef2", precision=precision)
    style = load_image(args.style)
    frames, _ = read_video(args.video)
    frames = resize_to_width(frames, args.size)

    pipe = StylizationPipeline(LatentWCT(codec))

    def codec_only() -> None:
        with torch.no_grad():
            codec.decode(codec.encode(frames))

    def end_to_end() -> None:
        stylize_file(LatentMethod(pipe), args.video, style, workdir / "speed.mp4", size=args.size, overwrite=True,
                     progress=False)

    # timed in turn, round after round, so that the machine's load affects both alike
    codec_s, e2e_s = alternating_medians([codec_only, end_to_end], repeats=2)
    codec_fps, e2e_fps = frames.shape[0] / codec_s, frames.shape[0] / e2e_s
    return {"precision": codec.precision, "codec encode+decode fps": codec_fps, "end-to-end fps": e2e_fps,
            "end-to-end / codec": e2e_fps / codec_fps, "frames": frames.shape[0]}


def memory_child(video: str, style_path: str, size: int, precision: str) -> None:
    """Stylize ``video`` in this process and print its peak memory as JSON."""
    pipe = StylizationPipeline(LatentWCT(load_codec("taef2", precision=precision)))
    out = Path(tempfile.mkdtemp()) / "out.mp4"
    start = time.perf_counter()
    stylize_file(LatentMethod(pipe), video, load_image(style_path), out, size=size, progress=False)
    print(json.dumps({"peak_rss_mib": peak_rss_mib(), "seconds": time.perf_counter() - start}))


def memory(args: argparse.Namespace, workdir: Path) -> list[dict[str, object]]:
    frames, fps = read_video(args.video)
    frames = resize_to_width(frames, args.size)
    lengths = (args.short, args.long)
    results = looped_clips_in_fresh_processes(
        frames, fps, lengths, workdir,
        lambda clip: [sys.executable, __file__, "--memory-child", str(clip), "--style", args.style, "--size", str(args.size),
                      "--precision", args.precision[-1]],
    )
    return [{"frames": length, "peak_rss_mib": result["peak_rss_mib"], "seconds": result["seconds"]}
            for length, result in zip(lengths, results)]


def flicker(args: argparse.Namespace) -> list[dict[str, object]]:
    style = load_image(args.style)
    pipe = StylizationPipeline(LatentWCT(load_codec("taef2", precision=args.precision[-1])))
    rows = []
    for name in TEST_CLIPS:
        content, _ = read_video(DATA / "videos" / "test" / name)
        content = resize_to_width(content, args.size)
        stylized = pipe.stylize_clip(content, style).result
        own = warping_error(content, content).mean
        baseline = warping_error(stylized, content).mean
        rows.append({"clip": name, "frames": content.shape[0], "content_E": own, "baseline_E": baseline,
                     "ratio": baseline / own})
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, args.style, args.size, args.precision[-1])
        return
    print(f"device: {device_label()}; width {args.size} px")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [speed(args, Path(tmp), precision) for precision in args.precision]
        print_table(rows, "1. speed (latent-wct + taef2, end to end includes read/write)")
        if not args.skip_memory:
            short, long = memory(args, Path(tmp))
            print_table([short, long], "2. peak memory (fresh process each)")
            print(f"ratio {args.long}/{args.short} frames: {long['peak_rss_mib'] / short['peak_rss_mib']:.3f}")
    if not args.skip_flicker:
        print_table(flicker(args), "3. warping error (Lai et al.), starry_night, frame-by-frame baseline vs content")


if __name__ == "__main__":
    main()
