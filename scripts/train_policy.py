"""Train a residual-latent policy for one style on a folder of clips (REINFORCE or SAC).

Writes a run folder: config.json, last.pt (resumable checkpoint, written after
every epoch), policy_last.safetensors / policy_best.safetensors (use with
stylize_video.py --policy RUN), episodes.csv / epochs.csv and curves.png.

Examples:
    python scripts/train_policy.py --style ../shared/data/styles/starry_night.jpg
    python scripts/train_policy.py --style s.jpg --obs pair --epochs 20 --out runs/pair
    python scripts/train_policy.py --style s.jpg --out runs/pair --epochs 40 --resume
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

from policies.base import ALGORITHM_MODULES, OBSERVATION_KINDS  # noqa: E402
from policies.train import DEFAULT_VIDEOS, TrainConfig, train  # noqa: E402
from scripts._cli import run_cli  # noqa: E402


def _weights(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers style,content,temporal, got {text!r}")
    return values


def _options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = float(value) if any(c in value for c in ".e") else int(value)
        except ValueError:
            options[key] = {"true": True, "false": False}.get(value.lower(), value)
    return options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--style", required=True, help="style image to train for (any format PIL reads)")
    parser.add_argument("--out", default=None,
                        help="run folder (default runs/<style>-<algo>-<obs>-s<seed>); refused if it holds a run, see --resume")
    parser.add_argument("--videos", default=str(DEFAULT_VIDEOS),
                        help="folder of training clips: video files and/or folders of numbered frames "
                             "(default: the shared training clips; never the test clips)")
    parser.add_argument("--algo", choices=sorted(ALGORITHM_MODULES), default="reinforce",
                        help="learning algorithm (default reinforce; sac needs policies/sac.py)")
    parser.add_argument("--obs", choices=OBSERVATION_KINDS, default="flow",
                        help="observation: flow = L_t, warped previous output, occlusion mask, difference (default); "
                             "pair = previous and current baseline latents (Kuang & Chen)")
    parser.add_argument("--size", type=int, default=128, help="frame width in pixels, aspect kept, sides multiples of 8 (default 128)")
    parser.add_argument("--max-frames", type=int, default=16,
                        help="frames per episode: clips are cut into windows of this many frames (default 16)")
    parser.add_argument("--epochs", type=int, default=10, help="total epochs (one episode per window each); default 10")
    parser.add_argument("--weights", type=_weights, default=(10.0, 1.0, 10.0),
                        help="reward weights style,content,temporal of the normalised terms (default 10,1,10)")
    parser.add_argument("--eval-every", type=int, default=1,
                        help="evaluate the mean action every N epochs for policy_best (0 = never; default 1)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="algorithm option, repeatable (REINFORCE: lr, scalar_lr, accumulate, hidden, init_log_sigma, "
                             "head, init_alpha, flow_warp, ...). REINFORCE on flow observations defaults to head=blend "
                             "flow_warp=pixel init_alpha=0.7 scalar_lr=1e-3 (starts at a pixel-warp flow-blend); "
                             "head=residual flow_warp=latent init_gate=0 starts at the frame-by-frame baseline")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (launched by accelerate/torchrun, each process takes its own GPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: torch's)")
    parser.add_argument("--cache-dir", default=None, help="latent cache folder (default $VSTYLE_CACHE or ~/.cache/vstyle/latents)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = args.out or str(Path("runs") / f"{Path(args.style).stem}-{args.algo}-{args.obs}-s{args.seed}")
    config = TrainConfig(
        style=args.style, out=out, videos=args.videos, algo=args.algo, obs=args.obs, size=args.size,
        max_frames=args.max_frames, epochs=args.epochs, weights=args.weights, seed=args.seed, device=args.device,
        eval_every=args.eval_every, threads=args.threads, cache_dir=args.cache_dir, algo_options=_options(args.option),
    )
    summary = train(config, resume=args.resume)
    print(f"run folder {summary['folder']}: epoch {summary['epoch']}, "
          f"train advantage {summary.get('train_advantage', float('nan')):.4f}, "
          f"eval advantage {summary.get('eval_advantage', float('nan')):.4f}")
    return summary


if __name__ == "__main__":
    run_cli(main)
