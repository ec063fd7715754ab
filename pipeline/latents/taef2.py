"""TAEF2: the tiny autoencoder for the FLUX.2 latent space, as plain nn.Modules.

Ported from madebyollin/taesd (MIT licence, https://github.com/madebyollin/taesd,
``taesd.py`` and the ``taef2_encoder.pth`` / ``taef2_decoder.pth`` checkpoints).
The layer order follows ``../shared/weights/README.md``; both stacks are
``nn.Sequential`` so the checkpoints' keys (``0.weight``, ``1.conv.0.weight``,
``13.pool.1.weight``, ...) load with ``strict=True``.

Image side: RGB in [0,1]. Latent side: 32 channels at 1/8 the resolution,
std about 0.85, range about +-5.

``TAEF2_LITE``: an encoder of the same family with fewer residual blocks (none at full resolution, one at 1/2
and 1/4), 4.5x faster at 256 px, distilled from the released one (``pipeline.latents.distill``) for the
re-encodes of the pixel-warp observation (``pipeline.latents.codecs.load_warp_codec``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.io.pretrained import PretrainedMixin
from pipeline.io.weights import load_state_dict

ENCODER_FORMAT = "vstyle-taef2-encoder-v1"  # the config.json tag of a saved (distilled) encoder


@dataclass(frozen=True)
class TAEF2Config:
    """Sizes of the TAEF2 network (the defaults are those of the released weights).

    ``encoder_blocks``: residual blocks of the encoder at 1, 1/2, 1/4 and 1/8 of the image resolution (the
    last level's have the pooling branch); ``blocks_per_level``: the decoder's.
    """

    latent_channels: int = 32
    width: int = 64
    pool_hidden: int = 256
    pool_groups: int = 4
    blocks_per_level: int = 3
    encoder_blocks: tuple[int, int, int, int] = (1, 3, 3, 3)

    def __post_init__(self) -> None:
        if len(self.encoder_blocks) != 4 or min(self.encoder_blocks) < 0:
            raise ValueError(f"encoder_blocks must be 4 block counts >= 0, got {self.encoder_blocks}")


TAEF2_LITE = TAEF2Config(encoder_blocks=(0, 1, 1, 3))  # the distilled encoder of the pixel-warp observation


def conv3x3(n_in: int, n_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class SoftClamp(nn.Module):
    """tanh(z/3)*3: bounds the decoder's input latents to (-3, 3) smoothly."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(z / 3) * 3


class Block(nn.Module):
    """Residual block: ``relu(conv(x) + x)``, optionally after ``x = x + pool(x)``.

    ``conv`` is conv3x3-ReLU-conv3x3-ReLU-conv3x3; ``pool`` (the blocks next to
    the latent) is conv1x1 up to ``pool_hidden`` channels (no bias),
    GroupNorm, ReLU, conv1x1 back down (no bias).
    """

    def __init__(self, config: TAEF2Config, pool: bool = False) -> None:
        super().__init__()
        c = config.width
        self.conv = nn.Sequential(conv3x3(c, c), nn.ReLU(), conv3x3(c, c), nn.ReLU(), conv3x3(c, c))
        self.pool = (
            nn.Sequential(
                nn.Conv2d(c, config.pool_hidden, 1, bias=False),
                nn.GroupNorm(config.pool_groups, config.pool_hidden),
                nn.ReLU(),
                nn.Conv2d(config.pool_hidden, c, 1, bias=False),
            )
            if pool
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return torch.relu(self.conv(x) + x)


def encoder_layout(encoder_blocks: tuple[int, ...]) -> tuple[list[int], list[list[int]]]:
    """Where the layers of an encoder with ``encoder_blocks`` sit in its ``nn.Sequential``: the indices of its
    convolutions (the input one, the three strided ones, the output one) and of each level's blocks."""
    index, convs, levels = 1, [0], []
    for level, count in enumerate(encoder_blocks):
        if level > 0:
            convs.append(index)
            index += 1
        levels.append(list(range(index, index + count)))
        index += count
    return [*convs, index], levels


class TAEF2Encoder(PretrainedMixin, nn.Sequential):
    """Images (N,3,H,W) in [0,1] -> latents (N,32,H/8,W/8)."""

    pretrained_format = ENCODER_FORMAT
    kind = "taef2-encoder"
    config_class = TAEF2Config

    def __init__(self, config: TAEF2Config = TAEF2Config()) -> None:
        c = config.width
        layers: list[nn.Module] = [conv3x3(3, c)]
        for level, count in enumerate(config.encoder_blocks):
            if level > 0:
                layers.append(conv3x3(c, c, stride=2, bias=False))
            layers += [Block(config, pool=level == 3) for _ in range(count)]
        layers.append(conv3x3(c, config.latent_channels))
        super().__init__(*layers)
        self.config = config

    @classmethod
    def initialised_from(cls, teacher: TAEF2Encoder, config: TAEF2Config) -> TAEF2Encoder:
        """An encoder of ``config`` holding copies of ``teacher``'s layers: all its convolutions and, at each
        level, its last blocks (as many as ``config`` has there); the start of a distillation."""
        student = cls(config)
        teacher_convs, teacher_levels = encoder_layout(teacher.config.encoder_blocks)
        convs, levels = encoder_layout(config.encoder_blocks)
        pairs = list(zip(convs, teacher_convs))
        for mine, theirs in zip(levels, teacher_levels):
            if len(mine) > len(theirs):
                raise ValueError(f"the student has more blocks per level {config.encoder_blocks} than the teacher "
                                 f"{teacher.config.encoder_blocks}")
            pairs += zip(mine, theirs[len(theirs) - len(mine):])
        for index, teacher_index in pairs:
            student[index].load_state_dict(teacher[teacher_index].state_dict())
        return student.to(next(teacher.parameters()).device)


class TAEF2Decoder(nn.Sequential):
    """Latents (N,32,h,w) -> images (N,3,8h,8w), approximately in [0,1] (not clamped)."""

    def __init__(self, config: TAEF2Config = TAEF2Config()) -> None:
        c, n = config.width, config.blocks_per_level
        layers: list[nn.Module] = [SoftClamp(), conv3x3(config.latent_channels, c), nn.ReLU()]
        layers += [Block(config, pool=True) for _ in range(n)]
        for blocks in (n, n, 1):
            layers += [nn.Upsample(scale_factor=2), conv3x3(c, c, bias=False), *(Block(config) for _ in range(blocks))]
        layers.append(conv3x3(c, 3))
        super().__init__(*layers)


def load_taef2(
    weights_dir: str | os.PathLike | None = None, config: TAEF2Config = TAEF2Config()
) -> tuple[TAEF2Encoder, TAEF2Decoder]:
    """Encoder and decoder with the pretrained weights (float32, CPU, strict keys).

    ``weights_dir`` holds ``taef2_encoder.pth`` and ``taef2_decoder.pth``; by
    default they are found by ``pipeline.io.weights`` (``VSTYLE_WEIGHTS``, cache).
    """
    encoder, decoder = TAEF2Encoder(config), TAEF2Decoder(config)
    for name, module in (("taef2_encoder", encoder), ("taef2_decoder", decoder)):
        path = None if weights_dir is None else os.path.join(weights_dir, f"{name}.pth")
        module.load_state_dict(load_state_dict(name, path), strict=True)
    return encoder, decoder
