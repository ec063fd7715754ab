"""Soft Actor-Critic building blocks shared by the project's SAC agents.

Haarnoja et al., "Soft Actor-Critic Algorithms and Applications" (2018,
arXiv:1812.05905): a replay buffer, twin Q-functions (``TwinCritic``) with the clipped
double-Q soft target, Polyak-averaged target networks and an automatically
tuned entropy temperature. Generic over what a transition holds (images,
latents, recurrent states): the agents (``baselines.rlnst.agent``, the latent
SAC agent of ``policies``) write their update step around these pieces.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn


class ReplayBuffer:
    """Fixed-capacity ring buffer of transitions held in preallocated tensors.

    ``add(**fields)`` stores a batch of B transitions: every field is a tensor
    whose first dimension is B (use shape (B,) for scalars such as rewards).
    The fields, their per-transition shapes and dtypes are fixed by the first
    ``add``; storage is allocated then (``capacity`` rows per field, on
    ``device``) and later adds must match. When full, the oldest transitions
    are overwritten. ``sample(n)`` draws n distinct stored transitions
    uniformly with the buffer's own generator (seeded by ``seed``), so the
    draws depend only on the seed and the order of calls.
    """

    def __init__(self, capacity: int, seed: int | None = None, device: str | torch.device = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be a positive number of transitions, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self._generator = torch.Generator()
        if seed is not None:
            self._generator.manual_seed(int(seed))
        self._storage: dict[str, Tensor] = {}
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the stored fields (empty before the first ``add``)."""
        return tuple(self._storage)

    def _allocate(self, fields: dict[str, Tensor]) -> None:
        for name, value in fields.items():
            self._storage[name] = torch.zeros(
                (self.capacity, *value.shape[1:]), dtype=value.dtype, device=self.device
            )

    def _check(self, fields: dict[str, Tensor]) -> int:
        if not fields:
            raise ValueError("add() needs at least one field")
        for name, value in fields.items():
            if not isinstance(value, Tensor) or value.dim() < 1:
                raise ValueError(f"field {name!r} must be a tensor with a leading batch dimension")
        sizes = {name: value.shape[0] for name, value in fields.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all fields must hold the same number of transitions, got {sizes}")
        if self._storage:
            if set(fields) != set(self._storage):
                raise ValueError(f"fields {sorted(fields)} differ from the stored ones {sorted(self._storage)}")
            for name, value in fields.items():
                stored = self._storage[name]
                if value.shape[1:] != stored.shape[1:]:
                    raise ValueError(
                        f"field {name!r} has per-transition shape {tuple(value.shape[1:])}, "
                        f"the buffer holds {tuple(stored.shape[1:])}"
                    )
        return next(iter(sizes.values()))

    def add(self, **fields: Tensor) -> None:
        """Store a batch of transitions; each field (B, ...). Values are copied (cast to the stored dtype)."""
        count = self._check(fields)
        if not self._storage:
            self._allocate(fields)
        rows = (self._next + torch.arange(count)) % self.capacity
        for name, value in fields.items():
            # With count > capacity only the last `capacity` transitions survive.
            self._storage[name][rows[-self.capacity:]] = value[-self.capacity:].detach().to(
                device=self.device, dtype=self._storage[name].dtype
            )
        self._next = (self._next + count) % self.capacity
        self._size = min(self.capacity, self._size + count)

    def sample(self, batch_size: int) -> dict[str, Tensor]:
        """``batch_size`` distinct transitions drawn uniformly: {field: (batch_size, ...)}."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if batch_size > self._size:
            raise ValueError(f"cannot sample {batch_size} transitions from a buffer holding {self._size}")
        indices = torch.randperm(self._size, generator=self._generator)[:batch_size].to(self.device)
        return {name: stored[indices] for name, stored in self._storage.items()}

    def state_dict(self) -> dict:
        """Contents, write position and generator state, for checkpoints (only the filled rows)."""
        return {
            "capacity": self.capacity,
            "next": self._next,
            "size": self._size,
            "generator": self._generator.get_state(),
            "storage": {name: stored[: self._size].clone() for name, stored in self._storage.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` saved; the capacity must match."""
        if state["capacity"] != self.capacity:
            raise ValueError(f"checkpointed buffer has capacity {state['capacity']}, this one {self.capacity}")
        self._storage = {}
        self._next, self._size = int(state["next"]), int(state["size"])
        self._generator.set_state(state["generator"])
        for name, rows in state["storage"].items():
            stored = torch.zeros((self.capacity, *rows.shape[1:]), dtype=rows.dtype, device=self.device)
            stored[: rows.shape[0]] = rows.to(self.device)
            self._storage[name] = stored


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Move ``target``'s parameters toward ``source``'s: theta_t <- tau * theta_s + (1 - tau) * theta_t.

    ``tau`` in [0, 1] (1 copies). Buffers (normalisation statistics) are
    copied. The two modules must have the same architecture.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    target_params, source_params = list(target.parameters()), list(source.parameters())
    if len(target_params) != len(source_params):
        raise ValueError("target and source have different numbers of parameters")
    for t, s in zip(target_params, source_params):
        if t.shape != s.shape:
            raise ValueError(f"parameter shapes differ: {tuple(t.shape)} vs {tuple(s.shape)}")
        t.lerp_(s, tau)
    for t, s in zip(target.buffers(), source.buffers()):
        t.copy_(s)


def state_dicts(owner: object, names: Sequence[str]) -> dict[str, Any]:
    """``{name: owner.<name>.state_dict()}`` for the modules and optimisers an agent checkpoints."""
    return {name: getattr(owner, name).state_dict() for name in names}


def load_state_dicts(owner: object, state: dict[str, Any], names: Sequence[str]) -> None:
    """The inverse of ``state_dicts``: ``owner.<name>.load_state_dict(state[name])`` for each name, in order."""
    for name in names:
        getattr(owner, name).load_state_dict(state[name])


class TwinCritic(nn.Module):
    """Two independent critics ``q1``, ``q2`` (clipped double-Q, Fujimoto et al. 2018), each built by
    ``make_critic()``: ``forward(*inputs) -> (q1(*inputs), q2(*inputs))``, each (N,)."""

    def __init__(self, make_critic: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.q1, self.q2 = make_critic(), make_critic()

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        return self.q1(*inputs), self.q2(*inputs)


class EntropyTemperature(nn.Module):
    """Learnable SAC entropy temperature alpha = exp(log_alpha) (Haarnoja et al. 2018, sec. 5).

    ``target_entropy``: the entropy the policy should keep (commonly -dim(A),
    in the same units as the log-probabilities the agent passes: per element
    if it averages log-probabilities over action elements). The loss
    ``-log_alpha * (log_prob + target_entropy).detach()`` makes gradient
    descent raise alpha while the policy's entropy (-log_prob) is below the
    target and lower it while above.
    """

    def __init__(self, target_entropy: float, init_alpha: float = 1.0) -> None:
        super().__init__()
        if not init_alpha > 0:
            raise ValueError(f"init_alpha must be positive, got {init_alpha}")
        self.target_entropy = float(target_entropy)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha), dtype=torch.float32))

    @property
    def alpha(self) -> Tensor:
        """Current temperature, detached (a 0-dim tensor) for use in actor and critic losses."""
        return self.log_alpha.detach().exp()

    def loss(self, log_prob: Tensor) -> Tensor:
        """Temperature loss (scalar) for log-probabilities (N,) of freshly sampled actions."""
        return -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()


def twin_q_target(
    reward: Tensor,
    done: Tensor,
    next_q1: Tensor,
    next_q2: Tensor,
    next_log_prob: Tensor,
    alpha: Tensor | float,
    gamma: float,
) -> Tensor:
    """Soft Bellman target (N,): r + gamma (1 - done) (min(Q1', Q2') - alpha log pi(a'|s')).

    All inputs (N,) evaluated at the next state with a fresh action from the
    current policy and the *target* critics; ``done`` is 1 only for true
    terminal states (not time-limit truncations). Returned detached.
    """
    shapes = {t.shape for t in (reward, done, next_q1, next_q2, next_log_prob)}
    if len(shapes) != 1:
        raise ValueError(f"reward, done, next Qs and log-probs must share one shape (N,), got {sorted(shapes)}")
    soft_value = torch.min(next_q1, next_q2) - alpha * next_log_prob
    return (reward + gamma * (1.0 - done) * soft_value).detach()
