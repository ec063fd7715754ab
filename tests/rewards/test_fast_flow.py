"""The fast content flow of inference (``rewards.flow.build_flow_model("dis")``: OpenCV DIS, medium preset) on real
images: known shifts of a photo, the MPI-Sintel ground truth at the pipeline's 256-px width (Butler et al., ECCV
2012; ../shared/data/flow_gt), its forward-backward occlusion mask, and the estimator names.

Bounds are the values measured here with a margin of about 2-3x (measured in comments).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline.io.images import resize_to_width
from rewards.classical_flow import ClassicalFlow
from rewards.flow import DIS_PRESET, FLOW_ESTIMATORS, build_flow_model, default_flow_model, flows_and_masks
from rewards.warp import in_frame_mask, occlusion_mask, resize_flow
from tests.helpers import load_rgb, load_sintel_pair, shifted_crops

FAST_FLOW = "dis"
WIDTH = 256  # the inference width of the benchmarks (Sintel's 1024x436 becomes 256x112)
# scene: (EPE bound on visible pixels, measured 0.19 / 0.55 px; RAFT-small measured 0.30 / 0.64 px at this size)
SINTEL_EPE = {"sintel_alley_1": 0.4, "sintel_cave_2": 1.0}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_flow_model(FAST_FLOW)


@pytest.fixture(scope="module")
def astronaut(data_dir: Path) -> torch.Tensor:
    return load_rgb(data_dir / "photos" / "astronaut.png")


def interior_epe(flow: torch.Tensor, shift: tuple[float, float], margin: int) -> float:
    """Mean end-point error of ``flow`` (N,2,H,W) against the constant ``shift`` (dx, dy), ``margin`` px from the edges."""
    true = torch.tensor(shift, dtype=flow.dtype).view(1, 2, 1, 1)
    return float((flow - true)[..., margin:-margin, margin:-margin].norm(dim=1).mean())


@pytest.mark.parametrize("shift", [(6, -4), (3, 2)])
def test_integer_shift_recovered_both_ways_with_masks(model: torch.nn.Module, astronaut: torch.Tensor,
                                                      shift: tuple[int, int]) -> None:
    """Three crops moving by ``shift`` per frame (132x150, no multiples of 8): the flows both ways and their masks."""
    dx, dy = shift
    height, width = 132, 150
    frames = shifted_crops(astronaut, 180, 200, (height, width), [(0, 0), (dx, dy), (2 * dx, 2 * dy)])
    flows = flows_and_masks(frames, model)
    assert flows.flow_fwd.shape == (2, 2, height, width) and flows.flow_fwd.dtype == torch.float32
    forward, backward = interior_epe(flows.flow_fwd, (dx, dy), 12), interior_epe(flows.flow_bwd, (-dx, -dy), 12)
    print(f"\n{FAST_FLOW} shift ({dx},{dy}): interior EPE fwd {forward:.3f}, bwd {backward:.3f} px")
    assert forward < 0.3 and backward < 0.3  # measured <= 0.09
    mask = flows.mask_fwd[:, 0]  # targets leaving the frame (x + dx > W-1) are unreliable; the interior is kept
    assert mask[:, :, width - dx:].sum() == 0
    assert mask[:, 12:-12, 12:-12].mean() > 0.95  # measured 0.999


@pytest.mark.parametrize("shift", [(1.5, 0.5), (0.5, 1.5), (2.5, -1.5)])
def test_subpixel_shift_recovered(model: torch.nn.Module, astronaut: torch.Tensor, shift: tuple[float, float]) -> None:
    """A half-pixel shift made by 2x2 box-downsampling crops offset by twice ``shift`` (96x112 frames)."""
    height, width = 96, 112
    big = shifted_crops(astronaut, 150, 180, (2 * height, 2 * width), [(0, 0), (int(2 * shift[0]), int(2 * shift[1]))])
    frames = F.avg_pool2d(big, 2)
    epe = interior_epe(model(frames[:1], frames[1:]), shift, 10)
    print(f"\n{FAST_FLOW} sub-pixel shift {shift}: interior EPE {epe:.3f} px")
    assert epe < 0.3  # measured 0.07-0.09


def sintel_at_width(data_dir: Path, scene: str, width: int) -> dict[str, torch.Tensor]:
    """A Sintel sample resized to ``width`` (frames antialiased, GT flow resized and its vectors scaled); ``visible``:
    valid, non-occluded, in-frame pixels; ``occluded``: valid pixels occluded or leaving the frame."""
    data = load_sintel_pair(data_dir, scene)
    first, second = resize_to_width(data["frame2"], width), resize_to_width(data["frame3"], width)
    size = tuple(first.shape[-2:])
    flow = resize_flow(data["flow"], size)

    def fraction(mask: torch.Tensor) -> torch.Tensor:
        return F.interpolate(mask.float(), size=size, mode="bilinear", antialias=True, align_corners=False)

    valid = fraction(data["invalid"]) < 0.01
    occluded = ((fraction(data["occluded"]) > 0.5) | (in_frame_mask(flow) == 0)) & valid
    return {"frame2": first, "frame3": second, "flow": flow, "visible": ~occluded & valid, "occluded": occluded}


@pytest.mark.parametrize("scene", list(SINTEL_EPE))
def test_sintel_ground_truth_and_occlusions(data_dir: Path, model: torch.nn.Module, scene: str) -> None:
    """EPE against Sintel's flow on visible pixels at 256 px, and the forward-backward test against its occlusions."""
    data = sintel_at_width(data_dir, scene, WIDTH)
    first, second = data["frame2"], data["frame3"]
    flows = model(torch.cat((first, second)), torch.cat((second, first)))
    forward, backward = flows[:1], flows[1:]
    epe = float((forward - data["flow"]).norm(dim=1, keepdim=True)[data["visible"]].mean())
    unreliable = occlusion_mask(forward, backward) == 0
    found = float(unreliable[data["occluded"]].float().mean())
    false_alarms = float(unreliable[data["visible"]].float().mean())
    print(f"\n{scene} at {first.shape[-1]}x{first.shape[-2]}: {FAST_FLOW} EPE {epe:.3f} px on visible pixels; "
          f"occlusion test flags {found:.0%} of GT-occluded, {false_alarms:.1%} of visible pixels")
    assert epe < SINTEL_EPE[scene]
    assert found > 0.25  # measured 53% / 38%
    assert false_alarms < 0.05  # measured 0.0% / 1.4%


@pytest.mark.fast
def test_estimators_by_name() -> None:
    dis = build_flow_model("dis")
    assert isinstance(dis, ClassicalFlow) and (dis.method, dis.preset) == ("dis", DIS_PRESET) == ("dis", "medium")
    assert build_flow_model("dis-ultrafast").name == "opencv-dis-ultrafast"
    assert build_flow_model("farneback", "cpu").name == "opencv-farneback"
    assert FLOW_ESTIMATORS[0] == "raft" and len(set(FLOW_ESTIMATORS)) == len(FLOW_ESTIMATORS)
    with pytest.raises(ValueError, match="unknown flow estimator 'pwc'; choose one of raft, dis, .*farneback"):
        build_flow_model("pwc")


def test_raft_by_name_is_the_shared_model() -> None:
    assert build_flow_model("raft") is default_flow_model("cpu")
