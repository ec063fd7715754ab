"""The save/load idiom of every trained model (diffusers-style model folders).

A model folder holds ``config.json`` (``format``: the model family's tag,
``kind``: the class's registered kind, ``module``: the module defining it,
``config``: ``dataclasses.asdict`` of its dataclass config, plus any extra
JSON such as ``training`` settings) and ``model.safetensors`` (the state
dict). Both are written atomically. A training run folder
(``pipeline.io.run_files.RunFolder``) keeps its last model in ``model/`` and
its best one in ``best/``; ``resolve_model_folder`` takes either kind of folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from pipeline.io.files import atomic_output, new_file_mode, write_json

PathLike = str | os.PathLike
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
RUN_MODEL_FOLDERS = ("best", "model")  # what a run folder resolves to, first found
RESERVED_KEYS = ("format", "kind", "module", "config")

M = TypeVar("M", bound="PretrainedMixin")


@dataclass
class SavedModel:
    """What a model folder holds: ``config.json``'s fields (``extra``: its keys beyond ``RESERVED_KEYS``)
    and the state dict (CPU tensors)."""

    folder: Path
    format: str
    kind: str
    module: str
    config: dict[str, Any]
    extra: dict[str, Any]
    state: dict[str, Tensor]


def config_from_dict(cls: type, raw: Mapping[str, Any]) -> Any:
    """A config dataclass ``cls`` from its saved ``dataclasses.asdict`` (JSON lists back to tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def save_model_folder(folder: PathLike, format: str, kind: str, module: str, config: Any,
                      state: Mapping[str, Tensor], **extra: Any) -> Path:
    """Write a model folder (created if needed): ``config.json`` and ``model.safetensors``, each atomically.

    ``config``: a dataclass instance; ``extra``: JSON-serialisable values stored beside it (not ``RESERVED_KEYS``).
    """
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra model info may not use the reserved keys {clash}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_output(folder / WEIGHTS_FILE, ".safetensors") as tmp:
        save_file(tensors, str(tmp))
        os.chmod(tmp, new_file_mode())  # safetensors creates its files readable by their owner only
    write_json(folder / CONFIG_FILE, {"format": format, "kind": kind, "module": module,
                                      "config": dataclasses.asdict(config), **extra})
    return folder


def is_model_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding ``config.json`` and ``model.safetensors``."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def resolve_model_folder(source: PathLike) -> Path:
    """The model folder for ``source``: the folder itself, or a run folder's ``best/``, else its ``model/``."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"model folder {source} does not exist")
    if not source.is_dir():
        raise ValueError(f"{source} is a file; a model is a folder holding {CONFIG_FILE} and {WEIGHTS_FILE}")
    if is_model_folder(source):
        return source
    for name in RUN_MODEL_FOLDERS:
        if is_model_folder(source / name):
            return source / name
    raise FileNotFoundError(f"{source} holds no model: neither {CONFIG_FILE} + {WEIGHTS_FILE} nor a run's "
                            f"{' or '.join(f'{name}/' for name in RUN_MODEL_FOLDERS)}")


def read_model_info(source: PathLike, format: str) -> tuple[Path, dict[str, Any]]:
    """``(model folder, config.json)`` of ``source`` (``resolve_model_folder``), refused unless of ``format``."""
    folder = resolve_model_folder(source)
    try:
        info = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{folder / CONFIG_FILE} is not a readable JSON file ({error})") from error
    if not isinstance(info, dict) or any(key not in info for key in RESERVED_KEYS):
        raise ValueError(f"{folder / CONFIG_FILE} is not a model config (needs {', '.join(RESERVED_KEYS)})")
    if info["format"] != format:
        raise ValueError(f"{folder} holds a {info['format']!r} model of kind {info['kind']!r}, not a {format!r} one")
    return folder, info


def read_model_folder(source: PathLike, format: str) -> SavedModel:
    """Everything in the model folder of ``source``; ValueError for another ``format`` or a corrupt file."""
    folder, info = read_model_info(source, format)
    try:
        state = load_file(str(folder / WEIGHTS_FILE), device="cpu")
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file ({error})") from error
    extra = {k: v for k, v in info.items() if k not in RESERVED_KEYS}
    return SavedModel(folder, info["format"], info["kind"], info["module"], info["config"], extra, state)


def load_weights(model: nn.Module, saved: SavedModel) -> None:
    """``model.load_state_dict(saved.state)``; a ValueError naming the folder when the weights do not fit."""
    try:
        model.load_state_dict(saved.state)
    except RuntimeError as error:
        raise ValueError(f"the weights in {saved.folder / WEIGHTS_FILE} do not fit its {CONFIG_FILE} ({error})") from error


class PretrainedMixin:
    """``save_pretrained``/``from_pretrained`` for an ``nn.Module`` with a dataclass ``config``.

    Classes set ``pretrained_format`` (the family's tag in ``config.json``),
    ``kind`` and ``config_class`` and take the config as their only
    constructor argument. ``build_pretrained`` may be overridden (e.g. to
    dispatch on the saved kind through a registry).
    """

    pretrained_format: ClassVar[str]
    kind: ClassVar[str]
    config_class: ClassVar[type]
    config: Any

    def save_pretrained(self, folder: PathLike, **extra: Any) -> Path:
        """Write this model as a model folder (``extra``: JSON values stored in its config.json); returns it."""
        return save_model_folder(folder, self.pretrained_format, self.kind, type(self).__module__, self.config,
                                 self.state_dict(), **extra)

    @classmethod
    def build_pretrained(cls: type[M], saved: SavedModel) -> M:
        """An untrained model of the saved config; refuses a folder of another kind."""
        kind = getattr(cls, "kind", None)
        if kind is not None and saved.kind != kind:
            raise ValueError(f"{saved.folder} holds a model of kind {saved.kind!r}, not {kind!r}")
        return cls(config_from_dict(cls.config_class, saved.config))

    @classmethod
    def from_pretrained(cls: type[M], source: PathLike, device: str | torch.device = "cpu") -> M:
        """The model saved in ``source`` (a model folder or a run folder), on ``device``, in eval mode."""
        saved = read_model_folder(source, cls.pretrained_format)
        model = cls.build_pretrained(saved)
        load_weights(model, saved)
        return model.to(device).eval()


def saved_training_settings(source: PathLike, format: str) -> dict[str, Any]:
    """The ``training`` settings stored in the config.json of ``source``'s model folder (no weights are read);
    a ValueError when the model was saved without them."""
    folder, info = read_model_info(source, format)
    if not isinstance(info.get("training"), dict):
        raise ValueError(f"{folder / CONFIG_FILE} holds no training settings (the model was not saved by a trainer)")
    return info["training"]
