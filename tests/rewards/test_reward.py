"""The combined style / content / temporal reward: weights, scales, temporal term, failures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rewards.content import LPIPSDistance
from rewards.reward import (
    RewardScales,
    RewardTerms,
    RewardWeights,
    StyleContentTemporalReward,
    combined_reward,
    masked_l1,
)
from rewards.style import GramStyleLoss
from rewards.vgg import VGG16Features
from rewards.warp import backward_warp, in_frame_mask

SIZE = (64, 96)  # H, W


def load_frames(folder, count: int) -> torch.Tensor:
    """The first ``count`` PNG frames of ``folder`` as (T,3,64,96) in [0,1]."""
    paths = sorted(folder.glob("*.png"))[:count]
    frames = [np.asarray(Image.open(p).convert("RGB").resize(SIZE[::-1], Image.Resampling.BICUBIC)) for p in paths]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def clip(data_dir) -> torch.Tensor:
    return load_frames(data_dir / "videos" / "train" / "sintel_ambush_3", 4)


@pytest.fixture(scope="module")
def style_image(data_dir) -> torch.Tensor:
    image = Image.open(data_dir / "styles" / "starry_night.jpg").convert("RGB").resize((128, 80))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def components(style_image) -> tuple[GramStyleLoss, LPIPSDistance]:
    return GramStyleLoss(VGG16Features(), style_image, style_size=None), LPIPSDistance()


def stylize(frames: torch.Tensor, style_image: torch.Tensor) -> torch.Tensor:
    """A cheap per-frame 'stylization': half the frame, half the style image at its size."""
    return 0.5 * frames + 0.5 * F.interpolate(style_image, size=frames.shape[-2:], mode="bilinear").expand_as(frames)


def test_total_combines_weights_and_scales_as_documented(components, clip, style_image):
    style_loss, lpips_alex = components
    stylized, content = stylize(clip[1:3], style_image), clip[1:3]
    prev = stylize(clip[0:2], style_image)
    mask = torch.ones(2, 1, *SIZE)
    mask[..., : SIZE[1] // 2] = 0
    weights, scales = RewardWeights(style=3.0, content=2.0, temporal=5.0), RewardScales(style=4.0, content=0.5, temporal=0.1)
    reward = StyleContentTemporalReward(style_loss, lpips_alex, weights)
    with torch.no_grad():
        terms = reward(stylized, content, prev, mask, scales=scales)
        style, content_term = style_loss(stylized), lpips_alex(stylized, content)
    temporal = (stylized - prev).abs()[..., SIZE[1] // 2 :].mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms.style, style)
    torch.testing.assert_close(terms.content, content_term)
    torch.testing.assert_close(terms.temporal, temporal)
    expected = -(3.0 * style / 4.0 + 2.0 * content_term / 0.5 + 5.0 * temporal / 0.1)
    torch.testing.assert_close(terms.total, expected)
    assert terms.total.shape == (2,) and (terms.total < 0).all()
    torch.testing.assert_close(combined_reward(weights, scales, style, content_term, temporal), expected)
    torch.testing.assert_close(reward.rescored(reward(stylized, content, prev, mask), scales).total, expected)
    # The defaults are Kuang & Chen's 10 / 1 / 10 on unit scales.
    assert RewardWeights() == RewardWeights(style=10.0, content=1.0, temporal=10.0)
    with torch.no_grad():
        default = StyleContentTemporalReward(style_loss, lpips_alex)(stylized, content, prev, mask)
    torch.testing.assert_close(default.total, -(10 * style + content_term + 10 * temporal))


@pytest.mark.fast
def test_masked_l1_by_hand():
    a = torch.full((1, 3, 2, 2), 0.6)
    b = a.clone()
    b[..., 0, :] = 0.2  # top row differs by 0.4 and is reliable
    b[..., 1, :] = 5.0  # bottom row is occluded: ignored
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    torch.testing.assert_close(masked_l1(a, b, mask), torch.tensor([0.4]))
    torch.testing.assert_close(masked_l1(a, b, torch.zeros_like(mask)), torch.tensor([0.0]))
    torch.testing.assert_close(masked_l1(a, b, None), torch.tensor([(0.4 + 4.4) / 2]))


def test_temporal_term_is_zero_without_a_previous_frame(components, clip, style_image):
    reward = StyleContentTemporalReward(*components)
    stylized = stylize(clip[:1], style_image)
    with torch.no_grad():
        terms = reward(stylized, clip[:1])
    assert terms.temporal.shape == (1,) and terms.temporal.item() == 0.0
    torch.testing.assert_close(terms.total, -(10 * terms.style + terms.content))
    with pytest.raises(ValueError, match="mask given without"):
        reward(stylized, clip[:1], None, torch.ones(1, 1, *SIZE))


def test_temporal_term_uses_the_warped_previous_frame(components, clip, style_image):
    """A frame moved 3 px right: warping the previous frame by the true flow cancels the motion."""
    current = stylize(clip[1:2], style_image)
    previous = torch.roll(current, shifts=-3, dims=-1)  # previous(x) = current(x + 3)
    flow = torch.zeros(1, 2, *SIZE)
    flow[:, 0] = -3.0  # current(p) = previous(p - 3)
    warped, mask = backward_warp(previous, flow), in_frame_mask(flow)
    reward = StyleContentTemporalReward(*components)
    with torch.no_grad():
        aligned = reward(current, clip[1:2], warped, mask).temporal
        unaligned = reward(current, clip[1:2], previous, None).temporal
    assert aligned.item() < 1e-5 and unaligned.item() > 0.02


def test_scales_from_baseline_make_each_term_about_one(components, clip, style_image):
    reward = StyleContentTemporalReward(*components)
    baseline = stylize(clip, style_image) + 0.03 * torch.randn_like(clip)  # flickering baseline
    with torch.no_grad():
        first = reward(baseline[:1], clip[:1])
        rest = reward(baseline[1:], clip[1:], baseline[:-1])
    scales = RewardScales.from_terms(rest)
    for name in ("style", "content", "temporal"):
        assert math.isclose(getattr(scales, name), getattr(rest, name).mean().item(), rel_tol=1e-6)
    with torch.no_grad():
        normalised = reward(baseline[1:], clip[1:], baseline[:-1], scales=scales)
    assert math.isclose(normalised.total.mean().item(), -(10 + 1 + 10), rel_tol=1e-5)
    # Several RewardTerms are concatenated; the first frame's zero temporal term dilutes T.
    both = RewardScales.from_terms([first, rest])
    assert math.isclose(both.temporal, scales.temporal * 3 / 4, rel_tol=1e-5)
    # A term that is 0 throughout is floored at eps instead of dividing by zero.
    assert RewardScales.from_terms(first, eps=1e-4).temporal == 1e-4
    logged = normalised.mean_dict()
    assert set(logged) == {"reward", "style", "content", "temporal"} and all(isinstance(v, float) for v in logged.values())


def test_reward_is_differentiable_in_the_stylized_frames(components, clip, style_image):
    reward = StyleContentTemporalReward(*components)
    stylized = stylize(clip[1:3], style_image).requires_grad_(True)
    terms = reward(stylized, clip[1:3], stylize(clip[0:2], style_image).detach(), torch.ones(2, 1, *SIZE))
    terms.total.sum().backward()
    assert torch.isfinite(stylized.grad).all() and stylized.grad.abs().sum() > 0


def test_non_finite_terms_raise_naming_the_term(components, clip, style_image):
    reward = StyleContentTemporalReward(*components)
    stylized = stylize(clip[1:3], style_image)
    prev = stylize(clip[0:2], style_image)
    prev[1, :, 5, 5] = float("nan")
    with torch.no_grad(), pytest.raises(FloatingPointError, match="'temporal'.*1 of 2"):
        reward(stylized, clip[1:3], prev)
    content = clip[1:3].clone()
    content[0, 0, 0, 0] = float("inf")
    with torch.no_grad(), pytest.raises(FloatingPointError, match="'content'"):
        reward(stylized, content)


def test_invalid_configuration_and_shapes_are_rejected(components, clip):
    with pytest.raises(ValueError, match="RewardWeights.style"):
        RewardWeights(style=-1.0)
    with pytest.raises(ValueError, match="RewardScales.temporal"):
        RewardScales(temporal=0.0)
    with pytest.raises(ValueError, match="RewardScales.content"):
        RewardScales(content=float("nan"))
    with pytest.raises(ValueError, match="at least one"):
        RewardScales.from_terms([])
    bad = RewardTerms(*(torch.tensor([float("nan")]),) * 4)
    with pytest.raises(FloatingPointError, match="'style'"):
        RewardScales.from_terms(bad)
    reward = StyleContentTemporalReward(*components)
    with pytest.raises(ValueError, match="content"):
        reward(clip[:2], clip[:1])
    with pytest.raises(ValueError, match="mask must be"):
        reward(clip[1:3], clip[1:3], clip[0:2], torch.ones(2, 3, *SIZE))
