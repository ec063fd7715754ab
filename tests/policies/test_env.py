"""The RL environment on a real clip: shapes, baseline bookkeeping, agreement with the rollout, NaN guard."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pipeline.latents.cache import LatentCache
from pipeline.latents.codecs import load_codec
from pipeline.io.images import load_image, resize_to_width
from pipeline.latents.stylizers.latent_wct import LatentWCT
from pipeline.io.video import read_video
from policies.base import make_algorithm
from policies.env import LatentStyleEnv, prepare_clip, run_episode
from policies.references import FlowBlendConfig, FlowBlendPolicy, IdentityConfig, IdentityPolicy
from policies.rollout import apply_policy
from rewards.content import LPIPSDistance
from rewards.flow import default_flow_model
from rewards.reward import StyleContentTemporalReward
from rewards.style import GramStyleLoss
from rewards.vgg import VGG16Features
from rewards.warp import backward_warp
from tests.helpers import FROM_BASELINE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 6


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
    """Codec, reward and the prepared clip: six juggling frames, 64 px wide, starry night."""
    codec = load_codec("taef2")
    style = load_image(data_dir / "styles/starry_night.jpg")
    frames = resize_to_width(read_video(data_dir / "videos/train/juggle.mp4", max_frames=T)[0], 64)
    reward = StyleContentTemporalReward(GramStyleLoss(VGG16Features(), style), LPIPSDistance())
    cache = LatentCache(tmp_path_factory.mktemp("latents"))
    clip = prepare_clip(frames, style, LatentWCT(codec), cache, default_flow_model(), reward, "juggle")
    return codec, reward, clip


def env_for(setup, observation="flow", clip=None) -> LatentStyleEnv:
    codec, reward, prepared = setup
    return LatentStyleEnv(clip or prepared, codec, reward, observation)


def test_prepare_clip(setup):
    _, _, clip = setup
    c, h, w = clip.baseline_latents.shape[1:]
    assert (c, h, w) == (32, 4, 8) and clip.frames.shape == (T, 3, 32, 64)
    assert clip.baseline_frames.shape == clip.frames.shape and len(clip.flows) == T - 1
    assert clip.latent_flows.flow.shape == (T, 2, h, w) and clip.latent_flows.mask.shape == (T, 1, h, w)
    assert clip.latent_flows.mask[0].sum() == 0 and 0 < clip.latent_flows.mask[1:].mean() <= 1
    assert clip.baseline_terms.total.shape == (T,) and clip.baseline_terms.temporal[0] == 0
    # normalisation: each baseline term averages 1 over frames 1..T-1, so the total is about -(10+1+10)
    assert clip.baseline_terms.total[1:].mean().item() == pytest.approx(-21.0, rel=1e-4)


@pytest.mark.parametrize("kind,channels", [("pair", 64), ("flow", 97)])
def test_observation_shapes(setup, kind, channels):
    env = env_for(setup, kind)
    latents = setup[2].baseline_latents
    obs = env.reset()
    assert obs.shape == (1, channels, 4, 8) and env.observation_channels == channels
    if kind == "pair":  # L_{-1} = L_0
        assert torch.equal(obs, torch.cat([latents[:1], latents[:1]], dim=1))
    else:  # no previous output: warped = L_0, mask 0, difference 0
        assert torch.equal(obs[:, 32:64], latents[:1]) and obs[:, 64:].abs().sum() == 0
    obs, _ = env.step(torch.full((1, 32, 4, 8), 0.1))
    assert obs.shape == (1, channels, 4, 8)
    if kind == "pair":
        assert torch.equal(obs, torch.cat([latents[:1], latents[1:2]], dim=1))  # (L_0, L_1)
    else:
        current, warped, mask, difference = obs[:, :32], obs[:, 32:64], obs[:, 64:65], obs[:, 65:]
        assert torch.equal(current, latents[1:2]) and torch.allclose(difference, current - warped)
        flow = setup[2].latent_flows.flow[1:2]  # frame 1 -> frame 0, in latent cells
        assert torch.allclose(warped, backward_warp(latents[:1] + 0.1, flow), atol=1e-6)  # previous OUTPUT, warped
        assert mask.mean() > 0.5


def test_identity_episode_is_the_baseline(setup):
    env = env_for(setup, "pair")
    results = run_episode(env, IdentityPolicy(IdentityConfig(32)))
    assert [r.t for r in results] == list(range(T)) and [r.done for r in results] == [False] * (T - 1) + [True]
    for r in results:
        assert abs(r.advantage) < 1e-4 and r.reward == pytest.approx(r.baseline_reward, abs=1e-4)
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(torch.zeros(1, 32, 4, 8))
    assert env.reset().shape == (1, 64, 4, 8)  # reusable


def test_episode_matches_the_pipeline_rollout(setup):
    """The env and apply_policy (the pipeline's loop) produce the same latents for the same policy."""
    clip = setup[2]
    policy = make_algorithm("reinforce", "flow", 32, **FROM_BASELINE).policy.eval()
    with torch.no_grad():
        policy.gate.fill_(0.5)
    from_env = torch.cat([r.latent for r in run_episode(env_for(setup), policy)])
    from_rollout, _ = apply_policy(policy, clip.baseline_latents, clip.latent_flows)
    assert torch.allclose(from_env, from_rollout, atol=1e-6) and not torch.allclose(from_env, clip.baseline_latents)


def test_flow_blend_lowers_the_temporal_term(setup):
    clip = setup[2]
    results = run_episode(env_for(setup), FlowBlendPolicy(FlowBlendConfig(32, factor=0.8)))
    temporal = sum(r.terms["temporal"] for r in results[1:]) / (T - 1)
    assert temporal < 0.8 * clip.baseline_terms.temporal[1:].mean().item()


def test_differentiable_path(setup):
    env = env_for(setup)
    delta = torch.zeros(1, 32, 4, 8, requires_grad=True)
    previous = env.render(0, torch.zeros(1, 32, 4, 8)).detach()
    frame = env.render(1, delta)
    terms = env.score(1, frame, previous)
    terms.total.sum().backward()
    assert frame.shape == (1, 3, 32, 64) and torch.isfinite(delta.grad).all() and delta.grad.abs().sum() > 0
    assert terms.total.item() == pytest.approx(setup[2].baseline_terms.total[1].item(), rel=1e-4)


def test_long_term_term_scores_the_output_k_frames_earlier(setup):
    """With a gap k, prepare_clip adds the flows between frames k apart and the baseline's long-term term as the
    scale; step_through returns the term from frame k on: 1 for the baseline itself, lower for a copy along the
    flow (a factor-1 flow-blend)."""
    codec, reward, clip = setup
    gap = 3
    long = prepare_clip(clip.frames, reward.style_loss.style_image, LatentWCT(codec), None, default_flow_model(),
                        reward, "juggle", long_term_gap=gap)
    assert long.long_term_gap == gap and len(long.long_term_flows) == T - gap and long.long_term_scale > 0

    def long_terms(policy) -> list[float | None]:
        env = LatentStyleEnv(long, codec, reward, "flow").adopt(policy)
        obs, done, terms = env.reset(), False, []
        while not done:
            obs, _, long_term, step = env.step_through(policy.act(obs))
            terms.append(None if long_term is None else long_term.item())
            done = step.done
        return terms

    baseline = long_terms(IdentityPolicy(IdentityConfig(32, observation="flow")))
    assert baseline[:gap] == [None] * gap and sum(baseline[gap:]) / (T - gap) == pytest.approx(1.0, rel=1e-4)
    copied = long_terms(FlowBlendPolicy(FlowBlendConfig(32, factor=1.0)))
    assert sum(copied[gap:]) / (T - gap) < 0.9
    without = LatentStyleEnv(clip, codec, reward, "flow")
    assert clip.long_term_gap == 0 and without.long_term_score(clip.frames[:1]) is None


def test_nan_guard_leaves_the_policy_untouched(setup):
    clip = setup[2]
    algo = make_algorithm("reinforce", "flow", 32, accumulate=2, **FROM_BASELINE)
    terms = dataclasses.replace(clip.baseline_terms, total=clip.baseline_terms.total.clone())
    terms.total[3] = math.nan  # a corrupt baseline reward at frame 3
    before = {k: v.clone() for k, v in algo.policy.state_dict().items()}
    with pytest.raises(FloatingPointError, match="non-finite reward at frame 3"):
        algo.train_episode(env_for(setup, clip=dataclasses.replace(clip, baseline_terms=terms)))
    after = algo.policy.state_dict()
    # the update after frames 0-1 happened, the one with frames 2-3 did not
    assert algo.updates == 1
    assert all(p.grad is None for p in algo.policy.parameters())
    moved = {k: v.clone() for k, v in after.items()}

    with torch.no_grad():
        algo.policy.gate.fill_(math.nan)  # a policy gone bad: NaN residuals
    with pytest.raises(FloatingPointError, match="non-finite residual at frame 0"):
        algo.train_episode(env_for(setup))
    for key, value in algo.policy.state_dict().items():
        if key != "gate":
            assert torch.equal(value, moved[key])
    assert any(not torch.equal(before[k], moved[k]) for k in before)


def test_short_reinforce_run_raises_the_advantage(setup):
    """40 episodes (240 transitions) on the clip: the sampled policy's advantage rises, and the mean
    action, which starts exactly at the baseline (advantage 0), ends above it."""
    env = env_for(setup)
    algo = make_algorithm("reinforce", "flow", 32, lr=3e-3, scalar_lr=3e-2, init_log_sigma=math.log(0.03), **FROM_BASELINE)
    assert sum(r.advantage for r in run_episode(env, algo.policy)) == pytest.approx(0.0, abs=1e-4)
    advantages = []
    for _ in range(40):
        steps = algo.train_episode(env)
        advantages.append(sum(s["advantage"] for s in steps) / len(steps))
    assert algo.updates == 40 * 2 and algo.transitions == 40 * T  # 4 + 2 transitions per update
    assert sum(advantages[-10:]) > sum(advantages[:10])
    evaluation = run_episode(env, algo.policy)
    assert sum(r.advantage for r in evaluation) / T > 0.0
