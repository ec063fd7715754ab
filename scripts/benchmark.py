"""Benchmark of the RL stage on this machine: what the policy costs users at inference, and in training.

The policy (--policy, default the shipped one) is loaded as stylize_video.py loads it (pipeline.methods.load_method
on the shared Components, no latent cache), so the pipeline runs with the flow estimator it gives the policy.
Prints, measured side by side in one run (repeats alternate) and labelled with the device:
  1. frames/s of the frame-by-frame baseline and of the policy pipeline at each --sizes width, on the clip in
     memory (Method.stylize_clip) and through stylize_file (video decode, resize, encode), and their ratio
     (policy fps / baseline fps);
  2. milliseconds per frame of each stage at each width, each timed alone on one chunk: stylize (encode + latent
     WCT), decode, content flow (both directions and occlusion masks, with the policy's flow estimator), policy
     network, and for a pixel-warp policy its re-encodes and per-frame decodes; next to the measured totals;
  3. peak memory stylizing a SHORT and a LONG clip with the policy (--lengths, the video looped) at the first
     --sizes width, each in a fresh process, and their ratio;
  4. training throughput (--skip-training to skip): transitions/s of each algorithm (REINFORCE, SAC;
     train_policy.py's default options) on one clip window at each --train-sizes width, where a transition
     of the default agent (pathwise) goes, with its differentiable part also timed on 4 frames in one call,
     and train_policy.py for one epoch in one process against two data-parallel ones.
Ratios are the figures to compare across machines; absolute figures hold for the device printed. On a shared
machine the other jobs disturb them: run it on an idle one for numbers to publish (or with --threads 1 on cores
that others use). --quick is a smoke run (a few frames at 128 px, short memory clips, no training): about 20 s on
two CPU cores. The full defaults take about half an hour on two CPU cores, most of it the 512-px policy runs.

    python scripts/benchmark.py [--sizes 256 512] [--frames 16] [--policy default] [--lengths 48 240]
                                [--skip-training] [--skip-memory] [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluation.profiling import (  # noqa: E402
    ROLLOUT_DECODES,
    alternating_medians,
    device_label,
    looped_clips_in_fresh_processes,
    model_label,
    peak_memory_mib,
    print_table,
    seconds_per_call,
    stage_milliseconds,
)
from pipeline.io.files import shared_data_dir  # noqa: E402
from pipeline.io.images import load_image, resize_to_width  # noqa: E402
from pipeline.io.precision import PRECISIONS  # noqa: E402
from pipeline.io.video import read_video  # noqa: E402
from pipeline.latents.codecs import load_codec, load_warp_codec  # noqa: E402
from pipeline.latents.stylizers import build_latent_space, build_stylizer  # noqa: E402
from pipeline.methods import Components, LatentMethod, load_method, stylize_file  # noqa: E402
from policies.base import ALGORITHM_MODULES, make_algorithm  # noqa: E402
from policies.env import LatentStyleEnv, prepare_clip, score_frames  # noqa: E402
from policies.observations import pixel_warped_latent, warps_pixels  # noqa: E402
from rewards.flow import default_flow_model  # noqa: E402
from rewards.reward import build_reward  # noqa: E402
from scripts._cli import run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = shared_data_dir()
STYLIZER = "latent-wct"  # on its default codec, taef2: stylize_video.py's default latent space
# --quick: defaults of a smoke run (flags given explicitly still win)
BATCH = 4  # frames per call in the batched timing of a training transition
QUICK = {"sizes": [128], "frames": 4, "repeats": 1, "lengths": [4, 8], "skip_training": True}


def quick_flags() -> str:
    """The flags ``QUICK`` stands for, as one would type them."""
    def flag(name: str, value: object) -> str:
        text = "--" + name.replace("_", "-")
        if value is True:
            return text
        return " ".join([text, *map(str, value if isinstance(value, list) else [value])])

    return " ".join(flag(name, value) for name, value in QUICK.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=str(DATA / "videos" / "test" / "wolf.mp4"),
                        help="clip to stylize (default: the 512x512 test clip wolf.mp4)")
    parser.add_argument("--style", default=str(DATA / "styles" / "starry_night.jpg"), help="style image")
    parser.add_argument("--policy", default="default",
                        help="policy: 'default' (the shipped policy, stylize_video.py's default) or a run or policy "
                             "folder of train_policy.py (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512],
                        help="inference frame widths (default: 256 512); the memory test uses the first")
    parser.add_argument("--frames", type=int, default=16, help="frames of the inference clip (default: 16)")
    parser.add_argument("--chunk-size", type=int, default=16,
                        help="frames per chunk, as stylize_video.py's --chunk-size (default: 16)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="codec compute precision, as stylize_video.py's --precision (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median reported (default: 3)")
    parser.add_argument("--lengths", type=int, nargs=2, default=[48, 240], metavar=("SHORT", "LONG"),
                        help="clip lengths of the memory test, in frames (default: 48 240)")
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[256],
                        help="training frame widths (default: 256)")
    parser.add_argument("--train-frames", type=int, default=8, help="frames of the training window (default: 8)")
    parser.add_argument("--episodes", type=int, default=2, help="training episodes timed per algorithm (default: 2)")
    parser.add_argument("--skip-training", action=argparse.BooleanOptionalAction, default=False,
                        help="skip the training throughput test (default: run it)")
    parser.add_argument("--skip-memory", action=argparse.BooleanOptionalAction, default=False,
                        help="skip the memory test (default: run it)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {quick_flags()}, each unless given (e.g. --no-skip-training)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); on cores shared with other jobs, 1 avoids "
                             "oversubscribing them (2 threads ran 3-10x slower on a busy 2-core machine)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    return args


def _num(value: float) -> str:
    return f"{value:.4g}"


def load_methods(args: argparse.Namespace) -> tuple[LatentMethod, LatentMethod]:
    """The frame-by-frame baseline and the policy method, loaded as stylize_video.py loads them (the registry on
    the shared Components), without the latent cache so that every run computes."""
    stylizer = build_latent_space(STYLIZER, device=args.device, precision=args.precision)
    components = Components(stylizer, None, torch.device(args.device), chunk_size=args.chunk_size)
    return load_method("baseline", components), load_method("policy", components, args.policy)


def describe(method: LatentMethod) -> str:
    """The policy of a method in a title: kind, observation, warp (and its encoder) and the content-flow estimator
    it runs with."""
    policy, warp_codec = method.pipeline.policy, method.pipeline.warp_codec
    warp = f", {policy.flow_warp} warp" if policy.observation == "flow" else ""
    if policy.observation == "flow" and warps_pixels(policy.flow_warp):
        warp += f" re-encoded by {warp_codec.model_id}"
    return (f"{policy.kind} policy ({policy.observation} observation{warp}), content flow "
            f"{model_label(method.pipeline.flow_model)}")


def inference(args: argparse.Namespace, baseline: LatentMethod, policy: LatentMethod, style: Tensor, size: int,
              workdir: Path) -> dict[str, object]:
    """At width ``size``: seconds per frame of the baseline and the policy pipeline, on the clip in memory and
    through ``stylize_file`` (all timed in turn), and the policy pipeline's stages (ms per frame)."""
    frames = resize_to_width(read_video(args.video, max_frames=args.frames)[0], size).to(args.device)
    count = frames.shape[0]

    def in_memory(method: LatentMethod):
        return lambda: method.stylize_clip(frames, style, args.chunk_size)

    def through_file(method: LatentMethod):
        return lambda: stylize_file(method, args.video, style, workdir / "benchmark.mp4", size=size, overwrite=True,
                                    max_frames=args.frames, chunk_size=args.chunk_size, progress=False)

    with torch.no_grad():
        seconds = alternating_medians([in_memory(baseline), in_memory(policy), through_file(baseline),
                                       through_file(policy)], args.repeats)
    stages = stage_milliseconds(policy.pipeline, frames[: args.chunk_size], style, args.repeats)
    base_s, policy_s, base_file_s, policy_file_s = (value / count for value in seconds)
    return {"size": f"{frames.shape[-1]}x{frames.shape[-2]}", "frames": count, "baseline_s": base_s,
            "policy_s": policy_s, "baseline_file_s": base_file_s, "policy_file_s": policy_file_s, "stages": stages}


