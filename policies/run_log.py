"""A training run's logs: CSV tables and a PNG of the training curves.

``episodes.csv``: one row per training episode (epoch, episode index, clip,
process rank, and the mean over the episode's steps of every scalar the
algorithm logs: reward, baseline_reward, advantage, style, content,
temporal, loss, ...). ``epochs.csv``: one row per epoch (training means,
throughput, and the deterministic evaluation when run). ``curves.png``:
both, plotted. Files are rewritten atomically after each epoch; on resume
rows of epochs after the checkpoint are dropped.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pipeline.io.run_files import panel_grid, read_csv, save_figure_atomic, write_csv

FIRST_COLUMNS = {"episodes": ["epoch", "episode", "clip", "rank", "steps"], "epochs": ["epoch"]}
CURVES = ("reward", "advantage", "style", "content", "temporal", "sigma")


def _moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


class RunLog:
    """Episode and epoch tables of a run folder, kept in memory and rewritten each epoch."""

    def __init__(self, folder: str | os.PathLike, read: bool = False) -> None:
        """``read``: continue the tables already in ``folder`` (resume); otherwise start empty."""
        self.folder = Path(folder)
        self.episodes = read_csv(self.folder / "episodes.csv", parse=True) if read else []
        self.epochs = read_csv(self.folder / "epochs.csv", parse=True) if read else []

    def truncate(self, last_epoch: int) -> None:
        """Forget rows of epochs after ``last_epoch`` (work lost with an interrupted epoch)."""
        self.episodes = [r for r in self.episodes if int(r["epoch"]) <= last_epoch]
        self.epochs = [r for r in self.epochs if int(r["epoch"]) <= last_epoch]

    def add_episodes(self, rows: list[dict]) -> None:
        self.episodes.extend(rows)

    def add_epoch(self, row: dict) -> None:
        self.epochs.append(row)

    def write(self) -> None:
        """Rewrite episodes.csv, epochs.csv and curves.png atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_csv(self.episodes, self.folder / "episodes.csv", first=FIRST_COLUMNS["episodes"])
        write_csv(self.epochs, self.folder / "epochs.csv", first=FIRST_COLUMNS["epochs"])
        self.plot(self.folder / "curves.png")

    def plot(self, path: Path) -> None:
        """Training curves: per-episode values (faint), their moving average, and evaluation points."""
        names = [n for n in CURVES if any(n in r and r[n] != "" for r in self.episodes)]
        if not names:
            return
        fig, axes = panel_grid(len(names), panel_size=(4.2, 3.2))
        x = [float(r["episode"]) for r in self.episodes]
        for ax, name in zip(axes, names):
            values = [float(r[name]) if r.get(name, "") != "" else math.nan for r in self.episodes]
            ax.plot(x, values, color="tab:blue", alpha=0.3, linewidth=0.8)
            ax.plot(x, _moving_average(values, 10), color="tab:blue", label="train (moving avg.)")
            baseline = [float(r[f"baseline_{name}"]) for r in self.episodes if r.get(f"baseline_{name}", "") != ""]
            if len(baseline) == len(x) and name != "advantage":
                ax.plot(x, _moving_average(baseline, 10), color="grey", linestyle="--", label="baseline")
            if name in ("reward", "advantage") and self.epochs:
                done = [r for r in self.epochs if r.get(f"eval_{name}", "") != ""]
                if done:
                    ax.plot([float(r["last_episode"]) for r in done], [float(r[f"eval_{name}"]) for r in done],
                            "o-", color="tab:orange", label="eval (mean action)")
            if name == "advantage":
                ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
            ax.set_title(name)
            ax.set_xlabel("episode")
            ax.legend(fontsize=7)
        save_figure_atomic(fig, path, dpi=90)
