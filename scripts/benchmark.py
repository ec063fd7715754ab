"""Benchmark of the RL stage on this machine: what a policy costs at inference and in training.

Prints, measured side by side in one run and labelled with the device:
  1. stylization fps of the frame-by-frame baseline and of the same pipeline with a policy
     (flow observation: RAFT content flows + policy network + a second decode), their ratio, and the
     policy overhead in ms per frame split into its parts;
  2. training transitions per second of each algorithm (REINFORCE, SAC; train_policy.py's default
     options) on one clip window at each training width (environment + algorithm from policies, a
     few episodes), and where a REINFORCE transition's time goes;
  3. the same through train_policy.py (its defaults, the shared training clips, one epoch): one process
     against two data-parallel processes on the same cores;
  4. peak memory stylizing a short and a long clip with the policy, each in a fresh process, and their ratio.
Ratios are the figures to compare across machines; absolute figures hold for the device printed.
On a shared machine they are disturbed by the other jobs: run it on an idle one for numbers to publish.

    python scripts/benchmark.py [--policy RUN] [--size 256] [--frames 16] [--train-sizes 128 256] [--device cuda]
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
    peak_memory_mib,
    print_table,
    seconds_per_call,
)
from pipeline.io.files import shared_data_dir  # noqa: E402
from pipeline.io.images import load_image, resize_to_width  # noqa: E402
from pipeline.io.video import read_video  # noqa: E402
from pipeline.latents.codecs import load_codec  # noqa: E402
from pipeline.latents.stylizers import build_stylizer  # noqa: E402
from pipeline.methods import LatentMethod, stylize_file  # noqa: E402
from pipeline.stylize import StylizationPipeline  # noqa: E402
from policies.base import ALGORITHM_MODULES, load_policy, make_algorithm  # noqa: E402
from policies.env import LatentStyleEnv, prepare_clip, score_frames  # noqa: E402
from policies.observations import latent_flows, pixel_warped_latent  # noqa: E402
from policies.rollout import apply_policy  # noqa: E402
from rewards.flow import RAFTFlow, flows_and_masks  # noqa: E402
from rewards.reward import build_reward  # noqa: E402
from scripts._cli import run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = shared_data_dir()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=str(DATA / "videos" / "test" / "wolf.mp4"), help="clip to stylize")
    parser.add_argument("--style", default=str(DATA / "styles" / "starry_night.jpg"), help="style image")
    parser.add_argument("--policy", default=None,
                        help="trained policy (run folder or file); default an untrained REINFORCE flow policy (same cost)")
    parser.add_argument("--size", type=int, default=256, help="inference frame width (default 256)")
    parser.add_argument("--frames", type=int, default=16, help="frames of the inference clip (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median reported (default 3)")
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[128, 256],
                        help="training frame widths (default 128 256; train_policy.py's default is 128)")
    parser.add_argument("--train-frames", type=int, default=8, help="frames of the training window (default 8)")
    parser.add_argument("--episodes", type=int, default=2, help="training episodes timed per algorithm (default 2)")
    parser.add_argument("--lengths", type=int, nargs=2, default=(16, 64), metavar=("SHORT", "LONG"),
                        help="clip lengths of the memory test (default 16 64)")
    parser.add_argument("--skip-training", action="store_true", help="skip the training throughput test")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory test")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def get_policy(args: argparse.Namespace, latent_channels: int):
    """--policy, else an untrained latent-warp residual policy with its gate opened (not the baseline)."""
    if args.policy:
        return load_policy(args.policy, device=args.device)
    return make_algorithm("reinforce", "flow", latent_channels, head="residual", flow_warp="latent",
                          init_gate=0.1).policy.to(args.device).eval()


def _num(value: float) -> str:
    return f"{value:.4g}"


def inference(args: argparse.Namespace) -> dict[str, float]:
    """Seconds per frame of the baseline and the policy pipeline (alternating repeats), and the overhead's parts."""

    device = torch.device(args.device)
    frames = resize_to_width(read_video(args.video, max_frames=args.frames)[0], args.size).to(device)
    style = load_image(args.style).to(device)
    stylizer = build_stylizer("latent-wct", device=device)
    flow_model = RAFTFlow().to(device)
    policy = get_policy(args, stylizer.codec.latent_channels)
    baseline = StylizationPipeline(stylizer)
    refined = StylizationPipeline(stylizer, policy=policy, flow_model=flow_model)
    count = frames.shape[0]
    with torch.no_grad():
        latents = stylizer.stylize(frames, style)
        pixel = flows_and_masks(frames, flow_model)
        small = latent_flows(pixel.flow_bwd, pixel.mask_bwd, tuple(latents.shape[-2:]))
        base_s, policy_s, flow_s, net_s, decode_s = (t / count for t in alternating_medians([
            lambda: baseline.stylize_clip(frames, style),
            lambda: refined.stylize_clip(frames, style),
            lambda: flows_and_masks(frames, flow_model),
            lambda: apply_policy(policy, latents, small),
            lambda: stylizer.codec.decode(latents),
        ], args.repeats))
    return {"frames": count, "size": f"{frames.shape[-1]}x{frames.shape[-2]}", "baseline_s": base_s, "policy_s": policy_s,
            "flow_s": flow_s, "net_s": net_s, "decode_s": decode_s, "policy_kind": policy.kind}


