"""TAEF2: the tiny autoencoder for the FLUX.2 latent space, as plain nn.Modules.

Ported from madebyollin/taesd (MIT licence, https://github.com/madebyollin/taesd,
``taesd.py`` and the ``taef2_encoder.pth`` / ``taef2_decoder.pth`` checkpoints).
The layer order follows ``../shared/weights/README.md``; both stacks are
``nn.Sequential`` so the checkpoints' keys (``0.weight``, ``1.conv.0.weight``,
``13.pool.1.weight``, ...) load with ``strict=True``.

Image side: RGB in [0,1]. Latent side: 32 channels at 1/8 the resolution,
std about 0.85, range about +-5.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.io.weights import load_state_dict


@dataclass(frozen=True)
class TAEF2Config:
    """Sizes of the TAEF2 network (the defaults are those of the released weights)."""

    latent_channels: int = 32
    width: int = 64
    pool_hidden: int = 256
    pool_groups: int = 4
    blocks_per_level: int = 3


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


class TAEF2Encoder(nn.Sequential):
    """Images (N,3,H,W) in [0,1] -> latents (N,32,H/8,W/8)."""

    def __init__(self, config: TAEF2Config = TAEF2Config()) -> None:
        c, n = config.width, config.blocks_per_level
        layers: list[nn.Module] = [conv3x3(3, c), Block(config)]
        for level in range(3):
            pool = level == 2
            layers += [conv3x3(c, c, stride=2, bias=False), *(Block(config, pool) for _ in range(n))]
        layers.append(conv3x3(c, config.latent_channels))
        super().__init__(*layers)


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
