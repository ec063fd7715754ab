"""Helpers shared by several test modules (plain functions; shared fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

# REINFORCE options whose untrained policy (gate 0) is exactly the frame-by-frame baseline (the default agent
# starts at a pixel-warp flow-blend instead)
FROM_BASELINE = {"head": "residual", "flow_warp": "latent"}


def load_rgb(path: Path) -> torch.Tensor:
    """(1,3,H,W) float in [0,1]."""
    array = np.array(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def shifted_crops(image: torch.Tensor, top: int, left: int, size: tuple[int, int], shifts: list[tuple[int, int]]):
    """Crops of ``image`` such that crop k equals crop 0 moved by shifts[k] = (dx, dy): flow 0->k = +shift."""
    height, width = size
    crops = [image[..., top - dy : top - dy + height, left - dx : left - dx + width] for dx, dy in shifts]
    return torch.cat(crops)
