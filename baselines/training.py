"""The training loop the baseline trainers (``baselines.rlnst.train``, ``baselines.rlministyler.train``) share.

``ReplayTrainer`` drives an off-policy agent: episodes of transitions into a
replay buffer; after ``bootstrap_episodes`` episodes, every ``update_every``
environment steps one ``agent.update`` on a replay batch of ``batch_size``;
a ``log.csv`` row every ``log_every`` updates; a non-finite reward or loss
stops training with ``FloatingPointError``. A trainer subclass says only
what differs: how an episode is collected (``collect_episode``) and what
is stored with the model (``training_settings``).

Run folder (``pipeline.io.run_files.RunFolder``): ``config.json`` (the
settings), ``checkpoint.pt`` (agent, replay buffer, progress counters, the
log entries not yet in a row, torch's and the data sampler's random states),
``model/`` (the model, a model folder of ``pipeline.io.pretrained`` with the
training settings), ``log.csv`` and ``curves.png``; all written atomically.
Checkpoints are written at the end of the episode in which the update count
passes a multiple of ``checkpoint_every``, and when training ends; resuming
starts the next episode from ``checkpoint.pt`` (log rows after its update
count are dropped), so a run resumed from an episode-end checkpoint continues
exactly as the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pipeline.io.pretrained import PretrainedMixin
from pipeline.io.run_files import RunFolder, plot_curves, read_csv, write_csv
from policies.sac_core import ReplayBuffer


@dataclass
class Progress:
    """Counters that survive a resume."""

    updates: int = 0
    env_steps: int = 0
    episodes: int = 0
    elapsed_s: float = 0.0

    def log_row(self, logs: list[dict[str, float]], rewards: list[float], keys=None) -> dict[str, float]:
        """One ``log.csv`` row: ``mean_logs(logs, keys)``, the counters and the mean of the acting ``rewards``."""
        row = mean_logs(logs, keys)
        row.update(update=self.updates, env_steps=self.env_steps, episodes=self.episodes,
                   elapsed_s=round(self.elapsed_s, 2), reward=sum(rewards) / len(rewards))
        return row


@dataclass
class TrainResult:
    """The trained model and agent, the counters and the files of the run folder."""

    model: nn.Module
    agent: Any
    progress: Progress
    model_path: Path
    checkpoint_path: Path
    log_path: Path
    curves_path: Path


def json_friendly(value):
    """``value`` (from ``dataclasses.asdict``) with paths as text and tuples as lists, for config.json."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_friendly(v) for v in value]
    if isinstance(value, dict):
        return {k: json_friendly(v) for k, v in value.items()}
    return value


def mean_logs(logs: list[dict[str, float]], keys=None) -> dict[str, float]:
    """Mean of each logged quantity over the iterations that logged it (only ``keys``, when given)."""
    present = {key for entry in logs for key in entry}
    keys = present if keys is None else [key for key in keys if key in present]
    return {key: sum(e[key] for e in logs if key in e) / sum(key in e for e in logs) for key in keys}


