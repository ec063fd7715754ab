"""The SAC latent-action agent (policies/sac.py, policies/sac_networks.py) on a real clip.

One 4-frame window of a shared TRAIN clip at 64 px, starry_night, the shared
taef2 codec, VGG/LPIPS reward and RAFT flows, prepared once per module.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from pipeline.latents.cache import LatentCache
from pipeline.latents.codecs import load_codec
from pipeline.io.images import load_image, resize_to_width, save_image
from pipeline.io.run_files import RunFolder
from pipeline.latents.stylizers import build_stylizer
from pipeline.io.video import read_video
from policies.base import load_policy, make_algorithm
from policies.env import LatentStyleEnv, prepare_clip, run_episode
from policies.observations import build_observation
from policies.sac import TRANSITION_FIELDS, LatentSAC, SACPolicy
from policies.sac_networks import plan_size, tanh_gaussian_sample
from rewards.content import LPIPSDistance
from rewards.reward import StyleContentTemporalReward
from rewards.style import GramStyleLoss
from rewards.vgg import VGG16Features

WIDTH, FRAMES = 64, 4
TINY = {"hidden": 16, "critic_hidden": 16, "plan_channels": 2}


@pytest.fixture(scope="module")
def setup(data_dir: Path, tmp_path_factory):
    """Frames and style written as 64 px PNGs (what the training script reads back), the codec,
    reward and the prepared clip; the latent cache is shared with the script test."""
    root = tmp_path_factory.mktemp("sac")
    frames = resize_to_width(read_video(data_dir / "videos" / "train" / "dog.mp4", max_frames=FRAMES)[0], WIDTH)
    (root / "videos" / "dog").mkdir(parents=True)
    for i, frame in enumerate(frames):
        save_image(root / "videos" / "dog" / f"{i:04d}.png", frame[None])
    save_image(root / "style.png", resize_to_width(load_image(data_dir / "styles" / "starry_night.jpg"), WIDTH))
    frames, _ = read_video(root / "videos" / "dog")
    style = load_image(root / "style.png")
    codec = load_codec("taef2")
    reward = StyleContentTemporalReward(GramStyleLoss(VGG16Features(), style), LPIPSDistance())
    stylizer = build_stylizer("latent-wct", codec=codec)
    clip = prepare_clip(frames, style, stylizer, LatentCache(root / "cache"), reward=reward, name="dog")
    return {"root": root, "codec": codec, "reward": reward, "clip": clip}


def make_env(setup) -> LatentStyleEnv:
    return LatentStyleEnv(setup["clip"], setup["codec"], setup["reward"], "flow")


def agent(**options) -> LatentSAC:
    return make_algorithm("sac", "flow", 32, **{**TINY, **options})


@pytest.fixture(scope="module")
def transitions(setup) -> dict[str, torch.Tensor]:
    """A replay batch of the clip's 4 real transitions under the baseline (delta = 0), plans drawn at random."""
    env, rows, obs, done = make_env(setup), [], None, False
    obs = env.reset()
    while not done:
        next_obs, step = env.step(torch.zeros(1, *setup["clip"].baseline_latents.shape[1:]))
        rows.append((obs, next_obs, step.advantage, float(step.done)))
        obs, done = next_obs, step.done
    observations = torch.cat([r[0] for r in rows])
    plan = torch.rand(len(rows), TINY["plan_channels"], *plan_size(tuple(observations.shape[-2:]), 2)) * 2 - 1
    return {
        "obs": observations,
        "plan": plan,
        "reward": torch.tensor([r[2] for r in rows]),
        "next_obs": torch.cat([r[1] for r in rows]),
        "done": torch.tensor([r[3] for r in rows]),
    }


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


@pytest.mark.fast
def test_tanh_gaussian_log_prob_matches_torch() -> None:
    mean, log_std = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5) * 0.5 - 0.5
    plan, log_prob = tanh_gaussian_sample(mean, log_std)
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()]).log_prob(plan)
    assert plan.abs().max() < 1
    assert torch.allclose(log_prob, reference.flatten(1).mean(1), atol=1e-4)
    mode, _ = tanh_gaussian_sample(mean, log_std, deterministic=True)
    assert torch.equal(mode, torch.tanh(mean))