def training(args: argparse.Namespace, size: int) -> tuple[list[dict[str, object]], dict[str, float]]:
    """Transitions per second of each training algorithm (its train_policy.py defaults) on one clip window
    ``size`` px wide, and where a REINFORCE transition's time goes (ms per part, timed alone)."""

    device = torch.device(args.device)
    frames = resize_to_width(read_video(args.video, max_frames=args.train_frames)[0], size).to(device)
    style = load_image(args.style).to(device)
    codec = load_codec("taef2", device=device)
    stylizer = build_stylizer("latent-wct", codec=codec)
    reward = build_reward(style, device=device)
    clip = prepare_clip(frames, style, stylizer, None, RAFTFlow().to(device), reward, "benchmark")
    rows = []
    for name in ALGORITHM_MODULES:
        try:
            algorithm = make_algorithm(name, "flow", codec.latent_channels)
        except (ValueError, TypeError) as error:
            rows.append({"algorithm": name, "transitions/s": "not available", "ms/transition": str(error)[:60]})
            continue
        algorithm.to(device)
        algorithm.train_episode(LatentStyleEnv(clip, codec, reward, "flow"))  # warm-up episode
        steps, started = 0, time.perf_counter()
        for _ in range(args.episodes):
            steps += len(algorithm.train_episode(LatentStyleEnv(clip, codec, reward, "flow")))
        seconds = time.perf_counter() - started
        rows.append({"algorithm": f"{name} (defaults)", "transitions/s": steps / seconds,
                     "ms/transition": 1000 * seconds / steps})

    # the parts of one REINFORCE transition at frame 1, each timed alone
    policy = make_algorithm("reinforce", "flow", codec.latent_channels).policy.to(device)
    env = LatentStyleEnv(clip, codec, reward, "flow").adopt(policy)
    env.reset()
    obs, _ = env.step(torch.zeros_like(clip.baseline_latents[:1]))
    latent, frame = clip.baseline_latents[1:2], clip.baseline_frames[1:2]

    def policy_step() -> None:
        distribution = policy.distribution(obs)
        distribution.log_prob(distribution.sample()).sum().backward()

    with torch.no_grad():
        parts = alternating_medians([
            lambda: codec.decode(latent),
            lambda: score_frames(reward, frame, clip.frames[1:2], clip.baseline_frames[:1], clip.flows[0]),
            lambda: pixel_warped_latent(codec, clip.baseline_frames[:1], clip.flows.flow_bwd[:1], latent),
        ], args.repeats)
    parts.append(seconds_per_call(policy_step, args.repeats))
    names = ("decode", "reward (style+content+temporal)", "pixel-warp observation (2 encodes)", "policy fwd+bwd")
    return rows, {"frame size": f"{frames.shape[-1]}x{frames.shape[-2]}",
                  **{name: 1000 * value for name, value in zip(names, parts)}}