def print_inference(results: list[dict[str, object]], title: str) -> None:
    """Table 1 (frames/s and ratios per width) and table 2 (ms per frame of each stage, a column per width)."""
    print_table([{
        "size": r["size"], "baseline fps": _num(1 / r["baseline_s"]), "policy fps": _num(1 / r["policy_s"]),
        "policy / baseline fps": _num(r["baseline_s"] / r["policy_s"]),
        "baseline fps, file": _num(1 / r["baseline_file_s"]), "policy fps, file": _num(1 / r["policy_file_s"]),
        "policy / baseline fps, file": _num(r["baseline_file_s"] / r["policy_file_s"]),
    } for r in results], f"1. frames/s, {title}; in memory (Method.stylize_clip) and through stylize_file "
                         "(file: with video decode and encode)")
    names = list(results[0]["stages"])
    baseline_stages = names[:2]  # stylize and decode
    # what the policy pipeline runs: not the comparison rows, nor the decode where its rollout decodes every output
    policy_stages = [n for n in names if "instead" not in n and not (n == "decode" and ROLLOUT_DECODES in names)]
    rows = [{"stage": name, **{r["size"]: _num(r["stages"][name]) for r in results}} for name in names]
    rows += [
        {"stage": "sum: baseline stages", **{r["size"]: _num(sum(r["stages"][n] for n in baseline_stages))
                                             for r in results}},
        {"stage": "sum: policy pipeline stages", **{r["size"]: _num(sum(r["stages"][n] for n in policy_stages))
                                                    for r in results}},
        {"stage": "measured: baseline", **{r["size"]: _num(1000 * r["baseline_s"]) for r in results}},
        {"stage": "measured: policy pipeline", **{r["size"]: _num(1000 * r["policy_s"]) for r in results}},
    ]
    print_table(rows, "2. ms per frame of each stage of the policy pipeline (each timed alone on one chunk), "
                      "against the measured totals (in memory)")


