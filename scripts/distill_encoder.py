"""Distil TAEF2's encoder into the light one that re-encodes the pixel-warp observation (taef2-lite).

Examples:
    python scripts/distill_encoder.py --out runs/taef2-lite
    python scripts/distill_encoder.py --out pipeline/latents/pretrained/taef2-lite --overwrite   # the shipped one

Data: the first --max-frames frames of every clip in --videos (default the shared training clips; never the
test clips), --size px wide, stylized by the latent WCT in every --style (default the five training styles)
and decoded; the teacher is the codec's own encoder. The last --validation-clips clips (by name) are held
out: the validation error is the student's mean latent error relative to the teacher's latents' size.
Writes OUT (a model folder: config.json with the settings and the validation rows, model.safetensors),
which pipeline.latents.codecs.load_warp_codec reads. About 15 minutes on two CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from pipeline.io.files import shared_data_dir  # noqa: E402
from pipeline.io.pretrained import is_model_folder  # noqa: E402
from pipeline.io.video import list_videos  # noqa: E402
from pipeline.latents.distill import (  # noqa: E402
    DistillConfig,
    distill,
    distillation_groups,
    teacher_encoder,
)
from pipeline.latents.stylizers import build_latent_space  # noqa: E402
from pipeline.latents.taef2 import TAEF2_LITE, TAEF2Encoder  # noqa: E402
from scripts._cli import add_config_arguments, config_from_args, run_cli  # noqa: E402

DATA = shared_data_dir()
TRAINING_STYLES = ("starry_night", "composition_vii", "udnie", "contrast_of_forms", "mondrian")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    parser.add_argument("--videos", type=Path, default=DATA / "videos" / "train",
                        help="folder of training clips (default: %(default)s)")
    parser.add_argument("--style", type=Path, nargs="+",
                        default=[DATA / "styles" / f"{name}.jpg" for name in TRAINING_STYLES],
                        help="style images (default: the five training styles of ../shared/data/styles)")
    parser.add_argument("--size", type=int, default=256, help="frame width in pixels (default: %(default)s)")
    parser.add_argument("--max-frames", type=int, default=24, help="frames per clip (default: %(default)s)")
    parser.add_argument("--validation-clips", type=int, default=2,
                        help="clips held out for the validation error, the last by name (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add_config_arguments(parser, DistillConfig)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = config_from_args(DistillConfig, args)
    if is_model_folder(args.out) and not args.overwrite:
        raise FileExistsError(f"{args.out} already holds a model; pass --overwrite to replace it")
    clips = list_videos(args.videos)
    if len(clips) <= args.validation_clips or args.validation_clips < 1:
        raise ValueError(f"{args.videos} has {len(clips)} clips; --validation-clips {args.validation_clips} needs "
                         "at least one clip to train on and one to validate on")
    for style in args.style:
        if not style.is_file():
            raise FileNotFoundError(f"style image {style} does not exist")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)  # checks the folder can be written before any work
    stylizer = build_latent_space("latent-wct")
    with tqdm(total=len(clips) * len(args.style), desc="stylize and encode", unit="clip x style") as bar:
        groups = distillation_groups(clips, args.style, stylizer, args.size, args.max_frames,
                                     progress=lambda _: bar.update())
    held_out = {str(clip) for clip in clips[-args.validation_clips:]}
    train = [g for g in groups if g.clip not in held_out]
    validation = [g for g in groups if g.clip in held_out]
    student = TAEF2Encoder.initialised_from(teacher_encoder(stylizer.codec), TAEF2_LITE).float()
    with tqdm(total=config.steps, desc="distil", unit="step") as bar:
        rows = distill(student, train, validation, config, progress=bar.update,
                       log=lambda row: bar.set_postfix(validation_error=f"{row['validation_error']:.4f}"))
    student.save_pretrained(args.out, training={
        "teacher": stylizer.codec.config(), "videos": str(args.videos), "styles": [s.name for s in args.style],
        "size": args.size, "max_frames": args.max_frames, "validation_clips": sorted(Path(c).name for c in held_out),
        "distill": dataclasses.asdict(config), "rows": rows})
    print(f"wrote {args.out}: validation error {rows[0]['validation_error']:.4f} (teacher's layers) -> "
          f"{rows[-1]['validation_error']:.4f} after {config.steps} steps")


if __name__ == "__main__":
    run_cli(main)
