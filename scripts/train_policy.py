"""Train a residual-latent policy for one style, or one policy for several (any style), on a folder of clips
(pathwise learning through the differentiable reward, REINFORCE or SAC).

Writes a run folder: config.json, the resumable checkpoint (written after every epoch), the last and
best policies (use with stylize_video.py --policy RUN), episodes.csv / epochs.csv and curves.png.

Flags: the run settings are the fields of policies.train.TrainConfig; the algorithm settings are the
fields of the chosen algorithm's config dataclasses, prefixed by its name (--pathwise-lr applies with
--algo pathwise, --reinforce-lr with --algo reinforce, --sac-lr with --algo sac; the other algorithms' flags
are ignored). Their defaults are the default agent (policies/pathwise.py): the residual network on flow
observations (OpenCV DIS flows, the pixel-space warp, a blend head starting at a flow-blend of 0.7), trained
by backpropagation through the reward to minimise flicker while learned Lagrange multipliers hold every frame's
style and content losses within 1.0x and 0.9x those of its frame-by-frame baseline frame. The default run: one style, 2 epochs of
the 11 shared training clips in 24-frame windows at 256 px (21 windows, 1008 transitions), about 7 minutes on
2 CPU cores (5.1 transitions/s; 1.6 minutes of it preparing the clips, an evaluation after each epoch). The
latent space is --stylizer and --codec, with the stylizer's settings as --<stylizer>-* flags (scripts/_cli.py);
config.json records them all.

Examples:
    python scripts/train_policy.py --style ../shared/data/styles/starry_night.jpg
    python scripts/train_policy.py --style ../shared/data/styles/{starry_night,udnie,mondrian}.jpg  # any-style
    python scripts/train_policy.py --style s.jpg --algo reinforce --obs pair --epochs 20 --out runs/pair  # Kuang & Chen
    python scripts/train_policy.py --style s.jpg --out runs/pair --epochs 40 --resume
    python scripts/train_policy.py --style s.jpg --pathwise-style-target 0.9  # ask for more style than the baseline
    python scripts/train_policy.py --style s.jpg --stylizer diffusest --model SD15 --blip-diffusion BLIP  # SD latents
    torchrun --nproc_per_node 2 scripts/train_policy.py --style s.jpg --device cpu   # 2 CPU processes
    accelerate launch --multi_gpu --num_processes 4 scripts/train_policy.py --style s.jpg  # 4 GPUs

Data parallel: each process trains on its own share of the clip windows; gradients are averaged
across processes before every update, so the replicas stay identical.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.latents.stylizers import stylizer_config_class  # noqa: E402
from policies.base import ALGORITHM_MODULES, algorithm_module  # noqa: E402
from policies.train import TrainConfig, train  # noqa: E402
from scripts._cli import (  # noqa: E402
    add_config_arguments,
    add_stylizer_arguments,
    config_from_args,
    config_values,
    run_cli,
)

# set by make_algorithm from the run, not flags
ALGORITHM_SET_FIELDS = ("latent_channels", "observation")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None,
                        help="run folder (default runs/<style>-<algo>-<obs>-s<seed>); refused if it holds a run, see --resume")
    add_config_arguments(parser, TrainConfig, exclude=("out", "algo_options", "codec", "stylizer", "stylizer_options"))
    add_stylizer_arguments(parser)
    parser.set_defaults(device="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    for name in ALGORITHM_MODULES:
        group = parser.add_argument_group(f"{name} settings (with --algo {name})")
        for config_class in algorithm_module(name).CONFIG_CLASSES:
            add_config_arguments(group, config_class, exclude=ALGORITHM_SET_FIELDS, prefix=name)
    return parser.parse_args(argv)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's settings from the parsed flags; ``algo_options``: every field of ``--algo``'s config dataclasses."""
    styles = "+".join(Path(style).stem for style in args.style) if len(args.style) <= 3 else f"{len(args.style)}styles"
    out = args.out or str(Path("runs") / f"{styles}-{args.algo}-{args.obs}-s{args.seed}")
    options = {name: value for config_class in algorithm_module(args.algo).CONFIG_CLASSES
               for name, value in config_values(config_class, args, prefix=args.algo).items()}
    stylizer_options = config_values(stylizer_config_class(args.stylizer), args, prefix=args.stylizer)
    return config_from_args(TrainConfig, args, out=out, algo_options=options, stylizer_options=stylizer_options)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    summary = train(train_config(args), resume=args.resume)
    print(f"run folder {summary['folder']}: epoch {summary['epoch']}, "
          f"train advantage {summary.get('train_advantage', float('nan')):.4f}, "
          f"eval advantage {summary.get('eval_advantage', float('nan')):.4f}")
    return summary


if __name__ == "__main__":
    run_cli(main)