def memory_child(video: str, args: argparse.Namespace) -> None:
    """Stylize ``video`` with the policy in this fresh process, as stylize_video.py would; print peak memory as JSON."""
    _, policy = load_methods(args)
    out = Path(tempfile.mkdtemp()) / "out.mp4"
    style = load_image(args.style).to(args.device)
    stylize_file(policy, video, style, out, size=args.sizes[0], chunk_size=args.chunk_size, progress=False)
    print(json.dumps(peak_memory_mib(args.device)))


def memory(args: argparse.Namespace, workdir: Path) -> list[dict[str, object]]:
    """Peak memory of stylizing the video looped to each of ``--lengths`` with the policy, each in a fresh process."""
    frames, fps = read_video(args.video)
    frames = resize_to_width(frames, args.sizes[0])

    def command(clip: Path) -> list[str]:
        extra = ["--threads", str(args.threads)] if args.threads else []
        return [sys.executable, __file__, "--memory-child", str(clip), "--style", args.style, "--policy", args.policy,
                "--sizes", str(args.sizes[0]), "--chunk-size", str(args.chunk_size), "--precision", args.precision,
                "--device", args.device, *extra]

    results = looped_clips_in_fresh_processes(frames, fps, args.lengths, workdir, command)
    return [{"frames": length, "peak RSS MiB": round(result["peak_rss_mib"]),
             **({"CUDA peak MiB": round(result["cuda_peak_mib"])} if result["cuda_peak_mib"] is not None else {})}
            for length, result in zip(args.lengths, results)]


