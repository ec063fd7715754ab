"""Temporal loss (reward), warping error and long-term warping error (metrics) on real Sintel clips and exact
translations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rewards.classical_flow import ClassicalFlow
from rewards.flow import ClipFlows, flows_and_masks
from rewards.temporal import (
    long_term_flows,
    long_term_warping_error,
    temporal_loss,
    warping_error,
)
from rewards.warp import backward_warp, occlusion_mask
from tests.helpers import load_rgb, shifted_crops

CLIP_FRAMES = 4


@pytest.fixture(scope="module")
def clip(data_dir: Path) -> torch.Tensor:
    """First frames of test/sintel_alley at 256x109 (2x box-downsampled): T=4, H < 128, H no multiple of 8."""
    paths = sorted((data_dir / "videos" / "test" / "sintel_alley").glob("*.png"))[:CLIP_FRAMES]
    frames = [np.array(Image.open(p).convert("RGB").reduce(2), dtype=np.float32) / 255.0 for p in paths]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def long_clip(data_dir: Path) -> torch.Tensor:
    """12 frames of test/sintel_mountain_2 at 128x55 (4x box-downsampled): enough for frames 10 apart."""
    paths = sorted((data_dir / "videos" / "test" / "sintel_mountain_2").glob("*.png"))[:12]
    frames = [np.array(Image.open(p).convert("RGB").reduce(4), dtype=np.float32) / 255.0 for p in paths]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def clip_flows(clip: torch.Tensor) -> ClipFlows:
    return flows_and_masks(clip)


def flicker(frames: torch.Tensor, amplitude: float = 0.1) -> torch.Tensor:
    """Per-frame brightness jitter: frame t scaled by 1 +- amplitude (alternating)."""
    signs = torch.tensor([(-1.0) ** t for t in range(frames.shape[0])]).view(-1, 1, 1, 1)
    return (frames * (1.0 + amplitude * signs)).clamp(0.0, 1.0)


def exact_translation(data_dir: Path, shift: tuple[int, int] = (3, 2)) -> tuple[torch.Tensor, ClipFlows]:
    """Three 64x80 crops moving by an integer ``shift`` per frame, with their exact flows and masks."""
    dx, dy = shift
    photo = load_rgb(data_dir / "photos" / "astronaut.png")
    frames = shifted_crops(photo, 200, 220, (64, 80), [(0, 0), shift, (2 * dx, 2 * dy)])
    forward = torch.tensor([float(dx), float(dy)]).view(1, 2, 1, 1).expand(2, 2, 64, 80)
    return frames, ClipFlows(forward, -forward, occlusion_mask(forward, -forward), occlusion_mask(-forward, forward))


def test_temporal_loss_is_zero_for_exact_motion_and_grows_with_flicker(data_dir: Path) -> None:
    frames, flows = exact_translation(data_dir)
    loss = temporal_loss(frames, flows)
    assert loss.shape == (2,) and loss.max() < 1e-5
    assert temporal_loss(flicker(frames), flows).min() > 0.02


def test_temporal_loss_on_real_clip(clip: torch.Tensor, clip_flows: ClipFlows) -> None:
    assert clip.shape == (CLIP_FRAMES, 3, 109, 256)
    stylized = clip.clone().requires_grad_(True)
    loss = temporal_loss(stylized, clip_flows)
    flickering = temporal_loss(flicker(clip), clip_flows)
    print(f"\nsintel_alley 256x109 temporal loss: clean {loss.tolist()}, flicker {flickering.tolist()}")
    assert loss.shape == (CLIP_FRAMES - 1,) and torch.isfinite(loss).all()
    assert (flickering > 2 * loss).all()
    # the definition: mean over channels and reliable pixels of each direction's |difference|
    for i in range(CLIP_FRAMES - 1):
        m_f, m_b = clip_flows.mask_fwd[i, 0] > 0, clip_flows.mask_bwd[i, 0] > 0
        ahead = backward_warp(clip[i + 1 : i + 2], clip_flows.flow_fwd[i : i + 1])[0]
        behind = backward_warp(clip[i : i + 1], clip_flows.flow_bwd[i : i + 1])[0]
        expected = (clip[i] - ahead)[:, m_f].abs().mean() + (clip[i + 1] - behind)[:, m_b].abs().mean()
        assert loss[i].item() == pytest.approx(expected.item(), rel=1e-4)
    loss.sum().backward()
    assert torch.isfinite(stylized.grad).all() and stylized.grad.abs().sum() > 0
    # channel-normalised: any channel count (latents) gives the same per-element mean
    assert torch.allclose(temporal_loss(clip.repeat(1, 2, 1, 1), clip_flows), loss.detach(), rtol=1e-5)


def test_warping_error_definition_chunking_and_flicker(clip: torch.Tensor, clip_flows: ClipFlows) -> None:
    own = warping_error(clip, clip, flows=clip_flows)
    assert own.per_frame.shape == (CLIP_FRAMES - 1,) and isinstance(own.mean, float)
    # Lai et al.: sum over channels and reliable pixels of squared differences / number of reliable pixels
    for t in range(1, CLIP_FRAMES):
        mask = clip_flows.mask_fwd[t - 1, 0] > 0
        warped = backward_warp(clip[t : t + 1], clip_flows.flow_fwd[t - 1 : t])[0]
        expected = (warped - clip[t - 1])[:, mask].square().sum() / mask.sum()
        assert own.per_frame[t - 1].item() == pytest.approx(expected.item(), rel=1e-4)
    assert own.mean == pytest.approx(own.per_frame.mean().item())
    # flows estimated here on the content, two pairs per chunk (chunks overlap by one frame)
    estimated = warping_error(clip, clip, chunk_size=2)
    assert torch.allclose(estimated.per_frame, own.per_frame, rtol=1e-3, atol=1e-6)
    flickering = warping_error(flicker(clip), clip, flows=clip_flows)
    print(f"\nsintel_alley 256x109 warping error: content itself {own.mean:.5f}, with flicker {flickering.mean:.5f}")
    assert flickering.mean > 3 * own.mean


def test_clip_flows_indexing(clip_flows: ClipFlows) -> None:
    last = clip_flows[-1]
    assert len(last) == 1 and torch.equal(last.flow_fwd[0], clip_flows.flow_fwd[-1])
    middle = clip_flows[1:3]
    assert len(middle) == 2 and torch.equal(middle.mask_bwd, clip_flows.mask_bwd[1:3])


def test_bad_inputs_raise(clip: torch.Tensor, clip_flows: ClipFlows) -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        warping_error(clip[:1], clip[:1])
    with pytest.raises(ValueError, match="same shape"):
        warping_error(clip, clip[:, :, :100])
    with pytest.raises(ValueError, match="same shape"):
        warping_error(clip[:-1], clip)
    with pytest.raises(ValueError, match="pairs"):
        warping_error(clip[:-1], clip[:-1], flows=clip_flows)
    with pytest.raises(ValueError, match="pairs"):
        temporal_loss(clip[:-1], clip_flows)
    with pytest.raises(ValueError, match="H,W must match"):
        temporal_loss(clip[..., :128], clip_flows)


def drifting(frames: torch.Tensor, step: float = 0.005) -> torch.Tensor:
    """``frames`` with a colour offset growing by ``step`` per frame (+R, +G/2, -B): each consecutive pair barely
    changes, frames k apart by k times as much."""
    tint = torch.tensor([1.0, 0.5, -1.0]).view(1, 3, 1, 1)
    return (frames + step * torch.arange(frames.shape[0], dtype=frames.dtype).view(-1, 1, 1, 1) * tint).clamp(0, 1)


def test_long_term_warping_error_definition_and_chunking(long_clip: torch.Tensor) -> None:
    clip, gap = long_clip[:8], 3
    stylized = drifting(clip)
    flow = ClassicalFlow()
    error = long_term_warping_error(stylized, clip, gap, flow_model=flow, chunk_size=1)
    assert error.per_frame.shape == (8 - gap,) and error.mean == pytest.approx(error.per_frame.mean().item())
    # the flow estimated directly between frames i and i+k, masked by the forward-backward test, Lai et al.'s error
    for i in range(8 - gap):
        first, second = clip[i : i + 1], clip[i + gap : i + gap + 1]
        forward, backward = flow(first, second), flow(second, first)
        mask = occlusion_mask(forward, backward)[0, 0] > 0
        warped = backward_warp(stylized[i + gap : i + gap + 1], forward)[0]
        expected = (warped - stylized[i])[:, mask].square().sum() / mask.sum()
        assert error.per_frame[i].item() == pytest.approx(expected.item(), rel=1e-4), i
    flows = long_term_flows(clip, gap, flow)
    assert len(flows) == 8 - gap and torch.equal(flows.flow_fwd[4], flow(clip[4:5], clip[7:8])[0])
    for same in (long_term_warping_error(stylized, clip, gap, flow_model=flow, chunk_size=8),
                 long_term_warping_error(stylized, clip, gap, flows=flows)):
        assert torch.allclose(same.per_frame, error.per_frame, rtol=1e-5, atol=1e-8)
    consecutive = warping_error(stylized, clip, flow_model=flow)
    assert torch.allclose(long_term_warping_error(stylized, clip, 1, flow_model=flow).per_frame, consecutive.per_frame)


def test_long_term_warping_error_catches_a_slow_drift(long_clip: torch.Tensor) -> None:
    flow = ClassicalFlow()
    drift = drifting(long_clip)
    errors = {}
    for gap in (1, 5, 10):
        flows = long_term_flows(long_clip, gap, flow)
        own = long_term_warping_error(long_clip, long_clip, gap, flows=flows)
        errors[gap] = (own.mean, long_term_warping_error(drift, long_clip, gap, flows=flows).mean)
    print("\nsintel_mountain_2 128x55, (content, drifting copy) per gap: " + str(errors))
    own_1, drift_1 = errors[1]
    own_10, drift_10 = errors[10]
    assert drift_1 < 1.5 * own_1  # the consecutive test is nearly passed
    assert drift_10 > 3 * own_10  # frames 10 apart show the drift
    # the excess over the content's own grows as k^2 (an offset k times larger, squared)
    assert drift_10 - own_10 > 50 * (drift_1 - own_1) > 0
    assert errors[1][1] - errors[1][0] < errors[5][1] - errors[5][0] < drift_10 - own_10


def test_long_term_bad_inputs_raise(long_clip: torch.Tensor) -> None:
    flow = ClassicalFlow()
    with pytest.raises(ValueError, match="at least 11 frames"):
        long_term_warping_error(long_clip[:10], long_clip[:10], 10, flow_model=flow)
    with pytest.raises(ValueError, match="same shape"):
        long_term_warping_error(long_clip[:-1], long_clip, 5, flow_model=flow)
    with pytest.raises(ValueError, match=">= 1"):
        long_term_flows(long_clip, 0, flow)
    with pytest.raises(ValueError, match="T-k = 7"):
        long_term_warping_error(long_clip, long_clip, 5, flows=long_term_flows(long_clip[:-1], 5, flow))
