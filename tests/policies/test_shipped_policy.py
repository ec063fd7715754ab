"""The policy that ships (``policies/pretrained/default``): it loads into the current policy class, is what
``stylize_video.py`` uses by default, and reduces flicker on a test clip for a style it never saw in training."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from pipeline.io.images import load_image, resize_to_width
from pipeline.io.video import read_video
from pipeline.latents.codecs import load_codec
from pipeline.latents.stylizers import build_stylizer
from pipeline.methods import Components, LatentMethod, load_method
from policies.base import SHIPPED_POLICIES, load_policy
from policies.reinforce import ReinforcePolicy
from rewards.classical_flow import ClassicalFlow
from rewards.content import LPIPSDistance
from rewards.style import GramStyleLoss
from rewards.temporal import warping_error
from rewards.vgg import VGG16Features
from scripts.stylize_video import method_and_source, parse_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HELD_OUT = "woman_with_hat_matisse"  # never a training style (../shared/data/README.md)


def test_shipped_policy_loads_into_the_current_class_and_is_the_default():
    policy = load_policy("default")
    assert isinstance(policy, ReinforcePolicy) and policy.observation == "flow"
    card = (SHIPPED_POLICIES["default"] / "MODEL_CARD.md").read_text()
    training = json.loads((SHIPPED_POLICIES["default"] / "config.json").read_text())["training"]
    assert HELD_OUT not in " ".join(training["style"]) and HELD_OUT in card
    args = ["--video", "v.mp4", "--style", "s.jpg", "--out", "o.mp4"]
    assert method_and_source(parse_args(args)) == ("policy", "default")
    assert method_and_source(parse_args([*args, "--policy", "none"])) == ("baseline", None)


def held_out_case(data_dir, width: int) -> tuple[torch.Tensor, torch.Tensor, Components]:
    """The test clip sintel_alley ``width`` px wide, the held-out style, and the default latent components."""
    frames = resize_to_width(read_video(data_dir / "videos" / "test" / "sintel_alley")[0], width)
    style = load_image(data_dir / "styles" / f"{HELD_OUT}.jpg")
    return frames, style, Components(build_stylizer("latent-wct", codec=load_codec("taef2")), None, torch.device("cpu"))


def error_ratio(data_dir, width: int) -> float:
    """Warping error of the shipped policy over the frame-by-frame baseline's on a test clip ``width`` px wide,
    for a held-out style, judged with Farneback flow (the policy reads DIS flows and was trained against RAFT)."""
    frames, style, components = held_out_case(data_dir, width)
    shipped = load_method("policy", components, "default").stylize_clip(frames, style)
    baseline = load_method("baseline", components).stylize_clip(frames, style)
    judge = ClassicalFlow("farneback")
    return warping_error(shipped, frames, judge).mean / warping_error(baseline, frames, judge).mean


def test_shipped_policy_reduces_flicker_for_a_held_out_style_at_every_size(data_dir):
    """Trained at 256 px, it keeps its effect at half and twice that width: observations do not depend on the
    pixel scale. Measured ratios: 0.31 at 128 px, 0.43 at 256 px, 0.44 at 512 px."""
    smaller, larger = error_ratio(data_dir, 128), error_ratio(data_dir, 512)
    assert smaller < 0.6 and larger < 0.6, (smaller, larger)


def test_a_model_folder_trained_on_another_latent_space_is_refused(tmp_path):
    """The latent-space check reads a model folder's training settings, as it reads a run folder's config."""
    policy = load_policy("default")
    folder = policy.save_pretrained(tmp_path / "sd-policy", training={"stylizer": "diffusest", "codec": "sd-vae"})
    components = Components(build_stylizer("latent-wct", codec=load_codec("taef2")), None, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"another latent space \(stylizer diffusest, codec sd-vae\)"):
        load_method("policy", components, str(folder))
    assert load_method("policy", components, "default").info["kind"] == "reinforce"  # the shipped one fits


def test_the_fast_flow_path_is_as_good_as_the_raft_path(data_dir):
    """The shipped policy reads OpenCV DIS flows (trained so); fed RAFT flows instead, the estimator DIS replaced,
    it does no better on a test clip at 256 px for a held-out style: Farneback warping error no lower, Gram and
    LPIPS within 2.5% (measured: DIS warping error 32% lower, Gram +1.96%, LPIPS +1.5%; over the five test
    clips and two styles Gram +0.3-0.7%, LPIPS -1.4 to -3.2%, README "Speed")."""
    frames, style, components = held_out_case(data_dir, 256)
    gram, lpips, judge = GramStyleLoss(VGG16Features(), style), LPIPSDistance(), ClassicalFlow("farneback")
    scores = {}
    for flow in ("dis", "raft"):
        policy = load_policy("default")
        # TAEF2's own encoder re-encodes the warp in both runs, so that only the flow differs
        policy.config = dataclasses.replace(policy.config, observation_flow=flow, warp_encoder="codec")
        result = LatentMethod.from_components(components, policy).stylize_clip(frames, style)
        with torch.no_grad():
            scores[flow] = (warping_error(result, frames, judge).mean, gram(result).mean().item(),
                            lpips(result, frames).mean().item())
    (fast_error, fast_gram, fast_lpips), (raft_error, raft_gram, raft_lpips) = scores["dis"], scores["raft"]
    assert fast_error < raft_error
    assert abs(fast_gram / raft_gram - 1) < 0.025 and abs(fast_lpips / raft_lpips - 1) < 0.025, scores


def test_the_light_warp_encoder_costs_little_against_the_codecs_own(data_dir):
    """The shipped policy re-encodes its pixel-warp observation with the light encoder distilled from TAEF2's
    (``warp_encoder="auto"``), at a quarter of the cost; with the codec's own encoder, the one it was trained with,
    on a test clip at 256 px for a held-out style: Farneback warping error within 10%, Gram and LPIPS within 3%
    (measured: +5.7%, +1.8%, +1.0%; over three test clips and two styles +4.5 to +5.9%, Gram +1.8 to +3.4%,
    LPIPS -0.8 to +0.3%, README "Speed")."""
    frames, style, components = held_out_case(data_dir, 256)
    gram, lpips, judge = GramStyleLoss(VGG16Features(), style), LPIPSDistance(), ClassicalFlow("farneback")
    scores, codecs = {}, {}
    for encoder in ("auto", "codec"):
        policy = load_policy("default")
        policy.config = dataclasses.replace(policy.config, warp_encoder=encoder)
        method = LatentMethod.from_components(components, policy)
        codecs[encoder] = method.pipeline.warp_codec
        result = method.stylize_clip(frames, style)
        with torch.no_grad():
            scores[encoder] = (warping_error(result, frames, judge).mean, gram(result).mean().item(),
                               lpips(result, frames).mean().item())
    assert codecs["codec"] is components.stylizer.codec and codecs["auto"].model_id.endswith("+taef2-lite")
    (light_error, light_gram, light_lpips), (full_error, full_gram, full_lpips) = scores["auto"], scores["codec"]
    assert abs(light_error / full_error - 1) < 0.10, scores
    assert abs(light_gram / full_gram - 1) < 0.03 and abs(light_lpips / full_lpips - 1) < 0.03, scores
