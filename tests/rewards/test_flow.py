"""Warping convention, occlusion masks, .flo reading and RAFT flow on real data.

Ground truth: MPI-Sintel clean samples in ../shared/data/flow_gt (Butler et al., ECCV 2012).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.io.weights import WeightsNotFoundError
from rewards.flo import FloReadError, read_flo
from rewards.flow import ClipFlows, RAFTFlow, default_flow_model, estimate_flows, flows_and_masks
from rewards.warp import backward_warp, in_frame_mask, occlusion_mask, resize_flow
from tests.helpers import load_rgb, load_sintel_pair, shifted_crops

SCENES = ("sintel_alley_1", "sintel_cave_2")
# Mean abs RGB error (0-255) of frame_0003 vs frame_0002 on valid, non-occluded, in-frame pixels,
# before and after the backward warp by the ground-truth flow (values from ../shared/data/README.md).
GT_WARP_ERRORS = {"sintel_alley_1": (9.4, 1.9), "sintel_cave_2": (13.4, 2.6)}


@pytest.fixture(scope="module")
def model() -> RAFTFlow:
    return default_flow_model()


@pytest.fixture(scope="module")
def astronaut(data_dir: Path) -> torch.Tensor:
    return load_rgb(data_dir / "photos" / "astronaut.png")


# ---------------------------------------------------------------- warping convention


@pytest.mark.fast
def test_backward_warp_samples_at_p_plus_flow() -> None:
    ramp = torch.arange(40.0).view(1, 1, 5, 8).repeat(2, 3, 1, 1)  # value = 8 y + x
    flow = torch.zeros(2, 2, 5, 8)
    flow[0, 0], flow[0, 1] = 1.0, 2.0  # integer: x(p + (1, 2))
    flow[1, 0], flow[1, 1] = 0.25, -0.5  # sub-pixel: bilinear on a linear ramp is exact
    warped = backward_warp(ramp, flow)
    assert torch.allclose(warped[0, :, :3, :7], ramp[0, :, 2:, 1:])
    assert torch.allclose(warped[1, :, 1:, :7], ramp[1, :, 1:, :7] + 0.25 - 4.0, atol=1e-5)
    inside = in_frame_mask(flow)
    assert inside.shape == (2, 1, 5, 8)
    assert inside[0, 0].sum() == 3 * 7 and inside[0, 0, :3, :7].all()
    assert inside[1, 0, 0].sum() == 0 and inside[1, 0, 1:, :7].all() and not inside[1, 0, :, 7].any()


def test_ground_truth_flow_aligns_frames(data_dir: Path) -> None:
    """Pins the direction: frame_0003 warped by the flow 0002->0003 matches frame_0002."""
    for scene in SCENES:
        data = load_sintel_pair(data_dir, scene)
        reliable = ~data["occluded"] & ~data["invalid"] & (in_frame_mask(data["flow"]) > 0)
        before = (data["frame3"] - data["frame2"]).abs().mean(1, keepdim=True)[reliable].mean() * 255
        after = (backward_warp(data["frame3"], data["flow"]) - data["frame2"]).abs().mean(1, keepdim=True)
        wrong = (backward_warp(data["frame3"], -data["flow"]) - data["frame2"]).abs().mean(1, keepdim=True)
        after, wrong = after[reliable].mean() * 255, wrong[reliable].mean() * 255
        print(f"\n{scene}: mean abs RGB error before {before:.2f}, after GT warp {after:.2f}, reversed {wrong:.2f}")
        expected_before, expected_after = GT_WARP_ERRORS[scene]
        assert abs(before - expected_before) < 0.3
        assert abs(after - expected_after) < 0.3
        assert after < before / 3 and wrong > before


@pytest.mark.fast
def test_occlusion_mask_marks_inconsistent_flow_and_motion_boundaries() -> None:
    flow = torch.zeros(1, 2, 32, 32)
    flow[:, 0, :, 16:] = 3.0  # right half moves right by 3 px: a motion boundary at x = 15|16
    other = -flow  # consistent: w~(p) = -flow(p + w) = -w wherever p + w stays on the same side
    other[:, :, :8] = 5.0  # top rows: the other direction disagrees
    mask = occlusion_mask(flow, other)
    assert mask.dtype == torch.float32 and mask.shape == (1, 1, 32, 32)
    assert mask[0, 0, :8].sum() == 0  # inconsistent
    assert mask[0, 0, 8:, -3:].sum() == 0  # p + w leaves the frame
    assert mask[0, 0, 8:, :12].all() and mask[0, 0, 8:, 17:-3].all()
    with_boundaries = occlusion_mask(flow, other, motion_boundaries=True)
    assert with_boundaries[0, 0, 8:, 15].sum() == 0 and with_boundaries[0, 0, 8:, :12].all()


@pytest.mark.fast
def test_resize_flow_scales_vectors() -> None:
    flow = torch.stack((torch.full((36, 100), 8.0), torch.full((36, 100), -4.0))).unsqueeze(0)
    small = resize_flow(flow, (9, 25))  # latent size H/4, W/4
    assert small.shape == (1, 2, 9, 25)
    assert torch.allclose(small[0, 0], torch.full((9, 25), 2.0))
    assert torch.allclose(small[0, 1], torch.full((9, 25), -1.0))
    assert torch.allclose(resize_flow(small, (36, 100)), flow)
    with pytest.raises(ValueError, match="size"):
        resize_flow(flow, (0, 4))


@pytest.mark.fast
def test_warp_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N,2,H,W\)"):
        backward_warp(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="H,W must match"):
        backward_warp(torch.zeros(1, 3, 8, 8), torch.zeros(1, 2, 8, 9))
    with pytest.raises(ValueError, match="same shape"):
        occlusion_mask(torch.zeros(1, 2, 8, 8), torch.zeros(2, 2, 8, 8))


# ---------------------------------------------------------------- .flo


def test_read_flo(data_dir: Path, tmp_path: Path) -> None:
    flow = read_flo(data_dir / "flow_gt" / "sintel_alley_1" / "flow" / "frame_0002.flo")
    assert flow.shape == (2, 436, 1024) and flow.dtype == torch.float32
    assert 1.0 < flow.norm(dim=0).mean() < 10.0  # README: mean motion 3 px
    bad = tmp_path / "bad.flo"
    bad.write_bytes(np.array([1.0, 0, 0], "<f4").tobytes())
    with pytest.raises(FloReadError, match="magic"):
        read_flo(bad)
    truncated = tmp_path / "truncated.flo"
    truncated.write_bytes(np.array([202021.25], "<f4").tobytes() + np.array([4, 3], "<i4").tobytes() + bytes(8))
    with pytest.raises(FloReadError, match="4x3"):
        read_flo(truncated)


# ---------------------------------------------------------------- RAFT


def test_raft_epe_and_occlusions_on_sintel(data_dir: Path, model: RAFTFlow) -> None:
    """RAFT-small at half resolution (512x218), flow scaled up to 1024x436 and compared with the GT;
    the forward-backward test on RAFT's flows finds Sintel's occlusions."""
    scenes = [load_sintel_pair(data_dir, scene) for scene in SCENES]

    def half(image: torch.Tensor) -> torch.Tensor:
        return F.interpolate(image, scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)

    first = torch.cat([half(s["frame2"]) for s in scenes])
    second = torch.cat([half(s["frame3"]) for s in scenes])
    flows = model(torch.cat((first, second)), torch.cat((second, first)))
    forward, backward = flows[: len(SCENES)], flows[len(SCENES) :]
    estimate = resize_flow(forward, (436, 1024))
    reliable = F.interpolate(occlusion_mask(forward, backward), size=(436, 1024), mode="nearest") > 0
    for index, (scene, data) in enumerate(zip(SCENES, scenes)):
        valid = ~data["invalid"]
        epe = float((estimate[index : index + 1] - data["flow"]).norm(dim=1, keepdim=True)[valid].mean())
        occluded = (data["occluded"] | (in_frame_mask(data["flow"]) == 0)) & valid
        found = float((~reliable[index : index + 1])[occluded].float().mean())
        kept = float(reliable[index : index + 1][~occluded & valid].float().mean())
        print(
            f"\n{scene}: RAFT-small EPE {epe:.3f} px (estimated at 512x218, measured at 1024x436); "
            f"occlusion test flags {found:.0%} of GT-occluded pixels, keeps {kept:.1%} of visible ones"
        )
        assert epe < (1.0 if scene == "sintel_alley_1" else 3.0)
        assert found > 0.3 and kept > 0.9


TRANSLATION = (6, -4, 132, 150)  # dx, dy, height, width (no multiples of 8)


@pytest.fixture(scope="module")
def translation(astronaut: torch.Tensor, model: RAFTFlow) -> tuple[torch.Tensor, ClipFlows]:
    """Three crops moving by (dx, dy) per frame and their flows and masks."""
    dx, dy, height, width = TRANSLATION
    frames = shifted_crops(astronaut, 180, 200, (height, width), [(0, 0), (dx, dy), (2 * dx, 2 * dy)])
    return frames, flows_and_masks(frames, model)


def test_translation_recovered_and_outgoing_strip_masked(translation: tuple[torch.Tensor, ClipFlows]) -> None:
    dx, dy, height, width = TRANSLATION
    _, flows = translation
    assert flows.flow_fwd.shape == flows.flow_bwd.shape == (2, 2, height, width)
    assert flows.mask_fwd.shape == flows.mask_bwd.shape == (2, 1, height, width)
    true = torch.tensor([dx, dy], dtype=torch.float32).view(1, 2, 1, 1)
    interior = (slice(None), slice(None), slice(12, -12), slice(12, -12))
    fwd_epe = (flows.flow_fwd - true)[interior].norm(dim=1).mean()
    bwd_epe = (flows.flow_bwd + true)[interior].norm(dim=1).mean()
    print(f"\ntranslation ({dx},{dy}) at {width}x{height}: interior EPE fwd {fwd_epe:.3f}, bwd {bwd_epe:.3f} px")
    assert fwd_epe < 0.3 and bwd_epe < 0.3
    assert (flows.flow_fwd + flows.flow_bwd)[interior].norm(dim=1).mean() < 0.3  # fwd ~ -bwd
    # forward: targets x + 6 > W-1 (right strip) and y - 4 < 0 (top strip) leave the frame
    mask = flows.mask_fwd[:, 0]
    assert mask[:, :, width - dx :].sum() == 0 and mask[:, : -dy, :].sum() == 0
    assert mask[:, 8 - dy : -8, 8 : -8 - dx].mean() > 0.98
    # backward (frame i+1 -> i): the opposite strips
    back = flows.mask_bwd[:, 0]
    assert back[:, :, :dx].sum() == 0 and back[:, height + dy :, :].sum() == 0
    assert back[:, 8 : -8 + dy, 8 + dx : -8].mean() > 0.98


def test_subpixel_translation_and_small_frames(astronaut: torch.Tensor, model: RAFTFlow) -> None:
    """A (1.5, 0.5) px shift made by 2x2 box-downsampling crops offset by (3, 1) px; frames 96x112 (< 128)."""
    height, width = 96, 112
    big = shifted_crops(astronaut, 150, 180, (2 * height, 2 * width), [(0, 0), (3, 1)])
    frames = F.avg_pool2d(big, 2)
    flow = model(frames[:1], frames[1:])
    assert flow.shape == (1, 2, height, width)
    epe = (flow - torch.tensor([1.5, 0.5]).view(1, 2, 1, 1)).norm(dim=1)[:, 10:-10, 10:-10].mean()
    print(f"\nsub-pixel (1.5,0.5) at {width}x{height}: interior EPE {epe:.3f} px")
    assert epe < 0.3


def test_estimate_flows_chunks_match_one_batch(translation: tuple[torch.Tensor, ClipFlows], model: RAFTFlow) -> None:
    frames, flows = translation
    chunk_fwd, chunk_bwd = estimate_flows(frames, model, batch_size=1)
    assert chunk_fwd.shape == chunk_bwd.shape == flows.flow_fwd.shape
    assert torch.allclose(chunk_fwd, flows.flow_fwd, atol=1e-3)
    assert torch.allclose(chunk_bwd, flows.flow_bwd, atol=1e-3)


def test_flow_inputs_validated(model: RAFTFlow) -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        estimate_flows(torch.zeros(1, 3, 128, 128), model)
    with pytest.raises(ValueError, match=r"\(T,3,H,W\)"):
        estimate_flows(torch.zeros(4, 1, 128, 128), model)
    with pytest.raises(ValueError, match="same shape"):
        model(torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 136))
    assert default_flow_model() is model
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.train().raft.training


@pytest.mark.fast
def test_raft_large_unavailable_is_a_clear_error() -> None:
    with pytest.raises(WeightsNotFoundError, match="raft_large.pth.*VSTYLE_WEIGHTS"):
        RAFTFlow(size="large")
    with pytest.raises(ValueError, match="unknown RAFT size"):
        RAFTFlow(size="huge")
