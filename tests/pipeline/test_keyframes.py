"""Keyframe propagation (pipeline.keyframes, StylizationPipeline(keyframes=K)) on a real clip: keyframes are the
stylizer's output, the frames between follow the content's motion, chunks and scene cuts restart them."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from pipeline.io.images import load_image, resize_to_width
from pipeline.io.video import read_video
from pipeline.keyframes import keyframe_indices, propagate
from pipeline.latents.codecs import load_codec
from pipeline.latents.stylizers.latent_wct import LatentWCT
from pipeline.scenes import scene_cuts
from pipeline.stylize import StylizationPipeline
from rewards.classical_flow import ClassicalFlow
from rewards.temporal import warping_error
from rewards.warp import backward_warp, detail_preserving_warp, occlusion_mask

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.fast
@pytest.mark.parametrize("length,keyframes,cuts,continues,expected", [
    (16, 4, [], False, [0, 4, 8, 12, 15]),
    (16, 4, [], True, [3, 7, 11, 15]),  # counted from the previous chunk's last frame
    (16, 4, [0], True, [0, 4, 8, 12, 15]),  # a cut at the chunk's start: a new scene
    (16, 4, [6], False, [0, 4, 5, 6, 10, 14, 15]),  # a scene's last and first frames
    (5, 1, [], True, [0, 1, 2, 3, 4]),
    (3, 8, [], True, [2]),
])
def test_keyframe_indices(length, keyframes, cuts, continues, expected):
    assert keyframe_indices(length, keyframes, cuts, continues) == expected


@pytest.mark.fast
def test_bad_keyframe_settings_are_refused():
    with pytest.raises(ValueError, match="keyframes must be >= 1, got 0"):
        keyframe_indices(4, 0)
    with pytest.raises(ValueError, match="needs a keyframe_flow"):
        StylizationPipeline(mock.Mock(codec=None), keyframes=4)
    frames = torch.rand(4, 3, 8, 8)
    with pytest.raises(ValueError, match=r"needs a keyframe on each side; keyframes \[0, 2\] of 4 frames"):
        propagate(frames, [0, 2], frames[[0, 2]], mock.Mock())
    with pytest.raises(ValueError, match="2 keyframes need 2 images"):
        propagate(frames, [0, 3], frames[:1], mock.Mock())


@pytest.fixture(scope="module")
def wolf(data_dir) -> torch.Tensor:
    """16 frames of the wolf test clip at 128 px: a head turning, slight camera motion."""
    frames, _ = read_video(data_dir / "videos/test/wolf.mp4", max_frames=16)
    return resize_to_width(frames, 128)


@pytest.fixture(scope="module")
def style(data_dir) -> torch.Tensor:
    return load_image(data_dir / "styles/starry_night.jpg")


@pytest.fixture(scope="module")
def stylizer() -> LatentWCT:
    return LatentWCT(load_codec("taef2", precision="fp32"))


@pytest.fixture(scope="module")
def results(stylizer, wolf, style) -> dict[int, torch.Tensor]:
    flow = ClassicalFlow("farneback")
    return {k: StylizationPipeline(stylizer, keyframe_flow=flow, keyframes=k).stylize_clip(wolf, style).result
            for k in (1, 4)}


def test_keyframes_equal_the_stylizer_output(results):
    keys = keyframe_indices(16, 4)
    torch.testing.assert_close(results[4][keys], results[1][keys], atol=2e-3, rtol=0)


def test_frames_between_follow_the_content_motion(results, wolf):
    """Warped onto the content motion (by a flow independent of the Farneback flow that propagated them: OpenCV
    DIS), the propagated frames agree with their keyframes far better than the frame-by-frame ones, and they keep
    the stylization (close to the frame-by-frame frames)."""
    dis = ClassicalFlow()
    keys = keyframe_indices(16, 4)
    between = [t for t in range(16) if t not in keys]
    nearer_key = [min(keys, key=lambda k: (abs(k - t), k)) for t in between]  # ties: the earlier one
    flow = dis(wolf[between], wolf[nearer_key])
    mask = occlusion_mask(flow, dis(wolf[nearer_key], wolf[between]))

    def error_to_keys(result: torch.Tensor) -> float:
        warped = backward_warp(result[nearer_key], flow)
        return float(((warped - result[between]).square().sum(1, keepdim=True) * mask).sum() / mask.sum())

    assert error_to_keys(results[4]) < 0.6 * error_to_keys(results[1])
    assert warping_error(results[4], wolf, dis).mean < warping_error(results[1], wolf, dis).mean
    assert (results[4][between] - results[1][between]).abs().mean() < 0.08  # the same stylization, not a blur


def test_chunks_continue_from_the_last_keyframe(stylizer, wolf, style):
    """Chunks of 8 frames: the stylizer runs on frames 0, 4, 7, then 11 and 15 (counted from frame 7)."""
    pipeline = StylizationPipeline(stylizer, keyframe_flow=ClassicalFlow("farneback"), chunk_size=8, keyframes=4)
    with mock.patch.object(stylizer, "stylize_prepared", wraps=stylizer.stylize_prepared) as stylize:
        pipeline.stylize_clip(wolf, style)
    assert [call.args[0].shape[0] for call in stylize.call_args_list] == [3, 2]


def test_scene_cut_restarts_the_keyframes(stylizer, wolf, style, data_dir):
    sintel = sorted((data_dir / "videos/test/sintel_alley").glob("*.png"))[:6]
    other = resize_to_width(torch.cat([load_image(p) for p in sintel]), 128)  # 128x56
    frames = torch.cat([wolf[:6, :, 36:92], other])
    assert scene_cuts(frames) == [6]
    clip = StylizationPipeline(stylizer, keyframe_flow=ClassicalFlow("farneback"), keyframes=4).stylize_clip(
        frames, style)
    alone = stylizer.codec.decode(stylizer.stylize(frames[[5, 6]], style))
    torch.testing.assert_close(clip.result[[5, 6]], alone, atol=2e-3, rtol=0)  # a scene's last and first frames
    assert clip.cuts == [6]


def test_propagate_moves_a_shifted_image(data_dir):
    """A crop moving 4 px right per frame: the frames between two keyframes are the keyframes' content, moved."""
    photo = resize_to_width(load_image(data_dir / "photos/astronaut.png"), 160)
    frames = torch.cat([photo[..., 16:80, 24 - 4 * t : 88 - 4 * t] for t in range(5)])  # content moves right
    result = propagate(frames, [0, 4], frames[[0, 4]], ClassicalFlow())
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    assert (result[1:4] - frames[1:4])[inner].abs().mean() < 0.03


