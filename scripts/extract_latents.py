"""Fill the latent cache with the frame-by-frame baseline latents of a folder of clips.

Entries are keyed by the frames, the style, the stylizer config and the codec,
one per chunk of ``--chunk`` frames from the start of each clip: the default
16 matches train_policy.py's ``--max-frames`` and stylize_video.py's
``--chunk-size``, so both reuse what this writes (at the same ``--size``).

    python scripts/extract_latents.py --videos ../shared/data/videos/train \
        --style ../shared/data/styles/starry_night.jpg --size 128 [--latent-wct-alpha 0.8]
    python scripts/extract_latents.py --videos DIR --style S --stylizer diffusest --model SD15_DIR [--blip-diffusion B]

The latent space is --stylizer on --codec (as train_policy.py takes them: give the same flags to both).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.io.images import load_image, resize_to_width  # noqa: E402
from pipeline.io.video import iter_video_chunks, list_videos  # noqa: E402
from pipeline.latents.cache import LatentCache  # noqa: E402
from scripts._cli import add_stylizer_arguments, run_cli, stylizer_from_args  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", required=True, help="folder of video files and/or folders of numbered frames")
    parser.add_argument("--style", required=True, help="style image")
    parser.add_argument("--size", type=int, default=128, help="frame width in pixels (default 128, train_policy's)")
    parser.add_argument("--chunk", type=int, default=16, help="frames per cache entry (default 16)")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each clip")
    parser.add_argument("--cache-dir", default=None, help="latent cache folder (default $VSTYLE_CACHE or ~/.cache/vstyle/latents)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    add_stylizer_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Returns the number of cache entries written or found."""
    args = parse_args(argv)
    videos = list_videos(args.videos)
    style = load_image(args.style).to(args.device)
    stylizer = stylizer_from_args(args, device=args.device)
    cache = LatentCache(args.cache_dir)
    entries = 0
    for video in tqdm(videos, unit="clip", desc="extracting latents"):
        for chunk in iter_video_chunks(video, args.chunk, max_frames=args.max_frames):
            cache.latents(stylizer, resize_to_width(chunk, args.size).to(args.device), style)
            entries += 1
    print(f"{entries} cache entries for {len(videos)} clips in {cache.root}")
    return entries


if __name__ == "__main__":
    run_cli(main)
