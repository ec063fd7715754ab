"""Train an RL-NST baseline model (Feng et al., IJCAI 2023) for one style, on the CPU by default.

Examples:
    python scripts/train_rlnst.py --mode image --style ../shared/data/styles/starry_night.jpg --out runs/rlnst_image
    python scripts/train_rlnst.py --mode video --style ../shared/data/styles/starry_night.jpg --out runs/rlnst_video
    python scripts/train_rlnst.py ... --out runs/rlnst_image --resume --updates 4000

Trains on the frames of the shared training clips (../shared/data/videos/train)
and, for the image model, the shared photos; never on the test clips. Writes
the run folder OUT: config.json, model/ (the model; OUT or OUT/model is what
inference and comparisons take), checkpoint.pt (for --resume), log.csv and curves.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.rlnst.agent import ANCHORS, AgentConfig  # noqa: E402
from baselines.rlnst.train import MODES, VIDEO_TEMPORAL_WEIGHT, TrainConfig, train  # noqa: E402
from scripts._cli import (  # noqa: E402
    add_content_arguments,
    add_replay_schedule_arguments,
    add_run_arguments,
    common_train_settings,
    print_training_result,
    run_cli,
)

DEFAULTS = AgentConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults follow the public RL-I2IT code: lr 1e-4 (critic 1e-5), Adam betas (0.5, 0.9), "
        "gamma 0.99, tau 0.005, 10 steps per episode, an update every 4 steps, the actor every 2nd update.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--style", type=Path, required=True, help="style image (one model per style)")
    parser.add_argument("--out", type=Path, required=True, help="run folder (config.json, model/, checkpoint.pt, log.csv, curves.png)")
    parser.add_argument("--mode", choices=MODES, default="image",
                        help="image model, or video model (ConvGRUs + compound regularisation)")
    add_content_arguments(parser, "training photos or folders of them (image mode)")
    parser.add_argument("--size", type=int, default=128, help="training crop size in pixels (multiple of 4, >= 64)")
    add_replay_schedule_arguments(parser, episode_steps_help="refinement steps per frame in an episode",
                                  bootstrap_episodes=10, update_every=4, batch_size=1)
    parser.add_argument("--clip-len", type=int, default=4, help="frames per episode (video mode)")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, help="actor, stylizer and temperature learning rate")
    parser.add_argument("--critic-lr", type=float, default=DEFAULTS.critic_lr, help="critic learning rate")
    parser.add_argument("--style-weight", type=float, default=DEFAULTS.style_weight,
                        help="lambda: weight of the style term (sum over layers of the Gram MSE)")
    parser.add_argument("--content-weight", type=float, default=DEFAULTS.content_weight,
                        help="weight of the relu2_2 content term")
    parser.add_argument("--tv-weight", type=float, default=DEFAULTS.tv_weight, help="beta: total variation weight")
    parser.add_argument("--temporal-weight", type=float, default=None,
                        help=f"zeta: compound temporal regularisation weight "
                        f"(default {VIDEO_TEMPORAL_WEIGHT:g} for video, 0 for image)")
    parser.add_argument("--reward-scale", type=float, default=DEFAULTS.reward_scale,
                        help="reward = -scale * lambda * style")
    parser.add_argument("--anchor", choices=ANCHORS, default=DEFAULTS.anchor,
                        help="content term against the current moving image (state; public video code) "
                        "or the content image (content; public image code)")
    parser.add_argument("--style-size", type=int, default=256,
                        help="longer side of the style image for its Gram matrices")
    add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = common_train_settings(args)
    temporal = args.temporal_weight
    if temporal is None:
        temporal = VIDEO_TEMPORAL_WEIGHT if args.mode == "video" else 0.0
    agent = AgentConfig(
        lr=args.lr, critic_lr=args.critic_lr, style_weight=args.style_weight, content_weight=args.content_weight,
        tv_weight=args.tv_weight, temporal_weight=temporal, reward_scale=args.reward_scale, anchor=args.anchor,
    )
    config = TrainConfig(style=args.style, mode=args.mode, clip_len=args.clip_len, style_size=args.style_size,
                         agent=agent, **settings)
    print_training_result(train(config, resume=args.resume))


if __name__ == "__main__":
    run_cli(main)
