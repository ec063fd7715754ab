"""Files: atomic writes, content digests, and where the shared data lives.

Every file the project writes goes through ``atomic_output`` (a temporary
file in the same folder, then ``os.replace``): a crash or a kill mid-write
leaves the previous file (or none), never a truncated one. See
``docs/architecture.md`` for where this module sits.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

PathLike = str | os.PathLike

REPO = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """The shared data folder ``$VSTYLE_SHARED/data`` (default ``../shared/data`` beside the repository):
    ``videos/train`` (training clips), ``videos/test`` (evaluation only), ``styles``, ``photos``, ``flow_gt``."""
    return Path(os.environ.get("VSTYLE_SHARED", REPO.parent / "shared")) / "data"


def temporary_name(path: PathLike, suffix: str = "") -> Path:
    """A fresh hidden name beside ``path`` for writing it: ``.NAME.<pid>-<hex>.tmp<suffix>``. The process id
    lets ``sweep_stale_temporaries`` tell a dead writer's leftovers from a live one's."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp{suffix}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temporaries(path: PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` left by writers that died (killed with SIGKILL, power loss): files or
    folders named by ``temporary_name`` whose process is gone. Returns what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.glob(f".{glob.escape(path.name)}.*-*.tmp*"):
        pid = entry.name[len(path.name) + 2 :].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_output(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file name next to ``path``; move that file onto ``path`` on success.

    On an exception the temporary file is removed and an existing ``path`` is
    left untouched. ``suffix`` lets writers that look at the extension see one.
    Stale temporaries of ``path`` from dead writers are swept first.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    sweep_stale_temporaries(path)
    # a fresh name, created by the writer itself so it gets the usual permissions
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def new_file_mode() -> int:
    """The permission bits a file created with ``open`` gets under this process's umask (0o644 under 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_torch_atomic(obj: object, path: PathLike) -> None:
    """``torch.save(obj, path)``, atomically."""
    with atomic_output(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)


def write_json(path: PathLike, data: Any, overwrite: bool = True) -> Path:
    """Write ``data`` as indented JSON atomically; ``overwrite=False`` refuses an existing file (FileExistsError).

    NaN or infinite numbers are refused (ValueError): a config or report never holds them.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
    text = json.dumps(data, indent=2, allow_nan=False)
    with atomic_output(path, ".json") as tmp:
        tmp.write_text(text + "\n")
    return path


def tensor_digest(tensor: Tensor) -> str:
    """sha256 of a tensor's shape, dtype and bytes: a key for caches."""
    data = tensor.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256(str(tuple(data.shape)).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()
