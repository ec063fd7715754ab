"""RL-NST learner: step-wise SAC on the latent action plus style learning of actor + stylizer.

One call of ``RLNSTAgent.update(batch, index)`` is one training iteration of
the public RL-I2IT code (``brain.py`` / ``sac.py``), in this order:

1. critic: twin Q regression onto the soft Bellman target
   r + gamma (min Q_target(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s');
2. actor (every ``actor_every`` iterations): minimise
   alpha log pi(a|s) - min Q(s, a) with a reparameterised; then the entropy
   temperature with the loss -log_alpha (log pi + target_entropy);
3. Polyak update of the target critics;
4. style learning: actor + stylizer minimise
   content + lambda style + beta TV of the next moving image, plus, for the
   video model, zeta times the compound temporal regularisation.

The content term anchors the next moving image to ``AgentConfig.anchor``:
``"state"`` (default), the current moving image s_k, as the public video
code: every step is then a one-step stylization of the previous result, so
the degree of stylization grows with the number of steps, the paper's
control knob. ``"content"``, the content image, as the public image code:
the ideal model is then idempotent after the first step and later steps only
add style through the model's imperfection (observed here: after short
training the style loss stays flat from step 1 to step 10).

Fixes to the public image code: its temperature step back-propagated alpha
instead of the temperature loss, and its actor loss sampled the action
without reparameterisation so the Q term never reached the actor; here both
follow Haarnoja et al. 2018. Rewards are r = -reward_scale * lambda * style
of the next moving image (``train.py`` computes them when acting). Log
probabilities are averaged over the action's elements, so the entropy target
is per element (default -1, i.e. -dim(A) / dim(A)) and the entropy term does
not grow with the image size.

Video model: a transition also holds the actor's step-wise hidden state and
the stylizer's frame-wise hidden state the step was taken with; updates run
the networks from those (detached, one step of back-propagation through time,
as the public code). The next state's step hidden state is recomputed from
(s, h_step) with the current actor. The compound regularisation uses the
action mean (inference behaviour) and the same hidden states for both calls.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.rlnst.losses import RLNSTObjective
from baselines.rlnst.models import RLNST, Critic, CriticConfig, Hidden
from baselines.rlnst.regularization import (
    CompoundRegularizationConfig,
    compound_regularization,
    random_perturbation,
)
from policies.sac_core import (
    EntropyTemperature,
    TwinCritic,
    load_state_dicts,
    polyak_update,
    state_dicts,
    twin_q_target,
)

ANCHORS = ("state", "content")


@dataclass
class AgentConfig:
    """Optimisation settings (defaults: the public RL-I2IT image code / the paper)."""

    lr: float = 1e-4
    critic_lr: float = 1e-5
    betas: tuple[float, float] = (0.5, 0.9)
    gamma: float = 0.99
    tau: float = 0.005
    actor_every: int = 2
    init_alpha: float = math.exp(-0.3)
    target_entropy: float = -1.0
    reward_scale: float = 1.0
    content_weight: float = 1.0
    style_weight: float = 1e5
    tv_weight: float = 1e-7
    temporal_weight: float = 0.0
    anchor: str = "state"
    regularization: CompoundRegularizationConfig = field(default_factory=CompoundRegularizationConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)

    def __post_init__(self) -> None:
        if self.actor_every < 1:
            raise ValueError(f"actor_every must be >= 1, got {self.actor_every}")
        if not 0 <= self.gamma <= 1 or not 0 <= self.tau <= 1:
            raise ValueError(f"gamma and tau must be in [0, 1], got {self.gamma}, {self.tau}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {self.anchor!r}")


# What RLNSTAgent.state_dict holds besides the generator's state.
_CHECKPOINTED = ("model", "critic", "critic_target", "temperature", "actor_optim", "stylizer_optim", "critic_optim",
                 "alpha_optim")


class RLNSTAgent:
    """The model (actor + stylizer), twin critic and its target, temperature, optimisers and objective.

    ``objective`` scores images against the style (built by the caller, it
    holds the style image). ``generator`` drives the compound
    regularisation's random motions.
    """

    def __init__(
        self,
        model: RLNST,
        objective: RLNSTObjective,
        config: AgentConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.config = config or AgentConfig()
        cfg = self.config
        self.model = model
        self.objective = objective
        self.critic = TwinCritic(lambda: Critic(cfg.critic))
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.temperature = EntropyTemperature(cfg.target_entropy, cfg.init_alpha)
        self.actor_optim = torch.optim.Adam(model.actor.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.stylizer_optim = torch.optim.Adam(model.stylizer.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, betas=cfg.betas)
        self.alpha_optim = torch.optim.Adam(self.temperature.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.generator = generator or torch.Generator()

    @staticmethod
    def _step(loss: Tensor, name: str, *optimizers: torch.optim.Optimizer) -> None:
        """Back-propagate ``loss`` and step ``optimizers``; a non-finite loss raises before any change."""
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite {name} ({loss.item()})")
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()

    def to(self, device: str | torch.device) -> RLNSTAgent:
        for module in (self.model, self.objective, self.critic, self.critic_target, self.temperature):
            module.to(device)
        return self

    @torch.no_grad()
    def reward(self, next_images: Tensor) -> Tensor:
        """Reward (N,) of reaching ``next_images``: -reward_scale * lambda * style term."""
        return -self.config.reward_scale * self.config.style_weight * self.objective.style(next_images)

    def update(self, batch: dict[str, Tensor], index: int) -> dict[str, float]:
        """One training iteration on a replay ``batch`` (see module doc); returns the losses as floats.

        ``batch``: ``state``, ``next_state`` (N,3,H,W) [0,1] (and ``content``
        for ``anchor="content"``), ``action`` (N,1,H/4,W/4), ``reward``,
        ``done`` (N,); video model also
        ``step_hidden``, ``frame_hidden`` (N,C,H/4,W/4). ``index`` counts
        iterations (actor and temperature update when it is a multiple of
        ``actor_every``). A non-finite loss raises ``FloatingPointError``
        before it changes any weights.
        """
        cfg, model = self.config, self.model
        state, action = batch["state"], batch["action"]
        anchor = batch["content"] if cfg.anchor == "content" else state
        reward, done, next_state = batch["reward"], batch["done"], batch["next_state"]
        hidden = Hidden(batch["step_hidden"], batch["frame_hidden"]) if model.is_video else Hidden()
        logs: dict[str, float] = {}

        # 1. Critic: twin Q regression onto the soft Bellman target.
        with torch.no_grad():
            next_step_hidden = model.actor(state, hidden.step).step_hidden if model.is_video else None
            next_action, next_log_prob, _ = model.policy(next_state, next_step_hidden)
            next_q1, next_q2 = self.critic_target(next_state, next_action)
            target = twin_q_target(
                reward, done, next_q1, next_q2, next_log_prob, self.temperature.alpha, cfg.gamma
            )
        q1, q2 = self.critic(state, action)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self._step(critic_loss, "critic loss", self.critic_optim)
        logs.update(critic_loss=critic_loss.item(), q=q1.mean().item())

        # 2. Actor (reparameterised) and entropy temperature.
        if index % cfg.actor_every == 0:
            pi_action, log_prob, _ = model.policy(state, hidden.step)
            self.critic.requires_grad_(False)
            pi_q1, pi_q2 = self.critic(state, pi_action)
            self.critic.requires_grad_(True)
            actor_loss = (self.temperature.alpha * log_prob - torch.min(pi_q1, pi_q2)).mean()
            self._step(actor_loss, "actor loss", self.actor_optim)
            alpha_loss = self.temperature.loss(log_prob)
            self._step(alpha_loss, "temperature loss", self.alpha_optim)
            logs.update(
                actor_loss=actor_loss.item(),
                alpha_loss=alpha_loss.item(),
                alpha=self.temperature.alpha.item(),
                log_prob=log_prob.mean().item(),
            )

        # 3. Target critics follow by Polyak averaging.
        polyak_update(self.critic_target, self.critic, cfg.tau)

        # 4. Style learning of actor + stylizer (+ compound temporal regularisation).
        out = model.step(state, hidden)
        terms = self.objective(out.image, anchor)
        loss = (
            cfg.content_weight * terms.content + cfg.style_weight * terms.style + cfg.tv_weight * terms.tv
        ).mean()
        logs.update(
            content=terms.content.mean().item(),
            style=terms.style.mean().item(),
            tv=terms.tv.mean().item(),
        )
        if cfg.temporal_weight > 0:
            flow, noise = random_perturbation(state, cfg.regularization, self.generator)
            temporal = compound_regularization(
                lambda x: model.step(x, hidden, deterministic=True).image, state, flow, noise
            )
            loss = loss + cfg.temporal_weight * temporal
            logs["temporal"] = temporal.item()
        self._step(loss, "style-learning loss", self.actor_optim, self.stylizer_optim)
        logs["style_learning_loss"] = loss.item()
        return logs

    def state_dict(self) -> dict:
        """Everything the learner holds, for checkpoints (the objective is rebuilt from the style image)."""
        return {**state_dicts(self, _CHECKPOINTED), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        load_state_dicts(self, state, _CHECKPOINTED)
        self.generator.set_state(state["generator"])
