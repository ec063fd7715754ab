"""Files of a training run, written atomically: the run-folder layout, checkpoints, CSV tables and PNG
figures of training curves.

``RunFolder`` is the layout every trainer (``policies.train``, the RL-NST /
RLMiniStyler trainers of ``baselines.training``) writes. Every writer goes
through ``pipeline.io.files.atomic_output``: a crash mid-write leaves the
previous file (or none), never a truncated one.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.io.files import atomic_output, save_torch_atomic, write_json

PathLike = str | os.PathLike


def write_csv(rows: Sequence[Mapping], path: PathLike, columns: Sequence[str] | None = None,
              first: Sequence[str] = ()) -> None:
    """Write ``rows`` as a CSV table, atomically.

    ``columns``: exactly these columns (cells of other keys are dropped, missing cells are empty).
    None: ``first``, then every other key of the rows in sorted order.
    """
    if columns is None:
        columns = list(first) + sorted({k for row in rows for k in row} - set(first))
    with atomic_output(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def parse_cell(value: str) -> int | float | str:
    """A CSV cell back as the int, float or text it was written from."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def read_csv(path: PathLike, parse: bool = False) -> list[dict]:
    """Rows of a CSV table (empty when the file does not exist); ``parse``: cells via ``parse_cell``, else text."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if parse:
        rows = [{key: parse_cell(value) for key, value in row.items()} for row in rows]
    return rows


def panel_grid(count: int, cols: int = 3, panel_size: tuple[float, float] = (4.0, 3.0)):
    """A matplotlib figure with ``count`` panels on a grid ``cols`` wide (Agg backend): ``(fig, axes)``, the
    ``count`` axes to draw on in row order; the grid's other cells are switched off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid_rows = math.ceil(count / cols)
    fig, axes = plt.subplots(grid_rows, cols, figsize=(panel_size[0] * cols, panel_size[1] * grid_rows),
                             squeeze=False)
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    return fig, list(axes.flat)[:count]


def save_figure_atomic(fig, path: PathLike, dpi: int = 80) -> None:
    """Lay out ``fig``, save it as a PNG atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def plot_curves(rows: Sequence[Mapping], path: PathLike, panels: Mapping[str, Sequence[str]],
                x_key: str = "update", title_size: float | None = 9) -> None:
    """One panel per title in ``panels`` (its columns as lines against ``x_key``), as a PNG; panels without
    values are skipped and nothing is written when none has any. A legend where a panel has several lines;
    ``title_size`` None: matplotlib's default title size."""

    def series(key: str) -> list[tuple[float, float]]:
        return [(float(r[x_key]), float(r[key])) for r in rows if r.get(key) not in (None, "")]

    shown = [(title, keys) for title, keys in panels.items() if any(series(k) for k in keys)]
    if not shown:
        return
    fig, axes = panel_grid(len(shown))
    for ax, (title, keys) in zip(axes, shown):
        for key in keys:
            if series(key):
                ax.plot(*zip(*series(key)), label=key)
        if len(keys) > 1:
            ax.legend(fontsize=7)
        ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
        ax.set_xlabel(x_key)
    save_figure_atomic(fig, path, dpi=80)


class RunFolder:
    """The layout of a training run's folder, shared by every trainer.

    - ``config.json``: the training settings;
    - ``checkpoint.pt``: everything needed to resume (networks, optimisers, counters, random states), tagged
      with the trainer's ``checkpoint_format``;
    - ``model/``: the last model, ``best/``: the best one where the trainer keeps one (model folders of
      ``pipeline.io.pretrained``);
    - CSV logs (``table(name)``) and ``curves.png``.
    """

    def __init__(self, root: PathLike, checkpoint_format: str) -> None:
        self.root = Path(root)
        self.checkpoint_format = checkpoint_format
        self.config = self.root / "config.json"
        self.checkpoint = self.root / "checkpoint.pt"
        self.model = self.root / "model"
        self.best = self.root / "best"
        self.curves = self.root / "curves.png"

    def table(self, name: str) -> Path:
        """The CSV log ``name``.csv."""
        return self.root / f"{name}.csv"

    def prepare(self, resume: bool, settings: Mapping[str, Any] | None = None,
                same_on_resume: Sequence[str] = ()) -> None:
        """Create the folder. A fresh run must not find a checkpoint (FileExistsError); a resume needs one
        (FileNotFoundError) and the keys ``same_on_resume`` of ``settings`` as saved in config.json (ValueError)."""
        if resume:
            if not self.checkpoint.is_file():
                raise FileNotFoundError(f"cannot resume: {self.checkpoint} does not exist")
            saved, new = self.read_config(), settings or {}
            changed = [k for k in same_on_resume if json.dumps(saved.get(k)) != json.dumps(new.get(k))]
            if changed:
                raise ValueError(
                    f"cannot resume {self.root}: settings differ from the run's config.json: "
                    + ", ".join(f"{k} ({saved.get(k)!r} -> {new.get(k)!r})" for k in changed)
                )
        elif self.checkpoint.is_file():
            raise FileExistsError(f"{self.root} already holds a run ({self.checkpoint.name}); pass --resume "
                                  "(resume=True) to continue it or choose another output folder")
        self.root.mkdir(parents=True, exist_ok=True)

    def write_config(self, settings: Mapping[str, Any]) -> None:
        """Write the training settings (JSON-serialisable) as config.json, atomically."""
        write_json(self.config, dict(settings))

    def read_config(self) -> dict[str, Any]:
        """The training settings of config.json; a ValueError when missing or unreadable."""
        try:
            return json.loads(self.config.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read the run's settings {self.config} ({error})") from error

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` (plus the ``format`` tag) as checkpoint.pt, atomically."""
        save_torch_atomic({"format": self.checkpoint_format, **state}, self.checkpoint)

    def load_checkpoint(self, device: str | torch.device = "cpu", weights_only: bool = True) -> dict[str, Any]:
        """What ``save_checkpoint`` wrote, tensors on ``device``; a ValueError for a corrupt file or another
        trainer's checkpoint."""
        if not self.checkpoint.is_file():
            raise FileNotFoundError(f"cannot resume: {self.checkpoint} does not exist")
        try:
            state = torch.load(self.checkpoint, map_location=device, weights_only=weights_only)
        except Exception as error:  # torch raises many kinds (pickle, zip, EOF, runtime) for a damaged file
            reason = (str(error).splitlines() or [""])[0]
            raise ValueError(f"{self.checkpoint} is corrupt or not a checkpoint ({type(error).__name__}: {reason}); "
                             "restore it or start a fresh run") from error
        found = state.get("format") if isinstance(state, dict) else None
        if found != self.checkpoint_format:
            raise ValueError(f"{self.checkpoint} is a {found!r} checkpoint, not a {self.checkpoint_format!r} one")
        return state