def training(args: argparse.Namespace, size: int) -> tuple[list[dict[str, object]], dict[str, float]]:
    """Transitions per second of each training algorithm (its train_policy.py defaults) on one clip window
    ``size`` px wide, and where a REINFORCE transition's time goes (ms per part, timed alone)."""

    device = torch.device(args.device)
    frames = resize_to_width(read_video(args.video, max_frames=args.train_frames)[0], size).to(device)
    style = load_image(args.style).to(device)
    codec = load_codec("taef2", device=device)
    stylizer = build_stylizer(STYLIZER, codec=codec)
    reward = build_reward(style, device=device)
    clip = prepare_clip(frames, style, stylizer, None, default_flow_model(device), reward, "benchmark")
    rows = []
    for name in ALGORITHM_MODULES:
        try:
            algorithm = make_algorithm(name, "flow", codec.latent_channels)
        except (ValueError, TypeError) as error:
            rows.append({"algorithm": name, "transitions/s": "not available", "ms/transition": str(error)[:60]})
            continue
        algorithm.to(device)
        warp_codec = load_warp_codec(codec, algorithm.policy.warp_encoder)  # loaded once, as train_policy.py does
        algorithm.train_episode(LatentStyleEnv(clip, codec, reward, "flow", warp_codec=warp_codec))  # warm-up episode
        steps, started = 0, time.perf_counter()
        for _ in range(args.episodes):
            steps += len(algorithm.train_episode(LatentStyleEnv(clip, codec, reward, "flow", warp_codec=warp_codec)))
        seconds = time.perf_counter() - started
        rows.append({"algorithm": f"{name} (defaults)", "transitions/s": _num(steps / seconds),
                     "ms/transition": _num(1000 * seconds / steps)})

    # the parts of one transition of the default agent (pathwise) at frame 1, each timed alone, and the
    # differentiable part with BATCH windows' frames in one call (per frame), to show what batching would buy
    policy = make_algorithm("pathwise", "flow", codec.latent_channels).policy.to(device)
    env = LatentStyleEnv(clip, codec, reward, "flow").adopt(policy)  # with the policy's warp encoder
    env.reset()
    obs, _ = env.step(torch.zeros_like(clip.baseline_latents[:1]))

    def through_reward(count: int) -> None:
        """decode(L_t + delta) and its reward terms, then their gradient in delta, for ``count`` copies of frame 1."""
        latent = clip.baseline_latents[1:2].expand(count, -1, -1, -1)
        delta = torch.zeros_like(latent, requires_grad=True)
        frame = codec.decode(latent + delta)
        terms = score_frames(reward, frame, clip.frames[[1] * count], clip.baseline_frames[[0] * count],
                             clip.flows[[0] * count])
        (terms.style + terms.content + terms.temporal).sum().backward()

    def policy_step() -> None:
        policy.mean(obs).square().sum().backward()

    parts = [seconds_per_call(lambda: through_reward(1), args.repeats),
             seconds_per_call(lambda: through_reward(BATCH), args.repeats) / BATCH]
    with torch.no_grad():
        parts.append(seconds_per_call(lambda: pixel_warped_latent(
            env.warp_codec, clip.baseline_frames[:1], clip.flows.flow_bwd[:1], clip.baseline_latents[:1]), args.repeats))
    parts.append(seconds_per_call(policy_step, args.repeats))
    names = ("decode + reward, forward and backward", f"the same per frame, {BATCH} frames in one call",
             "pixel-warp observation (2 encodes)", "policy fwd+bwd")
    return rows, {"frame size": f"{frames.shape[-1]}x{frames.shape[-2]}",
                  **{name: 1000 * value for name, value in zip(names, parts)}}


def trainer_throughput(args: argparse.Namespace, size: int, processes: int, workdir: Path) -> dict[str, object]:
    """Transitions/s of one epoch of ``train_policy.py`` (its defaults, the shared training clips, no
    evaluation) at ``size`` px, in ``processes`` data-parallel processes sharing the CPU cores (torchrun, gloo)."""
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


def print_training(args: argparse.Namespace, label: str) -> None:
    """Section 4: the algorithms on one window at each training width, then train_policy.py's epoch."""
    for size in args.train_sizes:
        rows, parts = training(args, size)
        print_table(rows, f"4. training throughput, {args.train_frames}-frame window of {Path(args.video).name} at "
                          f"{parts['frame size']} (env + algorithm, {args.episodes} episodes after a warm-up one); "
                          f"{label}")
        print_table([{k: _num(v) for k, v in parts.items() if k != "frame size"}],
                    f"   where a transition of the default agent (pathwise) goes at {size} px "
                    "(ms, each part timed alone)")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [trainer_throughput(args, size, processes, Path(tmp))
                for size in args.train_sizes for processes in (1, 2)]
    print_table(rows, "   train_policy.py, one epoch over the shared training clips (default agent, no evaluation), "
                      f"1 process vs 2 data-parallel processes; {label}")


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
    baseline, policy = load_methods(args)
    style = load_image(args.style).to(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        results = [inference(args, baseline, policy, style, size, Path(tmp)) for size in args.sizes]
    print_inference(results, f"{results[0]['frames']} frames of {Path(args.video).name}, {STYLIZER} + "
                             f"{baseline.pipeline.codec.name} ({args.precision}), {describe(policy)}; {label}")
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            rows = memory(args, Path(tmp))
        print_table(rows, f"3. peak memory stylizing with the policy at {args.sizes[0]} px (stylize_file), "
                          f"a fresh process per clip; {label}")
        short, long = rows
        print(f"ratio {long['frames']}/{short['frames']} frames: peak RSS x{long['peak RSS MiB'] / short['peak RSS MiB']:.3f}"
              + (f", CUDA peak x{long['CUDA peak MiB'] / short['CUDA peak MiB']:.3f}" if "CUDA peak MiB" in short else ""))
    if not args.skip_training:
        print_training(args, label)


if __name__ == "__main__":
    run_cli(main)
