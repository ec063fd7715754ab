"""The training loop: epochs of episodes over training clips, checkpoints, logs, resume, data parallel.

Data: every video (file or folder of numbered frames) in ``videos`` (default
the shared training clips, never ``videos/test``), resized to ``size`` pixels
wide and cut into consecutive windows of ``max_frames`` frames (fewer when
the shortest clip is shorter: every episode has the same length, so
data-parallel processes take the same number of optimiser steps). One
episode = one window. Each window's ``ClipData`` is prepared once.

Run folder (``pipeline.io.run_files.RunFolder``): ``config.json`` (the
``TrainConfig``); ``checkpoint.pt`` (algorithm state: networks, optimisers,
counters; written atomically after every epoch, so a killed run loses at
most one epoch); ``model/`` (the last policy) and ``best/`` (best mean-action
advantage on the training windows, when ``eval_every`` > 0), model folders
that ``policies.base.load_policy`` reads; ``episodes.csv``, ``epochs.csv``,
``curves.png`` (``policies.run_log``).

Data parallel: launched with ``accelerate launch --multi_gpu --num_processes N``
(GPUs) or ``torchrun --nproc_per_node N`` (CPU processes, gloo), each
process takes every N-th window; the algorithm averages gradients before each
step (``policies.parallel``), process 0 writes the run folder, and replicas
are checked identical (a parameter digest per process) after each epoch.
Randomness: the networks are initialised from ``seed``; epoch e of process r
seeds torch with (seed, e, r), so a resumed run continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pipeline.io.files import shared_data_dir
from pipeline.io.images import load_image, resize_to_width
from pipeline.io.precision import PRECISIONS, check_precision
from pipeline.io.run_files import RunFolder
from pipeline.io.video import list_videos, read_video
from pipeline.latents.cache import LatentCache
from pipeline.latents.codecs import CODEC_NAMES, load_warp_codec
from pipeline.latents.stylizers import STYLIZERS, build_latent_space, resolve_codec, stylizer_config_class
from policies.base import ALGORITHM_MODULES, OBSERVATION_KINDS, algorithm_module, check_observation_kind, make_algorithm
from policies.env import ClipData, LatentStyleEnv, prepare_clip, run_episode
from policies.observations import reads_pixel_warp
from policies.parallel import broadcast_module, mean_over_processes
from policies.run_log import RunLog
from rewards.flow import default_flow_model
from rewards.flow_cache import FlowCache
from rewards.reward import RewardWeights, build_reward

DEFAULT_VIDEOS = shared_data_dir() / "videos" / "train"
CHECKPOINT_FORMAT = "vstyle-policy-trainer-v1"  # the tag of checkpoint.pt
MIN_SIDE = 32  # LPIPS-alex's smallest input
# settings a resumed run must share with the checkpoint (epochs, device, eval_every, threads, precision may change)
RESUME_KEYS = ("style", "videos", "algo", "obs", "size", "max_frames", "weights", "seed", "codec", "stylizer",
               "algo_options", "stylizer_options")


@dataclass
class TrainConfig:
    """Settings of a training run (saved as the run folder's config.json).

    ``algo_options``: fields of the algorithm's option dataclasses (``CONFIG_CLASSES`` of its module, e.g.
    ``policies.pathwise``) over their defaults, which are the default agent.
    """

    style: tuple[str, ...] = field(metadata={
        "help": "style image(s) to train for (any format PIL reads); several train one policy for any style: every "
                "window is an episode with each style"})
    out: str = field(metadata={"help": "run folder; refused if it holds a run, unless resuming"})
    videos: str = field(default=str(DEFAULT_VIDEOS), metadata={
        "help": "folder of training clips: video files and/or folders of numbered frames (never the test clips)"})
    algo: str = field(default="pathwise", metadata={"choices": tuple(ALGORITHM_MODULES), "help": "learning algorithm"})
    obs: str = field(default="flow", metadata={
        "choices": OBSERVATION_KINDS, "help": "observation: flow = L_t, warped previous output, occlusion mask, "
                                              "difference; pair = previous and current baseline latents (Kuang & Chen)"})
    size: int = field(default=256, metadata={
        "help": "frame width in pixels, aspect kept, sides multiples of 8 (256: the size users run; a policy trained "
                "at 128 px held the style worse at 256)"})
    max_frames: int = field(default=24, metadata={
        "help": "frames per episode: clips are cut into windows of this many frames (24: an agent trained on "
                "8-frame windows never saw its style fade over longer runs, and lost it at test)"})
    epochs: int = field(default=2, metadata={"help": "total epochs (one episode per window and style each)"})
    weights: tuple[float, float, float] = field(default=(10.0, 1.0, 10.0), metadata={
        "help": "reward weights of the normalised style, content and temporal terms"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    device: str = field(default="cpu", metadata={
        "help": "cpu or cuda (launched by accelerate/torchrun, each process takes its own GPU)"})
    codec: str | None = field(default=None, metadata={
        "choices": CODEC_NAMES, "help": "latent codec (none: the stylizer's, taef2 for latent-wct, sd-vae for diffusest)"})
    stylizer: str = field(default="latent-wct", metadata={"choices": tuple(STYLIZERS), "help": "per-frame stylizer"})
    eval_every: int = field(default=1, metadata={
        "help": "evaluate the mean action every N epochs for the best policy (0 = never)"})
    threads: int | None = field(default=None, metadata={"help": "CPU threads per process (none: torch's choice)"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "latent cache folder (none: $VSTYLE_CACHE or ~/.cache/vstyle/latents)"})
    precision: str = field(default="auto", metadata={
        "choices": PRECISIONS, "help": "codec and VGG compute precision (auto: bf16 autocast where it runs natively)"})
    algo_options: dict[str, Any] = field(default_factory=dict)
    stylizer_options: dict[str, Any] = field(default_factory=dict)  # the stylizer's config fields over its defaults

    def __post_init__(self) -> None:
        self.codec = resolve_codec(self.stylizer, self.codec)  # the run folder records the codec in use
        self.style = (self.style,) if isinstance(self.style, str) else tuple(self.style)
        if not self.style:
            raise ValueError("give at least one style image")
        if len({Path(s).stem for s in self.style}) < len(self.style):
            raise ValueError(f"style images must have different file names, got {list(self.style)}")
        check_observation_kind(self.obs)
        self.weights = tuple(float(w) for w in self.weights)
        if len(self.weights) != 3:
            raise ValueError(f"weights must be three numbers (style, content, temporal), got {self.weights}")
        if self.size < MIN_SIDE:
            raise ValueError(f"size must be at least {MIN_SIDE} pixels (LPIPS needs {MIN_SIDE}), got {self.size}")
        if self.max_frames < 2:
            raise ValueError(f"max_frames must be at least 2 (an episode needs a previous frame), got {self.max_frames}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        check_precision(self.precision)


def find_videos(folder: str | os.PathLike) -> list[Path]:
    """Training clips in ``folder`` (``pipeline.io.video.list_videos``); the shared test clips are refused."""
    folder = Path(folder)
    if folder.name == "test" and folder.parent.name == "videos":
        raise ValueError(f"{folder} holds the test clips; training on them is not allowed (use videos/train)")
    return list_videos(folder)


def load_windows(videos: list[Path], size: int, max_frames: int) -> list[tuple[str, torch.Tensor]]:
    """(name, frames (E,3,H,W)) windows of equal length E = min(max_frames, shortest clip)."""
    clips = [(path.stem, resize_to_width(read_video(path)[0], size)) for path in videos]
    for name, frames in clips:
        if min(frames.shape[-2:]) < MIN_SIDE:
            raise ValueError(
                f"clip {name!r} is {frames.shape[-1]}x{frames.shape[-2]} px at size {size}; the reward (LPIPS) needs "
                f"at least {MIN_SIDE} px per side: use a larger size"
            )
    length = min(max_frames, *(frames.shape[0] for _, frames in clips))
    if length < 2:
        short = min(clips, key=lambda c: c[1].shape[0])[0]
        raise ValueError(f"clip {short!r} has fewer than 2 frames; an episode needs at least 2")
    windows = []
    for name, frames in clips:
        for start in range(0, frames.shape[0] - length + 1, length):
            windows.append((f"{name}[{start}:{start + length}]", frames[start : start + length]))
    return windows


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for row in rows for k in row}
    return {k: sum(row[k] for row in rows if k in row) / sum(1 for row in rows if k in row) for k in sorted(keys)}


def _parameter_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**31)


class Trainer:
    """Builds the components of a run and drives ``Algorithm.train_episode`` over epochs."""

    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        from accelerate import PartialState

        self.config = config
        self.folder = Path(config.out)
        algorithm_module(config.algo)
        self._check_folder(resume)
        self.videos = find_videos(config.videos)
        self.style_images = {Path(path).stem: load_image(path) for path in config.style}
        if config.threads:
            torch.set_num_threads(config.threads)
        self.state = PartialState(cpu=config.device == "cpu")
        self.rank, self.world = self.state.process_index, self.state.num_processes
        self.device = self.state.device if config.device in ("cpu", "cuda") else torch.device(config.device)
        torch.manual_seed(config.seed)  # identical initial networks on every process
        self.codec, stylizer, self.rewards = self._components()
        self.algorithm = make_algorithm(config.algo, config.obs, self.codec.latent_channels, **config.algo_options)
        self.algorithm.to(self.device)
        broadcast_module(self.algorithm.policy)
        policy = self.algorithm.policy
        # the codec of the policy's pixel-warp encodes, loaded once for every episode (None: it reads no pixel warp)
        self.warp_codec = load_warp_codec(self.codec, policy.warp_encoder) if reads_pixel_warp(policy) else None
        self.start_epoch, self.best = 0, None
        self.log = RunLog(self.folder, read=resume)
        if resume:
            self._load_checkpoint()
        self.clips = self._prepare_clips(stylizer)

    def _check_folder(self, resume: bool) -> None:
        """Set up ``run_folder``: a fresh run refuses an existing one, a resume needs it with the same settings."""
        self.run_folder = RunFolder(self.folder, CHECKPOINT_FORMAT)
        self.run_folder.prepare(resume, dataclasses.asdict(self.config), RESUME_KEYS)

    def _components(self):
        """The codec, the stylizer, and the reward of each style (by style name)."""
        config = stylizer_config_class(self.config.stylizer)(**self.config.stylizer_options)
        stylizer = build_latent_space(self.config.stylizer, config, self.config.codec, device=self.device,
                                      precision=self.config.precision)
        codec = stylizer.codec
        weights = RewardWeights(*self.config.weights)
        rewards = {name: build_reward(image, weights, self.config.precision, self.device)
                   for name, image in self.style_images.items()}
        return codec, stylizer, rewards

    def _prepare_clips(self, stylizer) -> list[ClipData]:
        """This process's episodes: every (window, style) pair, every world-th (the list padded so all processes
        get as many)."""

        windows = [(name, frames, style) for name, frames in load_windows(self.videos, self.config.size,
                                                                          self.config.max_frames)
                   for style in self.style_images]
        per_process = -(-len(windows) // self.world)
        padded = [windows[i % len(windows)] for i in range(per_process * self.world)]
        mine = padded[self.rank :: self.world]
        cache, flow_model = LatentCache(self.config.cache_dir), default_flow_model(self.device)
        flow_cache = FlowCache(cache.root / "flows")
        long_term_gap = getattr(self.algorithm.config, "long_term_gap", 0)  # the learners that score it
        clips = []
        for name, frames, style in tqdm(mine, desc="preparing clips", disable=self.rank != 0, leave=False):
            image = self.style_images[style].to(self.device)
            clips.append(prepare_clip(frames, image, stylizer, cache, flow_model, self.rewards[style],
                                      f"{name}@{style}" if len(self.style_images) > 1 else name, flow_cache, style,
                                      self.algorithm.policy.observation_flow, long_term_gap))
        return clips

    def _load_checkpoint(self) -> None:
        checkpoint = self.run_folder.load_checkpoint(self.device, weights_only=False)
        self.algorithm.load_state_dict(checkpoint["algorithm"])
        self.start_epoch, self.best = checkpoint["epoch"], checkpoint.get("best")
        self.log.truncate(self.start_epoch)

    def _save(self, epoch: int, eval_advantage: float | None) -> None:
        """Checkpoint (atomic) after ``epoch`` epochs: checkpoint.pt, model/, and best/ if improved."""
        policy = self.algorithm.policy
        if eval_advantage is not None and (self.best is None or eval_advantage > self.best):
            self.best = eval_advantage
            policy.save_pretrained(self.run_folder.best)
        self.run_folder.save_checkpoint({"epoch": epoch, "best": self.best, "algorithm": self.algorithm.state_dict()})
        policy.save_pretrained(self.run_folder.model)
        self.log.write()

    def _gather(self, rows: list[dict]) -> list[dict]:
        if self.world == 1:
            return rows
        from accelerate.utils import gather_object

        return gather_object(rows)

    def _check_replicas(self) -> bool:
        digests = self._gather([_parameter_digest(self.algorithm.policy)])
        if len(set(digests)) != 1:
            raise RuntimeError(f"data-parallel replicas diverged: parameter digests {digests}")
        return True

    def evaluate(self) -> dict[str, float]:
        """Mean per-step scalars of the mean action on this process's windows, averaged over processes."""
        self.algorithm.policy.eval()
        rows = [r.scalars() for clip in self.clips for r in run_episode(self._env(clip), self.algorithm.policy)]
        return {f"eval_{k}": mean_over_processes(v) for k, v in _mean_rows(rows).items()}

    def _env(self, clip: ClipData) -> LatentStyleEnv:
        return LatentStyleEnv(clip, self.codec, self.rewards[clip.style], self.config.obs, warp_codec=self.warp_codec)

    def run(self) -> dict[str, Any]:
        """Train from the start epoch to ``config.epochs``; returns a summary of the last epoch."""
        if self.rank == 0:
            self.run_folder.write_config(dataclasses.asdict(self.config))
        summary: dict[str, Any] = {"epoch": self.start_epoch, "folder": str(self.folder)}
        episode = len(self.log.episodes)
        for epoch in range(self.start_epoch + 1, self.config.epochs + 1):
            torch.manual_seed(_epoch_seed(self.config.seed, epoch, self.rank))
            order = list(self.clips)
            random.Random(_epoch_seed(self.config.seed, epoch, self.rank)).shuffle(order)
            rows, started, transitions = [], time.perf_counter(), 0
            bar = tqdm(order, desc=f"epoch {epoch}/{self.config.epochs}", disable=self.rank != 0)
            for clip in bar:
                steps = self.algorithm.train_episode(self._env(clip))
                transitions += len(steps)
                rows.append({"epoch": epoch, "clip": clip.name, "rank": self.rank, "steps": len(steps), **_mean_rows(steps)})
                bar.set_postfix(advantage=f"{rows[-1].get('advantage', float('nan')):.3f}")
            seconds = time.perf_counter() - started
            rows = self._gather(rows)
            for row in rows:
                row["episode"] = episode
                episode += 1
            means = _mean_rows([{k: v for k, v in r.items() if isinstance(v, float)} for r in rows])
            epoch_row = {"epoch": epoch, "last_episode": episode - 1, "processes": self.world,
                         "transitions": transitions * self.world, "seconds": seconds,
                         "transitions_per_s": transitions * self.world / max(seconds, 1e-9),
                         **{f"train_{k}": v for k, v in means.items()}}
            if self.config.eval_every and epoch % self.config.eval_every == 0:
                epoch_row.update(self.evaluate())
            epoch_row["replicas_identical"] = self._check_replicas()
            if self.rank == 0:
                self.log.add_episodes(rows)
                self.log.add_epoch(epoch_row)
                self._save(epoch, epoch_row.get("eval_advantage"))
            self.state.wait_for_everyone()
            summary = {**epoch_row, "folder": str(self.folder)}
        return summary


def train(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train a policy as ``config`` says (continuing ``config.out`` with ``resume``); returns the last epoch's summary."""
    return Trainer(config, resume).run()
