"""Step-wise RLMiniStyler stylization of frames with any style image, and loading trained models.

``steps`` sets the degree of stylization: each step feeds the moving image
back through the model (step 1 starts from the frame itself). Frames are
stylized independently (the model has no temporal state), in batches. The
style image is encoded once per call; by default it is first resized so its
shorter side equals the frames' shorter side, the scale relation of training
(content and style crops of the same size, each taken after resizing the
image's shorter side to that size). Actions are the Gaussian means unless
``deterministic=False``.

A trained model is a model folder (``pipeline.io.pretrained``) written by
``baselines.rlministyler.train`` as its run folder's ``model/``; ``load_model``
and ``training_settings`` take that folder or the run folder.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.rlministyler.losses import MiniStylerObjective
from baselines.rlministyler.models import RLMiniStyler

# RL-NST's padding helper (the same rule applies: multiples of 4, at least 8 px).
from baselines.rlnst.inference import pad_to_multiple
from pipeline.io.pretrained import saved_training_settings


def load_model(source: str | os.PathLike, device: str | torch.device = "cpu") -> RLMiniStyler:
    """The RLMiniStyler model (eval mode, on ``device``) of a model folder or a run folder of
    ``baselines.rlministyler.train``."""
    return RLMiniStyler.from_pretrained(source, device)


def training_settings(source: str | os.PathLike) -> dict[str, Any]:
    """How the model of ``source`` (model or run folder) was trained: ``styles`` (paths of the training style
    images), ``held_out_styles`` (names), ``size``, ``episode_steps`` (refinement steps per episode), ``updates``."""
    return saved_training_settings(source, RLMiniStyler.pretrained_format)


def resize_style(style_image: Tensor, shorter_side: int) -> Tensor:
    """``style_image`` (1,3,H,W) resized (bilinear, antialiased) so that min(H, W) == ``shorter_side``."""
    height, width = style_image.shape[-2:]
    scale = shorter_side / min(height, width)
    size = (max(shorter_side, round(height * scale)), max(shorter_side, round(width * scale)))
    if size == (height, width):
        return style_image
    return F.interpolate(style_image, size=size, mode="bilinear", align_corners=False, antialias=scale < 1).clamp(0, 1)


@torch.no_grad()
def stylize_frames(
    model: RLMiniStyler,
    frames: Tensor,
    style_image: Tensor,
    steps: int,
    return_steps: bool = False,
    style_size: int | None = None,
    deterministic: bool = True,
    batch_size: int = 8,
) -> Tensor:
    """Stylize ``frames`` (T,3,H,W) in [0,1], any size, with ``style_image`` (1,3,H,W) in [0,1] in ``steps`` steps.

    Returns (T,3,H,W) in [0,1], or with ``return_steps`` every step's output
    (steps,T,3,H,W), index k-1 = after k steps; same size and device as
    ``frames``. ``style_size``: shorter side the style image is resized to
    (None: the frames' shorter side, at least 16 px).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T,3,H,W) in [0,1], got {tuple(frames.shape)}")
    if style_image.dim() != 4 or style_image.shape[:2] != (1, 3):
        raise ValueError(f"style_image must be one image (1,3,H,W) in [0,1], got {tuple(style_image.shape)}")
    height, width = frames.shape[-2:]
    device = next(model.parameters()).device
    style = style_image.to(device=device, dtype=torch.float32)
    code = model.style_code(resize_style(style, style_size or max(16, min(height, width))))
    padded = pad_to_multiple(frames.to(device=device, dtype=torch.float32))
    chunks = []
    for batch in padded.split(batch_size):
        outputs, state = [], batch
        for _ in range(steps):
            state = model.step(state, code, deterministic=deterministic).image
            outputs.append(state)
        chunks.append(torch.stack(outputs))
    result = torch.cat(chunks, dim=1)[..., :height, :width].to(frames.device)
    return result if return_steps else result[-1]


@torch.no_grad()
def step_losses(
    model: RLMiniStyler, images: Tensor, style_image: Tensor, steps: tuple[int, ...] = (1, 5, 10),
    objective: MiniStylerObjective | None = None,
) -> dict[int, dict[str, float]]:
    """How the stylization evolves step by step: ``{k: {"style": s, "content": c}}`` after each of ``steps``.

    Mean over ``images`` (N,3,H,W) in [0,1] of the training objective's terms
    (``baselines.rlministyler.losses``): the style term against ``style_image``
    (1,3,H,W), resized as ``stylize_frames`` does, and the content term, the
    relu4_1 MSE to the ORIGINAL images (not to the previous step). Step 0 is
    the images themselves.
    """
    objective = (objective or MiniStylerObjective()).to(images.device)
    outputs = stylize_frames(model, images, style_image, max(steps), return_steps=True)
    style_features = objective.features(resize_style(style_image.to(images.device), max(16, min(images.shape[-2:]))))
    original = objective.features(images)
    result = {}
    for k in (0, *steps):
        features = objective.features(images if k == 0 else outputs[k - 1])
        result[k] = {"style": objective.style(features, style_features).mean().item(),
                     "content": objective.content(features, original).mean().item()}
    return result
