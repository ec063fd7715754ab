"""RLMiniStyler learner: step-wise SAC on the latent action plus supervised learning of actor + builder.

One call of ``MiniStylerAgent.update(batch, index)`` is one training
iteration of the public code (``rl/agent.py``, ``Agent.optimize``), on a
replay batch of (moving image, style image, style id, action, reward, next
moving image, done), in this order:

1. critic: twin Q regression onto the soft Bellman target
   r + gamma (min Q_target(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s');
2. every ``actor_every`` iterations: the entropy temperature (loss
   -log_alpha (log pi + target_entropy)), then the actor on
   alpha log pi(a|s) - min Q(s, a), a reparameterised;
3. supervised ("style learning"): a reparameterised action of the state,
   built under the style code of the batch's style images into the next
   moving image, trains actor + builder + uncertainty weights on
   content (to the current moving image) + style (to the style image) +
   style-code contrast (between the result's and the style images' codes);
4. Polyak update of the target critics.

Optimisers as the public code: Adam, betas (0.5, 0.9), learning rate ``lr``
(the paper: 2e-4) for builder, critics, temperature and weights, ``lr / 10``
for the actor. Rewards are r = -style term of the next moving image
(``reward``; ``train.py`` computes them when acting). Log-probabilities are
averaged over the action's elements, so the entropy target is per element
(default -1, i.e. -dim(A) / dim(A)).

Entropy temperature: the public code starts at alpha = 1 with a target of
-64^3 compared against per-element log-probabilities, so its alpha only
decays (by about the learning rate per update). Here the target is a proper
per-element one and alpha starts at 0.1 (this port's choice): in a 300-update
CPU run with alpha starting at 1 (and the actor at the full learning rate)
the action's standard deviation ran to its upper bound e^2 and the builder
learnt to paint the noise; starting at 0.1 (actor at lr / 10) it stayed
below 1 and the step-wise stylization began to show (both runs with the
public builder; ``train.py`` notes what the current model reaches).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.rlministyler.losses import (
    MiniStylerObjective,
    UncertaintyWeights,
    contrastive_loss,
)
from baselines.rlministyler.models import QNetwork, RLMiniStyler
from policies.sac_core import (
    EntropyTemperature,
    TwinCritic,
    load_state_dicts,
    polyak_update,
    state_dicts,
    twin_q_target,
)


@dataclass
class AgentConfig:
    """Optimisation settings (defaults: the paper / the public code)."""

    lr: float = 2e-4
    actor_lr_factor: float = 0.1
    betas: tuple[float, float] = (0.5, 0.9)
    gamma: float = 0.99
    tau: float = 0.005
    actor_every: int = 1
    init_alpha: float = 0.1
    target_entropy: float = -1.0

    def __post_init__(self) -> None:
        if self.actor_every < 1:
            raise ValueError(f"actor_every must be >= 1, got {self.actor_every}")
        if not 0 <= self.gamma <= 1 or not 0 <= self.tau <= 1:
            raise ValueError(f"gamma and tau must be in [0, 1], got {self.gamma}, {self.tau}")
        if not self.lr > 0 or not self.actor_lr_factor > 0:
            raise ValueError(f"lr and actor_lr_factor must be positive, got {self.lr}, {self.actor_lr_factor}")


# What MiniStylerAgent.state_dict holds: networks, temperature, uncertainty weights and the optimisers.
_CHECKPOINTED = ("model", "critic", "critic_target", "temperature", "loss_weights", "actor_optim", "builder_optim",
                 "critic_optim", "alpha_optim", "weights_optim")


class MiniStylerAgent:
    """The model (actor + builder), twin critic and its target, temperature, uncertainty weights, optimisers."""

    def __init__(
        self, model: RLMiniStyler, objective: MiniStylerObjective, config: AgentConfig | None = None
    ) -> None:
        self.config = cfg = config or AgentConfig()
        self.model = model
        self.objective = objective
        self.critic = TwinCritic(lambda: QNetwork(model.config))
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.temperature = EntropyTemperature(cfg.target_entropy, cfg.init_alpha)
        self.loss_weights = UncertaintyWeights()

        def adam(module: torch.nn.Module, lr: float) -> torch.optim.Adam:
            return torch.optim.Adam(module.parameters(), lr=lr, betas=cfg.betas)

        self.actor_optim = adam(model.actor, cfg.lr * cfg.actor_lr_factor)
        self.builder_optim = adam(model.builder, cfg.lr)
        self.critic_optim = adam(self.critic, cfg.lr)
        self.alpha_optim = adam(self.temperature, cfg.lr)
        self.weights_optim = adam(self.loss_weights, cfg.lr)

    def to(self, device: str | torch.device) -> MiniStylerAgent:
        for module in (self.model, self.objective, self.critic, self.critic_target, self.temperature,
                       self.loss_weights):
            module.to(device)
        return self

    @torch.no_grad()
    def reward(self, next_images: Tensor, style_features: dict[str, Tensor]) -> Tensor:
        """Reward (N,) of reaching ``next_images``: minus their style term against ``style_features``."""
        return -self.objective.style(self.objective.features(next_images), style_features)

    def update(self, batch: dict[str, Tensor], index: int) -> dict[str, float]:
        """One training iteration on a replay ``batch`` (see the module doc); returns the losses as floats.

        ``batch``: ``state``, ``next_state`` (N,3,H,W) and ``style`` (N,3,S,S)
        in [0,1], ``style_id`` (N,) integers, ``action`` (N,C,H/4,W/4),
        ``reward``, ``done`` (N,). ``index`` counts iterations.
        """
        cfg, model, objective = self.config, self.model, self.objective
        state, style, action = batch["state"], batch["style"], batch["action"]
        reward, done, next_state = batch["reward"], batch["done"], batch["next_state"]
        logs: dict[str, float] = {}

        # 1. Critic: twin Q regression onto the soft Bellman target.
        with torch.no_grad():
            next_action, next_log_prob, _ = model.policy(next_state)
            next_q1, next_q2 = self.critic_target(next_state, next_action)
            target = twin_q_target(reward, done, next_q1, next_q2, next_log_prob, self.temperature.alpha, cfg.gamma)
        q1, q2 = self.critic(state, action)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_optim.zero_grad()
        critic_loss.backward()
        self.critic_optim.step()
        logs.update(critic_loss=critic_loss.item(), q=q1.mean().item())

        # 2. Entropy temperature, then the actor (reparameterised), as the public code.
        if index % cfg.actor_every == 0:
            pi_action, log_prob, _ = model.policy(state)
            alpha_loss = self.temperature.loss(log_prob)
            self.alpha_optim.zero_grad()
            alpha_loss.backward()
            self.alpha_optim.step()
            self.critic.requires_grad_(False)
            pi_q1, pi_q2 = self.critic(state, pi_action)
            self.critic.requires_grad_(True)
            actor_loss = (self.temperature.alpha * log_prob - torch.min(pi_q1, pi_q2)).mean()
            self.actor_optim.zero_grad()
            actor_loss.backward()
            self.actor_optim.step()
            logs.update(actor_loss=actor_loss.item(), alpha_loss=alpha_loss.item(),
                        alpha=self.temperature.alpha.item(), log_prob=log_prob.mean().item())

        # 3. Supervised learning of actor + builder + uncertainty weights.
        with torch.no_grad():
            state_features = objective.features(state)
            style_features = objective.features(style)
        code = model.style_code(style)
        out = model.step(state, code)
        features = objective.features(out.image)
        terms = {
            "content": objective.content(features, state_features).mean(),
            "style": objective.style(features, style_features).mean(),
        }
        contrast = contrastive_loss(model.style_code(out.image), code, batch["style_id"])
        if contrast is not None:
            terms["contrastive"] = contrast
        loss = self.loss_weights(terms)
        self.actor_optim.zero_grad()
        self.builder_optim.zero_grad()
        self.weights_optim.zero_grad()
        loss.backward()
        self.actor_optim.step()
        self.builder_optim.step()
        self.weights_optim.step()
        logs.update({name: value.item() for name, value in terms.items()}, supervised_loss=loss.item())
        logs.update({f"w_{name}": weight for name, weight in self.loss_weights.weights().items()})

        # 4. Target critics follow by Polyak averaging.
        polyak_update(self.critic_target, self.critic, cfg.tau)
        return logs

    def state_dict(self) -> dict:
        """Everything the learner holds, for checkpoints (the objective is a frozen VGG, rebuilt)."""
        return state_dicts(self, _CHECKPOINTED)

    def load_state_dict(self, state: dict) -> None:
        load_state_dicts(self, state, _CHECKPOINTED)
