"""Step-wise RL-NST stylization of frames, and loading trained models.

``steps`` sets the degree of stylization: each step feeds the moving image
back through the model (step 1 starts from the frame itself). The image
model stylizes every frame on its own; the video model runs the frames of a
clip in order, carrying the stylizer's frame-wise hidden state of each step
index from frame to frame (reset per clip) and the actor's step-wise hidden
state across the steps of a frame. Actions are the Gaussian means unless
``deterministic=False`` (as the public code's test scripts).

A trained model is a model folder (``pipeline.io.pretrained``) written by
``baselines.rlnst.train`` as its run folder's ``model/``; ``load_model`` and
``training_settings`` take that folder or the run folder.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.rlnst.models import MIN_SIZE, RLNST, Hidden
from pipeline.io.pretrained import saved_training_settings


def load_model(source: str | os.PathLike, device: str | torch.device = "cpu") -> RLNST:
    """The RL-NST model (eval mode, on ``device``) of a model folder or a run folder of ``baselines.rlnst.train``."""
    return RLNST.from_pretrained(source, device)


def training_settings(source: str | os.PathLike) -> dict[str, Any]:
    """How the model of ``source`` (model or run folder) was trained: ``mode``, ``style`` (path of the style
    image), ``size``, ``episode_steps`` (refinement steps per frame) and ``updates``."""
    return saved_training_settings(source, RLNST.pretrained_format)


def pad_to_multiple(frames: Tensor) -> Tensor:
    """Reflection-pad (N,3,H,W) at the bottom/right so H, W are multiples of 4 and at least MIN_SIZE."""
    height, width = frames.shape[-2:]
    new_h, new_w = max(MIN_SIZE, -(-height // 4) * 4), max(MIN_SIZE, -(-width // 4) * 4)
    if (new_h, new_w) == (height, width):
        return frames
    mode = "reflect" if new_h - height < height and new_w - width < width else "replicate"
    return F.pad(frames, (0, new_w - width, 0, new_h - height), mode=mode)


class StepwiseStylizer:
    """Stylize the frames of one clip, possibly in several chunks: ``stylizer(chunk)`` per chunk, ``reset()`` per clip.

    ``model``: an ``RLNST``; ``steps`` >= 1 refinement steps per frame;
    ``batch_size``: frames processed together by the image model (the video
    model is sequential in time).
    """

    def __init__(self, model: RLNST, steps: int, deterministic: bool = True, batch_size: int = 8) -> None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.steps = steps
        self.deterministic = deterministic
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        """Forget the frame-wise hidden states (start of a new clip)."""
        self._frame_hidden: list[Tensor | None] = [None] * self.steps

    def _run(self, frames: Tensor, carry: bool) -> Tensor:
        """All step outputs (steps, n, 3, H, W) for frames (n,3,H,W) processed together."""
        outputs, state, step_hidden = [], frames, None
        for k in range(self.steps):
            frame_hidden = self._frame_hidden[k] if carry else None
            out = self.model.step(state, Hidden(step_hidden, frame_hidden), deterministic=self.deterministic)
            state, step_hidden = out.image, out.hidden.step
            if carry:
                self._frame_hidden[k] = out.hidden.frame
            outputs.append(state)
        return torch.stack(outputs)

    @torch.no_grad()
    def __call__(self, frames: Tensor, return_steps: bool = False) -> Tensor:
        """Stylize ``frames`` (T,3,H,W) in [0,1], the next frames of the current clip.

        Returns (T,3,H,W) after ``steps`` steps, or with ``return_steps`` every
        step's output (steps,T,3,H,W); same size and device as ``frames``. Any
        H, W: frames are reflection-padded to multiples of 4 and cropped back.
        """
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (T,3,H,W) in [0,1], got {tuple(frames.shape)}")
        height, width = frames.shape[-2:]
        device = next(self.model.parameters()).device
        padded = pad_to_multiple(frames.to(device=device, dtype=torch.float32))
        if self.model.is_video:
            if any(h is not None and h.shape[-2:] != (padded.shape[-2] // 4, padded.shape[-1] // 4)
                   for h in self._frame_hidden):
                raise ValueError("frame size changed within a clip; call reset() before a new clip")
            chunks = [self._run(frame, carry=True) for frame in padded.split(1)]
        else:
            chunks = [self._run(batch, carry=False) for batch in padded.split(self.batch_size)]
        result = torch.cat(chunks, dim=1)[..., :height, :width].to(frames.device)
        return result if return_steps else result[-1]


def stylize_frames(
    model: RLNST,
    frames: Tensor,
    steps: int,
    return_steps: bool = False,
    deterministic: bool = True,
    batch_size: int = 8,
) -> Tensor:
    """Stylize one clip (or a batch of independent images for the image model) with ``steps`` steps.

    ``frames`` (T,3,H,W) in [0,1], any size. Returns (T,3,H,W) in [0,1], or
    with ``return_steps`` the outputs of every step (steps,T,3,H,W), index
    k-1 = after k steps. The video model's frame-wise hidden states start
    from zeros (a new clip).
    """
    return StepwiseStylizer(model, steps, deterministic, batch_size)(frames, return_steps)
