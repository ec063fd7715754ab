"""REINFORCE residual-latent policy (Kuang & Chen, "Video Style Transfer with
Reinforcement Learning", with a gated residual that can start at the baseline).

Policy: obs (N,Cobs,h,w) -> conv3x3 -> InstanceNorm -> ReLU, twice -> a
residual block -> 1x1 conv to the mean (N,C,h,w), scaled by a learnable
scalar gate initialised at ``init_gate`` (0: the untrained policy is exactly
the frame-by-frame baseline). The 1x1 head also sees the raw observation
(``input_skip``), so the mean can be a linear function of it, e.g. a pull
toward the warped previous output that scales with the motion, which the
instance-normalised features alone cannot express. A learnable scalar
log-sigma gives the Gaussian pi(delta | obs) = N(mean, sigma^2 I); samples are
reparameterised (mean + sigma * eps), the log-prob is summed over the latent.

``head="blend"`` (``flow`` observations only) adds a structured flow term:
mean = alpha(obs) * M_t * (W_t - L_t) + gate * residual(obs), with alpha a
per-latent-cell map sigmoid(a(features) + b), the 1x1 conv a zero-initialised
and the scalar b = logit(``init_alpha``) (learned at ``scalar_lr``), so the
untrained policy is a flow-blend with factor ``init_alpha`` and RL learns
where and how much to pull toward the warped previous output.

``flow_warp`` selects how W_t is built (``latent`` or ``pixel``,
``policies.observations``); the pixel warp re-encodes with the codec the
caller passes (the pipeline's own).

The policy config's defaults are the network of the default agent, which ``policies.pathwise`` trains
by backpropagation through the reward, and of ``--algo reinforce`` (``DEFAULT_HEADS``: the blend head on
``flow`` observations, the residual head on ``pair``): a pixel-warp flow-blend of factor 0.7 over OpenCV DIS
flows; REINFORCE learns its scalars at 1e-3. From near the baseline (init_alpha
0.02) REINFORCE raised the blend too slowly: warping error on the training
windows -3% after 2 epochs at 128 px, against -49% after 1 epoch from this start
(starry_night, shared training clips). ``head="residual"``,
``flow_warp="latent"`` start at the frame-by-frame baseline.

Update (``Reinforce.train_episode``): per transition, loss
-(A_t - b) * log pi(delta_t | obs_t), with A_t = r_t(policy) - r_t(baseline)
from the environment and b a running mean of A (variance reduction; set by
the first update, then an exponential moving average);
gradients accumulated over ``accumulate`` transitions (and the end of an
episode), averaged over processes, one Adam step. The reward is per frame and
myopic, as in the paper (no return over later frames).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from pipeline.latents.codecs import check_warp_encoder
from policies.base import Policy, check_observation_kind, register_policy
from policies.observations import (
    FLOW_WARPS,
    check_flow_warp,
    check_observation_flow,
    observation_channels,
    observation_flow_field,
    warp_encoder_field,
)
from policies.parallel import mean_over_processes, synchronized_step

HEADS = ("residual", "blend")
DEFAULT_HEADS = {"flow": "blend", "pair": "residual"}  # the blend head reads the flow observation's mask and warp
# the scalars' learning rate by head: the blend bias learned at 1e-3 from a flow-blend of 0.7 (the REINFORCE agent);
# the residual head's gate and log-sigma at 1e-2, as measured before the blend head existed
DEFAULT_SCALAR_LR = {"blend": 1e-3, "residual": 1e-2}


@dataclass
class ReinforcePolicyConfig:
    """Network settings (defaults: the default agent's network, see the module docstring); ``head`` None resolves to
    ``DEFAULT_HEADS[observation]``."""

    latent_channels: int
    observation: str = "flow"
    hidden: int = field(default=64, metadata={"help": "channels of the policy network's convolutions"})
    input_skip: bool = field(default=True, metadata={"help": "the 1x1 output head also sees the raw observation"})
    init_gate: float = field(default=0.0, metadata={
        "help": "initial scale of the learned residual (0: the untrained residual is zero)"})
    init_log_sigma: float = field(default=math.log(0.05), metadata={
        "help": "initial log standard deviation of the Gaussian exploration noise"})
    head: str | None = field(default=None, metadata={
        "choices": HEADS, "help": "residual: gated residual only; blend: adds a learned pull toward the warped "
                                  "previous output (flow observations only); none: blend on flow, residual on pair"})
    init_alpha: float = field(default=0.7, metadata={
        "help": "blend head: initial flow-blend factor in (0,1) (the untrained policy is a flow-blend of it)"})
    flow_warp: str = field(default="pixel", metadata={
        "choices": FLOW_WARPS, "help": "flow observations: warp the previous output in latent space, or in pixels "
                                       "(decode, warp, re-encode) bilinearly (pixel) or in two bands that keep the "
                                       "strokes crisp (detail)"})
    observation_flow: str = observation_flow_field()
    warp_encoder: str = warp_encoder_field()

    def __post_init__(self) -> None:
        if self.head is None:
            self.head = DEFAULT_HEADS[check_observation_kind(self.observation)]
        if self.head not in HEADS:
            raise ValueError(f"unknown REINFORCE head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.head == "blend" and self.observation != "flow":
            raise ValueError("the blend head reads the 'flow' observation (mask and warped previous output)")
        if not 0.0 < self.init_alpha < 1.0:
            raise ValueError(f"init_alpha must be in (0,1), got {self.init_alpha}")
        check_flow_warp(self.flow_warp)
        check_observation_flow(self.observation_flow)
        check_warp_encoder(self.warp_encoder)


def conv_norm_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """x + IN(conv(ReLU(IN(conv(x)))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_norm_relu(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


@register_policy
class ReinforcePolicy(Policy):
    """Gaussian residual policy; ``act`` returns the mean (deterministic) or a sample."""

    kind = "reinforce"
    config_class = ReinforcePolicyConfig

    def __init__(self, config: ReinforcePolicyConfig) -> None:
        super().__init__(config)
        cobs = observation_channels(config.observation, config.latent_channels)
        self.features = nn.Sequential(
            conv_norm_relu(cobs, config.hidden), conv_norm_relu(config.hidden, config.hidden), ResidualBlock(config.hidden)
        )
        self.head = nn.Conv2d(config.hidden + (cobs if config.input_skip else 0), config.latent_channels, 1)
        self.gate = nn.Parameter(torch.tensor(float(config.init_gate)))
        self.log_sigma = nn.Parameter(torch.tensor(float(config.init_log_sigma)))
        if config.head == "blend":
            self.alpha_head = nn.Conv2d(self.head.in_channels, 1, 1)
            nn.init.zeros_(self.alpha_head.weight)
            nn.init.zeros_(self.alpha_head.bias)
            self.alpha_bias = nn.Parameter(torch.tensor(math.log(config.init_alpha / (1 - config.init_alpha))))

    def scalar_parameters(self) -> list[nn.Parameter]:
        """The single-scalar parameters (gate, log-sigma, blend bias), trained at ``scalar_lr``."""
        return [self.gate, self.log_sigma] + ([self.alpha_bias] if self.config.head == "blend" else [])

    def alpha(self, obs: Tensor) -> Tensor:
        """The blend head's per-cell factor (N,1,h,w) in (0,1)."""
        features = torch.cat([self.features(obs), obs], dim=1) if self.config.input_skip else self.features(obs)
        return torch.sigmoid(self.alpha_head(features) + self.alpha_bias)

    def mean(self, obs: Tensor) -> Tensor:
        """Mean residual (N,C,h,w) of observations (N,Cobs,h,w)."""
        expected = observation_channels(self.observation, self.latent_channels)
        if obs.ndim != 4 or obs.shape[1] != expected:
            raise ValueError(f"expected {self.observation} observations (N,{expected},h,w), got {tuple(obs.shape)}")
        features = self.features(obs)
        if self.config.input_skip:
            features = torch.cat([features, obs], dim=1)
        mean = self.gate * self.head(features)
        if self.config.head == "blend":
            c = self.latent_channels
            mask, difference = obs[:, 2 * c : 2 * c + 1], obs[:, 2 * c + 1 :]  # M_t, L_t - W_t
            alpha = torch.sigmoid(self.alpha_head(features) + self.alpha_bias)
            mean = mean - alpha * mask * difference
        return mean

    def distribution(self, obs: Tensor) -> Normal:
        """pi(. | obs): independent Gaussians N(mean, sigma^2) over the latent."""
        mean = self.mean(obs)
        return Normal(mean, self.log_sigma.exp().expand_as(mean), validate_args=False)  # NaNs: see the guard

    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        if deterministic:
            return self.mean(obs)
        return self.distribution(obs).rsample()


@dataclass
class ReinforceConfig:
    """REINFORCE learner settings (``--algo reinforce``)."""

    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate of the network"})
    scalar_lr: float | None = field(default=None, metadata={
        "help": "Adam learning rate of the single scalars (gate, log-sigma, blend bias), which Adam at lr "
                "would move by only ~lr per step; none: 1e-3 for the blend head, 1e-2 for "
                "the residual head"})
    accumulate: int = field(default=4, metadata={"help": "transitions whose gradients are summed per update"})
    baseline_momentum: float = field(default=0.9, metadata={
        "help": "momentum of the running mean of the advantage subtracted as a baseline"})
    max_grad_norm: float = field(default=10.0, metadata={"help": "gradient-norm clip (0 = off)"})


# the option dataclasses of ``make_algorithm`` (their fields but latent_channels and observation)
CONFIG_CLASSES = (ReinforcePolicyConfig, ReinforceConfig)


class Reinforce:
    """REINFORCE with a running reward baseline; see the module docstring."""

    def __init__(self, policy: ReinforcePolicy, config: ReinforceConfig | None = None) -> None:
        self.policy = policy
        self.config = config or ReinforceConfig()
        if self.config.accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {self.config.accumulate}")
        scalars = policy.scalar_parameters()
        network = [p for p in policy.parameters() if all(p is not s for s in scalars)]
        scalar_lr = self.config.scalar_lr or DEFAULT_SCALAR_LR[policy.config.head]
        self.optimizer = torch.optim.Adam(
            [{"params": network, "lr": self.config.lr}, {"params": scalars, "lr": scalar_lr}]
        )
        self.running_baseline = 0.0
        self.updates = 0
        self.transitions = 0

    def train_episode(self, env) -> list[dict[str, float]]:
        """One episode on ``env`` (a ``LatentStyleEnv``): sample, step, accumulate, update."""
        self.policy.train()
        logs: list[dict[str, float]] = []
        pending: list[float] = []  # advantages of the transitions whose gradients are accumulated
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(env, "adopt"):
            env.adopt(self.policy)
        obs, done = env.reset(), False
        while not done:
            dist = self.policy.distribution(obs)
            delta = dist.sample()  # = mean + sigma * eps, no gradient through the action itself
            if not torch.isfinite(delta).all():
                self.optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(
                    f"the policy produced a non-finite residual at frame {env.t} of clip {env.clip.name}; "
                    "the step was stopped and the policy left unchanged"
                )
            obs, step = env.step(delta)
            done = step.done
            weight = step.advantage - self.running_baseline
            loss = -weight * dist.log_prob(delta).sum()
            if not math.isfinite(step.advantage) or not torch.isfinite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(
                    f"non-finite {'reward' if not math.isfinite(step.advantage) else 'loss'} at frame {step.t} of clip "
                    f"{env.clip.name} (advantage {step.advantage}, loss {loss.item()}); "
                    "the step was stopped and the policy left unchanged"
                )
            (loss / self.config.accumulate).backward()
            pending.append(step.advantage)
            self.transitions += 1
            logs.append({**step.scalars(), "loss": loss.item(), "sigma": self.policy.log_sigma.exp().item()})
            if len(pending) == self.config.accumulate or done:
                self._update(pending)
                pending = []
        return logs

    def _update(self, advantages: list[float]) -> None:
        """One optimiser step on the accumulated gradients, then the running baseline."""
        params = [p for p in self.policy.parameters() if p.requires_grad]
        synchronized_step(self.optimizer, params, len(advantages), self.config.accumulate, self.config.max_grad_norm)
        mean_advantage = mean_over_processes(sum(advantages) / len(advantages))
        m = self.config.baseline_momentum if self.updates else 0.0  # the first update sets it
        self.running_baseline = m * self.running_baseline + (1 - m) * mean_advantage
        self.updates += 1

    def to(self, device: torch.device | str) -> Reinforce:
        self.policy.to(device)  # in place: the optimiser keeps its parameters
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "running_baseline": self.running_baseline,
            "updates": self.updates,
            "transitions": self.transitions,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.running_baseline = float(state["running_baseline"])
        self.updates = int(state["updates"])
        self.transitions = int(state["transitions"])


def make_algorithm(observation: str, latent_channels: int, **options: Any) -> Reinforce:
    """A ``Reinforce`` learner for a fresh ``ReinforcePolicy``; ``options`` are fields of
    ``ReinforcePolicyConfig`` (hidden, input_skip, init_gate, init_log_sigma, head, init_alpha, flow_warp,
    observation_flow) or ``ReinforceConfig``."""
    policy_config, learner_config = build_configs(observation, latent_channels, options, ReinforceConfig, "REINFORCE")
    return Reinforce(ReinforcePolicy(policy_config), learner_config)


def build_configs(observation: str, latent_channels: int, options: dict[str, Any], learner_class: type,
                  algorithm: str) -> tuple[ReinforcePolicyConfig, Any]:
    """``options`` split into a ``ReinforcePolicyConfig`` and a ``learner_class`` config; unknown names are a
    TypeError that lists the known ones (``algorithm`` names the learner in it)."""
    policy_fields = {f.name for f in dataclasses.fields(ReinforcePolicyConfig)} - {"observation", "latent_channels"}
    learner_fields = {f.name for f in dataclasses.fields(learner_class)}
    unknown = set(options) - policy_fields - learner_fields
    if unknown:
        raise TypeError(f"unknown {algorithm} option(s) {sorted(unknown)}; known: {sorted(policy_fields | learner_fields)}")
    policy_config = ReinforcePolicyConfig(latent_channels, observation,
                                          **{k: v for k, v in options.items() if k in policy_fields})
    return policy_config, learner_class(**{k: v for k, v in options.items() if k in learner_fields})
