"""What command-line entry points share: turning expected failures into one clear line (all), and the
arguments of the baseline trainers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, FloatingPointError)


def run_cli(main: Callable[[], T]) -> T:
    """Run ``main``; bad input (missing/unreadable files, bad values) exits with status 2 and a message, no traceback."""
    try:
        return main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


# Arguments shared by the baseline trainers (scripts/train_rlnst.py, scripts/train_rlministyler.py).

def add_content_arguments(parser: argparse.ArgumentParser, photos_help: str) -> None:
    """--clips, --photos (``photos_help``: what they are for, before the default) and --max-frames."""
    parser.add_argument("--clips", type=Path, nargs="+", default=None,
                        help="training clips (video files or frame folders); default: ../shared/data/videos/train/*")
    parser.add_argument("--photos", type=Path, nargs="*", default=None,
                        help=f"{photos_help}; default: ../shared/data/photos; give the flag alone for none")
    parser.add_argument("--max-frames", type=int, default=None, help="read at most this many frames per clip")


def add_replay_schedule_arguments(parser: argparse.ArgumentParser, *, episode_steps_help: str,
                                  bootstrap_episodes: int, update_every: int, batch_size: int,
                                  buffer_help: str = "replay buffer capacity (transitions)") -> None:
    """--updates, --episode-steps, --bootstrap-episodes, --update-every, --batch-size, --buffer."""
    parser.add_argument("--updates", type=int, default=2000, help="total training iterations (one replay batch each)")
    parser.add_argument("--episode-steps", type=int, default=10, help=episode_steps_help)
    parser.add_argument("--bootstrap-episodes", type=int, default=bootstrap_episodes,
                        help="episodes collected before training starts")
    parser.add_argument("--update-every", type=int, default=update_every, help="environment steps per training iteration")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="replay batch size")
    parser.add_argument("--buffer", type=int, default=500, help=buffer_help)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--log-every, --checkpoint-every, --resume, --seed, --device, --threads."""
    parser.add_argument("--log-every", type=int, default=10, help="iterations per log.csv row")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="iterations between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/trainer.pt")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def common_train_settings(args: argparse.Namespace) -> dict:
    """The ``TrainConfig`` fields that the arguments above set, by name (``threads`` applied here)."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    return dict(
        out_dir=args.out, clips=args.clips, photos=args.photos, size=args.size, max_frames=args.max_frames,
        updates=args.updates, episode_steps=args.episode_steps, bootstrap_episodes=args.bootstrap_episodes,
        update_every=args.update_every, batch_size=args.batch_size, buffer_capacity=args.buffer,
        log_every=args.log_every, checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device,
    )


def print_training_result(result) -> None:
    """One line: iterations, time and the files a baseline trainer wrote."""
    print(f"trained {result.progress.updates} iterations in {result.progress.elapsed_s:.0f} s; "
          f"model: {result.model_path}; log: {result.log_path}; curves: {result.curves_path}")