@pytest.mark.parametrize("kind", ["pair", "flow"])
def test_shapes_of_plan_q_and_delta(setup, kind: str) -> None:
    latents = setup["clip"].baseline_latents  # (4,32,4,8)
    if kind == "pair":
        obs = build_observation("pair", latents[1:], latents[:-1])
    else:
        flows = setup["clip"].latent_flows
        obs = build_observation("flow", latents[1:], prev_output=latents[:-1], flow=flows.flow[1:], mask=flows.mask[1:])
    learner = make_algorithm("sac", kind, 32, **{**TINY, "init_gate": 0.5})
    for o in (obs, obs[..., :3, :5]):  # odd sizes: the plan grid rounds up
        plan, log_prob = learner.policy.planner.sample(o)
        assert plan.shape == (3, 2, -(-o.shape[-2] // 2), -(-o.shape[-1] // 2))
        assert log_prob.shape == (3,) and torch.isfinite(log_prob).all()
        assert plan.abs().max() < 1
        q1, q2 = learner.critic(o, plan)
        assert q1.shape == q2.shape == (3,) and not torch.equal(q1, q2)
        assert learner.policy.act(o).shape == (3, 32, *o.shape[-2:])
    with pytest.raises(ValueError, match="plan must be"):
        learner.critic(obs, plan)
    with pytest.raises(ValueError, match=r"observations \(N,"):
        learner.policy.act(obs[:, :5])


def test_untrained_agent_reproduces_the_baseline(setup) -> None:
    policy = agent().policy
    env = make_env(setup)
    obs = env.reset()
    assert torch.equal(policy.act(obs), torch.zeros(1, 32, *obs.shape[-2:]))
    assert policy.act(obs, deterministic=False).abs().max() == 0  # the gate blocks sampled plans too
    results = run_episode(env, policy)
    latents = torch.cat([r.latent for r in results])
    assert torch.allclose(latents, setup["clip"].baseline_latents)
    assert max(abs(r.advantage) for r in results) < 1e-3


def test_update_polyak_temperature_and_nan_guard(transitions) -> None:
    learner = agent(tau=0.1)
    target_before = flat(learner.critic_target)
    assert torch.equal(target_before, flat(learner.critic))
    logs = learner.update(transitions)
    assert all(math.isfinite(v) for v in logs.values())
    online, target = flat(learner.critic), flat(learner.critic_target)
    assert not torch.equal(target, target_before)
    assert torch.allclose(target - online, 0.9 * (target_before - online), atol=1e-6)

    alphas = {}
    for target_entropy in (5.0, -20.0):  # per element; the untrained plan's entropy lies between
        learner = agent(target_entropy=target_entropy, init_alpha=0.1)
        for _ in range(3):
            learner.update(transitions)
        alphas[target_entropy] = learner.temperature.alpha.item()
    assert alphas[5.0] > 0.1 > alphas[-20.0]

    learner = agent()
    before = [flat(m) for m in (learner.critic, learner.policy)]
    with pytest.raises(FloatingPointError, match="critic loss"):
        learner.update({**transitions, "reward": torch.full_like(transitions["reward"], float("nan"))})
    assert all(torch.equal(b, flat(m)) for b, m in zip(before, (learner.critic, learner.policy)))


def test_train_episode_runs_and_learns(setup) -> None:
    learner = agent(warmup=2, batch_size=2)
    modules = {"planner": learner.policy.planner, "decoder": learner.policy.decoder, "critic": learner.critic,
               "target": learner.critic_target, "temperature": learner.temperature}
    before = {name: flat(m) for name, m in modules.items()}
    logs = learner.train_episode(make_env(setup))
    assert len(logs) == FRAMES
    assert "critic_loss" not in logs[0] and all("critic_loss" in row for row in logs[1:])
    for row in logs:
        assert all(math.isfinite(v) for v in row.values()), row
        assert {"advantage", "style", "content", "temporal", "style_learning_loss"} <= set(row)
    assert all(not torch.equal(before[name], flat(m)) for name, m in modules.items())
    assert learner.policy.decoder.gate.item() != 0
    assert (learner.transitions, learner.updates, learner.style_updates) == (FRAMES, FRAMES - 1, FRAMES)
    # the trained agent now acts: a non-zero residual
    assert learner.policy.act(make_env(setup).reset()).abs().max() > 0


def test_non_finite_residual_stops_the_episode(setup) -> None:
    learner = agent()
    with torch.no_grad():
        learner.policy.decoder.gate.fill_(float("nan"))
    before = flat(learner.critic)
    with pytest.raises(FloatingPointError, match="non-finite residual at frame 0"):
        learner.train_episode(make_env(setup))
    assert torch.equal(before, flat(learner.critic)) and learner.transitions == 0


def test_checkpoint_and_policy_round_trip(transitions, tmp_path: Path) -> None:
    learner = agent(init_gate=0.3)
    learner.update(transitions)
    obs = transitions["obs"]
    learner.policy.save_pretrained(tmp_path / "model")
    loaded = load_policy(tmp_path)  # the run folder: its model/
    assert isinstance(loaded, SACPolicy) and loaded.config == learner.policy.config
    expected = learner.policy.act(obs)
    assert expected.abs().max() > 0 and torch.equal(loaded.act(obs), expected)

    run = RunFolder(tmp_path, "sac-test")
    run.save_checkpoint({"algorithm": learner.state_dict()})
    torch.manual_seed(123)  # a differently initialised learner
    resumed = agent(init_gate=0.3)
    resumed.load_state_dict(run.load_checkpoint(weights_only=False)["algorithm"])
    assert (resumed.updates, resumed.transitions) == (1, 0)
    for name in ("policy", "critic", "critic_target", "temperature"):
        assert torch.equal(flat(getattr(learner, name)), flat(getattr(resumed, name))), name
    for learner_ in (learner, resumed):  # same batch, same draws: the optimiser states match too
        torch.manual_seed(7)
        learner_.update(transitions)
    assert torch.equal(flat(learner.policy), flat(resumed.policy))
    assert torch.equal(flat(learner.critic), flat(resumed.critic))


@pytest.mark.fast
def test_bad_options() -> None:
    with pytest.raises(TypeError, match="unknown SAC option"):
        agent(learning_rate=1e-3)
    with pytest.raises(ValueError, match="style_learning=False with init_gate=0"):
        agent(style_learning=False)
    with pytest.raises(ValueError, match="batch_size"):
        agent(batch_size=0)
    assert set(TRANSITION_FIELDS) == {"obs", "plan", "reward", "next_obs", "done"}


def test_train_policy_script_with_sac(setup) -> None:
    """A tiny run of pure SAC (style learning off, so the decoder keeps its initial gate)."""
    from scripts.train_policy import main

    root, out = setup["root"], setup["root"] / "run"
    summary = main([
        "--style", str(root / "style.png"), "--videos", str(root / "videos"), "--out", str(out), "--algo", "sac",
        "--size", str(WIDTH), "--max-frames", str(FRAMES), "--epochs", "1", "--eval-every", "0", "--device", "cpu",
        "--cache-dir", str(root / "cache"), "--sac-warmup", "1", "--sac-batch-size", "2", "--sac-hidden", "8",
        "--sac-critic-hidden", "8", "--sac-plan-channels", "2", "--no-sac-style-learning", "--sac-init-gate", "0.05",
    ])
    assert summary["epoch"] == 1 and math.isfinite(summary["train_critic_loss"])
    assert (out / "checkpoint.pt").is_file()
    policy = load_policy(out)
    assert isinstance(policy, SACPolicy) and policy.config.hidden == 8
    assert policy.decoder.gate.item() == pytest.approx(0.05)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    assert checkpoint["algorithm"]["transitions"] == FRAMES
