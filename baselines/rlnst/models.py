"""RL-NST networks: the actor (planner of a 2D Gaussian latent action), the stylizer and the critic
(one of the pair in ``policies.sac_core.TwinCritic``).

Feng et al., "Controlling Neural Style Transfer with Deep Reinforcement
Learning" (IJCAI 2023); layers as in the public RL-I2IT code
(github.com/lesley222/HJAILab-OPEN, ``RL-I2IT-ImageStyleTransfer/network.py``
and ``RL-I2IT-VideoStyleTranfer/model.py``).

One refinement step maps the moving image s_k (N,3,H,W) in [0,1] to
s_{k+1}: the actor encodes s_k (conv 9x9 -> 16, 3x3 stride 2 -> 32, 3x3
stride 2 -> 64, each InstanceNorm + ReLU, a residual block; reflection
padding) and outputs a Gaussian over a one-channel action (N,1,H/4,W/4),
sampled by reparameterisation; the stylizer decodes the action with skip
connections from the actor's three feature maps (nearest 2x upsampling +
reflection-padded convolutions) into s_{k+1}. The video model adds a ConvGRU
to the actor, its hidden state carried across refinement steps of a frame,
and a ConvGRU to the stylizer, its hidden state carried across frames at the
same step index (the caller holds one per step index and resets them per
clip). H and W must be multiples of 4 (the networks are fully convolutional).

Deviations from the public code, each needed for a correct, size-agnostic port:

- Gaussian head: the public code takes the action mean as the channel mean of
  the first half of the 64 bottleneck channels and its std as the channel
  *standard deviation* of exp(log-variance) of the second half; here the
  log-variance (squashed to [-10, 2] as there) is averaged over channels and
  std = exp(log_var / 2), a proper per-pixel Gaussian. Still parameter-free.
- Output range: the public stylizer emits ImageNet-normalised pixels without
  bound; here a sigmoid gives the next moving image in [0,1] (the project's
  image convention), so the state stays a valid image across steps.
- Critic: the public image critic's layer geometry only fits 256x256 inputs
  (its last 4x4 valid convolution and fully connected layer); here the joint
  state/action map at H/4 is average-pooled to the 64x64 grid it has at
  256 px (the identity there), so any size works, InstanceNorm replaces
  BatchNorm on the concatenation (batch-size independent) and it returns one
  Q value per image (as the public video critic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.rlnst.convgru import ConvGRUCell
from pipeline.io.pretrained import PretrainedMixin

MIN_SIZE = 8
CRITIC_GRID = 64


def check_image_size(images: Tensor, minimum: int = MIN_SIZE, what: str = "state") -> None:
    """Raise ValueError unless ``images`` is (N,3,H,W) with H, W multiples of 4 and at least ``minimum``."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{what} must be images (N,3,H,W), got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if height % 4 or width % 4 or height < minimum or width < minimum:
        raise ValueError(
            f"RL-NST needs H and W that are multiples of 4 and at least {minimum}, got {height}x{width}; "
            "resize or pad the frames (inference.stylize_frames pads for you)"
        )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class ConvLayer(nn.Module):
    """Reflection padding + convolution (keeps the size at stride 1, halves it at stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pad(x))


class ConvNormReLU(nn.Sequential):
    """ConvLayer, affine InstanceNorm, ReLU; ``upsample`` first enlarges by nearest-neighbour 2x."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, upsample: bool = False):
        layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")] if upsample else []
        layers += [
            ConvLayer(in_channels, out_channels, kernel_size, stride),
            nn.InstanceNorm2d(out_channels, affine=True),
            nn.ReLU(),
        ]
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Johnson et al. residual block: relu(x + IN(conv(relu(IN(conv(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvLayer(channels, channels, 3),
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(),
            ConvLayer(channels, channels, 3),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


@dataclass(frozen=True)
class RLNSTConfig:
    """Architecture of the actor + stylizer.

    ``video``: add the step-wise ConvGRU (actor) and frame-wise ConvGRU
    (stylizer). ``channels``: widths of the actor's three encoder levels
    (the paper: 16, 32, 64; the last must be even, it is split into the
    action mean and log-variance halves). ``log_var_range``: bounds of the
    per-pixel log-variance (public code: -10, 2). ``gru_kernel``: ConvGRU
    gate kernel size.
    """

    video: bool = False
    channels: tuple[int, int, int] = (16, 32, 64)
    log_var_range: tuple[float, float] = (-10.0, 2.0)
    gru_kernel: int = 3

    def __post_init__(self) -> None:
        if len(self.channels) != 3 or self.channels[2] % 2:
            raise ValueError(f"channels must be three widths with an even last one, got {self.channels}")
        low, high = self.log_var_range
        if not low < high:
            raise ValueError(f"log_var_range must be (low, high) with low < high, got {self.log_var_range}")


class ActorOutput(NamedTuple):
    """Actor outputs: Gaussian ``mean``/``log_std`` (N,1,H/4,W/4), ``skips`` (N,c_i,H/2^i,W/2^i), new step hidden."""

    mean: Tensor
    log_std: Tensor
    skips: tuple[Tensor, Tensor, Tensor]
    step_hidden: Tensor | None


class Actor(nn.Module):
    """Encoder of the moving image to a 2D Gaussian action (1 x H/4 x W/4); optional step-wise ConvGRU."""

    def __init__(self, config: RLNSTConfig) -> None:
        super().__init__()
        c1, c2, c3 = config.channels
        self.config = config
        self.conv1 = ConvNormReLU(3, c1, 9)
        self.conv2 = ConvNormReLU(c1, c2, 3, stride=2)
        self.conv3 = ConvNormReLU(c2, c3, 3, stride=2)
        self.residual = ResidualBlock(c3)
        self.step_gru = ConvGRUCell(c3, c3, config.gru_kernel) if config.video else None

    def forward(self, state: Tensor, step_hidden: Tensor | None = None) -> ActorOutput:
        f1 = self.conv1(state)
        f2 = self.conv2(f1)
        f3 = self.conv3(f2)
        y = self.residual(f3)
        if self.step_gru is not None:
            y = step_hidden = self.step_gru(y, step_hidden)
        elif step_hidden is not None:
            raise ValueError("the image model has no step-wise hidden state; pass step_hidden=None")
        mean_half, log_var_half = y.chunk(2, dim=1)
        low, high = self.config.log_var_range
        log_var = low + 0.5 * (high - low) * (torch.tanh(log_var_half) + 1)
        mean = mean_half.mean(dim=1, keepdim=True)
        log_std = 0.5 * log_var.mean(dim=1, keepdim=True)
        return ActorOutput(mean, log_std, (f1, f2, f3), step_hidden)


class Stylizer(nn.Module):
    """Decoder of the action + actor skips to the next moving image in [0,1]; optional frame-wise ConvGRU."""

    def __init__(self, config: RLNSTConfig) -> None:
        super().__init__()
        c1, c2, c3 = config.channels
        self.frame_gru = ConvGRUCell(1 + c3, c3, config.gru_kernel) if config.video else None
        self.up3 = ConvNormReLU(1 + c3, c3, 3, upsample=True)
        self.up2 = ConvNormReLU(c3 + c2, c2, 3, upsample=True)
        self.out = ConvLayer(c2 + c1, 3, 9)

    def forward(
        self, action: Tensor, skips: tuple[Tensor, Tensor, Tensor], frame_hidden: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(next image (N,3,H,W) in [0,1], new frame hidden (N,c3,H/4,W/4) or None for the image model)."""
        f1, f2, f3 = skips
        if self.frame_gru is not None:
            f3 = frame_hidden = self.frame_gru(torch.cat([action, f3], dim=1), frame_hidden)
        elif frame_hidden is not None:
            raise ValueError("the image model has no frame-wise hidden state; pass frame_hidden=None")
        y = self.up3(torch.cat([action, f3], dim=1))
        y = self.up2(torch.cat([y, f2], dim=1))
        return torch.sigmoid(self.out(torch.cat([y, f1], dim=1))), frame_hidden


class Hidden(NamedTuple):
    """Recurrent state of the video model for one step: ``step`` (actor) and ``frame`` (stylizer); None = zeros."""

    step: Tensor | None = None
    frame: Tensor | None = None


class StepResult(NamedTuple):
    """One refinement step: ``image`` (N,3,H,W) [0,1], ``action`` and ``mean`` (N,1,H/4,W/4), ``log_prob`` (N,)
    (log-density per action element, averaged), new ``hidden``."""

    image: Tensor
    action: Tensor
    mean: Tensor
    log_prob: Tensor
    hidden: Hidden


class RLNST(PretrainedMixin, nn.Module):
    """RL-NST actor + stylizer. ``step(state, hidden)`` performs one refinement step (see module doc).
    ``save_pretrained(folder)`` / ``RLNST.from_pretrained(folder)``: a model folder (``pipeline.io.pretrained``)."""

    pretrained_format: ClassVar[str] = "rlnst-model-v2"
    kind: ClassVar[str] = "rlnst"
    config_class: ClassVar[type] = RLNSTConfig

    def __init__(self, config: RLNSTConfig | None = None) -> None:
        super().__init__()
        self.config = config or RLNSTConfig()
        self.actor = Actor(self.config)
        self.stylizer = Stylizer(self.config)

    @property
    def is_video(self) -> bool:
        return self.config.video

    def policy(
        self, state: Tensor, step_hidden: Tensor | None = None, deterministic: bool = False
    ) -> tuple[Tensor, Tensor, ActorOutput]:
        """Sample an action by reparameterisation: (action (N,1,H/4,W/4), log_prob (N,), actor output).

        ``log_prob`` is the Gaussian log-density averaged over the action's
        elements; ``deterministic`` takes the mean. The actor output holds the
        mean, log-std, skip features and the new step hidden state.
        """
        check_image_size(state)
        out = self.actor(state, step_hidden)
        noise = torch.zeros_like(out.mean) if deterministic else torch.randn_like(out.mean)
        action = out.mean + out.log_std.exp() * noise
        # Gaussian log-density of the action: (action - mean) / std = noise
        log_density = -0.5 * noise.square() - out.log_std - 0.5 * math.log(2 * math.pi)
        return action, log_density.flatten(1).mean(dim=1), out

    def step(self, state: Tensor, hidden: Hidden | None = None, deterministic: bool = False) -> StepResult:
        """s_k (N,3,H,W) in [0,1] -> s_{k+1}; ``hidden`` holds the video model's recurrent states (None = zeros)."""
        hidden = hidden or Hidden()
        action, log_prob, out = self.policy(state, hidden.step, deterministic)
        image, frame_hidden = self.stylizer(action, out.skips, hidden.frame)
        return StepResult(image, action, out.mean, log_prob, Hidden(out.step_hidden, frame_hidden))

    def forward(self, state: Tensor, hidden: Hidden | None = None, deterministic: bool = False) -> StepResult:
        return self.step(state, hidden, deterministic)


@dataclass(frozen=True)
class CriticConfig:
    """Critic widths: conv channels ``base * (1, 1, 2, 4, 8, 16)``, then ``bottleneck`` features."""

    base_channels: int = 16
    bottleneck: int = 128


def _conv_leaky(in_channels: int, out_channels: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=False)]
    if norm:
        layers.append(nn.InstanceNorm2d(out_channels, affine=True))
    layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class Critic(nn.Module):
    """Q(s, a): ``forward(state (N,3,H,W) [0,1], action (N,1,H/4,W/4)) -> (N,)``.

    Two 4x4 stride-2 convolutions of the state, the action concatenated at
    H/4, an average pool of that map to 64x64, four more 4x4 stride-2
    convolutions, a seventh 4x4 valid convolution to ``bottleneck`` features
    and a fully connected layer to the value.
    """

    def __init__(self, config: CriticConfig | None = None) -> None:
        super().__init__()
        self.config = config or CriticConfig()
        widths = [self.config.base_channels * m for m in (1, 1, 2, 4, 8, 16)]
        self.head = nn.Sequential(_conv_leaky(3, widths[0], norm=False), _conv_leaky(widths[0], widths[1], norm=True))
        self.joint_norm = nn.InstanceNorm2d(widths[1] + 1, affine=True)
        self.body = nn.Sequential(
            _conv_leaky(widths[1] + 1, widths[2], norm=True),
            *[_conv_leaky(widths[i - 1], widths[i], norm=True) for i in range(3, 6)],
            nn.Conv2d(widths[5], self.config.bottleneck, 4, bias=False),
        )
        self.fc = nn.Linear(self.config.bottleneck, 1)

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        check_image_size(state)
        x = self.head(state)
        if action.shape != (state.shape[0], 1, *x.shape[-2:]):
            expected = (state.shape[0], 1, *x.shape[-2:])
            raise ValueError(f"action must be (N,1,H/4,W/4) = {expected}, got {tuple(action.shape)}")
        x = F.adaptive_avg_pool2d(torch.cat([x, action], dim=1), CRITIC_GRID)
        x = F.leaky_relu(self.joint_norm(x), 0.2)
        return self.fc(self.body(x).flatten(1)).squeeze(1)
