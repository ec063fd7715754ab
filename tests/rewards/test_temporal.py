"""Temporal loss (reward) and warping error (metric) on a real Sintel clip and exact translations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rewards.flow import ClipFlows, flows_and_masks
from rewards.temporal import temporal_loss, warping_error
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
