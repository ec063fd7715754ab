"""Distil TAEF2's encoder into a lighter one for the re-encodes of the pixel-warp observation.

The pixel-warp observation of a policy (``policies.observations.pixel_warped_latent``) encodes two images
per frame, the previous output warped to the current frame and the previous output itself, and keeps
E(warp(S)) + warp(P - E(S)): the encoder's part is the *difference* between an image and its warped copy.
Two full encodes cost more than the frame's own stylization, so a policy ran at about half the
frame-by-frame baseline's speed. A student with the teacher's convolutions and fewer residual blocks
(``pipeline.latents.taef2.TAEF2_LITE``) is trained to reproduce the teacher's latents (L1) on what it will
see: decoded stylized frames of training clips (never ``videos/test``) in every training style. About half
of its own error cancels in that difference (measured in the shipped encoder's MODEL_CARD.md).

The student starts from copies of the teacher's layers (``TAEF2Encoder.initialised_from``) and is trained
with Adam under a one-cycle learning rate on batches of frames of one (clip, style) group; the teacher's
targets are computed once, in the codec's precision (what the observation would have used).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pipeline.io.images import load_image, resize_to_width
from pipeline.io.video import read_video
from pipeline.latents.codecs import TAEF2Codec
from pipeline.latents.taef2 import TAEF2Encoder


@dataclass
class DistillConfig:
    """Settings of a distillation (defaults: the shipped encoder's)."""

    steps: int = field(default=2000, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=4, metadata={"help": "frames per step, from one clip and style"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate of the one-cycle schedule"})
    eval_every: int = field(default=250, metadata={"help": "steps between validation errors (0: only at the end)"})
    seed: int = field(default=0, metadata={"help": "random seed (batches, initial order)"})

    def __post_init__(self) -> None:
        for name, ok, bound in (("steps", self.steps >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                                ("eval_every", self.eval_every >= 0, ">= 0"), ("lr", self.lr > 0, "> 0")):
            if not ok:
                raise ValueError(f"{name} must be {bound}, got {getattr(self, name)}")


@dataclass
class DistillGroup:
    """Decoded stylized frames of one clip in one style, ``images`` (n,3,H,W) in [0,1], and the teacher's
    latents of them, ``targets`` (n,C,H/8,W/8)."""

    clip: str
    style: str
    images: Tensor
    targets: Tensor


def distillation_groups(clips: Sequence[str], styles: Sequence[str], stylizer, size: int, max_frames: int,
                        progress: Callable[[str], None] | None = None) -> list[DistillGroup]:
    """One ``DistillGroup`` per clip and style: the first ``max_frames`` frames of each clip at ``size`` px
    wide, stylized by ``stylizer`` (its codec decodes and, as the teacher, encodes)."""
    codec = stylizer.codec
    style_images = {style: resize_to_width(load_image(style), size) for style in styles}
    groups = []
    for clip in clips:
        frames = resize_to_width(read_video(clip, max_frames=max_frames)[0], size)
        for style, image in style_images.items():
            with torch.no_grad():
                images = codec.decode(stylizer.stylize(frames.to(codec.device), image.to(codec.device)))
                groups.append(DistillGroup(str(clip), str(style), images, codec.encode(images)))
            if progress is not None:
                progress(f"{clip} x {style}")
    return groups


@torch.no_grad()
def relative_error(encoder: TAEF2Encoder, groups: Sequence[DistillGroup]) -> float:
    """Mean over groups of mean |E'(x) - E(x)| / mean |E(x)|: the student's latent error against the teacher's."""
    was_training = encoder.training
    encoder.eval()
    errors = [((_encode(encoder, g.images) - g.targets).abs().mean() / g.targets.abs().mean()).item() for g in groups]
    encoder.train(was_training)
    return sum(errors) / len(errors)


def _encode(encoder: TAEF2Encoder, images: Tensor) -> Tensor:
    return encoder(images.contiguous(memory_format=torch.channels_last)).contiguous()


def distill(student: TAEF2Encoder, train: Sequence[DistillGroup], validation: Sequence[DistillGroup],
            config: DistillConfig = DistillConfig(), log: Callable[[dict[str, float]], None] | None = None,
            progress: Callable[[], None] | None = None) -> list[dict[str, float]]:
    """Train ``student`` (fp32, in place) to reproduce the teacher's ``targets`` of ``train``; returns the
    validation rows ``{"step", "validation_error"}`` (``relative_error`` on ``validation``; the first at step 0,
    the teacher's layers) and, after step 0, ``"train_l1"`` (the mean training loss since the previous row),
    also passed to ``log`` as they come; ``progress`` is called after every step."""
    if not train or not validation:
        raise ValueError("distillation needs training and validation groups")
    generator = random.Random(config.seed)
    torch.manual_seed(config.seed)
    student.train()
    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=0.05)
    rows = [{"step": 0, "validation_error": relative_error(student, validation)}]
    if log is not None:
        log(rows[-1])
    recent: list[float] = []
    for step in range(1, config.steps + 1):
        group = generator.choice(train)
        index = torch.tensor(generator.sample(range(len(group.images)), min(config.batch_size, len(group.images))))
        loss = (_encode(student, group.images[index]) - group.targets[index]).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        recent.append(loss.item())
        if progress is not None:
            progress()
        if step == config.steps or (config.eval_every and step % config.eval_every == 0):
            rows.append({"step": step, "train_l1": sum(recent) / len(recent),
                         "validation_error": relative_error(student, validation)})
            recent = []
            if log is not None:
                log(rows[-1])
    student.eval()
    return rows


def teacher_encoder(codec: TAEF2Codec) -> TAEF2Encoder:
    """The encoder of a TAEF2 codec (a ValueError for another codec: the student's layers are TAEF2's)."""
    if not isinstance(codec, TAEF2Codec):
        raise ValueError(f"the light encoder is distilled from TAEF2's; codec {codec.name} is not TAEF2")
    return codec.encoder
