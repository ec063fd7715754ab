"""Files of a training run, written atomically: checkpoints, CSV tables and PNG figures of training curves;
and reading a trained model's checkpoint back.

Shared by ``policies.run_log`` and the RL-NST / RLMiniStyler trainers. Every
writer goes through ``pipeline.io.files.atomic_output``: a crash mid-write
leaves the previous file (or none), never a truncated one.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from pipeline.io.files import atomic_output, save_torch_atomic

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


def load_model_checkpoint(path: PathLike, formats: tuple[str, str], what: str, written_by: str,
                          device: str | torch.device = "cpu", weights_only: bool = True) -> tuple[dict, dict]:
    """``(model_config, state_dict)`` of a trained model from its ``model.pt`` or ``trainer.pt``.

    ``formats``: the ``format`` tags of the two files (model file, trainer file); a model file holds
    ``model_config`` and ``state_dict``, a trainer file ``config["model"]`` and ``agent["model"]``.
    ``what`` (e.g. "RL-NST") and ``written_by`` (the training module) name them in the errors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location=device, weights_only=weights_only)
    kind = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if kind == formats[0]:
        return checkpoint["model_config"], checkpoint["state_dict"]
    if kind == formats[1]:
        return checkpoint["config"]["model"], checkpoint["agent"]["model"]
    raise ValueError(f"{path} is not an {what} checkpoint (model.pt or trainer.pt of {written_by})")


def config_from_dict(cls, raw: Mapping):
    """A config dataclass ``cls`` from its saved ``dataclasses.asdict`` (lists back to tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def save_model_checkpoint(model, path: PathLike, model_format: str, **training_info) -> Path:
    """Write ``model`` (with a dataclass ``config``) as a model file that ``load_model_checkpoint`` reads, atomically:
    ``format``, ``model_config``, ``state_dict``, then ``training_info``."""
    checkpoint = {"format": model_format, "model_config": dataclasses.asdict(model.config),
                  "state_dict": model.state_dict(), **training_info}
    save_torch_atomic(checkpoint, path)
    return Path(path)
