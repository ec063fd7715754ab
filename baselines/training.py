"""What the baseline trainers (``baselines.rlnst.train``, ``baselines.rlministyler.train``) share.

A run folder holds ``model.pt`` (what inference needs), ``trainer.pt``
(everything, for resuming), ``log.csv`` and ``curves.png``. The trainer
checkpoint holds the settings, the agent, the replay buffer, the progress
counters and the random states (torch's and the data sampler's).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.io.run_files import read_csv
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


def json_friendly(value):
    """``value`` (from ``dataclasses.asdict``) with paths as text and tuples as lists, for checkpoints."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_friendly(v) for v in value]
    if isinstance(value, dict):
        return {k: json_friendly(v) for k, v in value.items()}
    return value


@dataclass
class RunFiles:
    """The files of a run folder."""

    out_dir: Path
    model: Path = field(init=False)
    trainer: Path = field(init=False)
    log: Path = field(init=False)
    curves: Path = field(init=False)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.model = self.out_dir / "model.pt"
        self.trainer = self.out_dir / "trainer.pt"
        self.log = self.out_dir / "log.csv"
        self.curves = self.out_dir / "curves.png"

    def prepare(self, resume: bool) -> None:
        """Create the folder; a resume needs ``trainer.pt``, a fresh run must not find one."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume and not self.trainer.exists():
            raise FileNotFoundError(f"nothing to resume: {self.trainer} does not exist")
        if not resume and self.trainer.exists():
            raise FileExistsError(f"{self.trainer} exists; pass resume=True (--resume) or choose another output folder")


def trainer_checkpoint(format: str, config_summary: dict, agent, buffer: ReplayBuffer, progress: Progress,
                       data_generator: torch.Generator) -> dict:
    """What ``trainer.pt`` holds (``restore_trainer`` reads it back)."""
    return {
        "format": format,
        "config": config_summary,
        "agent": agent.state_dict(),
        "buffer": buffer.state_dict(),
        "progress": dataclasses.asdict(progress),
        "rng": {"torch": torch.get_rng_state(), "data": data_generator.get_state()},
    }


def rows_until(log: Path, updates: int) -> list[dict]:
    """The rows of ``log.csv`` up to update ``updates`` (a resume drops those logged after its checkpoint)."""
    return [row for row in read_csv(log) if int(row["update"]) <= updates]


def restore_trainer(saved: dict, agent, buffer: ReplayBuffer, data_generator: torch.Generator) -> Progress:
    """Load a ``trainer_checkpoint`` into ``agent``, ``buffer``, torch's and ``data_generator``'s random
    states; return its progress counters."""
    agent.load_state_dict(saved["agent"])
    buffer.load_state_dict(saved["buffer"])
    progress = Progress(**saved["progress"])
    torch.set_rng_state(saved["rng"]["torch"])
    data_generator.set_state(saved["rng"]["data"])
    return progress


def mean_logs(logs: list[dict[str, float]], keys=None) -> dict[str, float]:
    """Mean of each logged quantity over the iterations that logged it (only ``keys``, when given)."""
    present = {key for entry in logs for key in entry}
    keys = present if keys is None else [key for key in keys if key in present]
    return {key: sum(e[key] for e in logs if key in e) / sum(key in e for e in logs) for key in keys}
