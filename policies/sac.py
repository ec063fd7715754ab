"""SAC latent-action agent: a planner's low-dimensional plan, decoded into the latent residual.

After RL-NST / RL-I2IT (Feng et al., "Controlling Neural Style Transfer with
Deep Reinforcement Learning", IJCAI 2023) on top of Soft Actor-Critic
(Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018), with
the update written out in one place as in CleanRL's ``sac_continuous_action.py``.
Networks: ``policies.sac_networks``; SAC pieces: ``policies.sac_core``.

The RL action is the tanh-squashed Gaussian *plan* (N,P,ceil(h/s),ceil(w/s))
of the planner, not the residual itself; the decoder ("actor") maps plan and
observation to delta (N,C,h,w) through a gate that starts at 0, so the
untrained agent is the frame-by-frame baseline. ``SACPolicy.act`` with
``deterministic=True`` decodes tanh(mean) of the plan.

Per environment step (``LatentSAC.train_episode``):

1. act: plan ~ pi(.|obs_t), delta = decoder(plan, obs_t), step the env;
2. store (obs_t, plan, r_t, obs_{t+1}, done) with the SAC reward
   r_t = reward_scale * (r_t(policy) - r_t(baseline)), the advantage over the
   frame-by-frame baseline (the per-frame difficulty cancels, and it is in the
   units of the normalised reward terms); done = 1 after the clip's last frame;
3. after ``warmup`` stored transitions, ``updates_per_step`` times
   ``LatentSAC.update`` on a replay batch: critics, planner, temperature,
   Polyak targets (see there);
4. style learning (RL-NST's auxiliary step, ``style_learning``, default on):
   planner + decoder take a gradient step on -r_t of the current frame
   through the env's differentiable ``render``/``score`` with a freshly
   sampled, reparameterised plan (temporal term against the previous output,
   held fixed). The decoder learns only here: with ``style_learning=False``
   it stays at its initialisation, so ``init_gate`` must then be non-zero.

Replay: one ``sac_core.ReplayBuffer`` of ``buffer_size`` transitions per
observation shape (clips of different aspect ratios have different latent
sizes); batches are drawn from the buffer of the current clip's shape, at
most ``batch_size`` (fewer while it holds fewer). The buffers live on the CPU
and are NOT checkpointed (a 128 px flow transition is ~110 kB): after a
resume they refill and updates wait for ``warmup`` new transitions again, so a
resumed run does not replay exactly as an uninterrupted one.

Gradients of every optimiser step are averaged over processes
(``policies.parallel``); non-finite rewards, losses or gradients raise
``FloatingPointError`` before the optimiser step they would corrupt.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policies.base import Policy, register_policy
from policies.parallel import average_gradients
from policies.sac_core import (
    EntropyTemperature,
    ReplayBuffer,
    TwinCritic,
    load_state_dicts,
    polyak_update,
    state_dicts,
    twin_q_target,
)
from policies.sac_networks import (
    CriticConfig,
    PlanDecoder,
    Planner,
    QNetwork,
    SACPolicyConfig,
)

TRANSITION_FIELDS = ("obs", "plan", "reward", "next_obs", "done")


@register_policy
class SACPolicy(Policy):
    """Planner + plan decoder; ``act`` returns decoder(plan, obs) for the plan's mode or a sample."""

    kind = "sac"
    config_class = SACPolicyConfig

    def __init__(self, config: SACPolicyConfig) -> None:
        super().__init__(config)
        self.planner = Planner(config)
        self.decoder = PlanDecoder(config)

    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        plan, _ = self.planner.sample(obs, deterministic=deterministic)
        return self.decoder(plan, obs)


