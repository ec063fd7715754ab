"""Non-learned reference policies behind the ``Policy`` interface.

- ``IdentityPolicy``: delta = 0, i.e. the frame-by-frame baseline.
- ``FlowBlendPolicy``: pulls each latent toward the previous output warped
  to frame t, in reliable regions only, by a fixed factor:
  L^_t = L_t + factor * M_t * (W_t - L_t) (reads the ``flow`` observation).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pipeline.latents.codecs import check_warp_encoder
from policies.base import Policy, register_policy
from policies.observations import (
    check_flow_warp,
    check_observation_flow,
    observation_channels,
    observation_flow_field,
    warp_encoder_field,
)


def _check_obs(policy: Policy, obs: Tensor) -> None:
    expected = observation_channels(policy.observation, policy.latent_channels)
    if obs.ndim != 4 or obs.shape[1] != expected:
        raise ValueError(f"{policy.kind} expects observations (N,{expected},h,w), got {tuple(obs.shape)}")


@dataclass
class IdentityConfig:
    latent_channels: int
    observation: str = "pair"
    flow_warp: str = "latent"
    observation_flow: str = observation_flow_field()
    warp_encoder: str = warp_encoder_field()


@register_policy
class IdentityPolicy(Policy):
    """The frame-by-frame baseline as a policy: always delta = 0."""

    kind = "identity"
    config_class = IdentityConfig

    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        _check_obs(self, obs)
        return obs.new_zeros(obs.shape[0], self.latent_channels, *obs.shape[2:])


@dataclass
class FlowBlendConfig:
    latent_channels: int
    factor: float = 0.5
    observation: str = "flow"
    flow_warp: str = "latent"
    observation_flow: str = observation_flow_field()
    warp_encoder: str = warp_encoder_field()

    def __post_init__(self) -> None:
        check_flow_warp(self.flow_warp)
        check_observation_flow(self.observation_flow)
        check_warp_encoder(self.warp_encoder)
        if self.observation != "flow":
            raise ValueError("FlowBlendPolicy reads the 'flow' observation")
        if not 0.0 <= self.factor <= 1.0:
            raise ValueError(f"flow-blend factor must be in [0,1], got {self.factor}")


@register_policy
class FlowBlendPolicy(Policy):
    """delta = factor * M_t * (W_t - L_t): a fixed pull toward the warped previous output."""

    kind = "flow-blend"
    config_class = FlowBlendConfig

    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        _check_obs(self, obs)
        c = self.latent_channels
        mask = obs[:, 2 * c : 2 * c + 1]
        difference = obs[:, 2 * c + 1 :]  # L_t - W_t
        return -self.config.factor * mask * difference
