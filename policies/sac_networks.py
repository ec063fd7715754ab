"""Networks of the latent SAC agent: planner, plan decoder (the "actor"), the critic (one Q-network).

RL-NST / RL-I2IT style (Feng et al., "Controlling Neural Style Transfer with
Deep Reinforcement Learning", IJCAI 2023): a planner turns the state into a
low-dimensional stochastic *plan* (the RL action), a decoder turns plan and
state into the output, and the critics judge (state, plan). Here the state is
the observation (N,Cobs,h,w) of ``policies.observations`` and the output the
latent residual delta (N,C,h,w).

- ``Planner``: obs -> two conv3x3-InstanceNorm-ReLU layers, a residual block
  (``policies.reinforce``'s blocks), a stride-``plan_stride`` conv3x3 + ReLU,
  a 1x1 conv to the Gaussian's mean and log-std (bounded to
  [log_std_min, log_std_max] by a tanh, as CleanRL's SAC). The plan is
  tanh-squashed: plan = tanh(u), u ~ N(mean, std^2), in (-1,1)^(P x h' x w')
  with h' = ceil(h / plan_stride), w' = ceil(w / plan_stride). Its
  log-probability carries the change-of-variables correction
  -log(1 - tanh(u)^2) (Haarnoja et al. 2018, appendix C) and is AVERAGED over
  the plan's elements (per-element units, so the entropy target does not
  depend on the frame size).
- ``PlanDecoder``: plan upsampled (bilinear) to (h,w), concatenated with the
  observation -> the same conv trunk -> 1x1 conv (which also sees the raw
  observation and plan, ``input_skip``) -> scaled by a learnable scalar gate
  initialised at ``init_gate`` (0: the untrained agent is exactly the baseline).
- ``QNetwork`` (one of the pair in ``policies.sac_core.TwinCritic``): obs ->
  conv3x3-IN-ReLU, stride-``plan_stride`` conv3x3 + ReLU to the plan's grid, concatenated with the plan, two conv3x3 +
  ReLU, global average pooling, an MLP to one value per sample. No
  normalisation after the downsampling (plan grids may be 1 cell wide).
All are fully convolutional: any latent size works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.latents.codecs import check_warp_encoder
from policies.base import check_observation_kind
from policies.observations import (
    FLOW_WARPS,
    check_flow_warp,
    check_observation_flow,
    observation_channels,
    observation_flow_field,
    warp_encoder_field,
)
from policies.reinforce import ResidualBlock, conv_norm_relu

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class SACPolicyConfig:
    """Planner and decoder settings (the saved policy's config).

    ``plan_channels`` P and ``plan_stride`` s set the plan's shape
    (N, P, ceil(h/s), ceil(w/s)); ``init_gate`` 0 = start at the baseline.
    """

    latent_channels: int
    observation: str = "flow"
    hidden: int = field(default=64, metadata={"help": "channels of the planner's and decoder's convolutions"})
    plan_channels: int = field(default=4, metadata={"help": "channels P of the plan"})
    plan_stride: int = field(default=2, metadata={"help": "the plan is 1/stride of the latent's size"})
    input_skip: bool = field(default=True, metadata={"help": "the decoder's output head also sees its raw input"})
    init_gate: float = field(default=0.0, metadata={"help": "initial scale of the decoded residual (0: the baseline)"})
    log_std_min: float = field(default=-5.0, metadata={"help": "lower clamp of the plan's log standard deviation"})
    log_std_max: float = field(default=2.0, metadata={"help": "upper clamp of the plan's log standard deviation"})
    flow_warp: str = field(default="latent", metadata={
        "choices": FLOW_WARPS, "help": "flow observations: warp the previous output in latent space or in pixels "
                                       "(pixel: bilinear, detail: two bands)"})
    observation_flow: str = observation_flow_field()
    warp_encoder: str = warp_encoder_field()

    def __post_init__(self) -> None:
        check_observation_kind(self.observation)
        check_flow_warp(self.flow_warp)
        check_observation_flow(self.observation_flow)
        check_warp_encoder(self.warp_encoder)
        for name in ("latent_channels", "hidden", "plan_channels", "plan_stride"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SACPolicyConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if not self.log_std_min < self.log_std_max:
            raise ValueError(f"log_std_min ({self.log_std_min}) must be below log_std_max ({self.log_std_max})")

    @property
    def observation_channels(self) -> int:
        return observation_channels(self.observation, self.latent_channels)


def plan_size(latent_size: tuple[int, int], stride: int) -> tuple[int, int]:
    """The plan grid (ceil(h/s), ceil(w/s)) for latents of size (h, w)."""
    return (-(-latent_size[0] // stride), -(-latent_size[1] // stride))


def check_observation(obs: Tensor, channels: int, what: str) -> None:
    if obs.ndim != 4 or obs.shape[1] != channels:
        raise ValueError(f"{what} expects observations (N,{channels},h,w), got {tuple(obs.shape)}")


def tanh_gaussian_sample(mean: Tensor, log_std: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
    """Sample tanh(u), u ~ N(mean, exp(log_std)^2) (reparameterised), and its log-density.

    ``mean``, ``log_std`` (N,...). Returns the squashed sample in (-1,1) (same
    shape) and log pi (N,) averaged over the non-batch elements:
    log N(u) - log(1 - tanh(u)^2), with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))
    (stable form). ``deterministic``: u = mean (the plan's mode before squashing).
    """
    eps = torch.zeros_like(mean) if deterministic else torch.randn_like(mean)
    u = mean + log_std.exp() * eps
    gaussian = -0.5 * eps.square() - log_std - _HALF_LOG_2PI
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return torch.tanh(u), (gaussian - log_det).flatten(1).mean(dim=1)


def _trunk(cin: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(conv_norm_relu(cin, hidden), conv_norm_relu(hidden, hidden), ResidualBlock(hidden))


class Planner(nn.Module):
    """pi(plan | obs): a tanh-squashed Gaussian over a (P, ceil(h/s), ceil(w/s)) plan."""

    def __init__(self, config: SACPolicyConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = _trunk(config.observation_channels, config.hidden)
        self.down = nn.Sequential(
            nn.Conv2d(config.hidden, config.hidden, 3, stride=config.plan_stride, padding=1), nn.ReLU(inplace=True)
        )
        self.head = nn.Conv2d(config.hidden, 2 * config.plan_channels, 1)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Pre-squash mean and log-std, each (N,P,h',w'), of observations (N,Cobs,h,w)."""
        check_observation(obs, self.config.observation_channels, "the SAC planner")
        mean, raw = self.head(self.down(self.trunk(obs))).chunk(2, dim=1)
        lo, hi = self.config.log_std_min, self.config.log_std_max
        return mean, lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1.0)

    def sample(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """A plan (N,P,h',w') in (-1,1) (reparameterised) and its log-prob (N,) per element."""
        mean, log_std = self(obs)
        return tanh_gaussian_sample(mean, log_std, deterministic)


class PlanDecoder(nn.Module):
    """The actor: (plan (N,P,h',w'), obs (N,Cobs,h,w)) -> gated latent residual delta (N,C,h,w)."""

    def __init__(self, config: SACPolicyConfig) -> None:
        super().__init__()
        self.config = config
        cin = config.observation_channels + config.plan_channels
        self.trunk = _trunk(cin, config.hidden)
        self.head = nn.Conv2d(config.hidden + (cin if config.input_skip else 0), config.latent_channels, 1)
        self.gate = nn.Parameter(torch.tensor(float(config.init_gate)))

    def forward(self, plan: Tensor, obs: Tensor) -> Tensor:
        cfg = self.config
        check_observation(obs, cfg.observation_channels, "the SAC decoder")
        expected = (obs.shape[0], cfg.plan_channels, *plan_size(tuple(obs.shape[-2:]), cfg.plan_stride))
        if tuple(plan.shape) != expected:
            raise ValueError(f"plan must be {expected} for observations {tuple(obs.shape)}, got {tuple(plan.shape)}")
        x = torch.cat([F.interpolate(plan, size=obs.shape[-2:], mode="bilinear", align_corners=False), obs], dim=1)
        features = self.trunk(x)
        if cfg.input_skip:
            features = torch.cat([features, x], dim=1)
        return self.gate * self.head(features)


@dataclass
class CriticConfig:
    """Q(obs, plan) settings; ``plan_stride`` must match the planner's."""

    observation_channels: int
    plan_channels: int
    plan_stride: int = 2
    hidden: int = 64


class QNetwork(nn.Module):
    """Q(obs (N,Cobs,h,w), plan (N,P,h',w')) -> (N,)."""

    def __init__(self, config: CriticConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden
        self.encoder = nn.Sequential(
            conv_norm_relu(config.observation_channels, hidden),
            nn.Conv2d(hidden, hidden, 3, stride=config.plan_stride, padding=1),
            nn.ReLU(inplace=True),
        )
        self.joint = nn.Sequential(
            nn.Conv2d(hidden + config.plan_channels, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.value = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, obs: Tensor, plan: Tensor) -> Tensor:
        check_observation(obs, self.config.observation_channels, "the SAC critic")
        features = self.encoder(obs)
        if plan.shape[0] != obs.shape[0] or plan.shape[1:] != (self.config.plan_channels, *features.shape[-2:]):
            raise ValueError(
                f"plan must be ({obs.shape[0]},{self.config.plan_channels},{features.shape[-2]},{features.shape[-1]}) "
                f"for observations {tuple(obs.shape)}, got {tuple(plan.shape)}"
            )
        joint = self.joint(torch.cat([features, plan], dim=1))
        return self.value(joint.mean(dim=(2, 3))).squeeze(1)