@dataclass
class SACConfig:
    """Learner settings.

    ``lr``: Adam for planner and decoder; ``scalar_lr`` for the decoder's gate
    (a single scalar, as REINFORCE's); ``critic_lr``, ``alpha_lr`` for the
    critics and the temperature. ``gamma`` discount over the frames of a clip
    (the temporal term of frame t+1 depends on frame t's output); ``tau``
    Polyak factor; ``init_alpha`` and per-element ``target_entropy`` of the
    temperature; ``reward_scale`` multiplies the advantage; ``max_grad_norm``
    clips every step's gradients (0 = off); ``critic_hidden`` critic width.
    """

    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate of the planner and decoder"})
    scalar_lr: float = field(default=1e-3, metadata={"help": "Adam learning rate of the decoder's gate"})
    critic_lr: float = field(default=3e-4, metadata={"help": "Adam learning rate of the critics"})
    alpha_lr: float = field(default=3e-4, metadata={"help": "Adam learning rate of the entropy temperature"})
    gamma: float = field(default=0.9, metadata={"help": "discount over the frames of a clip, in [0,1]"})
    tau: float = field(default=0.005, metadata={"help": "Polyak factor of the target critics, in [0,1]"})
    batch_size: int = field(default=16, metadata={"help": "replay batch size"})
    buffer_size: int = field(default=1000, metadata={"help": "replay buffer capacity (transitions)"})
    warmup: int = field(default=64, metadata={"help": "transitions stored before the first update"})
    updates_per_step: int = field(default=1, metadata={"help": "gradient updates per environment step"})
    init_alpha: float = field(default=0.1, metadata={"help": "initial entropy temperature"})
    target_entropy: float = field(default=-1.0, metadata={"help": "target entropy per plan element"})
    reward_scale: float = field(default=1.0, metadata={"help": "multiplies the advantage used as reward"})
    style_learning: bool = field(default=True, metadata={
        "help": "also train the decoder through the differentiable reward (style learning)"})
    max_grad_norm: float = field(default=10.0, metadata={"help": "gradient-norm clip of every step (0 = off)"})
    critic_hidden: int = field(default=64, metadata={"help": "channels of the critics' convolutions"})

    def __post_init__(self) -> None:
        for name in ("batch_size", "buffer_size", "updates_per_step", "critic_hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SAC option {name} must be a positive integer, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"SAC option warmup must be >= 0, got {self.warmup}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"SAC options gamma and tau must be in [0, 1], got {self.gamma}, {self.tau}")


def _check_finite(value: float | Tensor, what: str) -> None:
    if not math.isfinite(float(value)):
        raise FloatingPointError(f"non-finite {what} ({float(value)}); the step was stopped before updating the networks")


# What LatentSAC.state_dict holds besides its counters.
_CHECKPOINTED = ("policy", "critic", "critic_target", "temperature", "policy_optimizer", "critic_optimizer",
                 "alpha_optimizer")


