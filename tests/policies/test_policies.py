"""Policies: interface, save/load, references, observations, the rollout used by the pipeline."""

from __future__ import annotations

import pytest
import torch

from pipeline.latents.codecs import load_codec
from pipeline.io.images import load_image, resize_to_width
from pipeline.latents.stylizers.latent_wct import LatentWCT
from pipeline.io.video import read_video
from baselines.rlnst.models import RLNST
from policies.base import Policy, load_policy, make_algorithm
from policies.observations import build_observation, check_flow_warp, latent_flows, observation_channels, pixel_warped_latent
from policies.references import FlowBlendConfig, FlowBlendPolicy, IdentityConfig, IdentityPolicy
from policies.reinforce import ReinforcePolicy, ReinforcePolicyConfig
from policies.rollout import apply_policy, apply_policy_to_chunk
from rewards.flow import default_flow_model, flows_and_masks
from rewards.style import GramStyleLoss
from rewards.vgg import VGG16Features
from tests.helpers import FROM_BASELINE


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread in these tests (the 2 shared cores are oversubscribed; restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip(data_dir):
    """Six real frames (64 px wide), their latent-WCT baseline latents and content flows."""
    codec = load_codec("taef2")
    frames = resize_to_width(read_video(data_dir / "videos/train/juggle.mp4", max_frames=6)[0], 64)
    style = load_image(data_dir / "styles/starry_night.jpg")
    with torch.no_grad():
        latents = LatentWCT(codec).stylize(frames, style)
    pixel = flows_and_masks(frames, default_flow_model())
    return {
        "frames": frames,
        "latents": latents,
        "flows": latent_flows(pixel.flow_bwd, pixel.mask_bwd, tuple(latents.shape[-2:])),  # T-1 entries
    }


def _policy(kind: str, gate: float = 0.0) -> ReinforcePolicy:
    policy = make_algorithm("reinforce", kind, 32, **FROM_BASELINE).policy
    with torch.no_grad():
        policy.gate.fill_(gate)
    return policy.eval()


@pytest.mark.fast
def test_observation_channels():
    assert observation_channels("pair", 32) == 64
    assert observation_channels("flow", 4) == 13
    with pytest.raises(ValueError, match="unknown observation kind 'optical'"):
        observation_channels("optical", 32)


@pytest.mark.parametrize("kind", ["pair", "flow"])
def test_untrained_policy_reproduces_the_baseline(clip, kind):
    latents = clip["latents"]
    policy = _policy(kind)
    refined, _ = apply_policy(policy, latents, clip["flows"] if kind == "flow" else None)
    assert torch.equal(refined, latents)
    obs = build_observation(kind, latents[1:2], latents[:1], latents[:1], clip["flows"].flow[:1], clip["flows"].mask[:1])
    sample = policy.act(obs, deterministic=False)
    assert sample.shape == latents[:1].shape
    assert sample.std().item() == pytest.approx(policy.log_sigma.exp().item(), rel=0.2)  # pure exploration noise


def test_identity_and_flow_blend(clip):
    latents, flows = clip["latents"], clip["flows"]
    identity = IdentityPolicy(IdentityConfig(32))
    assert torch.equal(apply_policy(identity, latents)[0], latents)
    assert torch.equal(apply_policy(FlowBlendPolicy(FlowBlendConfig(32, factor=0.0)), latents, flows)[0], latents)

    # factor 1: each reliable cell takes the warped previous output; check frame 1 by hand
    refined, _ = apply_policy(FlowBlendPolicy(FlowBlendConfig(32, factor=1.0)), latents, flows)
    obs = build_observation("flow", latents[1:2], None, refined[:1], flows.flow[:1], flows.mask[:1])
    current, warped, mask = obs[:, :32], obs[:, 32:64], obs[:, 64:65]
    assert torch.allclose(refined[1:2], current + mask * (warped - current), atol=1e-6)
    assert mask.mean() > 0.5  # slow juggling clip: most cells are reliable
    assert not torch.equal(refined[1:], latents[1:])
    with pytest.raises(ValueError, match="factor"):
        FlowBlendConfig(32, factor=1.5)
    with pytest.raises(ValueError, match="expects observations"):
        FlowBlendPolicy(FlowBlendConfig(32)).act(torch.zeros(1, 64, 4, 8))


@pytest.mark.parametrize("kind", ["pair", "flow"])
def test_rollout_in_chunks_equals_one_pass(clip, kind):
    latents, flows = clip["latents"], clip["flows"]
    policy = _policy(kind, gate=0.5)
    whole, _ = apply_policy(policy, latents, flows)
    first, state = apply_policy(policy, latents[:2], flows[:1])  # video start: T-1 flows
    second, _ = apply_policy(policy, latents[2:], flows[1:], state)  # continuing chunk: one flow per frame
    assert not torch.allclose(whole, latents)
    assert torch.allclose(torch.cat([first, second]), whole, atol=1e-6)

    # the pipeline's entry point estimates the flows itself, across the chunk boundary too
    frames = clip["frames"]
    raft = default_flow_model()
    pipe_whole, _ = apply_policy_to_chunk(policy, latents, frames, flow_model=raft)
    a, state = apply_policy_to_chunk(policy, latents[:3], frames[:3], flow_model=raft)
    b, _ = apply_policy_to_chunk(policy, latents[3:], frames[3:], state, flow_model=raft)
    assert torch.allclose(pipe_whole, whole, atol=1e-4)
    assert torch.allclose(torch.cat([a, b]), pipe_whole, atol=1e-4)


def test_rollout_rejects_bad_input(clip):
    latents, flows = clip["latents"], clip["flows"]
    with pytest.raises(ValueError, match=r"must be \(t,32,h,w\)"):
        apply_policy(_policy("pair"), latents[:, :4])
    with pytest.raises(ValueError, match="needs latent_flows"):
        apply_policy(_policy("flow"), latents)
    with pytest.raises(ValueError, match="got 2 latent flows for 6 frames"):
        apply_policy(_policy("flow"), latents, flows[:2])


def test_save_and_load(tmp_path, clip):
    latents = clip["latents"]
    policy = _policy("flow", gate=0.7)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    folder = policy.save_pretrained(tmp_path / "run" / "model", training={"epoch": 3})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]  # no temporary files
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"], modes  # as readable as any file the user writes
    loaded = load_policy(folder)
    assert isinstance(loaded, ReinforcePolicy) and loaded.config == policy.config and not loaded.training
    assert torch.equal(apply_policy(loaded, latents, clip["flows"])[0], apply_policy(policy, latents, clip["flows"])[0])
    assert ReinforcePolicy.from_pretrained(folder).config == policy.config

    assert isinstance(load_policy(tmp_path / "run"), ReinforcePolicy)  # a run folder without best/: its model/
    FlowBlendPolicy(FlowBlendConfig(32, factor=0.3)).save_pretrained(tmp_path / "run" / "best")
    best = load_policy(tmp_path / "run")  # a run folder resolves to its best policy, else its last
    assert isinstance(best, FlowBlendPolicy) and best.config.factor == 0.3

    ReinforcePolicy(ReinforcePolicyConfig(4, "pair", hidden=8)).save_pretrained(tmp_path / "small")
    assert load_policy(tmp_path / "small").config.hidden == 8


