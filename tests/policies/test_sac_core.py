"""SAC building blocks: Polyak averaging, replay buffer, entropy temperature, soft Bellman target."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from policies.sac_core import EntropyTemperature, ReplayBuffer, TwinCritic, polyak_update, twin_q_target


@pytest.mark.fast
def test_polyak_update_moves_target_by_tau_and_copies_buffers() -> None:
    source, target = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        source.weight.fill_(2.0)
        source.bias.fill_(-4.0)
        target.weight.fill_(1.0)
        target.bias.fill_(0.0)
        source.running_mean.fill_(5.0)
    polyak_update(target, source, tau=0.25)
    assert torch.allclose(target.weight, torch.full((3,), 0.75 * 1.0 + 0.25 * 2.0))
    assert torch.allclose(target.bias, torch.full((3,), 0.25 * -4.0))
    assert torch.equal(target.running_mean, source.running_mean)
    assert torch.equal(source.weight, torch.full((3,), 2.0)), "the source must not change"
    polyak_update(target, source, tau=1.0)
    assert torch.equal(target.weight, source.weight)


@pytest.mark.fast
def test_polyak_update_rejects_bad_tau_and_mismatched_modules() -> None:
    with pytest.raises(ValueError, match="tau"):
        polyak_update(nn.Linear(2, 2), nn.Linear(2, 2), tau=1.5)
    with pytest.raises(ValueError, match="shape"):
        polyak_update(nn.Linear(2, 2), nn.Linear(2, 3), tau=0.1)


def _transitions(start: int, count: int) -> dict[str, torch.Tensor]:
    ids = torch.arange(start, start + count, dtype=torch.float32)
    return {"obs": ids.view(-1, 1, 1).expand(-1, 2, 2).clone(), "reward": ids}


@pytest.mark.fast
def test_replay_buffer_keeps_the_newest_transitions_up_to_capacity() -> None:
    buffer = ReplayBuffer(capacity=5, seed=0)
    buffer.add(**_transitions(0, 3))
    assert len(buffer) == 3
    buffer.add(**_transitions(3, 4))  # 7 added, capacity 5: 0 and 1 are overwritten
    assert len(buffer) == 5
    batch = buffer.sample(5)
    assert sorted(batch["reward"].tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert batch["obs"].shape == (5, 2, 2)
    # each sampled transition keeps its fields together
    assert torch.equal(batch["obs"][:, 0, 0], batch["reward"])


@pytest.mark.fast
def test_replay_buffer_sampling_is_seeded_and_distinct() -> None:
    def draws(seed: int) -> list[list[float]]:
        buffer = ReplayBuffer(capacity=100, seed=seed)
        buffer.add(**_transitions(0, 100))
        return [buffer.sample(10)["reward"].tolist() for _ in range(3)]

    first = draws(7)
    assert first == draws(7)
    assert first != draws(8)
    assert all(len(set(batch)) == 10 for batch in first), "a batch holds distinct transitions"
    assert first[0] != first[1], "successive batches differ"


@pytest.mark.fast
def test_replay_buffer_errors_and_state_dict_round_trip() -> None:
    buffer = ReplayBuffer(capacity=4, seed=1)
    buffer.add(**_transitions(0, 3))
    with pytest.raises(ValueError, match="cannot sample 4"):
        buffer.sample(4)
    with pytest.raises(ValueError, match="differ from the stored"):
        buffer.add(obs=torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="per-transition shape"):
        buffer.add(obs=torch.zeros(1, 3, 3), reward=torch.zeros(1))
    with pytest.raises(ValueError, match="same number"):
        buffer.add(obs=torch.zeros(2, 2, 2), reward=torch.zeros(1))
    copy = ReplayBuffer(capacity=4)
    copy.load_state_dict(buffer.state_dict())
    assert len(copy) == 3
    assert copy.sample(3)["reward"].tolist() == buffer.sample(3)["reward"].tolist()


@pytest.mark.fast
def test_alpha_grows_when_entropy_is_below_target_and_shrinks_above() -> None:
    temperature = EntropyTemperature(target_entropy=-1.0, init_alpha=0.5)
    assert math.isclose(temperature.alpha.item(), 0.5, rel_tol=1e-6)
    # entropy -log_prob = -2 is below the target -1: gradient descent must raise alpha
    temperature.loss(torch.full((8,), 2.0)).backward()
    assert temperature.log_alpha.grad.item() < 0
    optimizer = torch.optim.SGD(temperature.parameters(), lr=0.1)
    optimizer.step()
    assert temperature.alpha.item() > 0.5
    # entropy 0 above the target: alpha falls
    optimizer.zero_grad()
    temperature.loss(torch.zeros(8)).backward()
    assert temperature.log_alpha.grad.item() > 0
    # the temperature loss never pushes gradients into the policy
    log_prob = torch.zeros(4, requires_grad=True)
    temperature.loss(log_prob).backward()
    assert log_prob.grad is None


@pytest.mark.fast
def test_twin_q_target_uses_the_smaller_q_and_the_entropy_bonus() -> None:
    reward = torch.tensor([1.0, 1.0])
    done = torch.tensor([0.0, 1.0])
    q1, q2 = torch.tensor([10.0, 10.0]), torch.tensor([4.0, 4.0])
    log_prob = torch.tensor([-2.0, -2.0])
    target = twin_q_target(reward, done, q1, q2, log_prob, alpha=0.5, gamma=0.9)
    assert torch.allclose(target, torch.tensor([1.0 + 0.9 * (4.0 + 1.0), 1.0]))
    with pytest.raises(ValueError, match="one shape"):
        twin_q_target(reward, done, q1, q2, log_prob[:1], alpha=0.5, gamma=0.9)


@pytest.mark.fast
def test_twin_critic_builds_two_independent_critics_from_its_factory() -> None:
    class Bilinear(nn.Module):  # Q(s, a) = <W s, a>
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 2))

        def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
            return ((state @ self.weight) * action).sum(dim=1)

    twin = TwinCritic(Bilinear)
    state, action = torch.randn(4, 3), torch.randn(4, 2)
    q1, q2 = twin(state, action)
    assert torch.equal(q1, twin.q1(state, action)) and torch.equal(q2, twin.q2(state, action)) and q1.shape == (4,)
    assert not torch.equal(q1, q2), "the two critics are initialised independently"
    assert set(twin.state_dict()) == {"q1.weight", "q2.weight"}