class LatentSAC:
    """The SAC learner of a ``SACPolicy``: critics and their targets, temperature, optimisers, replay."""

    def __init__(self, policy: SACPolicy, config: SACConfig | None = None) -> None:
        self.policy = policy
        self.config = cfg = config or SACConfig()
        pcfg = policy.config
        if not cfg.style_learning and pcfg.init_gate == 0:
            raise ValueError(
                "style_learning=False with init_gate=0 can never leave the baseline: the decoder learns only "
                "by style learning, and a zero gate blocks the plan; set init_gate > 0 or keep style learning"
            )
        critic = CriticConfig(pcfg.observation_channels, pcfg.plan_channels, pcfg.plan_stride, cfg.critic_hidden)
        self.critic = TwinCritic(lambda: QNetwork(critic))
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.temperature = EntropyTemperature(cfg.target_entropy, cfg.init_alpha)
        gate = policy.decoder.gate
        network = [p for p in policy.parameters() if p is not gate]
        self.policy_optimizer = torch.optim.Adam(
            [{"params": network, "lr": cfg.lr}, {"params": [gate], "lr": cfg.scalar_lr}]
        )
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_optimizer = torch.optim.Adam(self.temperature.parameters(), lr=cfg.alpha_lr)
        self.buffers: dict[tuple[int, ...], ReplayBuffer] = {}
        self.stored = 0  # transitions stored since construction or load (the buffers are not checkpointed)
        self.transitions = 0
        self.updates = 0
        self.style_updates = 0

    # ----------------------------------------------------------------- devices
    def to(self, device: str | torch.device) -> LatentSAC:
        """Move every network (policy, critics, targets, temperature) to ``device``; replay stays on the CPU."""
        for module in (self.policy, self.critic, self.critic_target, self.temperature):
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def _follow_policy_device(self) -> None:
        """The training loop moves only ``policy``: bring the learner's other networks along."""
        if self.temperature.log_alpha.device != self.device:
            self.to(self.device)

    # ------------------------------------------------------------ optimisation
    def _step(self, optimizer: torch.optim.Optimizer, loss: Tensor, params: Iterable[nn.Parameter], what: str) -> None:
        """One optimiser step on ``loss`` for ``params`` only: gradients, process average, NaN guard, clip, step."""
        params = [p for p in params if p.requires_grad]
        _check_finite(loss.detach(), f"{what} loss")
        optimizer.zero_grad(set_to_none=True)
        for p, grad in zip(params, torch.autograd.grad(loss, params, allow_unused=True)):
            p.grad = grad
        average_gradients(params)
        if not all(torch.isfinite(p.grad).all() for p in params if p.grad is not None):
            optimizer.zero_grad(set_to_none=True)
            raise FloatingPointError(f"non-finite {what} gradient; the update was skipped and the networks left unchanged")
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def update(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One SAC update on a replay ``batch``: {obs, plan, reward, next_obs, done} (each (B,...), on the device).

        Returns the losses and statistics as floats.
        """
        cfg, planner = self.config, self.policy.planner
        obs, plan, reward, next_obs, done = (batch[name] for name in TRANSITION_FIELDS)
        alpha = self.temperature.alpha

        # 1. Critics: twin soft-Q regression onto r + gamma (1 - done) (min Q_target(s', a') - alpha log pi(a'|s')),
        #    a' ~ pi(.|s') from the current planner.
        with torch.no_grad():
            next_plan, next_log_prob = planner.sample(next_obs)
            next_q1, next_q2 = self.critic_target(next_obs, next_plan)
            target = twin_q_target(reward, done, next_q1, next_q2, next_log_prob, alpha, cfg.gamma)
        q1, q2 = self.critic(obs, plan)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self._step(self.critic_optimizer, critic_loss, self.critic.parameters(), "critic")

        # 2. Planner: minimise alpha log pi(a|s) - min(Q1, Q2)(s, a), a reparameterised (gradients to the planner only).
        new_plan, log_prob = planner.sample(obs)
        planner_loss = (alpha * log_prob - torch.min(*self.critic(obs, new_plan))).mean()
        self._step(self.policy_optimizer, planner_loss, planner.parameters(), "planner")

        # 3. Entropy temperature: raise alpha while the plan's entropy is below the target, lower it above.
        alpha_loss = self.temperature.loss(log_prob)
        self._step(self.alpha_optimizer, alpha_loss, self.temperature.parameters(), "temperature")

        # 4. Target critics follow the online ones.
        polyak_update(self.critic_target, self.critic, cfg.tau)
        self.updates += 1
        return {
            "critic_loss": critic_loss.item(),
            "planner_loss": planner_loss.item(),
            "alpha_loss": alpha_loss.item(),
            "alpha": self.temperature.alpha.item(),
            "q": q1.detach().mean().item(),
            "log_prob": log_prob.detach().mean().item(),
        }

    def style_learning_step(self, env, t: int, obs: Tensor, prev_frame: Tensor | None) -> float:
        """RL-NST's style learning: planner + decoder ascend the differentiable reward of frame ``t``.

        ``obs`` (1,Cobs,h,w): the frame's observation; ``prev_frame`` (1,3,H,W): the
        previous output frame (None at t=0). Returns the loss -r_t.
        """
        plan, _ = self.policy.planner.sample(obs)
        terms = env.score(t, env.render(t, self.policy.decoder(plan, obs)), prev_frame)
        loss = -terms.total.mean()
        self._step(self.policy_optimizer, loss, self.policy.parameters(), "style learning")
        self.style_updates += 1
        return loss.item()

    # ------------------------------------------------------------------ replay
    def _buffer(self, obs: Tensor) -> ReplayBuffer:
        """The replay buffer for observations of this shape (created on first use, seeded from torch's generator)."""
        key = tuple(obs.shape[1:])
        if key not in self.buffers:
            seed = int(torch.randint(2**62, (1,)).item())
            self.buffers[key] = ReplayBuffer(self.config.buffer_size, seed=seed)
        return self.buffers[key]

    def sample_batch(self, obs: Tensor) -> dict[str, Tensor]:
        """Up to ``batch_size`` stored transitions with observations shaped like ``obs``, on the device."""
        buffer = self._buffer(obs)
        batch = buffer.sample(min(self.config.batch_size, len(buffer)))
        return {name: value.to(self.device) for name, value in batch.items()}

    # ----------------------------------------------------------------- episode
    def train_episode(self, env) -> list[dict[str, float]]:
        """One episode on ``env`` (a ``LatentStyleEnv``): act, store, SAC updates, style learning; one log row per step."""
        self._follow_policy_device()
        self.policy.train()
        cfg, planner, decoder = self.config, self.policy.planner, self.policy.decoder
        logs: list[dict[str, float]] = []
        obs, prev_frame, done = env.reset(), None, False
        while not done:
            t = env.t
            with torch.no_grad():
                plan, _ = planner.sample(obs)
                delta = decoder(plan, obs)
                if not torch.isfinite(delta).all():
                    raise FloatingPointError(
                        f"the agent produced a non-finite residual at frame {t} of clip {env.clip.name}; "
                        "the step was stopped before updating the networks"
                    )
                next_obs, step = env.step(delta)
            done = step.done
            _check_finite(step.advantage, f"advantage at frame {t} of clip {env.clip.name}")
            reward = cfg.reward_scale * step.advantage
            self._buffer(obs).add(
                obs=obs, plan=plan, reward=obs.new_tensor([reward]), next_obs=next_obs, done=obs.new_tensor([float(done)])
            )
            self.stored += 1
            self.transitions += 1
            row = {**step.scalars(), "sac_reward": reward, "gate": decoder.gate.item()}
            if self.stored >= cfg.warmup:
                for _ in range(cfg.updates_per_step):
                    row.update(self.update(self.sample_batch(obs)))
            if cfg.style_learning:
                row["style_learning_loss"] = self.style_learning_step(env, t, obs, prev_frame)
            logs.append(row)
            obs, prev_frame = next_obs, step.frame
        return logs

    # ------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Networks, target critics, temperature, optimisers and counters (not the replay buffers)."""
        return {
            **state_dicts(self, _CHECKPOINTED),
            "transitions": self.transitions,
            "updates": self.updates,
            "style_updates": self.style_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._follow_policy_device()
        load_state_dicts(self, state, _CHECKPOINTED)
        self.transitions = int(state["transitions"])
        self.updates = int(state["updates"])
        self.style_updates = int(state["style_updates"])
        self.buffers, self.stored = {}, 0


# the option dataclasses of ``make_algorithm`` (their fields but latent_channels and observation)
CONFIG_CLASSES = (SACPolicyConfig, SACConfig)


def make_algorithm(observation: str, latent_channels: int, **options: Any) -> LatentSAC:
    """A ``LatentSAC`` learner for a fresh ``SACPolicy``; ``options`` are fields of
    ``SACPolicyConfig`` (hidden, plan_channels, plan_stride, input_skip, init_gate, log_std_min/max)
    or ``SACConfig`` (lr, gamma, tau, batch_size, warmup, style_learning, ...)."""
    policy_fields = {f.name for f in dataclasses.fields(SACPolicyConfig)} - {"observation", "latent_channels"}
    learner_fields = {f.name for f in dataclasses.fields(SACConfig)}
    unknown = set(options) - policy_fields - learner_fields
    if unknown:
        raise TypeError(f"unknown SAC option(s) {sorted(unknown)}; known: {sorted(policy_fields | learner_fields)}")
    policy = SACPolicy(
        SACPolicyConfig(latent_channels, observation, **{k: v for k, v in options.items() if k in policy_fields})
    )
    return LatentSAC(policy, SACConfig(**{k: v for k, v in options.items() if k in learner_fields}))
