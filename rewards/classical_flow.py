"""Classical optical flow with OpenCV: an estimator independent of RAFT for the evaluation.

A policy trained against a RAFT-based temporal reward could learn to exploit
RAFT's particular errors; scoring the warping error also with a flow from a
different family guards against that. ``ClassicalFlow`` uses OpenCV's DIS
(Kroeger et al., "Fast Optical Flow using Dense Inverse Search", ECCV 2016),
or Farneback's polynomial-expansion flow ("Two-Frame Motion Estimation Based
on Polynomial Expansion", SCIA 2003) where DIS is missing from the OpenCV
build. Both run on 8-bit grayscale frames on the CPU.

Same interface and convention as ``rewards.flow.RAFTFlow``:
``forward(img1, img2)`` with (N,3,H,W) RGB in [0,1] returns the flow from
img1 to img2, (N,2,H,W) in pixels, ch0 = x right, ch1 = y down, so that
``rewards.warp.backward_warp(img2, flow)`` aligns img2 to img1. It can be
passed as ``model`` to ``rewards.flow.flows_and_masks`` and as
``flow_model`` to ``rewards.temporal.warping_error``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from pipeline.io.images import to_uint8

METHODS = ("auto", "dis", "farneback")
DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}  # cv2.DISOPTICAL_FLOW_PRESET_*
# Farneback settings of OpenCV's samples (pyramid scale 0.5, 3 levels, 15 px window,
# 3 iterations, poly_n 5, poly_sigma 1.2)
FARNEBACK_ARGS = (0.5, 3, 15, 3, 5, 1.2, 0)


def resolve_method(method: str) -> str:
    """``dis`` or ``farneback``: ``auto`` picks DIS when this OpenCV build has it."""
    if method not in METHODS:
        raise ValueError(f"unknown classical flow method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "auto":
        return "dis" if hasattr(cv2, "DISOpticalFlow_create") else "farneback"
    if method == "dis" and not hasattr(cv2, "DISOpticalFlow_create"):
        raise ValueError("this OpenCV build has no DIS optical flow; use method='farneback'")
    return method


class ClassicalFlow(nn.Module):
    """OpenCV DIS (default preset ``medium``) or Farneback flow; no parameters, no gradients.

    ``name`` says which estimator ran (it goes into metric reports).
    """

    def __init__(self, method: str = "auto", preset: str = "medium") -> None:
        super().__init__()
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose one of {', '.join(DIS_PRESETS)}")
        self.method = resolve_method(method)
        self.preset = preset

    @property
    def name(self) -> str:
        return f"opencv-dis-{self.preset}" if self.method == "dis" else "opencv-farneback"

    def _pair(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Flow (H,W,2) float32 from gray uint8 ``first`` to ``second``."""
        if self.method == "dis":
            return cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset]).calc(first, second, None)
        return cv2.calcOpticalFlowFarneback(first, second, None, *FARNEBACK_ARGS)

    @torch.no_grad()
    def forward(self, img1: Tensor, img2: Tensor) -> Tensor:
        """Flow (N,2,H,W) from ``img1`` to ``img2`` (each (N,3,H,W) in [0,1]), float32 on img1's device."""
        if img1.dim() != 4 or img1.shape[1] != 3 or img1.shape != img2.shape:
            raise ValueError(
                f"img1 and img2 must both be (N,3,H,W) of the same shape, got {tuple(img1.shape)} and {tuple(img2.shape)}"
            )
        gray1 = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in to_uint8(img1)]
        gray2 = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in to_uint8(img2)]
        flows = np.stack([self._pair(a, b) for a, b in zip(gray1, gray2)])
        return torch.from_numpy(flows).permute(0, 3, 1, 2).contiguous().to(img1.device)
