"""Optical flow with RAFT (Teed & Deng, ECCV 2020) through torchvision, and the estimators by name.

``RAFTFlow`` wraps ``torchvision.models.optical_flow.raft_small`` with the
project's shared weights (princeton-vl RAFT-small, FlyingChairs+Things) and
takes frames in the project's convention: (N,3,H,W) RGB in [0,1], any size.
Flows follow ``rewards.warp``'s convention: (N,2,H,W) pixels, ch0 = x right,
ch1 = y down, ``flow_fwd[i]`` = frame i -> i+1, ``flow_bwd[i]`` = i+1 -> i.
``build_flow_model(name, device)`` gives RAFT or an OpenCV estimator
(``rewards.classical_flow``) by the name a configuration stores (``FLOW_ESTIMATORS``).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.optical_flow import raft_large, raft_small

from pipeline.io import weights
from pipeline.io.files import tensor_digest
from rewards.classical_flow import ClassicalFlow
from rewards.warp import occlusion_mask, resize_flow

RAFT_MIN_SIZE = 128  # torchvision's RAFT needs both sides >= 128 px
RAFT_MULTIPLE = 8  # and both sides divisible by 8
RAFT_WEIGHTS = {"small": ("raft_small", raft_small), "large": ("raft_large", raft_large)}


@dataclass(frozen=True)
class RAFTConfig:
    """``size``: "small" or "large"; ``iterations``: recurrent flow updates."""

    size: str = "small"
    iterations: int = 12


class RAFTFlow(nn.Module):
    """Frozen RAFT: ``forward(img1, img2)`` -> flow from img1 to img2 (N,2,H,W), no gradients.

    Inputs (N,3,H,W) in [0,1] are mapped to [-1,1] inside. Frames with a side
    under 128 px are upsampled for RAFT (and the flow scaled back down);
    sides are replicate-padded to multiples of 8 and the flow cropped back.
    ``size="large"`` loads torchvision's RAFT-large (C_T_SKHT_V2) through the
    weight lookup: from ``VSTYLE_WEIGHTS``, the cache, or a download (no offline
    copy ships with the project).
    """

    def __init__(
        self, size: str = "small", iterations: int = 12, weights_path: str | os.PathLike | None = None
    ) -> None:
        super().__init__()
        if size not in RAFT_WEIGHTS:
            raise ValueError(f"unknown RAFT size {size!r}; choose one of {', '.join(RAFT_WEIGHTS)}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.config = RAFTConfig(size, iterations)
        weight_name, builder = RAFT_WEIGHTS[size]
        self.raft = builder(weights=None, progress=False)
        self.raft.load_state_dict(weights.load_state_dict(weight_name, weights_path), strict=True)
        self.raft.requires_grad_(False)
        self.raft.eval()

    @property
    def name(self) -> str:
        """Which estimator this is, as ``ClassicalFlow.name`` says it (for reports): ``raft-small`` or ``raft-large``."""
        return f"raft-{self.config.size}"

    def train(self, mode: bool = True) -> RAFTFlow:
        """RAFT stays in eval mode (frozen BatchNorm statistics in RAFT-large)."""
        super().train(mode)
        self.raft.eval()
        return self

    @torch.no_grad()
    def forward(self, img1: Tensor, img2: Tensor) -> Tensor:
        """Flow (N,2,H,W) from ``img1`` to ``img2`` (each (N,3,H,W) in [0,1]), on img1's device."""
        if img1.dim() != 4 or img1.shape[1] != 3 or img1.shape != img2.shape:
            raise ValueError(
                "img1 and img2 must both be (N,3,H,W) of the same shape, "
                f"got {tuple(img1.shape)} and {tuple(img2.shape)}"
            )
        param = next(self.raft.parameters())
        height, width = img1.shape[-2:]
        scale = max(1.0, RAFT_MIN_SIZE / min(height, width))
        run_h, run_w = math.ceil(height * scale), math.ceil(width * scale)
        pad_h, pad_w = -run_h % RAFT_MULTIPLE, -run_w % RAFT_MULTIPLE

        def prepare(image: Tensor) -> Tensor:
            image = image.to(device=param.device, dtype=param.dtype) * 2.0 - 1.0
            if (run_h, run_w) != (height, width):
                image = F.interpolate(image, size=(run_h, run_w), mode="bilinear", align_corners=False)
            return F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")

        flow = self.raft(prepare(img1), prepare(img2), num_flow_updates=self.config.iterations)[-1]
        flow = resize_flow(flow[..., :run_h, :run_w], (height, width))
        return flow.to(img1.device)


@functools.lru_cache(maxsize=None)
def _cached_model(device: str) -> RAFTFlow:
    return RAFTFlow().to(device)


def default_flow_model(device: str | torch.device = "cpu") -> RAFTFlow:
    """The shared RAFT-small on ``device``, loaded once per process and device."""
    return _cached_model(str(torch.device(device)))


# Content-flow estimators by name (what a configuration stores): RAFT-small, the shared model; OpenCV DIS at a
# preset ("dis" = DIS_PRESET) or Farneback, on the CPU. DIS "medium" is the fast default: at 256 px on Sintel
# its end-point error on visible pixels (0.19 / 0.55 px on alley_1 / cave_2) was below RAFT-small's (0.30 /
# 0.64) for about 1/30 of RAFT's time (~12 ms a frame pair, both directions, against ~260 ms on the CPU);
# "fast" and "ultrafast" save ~5 ms a pair and double the error (tests/rewards/test_fast_flow.py).
DIS_PRESET = "medium"
FLOW_ESTIMATORS = ("raft", "dis", "dis-fast", "dis-ultrafast", "farneback")


