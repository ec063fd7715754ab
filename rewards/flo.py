"""Reader for Middlebury ``.flo`` optical flow files (used by MPI-Sintel ground truth).

Layout, little-endian: float32 magic 202021.25, int32 width, int32 height,
then height x width x 2 float32 (u = +x right, v = +y down), row-major.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FLO_MAGIC = 202021.25
_HEADER_BYTES = 12


class FloReadError(ValueError):
    """A file is not a well-formed Middlebury .flo file."""


def read_flo(path: str | os.PathLike) -> Tensor:
    """Read a .flo file into a float32 tensor (2,H,W): channel 0 = u (x), 1 = v (y)."""
    data = Path(path).read_bytes()
    if len(data) < _HEADER_BYTES:
        raise FloReadError(f"{path}: too short for a .flo file ({len(data)} bytes)")
    magic = float(np.frombuffer(data, "<f4", 1, 0)[0])
    if magic != FLO_MAGIC:
        raise FloReadError(f"{path}: not a Middlebury .flo file (magic {magic!r}, expected {FLO_MAGIC})")
    width, height = (int(v) for v in np.frombuffer(data, "<i4", 2, 4))
    expected = _HEADER_BYTES + 4 * 2 * width * height if width > 0 and height > 0 else None
    if expected != len(data):
        raise FloReadError(
            f"{path}: header says {width}x{height} but the file has {len(data) - _HEADER_BYTES} bytes of flow data"
        )
    flow = np.frombuffer(data, "<f4", 2 * width * height, _HEADER_BYTES).reshape(height, width, 2)
    return torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1)))