def test_detail_preserving_warp_moves_strokes_without_softening_them(data_dir):
    """A painting moved by whole pixels is the painting moved; by a fraction of a pixel, the two-band warp keeps
    the strokes' contrast (mean horizontal gradient magnitude; measured 99% of the painting's at (0.4, 0.2) px,
    bicubic 91%), and it still lands on the motion."""
    painting = resize_to_width(load_image(data_dir / "styles/starry_night.jpg"), 128)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -8))

    def shifted(dx: float, dy: float = 0.0) -> torch.Tensor:
        return torch.cat([torch.full_like(painting[:, :1], dx), torch.full_like(painting[:, :1], dy)], dim=1)

    moved = detail_preserving_warp(painting, shifted(2.0))
    torch.testing.assert_close(moved[inner], painting[..., 4:-4, 6:-6], atol=1e-4, rtol=0)

    def contrast(image: torch.Tensor) -> float:
        return float((image[..., 1:] - image[..., :-1])[inner].abs().mean())

    fraction = shifted(0.4, 0.2)
    kept, bicubic = detail_preserving_warp(painting, fraction), backward_warp(painting, fraction, mode="bicubic")
    assert contrast(kept) > 0.97 * contrast(painting) and contrast(bicubic) < 0.95 * contrast(painting)
    far = shifted(3.5)  # and it follows the motion: within half a pixel of the painting moved by 3.5 px
    target = backward_warp(painting, far, mode="bicubic")
    error = (detail_preserving_warp(painting, far) - target)[inner].abs().mean()
    assert error < 0.5 * (painting - target)[inner].abs().mean()