@pytest.mark.fast
def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder .*nope does not exist"):
        load_policy(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="holds no model"):
        load_policy(tmp_path)
    (tmp_path / "policy.safetensors").write_bytes(b"not a folder")
    with pytest.raises(ValueError, match="is a file"):
        load_policy(tmp_path / "policy.safetensors")
    blend = FlowBlendPolicy(FlowBlendConfig(32, factor=0.3)).save_pretrained(tmp_path / "blend")
    with pytest.raises(ValueError, match="holds a 'flow-blend' policy, not a 'reinforce' one"):
        ReinforcePolicy.from_pretrained(blend)
    nst = RLNST().save_pretrained(tmp_path / "rlnst")
    with pytest.raises(ValueError, match="holds a 'rlnst-model-v2' model of kind 'rlnst', not a 'vstyle-policy-v1' one"):
        load_policy(nst)
    (blend / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        load_policy(blend)
    small = ReinforcePolicy(ReinforcePolicyConfig(4, "pair", hidden=8)).save_pretrained(tmp_path / "small")
    ReinforcePolicy(ReinforcePolicyConfig(4, "pair", hidden=16)).save_pretrained(tmp_path / "wider")
    (small / "model.safetensors").write_bytes((tmp_path / "wider" / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="weights in .* do not fit its config.json"):
        Policy.from_pretrained(small)
    (small / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json is not a readable JSON file"):
        load_policy(small)


@pytest.mark.fast
def test_make_algorithm_errors():
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'; choose one of pathwise, reinforce, sac"):
        make_algorithm("ppo", "flow", 32)
    with pytest.raises(TypeError, match="unknown REINFORCE option"):
        make_algorithm("reinforce", "flow", 32, learning_rate=1.0)
    with pytest.raises(ValueError, match="unknown observation kind"):
        make_algorithm("reinforce", "optical", 32)
    try:
        import policies.sac  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(ValueError, match="algorithm 'sac' is not available"):
            make_algorithm("sac", "flow", 32)


# --- the pixel flow warp and the blend head ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pixel_clip(clip):
    """The clip's full-resolution flows to the previous frame (T-1,2,H,W) and the codec (fp32: these tests
    compare rollouts computed in different batch groupings to 1e-4, closer than bf16 autocast keeps)."""
    pixel = flows_and_masks(clip["frames"], default_flow_model())
    return {**clip, "pixel_flows": pixel.flow_bwd, "codec": load_codec("taef2", precision="fp32")}


def test_pixel_warped_latent(pixel_clip):
    latents, codec = pixel_clip["latents"], pixel_clip["codec"]
    with torch.no_grad():
        frame = codec.decode(latents[:1])
        still = torch.zeros(1, 2, *frame.shape[-2:])
        # zero flow: the round-trip residual restores the previous output latent exactly
        assert torch.allclose(pixel_warped_latent(codec, frame, still, latents[:1]), latents[:1], atol=1e-4)
        plain = pixel_warped_latent(codec, frame, still, latents[:1], round_trip=False)
        assert torch.allclose(plain, codec.encode(frame), atol=1e-5)
        moved = pixel_warped_latent(codec, frame, pixel_clip["pixel_flows"][:1], latents[:1])
    assert moved.shape == latents[:1].shape and torch.isfinite(moved).all()
    with pytest.raises(ValueError, match="differ in size"):
        pixel_warped_latent(codec, frame, torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="builds the pixel or detail warp, not 'latent'"):
        pixel_warped_latent(codec, frame, still, latents[:1], flow_warp="latent")
    with pytest.raises(ValueError, match="unknown flow_warp 'voxel'"):
        check_flow_warp("voxel")


def test_pixel_flow_blend_rollout(pixel_clip):
    latents, flows, codec, pixel = pixel_clip["latents"], pixel_clip["flows"], pixel_clip["codec"], pixel_clip["pixel_flows"]
    blend = FlowBlendPolicy(FlowBlendConfig(32, factor=1.0, flow_warp="pixel"))
    latent_blend = FlowBlendPolicy(FlowBlendConfig(32, factor=1.0))
    refined, _ = apply_policy(blend, latents, flows, pixel_flows=pixel, codec=codec)
    with torch.no_grad():  # frame 1 by hand: reliable cells take E(warp(S_0)) + warped round-trip residual
        warped = pixel_warped_latent(codec, codec.decode(refined[:1]), pixel[:1], refined[:1])
    mask = flows.mask[:1]
    assert torch.allclose(refined[1:2], latents[1:2] + mask * (warped - latents[1:2]), atol=1e-4)
    assert not torch.allclose(refined, apply_policy(latent_blend, latents, flows)[0], atol=1e-3)  # not the latent warp
    with pytest.raises(ValueError, match="needs the codec"):
        apply_policy(blend, latents, flows)

    # the pipeline's entry point, in chunks: the state carries the previous decoded output
    frames = pixel_clip["frames"]
    raft = default_flow_model()
    whole, _ = apply_policy_to_chunk(blend, latents, frames, flow_model=raft, codec=codec)
    a, state = apply_policy_to_chunk(blend, latents[:3], frames[:3], flow_model=raft, codec=codec)
    b, _ = apply_policy_to_chunk(blend, latents[3:], frames[3:], state, flow_model=raft, codec=codec)
    with pytest.raises(ValueError, match="needs a flow_model"):
        apply_policy_to_chunk(blend, latents, frames, codec=codec)
    assert torch.allclose(whole, refined, atol=1e-4)
    assert torch.allclose(torch.cat([a, b]), whole, atol=1e-4)


def test_blend_head(tmp_path, pixel_clip):
    latents, flows = pixel_clip["latents"], pixel_clip["flows"]
    policy = make_algorithm("reinforce", "flow", 32, head="blend", init_alpha=0.1, flow_warp="pixel").policy.eval()
    assert policy.config.flow_warp == "pixel" and any(p is policy.alpha_bias for p in policy.scalar_parameters())
    # untrained (gate 0, zero alpha map): exactly a flow-blend with factor init_alpha
    obs = build_observation("flow", latents[1:2], None, latents[:1], flows.flow[:1], flows.mask[:1])
    expected = FlowBlendPolicy(FlowBlendConfig(32, factor=0.1)).act(obs)
    assert torch.allclose(policy.act(obs), expected, atol=1e-6)
    assert torch.allclose(policy.alpha(obs), torch.full_like(obs[:, :1], 0.1), atol=1e-6)
    # inference reads the policy's flow_warp; the caller passes the codec
    frames, codec, raft = pixel_clip["frames"], pixel_clip["codec"], default_flow_model()
    ours, _ = apply_policy_to_chunk(policy, latents, frames, flow_model=raft, codec=codec)
    reference, _ = apply_policy_to_chunk(FlowBlendPolicy(FlowBlendConfig(32, factor=0.1, flow_warp="pixel")), latents,
                                         frames, flow_model=raft, codec=codec)
    assert torch.allclose(ours, reference, atol=1e-4)
    loaded = load_policy(policy.save_pretrained(tmp_path / "blend"))
    assert loaded.config == policy.config and torch.allclose(loaded.act(obs), policy.act(obs))
    with pytest.raises(ValueError, match="blend head reads the 'flow' observation"):
        ReinforcePolicyConfig(32, "pair", head="blend")
    with pytest.raises(ValueError, match="unknown REINFORCE head"):
        ReinforcePolicyConfig(32, head="mlp")
    with pytest.raises(ValueError, match="unknown flow_warp"):
        ReinforcePolicyConfig(32, flow_warp="voxel")


def test_the_detail_warp_propagates_the_style_without_softening_it(data_dir):
    """A factor-1 flow-blend copies the previous output wherever the flow is reliable. With the bilinear pixel
    warp the strokes soften at every copy and the Gram style loss climbs; the two-band ``detail`` warp keeps
    it near the frame-by-frame baseline's (measured on the last 4 of 12 frames of the panning shot wolf.mp4 at
    256 px: x2.35 against x0.96)."""
    codec = load_codec("taef2")
    frames = resize_to_width(read_video(data_dir / "videos/test/wolf.mp4", max_frames=12)[0], 256)
    style = load_image(data_dir / "styles/starry_night.jpg")
    gram = GramStyleLoss(VGG16Features(), style)
    with torch.no_grad():
        latents = LatentWCT(codec).stylize(frames, style)
        baseline = gram(codec.decode(latents[-4:])).mean()
        ratios = {}
        for warp in ("pixel", "detail"):
            copy = FlowBlendPolicy(FlowBlendConfig(32, factor=1.0, flow_warp=warp))
            refined, _ = apply_policy_to_chunk(copy, latents, frames, flow_model=default_flow_model(), codec=codec)
            ratios[warp] = (gram(codec.decode(refined[-4:])).mean() / baseline).item()
    assert ratios["detail"] < 1.15 and ratios["pixel"] > ratios["detail"] + 0.2, ratios