def trainer_throughput(args: argparse.Namespace, size: int, processes: int, workdir: Path) -> dict[str, object]:
    """Transitions/s of one epoch of ``train_policy.py`` (its defaults, the shared training clips, no
    evaluation) at ``size`` px, in ``processes`` data-parallel processes sharing the CPU cores (torchrun, gloo)."""
    import csv
    import os
    import subprocess

    threads = max(1, torch.get_num_threads() // processes)
    out = workdir / f"train-{size}-{processes}"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               str(REPO / "scripts" / "train_policy.py"), "--style", args.style, "--out", str(out), "--size", str(size),
               "--epochs", "1", "--eval-every", "0", "--threads", str(threads), "--device", args.device,
               "--cache-dir", str(workdir / "cache")]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"train_policy.py failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
    with open(out / "epochs.csv", newline="") as handle:
        epoch = next(csv.DictReader(handle))
    return {"width": size, "processes x threads": f"{processes} x {threads}", "transitions": int(epoch["transitions"]),
            "seconds": _num(float(epoch["seconds"])), "transitions/s": _num(float(epoch["transitions_per_s"]))}


def memory_child(video: str, args: argparse.Namespace) -> None:
    """Stylize ``video`` with the policy in this fresh process; print peak memory as JSON."""
    device = torch.device(args.device)
    stylizer = build_stylizer("latent-wct", device=device)
    policy = get_policy(args, stylizer.codec.latent_channels)
    pipe = StylizationPipeline(stylizer, policy=policy, flow_model=RAFTFlow().to(device))
    out = Path(tempfile.mkdtemp()) / "out.mp4"
    stylize_file(LatentMethod(pipe), video, load_image(args.style).to(device), out, size=args.size, progress=False)
    print(json.dumps(peak_memory_mib(device)))


def memory(args: argparse.Namespace, workdir: Path) -> list[dict[str, object]]:
    frames, fps = read_video(args.video)
    frames = resize_to_width(frames, args.size)

    def command(clip: Path) -> list[str]:
        extra = (["--policy", args.policy] if args.policy else []) + (["--threads", str(args.threads)] if args.threads else [])
        return [sys.executable, __file__, "--memory-child", str(clip), "--style", args.style,
                "--size", str(args.size), "--device", args.device, *extra]

    results = looped_clips_in_fresh_processes(frames, fps, args.lengths, workdir, command)
    return [{"frames": length, "peak RSS MiB": round(result["peak_rss_mib"]),
             **({"CUDA peak MiB": round(result["cuda_peak_mib"])} if result["cuda_peak_mib"] is not None else {})}
            for length, result in zip(args.lengths, results)]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args)
        return
    label = device_label(args.device)
    print(f"device: {label}")
    s = inference(args)
    print_table([{
        "baseline fps": _num(1 / s["baseline_s"]), "with policy fps": _num(1 / s["policy_s"]),
        "policy / baseline time": _num(s["policy_s"] / s["baseline_s"]),
        "overhead ms/frame": _num(1000 * (s["policy_s"] - s["baseline_s"])),
        "of which RAFT flows": _num(1000 * s["flow_s"]), "policy net": _num(1000 * s["net_s"]),
        "second decode": _num(1000 * s["decode_s"]),
    }], f"1. stylization, {s['frames']} frames at {s['size']}, latent-wct + taef2, {s['policy_kind']} policy; {label}")
    if not args.skip_training:
        for size in args.train_sizes:
            rows, parts = training(args, size)
            for row in rows:
                if isinstance(row["transitions/s"], float):
                    row["transitions/s"], row["ms/transition"] = _num(row["transitions/s"]), _num(row["ms/transition"])
            print_table(rows, f"2. training throughput, {args.train_frames}-frame window of {Path(args.video).name} at "
                              f"{parts['frame size']} (env + algorithm, {args.episodes} episodes after a warm-up one); {label}")
            print_table([{k: _num(v) for k, v in parts.items() if k != "frame size"}],
                        f"   where a REINFORCE transition's time goes at {size} px (ms, each part timed alone)")
        with tempfile.TemporaryDirectory() as tmp:
            rows = [trainer_throughput(args, size, processes, Path(tmp))
                    for size in args.train_sizes for processes in (1, 2)]
        print_table(rows, "3. train_policy.py, one epoch over the shared training clips (13 windows of 16 frames; "
                          f"default agent, no evaluation), 1 process vs 2 data-parallel processes; {label}")
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            rows = memory(args, Path(tmp))
        print_table(rows, f"4. peak memory stylizing with the policy at {args.size} px, a fresh process per clip; {label}")
        short, long = rows
        print(f"ratio {long['frames']}/{short['frames']} frames: peak RSS x{long['peak RSS MiB'] / short['peak RSS MiB']:.3f}")


if __name__ == "__main__":
    run_cli(main)
