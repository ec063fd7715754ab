"""Pathwise residual learning under learned constraint multipliers: the residual policy trained by
backpropagation through the differentiable reward.

The decoder, the Gram style loss (VGG16), LPIPS and the flow warp are all differentiable, so the policy's
mean residual can follow the exact gradient of the frame's reward instead of a score-function estimate:
the "style learning" step of RL-NST (Feng et al., "Controlling Neural Style Transfer with Deep
Reinforcement Learning", IJCAI 2023) used as the whole update, on the network of ``policies.reinforce``
(its ``mean``; the Gaussian's sigma is not used). The policy then starts REINFORCE or serves as the
learned reference the RL agents are judged against.

Objective: fixed weights (Kuang & Chen's 10/1/10) let a policy trade style for stability freely. Here
flicker is minimised while style and content are held at the frame-by-frame baseline's level, as a
constrained problem solved with Lagrange multipliers (dual ascent, as in constrained RL):

    minimise  T_n   subject to  S_n <= style_target,  C_n <= content_target

with S_n, C_n, T_n the frame's raw Gram style, LPIPS content and temporal terms divided by the clip's
baseline means (``RewardScales``: the baseline scores 1 per term). With ``long_term_gap`` k > 0, T_n is the
mean of the consecutive term and the long-term one, the same masked L1 against the output k frames earlier
warped by the flow estimated directly between them (``policies.env.long_term_temporal``, over the baseline's),
from frame k on: blending passes the consecutive term while the texture drifts over time. Per frame the policy
minimises

    loss_t = (T_n + lambda_s * S_n + lambda_c * C_n) / (1 + lambda_s + lambda_c)

and after each optimiser step the multipliers rise while their term is above its target and fall
below it: log lambda_k += multiplier_lr * (mean of the term_k since the last step - target_k), clamped.

That is ``constraint="mean"``. A constraint on the mean lets the policy trade: frames, clips and styles whose
style it keeps below the target pay for others above it (on the 4 training clips and 5 styles of the shipped
recipe, Composition VII ended at 0.80-0.88x the baseline's Gram loss while Starry Night and Mondrian ended at
1.05-1.14x), and the footage where it overspends is the footage it has not seen. ``constraint="frame"`` holds
every frame instead: its terms are the excess of the frame over its own baseline frame, h_k = max(0, term_k /
baseline term_k - target_k), each weighted by lambda_k in the loss, and lambda_k rises while the mean excess is
above ``constraint_tolerance``. It is the default: over three seeds on the test clips (256 px, 24 frames) it cut
Starry Night's Gram loss from +20% to +5% of the baseline's at about the same flicker (-68% against -70%), and
the seeds' spread from +5..+41% to -3..+15% (README, "Does the learned policy help?").

Update (``Pathwise.train_episode``), one episode = one clip window in frame order: the policy's mean
delta_t for obs_t, S_t = decode(L_t + delta_t), terms against the previous output S_{t-1} (held fixed: a
one-frame truncation of backpropagation through time, as the myopic per-frame reward of the RL agents);
gradients summed over ``accumulate`` frames, averaged over processes, clipped, one Adam step, then the
multipliers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from policies.parallel import mean_over_processes, synchronized_step
from policies.reinforce import ReinforcePolicy, ReinforcePolicyConfig, build_configs
from rewards.reward import RewardScales, RewardTerms

if TYPE_CHECKING:
    from policies.env import StepResult

CONSTRAINED_TERMS = ("style", "content")
CONSTRAINT_FORMS = ("mean", "frame")  # the constraint holds the mean of a term, or every frame's (module docstring)
MAX_LOG_MULTIPLIER = 5.0  # multipliers stay in [e^-5, e^5]


@dataclass
class PathwiseConfig:
    """Learner settings (defaults: the default agent)."""

    lr: float = field(default=3e-4, metadata={"help": "Adam learning rate of the policy network"})
    accumulate: int = field(default=4, metadata={"help": "frames whose gradients are summed per update"})
    max_grad_norm: float = field(default=10.0, metadata={"help": "gradient-norm clip (0 = off)"})
    style_target: float = field(default=1.0, metadata={
        "help": "the Gram style loss the multiplier holds, relative to the frame-by-frame baseline's (1 = its level)"})
    content_target: float = field(default=0.9, metadata={
        "help": "the LPIPS content loss the multiplier holds, relative to the baseline's"})
    multiplier_lr: float = field(default=0.05, metadata={"help": "dual-ascent step of the log multipliers"})
    init_multiplier: float = field(default=1.0, metadata={"help": "initial style and content multipliers"})
    constraint: str = field(default="frame", metadata={"choices": CONSTRAINT_FORMS, "help": (
        "mean: hold the mean style and content terms at their targets; frame: hold every frame at its targets "
        "against its own baseline frame (no trading between frames, clips and styles)")})
    constraint_tolerance: float = field(default=0.02, metadata={
        "help": "with constraint=frame: the mean excess over the targets the multipliers allow"})
    long_term_gap: int = field(default=0, metadata={
        "help": "frames k between the outputs of a long-term temporal term averaged into the minimised one "
                "(0 = consecutive frames only)"})

    def __post_init__(self) -> None:
        if self.accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {self.accumulate}")
        if self.constraint not in CONSTRAINT_FORMS:
            raise ValueError(f"constraint must be one of {CONSTRAINT_FORMS}, got {self.constraint!r}")
        if not self.constraint_tolerance >= 0:
            raise ValueError(f"constraint_tolerance must be >= 0, got {self.constraint_tolerance}")
        if self.long_term_gap < 0:
            raise ValueError(f"long_term_gap must be >= 0, got {self.long_term_gap}")
        for name in ("style_target", "content_target", "init_multiplier"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


# the option dataclasses of ``make_algorithm`` (their fields but latent_channels and observation)
CONFIG_CLASSES = (ReinforcePolicyConfig, PathwiseConfig)


class Pathwise:
    """Backpropagation through the reward with constraint multipliers; see the module docstring."""

    def __init__(self, policy: ReinforcePolicy, config: PathwiseConfig | None = None) -> None:
        self.policy = policy
        self.config = config or PathwiseConfig()
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=self.config.lr)
        self.log_multipliers = {name: math.log(self.config.init_multiplier) for name in CONSTRAINED_TERMS}
        self.targets = {"style": self.config.style_target, "content": self.config.content_target}
        # the mean of each constrained value the dual ascent holds: the target itself, or the hinge's tolerance
        self.bounds = (self.targets if self.config.constraint == "mean"
                       else {name: self.config.constraint_tolerance for name in CONSTRAINED_TERMS})
        self.updates = 0
        self.transitions = 0

    def multipliers(self) -> dict[str, float]:
        return {name: math.exp(value) for name, value in self.log_multipliers.items()}

    def train_episode(self, env) -> list[dict[str, float]]:
        """One episode on ``env`` (a ``LatentStyleEnv``): act with the mean, backpropagate, update."""
        self.policy.train()
        env.adopt(self.policy)
        scales = env.clip.scales
        logs: list[dict[str, float]] = []
        pending: list[dict[str, float]] = []  # the loss's terms of the frames whose gradients are accumulated
        self.optimizer.zero_grad(set_to_none=True)
        obs, done = env.reset(), False
        while not done:
            delta = self.policy.mean(obs)
            obs, terms, long_term, step = env.step_through(delta)
            done = step.done
            temporal = terms.temporal / scales.temporal
            # the loss's terms: the normalised temporal term and the constrained values (``_constrained``)
            loss_terms = {**self._constrained(terms, step, scales),
                          "temporal": temporal if long_term is None else (temporal + long_term) / 2}
            weights = self.multipliers()
            loss = (loss_terms["temporal"] + sum(weights[k] * loss_terms[k] for k in CONSTRAINED_TERMS)).sum()
            loss = loss / (1 + sum(weights.values()))
            if not torch.isfinite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(f"non-finite loss at frame {step.t} of clip {env.clip.name}; "
                                         "the step was stopped and the policy left unchanged")
            (loss / self.config.accumulate).backward()
            pending.append({k: v.item() for k, v in loss_terms.items()})
            self.transitions += 1
            logs.append({**step.scalars(), "loss": loss.item(), **{f"multiplier_{k}": v for k, v in weights.items()},
                         **({} if long_term is None else {"long_term_temporal": long_term.item()})})
            if len(pending) == self.config.accumulate or done:
                self._update(pending)
                pending = []
        return logs

    def _constrained(self, terms: RewardTerms, step: StepResult, scales: RewardScales) -> dict[str, torch.Tensor]:
        """The constrained values of a frame (each (1,), differentiable): its style and content terms over the
        clip's baseline means (``constraint="mean"``), or their hinge excess over the targets against the
        frame's own baseline terms (``"frame"``)."""
        if self.config.constraint == "mean":
            return {name: getattr(terms, name) / getattr(scales, name) for name in CONSTRAINED_TERMS}
        return {name: torch.relu(getattr(terms, name) / max(step.baseline_terms[name], 1e-12) - self.targets[name])
                for name in CONSTRAINED_TERMS}

    def _update(self, frames: list[dict[str, float]]) -> None:
        """One optimiser step on the accumulated gradients, then dual ascent on the multipliers."""
        params = [p for p in self.policy.parameters() if p.requires_grad]
        synchronized_step(self.optimizer, params, len(frames), self.config.accumulate, self.config.max_grad_norm)
        for name in CONSTRAINED_TERMS:
            excess = mean_over_processes(sum(f[name] for f in frames) / len(frames)) - self.bounds[name]
            value = self.log_multipliers[name] + self.config.multiplier_lr * excess
            self.log_multipliers[name] = min(max(value, -MAX_LOG_MULTIPLIER), MAX_LOG_MULTIPLIER)
        self.updates += 1

    def to(self, device: torch.device | str) -> Pathwise:
        self.policy.to(device)  # in place: the optimiser keeps its parameters
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "log_multipliers": dict(self.log_multipliers), "updates": self.updates,
                "transitions": self.transitions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.log_multipliers = {name: float(state["log_multipliers"][name]) for name in CONSTRAINED_TERMS}
        self.updates = int(state["updates"])
        self.transitions = int(state["transitions"])


def make_algorithm(observation: str, latent_channels: int, **options: Any) -> Pathwise:
    """A ``Pathwise`` learner for a fresh ``ReinforcePolicy``; ``options`` are fields of
    ``ReinforcePolicyConfig`` or ``PathwiseConfig``."""
    policy_config, learner_config = build_configs(observation, latent_channels, options, PathwiseConfig, "pathwise")
    return Pathwise(ReinforcePolicy(policy_config), learner_config)