def check_flow_estimator(name: str, what: str = "flow estimator") -> str:
    """``name`` if it is one of ``FLOW_ESTIMATORS``, else a ValueError naming ``what`` and listing the choices."""
    if name not in FLOW_ESTIMATORS:
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(FLOW_ESTIMATORS)}")
    return name


def build_flow_model(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """The flow estimator ``name`` (one of ``FLOW_ESTIMATORS``) with ``RAFTFlow``'s call: ``model(img1, img2)``
    -> flow (N,2,H,W) from img1 to img2, on img1's device. ``raft`` is the shared ``default_flow_model(device)``;
    the OpenCV ones (``rewards.classical_flow.ClassicalFlow``) hold no parameters and compute on the CPU
    whatever ``device``. An unknown name is a ValueError that lists the choices."""
    check_flow_estimator(name)
    if name == "raft":
        return default_flow_model(device)
    if name == "farneback":
        return ClassicalFlow("farneback")
    _, _, preset = name.partition("-")
    return ClassicalFlow("dis", preset or DIS_PRESET)


@dataclass
class ClipFlows:
    """Flows and reliability masks of a clip of T frames (T-1 consecutive pairs).

    flow_fwd[i] (T-1,2,H,W): frame i -> i+1; flow_bwd[i]: frame i+1 -> i.
    mask_fwd[i] (T-1,1,H,W): 1 where pixels of frame i are reliable under flow_fwd[i];
    mask_bwd[i]: 1 where pixels of frame i+1 are reliable under flow_bwd[i].
    Indexing with an int or slice selects pairs (``flows[t-1:t]`` = pair t-1, t).
    """

    flow_fwd: Tensor
    flow_bwd: Tensor
    mask_fwd: Tensor
    mask_bwd: Tensor

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.flow_fwd, self.flow_bwd, self.mask_fwd, self.mask_bwd

    def __len__(self) -> int:
        return self.flow_fwd.shape[0]

    def __getitem__(self, index: int | slice) -> ClipFlows:
        if isinstance(index, int):
            return ClipFlows(*(t[index].unsqueeze(0) for t in self._tensors()))
        return ClipFlows(*(t[index] for t in self._tensors()))

    def to(self, device: str | torch.device) -> ClipFlows:
        return ClipFlows(*(t.to(device) for t in self._tensors()))


def _check_clip(frames: Tensor) -> None:
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape (T,3,H,W), got {tuple(frames.shape)}")
    if frames.shape[0] < 2:
        raise ValueError(f"need at least 2 frames to estimate flow, got {frames.shape[0]}")


def estimate_flows(frames: Tensor, model: nn.Module | None = None, batch_size: int = 8) -> tuple[Tensor, Tensor]:
    """Forward and backward flows (each (T-1,2,H,W)) of ``frames`` (T,3,H,W) in [0,1].

    ``batch_size`` consecutive frame pairs are processed per RAFT call, both
    directions together (so a call sees 2 * batch_size image pairs); memory
    is bounded by one chunk. ``model``: any estimator with ``RAFTFlow``'s call
    (``build_flow_model``); it defaults to ``default_flow_model(frames.device)``.
    """
    _check_clip(frames)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = model if model is not None else default_flow_model(frames.device)
    pairs = frames.shape[0] - 1
    forward, backward = [], []
    for start in range(0, pairs, batch_size):
        stop = min(start + batch_size, pairs)
        first, second = frames[start:stop], frames[start + 1 : stop + 1]
        flow = model(torch.cat((first, second)), torch.cat((second, first)))
        forward.append(flow[: stop - start])
        backward.append(flow[stop - start :])
    return torch.cat(forward), torch.cat(backward)


def flows_and_masks(
    frames: Tensor, model: nn.Module | None = None, motion_boundaries: bool = False, batch_size: int = 8
) -> ClipFlows:
    """Flows of ``frames`` (T,3,H,W) in [0,1] and their forward-backward occlusion masks."""
    flow_fwd, flow_bwd = estimate_flows(frames, model, batch_size)
    return ClipFlows(
        flow_fwd,
        flow_bwd,
        occlusion_mask(flow_fwd, flow_bwd, motion_boundaries),
        occlusion_mask(flow_bwd, flow_fwd, motion_boundaries),
    )


class MemoFlow(torch.nn.Module):
    """A flow model that remembers the flow of every image pair it has seen (until ``clear``).

    The content flows of a clip are needed by every flow-observation policy
    and by the evaluator; with this wrapper RAFT runs once per pair and clip.
    Pairs are keyed by the digests of both images.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self._flows: dict[tuple[str, str], Tensor] = {}

    def clear(self) -> None:
        self._flows.clear()

    @torch.no_grad()
    def forward(self, img1: Tensor, img2: Tensor) -> Tensor:
        """Flow (N,2,H,W) from ``img1`` to ``img2`` (N,3,H,W), computing only the pairs not seen before."""
        keys = [(tensor_digest(a), tensor_digest(b)) for a, b in zip(img1, img2)]
        missing = sorted({i for i, key in enumerate(keys) if key not in self._flows})
        if missing:
            index = torch.tensor(missing, device=img1.device)
            for i, flow in zip(missing, self.model(img1.index_select(0, index), img2.index_select(0, index))):
                self._flows[keys[i]] = flow
        return torch.stack([self._flows[key] for key in keys]).to(img1.device)