def replay_batch(sample: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """A replay sample on ``device``, floating-point fields as float32 (stored in half), others as they are."""
    return {k: v.to(device).float() if v.is_floating_point() else v.to(device) for k, v in sample.items()}


class ReplayTrainer:
    """The shared loop. Subclasses set the class attributes, build ``model``, ``agent`` (with
    ``update(batch, index) -> logs``, ``state_dict``, ``load_state_dict``) and ``buffer`` in their
    ``__init__`` after calling this one, and implement ``collect_episode`` and ``training_settings``.

    ``config``: the trainer's ``TrainConfig`` (``out_dir``, ``updates``, ``bootstrap_episodes``,
    ``update_every``, ``batch_size``, ``log_every``, ``checkpoint_every``, ``seed``, ``device`` and
    ``summary()``, its JSON-friendly settings).
    """

    name: ClassVar[str]  # e.g. "RL-NST", in messages
    checkpoint_format: ClassVar[str]  # tag of checkpoint.pt
    log_columns: ClassVar[tuple[str, ...]]
    curves: ClassVar[dict[str, tuple[str, ...]]]  # panel title: logged columns
    resume_keys: ClassVar[tuple[str, ...]]  # settings a resumed run must share with config.json
    progress_columns: ClassVar[tuple[tuple[str, str], ...]]  # (label, column) of the progress line
    divergence_hint: ClassVar[str]  # what to change on a resume after a divergence

    model: PretrainedMixin
    agent: Any
    buffer: ReplayBuffer

    def __init__(self, config: Any, resume: bool) -> None:
        """Prepare the run folder (refusing an existing run without ``resume``), seed torch with ``config.seed``
        and make ``data_generator``, the data sampler's generator (seeded the same)."""
        self.config = config
        self.resume = resume
        self.run_folder = RunFolder(config.out_dir, self.checkpoint_format)
        self.run_folder.prepare(resume, config.summary(), self.resume_keys)
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        self.data_generator = torch.Generator().manual_seed(config.seed)
        self.progress = Progress()
        self.rows: list[dict] = []  # log.csv
        self.pending: list[dict[str, float]] = []  # update logs since the last row
        self.rewards: list[float] = []  # acting rewards since the last row

    def collect_episode(self) -> Iterator[dict[str, Tensor]]:
        """Act through one episode, yielding each step's transition (fields (1, ...) for the replay buffer,
        ``reward`` among them); the loop stores it and may update the agent before asking for the next."""
        raise NotImplementedError

    def training_settings(self) -> dict[str, Any]:
        """How the model was trained (JSON), stored with it (``training`` in its config.json)."""
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.run_folder.table("log")

    def _diverged(self, what: str) -> FloatingPointError:
        checkpoint = self.run_folder.checkpoint
        last = f"the last good checkpoint is {checkpoint}" if checkpoint.is_file() else "no checkpoint was written yet"
        return FloatingPointError(f"{self.name} training diverged at update {self.progress.updates + 1}: {what}; "
                                  f"{last} (resume with {self.divergence_hint})")

    def _restore(self) -> None:
        saved = self.run_folder.load_checkpoint(self.device)
        self.agent.load_state_dict(saved["agent"])
        self.buffer.load_state_dict(saved["buffer"])
        self.progress = Progress(**saved["progress"])
        self.pending, self.rewards = saved["pending"], saved["rewards"]
        torch.set_rng_state(saved["rng"]["torch"].cpu())  # random states live on the CPU whatever the device
        self.data_generator.set_state(saved["rng"]["data"].cpu())
        self.rows = [row for row in read_csv(self.log_path) if int(row["update"]) <= self.progress.updates]

    def save(self) -> None:
        """Write the model, the checkpoint, log.csv and curves.png (each atomically)."""
        run = self.run_folder
        self.model.save_pretrained(run.model, training=self.training_settings())
        run.save_checkpoint({
            "agent": self.agent.state_dict(),
            "buffer": self.buffer.state_dict(),
            "progress": dataclasses.asdict(self.progress),
            "pending": self.pending,
            "rewards": self.rewards,
            "rng": {"torch": torch.get_rng_state(), "data": self.data_generator.get_state()},
        })
        write_csv(self.rows, self.log_path, columns=self.log_columns)
        plot_curves(self.rows, run.curves, self.curves, x_key="update")

    def _add(self, transition: dict[str, Tensor]) -> None:
        reward = transition["reward"]
        if not torch.isfinite(reward).all():
            raise self._diverged(f"non-finite reward {reward.tolist()}")
        self.buffer.add(**transition)
        self.rewards.append(reward.mean().item())
        self.progress.env_steps += 1

    def _update(self, started: float, log: Callable[[str], None]) -> None:
        cfg, progress = self.config, self.progress
        batch = replay_batch(self.buffer.sample(cfg.batch_size), self.device)
        try:
            logs = self.agent.update(batch, progress.updates)
        except FloatingPointError as error:
            raise self._diverged(str(error)) from error
        bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
        if bad:
            raise self._diverged(f"non-finite {bad}")
        progress.updates += 1
        self.pending.append(logs)
        if progress.updates % cfg.log_every == 0 or progress.updates == cfg.updates:
            progress.elapsed_s = time.perf_counter() - started
            row = progress.log_row(self.pending, self.rewards, keys=self.log_columns)
            self.rows.append(row)
            self.pending, self.rewards = [], []
            write_csv(self.rows, self.log_path, columns=self.log_columns)
            log(f"update {progress.updates}/{cfg.updates} ({progress.elapsed_s:.0f} s): "
                + " ".join(f"{label} {row.get(column, math.nan):.4g}" for label, column in self.progress_columns))

    def train(self, log: Callable[[str], None] | None = print) -> TrainResult:
        """Train until ``config.updates`` (continuing ``checkpoint.pt`` on a resume); ``log``: progress lines."""
        log = log or (lambda _: None)
        if self.resume:
            self._restore()
            log(f"resumed from {self.run_folder.checkpoint} at update {self.progress.updates}")
        cfg, progress, run = self.config, self.progress, self.run_folder
        run.write_config(cfg.summary())
        started = time.perf_counter() - progress.elapsed_s
        saved_at = progress.updates
        while progress.updates < cfg.updates:
            for transition in self.collect_episode():
                self._add(transition)
                ready = progress.episodes >= cfg.bootstrap_episodes and len(self.buffer) >= cfg.batch_size
                if ready and progress.env_steps % cfg.update_every == 0:
                    self._update(started, log)
                if progress.updates >= cfg.updates:
                    break
            progress.episodes += 1
            passed = progress.updates // cfg.checkpoint_every > saved_at // cfg.checkpoint_every
            if passed and progress.updates < cfg.updates:  # the last checkpoint follows the loop
                progress.elapsed_s = time.perf_counter() - started
                self.save()
                saved_at = progress.updates
        progress.elapsed_s = time.perf_counter() - started
        self.save()
        return TrainResult(self.model, self.agent, progress, run.model, run.checkpoint, self.log_path, run.curves)
