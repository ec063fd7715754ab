"""Train an RLMiniStyler model (Feng et al., IJCAI 2025): one model for arbitrary styles, on the CPU by default.

Examples:
    python scripts/train_rlministyler.py --out runs/rlministyler
    python scripts/train_rlministyler.py --out runs/rlministyler --resume --updates 4000
    python scripts/train_rlministyler.py --out runs/rms --styles ../shared/data/styles/udnie.jpg \
        ../shared/data/styles/mondrian.jpg

Content: the frames of the shared training clips (../shared/data/videos/train;
never the test clips) and the shared photos. Styles: the shared paintings
except woman_with_hat_matisse.jpg, held out to test unseen styles. Writes
the run folder OUT: config.json, model/ (the model; OUT or OUT/model is what
inference and comparisons take), checkpoint.pt (for --resume), log.csv,
curves.png and steps.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.rlministyler.agent import AgentConfig  # noqa: E402
from baselines.rlministyler.train import (  # noqa: E402
    HELD_OUT_STYLES,
    TrainConfig,
    held_out_step_losses,
    train,
)
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
        epilog="Defaults follow the paper / public code: environment batch 1, replay batch 8, Adam lr 2e-4 "
        "(actor lr/10), betas (0.5, 0.9), gamma 0.99, tau 0.005, losses balanced by learned uncertainty weights; "
        "the entropy temperature starts at 0.1 (public code: 1, see baselines/rlministyler/agent.py). "
        "For a short CPU run try --size 64 --lr 1e-3 (about 2.5 s per update at 64 px here).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder (config.json, model/, checkpoint.pt, log.csv, curves.png)")
    add_content_arguments(parser, "training photos or folders of them")
    parser.add_argument("--styles", type=Path, nargs="+", default=None,
                        help="style images or folders of them; default: ../shared/data/styles/* except "
                        f"{', '.join(HELD_OUT_STYLES)}")
    parser.add_argument("--size", type=int, default=128,
                        help="content and style crop size in pixels (multiple of 4, >= 64)")
    add_replay_schedule_arguments(parser, episode_steps_help="refinement steps per episode", bootstrap_episodes=2,
                                  update_every=1, batch_size=8,
                                  buffer_help="replay buffer capacity in transitions (about 0.43 MB each at 128 px)")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr,
                        help="learning rate of builder, critics, temperature, weights")
    parser.add_argument("--actor-lr-factor", type=float, default=DEFAULTS.actor_lr_factor,
                        help="actor learning rate = lr * this")
    parser.add_argument("--gamma", type=float, default=DEFAULTS.gamma, help="discount")
    parser.add_argument("--tau", type=float, default=DEFAULTS.tau, help="Polyak factor of the target critics")
    parser.add_argument("--init-alpha", type=float, default=DEFAULTS.init_alpha, help="initial entropy temperature")
    add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = common_train_settings(args)
    agent = AgentConfig(lr=args.lr, actor_lr_factor=args.actor_lr_factor, gamma=args.gamma, tau=args.tau,
                        init_alpha=args.init_alpha)
    config = TrainConfig(styles=args.styles, agent=agent, **settings)
    result = train(config, resume=args.resume)
    print_training_result(result)
    for style, losses in held_out_step_losses(result.model, config.size, config.out_dir).items():
        print(f"held-out style {style}, shared photos at {config.size} px (steps.json): " + "; ".join(
            f"step {k}: style {v['style']:.4g} content {v['content']:.4g}" for k, v in losses.items()))


if __name__ == "__main__":
    run_cli(main)
